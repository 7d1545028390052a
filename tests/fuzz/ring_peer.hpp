// The device side of one split virtqueue, played by the fuzzer, with a second, independent
// account of what the driver must make of it.
//
// It reads the driver's descriptor table and available ring through bus addresses only and
// checks every chain the driver posts: flags, readable before writable, no loops, the
// indirect rules, every buffer inside memory the driver shares, and nothing (descriptor,
// indirect table, buffer) shared with a chain still in flight: a slot reused too early.
//
// It writes the used ring honestly (a chain it holds, with its length) or not (any id, any
// length, any index), and predicts from the used ring's contents what the driver's reaper
// must accept before it latches the ring broken: an id in range, naming the head of a chain
// in flight that was published, a length within the chain (clamped to its writable bytes),
// and no more entries than chains in flight. The harness then holds the driver to
// that prediction: the same request never completes twice, and nothing completes while the
// device still owns its buffers.
//
// Ring fields are read and written little-endian: modern devices are little-endian, and
// legacy ones use the guest's order, which on the machines this runs on is the same.
#pragma once
#include <stdint.h>
#include <string.h>

#include <deque>
#include <map>
#include <set>
#include <vector>

#include "dma_space.hpp"
#include "fuzz_check.hpp"
#include "../le_bytes.hpp"

namespace fuzz {

using namespace le_bytes;

// The virtio spec's vring_need_event, written from its definition.
inline bool event_crossed(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
    return uint16_t(new_idx - event - 1) < uint16_t(new_idx - old_idx);
}

struct buffer {
    uint64_t bus;
    uint32_t len;
    bool writable;
};

struct chain {
    uint16_t head = 0;
    bool indirect = false;
    bool published = false;     // the driver published it; unpublished chains are in flight too
    uint64_t table_bus = 0;     // indirect table
    uint32_t table_bytes = 0;
    std::vector<uint16_t> descs;  // descriptor-table entries the chain occupies
    std::vector<buffer> bufs;     // in chain order: readable, then writable
    uint32_t writable = 0;
    uint64_t readable = 0;
    uint64_t cookie = 0;          // what the owner attached to it
};

inline bool ranges_overlap(uint64_t a, uint64_t a_len, uint64_t b, uint64_t b_len) {
    return a_len && b_len && a < b + b_len && b < a + a_len;
}

// One buffer of a chain being walked: readable ones before writable ones (checklist 41),
// none empty, each inside memory the driver shares.
inline void take_checked_buffer(const dma_space& mem, chain& c, bool& seen_write, uint64_t addr, uint32_t len,
                                bool writable) {
    FUZZ_CHECK(!(seen_write && !writable), "readable descriptor after a writable one (checklist 41)");
    seen_write |= writable;
    FUZZ_CHECK(len > 0, "zero-length descriptor");
    FUZZ_CHECK(mem.translate(addr, len), "buffer %#llx+%u outside shared memory", (unsigned long long)addr, len);
    c.bufs.push_back(buffer{addr, len, writable});
    if (writable)
        c.writable += len;
    else
        c.readable += len;
}

// The memory of a new chain (buffers and indirect table) does not overlap itself, nor any
// buffer or table of the chains in `held`: a chain in flight posted again is a slot reused.
inline void check_chain_apart(const chain& c, const std::map<uint16_t, chain>& held) {
    std::vector<std::pair<uint64_t, uint64_t>> mine;
    for (const buffer& b : c.bufs) mine.emplace_back(b.bus, b.len);
    if (c.indirect) mine.emplace_back(c.table_bus, c.table_bytes);
    for (size_t i = 0; i < mine.size(); ++i)
        for (size_t j = i + 1; j < mine.size(); ++j)
            FUZZ_CHECK(!ranges_overlap(mine[i].first, mine[i].second, mine[j].first, mine[j].second),
                       "buffers of one chain overlap");
    for (const auto& kv : held) {
        const chain& o = kv.second;
        for (const auto& m : mine) {
            for (const buffer& b : o.bufs)
                FUZZ_CHECK(!ranges_overlap(m.first, m.second, b.bus, b.len),
                           "memory of a chain in flight posted again (slot reused)");
            if (o.indirect)
                FUZZ_CHECK(!ranges_overlap(m.first, m.second, o.table_bus, o.table_bytes), "indirect table in flight reused");
        }
    }
}

struct ring_setup {
    uint32_t size = 0;
    uint64_t desc = 0, avail = 0, used = 0;
    bool legacy = false;     // a used length past the chain is clamped, not fatal
    bool indirect = false;   // VIRTIO_RING_F_INDIRECT_DESC negotiated
    bool event_idx = false;  // VIRTIO_RING_F_EVENT_IDX negotiated
};

class ring_peer {
public:
    // repost: the driver puts a reaped buffer straight back (the event queue), under the same
    // head, before it publishes. track_unpublished: the driver adds chains without publishing
    // them in the same call (request queues); the owner reports each add with note_add().
    ring_peer(const dma_space& mem, const ring_setup& s, bool repost, bool track_unpublished)
        : mem_(mem), s_(s), repost_(repost), track_(track_unpublished) {
        FUZZ_CHECK(s.size >= 1 && s.size <= 32768 && (s.size & (s.size - 1)) == 0, "ring size %u", s.size);
        FUZZ_CHECK(s.desc % 16 == 0 && s.avail % 2 == 0 && s.used % 4 == 0,
                   "ring alignment desc %#llx avail %#llx used %#llx", (unsigned long long)s.desc,
                   (unsigned long long)s.avail, (unsigned long long)s.used);
        desc_ = mem.translate(s.desc, 16ull * s.size);
        avail_ = mem.translate(s.avail, 6 + 2ull * s.size);
        used_ring_ = mem.translate(s.used, 6 + 8ull * s.size);
        FUZZ_CHECK(desc_ && avail_ && used_ring_, "ring memory outside what the driver shares");
        const range parts[3] = {{s.desc, 16ull * s.size}, {s.avail, 6 + 2ull * s.size}, {s.used, 6 + 8ull * s.size}};
        for (int i = 0; i < 3; ++i)
            for (int j = i + 1; j < 3; ++j)
                FUZZ_CHECK(!overlap(parts[i], parts[j]), "ring parts %d and %d overlap", i, j);
        published_ = avail_idx();
        peeked_ = published_;
        adds_ = published_;
        used_ = ld16(used_ring_ + 2);
        last_used_ = used_;
    }

