// One virtio-scsi PCI function driven from userspace: everything between "the user named a
// PCI address" and "the initiator is running", and back.
//
// open(): root check, pick the function, lock it against a second driver, bind it to
// uio_pci_generic (if no driver has it), refuse an IOMMU that translates, open /dev/uioN, set Bus Master Enable, map the BARs,
// choose the interface (modern when offered), take hugepage DMA memory for what the device
// may access and ordinary memory for the driver's own bookkeeping, start the initiator.
// close() resets the device before any of its memory goes away.
//
// Completions are polled by default. In interrupt mode the waits sleep on /dev/uioN.
#pragma once
#include <stdint.h>
#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include <vscsi/initiator.hpp>
#include <vscsi/scsi.hpp>

#include "bar_bus.hpp"
#include "clock.hpp"
#include "dma_memory.hpp"
#include "function_lock.hpp"
#include "pci_function.hpp"
#include "pci_transport.hpp"
#include "uio_irq.hpp"

namespace vscsi::uio {

enum class transport_choice : uint8_t { automatic, legacy, modern };

struct open_options {
    std::string device;                 // PCI address; empty: the only virtio-scsi function
    transport_choice transport = transport_choice::automatic;
    bool irq = false;                   // sleep on /dev/uioN instead of polling
    uint64_t spin_ns = 0;               // with irq: poll this long before sleeping (hybrid)
    uint16_t queues = 1;                // request queues to use (at most what the device has)
    uint16_t slots = 128;               // commands in flight at most
    size_t data_bytes = size_t(8) << 20;  // DMA memory for data buffers
    host_paths paths;
};

using initiator_t = initiator<hosted_platform, pci_transport>;

// What one synchronous command came back with.
struct command_result {
    status submit = status::ok;         // not ok: never reached the device
    io_outcome outcome = io_outcome::failure;
    uint8_t response = 0;
    uint8_t scsi_status = 0;
    uint32_t transferred = 0;
    uint32_t sense_len = 0;
    uint8_t sense[96] = {};
    scsi::sense_info si{};
    bool ok() const { return submit == status::ok && outcome == io_outcome::good; }
};

class controller {
public:
    controller() = default;
    ~controller() { close(); }
    controller(const controller&) = delete;
    controller& operator=(const controller&) = delete;

    bool open(const open_options& o, std::string& err);
    // Reset the device (its DMA stops), clear Bus Master Enable, release everything.
    void close();

    initiator_t& ini() { return *ini_; }
    pci_transport& transport() { return *transport_; }
    sysfs_bus& bus() { return bus_; }
    const pci_function& function() const { return fn_; }
    dma_memory& memory() { return mem_; }
    uint8_t* data() const { return data_; }
    size_t data_bytes() const { return data_bytes_; }
    uint64_t now() const { return clock_.now(); }
    const fast_clock& clock() const { return clock_; }
    bool irq_mode() const { return irq_mode_; }
    // "polled", "interrupt" or "hybrid", for what the program prints.
    const char* wait_mode() const { return !irq_mode_ ? "polled" : spin_ns_ ? "hybrid" : "interrupt"; }

    // Poll until done() holds or the deadline passes; in interrupt mode sleep on the uio
    // node in between. Returns done().
    template <class H, class Done>
    bool wait_until(H& h, Done&& done, uint64_t deadline_ns) {
        for (;;) {
            ini_->poll(now(), h);
            if (done()) return true;
            if (ini_->state() != initiator_state::running) return done();
            const uint64_t t = now();
            if (t >= deadline_ns) return false;
            if (irq_mode_) sleep_for_interrupt(deadline_ns - t);
        }
    }

    // One command, synchronously, with `buf` (inside data()) as its data. Unit attentions,
    // BUSY and resets are retried a few times: they are news, not failures.
    command_result command(uint8_t target, uint16_t lun, const uint8_t* cdb, uint32_t cdb_len, bool write,
                           void* buf, uint32_t len, uint64_t timeout_ns = 0);

    // Asynchronous news that arrived while commands ran, oldest first.
    std::vector<event_info>& events() { return handler_.events; }
    std::vector<tmf_completion>& tmfs() { return handler_.tmfs; }
    std::vector<an_completion>& ans() { return handler_.ans; }

    // The handler command() uses: records the completion of one tag, queues the rest.
    struct sync_handler {
        uint64_t want_tag = 0;
        bool got = false;
        io_completion c{};
        uint8_t sense[96] = {};
        std::vector<event_info> events;
        std::vector<tmf_completion> tmfs;
        std::vector<an_completion> ans;
        void on_complete(const io_completion& x);
        void on_tmf(const tmf_completion& t) { tmfs.push_back(t); }
        void on_an(const an_completion& a) { ans.push_back(a); }
        void on_event(const event_info& e) { events.push_back(e); }
    };
    sync_handler& handler() { return handler_; }

    // Sleep until the device interrupts or `max_ns` passes (interrupt mode only). In hybrid
    // mode, poll for up to spin_ns first and return as soon as anything is there to reap.
    void sleep_for_interrupt(uint64_t max_ns);

private:
    open_options opt_;
    pci_function fn_;
    function_lock lock_;
    sysfs_bus bus_;
    uio_irq irq_;
    dma_memory mem_;
    fast_clock clock_{10};
    std::unique_ptr<pci_transport> transport_;
    struct free_deleter {
        void operator()(void* p) const { free(p); }
    };
    std::unique_ptr<uint8_t, free_deleter> books_;  // the initiator's private region
    std::unique_ptr<initiator_t> ini_;
    sync_handler handler_;
    uint8_t* data_ = nullptr;
    size_t data_bytes_ = 0;
    bool irq_mode_ = false;
    uint64_t spin_ns_ = 0;
    bool bus_master_ = false;
};

// The initiator configuration the controller uses, for sizing DMA memory.
initiator_config controller_config(const open_options& o);

}  // namespace vscsi::uio
