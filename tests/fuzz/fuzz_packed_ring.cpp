// fuzz_packed_ring: the packed ring alone (packed_ring.hpp), sizes 1 to 64 and 256 (powers of
// two or not), direct and indirect lists, EVENT_IDX or not, IN_ORDER or not. The driver side
// adds, publishes, pops and reclaims; the device side (packed_peer.hpp) gives lists back
// honestly or writes any id, length and flags into the descriptor ring, moves its used
// position anywhere, and sets its event structure to anything. Every result of the ring is
// predicted exactly:
//
//   - add() succeeds, says busy or refuses exactly as the free descriptors, ids, indirect
//     tables and arguments allow; nothing it writes becomes available before publish(), and
//     every list publish() makes available is the one added, well formed, sharing nothing
//     with a list in flight;
//   - publish() asks for a notification exactly when the device's event structure says so;
//   - pop() returns exactly what a careful reaper accepts (in order, whole runs), with
//     tokens and lengths clamped to the writable bytes; the first lie latches the ring broken
//     until reclaim_all(), which returns every token in flight once;
//   - interrupt enable/disable write the driver's event structure as the spec says, and
//     enable reports completions already there.
// The private region lies outside everything the device can reach (ASan checks every access),
// and no device move changes a byte of it.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <vscsi/packed_ring.hpp>

#include "dma_space.hpp"
#include "fuzz_check.hpp"
#include "fuzz_input.hpp"
#include "packed_peer.hpp"
#include "ring_harness.hpp"
#include "seeds.hpp"

namespace {
using namespace fuzz;
using ring_t = vscsi::packed_ring<vscsi::hosted_platform>;

enum op : uint8_t { add, publish, pop, pop_all, give_back, raw_entry, skip, suppress, irq_on, irq_off, reclaim, query, n_ops };

// A list added and not yet published: what publish() must make available.
struct expected {
    uint32_t token;
    bool indirect;
    uint32_t ndesc;
    std::vector<vscsi::sg_entry> segs;
    uint32_t n_out;
};

struct harness {
    vscsi::ring_config cfg;
    dma_space mem;
    private_books books;
    ring_t ring;
    std::unique_ptr<packed_peer> peer;
    std::map<uint16_t, uint32_t> id_token;  // published lists: the id the device sees, the token
    std::deque<expected> pending;           // added, not yet published
    std::set<uint32_t> tokens;              // tokens in flight
    uint64_t published_at = 0;              // the device's avail position at the last publish
    bool irq = true;

    explicit harness(const vscsi::ring_config& c) : cfg(c) {
        const size_t bytes = vscsi::packed_ring_region_bytes(cfg);
        FUZZ_CHECK(bytes, "valid config rejected");
        uint8_t* p = mem.add(ring_bus, bytes, 4096, 0xcc);
        mem.add(data_bus, size_t(cfg.size) * token_stride, 16, 0x5a);
        books.allocate(vscsi::packed_ring_private_bytes(cfg), 0x3c);
        FUZZ_CHECK(ring.init(cfg, vscsi::dma_region{p, ring_bus, bytes}, books.region()) == vscsi::status::ok,
                   "init failed");
        fresh_peer();
    }

    void fresh_peer() {
        packed_setup s;
        s.size = cfg.size;
        s.desc = ring.desc_bus();
        s.driver_area = ring.driver_area_bus();
        s.device_area = ring.device_area_bus();
        s.indirect = cfg.indirect;
        s.event_idx = cfg.event_idx;
        s.in_order = cfg.in_order;
        peer = std::make_unique<packed_peer>(mem, s);
        id_token.clear();
        pending.clear();
        tokens.clear();
        published_at = 0;
        irq = true;
    }

