// The packed virtqueue (VIRTIO_F_RING_PACKED, virtio 1.1 "Packed Virtqueues"), driver side.
//
// One descriptor ring carries both directions: the driver writes available descriptors in
// ring order, the device overwrites them with used ones in the order it completes, and a
// descriptor's AVAIL (bit 7) and USED (bit 15) flags against each side's wrap counter say
// which it is. Two 4-byte event suppression structures replace the split ring's flags and
// event indices: the driver's (Driver Area, written here) and the device's (Device Area,
// read here).
//
// As hardened as the split ring: the device-visible region holds the descriptor ring, the
// two event structures and the indirect tables, nothing else; what was posted (per buffer
// id: token, chain length, writable and readable bytes, indirect table, publication epoch),
// the id and table free lists and the in-order FIFO live in the private region the device
// never sees. Every used descriptor is checked against that shadow (id in range, a buffer
// in flight that was published, a length within its chain) and the first lie latches the
// ring broken until reclaim_all(), after the owner has reset the device.
//
// Chains added since the last publish() stay invisible to the device: the first of them
// keeps its head's flags back until publish() writes them, and the device, which must take
// descriptors in ring order, cannot reach the later ones before it.
//
// With VIRTIO_F_IN_ORDER the device may answer a run of buffers with one used descriptor
// carrying the last one's id; the ones before it completed whole (their writable bytes).
//
// Barrier pairing (names used below):
//   [A] wmb before a head's flags: its chain's descriptors (and indirect table) visible
//       before the flags that make them available. Pairs with the device's read barrier
//       after it sees the flags change.
//   [B] mb after making chains available, before reading the device's event suppression
//       structure: the notify decision must see its latest state. Pairs with the device's
//       mb between writing that structure and re-reading the ring.
//   [C] rmb after seeing a descriptor used, before reading its id, length and the data.
//       Pairs with the device's wmb before it writes a used descriptor's flags.
//   [D] mb after re-enabling interrupts in the driver's event structure, before re-checking
//       the ring, so a completion that raced with re-enabling is not missed.
#pragma once
#include <stdint.h>
#include <stddef.h>

#include "endian.hpp"
#include "platform.hpp"
#include "ring_common.hpp"
#include "status.hpp"