    const ring_setup& setup() const { return s_; }
    uint32_t size() const { return s_.size; }
    std::map<uint16_t, chain>& held() { return held_; }
    const std::map<uint16_t, chain>& held() const { return held_; }
    bool broken() const { return broken_; }
    uint16_t last_used() const { return last_used_; }
    uint16_t device_used() const { return used_; }

    // Ring memory as it is now.
    uint16_t avail_flags() const { return ld16(avail_); }
    uint16_t avail_idx() const { return ld16(avail_ + 2); }
    uint16_t used_event() const { return ld16(avail_ + 4 + 2 * s_.size); }
    uint16_t used_flags() const { return ld16(used_ring_); }
    uint16_t used_idx() const { return ld16(used_ring_ + 2); }
    uint16_t avail_event() const { return ld16(used_ring_ + 4 + 8 * s_.size); }

    // Every range of memory this ring's structures occupy, for cross-queue checks.
    bool touches(uint64_t bus, uint64_t len) const {
        const range r{bus, len};
        return overlap(r, {s_.desc, 16ull * s_.size}) || overlap(r, {s_.avail, 6 + 2ull * s_.size}) ||
               overlap(r, {s_.used, 6 + 8ull * s_.size});
    }

    void note_add() { ++adds_; }

    // Look at what the driver published (and, on request queues, added) since the last sync.
    // Every chain new to this side is checked, against this ring's chains and `others`, and
    // returned by head, in ring order.
    std::vector<uint16_t> sync(const std::vector<const ring_peer*>& others) {
        std::vector<uint16_t> fresh;
        const uint16_t flags = avail_flags();
        if (s_.event_idx)
            FUZZ_CHECK(flags == 0, "avail flags %#x with EVENT_IDX (checklist 46)", flags);
        else
            FUZZ_CHECK(flags <= 1, "avail flags %#x (checklist 46)", flags);
        const uint16_t idx = avail_idx();
        const uint16_t fresh_pub = uint16_t(idx - published_);
        FUZZ_CHECK(fresh_pub <= s_.size, "avail idx moved by %u on a ring of %u (checklist 44)", fresh_pub, s_.size);
        for (uint16_t i = 0; i < fresh_pub; ++i) {
            const uint16_t slot = uint16_t(published_ + i);
            const uint16_t head = avail_entry(slot);
            if (!pending_.empty()) {
                const pending p = pending_.front();
                pending_.pop_front();
                FUZZ_CHECK(p.head == head, "avail slot %u holds head %u, the driver added %u there", slot, head,
                           p.head);
                if (p.walked) {
                    auto it = held_.find(head);
                    FUZZ_CHECK(it != held_.end(), "published head %u is not in flight", head);
                    it->second.published = true;
                    continue;
                }
            }
            chain c = walk(head, others);
            c.published = true;
            held_[head] = c;
            fresh.push_back(head);
        }
        published_ = idx;
        peeked_ = uint16_t(published_ + pending_.size());
        if (track_) {
            FUZZ_CHECK(uint16_t(adds_ - peeked_) <= s_.size, "more chains added than the ring holds");
            while (peeked_ != adds_) {
                const uint16_t head = avail_entry(peeked_);
                chain c = walk(head, others);
                c.published = false;
                held_[head] = c;
                pending_.push_back(pending{head, true});
                fresh.push_back(head);
                ++peeked_;
            }
        }
        return fresh;
    }

