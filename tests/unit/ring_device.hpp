// The device's view of a split ring, for ring tests: it reads the driver's memory only
// through bus addresses (translated back here), walks chains, and writes used entries.
#pragma once
#include <stdlib.h>
#include <string.h>

#include <vector>

#include <catch2/catch.hpp>
#include <vscsi/ring.hpp>
#include "../le_bytes.hpp"

namespace ringtest {

struct memory {
    uint8_t* virt;
    size_t bytes;
    uint64_t bus;
    explicit memory(size_t n, uint64_t bus_addr = 0x5000000000ull)
        : bytes((n + 4095) & ~size_t(4095)), bus(bus_addr) {
        virt = static_cast<uint8_t*>(aligned_alloc(4096, bytes));
        memset(virt, 0xcc, bytes);
    }
    ~memory() { free(virt); }
    memory(const memory&) = delete;
    memory& operator=(const memory&) = delete;
    vscsi::dma_region region() const { return vscsi::dma_region{virt, bus, bytes}; }
    // The device side: a bus address must land inside the region.
    uint8_t* at(uint64_t b, size_t len) const {
        REQUIRE(b >= bus);
        REQUIRE(b - bus + len <= bytes);
        return virt + (b - bus);
    }
};

// The ring's private shadow: ordinary memory the device never sees, of exactly the size
// asked for (rounded to a cache line), filled with garbage the ring must not rely on.
struct shadow {
    uint8_t* virt;
    size_t bytes;
    explicit shadow(size_t n) : bytes((n + 63) & ~size_t(63)) {
        virt = static_cast<uint8_t*>(aligned_alloc(vscsi::private_region_align, bytes ? bytes : 64));
        memset(virt, 0xdd, bytes);
    }
    explicit shadow(const vscsi::ring_config& c) : shadow(vscsi::ring_private_bytes(c)) {}
    ~shadow() { free(virt); }
    shadow(const shadow&) = delete;
    shadow& operator=(const shadow&) = delete;
    vscsi::private_region region() const { return vscsi::private_region{virt, bytes}; }
};

struct seen_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct seen_chain {
    uint16_t head;
    bool indirect;
    std::vector<seen_desc> descs;  // the data descriptors, in chain order
    uint32_t writable;
};

using namespace le_bytes;

template <class Ring>
struct device {
    const memory& mem;
    Ring& ring;
    uint16_t last_avail = 0;
    uint16_t used_idx = 0;
    device(const memory& m, Ring& r) : mem(m), ring(r) {}

    uint32_t size() const { return ring.size(); }
    uint16_t avail_idx() const { return ld16(mem.at(ring.avail_bus() + 2, 2)); }
    uint16_t avail_flags() const { return ld16(mem.at(ring.avail_bus(), 2)); }
    uint16_t used_event() const { return ld16(mem.at(ring.avail_bus() + 4 + 2 * size(), 2)); }
    void set_avail_event(uint16_t v) { st16(mem.at(ring.used_bus() + 4 + 8 * size(), 2), v); }
    void set_used_flags(uint16_t v) { st16(mem.at(ring.used_bus(), 2), v); }
    bool pending() const { return avail_idx() != last_avail; }

    seen_desc read_desc(uint64_t table, uint32_t i) const {
        const uint8_t* d = mem.at(table + 16ull * i, 16);
        return seen_desc{ld64(d), ld32(d + 8), ld16(d + 12), ld16(d + 14)};
    }

    seen_chain take() {
        REQUIRE(pending());
        const uint16_t head = ld16(mem.at(ring.avail_bus() + 4 + 2 * (last_avail % size()), 2));
        ++last_avail;
        REQUIRE(head < size());
        seen_chain c{head, false, {}, 0};
        seen_desc d = read_desc(ring.desc_bus(), head);
        if (d.flags & vscsi::vring::desc_f_indirect) {
            REQUIRE((d.flags & vscsi::vring::desc_f_next) == 0);  // checklist 43
            REQUIRE(d.len % 16 == 0);
            c.indirect = true;
            const uint32_t n = d.len / 16;
            uint32_t i = 0;
            for (uint32_t k = 0; k < n; ++k) {
                seen_desc e = read_desc(d.addr, i);
                REQUIRE((e.flags & vscsi::vring::desc_f_indirect) == 0);  // no nesting
                c.descs.push_back(e);
                if (!(e.flags & vscsi::vring::desc_f_next)) break;
                i = e.next;
                REQUIRE(i < n);
            }
        } else {
            uint16_t i = head;
            for (uint32_t k = 0; k <= size(); ++k) {
                REQUIRE(k < size());  // no loops (checklist 42)
                seen_desc e = read_desc(ring.desc_bus(), i);
                c.descs.push_back(e);
                if (!(e.flags & vscsi::vring::desc_f_next)) break;
                i = e.next;
                REQUIRE(i < size());
            }
        }
        bool seen_write = false;
        for (const seen_desc& e : c.descs) {
            const bool w = e.flags & vscsi::vring::desc_f_write;
            REQUIRE((!seen_write || w));  // readable never after writable (checklist 41)
            seen_write |= w;
            if (w) c.writable += e.len;
        }
        return c;
    }

    // Publish one used entry (or a raw one, to lie).
    void complete_raw(uint32_t id, uint32_t len) {
        uint8_t* e = mem.at(ring.used_bus() + 4 + 8 * (used_idx % size()), 8);
        st32(e, id);
        st32(e + 4, len);
        ++used_idx;
        __atomic_thread_fence(__ATOMIC_RELEASE);
        st16(mem.at(ring.used_bus() + 2, 2), used_idx);
    }
    void complete(const seen_chain& c) { complete_raw(c.head, c.writable); }
    void set_used_idx(uint16_t v) {
        used_idx = v;
        st16(mem.at(ring.used_bus() + 2, 2), v);
    }
};

}  // namespace ringtest
