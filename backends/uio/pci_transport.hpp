// One transport type for both virtio-pci interfaces, chosen at run time.
//
// The initiator is a template over its transport; a program that drives whichever interface
// a device offers would otherwise instantiate everything twice. This forwards each call to
// the legacy or the modern transport behind one well-predicted branch. It also writes the
// MSI-X vectors a driver listening on them wants (vfio). A template over the Bus only so the
// tests can run it against the loopback device.
#pragma once
#include <stdint.h>

#include <vscsi/pci.hpp>

#include "bar_bus.hpp"

namespace vscsi::uio {

template <class Bus>
class basic_pci_transport {
public:
    explicit basic_pci_transport(Bus& bus) : legacy_(bus), modern_(bus) {}

    // What the function offers. Call before use(); probing only reads registers.
    bool probe_modern() { return modern_.probe() == status::ok; }
    bool probe_legacy(bool io_bar0) { return io_bar0 && legacy_.probe() == status::ok; }
    void use(bool legacy) { is_legacy_ = legacy; }

    virtio_order order() const { return is_legacy_ ? legacy_.order() : modern_.order(); }
    bool is_legacy() const { return is_legacy_; }
    uint8_t get_status() { return is_legacy_ ? legacy_.get_status() : modern_.get_status(); }
    void set_status(uint8_t s) { is_legacy_ ? legacy_.set_status(s) : modern_.set_status(s); }
    void reset() { is_legacy_ ? legacy_.reset() : modern_.reset(); }
    uint64_t device_features() { return is_legacy_ ? legacy_.device_features() : modern_.device_features(); }
    void set_driver_features(uint64_t f) { is_legacy_ ? legacy_.set_driver_features(f) : modern_.set_driver_features(f); }
    uint16_t num_queues() { return is_legacy_ ? legacy_.num_queues() : modern_.num_queues(); }
    uint32_t queue_max_size(uint16_t q) { return is_legacy_ ? legacy_.queue_max_size(q) : modern_.queue_max_size(q); }
    bool queue_size_settable() const { return is_legacy_ ? legacy_.queue_size_settable() : modern_.queue_size_settable(); }
    status setup_queue(uint16_t q, uint32_t size, uint64_t desc, uint64_t avail, uint64_t used) {
        if (msix_) assign_vectors(q);
        return is_legacy_ ? legacy_.setup_queue(q, size, desc, avail, used) : modern_.setup_queue(q, size, desc, avail, used);
    }
    void disable_queue(uint16_t q) { is_legacy_ ? legacy_.disable_queue(q) : modern_.disable_queue(q); }
    void notify(uint16_t q) { is_legacy_ ? legacy_.notify(q) : modern_.notify(q); }
    uint8_t read_isr() { return is_legacy_ ? legacy_.read_isr() : modern_.read_isr(); }
    uint8_t config_read8(uint32_t off) { return is_legacy_ ? legacy_.config_read8(off) : modern_.config_read8(off); }
    uint16_t config_read16(uint32_t off) { return is_legacy_ ? legacy_.config_read16(off) : modern_.config_read16(off); }
    uint32_t config_read32(uint32_t off) { return is_legacy_ ? legacy_.config_read32(off) : modern_.config_read32(off); }
    void config_write32(uint32_t off, uint32_t v) { is_legacy_ ? legacy_.config_write32(off, v) : modern_.config_write32(off, v); }
    bool has_config_generation() const { return is_legacy_ ? legacy_.has_config_generation() : modern_.has_config_generation(); }
    uint8_t config_generation() { return is_legacy_ ? legacy_.config_generation() : modern_.config_generation(); }

    // MSI-X, for a driver that listens on its vectors (vfio): configuration changes on
    // `config_vector`, virtqueue q on `first_queue_vector` + q (or on `first_queue_vector`
    // alone when not `per_queue`). The device forgets its vectors on every reset, so they are
    // written each time a queue is set up, before the queue is enabled. A vector the device
    // cannot take reads back as NO_VECTOR (checklist 56): refused() says so, and the device
    // then signals nothing for that queue, so the caller must fall back.
    void use_msix(uint16_t config_vector, uint16_t first_queue_vector, bool per_queue) {
        msix_ = true;
        config_vector_ = config_vector;
        first_queue_vector_ = first_queue_vector;
        per_queue_ = per_queue;
        refused_ = false;
    }
    void no_msix() { msix_ = false; }
    bool msix_refused() const { return refused_; }
    uint16_t queue_vector(uint16_t q) const { return per_queue_ ? uint16_t(first_queue_vector_ + q) : first_queue_vector_; }

    legacy_pci<Bus>& legacy() { return legacy_; }
    modern_pci<Bus>& modern() { return modern_; }

private:
    void assign_vectors(uint16_t q) {
        const uint16_t v = queue_vector(q);
        const uint16_t c = is_legacy_ ? legacy_.set_config_vector(config_vector_) : modern_.set_config_vector(config_vector_);
        const uint16_t got = is_legacy_ ? legacy_.set_queue_vector(q, v) : modern_.set_queue_vector(q, v);
        if (c != config_vector_ || got != v) refused_ = true;
    }

    legacy_pci<Bus> legacy_;
    modern_pci<Bus> modern_;
    bool is_legacy_ = false;
    bool msix_ = false;
    bool per_queue_ = false;
    bool refused_ = false;
    uint16_t config_vector_ = msix_no_vector;
    uint16_t first_queue_vector_ = msix_no_vector;
};

using pci_transport = basic_pci_transport<bar_bus>;

}  // namespace vscsi::uio
