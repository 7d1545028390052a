// The split virtqueue, driver side, against a device that sees memory only by bus address.
#include <catch2/catch.hpp>

#include <sys/mman.h>

#include <deque>
#include <random>

#include "ring_device.hpp"
#include <vscsi/wire.hpp>
#include <algorithm>

extern "C" {
size_t uapi_vring_size(unsigned int num, unsigned long align);
void uapi_vring_offsets(unsigned int num, unsigned long align, size_t* avail, size_t* used, size_t* used_event,
                        size_t* avail_event);
size_t uapi_sizeof_desc(void);
size_t uapi_sizeof_used_elem(void);
size_t uapi_desc_offset_len(void);
size_t uapi_desc_offset_flags(void);
size_t uapi_desc_offset_next(void);
int uapi_need_event(unsigned short e, unsigned short n, unsigned short o);
unsigned uapi_ring_flags(int which);
}

using namespace vscsi;
using ring_t = split_ring<hosted_platform>;
using ringtest::memory;

namespace {
ring_config cfg(uint32_t size, bool legacy = false, bool event_idx = false, bool indirect = false,
                uint16_t tables = 0, uint16_t tmax = 0) {
    ring_config c;
    c.size = size;
    c.legacy = legacy;
    c.event_idx = event_idx;
    c.indirect = indirect;
    c.indirect_tables = tables;
    c.indirect_max = tmax;
    return c;
}
}  // namespace

TEST_CASE("wire structs and constants match <linux/virtio_ring.h>", "[ring][uapi]") {
    CHECK(sizeof(vring::desc) == uapi_sizeof_desc());
    CHECK(sizeof(vring::used_elem) == uapi_sizeof_used_elem());
    CHECK(offsetof(vring::desc, len) == uapi_desc_offset_len());
    CHECK(offsetof(vring::desc, flags) == uapi_desc_offset_flags());
    CHECK(offsetof(vring::desc, next) == uapi_desc_offset_next());
    CHECK(vring::desc_f_next == uapi_ring_flags(0));
    CHECK(vring::desc_f_write == uapi_ring_flags(1));
    CHECK(vring::desc_f_indirect == uapi_ring_flags(2));
    CHECK(vring::used_f_no_notify == uapi_ring_flags(3));
    CHECK(vring::avail_f_no_interrupt == uapi_ring_flags(4));
    CHECK(feature::ring_indirect_desc == uapi_ring_flags(5));
    CHECK(feature::ring_event_idx == uapi_ring_flags(6));
}

TEST_CASE("layout matches the kernel's vring_init for legacy (4096) and modern (4) alignment", "[ring][uapi]") {
    for (uint32_t size = 1; size <= ring_max_size; size *= 2) {
        for (bool legacy : {true, false}) {
            const unsigned long align = legacy ? 4096 : 4;
            memory m(ring_region_bytes(cfg(size, legacy)));
            ringtest::shadow sh(cfg(size, legacy));
            ring_t r;
            REQUIRE(r.init(cfg(size, legacy), m.region(), sh.region()) == status::ok);
            size_t avail, used, used_event, avail_event;
            uapi_vring_offsets(size, align, &avail, &used, &used_event, &avail_event);
            INFO("size " << size << " legacy " << legacy);
            CHECK(r.desc_bus() == m.bus);
            CHECK(r.avail_bus() - m.bus == avail);
            CHECK(r.used_bus() - m.bus == used);
            CHECK(ring_region_bytes(cfg(size, legacy)) >= uapi_vring_size(size, align));
            if (legacy) CHECK(r.used_bus() % 4096 == 0);
            (void)used_event;
            (void)avail_event;
        }
    }
}

