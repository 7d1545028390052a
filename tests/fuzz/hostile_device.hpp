// A virtio-scsi PCI function whose every answer the fuzzer chooses: feature bits, queue
// sizes, configuration values, a reset that takes its time, FEATURES_OK refused,
// DEVICE_NEEDS_RESET, a configuration that will not hold still. It implements the Bus that
// pci.hpp's transports drive (legacy I/O BAR 0, or modern capabilities into BAR 4) and the
// device side of every virtqueue the driver sets up (ring_peer.hpp).
//
// It also referees the driver: every access the virtio spec forbids a driver (status bits
// out of order or cleared, features not offered, misaligned or wrong-width register access,
// queue fields after queue_enable, config writes other than cdb_size/sense_size, a
// notification before DRIVER_OK, a notification owed and not sent) is a finding.
#pragma once
#include <stdint.h>
#include <string.h>

#include <memory>
#include <vector>

#include <vscsi/pci.hpp>
#include <vscsi/wire.hpp>

#include "dma_space.hpp"
#include "fuzz_check.hpp"
#include "ring_peer.hpp"

namespace fuzz {

inline constexpr uint16_t max_virtqueues = 8;  // control, event and up to 6 request queues

// What the device presents. Defaults are a well-behaved modern device.
struct device_model {
    bool legacy = false;           // legacy-only function (BAR 0), else modern (BAR 4)
    bool msix = false;             // legacy: MSI-X enabled moves device config to offset 24
    uint64_t features = vscsi::feature::bit(vscsi::feature::version_1) |
                        vscsi::feature::bit(vscsi::feature::ring_indirect_desc) |
                        vscsi::feature::bit(vscsi::feature::ring_event_idx) |
                        vscsi::feature::bit(vscsi::feature::scsi_hotplug) |
                        vscsi::feature::bit(vscsi::feature::scsi_change);
    uint16_t virtqueues = 3;       // modern common num_queues
    uint16_t queue_max[max_virtqueues] = {64, 64, 64, 64, 64, 64, 64, 64};
    uint16_t notify_off[max_virtqueues] = {0, 1, 2, 3, 4, 5, 6, 7};
    uint32_t notify_multiplier = 4;
    // virtio-scsi configuration
    uint32_t num_queues = 1, seg_max = 8, max_sectors = 0xffff, cmd_per_lun = 64, event_info_size = 16;
    uint16_t max_channel = 0, max_target = 7;
    uint32_t max_lun = 15;
    bool honour_size_writes = true;  // else cdb_size/sense_size read back as below
    uint32_t own_sense_size = 96, own_cdb_size = 32;
    // misbehaviour
    bool refuse_features_ok = false;
    uint32_t reset_delay = 0;        // status reads that still show the old value after a reset
    uint32_t generation_churn = 0;   // config_generation changes on each of the next N reads
};

class hostile_device {
public:
    static constexpr uint32_t legacy_bar_size = 64;
    static constexpr unsigned modern_bar = 4;
    static constexpr uint32_t modern_bar_size = 0x4000;
    static constexpr uint32_t common_off = 0x0000, isr_off = 0x1000, device_off = 0x2000, notify_off = 0x3000;

    struct queue {
        uint32_t size = 0;
        bool enabled = false;
        uint64_t desc = 0, avail = 0, used = 0;
        std::unique_ptr<ring_peer> peer;
        uint16_t seen_avail = 0;  // avail idx at the last check
        bool notified = false;    // notified since the last check
    };

    hostile_device(const device_model& m, const dma_space& mem) : m_(m), mem_(mem) {
        if (m_.virtqueues > max_virtqueues) m_.virtqueues = max_virtqueues;
        build_pci_config();
        hard_reset_state();
    }

    device_model& model() { return m_; }

