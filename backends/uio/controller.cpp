#include "controller.hpp"

#include <string.h>
#include <unistd.h>

namespace vscsi::uio {

initiator_config controller_config(const open_options& o) {
    initiator_config c;
    // QEMU's virtqueues go up to 1024 entries, and a legacy device's size is fixed: plan the
    // rings for the largest so every device fits.
    c.max_queue_size = 1024;
    c.max_request_queues = o.queues;
    c.slots = o.slots;
    c.max_segments = 64;
    c.event_buffers = 16;
    c.ctrl_slots = 8;
    return c;
}

void controller::sync_handler::on_complete(const io_completion& x) {
    if (x.tag != want_tag) return;  // a command given up on earlier; nothing waits for it
    got = true;
    c = x;
    const uint32_t n = x.sense && x.sense_len <= sizeof sense ? x.sense_len : 0;
    if (n) memcpy(sense, x.sense, n);
    c.sense = sense;
    c.sense_len = n;
}

bool controller::open(const open_options& o, std::string& err) {
    close();
    opt_ = o;
    if (geteuid() != 0) {
        err = "needs root (PCI sysfs files, hugepages and /proc/self/pagemap)";
        return false;
    }
    if (o.queues < 1 || o.queues > 16) {
        err = "--queues must be 1..16";
        return false;
    }
    const host_paths& hp = o.paths;
    if (!select_function(hp, o.device, fn_, err)) return false;
    if (!lock_.acquire(hp, fn_.bdf, err)) return false;
    if (fn_.driver != uio_driver) {
        if (!fn_.driver.empty()) {
            err = fn_.bdf + " is bound to " + fn_.driver + "; take it with 'vscsi-uio bind " + fn_.bdf + " --force'";
            return false;
        }
        if (!bind_uio(hp, fn_, false, err)) return false;
    }
    const std::string iommu = iommu_problem(hp, fn_.bdf);
    if (!iommu.empty()) {
        err = iommu;
        return false;
    }
    if (!irq_.open(hp.dev + "/" + fn_.uio, err)) return false;
    if (!bus_.open(hp, fn_.bdf, err)) return false;
    // After opening the uio node: uio_pci_generic clears Bus Master Enable on release, and
    // never sets it.
    if (!bus_.set_bus_master(true)) {
        err = fn_.bdf + ": cannot set Bus Master Enable in the PCI command register";
        return false;
    }
    bus_master_ = true;

    transport_ = std::make_unique<pci_transport>(bus_);
    const bool has_modern = transport_->probe_modern();
    const bool has_legacy = fn_.device == pci_device_scsi_transitional && transport_->probe_legacy(bus_.bar_is_io(0));
    bool legacy = false;
    switch (o.transport) {
        case transport_choice::automatic:
            if (!has_modern && !has_legacy) {
                err = fn_.bdf + " offers neither a usable modern nor a legacy virtio-pci interface";
                return false;
            }
            legacy = !has_modern;
            break;
        case transport_choice::legacy:
            if (!has_legacy) {
                err = fn_.bdf + " offers no legacy virtio-pci interface (--legacy)";
                return false;
            }
            legacy = true;
            break;
        case transport_choice::modern:
            if (!has_modern) {
                err = fn_.bdf + " offers no modern virtio-pci interface (--modern)";
                return false;
            }
            break;
    }
    transport_->use(legacy);

    const initiator_config cfg = controller_config(o);
    const size_t region = initiator_t::region_bytes(cfg);
    if (region == 0) {
        err = "invalid initiator configuration";
        return false;
    }
    const size_t page = default_hugepage_size(hp.proc);
    const size_t region_pages = page ? (region + page - 1) / page * page : region;
    if (!mem_.allocate(region_pages + o.data_bytes, err)) return false;
    const dma_region head = mem_.contiguous_head();
    if (head.bytes < region) {
        err = "the hugepages for the rings are not physically contiguous (need " + std::to_string(region >> 10) +
              " KiB): use fewer --queues";
        return false;
    }
    data_ = mem_.virt() + region_pages;
    data_bytes_ = mem_.bytes() - region_pages;

    // The driver's bookkeeping stays out of the device's reach: ordinary memory, never mapped
    // for DMA (initiator.hpp).
    const size_t books = initiator_t::private_bytes(cfg);
    books_.reset(static_cast<uint8_t*>(aligned_alloc(4096, (books + 4095) & ~size_t(4095))));
    if (!books_) {
        err = "out of memory for the driver's bookkeeping (" + std::to_string(books >> 10) + " KiB)";
        return false;
    }

    ini_ = std::make_unique<initiator_t>(*transport_);
    const status s = ini_->start(cfg, dma_region{head.virt, head.bus, region}, private_region{books_.get(), books});
    if (s != status::ok) {
        err = fn_.bdf + ": device start failed: " + to_string(s) +
              (s == status::not_supported ? " (a queue larger than 1024 entries, or sense/CDB sizes it will not take)"
                                          : "");
        return false;
    }
    irq_mode_ = o.irq;
    spin_ns_ = o.irq ? o.spin_ns : 0;
    if (irq_mode_) {
        // A line asserted before we listened would stay masked: acknowledge and unmask once.
        if (!irq_.attach(bus_)) {
            err = fn_.bdf + ": cannot read the PCI command register";
            return false;
        }
        transport_->read_isr();
        irq_.unmask();
    }
    ini_->disable_interrupts();
    return true;
}

void controller::close() {
    if (ini_) {
        sync_handler drop;
        ini_->stop(drop);  // device reset: no DMA after this
        ini_.reset();
    }
    books_.reset();
    transport_.reset();
    if (bus_master_) bus_.set_bus_master(false);
    bus_master_ = false;
    bus_.close();
    irq_.close();
    mem_.release();
    data_ = nullptr;
    data_bytes_ = 0;
    lock_.release();  // last: the device is quiet and its uio node closed
}

void controller::sleep_for_interrupt(uint64_t max_ns) {
    if (spin_ns_) {
        // Most commands come back within a few tens of microseconds: spinning that long is
        // cheaper than an interrupt round trip, and going to sleep after it caps what a slow
        // command costs in CPU time.
        const uint64_t until = now() + (spin_ns_ < max_ns ? spin_ns_ : max_ns);
        // No PAUSE in this loop: under QEMU's TCG it leaves the translated code on every
        // iteration, which made the spin slower than sleeping.
        do {
            if (ini_->completions_pending()) return;
        } while (now() < until);
    }
    // Re-enable, then re-check: a completion that raced with re-enabling is not missed.
    if (ini_->enable_interrupts()) {
        ini_->disable_interrupts();
        return;
    }
    // Wake at least every 100 ms: the initiator's deadlines need polls too.
    uint64_t ms = max_ns / 1000000 + 1;
    if (ms > 100) ms = 100;
    if (irq_.wait(int(ms)) > 0) {
        transport_->read_isr();  // acknowledge: the device drops its INTx line
        irq_.unmask();
    }
    ini_->disable_interrupts();
}

command_result controller::command(uint8_t target, uint16_t lun, const uint8_t* cdb, uint32_t cdb_len, bool write,
                                   void* buf, uint32_t len, uint64_t timeout_ns) {
    command_result r;
    sg_entry sg[64];
    uint32_t nsg = 0;
    if (len) {
        nsg = mem_.scatter(buf, len, sg, 64);
        if (nsg == 0) {
            r.submit = status::invalid_argument;
            return r;
        }
    }
    io_request q{};
    q.target = target;
    q.lun = lun;
    q.cdb = cdb;
    q.cdb_len = cdb_len;
    if (write) {
        q.data_out = sg;
        q.n_out = nsg;
    } else {
        q.data_in = sg;
        q.n_in = nsg;
    }
    q.timeout_ns = timeout_ns;
    for (int attempt = 0; attempt < 8; ++attempt) {
        const result<uint64_t> t = ini_->submit(q, now());
        if (t.st == status::busy) {
            ini_->poll(now(), handler_);
            continue;
        }
        if (t.st != status::ok) {
            r.submit = t.st;
            return r;
        }
        handler_.want_tag = t.value;
        handler_.got = false;
        ini_->kick();
        // The initiator's own deadlines end every command (completed or timed out), so this
        // wait is bounded; the far deadline is only a backstop.
        const uint64_t limit = now() + (timeout_ns ? timeout_ns : 30000000000ull) + 60000000000ull;
        if (!wait_until(handler_, [&] { return handler_.got; }, limit)) {
            r.submit = ini_->state() == initiator_state::running ? status::timeout : status::needs_reset;
            return r;
        }
        const io_completion& c = handler_.c;
        r.submit = status::ok;
        r.outcome = c.outcome;
        r.response = c.response;
        r.scsi_status = c.scsi_status;
        r.transferred = c.transferred;
        r.sense_len = c.sense_len;
        memcpy(r.sense, handler_.sense, c.sense_len);
        r.si = scsi::decode_sense(r.sense, r.sense_len);
        const bool again = (c.outcome == io_outcome::check_condition && scsi::is_unit_attention(r.si)) ||
                           c.outcome == io_outcome::busy || c.outcome == io_outcome::reset ||
                           c.outcome == io_outcome::device_reset ||
                           (c.outcome == io_outcome::scsi_status && c.scsi_status == scsi::sam::busy);
        if (!again) return r;
    }
    return r;
}

}  // namespace vscsi::uio
