// What is behind a controller: targets, LUNs, and each LUN's identity, size and limits.
#pragma once
#include <stdint.h>

#include <string>
#include <vector>

#include <vscsi/scsi.hpp>

#include "controller.hpp"

namespace vscsi_uio {

struct lun_info {
    uint8_t target = 0;
    uint16_t lun = 0;
    vscsi::scsi::inquiry_data inq{};
    vscsi::scsi::capacity cap{};
    vscsi::scsi::block_limits limits{};
    bool read_only = false;
    std::string serial;
};

const char* device_type_name(uint8_t type);
std::string trimmed(const char* s, size_t n);

enum class target_state { absent, present, failed };

// REPORT LUNS on one target.
target_state report_luns(vscsi::uio::controller& c, uint8_t target, std::vector<uint16_t>& luns, std::string& err);

// INQUIRY, capacity, VPD block limits, serial number and write protection of one LUN.
// Fails with "no LUN t:l on <bdf>" when it is not there.
bool probe_lun(vscsi::uio::controller& c, uint8_t target, uint16_t lun, lun_info& out, std::string& err);

// Every LUN of every target the device may have (up to max_target).
bool scan_luns(vscsi::uio::controller& c, std::vector<lun_info>& out, std::string& err, unsigned* targets_found = nullptr);

// The first LUN there is (the default for -t/-l).
bool first_lun(vscsi::uio::controller& c, uint8_t& target, uint16_t& lun, std::string& err);

// One line describing a failed command: "CHECK CONDITION, ILLEGAL REQUEST 24/00" etc.
std::string describe(const vscsi::uio::command_result& r);

}  // namespace vscsi_uio
