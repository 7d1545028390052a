#include "bench.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <time.h>

#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "latency_histogram.hpp"
#include "pattern.hpp"
#include "progress.hpp"
#include "session.hpp"

namespace vscsi_uio {

using namespace vscsi;
using vscsi::uio::controller;

bool parse_rw(const std::string& s, rw_mode& out) {
    for (rw_mode m : {rw_mode::randread, rw_mode::randwrite, rw_mode::read, rw_mode::write, rw_mode::randrw})
        if (s == to_string(m)) {
            out = m;
            return true;
        }
    return false;
}

const char* to_string(rw_mode m) {
    switch (m) {
        case rw_mode::randread: return "randread";
        case rw_mode::randwrite: return "randwrite";
        case rw_mode::read: return "read";
        case rw_mode::write: return "write";
        case rw_mode::randrw: return "randrw";
    }
    return "?";
}

namespace {

double cpu_seconds(const timeval& tv) { return double(tv.tv_sec) + double(tv.tv_usec) / 1e6; }

// What a load reports.
struct tally {
    latency_histogram lat[2];  // read, write
    uint64_t errors = 0;
    io_outcome first_error = io_outcome::good;
    uint64_t verified = 0;     // --verify: reads checked against the pattern
    uint64_t corrupt = 0;      // ... and of those, reads that did not hold it
    uint64_t first_corrupt_lba = ~0ull;
    void merge(const tally& o) {
        lat[0].merge(o.lat[0]);
        lat[1].merge(o.lat[1]);
        if (!errors) first_error = o.first_error;
        errors += o.errors;
        verified += o.verified;
        if (!corrupt) first_corrupt_lba = o.first_corrupt_lba;
        corrupt += o.corrupt;
    }
};

// The load on one port, where commands go and completions come from: the initiator itself
// (one thread, spread over every queue) or one queue's handle (a thread of its own). Every
// completion resubmits its slot at once, so `iodepth` commands stay queued.
template <class Port>
struct load {
    load(Port& port_, const bench_params& params) : port(port_), p(params) {}
    Port& port;
    const bench_params& p;
    uint32_t blocks_per_io = 0;
    uint64_t span = 0;            // I/O-sized units on the LUN
    uint64_t cursor = 0;          // sequential modes
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    uint64_t now = 0;
    bool stopping = false;
    uint16_t queues = 1;          // spread over (the initiator's port)
    std::vector<uint64_t> submitted_at;
    std::vector<uint8_t> is_write;
    std::vector<uint64_t> unit_of;     // where each slot's command goes, in I/O-sized units
    std::vector<uint8_t*> buf_of;      // each slot's data buffer
    std::vector<uint8_t> cdbs;
    std::vector<sg_entry> sgs;    // per slot, up to max_sg
    std::vector<uint32_t> nsg;
    static constexpr uint32_t max_sg = 16;
    tally t;
    uint64_t in_flight = 0;
    uint64_t t0 = 0, t1 = 0;      // what it measured over

    uint64_t next_random() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
    }

    // Buffers, scattered into DMA segments: `first` is this load's first in the data area.
    template <class Controller>
    bool prepare(Controller& c, uint32_t first, std::string& err) {
        blocks_per_io = p.bs / p.lun.cap.block_size;
        span = p.lun.cap.blocks() / blocks_per_io;
        submitted_at.assign(p.iodepth, 0);
        is_write.assign(p.iodepth, 0);
        unit_of.assign(p.iodepth, 0);
        buf_of.assign(p.iodepth, nullptr);
        cdbs.assign(size_t(p.iodepth) * 16, 0);
        sgs.assign(size_t(p.iodepth) * max_sg, sg_entry{});
        nsg.assign(p.iodepth, 0);
        if (size_t(first + p.iodepth) * p.bs > c.data_bytes()) {
            err = "internal: data buffers too small";
            return false;
        }
        for (uint32_t s = 0; s < p.iodepth; ++s) {
            uint8_t* buf = c.data() + size_t(first + s) * p.bs;
            for (uint32_t i = 0; i < p.bs; ++i) buf[i] = uint8_t(i * 7 + s);  // what writes write
            buf_of[s] = buf;
            nsg[s] = c.memory().scatter(buf, p.bs, &sgs[size_t(s) * max_sg], max_sg);
            if (!nsg[s]) {
                err = fmt::format("--bs {} needs too many DMA segments", p.bs);
                return false;
            }
        }
        rng ^= uint64_t(first) * 0x2545F4914F6CDD1Dull;  // each load its own sequence
        cursor = uint64_t(first) * 7919;
        return true;
    }

