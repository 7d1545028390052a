// Data integrity end to end: over a million random reads and writes of mixed sizes (512 B
// to 1 MiB, scattered over up to seg_max segments) across 4 LUNs on 2 targets, at every
// queue depth up to the ring size, on both transports, with and without indirect
// descriptors and EVENT_IDX, for queue sizes from 2 to 1024. Every block read is checked
// against a model of what was last written there. And the driver's own state, kept out of
// the DMA region, against a device that writes anywhere in that region.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include <vscsi/scsi.hpp>

#include "initiator_fixture.hpp"

using namespace vscsi;
using fixture::rig;
using fixture::rw10;
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
    bool packed = false;    // the device offers packed rings (modern interface)
    bool in_order = false;  // ... and IN_ORDER
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
    o.packed = md.packed;
    o.in_order = md.in_order;
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
    REQUIRE(r.ini->packed() == md.packed);
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
    std::printf("  %-12s %-6s queue %4u indirect %d event_idx %d in_order %d: %7llu I/Os, %6llu MiB, depths 1..%u\n",
                md.kind == personality::modern ? "modern" : md.kind == personality::legacy ? "legacy" : "transitional",
                md.packed ? "packed" : "split", md.qsize, md.indirect, md.event_idx, md.in_order,
                (unsigned long long)done, (unsigned long long)(bytes >> 20), max_depth);
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
        // Packed rings: sizes, indirect and EVENT_IDX as above, in order or not, and the
        // modern interface of a transitional device.
        {personality::modern, 4, false, false, 40000, true},
        {personality::modern, 16, true, false, 60000, true},
        {personality::modern, 128, false, true, 80000, true},
        {personality::modern, 256, true, true, 120000, true},
        {personality::modern, 1024, true, true, 120000, true},
        {personality::modern, 64, true, true, 60000, true, true},
        {personality::modern, 256, false, false, 60000, true, true},
        {personality::transitional, 512, true, true, 60000, true},
    };
    uint64_t total = 0;
    uint64_t seed = 1;
    for (const mode& m : modes) {
        mode scaled = m;
        scaled.ios = std::max<uint64_t>(m.ios * scale / 100, 64);
        INFO("transport " << (m.kind == personality::modern ? "modern" : m.kind == personality::legacy ? "legacy" : "transitional")
                          << (m.packed ? " packed" : " split") << " queue " << m.qsize << " indirect " << m.indirect
                          << " event_idx " << m.event_idx << " in_order " << m.in_order);
        if (m.kind == personality::modern || m.packed)
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

// A device that writes anywhere in the DMA region it was given (ring indices, used entries,
// descriptors, the available ring, request and response headers, sense, event buffers), as a
// device behind an IOMMU still can, while random reads and writes go on. The driver's
// bookkeeping lives in a private region the device is never given, between two guard areas:
// it is compared with a copy of itself around every device step, so anything the device did
// to it would show. Throughout, every request completes exactly once and only after it was
// submitted, with its own tag and lengths clamped to its buffers, and the driver's in-flight
// count stays true; lies latch rings broken and reset the device. (What a lying device
// writes into data buffers or headers is its own business: data is checked once it stops.)
// Afterwards the same driver, never restarted, moves verified data again.
namespace {
template <class Transport>
void stomp_run(personality kind, uint64_t seed, uint32_t steps, bool packed = false) {
    loopback::options o;
    o.kind = kind;
    o.packed = packed;
    o.queue_max = 64;
    o.cmd_per_lun = 64;
    initiator_config c = fixture::fast_ladder();
    c.max_queue_size = 64;
    c.slots = 32;
    c.max_segments = 8;
    c.max_request_queues = 2;
    o.num_queues = 2;
    rig<Transport> r(o, c, 4 << 20);
    lun_model luns[2] = {{0, 0, 512, 8192, {}, {}}, {0, 3, 4096, 1024, {}, {}}};
    for (lun_model& m : luns) {
        REQUIRE(r.dev->add_lun(m.target, m.lun, m.blocks, m.block_size));
        m.version.assign(m.blocks, 0);
    }
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    for (const lun_model& m : luns) r.command(m.target, m.lun, fixture::tur(), nullptr, 0);  // unit attentions
    r.rec.clear();

    std::mt19937_64 rng(seed);
    const auto& books = *r.shadow;
    std::vector<uint8_t> copy(books.virt, books.virt + books.bytes);
    auto driver_left_it = [&] { copy.assign(books.virt, books.virt + books.bytes); };
    auto untouched = [&] { return std::memcmp(copy.data(), books.virt, books.bytes) == 0; };

    struct outstanding {
        uint64_t tag;
        uint32_t len;
    };
    std::map<uint64_t, outstanding> out;  // by user data
    uint64_t next_ud = 1, completed = 0, good = 0, not_good = 0;
    auto& f = r.dev->fault();
    f.stomp_bus = r.region->bus;
    f.stomp_len = r.region->bytes;
    f.stomp_seed = seed;
    const uint32_t slot_bytes = 64 << 10;
    uint8_t cdb[16];
    for (uint32_t step = 0; step < steps; ++step) {
        // Submit a few requests of random shape to random LUNs and queues.
        for (uint32_t k = uint32_t(rng() % 4); k > 0; --k) {
            const lun_model& m = luns[rng() % 2];
            const uint32_t blocks = 1 + uint32_t(rng() % (slot_bytes / m.block_size));
            const uint64_t lba = rng() % (m.blocks - blocks + 1);
            const bool write = rng() & 1;
            const uint32_t len = blocks * m.block_size;
            uint8_t* buf = r.buf(size_t(next_ud % 48) * slot_bytes);
            sg_entry sg[3];
            const uint32_t a = len / 3 & ~511u, b = len / 3 & ~511u;
            uint32_t nseg = 0;
            if (a) sg[nseg++] = sg_entry{r.data->bus_of(buf), a};
            if (b) sg[nseg++] = sg_entry{r.data->bus_of(buf + a), b};
            sg[nseg++] = sg_entry{r.data->bus_of(buf + a + b), len - a - b};
            io_request q{};
            q.target = m.target;
            q.lun = m.lun;
            q.cdb = cdb;
            q.cdb_len = scsi::read_write(cdb, 16, write, lba, blocks);
            (write ? q.data_out : q.data_in) = sg;
            (write ? q.n_out : q.n_in) = nseg;
            q.queue = uint16_t(rng());
            q.user_data = next_ud;
            const auto s = r.ini->submit(q, r.now);
            if (s.st != status::ok) {
                REQUIRE((s.st == status::busy || s.st == status::needs_reset));
                break;
            }
            out[next_ud++] = outstanding{s.value, len};
        }
        r.ini->kick();
        driver_left_it();

        // The device: now and then a burst of random writes into the DMA region, then it
        // works through whatever the rings say.
        f.stomp_writes = rng() % 3 == 0 ? 1 + uint32_t(rng() % 4) : 0;
        r.dev->step();
        REQUIRE(untouched());

        r.now += 50 + rng() % 400;  // deadlines pass: lost commands climb the ladder
        r.rec.clear();
        if (r.ini->state() == initiator_state::failed) r.ini->reset_device(r.rec);
        r.ini->poll(r.now, r.rec);
        for (const io_completion& x : r.rec.done) {
            auto it = out.find(x.user_data);
            INFO("user data " << x.user_data << " outcome " << to_string(x.outcome));
            REQUIRE(it != out.end());  // never completed twice, never unasked for
            CHECK(x.tag == it->second.tag);
            CHECK(x.residual <= it->second.len);
            CHECK(x.transferred == it->second.len - x.residual);
            CHECK(x.sense_len <= 96);
            (x.outcome == io_outcome::good ? good : not_good) += 1;
            out.erase(it);
            ++completed;
        }
        REQUIRE(r.ini->in_flight() == out.size());
    }
    f.stomp_writes = 0;
    // Take back whatever the device still holds: a reset completes it all.
    r.rec.clear();
    REQUIRE(r.ini->reset_device(r.rec) == status::ok);
    for (const io_completion& x : r.rec.done) {
        REQUIRE(out.count(x.user_data) == 1);
        out.erase(x.user_data);
    }
    CHECK(out.empty());
    CHECK(r.ini->in_flight() == 0);
    CHECK(books.guards_intact());
    const initiator_stats& st = r.ini->stats();
    std::printf("  %-6s %-6s %u steps: %llu runs of random bytes, %llu completions (%llu good), %llu lies caught, "
                "%llu device resets\n",
                kind == personality::modern ? "modern" : "legacy", packed ? "packed" : "split", steps,
                (unsigned long long)r.dev->stats().stomps, (unsigned long long)completed, (unsigned long long)good,
                (unsigned long long)st.protocol_errors, (unsigned long long)st.device_resets);
    // The run did what it claims: the device wrote, lied and was reset, and work got done.
    CHECK(r.dev->stats().stomps > steps / 4);
    CHECK(st.protocol_errors > 0);
    CHECK(st.device_resets > 1);
    CHECK(good > 0);
    CHECK(not_good > 0);

    // The device behaves again: the same driver moves data that reads back as written.
    r.dev->clear_violations();
    const uint64_t errors_before = st.protocol_errors;
    for (const lun_model& m : luns) r.command(m.target, m.lun, fixture::tur(), nullptr, 0);  // unit attentions
    uint32_t version = 0;
    for (int i = 0; i < 200; ++i) {
        lun_model& m = luns[i % 2];
        const uint32_t blocks = 1 + uint32_t(rng() % 16);
        const uint64_t lba = rng() % (m.blocks - blocks + 1);
        uint8_t* buf = r.buf(0);
        fill(m, buf, lba, blocks, ++version);
        REQUIRE(r.command(m.target, m.lun, rw10(true, uint32_t(lba), uint16_t(blocks)), nullptr, 0, buf,
                          blocks * m.block_size)
                    .outcome == io_outcome::good);
        for (uint32_t k = 0; k < blocks; ++k) m.version[lba + k] = version;
        std::memset(buf, 0xee, blocks * m.block_size);
        REQUIRE(r.command(m.target, m.lun, rw10(false, uint32_t(lba), uint16_t(blocks)), buf, blocks * m.block_size)
                    .outcome == io_outcome::good);
        REQUIRE(check(m, buf, lba, blocks) == 0);
    }
    CHECK(r.ini->stats().protocol_errors == errors_before);
    CHECK(r.dev->violations().empty());
    CHECK(books.guards_intact());
}
}  // namespace

TEST_CASE("a device writing anywhere in its DMA region reaches nothing of the driver's", "[loopback][integrity][private]") {
    const char* scale_env = std::getenv("VSCSI_INTEGRITY_SCALE");
    const uint32_t scale = scale_env ? uint32_t(std::strtoul(scale_env, nullptr, 10)) : 100;
    const uint32_t steps = std::max<uint32_t>(20000 * scale / 100, 2000);
    stomp_run<modern_pci<loopback::device>>(personality::modern, 11, steps);
    stomp_run<legacy_pci<loopback::device>>(personality::legacy, 12, steps);
    stomp_run<modern_pci<loopback::device>>(personality::modern, 13, steps, true);
}
