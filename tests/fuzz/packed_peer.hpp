// The device side of one packed virtqueue, played by the fuzzer, with a second, independent
// account of what the driver must make of it (written from the spec's "Packed Virtqueues").
//
// It reads the driver's descriptor ring through bus addresses only. At its avail position it
// takes every list whose first descriptor is available for its lap and checks it: every
// descriptor of the list marked available for the lap it lies in, readable before writable,
// NEXT only between them, the buffer id in the last, INDIRECT alone and only with the
// feature, WRITE the only flag inside a table, every buffer inside memory the driver shares,
// and nothing (buffer, table, id) shared with a list still in flight: a slot reused early.
//
// It writes used descriptors honestly (a list it holds, with a length; in order, one for a
// whole run) or not (any id, length and flags, anywhere), and predicts from the ring as it
// stands what the driver's reaper must accept before it latches the ring broken: a used
// descriptor at the reaper's position for its wrap counter, while something is in flight,
// naming an id in flight that was published, with a length within the list (clamped to its
// writable bytes); in order, every buffer made available before it completes too.
#pragma once
#include <stdint.h>
#include <string.h>

#include <deque>
#include <map>
#include <vector>

#include "dma_space.hpp"
#include "fuzz_check.hpp"
#include "ring_peer.hpp"

namespace fuzz {

struct packed_setup {
    uint32_t size = 0;
    uint64_t desc = 0, driver_area = 0, device_area = 0;
    bool indirect = false;
    bool event_idx = false;
    bool in_order = false;
};

class packed_peer {
public:
    static constexpr uint16_t f_next = 1, f_write = 2, f_indirect = 4, f_avail = 1u << 7, f_used = 1u << 15;

    packed_peer(const dma_space& mem, const packed_setup& s) : mem_(mem), s_(s) {
        FUZZ_CHECK(s.size >= 1 && s.size <= 32768, "ring size %u", s.size);
        FUZZ_CHECK(s.desc % 16 == 0 && s.driver_area % 4 == 0 && s.device_area % 4 == 0,
                   "packed ring alignment (16, 4, 4)");
        ring_ = mem.translate(s.desc, 16ull * s.size);
        drv_ = mem.translate(s.driver_area, 4);
        dev_ = mem.translate(s.device_area, 4);
        FUZZ_CHECK(ring_ && drv_ && dev_, "ring memory outside what the driver shares");
        for (uint32_t i = 0; i < s.size; ++i)
            FUZZ_CHECK(flags_at(i) == 0, "descriptor %u not zeroed at start (flags %#x)", i, flags_at(i));
    }

    uint32_t size() const { return s_.size; }
    const std::map<uint16_t, chain>& held() const { return held_; }
    bool broken() const { return broken_; }
    uint32_t descriptors_held() const {
        uint32_t n = 0;
        for (const auto& kv : held_) n += uint32_t(kv.second.descs.size());
        return n;
    }

    uint16_t flags_at(uint32_t pos) const { return ld16(ring_ + 16ull * pos + 14); }
    uint16_t driver_off_wrap() const { return ld16(drv_); }
    uint16_t driver_flags() const { return ld16(drv_ + 2); }
    void set_device_event(uint16_t off_wrap, uint16_t flags) {
        st16(dev_, off_wrap);
        st16(dev_ + 2, flags);
    }
    uint16_t device_off_wrap() const { return ld16(dev_); }
    uint16_t device_flags() const { return ld16(dev_ + 2); }
    // Positions are kept as descriptors passed since the start (a linear count): the ring
    // position is that modulo the size, and the wrap counter flips every lap, starting at 1.
    uint16_t pos_of(uint64_t total) const { return uint16_t(total % s_.size); }
    bool wrap_of(uint64_t total) const { return (total / s_.size) % 2 == 0; }
    uint16_t off_wrap_of(uint64_t total) const { return uint16_t(pos_of(total) | (wrap_of(total) ? 0x8000 : 0)); }
    // The reaper's position as predicted, as an off_wrap value.
    uint16_t reaper_off_wrap() const { return off_wrap_of(reap_); }
    uint64_t avail_total() const { return avail_; }
    bool run_pending() const { return !run_.empty(); }

    static bool available(uint16_t flags, bool wrap) { return bool(flags & f_avail) == wrap && bool(flags & f_used) != wrap; }
    static bool used(uint16_t flags, bool wrap) { return bool(flags & f_avail) == wrap && bool(flags & f_used) == wrap; }

    // Is a used descriptor waiting where the reaper looks (or a run still being handed out)?
    bool used_waiting() const { return !run_.empty() || used(flags_at(pos_of(reap_)), wrap_of(reap_)); }

