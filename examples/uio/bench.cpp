#include "bench.hpp"

#include <sys/resource.h>

#include <fmt/core.h>

#include <vector>

#include "latency_histogram.hpp"
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

// The load: every completion resubmits its slot at once, so `iodepth` commands stay queued.
struct load {
    load(controller& ctl, const bench_params& params) : c(ctl), p(params) {}
    controller& c;
    const bench_params& p;
    uint32_t blocks_per_io = 0;
    uint64_t span = 0;            // I/O-sized units on the LUN
    uint64_t cursor = 0;          // sequential modes
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    uint64_t now = 0;
    bool stopping = false;
    uint16_t queues = 1;
    std::vector<uint64_t> submitted_at;
    std::vector<uint8_t> is_write;
    std::vector<uint8_t> cdbs;
    std::vector<sg_entry> sgs;    // per slot, up to max_sg
    std::vector<uint32_t> nsg;
    static constexpr uint32_t max_sg = 16;
    latency_histogram lat[2];     // read, write
    uint64_t errors = 0;
    uint64_t in_flight = 0;
    io_outcome first_error = io_outcome::good;

    uint64_t next_random() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
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
        if (c.ini().submit(r, now).st != status::ok) return false;
        submitted_at[slot] = now;
        is_write[slot] = write;
        ++in_flight;
        return true;
    }

    void on_complete(const io_completion& x) {
        const uint32_t slot = uint32_t(x.user_data);
        --in_flight;
        if (x.outcome != io_outcome::good) {
            if (!errors) first_error = x.outcome;
            ++errors;
        } else {
            lat[is_write[slot]].add(now - submitted_at[slot]);
        }
        if (!stopping) submit(slot);
    }
    void on_tmf(const tmf_completion&) {}
    void on_an(const an_completion&) {}
    void on_event(const event_info&) {}
};

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

}  // namespace

