// Request queues handed to their own owners (initiator::take_queue, queue_handle): ownership
// rules, I/O through handles, the escalation hand-over to the control owner, resets that
// wait for every owner, and giving queues back. One thread plays every owner in turn here,
// so each interleaving is exact; tests/loopback/test_threads.cpp runs them on threads.
#include <catch2/catch.hpp>

#include <set>
#include <type_traits>
#include <vector>

#include <vscsi/scsi.hpp>

#include "initiator_fixture.hpp"

using namespace vscsi;
using fixture::rig;
using fixture::rw10;
using fixture::tur;
using vscsi::loopback::personality;
using modern_t = modern_pci<loopback::device>;
using rig_t = rig<modern_t>;
using handle_t = rig_t::initiator_t::queue_handle;

// What cannot compile: a handle is one owner's, so it is not copied; it moves.
static_assert(!std::is_copy_constructible_v<handle_t>, "a queue handle has one owner");
static_assert(!std::is_copy_assignable_v<handle_t>, "a queue handle has one owner");
static_assert(std::is_nothrow_move_constructible_v<handle_t>, "handles move to their threads");
static_assert(std::is_nothrow_move_assignable_v<handle_t>, "handles move to their threads");

namespace {
// A queue owner's handler: completions only (TMFs, AN and events are the control owner's).
struct completions {
    std::vector<io_completion> done;
    void on_complete(const io_completion& c) { done.push_back(c); }
};

loopback::options two_queues() {
    loopback::options o;
    o.kind = personality::modern;
    o.num_queues = 2;
    o.cmd_per_lun = 64;
    return o;
}
initiator_config two_queue_config(initiator_config c = {}) {
    c.max_request_queues = 2;
    c.slots = 16;
    return c;
}

struct env {
    rig_t r;
    explicit env(loopback::options o = two_queues(), initiator_config c = two_queue_config()) : r(o, c) {
        r.dev->add_lun(0, 0, 4096);
        r.dev->add_lun(0, 1, 4096);
        REQUIRE(r.start() == status::ok);
        REQUIRE(r.ini->request_queues() == 2);
        for (uint16_t lun : {0, 1}) {
            r.command(0, lun, tur(), nullptr, 0);  // the power-on unit attention
            REQUIRE(r.command(0, lun, tur(), nullptr, 0).outcome == io_outcome::good);
        }
        r.rec.clear();
    }
    io_request request(const std::vector<uint8_t>& cdb, uint64_t ud, uint16_t lun = 0) {
        io_request q{};
        q.lun = lun;
        q.cdb = cdb.data();
        q.cdb_len = uint32_t(cdb.size());
        q.user_data = ud;
        return q;
    }
};
}  // namespace

TEST_CASE("take_queue hands each queue to one owner, and only while running", "[handle]") {
    env e;
    auto& ini = *e.r.ini;
    handle_t a, b, c;
    CHECK(!a.valid());
    CHECK(ini.take_queue(2, a) == status::invalid_argument);  // no such queue
    REQUIRE(ini.take_queue(0, a) == status::ok);
    CHECK(a.valid());
    CHECK(a.queue() == 0);
    CHECK(ini.take_queue(0, b) == status::busy);             // someone has it
    CHECK(ini.take_queue(1, a) == status::invalid_argument); // a is not empty
    REQUIRE(ini.take_queue(1, b) == status::ok);
    // The initiator's own calls leave handed-out queues alone.
    const auto cdb = tur();
    io_request q = e.request(cdb, 1);
    q.queue = 0;
    CHECK(ini.submit(q, e.r.now).st == status::invalid_argument);
    q.queue = 1;
    CHECK(ini.submit(q, e.r.now).st == status::invalid_argument);
    // stop() and start() want every handle back first.
    CHECK(ini.stop(e.r.rec) == status::busy);
    CHECK(ini.start(e.r.cfg, e.r.dma(), e.r.shadow->region()) == status::busy);
    // Moving a handle moves the ownership; the moved-from one can do nothing.
    c = std::move(a);
    CHECK(!a.valid());
    CHECK(c.valid());
    CHECK(a.submit(q, e.r.now).st == status::invalid_argument);
    completions none;
    CHECK(a.poll(e.r.now, none) == 0);
    // Giving queues back: dropping a handle, or release().
    c.release();
    CHECK(!c.valid());
    q.queue = 0;
    CHECK(ini.submit(q, e.r.now).ok());
    { handle_t moved(std::move(b)); }
    q.queue = 1;
    CHECK(ini.submit(q, e.r.now).ok());
    ini.kick();
    e.r.settle();
    CHECK(e.r.rec.done.size() == 2);
    REQUIRE(ini.stop(e.r.rec) == status::ok);
    handle_t d;
    CHECK(ini.take_queue(0, d) == status::needs_reset);  // not running
}

