// The packed virtqueue, driver side, against the spec's layout and a device that sees memory
// only by bus address.
#include <catch2/catch.hpp>

#include <algorithm>
#include <deque>
#include <random>
#include <map>
#include <set>

#include "packed_ring_device.hpp"
#include <vscsi/wire.hpp>

extern "C" size_t uapi_packed(int which);

using namespace vscsi;
using ring_t = packed_ring<hosted_platform>;
using ringtest::memory;
using ringtest::shadow;
using device_t = ringtest::packed_device<ring_t>;

namespace {
ring_config cfg(uint32_t size, bool event_idx = false, bool indirect = false, uint16_t tables = 0, uint16_t tmax = 0,
                bool in_order = false) {
    ring_config c;
    c.size = size;
    c.event_idx = event_idx;
    c.indirect = indirect;
    c.indirect_tables = tables;
    c.indirect_max = tmax;
    c.in_order = in_order;
    return c;
}

// A ring, its two regions and the device's view of it.
struct env {
    ring_config c;
    memory m;
    shadow p;
    ring_t r;
    device_t d;
    explicit env(const ring_config& cf, size_t extra = 0)
        : c(cf), m(packed_ring_region_bytes(cf) + extra), p(packed_ring_private_bytes(cf)), d(m, r) {
        REQUIRE(packed_ring_region_bytes(cf) != 0);
        REQUIRE(r.init(c, m.region(), p.region()) == status::ok);
    }
    uint64_t spare() const { return m.bus + packed_ring_region_bytes(c); }  // memory past the ring
};
}  // namespace

TEST_CASE("packed structures and constants match the spec and <linux/virtio_ring.h>", "[packed][uapi]") {
    CHECK(sizeof(pring::desc) == uapi_packed(0));
    CHECK(offsetof(pring::desc, addr) == uapi_packed(1));
    CHECK(offsetof(pring::desc, len) == uapi_packed(2));
    CHECK(offsetof(pring::desc, id) == uapi_packed(3));
    CHECK(offsetof(pring::desc, flags) == uapi_packed(4));
    CHECK(sizeof(pring::event_suppress) == uapi_packed(5));
    CHECK(offsetof(pring::event_suppress, off_wrap) == uapi_packed(6));
    CHECK(offsetof(pring::event_suppress, flags) == uapi_packed(7));
    // The spec: VIRTQ_DESC_F_AVAIL (1 << 7), VIRTQ_DESC_F_USED (1 << 15); event flags
    // ENABLE 0, DISABLE 1, DESC 2; the wrap counter is bit 15 of desc_event_off_wrap.
    CHECK(pring::desc_f_avail == 0x80);
    CHECK(pring::desc_f_used == 0x8000);
    CHECK(pring::desc_f_avail == uapi_packed(8));
    CHECK(pring::desc_f_used == uapi_packed(9));
    CHECK(pring::desc_f_next == 1);
    CHECK(pring::desc_f_write == 2);
    CHECK(pring::desc_f_indirect == 4);
    CHECK(pring::event_enable == uapi_packed(10));
    CHECK(pring::event_disable == uapi_packed(11));
    CHECK(pring::event_desc == uapi_packed(12));
    CHECK(pring::event_wrap == uapi_packed(13));
    CHECK(feature::ring_packed == uapi_packed(14));
    CHECK(feature::in_order == uapi_packed(15));
}

TEST_CASE("each part meets the spec's alignment and size table", "[packed]") {
    for (uint32_t size : {1u, 2u, 3u, 7u, 256u, 1000u, 32768u}) {
        for (bool ind : {false, true}) {
            const ring_config c = ind ? cfg(size, true, true, uint16_t(size), 8) : cfg(size);
            env e(c);
            INFO("size " << size);
            CHECK(e.r.desc_bus() % 16 == 0);
            CHECK(e.r.driver_area_bus() % 4 == 0);
            CHECK(e.r.device_area_bus() % 4 == 0);
            CHECK(e.r.driver_area_bus() >= e.r.desc_bus() + 16ull * size);  // 16 * queue size
            CHECK(e.r.device_area_bus() >= e.r.driver_area_bus() + 4);
            CHECK(e.r.device_area_bus() + 4 <= e.m.bus + packed_ring_region_bytes(c));
            // Zero-initialised: nothing available, events enabled in both directions.
            for (uint32_t i = 0; i < size; ++i) REQUIRE(e.d.flags_at(i) == 0);
            CHECK(e.d.driver_flags() == pring::event_enable);
            CHECK(e.d.driver_off_wrap() == 0);
        }
    }
}

