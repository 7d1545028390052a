// The split virtqueue, driver side (checklist F).
//
// Two caller-provided regions: one the device may access (the descriptor table, the
// available and used rings, preallocated indirect tables) and one it never sees (the
// driver's private shadow of what it posted: the free list, chain lengths, tokens, writable
// byte counts, which chains were published, the free indirect tables). The device's memory
// is never trusted and never holds anything the driver relies on: every used entry is
// checked against the shadow, and the first lie latches the ring broken (the owner then
// resets the device). A device that writes anywhere it may write cannot reach the shadow.
//
// Barrier pairing (names used in comments below):
//   [A] wmb before avail->idx: descriptors and avail entries visible before the index.
//       Pairs with the device's read barrier after it reads avail->idx.
//   [B] mb after avail->idx, before reading used->flags / avail_event: the notify decision
//       must see the device's latest suppression state. Pairs with the device's mb between
//       writing avail_event/flags and re-reading avail->idx.
//   [C] rmb after reading used->idx, before reading used entries and the data they cover.
//       Pairs with the device's wmb before it publishes used->idx.
//   [D] mb after re-enabling interrupts (flags or used_event), before re-checking used->idx,
//       so a completion that raced with re-enabling is not missed.
#pragma once
#include <stdint.h>
#include <stddef.h>

#include "endian.hpp"
#include "platform.hpp"
#include "ring_common.hpp"
#include "status.hpp"

namespace vscsi {

namespace vring {
inline constexpr uint16_t desc_f_next = 1;
inline constexpr uint16_t desc_f_write = 2;
inline constexpr uint16_t desc_f_indirect = 4;
inline constexpr uint16_t avail_f_no_interrupt = 1;
inline constexpr uint16_t used_f_no_notify = 1;

struct desc {
    virtio64 addr;
    virtio32 len;
    virtio16 flags;
    virtio16 next;
};
struct used_elem {
    virtio32 id;
    virtio32 len;
};
static_assert(sizeof(desc) == 16, "vring desc layout");
static_assert(sizeof(used_elem) == 8, "vring used elem layout");

// The spec's vring_need_event: has the index moved past event_idx in the step old -> new?
constexpr bool need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
    return uint16_t(new_idx - event_idx - 1) < uint16_t(new_idx - old_idx);
}

constexpr size_t desc_bytes(uint32_t size) { return size_t(16) * size; }
constexpr size_t avail_bytes(uint32_t size) { return 6 + size_t(2) * size; }  // flags, idx, ring, used_event
constexpr size_t used_bytes(uint32_t size) { return 6 + size_t(8) * size; }   // flags, idx, ring, avail_event
}  // namespace vring

inline constexpr size_t legacy_used_align = 4096;  // checklist 39

namespace ring_detail {
struct layout {
    size_t desc, avail, used, indirect, total;  // device-visible region
    size_t heads, next, tables, private_total;  // private region
};

constexpr bool config_valid(const ring_config& c) {
    if (c.size == 0 || c.size > ring_max_size || !is_power_of_two(c.size)) return false;
    if (c.in_order) return false;  // in-order batches are a packed-ring feature here
    return indirect_config_valid(c);
}

constexpr layout layout_of(const ring_config& c) {
    layout l{};
    l.desc = 0;
    l.avail = vring::desc_bytes(c.size);
    l.used = align_up(l.avail + vring::avail_bytes(c.size), c.legacy ? legacy_used_align : 4);
    size_t off = l.used + vring::used_bytes(c.size);
    off = align_up(off, 16);
    l.indirect = off;
    if (c.indirect) off += size_t(c.indirect_tables) * c.indirect_max * sizeof(vring::desc);
    l.total = align_up(off, 16);
    size_t p = 0;
    l.heads = p;
    p += sizeof(head_state) * c.size;
    l.next = p;
    p += sizeof(uint16_t) * c.size;
    l.tables = p;
    p += sizeof(uint16_t) * (c.indirect ? c.indirect_tables : 0);
    l.private_total = align_up(p, private_region_align);
    return l;
}
}  // namespace ring_detail