    bool submit(uint32_t slot) {
        bool write;
        uint64_t unit;
        switch (p.mode) {
            case rw_mode::randread: write = false; unit = next_random() % span; break;
            case rw_mode::randwrite: write = true; unit = next_random() % span; break;
            case rw_mode::read: write = false; unit = cursor++ % span; break;
            case rw_mode::write: write = true; unit = cursor++ % span; break;
            default: {
                const uint64_t r = next_random();
                write = (r >> 63) != 0;  // half reads, half writes
                unit = r % span;
            }
        }
        // --verify: what a write puts on the disk is the pattern for those blocks, so the disk
        // keeps holding it whatever order concurrent writes land in.
        if (write && p.verify) fill_pattern(buf_of[slot], unit * p.bs, p.bs, p.seed);
        uint8_t* cdb = &cdbs[size_t(slot) * 16];
        const uint32_t n = scsi::read_write(cdb, 16, write, unit * blocks_per_io, blocks_per_io);
        io_request r{};
        r.target = p.lun.target;
        r.lun = p.lun.lun;
        r.cdb = cdb;
        r.cdb_len = n;
        const sg_entry* sg = &sgs[size_t(slot) * max_sg];
        if (write) {
            r.data_out = sg;
            r.n_out = nsg[slot];
        } else {
            r.data_in = sg;
            r.n_in = nsg[slot];
        }
        r.queue = uint16_t(slot % queues);
        r.user_data = slot;
        if (port.submit(r, now).st != status::ok) return false;
        submitted_at[slot] = now;
        is_write[slot] = write;
        unit_of[slot] = unit;
        ++in_flight;
        return true;
    }

    bool start() {
        for (uint32_t s = 0; s < p.iodepth; ++s)
            if (!submit(s)) return false;
        port.kick();
        return true;
    }

    // One turn of the polled loop: no system call, no allocation per I/O.
    void turn(uint64_t t) {
        now = t;
        port.poll(now, *this);
        port.kick();
    }

    void on_complete(const io_completion& x) {
        const uint32_t slot = uint32_t(x.user_data);
        --in_flight;
        if (x.outcome != io_outcome::good) {
            if (!t.errors) t.first_error = x.outcome;
            ++t.errors;
        } else {
            // Clocks read on CPUs that disagree a little may put a completion before its
            // submission: that is no latency at all, not 2^64 ns of it.
            t.lat[is_write[slot]].add(now > submitted_at[slot] ? now - submitted_at[slot] : 0);
            if (p.verify && !is_write[slot]) {
                ++t.verified;
                if (!matches_pattern(buf_of[slot], unit_of[slot] * p.bs, p.bs, p.seed)) {
                    if (!t.corrupt) t.first_corrupt_lba = unit_of[slot] * blocks_per_io;
                    ++t.corrupt;
                }
            }
        }
        if (!stopping) submit(slot);
    }
    void on_tmf(const tmf_completion&) {}
    void on_an(const an_completion&) {}
    void on_event(const event_info&) {}
};

// What the initiator's own poll() delivers while queue owners run: nothing of theirs.
struct control_handler {
    void on_complete(const io_completion&) {}
    void on_tmf(const tmf_completion&) {}
    void on_an(const an_completion&) {}
    void on_event(const event_info&) {}
};

void pin_to_cpu(unsigned cpu) {
    const unsigned n = std::thread::hardware_concurrency();
    if (n < 2) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % n, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  // best effort
}

void print_percentiles_json(const latency_histogram& h) {
    static const double pcts[] = {1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99};
    fmt::print("\"percentile\": {{");
    for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; ++i)
        fmt::print("{}\"{:.6f}\": {}", i ? ", " : "", pcts[i], h.percentile(pcts[i]));
    fmt::print("}}");
}