TEST_CASE("the spec's wrap counters: AVAIL/USED flags over three laps", "[packed]") {
    // A ring of 4, one descriptor per buffer. Lap 1 (wrap counter 1): the driver marks a
    // descriptor available with AVAIL=1, USED=0 (0x0080) and the device marks it used with
    // both 1 (0x8080). Lap 2 (counter 0): available is AVAIL=0, USED=1 (0x8000), used is
    // both 0 (0x0000). Lap 3 is lap 1 again.
    env e(cfg(4));
    const sg_entry in{0x1000, 64};
    const uint16_t avail_flags[3] = {0x0082, 0x8002, 0x0082};  // with WRITE
    const uint16_t used_flags[3] = {0x8080, 0x0000, 0x8080};
    uint32_t token = 0;
    for (int lap = 0; lap < 3; ++lap) {
        for (uint32_t i = 0; i < 4; ++i) {
            REQUIRE(e.r.add(nullptr, 0, &in, 1, token) == status::ok);
            e.r.publish();
            INFO("lap " << lap << " position " << i);
            CHECK(e.d.flags_at(i) == avail_flags[lap]);
            CHECK(e.d.id_at(i) < 4);
            ringtest::packed_chain c = e.d.take();
            e.d.use_raw(c.id, 64, 1);
            CHECK(e.d.flags_at(i) == used_flags[lap]);
            auto p = e.r.pop();
            REQUIRE(p.st == status::ok);
            CHECK(p.value.token == token);
            CHECK(p.value.len == 64);
            ++token;
        }
    }
    CHECK(!e.r.broken());
}

TEST_CASE("the spec's driver example: a list, NEXT on all but the last, the id in the last", "[packed]") {
    env e(cfg(16));
    const sg_entry out[2] = {{0x1000, 19 + 32}, {0x2000, 4096}};
    const sg_entry in[3] = {{0x3000, 108}, {0x4000, 512}, {0x5000, 1024}};
    REQUIRE(e.r.add(out, 2, in, 3, 99) == status::ok);
    CHECK(e.r.free_descriptors() == 11);
    // Not available until published: the head's flags are still zero.
    CHECK(e.d.flags_at(0) == 0);
    CHECK(!e.d.pending());
    e.r.publish();
    ringtest::packed_chain ch = e.d.take();
    REQUIRE(ch.descs.size() == 5);
    CHECK(ch.ndesc == 5);
    CHECK(!ch.indirect);
    const uint64_t addrs[5] = {0x1000, 0x2000, 0x3000, 0x4000, 0x5000};
    const uint32_t lens[5] = {51, 4096, 108, 512, 1024};
    for (int i = 0; i < 5; ++i) {
        CHECK(ch.descs[i].addr == addrs[i]);
        CHECK(ch.descs[i].len == lens[i]);
        CHECK(bool(ch.descs[i].flags & pring::desc_f_write) == (i >= 2));
        CHECK(bool(ch.descs[i].flags & pring::desc_f_next) == (i < 4));
        CHECK((ch.descs[i].flags & (pring::desc_f_avail | pring::desc_f_used)) == pring::desc_f_avail);
    }
    CHECK(ch.writable == 108 + 512 + 1024);
    // The device writes one used descriptor over the list's first and skips the rest.
    e.d.use_raw(ch.id, 700, ch.ndesc);
    auto p = e.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.token == 99);
    CHECK(p.value.len == 700);
    CHECK(e.r.free_descriptors() == 16);
    CHECK(e.r.pop().st == status::empty);
}