// Bytes of device-visible region a ring with this config needs; 0 for an invalid config.
constexpr size_t ring_region_bytes(const ring_config& cfg) {
    return ring_detail::config_valid(cfg) ? ring_detail::layout_of(cfg).total : 0;
}

// Bytes of private region (private_region_align-aligned) it needs; 0 for an invalid config.
constexpr size_t ring_private_bytes(const ring_config& cfg) {
    return ring_detail::config_valid(cfg) ? ring_detail::layout_of(cfg).private_total : 0;
}

template <class Platform>
class split_ring {
public:
    // `dev`: the rings, shared with the device; `priv`: the shadow, which must not overlap it.
    status init(const ring_config& cfg, dma_region dev, private_region priv) {
        if (!ring_detail::config_valid(cfg)) return status::invalid_argument;
        const ring_detail::layout l = ring_detail::layout_of(cfg);
        VSCSI_TRY(ring_detail::check_ring_region(dev, l.total));
        if (cfg.legacy && ((reinterpret_cast<uintptr_t>(dev.virt) | dev.bus) & (legacy_used_align - 1)))
            return status::invalid_argument;
        VSCSI_TRY(check_private_region(priv, l.private_total, dev));
        cfg_ = cfg;
        mem_ = dev;
        priv_ = static_cast<uint8_t*>(priv.virt);
        lay_ = l;
        order_ = virtio_order{cfg.legacy};
        reset_state();
        return status::ok;
    }

    uint64_t desc_bus() const { return mem_.bus + lay_.desc; }
    uint64_t avail_bus() const { return mem_.bus + lay_.avail; }
    uint64_t used_bus() const { return mem_.bus + lay_.used; }
    // The spec's names for the parts, as both ring formats have them.
    uint64_t driver_area_bus() const { return avail_bus(); }
    uint64_t device_area_bus() const { return used_bus(); }
    uint32_t size() const { return cfg_.size; }
    uint32_t free_descriptors() const { return num_free_; }
    uint32_t in_flight() const { return in_flight_; }
    bool broken() const { return broken_; }
    void mark_broken() { fail(); }
    const ring_config& config() const { return cfg_; }

    bool can_add(uint32_t n_out, uint32_t n_in) const {
        const uint32_t n = n_out + n_in;
        if (broken_ || n == 0 || n > cfg_.size) return false;
        if (use_indirect(n)) return num_free_ >= 1;
        return num_free_ >= n;
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
        const uint64_t n64 = uint64_t(chain.readable()) + chain.writable();
        if (n64 - 1 >= cfg_.size) return status::invalid_argument;  // none, or more than the ring (checklist 42)
        const uint32_t n = uint32_t(n64);
        const bool indirect = use_indirect(n);
        // A chain that can never be added is refused as such, not as busy: the caller would
        // retry it forever.
        if (num_free_ < (indirect ? 1 : n))
            return ring_detail::segments_valid(chain) ? status::busy : status::invalid_argument;

        // Segments are checked as their descriptors are written: until the avail ring names
        // the chain, those are free entries (or a free indirect table) that nobody reads, so a
        // refused chain leaves nothing behind.
        ring_detail::chain_bytes bytes;
        const uint16_t head = free_head_;
        uint16_t after;  // the first free descriptor after the chain
        uint16_t table = ring_detail::no_table;
        if (indirect) {
            table = tables_[tables_free_ - 1];
            vring::desc* const t = indirect_table(table);
            write_chain<true>(t, 0, n, chain, bytes);
            if (!bytes.valid()) return status::invalid_argument;
            // Never with NEXT (checklist 43).
            write_desc(descs()[head], mem_.bus_of(t), uint32_t(n * sizeof(vring::desc)), vring::desc_f_indirect, 0);
            after = next_[head];
            --tables_free_;
        } else {
            after = write_chain<false>(descs(), head, n, chain, bytes);
            if (!bytes.valid()) return status::invalid_argument;
        }
        const uint16_t ndesc = uint16_t(indirect ? 1 : n);
        free_head_ = after;
        num_free_ -= ndesc;
        ring_detail::record(heads_[head], epoch_, token, bytes, ndesc, table);  // in flight, not yet published
        ++in_flight_;
        virtio16& entry = avail_ring()[avail_idx_ & (cfg_.size - 1)];
        if (entry.get(order_) != head) entry.set(order_, head);  // see write_desc()
        ++avail_idx_;  // free-running: never decremented (checklist 44)
        return status::ok;
    }

