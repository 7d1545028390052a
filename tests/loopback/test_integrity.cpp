// Data integrity end to end: over a million random reads and writes of mixed sizes (512 B
// to 1 MiB, scattered over up to seg_max segments) across 4 LUNs on 2 targets, at every
// queue depth up to the ring size, on both transports, with and without indirect
// descriptors and EVENT_IDX, for queue sizes from 2 to 1024. Every block read is checked
// against a model of what was last written there.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <vscsi/scsi.hpp>

#include "initiator_fixture.hpp"

using namespace vscsi;
using fixture::rig;
using vscsi::loopback::personality;

namespace {

struct lun_model {
    uint8_t target;
    uint16_t lun;
    uint32_t block_size;
    uint32_t blocks;
    std::vector<uint32_t> version;  // what was last written to each block (0: never)
    std::vector<uint8_t> busy;      // blocks an in-flight request touches
};

// The content of a block is a function of where it is and which write put it there.
inline uint64_t word(const lun_model& m, uint64_t lba, uint32_t version, uint32_t i) {
    return (uint64_t(m.target) << 56) ^ (uint64_t(m.lun) << 40) ^ (lba << 16) ^ (uint64_t(version) << 1) ^
           (uint64_t(i) * 0x9e3779b97f4a7c15ull);
}

void fill(const lun_model& m, uint8_t* buf, uint64_t lba, uint32_t n, uint32_t version) {
    for (uint32_t b = 0; b < n; ++b) {
        auto* w = reinterpret_cast<uint64_t*>(buf + size_t(b) * m.block_size);
        for (uint32_t i = 0; i < m.block_size / 8; ++i) w[i] = word(m, lba + b, version, i);
    }
}

// Number of blocks that do not hold what the model says.
uint32_t check(const lun_model& m, const uint8_t* buf, uint64_t lba, uint32_t n) {
    uint32_t bad = 0;
    for (uint32_t b = 0; b < n; ++b) {
        const uint32_t v = m.version[lba + b];
        const auto* w = reinterpret_cast<const uint64_t*>(buf + size_t(b) * m.block_size);
        for (uint32_t i = 0; i < m.block_size / 8; ++i) {
            const uint64_t want = v ? word(m, lba + b, v, i) : 0;
            if (w[i] != want) {
                ++bad;
                break;
            }
        }
    }
    return bad;
}

struct mode {
    personality kind;
    uint32_t qsize;
    bool indirect;
    bool event_idx;
    uint64_t ios;
};

struct in_flight {
    bool write;
    uint32_t lun_index;
    uint64_t lba;
    uint32_t blocks;
    uint32_t version;
    uint8_t* buf;
};

template <class Transport>
uint64_t run_mode(const mode& md, uint64_t seed) {
    loopback::options o;
    o.kind = md.kind;
    o.queue_max = md.qsize;
    o.indirect = md.indirect;
    o.event_idx = md.event_idx;
    o.cmd_per_lun = 1024;
    initiator_config c;
    c.max_queue_size = md.qsize;
    c.slots = uint16_t(md.qsize);
    c.max_segments = 64;
    const size_t data_budget = 48u << 20;
    rig<Transport> r(o, c, data_budget);
    std::vector<lun_model> luns = {{0, 0, 512, 32768, {}, {}},
                                   {0, 1, 512, 16384, {}, {}},
                                   {1, 0, 4096, 4096, {}, {}},
                                   {1, 2, 512, 16384, {}, {}}};
    for (lun_model& m : luns) {
        REQUIRE(r.dev->add_lun(m.target, m.lun, m.blocks, m.block_size));
        m.version.assign(m.blocks, 0);
        m.busy.assign(m.blocks, 0);
    }
    REQUIRE(r.start() == status::ok);
    for (const lun_model& m : luns) {
        // Consume each LUN's power-on unit attention.
        REQUIRE(r.command(m.target, m.lun, fixture::tur(), nullptr, 0).outcome == io_outcome::check_condition);
    }
    r.rec.clear();
    const uint32_t qsize = r.ini->queue_size(0);
    REQUIRE(qsize == md.qsize);
    // A chain carries the two headers too, and must fit the ring (checklist 42).
    const uint32_t max_segs = std::min<uint32_t>({r.ini->max_data_segments(), r.ini->device_config().seg_max,
                                                  qsize - 2});
    std::mt19937_64 rng(seed);
    uint64_t done = 0, issued = 0, bytes = 0;
    std::vector<in_flight> slots(qsize);
    std::vector<uint32_t> free_slots;
    std::vector<uint8_t> cdbs(size_t(qsize) * 16);
    uint32_t version = 0;

    // Depth phases: 1, 2, ..., up to the ring size, each taking its share of the I/Os.
    const uint32_t max_depth = std::min<uint32_t>(qsize, c.slots);
    const uint64_t per_depth = std::max<uint64_t>(md.ios / max_depth, 8);
    for (uint32_t depth = 1; depth <= max_depth && issued < md.ios; ++depth) {
        const size_t slot_bytes = std::min<size_t>(1u << 20, (data_budget / depth) & ~size_t(4095));
        free_slots.clear();
        for (uint32_t i = 0; i < depth; ++i) free_slots.push_back(i);
        const uint64_t phase_end = std::min<uint64_t>(md.ios, issued + per_depth);
        uint32_t outstanding = 0;
        while (issued < phase_end || outstanding) {
            while (issued < phase_end && !free_slots.empty()) {
                const uint32_t li = uint32_t(rng() % luns.size());
                lun_model& m = luns[li];
                // Mostly small, sometimes large: 512 B .. 1 MiB.
                const uint32_t pick = uint32_t(rng() % 100);
                uint64_t want = pick < 85 ? 512u << (rng() % 5) : pick < 98 ? 4096u << (rng() % 6) : (128u << 10) << (rng() % 4);
                want = std::min<uint64_t>(want, slot_bytes);
                const uint32_t nblocks = uint32_t(std::max<uint64_t>(1, want / m.block_size));
                const uint64_t lba = rng() % (m.blocks - nblocks + 1);
                bool clash = false;
                for (uint32_t b = 0; b < nblocks && !clash; ++b) clash = m.busy[lba + b];
                if (clash) break;  // wait for completions to free those blocks
                const uint32_t slot = free_slots.back();
                in_flight& f = slots[slot];
                f.write = rng() & 1;
                f.lun_index = li;
                f.lba = lba;
                f.blocks = nblocks;
                f.buf = r.buf(size_t(slot) * slot_bytes);
                const uint32_t len = nblocks * m.block_size;
                if (f.write) {
                    f.version = ++version;
                    fill(m, f.buf, lba, nblocks, f.version);
                } else {
                    std::memset(f.buf, 0xee, len);
                }
                // Scatter over up to max_segs segments of random lengths.
                sg_entry sg[64];
                const uint32_t nseg = 1 + uint32_t(rng() % std::min<uint32_t>(max_segs, len / 512 ? len / 512 : 1));
                uint32_t off = 0;
                for (uint32_t s = 0; s < nseg; ++s) {
                    const uint32_t left = len - off;
                    const uint32_t rest = nseg - s - 1;
                    uint32_t l = s + 1 == nseg ? left : 1 + uint32_t(rng() % (left - rest));
                    sg[s] = sg_entry{r.data->bus_of(f.buf + off), l};
                    off += l;
                }
                uint8_t* cdb = &cdbs[size_t(slot) * 16];
                const uint32_t clen = scsi::read_write(cdb, 16, f.write, lba, nblocks);
                REQUIRE(clen != 0);
                io_request q{};
                q.target = m.target;
                q.lun = m.lun;
                q.cdb = cdb;
                q.cdb_len = clen;
                (f.write ? q.data_out : q.data_in) = sg;
                (f.write ? q.n_out : q.n_in) = nseg;
                q.user_data = slot;
                q.queue = uint16_t(rng());
                const auto s = r.ini->submit(q, r.now);
                if (s.st == status::busy) break;
                REQUIRE(s.st == status::ok);
                for (uint32_t b = 0; b < nblocks; ++b) m.busy[lba + b] = 1;
                free_slots.pop_back();
                ++outstanding;
                ++issued;
            }
            r.ini->kick();
            r.dev->step();
            r.rec.done.clear();
            r.rec.sense.clear();
            r.ini->poll(r.now, r.rec);
            for (const io_completion& cpl : r.rec.done) {
                REQUIRE(cpl.outcome == io_outcome::good);
                in_flight& f = slots[cpl.user_data];
                lun_model& m = luns[f.lun_index];
                const uint32_t len = f.blocks * m.block_size;
                REQUIRE(cpl.transferred == len);
                if (f.write) {
                    for (uint32_t b = 0; b < f.blocks; ++b) m.version[f.lba + b] = f.version;
                } else {
                    const uint32_t bad = check(m, f.buf, f.lba, f.blocks);
                    INFO("lun " << int(m.target) << ":" << m.lun << " lba " << f.lba << " blocks " << f.blocks);
                    REQUIRE(bad == 0);
                }
                for (uint32_t b = 0; b < f.blocks; ++b) m.busy[f.lba + b] = 0;
                bytes += len;
                free_slots.push_back(uint32_t(cpl.user_data));
                --outstanding;
                ++done;
            }
        }
    }
    // Everything the model says is on the disks is there.
    for (lun_model& m : luns) {
        const uint8_t* disk = r.dev->lun_data(m.target, m.lun);
        REQUIRE(check(m, disk, 0, m.blocks) == 0);
    }
    CHECK(r.dev->violations().empty());
    CHECK(r.ini->stats().protocol_errors == 0);
    CHECK(r.ini->in_flight() == 0);
    std::printf("  %-12s queue %4u indirect %d event_idx %d: %7llu I/Os, %6llu MiB, depths 1..%u\n",
                md.kind == personality::modern ? "modern" : md.kind == personality::legacy ? "legacy" : "transitional",
                md.qsize, md.indirect, md.event_idx, (unsigned long long)done, (unsigned long long)(bytes >> 20),
                max_depth);
    return done;
}

}  // namespace

