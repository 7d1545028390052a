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

    // Read the command register's high byte once (Interrupt Disable lives there); unmask()
    // writes it back with Interrupt Disable clear.
    bool attach(sysfs_bus& bus);
    // Unmask INTx after the device was acknowledged. One config-space write of the high byte
    // of the command register: its other bits (SERR#, fast back-to-back) are never changed
    // behind our back, so no read first, and Bus Master and the decode bits in the low byte
    // are not touched at all.
    bool unmask();

private:
    int fd_ = -1;
    uint32_t count_ = 0;
    sysfs_bus* bus_ = nullptr;
    uint8_t command_high_ = 0;
};

}  // namespace vscsi::uio