TEST_CASE("vring_need_event matches the kernel's across the 16-bit wrap", "[ring][event_idx]") {
    // Hand-worked cases: notify iff event_idx lies in [old, new).
    CHECK(vring::need_event(5, 6, 5));
    CHECK(!vring::need_event(6, 6, 5));
    CHECK(vring::need_event(0xffff, 1, 0xfffe));  // wrap: event at 0xffff in [0xfffe, 1)
    CHECK(vring::need_event(0, 1, 0xfffe));
    CHECK(!vring::need_event(1, 1, 0xfffe));
    CHECK(!vring::need_event(10, 5, 5));  // nothing added
    std::mt19937 rng(7);
    for (int i = 0; i < 200000; ++i) {
        const uint16_t e = uint16_t(rng()), o = uint16_t(rng());
        const uint16_t n = uint16_t(o + (rng() % 512));
        REQUIRE(vring::need_event(e, n, o) == bool(uapi_need_event(e, n, o)));
    }
}

TEST_CASE("every power-of-two size from 1 to 32768 round-trips", "[ring]") {
    for (uint32_t size = 1; size <= ring_max_size; size *= 2) {
        for (bool ind : {false, true}) {
            const ring_config c = ind ? cfg(size, false, false, true, uint16_t(size), 4) : cfg(size);
            memory m(ring_region_bytes(c) + 8192);
            ringtest::shadow sh(c);
            ring_t r;
            REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
            ringtest::device<ring_t> d(m, r);
            const uint64_t buf = m.bus + ring_region_bytes(c);
            const sg_entry out{buf, 64}, in{buf + 4096, 512};
            const uint32_t rounds = size < 8 ? 3 : 2;
            for (uint32_t k = 0; k < rounds * size; ++k) {
                // Size-1 rings hold a single descriptor: one device-writable buffer.
                const status s = size == 1 ? r.add(nullptr, 0, &in, 1, k) : r.add(&out, 1, &in, 1, k);
                REQUIRE(s == status::ok);
                CHECK(r.publish());
                ringtest::seen_chain ch = d.take();
                CHECK(ch.indirect == (ind && size > 1));
                d.complete(ch);
                auto p = r.pop();
                REQUIRE(p.st == status::ok);
                CHECK(p.value.token == k);
                CHECK(p.value.len == 512);
                CHECK(r.pop().st == status::empty);
            }
            CHECK(r.in_flight() == 0);
            CHECK(r.free_descriptors() == size);
        }
    }
}

TEST_CASE("16-bit indices wrap cleanly over 200000 requests", "[ring]") {
    for (bool event_idx : {false, true}) {
        const ring_config c = cfg(4, false, event_idx);
        memory m(ring_region_bytes(c) + 4096);
        ringtest::shadow sh(c);
        ring_t r;
        REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
        ringtest::device<ring_t> d(m, r);
        const sg_entry in{m.bus + ring_region_bytes(c), 16};
        std::mt19937 rng(1);
        std::deque<uint32_t> expect;
        uint32_t next_token = 0, popped = 0;
        while (popped < 200000) {
            const uint32_t batch = 1 + rng() % 4;
            for (uint32_t i = 0; i < batch && r.can_add(0, 1); ++i) {
                REQUIRE(r.add(nullptr, 0, &in, 1, next_token) == status::ok);
                expect.push_back(next_token++);
            }
            r.publish();
            while (d.pending()) d.complete(d.take());
            for (;;) {
                auto p = r.pop();
                if (p.st == status::empty) break;
                REQUIRE(p.st == status::ok);
                REQUIRE(p.value.token == expect.front());
                expect.pop_front();
                ++popped;
            }
        }
        CHECK(next_token > 65536 * 3);
        CHECK(!r.broken());
    }
}

TEST_CASE("reap: a ring latched broken by on_used hands over nothing more of the batch", "[ring]") {
    const ring_config c = cfg(8);
    memory m(ring_region_bytes(c) + 4096);
    ringtest::shadow sh(c);
    ring_t r;
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    ringtest::device<ring_t> d(m, r);
    const sg_entry in{m.bus + ring_region_bytes(c), 16};
    for (uint32_t t = 0; t < 3; ++t) REQUIRE(r.add(nullptr, 0, &in, 1, 40 + t) == status::ok);
    r.publish();
    while (d.pending()) d.complete(d.take());
    std::vector<uint32_t> got;
    const auto res = r.reap([&](const used_completion& u) {
        got.push_back(u.token);
        r.mark_broken();
    });
    CHECK(res.st == status::device_broken);
    CHECK(res.value == 1);
    CHECK(got == std::vector<uint32_t>{40});
}