    // ---- Bus (pci.hpp) ----
    uint8_t read8(unsigned bar, uint32_t off) { return uint8_t(access(bar, off, 1, false, 0)); }
    uint16_t read16(unsigned bar, uint32_t off) { return uint16_t(access(bar, off, 2, false, 0)); }
    uint32_t read32(unsigned bar, uint32_t off) { return access(bar, off, 4, false, 0); }
    void write8(unsigned bar, uint32_t off, uint8_t v) { access(bar, off, 1, true, v); }
    void write16(unsigned bar, uint32_t off, uint16_t v) { access(bar, off, 2, true, v); }
    void write32(unsigned bar, uint32_t off, uint32_t v) { access(bar, off, 4, true, v); }
    uint64_t bar_length(unsigned bar) const {
        if (m_.legacy) return bar == 0 ? legacy_bar_size : 0;
        return bar == modern_bar ? modern_bar_size : 0;
    }
    uint8_t config_read8(uint32_t off) const {
        FUZZ_CHECK(off < 256, "PCI config read at %u", off);
        return pcicfg_[off];
    }
    uint16_t config_read16(uint32_t off) const {
        FUZZ_CHECK(off + 2 <= 256 && off % 2 == 0, "PCI config read16 at %u", off);
        return ld16(pcicfg_ + off);
    }
    uint32_t config_read32(uint32_t off) const {
        FUZZ_CHECK(off + 4 <= 256 && off % 4 == 0, "PCI config read32 at %u", off);
        return ld32(pcicfg_ + off);
    }

    // ---- the fuzzer's side ----
    uint8_t status() const { return status_; }
    uint64_t driver_features() const { return driver_features_; }
    bool negotiated(unsigned bit) const { return (driver_features_ >> bit) & 1; }
    uint32_t sense_size() const { return m_.honour_size_writes ? sense_size_ : m_.own_sense_size; }
    uint32_t cdb_size() const { return m_.honour_size_writes ? cdb_size_ : m_.own_cdb_size; }
    // The configuration as it read when the driver last set DRIVER_OK: what it framed by.
    const device_model& live() const { return live_; }
    uint32_t live_sense_size() const { return live_sense_; }
    uint32_t live_cdb_size() const { return live_cdb_; }
    uint64_t resets() const { return resets_; }          // status 0 written
    uint64_t reset_acks() const { return reset_acks_; }  // ... and read back as 0
    uint64_t notifies() const { return notifies_; }
    void set_needs_reset() {
        status_ |= vscsi::dev_status::needs_reset;
        isr_ |= 2;
    }
    void bump_generation() { ++generation_; }

    queue& q(uint16_t i) { return queues_[i]; }
    uint16_t queue_count() const { return m_.virtqueues; }
    // A device that has written over the rings (the rig's device_stomp) keeps no account of
    // them until the driver resets it: no peer, nothing synced.
    ring_peer* peer(uint16_t i) {
        return tracking_ && i < max_virtqueues && queues_[i].enabled ? queues_[i].peer.get() : nullptr;
    }
    bool tracking() const { return tracking_; }
    void stop_tracking() { tracking_ = false; }

    // After every driver call: take what was posted, and check that every notification
    // owed was sent. Returns the new chains per queue.
    std::vector<std::vector<uint16_t>> sync() {
        if (!tracking_) return std::vector<std::vector<uint16_t>>(max_virtqueues);
        std::vector<const ring_peer*> all;
        for (queue& x : queues_)
            if (x.enabled) all.push_back(x.peer.get());
        std::vector<std::vector<uint16_t>> fresh(max_virtqueues);
        for (uint16_t i = 0; i < max_virtqueues; ++i) {
            queue& x = queues_[i];
            if (!x.enabled) continue;
            const uint16_t now = x.peer->avail_idx();
            if (x.peer->notify_needed(x.seen_avail, now))
                FUZZ_CHECK(x.notified, "queue %u: avail idx %u -> %u owed a notification, none sent (checklist 46)", i,
                           x.seen_avail, now);
            x.seen_avail = now;
            x.notified = false;
            fresh[i] = x.peer->sync(all);
        }
        return fresh;
    }

private:
    // ---- register access and its rules ----
    uint32_t access(unsigned bar, uint32_t off, unsigned width, bool write, uint32_t v) {
        FUZZ_CHECK(bar_length(bar) && off + width <= bar_length(bar), "%s of %u bytes at bar %u offset %#x",
                   write ? "write" : "read", width, bar, off);
        FUZZ_CHECK(off % width == 0, "misaligned %u-byte access at bar %u offset %#x (checklist 53)", width, bar, off);
        if (m_.legacy) return legacy(off, width, write, v);
        if (off < isr_off) return common(off - common_off, width, write, v);
        if (off < device_off) {
            FUZZ_CHECK(!write, "write to ISR");
            const uint8_t r = isr_;
            isr_ = 0;
            return r;
        }
        if (off < notify_off) return devcfg(off - device_off, width, write, v);
        FUZZ_CHECK(write && width == 2, "notify area: %s of width %u", write ? "write" : "read", width);
        FUZZ_CHECK(v < m_.virtqueues && off - notify_off == uint32_t(m_.notify_off[v]) * m_.notify_multiplier,
                   "notify of queue %u at the wrong address %#x", v, off);
        notify(uint16_t(v));
        return 0;
    }

