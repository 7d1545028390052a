// Request queues on threads of their own: four queue owners, each with a queue_handle, do
// verified random reads and writes at once, submitting and polling without locks, while the
// loopback device answers from its own thread and the test's thread is the control owner.
// In the middle, a command held by the device is re-kicked by its owner and aborted through
// the control owner's ladder, and the device is reset: every owner stops, the reset goes
// ahead, and each owner takes back what was in flight before it carries on. Every block
// read back holds what its owner last wrote, and the disk agrees at the end.
#include <catch2/catch.hpp>

#include <time.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <vscsi/scsi.hpp>

#include "initiator_fixture.hpp"

using namespace vscsi;
using fixture::rig;
using vscsi::loopback::personality;
using rig_t = rig<modern_pci<loopback::device>>;
using handle_t = rig_t::initiator_t::queue_handle;

namespace {

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

constexpr uint32_t block = 512;
constexpr uint32_t blocks_per_owner = 4096;
constexpr uint32_t depth = 6;
constexpr uint32_t max_blocks = 32;  // per request
constexpr uint16_t data_lun = 0, probe_lun = 1;

// A block's content says which owner wrote it, where, and with which write.
uint64_t word(uint64_t lba, uint32_t version, uint32_t i) {
    return (lba << 32) ^ (uint64_t(version) << 8) ^ (uint64_t(i) * 0x9e3779b97f4a7c15ull);
}

struct owner {
    handle_t h;
    uint8_t* buffers = nullptr;  // depth buffers of max_blocks blocks, in the DMA data area
    uint64_t (*bus_of)(const rig_t&, const void*) = nullptr;
    const rig_t* r = nullptr;
    uint64_t first_lba = 0;
    uint32_t seed = 0;
    std::atomic<bool>* stop = nullptr;
    std::atomic<bool> probe_wanted{false};

    // What it saw.
    std::atomic<uint64_t> good{0};  // the control owner watches these two
    std::atomic<bool> probe_done{false};
    uint64_t lost_to_reset = 0, unit_attentions = 0, verified = 0;
    std::string failure;
    io_outcome probe_outcome = io_outcome::good;
    std::vector<uint32_t> version;  // per block: last write that completed good; 0 never, ~0 unknown

    struct ctx {
        bool busy = false, write = false, probe = false;
        uint64_t lba = 0;
        uint32_t n = 0, ver = 0;
        uint8_t cdb[16];
    };
    ctx c[depth + 1];
    std::vector<uint8_t> block_busy;

    struct handler {
        owner* o;
        void on_complete(const io_completion& x) { o->completed(x); }
    };

    uint8_t* buf(uint32_t i) { return buffers + size_t(i) * max_blocks * block; }

    void fail(const std::string& why) {
        if (failure.empty()) failure = why;
    }

    void completed(const io_completion& x) {
        if (x.user_data > depth) return fail("completion with unknown user data");
        ctx& k = c[x.user_data];
        if (!k.busy) return fail("completed twice");
        k.busy = false;
        if (k.probe) {
            probe_outcome = x.outcome;
            probe_done.store(true, std::memory_order_release);
            return;
        }
        for (uint32_t b = 0; b < k.n; ++b) block_busy[k.lba - first_lba + b] = 0;
        if (x.outcome == io_outcome::good) {
            good.fetch_add(1, std::memory_order_relaxed);
            if (k.write) {
                for (uint32_t b = 0; b < k.n; ++b) version[k.lba - first_lba + b] = k.ver;
                return;
            }
            for (uint32_t b = 0; b < k.n; ++b) {
                const uint32_t v = version[k.lba - first_lba + b];
                if (v == ~0u) continue;  // a write lost to the reset: unknown
                const uint64_t* w = reinterpret_cast<const uint64_t*>(buf(uint32_t(x.user_data)) + size_t(b) * block);
                for (uint32_t i = 0; i < block / 8; ++i)
                    if (w[i] != (v ? word(k.lba + b, v, i) : 0)) return fail("read back something not written");
                ++verified;
            }
            return;
        }
        // A write that did not complete good may or may not have reached the disk.
        if (k.write)
            for (uint32_t b = 0; b < k.n; ++b) version[k.lba - first_lba + b] = ~0u;
        if (x.outcome == io_outcome::device_reset)
            ++lost_to_reset;
        else if (x.outcome == io_outcome::check_condition && x.sense_len >= 14 && (x.sense[2] & 0x0f) == 6)
            ++unit_attentions;  // the reset's unit attention
        else
            fail(std::string("unexpected outcome: ") + to_string(x.outcome));
    }

