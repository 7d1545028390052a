// virtio-scsi LUN addressing (checklist 4).
//
// A virtio-scsi LUN is 8 bytes: 01, target, then a SAM flat-space single-level LUN
// (0x40 | lun >> 8, lun & 0xff), then four zero bytes. That allows 256 targets and 16384
// LUNs. QEMU writes LUNs below 256 in events with the peripheral form (no 0x40), so the
// decoder accepts both.
//
// A host's SCSI layer knows a LUN by another number, its name here: the first two bytes of
// the SAM LUN read as one big-endian number, the way REPORT LUNS lists it (Linux's SCSI
// midlayer names its devices H:C:T:name with exactly this number). LUN 5 reported in
// peripheral form is name 5; LUN 300, which only flat space can express, is name 0x412c.
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

// ---- host LUN names ----

// Flat space names LUN n as flat_space_name | n; peripheral addressing on bus 0 names LUNs
// 0-255 as themselves. No other name is one virtio-scsi can address.
inline constexpr uint32_t flat_space_name = 0x4000;
inline constexpr uint32_t max_lun_name = flat_space_name | max_lun_number;

// The LUN number a name addresses: names 0-255 (peripheral, bus 0) and 0x4000-0x7fff (flat
// space). Anything else (another bus, another addressing method, a second level) is invalid.
constexpr decoded_lun decode_lun_name(uint64_t name) {
    if (name <= 0xff) return decoded_lun{true, 0, uint16_t(name)};
    if (name >= flat_space_name && name <= max_lun_name) return decoded_lun{true, 0, uint16_t(name & max_lun_number)};
    return decoded_lun{false, 0, 0};
}

// The name a device that follows SAM (QEMU does) reports a LUN by: peripheral form below
// 256, flat space from 256 on. invalid_argument for a number above 16383.
constexpr result<uint32_t> lun_name(uint32_t lun) {
    if (lun > max_lun_number) return {status::invalid_argument, 0};
    return {status::ok, lun < 256 ? lun : (flat_space_name | lun)};
}

// The other name of the same LUN: a LUN below 256 has two (n and 0x4000 | n), and a device
// may report it by either, so a host looking a LUN up tries both. A name with no other form
// is its own; invalid_argument for a name virtio-scsi cannot address.
constexpr result<uint32_t> lun_name_alias(uint64_t name) {
    const decoded_lun d = decode_lun_name(name);
    if (!d.valid) return {status::invalid_argument, 0};
    if (d.lun >= 256) return {status::ok, uint32_t(name)};
    return {status::ok, name == d.lun ? (flat_space_name | d.lun) : uint32_t(d.lun)};
}

// The 8-byte virtio-scsi address of a target and a host LUN name (always the flat form, the
// one the spec defines). invalid_argument for a name virtio-scsi cannot address: never a guess.
constexpr status encode_lun_name(uint8_t target, uint64_t name, lun_address& out) {
    const decoded_lun d = decode_lun_name(name);
    if (!d.valid) return status::invalid_argument;
    out = make_lun(target, d.lun);
    return status::ok;
}

// Decode an 8-byte virtio-scsi LUN from device memory. Accepts the flat form (0x40 | hi, lo)
// and the peripheral form (00, lo) that QEMU uses in events (bytes 2-3 are a host LUN name),
// and the REPORT LUNS well-known LU; anything else is invalid.
constexpr decoded_lun decode_lun(const uint8_t* b) {
    if (b[0] != 1) return decoded_lun{false, 0, 0};
    if (b[4] | b[5] | b[6] | b[7]) return decoded_lun{false, 0, 0};
    if (b[2] == 0xc1 && b[3] == 0x01) return decoded_lun{true, b[1], wlun_report_luns};
    const decoded_lun d = decode_lun_name((uint32_t(b[2]) << 8) | b[3]);
    return decoded_lun{d.valid, d.valid ? b[1] : uint8_t(0), d.lun};
}

// A single-level SAM LUN from a REPORT LUNS entry (8 bytes) as a 14-bit LUN number: the
// entry's first level is its name; anything beyond the first level is not representable.
constexpr decoded_lun decode_sam_lun(const uint8_t* e) {
    if (e[2] | e[3] | e[4] | e[5] | e[6] | e[7]) return decoded_lun{false, 0, 0};
    return decode_lun_name((uint32_t(e[0]) << 8) | e[1]);
}

}  // namespace vscsi