    static void want(unsigned width, unsigned w, uint32_t off) {
        FUZZ_CHECK(width == w, "register at %#x accessed with width %u, field is %u (checklist 53)", off, width, w);
    }

    uint32_t legacy(uint32_t off, unsigned width, bool write, uint32_t v) {
        const uint32_t cfg = m_.msix ? 24 : 20;
        if (off >= cfg) return devcfg(off - cfg, width, write, v);
        switch (off) {
            case 0:
                want(width, 4, off);
                FUZZ_CHECK(!write, "write to host features");
                return uint32_t(m_.features);
            case 4:
                want(width, 4, off);
                if (!write) return uint32_t(driver_features_);
                FUZZ_CHECK(!(status_ & vscsi::dev_status::driver_ok), "features written after DRIVER_OK");
                FUZZ_CHECK(!(v & ~uint32_t(m_.features)), "accepted features %#x not offered %#llx", v,
                           (unsigned long long)m_.features);
                driver_features_ = v;
                features_written_ = true;
                return 0;
            case 8: {
                want(width, 4, off);
                if (!write) return sel_ < max_virtqueues ? uint32_t(queues_[sel_].desc >> 12) : 0;
                FUZZ_CHECK(sel_ < m_.virtqueues && m_.queue_max[sel_], "PFN for queue %u that does not exist", sel_);
                FUZZ_CHECK(status_ & vscsi::dev_status::driver, "queue set up before DRIVER (checklist 31)");
                queue& x = queues_[sel_];
                if (v == 0) {
                    x = queue{};
                    return 0;
                }
                FUZZ_CHECK(!x.enabled, "PFN written twice for queue %u", sel_);
                x.size = m_.queue_max[sel_];
                x.desc = uint64_t(v) << 12;
                x.avail = x.desc + 16ull * x.size;
                x.used = (x.avail + 6 + 2ull * x.size + 4095) & ~4095ull;
                enable(sel_);
                return 0;
            }
            case 12:
                want(width, 2, off);
                FUZZ_CHECK(!write, "write to legacy queue size");
                return sel_ < m_.virtqueues ? m_.queue_max[sel_] : 0;
            case 14:
                want(width, 2, off);
                if (write) sel_ = uint16_t(v);
                return sel_;
            case 16:
                want(width, 2, off);
                FUZZ_CHECK(write, "read of queue notify");
                notify(uint16_t(v));
                return 0;
            case 18:
                want(width, 1, off);
                if (write) return status_write(uint8_t(v)), 0;
                return status_read();
            case 19: {
                want(width, 1, off);
                FUZZ_CHECK(!write, "write to ISR");
                const uint8_t r = isr_;
                isr_ = 0;
                return r;
            }
            case 20:
            case 22:
                want(width, 2, off);
                return 0xffff;
        }
        FUZZ_CHECK(false, "legacy register access at %u, inside a field", off);
        return 0;
    }

