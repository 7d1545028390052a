// fuzz_used_ring: the split ring alone (ring.hpp), every size from 1 to 256, legacy and
// modern layout, direct and indirect chains, EVENT_IDX or flags. The driver side adds,
// publishes, pops and reclaims; the device side (ring_peer.hpp) returns chains honestly or
// writes any used entry and index it likes. Every result of the ring is predicted exactly:
//
//   - add() succeeds, says busy or refuses exactly as the free descriptors, indirect tables
//     and arguments allow, and every chain it posts is well formed and shares nothing with a
//     chain in flight;
//   - publish() asks for a notification exactly when the device's avail_event or used flags
//     say so (checklist 46);
//   - pop() returns exactly the entries a careful reaper accepts, with their tokens and
//     lengths (clamped to the writable bytes), and the first lie latches the ring broken until
//     reclaim_all(), which returns every token in flight once;
//   - interrupt enable/disable write used_event / avail flags as the spec says, and enable
//     reports completions already pending;
//   - the ring's private shadow (its own allocation, outside the memory the device side
//     reaches) is never changed by a device move.
#include <stdint.h>

#include <map>
#include <memory>
#include <set>
#include <string>

#include <vscsi/ring.hpp>

#include "dma_space.hpp"
#include "fuzz_check.hpp"
#include "fuzz_input.hpp"
#include "ring_harness.hpp"
#include "ring_peer.hpp"
#include "seeds.hpp"

namespace {
using namespace fuzz;
using ring_t = vscsi::split_ring<vscsi::hosted_platform>;

enum op : uint8_t { add, publish, pop, pop_all, give_back, raw_entry, bump, set_idx, suppress, irq_on, irq_off, reclaim, query, n_ops };

struct harness {
    vscsi::ring_config cfg;
    dma_space mem;
    private_books books;
    ring_t ring;
    std::unique_ptr<ring_peer> peer;
    std::map<uint16_t, uint32_t> head_token;  // the device's view: which token a head carries
    std::set<uint32_t> tokens;                // tokens in flight
    uint16_t added = 0, published = 0;        // avail indices: the driver's and the published one
    bool irq = true;

    explicit harness(const vscsi::ring_config& c) : cfg(c) {
        const size_t bytes = vscsi::ring_region_bytes(cfg);
        FUZZ_CHECK(bytes, "valid config rejected");
        uint8_t* p = mem.add(ring_bus, bytes, 4096, 0xcc);
        mem.add(data_bus, size_t(cfg.size) * token_stride, 16, 0x5a);
        books.allocate(vscsi::ring_private_bytes(cfg), 0xcc);
        FUZZ_CHECK(ring.init(cfg, vscsi::dma_region{p, ring_bus, bytes}, books.region()) == vscsi::status::ok,
                   "init failed");
        fresh_peer();
    }

    void fresh_peer() {
        ring_setup s;
        s.size = cfg.size;
        s.desc = ring.desc_bus();
        s.avail = ring.avail_bus();
        s.used = ring.used_bus();
        s.legacy = cfg.legacy;
        s.indirect = cfg.indirect;
        s.event_idx = cfg.event_idx;
        peer = std::make_unique<ring_peer>(mem, s, false, true);
        head_token.clear();
        tokens.clear();
        added = published = 0;
        irq = true;
    }

    uint32_t free_descriptors() const {
        uint32_t used = 0;
        for (const auto& kv : peer->held()) used += kv.second.indirect ? 1 : uint32_t(kv.second.descs.size());
        return cfg.size - used;
    }
    uint32_t free_tables() const {
        uint32_t used = 0;
        for (const auto& kv : peer->held()) used += kv.second.indirect;
        return (cfg.indirect ? cfg.indirect_tables : 0) - used;
    }

    void check_counts() const {
        FUZZ_CHECK(ring.in_flight() == peer->held().size(), "ring counts %u in flight, device side %zu", ring.in_flight(),
                   peer->held().size());
        FUZZ_CHECK(ring.free_descriptors() == free_descriptors(), "ring has %u descriptors free, expected %u",
                   ring.free_descriptors(), free_descriptors());
        FUZZ_CHECK(ring.broken() == peer->broken(), "ring broken %d, expected %d", ring.broken(), peer->broken());
    }

