// A hostile device writing the packed descriptor ring: every lie about ids, lengths, flags
// and wrap bits latches the ring broken with an error status; nothing crashes, nothing is
// completed twice, and nothing outside the regions is touched (run under ASan too).
#include <catch2/catch.hpp>

#include <random>
#include <set>

#include "packed_ring_device.hpp"

using namespace vscsi;
using ring_t = packed_ring<hosted_platform>;
using ringtest::memory;
using ringtest::shadow;

namespace {
struct env {
    ring_config c;
    memory m;
    shadow p;
    ring_t r;
    ringtest::packed_device<ring_t> d;
    explicit env(uint32_t size = 8, bool in_order = false)
        : c(make(size, in_order)), m(packed_ring_region_bytes(c)), p(packed_ring_private_bytes(c)), d(m, r) {
        REQUIRE(r.init(c, m.region(), p.region()) == status::ok);
    }
    static ring_config make(uint32_t size, bool in_order) {
        ring_config c;
        c.size = size;
        c.in_order = in_order;
        return c;
    }
    // Three buffers of two descriptors (16 readable bytes, 100 writable), ids taken by the device.
    std::vector<ringtest::packed_chain> post3() {
        const sg_entry out{0x1000, 16}, in{0x2000, 100};
        for (uint32_t t = 0; t < 3; ++t) REQUIRE(r.add(&out, 1, &in, 1, t) == status::ok);
        r.publish();
        std::vector<ringtest::packed_chain> v;
        while (d.pending()) v.push_back(d.take());
        REQUIRE(v.size() == 3);
        return v;
    }
    void expect_broken() {
        auto p1 = r.pop();
        CHECK(p1.st == status::device_broken);
        CHECK(r.broken());
        CHECK(r.pop().st == status::device_broken);
        const sg_entry in{0x2000, 4};
        CHECK(r.add(nullptr, 0, &in, 1, 9) == status::device_broken);
        // reclaim_all gives back what was in flight and the ring works again.
        const uint32_t held = r.in_flight();
        uint32_t n = 0;
        r.reclaim_all([&](uint32_t) { ++n; });
        CHECK(n == held);
        CHECK(!r.broken());
        CHECK(r.in_flight() == 0);
        REQUIRE(r.add(nullptr, 0, &in, 1, 9) == status::ok);
    }
};
}  // namespace

TEST_CASE("packed: an id past the ring", "[packed][hostile]") {
    for (uint16_t id : {uint16_t(8), uint16_t(0xffff)}) {
        env e;
        e.post3();
        e.d.use_raw(id, 0, 2);
        e.expect_broken();
    }
}

TEST_CASE("packed: an id not in flight, or returned twice", "[packed][hostile]") {
    env e;
    auto v = e.post3();
    std::set<uint16_t> ids{v[0].id, v[1].id, v[2].id};
    uint16_t idle = 0;
    while (ids.count(idle)) ++idle;
    e.d.use_raw(idle, 0, 2);  // a free id
    e.expect_broken();
    env f;
    auto w = f.post3();
    f.d.complete(w[1]);
    f.d.complete(w[1]);
    REQUIRE(f.r.pop().st == status::ok);
    f.expect_broken();
}

TEST_CASE("packed: a length beyond the whole chain; one within it is clamped", "[packed][hostile]") {
    env e;
    auto v = e.post3();
    e.d.use_raw(v[0].id, 117, 2);  // 16 readable + 100 writable: one past
    e.expect_broken();
    for (uint32_t reported : {101u, 116u}) {
        env f;
        auto w = f.post3();
        f.d.use_raw(w[0].id, reported, 2);  // QEMU reports a write's whole chain
        auto p = f.r.pop();
        REQUIRE(p.st == status::ok);
        CHECK(p.value.len == 100);
        CHECK(!f.r.broken());
    }
    // No WRITE flag on the used descriptor: its length still counts (QEMU never sets it).
    env g;
    auto x = g.post3();
    g.d.use_raw(x[0].id, 60, 2, 0);
    auto p = g.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.len == 60);
}

