// Interrupts through /dev/uioN (uio_pci_generic: legacy INTx only).
//
// uio_pci_generic's handler masks INTx (Interrupt Disable in the command register) and
// counts the interrupt; read() returns the count. It has no irqcontrol, so write() to the
// node fails: the driver unmasks by clearing Interrupt Disable itself, through PCI config
// space. A virtio device keeps its INTx line asserted until the ISR register is read, so the
// order is: wait, read ISR (acknowledge), unmask.
//
// Holding /dev/uioN open also ties DMA to this process's life: uio_pci_generic clears Bus
// Master Enable when the last opener closes it, so a driver that dies stops the device's DMA.
#pragma once
#include <stdint.h>

#include <string>

#include "bar_bus.hpp"

namespace vscsi::uio {

class uio_irq {
public:
    uio_irq() = default;
    ~uio_irq() { close(); }
    uio_irq(const uio_irq&) = delete;
    uio_irq& operator=(const uio_irq&) = delete;

    // Open the node. Every close of it clears Bus Master Enable (uio_pci_generic's release),
    // so only the process driving the device may open it: take the function_lock first.
    bool open(const std::string& dev_node, std::string& err);
    void close();
    bool is_open() const { return fd_ >= 0; }

    // Wait up to timeout_ms (-1: forever) for an interrupt. Returns 1 on an interrupt, 0 on
    // timeout, -1 on error.
    int wait(int timeout_ms);
    uint32_t count() const { return count_; }
    // Interrupts this process woke up for.
    uint64_t wakeups() const { return wakeups_; }

    // Read the command register once, after Bus Master Enable was set; unmask() writes it
    // back with Interrupt Disable clear.
    bool attach(bar_bus& bus);
    // Unmask INTx after the device was acknowledged: one 16-bit write of the whole command
    // register. Nothing else changes its bits while we own the function (the kernel's
    // handler only sets Interrupt Disable, which this clears), so no read first.
    //
    // Not a byte write of its high half, where Interrupt Disable lives: QEMU (7.2 at least)
    // re-evaluates the INTx line only on a config write that covers byte 4, so a write of
    // byte 5 alone changes the bit without moving the line. Its count of asserted lines then
    // drifts below zero on the next acknowledge, the line stays high with nobody asserting
    // it, and the guest kernel disables the IRQ ("nobody cared") after 100,000 spurious
    // interrupts.
    bool unmask();

private:
    int fd_ = -1;
    uint32_t count_ = 0;
    uint64_t wakeups_ = 0;
    bar_bus* bus_ = nullptr;
    uint16_t command_ = 0;
};

}  // namespace vscsi::uio
