// Latency histogram with log-linear buckets: 16 per power of two (under 4.5% error), fixed
// size, no allocation when recording.
#pragma once
#include <stdint.h>
#include <math.h>

namespace vscsi_uio {

class latency_histogram {
public:
    static constexpr unsigned sub_bits = 4;
    static constexpr unsigned buckets = 64 << sub_bits;

    void add(uint64_t ns) {
        ++counts_[bucket_of(ns)];
        ++n_;
        sum_ += double(ns);
        sum_sq_ += double(ns) * double(ns);
        if (ns < min_) min_ = ns;
        if (ns > max_) max_ = ns;
    }
    // Fold another histogram (another thread's) into this one.
    void merge(const latency_histogram& o) {
        for (unsigned b = 0; b < buckets; ++b) counts_[b] += o.counts_[b];
        n_ += o.n_;
        sum_ += o.sum_;
        sum_sq_ += o.sum_sq_;
        if (o.min_ < min_) min_ = o.min_;
        if (o.max_ > max_) max_ = o.max_;
    }
    uint64_t count() const { return n_; }
    uint64_t min() const { return n_ ? min_ : 0; }
    uint64_t max() const { return max_; }
    double mean() const { return n_ ? sum_ / double(n_) : 0; }
    double stddev() const {
        if (n_ < 2) return 0;
        const double m = mean();
        const double v = sum_sq_ / double(n_) - m * m;
        return v > 0 ? sqrt(v) : 0;
    }
    // The value below which `pct` percent of the samples fall (bucket midpoint).
    uint64_t percentile(double pct) const {
        if (!n_) return 0;
        if (pct >= 100) return max_;
        const double want = pct / 100.0 * double(n_);
        uint64_t seen = 0;
        for (unsigned b = 0; b < buckets; ++b) {
            seen += counts_[b];
            if (double(seen) >= want && counts_[b]) {
                const uint64_t lo = lower_of(b), hi = lower_of(b + 1);
                uint64_t mid = lo + (hi - lo) / 2;
                if (mid < min_) mid = min_;
                if (mid > max_) mid = max_;
                return mid;
            }
        }
        return max_;
    }

private:
    static unsigned bucket_of(uint64_t v) {
        if (v < (1u << sub_bits)) return unsigned(v);
        const unsigned msb = 63u - unsigned(__builtin_clzll(v));
        const unsigned shift = msb - sub_bits;
        return ((shift + 1) << sub_bits) + unsigned((v >> shift) & ((1u << sub_bits) - 1));
    }
    static uint64_t lower_of(unsigned b) {
        if (b < (1u << sub_bits)) return b;
        const unsigned shift = (b >> sub_bits) - 1;
        if (shift + sub_bits >= 64) return ~0ull;
        return (uint64_t((1u << sub_bits) | (b & ((1u << sub_bits) - 1)))) << shift;
    }

    uint64_t counts_[buckets] = {};
    uint64_t n_ = 0;
    double sum_ = 0, sum_sq_ = 0;
    uint64_t min_ = ~0ull, max_ = 0;
};

}  // namespace vscsi_uio
