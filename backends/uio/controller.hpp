// One virtio-scsi PCI function driven from userspace: everything between "the user named a
// PCI address" and "the initiator is running", and back, through either kernel driver that
// hands a function to userspace.
//
// open(): pick the function, lock it against a second driver, and bind it (if no driver has
// it) to vfio-pci when it has an IOMMU group, else to uio_pci_generic (or as asked). Then
// - vfio: open its container, group and device (the group must be viable), map the BARs
//   through the device file, require the modern interface and VIRTIO_F_ACCESS_PLATFORM (so
//   the device translates every DMA through the IOMMU), map DMA memory at IOVAs of our
//   choosing, and take MSI-X vectors as eventfds (INTx without MSI-X); polled, the vectors
//   are NO_VECTOR, so the device never interrupts;
// - uio: check for root and that no IOMMU translates, open /dev/uioN, map the BARs through
//   sysfs, take hugepages and their physical addresses;
// then choose the interface (modern when offered), reset the device and set Bus Master
// Enable, take ordinary memory for the driver's own bookkeeping (never mapped for the
// device), and start the initiator. close() resets the device before any of its memory goes
// away.
//
// Completions are polled by default. In interrupt mode the waits sleep on the eventfds (vfio)
// or on /dev/uioN.
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
#include "vfio_device.hpp"
#include "vfio_irq.hpp"

namespace vscsi::uio {

enum class transport_choice : uint8_t { automatic, legacy, modern };
enum class driver_choice : uint8_t { automatic, uio, vfio };

struct open_options {
    std::string device;                 // PCI address; empty: the only virtio-scsi function
    transport_choice transport = transport_choice::automatic;
    driver_choice driver = driver_choice::automatic;  // automatic: what it is bound to, else default_driver()
    ring_choice ring = ring_choice::automatic;  // packed rings need the modern interface
    bool irq = false;                   // sleep on interrupts instead of polling
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
    bar_bus& bus() { return bus_; }
    const pci_function& function() const { return fn_; }
    host_driver driver() const { return driver_; }
    dma_memory& memory() { return mem_; }
    const dma_memory& memory() const { return mem_; }
    // The initiator's private region: ordinary memory, never given to (or mapped for) the device.
    size_t private_bytes() const;
    uint8_t* data() const { return data_; }
    size_t data_bytes() const { return data_bytes_; }
    uint64_t now() const { return clock_.now(); }
    const fast_clock& clock() const { return clock_; }
    bool irq_mode() const { return irq_mode_; }
    // "polled", "interrupt" or "hybrid", for what the program prints.
    const char* wait_mode() const { return !irq_mode_ ? "polled" : spin_ns_ ? "hybrid" : "interrupt"; }
    // What interrupts arrive through: "MSI-X, 5 vectors", "INTx", ...; "-" when polled.
    std::string interrupt_source() const;
    // Interrupts taken so far, per source ("request0", "control", "shared", "INTx", ...).
    std::vector<std::pair<std::string, uint64_t>> interrupt_counts() const;
    // What open() had to settle for (a fallback), one line each, for the program to print.
    const std::vector<std::string>& notes() const { return notes_; }

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

    // Whether each request queue interrupts on a vector of its own (MSI-X through vfio), so
    // a thread that owns one queue (a queue_handle) can sleep on that queue alone.
    bool per_queue_interrupts() const;
    // sleep_for_interrupt() for such a thread: its queue's interrupts only. Threads owning
    // different queues may sleep at once; each touches only its own vector.
    template <class Handle>
    void sleep_for_queue_interrupt(Handle& h, uint64_t max_ns) {
        const uint16_t q = h.queue();
        sleep_until_work(h, max_ns, [this, q](int ms) { wait_for_queue_interrupt(q, ms); });
    }

private:
    bool take_function(std::string& err);
    bool open_uio(std::string& err);
    bool open_vfio(std::string& err);
    bool choose_interface(std::string& err);
    bool open_vfio_interrupts(bool listen, std::string& err);
    bool start_initiator(const initiator_config& cfg, size_t region, std::string& err);
    void wait_for_interrupt(int ms);
    void wait_for_queue_interrupt(uint16_t q, int ms);

    // What every sleep does, for the initiator (every queue) or one queue's handle: in hybrid
    // mode spin up to spin_ns first; then re-enable interrupts and re-check, so a completion
    // that raced with re-enabling is not missed; then wait (at most 100 ms: the initiator's
    // deadlines need polls too), and disable them again.
    template <class Queues, class Wait>
    void sleep_until_work(Queues& q, uint64_t max_ns, Wait&& wait) {
        if (spin_ns_) {
            // Most commands come back within a few tens of microseconds: spinning that long is
            // cheaper than an interrupt round trip, and going to sleep after it caps what a
            // slow command costs in CPU time.
            const uint64_t until = now() + (spin_ns_ < max_ns ? spin_ns_ : max_ns);
            // No PAUSE in this loop: under QEMU's TCG it leaves the translated code on every
            // iteration, which made the spin slower than sleeping.
            do {
                if (q.completions_pending()) return;
            } while (now() < until);
        }
        if (q.enable_interrupts()) {
            q.disable_interrupts();
            return;
        }
        uint64_t ms = max_ns / 1000000 + 1;
        if (ms > 100) ms = 100;
        wait(int(ms));
        q.disable_interrupts();
    }

    open_options opt_;
    pci_function fn_;
    host_driver driver_ = host_driver::uio;
    function_lock lock_;
    vfio::device vfio_;      // vfio: container, group, device (before everything that uses it)
    bar_bus bus_;
    uio_irq irq_;            // uio
    vfio::interrupts vfio_irq_;
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
    std::vector<std::string> notes_;
};

// The initiator configuration the controller uses, for sizing DMA memory.
initiator_config controller_config(const open_options& o);

}  // namespace vscsi::uio
