// The device's view of a packed ring, for ring tests, written from the spec's "Packed
// Virtqueues" section: it reads the driver's descriptors only through bus addresses, takes
// chains in ring order when their head's AVAIL/USED flags say available for its wrap counter,
// and writes used descriptors at its own used position, skipping by each buffer's length.
#pragma once
#include <stdlib.h>
#include <string.h>

#include <vector>

#include <catch2/catch.hpp>
#include <vscsi/packed_ring.hpp>
#include "ring_device.hpp"

namespace ringtest {

struct packed_chain {
    uint16_t id;
    uint16_t ndesc;      // ring descriptors it took
    uint16_t head;       // ring position of its first descriptor
    bool indirect;
    std::vector<seen_desc> descs;  // the data descriptors, in chain order (next: unused)
    uint32_t writable;
};

template <class Ring>
struct packed_device {
    static constexpr uint16_t f_next = 1, f_write = 2, f_indirect = 4, f_avail = 1u << 7, f_used = 1u << 15;
    const memory& mem;
    Ring& ring;
    uint16_t avail_pos = 0;  // the next descriptor to read, and the wrap counter it needs
    bool avail_wrap = true;
    uint16_t used_pos = 0;   // where the next used descriptor goes
    bool used_wrap = true;
    packed_device(const memory& m, Ring& r) : mem(m), ring(r) {}

    uint32_t size() const { return ring.size(); }
    uint8_t* desc(uint32_t i) const { return mem.at(ring.desc_bus() + 16ull * i, 16); }
    uint16_t flags_at(uint32_t i) const { return ld16(desc(i) + 14); }
    uint16_t id_at(uint32_t i) const { return ld16(desc(i) + 12); }
    static bool available(uint16_t flags, bool wrap) {
        return bool(flags & f_avail) == wrap && bool(flags & f_used) != wrap;
    }
    bool pending() const { return available(flags_at(avail_pos), avail_wrap); }

    // The driver's event structure (Driver Area) and the device's (Device Area).
    uint16_t driver_off_wrap() const { return ld16(mem.at(ring.driver_area_bus(), 4)); }
    uint16_t driver_flags() const { return ld16(mem.at(ring.driver_area_bus(), 4) + 2); }
    void set_device_event(uint16_t off_wrap, uint16_t flags) {
        uint8_t* p = mem.at(ring.device_area_bus(), 4);
        st16(p, off_wrap);
        st16(p + 2, flags);
    }

    static void step(uint16_t& pos, bool& wrap, uint32_t n, uint32_t size) {
        for (uint32_t i = 0; i < n; ++i)
            if (++pos == size) {
                pos = 0;
                wrap = !wrap;
            }
    }

    packed_chain take() {
        REQUIRE(pending());
        packed_chain c{0, 0, avail_pos, false, {}, 0};
        uint16_t pos = avail_pos;
        bool wrap = avail_wrap;
        for (uint32_t k = 0;; ++k) {
            REQUIRE(k < size());  // no list longer than the ring
            const uint8_t* d = desc(pos);
            const uint16_t flags = ld16(d + 14);
            // Every descriptor of the list is marked available for the lap it lies in.
            REQUIRE(available(flags, wrap));
            const seen_desc s{ld64(d), ld32(d + 8), flags, 0};
            ++c.ndesc;
            if (flags & f_indirect) {
                REQUIRE(k == 0);
                REQUIRE((flags & f_next) == 0);
                REQUIRE(s.len % 16 == 0);
                REQUIRE(s.len > 0);
                c.indirect = true;
                c.id = ld16(d + 12);
                for (uint32_t i = 0; i < s.len / 16; ++i) {
                    const uint8_t* e = mem.at(s.addr + 16ull * i, 16);
                    const uint16_t ef = ld16(e + 14);
                    REQUIRE((ef & ~f_write) == 0);  // only WRITE in a table
                    c.descs.push_back(seen_desc{ld64(e), ld32(e + 8), ef, 0});
                }
                step(pos, wrap, 1, size());
                break;
            }
            c.descs.push_back(s);
            step(pos, wrap, 1, size());
            if (!(flags & f_next)) {
                c.id = ld16(d + 12);  // the buffer id is in the last descriptor
                break;
            }
        }
        bool seen_write = false;
        for (const seen_desc& e : c.descs) {
            const bool w = e.flags & f_write;
            REQUIRE((!seen_write || w));  // readable never after writable
            seen_write |= w;
            if (w) c.writable += e.len;
        }
        avail_pos = pos;
        avail_wrap = wrap;
        return c;
    }

    // Write one used descriptor (or a raw one, to lie) and skip `skip` descriptors.
    void use_raw(uint16_t id, uint32_t len, uint32_t skip, uint16_t extra_flags = 0) {
        uint8_t* d = desc(used_pos);
        st32(d + 8, len);
        st16(d + 12, id);
        __atomic_thread_fence(__ATOMIC_RELEASE);
        st16(d + 14, uint16_t((used_wrap ? f_avail | f_used : 0) | extra_flags));
        step(used_pos, used_wrap, skip, size());
    }
    void complete(const packed_chain& c) { use_raw(c.id, c.writable, c.ndesc, f_write); }
};

}  // namespace ringtest