TEST_CASE("a list that wraps: descriptors after the end carry the flipped counter", "[packed]") {
    env e(cfg(4));
    const sg_entry in{0x1000, 16};
    const sg_entry three[3] = {{0x2000, 10}, {0x3000, 20}, {0x4000, 30}};
    for (uint32_t t = 0; t < 3; ++t) {  // move the ring to position 3
        REQUIRE(e.r.add(nullptr, 0, &in, 1, t) == status::ok);
        e.r.publish();
        e.d.complete(e.d.take());
        REQUIRE(e.r.pop().st == status::ok);
    }
    REQUIRE(e.r.add(three, 3, nullptr, 0, 7) == status::ok);  // positions 3, 0, 1
    e.r.publish();
    CHECK(e.d.flags_at(3) == (pring::desc_f_avail | pring::desc_f_next));  // lap 1
    CHECK(e.d.flags_at(0) == (pring::desc_f_used | pring::desc_f_next));   // lap 2
    CHECK(e.d.flags_at(1) == pring::desc_f_used);
    ringtest::packed_chain c = e.d.take();
    CHECK(c.ndesc == 3);
    CHECK(c.descs[2].len == 30);
    e.d.use_raw(c.id, 0, c.ndesc);
    auto p = e.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.token == 7);
    CHECK(p.value.len == 0);
    // The next buffer goes to position 2, still lap 2.
    REQUIRE(e.r.add(nullptr, 0, &in, 1, 8) == status::ok);
    e.r.publish();
    CHECK(e.d.flags_at(2) == (pring::desc_f_used | pring::desc_f_write));
}

TEST_CASE("indirect: one ring descriptor, a table of WRITE-only flags, the id in the ring", "[packed][indirect]") {
    env e(cfg(8, false, true, 2, 8));
    const sg_entry out[2] = {{0x1000, 51}, {0x2000, 512}};
    const sg_entry in[2] = {{0x3000, 108}, {0x4000, 512}};
    REQUIRE(e.r.add(out, 2, in, 2, 1) == status::ok);
    REQUIRE(e.r.add(out, 1, in, 1, 2) == status::ok);
    CHECK(e.r.free_descriptors() == 6);
    REQUIRE(e.r.add(out, 1, in, 2, 3) == status::ok);  // tables exhausted: direct
    CHECK(e.r.free_descriptors() == 3);
    e.r.publish();
    ringtest::packed_chain a = e.d.take();
    CHECK(a.indirect);
    CHECK(a.ndesc == 1);
    REQUIRE(a.descs.size() == 4);
    CHECK(a.descs[1].addr == 0x2000);
    CHECK(a.descs[2].flags == pring::desc_f_write);
    CHECK(a.descs[0].flags == 0);
    CHECK((e.d.flags_at(0) & ~pring::desc_f_avail) == pring::desc_f_indirect);  // no WRITE, no NEXT
    ringtest::packed_chain b = e.d.take();
    CHECK(b.indirect);
    ringtest::packed_chain c3 = e.d.take();
    CHECK(!c3.indirect);
    CHECK(c3.ndesc == 3);
    std::set<uint16_t> ids{a.id, b.id, c3.id};
    CHECK(ids.size() == 3);
    for (auto* ch : {&c3, &a, &b}) e.d.complete(*ch);
    for (uint32_t t : {3u, 1u, 2u}) {
        auto p = e.r.pop();
        REQUIRE(p.st == status::ok);
        CHECK(p.value.token == t);
    }
    CHECK(e.r.free_descriptors() == 8);
    sg_entry many[9];
    for (int i = 0; i < 9; ++i) many[i] = sg_entry{0x1000u + 0x1000u * i, 16};
    CHECK(e.r.add(many, 8, nullptr, 0, 4) == status::ok);
    CHECK(e.r.free_descriptors() == 7);
    CHECK(e.r.add(many, 9, nullptr, 0, 5) == status::invalid_argument);  // longer than the ring
}

