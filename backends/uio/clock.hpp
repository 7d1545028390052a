// A cheap monotonic clock in nanoseconds for the data path.
//
// clock_gettime is a system call whenever the kernel's clocksource has no vDSO path (HPET,
// acpi_pm: what a TCG guest gets), which would put a system call on every I/O. On x86 the
// time-stamp counter is read directly instead and scaled by a rate measured against
// CLOCK_MONOTONIC at start-up.
#pragma once
#include <stdint.h>
#include <time.h>

namespace vscsi::uio {

inline uint64_t monotonic_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

class fast_clock {
public:
    // Measures the counter's rate for about `calibrate_ms`.
    explicit fast_clock(unsigned calibrate_ms = 20);
    uint64_t now() const {
#if defined(__x86_64__) || defined(__i386__)
        if (tsc_ok_) {
            const uint64_t d = __builtin_ia32_rdtsc() - tsc0_;
            // ns = d * mult >> 32, split to stay inside 64 bits for days of uptime.
            return ns0_ + (d >> 32) * mult_ + (((d & 0xffffffffull) * mult_) >> 32);
        }
#endif
        return monotonic_ns();
    }
    bool uses_tsc() const { return tsc_ok_; }

private:
    uint64_t tsc0_ = 0, ns0_ = 0, mult_ = 0;  // mult_: ns per tick, 32.32 fixed point
    bool tsc_ok_ = false;
};

}  // namespace vscsi::uio
