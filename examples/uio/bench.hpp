// `vscsi-uio bench`: a fio-like load generator on the polled (or interrupt) data path.
#pragma once
#include <stdint.h>

#include <string>

#include "controller.hpp"
#include "luns.hpp"

namespace vscsi_uio {

enum class rw_mode { randread, randwrite, read, write, randrw };
bool parse_rw(const std::string& s, rw_mode& out);
const char* to_string(rw_mode m);

struct bench_params {
    rw_mode mode = rw_mode::randread;
    uint32_t bs = 4096;
    uint32_t iodepth = 32;     // per thread with `threads`
    double runtime_s = 10;
    bool json = false;
    uint16_t threads = 0;      // 0: one thread over every queue; N: N threads, each its own queue
    bool verify = false;       // writes write the pattern of `seed`, every read is checked against it
    uint64_t seed = 0;
    lun_info lun;
};

// Runs the load; prints text or fio-style JSON to stdout. Returns the exit code. The
// controller is the backend's (uio here); run_bench_on() in bench.cpp is generic over it.
int run_bench(vscsi::uio::controller& c, const bench_params& p, const volatile bool& stop);

}  // namespace vscsi_uio