TEST_CASE("direct chains: readable first, WRITE flags, NEXT linkage, addresses", "[ring]") {
    const ring_config c = cfg(16);
    memory m(ring_region_bytes(c));
    ringtest::shadow sh(c);
    ring_t r;
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    ringtest::device<ring_t> d(m, r);
    const sg_entry out[2] = {{0x1000, 19 + 32}, {0x2000, 4096}};
    const sg_entry in[3] = {{0x3000, 108}, {0x4000, 512}, {0x5000, 1024}};
    REQUIRE(r.add(out, 2, in, 3, 99) == status::ok);
    CHECK(r.free_descriptors() == 11);
    r.publish();
    ringtest::seen_chain ch = d.take();
    REQUIRE(ch.descs.size() == 5);
    CHECK(!ch.indirect);
    const uint64_t addrs[5] = {0x1000, 0x2000, 0x3000, 0x4000, 0x5000};
    const uint32_t lens[5] = {51, 4096, 108, 512, 1024};
    for (int i = 0; i < 5; ++i) {
        CHECK(ch.descs[i].addr == addrs[i]);
        CHECK(ch.descs[i].len == lens[i]);
        CHECK(bool(ch.descs[i].flags & vring::desc_f_write) == (i >= 2));
        CHECK(bool(ch.descs[i].flags & vring::desc_f_next) == (i < 4));
    }
    CHECK(ch.writable == 108 + 512 + 1024);
    d.complete_raw(ch.head, 700);
    auto p = r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.token == 99);
    CHECK(p.value.len == 700);
    CHECK(r.free_descriptors() == 16);
}

TEST_CASE("a chain posted again unchanged leaves the descriptor table unwritten", "[ring]") {
    // 256 entries of 16 bytes: the descriptor table is exactly the region's first page, which
    // is made read-only once the chain has been posted and completed; posting the same chain
    // again must not store to it (a store would fault), and the device still reads it whole.
    const ring_config c = cfg(256);
    memory m(ring_region_bytes(c));
    ringtest::shadow sh(c);
    ring_t r;
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    REQUIRE(r.desc_bus() == m.bus);
    ringtest::device<ring_t> d(m, r);
    const sg_entry out{0x1000, 51};
    const sg_entry in{0x3000, 108};
    for (int round = 0; round < 3; ++round) {
        if (round == 1) REQUIRE(mprotect(m.virt, 4096, PROT_READ) == 0);
        REQUIRE(r.add(&out, 1, &in, 1, uint32_t(round)) == status::ok);
        r.publish();
        ringtest::seen_chain ch = d.take();
        REQUIRE(ch.descs.size() == 2);
        CHECK(ch.descs[0].addr == 0x1000);
        CHECK(ch.descs[1].len == 108);
        CHECK(ch.descs[1].flags == vring::desc_f_write);
        d.complete_raw(ch.head, 108);
        auto p = r.pop();
        REQUIRE(p.st == status::ok);
        CHECK(p.value.token == uint32_t(round));
    }
    REQUIRE(mprotect(m.virt, 4096, PROT_READ | PROT_WRITE) == 0);
    // A chain that differs is written in full.
    const sg_entry in2{0x7000, 4096};
    REQUIRE(r.add(&out, 1, &in2, 1, 9) == status::ok);
    r.publish();
    ringtest::seen_chain ch = d.take();
    REQUIRE(ch.descs.size() == 2);
    CHECK(ch.descs[1].addr == 0x7000);
    CHECK(ch.descs[1].len == 4096);
}