    // Whether a notification is owed for the step old -> new of avail idx (checklist 46).
    bool notify_needed(uint16_t old_idx, uint16_t new_idx) const {
        if (old_idx == new_idx) return false;
        if (s_.event_idx) return event_crossed(avail_event(), new_idx, old_idx);
        return !(used_flags() & 1);
    }

    // ---- device writes to the used ring ----
    void push(uint32_t id, uint32_t len) {
        put_entry(0, id, len);
        set_used(uint16_t(used_ + 1));
    }
    void put_entry(uint16_t ahead, uint32_t id, uint32_t len) {
        uint8_t* e = used_ring_ + 4 + 8 * (uint16_t(used_ + ahead) & (s_.size - 1));
        st32(e, id);
        st32(e + 4, len);
    }
    void set_used(uint16_t v) {
        used_ = v;
        st16(used_ring_ + 2, v);
    }
    void set_used_flags(uint16_t v) { st16(used_ring_, v); }
    void set_avail_event(uint16_t v) { st16(used_ring_ + 4 + 8 * s_.size, v); }

    // Copy into a chain's device-writable bytes, from `off` on. Returns bytes written.
    size_t write(const chain& c, uint64_t off, const uint8_t* src, size_t n) const {
        size_t done = 0;
        for (const buffer& b : c.bufs) {
            if (!b.writable || done == n) continue;
            if (off >= b.len) {
                off -= b.len;
                continue;
            }
            const size_t k = size_t(b.len - off) < n - done ? size_t(b.len - off) : n - done;
            uint8_t* p = mem_.translate(b.bus + off, k);
            FUZZ_CHECK(p, "held buffer no longer mapped");
            memcpy(p, src + done, k);
            done += k;
            off = 0;
        }
        return done;
    }

    // ---- the driver's reaper, predicted ----
    struct reaped {
        uint16_t head;
        uint32_t len;  // after the legacy clamp
        chain c;
    };
    struct prediction {
        std::vector<reaped> items;
        bool broken = false;
    };

    // What the driver's reaper takes from the used ring as it is now: up to `max` entries,
    // stopping at the first lie, which latches the ring broken. Updates this side to match.
    prediction reap(size_t max = SIZE_MAX) {
        prediction p;
        if (broken_) {
            p.broken = true;
            return p;
        }
        const uint16_t idx = used_idx();
        // Chains added and not yet published count as in flight, but the device cannot
        // return them (it has not seen them).
        size_t in_flight = held_.size();
        while (p.items.size() < max && idx != last_used_) {
            // More completions than chains in flight: the index is a lie.
            if (uint16_t(idx - last_used_) > in_flight) {
                p.broken = true;
                break;
            }
            const uint8_t* e = used_ring_ + 4 + 8 * (last_used_ & (s_.size - 1));
            const uint32_t id = ld32(e);
            uint32_t len = ld32(e + 4);
            if (id >= s_.size) {
                p.broken = true;
                break;
            }
            const uint16_t head = uint16_t(id);
            auto it = held_.find(head);
            if (it == held_.end() || !it->second.published) {
                p.broken = true;  // not a head in flight, or one the device has not been shown
                break;
            }
            // A length past the writable bytes is clamped to them: legacy devices reported lengths
            // loosely, and QEMU reports a write's whole chain. Past the whole chain (readable
            // bytes counted up to 4 GiB - 1, as the driver does) it is a lie on a modern device.
            const uint32_t writable = it->second.writable;
            if (len > writable) {
                const uint64_t readable = it->second.readable > 0xffffffffu ? 0xffffffffu : it->second.readable;
                if (!s_.legacy && uint64_t(len) > writable + readable) {
                    p.broken = true;
                    break;
                }
                len = writable;
            }
            p.items.push_back(reaped{head, len, it->second});
            held_.erase(it);
            if (repost_) {
                // The driver puts it straight back under the same head, published after the
                // reaping: in flight, and not the device's to return yet.
                pending_.push_back(pending{head, false});
            } else {
                --in_flight;
            }
            ++last_used_;
        }
        if (p.broken) broken_ = true;
        return p;
    }

private:
    struct range {
        uint64_t bus, len;
    };
    // An avail slot the driver filled that this side has not seen published yet: a chain
    // it looked at early (walked: request queues), or a buffer the driver is about to
    // repost (event queue).
    struct pending {
        uint16_t head;
        bool walked;
    };
    static bool overlap(const range& a, const range& b) {
        return a.len && b.len && a.bus < b.bus + b.len && b.bus < a.bus + a.len;
    }

