#include "clock.hpp"

namespace vscsi::uio {

fast_clock::fast_clock(unsigned calibrate_ms) {
#if defined(__x86_64__) || defined(__i386__)
    if (calibrate_ms > 1000) calibrate_ms = 1000;
    const uint64_t n0 = monotonic_ns();
    const uint64_t t0 = __builtin_ia32_rdtsc();
    uint64_t n1;
    do {
        n1 = monotonic_ns();
    } while (n1 - n0 < uint64_t(calibrate_ms) * 1000000ull);
    const uint64_t t1 = __builtin_ia32_rdtsc();
    // A counter that stands still or runs backwards (or absurdly slowly) is not a clock.
    if (t1 > t0 && (t1 - t0) * 1000 >= (n1 - n0)) {
        // (n1 - n0) is well under 2^32 ns for any sane calibration time, so the shift fits.
        mult_ = ((n1 - n0) << 32) / (t1 - t0);
        tsc0_ = t1;
        ns0_ = n1;
        tsc_ok_ = mult_ != 0;
    }
#else
    (void)calibrate_ms;
#endif
}

}  // namespace vscsi::uio