    // Take every list the driver made available since the last call, in ring order; each is
    // checked and held, and its id returned.
    std::vector<uint16_t> sync() {
        std::vector<uint16_t> fresh;
        // Nothing past a ring's worth from the reaper can be the driver's: it has not got
        // those descriptors back (what lies there is the device's, from the lap before).
        while (avail_ < reap_ + s_.size && available(flags_at(pos_of(avail_)), wrap_of(avail_))) {
            chain c = walk();
            c.published = true;
            fresh.push_back(c.head);
            order_.push_back(c.head);
            owed_.push_back(c.head);
            held_[c.head] = c;
        }
        return fresh;
    }

    // Whether the driver owes a notification for the descriptors made available from `from`
    // up to the avail position: walked one by one, as the spec reads.
    bool notify_needed(uint64_t from) const {
        const uint16_t flags = device_flags() & 3;
        if (flags == 1) return false;
        if (flags != 2 || !s_.event_idx) return true;
        if ((device_off_wrap() & 0x7fff) >= s_.size) return true;  // names no descriptor: notify
        for (uint64_t t = from; t < avail_; ++t)
            if (off_wrap_of(t) == device_off_wrap()) return true;
        return false;
    }

    // ---- device writes ----
    // Positions, as linear counts: the device's used position, the reaper's (never ahead of
    // the device's), and the end of what this side has taken.
    uint64_t used_total() const { return used_; }
    uint64_t reap_total() const { return reap_; }
    // Descriptors the device has taken and not yet passed with its used position: it may
    // write there freely.
    uint64_t window() const { return used_ < avail_ ? avail_ - used_ : 0; }

    // A descriptor written as the device likes, at linear position `at`. The owner keeps it
    // off lists the driver added and this side has not taken yet (a write there would change
    // what the driver posted and blame the driver for it).
    void put_raw(uint64_t at, uint16_t id, uint32_t len, uint16_t flags) {
        FUZZ_CHECK(at >= reap_ && at < reap_ + s_.size, "harness: a device write outside the ring's lap");
        uint8_t* d = ring_ + 16ull * pos_of(at);
        st32(d + 8, len);
        st16(d + 12, id);
        st16(d + 14, flags);
    }
    uint16_t used_bits(uint64_t at) const { return wrap_of(at) ? uint16_t(f_avail | f_used) : uint16_t(0); }
    void skip(uint64_t n) { used_ += n; }

    // The lists the device holds and has not given back, in the order it took them.
    const std::deque<uint16_t>& owed() const { return owed_; }

    // Honest: the list with this id, with `len`, then skip its descriptors. In order, this
    // gives back the run up to it (its id last). False when the device may not write.
    bool give_back(uint16_t id, uint32_t len) {
        if (!window()) return false;
        uint64_t n = 0;
        for (auto it = owed_.begin(); it != owed_.end();) {
            const bool last = *it == id;
            if (s_.in_order || last) {
                n += held_.at(*it).descs.size();
                it = owed_.erase(it);
            } else {
                ++it;
            }
            if (last) break;
        }
        put_raw(used_, id, len, uint16_t(used_bits(used_) | f_write));
        skip(n);
        return true;
    }

    // ---- the driver's reaper, predicted ----
    struct reaped {
        uint16_t id;
        uint32_t len;
    };
    struct prediction {
        bool broken = false;
        bool empty = false;
        reaped item{};
    };

    // What one pop() must return, and this side updated to match.
    prediction reap() {
        prediction p;
        if (broken_) {
            p.broken = true;
            return p;
        }
        if (!run_.empty()) {
            p.item = run_.front();
            run_.pop_front();
            forget(p.item.id);
            return p;
        }
        const uint8_t* d = ring_ + 16ull * pos_of(reap_);
        if (!used(ld16(d + 14), wrap_of(reap_))) {
            p.empty = true;
            return p;
        }
        const uint32_t id = ld16(d + 12);
        uint32_t len = ld32(d + 8);
        auto it = held_.find(uint16_t(id));
        // Nothing in flight, an id past the ring or not in flight, a list the device cannot
        // have seen, or a length past the whole list: lies.
        bool lie = held_.empty() && unpublished_ == 0;
        lie = lie || id >= s_.size || it == held_.end();
        if (!lie) {
            const chain& c = it->second;
            const uint64_t readable = c.readable > 0xffffffffu ? 0xffffffffu : c.readable;
            if (len > c.writable) {
                if (uint64_t(len) > c.writable + readable)
                    lie = true;
                else
                    len = c.writable;
            }
        }
        if (lie) {
            broken_ = true;
            p.broken = true;
            return p;
        }
        uint32_t n = 0;
        if (s_.in_order) {
            // Everything made available before it completes too, whole.
            for (;;) {
                const uint16_t i = order_.front();
                const chain& c = held_.at(i);
                n += uint32_t(c.descs.size());
                if (i == id) {
                    run_.push_back(reaped{i, len});
                    break;
                }
                run_.push_back(reaped{i, c.writable});
                order_.pop_front();
            }
            order_.pop_front();
            p.item = run_.front();
            run_.pop_front();
        } else {
            n = uint32_t(it->second.descs.size());
            for (auto o = order_.begin(); o != order_.end(); ++o)
                if (*o == id) {
                    order_.erase(o);
                    break;
                }
            p.item = reaped{uint16_t(id), len};
        }
        reap_ += n;
        // The device's next used descriptor goes no earlier than where the driver will look:
        // positions the driver has passed are its to fill again.
        if (used_ < reap_) used_ = reap_;
        forget(p.item.id);
        return p;
    }