    bool publish() {
        if (avail_idx_ == published_idx_) return false;
        // Chains added before now are the device's to return from here on; before, it cannot
        // have seen them. A 64-bit epoch never wraps.
        ++epoch_;
        Platform::wmb();  // [A]
        store16(avail_idx_field(), order_.dev16(avail_idx_));
        Platform::mb();  // [B]
        const uint16_t old = published_idx_;
        published_idx_ = avail_idx_;
        if (cfg_.event_idx) {
            const uint16_t event = order_.dev16(load16(avail_event_field()));
            return vring::need_event(event, avail_idx_, old);  // checklist 46
        }
        return !(order_.dev16(load16(used_flags_field())) & vring::used_f_no_notify);
    }

    result<used_completion> pop() {
        if (broken_) return {status::device_broken, {}};
        const uint16_t used_idx = order_.dev16(load16(used_idx_field()));
        if (used_idx == last_used_) return {status::empty, {}};
        // More completions than chains in flight: the index is a lie.
        if (uint16_t(used_idx - last_used_) > in_flight_) return {fail(), {}};
        Platform::rmb();  // [C]
        // Outside a reap the two are equal; a pop from a reap's on_used at its end moves the
        // end along, so the reap never walks past what the device published.
        if (reap_end_ == last_used_) ++reap_end_;
        used_completion c{};
        if (!take_used(c)) return {fail(), {}};
        reaped();
        return {status::ok, c};
    }

    // Everything the device has returned up to its used index as read once here, each
    // completion handed to on_used(const used_completion&) as it is taken (the chain is the
    // driver's again by then). Returns how many: status empty (none), ok, or device_broken
    // (a lie, or on_used latched the ring, after that many; nothing more is handed over).
    // on_used may add, publish, pop or reap again, and may even reclaim the ring: reaping
    // then stops.
    template <class F>
    result<uint32_t> reap(F&& on_used) {
        if (broken_) return {status::device_broken, 0};
        const uint16_t end = order_.dev16(load16(used_idx_field()));
        if (end == last_used_) return {status::empty, 0};
        if (uint16_t(end - last_used_) > in_flight_) return {fail(), 0};
        Platform::rmb();  // [C]
        reap_end_ = end;  // a member: a reap or reclaim from on_used moves it
        uint32_t n = 0;
        do {
            used_completion c{};
            if (!take_used(c)) return {fail(), n};
            ++n;
            on_used(c);
            if (broken_) return {status::device_broken, n};  // latched by on_used: nothing more is handed over
        } while (last_used_ != reap_end_);
        reaped();
        return {status::ok, n};
    }

    void disable_interrupts() {
        irq_enabled_ = false;
        if (cfg_.event_idx) {
            // avail->flags stays 0 with EVENT_IDX (checklist 46); park used_event behind us.
            store16(used_event_field(), order_.dev16(uint16_t(last_used_ - 1)));
        } else {
            store16(avail_flags_field(), order_.dev16(vring::avail_f_no_interrupt));
        }
    }

    bool enable_interrupts() {
        irq_enabled_ = true;
        if (cfg_.event_idx)
            store16(used_event_field(), order_.dev16(last_used_));
        else
            store16(avail_flags_field(), 0);
        Platform::mb();  // [D]
        return has_used();
    }

