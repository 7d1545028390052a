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
    c.ring = o.ring;
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

namespace {

// The features a device offers, read in the spec's order (reset, ACKNOWLEDGE, DRIVER) and
// left reset again: what it would do must be known before it is given any address.
uint64_t offered_features(pci_transport& t) {
    virtio_device<pci_transport> d(t);
    if (d.reset() != status::ok) return 0;
    t.set_status(dev_status::acknowledge);
    t.set_status(dev_status::acknowledge | dev_status::driver);
    const uint64_t f = t.device_features();
    d.reset();
    return f;
}

}  // namespace

bool controller::open(const open_options& o, std::string& err) {
    close();
    opt_ = o;
    if (o.queues < 1 || o.queues > 16) {
        err = "--queues must be 1..16";
        return false;
    }
    const host_paths& hp = o.paths;
    if (!select_function(hp, o.device, fn_, err)) return false;
    if (!lock_.acquire(hp, fn_.bdf, err)) return false;
    if (!take_function(err)) return false;
    if (!(driver_ == host_driver::vfio ? open_vfio(err) : open_uio(err))) return false;
    if (!choose_interface(err)) return false;
    // A device that a driver which died left running still holds that driver's addresses:
    // reset it before Bus Master Enable lets it reach memory again. (Both kernel drivers
    // clear Bus Master Enable when their file is closed, and neither sets it.)
    virtio_device<pci_transport> quiet(*transport_);
    if (quiet.reset() != status::ok) {
        err = fn_.bdf + ": the device does not complete a reset";
        return false;
    }
    if (!bus_.set_bus_master(true)) {
        err = fn_.bdf + ": cannot set Bus Master Enable in the PCI command register";
        return false;
    }
    bus_master_ = true;

    const initiator_config cfg = controller_config(o);
    const size_t region = initiator_t::region_bytes(cfg);
    if (region == 0) {
        err = "invalid initiator configuration";
        return false;
    }
    if (driver_ == host_driver::vfio) {
        // Without ACCESS_PLATFORM the device would take our IOVAs for physical addresses and
        // write wherever they point: refuse before it learns any address.
        if (!(offered_features(*transport_) & feature::bit(feature::access_platform))) {
            err = fn_.bdf + ": the device does not offer VIRTIO_F_ACCESS_PLATFORM, so it would bypass the IOMMU "
                  "and take IOVAs for physical addresses (QEMU: iommu_platform=on on the virtio-scsi-pci device)";
            return false;
        }
        if (!open_vfio_interrupts(o.irq, err)) return false;
    }
    if (!start_initiator(cfg, region, err)) return false;
    if (driver_ == host_driver::vfio && transport_->msix_refused()) {
        // The device signals nothing for a queue whose vector it refused: start again on INTx.
        if (o.irq) notes_.push_back(fn_.bdf + ": the device refused an MSI-X vector (it read back NO_VECTOR); using INTx");
        sync_handler drop;
        ini_->stop(drop);
        vfio_irq_.close();
        transport_->no_msix();
        if (!vfio_irq_.open_intx(vfio_, err) || !start_initiator(cfg, region, err)) return false;
    }
    irq_mode_ = o.irq;
    spin_ns_ = o.irq ? o.spin_ns : 0;
    if (irq_mode_ && driver_ == host_driver::uio) {
        // A line asserted before we listened would stay masked: acknowledge and unmask once.
        if (!irq_.attach(bus_)) {
            err = fn_.bdf + ": cannot read the PCI command register";
            return false;
        }
        transport_->read_isr();
        irq_.unmask();
    } else if (irq_mode_ && vfio_irq_.mode() == vfio::interrupts::kind::intx) {
        transport_->read_isr();
        vfio_irq_.unmask();
    }
    ini_->disable_interrupts();
    return true;
}

bool controller::take_function(std::string& err) {
    const host_paths& hp = opt_.paths;
    const bool named = opt_.driver != driver_choice::automatic;
    const host_driver wanted = opt_.driver == driver_choice::vfio ? host_driver::vfio : host_driver::uio;
    if (is_userspace_driver(fn_.driver)) {
        driver_ = fn_.driver == vfio_driver ? host_driver::vfio : host_driver::uio;
        if (named && wanted != driver_) {
            err = fn_.bdf + " is bound to " + fn_.driver + "; move it with 'vscsi-uio bind --driver " +
                  (wanted == host_driver::vfio ? "vfio " : "uio ") + fn_.bdf + "'";
            return false;
        }
        return true;
    }
    if (!fn_.driver.empty()) {
        err = fn_.bdf + " is bound to " + fn_.driver + "; take it with 'vscsi-uio bind " + fn_.bdf + " --force'";
        return false;
    }
    driver_ = named ? wanted : default_driver(fn_);
    if (geteuid() != 0) {
        err = "binding " + fn_.bdf + " to " + driver_name(driver_) + " needs root (it writes PCI sysfs files)";
        return false;
    }
    return bind_driver(hp, fn_, driver_, false, err);
}