TEST_CASE("out of order: used descriptors go where the device's position is, skipping by list", "[packed]") {
    env e(cfg(8));
    const sg_entry s[3] = {{0x1000, 8}, {0x2000, 100}, {0x3000, 50}};
    REQUIRE(e.r.add(s, 1, s + 1, 1, 10) == status::ok);  // A: positions 0-1
    REQUIRE(e.r.add(s, 1, s + 1, 2, 11) == status::ok);  // B: positions 2-4
    REQUIRE(e.r.add(nullptr, 0, s + 2, 1, 12) == status::ok);  // C: position 5
    e.r.publish();
    ringtest::packed_chain a = e.d.take(), b = e.d.take(), c = e.d.take();
    CHECK(a.head == 0);
    CHECK(b.head == 2);
    CHECK(c.head == 5);
    // B completes first: its used descriptor overwrites A's first one; then C at 3, A at 4.
    e.d.complete(b);
    CHECK(e.d.used_pos == 3);
    auto p = e.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.token == 11);
    CHECK(p.value.len == 150);
    CHECK(e.r.pop().st == status::empty);
    e.d.complete(c);
    e.d.complete(a);
    p = e.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.token == 12);
    p = e.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.token == 10);
    CHECK(e.r.free_descriptors() == 8);
    // The freed positions 6, 7, 0.. are reused in order.
    REQUIRE(e.r.add(s, 1, s + 1, 2, 13) == status::ok);
    e.r.publish();
    ringtest::packed_chain d = e.d.take();
    CHECK(d.head == 6);
    CHECK(d.ndesc == 3);
}

TEST_CASE("in order: one used descriptor completes a run of buffers", "[packed][in_order]") {
    env e(cfg(8, false, false, 0, 0, true));
    const sg_entry s[2] = {{0x1000, 8}, {0x2000, 100}};
    for (uint32_t t = 0; t < 4; ++t) REQUIRE(e.r.add(s, 1, s + 1, 1, 20 + t) == status::ok);  // 8 descriptors
    CHECK(e.r.free_descriptors() == 0);
    e.r.publish();
    std::vector<ringtest::packed_chain> ch;
    for (int i = 0; i < 4; ++i) ch.push_back(e.d.take());
    // The device says buffers 0..2 are done with one descriptor naming the third.
    e.d.use_raw(ch[2].id, 40, ch[0].ndesc + ch[1].ndesc + ch[2].ndesc);
    CHECK(e.r.has_used());
    for (uint32_t t = 0; t < 3; ++t) {
        auto p = e.r.pop();
        REQUIRE(p.st == status::ok);
        CHECK(p.value.token == 20 + t);
        CHECK(p.value.len == (t < 2 ? 100u : 40u));  // used whole, but the last
    }
    CHECK(!e.r.has_used());
    CHECK(e.r.pop().st == status::empty);
    CHECK(e.r.in_flight() == 1);
    CHECK(e.r.free_descriptors() == 6);
    e.d.complete(ch[3]);
    auto p = e.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.token == 23);
    CHECK(p.value.len == 100);
    CHECK(e.r.free_descriptors() == 8);
    CHECK(!e.r.broken());
}

TEST_CASE("reap: a ring latched broken by on_used hands over nothing more, even inside an in-order run",
          "[packed][in_order]") {
    for (bool in_order : {false, true}) {
        env e(cfg(8, false, false, 0, 0, in_order));
        const sg_entry s[2] = {{0x1000, 8}, {0x2000, 100}};
        for (uint32_t t = 0; t < 3; ++t) REQUIRE(e.r.add(s, 1, s + 1, 1, 30 + t) == status::ok);
        e.r.publish();
        std::vector<ringtest::packed_chain> ch;
        for (int i = 0; i < 3; ++i) ch.push_back(e.d.take());
        if (in_order) {
            e.d.use_raw(ch[2].id, 100, ch[0].ndesc + ch[1].ndesc + ch[2].ndesc);  // one descriptor for all three
        } else {
            for (const auto& c : ch) e.d.complete(c);
        }
        std::vector<uint32_t> got;
        const auto r = e.r.reap([&](const used_completion& u) {
            got.push_back(u.token);
            e.r.mark_broken();
        });
        CHECK(r.st == status::device_broken);
        CHECK(r.value == 1);
        CHECK(got == std::vector<uint32_t>{30});
    }
}