TEST_CASE("indirect chains use one ring descriptor and a preallocated table", "[ring][indirect]") {
    const ring_config c = cfg(8, false, false, true, 2, 8);
    memory m(ring_region_bytes(c));
    ringtest::shadow sh(c);
    ring_t r;
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    ringtest::device<ring_t> d(m, r);
    const sg_entry out[2] = {{0x1000, 51}, {0x2000, 512}};
    const sg_entry in[2] = {{0x3000, 108}, {0x4000, 512}};
    REQUIRE(r.add(out, 2, in, 2, 1) == status::ok);
    REQUIRE(r.add(out, 1, in, 1, 2) == status::ok);
    CHECK(r.free_descriptors() == 6);
    // Tables exhausted: the third chain goes direct.
    REQUIRE(r.add(out, 1, in, 2, 3) == status::ok);
    CHECK(r.free_descriptors() == 3);
    r.publish();
    ringtest::seen_chain a = d.take();
    CHECK(a.indirect);
    REQUIRE(a.descs.size() == 4);
    CHECK(a.descs[1].addr == 0x2000);
    CHECK((a.descs[2].flags & vring::desc_f_write) != 0);
    // The table itself lives in the region, so its bus address translates.
    ringtest::seen_chain b = d.take();
    CHECK(b.indirect);
    ringtest::seen_chain c3 = d.take();
    CHECK(!c3.indirect);
    CHECK(c3.descs.size() == 3);
    for (auto* ch : {&a, &b, &c3}) d.complete(*ch);
    for (uint32_t t : {1u, 2u, 3u}) {
        auto p = r.pop();
        REQUIRE(p.st == status::ok);
        CHECK(p.value.token == t);
    }
    CHECK(r.free_descriptors() == 8);
    // A chain longer than indirect_max goes direct; one longer than the ring is refused.
    sg_entry many[9];
    for (int i = 0; i < 9; ++i) many[i] = sg_entry{0x1000u + 0x1000u * i, 16};
    CHECK(r.add(many, 8, nullptr, 0, 4) == status::ok);
    CHECK(r.free_descriptors() == 7);  // indirect (8 <= indirect_max)
    CHECK(r.add(many, 9, nullptr, 0, 5) == status::invalid_argument);
}

TEST_CASE("a full ring says busy; completions make room", "[ring]") {
    const ring_config c = cfg(8);
    memory m(ring_region_bytes(c));
    ringtest::shadow sh(c);
    ring_t r;
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    ringtest::device<ring_t> d(m, r);
    const sg_entry s3[3] = {{0x1000, 1}, {0x2000, 1}, {0x3000, 1}};
    CHECK(r.add(s3, 1, s3 + 1, 2, 0) == status::ok);
    CHECK(r.add(s3, 1, s3 + 1, 2, 1) == status::ok);
    CHECK(!r.can_add(1, 2));
    CHECK(r.add(s3, 1, s3 + 1, 2, 2) == status::busy);
    CHECK(r.can_add(1, 1));
    CHECK(r.add(s3, 1, s3 + 1, 1, 3) == status::ok);
    CHECK(r.free_descriptors() == 0);
    CHECK(r.add(s3, 1, nullptr, 0, 4) == status::busy);
    r.publish();
    d.complete(d.take());
    REQUIRE(r.pop().st == status::ok);
    CHECK(r.add(s3, 1, s3 + 1, 2, 5) == status::ok);
    CHECK(r.in_flight() == 3);
}

