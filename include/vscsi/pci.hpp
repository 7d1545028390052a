// virtio-pci transports (checklist G): the legacy I/O BAR interface and the modern
// capability interface, with the same surface so device.hpp and the initiator are written
// once.
//
// Register access is a policy object, the "Bus", that the backend provides (no virtual):
//
//   uint8_t  read8 (unsigned bar, uint32_t off);     // BAR space, I/O or MMIO, little-endian
//   uint16_t read16(unsigned bar, uint32_t off);
//   uint32_t read32(unsigned bar, uint32_t off);
//   void write8 (unsigned bar, uint32_t off, uint8_t v);
//   void write16(unsigned bar, uint32_t off, uint16_t v);
//   void write32(unsigned bar, uint32_t off, uint32_t v);
//   uint64_t bar_length(unsigned bar);               // 0 if absent or not mapped
//   uint8_t  config_read8 (uint32_t off);            // PCI configuration space
//   uint16_t config_read16(uint32_t off);
//   uint32_t config_read32(uint32_t off);
//
// Every access is aligned and of its field's width; 64-bit fields go as two 32-bit halves
// (checklist 53). Everything read from configuration space and BARs is bounds-checked.
#pragma once
#include <stdint.h>
#include <stddef.h>

#include "endian.hpp"
#include "status.hpp"
#include "wire.hpp"

