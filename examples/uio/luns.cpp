#include "luns.hpp"

#include <fmt/core.h>
#include <string.h>

namespace vscsi_uio {

using namespace vscsi;
using vscsi::uio::command_result;
using vscsi::uio::controller;

const char* device_type_name(uint8_t type) {
    switch (type) {
        case 0x00: return "disk";
        case 0x01: return "tape";
        case 0x05: return "cd/dvd";
        case 0x07: return "optical";
        case 0x08: return "changer";
        case 0x0c: return "raid";
        case 0x0d: return "enclosure";
        case 0x0e: return "rbc";
        case 0x1e: return "wlun";
        default: return "other";
    }
}

std::string trimmed(const char* s, size_t n) {
    std::string r;
    for (size_t i = 0; i < n; ++i) r += (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '.';
    while (!r.empty() && r.back() == ' ') r.pop_back();
    return r;
}

std::string describe(const command_result& r) {
    if (r.submit != status::ok) return std::string("not sent: ") + to_string(r.submit);
    if (r.outcome == io_outcome::check_condition && r.si.valid)
        return fmt::format("CHECK CONDITION, sense key {:x}h asc/ascq {:02x}h/{:02x}h", r.si.key, r.si.asc, r.si.ascq);
    if (r.outcome == io_outcome::scsi_status) return fmt::format("SCSI status {:02x}h", r.scsi_status);
    return to_string(r.outcome);
}

target_state report_luns(controller& c, uint8_t target, std::vector<uint16_t>& luns, std::string& err) {
    luns.clear();
    // REPORT LUNS goes to LUN 0, which every target answers for (SPC) even when no LU is
    // there; the REPORT LUNS well-known LU is the fallback (QEMU rejects that address with
    // BAD_TARGET, so it cannot come first).
    const uint16_t addresses[] = {0, wlun_report_luns};
    command_result r;
    uint32_t alloc = 4096;
    for (uint16_t at : addresses) {
        for (int attempt = 0; attempt < 2; ++attempt) {
            uint8_t cdb[16];
            const uint32_t n = scsi::report_luns(cdb, sizeof cdb, alloc);
            r = c.command(target, at, cdb, n, false, c.data(), alloc);
            if (!r.ok()) break;
            // 64-bit: the list length comes from the device and may be anything.
            const uint64_t want = uint64_t(scsi::report_luns_list_bytes(c.data(), r.transferred)) + 8;
            if (want > alloc && attempt == 0 && want <= c.data_bytes() && want <= 0x100000) {
                alloc = uint32_t(want);  // the list did not fit: ask again with room for all of it
                continue;
            }
            scsi::report_luns_entries(c.data(), r.transferred, [&](const uint8_t* e) {
                const decoded_lun d = decode_sam_lun(e);
                if (d.valid) luns.push_back(d.lun);
                return true;
            });
            return target_state::present;
        }
        if (at == 0 && r.submit == status::ok && r.outcome == io_outcome::bad_target) return target_state::absent;
    }
    if (r.submit == status::ok && r.outcome == io_outcome::bad_target) return target_state::absent;
    err = fmt::format("REPORT LUNS on target {} failed: {}", target, describe(r));
    return target_state::failed;
}

bool probe_lun(controller& c, uint8_t target, uint16_t lun, lun_info& out, std::string& err) {
    out = lun_info{};
    out.target = target;
    out.lun = lun;
    uint8_t cdb[16];
    uint8_t* buf = c.data();
    const std::string where = fmt::format("{}:{} on {}", target, lun, c.function().bdf);
    uint32_t n = scsi::inquiry(cdb, sizeof cdb, 96);
    command_result r = c.command(target, lun, cdb, n, false, buf, 96);
    if (r.submit == status::ok && r.outcome == io_outcome::bad_target) {
        err = "no LUN " + where;
        return false;
    }
    if (!r.ok()) {
        err = "INQUIRY of " + where + " failed: " + describe(r);
        return false;
    }
    out.inq = scsi::decode_inquiry(buf, r.transferred);
    if (!scsi::lun_present(out.inq)) {
        err = "no LUN " + where;
        return false;
    }

    n = scsi::read_capacity_16(cdb, sizeof cdb, 32);
    r = c.command(target, lun, cdb, n, false, buf, 32);
    if (r.ok()) out.cap = scsi::decode_capacity_16(buf, r.transferred);
    if (!out.cap.valid) {
        n = scsi::read_capacity_10(cdb, sizeof cdb);
        r = c.command(target, lun, cdb, n, false, buf, 8);
        if (r.ok()) out.cap = scsi::decode_capacity_10(buf, r.transferred);
    }

    n = scsi::inquiry_vpd(cdb, sizeof cdb, scsi::vpd::supported_pages, 255);
    r = c.command(target, lun, cdb, n, false, buf, 255);
    if (r.ok()) {
        const uint32_t len = r.transferred;
        const bool has_limits = scsi::vpd_supports(buf, len, scsi::vpd::block_limits);
        const bool has_serial = scsi::vpd_supports(buf, len, scsi::vpd::unit_serial);
        if (has_limits) {
            n = scsi::inquiry_vpd(cdb, sizeof cdb, scsi::vpd::block_limits, 64);
            r = c.command(target, lun, cdb, n, false, buf, 64);
            if (r.ok()) out.limits = scsi::decode_block_limits(buf, r.transferred);
        }
        if (has_serial) {
            n = scsi::inquiry_vpd(cdb, sizeof cdb, scsi::vpd::unit_serial, 255);
            r = c.command(target, lun, cdb, n, false, buf, 255);
            if (r.ok()) {
                const scsi::byte_span s = scsi::vpd_serial(buf, r.transferred);
                out.serial = trimmed(reinterpret_cast<const char*>(s.data), s.size);
                while (!out.serial.empty() && out.serial.front() == ' ') out.serial.erase(0, 1);
            }
        }
    }

    n = scsi::mode_sense_6(cdb, sizeof cdb, 0x3f, 0, 255);
    r = c.command(target, lun, cdb, n, false, buf, 255);
    if (r.ok()) out.read_only = scsi::decode_mode_header(buf, r.transferred, false).write_protected;
    return true;
}

bool scan_luns(controller& c, std::vector<lun_info>& out, std::string& err, unsigned* targets_found) {
    out.clear();
    unsigned targets = 0;
    // max_target is a hint the device may state loosely (checklist 27): never past 255.
    const unsigned max_target = c.ini().device_config().max_target < 255 ? c.ini().device_config().max_target : 255;
    for (unsigned t = 0; t <= max_target; ++t) {
        std::vector<uint16_t> luns;
        const target_state st = report_luns(c, uint8_t(t), luns, err);
        if (st == target_state::failed) return false;
        if (st == target_state::absent) continue;
        ++targets;
        for (uint16_t l : luns) {
            lun_info li;
            std::string why;
            if (probe_lun(c, uint8_t(t), l, li, why)) out.push_back(li);
        }
    }
    if (targets_found) *targets_found = targets;
    return true;
}

bool first_lun(controller& c, uint8_t& target, uint16_t& lun, std::string& err) {
    const unsigned max_target = c.ini().device_config().max_target < 255 ? c.ini().device_config().max_target : 255;
    for (unsigned t = 0; t <= max_target; ++t) {
        std::vector<uint16_t> luns;
        const target_state st = report_luns(c, uint8_t(t), luns, err);
        if (st == target_state::failed) return false;
        if (st == target_state::absent) continue;
        for (uint16_t l : luns) {
            lun_info li;
            std::string why;
            if (probe_lun(c, uint8_t(t), l, li, why)) {
                target = uint8_t(t);
                lun = l;
                return true;
            }
        }
    }
    err = "no LUN found on " + c.function().bdf;
    return false;
}

}  // namespace vscsi_uio