TEST_CASE("argument checks", "[ring]") {
    ring_t r;
    memory m(1 << 20);
    ringtest::shadow sh(1 << 16);
    const private_region p = sh.region();
    CHECK(r.init(cfg(0), m.region(), p) == status::invalid_argument);
    CHECK(r.init(cfg(3), m.region(), p) == status::invalid_argument);
    CHECK(r.init(cfg(65536), m.region(), p) == status::invalid_argument);
    CHECK(ring_region_bytes(cfg(3)) == 0);
    CHECK(ring_private_bytes(cfg(3)) == 0);
    CHECK(r.init(cfg(8, false, false, true, 9, 4), m.region(), p) == status::invalid_argument);  // tables > size
    CHECK(r.init(cfg(8, false, false, false, 2, 4), m.region(), p) == status::invalid_argument);
    dma_region small = m.region();
    small.bytes = ring_region_bytes(cfg(256)) - 1;
    CHECK(r.init(cfg(256), small, p) == status::too_small);
    dma_region odd = m.region();
    odd.virt = m.virt + 8;
    odd.bus += 8;
    CHECK(r.init(cfg(8), odd, p) == status::invalid_argument);
    CHECK(r.init(cfg(8, true), dma_region{m.virt + 16, m.bus + 16, m.bytes - 16}, p) == status::invalid_argument);
    REQUIRE(r.init(cfg(8), m.region(), p) == status::ok);
    const sg_entry zero{0x1000, 0};
    CHECK(r.add(&zero, 1, nullptr, 0, 0) == status::invalid_argument);
    CHECK(r.add(nullptr, 0, nullptr, 0, 0) == status::invalid_argument);
    const sg_entry huge[2] = {{0x1000, 0xffffffffu}, {0x2000, 2}};
    CHECK(r.add(huge, 2, nullptr, 0, 0) == status::invalid_argument);  // more than 4 GiB
    CHECK(r.add(nullptr, 1, nullptr, 0, 0) == status::invalid_argument);
    CHECK(r.in_flight() == 0);
    CHECK(!r.publish());  // nothing added: no notification
}

TEST_CASE("the private shadow: present, large enough, aligned, out of the device's reach", "[ring][private]") {
    const ring_config c = cfg(64, false, true, true, 16, 8);
    const size_t dev_bytes = ring_region_bytes(c);
    const size_t need = ring_private_bytes(c);
    REQUIRE(need > 0);
    CHECK(need % private_region_align == 0);
    // Device-visible bytes are the rings and indirect tables only: the split added nothing.
    CHECK(dev_bytes == align_up(align_up(vring::desc_bytes(64) + vring::avail_bytes(64), 4) + vring::used_bytes(64), 16) +
                           16 * 8 * 16);
    memory m(dev_bytes + need + 4096);
    ringtest::shadow sh(need);
    ring_t r;
    CHECK(r.init(c, m.region(), private_region{nullptr, need}) == status::invalid_argument);
    CHECK(r.init(c, m.region(), private_region{sh.virt, need - 1}) == status::too_small);
    ringtest::shadow big(need + 64);
    CHECK(r.init(c, m.region(), private_region{big.virt + 8, need}) == status::invalid_argument);  // not on a line
    // Inside the DMA region, straddling its start or its end, or around it: refused.
    uint8_t* const d = m.virt;
    CHECK(r.init(c, dma_region{d, m.bus, dev_bytes}, private_region{d + 4096 * ((dev_bytes - 1) / 4096), need}) ==
          status::invalid_argument);
    CHECK(r.init(c, dma_region{d + 4096, m.bus, dev_bytes}, private_region{d + 4096 - 64, need}) ==
          status::invalid_argument);
    CHECK(r.init(c, dma_region{d, m.bus, dev_bytes}, private_region{d + (dev_bytes & ~size_t(63)), need}) ==
          status::invalid_argument);
    CHECK(r.init(c, dma_region{d + 4096, m.bus, 4096 * ((dev_bytes + 4095) / 4096)},
                 private_region{d, m.bytes}) == status::invalid_argument);
    // Right after it, or right before it: fine, they share no byte.
    const size_t dev_end = align_up(dev_bytes, 64);
    CHECK(r.init(c, dma_region{d, m.bus, dev_end}, private_region{d + dev_end, need}) == status::ok);
    CHECK(r.init(c, dma_region{d + 4096 * ((need + 4095) / 4096), m.bus, dev_bytes},
                 private_region{d + 4096 * ((need + 4095) / 4096) - need, need}) == status::ok);
    // The shadow is the ring's: what it posted survives the device rewriting every byte it
    // may write, and the lie that follows is caught against the shadow.
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    const sg_entry out{m.bus + 0x80000, 16}, in{m.bus + 0x81000, 100};
    for (uint32_t t = 0; t < 3; ++t) REQUIRE(r.add(&out, 1, &in, 1, t) == status::ok);
    r.publish();
    memset(m.virt, 0xff, dev_bytes);  // the device scribbles over its whole region
    CHECK(r.in_flight() == 3);
    CHECK(r.token_in_flight(0));
    CHECK(r.token_in_flight(2));
    auto p = r.pop();  // used idx 0xffff: more completions than chains in flight
    CHECK(p.st == status::device_broken);
    uint32_t reclaimed = 0;
    r.reclaim_all([&](uint32_t t) { reclaimed |= 1u << t; });
    CHECK(reclaimed == 7);
    CHECK(r.free_descriptors() == 64);
}