namespace vscsi {

// PCI configuration space.
namespace pci_cfg {
inline constexpr uint32_t vendor_id = 0x00;
inline constexpr uint32_t device_id = 0x02;
inline constexpr uint32_t command = 0x04;
inline constexpr uint32_t status = 0x06;
inline constexpr uint32_t revision = 0x08;
inline constexpr uint32_t subsystem_vendor = 0x2c;
inline constexpr uint32_t subsystem_id = 0x2e;
inline constexpr uint32_t capabilities = 0x34;
inline constexpr uint16_t status_cap_list = 0x10;
inline constexpr uint16_t command_io = 0x1;
inline constexpr uint16_t command_memory = 0x2;
inline constexpr uint16_t command_bus_master = 0x4;
inline constexpr uint16_t command_intx_disable = 0x400;
inline constexpr uint8_t cap_id_vendor = 0x09;
inline constexpr uint8_t cap_id_msix = 0x11;
inline constexpr uint16_t msix_enable = 0x8000;
inline constexpr uint32_t size = 256;
inline constexpr unsigned max_caps = 48;  // (256 - 64) / 4: a longer walk is a loop
}  // namespace pci_cfg

// Legacy virtio-pci BAR0 registers (checklist 57).
namespace legacy_reg {
inline constexpr uint32_t host_features = 0;
inline constexpr uint32_t guest_features = 4;
inline constexpr uint32_t queue_pfn = 8;
inline constexpr uint32_t queue_num = 12;
inline constexpr uint32_t queue_sel = 14;
inline constexpr uint32_t queue_notify = 16;
inline constexpr uint32_t status = 18;
inline constexpr uint32_t isr = 19;
inline constexpr uint32_t msix_config = 20;
inline constexpr uint32_t msix_queue = 22;
inline constexpr uint32_t config_no_msix = 20;
inline constexpr uint32_t config_msix = 24;
inline constexpr uint32_t pfn_shift = 12;
inline constexpr uint32_t vring_align = 4096;
}  // namespace legacy_reg

// Modern virtio-pci capability types and structure offsets.
namespace modern_cap {
inline constexpr uint8_t common_cfg = 1;
inline constexpr uint8_t notify_cfg = 2;
inline constexpr uint8_t isr_cfg = 3;
inline constexpr uint8_t device_cfg = 4;
inline constexpr uint8_t pci_cfg = 5;
inline constexpr uint8_t shared_memory_cfg = 8;
inline constexpr uint8_t vendor_cfg = 9;
// struct virtio_pci_cap
inline constexpr uint32_t vndr = 0, next = 1, len = 2, cfg_type = 3, bar = 4, id = 5, offset = 8, length = 12;
inline constexpr uint32_t notify_off_multiplier = 16;  // struct virtio_pci_notify_cap
inline constexpr uint32_t cap_size = 16;
inline constexpr uint32_t notify_cap_size = 20;
}  // namespace modern_cap

namespace common_reg {
inline constexpr uint32_t device_feature_select = 0;
inline constexpr uint32_t device_feature = 4;
inline constexpr uint32_t driver_feature_select = 8;
inline constexpr uint32_t driver_feature = 12;
inline constexpr uint32_t msix_config = 16;
inline constexpr uint32_t num_queues = 18;
inline constexpr uint32_t device_status = 20;
inline constexpr uint32_t config_generation = 21;
inline constexpr uint32_t queue_select = 22;
inline constexpr uint32_t queue_size = 24;
inline constexpr uint32_t queue_msix_vector = 26;
inline constexpr uint32_t queue_enable = 28;
inline constexpr uint32_t queue_notify_off = 30;
inline constexpr uint32_t queue_desc_lo = 32;
inline constexpr uint32_t queue_desc_hi = 36;
inline constexpr uint32_t queue_driver_lo = 40;
inline constexpr uint32_t queue_driver_hi = 44;
inline constexpr uint32_t queue_device_lo = 48;
inline constexpr uint32_t queue_device_hi = 52;
inline constexpr uint32_t size = 56;  // what this driver uses of it
}  // namespace common_reg

inline constexpr uint16_t msix_no_vector = 0xffff;
inline constexpr uint16_t max_notify_queues = 258;  // control, event and up to 256 request queues

struct pci_identity {
    uint16_t vendor;
    uint16_t device;
    uint16_t subsystem_vendor;
    uint16_t subsystem_device;
    uint8_t revision;
};

// checklist 50: 1af4:1048 (modern), or the transitional 1af4:1004; any revision.
constexpr bool is_virtio_scsi(uint16_t vendor, uint16_t device) {
    return vendor == pci_vendor_virtio &&
           (device == pci_device_scsi_modern || device == pci_device_scsi_transitional);
}

template <class Bus>
pci_identity probe_identity(Bus& bus) {
    pci_identity id{};
    id.vendor = bus.config_read16(pci_cfg::vendor_id);
    id.device = bus.config_read16(pci_cfg::device_id);
    id.revision = bus.config_read8(pci_cfg::revision);
    id.subsystem_vendor = bus.config_read16(pci_cfg::subsystem_vendor);
    id.subsystem_device = bus.config_read16(pci_cfg::subsystem_id);
    return id;
}

// Walk the PCI capability list with a visitor f(cap_offset, cap_id) -> bool (false stops).
// Bounded: pointers below 0x40 or beyond config space end the walk, and so does a loop.
template <class Bus, class F>
void walk_capabilities(Bus& bus, F&& f) {
    if (!(bus.config_read16(pci_cfg::status) & pci_cfg::status_cap_list)) return;
    uint32_t ptr = bus.config_read8(pci_cfg::capabilities) & 0xfc;
    for (unsigned n = 0; n < pci_cfg::max_caps; ++n) {
        if (ptr < 0x40 || ptr + 2 > pci_cfg::size) return;
        const uint8_t id = bus.config_read8(ptr);
        const uint32_t next = bus.config_read8(ptr + 1) & 0xfc;
        if (!f(ptr, id)) return;
        ptr = next;
    }
}

template <class Bus>
bool msix_enabled(Bus& bus) {
    bool on = false;
    walk_capabilities(bus, [&](uint32_t at, uint8_t id) {
        if (id != pci_cfg::cap_id_msix || at + 4 > pci_cfg::size) return true;
        on = (bus.config_read16(at + 2) & pci_cfg::msix_enable) != 0;
        return false;
    });
    return on;
}

// The legacy interface: everything in BAR0, fields in guest order, 32 feature bits.
template <class Bus>
class legacy_pci {
public:
    explicit legacy_pci(Bus& b) : bus_(&b) {}

    status probe() {
        const uint64_t len = bus_->bar_length(0);
        if (len < legacy_reg::config_no_msix) return status::no_device;
        // checklist 57: device config starts at 24 while MSI-X is enabled, 20 otherwise.
        cfg_off_ = msix_enabled(*bus_) ? legacy_reg::config_msix : legacy_reg::config_no_msix;
        // checklist 30: any config size at least what we read is fine.
        if (len < cfg_off_ + config_offset::size) return status::no_device;
        return status::ok;
    }