namespace vscsi {

namespace pring {
inline constexpr uint16_t desc_f_next = 1;
inline constexpr uint16_t desc_f_write = 2;
inline constexpr uint16_t desc_f_indirect = 4;
inline constexpr uint16_t desc_f_avail = uint16_t(1u << 7);
inline constexpr uint16_t desc_f_used = uint16_t(1u << 15);

// Event suppression: desc_event_flags values, and the wrap bit of desc_event_off_wrap.
inline constexpr uint16_t event_enable = 0;
inline constexpr uint16_t event_disable = 1;
inline constexpr uint16_t event_desc = 2;  // only with VIRTIO_RING_F_EVENT_IDX
inline constexpr uint16_t event_wrap = uint16_t(1u << 15);

struct desc {
    le64 addr;
    le32 len;
    le16 id;
    le16 flags;
};
struct event_suppress {
    le16 off_wrap;  // desc_event_off (bits 0..14) and desc_event_wrap (bit 15)
    le16 flags;     // desc_event_flags (bits 0..1)
};
static_assert(sizeof(desc) == 16, "packed desc layout");
static_assert(sizeof(event_suppress) == 4, "packed event suppression layout");

// The AVAIL and USED bits of a descriptor made available, or used, in the lap whose wrap
// counter is `wrap`: AVAIL matches the counter and USED does not; used, both match it.
constexpr uint16_t avail_bits(bool wrap) { return wrap ? desc_f_avail : desc_f_used; }
constexpr uint16_t used_bits(bool wrap) { return wrap ? uint16_t(desc_f_avail | desc_f_used) : uint16_t(0); }
constexpr bool is_used(uint16_t flags, bool wrap) {
    return (flags & (desc_f_avail | desc_f_used)) == used_bits(wrap);
}

constexpr uint16_t off_wrap(uint16_t pos, bool wrap) { return uint16_t(pos | (wrap ? event_wrap : 0)); }

// With EVENT_IDX: does making available the `added` descriptors before (pos, wrap) (at most
// the ring) cross the descriptor the device asked to hear about (`event`, an off_wrap)?
// Positions are counted from the start of the current lap: one in the lap before is
// negative. An offset past the ring names no descriptor: notifying is never wrong.
constexpr bool need_event(uint16_t event, uint16_t pos, bool wrap, uint32_t added, uint32_t size) {
    const int32_t now = pos;
    const int32_t before = now - int32_t(added);
    const int32_t off = event & ~event_wrap;
    if (uint32_t(off) >= size) return true;
    const int32_t at = ((event & event_wrap) != 0) == wrap ? off : off - int32_t(size);
    return at >= before && at < now;
}

constexpr size_t ring_bytes(uint32_t size) { return size_t(16) * size; }
}  // namespace pring

namespace packed_detail {
struct layout {
    // device-visible: the ring, the two event structures (a cache line each), indirect tables
    size_t desc, driver_event, device_event, indirect, dev_total;
    // private: per-id shadow, free ids, free tables, in-order FIFO
    size_t heads, ids, tables, order, priv_total;
};

constexpr bool config_valid(const ring_config& c) {
    if (c.size == 0 || c.size > ring_max_size) return false;  // any size; no power of two needed
    if (c.legacy) return false;  // packed rings are a virtio 1.x feature
    return ring_detail::indirect_config_valid(c);
}

constexpr layout layout_of(const ring_config& c) {
    layout l{};
    l.desc = 0;
    l.driver_event = align_up(pring::ring_bytes(c.size), 64);
    l.device_event = l.driver_event + 64;
    l.indirect = l.device_event + 64;
    l.dev_total = align_up(l.indirect + (c.indirect ? size_t(c.indirect_tables) * c.indirect_max * 16 : 0), 64);
    size_t off = 0;
    l.heads = off;
    off += sizeof(ring_detail::head_state) * c.size;
    l.ids = off;
    off += sizeof(uint16_t) * c.size;
    l.tables = off;
    off += sizeof(uint16_t) * (c.indirect ? c.indirect_tables : 0);
    l.order = off;
    off += sizeof(uint16_t) * (c.in_order ? c.size : 0);
    l.priv_total = align_up(off, private_region_align);
    return l;
}
}  // namespace packed_detail

// Device-visible bytes of a packed ring with this config; 0 for an invalid config.
constexpr size_t packed_ring_region_bytes(const ring_config& cfg) {
    return packed_detail::config_valid(cfg) ? packed_detail::layout_of(cfg).dev_total : 0;
}
// Private bytes (the driver's bookkeeping) of a packed ring with this config; 0 if invalid.
constexpr size_t packed_ring_private_bytes(const ring_config& cfg) {
    return packed_detail::config_valid(cfg) ? packed_detail::layout_of(cfg).priv_total : 0;
}

template <class Platform>
class packed_ring {
public:
    // `dev` is handed to the device (16-byte aligned); `priv` never is (see
    // check_private_region: on a cache line, apart from all of `dev`).
    status init(const ring_config& cfg, dma_region dev, private_region priv) {
        if (!packed_detail::config_valid(cfg)) return status::invalid_argument;
        const packed_detail::layout l = packed_detail::layout_of(cfg);
        VSCSI_TRY(ring_detail::check_ring_region(dev, l.dev_total));
        VSCSI_TRY(check_private_region(priv, l.priv_total, dev));
        cfg_ = cfg;
        mem_ = dev;
        priv_ = priv;
        lay_ = l;
        reset_state();
        return status::ok;
    }

    // The three areas a transport programs (Descriptor, Driver and Device Area).
    uint64_t desc_bus() const { return mem_.bus + lay_.desc; }
    uint64_t driver_area_bus() const { return mem_.bus + lay_.driver_event; }
    uint64_t device_area_bus() const { return mem_.bus + lay_.device_event; }
    uint32_t size() const { return cfg_.size; }
    uint32_t free_descriptors() const { return num_free_; }
    uint32_t in_flight() const { return in_flight_; }
    bool broken() const { return broken_; }
    void mark_broken() { broken_ = true; }
    const ring_config& config() const { return cfg_; }

    bool can_add(uint32_t n_out, uint32_t n_in) const {
        const uint32_t n = n_out + n_in;
        if (broken_ || n == 0 || n > cfg_.size) return false;
        return num_free_ >= (use_indirect(n) ? 1 : n);
    }