TEST_CASE("EVENT_IDX: one notify decision per batch, used_event follows the reaper", "[ring][event_idx]") {
    const ring_config c = cfg(16, false, true);
    memory m(ring_region_bytes(c));
    ringtest::shadow sh(c);
    ring_t r;
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    ringtest::device<ring_t> d(m, r);
    const sg_entry in{0x1000, 8};
    CHECK(d.avail_flags() == 0);  // avail->flags stays 0 with EVENT_IDX (checklist 46)
    // Device wants a kick when idx passes 0: the first batch of 3 notifies once.
    d.set_avail_event(0);
    for (uint32_t i = 0; i < 3; ++i) REQUIRE(r.add(nullptr, 0, &in, 1, i) == status::ok);
    CHECK(r.publish());
    // Device says: wake me at 10; batches ending before it stay quiet.
    d.set_avail_event(10);
    for (uint32_t i = 0; i < 3; ++i) REQUIRE(r.add(nullptr, 0, &in, 1, 10 + i) == status::ok);
    CHECK(!r.publish());  // 3 -> 6
    for (uint32_t i = 0; i < 5; ++i) REQUIRE(r.add(nullptr, 0, &in, 1, 20 + i) == status::ok);
    CHECK(r.publish());  // 6 -> 11 passes 10
    CHECK(!r.publish());  // nothing new
    // Reaping moves used_event to the next completion we want to hear about.
    while (d.pending()) d.complete(d.take());
    for (int i = 0; i < 4; ++i) REQUIRE(r.pop().st == status::ok);
    CHECK(d.used_event() == 4);
    r.disable_interrupts();
    CHECK(d.avail_flags() == 0);
    CHECK(d.used_event() == 3);  // parked behind us: no interrupt
    CHECK(r.enable_interrupts());  // completions already pending: reap again
    CHECK(d.used_event() == 4);
    while (r.pop().st == status::ok) {
    }
    CHECK(!r.enable_interrupts());
}

TEST_CASE("flag-based suppression without EVENT_IDX", "[ring]") {
    const ring_config c = cfg(8);
    memory m(ring_region_bytes(c));
    ringtest::shadow sh(c);
    ring_t r;
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    ringtest::device<ring_t> d(m, r);
    const sg_entry in{0x1000, 8};
    REQUIRE(r.add(nullptr, 0, &in, 1, 0) == status::ok);
    CHECK(r.publish());  // used->flags 0: MUST notify (checklist 46)
    d.set_used_flags(vring::used_f_no_notify);
    REQUIRE(r.add(nullptr, 0, &in, 1, 1) == status::ok);
    CHECK(!r.publish());
    r.disable_interrupts();
    CHECK(d.avail_flags() == vring::avail_f_no_interrupt);
    CHECK(!r.enable_interrupts());
    CHECK(d.avail_flags() == 0);
    CHECK(!r.has_used());
    d.complete(d.take());
    CHECK(r.has_used());  // a peek: it consumes nothing
    CHECK(r.has_used());
    CHECK(r.enable_interrupts());
    REQUIRE(r.pop().st == status::ok);
    CHECK(!r.has_used());
}