    void do_add(input& in) {
        chain_request r;
        if (!read_chain_request(in, cfg.size, tokens, r)) return;
        const bool indirect = expect_indirect(cfg, r, free_descriptors(), free_tables());
        if (check_add(ring, cfg, r, peer->broken(), indirect, free_descriptors()) != vscsi::status::ok) return;
        const uint32_t n = r.n(), n_out = uint32_t(r.out.size());
        ++added;
        peer->note_add();
        const std::vector<uint16_t> fresh = peer->sync({});
        FUZZ_CHECK(fresh.size() == 1, "one add, %zu new chains", fresh.size());
        const chain& c = peer->held().at(fresh[0]);
        FUZZ_CHECK(c.indirect == indirect, "chain indirect %d, expected %d", c.indirect, indirect);
        FUZZ_CHECK(c.bufs.size() == n, "chain of %zu buffers, added %u", c.bufs.size(), n);
        for (uint32_t i = 0; i < n; ++i) {
            const vscsi::sg_entry& s = i < n_out ? r.out[i] : r.in[i - n_out];
            FUZZ_CHECK(c.bufs[i].bus == s.addr && c.bufs[i].len == s.len && c.bufs[i].writable == (i >= n_out),
                       "buffer %u of the chain differs from what was added", i);
        }
        head_token[fresh[0]] = r.token;
        tokens.insert(r.token);
    }

    void do_publish() {
        const bool want = added != published && peer->notify_needed(published, added);
        const bool got = ring.publish();
        FUZZ_CHECK(got == want, "publish() asks for a notification: %d, expected %d (checklist 46)", got, want);
        published = added;
        FUZZ_CHECK(peer->avail_idx() == added, "avail idx %u after publish, %u added", peer->avail_idx(), added);
        FUZZ_CHECK(peer->sync({}).empty(), "publish() posted chains nobody added");
    }

    bool do_pop() {
        ring_peer::prediction p = peer->reap(1);
        const vscsi::result<vscsi::used_completion> r = ring.pop();
        if (p.broken) {
            FUZZ_CHECK(r.st == vscsi::status::device_broken, "pop() says %s, the used ring lied", vscsi::to_string(r.st));
            return false;
        }
        if (p.items.empty()) {
            FUZZ_CHECK(r.st == vscsi::status::empty, "pop() says %s on an empty used ring", vscsi::to_string(r.st));
            return false;
        }
        const ring_peer::reaped& it = p.items[0];
        FUZZ_CHECK(r.st == vscsi::status::ok, "pop() says %s for a valid entry", vscsi::to_string(r.st));
        const uint32_t token = head_token.at(it.head);
        FUZZ_CHECK(r.value.token == token && r.value.len == it.len, "pop() gave token %u len %u, expected %u len %u",
                   r.value.token, r.value.len, token, it.len);
        tokens.erase(token);
        head_token.erase(it.head);
        if (cfg.event_idx && irq)
            FUZZ_CHECK(peer->used_event() == peer->last_used(), "used_event %u does not follow the reaper at %u",
                       peer->used_event(), peer->last_used());
        return true;
    }

    void do_give_back(input& in) {
        std::vector<const chain*> v;
        for (const auto& kv : peer->held())
            if (kv.second.published && !(kv.second.cookie & 1)) v.push_back(&kv.second);
        if (v.empty()) return;
        const chain& c = *v[in.u8() % v.size()];
        const uint8_t m = in.u8();
        const uint32_t len = m < 128 ? c.writable : m < 192 ? (c.writable ? in.u32() % (c.writable + 1) : 0)
                                                            : c.writable + 1 + in.u8();
        const_cast<chain&>(c).cookie |= 1;  // given back
        peer->push(c.head, len);
    }

    void do_irq(bool on) {
        if (on) {
            const bool want = peer->used_idx() != peer->last_used();
            const bool got = ring.enable_interrupts();
            FUZZ_CHECK(got == want, "enable_interrupts() says %d, used ring says %d", got, want);
            if (cfg.event_idx)
                FUZZ_CHECK(peer->used_event() == peer->last_used() && peer->avail_flags() == 0, "used_event after enable");
            else
                FUZZ_CHECK(peer->avail_flags() == 0, "avail flags after enable");
        } else {
            ring.disable_interrupts();
            if (cfg.event_idx)
                FUZZ_CHECK(peer->used_event() == uint16_t(peer->last_used() - 1) && peer->avail_flags() == 0,
                           "used_event after disable");
            else
                FUZZ_CHECK(peer->avail_flags() == 1, "avail flags after disable");
        }
        irq = on;
    }