void print_direction_json(const char* name, const latency_histogram& h, uint32_t bs, double secs) {
    const uint64_t ios = h.count();
    const double iops = secs > 0 ? double(ios) / secs : 0;
    const double bw = iops * bs;
    fmt::print("      \"{}\": {{\"io_bytes\": {}, \"io_kbytes\": {}, \"bw_bytes\": {:.0f}, \"bw\": {:.0f}, "
               "\"iops\": {:.3f}, \"runtime\": {:.0f}, \"total_ios\": {}, \"short_ios\": 0, \"drop_ios\": 0,\n",
               name, ios * bs, ios * bs / 1024, bw, bw / 1024, iops, secs * 1000, ios);
    for (const char* key : {"lat_ns", "clat_ns"}) {
        fmt::print("        \"{}\": {{\"min\": {}, \"max\": {}, \"mean\": {:.3f}, \"stddev\": {:.3f}, \"N\": {}, ", key,
                   h.min(), h.max(), h.mean(), h.stddev(), ios);
        print_percentiles_json(h);
        fmt::print("}}{}\n", key[0] == 'l' ? "," : "");
    }
    fmt::print("      }}");
}

void print_direction_text(const char* name, const latency_histogram& h, uint32_t bs, double secs) {
    const double iops = secs > 0 ? double(h.count()) / secs : 0;
    fmt::print("  {:5}: {:.0f} IOPS, {:.1f} MiB/s, latency mean {:.1f} us, p50 {:.1f} us, p99 {:.1f} us, "
               "p99.9 {:.1f} us, max {:.1f} us\n",
               name, iops, iops * bs / 1048576.0, h.mean() / 1000, double(h.percentile(50)) / 1000,
               double(h.percentile(99)) / 1000, double(h.percentile(99.9)) / 1000, double(h.max()) / 1000);
}

// One thread over every queue: the load is the control owner too, and may sleep on the
// interrupt.
template <class Controller>
bool run_single(Controller& c, const bench_params& p, const volatile bool& stop, tally& out, double& secs,
                uint16_t& queues, std::string& err) {
    using ini_t = std::remove_reference_t<decltype(c.ini())>;
    load<ini_t> L(c.ini(), p);
    if (!L.prepare(c, 0, err)) return false;
    L.queues = queues = c.ini().request_queues();
    const uint64_t t0 = c.now();
    const uint64_t end = t0 + uint64_t(p.runtime_s * 1e9);
    L.now = t0;
    if (!L.start()) {
        err = fmt::format("could not queue {} commands", p.iodepth);
        return false;
    }
    progress bar("bench");
    uint64_t next_bar = t0;
    for (;;) {
        const uint64_t now = c.now();
        if (now >= end || stop) break;
        L.turn(now);
        if (c.ini().state() != initiator_state::running) break;
        if (c.irq_mode() && L.in_flight) c.sleep_for_interrupt(end - L.now);
        if (L.now >= next_bar) {
            bar.update(double(L.now - t0) / double(end - t0));
            next_bar = L.now + 100000000ull;
        }
    }
    const uint64_t t1 = L.now;
    L.stopping = true;
    // Drain what is still queued, so the device owns none of our buffers.
    const uint64_t drain_end = c.now() + 30000000000ull;
    while (L.in_flight && c.now() < drain_end && c.ini().state() == initiator_state::running) {
        L.now = c.now();
        c.ini().poll(L.now, L);
        if (c.irq_mode() && L.in_flight) c.sleep_for_interrupt(drain_end - L.now);
    }
    bar.finish();
    out = L.t;
    secs = double(t1 - t0) / 1e9;
    return true;
}