    virtio_order order() const { return virtio_order{true}; }
    bool is_legacy() const { return true; }
    uint32_t config_offset_in_bar() const { return cfg_off_; }

    uint8_t get_status() { return bus_->read8(0, legacy_reg::status); }
    void set_status(uint8_t s) { bus_->write8(0, legacy_reg::status, s); }
    void reset() { set_status(0); }

    uint64_t device_features() { return bus_->read32(0, legacy_reg::host_features); }
    void set_driver_features(uint64_t f) { bus_->write32(0, legacy_reg::guest_features, uint32_t(f)); }

    uint16_t num_queues() { return 0; }  // legacy has no count; queue_max_size says 0 past the end
    uint32_t queue_max_size(uint16_t q) {
        bus_->write16(0, legacy_reg::queue_sel, q);
        return bus_->read16(0, legacy_reg::queue_num);
    }
    bool queue_size_settable() const { return false; }

    status setup_queue(uint16_t q, uint32_t size, uint64_t desc, uint64_t avail, uint64_t used) {
        bus_->write16(0, legacy_reg::queue_sel, q);
        const uint32_t dev_size = bus_->read16(0, legacy_reg::queue_num);
        if (dev_size == 0) return status::no_device;
        if (size != dev_size) return status::invalid_argument;  // fixed by the device (checklist 40)
        // checklist 39: one contiguous area, used ring 4096-aligned, address as a 32-bit PFN.
        if (desc & (legacy_reg::vring_align - 1)) return status::invalid_argument;
        if ((desc >> legacy_reg::pfn_shift) > 0xffffffffull) return status::invalid_argument;
        const uint64_t want_avail = desc + 16ull * size;
        const uint64_t want_used =
            (want_avail + 6 + 2ull * size + legacy_reg::vring_align - 1) & ~uint64_t(legacy_reg::vring_align - 1);
        if (avail != want_avail || used != want_used) return status::invalid_argument;
        bus_->write32(0, legacy_reg::queue_pfn, uint32_t(desc >> legacy_reg::pfn_shift));
        return status::ok;
    }
    void disable_queue(uint16_t q) {
        bus_->write16(0, legacy_reg::queue_sel, q);
        bus_->write32(0, legacy_reg::queue_pfn, 0);
    }
    void notify(uint16_t q) { bus_->write16(0, legacy_reg::queue_notify, q); }
    uint8_t read_isr() { return bus_->read8(0, legacy_reg::isr); }

    uint8_t config_read8(uint32_t off) { return bus_->read8(0, cfg_off_ + off); }
    uint16_t config_read16(uint32_t off) { return bus_->read16(0, cfg_off_ + off); }
    uint32_t config_read32(uint32_t off) { return bus_->read32(0, cfg_off_ + off); }
    void config_write32(uint32_t off, uint32_t v) { bus_->write32(0, cfg_off_ + off, v); }
    bool has_config_generation() const { return false; }
    uint8_t config_generation() { return 0; }

    // The vector registers exist only while MSI-X is enabled (checklist 57).
    uint16_t set_config_vector(uint16_t v) {
        if (cfg_off_ != legacy_reg::config_msix) return msix_no_vector;
        bus_->write16(0, legacy_reg::msix_config, v);
        return bus_->read16(0, legacy_reg::msix_config);  // checklist 56: read back
    }
    uint16_t set_queue_vector(uint16_t q, uint16_t v) {
        if (cfg_off_ != legacy_reg::config_msix) return msix_no_vector;
        bus_->write16(0, legacy_reg::queue_sel, q);
        bus_->write16(0, legacy_reg::msix_queue, v);
        return bus_->read16(0, legacy_reg::msix_queue);
    }

private:
    Bus* bus_;
    uint32_t cfg_off_ = legacy_reg::config_no_msix;
};

// The modern interface: structures located by vendor capabilities (checklist 51, 52).
template <class Bus>
class modern_pci {
public:
    struct region {
        bool present;
        uint8_t bar;
        uint32_t offset;
        uint32_t length;
    };

