// The loopback virtio-scsi device: registers, rings, SCSI target. See loopback_device.hpp.
#include "loopback_device.hpp"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>

#include "vscsi/endian.hpp"

namespace vscsi::loopback {

namespace {
// Little-endian helpers for device-visible memory (the host is little-endian; legacy and
// modern layouts therefore coincide byte for byte, see endian.hpp). memcpy: one unaligned
// load or store each.
static_assert(host_is_little_endian, "the loopback device assumes a little-endian host");
inline uint16_t ld16(const uint8_t* p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
inline uint32_t ld32(const uint8_t* p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
inline uint64_t ld64(const uint8_t* p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
inline void st16(uint8_t* p, uint16_t v) { memcpy(p, &v, 2); }
inline void st32(uint8_t* p, uint32_t v) { memcpy(p, &v, 4); }
// Ring indices the driver writes while the device thread reads them, and the other way:
// read and written once, never torn (the ring parts are aligned, see map_ring()).
inline uint16_t ld16_shared(const uint8_t* p) {
    return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_RELAXED);
}
inline void st16_shared(uint8_t* p, uint16_t v) { __atomic_store_n(reinterpret_cast<uint16_t*>(p), v, __ATOMIC_RELAXED); }
uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }
uint64_t be64(const uint8_t* p) { return uint64_t(be32(p)) << 32 | be32(p + 4); }
uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
void sbe16(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}
void sbe32(uint8_t* p, uint32_t v) {
    sbe16(p, uint16_t(v >> 16));
    sbe16(p + 2, uint16_t(v));
}
void sbe64(uint8_t* p, uint64_t v) {
    sbe32(p, uint32_t(v >> 32));
    sbe32(p + 4, uint32_t(v));
}
bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
    return uint16_t(new_idx - event - 1) < uint16_t(new_idx - old_idx);
}

constexpr uint8_t sense_no_sense = 0x0, sense_not_ready = 0x2, sense_illegal_request = 0x5,
                  sense_unit_attention = 0x6, sense_data_protect = 0x7;
constexpr uint8_t status_good = 0x00, status_check_condition = 0x02;
}  // namespace

device::device(const options& o, const dma_map& mem) : opt_(o), mem_(mem) {
    if (opt_.seg_max == 0) opt_.seg_max = opt_.queue_max > 2 ? opt_.queue_max - 2 : 1;
    const bool has_legacy = opt_.kind != personality::modern;
    const bool has_modern = opt_.kind != personality::legacy;
    device_features_ = 0;
    if (opt_.inout) device_features_ |= feature::bit(feature::scsi_inout);
    if (opt_.hotplug) device_features_ |= feature::bit(feature::scsi_hotplug);
    if (opt_.change) device_features_ |= feature::bit(feature::scsi_change);
    if (opt_.t10_pi) device_features_ |= feature::bit(feature::scsi_t10_pi);
    if (opt_.indirect) device_features_ |= feature::bit(feature::ring_indirect_desc);
    if (opt_.event_idx) device_features_ |= feature::bit(feature::ring_event_idx);
    if (has_legacy) device_features_ |= feature::bit(feature::any_layout) | feature::bit(feature::notify_on_empty);
    if (has_modern) device_features_ |= feature::bit(feature::version_1);
    // Ring formats and orders beyond the split ring are virtio 1.x features: a legacy
    // interface has no bit for them.
    if (has_modern && opt_.packed) device_features_ |= feature::bit(feature::ring_packed);
    if (has_modern && opt_.in_order) device_features_ |= feature::bit(feature::in_order);
    device_features_ &= ~opt_.withhold_features;

    // PCI configuration space.
    st16(pcicfg_ + 0x00, pci_vendor_virtio);
    st16(pcicfg_ + 0x02, opt_.kind == personality::modern ? pci_device_scsi_modern : pci_device_scsi_transitional);
    st16(pcicfg_ + 0x06, 0x10);  // capability list present
    pcicfg_[0x08] = opt_.kind == personality::modern ? 1 : 0;
    pcicfg_[0x0b] = 0x01;  // mass storage
    pcicfg_[0x0a] = 0x00;  // SCSI
    st16(pcicfg_ + 0x2c, pci_vendor_virtio);
    st16(pcicfg_ + 0x2e, virtio_id_scsi);
    uint8_t* prev_next = pcicfg_ + 0x34;
    uint32_t at = 0x40;
    auto add_cap = [&](uint8_t id, uint8_t len) -> uint8_t* {
        *prev_next = uint8_t(at);
        uint8_t* c = pcicfg_ + at;
        c[0] = id;
        c[1] = 0;
        c[2] = len;
        prev_next = c + 1;
        at += 0x10 * ((len + 15) / 16);
        return c;
    };
    // MSI-X capability (table not modelled; the enable bit moves legacy config). Its size is
    // what the vector registers accept.
    uint8_t* msix = add_cap(0x11, 12);
    st16(msix + 2, uint16_t((opt_.msix_enabled ? 0x8000 : 0) | (msix_table_size - 1)));
    if (has_modern) {
        auto vcap = [&](uint8_t type, uint32_t off, uint32_t len, bool notify) {
            uint8_t* c = add_cap(0x09, notify ? 20 : 16);
            c[3] = type;
            c[4] = uint8_t(modern_bar);
            st32(c + 8, off);
            st32(c + 12, len);
            if (notify) st32(c + 16, opt_.notify_multiplier);
        };
        vcap(1, common_off, 0x1000, false);
        vcap(3, isr_off, 0x1000, false);
        vcap(4, device_off, 0x1000, false);
        vcap(2, notify_off, 0x1000, true);
    }
    queues_.resize(2 + opt_.num_queues);
    for (queue& q : queues_) q.max = opt_.queue_max;
    iovs_.resize(opt_.queue_max + 8);
    held_.resize(opt_.queue_max * (2 + opt_.num_queues));
    batch_.reserve(opt_.queue_max * 2);
    pools_.assign(queues_.size(), std::vector<saved_desc>(opt_.queue_max));
    pool_free_.assign(queues_.size(), 0);
    id_busy_.assign(queues_.size(), std::vector<uint8_t>(opt_.queue_max, 0));
    luns_.reserve(64);
}

uint64_t device::bar_length(unsigned bar) const {
    if (bar == 0 && opt_.kind != personality::modern) return legacy_bar_size;
    if (bar == modern_bar && opt_.kind != personality::legacy) return modern_bar_size;
    return 0;
}

void device::violation(const std::string& what) { violations_.push_back(what); }

uint32_t device::read(unsigned bar, uint32_t off, unsigned width) {
    if (off % width) violation("misaligned read at bar " + std::to_string(bar) + " offset " + std::to_string(off));
    if (off + width > bar_length(bar)) {
        violation("read beyond bar " + std::to_string(bar) + " at " + std::to_string(off));
        return ~0u;
    }
    if (bar == 0) return legacy_read(off, width);
    if (off >= common_off && off < common_off + 0x1000) return common_read(off - common_off, width);
    if (off >= isr_off && off < isr_off + 0x1000) {
        const uint8_t v = isr_;
        isr_ = 0;  // read to clear
        return v;
    }
    if (off >= device_off && off < device_off + 0x1000) return devcfg_read(off - device_off, width);
    violation("read of the notify area");
    return 0;
}

void device::write(unsigned bar, uint32_t off, unsigned width, uint32_t v) {
    if (off % width) violation("misaligned write at bar " + std::to_string(bar) + " offset " + std::to_string(off));
    if (off + width > bar_length(bar)) {
        violation("write beyond bar " + std::to_string(bar) + " at " + std::to_string(off));
        return;
    }
    if (bar == 0) return legacy_write(off, width, v);
    if (off >= common_off && off < common_off + 0x1000) return common_write(off - common_off, width, v);
    if (off >= isr_off && off < isr_off + 0x1000) return violation("write to ISR");
    if (off >= device_off && off < device_off + 0x1000) return devcfg_write(off - device_off, width, v);
    // Notify area: a 16-bit write of the queue index at that queue's address.
    if (width != 2) violation("notify with a width other than 16 bits");
    const uint32_t rel = off - notify_off;
    const uint32_t q = v;
    if (q >= queues_.size() || rel != q * opt_.notify_multiplier) violation("notify at the wrong address");
    if (!(status_ & dev_status::driver_ok)) violation("notify before DRIVER_OK (checklist 32)");
    __atomic_fetch_add(&stats_.notifies, 1, __ATOMIC_RELAXED);  // driver threads may notify at once
}

void device::start_thread(int cpu) {
    if (running_.exchange(true)) return;
    // Pinned from here, before it runs: see pinned_thread.hpp.
    if (!thread_.start(cpu, [this] {
            while (running_.load(std::memory_order_relaxed)) step();
        }))
        running_ = false;
}

void device::stop_thread() {
    if (!running_.exchange(false)) return;
    thread_.join();
}

// ---- legacy BAR0 ----
uint32_t device::legacy_read(uint32_t off, unsigned width) {
    kind_legacy_used_ = true;
    const uint32_t cfg = opt_.msix_enabled ? 24 : 20;
    if (off >= cfg) return devcfg_read(off - cfg, width);
    auto want = [&](unsigned w) {
        if (width != w) violation("legacy register " + std::to_string(off) + " read with width " + std::to_string(width));
    };
    switch (off) {
        case 0: want(4); return uint32_t(device_features_);
        case 4: want(4); return uint32_t(driver_features_);
        case 8: {
            want(4);
            const queue& q = queues_[queue_select_ < queues_.size() ? queue_select_ : 0];
            return queue_select_ < queues_.size() ? uint32_t(q.desc >> 12) : 0;
        }
        case 12: want(2); return queue_select_ < queues_.size() ? queues_[queue_select_].max : 0;
        case 14: want(2); return queue_select_;
        case 16: want(2); return 0;
        case 18:
            want(1);
            if (reset_reads_left_) {
                --reset_reads_left_;
                return status_before_reset_;
            }
            return status_;
        case 19: {
            want(1);
            const uint8_t v = isr_;
            isr_ = 0;
            return v;
        }
        case 20: want(2); return msix_config_;
        case 22: want(2); return queue_select_ < queues_.size() ? queues_[queue_select_].msix : 0xffff;
    }
    violation("legacy read at a field's middle: " + std::to_string(off));
    return 0;
}

void device::legacy_write(uint32_t off, unsigned width, uint32_t v) {
    kind_legacy_used_ = true;
    const uint32_t cfg = opt_.msix_enabled ? 24 : 20;
    if (off >= cfg) return devcfg_write(off - cfg, width, v);
    auto want = [&](unsigned w) {
        if (width != w)
            violation("legacy register " + std::to_string(off) + " written with width " + std::to_string(width));
    };
    switch (off) {
        case 0: return violation("write to host features (read-only)");
        case 4:
            want(4);
            if (status_ & dev_status::driver_ok) violation("features written after DRIVER_OK");
            if (v & ~uint32_t(device_features_)) violation("driver accepted features the device did not offer");
            driver_features_ = v;
            driver_features_written_ = true;
            return;
        case 8: {
            want(4);
            if (queue_select_ >= queues_.size()) return violation("PFN for a queue that does not exist");
            queue& q = queues_[queue_select_];
            if (v == 0) {
                q = queue{};
                q.max = opt_.queue_max;
                return;
            }
            q.size = q.max;
            q.desc = uint64_t(v) << 12;
            q.avail = q.desc + 16ull * q.size;
            q.used = (q.avail + 6 + 2ull * q.size + 4095) & ~4095ull;
            q.enabled = true;
            return;
        }
        case 12: return violation("write to queue size (read-only on legacy)");
        case 14: want(2); queue_select_ = uint16_t(v); return;
        case 16:
            want(2);
            if (!(status_ & dev_status::driver_ok)) violation("notify before DRIVER_OK (checklist 32)");
            if (v >= queues_.size()) violation("notify of a queue that does not exist");
            __atomic_fetch_add(&stats_.notifies, 1, __ATOMIC_RELAXED);
            return;
        case 18: want(1); return status_write(uint8_t(v));
        case 19: return violation("write to ISR (read-only)");
        case 20: want(2); msix_config_ = msix_vector(v); return;
        case 22:
            want(2);
            if (queue_select_ < queues_.size()) queues_[queue_select_].msix = msix_vector(v);
            return;
    }
    violation("legacy write at a field's middle: " + std::to_string(off));
}

// ---- modern common configuration ----
uint32_t device::common_read(uint32_t off, unsigned width) {
    auto want = [&](unsigned w) {
        if (width != w) violation("common cfg " + std::to_string(off) + " read with width " + std::to_string(width));
    };
    queue* q = queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
    switch (off) {
        case 0: want(4); return dfselect_;
        case 4: want(4); return dfselect_ == 0 ? uint32_t(device_features_) : dfselect_ == 1 ? uint32_t(device_features_ >> 32) : 0;
        case 8: want(4); return gfselect_;
        case 12: want(4); return gfselect_ == 0 ? uint32_t(driver_features_) : gfselect_ == 1 ? uint32_t(driver_features_ >> 32) : 0;
        case 16: want(2); return msix_config_;
        case 18: want(2); return uint32_t(queues_.size());
        case 20:
            want(1);
            if (reset_reads_left_) {
                --reset_reads_left_;
                return status_before_reset_;
            }
            return status_;
        case 21:
            want(1);
            if (faults_.generation_churn) {
                --faults_.generation_churn;
                ++config_generation_;
            }
            return config_generation_;
        case 22: want(2); return queue_select_;
        case 24: want(2); return q ? (q->size ? q->size : q->max) : 0;
        case 26: want(2); return q ? q->msix : 0xffff;
        case 28: want(2); return q ? q->enabled : 0;
        case 30: want(2); return queue_select_;  // notify offset = queue index
        case 32: want(4); return q ? uint32_t(q->desc) : 0;
        case 36: want(4); return q ? uint32_t(q->desc >> 32) : 0;
        case 40: want(4); return q ? uint32_t(q->avail) : 0;
        case 44: want(4); return q ? uint32_t(q->avail >> 32) : 0;
        case 48: want(4); return q ? uint32_t(q->used) : 0;
        case 52: want(4); return q ? uint32_t(q->used >> 32) : 0;
    }
    return 0;  // past the fields this device implements
}

void device::common_write(uint32_t off, unsigned width, uint32_t v) {
    auto want = [&](unsigned w) {
        if (width != w) violation("common cfg " + std::to_string(off) + " written with width " + std::to_string(width));
    };
    queue* q = queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
    auto queue_field = [&]() -> bool {
        if (!q) {
            violation("queue field written for a queue that does not exist");
            return false;
        }
        if (q->enabled) {
            violation("queue field written after queue_enable (checklist 54)");
            return false;
        }
        return true;
    };
    switch (off) {
        case 0: want(4); dfselect_ = v; return;
        case 4: return violation("write to device_feature (checklist 54)");
        case 8: want(4); gfselect_ = v; return;
        case 12: {
            want(4);
            if (status_ & dev_status::features_ok) violation("features written after FEATURES_OK");
            if (gfselect_ > 1) return;
            const uint64_t mask = gfselect_ == 0 ? 0xffffffffull : 0xffffffff00000000ull;
            const uint64_t val = gfselect_ == 0 ? uint64_t(v) : uint64_t(v) << 32;
            driver_features_ = (driver_features_ & ~mask) | val;
            driver_features_written_ = true;
            return;
        }
        case 16: want(2); msix_config_ = msix_vector(v); return;
        case 18: return violation("write to num_queues (checklist 54)");
        case 20: want(1); return status_write(uint8_t(v));
        case 21: return violation("write to config_generation (checklist 54)");
        case 22: want(2); queue_select_ = uint16_t(v); return;
        case 24:
            want(2);
            if (!queue_field()) return;
            // Packed rings take any size; split ones a power of two (checklist 40).
            if (v == 0 || v > q->max || (!(driver_features_ & feature::bit(feature::ring_packed)) && (v & (v - 1))))
                return violation("queue size not a power of two <= max (checklist 40)");
            q->size = v;
            return;
        case 26: want(2); if (q) q->msix = msix_vector(v); return;
        case 28:
            want(2);
            if (v != 1) return violation("queue_enable written with " + std::to_string(v) + " (checklist 54)");
            if (!queue_field()) return;
            if (!q->size) q->size = q->max;
            q->enabled = true;
            return;
        case 30: return violation("write to queue_notify_off (checklist 54)");
        case 32: want(4); if (queue_field()) q->desc = (q->desc & ~0xffffffffull) | v; return;
        case 36: want(4); if (queue_field()) q->desc = (q->desc & 0xffffffffull) | uint64_t(v) << 32; return;
        case 40: want(4); if (queue_field()) q->avail = (q->avail & ~0xffffffffull) | v; return;
        case 44: want(4); if (queue_field()) q->avail = (q->avail & 0xffffffffull) | uint64_t(v) << 32; return;
        case 48: want(4); if (queue_field()) q->used = (q->used & ~0xffffffffull) | v; return;
        case 52: want(4); if (queue_field()) q->used = (q->used & 0xffffffffull) | uint64_t(v) << 32; return;
    }
    violation("write to common cfg offset " + std::to_string(off));
}

// ---- device-specific configuration ----
uint32_t device::devcfg_read(uint32_t off, unsigned width) {
    uint8_t c[36];
    st32(c + 0, opt_.num_queues);
    st32(c + 4, opt_.seg_max);
    st32(c + 8, opt_.max_sectors);
    st32(c + 12, opt_.cmd_per_lun);
    st32(c + 16, opt_.event_info_size);
    st32(c + 20, sense_size_);
    st32(c + 24, cdb_size_);
    st16(c + 28, opt_.max_channel);
    st16(c + 30, opt_.max_target);
    st32(c + 32, opt_.max_lun);
    if (off + width > sizeof(c)) return 0;
    if (width == 1) return c[off];
    if (width == 2) return ld16(c + off);
    return ld32(c + off);
}

void device::devcfg_write(uint32_t off, unsigned width, uint32_t v) {
    if (width != 4 || (off != config_offset::sense_size && off != config_offset::cdb_size))
        return violation("write to a read-only config field at " + std::to_string(off) + " (checklist 25)");
    if (off == config_offset::sense_size) {
        if (v >= 65536) return set_needs_reset();  // as QEMU: bad data written to config
        sense_size_ = v;
    } else {
        if (v >= 256) return set_needs_reset();
        cdb_size_ = v;
    }
}

void device::status_write(uint8_t v) {
    if (v == 0) return do_reset();
    if (reset_reads_left_) violation("status written before the reset completed (checklist 36)");
    reset_reads_left_ = 0;
    if (status_ & dev_status::failed) violation("status written after FAILED without a reset (checklist 36)");
    if ((v & status_) != status_) violation("a status bit was cleared (checklist 36)");
    const uint8_t added = uint8_t(v & ~status_);
    const bool modern = modern_features();
    if ((added & dev_status::driver) && !(v & dev_status::acknowledge)) violation("DRIVER before ACKNOWLEDGE");
    if (added & dev_status::features_ok) {
        if (!(v & dev_status::driver)) violation("FEATURES_OK before DRIVER");
        if (!driver_features_written_) violation("FEATURES_OK before the features were written");
        if (driver_features_ & ~device_features_) violation("driver accepted features the device did not offer");
        if (kind_legacy_used_) violation("FEATURES_OK on the legacy interface");
        if (faults_.refuse_features_ok) v = uint8_t(v & ~dev_status::features_ok);
    }
    if (added & dev_status::driver_ok) {
        if (!(v & dev_status::driver)) violation("DRIVER_OK before DRIVER");
        if (modern && !(v & dev_status::features_ok)) violation("DRIVER_OK before FEATURES_OK (checklist 31)");
    }
    status_ = uint8_t(v | (needs_reset_ ? dev_status::needs_reset : 0));
    if (status_ & dev_status::driver_ok) deliver_events();
}

void device::do_reset() {
    // A slow reset keeps showing the old status for a while; there is nothing to show when
    // the status was already 0.
    status_before_reset_ = status_;
    reset_reads_left_ = status_ ? faults_.reset_delay_polls : 0;
    status_ = 0;
    isr_ = 0;
    needs_reset_ = false;
    driver_features_ = 0;
    driver_features_written_ = false;
    kind_legacy_used_ = false;
    sense_size_ = default_sense_size;  // checklist 59
    cdb_size_ = default_cdb_size;
    msix_config_ = 0xffff;  // vectors are forgotten: every queue's below, and this one
    for (queue& q : queues_) {
        const uint32_t max = q.max;
        q = queue{};
        q.max = max;
    }
    for (held_cmd& h : held_) h.used = false;
    event_count_ = 0;
    event_head_ = 0;
    events_missed_ = false;
    for (lun_store& l : luns_) {
        if (!l.present) continue;
        l.unit_attention = true;  // power on, reset, or bus device reset occurred
        l.ua_asc = 0x29;
        l.ua_ascq = 0x00;
    }
    ++stats_.resets;
}

void device::set_needs_reset() {
    needs_reset_ = true;
    status_ |= dev_status::needs_reset;
    isr_ |= 2;
}

// ---- rings ----
// Packed ring descriptor flags; the split ring's NEXT, WRITE and INDIRECT are the same bits.
constexpr uint16_t f_next = 1, f_write = 2, f_indirect = 4, f_avail = 1u << 7, f_used = 1u << 15;
constexpr uint16_t event_enable = 0, event_disable = 1, event_desc = 2;
constexpr uint16_t no_record = 0xffff;

bool device::walk_chain(uint16_t qi, chain& c) {
    return queues_[qi].packed ? walk_packed(qi, c) : walk_split(queues_[qi], c);
}



// One buffer of the current chain: device-readable ones first (checklist 41), inside DMA
// memory, no more than the queue holds.
bool device::take_buffer(uint64_t addr, uint32_t len, bool writable, bool& seen_write, chain& c) {
    if (!writable && seen_write) return violation("readable descriptor after a writable one (checklist 41)"), set_needs_reset(), false;
    seen_write |= writable;
    uint8_t* p = len ? mem_.translate(addr, len) : nullptr;
    if (len && !p) {
        violation("buffer address outside DMA memory (a virtual address?)");
        set_needs_reset();
        return false;
    }
    const uint32_t k = iov_read_ + iov_write_;
    if (k >= iovs_.size()) return violation("chain longer than the queue (checklist 42)"), set_needs_reset(), false;
    iovs_[k] = iov{p, len};
    if (writable) {
        ++iov_write_;
        c.write_bytes += len;
    } else {
        ++iov_read_;
        c.read_bytes += len;
    }
    return true;
}

bool device::walk_split(queue& q, chain& c) {
    c = chain{c.head, 0, no_record, 0, 0, 0, 0, 0, false};
    iov_read_ = iov_write_ = 0;
    uint32_t n = 0;
    uint64_t table = q.desc;
    uint32_t table_len = q.size;
    uint16_t idx = c.head;
    bool indirect = false;
    bool seen_write = false;
    // The whole table is translated once (the ring's own when it was mapped); every index
    // below is checked against its length.
    const uint8_t* tbl = q.desc_p ? q.desc_p : mem_.translate(table, 16ull * table_len);
    if (!tbl) {
        violation("descriptor table outside DMA memory");
        set_needs_reset();
        return false;
    }
    for (;;) {
        if (idx >= table_len || ++n > table_len + 1) {
            violation("descriptor chain loops or runs past its table");
            set_needs_reset();
            return false;
        }
        const uint8_t* d = tbl + 16ull * idx;
        const uint64_t addr = ld64(d);
        const uint32_t len = ld32(d + 8);
        const uint16_t flags = ld16(d + 12);
        const uint16_t next = ld16(d + 14);
        if (flags & f_indirect) {
            if (indirect) return violation("nested indirect descriptor (checklist 43)"), set_needs_reset(), false;
            if (flags & f_next) return violation("INDIRECT together with NEXT (checklist 43)"), set_needs_reset(), false;
            if (!(driver_features_ & feature::bit(feature::ring_indirect_desc)))
                return violation("indirect descriptor without the feature (checklist 43)"), set_needs_reset(), false;
            if (len == 0 || len % 16) return violation("indirect table of bad length"), set_needs_reset(), false;
            indirect = true;
            table = addr;
            table_len = len / 16;
            tbl = mem_.translate(addr, len);
            if (!tbl) return violation("indirect table outside DMA memory"), set_needs_reset(), false;
            idx = 0;
            n = 0;
            continue;
        }
        if (!take_buffer(addr, len, flags & f_write, seen_write, c)) return false;
        if (!(flags & f_next)) break;
        idx = next;
    }
    c.n_read = iov_read_;
    c.n_write = iov_write_;
    return true;
}

// An indirect table's buffers: entries follow one another, and WRITE is the only flag a
// driver may set in them.
bool device::take_table(uint64_t addr, uint32_t len, bool& seen_write, chain& c) {
    if (!(driver_features_ & feature::bit(feature::ring_indirect_desc)))
        return violation("indirect descriptor without the feature (checklist 43)"), set_needs_reset(), false;
    if (len == 0 || len % 16) return violation("indirect table of bad length"), set_needs_reset(), false;
    const uint8_t* tbl = mem_.translate(addr, len);
    if (!tbl) return violation("indirect table outside DMA memory"), set_needs_reset(), false;
    for (uint32_t i = 0; i < len / 16; ++i) {
        const uint8_t* e = tbl + 16ull * i;
        const uint16_t ef = ld16(e + 14);
        if (ef & ~f_write) return violation("flags other than WRITE in an indirect table"), set_needs_reset(), false;
        if (!take_buffer(ld64(e), ld32(e + 8), ef & f_write, seen_write, c)) return false;
    }
    return true;
}

// A packed list: from the ring (its descriptors, each checked available for the lap it lies
// in, until one without NEXT), or from the device's copy of them once it holds the list.
bool device::walk_packed(uint16_t qi, chain& c) {
    const queue& q = queues_[qi];
    iov_read_ = iov_write_ = 0;
    c.n_read = c.n_write = 0;
    c.read_bytes = c.write_bytes = 0;
    bool seen_write = false;
    if (c.saved != no_record) {
        const std::vector<saved_desc>& pool = pools_[qi];
        uint16_t r = c.saved;
        for (uint32_t k = 0; k < c.ndesc; ++k, r = pool[r].link) {
            const saved_desc& d = pool[r];
            const bool ok = (d.flags & f_indirect) ? take_table(d.addr, d.len, seen_write, c)
                                                   : take_buffer(d.addr, d.len, d.flags & f_write, seen_write, c);
            if (!ok) return false;
        }
    } else {
        uint32_t pos = c.pos;
        bool wrap = c.wrap;
        c.ndesc = 0;
        for (;;) {
            if (c.ndesc == q.size) return violation("a list longer than the ring (checklist 42)"), set_needs_reset(), false;
            const uint8_t* p = q.desc_p + 16ull * pos;
            const uint16_t flags = ld16(p + 14);
            if (!packed_available(flags, wrap))
                return violation("a list runs into a descriptor not made available"), set_needs_reset(), false;
            c.head = ld16(p + 12);  // the last descriptor's counts
            ++c.ndesc;
            if (++pos == q.size) {
                pos = 0;
                wrap = !wrap;
            }
            if (flags & f_indirect) {
                if (c.ndesc != 1 || (flags & f_next))
                    return violation("INDIRECT with NEXT or in a list (checklist 43)"), set_needs_reset(), false;
                if (!take_table(ld64(p), ld32(p + 8), seen_write, c)) return false;
                break;
            }
            if (!take_buffer(ld64(p), ld32(p + 8), flags & f_write, seen_write, c)) return false;
            if (!(flags & f_next)) break;
        }
    }
    c.n_read = iov_read_;
    c.n_write = iov_write_;
    return true;
}

// The device keeps a copy of a packed list it holds on to: used descriptors it writes for
// later lists overwrite the ring under it.
bool device::save_packed(uint16_t qi, chain& c) {
    const queue& q = queues_[qi];
    if (!q.packed || c.saved != no_record) return true;
    std::vector<saved_desc>& pool = pools_[qi];
    uint16_t pos = c.pos, last = no_record;
    for (uint32_t k = 0; k < c.ndesc; ++k) {
        const uint16_t r = pool_free_[qi];
        if (r == no_record) return violation("more descriptors outstanding than the ring holds"), set_needs_reset(), false;
        pool_free_[qi] = pool[r].link;
        const uint8_t* p = q.desc_p + 16ull * pos;
        pool[r] = saved_desc{ld64(p), ld32(p + 8), ld16(p + 14), no_record};
        (last == no_record ? c.saved : pool[last].link) = r;
        last = r;
        if (++pos == q.size) pos = 0;
    }
    return true;
}

void device::free_saved(uint16_t qi, const chain& c) {
    if (!queues_[qi].packed) return;
    if (c.head < id_busy_[qi].size()) id_busy_[qi][c.head] = 0;
    if (c.saved == no_record) return;
    std::vector<saved_desc>& pool = pools_[qi];
    uint16_t r = c.saved;
    for (uint32_t k = 0; r != no_record && k < c.ndesc; ++k) {
        const uint16_t next = pool[r].link;
        pool[r].link = pool_free_[qi];
        pool_free_[qi] = r;
        r = next;
    }
}

// The ring's parts as host pointers, looked up once per queue set-up rather than on every
// access. A ring outside DMA memory needs a reset, as any access outside it does.
bool device::map_ring_parts(queue& q) {
    q.packed = driver_features_ & feature::bit(feature::ring_packed);
    // Packed rings: the descriptor ring (16-aligned) and two 4-byte event structures
    // (4-aligned); split rings: checklist 39.
    if ((q.desc & 15) || (q.avail & (q.packed ? 3 : 1)) || (q.used & 3)) {
        violation("ring parts misaligned (checklist 39)");
        set_needs_reset();
        return false;
    }
    uint8_t* d = mem_.translate(q.desc, 16ull * q.size);
    uint8_t* a = mem_.translate(q.avail, q.packed ? 4 : 6 + 2ull * q.size);
    uint8_t* u = mem_.translate(q.used, q.packed ? 4 : 6 + 8ull * q.size);
    if (!d || !a || !u) {
        set_needs_reset();
        return false;
    }
    q.desc_p = d;
    q.avail_p = a;
    q.used_p = u;
    if (q.packed) {
        const size_t qi = size_t(&q - queues_.data());
        std::vector<saved_desc>& pool = pools_[qi];
        for (uint32_t i = 0; i < q.size; ++i) pool[i].link = uint16_t(i + 1 < q.size ? i + 1 : no_record);
        pool_free_[qi] = 0;
        std::fill(id_busy_[qi].begin(), id_busy_[qi].end(), 0);
        q.device_event = ~0u;  // unknown: written on first use
    }
    return true;
}

// The device's event structure, as a device woken by notifications keeps it: with EVENT_IDX
// a notification for the next descriptor it will read, else all of them. The device thread
// polls instead and asks for none.
void device::set_device_event(queue& q) {
    uint32_t want;
    if (running_.load(std::memory_order_relaxed))
        want = uint32_t(event_disable) << 16;
    else if (driver_features_ & feature::bit(feature::ring_event_idx))
        want = uint32_t(event_desc) << 16 | q.last_avail | (q.avail_wrap ? 0x8000u : 0);
    else
        want = uint32_t(event_enable) << 16;
    if (want == q.device_event) return;
    q.device_event = want;
    st16_shared(q.used_p, uint16_t(want));
    st16_shared(q.used_p + 2, uint16_t(want >> 16));
}

bool device::pop_chain(uint16_t qi, chain& c) {
    queue& q = queues_[qi];
    if (!q.enabled || needs_reset_ || !map_ring(q)) return false;
    if (q.packed) return pop_packed(qi, c);
    const uint16_t avail_idx = ld16_shared(q.avail_p + 2);
    if (avail_idx == q.last_avail) return false;
    if (uint16_t(avail_idx - q.last_avail) > q.size) {
        violation("avail index moved by more than the queue size");
        set_needs_reset();
        return false;
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    const uint16_t head = ld16(q.avail_p + 4 + 2 * (q.last_avail & (q.size - 1)));
    ++q.last_avail;
    // Tell the driver where to notify next, as a device woken by notifications does. The
    // device thread polls instead: it leaves avail_event alone, so the driver's notify
    // decision reads a line nobody is writing.
    if ((driver_features_ & feature::bit(feature::ring_event_idx)) && !running_.load(std::memory_order_relaxed))
        st16_shared(q.used_p + 4 + 8 * q.size, q.last_avail);
    if (head >= q.size) {
        violation("avail ring names a descriptor past the table");
        set_needs_reset();
        return false;
    }
    c.head = head;
    return walk_split(q, c);
}

// The next list of a packed ring, if its first descriptor is available for this lap, walked
// where it lies.
bool device::pop_packed(uint16_t qi, chain& c) {
    queue& q = queues_[qi];
    if (!packed_available(ld16_shared(q.desc_p + 16ull * q.last_avail + 14), q.avail_wrap)) return false;
    std::atomic_thread_fence(std::memory_order_acquire);
    c.saved = no_record;
    c.pos = q.last_avail;
    c.wrap = q.avail_wrap;
    if (!walk_packed(qi, c)) return false;
    const uint32_t next = uint32_t(q.last_avail) + c.ndesc;
    if (next >= q.size) q.avail_wrap = !q.avail_wrap;
    q.last_avail = uint16_t(next >= q.size ? next - q.size : next);
    if (c.head >= q.size) return violation("buffer id past the queue size"), set_needs_reset(), false;
    if (id_busy_[qi][c.head]) return violation("buffer id reused while the device holds it"), set_needs_reset(), false;
    id_busy_[qi][c.head] = 1;
    return true;
}

// The lies armed for the next completion of a request queue, disarmed as they are told.
device::lies device::take_lies(uint16_t qi) {
    lies l{};
    if (qi < first_request_queue || !lies_armed()) return l;
    l.bad_id = faults_.lie_bad_id;
    l.middle_id = !l.bad_id && faults_.lie_middle_id;
    l.extra_len = faults_.lie_bad_len ? 1u << 20 : 0;
    l.duplicate = faults_.lie_duplicate;
    l.used_jump = faults_.lie_used_jump;
    faults_.lie_bad_id = faults_.lie_bad_len = faults_.lie_duplicate = faults_.lie_used_jump = false;
    if (l.middle_id) faults_.lie_middle_id = false;
    return l;
}

void device::push_used(uint16_t qi, const chain& c, uint32_t len) {
    if (batching_ && qi == batch_queue_) {
        batch_.push_back(used_entry{c, len});
        return;
    }
    queue& q = queues_[qi];
    if (!map_ring(q)) return;
    if (q.packed) return push_used_packed(qi, c, len, c.ndesc);
    const lies l = qi >= first_request_queue && lies_armed() ? take_lies(qi) : lies{};
    uint32_t id = c.head;
    if (l.bad_id) id = q.size + 7;
    if (l.middle_id) id = ld16(q.desc_p + 16 * c.head + 14);  // the next descriptor: not a head
    len += l.extra_len;
    if (l.used_jump) q.used_idx = uint16_t(q.used_idx + q.size + 1);
    for (int k = 0; k < (l.duplicate ? 2 : 1); ++k) {
        uint8_t* e = q.used_p + 4 + 8 * (q.used_idx & (q.size - 1));
        st32(e, id);
        st32(e + 4, len);
        ++q.used_idx;
        ++q.used_total;
    }
    std::atomic_thread_fence(std::memory_order_release);
    st16_shared(q.used_p + 2, q.used_idx);
}

// One used descriptor at the device's used position, for `c` (the last of a run in order),
// then the position skips `skip` descriptors.
void device::push_used_packed(uint16_t qi, const chain& c, uint32_t len, uint32_t skip) {
    queue& q = queues_[qi];
    const lies l = qi >= first_request_queue && lies_armed() ? take_lies(qi) : lies{};
    uint32_t id = c.head;
    if (l.bad_id) id = q.size + 7;
    if (l.middle_id) {
        id = 0;  // no list has a middle id here: one the device does not hold
        while (id < q.size && (id == c.head || id_busy_[qi][id])) ++id;
    }
    len += l.extra_len;
    free_saved(qi, c);
    for (int k = 0; k < (l.duplicate ? 2 : 1); ++k) {
        const uint32_t n = l.used_jump ? q.size : 1;
        uint16_t pos = q.used_idx;
        for (uint32_t i = 0; i < n; ++i) {
            uint8_t* d = q.desc_p + 16ull * pos;
            st32(d + 8, len);
            st16(d + 12, uint16_t(id));
            // WRITE says the device wrote into the buffer, as the spec has it.
            std::atomic_thread_fence(std::memory_order_release);
            st16_shared(d + 14, uint16_t((q.used_wrap ? f_avail | f_used : 0) | (len ? f_write : 0)));
            if (++pos == q.size) pos = 0;
        }
        // Skip the list (or run): skip <= 2 laps, as lies go.
        uint32_t at = uint32_t(q.used_idx) + skip;
        while (at >= q.size) {
            at -= q.size;
            q.used_wrap = !q.used_wrap;
        }
        q.used_idx = uint16_t(at);
        q.used_total += skip;
    }
}

void device::interrupt(uint16_t qi) {
    queue& q = queues_[qi];
    std::atomic_thread_fence(std::memory_order_seq_cst);
    bool fire;
    if (!map_ring(q)) {
        fire = true;
    } else if (q.packed) {
        // The driver's event structure: read whole, offset and flags from one moment.
        const uint32_t ev = __atomic_load_n(reinterpret_cast<const uint32_t*>(q.avail_p), __ATOMIC_RELAXED);
        const uint16_t flags = uint16_t(ev >> 16) & 3, off = uint16_t(ev & 0x7fff);
        const bool ev_wrap = ev & 0x8000;
        if (flags == event_disable) {
            fire = false;
        } else if (flags == event_desc && (driver_features_ & feature::bit(feature::ring_event_idx))) {
            // Due if the descriptor it names was used since the last notification: how far
            // behind the used position it lies, against how far that moved.
            uint64_t behind;
            if (ev_wrap == q.used_wrap)
                behind = off <= q.used_idx ? uint64_t(q.used_idx - off) : 0;
            else
                behind = uint64_t(q.used_idx) + q.size - off;
            fire = !q.signalled_valid || (behind >= 1 && behind <= q.used_total - q.signalled_total);
        } else {
            fire = true;
        }
    } else if (driver_features_ & feature::bit(feature::ring_event_idx)) {
        const uint16_t used_event = ld16_shared(q.avail_p + 4 + 2 * q.size);
        fire = !q.signalled_valid || need_event(used_event, q.used_idx, q.signalled_used);
    } else {
        fire = !(ld16_shared(q.avail_p) & 1);
    }
    q.signalled_used = q.used_idx;
    q.signalled_total = q.used_total;
    q.signalled_valid = true;
    if (fire) {
        isr_ |= 1;
        ++stats_.interrupts;
    }
}

void device::stomp() {
    auto next = [this] {  // splitmix64
        uint64_t z = (faults_.stomp_seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    };
    for (uint32_t k = 0; k < faults_.stomp_writes; ++k) {
        const uint64_t r = next();
        const uint64_t bytes = next();
        const uint32_t n = 1 + uint32_t(r >> 61);
        uint8_t* p = nullptr;
        queue& q = queues_[(r >> 8) % queues_.size()];
        if ((r & 3) == 0 && q.enabled && map_ring(q) && q.packed) {
            // A 16-bit field the other side acts on: a descriptor's flags or id, or either
            // event structure's offset or flags.
            const uint32_t pos = uint32_t(r >> 24) % q.size;
            switch ((r >> 2) % 6) {
                case 0: p = q.desc_p + 16ull * pos + 14; break;  // descriptor flags
                case 1: p = q.desc_p + 16ull * pos + 12; break;  // descriptor id
                case 2: p = q.avail_p; break;                    // driver event offset
                case 3: p = q.avail_p + 2; break;                // driver event flags
                case 4: p = q.used_p; break;                     // device event offset
                default: p = q.used_p + 2; break;                // device event flags
            }
            memcpy(p, &bytes, 2);
        } else if ((r & 3) == 0 && q.enabled && map_ring(q)) {
            // A 16-bit field the other side acts on.
            switch ((r >> 2) % 6) {
                case 0: p = q.avail_p; break;                   // avail flags
                case 1: p = q.avail_p + 2; break;               // avail idx
                case 2: p = q.avail_p + 4 + 2 * q.size; break;  // used_event
                case 3: p = q.used_p; break;                    // used flags
                case 4: p = q.used_p + 2; break;                // used idx
                default: p = q.used_p + 4 + 8 * q.size; break;  // avail_event
            }
            memcpy(p, &bytes, 2);
        } else if (faults_.stomp_len) {
            const uint64_t off = (r >> 16) % faults_.stomp_len;
            const uint32_t len = uint32_t(std::min<uint64_t>(n, faults_.stomp_len - off));
            p = mem_.translate(faults_.stomp_bus + off, len);
            if (!p) continue;
            memcpy(p, &bytes, len);
        } else {
            continue;
        }
        ++stats_.stomps;
    }
}

uint32_t device::step() {
    if (!(status_ & dev_status::driver_ok)) return 0;
    if (faults_.stomp_writes) stomp();
    if (needs_reset_) return 0;
    uint32_t done = 0;
    for (uint16_t qi = 0; qi < queues_.size(); ++qi) {
        if (qi == eventq_index) continue;
        const uint64_t before = stats_.commands + stats_.tmfs + stats_.an;
        process_queue(qi);
        done += uint32_t(stats_.commands + stats_.tmfs + stats_.an - before);
        if (needs_reset_) break;
    }
    if (!needs_reset_) deliver_events();
    return done;
}

void device::process_queue(uint16_t qi) {
    queue& q = queues_[qi];
    if (!q.enabled) return;
    const uint64_t used_before = q.used_total;
    // In order on a packed ring, each pass's run goes back as one used descriptor.
    const bool run = (driver_features_ & feature::bit(feature::in_order)) && q.packed;
    batching_ = run || (faults_.out_of_order && qi >= first_request_queue);
    batch_queue_ = qi;
    batch_.clear();
    chain c;
    while (pop_chain(qi, c)) {
        if (qi == controlq_index)
            process_control(qi, c);
        else
            process_request(qi, c);
        if (needs_reset_) break;
    }
    if (q.packed && q.desc_p) set_device_event(q);
    if (batching_) {
        batching_ = false;
        if (run && !batch_.empty()) {
            uint32_t skip = 0;
            for (size_t i = 0; i + 1 < batch_.size(); ++i) {
                skip += batch_[i].c.ndesc;
                free_saved(qi, batch_[i].c);
            }
            const used_entry& last = batch_.back();
            push_used_packed(qi, last.c, last.len, skip + last.c.ndesc);
        } else {
            for (size_t i = batch_.size(); i-- > 0;) push_used(qi, batch_[i].c, batch_[i].len);
        }
    }
    if (q.used_total != used_before) interrupt(qi);
}

// ---- gather/scatter over the current chain ----
uint32_t device::copy_from_readable(uint8_t* dst, uint64_t off, uint32_t len) const {
    uint32_t done = 0;
    for (uint32_t i = 0; i < iov_read_ && done < len; ++i) {
        const iov& v = iovs_[i];
        if (off >= v.len) {
            off -= v.len;
            continue;
        }
        const uint32_t n = uint32_t(std::min<uint64_t>(v.len - off, len - done));
        memcpy(dst + done, v.p + off, n);
        done += n;
        off = 0;
    }
    return done;
}

uint32_t device::copy_to_writable(uint64_t off, const uint8_t* src, uint32_t len) {
    uint32_t done = 0;
    for (uint32_t i = iov_read_; i < iov_read_ + iov_write_ && done < len; ++i) {
        const iov& v = iovs_[i];
        if (off >= v.len) {
            off -= v.len;
            continue;
        }
        const uint32_t n = uint32_t(std::min<uint64_t>(v.len - off, len - done));
        memcpy(v.p + off, src + done, n);
        done += n;
        off = 0;
    }
    return done;
}

// ---- the target ----
device::lun_store* device::lookup(uint8_t target, uint16_t lun) {
    for (lun_store& l : luns_)
        if (l.present && l.info.target == target && l.info.lun == lun) return &l;
    return nullptr;
}

bool device::target_exists(uint8_t target) const {
    for (const lun_store& l : luns_)
        if (l.present && l.info.target == target) return true;
    return false;
}

const device::lun_info* device::find_lun(uint8_t target, uint16_t lun) const {
    for (const lun_store& l : luns_)
        if (l.present && l.info.target == target && l.info.lun == lun) return &l.info;
    return nullptr;
}

uint8_t* device::lun_data(uint8_t target, uint16_t lun) {
    lun_store* l = lookup(target, lun);
    return l ? l->data.data() : nullptr;
}

bool device::add_lun(uint8_t target, uint16_t lun, uint64_t blocks, uint32_t block_size, bool read_only) {
    if (lookup(target, lun) || lun > 16383 || (block_size != 512 && block_size != 4096)) return false;
    lun_store s{};
    s.info = lun_info{target, lun, block_size, blocks, read_only};
    s.data.assign(size_t(blocks) * block_size, 0);
    s.present = true;
    s.unit_attention = true;
    s.ua_asc = 0x29;
    s.ua_ascq = 0x00;
    // Other LUNs of the target learn that the inventory changed.
    for (lun_store& o : luns_) {
        if (o.present && o.info.target == target) {
            o.unit_attention = true;
            o.ua_asc = 0x3f;
            o.ua_ascq = 0x0e;
        }
    }
    luns_.push_back(std::move(s));
    if ((status_ & dev_status::driver_ok) && (driver_features_ & feature::bit(feature::scsi_hotplug)))
        queue_event(uint32_t(event_type::transport_reset), target, lun, uint32_t(reset_reason::rescan));
    return true;
}

bool device::remove_lun(uint8_t target, uint16_t lun) {
    lun_store* l = lookup(target, lun);
    if (!l) return false;
    l->present = false;
    l->data.clear();
    l->data.shrink_to_fit();
    for (lun_store& o : luns_) {
        if (o.present && o.info.target == target) {
            o.unit_attention = true;
            o.ua_asc = 0x3f;
            o.ua_ascq = 0x0e;
        }
    }
    if ((status_ & dev_status::driver_ok) && (driver_features_ & feature::bit(feature::scsi_hotplug)))
        queue_event(uint32_t(event_type::transport_reset), target, lun, uint32_t(reset_reason::removed));
    return true;
}

bool device::resize_lun(uint8_t target, uint16_t lun, uint64_t blocks) {
    lun_store* l = lookup(target, lun);
    if (!l) return false;
    l->info.blocks = blocks;
    l->data.resize(size_t(blocks) * l->info.block_size, 0);
    l->unit_attention = true;
    l->ua_asc = 0x2a;
    l->ua_ascq = 0x09;
    if ((status_ & dev_status::driver_ok) && (driver_features_ & feature::bit(feature::scsi_change)))
        queue_event(uint32_t(event_type::param_change), target, lun, 0x2a | (0x09 << 8));
    return true;
}

void device::queue_event(uint32_t type, uint8_t target, uint16_t lun, uint32_t reason) {
    if (faults_.drop_events || event_count_ == 64) {
        events_missed_ = true;
        ++stats_.events_dropped;
        return;
    }
    events_[(event_head_ + event_count_) % 64] = pending_event{type, target, lun, reason};
    ++event_count_;
    if (status_ & dev_status::driver_ok) deliver_events();
}

void device::deliver_events() {
    queue& q = queues_[eventq_index];
    if (!q.enabled || needs_reset_) return;
    const uint64_t before = q.used_total;
    while (event_count_) {
        chain c;
        if (!pop_chain(eventq_index, c)) break;
        if (c.n_read || c.write_bytes < sizeof(event)) {
            violation("event buffer not device-writable or shorter than 16 bytes (checklist 18)");
            set_needs_reset();
            return;
        }
        const pending_event& e = events_[event_head_];
        uint8_t b[16];
        st32(b, e.type | (events_missed_ ? event_missed_flag : 0));
        // QEMU's LUN form in events: the flat-space bit only for LUNs of 256 and up.
        b[4] = 1;
        b[5] = e.target;
        b[6] = uint8_t(e.lun >= 256 ? 0x40 | (e.lun >> 8) : 0);
        b[7] = uint8_t(e.lun);
        b[8] = b[9] = b[10] = b[11] = 0;
        st32(b + 12, e.reason);
        copy_to_writable(0, b, 16);
        events_missed_ = false;
        event_head_ = (event_head_ + 1) % 64;
        --event_count_;
        ++stats_.events_delivered;
        push_used(eventq_index, c, 16);
    }
    if (q.packed && q.desc_p) set_device_event(q);
    if (q.used_total != before) interrupt(eventq_index);
}

void device::set_sense(uint8_t* sense, uint32_t& len, uint8_t key, uint8_t asc, uint8_t ascq) {
    memset(sense, 0, 18);
    sense[0] = 0x70;  // fixed format, current
    sense[2] = key;
    sense[7] = 10;
    sense[12] = asc;
    sense[13] = ascq;
    len = 18;
}

void device::complete_cmd(uint16_t qi, const chain& c, uint8_t response, uint8_t status, const uint8_t* sense,
                          uint32_t sense_len, uint32_t residual, uint32_t data_written) {
    const uint32_t resp_len = 12 + sense_size_;
    const uint32_t n = std::min<uint32_t>(resp_len, 12 + 256);  // the header and the sense it writes
    // Built where it goes when the first writable descriptor holds it (always, from this
    // project's driver), else staged and scattered.
    uint8_t staged[12 + 256];
    const bool in_place = iov_write_ && iovs_[iov_read_].len >= n;
    uint8_t* hdr = in_place ? iovs_[iov_read_].p : staged;
    const uint32_t sl = std::min(sense_len, sense_size_);
    st32(hdr, sl);
    st32(hdr + 4, residual);
    if (faults_.lie_residual) {
        faults_.lie_residual = false;
        st32(hdr + 4, 0x7fffffffu);
    }
    // Only the header and the sense there is get written: what the used length says then.
    // Data, or a lie about the sense, claims the whole sense area.
    const uint32_t copied = std::min<uint32_t>(sl, n - 12);
    uint32_t written = 12 + copied;
    if (faults_.lie_sense_len) {
        faults_.lie_sense_len = false;
        st32(hdr, 0xffffu);
        written = resp_len;
    }
    st16(hdr + 8, 0);  // status qualifier
    hdr[10] = status;
    hdr[11] = response;
    if (copied) memcpy(hdr + 12, sense, copied);
    if (!in_place) copy_to_writable(0, staged, std::min(written, n));
    push_used(qi, c, data_written ? resp_len + data_written : written);
}

void device::process_request(uint16_t qi, const chain& c) {
    const bool pi = (driver_features_ & feature::bit(feature::scsi_t10_pi)) != 0;
    const uint32_t req_len = 19 + cdb_size_ + (pi ? 8 : 0);
    const uint32_t resp_len = 12 + sense_size_;
    if (c.read_bytes < req_len || c.write_bytes < resp_len) {
        violation("request or response header shorter than cdb_size/sense_size framing");
        set_needs_reset();
        return;
    }
    ++stats_.commands;
    // The header is read where it lies when one descriptor holds it (it always does from
    // this project's driver), else gathered.
    uint8_t gathered[19 + 8 + 256];
    const uint8_t* hdr = gathered;
    if (iov_read_ && iovs_[0].len >= req_len)
        hdr = iovs_[0].p;
    else
        copy_from_readable(gathered, 0, req_len);
    const uint64_t tag = ld64(hdr + 8);
    const uint8_t* cdb = hdr + 19 + (pi ? 8 : 0);
    const uint64_t out_off = req_len, out_len = c.read_bytes - req_len;
    const uint64_t in_off = resp_len, in_len = c.write_bytes - resp_len;
    const uint32_t data_len = uint32_t(out_len + in_len);
    // Data in both directions without INOUT fails (checklist 11).
    const bool bidi = out_len && in_len;

    const uint16_t lun = uint16_t(((hdr[2] & 0x3f) << 8) | hdr[3]);
    if ((faults_.lose_next || faults_.hold_next) && (faults_.hold_only_lun == 0xffff || faults_.hold_only_lun == lun)) {
        chain kept = c;
        if (!save_packed(qi, kept)) return;
        for (held_cmd& h : held_) {
            if (h.used) continue;
            h = held_cmd{true, faults_.lose_next > 0, qi, kept, hdr[1], lun, tag};
            break;
        }
        if (faults_.lose_next)
            --faults_.lose_next;
        else
            --faults_.hold_next;
        return;
    }
    if (faults_.force_response_next) {
        --faults_.force_response_next;
        uint8_t sense[18];
        uint32_t sl = 0;
        if (faults_.force_response == 0 && faults_.force_status == status_check_condition)
            set_sense(sense, sl, sense_not_ready, 0x04, 0x01);
        complete_cmd(qi, c, faults_.force_response, faults_.force_status, sense, sl, data_len, 0);
        return;
    }
    if (bidi && !(driver_features_ & feature::bit(feature::scsi_inout))) {
        complete_cmd(qi, c, uint8_t(response::failure), 0, nullptr, 0, data_len, 0);
        return;
    }
    // LUN: 01 target (flat LUN | C1 01 well-known) 0 0 0 0.
    if (hdr[0] != 1) {
        complete_cmd(qi, c, uint8_t(response::bad_target), 0, nullptr, 0, data_len, 0);
        return;
    }
    const uint8_t target = hdr[1];
    const bool wlun = hdr[2] == 0xc1 && hdr[3] == 0x01;
    if (!target_exists(target)) {
        complete_cmd(qi, c, uint8_t(response::bad_target), 0, nullptr, 0, data_len, 0);
        return;
    }
    cur_target_ = target;
    lun_store* l = wlun ? nullptr : lookup(target, lun);
    if (!l && !wlun && opt_.incorrect_lun_for_missing) {
        complete_cmd(qi, c, uint8_t(response::incorrect_lun), 0, nullptr, 0, data_len, 0);
        return;
    }
    uint8_t status = status_good;
    uint8_t sense[96];
    uint32_t sense_len = 0;
    uint32_t data_in = 0, data_out_used = 0;
    execute_scsi(l, l != nullptr || wlun, cdb, out_off, out_len, in_off, in_len, status, sense, sense_len, data_in,
                 data_out_used);
    if (status == 0xff) {  // overrun: more data than the buffers
        complete_cmd(qi, c, uint8_t(response::overrun), 0, nullptr, 0, data_len, 0);
        return;
    }
    const uint32_t residual = uint32_t(in_len ? in_len - data_in : out_len - data_out_used);
    complete_cmd(qi, c, uint8_t(response::ok), status, sense, sense_len, residual, data_in);
}

void device::execute_scsi(lun_store* l, bool lun_exists, const uint8_t* cdb, uint64_t out_off, uint64_t out_len,
                          uint64_t in_off, uint64_t in_len, uint8_t& status, uint8_t* sense, uint32_t& sense_len,
                          uint32_t& data_in, uint32_t& data_out_used) {
    const uint8_t op = cdb[0];
    auto check = [&](uint8_t key, uint8_t asc, uint8_t ascq) {
        status = status_check_condition;
        set_sense(sense, sense_len, key, asc, ascq);
    };
    auto reply = [&](const uint8_t* buf, uint32_t len, uint32_t alloc) {
        const uint32_t n = uint32_t(std::min<uint64_t>(std::min(len, alloc), in_len));
        data_in = copy_to_writable(in_off, buf, n);
    };
    const bool is_report_luns = op == 0xa0;
    const bool is_inquiry = op == 0x12;
    const bool is_request_sense = op == 0x03;
    if (!lun_exists && !is_inquiry && !is_report_luns && !is_request_sense) {
        return check(sense_illegal_request, 0x25, 0x00);  // LOGICAL UNIT NOT SUPPORTED
    }
    if (l && l->unit_attention && !is_inquiry && !is_report_luns && !is_request_sense) {
        l->unit_attention = false;
        return check(sense_unit_attention, l->ua_asc, l->ua_ascq);
    }
    uint8_t buf[512];  // reply data: each case that uses it clears it first
    switch (op) {
        case 0x00:  // TEST UNIT READY
            return;
        case 0x03: {  // REQUEST SENSE
            memset(buf, 0, sizeof(buf));
            uint32_t n = 18;
            if (!lun_exists) {
                set_sense(buf, n, sense_illegal_request, 0x25, 0);
            } else if (l && l->unit_attention) {
                set_sense(buf, n, sense_unit_attention, l->ua_asc, l->ua_ascq);
                l->unit_attention = false;
            } else {
                set_sense(buf, n, sense_no_sense, 0, 0);
            }
            return reply(buf, n, cdb[4]);
        }
        case 0x12: {  // INQUIRY
            memset(buf, 0, sizeof(buf));
            const uint32_t alloc = be16(cdb + 3);
            if (cdb[1] & 1) {
                if (!l) return check(sense_illegal_request, 0x24, 0x00);
                const uint8_t page = cdb[2];
                buf[0] = 0x00;
                buf[1] = page;
                uint32_t n = 4;
                if (page == 0x00) {
                    const uint8_t pages[] = {0x00, 0x80, 0x83, 0xb0};
                    memcpy(buf + 4, pages, sizeof(pages));
                    n += sizeof(pages);
                } else if (page == 0x80) {
                    const std::string s = "LB" + std::to_string(l->info.target) + "-" + std::to_string(l->info.lun);
                    memcpy(buf + 4, s.data(), s.size());
                    n += uint32_t(s.size());
                } else if (page == 0x83) {
                    // One T10 vendor ID designator, ASCII.
                    const std::string s = "VSCSI   LB" + std::to_string(l->info.target) + "-" + std::to_string(l->info.lun);
                    buf[4] = 0x02;  // code set ASCII
                    buf[5] = 0x01;  // association LU, type T10 vendor id
                    buf[7] = uint8_t(s.size());
                    memcpy(buf + 8, s.data(), s.size());
                    n += 4 + uint32_t(s.size());
                } else if (page == 0xb0) {
                    sbe32(buf + 8, opt_.max_sectors);   // maximum transfer length (blocks)
                    sbe32(buf + 12, 8);                  // optimal transfer length
                    n = 0x40;
                } else {
                    return check(sense_illegal_request, 0x24, 0x00);
                }
                sbe16(buf + 2, uint16_t(n - 4));
                return reply(buf, n, alloc);
            }
            if (cdb[2]) return check(sense_illegal_request, 0x24, 0x00);
            buf[0] = l ? 0x00 : (lun_exists ? 0x1e : 0x7f);  // disk, well-known LU, or no LU
            buf[2] = 0x05;
            buf[3] = 0x02;
            buf[4] = 31;
            buf[7] = 0x02;  // CmdQue
            memcpy(buf + 8, "VSCSI   ", 8);
            memcpy(buf + 16, "LOOPBACK DISK   ", 16);
            memcpy(buf + 32, "1.0 ", 4);
            return reply(buf, 36, alloc);
        }
        case 0x25: {  // READ CAPACITY(10)
            memset(buf, 0, sizeof(buf));
            const uint64_t last = l->info.blocks - 1;
            sbe32(buf, last > 0xffffffffull ? 0xffffffffu : uint32_t(last));
            sbe32(buf + 4, l->info.block_size);
            return reply(buf, 8, 8);
        }
        case 0x9e:  // SERVICE ACTION IN(16)
            memset(buf, 0, sizeof(buf));
            if ((cdb[1] & 0x1f) != 0x10) return check(sense_illegal_request, 0x24, 0x00);
            sbe64(buf, l->info.blocks - 1);
            sbe32(buf + 8, l->info.block_size);
            return reply(buf, 32, be32(cdb + 10));
        case 0x28:
        case 0x2a:
        case 0x88:
        case 0x8a: {  // READ/WRITE 10/16
            const bool write = op == 0x2a || op == 0x8a;
            const bool sixteen = op == 0x88 || op == 0x8a;
            const uint64_t lba = sixteen ? be64(cdb + 2) : be32(cdb + 2);
            const uint64_t count = sixteen ? be32(cdb + 10) : be16(cdb + 7);
            if (lba > l->info.blocks || count > l->info.blocks - lba) return check(sense_illegal_request, 0x21, 0x00);
            if (write && l->info.read_only) return check(sense_data_protect, 0x27, 0x00);
            const uint64_t bytes = count * l->info.block_size;
            const uint64_t have = write ? out_len : in_len;
            if (have < bytes) {
                status = 0xff;  // overrun marker for the caller
                return;
            }
            uint8_t* disk = l->data.data() + lba * l->info.block_size;
            if (write) {
                data_out_used = copy_from_readable(disk, out_off, uint32_t(bytes));
            } else {
                data_in = copy_to_writable(in_off, disk, uint32_t(bytes));
            }
            return;
        }
        case 0x35:
        case 0x91:  // SYNCHRONIZE CACHE 10/16
        case 0x1b:  // START STOP UNIT
            return;
        case 0xa0: {  // REPORT LUNS
            memset(buf, 0, sizeof(buf));
            const uint32_t alloc = be32(cdb + 6);
            if (alloc < 16) return check(sense_illegal_request, 0x24, 0x00);
            uint32_t n = 8;
            for (const lun_store& s : luns_) {
                if (!s.present || s.info.target != cur_target_) continue;
                if (n + 8 > sizeof(buf)) break;
                const uint16_t lu = s.info.lun;
                buf[n] = uint8_t(lu >= 256 ? 0x40 | (lu >> 8) : 0);
                buf[n + 1] = uint8_t(lu);
                n += 8;
            }
            sbe32(buf, n - 8);
            return reply(buf, n, alloc);
        }
        case 0x1a:
        case 0x5a: {  // MODE SENSE(6/10)
            memset(buf, 0, sizeof(buf));
            const bool ten = op == 0x5a;
            const uint8_t page = cdb[2] & 0x3f;
            const uint32_t alloc = ten ? be16(cdb + 7) : cdb[4];
            const uint32_t hl = ten ? 8 : 4;
            uint32_t n = hl;
            if (page == 0x08 || page == 0x3f) {
                buf[n] = 0x08;
                buf[n + 1] = 0x12;
                buf[n + 2] = 0x04;  // WCE
                n += 20;
            } else if (page != 0x00) {
                return check(sense_illegal_request, 0x24, 0x00);
            }
            const uint8_t dsp = l->info.read_only ? 0x80 : 0x00;
            if (ten) {
                sbe16(buf, uint16_t(n - 2));
                buf[3] = dsp;
            } else {
                buf[0] = uint8_t(n - 1);
                buf[2] = dsp;
            }
            return reply(buf, n, alloc);
        }
    }
    return check(sense_illegal_request, 0x20, 0x00);  // INVALID COMMAND OPERATION CODE
}

void device::process_control(uint16_t qi, const chain& c) {
    if (c.read_bytes < 4) {
        violation("control request shorter than its type field");
        return set_needs_reset();
    }
    if (faults_.ignore_tmf) {
        ++stats_.tmfs;
        return;  // swallowed: never completes
    }
    uint8_t req[32] = {};
    copy_from_readable(req, 0, uint32_t(std::min<uint64_t>(c.read_bytes, sizeof(req))));
    const uint32_t type = ld32(req);
    if (type == uint32_t(ctrl_type::tmf)) {
        if (c.read_bytes < sizeof(tmf_req) || c.write_bytes < 1) {
            violation("TMF request or response too short");
            return set_needs_reset();
        }
        ++stats_.tmfs;
        const uint32_t subtype = ld32(req + 4);
        const uint8_t target = req[9];
        const uint16_t lun = uint16_t(((req[10] & 0x3f) << 8) | req[11]);
        const uint64_t tag = ld64(req + 16);
        last_tmf_subtype_ = subtype;
        last_tmf_tag_ = tag;
        uint8_t resp = uint8_t(function_complete);
        auto finish_held = [&](bool match_tag, bool match_lun, uint8_t with) {
            bool any = false;
            for (held_cmd& h : held_) {
                if (!h.used || h.lost || h.target != target) continue;
                if (match_lun && h.lun != lun) continue;
                if (match_tag && h.tag != tag) continue;
                any = true;
                if (with == 0xff) continue;  // query only
                // Re-walk the chain to reach its response buffer.
                chain hc = h.c;
                if (!walk_chain(h.queue, hc)) return any;
                const uint32_t dl = uint32_t(hc.read_bytes + hc.write_bytes - 19 - cdb_size_ - 12 - sense_size_);
                uint8_t hdr[12] = {};
                st32(hdr + 4, dl);
                hdr[11] = with;
                copy_to_writable(0, hdr, 12);
                h.used = false;
                push_used(h.queue, hc, 12 + sense_size_);
                interrupt(h.queue);
                if (with == uint8_t(response::aborted)) ++stats_.aborted_by_tmf;
                else ++stats_.reset_by_tmf;
            }
            return any;
        };
        if (req[8] != 1 || !target_exists(target)) {
            resp = uint8_t(response::bad_target);
        } else {
            switch (tmf(subtype)) {
                case tmf::abort_task: finish_held(true, true, uint8_t(response::aborted)); break;
                case tmf::abort_task_set:
                case tmf::clear_task_set: finish_held(false, true, uint8_t(response::aborted)); break;
                case tmf::logical_unit_reset: {
                    finish_held(false, true, uint8_t(response::reset));
                    if (lun_store* l = lookup(target, lun)) {
                        l->unit_attention = true;
                        l->ua_asc = 0x29;
                        l->ua_ascq = 0x03;  // BUS DEVICE RESET FUNCTION OCCURRED
                    } else {
                        resp = uint8_t(response::incorrect_lun);
                    }
                    break;
                }
                case tmf::i_t_nexus_reset: finish_held(false, false, uint8_t(response::reset)); break;
                case tmf::query_task:
                    resp = finish_held(true, true, 0xff) ? uint8_t(response::function_succeeded) : uint8_t(function_complete);
                    break;
                case tmf::query_task_set:
                    resp = finish_held(false, true, 0xff) ? uint8_t(response::function_succeeded) : uint8_t(function_complete);
                    break;
                default: resp = uint8_t(response::function_rejected); break;
            }
        }
        // Re-walk our own chain: finish_held may have walked others.
        chain self = c;
        if (!walk_chain(qi, self)) return;
        const uint8_t r[1] = {resp};
        copy_to_writable(0, r, 1);
        push_used(qi, c, 1);
        return;
    }
    if (type == uint32_t(ctrl_type::an_query) || type == uint32_t(ctrl_type::an_subscribe)) {
        if (c.read_bytes < sizeof(an_req) || c.write_bytes < sizeof(an_resp)) {
            violation("AN request or response too short");
            return set_needs_reset();
        }
        ++stats_.an;
        uint8_t r[5] = {0, 0, 0, 0, uint8_t(response::ok)};  // QEMU: no events supported
        copy_to_writable(0, r, 5);
        push_used(qi, c, 5);
        return;
    }
    // Unknown control type: QEMU fails the device.
    violation("unknown control queue request type " + std::to_string(type));
    set_needs_reset();
}

uint32_t device::release_held() {
    uint32_t n = 0;
    for (held_cmd& h : held_) {
        if (!h.used || h.lost) continue;
        chain c = h.c;
        if (!walk_chain(h.queue, c)) return n;
        h.used = false;
        // Execute it now, as if it had just arrived.
        const uint32_t saved_hold = faults_.hold_next, saved_lose = faults_.lose_next;
        faults_.hold_next = faults_.lose_next = 0;
        --stats_.commands;
        process_request(h.queue, c);
        faults_.hold_next = saved_hold;
        faults_.lose_next = saved_lose;
        interrupt(h.queue);
        ++n;
    }
    return n;
}

uint32_t device::held_count() const {
    uint32_t n = 0;
    for (const held_cmd& h : held_) n += h.used;
    return n;
}

}  // namespace vscsi::loopback
