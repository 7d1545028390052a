// SCSI commands a virtio-scsi initiator sends (SPC-4, SBC-3), and decoders for what the
// target sends back.
//
// Builders write into a caller buffer and return the CDB length, or 0 when the arguments
// cannot be encoded (or the buffer is too small). Decoders take the buffer and the number of
// bytes the device actually wrote, and never read past that: lengths inside device data
// are untrusted and clamped.
#pragma once
#include <stdint.h>
#include <stddef.h>

#include "endian.hpp"

namespace vscsi {
namespace scsi {

// ---- operation codes ----
namespace op {
inline constexpr uint8_t test_unit_ready = 0x00;
inline constexpr uint8_t request_sense = 0x03;
inline constexpr uint8_t inquiry = 0x12;
inline constexpr uint8_t mode_sense_6 = 0x1a;
inline constexpr uint8_t start_stop_unit = 0x1b;
inline constexpr uint8_t read_capacity_10 = 0x25;
inline constexpr uint8_t read_10 = 0x28;
inline constexpr uint8_t write_10 = 0x2a;
inline constexpr uint8_t synchronize_cache_10 = 0x35;
inline constexpr uint8_t mode_sense_10 = 0x5a;
inline constexpr uint8_t read_16 = 0x88;
inline constexpr uint8_t write_16 = 0x8a;
inline constexpr uint8_t synchronize_cache_16 = 0x91;
inline constexpr uint8_t service_action_in_16 = 0x9e;
inline constexpr uint8_t report_luns = 0xa0;
inline constexpr uint8_t sai_read_capacity_16 = 0x10;
}  // namespace op

// ---- SAM status codes ----
namespace sam {
inline constexpr uint8_t good = 0x00;
inline constexpr uint8_t check_condition = 0x02;
inline constexpr uint8_t condition_met = 0x04;
inline constexpr uint8_t busy = 0x08;
inline constexpr uint8_t reservation_conflict = 0x18;
inline constexpr uint8_t task_set_full = 0x28;
inline constexpr uint8_t aca_active = 0x30;
inline constexpr uint8_t task_aborted = 0x40;
}  // namespace sam

// ---- sense keys and well-known additional sense codes ----
namespace key {
inline constexpr uint8_t no_sense = 0x0;
inline constexpr uint8_t recovered_error = 0x1;
inline constexpr uint8_t not_ready = 0x2;
inline constexpr uint8_t medium_error = 0x3;
inline constexpr uint8_t hardware_error = 0x4;
inline constexpr uint8_t illegal_request = 0x5;
inline constexpr uint8_t unit_attention = 0x6;
inline constexpr uint8_t data_protect = 0x7;
inline constexpr uint8_t blank_check = 0x8;
inline constexpr uint8_t aborted_command = 0xb;
inline constexpr uint8_t volume_overflow = 0xd;
inline constexpr uint8_t miscompare = 0xe;
}  // namespace key
namespace asc {
inline constexpr uint8_t not_ready = 0x04;               // LOGICAL UNIT NOT READY, ascq = reason
inline constexpr uint8_t invalid_opcode = 0x20;
inline constexpr uint8_t lba_out_of_range = 0x21;
inline constexpr uint8_t invalid_field_in_cdb = 0x24;
inline constexpr uint8_t lun_not_supported = 0x25;
inline constexpr uint8_t write_protected = 0x27;
inline constexpr uint8_t power_on_reset = 0x29;          // ascq 00..07
inline constexpr uint8_t parameters_changed = 0x2a;      // ascq 09: capacity data has changed
inline constexpr uint8_t medium_not_present = 0x3a;
inline constexpr uint8_t target_changed = 0x3f;          // ascq 0e: reported luns data has changed
inline constexpr uint8_t ascq_capacity_changed = 0x09;
inline constexpr uint8_t ascq_reported_luns_changed = 0x0e;
}  // namespace asc

// ---- CDB builders ----
inline constexpr uint32_t max_cdb = 16;

inline void clear(uint8_t* cdb, uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) cdb[i] = 0;
}

inline uint32_t test_unit_ready(uint8_t* cdb, uint32_t cap) {
    if (cap < 6) return 0;
    clear(cdb, 6);
    return 6;
}

inline uint32_t request_sense(uint8_t* cdb, uint32_t cap, uint8_t alloc, bool descriptor_format = false) {
    if (cap < 6) return 0;
    clear(cdb, 6);
    cdb[0] = op::request_sense;
    cdb[1] = descriptor_format ? 1 : 0;
    cdb[4] = alloc;
    return 6;
}

// Standard INQUIRY data.
inline uint32_t inquiry(uint8_t* cdb, uint32_t cap, uint16_t alloc) {
    if (cap < 6) return 0;
    clear(cdb, 6);
    cdb[0] = op::inquiry;
    store_be16(cdb + 3, alloc);
    return 6;
}

// A vital product data page (EVPD): 0x00 supported pages, 0x80 serial, 0x83 identification,
// 0xB0 block limits, ...
inline uint32_t inquiry_vpd(uint8_t* cdb, uint32_t cap, uint8_t page, uint16_t alloc) {
    if (cap < 6) return 0;
    clear(cdb, 6);
    cdb[0] = op::inquiry;
    cdb[1] = 0x01;
    cdb[2] = page;
    store_be16(cdb + 3, alloc);
    return 6;
}
namespace vpd {
inline constexpr uint8_t supported_pages = 0x00;
inline constexpr uint8_t unit_serial = 0x80;
inline constexpr uint8_t device_identification = 0x83;
inline constexpr uint8_t block_limits = 0xb0;
}  // namespace vpd

inline uint32_t read_capacity_10(uint8_t* cdb, uint32_t cap) {
    if (cap < 10) return 0;
    clear(cdb, 10);
    cdb[0] = op::read_capacity_10;
    return 10;
}

inline uint32_t read_capacity_16(uint8_t* cdb, uint32_t cap, uint32_t alloc = 32) {
    if (cap < 16) return 0;
    clear(cdb, 16);
    cdb[0] = op::service_action_in_16;
    cdb[1] = op::sai_read_capacity_16;
    store_be32(cdb + 10, alloc);
    return 16;
}

// Whether a transfer needs the 16-byte form: an LBA range reaching past 2^32 blocks, or more
// than 65535 blocks in one command.
constexpr bool needs_rw16(uint64_t lba, uint64_t blocks) {
    return blocks > 0xffff || lba > 0xffffffffull || lba + blocks > 0x100000000ull;
}

// READ or WRITE, choosing (10) or (16) automatically. blocks == 0 transfers nothing (legal).
inline uint32_t read_write(uint8_t* cdb, uint32_t cap, bool write, uint64_t lba, uint64_t blocks, bool fua = false) {
    if (blocks > 0xffffffffull) return 0;
    if (lba > ~uint64_t(0) - blocks) return 0;  // the range would wrap
    if (!needs_rw16(lba, blocks)) {
        if (cap < 10) return 0;
        clear(cdb, 10);
        cdb[0] = write ? op::write_10 : op::read_10;
        cdb[1] = fua ? 0x08 : 0;
        store_be32(cdb + 2, uint32_t(lba));
        store_be16(cdb + 7, uint16_t(blocks));
        return 10;
    }
    if (cap < 16) return 0;
    clear(cdb, 16);
    cdb[0] = write ? op::write_16 : op::read_16;
    cdb[1] = fua ? 0x08 : 0;
    store_be64(cdb + 2, lba);
    store_be32(cdb + 10, uint32_t(blocks));
    return 16;
}

// SYNCHRONIZE CACHE; lba = blocks = 0 means the whole medium. Picks (16) when needed.
inline uint32_t synchronize_cache(uint8_t* cdb, uint32_t cap, uint64_t lba = 0, uint64_t blocks = 0,
                                  bool immed = false) {
    if (blocks > 0xffffffffull) return 0;
    if (!needs_rw16(lba, blocks)) {
        if (cap < 10) return 0;
        clear(cdb, 10);
        cdb[0] = op::synchronize_cache_10;
        cdb[1] = immed ? 0x02 : 0;
        store_be32(cdb + 2, uint32_t(lba));
        store_be16(cdb + 7, uint16_t(blocks));
        return 10;
    }
    if (cap < 16) return 0;
    clear(cdb, 16);
    cdb[0] = op::synchronize_cache_16;
    cdb[1] = immed ? 0x02 : 0;
    store_be64(cdb + 2, lba);
    store_be32(cdb + 10, uint32_t(blocks));
    return 16;
}

// REPORT LUNS: select 0x00 = all LUNs with addressing, 0x02 = all including well-known.
inline uint32_t report_luns(uint8_t* cdb, uint32_t cap, uint32_t alloc, uint8_t select = 0) {
    if (cap < 12 || alloc < 16) return 0;  // SPC: allocation length below 16 is invalid
    clear(cdb, 12);
    cdb[0] = op::report_luns;
    cdb[2] = select;
    store_be32(cdb + 6, alloc);
    return 12;
}

// MODE SENSE. pc: 0 current, 1 changeable, 2 default, 3 saved. page 0x3f = all pages.
inline uint32_t mode_sense_6(uint8_t* cdb, uint32_t cap, uint8_t page, uint8_t subpage, uint8_t alloc,
                             bool dbd = true, uint8_t pc = 0) {
    if (cap < 6 || page > 0x3f || pc > 3) return 0;
    clear(cdb, 6);
    cdb[0] = op::mode_sense_6;
    cdb[1] = dbd ? 0x08 : 0;
    cdb[2] = uint8_t(pc << 6 | page);
    cdb[3] = subpage;
    cdb[4] = alloc;
    return 6;
}
inline uint32_t mode_sense_10(uint8_t* cdb, uint32_t cap, uint8_t page, uint8_t subpage, uint16_t alloc,
                              bool dbd = true, uint8_t pc = 0) {
    if (cap < 10 || page > 0x3f || pc > 3) return 0;
    clear(cdb, 10);
    cdb[0] = op::mode_sense_10;
    cdb[1] = dbd ? 0x08 : 0;
    cdb[2] = uint8_t(pc << 6 | page);
    cdb[3] = subpage;
    store_be16(cdb + 7, alloc);
    return 10;
}

inline uint32_t start_stop_unit(uint8_t* cdb, uint32_t cap, bool start, bool load_eject = false, bool immed = false) {
    if (cap < 6) return 0;
    clear(cdb, 6);
    cdb[0] = op::start_stop_unit;
    cdb[1] = immed ? 1 : 0;
    cdb[4] = uint8_t((load_eject ? 0x02 : 0) | (start ? 0x01 : 0));
    return 6;
}

// ---- sense data ----
struct sense_info {
    bool valid;        // a response code we understand (70h-73h)
    bool current;      // current (70h/72h) vs deferred (71h/73h)
    bool descriptor;   // descriptor format
    uint8_t key;
    uint8_t asc;
    uint8_t ascq;
    bool info_valid;
    uint64_t information;
};

inline sense_info decode_sense(const uint8_t* s, uint32_t len) {
    sense_info r{};
    if (!s || len < 1) return r;
    const uint8_t code = s[0] & 0x7f;
    if (code == 0x70 || code == 0x71) {
        r.descriptor = false;
        r.current = code == 0x70;
        if (len < 3) return r;
        r.valid = true;
        r.key = s[2] & 0x0f;
        // The additional length says how far the fields go; trust it only as far as len.
        const uint32_t end = len < 8 ? len : (8u + s[7] < len ? 8u + s[7] : len);
        if (end > 12) r.asc = s[12];
        if (end > 13) r.ascq = s[13];
        if ((s[0] & 0x80) && len >= 7) {
            r.info_valid = true;
            r.information = load_be32(s + 3);
        }
        return r;
    }
    if (code == 0x72 || code == 0x73) {
        r.descriptor = true;
        r.current = code == 0x72;
        if (len < 4) return r;
        r.valid = true;
        r.key = s[1] & 0x0f;
        r.asc = s[2];
        r.ascq = s[3];
        if (len < 8) return r;
        const uint32_t end = 8u + s[7] < len ? 8u + s[7] : len;
        // Walk descriptors for the information descriptor (type 0).
        uint32_t at = 8;
        for (unsigned guard = 0; at + 2 <= end && guard < 64; ++guard) {
            const uint8_t type = s[at];
            const uint32_t dlen = 2u + s[at + 1];
            if (at + dlen > end) break;
            if (type == 0x00 && dlen >= 12) {
                r.info_valid = (s[at + 2] & 0x80) != 0;
                r.information = load_be64(s + at + 4);
            }
            at += dlen;
        }
        return r;
    }
    return r;
}

// What a driver does about a CHECK CONDITION.
enum class sense_action : uint8_t {
    none,             // no sense, recovered error: the command succeeded
    retry,            // transient: retry the command
    unit_attention,   // retry after noting the attention (rescan on 3F/0E, resize on 2A/09)
    not_ready,
    medium_error,
    hardware_error,
    illegal_request,
    data_protect,
    aborted_command,
    other,
};

constexpr bool is_unit_attention(const sense_info& s) { return s.valid && s.key == key::unit_attention; }

constexpr sense_action classify(const sense_info& s) {
    if (!s.valid) return sense_action::other;
    switch (s.key) {
        case key::no_sense:
        case key::recovered_error: return sense_action::none;
        case key::not_ready:
            // "becoming ready" is worth a retry; the rest needs intervention.
            return s.asc == asc::not_ready && s.ascq == 0x01 ? sense_action::retry : sense_action::not_ready;
        case key::medium_error: return sense_action::medium_error;
        case key::hardware_error: return sense_action::hardware_error;
        case key::illegal_request: return sense_action::illegal_request;
        case key::unit_attention: return sense_action::unit_attention;
        case key::data_protect: return sense_action::data_protect;
        case key::aborted_command: return sense_action::aborted_command;
        default: return sense_action::other;
    }
}

// ---- INQUIRY ----
struct inquiry_data {
    bool valid;
    uint8_t qualifier;     // 0 connected, 1 not connected, 3 no LU at this address
    uint8_t device_type;   // 0 disk, 5 MMC, 0x1e well-known LU, 0x1f unknown
    bool removable;
    uint8_t version;
    bool cmdque;
    char vendor[8];
    char product[16];
    char revision[4];
};

inline inquiry_data decode_inquiry(const uint8_t* b, uint32_t len) {
    inquiry_data r{};
    if (!b || len < 5) return r;
    r.valid = true;
    r.qualifier = b[0] >> 5;
    r.device_type = b[0] & 0x1f;
    r.removable = (b[1] & 0x80) != 0;
    r.version = b[2];
    r.cmdque = len > 7 && (b[7] & 0x02);
    // The additional length bounds the data the target says is meaningful.
    const uint32_t end = 5u + b[4] < len ? 5u + b[4] : len;
    for (uint32_t i = 0; i < 8; ++i) r.vendor[i] = 8 + i < end ? char(b[8 + i]) : ' ';
    for (uint32_t i = 0; i < 16; ++i) r.product[i] = 16 + i < end ? char(b[16 + i]) : ' ';
    for (uint32_t i = 0; i < 4; ++i) r.revision[i] = 32 + i < end ? char(b[32 + i]) : ' ';
    return r;
}

// A LUN is there to use when the qualifier is 0.
constexpr bool lun_present(const inquiry_data& d) { return d.valid && d.qualifier == 0; }

// Bytes of a VPD page that are really there: min(4 + page length, len).
inline uint32_t vpd_length(const uint8_t* b, uint32_t len) {
    if (!b || len < 4) return 0;
    const uint32_t want = 4u + load_be16(b + 2);
    return want < len ? want : len;
}

// VPD 0x00: is `page` listed?
inline bool vpd_supports(const uint8_t* b, uint32_t len, uint8_t page) {
    const uint32_t end = vpd_length(b, len);
    if (end < 4 || b[1] != vpd::supported_pages) return false;
    for (uint32_t i = 4; i < end; ++i)
        if (b[i] == page) return true;
    return false;
}

struct byte_span {
    const uint8_t* data;
    uint32_t size;
};

// VPD 0x80: the serial number bytes (not NUL-terminated).
inline byte_span vpd_serial(const uint8_t* b, uint32_t len) {
    const uint32_t end = vpd_length(b, len);
    if (end < 4 || b[1] != vpd::unit_serial) return byte_span{nullptr, 0};
    return byte_span{b + 4, end - 4};
}

struct designator {
    uint8_t code_set;      // 1 binary, 2 ASCII, 3 UTF-8
    uint8_t association;   // 0 LU, 1 target port, 2 target device
    uint8_t type;          // 1 T10 vendor, 2 EUI-64, 3 NAA, 8 SCSI name, ...
    const uint8_t* data;
    uint32_t size;
};

// VPD 0x83: visit each designator; visitor returns false to stop. Returns how many it saw.
template <class F>
uint32_t vpd_designators(const uint8_t* b, uint32_t len, F&& f) {
    const uint32_t end = vpd_length(b, len);
    if (end < 4 || b[1] != vpd::device_identification) return 0;
    uint32_t n = 0;
    uint32_t at = 4;
    while (at + 4 <= end) {
        const uint32_t dl = b[at + 3];
        if (at + 4 + dl > end) break;  // truncated designator: stop, don't read past
        designator d{uint8_t(b[at] & 0x0f), uint8_t((b[at + 1] >> 4) & 0x03), uint8_t(b[at + 1] & 0x0f), b + at + 4,
                     dl};
        ++n;
        if (!f(d)) break;
        at += 4 + dl;
    }
    return n;
}

// VPD 0xB0 block limits; absent fields (a short page) read as 0.
struct block_limits {
    bool valid;
    uint16_t max_compare_write;
    uint16_t optimal_granularity;     // blocks
    uint32_t max_transfer;            // blocks, 0 = no limit reported
    uint32_t optimal_transfer;        // blocks
    uint32_t max_prefetch;
    uint32_t max_unmap_lba_count;
    uint32_t max_unmap_descriptors;
    uint32_t optimal_unmap_granularity;
    uint64_t max_write_same;
};

inline block_limits decode_block_limits(const uint8_t* b, uint32_t len) {
    block_limits r{};
    const uint32_t end = vpd_length(b, len);
    if (end < 4 || b[1] != vpd::block_limits) return r;
    r.valid = true;
    auto have = [&](uint32_t off, uint32_t n) { return off + n <= end; };
    if (have(5, 1)) r.max_compare_write = b[5];
    if (have(6, 2)) r.optimal_granularity = load_be16(b + 6);
    if (have(8, 4)) r.max_transfer = load_be32(b + 8);
    if (have(12, 4)) r.optimal_transfer = load_be32(b + 12);
    if (have(16, 4)) r.max_prefetch = load_be32(b + 16);
    if (have(20, 4)) r.max_unmap_lba_count = load_be32(b + 20);
    if (have(24, 4)) r.max_unmap_descriptors = load_be32(b + 24);
    if (have(28, 4)) r.optimal_unmap_granularity = load_be32(b + 28);
    if (have(36, 8)) r.max_write_same = load_be64(b + 36);
    return r;
}

// ---- READ CAPACITY ----
struct capacity {
    bool valid;
    uint64_t last_lba;
    uint32_t block_size;
    bool prot_en;
    uint8_t p_type;
    uint8_t lbppb_exponent;   // logical blocks per physical block, as a power of two
    uint16_t lowest_aligned;
    constexpr uint64_t blocks() const { return last_lba + 1; }
};

inline capacity decode_capacity_10(const uint8_t* b, uint32_t len) {
    capacity r{};
    if (!b || len < 8) return r;
    r.valid = true;
    r.last_lba = load_be32(b);
    r.block_size = load_be32(b + 4);
    return r;
}

// READ CAPACITY(10) answering FFFFFFFFh means: ask again with (16).
constexpr bool needs_capacity_16(const capacity& c) { return c.valid && c.last_lba == 0xffffffffull; }

inline capacity decode_capacity_16(const uint8_t* b, uint32_t len) {
    capacity r{};
    if (!b || len < 12) return r;
    r.valid = true;
    r.last_lba = load_be64(b);
    r.block_size = load_be32(b + 8);
    if (len >= 13) {
        r.prot_en = b[12] & 1;
        r.p_type = (b[12] >> 1) & 7;
    }
    if (len >= 14) r.lbppb_exponent = b[13] & 0x0f;
    if (len >= 16) r.lowest_aligned = uint16_t(load_be16(b + 14) & 0x3fff);
    return r;
}

// ---- REPORT LUNS ----
// Visits each 8-byte LUN entry: at most the list length says, and at most what was written.
template <class F>
uint32_t report_luns_entries(const uint8_t* b, uint32_t len, F&& f) {
    if (!b || len < 8) return 0;
    const uint32_t list = load_be32(b);
    uint32_t entries = list / 8;
    const uint32_t fit = (len - 8) / 8;
    if (entries > fit) entries = fit;
    for (uint32_t i = 0; i < entries; ++i)
        if (!f(b + 8 + 8 * i)) return i + 1;
    return entries;
}

// The list length field alone: when it exceeds the allocation, ask again with a larger one.
inline uint32_t report_luns_list_bytes(const uint8_t* b, uint32_t len) { return b && len >= 4 ? load_be32(b) : 0; }

// ---- MODE SENSE ----
struct mode_header {
    bool valid;
    uint32_t data_length;        // bytes after the length field itself
    uint8_t medium_type;
    bool write_protected;        // WP bit of the device-specific parameter
    bool dpofua;
    uint32_t block_desc_length;
    uint32_t header_length;      // 4 for (6), 8 for (10)
};

inline mode_header decode_mode_header(const uint8_t* b, uint32_t len, bool ten) {
    mode_header r{};
    if (!b) return r;
    if (!ten) {
        if (len < 4) return r;
        r.valid = true;
        r.data_length = b[0];
        r.medium_type = b[1];
        r.write_protected = (b[2] & 0x80) != 0;
        r.dpofua = (b[2] & 0x10) != 0;
        r.block_desc_length = b[3];
        r.header_length = 4;
    } else {
        if (len < 8) return r;
        r.valid = true;
        r.data_length = load_be16(b);
        r.medium_type = b[2];
        r.write_protected = (b[3] & 0x80) != 0;
        r.dpofua = (b[3] & 0x10) != 0;
        r.block_desc_length = load_be16(b + 6);
        r.header_length = 8;
    }
    return r;
}

struct mode_page {
    uint8_t code;
    uint8_t subpage;
    const uint8_t* data;  // the whole page, header included
    uint32_t size;
};

// Visit mode pages after the header and block descriptors; bounded by the mode data length
// and by len.
template <class F>
uint32_t mode_pages(const uint8_t* b, uint32_t len, bool ten, F&& f) {
    const mode_header h = decode_mode_header(b, len, ten);
    if (!h.valid) return 0;
    uint32_t end = h.data_length + (ten ? 2 : 1);
    if (end > len) end = len;
    uint32_t at = h.header_length + h.block_desc_length;
    uint32_t n = 0;
    while (at + 2 <= end) {
        const bool spf = b[at] & 0x40;
        uint32_t size;
        uint8_t sub = 0;
        if (spf) {
            if (at + 4 > end) break;
            sub = b[at + 1];
            size = 4u + load_be16(b + at + 2);
        } else {
            size = 2u + b[at + 1];
        }
        if (at + size > end) break;
        ++n;
        if (!f(mode_page{uint8_t(b[at] & 0x3f), sub, b + at, size})) break;
        at += size;
    }
    return n;
}

}  // namespace scsi
}  // namespace vscsi