    uint32_t common(uint32_t off, unsigned width, bool write, uint32_t v) {
        using namespace vscsi::common_reg;
        queue* x = sel_ < m_.virtqueues ? &queues_[sel_] : nullptr;
        auto queue_field = [&]() {
            FUZZ_CHECK(x && m_.queue_max[sel_], "queue field written for queue %u that does not exist", sel_);
            FUZZ_CHECK(!x->enabled, "queue %u field written after queue_enable (checklist 54)", sel_);
            FUZZ_CHECK(status_ & vscsi::dev_status::features_ok, "queue set up before FEATURES_OK (checklist 31)");
        };
        switch (off) {
            case device_feature_select:
                want(width, 4, off);
                if (write) dfsel_ = v;
                return dfsel_;
            case device_feature:
                want(width, 4, off);
                FUZZ_CHECK(!write, "write to device_feature (checklist 54)");
                return dfsel_ == 0 ? uint32_t(m_.features) : dfsel_ == 1 ? uint32_t(m_.features >> 32) : 0;
            case driver_feature_select:
                want(width, 4, off);
                if (write) gfsel_ = v;
                return gfsel_;
            case driver_feature: {
                want(width, 4, off);
                if (!write) return gfsel_ == 0 ? uint32_t(driver_features_) : gfsel_ == 1 ? uint32_t(driver_features_ >> 32) : 0;
                FUZZ_CHECK(!(status_ & vscsi::dev_status::features_ok), "features written after FEATURES_OK");
                if (gfsel_ > 1) return 0;
                const uint64_t mask = gfsel_ == 0 ? 0xffffffffull : 0xffffffff00000000ull;
                driver_features_ = (driver_features_ & ~mask) | ((gfsel_ == 0 ? uint64_t(v) : uint64_t(v) << 32) & mask);
                features_written_ = true;
                return 0;
            }
            case msix_config:
                want(width, 2, off);
                return 0xffff;
            case num_queues:
                want(width, 2, off);
                FUZZ_CHECK(!write, "write to num_queues (checklist 54)");
                return m_.virtqueues;
            case device_status:
                want(width, 1, off);
                if (write) return status_write(uint8_t(v)), 0;
                return status_read();
            case config_generation:
                want(width, 1, off);
                FUZZ_CHECK(!write, "write to config_generation (checklist 54)");
                if (m_.generation_churn) {
                    --m_.generation_churn;
                    ++generation_;
                }
                return generation_;
            case queue_select:
                want(width, 2, off);
                if (write) sel_ = uint16_t(v);
                return sel_;
            case queue_size:
                want(width, 2, off);
                if (!write) return x ? (x->size ? x->size : m_.queue_max[sel_]) : 0;
                queue_field();
                FUZZ_CHECK(v && v <= m_.queue_max[sel_] && !(v & (v - 1)), "queue size %u, max %u (checklist 40)", v,
                           m_.queue_max[sel_]);
                x->size = v;
                return 0;
            case queue_msix_vector:
                want(width, 2, off);
                return 0xffff;
            case queue_enable:
                want(width, 2, off);
                if (!write) return x ? x->enabled : 0;
                FUZZ_CHECK(v == 1, "queue_enable written with %u (checklist 54)", v);
                queue_field();
                if (!x->size) x->size = m_.queue_max[sel_];
                enable(sel_);
                return 0;
            case queue_notify_off:
                want(width, 2, off);
                FUZZ_CHECK(!write, "write to queue_notify_off (checklist 54)");
                return x ? m_.notify_off[sel_] : 0;
            case queue_desc_lo: case queue_desc_hi: case queue_driver_lo: case queue_driver_hi:
            case queue_device_lo: case queue_device_hi: {
                want(width, 4, off);
                uint64_t* f = nullptr;
                if (x) f = off < queue_driver_lo ? &x->desc : off < queue_device_lo ? &x->avail : &x->used;
                const bool hi = (off - queue_desc_lo) % 8 == 4;
                if (!write) return f ? uint32_t(hi ? *f >> 32 : *f) : 0;
                queue_field();
                *f = hi ? (*f & 0xffffffffull) | uint64_t(v) << 32 : (*f & ~0xffffffffull) | v;
                return 0;
            }
        }
        FUZZ_CHECK(!write, "write to common cfg offset %u", off);
        return 0;
    }

