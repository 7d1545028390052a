// vscsi-ring-bench: requests through the initiator and a split ring of 256 entries, with the
// loopback device answering, in one thread and in two.
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
// Instructions per request come from perf_event_open where the machine allows it.
// The last line is machine-readable.
//
//   vscsi-ring-bench [--requests N] [--one-thread] [--batch B]
//
// --batch B runs only the one-thread case at batch B. Where perf_event_open gives no
// hardware counters, tests/bench/instructions-per-request counts instructions with callgrind.
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <fmt/core.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include <vscsi/initiator.hpp>
#include <vscsi/pci.hpp>
#include <vscsi/scsi.hpp>

#include "loopback_device.hpp"

namespace {

using namespace vscsi;
using transport_t = modern_pci<loopback::device>;
using initiator_t = initiator<hosted_platform, transport_t>;

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

struct rig {
    loopback::dma_map map;
    loopback::device dev;
    transport_t transport;
    initiator_t ini;
    uint8_t* mem = nullptr;   // shared with the device
    uint8_t* priv = nullptr;  // the driver's own
    uint8_t cdb[16];
    uint32_t cdb_len;

    rig() : dev(options(), map), transport(dev), ini(transport) {
        initiator_config c;
        c.max_queue_size = 256;
        c.slots = 256;
        c.max_segments = 4;
        const size_t bytes = initiator_t::region_bytes(c);
        const size_t priv_bytes = initiator_t::private_bytes(c);
        mem = static_cast<uint8_t*>(aligned_alloc(4096, bytes));
        priv = static_cast<uint8_t*>(aligned_alloc(private_region_align, priv_bytes));  // a multiple of it
        map.add(0x100000000ull, mem, bytes);
        dev.add_lun(0, 0, 8);
        if (transport.probe() != status::ok ||
            ini.start(c, dma_region{mem, 0x100000000ull, bytes}, private_region{priv, priv_bytes}) != status::ok) {
            fmt::print(stderr, "vscsi-ring-bench: loopback bring-up failed\n");
            exit(1);
        }
        cdb_len = scsi::test_unit_ready(cdb, sizeof(cdb));
        ini.disable_interrupts();  // a polling driver asks for no interrupts
        // Consume the power-on unit attention.
        counting_handler h;
        submit(1);
        ini.kick();
        while (h.n == 0) {
            dev.step();
            ini.poll(now_ns(), h);
        }
    }
    ~rig() {
        dev.stop_thread();
        free(mem);
        free(priv);
    }
    static loopback::options options() {
        loopback::options o;
        o.kind = loopback::personality::modern;
        o.queue_max = 256;
        o.cmd_per_lun = 256;
        return o;
    }
    uint32_t submit(uint32_t n) {
        io_request r{};
        r.cdb = cdb;
        r.cdb_len = cdb_len;
        uint32_t done = 0;
        for (; done < n; ++done)
            if (ini.submit(r, 0).st != status::ok) break;
        return done;
    }
};

struct result_1t {
    double ns;
    double instructions;
};

// The measured loop, on its own so callgrind can count just it (--toggle-collect, see
// tests/bench/instructions-per-request).
__attribute__((noinline)) void measured_rounds(rig& r, counting_handler& h, uint32_t batch, uint64_t total) {
    while (h.n < total) {
        r.submit(batch);
        r.ini.kick();
        r.dev.step();
        r.ini.poll(0, h);
    }
}

result_1t one_thread(uint32_t batch, uint64_t total) {
    rig r;
    counting_handler h;
    instruction_counter ic;
    // Warm up.
    for (int i = 0; i < 1000; ++i) {
        r.submit(batch);
        r.ini.kick();
        r.dev.step();
        r.ini.poll(0, h);
    }
    h.n = 0;
    ic.start();
    const uint64_t t0 = now_ns();
    measured_rounds(r, h, batch, total);
    const uint64_t t1 = now_ns();
    const int64_t ins = ic.stop();
    if (h.bad) fmt::print(stderr, "vscsi-ring-bench: {} requests failed\n", h.bad);
    return {double(t1 - t0) / double(h.n), ins < 0 ? -1.0 : double(ins) / double(h.n)};
}

// The CPUs the two threads run on (driver, device), when the machine has two or more: pinned,
// as ringtest's --guest-affinity/--host-affinity, so the scheduler never stacks both polling
// threads on one CPU.
int driver_cpu = -1, device_cpu = -1;

void pin_self(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  // best effort
}

double two_threads(uint32_t batch, uint64_t total) {
    rig r;
    counting_handler h;
    r.dev.start_thread(device_cpu);
    uint64_t submitted = 0;
    auto round = [&](uint64_t want) {
        while (h.n < want) {
            const uint64_t in_flight = submitted - h.n;
            if (in_flight < batch) {
                submitted += r.submit(uint32_t(batch - in_flight));
                r.ini.kick();
            }
            r.ini.poll(0, h);
        }
    };
    round(20000);  // warm up
    const uint64_t start_n = h.n;
    const uint64_t t0 = now_ns();
    round(start_n + total);
    const uint64_t t1 = now_ns();
    r.dev.stop_thread();
    return double(t1 - t0) / double(h.n - start_n);
}

double pingpong(uint64_t rounds) {
    alignas(64) std::atomic<uint64_t> line{0};
    std::thread peer([&] {
        pin_self(device_cpu);
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

}  // namespace

int main(int argc, char** argv) {
    uint64_t total = 2000000;
    bool one_thread_only = false;
    uint32_t only_batch = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--one-thread") {
            one_thread_only = true;  // e.g. under valgrind --tool=callgrind, which serialises threads
        } else if (a == "--batch" && i + 1 < argc) {
            char* end = nullptr;
            const unsigned long b = strtoul(argv[++i], &end, 10);
            if (!end || *end || b == 0 || b > 128) {
                fmt::print(stderr, "vscsi-ring-bench: --batch needs a number from 1 to 128\n");
                return 2;
            }
            only_batch = uint32_t(b);
        } else if (a == "--requests" && i + 1 < argc) {
            char* end = nullptr;
            total = strtoull(argv[++i], &end, 10);
            if (!end || *end || total == 0) {
                fmt::print(stderr, "vscsi-ring-bench: --requests needs a positive number\n");
                return 2;
            }
        } else {
            fmt::print(stderr, "vscsi-ring-bench: unknown argument '{}'\nusage: vscsi-ring-bench [--requests N] [--one-thread] [--batch B]\n", a);
            return 2;
        }
    }
    if (only_batch) {
        // One case only, one thread: what tests/bench/instructions-per-request measures.
        const result_1t r = one_thread(only_batch, total);
        fmt::print("1 thread, batch {}: {:.1f} ns/request\nns_per_request_1t_batch{}={:.1f}\n", only_batch, r.ns,
                   only_batch, r.ns);
        return 0;
    }
    const unsigned cpus = std::thread::hardware_concurrency();
    if (cpus >= 2) {
        driver_cpu = 0;
        device_cpu = 1;
        pin_self(driver_cpu);
    }
    fmt::print("vscsi ring benchmark: queue size 256, TEST UNIT READY through initiator + loopback device, "
               "{} requests per case, {} CPUs{}\n",
               total, cpus, cpus >= 2 ? " (driver on CPU 0, device on CPU 1)" : "");
    const result_1t a1 = one_thread(1, total);
    const result_1t a32 = one_thread(32, total);
    fmt::print("  1 thread,  batch  1: {:7.1f} ns/request  {:6.2f} M requests/s  {}\n", a1.ns, 1e3 / a1.ns,
               a1.instructions < 0 ? std::string("instructions: n/a") : fmt::format("{:.0f} instructions/request", a1.instructions));
    fmt::print("  1 thread,  batch 32: {:7.1f} ns/request  {:6.2f} M requests/s  {}\n", a32.ns, 1e3 / a32.ns,
               a32.instructions < 0 ? std::string("instructions: n/a") : fmt::format("{:.0f} instructions/request", a32.instructions));
    double b1 = -1, b32 = -1, pp = -1;
    if (cpus >= 2 && !one_thread_only) {
        pp = pingpong(total / 4 + 1000);
        b1 = two_threads(1, total / 4 + 1);
        b32 = two_threads(32, total);
        fmt::print("  2 threads, batch  1: {:7.1f} ns/request  {:6.2f} M requests/s\n", b1, 1e3 / b1);
        fmt::print("  2 threads, batch 32: {:7.1f} ns/request  {:6.2f} M requests/s\n", b32, 1e3 / b32);
        fmt::print("  cache-line ping-pong: {:6.1f} ns/round trip (floor for batch 1); batch 32 at {:.2f}x, "
                   "batch 1 at {:.2f}x of it\n",
                   pp, b32 / pp, b1 / pp);
    } else {
        fmt::print("  2 threads: skipped, one CPU\n");
    }
    fmt::print("ns_per_request_1t={:.1f} ns_per_request_1t_b1={:.1f} ns_per_request_2t={:.1f} "
               "ns_per_request_2t_b1={:.1f} pingpong_ns={:.1f} requests_per_s_1t={:.0f} requests_per_s_2t={:.0f} "
               "instructions_per_request_1t={:.0f}\n",
               a32.ns, a1.ns, b32, b1, pp, 1e9 / a32.ns, b32 > 0 ? 1e9 / b32 : -1.0, a32.instructions);
    return 0;
}
