// vscsi-uio reset: ABORT TASK, LOGICAL UNIT RESET, I_T NEXUS RESET, or a device reset.
#include <fmt/core.h>

#include <string>
#include <vector>

#include "session.hpp"

namespace vscsi_uio {

using namespace vscsi;
using vscsi::uio::command_result;
using vscsi::uio::controller;

// The core names every response code; a TMF's 0 is FUNCTION COMPLETE, not OK.
static const char* tmf_response_name(uint8_t r) {
    return r == uint8_t(function_complete) ? "FUNCTION COMPLETE" : to_string(response(r));
}

int cmd_reset(const options& o) {
    const std::string type = o.get("--type");
    if (type != "abort" && type != "lun" && type != "target" && type != "device")
        return fail(type.empty() ? "reset needs --type abort|lun|target|device"
                                 : "--type must be abort, lun, target or device, not '" + type + "'",
                    exit_usage);
    device_session s;
    std::string err;
    if (!open_device(o, s, err) || !pick_lun(o, s, err)) return fail(err);
    controller& c = s.ctl;
    if (type == "device") {
        const status st = c.ini().reset_device(c.handler());
        if (st != status::ok) return fail(std::string("device reset failed: ") + to_string(st));
        uint8_t cdb[16];
        const uint32_t n = scsi::test_unit_ready(cdb, sizeof cdb);
        const command_result r = c.command(s.target, s.lun, cdb, n, false, nullptr, 0);
        fmt::print("device reset: {} re-initialised; TEST UNIT READY on {}:{} afterwards: {}\n", c.function().bdf,
                   s.target, s.lun, describe(r));
        return r.ok() ? 0 : 1;
    }
    lun_info li;
    if (!probe_lun(c, s.target, s.lun, li, err)) return fail(err);
    tag_watch victim{c.handler()};
    tmf fn = type == "abort" ? tmf::abort_task : type == "lun" ? tmf::logical_unit_reset : tmf::i_t_nexus_reset;
    if (fn == tmf::abort_task) {
        // Something to abort: a read of the first block, sent and aborted at once.
        const status st = send_read(c, s.target, s.lun, 0, c.memory().bus_of(c.data()), li.cap.block_size, 0, victim);
        if (st != status::ok) return fail(std::string("could not send the command to abort: ") + to_string(st));
    }
    c.tmfs().clear();
    const status st = c.ini().submit_tmf(fn, s.target, s.lun, victim.tag, 0, c.now());
    if (st != status::ok) return fail(std::string("could not send the task management function: ") + to_string(st));
    const uint64_t deadline = c.now() + 60000000000ull;
    const bool ok = c.wait_until(victim, [&] { return !c.tmfs().empty() && (victim.tag == 0 || victim.done); }, deadline);
    if (!ok) return fail("the task management function did not complete");
    const tmf_completion t = c.tmfs().front();
    const char* name = fn == tmf::abort_task ? "ABORT TASK" : fn == tmf::logical_unit_reset ? "LOGICAL UNIT RESET" : "I_T NEXUS RESET";
    if (fn == tmf::abort_task)
        fmt::print("abort: {} of tag {:#x} on {}:{} answered {}; the command ended {}\n", name, victim.tag, s.target, s.lun,
                   tmf_response_name(t.response), to_string(victim.c.outcome));
    else
        fmt::print("{}: {} on {}:{} answered {}\n", type == "lun" ? "lun reset" : "target reset", name, s.target, s.lun,
                   tmf_response_name(t.response));
    if (t.device_reset) return fail("the device was reset before it answered");
    return t.response == 0 || t.response == 10 ? 0 : 1;
}

}  // namespace vscsi_uio