    uint32_t devcfg(uint32_t off, unsigned width, bool write, uint32_t v) {
        namespace at = vscsi::config_offset;
        if (write) {
            FUZZ_CHECK(width == 4 && (off == at::sense_size || off == at::cdb_size),
                       "write to read-only config field at %u (checklist 25)", off);
            FUZZ_CHECK(status_ & (m_.legacy ? vscsi::dev_status::driver : vscsi::dev_status::features_ok),
                       "config written before the features were settled");
            (off == at::sense_size ? sense_size_ : cdb_size_) = v;
            return 0;
        }
        uint8_t c[at::size];
        st32(c + at::num_queues, m_.num_queues);
        st32(c + at::seg_max, m_.seg_max);
        st32(c + at::max_sectors, m_.max_sectors);
        st32(c + at::cmd_per_lun, m_.cmd_per_lun);
        st32(c + at::event_info_size, m_.event_info_size);
        st32(c + at::sense_size, sense_size());
        st32(c + at::cdb_size, cdb_size());
        st16(c + at::max_channel, m_.max_channel);
        st16(c + at::max_target, m_.max_target);
        st32(c + at::max_lun, m_.max_lun);
        if (off + width > at::size) return 0;  // past the fields: reads as zero
        return width == 1 ? c[off] : width == 2 ? ld16(c + off) : ld32(c + off);
    }

    // ---- status, reset, queues ----
    uint8_t status_read() {
        if (reset_left_) {
            --reset_left_;
            return status_before_reset_;
        }
        if (reset_unread_ && status_ == 0) {
            reset_unread_ = false;
            ++reset_acks_;
        }
        return status_;
    }

    void status_write(uint8_t v) {
        using namespace vscsi::dev_status;
        if (v == 0) {
            status_before_reset_ = status_;
            reset_left_ = status_ ? m_.reset_delay : 0;
            hard_reset_state();
            reset_unread_ = true;
            ++resets_;
            return;
        }
        FUZZ_CHECK(!reset_unread_, "status %#x written before the reset read back 0 (checklist 36)", v);
        FUZZ_CHECK(!(status_ & failed), "status %#x written after FAILED without a reset (checklist 36)", v);
        const uint8_t kept = uint8_t(status_ & ~needs_reset);
        FUZZ_CHECK((v & kept) == kept, "status %#x clears bits of %#x (checklist 36)", v, status_);
        const uint8_t added = uint8_t(v & ~status_);
        if (added & driver) FUZZ_CHECK(v & acknowledge, "DRIVER before ACKNOWLEDGE");
        if (added & features_ok) {
            FUZZ_CHECK(!m_.legacy, "FEATURES_OK on a legacy device");
            FUZZ_CHECK((v & driver) && features_written_, "FEATURES_OK before DRIVER and the feature write");
            FUZZ_CHECK(!(driver_features_ & ~m_.features), "accepted features %#llx not offered %#llx (checklist 33)",
                       (unsigned long long)driver_features_, (unsigned long long)m_.features);
            FUZZ_CHECK(driver_features_ & vscsi::feature::bit(vscsi::feature::version_1),
                       "a modern device driven without VERSION_1 (checklist 34)");
            if (m_.refuse_features_ok) v = uint8_t(v & ~features_ok);
        }
        if (added & driver_ok) {
            FUZZ_CHECK(v & driver, "DRIVER_OK before DRIVER");
            FUZZ_CHECK(m_.legacy || (v & features_ok), "DRIVER_OK before FEATURES_OK (checklist 31)");
            FUZZ_CHECK(!(v & failed), "DRIVER_OK together with FAILED");
        }
        status_ = uint8_t(v | (status_ & needs_reset));
        if (added & driver_ok) {
            live_ = m_;
            live_sense_ = sense_size();
            live_cdb_ = cdb_size();
        }
    }

    void notify(uint16_t qi) {
        FUZZ_CHECK(status_ & vscsi::dev_status::driver_ok, "notify before DRIVER_OK (checklist 32)");
        FUZZ_CHECK(qi < max_virtqueues && queues_[qi].enabled, "notify of queue %u, not set up", qi);
        queues_[qi].notified = true;
        ++notifies_;
    }