TEST_CASE("I/O through two handles: each owner sees its own completions, tags unique across queues", "[handle]") {
    env e;
    auto& ini = *e.r.ini;
    handle_t h[2];
    REQUIRE(ini.take_queue(0, h[0]) == status::ok);
    REQUIRE(ini.take_queue(1, h[1]) == status::ok);
    CHECK(ini.queue_slots(0) + ini.queue_slots(1) == 16);
    completions got[2];
    std::set<uint64_t> tags;
    uint8_t* data = e.r.buf();
    std::vector<std::vector<uint8_t>> cdbs;
    for (int round = 0; round < 50; ++round) {
        for (int k = 0; k < 2; ++k) {
            // Queue k writes 8 blocks of its own pattern to LUN k, then reads them back.
            uint8_t* buf = data + (k * 2 + 0) * 4096;
            memset(buf, uint8_t(0x10 * (k + 1) + round), 4096);
            cdbs.push_back(rw10(true, uint32_t(round * 8), 8));
            io_request w = e.request(cdbs.back(), uint64_t(k * 1000 + round * 2), uint16_t(k));
            sg_entry so{e.r.data->bus_of(buf), 4096};
            w.data_out = &so;
            w.n_out = 1;
            w.queue = uint16_t(1 - k);  // ignored by a handle
            const auto s = h[k].submit(w, e.r.now);
            REQUIRE(s.ok());
            CHECK(tags.insert(s.value).second);
            h[k].kick();
        }
        e.r.dev->step();
        completions ctl;
        CHECK(ini.poll(e.r.now, e.r.rec) == 0);  // nothing of the handles' comes here
        for (int k = 0; k < 2; ++k) {
            CHECK(h[k].poll(e.r.now, got[k]) == 1);
            REQUIRE(got[k].done.back().outcome == io_outcome::good);
            CHECK(got[k].done.back().user_data == uint64_t(k * 1000 + round * 2));
            uint8_t* in = data + (k * 2 + 1) * 4096;
            memset(in, 0, 4096);
            cdbs.push_back(rw10(false, uint32_t(round * 8), 8));
            io_request rd = e.request(cdbs.back(), uint64_t(k * 1000 + round * 2 + 1), uint16_t(k));
            sg_entry si{e.r.data->bus_of(in), 4096};
            rd.data_in = &si;
            rd.n_in = 1;
            const auto s = h[k].submit(rd, e.r.now);
            REQUIRE(s.ok());
            CHECK(tags.insert(s.value).second);
            h[k].kick();
        }
        e.r.dev->step();
        for (int k = 0; k < 2; ++k) {
            CHECK(h[k].poll(e.r.now, got[k]) == 1);
            REQUIRE(got[k].done.back().outcome == io_outcome::good);
            const uint8_t* in = data + (k * 2 + 1) * 4096;
            for (int i = 0; i < 4096; ++i) REQUIRE(in[i] == uint8_t(0x10 * (k + 1) + round));
        }
    }
    CHECK(e.r.rec.done.empty());
    CHECK(got[0].done.size() == 100);
    CHECK(got[1].done.size() == 100);
    CHECK(ini.stats().completed >= 200);
    CHECK(ini.in_flight() == 0);
    CHECK(e.r.dev->violations().empty());
}

TEST_CASE("a queue's slots are its own: a full queue is busy while the other has room", "[handle]") {
    env e;
    auto& ini = *e.r.ini;
    handle_t h0, h1;
    REQUIRE(ini.take_queue(0, h0) == status::ok);
    REQUIRE(ini.take_queue(1, h1) == status::ok);
    const auto cdb = tur();
    uint32_t n0 = 0;
    while (h0.submit(e.request(cdb, n0), e.r.now).ok()) ++n0;
    CHECK(n0 == ini.queue_slots(0));
    CHECK(h0.submit(e.request(cdb, 99), e.r.now).st == status::busy);
    CHECK(h1.submit(e.request(cdb, 100), e.r.now).ok());
    CHECK(h0.in_flight() == n0);
    CHECK(h1.in_flight() == 1);
    CHECK(ini.in_flight() == n0 + 1);
}