    // Queue one chain: readable segments, then writable ones (checklist 41). The device sees
    // it after publish().
    status add(const sg_entry* out, uint32_t n_out, const sg_entry* in, uint32_t n_in, uint32_t token) {
        if ((n_out && !out) || (n_in && !in)) return broken_ ? status::device_broken : status::invalid_argument;
        return add(sg_lists{out, n_out, in, n_in}, token);
    }
    // The same for a chain of any type that lists its segments (see ring_common.hpp).
    template <class Chain>
    status add(const Chain& chain, uint32_t token) {
        if (broken_) return status::device_broken;
        const uint32_t n_out = chain.readable(), n_in = chain.writable();
        const uint64_t n64 = uint64_t(n_out) + n_in;
        if (n64 - 1 >= cfg_.size) return status::invalid_argument;  // none, or more than the ring (checklist 42)
        const uint32_t n = uint32_t(n64);
        const bool indirect = use_indirect(n);
        const uint32_t ndesc = indirect ? 1 : n;
        if (num_free_ < ndesc)
            return ring_detail::segments_valid(chain) ? status::busy : status::invalid_argument;
        // Every buffer in flight takes at least one descriptor, so with one free there is a
        // free id too.
        const uint16_t id = free_ids_[ids_free_ - 1];
        pring::desc* const ring = descs();
        const uint16_t head = next_avail_;
        ring_detail::chain_bytes bytes;
        uint16_t head_flags;
        uint16_t table = ring_detail::no_table;
        if (indirect) {
            // In a table only WRITE is meaningful: its entries follow one another. The table's
            // descriptor carries the id; never with NEXT (checklist 43).
            table = tables_[tables_free_ - 1];
            pring::desc* const t = indirect_table(table);
            for (uint32_t k = 0; k < n_out; ++k) {
                const sg_entry& sg = chain.readable_at(k);
                bytes.count_readable(sg.len);
                fill(t[k], sg.addr, sg.len, 0, 0);
            }
            for (uint32_t k = 0; k < n_in; ++k) {
                const sg_entry& sg = chain.writable_at(k);
                bytes.count_writable(sg.len);
                fill(t[n_out + k], sg.addr, sg.len, 0, pring::desc_f_write);
            }
            if (!bytes.valid()) return status::invalid_argument;
            fill_head(ring[head], mem_.bus_of(t), uint32_t(n * sizeof(pring::desc)), id);
            head_flags = uint16_t(pring::desc_f_indirect | avail_bits_);
            --tables_free_;
        } else {
            head_flags = write_list(ring, id, n, chain, bytes);
            if (!bytes.valid()) {
                // A descriptor past the head left marked available would look made available
                // to a device that reaches it: flags 0 are available in no lap.
                for (uint32_t i = 1, p = head; i < n; ++i) {
                    if (++p == cfg_.size) p = 0;
                    ring[p].flags.set(0);
                }
                return status::invalid_argument;
            }
        }
        ring_detail::record(heads_[id], epoch_, token, bytes, uint16_t(ndesc), table);  // in flight, not yet published
        --ids_free_;
        if (cfg_.in_order) order_[fifo_slot(in_flight_)] = id;
        ++in_flight_;
        num_free_ -= ndesc;
        if (!pending_) {
            // The first chain since the last publish(): its head stays unavailable until then.
            pending_ = true;
            pending_pos_ = head;
            pending_flags_ = head_flags;
        } else {
            Platform::wmb();  // [A]
            store16(&ring[head].flags.raw, to_le(head_flags));
        }
        advance_avail(ndesc);
        return status::ok;
    }

    // Make every chain added since the last call available; true when the device wants a
    // notification for them.
    bool publish() {
        if (!pending_) return false;
        // Chains added before now are the device's to return from here on; before, it cannot
        // have seen them. A 64-bit epoch never wraps.
        ++epoch_;
        Platform::wmb();  // [A]
        store16(&descs()[pending_pos_].flags.raw, to_le(pending_flags_));
        pending_ = false;
        Platform::mb();  // [B]
        const uint32_t added = avail_wrap_ == published_wrap_ ? uint32_t(next_avail_ - published_pos_)
                                                              : uint32_t(next_avail_ + cfg_.size - published_pos_);
        published_pos_ = next_avail_;
        published_wrap_ = avail_wrap_;
        // One read of the whole structure: offset and flags from the same moment.
        const uint32_t ev = load32(device_event());
        const uint16_t flags = uint16_t(from_le(ev) >> 16) & 3;
        if (flags == pring::event_disable) return false;
        if (flags == pring::event_desc && cfg_.event_idx)
            return pring::need_event(uint16_t(from_le(ev)), next_avail_, avail_wrap_, added, cfg_.size);
        // ENABLE, or a value the device may not use (DESC without EVENT_IDX, reserved 3):
        // notifying is never wrong.
        return true;
    }

