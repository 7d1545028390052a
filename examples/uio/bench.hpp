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
    uint32_t iodepth = 32;
    double runtime_s = 10;
    bool json = false;
    lun_info lun;
};

// Runs the load; prints text or fio-style JSON to stdout. Returns the exit code.
int run_bench(vscsi::uio::controller& c, const bench_params& p, const volatile bool& stop);

}  // namespace vscsi_uio