TEST_CASE("cmd_per_lun holds across queue owners", "[handle][cmd_per_lun]") {
    loopback::options o = two_queues();
    o.cmd_per_lun = 3;
    env e(o);
    auto& ini = *e.r.ini;
    REQUIRE(ini.cmd_per_lun() == 3);
    handle_t h0, h1;
    REQUIRE(ini.take_queue(0, h0) == status::ok);
    REQUIRE(ini.take_queue(1, h1) == status::ok);
    const auto cdb = tur();
    CHECK(h0.submit(e.request(cdb, 1), e.r.now).ok());
    CHECK(h1.submit(e.request(cdb, 2), e.r.now).ok());
    CHECK(h0.submit(e.request(cdb, 3), e.r.now).ok());
    CHECK(h1.submit(e.request(cdb, 4), e.r.now).st == status::busy);  // LUN 0 is at 3
    CHECK(h0.submit(e.request(cdb, 5), e.r.now).st == status::busy);
    CHECK(h1.submit(e.request(cdb, 6, 1), e.r.now).ok());  // LUN 1 is not
    h0.kick();
    h1.kick();
    e.r.dev->step();
    completions c0, c1;
    CHECK(h0.poll(e.r.now, c0) == 2);
    CHECK(h1.submit(e.request(cdb, 7), e.r.now).ok());  // room again
    CHECK(h1.poll(e.r.now, c1) == 2);
}

TEST_CASE("a lost command on a handle's queue: re-kicked by its owner, aborted through the control owner",
          "[handle][escalation]") {
    env e(two_queues(), two_queue_config(fixture::fast_ladder()));
    auto& ini = *e.r.ini;
    handle_t h;
    REQUIRE(ini.take_queue(1, h) == status::ok);
    completions got;
    e.r.dev->fault().hold_next = 1;  // the device sits on it; ABORT TASK gets it back
    const auto cdb = tur();
    const auto s = h.submit(e.request(cdb, 42), e.r.now);
    REQUIRE(s.ok());
    h.kick();
    e.r.dev->step();
    REQUIRE(e.r.dev->held_count() == 1);
    CHECK(h.poll(e.r.now, got) == 0);
    // Past its deadline: its owner re-kicks it.
    e.r.now += 2000;
    h.poll(e.r.now, got);
    CHECK(ini.stats().rekicks == 1);
    CHECK(ini.stats().aborts_sent == 0);
    // Past the next step: its owner hands it over; the control owner sends ABORT TASK.
    e.r.now += 2000;
    h.poll(e.r.now, got);
    CHECK(ini.stats().aborts_sent == 0);  // nobody has polled the control side yet
    ini.poll(e.r.now, e.r.rec);
    CHECK(ini.stats().aborts_sent == 1);
    e.r.dev->step();  // the device aborts it
    CHECK(e.r.dev->last_tmf_subtype() == uint32_t(tmf::abort_task));
    CHECK(e.r.dev->last_tmf_tag() == s.value);
    ini.poll(e.r.now, e.r.rec);  // the TMF completes on the control side ...
    CHECK(got.done.empty());
    CHECK(h.poll(e.r.now, got) == 1);  // ... the command on its own queue's side
    REQUIRE(got.done.size() == 1);
    CHECK(got.done[0].user_data == 42);
    CHECK(got.done[0].tag == s.value);
    CHECK(got.done[0].outcome == io_outcome::timed_out);  // ABORTED by the ladder: it was lost
    CHECK(e.r.rec.done.empty());
    CHECK(e.r.rec.tmfs.empty());  // ladder TMFs are not the caller's
    CHECK(ini.stats().lun_resets_sent == 0);
    CHECK(ini.stats().device_resets == 0);
    // The ladder is done with it: time passing climbs no further.
    for (int i = 0; i < 10; ++i) {
        e.r.now += 2000;
        ini.poll(e.r.now, e.r.rec);
        h.poll(e.r.now, got);
        e.r.dev->step();
    }
    CHECK(ini.stats().lun_resets_sent == 0);
    CHECK(ini.stats().device_resets == 0);
}

