// vscsi-ring-bench: requests through the initiator and a ring of 256 entries, split and packed
// side by side, with the loopback device answering, in one thread and in two.
//
// Every request is a full virtio-scsi command: the request header (LUN, tag, CDB) built,
// the chain posted, the device parsing and answering it, the used entry validated and the
// response decoded into a completion. The device executes TEST UNIT READY, so what is
// measured is the transport, not a data copy.
//
//   one thread:  submit a batch, one kick decision, device step, reap   (ns per request)
//   two threads: the device polls on its own core, the driver keeps `batch` requests in
//                flight and polls for completions                         (ns per request)
//   ping-pong:   one cache line bounced between the same two threads: the floor for any
//                request that must cross to the other core and back      (ns per round trip)
//
// Rings: "split" and "packed" go through the initiator's default ring type (either format,
// chosen at start); "split-only" is an initiator built for split rings alone, the baseline
// for what choosing at run time costs the split path; "packed-in-order" is packed with a
// device that offers VIRTIO_F_IN_ORDER and answers each pass with one used descriptor.
//
// Instructions per request come from perf_event_open where the machine allows it (driver and
// device model together); tests/bench/instructions-per-request counts them with callgrind,
// for the whole loop and for the driver's side alone (the driver_side_* functions below:
// submit, kick decision, reap, decode).
//
//   vscsi-ring-bench [--requests N] [--rounds R] [--ring split|packed|split-only|packed-in-order|both]
//                    [--one-thread]
//                    [--batch B]
//
// --rounds R runs every case R times and prints medians. --batch B runs only the one-thread
// case at batch B of the first ring named, without warm-up (what instructions-per-request
// measures). The last line is machine-readable.
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <vscsi/initiator.hpp>
#include <vscsi/pci.hpp>
#include <vscsi/scsi.hpp>

#include "loopback_device.hpp"
#include "pinned_thread.hpp"

namespace {

using namespace vscsi;
using transport_t = modern_pci<loopback::device>;

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// Counts user-space instructions of this thread; -1 where perf events are not available.
struct instruction_counter {
    int fd = -1;
    instruction_counter() {
        perf_event_attr a{};
        a.type = PERF_TYPE_HARDWARE;
        a.size = sizeof(a);
        a.config = PERF_COUNT_HW_INSTRUCTIONS;
        a.disabled = 1;
        a.exclude_kernel = 1;
        a.exclude_hv = 1;
        fd = int(syscall(SYS_perf_event_open, &a, 0, -1, -1, 0));
    }
    ~instruction_counter() {
        if (fd >= 0) close(fd);
    }
    void start() {
        if (fd < 0) return;
        ioctl(fd, PERF_EVENT_IOC_RESET, 0);
        ioctl(fd, PERF_EVENT_IOC_ENABLE, 0);
    }
    int64_t stop() {
        if (fd < 0) return -1;
        ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
        int64_t v = 0;
        if (read(fd, &v, sizeof(v)) != sizeof(v)) return -1;
        return v;
    }
};

struct counting_handler {
    uint64_t n = 0;
    uint64_t bad = 0;
    void on_complete(const io_completion& c) {
        ++n;
        bad += c.outcome != io_outcome::good;
    }
    void on_tmf(const tmf_completion&) {}
    void on_an(const an_completion&) {}
    void on_event(const event_info&) {}
};

enum class ring_case { split, packed, split_only, packed_in_order };
const char* name_of(ring_case k) {
    switch (k) {
        case ring_case::split: return "split";
        case ring_case::packed: return "packed";
        case ring_case::split_only: return "split-only";
        case ring_case::packed_in_order: return "packed-in-order";
    }
    return "?";
}

// The driver's side of one round, on its own so callgrind can count just it
// (--toggle-collect='*driver_side*', see tests/bench/instructions-per-request).
template <class Ini>
__attribute__((noinline)) uint32_t driver_side_submit(Ini& ini, const io_request& r, uint32_t n) {
    uint32_t done = 0;
    for (; done < n; ++done)
        if (ini.submit(r, 0).st != status::ok) break;
    ini.kick();
    return done;
}
template <class Ini>
__attribute__((noinline)) void driver_side_reap(Ini& ini, counting_handler& h) {
    ini.poll(0, h);
}

template <class Ring>
struct rig {
    using initiator_t = initiator<hosted_platform, transport_t, default_cdb_size, default_sense_size, 16, Ring>;
    loopback::dma_map map;
    loopback::device device;
    transport_t transport;
    initiator_t ini;
    uint8_t* mem = nullptr;   // shared with the device
    uint8_t* priv = nullptr;  // the driver's own
    uint8_t cdb[16];
    io_request req{};