TEST_CASE("packed: a used descriptor with nothing in flight", "[packed][hostile]") {
    env e;
    e.d.use_raw(0, 0, 1);
    e.expect_broken();
    // ... or after everything came back: the next position says used again.
    env f;
    auto v = f.post3();
    for (auto& c : v) f.d.complete(c);
    for (int i = 0; i < 3; ++i) REQUIRE(f.r.pop().st == status::ok);
    f.d.use_raw(v[0].id, 0, 1);
    f.expect_broken();
}

TEST_CASE("packed: a buffer added but not yet published", "[packed][hostile]") {
    env e;
    const sg_entry in{0x2000, 64};
    REQUIRE(e.r.add(nullptr, 0, &in, 1, 7) == status::ok);  // id 0, head flags still held back
    CHECK(!e.d.pending());
    e.d.use_raw(0, 64, 1);
    e.expect_broken();
    // In order: a run that reaches past what was published.
    env f(8, true);
    auto v = f.post3();
    REQUIRE(f.r.add(nullptr, 0, &in, 1, 9) == status::ok);  // unpublished, id 3
    f.d.use_raw(3, 64, 7);
    f.expect_broken();
}

TEST_CASE("packed: wrong wrap bits are not a completion", "[packed][hostile]") {
    // Both bits set in lap 2, or AVAIL without USED, say nothing was used.
    env e(4);
    const sg_entry in{0x2000, 64};
    for (uint32_t t = 0; t < 4; ++t) {
        REQUIRE(e.r.add(nullptr, 0, &in, 1, t) == status::ok);
        e.r.publish();
        e.d.complete(e.d.take());
        REQUIRE(e.r.pop().st == status::ok);
    }
    REQUIRE(e.r.add(nullptr, 0, &in, 1, 4) == status::ok);  // position 0, lap 2
    e.r.publish();
    ringtest::packed_chain c = e.d.take();
    uint8_t* d = e.d.desc(0);
    for (uint16_t flags : {uint16_t(0x8080), uint16_t(0x0080), uint16_t(0x8000 | 2)}) {
        le_bytes::st16(d + 14, flags);
        CHECK(e.r.pop().st == status::empty);
        CHECK(!e.r.has_used());
    }
    le_bytes::st16(d + 12, c.id);
    le_bytes::st16(d + 14, 0);  // lap 2 used: both clear
    auto p = e.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.token == 4);
}

TEST_CASE("packed, in order: an id that is not in flight", "[packed][hostile][in_order]") {
    env e(8, true);
    e.post3();
    e.d.use_raw(5, 0, 2);
    e.expect_broken();
}

TEST_CASE("packed: random garbage in the descriptor ring never escapes the regions", "[packed][hostile]") {
    std::mt19937 rng(4321);
    int broken = 0, clean = 0;
    for (int round = 0; round < 3000; ++round) {
        const uint32_t size = 1 + rng() % 40;
        env e(size, rng() & 1);
        const sg_entry in{0x2000, 64};
        uint32_t posted = 0;
        while (e.r.can_add(0, 1) && posted < size) REQUIRE(e.r.add(nullptr, 0, &in, 1, posted++) == status::ok);
        e.r.publish();
        // Scribble over the ring: ids, lengths and flags anywhere.
        const uint32_t n = 1 + rng() % (size + 2);
        for (uint32_t i = 0; i < n; ++i) {
            uint8_t* d = e.d.desc(rng() % size);
            if (rng() % 3 == 0) {
                le_bytes::st32(d + 8, rng() % 128);
                le_bytes::st16(d + 12, uint16_t(rng() % (size + 2)));
                le_bytes::st16(d + 14, uint16_t(0x8080));
            } else {
                le_bytes::st32(d + 8, rng());
                le_bytes::st16(d + 12, uint16_t(rng()));
                le_bytes::st16(d + 14, uint16_t(rng()));
            }
        }
        std::vector<int> seen(size, 0);
        for (int k = 0; k < int(size) + 4; ++k) {
            auto p = e.r.pop();
            if (p.st == status::empty || p.st == status::device_broken) break;
            REQUIRE(p.value.token < size);
            REQUIRE(p.value.len <= 64);
            REQUIRE(++seen[p.value.token] == 1);  // never the same token twice
        }
        CHECK(e.r.in_flight() <= size);
        (e.r.broken() ? broken : clean)++;
    }
    CHECK(broken > 300);
    CHECK(clean > 0);
}
