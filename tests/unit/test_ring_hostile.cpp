// A hostile device: every lie in the used ring latches the ring broken with an error
// status; nothing crashes and nothing outside the region is touched (run under ASan too).
#include <catch2/catch.hpp>

#include <random>

#include "ring_device.hpp"

using namespace vscsi;
using ring_t = split_ring<hosted_platform>;
using ringtest::memory;

namespace {
struct env {
    ring_config c;
    memory m;
    ringtest::shadow sh;
    ring_t r;
    ringtest::device<ring_t> d;
    explicit env(bool legacy = false, uint32_t size = 8)
        : c(make(size, legacy)), m(ring_region_bytes(c)), sh(c), d(m, r) {
        REQUIRE(r.init(c, m.region(), sh.region()) == status::ok);
    }
    static ring_config make(uint32_t size, bool legacy) {
        ring_config c;
        c.size = size;
        c.legacy = legacy;
        return c;
    }
    // Three chains of two descriptors (one readable, one writable of 100 bytes).
    void post3() {
        const sg_entry out{0x1000, 16}, in{0x2000, 100};
        for (uint32_t t = 0; t < 3; ++t) REQUIRE(r.add(&out, 1, &in, 1, t) == status::ok);
        r.publish();
    }
    void expect_broken() {
        auto p = r.pop();
        CHECK(p.st == status::device_broken);
        CHECK(r.broken());
        CHECK(r.pop().st == status::device_broken);
        const sg_entry in{0x2000, 4};
        CHECK(r.add(nullptr, 0, &in, 1, 9) == status::device_broken);
    }
};
}  // namespace

TEST_CASE("an id past the ring", "[ring][hostile]") {
    env e;
    e.post3();
    e.d.complete_raw(8, 0);
    e.expect_broken();
    env f;
    f.post3();
    f.d.complete_raw(0xffffffffu, 0);
    f.expect_broken();
}

TEST_CASE("an id that is not the head of a chain in flight", "[ring][hostile]") {
    env e;
    e.post3();
    ringtest::seen_chain c = e.d.take();
    e.d.complete_raw(c.descs.size() > 1 ? (c.head + 1) : 7, 0);  // the chain's second descriptor
    e.expect_broken();
    env f;
    f.post3();
    f.d.complete_raw(6, 0);  // a free descriptor
    f.expect_broken();
}

TEST_CASE("a completion returned twice", "[ring][hostile]") {
    env e;
    e.post3();
    ringtest::seen_chain c = e.d.take();
    e.d.complete(c);
    e.d.complete(c);
    REQUIRE(e.r.pop().st == status::ok);
    e.expect_broken();
}

TEST_CASE("a length beyond the whole chain: broken on modern, clamped on legacy", "[ring][hostile]") {
    env e;
    e.post3();
    ringtest::seen_chain c = e.d.take();
    e.d.complete_raw(c.head, 117);  // 16 readable + 100 writable: one byte past the chain
    e.expect_broken();
    env l(true);
    l.post3();
    ringtest::seen_chain c2 = l.d.take();
    l.d.complete_raw(c2.head, 5000);  // legacy devices reported lengths loosely (checklist 48)
    auto p = l.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.len == 100);
    CHECK(!l.r.broken());
}

TEST_CASE("a length that counts the device-readable part too is clamped (QEMU, writes)", "[ring][hostile]") {
    // QEMU's virtio-scsi reports data-out plus response bytes for a write on modern devices.
    for (uint32_t reported : {101u, 116u}) {
        env e;
        e.post3();
        ringtest::seen_chain c = e.d.take();
        e.d.complete_raw(c.head, reported);
        auto p = e.r.pop();
        REQUIRE(p.st == status::ok);
        CHECK(p.value.len == 100);
        CHECK(!e.r.broken());
    }
}

TEST_CASE("a used index that jumps past what is in flight", "[ring][hostile]") {
    env e;
    e.post3();
    e.d.set_used_idx(4);  // only 3 in flight
    e.expect_broken();
    env f;
    f.post3();
    f.d.set_used_idx(uint16_t(8 + 1));  // more than the queue size
    f.expect_broken();
    env g;
    g.post3();
    g.d.set_used_idx(0xffff);  // "backwards": 65535 ahead
    g.expect_broken();
}

TEST_CASE("random garbage in the used ring never escapes the region", "[ring][hostile]") {
    std::mt19937 rng(12345);
    int broken = 0, clean = 0;
    for (int round = 0; round < 3000; ++round) {
        const uint32_t size = 1u << (rng() % 6);
        env e(rng() & 1, size);
        const sg_entry in{0x2000, 64};
        uint32_t posted = 0;
        while (e.r.can_add(0, 1) && posted < size) REQUIRE(e.r.add(nullptr, 0, &in, 1, posted++) == status::ok);
        e.r.publish();
        // Scribble over the used ring: entries and index.
        const uint32_t n = 1 + rng() % (size + 2);
        for (uint32_t i = 0; i < n; ++i) {
            if (rng() % 4 == 0)
                e.d.complete_raw(uint32_t(rng() % (size + 2)), uint32_t(rng() % 128));
            else
                e.d.complete_raw(rng(), rng());
        }
        if (rng() % 3 == 0) e.d.set_used_idx(uint16_t(rng()));
        std::vector<int> seen(size, 0);
        for (int k = 0; k < int(size) + 4; ++k) {
            auto p = e.r.pop();
            if (p.st == status::empty) break;
            if (p.st == status::device_broken) break;
            REQUIRE(p.value.token < size);
            REQUIRE(p.value.len <= 64);
            REQUIRE(++seen[p.value.token] == 1);  // never the same token twice
        }
        (e.r.broken() ? broken : clean)++;
    }
    CHECK(broken > 1000);
    CHECK(clean > 0);
}

TEST_CASE("a completion for a chain added but not yet published", "[ring][hostile][regression]") {
    // Found by fuzz_used_ring: the device returned a chain the driver had not published.
    // The ring took it, the driver reused its descriptors, and the next publish moved avail
    // idx further past the device than the ring has entries, overwriting an avail slot the
    // device had not read. The device cannot have seen such a chain: that is a lie.
    env e(false, 1);
    const sg_entry in{0x2000, 64};
    REQUIRE(e.r.add(nullptr, 0, &in, 1, 7) == status::ok);  // head 0, not published
    e.d.complete_raw(0, 64);
    e.expect_broken();
    // Published chains still complete, and the ring stays usable across publishes.
    env f(false, 4);
    REQUIRE(f.r.add(nullptr, 0, &in, 1, 1) == status::ok);
    f.r.publish();
    REQUIRE(f.r.add(nullptr, 0, &in, 1, 2) == status::ok);  // head 1, unpublished
    ringtest::seen_chain c = f.d.take();
    f.d.complete(c);
    auto p = f.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.token == 1);
    f.r.publish();
    ringtest::seen_chain c2 = f.d.take();
    f.d.complete(c2);
    p = f.r.pop();
    REQUIRE(p.st == status::ok);
    CHECK(p.value.token == 2);
    CHECK(!f.r.broken());
}
