// virtio-scsi LUN addressing (checklist 4).
//
// A virtio-scsi LUN is 8 bytes: 01, target, then a SAM flat-space single-level LUN
// (0x40 | lun >> 8, lun & 0xff), then four zero bytes. That allows 256 targets and 16384
// LUNs. QEMU writes LUNs below 256 in events with the peripheral form (no 0x40), so the
// decoder accepts both.
#pragma once
#include <stdint.h>

#include "status.hpp"

namespace vscsi {

inline constexpr uint16_t max_lun_number = 16383;
// The REPORT LUNS well-known LU, as a LUN number make_lun() understands (SAM W-LUN C1 01).
inline constexpr uint16_t wlun_report_luns = 0xc101;

struct lun_address {
    uint8_t bytes[8];
};

constexpr bool valid_lun(uint32_t lun) { return lun <= max_lun_number || lun == wlun_report_luns; }

// The caller guarantees valid_lun(lun) (see encode_lun for a checked form).
constexpr lun_address make_lun(uint8_t target, uint16_t lun) {
    if (lun == wlun_report_luns) return lun_address{{1, target, 0xc1, 0x01, 0, 0, 0, 0}};
    return lun_address{{1, target, uint8_t(0x40 | ((lun >> 8) & 0x3f)), uint8_t(lun & 0xff), 0, 0, 0, 0}};
}

constexpr status encode_lun(uint8_t target, uint32_t lun, lun_address& out) {
    if (!valid_lun(lun)) return status::invalid_argument;
    out = make_lun(target, uint16_t(lun));
    return status::ok;
}

inline void write_lun(uint8_t* dst8, uint8_t target, uint16_t lun) {
    const lun_address a = make_lun(target, lun);
    for (int i = 0; i < 8; ++i) dst8[i] = a.bytes[i];
}

// The REPORT LUNS well-known logical unit: C1 01 00 00 00 00 00 00.
constexpr lun_address report_luns_wlun() { return lun_address{{0xc1, 0x01, 0, 0, 0, 0, 0, 0}}; }

constexpr bool is_report_luns_wlun(const uint8_t* b) {
    return b[0] == 0xc1 && b[1] == 0x01 && b[2] == 0 && b[3] == 0 && b[4] == 0 && b[5] == 0 && b[6] == 0 &&
           b[7] == 0;
}

struct decoded_lun {
    bool valid;
    uint8_t target;
    uint16_t lun;
};

// Decode an 8-byte virtio-scsi LUN from device memory. Accepts the flat form (0x40 | hi, lo)
// and the peripheral form (00, lo) that QEMU uses in events; anything else is invalid.
constexpr decoded_lun decode_lun(const uint8_t* b) {
    if (b[0] != 1) return decoded_lun{false, 0, 0};
    if (b[4] | b[5] | b[6] | b[7]) return decoded_lun{false, 0, 0};
    const uint8_t method = b[2] >> 6;
    if (method == 1) return decoded_lun{true, b[1], uint16_t(((b[2] & 0x3f) << 8) | b[3])};
    if (b[2] == 0) return decoded_lun{true, b[1], b[3]};
    if (b[2] == 0xc1 && b[3] == 0x01) return decoded_lun{true, b[1], wlun_report_luns};
    return decoded_lun{false, 0, 0};
}

// A single-level SAM LUN from a REPORT LUNS entry (8 bytes) as a 14-bit LUN number:
// peripheral device addressing with bus 0 (00b) and flat space (01b) are representable in
// virtio-scsi; other methods, and anything beyond the first level, are not.
constexpr decoded_lun decode_sam_lun(const uint8_t* e) {
    if (e[2] | e[3] | e[4] | e[5] | e[6] | e[7]) return decoded_lun{false, 0, 0};
    const uint8_t method = e[0] >> 6;
    if (method == 0 && e[0] == 0) return decoded_lun{true, 0, e[1]};
    if (method == 1) return decoded_lun{true, 0, uint16_t(((e[0] & 0x3f) << 8) | e[1])};
    return decoded_lun{false, 0, 0};
}

}  // namespace vscsi