    // The driver added a list it has not made available yet (its first descriptor's flags
    // are held back): it counts as in flight for the reaper.
    void note_unpublished(int delta) { unpublished_ += delta; }

private:
    void forget(uint16_t id) {
        held_.erase(id);
        for (auto it = owed_.begin(); it != owed_.end(); ++it)
            if (*it == id) {
                owed_.erase(it);
                break;
            }
    }

    chain walk() {
        chain c;
        uint64_t at = avail_;
        bool seen_write = false;
        auto take = [&](uint64_t addr, uint32_t len, bool w) { take_checked_buffer(mem_, c, seen_write, addr, len, w); };
        for (uint32_t n = 0;; ++n) {
            FUZZ_CHECK(n < s_.size, "list longer than the ring (checklist 42)");
            FUZZ_CHECK(at < reap_ + s_.size, "a list runs into descriptors the driver has not got back");
            const uint16_t pos = pos_of(at);
            const uint8_t* d = ring_ + 16ull * pos;
            const uint16_t flags = ld16(d + 14);
            FUZZ_CHECK(available(flags, wrap_of(at)), "descriptor %u of a list not available for its lap (flags %#x)", pos,
                       flags);
            FUZZ_CHECK(!(flags & ~(f_next | f_write | f_indirect | f_avail | f_used)), "descriptor flags %#x", flags);
            c.descs.push_back(pos);
            ++at;
            const uint64_t addr = ld64(d);
            const uint32_t len = ld32(d + 8);
            if (flags & f_indirect) {
                FUZZ_CHECK(s_.indirect, "INDIRECT without the feature (checklist 43)");
                FUZZ_CHECK(n == 0 && !(flags & f_next), "INDIRECT must be the whole list, never with NEXT");
                FUZZ_CHECK(!(flags & f_write), "WRITE on an indirect descriptor");
                FUZZ_CHECK(len > 0 && len % 16 == 0, "indirect table of %u bytes", len);
                const uint8_t* t = mem_.translate(addr, len);
                FUZZ_CHECK(t, "indirect table outside shared memory");
                c.indirect = true;
                c.table_bus = addr;
                c.table_bytes = len;
                for (uint32_t i = 0; i < len / 16; ++i) {
                    const uint16_t f = ld16(t + 16 * i + 14);
                    FUZZ_CHECK(!(f & ~f_write), "indirect entry flags %#x (only WRITE)", f);
                    take(ld64(t + 16 * i), ld32(t + 16 * i + 8), f & f_write);
                }
                c.head = ld16(d + 12);
                break;
            }
            take(addr, len, flags & f_write);
            if (!(flags & f_next)) {
                c.head = ld16(d + 12);  // the buffer id is in the last descriptor
                break;
            }
        }
        FUZZ_CHECK(c.readable + c.writable <= (uint64_t(1) << 32), "list longer than 4 GiB (checklist 42)");
        FUZZ_CHECK(c.head < s_.size, "buffer id %u past the ring", c.head);
        FUZZ_CHECK(!held_.count(c.head), "buffer id %u made available again while in flight", c.head);
        // Nothing of it may belong to a list still in flight, or to the ring's own parts.
        check_chain_apart(c, held_);
        auto apart_from_ring = [&](uint64_t bus, uint64_t len) {
            return !ranges_overlap(bus, len, s_.desc, 16ull * s_.size) && !ranges_overlap(bus, len, s_.driver_area, 4) &&
                   !ranges_overlap(bus, len, s_.device_area, 4);
        };
        for (const buffer& b : c.bufs) FUZZ_CHECK(apart_from_ring(b.bus, b.len), "a buffer overlaps the ring's parts");
        if (c.indirect) FUZZ_CHECK(apart_from_ring(c.table_bus, c.table_bytes), "an indirect table overlaps the ring's parts");
        avail_ = at;
        return c;
    }

    const dma_space& mem_;
    packed_setup s_;
    uint8_t* ring_ = nullptr;
    uint8_t* drv_ = nullptr;
    uint8_t* dev_ = nullptr;
    std::map<uint16_t, chain> held_;  // by buffer id
    std::deque<uint16_t> order_;      // ids in the order made available
    std::deque<uint16_t> owed_;       // ids the device holds and has not given back
    std::deque<reaped> run_;          // in order: the rest of a run the reaper hands out
    uint64_t avail_ = 0;              // descriptors taken
    uint64_t used_ = 0;               // the device's used position
    uint64_t reap_ = 0;               // the driver's reaper's position
    int unpublished_ = 0;
    bool broken_ = false;
};

}  // namespace fuzz