    result<used_completion> pop() {
        if (!batch_left_) {
            if (broken_) return {status::device_broken, {}};
            if (!used_here()) return {status::empty, {}};
            used_completion c{};
            const status s = take_used(c);
            if (s != status::ok) return {s, {}};
            if (!batch_left_) {
                reaped();
                return {status::ok, c};
            }
        }
        const used_completion c = next_of_batch();
        if (!batch_left_) reaped();
        return {status::ok, c};
    }

    // Every used descriptor there is, each completion handed to on_used(const
    // used_completion&) as it is taken (the buffer is the driver's again by then). Returns how
    // many: status empty (none), ok, or device_broken (a lie, or on_used latched the ring,
    // after that many; nothing more is handed over). on_used may add, publish, pop or reap
    // again, and may even reclaim the ring.
    template <class F>
    result<uint32_t> reap(F&& on_used) {
        uint32_t n = 0;
        for (;;) {
            while (batch_left_) {  // a member: a reclaim from on_used ends the run
                ++n;
                on_used(next_of_batch());
                if (broken_) return {status::device_broken, n};  // latched by on_used: nothing more
            }
            if (broken_) return {status::device_broken, n};
            if (!used_here()) break;
            used_completion c{};
            const status s = take_used(c);
            if (s != status::ok) return {s, n};
            if (batch_left_) continue;
            ++n;
            on_used(c);
        }
        if (!n) return {status::empty, 0};
        reaped();
        return {status::ok, n};
    }

    void disable_interrupts() {
        irq_enabled_ = false;
        set_driver_flags(pring::event_disable);
    }

    bool enable_interrupts() {
        irq_enabled_ = true;
        if (cfg_.event_idx) {
            // An interrupt when the device uses the next descriptor we will look at.
            store16(&driver_event()->off_wrap.raw, to_le(pring::off_wrap(next_used_, used_wrap_)));
            set_driver_flags(pring::event_desc);
        } else {
            set_driver_flags(pring::event_enable);
        }
        Platform::mb();  // [D]
        return has_used();
    }

    // Has the device returned anything not yet popped? A peek for hybrid pollers; it consumes
    // nothing and orders nothing (pop() does).
    bool has_used() const {
        return batch_left_ || used_here();
    }

    template <class F>
    void reclaim_all(F&& on_token) {
        ring_detail::for_each_in_flight(heads_, cfg_.size, on_token);
        reset_state();
    }

    bool token_in_flight(uint32_t token) const { return ring_detail::token_in_flight(heads_, cfg_.size, token); }

private:
    uint8_t* base() const { return static_cast<uint8_t*>(mem_.virt); }
    uint8_t* pbase() const { return static_cast<uint8_t*>(priv_.virt); }
    pring::desc* descs() const { return reinterpret_cast<pring::desc*>(base() + lay_.desc); }
    pring::event_suppress* driver_event() const {
        return reinterpret_cast<pring::event_suppress*>(base() + lay_.driver_event);
    }
    const uint32_t* device_event() const { return reinterpret_cast<const uint32_t*>(base() + lay_.device_event); }
    pring::desc* indirect_table(uint16_t t) const {
        return reinterpret_cast<pring::desc*>(base() + lay_.indirect) + size_t(t) * cfg_.indirect_max;
    }