TEST_CASE("a million random I/Os keep every block intact", "[loopback][integrity]") {
    // VSCSI_INTEGRITY_SCALE (percent) shrinks the run, e.g. under sanitizers.
    const char* scale_env = std::getenv("VSCSI_INTEGRITY_SCALE");
    const uint64_t scale = scale_env ? std::strtoull(scale_env, nullptr, 10) : 100;
    const mode modes[] = {
        {personality::modern, 4, false, false, 60000},
        {personality::modern, 16, true, false, 80000},   {personality::modern, 128, false, true, 100000},
        {personality::modern, 256, true, true, 160000},  {personality::modern, 1024, true, true, 150000},
        {personality::legacy, 4, true, true, 40000},     {personality::legacy, 64, false, false, 80000},
        {personality::legacy, 256, true, false, 160000}, {personality::legacy, 1024, false, true, 100000},
        {personality::transitional, 512, true, true, 80000},
    };
    uint64_t total = 0;
    uint64_t seed = 1;
    for (const mode& m : modes) {
        mode scaled = m;
        scaled.ios = std::max<uint64_t>(m.ios * scale / 100, 64);
        INFO("transport " << (m.kind == personality::modern ? "modern" : m.kind == personality::legacy ? "legacy" : "transitional(legacy)")
                          << " queue " << m.qsize << " indirect " << m.indirect << " event_idx " << m.event_idx);
        if (m.kind == personality::modern)
            total += run_mode<modern_pci<loopback::device>>(scaled, seed++);
        else
            total += run_mode<legacy_pci<loopback::device>>(scaled, seed++);
    }
    std::printf("integrity: %llu I/Os in all\n", (unsigned long long)total);
    if (scale >= 100) CHECK(total >= 1000000);
}

