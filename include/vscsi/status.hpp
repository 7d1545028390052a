// Errors are values: every fallible operation of the core returns a status (or a result<T>).
// No exceptions, no abort; a device that misbehaves is reported, never trusted.
#pragma once
#include <stdint.h>

namespace vscsi {

enum class status : uint8_t {
    ok = 0,
    empty,             // nothing to reap / no event pending
    busy,              // no room now (ring full, no free slot): retry after completions
    invalid_argument,  // the caller asked for something impossible
    too_small,         // a caller-provided region or buffer is too small
    not_supported,     // the device lacks what the request needs (feature not negotiated)
    no_device,         // no virtio device, or not a virtio-scsi one, at this address
    device_error,      // the device refused a step (FEATURES_OK cleared, queue unavailable)
    device_broken,     // the device broke the protocol (bad used id/len/index): queue latched
    needs_reset,       // DEVICE_NEEDS_RESET seen, or recovery requires a device reset
    timeout,           // the device did not answer in time
};

constexpr const char* to_string(status s) {
    switch (s) {
        case status::ok: return "ok";
        case status::empty: return "empty";
        case status::busy: return "busy";
        case status::invalid_argument: return "invalid argument";
        case status::too_small: return "region or buffer too small";
        case status::not_supported: return "not supported by the device";
        case status::no_device: return "no virtio-scsi device";
        case status::device_error: return "device refused the operation";
        case status::device_broken: return "device broke the virtio protocol";
        case status::needs_reset: return "device needs reset";
        case status::timeout: return "timed out";
    }
    return "unknown status";
}

// A value or the reason there is none. T must be trivially constructible (core rule: no
// non-trivial globals or constructors are needed anywhere).
template <class T>
struct result {
    status st;
    T value;
    constexpr bool ok() const { return st == status::ok; }
};

}  // namespace vscsi

// Early return on error: VSCSI_TRY(expr) where expr yields a vscsi::status.
#define VSCSI_TRY(expr)                                                   \
    do {                                                                  \
        ::vscsi::status vscsi_try_status_ = (expr);                       \
        if (vscsi_try_status_ != ::vscsi::status::ok) return vscsi_try_status_; \
    } while (0)