    uint32_t free_descriptors() const {
        uint32_t used = peer->descriptors_held();
        for (const expected& e : pending) used += e.ndesc;
        return cfg.size - used;
    }
    uint32_t free_tables() const {
        uint32_t used = 0;
        for (const auto& kv : peer->held()) used += kv.second.indirect;
        for (const expected& e : pending) used += e.indirect;
        return (cfg.indirect ? cfg.indirect_tables : 0) - used;
    }

    void check_counts() const {
        FUZZ_CHECK(ring.in_flight() == peer->held().size() + pending.size(), "ring counts %u in flight, device side %zu",
                   ring.in_flight(), peer->held().size() + pending.size());
        FUZZ_CHECK(ring.free_descriptors() == free_descriptors(), "ring has %u descriptors free, expected %u",
                   ring.free_descriptors(), free_descriptors());
        FUZZ_CHECK(ring.broken() == peer->broken(), "ring broken %d, expected %d", ring.broken(), peer->broken());
    }

    void do_add(input& in) {
        chain_request r;
        if (!read_chain_request(in, cfg.size, tokens, r)) return;
        const bool indirect = expect_indirect(cfg, r, free_descriptors(), free_tables());
        const vscsi::status got = check_add(ring, cfg, r, peer->broken(), indirect, free_descriptors());
        // Nothing becomes available before publish(), whatever add() said.
        FUZZ_CHECK(peer->sync().empty(), "a list became available before publish()");
        if (got != vscsi::status::ok) return;
        expected e{r.token, indirect, indirect ? 1u : r.n(), r.out, uint32_t(r.out.size())};
        e.segs.insert(e.segs.end(), r.in.begin(), r.in.end());
        pending.push_back(e);
        peer->note_unpublished(1);
        tokens.insert(r.token);
    }

    void do_publish() {
        const bool had = !pending.empty();
        const bool got = ring.publish();
        const std::vector<uint16_t> fresh = peer->sync();
        FUZZ_CHECK(fresh.size() == pending.size(), "publish() made %zu lists available, %zu were added", fresh.size(),
                   pending.size());
        for (uint16_t id : fresh) {
            const expected& e = pending.front();
            const chain& c = peer->held().at(id);
            FUZZ_CHECK(c.indirect == e.indirect, "list indirect %d, expected %d", c.indirect, e.indirect);
            FUZZ_CHECK(c.descs.size() == e.ndesc, "list of %zu descriptors, expected %u", c.descs.size(), e.ndesc);
            FUZZ_CHECK(c.bufs.size() == e.segs.size(), "list of %zu buffers, added %zu", c.bufs.size(), e.segs.size());
            for (size_t i = 0; i < e.segs.size(); ++i)
                FUZZ_CHECK(c.bufs[i].bus == e.segs[i].addr && c.bufs[i].len == e.segs[i].len &&
                               c.bufs[i].writable == (i >= e.n_out),
                           "buffer %zu of the list differs from what was added", i);
            FUZZ_CHECK(!id_token.count(id), "id %u given to two lists in flight", id);
            id_token[id] = e.token;
            pending.pop_front();
        }
        peer->note_unpublished(-int(fresh.size()));
        const bool want = had && peer->notify_needed(published_at);
        FUZZ_CHECK(got == want, "publish() asks for a notification: %d, expected %d", got, want);
        published_at = peer->avail_total();
    }

    bool do_pop() {
        const packed_peer::prediction p = peer->reap();
        const vscsi::result<vscsi::used_completion> r = ring.pop();
        if (p.broken) {
            FUZZ_CHECK(r.st == vscsi::status::device_broken, "pop() says %s, the ring lied", vscsi::to_string(r.st));
            return false;
        }
        if (p.empty) {
            FUZZ_CHECK(r.st == vscsi::status::empty, "pop() says %s with nothing used", vscsi::to_string(r.st));
            return false;
        }
        FUZZ_CHECK(r.st == vscsi::status::ok, "pop() says %s for a valid used descriptor", vscsi::to_string(r.st));
        const uint32_t token = id_token.at(p.item.id);
        FUZZ_CHECK(r.value.token == token && r.value.len == p.item.len, "pop() gave token %u len %u, expected %u len %u",
                   r.value.token, r.value.len, token, p.item.len);
        tokens.erase(token);
        id_token.erase(p.item.id);
        if (cfg.event_idx && irq && !peer->run_pending())
            FUZZ_CHECK(peer->driver_off_wrap() == peer->reaper_off_wrap(), "driver event offset %#x, reaper at %#x",
                       peer->driver_off_wrap(), peer->reaper_off_wrap());
        return true;
    }