TEST_CASE("every size from 1 to 32768, powers of two or not, round-trips over laps", "[packed]") {
    for (uint32_t size : {1u, 2u, 3u, 5u, 8u, 100u, 255u, 256u, 1000u, 1024u, 32768u}) {
        for (bool ind : {false, true}) {
            const ring_config c = ind ? cfg(size, false, true, uint16_t(size), 4) : cfg(size);
            env e(c, 8192);
            const sg_entry out{e.spare(), 64}, in{e.spare() + 4096, 512};
            const uint32_t rounds = size < 8 ? 7 : 2;
            INFO("size " << size << " indirect " << ind);
            for (uint32_t k = 0; k < rounds * size; ++k) {
                const status s = size == 1 ? e.r.add(nullptr, 0, &in, 1, k) : e.r.add(&out, 1, &in, 1, k);
                REQUIRE(s == status::ok);
                CHECK(e.r.publish());
                ringtest::packed_chain ch = e.d.take();
                CHECK(ch.indirect == (ind && size > 1));
                e.d.complete(ch);
                auto p = e.r.pop();
                REQUIRE(p.st == status::ok);
                CHECK(p.value.token == k);
                CHECK(p.value.len == 512);
                CHECK(e.r.pop().st == status::empty);
            }
            CHECK(e.r.in_flight() == 0);
            CHECK(e.r.free_descriptors() == size);
        }
    }
}

TEST_CASE("200000 buffers over random batches, depths and completion orders", "[packed]") {
    for (bool in_order : {false, true}) {
        for (uint32_t size : {4u, 7u, 64u}) {
            env e(cfg(size, true, true, uint16_t(size / 2 ? size / 2 : 1), 4, in_order));
            std::mt19937 rng(size * 7 + in_order);
            std::deque<ringtest::packed_chain> held;  // the device side, in avail order
            std::map<uint32_t, uint32_t> expect_len;                        // token -> writable
            std::deque<uint32_t> order;
            uint32_t next_token = 0, popped = 0;
            sg_entry segs[4];
            for (int i = 0; i < 4; ++i) segs[i] = sg_entry{0x10000u + 0x1000u * i, 100u + i};
            while (popped < 200000 / (in_order ? 2 : 1)) {
                const uint32_t batch = 1 + rng() % 4;
                for (uint32_t i = 0; i < batch; ++i) {
                    const uint32_t n = 1 + rng() % 3;
                    if (n > size || !e.r.can_add(1, n - 1)) break;
                    REQUIRE(e.r.add(segs, 1, segs + 1, n - 1, next_token) == status::ok);
                    uint32_t w = 0;
                    for (uint32_t k = 1; k < n; ++k) w += segs[k].len;
                    expect_len[next_token] = w;
                    order.push_back(next_token++);
                }
                e.r.publish();
                while (e.d.pending()) held.push_back(e.d.take());
                // Complete some: in order (possibly as one run), or any of them.
                uint32_t k = held.empty() ? 0 : 1 + rng() % held.size();
                if (in_order && k) {
                    uint32_t skip = 0;
                    for (uint32_t i = 0; i < k; ++i) skip += held[i].ndesc;
                    e.d.use_raw(held[k - 1].id, held[k - 1].writable, skip);
                    held.erase(held.begin(), held.begin() + k);
                } else {
                    for (uint32_t i = 0; i < k; ++i) {
                        const size_t pick = rng() % held.size();
                        e.d.complete(held[pick]);
                        held.erase(held.begin() + long(pick));
                    }
                }
                for (;;) {
                    auto p = e.r.pop();
                    if (p.st == status::empty) break;
                    REQUIRE(p.st == status::ok);
                    REQUIRE(expect_len.count(p.value.token));
                    CHECK(p.value.len == expect_len[p.value.token]);
                    if (in_order) {
                        REQUIRE(p.value.token == order.front());
                        order.pop_front();
                    } else {
                        order.erase(std::find(order.begin(), order.end(), p.value.token));
                    }
                    expect_len.erase(p.value.token);
                    ++popped;
                }
            }
            CHECK(!e.r.broken());
        }
    }
}