// `p.threads` threads, each owning one request queue through a queue_handle: they submit and
// poll without locks (with interrupts, each sleeps on its own queue's vector); this thread
// stays the control owner (events, TMFs, the ladder past a re-kick, resets), polling every
// millisecond.
template <class Controller>
bool run_threads(Controller& c, const bench_params& p, const volatile bool& stop, tally& out, double& secs,
                 std::vector<double>& per_thread_iops, std::string& err) {
    using handle_t = typename std::remove_reference_t<decltype(c.ini())>::queue_handle;
    const uint16_t n = p.threads;
    std::vector<handle_t> handles(n);
    std::vector<std::unique_ptr<load<handle_t>>> loads;
    for (uint16_t q = 0; q < n; ++q) {
        const status s = c.ini().take_queue(q, handles[q]);
        if (s != status::ok) {
            err = fmt::format("request queue {}: {}", q, to_string(s));
            return false;
        }
        loads.push_back(std::make_unique<load<handle_t>>(handles[q], p));
        if (!loads.back()->prepare(c, uint32_t(q) * p.iodepth, err)) return false;
    }
    std::atomic<bool> go{false}, quit{false};
    std::atomic<int> failed{-1};
    std::atomic<unsigned> finished{0};
    const uint64_t t0 = c.now() + 20000000;  // every thread starts at once, 20 ms from now
    const uint64_t end = t0 + uint64_t(p.runtime_s * 1e9);
    std::vector<std::thread> threads;
    for (uint16_t q = 0; q < n; ++q) {
        threads.emplace_back([&, q] {
            load<handle_t>& L = *loads[q];
            pin_to_cpu(q);
            while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
            while (c.now() < t0) {
            }
            L.now = c.now();
            L.t0 = L.now;
            if (!L.start()) {
                int none = -1;
                failed.compare_exchange_strong(none, q);
                quit.store(true);
            }
            for (;;) {
                const uint64_t now = c.now();
                if (now >= end || quit.load(std::memory_order_relaxed)) break;
                L.turn(now);
                // Interrupts: this queue's own vector, which only this thread waits on.
                if (c.irq_mode() && L.in_flight) c.sleep_for_queue_interrupt(L.port, end - L.now);
            }
            L.t1 = L.now;
            L.stopping = true;
            const uint64_t drain_end = c.now() + 30000000000ull;
            while (L.in_flight && c.now() < drain_end) {
                L.turn(c.now());
                if (c.irq_mode() && L.in_flight) c.sleep_for_queue_interrupt(L.port, drain_end - L.now);
            }
            // Handing the queue back also hands anything the device still holds to the
            // control owner, whose stop() reclaims it.
            L.port.release();
            finished.fetch_add(1, std::memory_order_release);
        });
    }
    go.store(true, std::memory_order_release);
    progress bar("bench");
    control_handler ctl;
    bool dead = false;
    for (;;) {
        const bool running = finished.load(std::memory_order_acquire) < n;
        const uint64_t now = c.now();
        c.ini().poll(now, ctl);
        if (stop) quit.store(true);
        if (c.ini().state() == initiator_state::failed && !dead) {
            dead = true;
            quit.store(true);
        }
        if (now >= t0) bar.update(double(now - t0) / double(end - t0));
        if (now > end + 31000000000ull || !running) break;
        struct timespec ms {0, 1000000};
        nanosleep(&ms, nullptr);
    }
    for (std::thread& t : threads) t.join();
    bar.finish();
    if (failed.load() >= 0) {
        err = fmt::format("could not queue {} commands on request queue {}", p.iodepth, failed.load());
        return false;
    }
    uint64_t first = ~0ull, last = 0;
    for (auto& L : loads) {
        out.merge(L->t);
        first = std::min(first, L->t0);
        last = std::max(last, L->t1);
        const double s = double(L->t1 - L->t0) / 1e9;
        per_thread_iops.push_back(s > 0 ? double(L->t.lat[0].count() + L->t.lat[1].count()) / s : 0);
    }
    secs = last > first ? double(last - first) / 1e9 : 0;
    return true;
}

}  // namespace