    explicit modern_pci(Bus& b) : bus_(&b) {}

    status probe() {
        common_ = notify_ = isr_ = device_ = region{};
        notify_mult_ = 0;
        walk_capabilities(*bus_, [&](uint32_t at, uint8_t id) {
            if (id == pci_cfg::cap_id_vendor) take_cap(at);
            return true;
        });
        if (!common_.present || !notify_.present || !isr_.present || !device_.present) return status::no_device;
        for (uint16_t i = 0; i < max_notify_queues; ++i) notify_at_[i] = no_notify;
        return status::ok;
    }

    virtio_order order() const { return virtio_order{false}; }
    bool is_legacy() const { return false; }
    const region& common_region() const { return common_; }
    const region& notify_region() const { return notify_; }
    const region& isr_region() const { return isr_; }
    const region& device_region() const { return device_; }
    uint32_t notify_multiplier() const { return notify_mult_; }

    uint8_t get_status() { return c_read8(common_reg::device_status); }
    void set_status(uint8_t s) { c_write8(common_reg::device_status, s); }
    void reset() { set_status(0); }

    uint64_t device_features() {
        c_write32(common_reg::device_feature_select, 0);
        const uint32_t lo = c_read32(common_reg::device_feature);
        c_write32(common_reg::device_feature_select, 1);
        const uint32_t hi = c_read32(common_reg::device_feature);
        return (uint64_t(hi) << 32) | lo;
    }
    void set_driver_features(uint64_t f) {
        c_write32(common_reg::driver_feature_select, 0);
        c_write32(common_reg::driver_feature, uint32_t(f));
        c_write32(common_reg::driver_feature_select, 1);
        c_write32(common_reg::driver_feature, uint32_t(f >> 32));
    }

    uint16_t num_queues() { return c_read16(common_reg::num_queues); }
    uint32_t queue_max_size(uint16_t q) {
        if (q >= num_queues()) return 0;
        c_write16(common_reg::queue_select, q);
        return c_read16(common_reg::queue_size);
    }
    bool queue_size_settable() const { return true; }

    status setup_queue(uint16_t q, uint32_t size, uint64_t desc, uint64_t avail, uint64_t used) {
        if (q >= num_queues() || q >= max_notify_queues) return status::no_device;
        c_write16(common_reg::queue_select, q);
        const uint32_t max = c_read16(common_reg::queue_size);
        if (max == 0) return status::no_device;
        // checklist 40: a power of two no larger than the device's maximum.
        if (size == 0 || size > max || (size & (size - 1))) return status::invalid_argument;
        if ((desc & 15) || (avail & 1) || (used & 3)) return status::invalid_argument;  // checklist 39
        // The notify address must fall inside the notify structure (checklist 55) and take an
        // aligned 16-bit write (checklist 53): a multiplier that is not even, as the spec
        // requires, must not make us write across a register boundary.
        const uint64_t off = uint64_t(c_read16(common_reg::queue_notify_off)) * notify_mult_;
        if (off + 2 > notify_.length || ((notify_.offset + off) & 1)) return status::device_error;
        // checklist 54: every queue field before queue_enable, which is written 1 only.
        c_write16(common_reg::queue_size, uint16_t(size));
        c_write32(common_reg::queue_desc_lo, uint32_t(desc));
        c_write32(common_reg::queue_desc_hi, uint32_t(desc >> 32));
        c_write32(common_reg::queue_driver_lo, uint32_t(avail));
        c_write32(common_reg::queue_driver_hi, uint32_t(avail >> 32));
        c_write32(common_reg::queue_device_lo, uint32_t(used));
        c_write32(common_reg::queue_device_hi, uint32_t(used >> 32));
        c_write16(common_reg::queue_enable, 1);
        notify_at_[q] = notify_.offset + uint32_t(off);
        return status::ok;
    }
    void disable_queue(uint16_t) {}  // only a device reset disables a modern queue

    void notify(uint16_t q) {
        if (q >= max_notify_queues || notify_at_[q] == no_notify) return;
        bus_->write16(notify_.bar, notify_at_[q], q);
    }
    uint8_t read_isr() { return bus_->read8(isr_.bar, isr_.offset); }