    void run() {
        std::mt19937 rng(seed);
        version.assign(blocks_per_owner, 0);
        block_busy.assign(blocks_per_owner, 0);
        handler hd{this};
        uint32_t writes = 0;
        for (;;) {
            const uint64_t now = now_ns();
            const bool stopping = stop->load(std::memory_order_acquire);
            uint32_t in_flight = 0;
            for (const ctx& k : c) in_flight += k.busy;
            if (stopping && in_flight == 0) break;
            bool submitted = false;
            if (probe_wanted.load(std::memory_order_acquire) && !c[depth].busy && !probe_done) {
                // One read of the probe LUN with a short timeout: the device holds it.
                ctx& k = c[depth];
                io_request q{};
                q.lun = probe_lun;
                q.cdb = k.cdb;
                q.cdb_len = scsi::read_write(k.cdb, 16, false, 0, 1);
                const sg_entry sg{bus_of(*r, buf(depth)), block};
                q.data_in = &sg;
                q.n_in = 1;
                q.timeout_ns = 20 * 1000 * 1000;
                q.user_data = depth;
                const auto s = h.submit(q, now);
                if (s.ok()) {
                    k = ctx{true, false, true, 0, 1, 0, {}};
                    scsi::read_write(k.cdb, 16, false, 0, 1);
                    probe_wanted.store(false, std::memory_order_relaxed);
                    submitted = true;
                }
            }
            for (uint32_t i = 0; i < depth && !stopping; ++i) {
                ctx& k = c[i];
                if (k.busy) continue;
                const uint32_t n = 1 + rng() % max_blocks;
                const uint64_t off = rng() % (blocks_per_owner - n + 1);
                bool clash = false;
                for (uint32_t b = 0; b < n && !clash; ++b) clash = block_busy[off + b];
                if (clash) continue;
                k.write = rng() & 1;
                k.lba = first_lba + off;
                k.n = n;
                k.probe = false;
                if (k.write) {
                    k.ver = ++writes;
                    auto* w = reinterpret_cast<uint64_t*>(buf(i));
                    for (uint32_t b = 0; b < n; ++b)
                        for (uint32_t j = 0; j < block / 8; ++j) w[b * (block / 8) + j] = word(k.lba + b, k.ver, j);
                } else {
                    std::memset(buf(i), 0xee, size_t(n) * block);
                }
                io_request q{};
                q.lun = data_lun;
                q.cdb = k.cdb;
                q.cdb_len = scsi::read_write(k.cdb, 16, k.write, k.lba, n);
                const sg_entry sg{bus_of(*r, buf(i)), n * block};
                (k.write ? q.data_out : q.data_in) = &sg;
                (k.write ? q.n_out : q.n_in) = 1;
                q.user_data = i;
                const auto s = h.submit(q, now);
                if (s.st == status::busy) break;  // a reset is under way, or the queue is full
                if (!s.ok()) {
                    fail(std::string("submit: ") + to_string(s.st));
                    break;
                }
                k.busy = true;
                for (uint32_t b = 0; b < n; ++b) block_busy[off + b] = 1;
                submitted = true;
            }
            if (submitted) h.kick();
            if (h.poll(now, hd) == 0 && !submitted) std::this_thread::yield();
            if (!failure.empty()) {
                stop->store(true);
                break;
            }
        }
    }
};

uint64_t bus_in(const rig_t& r, const void* p) { return r.data->bus_of(p); }

}  // namespace