TEST_CASE("a full ring says busy; completions make room", "[packed]") {
    env e(cfg(8));
    const sg_entry s3[3] = {{0x1000, 1}, {0x2000, 1}, {0x3000, 1}};
    CHECK(e.r.add(s3, 1, s3 + 1, 2, 0) == status::ok);
    CHECK(e.r.add(s3, 1, s3 + 1, 2, 1) == status::ok);
    CHECK(!e.r.can_add(1, 2));
    CHECK(e.r.add(s3, 1, s3 + 1, 2, 2) == status::busy);
    CHECK(e.r.can_add(1, 1));
    CHECK(e.r.add(s3, 1, s3 + 1, 1, 3) == status::ok);
    CHECK(e.r.free_descriptors() == 0);
    CHECK(e.r.add(s3, 1, nullptr, 0, 4) == status::busy);
    CHECK(e.r.add(s3, 1, s3, 0, 4) == status::busy);
    const sg_entry empty{0x1000, 0};
    CHECK(e.r.add(&empty, 1, nullptr, 0, 4) == status::invalid_argument);  // never busy for a bad chain
    e.r.publish();
    e.d.complete(e.d.take());
    REQUIRE(e.r.pop().st == status::ok);
    CHECK(e.r.add(s3, 1, s3 + 1, 2, 5) == status::ok);
    CHECK(e.r.in_flight() == 3);
}

TEST_CASE("packed argument checks", "[packed]") {
    memory m(1 << 20);
    shadow p(1 << 16);
    ring_t r;
    CHECK(packed_ring_region_bytes(cfg(0)) == 0);
    CHECK(packed_ring_region_bytes(cfg(32769)) == 0);
    CHECK(packed_ring_region_bytes(cfg(3)) != 0);  // packed rings need no power of two
    ring_config legacy = cfg(8);
    legacy.legacy = true;
    CHECK(r.init(legacy, m.region(), p.region()) == status::invalid_argument);  // virtio 1.x only
    CHECK(r.init(cfg(8, false, true, 9, 4), m.region(), p.region()) == status::invalid_argument);
    CHECK(r.init(cfg(8, false, false, 2, 4), m.region(), p.region()) == status::invalid_argument);
    dma_region small = m.region();
    small.bytes = packed_ring_region_bytes(cfg(256)) - 1;
    CHECK(r.init(cfg(256), small, p.region()) == status::too_small);
    CHECK(r.init(cfg(256), m.region(), private_region{p.virt, packed_ring_private_bytes(cfg(256)) - 1}) ==
          status::too_small);
    CHECK(r.init(cfg(8), m.region(), private_region{nullptr, 4096}) == status::invalid_argument);
    CHECK(r.init(cfg(8), dma_region{m.virt + 8, m.bus + 8, m.bytes - 8}, p.region()) == status::invalid_argument);
    CHECK(r.init(cfg(8), m.region(), private_region{p.virt + 8, p.bytes - 64}) == status::invalid_argument);
    // The private region must lie apart from what the device sees.
    CHECK(r.init(cfg(8), m.region(), private_region{m.virt + 4096, 4096}) == status::invalid_argument);
    CHECK(r.init(cfg(8), dma_region{m.virt, m.bus, 8192}, private_region{m.virt + 8192, 4096}) == status::ok);
    REQUIRE(r.init(cfg(8), m.region(), p.region()) == status::ok);
    const sg_entry zero{0x1000, 0};
    CHECK(r.add(&zero, 1, nullptr, 0, 0) == status::invalid_argument);
    CHECK(r.add(nullptr, 0, nullptr, 0, 0) == status::invalid_argument);
    const sg_entry huge[2] = {{0x1000, 0xffffffffu}, {0x2000, 2}};
    CHECK(r.add(huge, 2, nullptr, 0, 0) == status::invalid_argument);
    CHECK(r.add(nullptr, 1, nullptr, 0, 0) == status::invalid_argument);
    CHECK(r.in_flight() == 0);
    CHECK(r.free_descriptors() == 8);
    CHECK(!r.publish());
}

TEST_CASE("a refused chain leaves the ring as it was", "[packed]") {
    env e(cfg(8));
    const sg_entry in{0x1000, 16};
    const sg_entry bad[3] = {{0x2000, 8}, {0x3000, 8}, {0x4000, 0}};
    REQUIRE(e.r.add(nullptr, 0, &in, 1, 1) == status::ok);
    CHECK(e.r.add(bad, 3, nullptr, 0, 2) == status::invalid_argument);
    REQUIRE(e.r.add(nullptr, 0, &in, 1, 3) == status::ok);
    e.r.publish();
    ringtest::packed_chain a = e.d.take(), b = e.d.take();
    CHECK(a.head == 0);
    CHECK(b.head == 1);  // right after the first: the refused chain took nothing
    CHECK(!e.d.pending());
    e.d.complete(a);
    e.d.complete(b);
    CHECK(e.r.pop().value.token == 1);
    CHECK(e.r.pop().value.token == 3);
}