TEST_CASE("a command lost for good climbs the ladder to a reset that waits for every queue owner",
          "[handle][escalation][reset]") {
    env e(two_queues(), two_queue_config(fixture::fast_ladder()));
    auto& ini = *e.r.ini;
    handle_t h0, h1;
    REQUIRE(ini.take_queue(0, h0) == status::ok);
    REQUIRE(ini.take_queue(1, h1) == status::ok);
    completions g0, g1;
    e.r.dev->fault().lose_next = 1;  // never completes; no TMF gets it back
    const auto cdb = tur();
    REQUIRE(h0.submit(e.request(cdb, 7), e.r.now).ok());
    h0.kick();
    e.r.dev->step();
    e.r.dev->fault().hold_next = 1;  // h1's command: held, reclaimed by the reset
    REQUIRE(h1.submit(e.request(cdb, 8), e.r.now + 1000000).ok());
    h1.kick();
    e.r.dev->step();
    uint64_t resets_before = ini.stats().device_resets;
    bool h1_acked = false;
    for (int i = 0; i < 40 && ini.stats().device_resets == resets_before; ++i) {
        e.r.now += 1500;
        h0.poll(e.r.now, g0);
        ini.poll(e.r.now, e.r.rec);
        e.r.dev->step();
        // h1's owner is slow to call in: the reset must wait for it.
        if (ini.stats().nexus_resets_sent && !h1_acked) {
            // The I_T NEXUS RESET came back and the command is still out: a step later the
            // ladder ends in a reset, which waits for both owners.
            ini.poll(e.r.now + 100000, e.r.rec);
            ini.poll(e.r.now + 200000, e.r.rec);
            CHECK(ini.stats().device_resets == resets_before);
            h1.poll(e.r.now, g1);  // it stops here, acknowledging
            h1_acked = true;
        }
    }
    CHECK(ini.stats().aborts_sent == 1);
    CHECK(ini.stats().lun_resets_sent == 1);
    CHECK(ini.stats().nexus_resets_sent == 1);
    CHECK(ini.stats().device_resets == resets_before + 1);
    CHECK(ini.state() == initiator_state::running);
    // Each owner takes back what the reset reclaimed at its next poll.
    CHECK(g0.done.empty());
    CHECK(g1.done.empty());
    CHECK(h0.in_flight() == 1);
    h0.poll(e.r.now, g0);
    h1.poll(e.r.now, g1);
    REQUIRE(g0.done.size() == 1);
    CHECK(g0.done[0].user_data == 7);
    CHECK(g0.done[0].outcome == io_outcome::timed_out);
    REQUIRE(g1.done.size() == 1);
    CHECK(g1.done[0].user_data == 8);
    CHECK(g1.done[0].outcome == io_outcome::device_reset);
    CHECK(ini.in_flight() == 0);
    // And carry on.
    e.r.dev->fault().hold_next = 0;
    REQUIRE(h1.submit(e.request(cdb, 9), e.r.now).ok());
    h1.kick();
    e.r.dev->step();
    CHECK(h1.poll(e.r.now, g1) == 1);
    CHECK(g1.done.back().outcome == io_outcome::check_condition);  // the reset's unit attention
    CHECK(e.r.dev->violations().empty());
}

TEST_CASE("reset_device() with handles out: busy until every owner has stopped", "[handle][reset]") {
    env e;
    auto& ini = *e.r.ini;
    handle_t h;
    REQUIRE(ini.take_queue(0, h) == status::ok);
    completions got;
    e.r.dev->fault().hold_next = 2;
    const auto cdb = tur();
    REQUIRE(h.submit(e.request(cdb, 1), e.r.now).ok());
    io_request mine = e.request(cdb, 2);
    mine.queue = 1;
    REQUIRE(ini.submit(mine, e.r.now).ok());
    h.kick();
    ini.kick();
    e.r.dev->step();
    const uint64_t resets = ini.stats().device_resets;
    CHECK(ini.reset_device(e.r.rec) == status::busy);
    CHECK(ini.poll(e.r.now, e.r.rec) == 0);
    CHECK(ini.stats().device_resets == resets);
    handle_t other;
    CHECK(ini.take_queue(1, other) == status::busy);  // not while a reset is under way
    CHECK(h.submit(e.request(cdb, 3), e.r.now).st == status::busy);  // the owner stops ...
    ini.poll(e.r.now, e.r.rec);                                       // ... so the reset goes ahead
    CHECK(ini.stats().device_resets == resets + 1);
    REQUIRE(e.r.rec.done.size() == 1);  // the control owner's own command
    CHECK(e.r.rec.done[0].user_data == 2);
    CHECK(e.r.rec.done[0].outcome == io_outcome::device_reset);
    CHECK(h.submit(e.request(cdb, 4), e.r.now).st == status::busy);  // poll first: it has one to take back
    CHECK(h.poll(e.r.now, got) == 0);
    REQUIRE(got.done.size() == 1);
    CHECK(got.done[0].user_data == 1);
    CHECK(got.done[0].outcome == io_outcome::device_reset);
    CHECK(h.submit(e.request(cdb, 5), e.r.now).ok());
}