    void do_give_back(input& in) {
        const std::deque<uint16_t>& owed = peer->owed();
        if (owed.empty()) return;
        const uint16_t id = owed[in.u8() % owed.size()];
        const chain& c = peer->held().at(id);
        const uint8_t m = in.u8();
        const uint32_t len = m < 128 ? c.writable : m < 192 ? (c.writable ? in.u32() % (c.writable + 1) : 0)
                                                            : c.writable + 1 + in.u8();
        peer->give_back(id, len);
    }

    // Any descriptor, a little past the device's used position: over lists it holds, or over
    // descriptors the driver is done with, never over lists the driver added and the device
    // has not taken yet. Never one that looks made available in the lap the driver writes
    // there next: this side, reading in ring order as a device does, would take it for the
    // driver's. For a descriptor the driver is done with that is this lap; for one the device
    // holds it is the lap after, since a used descriptor may skip it and the reaper give it
    // back to the driver with the device's flags still in it.
    void do_raw(input& in) {
        const uint64_t at = peer->used_total() + in.below(4);
        const uint8_t k = in.u8();
        const uint16_t id = k < 192 ? uint16_t(k % (cfg.size + 2)) : in.u16();
        const uint32_t len = in.u8() < 192 ? in.u16() % 2048 : in.u32();
        const uint8_t f = in.u8();
        uint16_t flags = f < 160 ? peer->used_bits(at) : f < 224 ? uint16_t(peer->used_bits(at) ^ 0x8080) : in.u16();
        uint64_t pend = 0;
        for (const expected& e : pending) pend += e.ndesc;
        const bool held = at < peer->avail_total();
        const bool done_with = at >= peer->avail_total() + pend && at < peer->reap_total() + cfg.size;
        if (!held && !done_with) return;
        const uint64_t driver_next = held ? at + cfg.size : at;
        if (packed_peer::available(flags, peer->wrap_of(driver_next))) flags ^= packed_peer::f_used;
        peer->put_raw(at, id, len, flags);
    }

    void do_irq(bool on) {
        if (on) {
            const bool want = peer->used_waiting();
            const bool got = ring.enable_interrupts();
            FUZZ_CHECK(got == want, "enable_interrupts() says %d, the ring says %d", got, want);
            if (cfg.event_idx) {
                FUZZ_CHECK(peer->driver_flags() == vscsi::pring::event_desc, "driver event flags %#x after enable",
                           peer->driver_flags());
                if (!peer->run_pending())
                    FUZZ_CHECK(peer->driver_off_wrap() == peer->reaper_off_wrap(), "driver event offset after enable");
            } else {
                FUZZ_CHECK(peer->driver_flags() == vscsi::pring::event_enable, "driver event flags %#x after enable",
                           peer->driver_flags());
            }
        } else {
            ring.disable_interrupts();
            FUZZ_CHECK(peer->driver_flags() == vscsi::pring::event_disable, "driver event flags %#x after disable",
                       peer->driver_flags());
        }
        irq = on;
    }

    void do_reclaim() {
        check_reclaim(ring, tokens, cfg.size);
        fresh_peer();  // checks the ring is zeroed again
    }