    rig(bool packed, bool in_order = false) : device(options(packed, in_order), map), transport(device), ini(transport) {
        initiator_config c;
        c.max_queue_size = 256;
        c.slots = 256;
        c.max_segments = 4;
        c.ring = packed ? ring_choice::packed : ring_choice::split;
        const size_t bytes = initiator_t::region_bytes(c);
        const size_t priv_bytes = initiator_t::private_bytes(c);
        mem = static_cast<uint8_t*>(aligned_alloc(4096, bytes));
        priv = static_cast<uint8_t*>(aligned_alloc(private_region_align, priv_bytes));  // a multiple of it
        map.add(0x100000000ull, mem, bytes);
        device.add_lun(0, 0, 8);
        if (transport.probe() != status::ok ||
            ini.start(c, dma_region{mem, 0x100000000ull, bytes}, private_region{priv, priv_bytes}) != status::ok ||
            ini.packed() != packed) {
            fmt::print(stderr, "vscsi-ring-bench: loopback bring-up failed\n");
            exit(1);
        }
        req.cdb = cdb;
        req.cdb_len = scsi::test_unit_ready(cdb, sizeof(cdb));
        ini.disable_interrupts();  // a polling driver asks for no interrupts
        // Consume the power-on unit attention.
        counting_handler h;
        driver_side_submit(ini, req, 1);
        while (h.n == 0) {
            device.step();
            ini.poll(now_ns(), h);
        }
    }
    ~rig() {
        device.stop_thread();
        free(mem);
        free(priv);
    }
    static loopback::options options(bool packed, bool in_order) {
        loopback::options o;
        o.kind = loopback::personality::modern;
        o.queue_max = 256;
        o.cmd_per_lun = 256;
        o.packed = packed;
        o.in_order = in_order;
        return o;
    }
};

// The ring type of each case, for a function that takes the rig.
template <class F>
auto with_rig(ring_case k, F&& f) {
    if (k == ring_case::split_only) {
        rig<split_ring<hosted_platform>> r(false);
        return f(r);
    }
    rig<virtqueue<hosted_platform>> r(k != ring_case::split, k == ring_case::packed_in_order);
    return f(r);
}

struct result_1t {
    double ns;
    double instructions;
};

// The measured loop, on its own so callgrind can count just it (--toggle-collect).
template <class Rig>
__attribute__((noinline)) void measured_rounds(Rig& r, counting_handler& h, uint32_t batch, uint64_t total) {
    while (h.n < total) {
        driver_side_submit(r.ini, r.req, batch);
        r.device.step();
        driver_side_reap(r.ini, h);
    }
}

result_1t one_thread(ring_case k, uint32_t batch, uint64_t total, bool warm_up = true) {
    return with_rig(k, [&](auto& r) {
        counting_handler h;
        instruction_counter ic;
        if (warm_up) measured_rounds(r, h, batch, 1000 * uint64_t(batch));
        h.n = 0;
        ic.start();
        const uint64_t t0 = now_ns();
        measured_rounds(r, h, batch, total);
        const uint64_t t1 = now_ns();
        const int64_t ins = ic.stop();
        if (h.bad) fmt::print(stderr, "vscsi-ring-bench: {} requests failed\n", h.bad);
        return result_1t{double(t1 - t0) / double(h.n), ins < 0 ? -1.0 : double(ins) / double(h.n)};
    });
}

// The CPUs the two threads run on (driver, device), when the machine has two or more: pinned,
// as ringtest's --guest-affinity/--host-affinity, so the scheduler never stacks both polling
// threads on one CPU.
int driver_cpu = -1, device_cpu = -1;

double two_threads(ring_case k, uint32_t batch, uint64_t total) {
    return with_rig(k, [&](auto& r) {
        counting_handler h;
        r.device.start_thread(device_cpu);
        uint64_t submitted = 0;
        auto round = [&](uint64_t want) {
            while (h.n < want) {
                const uint64_t in_flight = submitted - h.n;
                if (in_flight < batch) submitted += driver_side_submit(r.ini, r.req, uint32_t(batch - in_flight));
                driver_side_reap(r.ini, h);
            }
        };
        round(20000);  // warm up
        const uint64_t start_n = h.n;
        const uint64_t t0 = now_ns();
        round(start_n + total);
        const uint64_t t1 = now_ns();
        r.device.stop_thread();
        return double(t1 - t0) / double(h.n - start_n);
    });
}

double pingpong(uint64_t rounds) {
    alignas(64) std::atomic<uint64_t> line{0};
    // Pinned by us before it runs: under chrt -f this thread spins on the CPU the peer would
    // start on, and a peer that pinned itself would never run to do it.
    loopback::pinned_thread peer;
    peer.start(device_cpu, [&] {
        for (uint64_t i = 1; i <= rounds; ++i) {
            while (line.load(std::memory_order_acquire) != 2 * i - 1) {
            }
            line.store(2 * i, std::memory_order_release);
        }
    });
    const uint64_t t0 = now_ns();
    for (uint64_t i = 1; i <= rounds; ++i) {
        line.store(2 * i - 1, std::memory_order_release);
        while (line.load(std::memory_order_acquire) != 2 * i) {
        }
    }
    const uint64_t t1 = now_ns();
    peer.join();
    return double(t1 - t0) / double(rounds);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

bool parse_number(const char* s, uint64_t lo, uint64_t hi, uint64_t& out) {
    char* end = nullptr;
    const unsigned long long v = strtoull(s, &end, 10);
    if (!end || *end || !*s || v < lo || v > hi) return false;
    out = v;
    return true;
}

void pin_self(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  // best effort
}

}  // namespace

int main(int argc, char** argv) {
    const char* usage =
        "usage: vscsi-ring-bench [--requests N] [--rounds R] [--ring split|packed|split-only|packed-in-order|both]\n"
        "                        [--one-thread] [--batch B]\n";
    uint64_t total = 2000000, rounds = 1, only_batch = 0;
    bool one_thread_only = false;
    std::vector<ring_case> rings = {ring_case::split, ring_case::packed, ring_case::split_only,
                                    ring_case::packed_in_order};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--one-thread") {
            one_thread_only = true;  // e.g. under valgrind --tool=callgrind, which serialises threads
        } else if (a == "--batch" && has_value) {
            if (!parse_number(argv[++i], 1, 128, only_batch)) {
                fmt::print(stderr, "vscsi-ring-bench: --batch needs a number from 1 to 128\n");
                return 2;
            }
        } else if (a == "--requests" && has_value) {
            if (!parse_number(argv[++i], 1, uint64_t(1) << 40, total)) {
                fmt::print(stderr, "vscsi-ring-bench: --requests needs a positive number\n");
                return 2;
            }
        } else if (a == "--rounds" && has_value) {
            if (!parse_number(argv[++i], 1, 99, rounds)) {
                fmt::print(stderr, "vscsi-ring-bench: --rounds needs a number from 1 to 99\n");
                return 2;
            }
        } else if (a == "--ring" && has_value) {
            const std::string v = argv[++i];
            if (v == "split")
                rings = {ring_case::split};
            else if (v == "packed")
                rings = {ring_case::packed};
            else if (v == "split-only")
                rings = {ring_case::split_only};
            else if (v == "packed-in-order")
                rings = {ring_case::packed_in_order};
            else if (v == "both")
                rings = {ring_case::split, ring_case::packed, ring_case::split_only, ring_case::packed_in_order};
            else {
                fmt::print(stderr, "vscsi-ring-bench: --ring is split, packed, split-only, packed-in-order or both, "
                                   "not '{}'\n", v);
                return 2;
            }
        } else {
            fmt::print(stderr, "vscsi-ring-bench: unknown argument '{}'\n{}", a, usage);
            return 2;
        }
    }
    if (only_batch) {
        // One case only, one thread, no warm-up: what tests/bench/instructions-per-request
        // measures (callgrind counts every call of the measured loop).
        const result_1t r = one_thread(rings.front(), uint32_t(only_batch), total, false);
        fmt::print("{} ring, 1 thread, batch {}: {:.1f} ns/request\nns_per_request_1t_batch{}={:.1f}\n",
                   name_of(rings.front()), only_batch, r.ns, only_batch, r.ns);
        return 0;
    }
    const unsigned cpus = std::thread::hardware_concurrency();
    const bool two = cpus >= 2 && !one_thread_only;
    if (cpus >= 2) {
        driver_cpu = 0;
        device_cpu = 1;
        pin_self(driver_cpu);
    }
    fmt::print("vscsi ring benchmark: queue size 256, TEST UNIT READY through initiator + loopback device, "
               "{} requests per case, {} round{}{}, {} CPUs{}\n",
               total, rounds, rounds == 1 ? "" : "s", rounds == 1 ? "" : " (medians)", cpus,
               cpus >= 2 ? " (driver on CPU 0, device on CPU 1)" : "");
    struct row {
        ring_case k;
        double b1 = -1, b32 = -1, i1 = -1, i32 = -1, t1 = -1, t32 = -1;
    };
    std::vector<row> rows;
    for (ring_case k : rings) rows.push_back(row{k});
    std::vector<double> pp;
    std::vector<std::vector<double>> s(rows.size() * 6);
    for (uint64_t n = 0; n < rounds; ++n) {
        // Cases interleave, round by round, so a change in load hits each ring alike.
        if (two) pp.push_back(pingpong(total / 4 + 1000));
        for (size_t i = 0; i < rows.size(); ++i) {
            const result_1t a = one_thread(rows[i].k, 1, total / 2);
            const result_1t b = one_thread(rows[i].k, 32, total);
            s[i * 6 + 0].push_back(a.ns);
            s[i * 6 + 1].push_back(b.ns);
            s[i * 6 + 2].push_back(a.instructions);
            s[i * 6 + 3].push_back(b.instructions);
            if (two) {
                s[i * 6 + 4].push_back(two_threads(rows[i].k, 1, total / 4 + 1));
                s[i * 6 + 5].push_back(two_threads(rows[i].k, 32, total));
            }
        }
    }
    for (size_t i = 0; i < rows.size(); ++i) {
        rows[i].b1 = median(s[i * 6 + 0]);
        rows[i].b32 = median(s[i * 6 + 1]);
        rows[i].i1 = median(s[i * 6 + 2]);
        rows[i].i32 = median(s[i * 6 + 3]);
        if (two) {
            rows[i].t1 = median(s[i * 6 + 4]);
            rows[i].t32 = median(s[i * 6 + 5]);
        }
    }
    const double ping = two ? median(pp) : -1;
    auto ins = [](double v) { return v < 0 ? std::string("n/a") : fmt::format("{:.0f}", v); };
    fmt::print("  ring             1 thread: batch 1    batch 32 (ns/request, instructions)    2 threads: in flight 1    "
               "in flight 32\n");
    for (const row& r : rows) {
        std::string t1 = "-", t32 = "-";
        if (two) {
            t1 = fmt::format("{:7.1f} ({:.2f}x)", r.t1, r.t1 / ping);
            t32 = fmt::format("{:7.1f} ({:.2f}x)", r.t32, r.t32 / ping);
        }
        fmt::print("  {:<15} {:7.1f} ({:>5})  {:7.1f} ({:>5})                    {:>18}  {:>18}\n", name_of(r.k), r.b1,
                   ins(r.i1), r.b32, ins(r.i32), t1, t32);
    }
    if (two)
        fmt::print("  cache-line ping-pong between the two CPUs: {:.1f} ns/round trip (the 2-thread ratios are to it)\n", ping);
    else
        fmt::print("  2 threads: skipped, {}\n", one_thread_only ? "--one-thread" : "one CPU");
    std::string line;
    for (const row& r : rows) {
        const std::string n = name_of(r.k);
        std::string key = n;
        std::replace(key.begin(), key.end(), '-', '_');
        line += fmt::format("{0}_1t_b1={1:.1f} {0}_1t_b32={2:.1f} {0}_2t_b1={3:.1f} {0}_2t_b32={4:.1f} ", key, r.b1, r.b32,
                            r.t1, r.t32);
    }
    fmt::print("{}pingpong_ns={:.1f}\n", line, ping);
    return 0;
}