// The benchmark on any backend's controller: ini() (the initiator), now(), data() and
// data_bytes() (the DMA data area), memory().scatter(), irq_mode(), sleep_for_interrupt(),
// per_queue_interrupts(), sleep_for_queue_interrupt(), wait_mode(), function().bdf.
template <class Controller>
int run_bench_on(Controller& c, const bench_params& p, const volatile bool& stop) {
    const uint32_t block = p.lun.cap.block_size;
    if (block == 0 || p.bs % block) {
        fmt::print(stderr, "vscsi-uio: --bs {} is not a multiple of the LUN's {}-byte blocks\n", p.bs, block);
        return 2;
    }
    if (p.lun.cap.blocks() / (p.bs / block) == 0) {
        fmt::print(stderr, "vscsi-uio: the LUN ({} blocks) is smaller than one {}-byte I/O\n", p.lun.cap.blocks(), p.bs);
        return 2;
    }
    if (p.threads) {
        if (c.irq_mode() && !c.per_queue_interrupts()) {
            fmt::print(stderr,
                       "vscsi-uio: --threads with --irq or --hybrid needs an interrupt vector per queue (MSI-X "
                       "through vfio-pci); {} has {}\n",
                       c.function().bdf, c.interrupt_source());
            return 2;
        }
        if (c.ini().request_queues() < p.threads) {
            fmt::print(stderr, "vscsi-uio: --threads {} needs a request queue per thread; the device gives {}\n",
                       p.threads, c.ini().request_queues());
            return 2;
        }
        for (uint16_t q = 0; q < p.threads; ++q)
            if (c.ini().queue_slots(q) < p.iodepth) {
                fmt::print(stderr, "vscsi-uio: internal: request queue {} has {} slots, --iodepth needs {}\n", q,
                           c.ini().queue_slots(q), p.iodepth);
                return 1;
            }
    }
    const uint32_t threads = p.threads ? p.threads : 1;
    const uint64_t depth = uint64_t(p.iodepth) * threads;
    if (depth > c.ini().cmd_per_lun() || depth > 4096) {
        fmt::print(stderr, "vscsi-uio: --iodepth {}{} exceeds what the device takes per LUN ({})\n", p.iodepth,
                   p.threads ? fmt::format(" x {} threads", p.threads) : std::string(), c.ini().cmd_per_lun());
        return 2;
    }

    rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    tally t;
    double secs = 0;
    uint16_t queues = p.threads;
    std::vector<double> per_thread;
    std::string err;
    const bool ok = p.threads ? run_threads(c, p, stop, t, secs, per_thread, err)
                              : run_single(c, p, stop, t, secs, queues, err);
    if (!ok) {
        fmt::print(stderr, "vscsi-uio: {}\n", err);
        return 1;
    }
    getrusage(RUSAGE_SELF, &ru1);
    const double usr = cpu_seconds(ru1.ru_utime) - cpu_seconds(ru0.ru_utime);
    const double sys = cpu_seconds(ru1.ru_stime) - cpu_seconds(ru0.ru_stime);
    const uint64_t ios = t.lat[0].count() + t.lat[1].count();
    const bool has_read = p.mode == rw_mode::randread || p.mode == rw_mode::read || p.mode == rw_mode::randrw;
    const bool has_write = p.mode != rw_mode::randread && p.mode != rw_mode::read;

    if (p.json) {
        fmt::print("{{\n  \"fio version\": \"vscsi-uio\",\n  \"timestamp\": {},\n", time(nullptr));
        fmt::print("  \"global options\": {{\"rw\": \"{}\", \"bs\": \"{}\", \"iodepth\": \"{}\", \"numjobs\": \"{}\", "
                   "\"runtime\": \"{}\", \"time_based\": \"1\", \"group_reporting\": \"1\"}},\n  \"jobs\": [\n    {{\n",
                   to_string(p.mode), p.bs, p.iodepth, threads, p.runtime_s);
        fmt::print("      \"jobname\": \"vscsi-uio\", \"groupid\": 0, \"error\": {},\n", t.errors ? 1 : 0);
        fmt::print("      \"job options\": {{\"rw\": \"{}\", \"bs\": \"{}\", \"iodepth\": \"{}\", \"runtime\": \"{}\", "
                   "\"queues\": \"{}\", \"threads\": \"{}\", \"completion\": \"{}\", \"interface\": \"{}\", "
                   "\"ring\": \"{}\", \"filename\": \"{}:{}:{}\"}},\n",
                   to_string(p.mode), p.bs, p.iodepth, p.runtime_s, queues, threads, c.wait_mode(),
                   c.ini().legacy() ? "legacy" : "modern", c.ini().packed() ? "packed" : "split", c.function().bdf,
                   p.lun.target, p.lun.lun);
        print_direction_json("read", t.lat[0], p.bs, secs);
        fmt::print(",\n");
        print_direction_json("write", t.lat[1], p.bs, secs);
        fmt::print(",\n      \"usr_cpu\": {:.3f}, \"sys_cpu\": {:.3f}, \"cpu_ns_per_io\": {:.0f}, \"errors\": {}",
                   secs > 0 ? usr / secs * 100 : 0, secs > 0 ? sys / secs * 100 : 0, ios ? (usr + sys) * 1e9 / double(ios) : 0,
                   t.errors);
        if (p.verify) fmt::print(", \"verified_reads\": {}, \"corrupt_reads\": {}", t.verified, t.corrupt);
        if (!per_thread.empty()) {
            fmt::print(",\n      \"thread_iops\": [");
            for (size_t i = 0; i < per_thread.size(); ++i) fmt::print("{}{:.3f}", i ? ", " : "", per_thread[i]);
            fmt::print("]");
        }
        fmt::print(",\n      \"driver\": \"{}\", \"interrupts\": {{\"source\": \"{}\"", uio::driver_name(c.driver()),
                   c.interrupt_source());
        for (const auto& [name, n] : c.interrupt_counts()) fmt::print(", \"{}\": {}", name, n);
        fmt::print("}}\n    }}\n  ],\n  \"disk_util\": []\n}}\n");
    } else {
        fmt::print("bench {} {}:{}  {} bs={} iodepth={}{} queues={} {:.1f} s, {} completion, {} interface, {} rings, {}\n",
                   c.function().bdf, p.lun.target, p.lun.lun, to_string(p.mode), p.bs, p.iodepth,
                   p.threads ? fmt::format(" threads={} (a queue each)", p.threads) : std::string(), queues, secs,
                   c.wait_mode(), c.ini().legacy() ? "legacy" : "modern", c.ini().packed() ? "packed" : "split",
                   uio::driver_name(c.driver()));
        if (has_read) print_direction_text("read", t.lat[0], p.bs, secs);
        if (has_write) print_direction_text("write", t.lat[1], p.bs, secs);
        for (size_t i = 0; i < per_thread.size(); ++i)
            fmt::print("  thread {} (queue {}): {:.0f} IOPS\n", i, i, per_thread[i]);
        fmt::print("  cpu  : {:.2f} s user, {:.2f} s system, {:.1f} us per I/O\n", usr, sys,
                   ios ? (usr + sys) * 1e6 / double(ios) : 0.0);
        if (c.irq_mode()) fmt::print("  irqs : {}\n", interrupt_summary(c));
        if (p.verify)
            fmt::print("  verify: {} reads checked against the pattern of seed {}, {} differed\n", t.verified, p.seed,
                       t.corrupt);
        fmt::print("  errors: {}{}\n", t.errors, t.errors ? fmt::format(" (first: {})", to_string(t.first_error)) : "");
    }
    if (c.ini().state() != initiator_state::running) {
        fmt::print(stderr, "vscsi-uio: the device failed during the benchmark\n");
        return 1;
    }
    if (t.corrupt) {
        fmt::print(stderr, "vscsi-uio: {} of {} reads did not hold the pattern of seed {} (the first at LBA {})\n",
                   t.corrupt, t.verified, p.seed, t.first_corrupt_lba);
        return 1;
    }
    return t.errors || ios == 0 ? 1 : 0;
}