TEST_CASE("device event suppression: DISABLE, ENABLE, and DESC with and without EVENT_IDX", "[packed][event_idx]") {
    const sg_entry in{0x1000, 8};
    {
        env e(cfg(8));
        REQUIRE(e.r.add(nullptr, 0, &in, 1, 0) == status::ok);
        CHECK(e.r.publish());  // zeroed: ENABLE
        e.d.set_device_event(0, pring::event_disable);
        REQUIRE(e.r.add(nullptr, 0, &in, 1, 1) == status::ok);
        CHECK(!e.r.publish());
        e.d.set_device_event(0, pring::event_desc);  // not valid without EVENT_IDX: notify anyway
        REQUIRE(e.r.add(nullptr, 0, &in, 1, 2) == status::ok);
        CHECK(e.r.publish());
        e.d.set_device_event(0, 3);  // reserved
        REQUIRE(e.r.add(nullptr, 0, &in, 1, 3) == status::ok);
        CHECK(e.r.publish());
        CHECK(!e.r.publish());  // nothing new
    }
    {
        env e(cfg(8, true));
        // Notify when the descriptor at position 5 of lap 1 is made available.
        e.d.set_device_event(pring::off_wrap(5, true), pring::event_desc);
        for (uint32_t t = 0; t < 3; ++t) REQUIRE(e.r.add(nullptr, 0, &in, 1, t) == status::ok);
        CHECK(!e.r.publish());  // positions 0..2
        for (uint32_t t = 3; t < 6; ++t) REQUIRE(e.r.add(nullptr, 0, &in, 1, t) == status::ok);
        CHECK(e.r.publish());  // 3..5 covers 5
        while (e.d.pending()) e.d.complete(e.d.take());
        while (e.r.pop().st == status::ok) {
        }
        // Position 1 of lap 2: a batch from 6 through the end of lap 1 does not reach it...
        e.d.set_device_event(pring::off_wrap(1, false), pring::event_desc);
        for (uint32_t t = 6; t < 8; ++t) REQUIRE(e.r.add(nullptr, 0, &in, 1, t) == status::ok);
        CHECK(!e.r.publish());
        // ... one into lap 2 through position 1 does.
        for (uint32_t t = 8; t < 10; ++t) REQUIRE(e.r.add(nullptr, 0, &in, 1, t) == status::ok);
        CHECK(e.r.publish());
        // An event already passed (position 1 of lap 1, i.e. the previous lap): no notify.
        e.d.set_device_event(pring::off_wrap(1, true), pring::event_desc);
        REQUIRE(e.r.add(nullptr, 0, &in, 1, 10) == status::ok);
        CHECK(!e.r.publish());
        e.d.set_device_event(0, pring::event_disable);
        REQUIRE(e.r.add(nullptr, 0, &in, 1, 11) == status::ok);
        CHECK(!e.r.publish());
    }
}

TEST_CASE("need_event agrees with a literal reading of the spec", "[packed][event_idx]") {
    // Literal: the notification is due iff the descriptor (off, wrap) is one of those just
    // made available, walking them one by one from where the batch began.
    std::mt19937 rng(3);
    for (int i = 0; i < 200000; ++i) {
        const uint32_t size = 1 + rng() % 64;
        const uint16_t pos = uint16_t(rng() % size);
        const bool wrap = rng() & 1;
        const uint32_t added = rng() % (size + 1);
        const uint16_t off = uint16_t(rng() % size);
        const bool ew = rng() & 1;
        // Walk back `added` descriptors to where the batch began, then forward over it.
        uint32_t p = pos;
        bool w = wrap;
        for (uint32_t k = 0; k < added; ++k) {
            if (p == 0) {
                p = size;
                w = !w;
            }
            --p;
        }
        bool hit = false;
        for (uint32_t k = 0; k < added; ++k) {
            hit |= p == off && w == ew;
            if (++p == size) {
                p = 0;
                w = !w;
            }
        }
        REQUIRE(pring::need_event(pring::off_wrap(off, ew), pos, wrap, added, size) == hit);
    }
    // An offset past the ring names no descriptor: the driver notifies rather than guess.
    CHECK(pring::need_event(pring::off_wrap(10, false), 4, true, 2, 8));
    CHECK(pring::need_event(pring::off_wrap(0x7fff, true), 4, true, 2, 8));
}