    uint8_t config_read8(uint32_t off) { return bus_->read8(device_.bar, device_.offset + off); }
    uint16_t config_read16(uint32_t off) { return bus_->read16(device_.bar, device_.offset + off); }
    uint32_t config_read32(uint32_t off) { return bus_->read32(device_.bar, device_.offset + off); }
    void config_write32(uint32_t off, uint32_t v) { bus_->write32(device_.bar, device_.offset + off, v); }
    bool has_config_generation() const { return true; }
    uint8_t config_generation() { return c_read8(common_reg::config_generation); }

    uint16_t set_config_vector(uint16_t v) {
        c_write16(common_reg::msix_config, v);
        return c_read16(common_reg::msix_config);  // checklist 56
    }
    uint16_t set_queue_vector(uint16_t q, uint16_t v) {
        c_write16(common_reg::queue_select, q);
        c_write16(common_reg::queue_msix_vector, v);
        return c_read16(common_reg::queue_msix_vector);
    }

private:
    static constexpr uint32_t no_notify = 0xffffffffu;

    void take_cap(uint32_t at) {
        if (at + modern_cap::cap_size > pci_cfg::size) return;
        const uint8_t len = bus_->config_read8(at + modern_cap::len);
        if (len < modern_cap::cap_size) return;
        const uint8_t type = bus_->config_read8(at + modern_cap::cfg_type);
        const uint8_t bar = bus_->config_read8(at + modern_cap::bar);
        if (bar > 5) return;  // reserved BAR: ignore the capability (checklist 52)
        region* r = type == modern_cap::common_cfg   ? &common_
                    : type == modern_cap::notify_cfg ? &notify_
                    : type == modern_cap::isr_cfg    ? &isr_
                    : type == modern_cap::device_cfg ? &device_
                                                     : nullptr;
        if (!r || r->present) return;  // unknown type, or not the first of its type
        if (type == modern_cap::notify_cfg &&
            (len < modern_cap::notify_cap_size || at + modern_cap::notify_cap_size > pci_cfg::size))
            return;
        const uint32_t offset = bus_->config_read32(at + modern_cap::offset);
        const uint32_t length = bus_->config_read32(at + modern_cap::length);
        const uint64_t bar_len = bus_->bar_length(bar);
        if (length == 0 || uint64_t(offset) + length > bar_len) return;  // must lie inside its BAR
        // The spec has the common and device structures 4-byte aligned and the notify one
        // 2-byte aligned; one that is not would make its registers misaligned (checklist 53).
        const uint32_t align = type == modern_cap::notify_cfg ? 2 : type == modern_cap::isr_cfg ? 1 : 4;
        if (offset & (align - 1)) return;
        // One too short for the fields we use is one we cannot support: a later one may be
        // (checklist 52: the first instance the driver can support; any larger length is fine).
        const uint32_t need = type == modern_cap::common_cfg   ? common_reg::size
                              : type == modern_cap::notify_cfg ? 2
                              : type == modern_cap::isr_cfg    ? 1
                                                               : config_offset::size;
        if (length < need) return;
        if (type == modern_cap::notify_cfg) notify_mult_ = bus_->config_read32(at + modern_cap::notify_off_multiplier);
        *r = region{true, bar, offset, length};
    }

    uint8_t c_read8(uint32_t r) { return bus_->read8(common_.bar, common_.offset + r); }
    uint16_t c_read16(uint32_t r) { return bus_->read16(common_.bar, common_.offset + r); }
    uint32_t c_read32(uint32_t r) { return bus_->read32(common_.bar, common_.offset + r); }
    void c_write8(uint32_t r, uint8_t v) { bus_->write8(common_.bar, common_.offset + r, v); }
    void c_write16(uint32_t r, uint16_t v) { bus_->write16(common_.bar, common_.offset + r, v); }
    void c_write32(uint32_t r, uint32_t v) { bus_->write32(common_.bar, common_.offset + r, v); }

    Bus* bus_;
    region common_{}, notify_{}, isr_{}, device_{};
    uint32_t notify_mult_ = 0;
    uint32_t notify_at_[max_notify_queues]{};
};

}  // namespace vscsi