int run_bench(controller& c, const bench_params& p, const volatile bool& stop) {
    const uint32_t block = p.lun.cap.block_size;
    if (block == 0 || p.bs % block) {
        fmt::print(stderr, "vscsi-uio: --bs {} is not a multiple of the LUN's {}-byte blocks\n", p.bs, block);
        return 2;
    }
    load L(c, p);
    L.blocks_per_io = p.bs / block;
    L.span = p.lun.cap.blocks() / L.blocks_per_io;
    if (L.span == 0) {
        fmt::print(stderr, "vscsi-uio: the LUN ({} blocks) is smaller than one {}-byte I/O\n", p.lun.cap.blocks(), p.bs);
        return 2;
    }
    if (p.iodepth > c.ini().cmd_per_lun() || p.iodepth > 4096) {
        fmt::print(stderr, "vscsi-uio: --iodepth {} exceeds what the device takes per LUN ({})\n", p.iodepth,
                   c.ini().cmd_per_lun());
        return 2;
    }
    L.queues = c.ini().request_queues();
    L.submitted_at.assign(p.iodepth, 0);
    L.is_write.assign(p.iodepth, 0);
    L.cdbs.assign(size_t(p.iodepth) * 16, 0);
    L.sgs.assign(size_t(p.iodepth) * load::max_sg, sg_entry{});
    L.nsg.assign(p.iodepth, 0);
    if (size_t(p.iodepth) * p.bs > c.data_bytes()) {
        fmt::print(stderr, "vscsi-uio: internal: data buffers too small\n");
        return 1;
    }
    for (uint32_t s = 0; s < p.iodepth; ++s) {
        uint8_t* buf = c.data() + size_t(s) * p.bs;
        for (uint32_t i = 0; i < p.bs; ++i) buf[i] = uint8_t(i * 7 + s);  // what writes write
        L.nsg[s] = c.memory().scatter(buf, p.bs, &L.sgs[size_t(s) * load::max_sg], load::max_sg);
        if (!L.nsg[s]) {
            fmt::print(stderr, "vscsi-uio: --bs {} needs too many DMA segments\n", p.bs);
            return 2;
        }
    }

    rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    const uint64_t t0 = c.now();
    const uint64_t end = t0 + uint64_t(p.runtime_s * 1e9);
    L.now = t0;
    for (uint32_t s = 0; s < p.iodepth; ++s) {
        if (!L.submit(s)) {
            fmt::print(stderr, "vscsi-uio: could not queue {} commands\n", p.iodepth);
            return 1;
        }
    }
    c.ini().kick();
    progress bar("bench");
    uint64_t next_bar = t0;
    // The polled loop: no system call, no allocation per I/O.
    for (;;) {
        L.now = c.now();
        if (L.now >= end || stop) break;
        c.ini().poll(L.now, L);
        c.ini().kick();
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
    getrusage(RUSAGE_SELF, &ru1);
    const double secs = double(t1 - t0) / 1e9;
    const double usr = cpu_seconds(ru1.ru_utime) - cpu_seconds(ru0.ru_utime);
    const double sys = cpu_seconds(ru1.ru_stime) - cpu_seconds(ru0.ru_stime);
    const uint64_t ios = L.lat[0].count() + L.lat[1].count();
    const bool has_read = p.mode == rw_mode::randread || p.mode == rw_mode::read || p.mode == rw_mode::randrw;
    const bool has_write = p.mode != rw_mode::randread && p.mode != rw_mode::read;

    if (p.json) {
        fmt::print("{{\n  \"fio version\": \"vscsi-uio\",\n  \"timestamp\": {},\n", time(nullptr));
        fmt::print("  \"global options\": {{\"rw\": \"{}\", \"bs\": \"{}\", \"iodepth\": \"{}\", \"numjobs\": \"1\", "
                   "\"runtime\": \"{}\", \"time_based\": \"1\"}},\n  \"jobs\": [\n    {{\n",
                   to_string(p.mode), p.bs, p.iodepth, p.runtime_s);
        fmt::print("      \"jobname\": \"vscsi-uio\", \"groupid\": 0, \"error\": {},\n", L.errors ? 1 : 0);
        fmt::print("      \"job options\": {{\"rw\": \"{}\", \"bs\": \"{}\", \"iodepth\": \"{}\", \"runtime\": \"{}\", "
                   "\"queues\": \"{}\", \"completion\": \"{}\", \"interface\": \"{}\", \"ring\": \"{}\", "
                   "\"filename\": \"{}:{}:{}\"}},\n",
                   to_string(p.mode), p.bs, p.iodepth, p.runtime_s, L.queues, c.wait_mode(),
                   c.ini().legacy() ? "legacy" : "modern", c.ini().packed() ? "packed" : "split", c.function().bdf,
                   p.lun.target, p.lun.lun);
        print_direction_json("read", L.lat[0], p.bs, secs);
        fmt::print(",\n");
        print_direction_json("write", L.lat[1], p.bs, secs);
        fmt::print(",\n      \"usr_cpu\": {:.3f}, \"sys_cpu\": {:.3f}, \"cpu_ns_per_io\": {:.0f}, \"errors\": {}\n",
                   secs > 0 ? usr / secs * 100 : 0, secs > 0 ? sys / secs * 100 : 0, ios ? (usr + sys) * 1e9 / double(ios) : 0,
                   L.errors);
        fmt::print("    }}\n  ],\n  \"disk_util\": []\n}}\n");
    } else {
        fmt::print("bench {} {}:{}  {} bs={} iodepth={} queues={} {:.1f} s, {} completion, {} interface, {} rings\n",
                   c.function().bdf, p.lun.target, p.lun.lun, to_string(p.mode), p.bs, p.iodepth, L.queues, secs,
                   c.wait_mode(), c.ini().legacy() ? "legacy" : "modern", c.ini().packed() ? "packed" : "split");
        if (has_read) print_direction_text("read", L.lat[0], p.bs, secs);
        if (has_write) print_direction_text("write", L.lat[1], p.bs, secs);
        fmt::print("  cpu  : {:.2f} s user, {:.2f} s system, {:.1f} us per I/O\n", usr, sys,
                   ios ? (usr + sys) * 1e6 / double(ios) : 0.0);
        fmt::print("  errors: {}{}\n", L.errors, L.errors ? fmt::format(" (first: {})", to_string(L.first_error)) : "");
    }
    if (c.ini().state() != initiator_state::running) {
        fmt::print(stderr, "vscsi-uio: the device failed during the benchmark\n");
        return 1;
    }
    return L.errors || ios == 0 ? 1 : 0;
}

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
    p.json = o.flags.count("--json") != 0;
    device_session s;
    std::string err;
    const size_t data = std::max<size_t>(size_t(p.iodepth) * p.bs, size_t(2) << 20);
    const uint16_t slots = uint16_t(std::max<uint32_t>(128, p.iodepth));
    if (!open_device(o, s, err, data, uint16_t(queues), slots) || !pick_lun(o, s, err)) return fail(err);
    if (queues > s.ctl.ini().request_queues())
        fmt::print(stderr, "vscsi-uio: the device has {} request queue(s); using {}\n", s.ctl.ini().request_queues(),
                   s.ctl.ini().request_queues());
    if (!probe_lun(s.ctl, s.target, s.lun, p.lun, err) || !usable_capacity(p.lun, err)) return fail(err);
    if (p.mode != rw_mode::randread && p.mode != rw_mode::read && p.lun.read_only)
        return fail(fmt::format("{}:{} is read-only (write-protected); nothing written", s.target, s.lun));
    return run_bench(s.ctl, p, g_stop);
}

}  // namespace vscsi_uio
