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
            const uint64_t t = __builtin_ia32_rdtsc();
            if (t >= tsc0_) return ns0_ + scaled(t - tsc0_);
            // Behind the calibration point: CPUs whose counters do not quite agree (a virtual
            // machine's may not, and a TCG guest's counter follows its host's). Go back by as
            // much; an unsigned difference would wrap to centuries ahead and expire every
            // deadline at once.
            const uint64_t back = scaled(tsc0_ - t);
            return back < ns0_ ? ns0_ - back : 0;
        }
#endif
        return monotonic_ns();
    }
    bool uses_tsc() const { return tsc_ok_; }

private:
    // ticks * mult >> 32, split to stay inside 64 bits for days of uptime.
    uint64_t scaled(uint64_t d) const { return (d >> 32) * mult_ + (((d & 0xffffffffull) * mult_) >> 32); }

    uint64_t tsc0_ = 0, ns0_ = 0, mult_ = 0;  // mult_: ns per tick, 32.32 fixed point
    bool tsc_ok_ = false;
};

}  // namespace vscsi::uio