    // What happened, for a person replaying one input (VSCSI_FUZZ_TRACE=1).
    void trace(op o) const {
        static const char* const names[] = {"add",      "publish", "pop",    "pop_all", "give_back", "raw",
                                            "skip",     "suppress", "irq_on", "irq_off", "reclaim",   "query"};
        fprintf(stderr, "%-9s in flight %u (%zu pending) taken %llu used %llu reaper %llu device event 0x%04x/%u%s\n",
                names[o], ring.in_flight(), pending.size(), (unsigned long long)peer->avail_total(),
                (unsigned long long)peer->used_total(), (unsigned long long)peer->reap_total(), peer->device_off_wrap(),
                peer->device_flags(), ring.broken() ? " broken" : "");
    }

    void run(input& in) {
        const bool tracing = getenv("VSCSI_FUZZ_TRACE") != nullptr;
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
                case raw_entry: do_raw(in); break;
                case skip: peer->skip(1 + in.below(cfg.size + 2)); break;
                case suppress: {
                    const uint16_t off_wrap = in.u16();
                    const uint8_t f = in.u8();
                    peer->set_device_event(off_wrap, f < 240 ? uint16_t(f % 3) : uint16_t(f));
                    break;
                }
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
            if (tracing) trace(o);
            // A device move leaves the ring's books as its last call left them.
            if (o == give_back || o == raw_entry || o == skip || o == suppress)
                FUZZ_CHECK(books.as_left(), "a device move changed %zu bytes of the ring's books", books.changed());
            else
                books.snapshot();
            check_counts();
        }
        do_reclaim();
    }
};

// The ring's configuration: the first 3 bytes.
//   0  size: 1 + n % 64, or 256 with bit 6 of byte 1 (any size: packed rings need no power of two)
//   1  16 EVENT_IDX, 32 INDIRECT_DESC, 128 IN_ORDER; indirect tables 1 + n % 16 (at most the size)
//   2  descriptors per indirect table (1 + n % 8); chains that go direct while half the ring
//      is free: up to (n >> 3) % 6 descriptors (0: none)
vscsi::ring_config read_config(input& in) {
    const uint8_t a = in.u8(), b = in.u8(), m = in.u8();
    vscsi::ring_config c;
    c.size = (b & 64) ? 256 : 1 + a % 64;
    c.event_idx = b & 16;
    c.indirect = b & 32;
    c.in_order = b & 128;
    if (c.indirect) {
        c.indirect_tables = uint16_t(1 + (b % 16) % c.size);
        c.indirect_max = uint16_t(1 + m % 8);
        c.direct_max = uint16_t((m >> 3) % 6);
    }
    return c;
}

// The scenarios of test_packed_ring.cpp and test_packed_ring_hostile.cpp, as seeds.
struct ring_script : ring_script_base<ring_script, op> {
    ring_script(uint8_t size, bool event_idx, bool indirect, bool in_order, uint8_t tables = 8, uint8_t max = 4) {
        u8(uint8_t(size - 1));
        u8(uint8_t((event_idx ? 16 : 0) | (indirect ? 32 : 0) | (in_order ? 128 : 0) | ((tables - 1) & 15)));
        u8(uint8_t(max - 1));
    }
    // A descriptor `ahead` past the device's used position: id, length, flags (0: used for its
    // lap, 1: the other lap)
    ring_script& raw(uint8_t ahead, uint8_t id, uint16_t len, uint8_t flags = 0) {
        u8(op::raw_entry).u8(ahead).u8(id).u8(0).u16(len).u8(flags ? 200 : 0);
        return *this;
    }
    ring_script& skip(uint8_t k) {
        u8(op::skip).u8(uint8_t(k - 1));
        return *this;
    }
    ring_script& device_event(uint16_t off_wrap, uint8_t flags) {
        u8(op::suppress).u16(off_wrap).u8(flags);
        return *this;
    }
};

