// What every vscsi-uio command shares: exit codes and one-line errors, the stop flag the
// signal handler sets, opening the device the options name, choosing the LUN, and moving
// blocks in commands of a size the LUN takes.
#pragma once
#include <stdint.h>

#include <string>

#include "controller.hpp"
#include "luns.hpp"
#include "options.hpp"

namespace vscsi_uio {

inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;

// Set by SIGINT/SIGTERM: long commands stop at the next step and close the device cleanly.
extern volatile bool g_stop;

// "vscsi-uio: <msg>" on stderr; returns `code`.
int fail(const std::string& msg, int code = exit_failure);

struct device_session {
    vscsi::uio::controller ctl;
    uint8_t target = 0;
    uint16_t lun = 0;
};

// Open the device the options name (-d, --irq, --legacy/--modern, --ring). `data_bytes` is the DMA
// memory the command needs for data buffers.
bool open_device(const options& o, device_session& s, std::string& err, size_t data_bytes = size_t(8) << 20,
                 uint16_t queues = 1, uint16_t slots = 128);

// -t/-l as numbers and --ring split|packed, checked before any device is touched (a usage
// error).
bool parse_device_args(const options& o, std::string& err);

// -t/-l, or the first LUN there is when neither is given (the other defaults to 0).
bool pick_lun(const options& o, device_session& s, std::string& err);

// Blocks per command: at most 1 MiB, the buffer, and the LUN's maximum transfer.
uint32_t chunk_blocks(const lun_info& li, size_t buffer_bytes);

// The LUN reported a capacity with a block size data can be moved in (a power of two,
// 512..64 KiB), so sizes and offsets computed from it are sound.
bool usable_capacity(const lun_info& li, std::string& err);

// count blocks from lba lie on the LUN (and count > 0).
bool check_range(const lun_info& li, uint64_t lba, uint64_t count, std::string& err);

// One READ or WRITE of `blocks` at `lba` with `buf` (inside the DMA data area).
bool transfer(device_session& s, const lun_info& li, bool write, uint64_t lba, uint32_t blocks, uint8_t* buf,
              std::string& err);

std::string size_text(uint64_t bytes);

}  // namespace vscsi_uio