// A ring of 2 holds one chain of two descriptors (or two indirect ones): the two headers and
// no data segment (checklist 42; QEMU's seg_max for it is 0). Commands without data run;
// a data command is refused before it reaches the device.
TEST_CASE("a two-entry ring carries commands without data and refuses data cleanly", "[loopback]") {
    for (bool indirect : {false, true}) {
        loopback::options o;
        o.kind = personality::modern;
        o.queue_max = 2;
        o.indirect = indirect;
        initiator_config c;
        c.max_queue_size = 2;
        rig<modern_pci<loopback::device>> r(o, c);
        r.dev->add_lun(0, 0, 64);
        REQUIRE(r.start() == status::ok);
        REQUIRE(r.ini->queue_size(0) == 2);
        REQUIRE(r.command(0, 0, fixture::tur(), nullptr, 0).outcome == io_outcome::check_condition);
        uint8_t cdb[16];
        const uint32_t n = scsi::synchronize_cache(cdb, 16);
        io_request q{};
        q.cdb = cdb;
        q.cdb_len = n;
        uint64_t done = 0;
        for (int round = 0; round < 10000; ++round) {
            uint32_t submitted = 0;
            while (r.ini->submit(q, r.now).st == status::ok) ++submitted;
            REQUIRE(submitted == (indirect ? 2u : 1u));
            r.ini->kick();
            r.dev->step();
            r.rec.done.clear();
            r.ini->poll(r.now, r.rec);
            for (const io_completion& x : r.rec.done) REQUIRE(x.outcome == io_outcome::good);
            done += r.rec.done.size();
        }
        CHECK(done == (indirect ? 20000u : 10000u));
        sg_entry sg{r.data->bus, 512};
        const uint32_t rn = scsi::read_write(cdb, 16, false, 0, 1);
        q.cdb_len = rn;
        q.data_in = &sg;
        q.n_in = 1;
        CHECK(r.ini->submit(q, r.now).st == status::invalid_argument);
        CHECK(r.dev->violations().empty());
    }
}