TEST_CASE("four queue owners on threads: verified I/O through an escalation and a device reset",
          "[loopback][threads]") {
    constexpr uint16_t owners = 4;
    loopback::options o;
    o.kind = personality::modern;
    o.num_queues = owners;
    o.cmd_per_lun = 256;
    initiator_config c;
    c.max_request_queues = owners;
    c.slots = 64;
    c.max_segments = 4;
    c.default_timeout_ns = 30ull * 1000 * 1000 * 1000;  // no ordinary command escalates, however slow
    c.escalation_step_ns = 2ull * 1000 * 1000 * 1000;    // the ABORT TASK comes back well before
    c.scan_interval_ns = 1000 * 1000;
    rig_t r(o, c, 8 << 20);
    REQUIRE(r.dev->add_lun(0, data_lun, blocks_per_owner * owners, block));
    REQUIRE(r.dev->add_lun(0, probe_lun, 64, block));
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->request_queues() == owners);
    for (uint16_t lun : {data_lun, probe_lun}) r.command(0, lun, fixture::tur(), nullptr, 0);  // unit attentions
    r.rec.clear();
    auto& ini = *r.ini;

    std::atomic<bool> stop{false};
    std::vector<owner> own(owners);
    for (uint16_t q = 0; q < owners; ++q) {
        owner& w = own[q];
        REQUIRE(ini.take_queue(q, w.h) == status::ok);
        w.buffers = r.buf(size_t(q) * (depth + 1) * max_blocks * block);
        w.bus_of = bus_in;
        w.r = &r;
        w.first_lba = uint64_t(q) * blocks_per_owner;
        w.seed = 100 + q;
        w.stop = &stop;
    }
    r.dev->start_thread();
    std::vector<std::thread> threads;
    for (owner& w : own) threads.emplace_back([&w] { w.run(); });

    // The control owner: poll until `done` or `ms` pass.
    auto control = [&](uint64_t ms, auto done) {
        const uint64_t end = now_ns() + ms * 1000000;
        while (!done() && now_ns() < end && !stop.load()) {
            ini.poll(now_ns(), r.rec);
            std::this_thread::yield();
        }
        return done();
    };
    auto total_good = [&] {
        uint64_t n = 0;
        for (const owner& w : own) n += w.good.load(std::memory_order_relaxed);
        return n;
    };
    // Phase 1: I/O.
    control(10000, [&] { return total_good() >= 4000; });

    // A command the device holds, on owner 0's queue: re-kicked, handed over, aborted.
    r.dev->stop_thread();
    r.dev->fault().hold_next = 1;
    r.dev->fault().hold_only_lun = probe_lun;
    r.dev->start_thread();
    own[0].probe_wanted.store(true, std::memory_order_release);
    const bool probed = control(60000, [&] { return own[0].probe_done.load(std::memory_order_acquire); });
    CHECK(probed);
    const uint64_t good_before_reset = total_good();
    control(10000, [&] { return total_good() >= good_before_reset + 2000; });

    // A device reset with every queue busy: it waits for all four owners to stop.
    r.dev->stop_thread();  // the loopback device is reset only while its thread is stopped
    const uint64_t resets = ini.stats().device_resets;
    const status rs = ini.reset_device(r.rec);
    CHECK((rs == status::ok || rs == status::busy));
    const bool reset_done = control(60000, [&] { return ini.stats().device_resets > resets; });
    CHECK(reset_done);
    CHECK(ini.state() == initiator_state::running);
    r.dev->start_thread();
    const uint64_t good_after_reset = total_good();
    control(10000, [&] { return total_good() >= good_after_reset + 4000; });

    stop.store(true, std::memory_order_release);
    for (std::thread& t : threads) t.join();  // each drains its queue first
    r.dev->stop_thread();

    uint64_t good = 0, lost = 0, uas = 0, verified = 0;
    for (owner& w : own) {
        INFO("owner " << w.h.queue());
        CHECK(w.failure.empty());
        if (!w.failure.empty()) std::printf("  owner %u: %s\n", unsigned(w.h.queue()), w.failure.c_str());
        good += w.good;
        lost += w.lost_to_reset;
        uas += w.unit_attentions;
        verified += w.verified;
        CHECK(w.good > 500);
        // The disk holds what each owner last wrote.
        const uint8_t* disk = r.dev->lun_data(0, data_lun);
        uint32_t wrong = 0;
        for (uint32_t b = 0; b < blocks_per_owner; ++b) {
            const uint32_t v = w.version[b];
            if (v == ~0u) continue;
            const uint64_t lba = w.first_lba + b;
            const auto* x = reinterpret_cast<const uint64_t*>(disk + lba * block);
            for (uint32_t i = 0; i < block / 8; ++i)
                if (x[i] != (v ? word(lba, v, i) : 0)) {
                    ++wrong;
                    break;
                }
        }
        CHECK(wrong == 0);
    }
    CHECK(own[0].probe_done.load());
    CHECK(own[0].probe_outcome == io_outcome::timed_out);  // lost, aborted by the ladder
    const initiator_stats st = ini.stats();
    CHECK(st.rekicks >= 1);
    CHECK(st.aborts_sent == 1);
    CHECK(st.lun_resets_sent == 0);
    CHECK(st.device_resets == resets + 1);
    CHECK(lost > 0);  // the reset found commands in flight
    CHECK(uas <= 2);
    CHECK(ini.in_flight() == 0);
    CHECK(r.dev->violations().empty());
    CHECK(r.rec.done.empty());  // nothing of the owners' came to the control owner
    std::printf("threads: %u owners, %llu good completions (%llu blocks verified), %llu lost to the reset, "
                "%llu unit attentions, %llu re-kicks, %llu aborts\n",
                unsigned(owners), (unsigned long long)good, (unsigned long long)verified, (unsigned long long)lost,
                (unsigned long long)uas, (unsigned long long)st.rekicks, (unsigned long long)st.aborts_sent);
    for (owner& w : own) w.h.release();
    CHECK(ini.stop(r.rec) == status::ok);
}