std::vector<named_seed> seeds() {
    std::vector<named_seed> out;
    auto put = [&](const std::string& name, const ring_script& s) { out.emplace_back(name, s.bytes); };
    for (uint8_t size : {uint8_t(1), uint8_t(3), uint8_t(8), uint8_t(64)}) {
        for (int mode = 0; mode < 8; ++mode) {
            ring_script s(size, mode & 1, mode & 2, mode & 4, uint8_t(1 + size / 2));
            for (int round = 0; round < 6; ++round) {
                s.add(1, 1).add(0, 1).add(2, 3).o(op::publish);
                for (int k = 0; k < 3; ++k) s.give_back(0);
                s.o(op::pop_all);
            }
            s.o(op::irq_off).add(1, 1).o(op::publish).give_back(0).o(op::irq_on).o(op::pop).o(op::query);
            put("roundtrip-" + std::to_string(size) + "-" + std::to_string(mode), s);
        }
    }
    {
        ring_script s(7, false, false, false);  // many laps of an odd size
        for (int i = 0; i < 40; ++i) s.add(1, 1).o(op::publish).give_back(0).o(op::pop);
        put("laps", s);
        ring_script f(4, false, false, false);  // a full ring says busy; completions make room
        f.add(1, 1).add(1, 1).add(1, 1).o(op::publish).give_back(1).o(op::pop).add(1, 1).add(1, 1).o(op::publish);
        put("full-ring", f);
        ring_script a(8, false, true, false, 2, 4);
        a.add(0, 0).add(3, 6).add(1, 1, 1).o(op::publish);  // argument errors; indirect; direct
        put("arguments-and-indirect", a);
        ring_script o(8, false, false, false);  // out of order
        o.add(1, 1).add(1, 2).add(0, 1).o(op::publish).give_back(1).give_back(1).give_back(0).o(op::pop_all);
        put("out-of-order", o);
        ring_script r(8, false, false, true);  // in order: one used descriptor for a run
        r.add(1, 1).add(1, 1).add(1, 1).add(1, 1).o(op::publish).give_back(2).o(op::pop_all).give_back(0).o(op::pop);
        put("in-order-run", r);
    }
    {
        ring_script e(8, true, false, false);  // EVENT_IDX: notify when the named descriptor is passed
        e.device_event(0x8005, 2).add(0, 1).add(0, 1).o(op::publish).add(0, 1).add(0, 1).add(0, 1).add(0, 1).o(op::publish);
        e.give_back(0).o(op::pop_all).o(op::irq_off).o(op::irq_on).device_event(0x0001, 2).add(0, 1).o(op::publish);
        put("event-idx", e);
        ring_script n(8, false, false, false);
        n.device_event(0, 1).add(1, 1).o(op::publish).device_event(0, 0).add(1, 1).o(op::publish).o(op::irq_off).o(op::irq_on);
        put("event-flags", n);
    }
    const char* lies[] = {"id-past-ring", "free-id", "duplicate", "len-past-buffer", "nothing-in-flight", "unpublished",
                          "other-lap", "skip"};
    for (int lie = 0; lie < 8; ++lie) {
        for (bool in_order : {false, true}) {
            ring_script s(8, false, false, in_order);
            s.add(1, 1).add(1, 1).add(1, 1).o(op::publish);
            switch (lie) {
                case 0: s.raw(0, 8, 0); break;
                case 1: s.raw(0, 6, 0); break;
                case 2: s.give_back(0).o(op::pop).raw(0, 0, 0); break;
                case 3: s.give_back(0, 192); break;
                case 4: s.give_back(0).give_back(0).give_back(0).o(op::pop_all).raw(0, 1, 0); break;
                case 5: s.add(0, 1).raw(0, 3, 0); break;
                case 6: s.raw(0, 0, 16, 1); break;
                case 7: s.skip(3).give_back(0); break;
            }
            s.o(op::pop).o(op::pop).add(1, 1).o(op::reclaim).add(1, 1).o(op::publish).give_back(0).o(op::pop);
            put(std::string("lie-") + lies[lie] + (in_order ? "-in-order" : ""), s);
        }
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