TEST_CASE("reclaim_all returns every in-flight token once and resets the ring", "[ring]") {
    const ring_config c = cfg(16, true, true, true, 4, 4);
    memory m(ring_region_bytes(c));
    ringtest::shadow sh(c);
    ring_t r;
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    ringtest::device<ring_t> d(m, r);
    const sg_entry s[2] = {{0x1000, 8}, {0x2000, 8}};
    for (uint32_t t = 100; t < 110; ++t) REQUIRE(r.add(s, 1, s + 1, 1, t) == status::ok);
    r.publish();
    d.complete(d.take());
    REQUIRE(r.pop().st == status::ok);  // 100 is done
    CHECK(r.token_in_flight(105));
    CHECK(!r.token_in_flight(100));
    std::vector<uint32_t> got;
    r.reclaim_all([&](uint32_t t) { got.push_back(t); });
    std::sort(got.begin(), got.end());
    CHECK(got == std::vector<uint32_t>({101, 102, 103, 104, 105, 106, 107, 108, 109}));
    CHECK(r.in_flight() == 0);
    CHECK(r.free_descriptors() == 16);
    CHECK(r.pop().st == status::empty);
    REQUIRE(r.add(s, 1, s + 1, 1, 7) == status::ok);
}

TEST_CASE("an invalid chain is refused as invalid even when the ring is full", "[ring][regression]") {
    // Found by fuzz_used_ring: after add() learnt to check segments while writing them, a
    // full ring answered busy to a chain with an empty segment, which a caller retries forever.
    const ring_config c = cfg(2, false, false, false);
    memory m(ring_region_bytes(c));
    ringtest::shadow sh(c);
    ring_t r;
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    const sg_entry ok{0x1000, 16}, empty{0x2000, 0};
    REQUIRE(r.add(&ok, 1, &ok, 1, 1) == status::ok);  // the ring is full
    CHECK(r.add(&ok, 1, &empty, 1, 2) == status::invalid_argument);
    CHECK(r.add(&empty, 1, nullptr, 0, 3) == status::invalid_argument);
    const sg_entry huge[2] = {{0x1000, 0xffffffffu}, {0x2000, 0xffffffffu}};
    CHECK(r.add(huge, 2, nullptr, 0, 4) == status::invalid_argument);  // more than 4 GiB
    CHECK(r.add(&ok, 1, nullptr, 0, 5) == status::busy);
}

TEST_CASE("with direct_max, short chains go direct while half the ring is free", "[ring][indirect]") {
    ring_config c = cfg(8, false, false, true, 4, 8);
    c.direct_max = 4;
    memory m(ring_region_bytes(c));
    ringtest::shadow sh(c);
    ring_t r;
    REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    ringtest::device<ring_t> d(m, r);
    const sg_entry out[3] = {{0x1000, 51}, {0x2000, 512}, {0x3000, 512}};
    const sg_entry in[2] = {{0x4000, 108}, {0x5000, 512}};
    REQUIRE(r.add(out, 1, in, 1, 1) == status::ok);  // 8 free: direct
    CHECK(r.free_descriptors() == 6);
    REQUIRE(r.add(out, 1, in, 1, 2) == status::ok);  // 6 free, 4 left after: direct
    CHECK(r.free_descriptors() == 4);
    REQUIRE(r.add(out, 1, in, 1, 3) == status::ok);  // would leave less than half: indirect
    CHECK(r.free_descriptors() == 3);
    REQUIRE(r.add(out, 3, in, 2, 4) == status::ok);  // longer than direct_max: indirect
    CHECK(r.free_descriptors() == 2);
    r.publish();
    const bool want_indirect[4] = {false, false, true, true};
    for (int i = 0; i < 4; ++i) {
        ringtest::seen_chain ch = d.take();
        CHECK(ch.indirect == want_indirect[i]);
        d.complete(ch);
    }
    for (uint32_t t = 1; t <= 4; ++t) {
        auto p = r.pop();
        REQUIRE(p.st == status::ok);
        CHECK(p.value.token == t);
    }
    CHECK(r.free_descriptors() == 8);
}