    uint16_t avail_entry(uint16_t slot) const {
        const uint16_t head = ld16(avail_ + 4 + 2 * (slot & (s_.size - 1)));
        FUZZ_CHECK(head < s_.size, "avail ring names descriptor %u of %u", head, s_.size);
        return head;
    }

    // Walk and check one chain the driver posted.
    chain walk(uint16_t head, const std::vector<const ring_peer*>& others) const {
        chain c;
        c.head = head;
        FUZZ_CHECK(!held_.count(head), "head %u posted again while in flight (slot reused)", head);
        bool seen_write = false;
        auto take_buffer = [&](uint64_t addr, uint32_t len, uint16_t flags) {
            take_checked_buffer(mem_, c, seen_write, addr, len, flags & 2);
        };
        uint16_t idx = head;
        for (uint32_t n = 0;; ++n) {
            FUZZ_CHECK(n < s_.size, "chain from head %u loops or outgrows the ring (checklist 42)", head);
            for (uint16_t d : c.descs) FUZZ_CHECK(d != idx, "chain from head %u visits descriptor %u twice", head, idx);
            c.descs.push_back(idx);
            const uint8_t* d = desc_ + 16 * idx;
            const uint64_t addr = ld64(d);
            const uint32_t len = ld32(d + 8);
            const uint16_t flags = ld16(d + 12);
            const uint16_t next = ld16(d + 14);
            FUZZ_CHECK(!(flags & ~7u), "descriptor flags %#x", flags);
            if (flags & 4) {
                FUZZ_CHECK(s_.indirect, "INDIRECT without the feature (checklist 43)");
                FUZZ_CHECK(n == 0 && !(flags & 1), "INDIRECT must be the whole chain, never with NEXT (checklist 43)");
                FUZZ_CHECK(len > 0 && len % 16 == 0, "indirect table of %u bytes", len);
                const uint8_t* t = mem_.translate(addr, len);
                FUZZ_CHECK(t, "indirect table outside shared memory");
                c.indirect = true;
                c.table_bus = addr;
                c.table_bytes = len;
                const uint32_t entries = len / 16;
                uint32_t i = 0;
                std::vector<bool> seen(entries, false);
                for (;;) {
                    FUZZ_CHECK(i < entries && !seen[i], "indirect chain loops or runs past its table");
                    seen[i] = true;
                    const uint8_t* e = t + 16 * i;
                    const uint16_t f = ld16(e + 12);
                    FUZZ_CHECK(!(f & ~3u), "indirect entry flags %#x (no nesting, checklist 43)", f);
                    take_buffer(ld64(e), ld32(e + 8), f);
                    if (!(f & 1)) break;
                    i = ld16(e + 14);
                }
                break;
            }
            take_buffer(addr, len, flags);
            if (!(flags & 1)) break;
            FUZZ_CHECK(next < s_.size, "next %u past the table", next);
            idx = next;
        }
        FUZZ_CHECK(c.readable + c.writable <= (uint64_t(1) << 32), "chain longer than 4 GiB (checklist 42)");
        // Nothing of it may belong to a chain still in flight, or to ring structures.
        std::vector<range> mine;
        for (const buffer& b : c.bufs) mine.push_back({b.bus, b.len});
        if (c.indirect) mine.push_back({c.table_bus, c.table_bytes});
        auto against = [&](const ring_peer& r) {
            for (const range& m : mine)
                FUZZ_CHECK(!r.touches(m.bus, m.len), "a buffer overlaps ring structures");
            if (&r == this)
                for (const auto& kv : r.held_)
                    for (uint16_t a : c.descs)
                        for (uint16_t b : kv.second.descs)
                            FUZZ_CHECK(a != b, "descriptor %u in two chains in flight (slot reused)", a);
            check_chain_apart(c, r.held_);
        };
        against(*this);
        for (const ring_peer* r : others)
            if (r != this) against(*r);
        return c;
    }

    const dma_space& mem_;
    ring_setup s_;
    bool repost_;
    bool track_;
    uint8_t* desc_ = nullptr;
    uint8_t* avail_ = nullptr;
    uint8_t* used_ring_ = nullptr;
    std::map<uint16_t, chain> held_;
    std::deque<pending> pending_;  // added, not yet published, in ring order
    uint16_t published_ = 0;       // avail idx the device has seen
    uint16_t peeked_ = 0;          // avail slots looked at (published or not)
    uint16_t adds_ = 0;            // chains the owner says the driver added
    uint16_t used_ = 0;            // the device's used idx
    uint16_t last_used_ = 0;       // the driver's, as predicted
    bool broken_ = false;
};

}  // namespace fuzz