    // Has the device returned anything not yet popped? A peek for hybrid pollers deciding
    // whether to keep spinning; it consumes nothing and orders nothing (pop() does).
    bool has_used() const { return order_.dev16(load16(used_idx_field())) != last_used_; }

    template <class F>
    void reclaim_all(F&& on_token) {
        ring_detail::for_each_in_flight(heads_, cfg_.size, on_token);
        reset_state();
    }

    bool token_in_flight(uint32_t token) const { return ring_detail::token_in_flight(heads_, cfg_.size, token); }

private:
    uint8_t* base() const { return static_cast<uint8_t*>(mem_.virt); }
    // A descriptor (or avail entry) that already holds what it should is not written again.
    // The device reads the rings from its own core: a line the driver did not dirty is still
    // valid in the device's cache, so a chain reposted unchanged (the same free entries for the
    // same slot's header and response, as a steady stream of small commands gets) costs the
    // device no cache miss for it. Comparing costs a read of a line the driver wrote last.
    void write_desc(vring::desc& d, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) const {
        vring::desc want;
        want.addr.set(order_, addr);
        want.len.set(order_, len);
        want.flags.set(order_, flags);
        want.next.set(order_, next);
        uint64_t have[2], w[2];
        __builtin_memcpy(have, &d, 16);
        __builtin_memcpy(w, &want, 16);
        if (have[0] != w[0] || have[1] != w[1]) d = want;
    }
    // One chain's descriptors: an indirect table's entries one after another (Table), or ring
    // entries along the free list from `idx`. Returns the entry after the last one.
    template <bool Table, class Chain>
    uint16_t write_chain(vring::desc* d, uint16_t idx, uint32_t n, const Chain& chain,
                         ring_detail::chain_bytes& bytes) const {
        uint32_t i = 0;
        // Readable first, then writable (checklist 41).
        auto put = [&](const sg_entry& sg, uint16_t write) {
            const uint16_t next = Table ? uint16_t(idx + 1) : next_[idx];
            const bool more = ++i < n;
            write_desc(d[idx], sg.addr, sg.len, uint16_t(write | (more ? vring::desc_f_next : 0)), more ? next : 0);
            idx = next;
        };
        for (uint32_t k = 0; k < chain.readable(); ++k) {
            const sg_entry& sg = chain.readable_at(k);
            bytes.count_readable(sg.len);
            put(sg, 0);
        }
        for (uint32_t k = 0; k < chain.writable(); ++k) {
            const sg_entry& sg = chain.writable_at(k);
            bytes.count_writable(sg.len);
            put(sg, vring::desc_f_write);
        }
        return idx;
    }
    vring::desc* descs() const { return reinterpret_cast<vring::desc*>(base() + lay_.desc); }
    uint16_t* avail_flags_field() const { return reinterpret_cast<uint16_t*>(base() + lay_.avail); }
    uint16_t* avail_idx_field() const { return reinterpret_cast<uint16_t*>(base() + lay_.avail + 2); }
    virtio16* avail_ring() const { return reinterpret_cast<virtio16*>(base() + lay_.avail + 4); }
    uint16_t* used_event_field() const {
        return reinterpret_cast<uint16_t*>(base() + lay_.avail + 4 + size_t(2) * cfg_.size);
    }
    uint16_t* used_flags_field() const { return reinterpret_cast<uint16_t*>(base() + lay_.used); }
    uint16_t* used_idx_field() const { return reinterpret_cast<uint16_t*>(base() + lay_.used + 2); }
    const vring::used_elem* used_ring() const {
        return reinterpret_cast<const vring::used_elem*>(base() + lay_.used + 4);
    }
    uint16_t* avail_event_field() const {
        return reinterpret_cast<uint16_t*>(base() + lay_.used + 4 + size_t(8) * cfg_.size);
    }
    vring::desc* indirect_table(uint16_t t) const {
        return reinterpret_cast<vring::desc*>(base() + lay_.indirect) + size_t(t) * cfg_.indirect_max;
    }