TEST_CASE("a lie on a handle's ring: the owner stops, the control owner resets, the owner reclaims", "[handle][reset]") {
    env e(two_queues(), two_queue_config());
    auto& ini = *e.r.ini;
    handle_t h;
    REQUIRE(ini.take_queue(1, h) == status::ok);
    completions got;
    const auto cdb = tur();
    REQUIRE(h.submit(e.request(cdb, 1), e.r.now).ok());
    REQUIRE(h.submit(e.request(cdb, 2), e.r.now).ok());
    h.kick();
    e.r.dev->fault().lie_bad_id = true;
    e.r.dev->step();
    CHECK(h.poll(e.r.now, got) == 0);
    CHECK(ini.stats().protocol_errors == 1);
    const uint64_t resets = ini.stats().device_resets;
    CHECK(h.poll(e.r.now, got) == 0);  // latched: counted once
    CHECK(ini.stats().protocol_errors == 1);
    ini.poll(e.r.now, e.r.rec);  // asks the owner to stop
    CHECK(ini.stats().device_resets == resets);
    h.poll(e.r.now, got);        // stops
    ini.poll(e.r.now, e.r.rec);  // resets
    CHECK(ini.stats().device_resets == resets + 1);
    h.poll(e.r.now, got);  // takes back both
    REQUIRE(got.done.size() == 2);
    for (const auto& c : got.done) CHECK(c.outcome == io_outcome::device_reset);
    CHECK(ini.in_flight() == 0);
}

TEST_CASE("a handle given back with commands in flight hands them to the control owner", "[handle]") {
    env e;
    auto& ini = *e.r.ini;
    handle_t h;
    REQUIRE(ini.take_queue(0, h) == status::ok);
    e.r.dev->fault().hold_next = 2;
    const auto cdb = tur();
    REQUIRE(h.submit(e.request(cdb, 11), e.r.now).ok());
    REQUIRE(h.submit(e.request(cdb, 12), e.r.now).ok());
    h.kick();
    e.r.dev->step();
    h.release();
    CHECK(e.r.dev->release_held() == 2);
    ini.poll(e.r.now, e.r.rec);
    REQUIRE(e.r.rec.done.size() == 2);
    CHECK(e.r.rec.done[0].outcome == io_outcome::good);
    CHECK(e.r.rec.done[0].user_data + e.r.rec.done[1].user_data == 23);
    // Taken again, and given back mid-reset: the control owner takes back what it had.
    REQUIRE(ini.take_queue(0, h) == status::ok);
    e.r.dev->fault().hold_next = 1;
    REQUIRE(h.submit(e.request(cdb, 13), e.r.now).ok());
    h.kick();
    e.r.dev->step();
    e.r.rec.clear();
    CHECK(ini.reset_device(e.r.rec) == status::busy);
    completions got;
    h.poll(e.r.now, got);  // stops
    h.release();           // and leaves before the reset is done
    ini.poll(e.r.now, e.r.rec);
    REQUIRE(e.r.rec.done.size() == 1);
    CHECK(e.r.rec.done[0].user_data == 13);
    CHECK(e.r.rec.done[0].outcome == io_outcome::device_reset);
    CHECK(got.done.empty());
    CHECK(ini.stop(e.r.rec) == status::ok);
}

TEST_CASE("a reset still waiting for owners when the initiator stops is not carried into the next start",
          "[handle][reset][regression]") {
    // Found by fuzz_handles: NEEDS_RESET started a reset that waited for a handle's owner;
    // the handle was given back and the initiator stopped and started again, and the next
    // poll reset the freshly started device (and a stopped one would have been reset too).
    env e;
    auto& ini = *e.r.ini;
    handle_t h;
    REQUIRE(ini.take_queue(0, h) == status::ok);
    CHECK(ini.reset_device(e.r.rec) == status::busy);
    CHECK(ini.resetting());
    h.release();
    const uint64_t resets = e.r.dev->stats().resets;
    REQUIRE(ini.stop(e.r.rec) == status::ok);
    CHECK(!ini.resetting());
    ini.poll(e.r.now, e.r.rec);  // stopped: touches nothing
    CHECK(e.r.dev->stats().resets == resets + 1);
    REQUIRE(ini.start(e.r.cfg, e.r.dma(), e.r.shadow->region()) == status::ok);
    const uint64_t started = ini.stats().device_resets;
    for (int i = 0; i < 5; ++i) ini.poll(e.r.now, e.r.rec);
    CHECK(ini.stats().device_resets == started);
    REQUIRE(ini.take_queue(0, h) == status::ok);
    completions got;
    const auto cdb = tur();
    REQUIRE(h.submit(e.request(cdb, 1), e.r.now).ok());
    h.kick();
    e.r.dev->step();
    CHECK(h.poll(e.r.now, got) == 1);
}