bool controller::open_uio(std::string& err) {
    const host_paths& hp = opt_.paths;
    if (geteuid() != 0) {
        err = "needs root (PCI sysfs files, hugepages and /proc/self/pagemap)";
        return false;
    }
    const std::string iommu = iommu_problem(hp, fn_.bdf);
    if (!iommu.empty()) {
        err = iommu;
        return false;
    }
    return irq_.open(hp.dev + "/" + fn_.uio, err) && bus_.open(hp, fn_.bdf, err);
}

bool controller::open_vfio(std::string& err) { return vfio_.open(opt_.paths, fn_.bdf, err) && bus_.open_vfio(vfio_, err); }

bool controller::choose_interface(std::string& err) {
    transport_ = std::make_unique<pci_transport>(bus_);
    const bool has_modern = transport_->probe_modern();
    // Behind vfio only the modern interface will do: ACCESS_PLATFORM, which makes the device
    // use the IOMMU, does not exist in the legacy one.
    const bool has_legacy = driver_ == host_driver::uio && fn_.device == pci_device_scsi_transitional &&
                            transport_->probe_legacy(bus_.bar_is_io(0));
    const char* why_no_legacy = driver_ == host_driver::vfio ? " (not through vfio: the legacy interface cannot use an IOMMU)" : "";
    bool legacy = false;
    switch (opt_.transport) {
        case transport_choice::automatic:
            if (!has_modern && !has_legacy) {
                err = fn_.bdf + " offers neither a usable modern nor a legacy virtio-pci interface" + why_no_legacy;
                return false;
            }
            legacy = !has_modern;
            break;
        case transport_choice::legacy:
            if (!has_legacy) {
                err = fn_.bdf + " offers no legacy virtio-pci interface (--legacy)" + why_no_legacy;
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
    if (legacy && opt_.ring == ring_choice::packed) {
        err = fn_.bdf + ": packed rings are a virtio 1.x feature; the legacy interface has none (--ring packed)";
        return false;
    }
    transport_->use(legacy);
    return true;
}

bool controller::open_vfio_interrupts(bool listen, std::string& err) {
    // Polled, the device must still never raise an interrupt nobody handles: vfio-pci leaves
    // INTx enabled in the function without a handler for it, and a level-triggered line left
    // asserted on a shared GSI would have the kernel disable another device's handler. So
    // MSI-X goes on with every vector NO_VECTOR (the device then signals nothing at all), or
    // INTx goes to vfio, whose handler masks the line the first time it fires.
    const uint16_t virtqueues = listen ? uint16_t(first_request_queue + opt_.queues) : 0;
    std::string why;
    if (vfio_irq_.open_msix(vfio_, virtqueues, why)) {
        if (!listen) {
            transport_->use_msix(msix_no_vector, msix_no_vector, false);
            return true;
        }
        // Vectors for the control and event queues and every request queue we may use.
        transport_->use_msix(vfio::interrupts::config_vector, vfio_irq_.queue_vector(0), vfio_irq_.per_queue());
        if (!vfio_irq_.per_queue())
            notes_.push_back(fn_.bdf + ": " + std::to_string(vfio_irq_.vectors()) + " MSI-X vector(s) for " +
                             std::to_string(virtqueues) + " queues: the queues share one");
        return true;
    }
    if (listen) notes_.push_back(fn_.bdf + ": no MSI-X (" + why + "); using INTx");
    return vfio_irq_.open_intx(vfio_, err);
}

bool controller::start_initiator(const initiator_config& cfg, size_t region, std::string& err) {
    if (!mem_.virt()) {
        const host_paths& hp = opt_.paths;
        if (driver_ == host_driver::vfio) {
            // Data buffers start on a page after the rings, in the same IOVA range.
            const size_t region_pages = align_up(region, 4096);
            if (!mem_.allocate_mapped(region_pages + opt_.data_bytes, vfio_, err)) return false;
            data_ = mem_.virt() + region_pages;
        } else {
            const size_t page = default_hugepage_size(hp.proc);
            const size_t region_pages = page ? (region + page - 1) / page * page : region;
            if (!mem_.allocate(region_pages + opt_.data_bytes, err)) return false;
            data_ = mem_.virt() + region_pages;
        }
        data_bytes_ = mem_.bytes() - size_t(data_ - mem_.virt());
    }
    const dma_region head = mem_.contiguous_head();
    if (head.bytes < region) {
        err = "the hugepages for the rings are not physically contiguous (need " + std::to_string(region >> 10) +
              " KiB): use fewer --queues";
        return false;
    }
    if (!books_) {
        // The driver's bookkeeping stays out of the device's reach: ordinary memory, never
        // mapped for DMA (initiator.hpp).
        const size_t books = initiator_t::private_bytes(cfg);
        books_.reset(static_cast<uint8_t*>(aligned_alloc(4096, (books + 4095) & ~size_t(4095))));
        if (!books_) {
            err = "out of memory for the driver's bookkeeping (" + std::to_string(books >> 10) + " KiB)";
            return false;
        }
    }
    if (!ini_) ini_ = std::make_unique<initiator_t>(*transport_);
    const status s = ini_->start(cfg, dma_region{head.virt, head.bus, region},
                                 private_region{books_.get(), initiator_t::private_bytes(cfg)});
    if (s != status::ok) {
        const bool no_packed = s == status::not_supported && opt_.ring == ring_choice::packed &&
                               !(ini_->device().features() & feature::bit(feature::ring_packed));
        err = fn_.bdf + ": device start failed: " + to_string(s) +
              (no_packed ? " (it offers no packed rings: --ring packed; QEMU needs packed=on)"
               : s == status::not_supported ? " (a queue larger than 1024 entries, or sense/CDB sizes it will not take)"
                                            : "");
        return false;
    }
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
    vfio_irq_.close();
    bus_.close();
    irq_.close();
    mem_.release();  // unmaps from the IOMMU first (vfio), so before the container goes
    vfio_.close();
    data_ = nullptr;
    data_bytes_ = 0;
    notes_.clear();
    lock_.release();  // last: the device is quiet and its uio node or vfio files closed
}

size_t controller::private_bytes() const { return initiator_t::private_bytes(controller_config(opt_)); }

std::string controller::interrupt_source() const {
    if (!irq_mode_) return "-";
    if (driver_ == host_driver::uio) return "INTx (uio)";
    if (vfio_irq_.mode() == vfio::interrupts::kind::intx) return "INTx (vfio)";
    return "MSI-X, " + std::to_string(vfio_irq_.vectors()) + (vfio_irq_.per_queue() ? " vectors" : " vectors, shared");
}

std::vector<std::pair<std::string, uint64_t>> controller::interrupt_counts() const {
    std::vector<std::pair<std::string, uint64_t>> out;
    if (!irq_mode_) return out;
    if (driver_ == host_driver::uio) {
        out.emplace_back("INTx", irq_.wakeups());
    } else if (vfio_irq_.mode() == vfio::interrupts::kind::intx) {
        out.emplace_back("INTx", vfio_irq_.count(0));
    } else if (!vfio_irq_.per_queue()) {
        out.emplace_back("config", vfio_irq_.count(vfio::interrupts::config_vector));
        if (vfio_irq_.vectors() > 1) out.emplace_back("queues", vfio_irq_.count(vfio_irq_.queue_vector(0)));
    } else {
        out.emplace_back("config", vfio_irq_.count(vfio::interrupts::config_vector));
        out.emplace_back("control", vfio_irq_.count(vfio_irq_.queue_vector(controlq_index)));
        out.emplace_back("event", vfio_irq_.count(vfio_irq_.queue_vector(eventq_index)));
        for (uint16_t q = 0; ini_ && q < ini_->request_queues(); ++q)
            out.emplace_back("request" + std::to_string(q), vfio_irq_.count(vfio_irq_.queue_vector(uint16_t(first_request_queue + q))));
    }
    return out;
}

void controller::wait_for_interrupt(int ms) {
    if (driver_ == host_driver::uio) {
        if (irq_.wait(ms) > 0) {
            transport_->read_isr();  // acknowledge: the device drops its INTx line
            irq_.unmask();
        }
        return;
    }
    if (vfio_irq_.wait_any(ms) > 0 && vfio_irq_.mode() == vfio::interrupts::kind::intx) {
        transport_->read_isr();
        vfio_irq_.unmask();
    }
}

void controller::sleep_for_interrupt(uint64_t max_ns) {
    sleep_until_work(*ini_, max_ns, [this](int ms) { wait_for_interrupt(ms); });
}

bool controller::per_queue_interrupts() const {
    return irq_mode_ && vfio_irq_.mode() == vfio::interrupts::kind::msix && vfio_irq_.per_queue();
}

void controller::wait_for_queue_interrupt(uint16_t q, int ms) {
    vfio_irq_.wait_one(vfio_irq_.queue_vector(uint16_t(first_request_queue + q)), ms);
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