TEST_CASE("driver event suppression: DISABLE, ENABLE, DESC following the reaper", "[packed][event_idx]") {
    const sg_entry in{0x1000, 8};
    {
        env e(cfg(8));
        e.r.disable_interrupts();
        CHECK(e.d.driver_flags() == pring::event_disable);
        CHECK(!e.r.enable_interrupts());
        CHECK(e.d.driver_flags() == pring::event_enable);
        REQUIRE(e.r.add(nullptr, 0, &in, 1, 0) == status::ok);
        e.r.publish();
        e.d.complete(e.d.take());
        CHECK(e.r.has_used());
        CHECK(e.r.has_used());  // a peek
        CHECK(e.r.enable_interrupts());
        REQUIRE(e.r.pop().st == status::ok);
        CHECK(!e.r.has_used());
    }
    {
        env e(cfg(4, true));
        CHECK(!e.r.enable_interrupts());
        CHECK(e.d.driver_flags() == pring::event_desc);
        CHECK(e.d.driver_off_wrap() == pring::off_wrap(0, true));
        for (uint32_t t = 0; t < 6; ++t) {
            REQUIRE(e.r.add(nullptr, 0, &in, 1, t) == status::ok);
            e.r.publish();
            e.d.complete(e.d.take());
            REQUIRE(e.r.pop().st == status::ok);
            // The next descriptor the driver will look at, with the lap's counter.
            CHECK(e.d.driver_off_wrap() == pring::off_wrap(uint16_t((t + 1) % 4), (t + 1) / 4 % 2 == 0));
        }
        e.r.disable_interrupts();
        CHECK(e.d.driver_flags() == pring::event_disable);
        REQUIRE(e.r.add(nullptr, 0, &in, 1, 9) == status::ok);
        e.r.publish();
        e.d.complete(e.d.take());
        REQUIRE(e.r.pop().st == status::ok);
        CHECK(e.d.driver_off_wrap() == pring::off_wrap(2, false));  // left alone while disabled
        CHECK(!e.r.enable_interrupts());
        CHECK(e.d.driver_off_wrap() == pring::off_wrap(3, false));
    }
}

TEST_CASE("reclaim_all returns every in-flight token once and resets the ring", "[packed]") {
    env e(cfg(16, true, true, 4, 4));
    const sg_entry s[2] = {{0x1000, 8}, {0x2000, 8}};
    for (uint32_t t = 100; t < 110; ++t) REQUIRE(e.r.add(s, 1, s + 1, 1, t) == status::ok);
    e.r.publish();
    e.d.complete(e.d.take());
    REQUIRE(e.r.pop().st == status::ok);
    CHECK(e.r.token_in_flight(105));
    CHECK(!e.r.token_in_flight(100));
    std::vector<uint32_t> got;
    e.r.reclaim_all([&](uint32_t t) { got.push_back(t); });
    std::sort(got.begin(), got.end());
    CHECK(got == std::vector<uint32_t>({101, 102, 103, 104, 105, 106, 107, 108, 109}));
    CHECK(e.r.in_flight() == 0);
    CHECK(e.r.free_descriptors() == 16);
    CHECK(e.r.pop().st == status::empty);
    for (uint32_t i = 0; i < 16; ++i) CHECK(e.d.flags_at(i) == 0);  // zeroed again, lap 1
    ringtest::packed_device<ring_t> fresh(e.m, e.r);
    REQUIRE(e.r.add(s, 1, s + 1, 1, 7) == status::ok);
    e.r.publish();
    ringtest::packed_chain c = fresh.take();
    CHECK(c.head == 0);
}