    void enable(uint16_t qi) {
        queue& x = queues_[qi];
        ring_setup s;
        s.size = x.size;
        s.desc = x.desc;
        s.avail = x.avail;
        s.used = x.used;
        s.legacy = m_.legacy;
        s.indirect = negotiated(vscsi::feature::ring_indirect_desc);
        s.event_idx = negotiated(vscsi::feature::ring_event_idx);
        x.peer = std::make_unique<ring_peer>(mem_, s, qi == vscsi::eventq_index, qi >= vscsi::first_request_queue);
        for (uint16_t i = 0; i < max_virtqueues; ++i) {
            if (i == qi || !queues_[i].enabled) continue;
            const ring_peer& o = *queues_[i].peer;
            FUZZ_CHECK(!o.touches(s.desc, 16ull * s.size) && !o.touches(s.avail, 6 + 2ull * s.size) &&
                           !o.touches(s.used, 6 + 8ull * s.size),
                       "queues %u and %u share ring memory", qi, i);
        }
        x.enabled = true;
        x.seen_avail = x.peer->avail_idx();
        x.notified = false;
    }

    void hard_reset_state() {
        status_ = 0;
        isr_ = 0;
        driver_features_ = 0;
        features_written_ = false;
        sense_size_ = vscsi::default_sense_size;  // checklist 59
        cdb_size_ = vscsi::default_cdb_size;
        for (queue& x : queues_) x = queue{};
        tracking_ = true;
    }

    void build_pci_config() {
        memset(pcicfg_, 0, sizeof(pcicfg_));
        st16(pcicfg_ + 0x00, vscsi::pci_vendor_virtio);
        st16(pcicfg_ + 0x02, m_.legacy ? vscsi::pci_device_scsi_transitional : vscsi::pci_device_scsi_modern);
        st16(pcicfg_ + 0x06, 0x10);
        st16(pcicfg_ + 0x2c, vscsi::pci_vendor_virtio);
        st16(pcicfg_ + 0x2e, vscsi::virtio_id_scsi);
        uint8_t* prev = pcicfg_ + 0x34;
        uint32_t at = 0x40;
        auto cap = [&](uint8_t id, uint8_t len) {
            *prev = uint8_t(at);
            uint8_t* c = pcicfg_ + at;
            c[0] = id;
            c[2] = len;
            prev = c + 1;
            at += 0x18;
            return c;
        };
        uint8_t* msix = cap(0x11, 12);
        st16(msix + 2, uint16_t((m_.msix ? 0x8000 : 0) | 3));
        if (m_.legacy) return;
        auto vcap = [&](uint8_t type, uint32_t off, uint32_t len) {
            uint8_t* c = cap(0x09, type == 2 ? 20 : 16);
            c[3] = type;
            c[4] = uint8_t(modern_bar);
            st32(c + 8, off);
            st32(c + 12, len);
            if (type == 2) st32(c + 16, m_.notify_multiplier);
        };
        vcap(1, common_off, 0x1000);
        vcap(3, isr_off, 0x1000);
        vcap(4, device_off, 0x1000);
        vcap(2, notify_off, 0x1000);
    }

    device_model m_;
    device_model live_;
    uint32_t live_sense_ = 0, live_cdb_ = 0;
    const dma_space& mem_;
    uint8_t pcicfg_[256];
    queue queues_[max_virtqueues];
    uint8_t status_ = 0, isr_ = 0, generation_ = 0, status_before_reset_ = 0;
    uint32_t reset_left_ = 0;
    bool reset_unread_ = false;
    uint64_t driver_features_ = 0;
    bool features_written_ = false;
    uint32_t dfsel_ = 0, gfsel_ = 0;
    uint16_t sel_ = 0;
    uint32_t sense_size_ = vscsi::default_sense_size, cdb_size_ = vscsi::default_cdb_size;
    uint64_t resets_ = 0, reset_acks_ = 0, notifies_ = 0;
    bool tracking_ = true;
};

}  // namespace fuzz