    void do_reclaim() {
        check_reclaim(ring, tokens, cfg.size);
        fresh_peer();
    }

    void run(input& in) {
        for (unsigned step = 0; step < 600 && !in.done(); ++step) {
            const op o = op(in.u8() % n_ops);
            switch (o) {
                case add: do_add(in); break;
                case publish: do_publish(); break;
                case pop: do_pop(); break;
                case pop_all:
                    for (uint32_t i = 0; i <= cfg.size && do_pop(); ++i) {
                    }
                    break;
                case give_back: do_give_back(in); break;
                case raw_entry: {
                    const uint16_t ahead = uint16_t(in.below(4));
                    const uint8_t k = in.u8();
                    const uint32_t id = k < 192 ? uint32_t(k) % (cfg.size + 2) : in.u32();
                    peer->put_entry(ahead, id, in.u8() < 192 ? in.u16() % 2048 : in.u32());
                    break;
                }
                case bump: peer->set_used(uint16_t(peer->device_used() + 1 + in.below(cfg.size + 2))); break;
                case set_idx: peer->set_used(in.u16()); break;
                case suppress:
                    if (in.flag())
                        peer->set_used_flags(uint16_t(in.u8() & 1));
                    else
                        peer->set_avail_event(in.u16());
                    break;
                case irq_on: do_irq(true); break;
                case irq_off: do_irq(false); break;
                case reclaim: do_reclaim(); break;
                case query: {
                    const uint32_t t = in.below(cfg.size + 1);
                    FUZZ_CHECK(ring.token_in_flight(t) == (tokens.count(t) == 1), "token_in_flight(%u)", t);
                    break;
                }
                case n_ops: break;
            }
            // A device move leaves the shadow as the ring's last call left it.
            if (o == give_back || o == raw_entry || o == bump || o == set_idx || o == suppress)
                FUZZ_CHECK(books.as_left(), "a device move changed %zu bytes of the ring's shadow", books.changed());
            else
                books.snapshot();
            check_counts();
        }
        do_reclaim();
    }
};

// The ring's configuration: the first 3 bytes.
//   0  size 1 << n%9; 16 legacy layout, 32 EVENT_IDX, 64 INDIRECT_DESC
//   1  indirect tables (1 + n % size)
//   2  descriptors per indirect table (1 + n % 8); chains that go direct while half the ring
//      is free: up to (n >> 3) % 6 descriptors (0: none)
vscsi::ring_config read_config(input& in) {
    const uint8_t b = in.u8();
    vscsi::ring_config c;
    c.size = 1u << (b % 9);
    c.legacy = b & 16;
    c.event_idx = b & 32;
    c.indirect = b & 64;
    const uint8_t t = in.u8(), m = in.u8();
    if (c.indirect) {
        c.indirect_tables = uint16_t(1 + t % c.size);
        c.indirect_max = uint16_t(1 + m % 8);
        c.direct_max = uint16_t((m >> 3) % 6);
    }
    return c;
}

// The scenarios of test_ring.cpp and test_ring_hostile.cpp, as seeds.
struct ring_script : ring_script_base<ring_script, op> {
    ring_script(uint8_t size_log2, bool legacy, bool event_idx, bool indirect, uint8_t tables = 8, uint8_t max = 4) {
        u8(uint8_t(size_log2 | (legacy ? 16 : 0) | (event_idx ? 32 : 0) | (indirect ? 64 : 0)));
        u8(uint8_t(tables - 1)).u8(uint8_t(max - 1));
    }
    ring_script& raw(uint8_t ahead, uint8_t id, uint16_t len) {
        u8(op::raw_entry).u8(ahead).u8(id).u8(0).u16(len);
        return *this;
    }
    ring_script& bump(uint8_t k) {
        u8(op::bump).u8(uint8_t(k - 1));
        return *this;
    }
    ring_script& set_idx(uint16_t v) {
        u8(op::set_idx).u16(v);
        return *this;
    }
    ring_script& avail_event(uint16_t v) {
        u8(op::suppress).u8(0).u16(v);
        return *this;
    }
    ring_script& no_notify(bool on) {
        u8(op::suppress).u8(1).u8(on);
        return *this;
    }
};

std::vector<named_seed> seeds() {
    std::vector<named_seed> out;
    auto put = [&](const std::string& name, const ring_script& s) { out.emplace_back(name, s.bytes); };
    for (uint8_t lg : {uint8_t(0), uint8_t(3), uint8_t(8)}) {
        for (int mode = 0; mode < 8; ++mode) {
            ring_script s(lg, mode & 1, mode & 2, mode & 4, uint8_t(1 + (1u << lg) / 2));
            for (int round = 0; round < 6; ++round) {
                s.add(1, 1).add(0, 1).add(2, 3).o(op::publish);
                for (int k = 0; k < 3; ++k) s.give_back(0);
                s.o(op::pop_all);
            }
            s.o(op::irq_off).add(1, 1).o(op::publish).give_back(0).o(op::irq_on).o(op::pop).o(op::query);
            put("roundtrip-" + std::to_string(1u << lg) + "-" + std::to_string(mode), s);
        }
    }
    {
        ring_script s(3, false, false, false);  // 16-bit index wrap
        for (int i = 0; i < 70; ++i) s.add(1, 1).o(op::publish).give_back(0).o(op::pop);
        put("index-wrap", s);
        ring_script f(2, false, false, false);  // a full ring says busy; completions make room
        f.add(1, 1).add(1, 1).add(1, 1).o(op::publish).give_back(1).o(op::pop).add(1, 1).add(1, 1).o(op::publish);
        put("full-ring", f);
        ring_script a(3, false, false, true, 2, 4);
        a.add(0, 0).add(3, 6).add(1, 1, 1).o(op::publish);  // argument errors; indirect; direct
        put("arguments-and-indirect", a);
    }
    {
        ring_script e(3, false, true, false);  // EVENT_IDX: one notify decision per batch
        e.avail_event(0).add(1, 1).add(1, 1).o(op::publish).avail_event(5).add(1, 1).o(op::publish);
        e.add(1, 1).add(1, 1).add(1, 1).o(op::publish).give_back(0).o(op::pop_all).o(op::irq_off).o(op::irq_on);
        put("event-idx", e);
        ring_script n(3, false, false, false);
        n.no_notify(true).add(1, 1).o(op::publish).no_notify(false).add(1, 1).o(op::publish).o(op::irq_off).o(op::irq_on);
        put("flags-suppression", n);
    }
    const char* lies[] = {"id-past-ring", "middle-id", "free-id", "duplicate", "len-past-buffer", "used-jump",
                          "used-backwards", "unpublished"};
    for (int lie = 0; lie < 8; ++lie) {
        for (bool legacy : {false, true}) {
            ring_script s(3, legacy, false, false);
            s.add(1, 1).add(1, 1).add(1, 1).o(op::publish);
            switch (lie) {
                case 0: s.raw(0, 8, 0).bump(1); break;
                case 1: s.raw(0, 1, 0).bump(1); break;
                case 2: s.raw(0, 6, 0).bump(1); break;
                case 3: s.give_back(0).o(op::pop).raw(0, 0, 0).bump(1); break;
                case 4: s.give_back(0, 192); break;
                case 5: s.bump(4); break;
                case 6: s.set_idx(0xffff); break;
                case 7: s.add(0, 1).raw(0, 6, 0).bump(1); break;
            }
            s.o(op::pop).o(op::pop).add(1, 1).o(op::reclaim).add(1, 1).o(op::publish).give_back(0).o(op::pop);
            put(std::string("lie-") + lies[lie] + (legacy ? "-legacy" : ""), s);
        }
    }
    {
        // Regression (fuzz_used_ring): on a ring of one, the device returned the chain added but
        // not published; the driver reused it and published two entries on a one-entry ring.
        ring_script s(0, false, false, false);
        s.add(0, 1).raw(0, 0, 16).bump(1).o(op::pop).add(0, 1).o(op::publish);
        put("regress-unpublished-return", s);
        // Regression (fuzz_used_ring): a full ring answered busy to a chain with an empty
        // segment, which a caller retries forever.
        ring_script z(1, false, false, false);
        z.add(1, 1);
        z.u8(op::add).u8(0x60 | 1 | 1 << 2).u8(15).u8(15);  // 0x60: the first segment empty
        put("regress-busy-before-invalid", z);
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    write_seeds_if_asked(seeds());
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    input in(data, size);
    harness h(read_config(in));
    h.run(in);
    return 0;
}