    // Shared-memory indices are read and written exactly once per access.
    static uint16_t load16(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static void store16(uint16_t* p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

    bool use_indirect(uint32_t n) const { return ring_detail::use_indirect(cfg_, n, num_free_, tables_free_); }

    void release(uint16_t head) {
        ring_detail::head_state& h = heads_[head];
        uint16_t last = head;
        for (uint32_t i = 1; i < h.ndesc; ++i) last = next_[last];  // bounded by ndesc <= size
        next_[last] = free_head_;
        free_head_ = head;
        num_free_ += h.ndesc;
        if (h.table != ring_detail::no_table) tables_[tables_free_++] = h.table;
        h.added_in = 0;
        --in_flight_;
    }

    // The used entry at last_used_, which the device published: checked against the shadow,
    // then the chain released. False: a lie.
    bool take_used(used_completion& c) {
        const vring::used_elem& e = used_ring()[last_used_ & (cfg_.size - 1)];
        const uint32_t id = e.id.get(order_);
        uint32_t len = e.len.get(order_);
        if (id >= cfg_.size) return false;
        ring_detail::head_state& h = heads_[id];
        // Not a head in flight (a middle descriptor or a duplicate), or added but never
        // published (the device cannot know it).
        if (!h.added_in || h.added_in == epoch_) return false;
        if (!ring_detail::accept_used_len(h, len, cfg_.legacy)) return false;
        c = used_completion{h.token, len};
        release(uint16_t(id));
        ++last_used_;
        return true;
    }

    // After the reaper moved on: with EVENT_IDX and interrupts on, ask for one when the
    // device moves past what we have reaped.
    void reaped() {
        if (cfg_.event_idx && irq_enabled_) store16(used_event_field(), order_.dev16(last_used_));
    }

    // The first lie latches the ring broken, and stops a reap under way.
    status fail() {
        broken_ = true;
        reap_end_ = last_used_;
        return status::device_broken;
    }

    void reset_state() {
        uint8_t* b = base();
        for (size_t i = 0; i < lay_.total; ++i) b[i] = 0;  // used->flags = 0 (checklist 47)
        for (size_t i = 0; i < lay_.private_total; ++i) priv_[i] = 0;
        heads_ = reinterpret_cast<ring_detail::head_state*>(priv_ + lay_.heads);
        next_ = reinterpret_cast<uint16_t*>(priv_ + lay_.next);
        tables_ = reinterpret_cast<uint16_t*>(priv_ + lay_.tables);
        for (uint32_t i = 0; i < cfg_.size; ++i) {
            next_[i] = uint16_t((i + 1) & (cfg_.size - 1));
            heads_[i].table = ring_detail::no_table;
        }
        const uint16_t nt = cfg_.indirect ? cfg_.indirect_tables : 0;
        for (uint16_t t = 0; t < nt; ++t) tables_[t] = t;
        tables_free_ = nt;
        free_head_ = 0;
        num_free_ = cfg_.size;
        in_flight_ = 0;
        avail_idx_ = 0;
        published_idx_ = 0;
        epoch_ = 1;
        last_used_ = 0;
        reap_end_ = 0;
        irq_enabled_ = true;
        broken_ = false;
    }

    ring_config cfg_{};
    dma_region mem_{};
    uint8_t* priv_ = nullptr;
    ring_detail::layout lay_{};
    virtio_order order_{};
    ring_detail::head_state* heads_ = nullptr;
    uint16_t* next_ = nullptr;
    uint16_t* tables_ = nullptr;
    uint64_t epoch_ = 1;  // publications so far, plus one: chains added since carry it
    uint32_t num_free_ = 0;
    uint32_t in_flight_ = 0;
    uint16_t tables_free_ = 0;
    uint16_t free_head_ = 0;
    uint16_t avail_idx_ = 0;
    uint16_t published_idx_ = 0;
    uint16_t last_used_ = 0;
    uint16_t reap_end_ = 0;  // the used index a reap under way stops at
    bool irq_enabled_ = true;
    bool broken_ = false;
};

}  // namespace vscsi
