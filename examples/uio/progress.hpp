// A progress bar on stderr, drawn only when stderr is a terminal (logs and pipes stay clean).
#pragma once
#include <stdio.h>
#include <unistd.h>

#include <string>

#include "clock.hpp"

namespace vscsi_uio {

class progress {
public:
    explicit progress(std::string label) : label_(std::move(label)), on_(isatty(2) == 1) {}
    ~progress() { finish(); }

    void update(double fraction) {
        if (!on_) return;
        const uint64_t t = vscsi::uio::monotonic_ns();
        if (t - last_ < 100000000ull && fraction < 1.0) return;  // at most 10 redraws a second
        last_ = t;
        if (fraction < 0) fraction = 0;
        if (fraction > 1) fraction = 1;
        const int width = 40, filled = int(fraction * width + 0.5);
        fprintf(stderr, "\r%s [%.*s%*s] %3d%%", label_.c_str(), filled, "########################################",
                width - filled, "", int(fraction * 100 + 0.5));
        fflush(stderr);
        drawn_ = true;
    }
    void finish() {
        if (drawn_) fprintf(stderr, "\r%*s\r", int(label_.size()) + 48, "");
        drawn_ = false;
    }

private:
    std::string label_;
    bool on_;
    bool drawn_ = false;
    uint64_t last_ = 0;
};

}  // namespace vscsi_uio
