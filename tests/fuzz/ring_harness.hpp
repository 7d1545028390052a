// What the two ring fuzzers (fuzz_used_ring: split rings, fuzz_packed_ring: packed ones)
// share: where their memory lies, how a chain to add is read from the input and what add()
// must answer for it, the reclaim check, and the common part of their seed scripts.
#pragma once
#include <stdint.h>

#include <set>
#include <vector>

#include <vscsi/ring_common.hpp>
#include <vscsi/status.hpp>

#include "fuzz_check.hpp"
#include "fuzz_input.hpp"

namespace fuzz {

constexpr uint64_t ring_bus = 0x5000000000ull;
constexpr uint64_t data_bus = 0x6000000000ull;
constexpr uint32_t seg_stride = 256;        // one segment's slot in the data area
constexpr uint32_t token_stride = 8 * 256;  // one token's eight segment slots

// A chain the fuzzer asks add() for: a free token (below the ring size: the data area holds
// that many), readable and writable segments in that token's slots, some perhaps empty.
struct chain_request {
    uint32_t token = 0;
    std::vector<vscsi::sg_entry> out, in;
    bool any_zero = false;
    uint32_t n() const { return uint32_t(out.size() + in.size()); }
};

// False when every token is in flight.
inline bool read_chain_request(input& in, uint32_t size, const std::set<uint32_t>& tokens, chain_request& r) {
    const uint8_t shape = in.u8();
    uint32_t n_out = shape & 3, n_in = (shape >> 2) & 7;
    if (shape & 0x80) n_in += 16 + in.below(250);  // longer than most rings
    const bool zero_len = (shape & 0x60) == 0x60;
    r.token = 0;
    while (tokens.count(r.token)) ++r.token;
    if (r.token >= size) return false;
    r.out.assign(n_out, {});
    r.in.assign(n_in, {});
    for (uint32_t i = 0; i < n_out + n_in; ++i) {
        const uint32_t len = 1 + in.below(seg_stride);
        const uint64_t addr = data_bus + uint64_t(r.token) * token_stride + (i % 8) * seg_stride;
        (i < n_out ? r.out[i] : r.in[i - n_out]) = vscsi::sg_entry{addr, len};
    }
    if (zero_len && n_out + n_in) (n_out ? r.out[0] : r.in[0]).len = 0;
    // Past eight segments the data slots repeat: keep them apart.
    for (uint32_t i = 8; i < n_out + n_in; ++i) (i < n_out ? r.out[i] : r.in[i - n_out]).len = 0;
    r.any_zero = false;
    for (const auto& s : r.out) r.any_zero |= s.len == 0;
    for (const auto& s : r.in) r.any_zero |= s.len == 0;
    return true;
}

// Whether add() must put the chain in an indirect table, given the ring's free descriptors
// and tables.
inline bool expect_indirect(const vscsi::ring_config& cfg, const chain_request& r, uint32_t free_desc,
                            uint32_t free_tables) {
    const uint32_t n = r.n();
    return cfg.indirect && n > 1 && n <= cfg.indirect_max && free_tables > 0 &&
           (n > cfg.direct_max || free_desc < n + cfg.size / 2);
}

// add() (and can_add()) against what they must say; returns add()'s status.
template <class Ring>
vscsi::status check_add(Ring& ring, const vscsi::ring_config& cfg, const chain_request& r, bool broken, bool indirect,
                        uint32_t free_desc) {
    const uint32_t n = r.n();
    vscsi::status want;
    if (broken)
        want = vscsi::status::device_broken;
    else if (n == 0 || n > cfg.size || r.any_zero)
        want = vscsi::status::invalid_argument;
    else if (free_desc < (indirect ? 1 : n))
        want = vscsi::status::busy;
    else
        want = vscsi::status::ok;
    const uint32_t n_out = uint32_t(r.out.size()), n_in = uint32_t(r.in.size());
    const bool can = ring.can_add(n_out, n_in);
    if (!r.any_zero)
        FUZZ_CHECK(can == (want == vscsi::status::ok), "can_add says %d, add should say %s", can, vscsi::to_string(want));
    const vscsi::status got = ring.add(r.out.data(), n_out, r.in.data(), n_in, r.token);
    FUZZ_CHECK(got == want, "add() says %s, expected %s", vscsi::to_string(got), vscsi::to_string(want));
    return got;
}

// reclaim_all() returns every token in flight once and leaves the ring empty and working.
template <class Ring>
void check_reclaim(Ring& ring, const std::set<uint32_t>& tokens, uint32_t size) {
    std::multiset<uint32_t> got;
    ring.reclaim_all([&](uint32_t t) { got.insert(t); });
    FUZZ_CHECK(got == std::multiset<uint32_t>(tokens.begin(), tokens.end()), "reclaim_all returned %zu tokens, %zu in flight",
               got.size(), tokens.size());
    FUZZ_CHECK(!ring.broken() && ring.in_flight() == 0 && ring.free_descriptors() == size, "ring after reclaim");
}

// The seed scripts' common actions, in the targets' shared encoding of add and give_back.
template <class Self, class Op>
struct ring_script_base : seed {
    Self& add(uint8_t n_out, uint8_t n_in, uint8_t len = 64) {
        u8(Op::add).u8(uint8_t(n_out | n_in << 2));
        for (int i = 0; i < n_out + n_in; ++i) u8(uint8_t(len - 1));
        return self();
    }
    Self& o(Op x) {
        u8(x);
        return self();
    }
    // mode < 128: the chain's writable length; 192 + k: k bytes past it
    Self& give_back(uint8_t pick, uint8_t mode = 0) {
        u8(Op::give_back).u8(pick).u8(mode);
        if (mode >= 192) u8(1);
        return self();
    }

private:
    Self& self() { return static_cast<Self&>(*this); }
};

}  // namespace fuzz