int run_bench(controller& c, const bench_params& p, const volatile bool& stop) { return run_bench_on(c, p, stop); }

int cmd_bench(const options& o) {
    bench_params p;
    uint64_t v = 0;
    if (o.values.count("--rw") && !parse_rw(o.get("--rw"), p.mode))
        return fail("--rw must be randread, randwrite, read, write or randrw, not '" + o.get("--rw") + "'", exit_usage);
    if (o.values.count("--bs")) {
        if (!parse_size(o.get("--bs"), 512, 1u << 20, v)) return fail("--bs must be 512..1m, not '" + o.get("--bs") + "'", exit_usage);
        p.bs = uint32_t(v);
    }
    if (o.values.count("--iodepth")) {
        if (!parse_u64(o.get("--iodepth"), 1, 1024, v)) return fail("--iodepth must be 1..1024", exit_usage);
        p.iodepth = uint32_t(v);
    }
    if (o.values.count("--runtime") && !parse_seconds(o.get("--runtime"), 0.1, 86400, p.runtime_s))
        return fail("--runtime must be seconds (0.1..86400), not '" + o.get("--runtime") + "'", exit_usage);
    uint64_t queues = 1;
    if (o.values.count("--queues") && !parse_u64(o.get("--queues"), 1, 16, queues))
        return fail("--queues must be 1..16", exit_usage);
    if (o.values.count("--threads")) {
        if (!parse_u64(o.get("--threads"), 1, 16, v)) return fail("--threads must be 1..16", exit_usage);
        p.threads = uint16_t(v);
        if (!o.values.count("--queues")) queues = p.threads;
        if (queues < p.threads)
            return fail(fmt::format("--threads {} needs a request queue each: --queues {} is too few", p.threads, queues),
                        exit_usage);
    }
    // --verify SEED: the LUN must hold that pattern already (verify --seed SEED, or write
    // --pattern SEED, put it there); writes keep it there.
    if (o.values.count("--verify")) {
        if (!parse_u64(o.get("--verify"), 0, ~0ull, p.seed))
            return fail("--verify must be a number (the pattern's seed), not '" + o.get("--verify") + "'", exit_usage);
        p.verify = true;
    }
    p.json = o.flags.count("--json") != 0;
    device_session s;
    std::string err;
    const uint32_t threads = p.threads ? p.threads : 1;
    const size_t data = std::max<size_t>(size_t(p.iodepth) * threads * p.bs, size_t(2) << 20);
    // Slots are shared out among the queues in use: every thread's queue holds its depth.
    const uint32_t want_slots = p.threads ? p.iodepth * uint32_t(queues) : p.iodepth;
    const uint16_t slots = uint16_t(std::max<uint32_t>(128, want_slots));
    if (!open_device(o, s, err, data, uint16_t(queues), slots) || !pick_lun(o, s, err)) return fail(err);
    if (queues > s.ctl.ini().request_queues() && !p.threads)
        fmt::print(stderr, "vscsi-uio: the device has {} request queue(s); using {}\n", s.ctl.ini().request_queues(),
                   s.ctl.ini().request_queues());
    if (!probe_lun(s.ctl, s.target, s.lun, p.lun, err) || !usable_capacity(p.lun, err)) return fail(err);
    if (p.mode != rw_mode::randread && p.mode != rw_mode::read && p.lun.read_only)
        return fail(fmt::format("{}:{} is read-only (write-protected); nothing written", s.target, s.lun));
    return run_bench(s.ctl, p, g_stop);
}

}  // namespace vscsi_uio