    // Flags and event fields shared with the device are read and written exactly once per
    // access, never torn.
    static uint16_t load16(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static uint32_t load32(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static void store16(uint16_t* p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

    // A whole descriptor; a list's head but for the flags, which make it available.
    static void fill(pring::desc& d, uint64_t addr, uint32_t len, uint16_t id, uint16_t flags) {
        pring::desc want;
        want.addr.set(addr);
        want.len.set(len);
        want.id.set(id);
        want.flags.set(flags);
        d = want;
    }
    static void fill_head(pring::desc& d, uint64_t addr, uint32_t len, uint16_t id) {
        d.addr.set(addr);
        d.len.set(len);
        d.id.set(id);
    }

    // A direct list from next_avail_ on, every descriptor carrying the id (the spec needs it
    // in the last) and, but for the head, its final flags: the device reads none of them
    // before the head's, which are returned.
    template <class Chain>
    uint16_t write_list(pring::desc* ring, uint16_t id, uint32_t n, const Chain& chain,
                        ring_detail::chain_bytes& bytes) const {
        const uint32_t size = cfg_.size;
        uint32_t pos = next_avail_, i = 0;
        uint16_t bits = avail_bits_, head_flags = 0;
        auto put = [&](const sg_entry& sg, uint16_t write) {
            const uint16_t flags = uint16_t(write | (++i < n ? pring::desc_f_next : 0) | bits);
            if (i == 1) {
                fill_head(ring[pos], sg.addr, sg.len, id);
                head_flags = flags;
            } else {
                fill(ring[pos], sg.addr, sg.len, id, flags);
            }
            if (++pos == size) {
                pos = 0;
                bits ^= pring::desc_f_avail | pring::desc_f_used;
            }
        };
        for (uint32_t k = 0; k < chain.readable(); ++k) {
            const sg_entry& sg = chain.readable_at(k);
            bytes.count_readable(sg.len);
            put(sg, 0);
        }
        for (uint32_t k = 0; k < chain.writable(); ++k) {
            const sg_entry& sg = chain.writable_at(k);
            bytes.count_writable(sg.len);
            put(sg, pring::desc_f_write);
        }
        return head_flags;
    }

    // Is the descriptor at the reaper's position used in its lap?
    bool used_here() const {
        return (from_le(load16(&descs()[next_used_].flags.raw)) & (pring::desc_f_avail | pring::desc_f_used)) ==
               used_bits_;
    }

    // The used descriptor at the reaper's position (used_here()), checked against the shadow:
    // its buffer's completion in `c`, or, in order, the run it ends starts (batch_left_).
    status take_used(used_completion& c) {
        // Nothing in flight, yet a used descriptor where the next one would go: a lie.
        if (in_flight_ == 0) return fail();
        Platform::rmb();  // [C]
        const pring::desc& d = descs()[next_used_];
        const uint32_t id = d.id.get();
        // The length counts whatever the WRITE flag of a used descriptor says: QEMU reports
        // it without setting WRITE (where the spec would have it ignored).
        uint32_t len = d.len.get();
        if (id >= cfg_.size) return fail();
        ring_detail::head_state& h = heads_[id];
        // Not a buffer in flight (or returned twice), or added but never published.
        if (!h.added_in || h.added_in == epoch_) return fail();
        if (!ring_detail::accept_used_len(h, len, false)) return fail();
        if (cfg_.in_order) {
            start_batch(uint16_t(id), len);
            return status::ok;
        }
        c = used_completion{h.token, len};
        advance_used(h.ndesc);
        release(uint16_t(id));
        return status::ok;
    }

    bool use_indirect(uint32_t n) const { return ring_detail::use_indirect(cfg_, n, num_free_, tables_free_); }

    // The avail and used positions move on by n descriptors; at the end of the ring the lap's
    // wrap counter flips, and with it the AVAIL/USED bits that mark a descriptor in it.
    bool advance(uint16_t& pos, bool& wrap, uint32_t n) const {
        uint32_t p = uint32_t(pos) + n;
        const bool lap = p >= cfg_.size;
        if (lap) {
            p -= cfg_.size;
            wrap = !wrap;
        }
        pos = uint16_t(p);
        return lap;
    }
    void advance_avail(uint32_t n) {
        if (advance(next_avail_, avail_wrap_, n)) avail_bits_ = pring::avail_bits(avail_wrap_);
    }
    void advance_used(uint32_t n) {
        if (advance(next_used_, used_wrap_, n)) used_bits_ = pring::used_bits(used_wrap_);
    }

    uint32_t fifo_slot(uint32_t k) const {
        const uint32_t s = order_head_ + k;
        return s >= cfg_.size ? s - cfg_.size : s;
    }

    void set_driver_flags(uint16_t f) {
        if (driver_flags_ == f) return;  // leave the device's cached copy of the line valid
        driver_flags_ = f;
        store16(&driver_event()->flags.raw, to_le(f));
    }

    // After the reaper moved on: with EVENT_IDX and interrupts on, ask for one when the
    // device uses the next descriptor.
    void reaped() {
        if (cfg_.event_idx && irq_enabled_)
            store16(&driver_event()->off_wrap.raw, to_le(pring::off_wrap(next_used_, used_wrap_)));
    }

    // In order: the device used every buffer from the oldest in flight up to `id` (published,
    // so all before it were too); the run's descriptors are skipped at once.
    void start_batch(uint16_t id, uint32_t len) {
        uint32_t k = 0, ndesc = 0;
        for (;; ++k) {
            const uint16_t at = order_[fifo_slot(k)];
            ndesc += heads_[at].ndesc;
            if (at == id) break;
        }
        advance_used(ndesc);
        batch_left_ = k + 1;
        batch_len_ = len;
    }

    used_completion next_of_batch() {
        const uint16_t id = order_[order_head_];
        const ring_detail::head_state& h = heads_[id];
        // Buffers before the last of the run were used whole.
        const uint32_t len = batch_left_ == 1 ? batch_len_ : h.writable;
        const uint32_t token = h.token;
        release(id);
        --batch_left_;
        return used_completion{token, len};
    }

    void release(uint16_t id) {
        ring_detail::head_state& h = heads_[id];
        num_free_ += h.ndesc;
        if (h.table != ring_detail::no_table) tables_[tables_free_++] = h.table;
        h.added_in = 0;
        free_ids_[ids_free_++] = id;
        if (cfg_.in_order) order_head_ = uint16_t(fifo_slot(1));
        --in_flight_;
    }

    // The first lie latches the ring broken.
    status fail() {
        broken_ = true;
        return status::device_broken;
    }

    void reset_state() {
        // The descriptor ring starts zeroed (no descriptor available or used in lap 1), and
        // so do both event structures (events enabled).
        uint8_t* b = base();
        for (size_t i = 0; i < lay_.dev_total; ++i) b[i] = 0;
        uint8_t* p = pbase();
        heads_ = reinterpret_cast<ring_detail::head_state*>(p + lay_.heads);
        free_ids_ = reinterpret_cast<uint16_t*>(p + lay_.ids);
        tables_ = reinterpret_cast<uint16_t*>(p + lay_.tables);
        order_ = reinterpret_cast<uint16_t*>(p + lay_.order);
        for (uint32_t i = 0; i < cfg_.size; ++i) {
            heads_[i] = ring_detail::head_state{0, 0, 0, 0, 0, ring_detail::no_table};
            free_ids_[i] = uint16_t(cfg_.size - 1 - i);  // id 0 first
        }
        const uint16_t nt = cfg_.indirect ? cfg_.indirect_tables : 0;
        for (uint16_t t = 0; t < nt; ++t) tables_[t] = t;
        tables_free_ = nt;
        ids_free_ = cfg_.size;
        num_free_ = cfg_.size;
        in_flight_ = 0;
        next_avail_ = 0;
        next_used_ = 0;
        published_pos_ = 0;
        avail_wrap_ = true;  // both wrap counters start at 1
        used_wrap_ = true;
        published_wrap_ = true;
        avail_bits_ = pring::avail_bits(true);
        used_bits_ = pring::used_bits(true);
        order_head_ = 0;
        batch_left_ = 0;
        batch_len_ = 0;
        pending_ = false;
        pending_pos_ = 0;
        pending_flags_ = 0;
        epoch_ = 1;
        driver_flags_ = pring::event_enable;
        irq_enabled_ = true;
        broken_ = false;
    }

    ring_config cfg_{};
    dma_region mem_{};
    private_region priv_{};
    packed_detail::layout lay_{};
    ring_detail::head_state* heads_ = nullptr;  // per buffer id
    uint16_t* free_ids_ = nullptr;              // a stack of free buffer ids
    uint16_t* tables_ = nullptr;                // a stack of free indirect tables
    uint16_t* order_ = nullptr;                 // in order: ids in the order made available
    uint64_t epoch_ = 1;  // publications so far, plus one: chains added since carry it
    uint32_t num_free_ = 0;
    uint32_t in_flight_ = 0;
    uint32_t ids_free_ = 0;
    uint32_t batch_left_ = 0;  // in order: buffers of the current run not yet handed out
    uint32_t batch_len_ = 0;   // in order: the used length of the run's last buffer
    uint16_t tables_free_ = 0;
    uint16_t next_avail_ = 0;     // where the next chain goes
    uint16_t next_used_ = 0;      // where the next used descriptor will be
    uint16_t published_pos_ = 0;  // next_avail_ at the last publish()
    uint16_t pending_pos_ = 0;    // the head whose flags publish() writes
    uint16_t pending_flags_ = 0;
    uint16_t order_head_ = 0;
    uint16_t driver_flags_ = 0;  // what the driver's event structure's flags hold
    uint16_t avail_bits_ = 0;    // AVAIL/USED marking a descriptor available in this lap
    uint16_t used_bits_ = 0;     // ... and used in the lap the reaper is in
    bool avail_wrap_ = true;
    bool used_wrap_ = true;
    bool published_wrap_ = true;
    bool pending_ = false;
    bool irq_enabled_ = true;
    bool broken_ = false;
};

}  // namespace vscsi
