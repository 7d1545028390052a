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

// Open the device the options name (-d, --driver, --irq, --legacy/--modern, --ring).
// `data_bytes` is the DMA memory the command needs for data buffers. Fallbacks the controller
// settled for (INTx for MSI-X, ...) go to stderr, one line each.
bool open_device(const options& o, device_session& s, std::string& err, size_t data_bytes = size_t(8) << 20,
                 uint16_t queues = 1, uint16_t slots = 128);

// --driver uio|vfio: true with `out` set when given; false with `err` empty when not given,
// false with `err` set when the value is wrong.
bool parse_driver(const options& o, vscsi::uio::host_driver& out, std::string& err);

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

// A handler that watches for one command sent with send_read(), and hands everything else on
// to the controller's own handler.
struct tag_watch {
    vscsi::uio::controller::sync_handler& base;
    uint64_t tag = 0;
    bool done = false;
    vscsi::io_completion c{};
    void on_complete(const vscsi::io_completion& x) {
        if (x.tag != tag) return base.on_complete(x);
        done = true;
        c = x;
    }
    void on_tmf(const vscsi::tmf_completion& t) { base.on_tmf(t); }
    void on_an(const vscsi::an_completion& a) { base.on_an(a); }
    void on_event(const vscsi::event_info& e) { base.on_event(e); }
};

// Queue a READ of one block at `lba` into `len` bytes at bus address `bus`, and notify the
// device, without waiting: the tag goes into `w`, which then sees the completion. A zero
// timeout is the initiator's default.
vscsi::status send_read(vscsi::uio::controller& c, uint8_t target, uint16_t lun, uint64_t lba, uint64_t bus,
                        uint32_t len, uint64_t timeout_ns, tag_watch& w);

std::string size_text(uint64_t bytes);

// "MSI-X, 5 vectors: config 0, control 1, event 3, request0 0, ..." (interrupt mode).
std::string interrupt_summary(const vscsi::uio::controller& c);

}  // namespace vscsi_uio
