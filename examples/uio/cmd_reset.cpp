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
    uint64_t victim = 0;
    bool victim_done = false;
    io_completion victim_c{};
    struct abort_handler {
        controller::sync_handler& base;
        uint64_t& victim;
        bool& done;
        io_completion& out;
        void on_complete(const io_completion& x) {
            if (x.tag == victim) {
                done = true;
                out = x;
            } else {
                base.on_complete(x);
            }
        }
        void on_tmf(const tmf_completion& t) { base.on_tmf(t); }
        void on_an(const an_completion& a) { base.on_an(a); }
        void on_event(const event_info& e) { base.on_event(e); }
    } h{c.handler(), victim, victim_done, victim_c};
    tmf fn = type == "abort" ? tmf::abort_task : type == "lun" ? tmf::logical_unit_reset : tmf::i_t_nexus_reset;
    if (fn == tmf::abort_task) {
        // Something to abort: a read of the first block, sent and aborted at once.
        uint8_t cdb[16];
        const uint32_t n = scsi::read_write(cdb, sizeof cdb, false, 0, 1);
        sg_entry sg{c.memory().bus_of(c.data()), li.cap.block_size};
        io_request r{};
        r.target = s.target;
        r.lun = s.lun;
        r.cdb = cdb;
        r.cdb_len = n;
        r.data_in = &sg;
        r.n_in = 1;
        const result<uint64_t> t = c.ini().submit(r, c.now());
        if (t.st != status::ok) return fail(std::string("could not send the command to abort: ") + to_string(t.st));
        victim = t.value;
        c.ini().kick();
    }
    c.tmfs().clear();
    const status st = c.ini().submit_tmf(fn, s.target, s.lun, victim, 0, c.now());
    if (st != status::ok) return fail(std::string("could not send the task management function: ") + to_string(st));
    const uint64_t deadline = c.now() + 60000000000ull;
    const bool ok = c.wait_until(h, [&] { return !c.tmfs().empty() && (victim == 0 || victim_done); }, deadline);
    if (!ok) return fail("the task management function did not complete");
    const tmf_completion t = c.tmfs().front();
    const char* name = fn == tmf::abort_task ? "ABORT TASK" : fn == tmf::logical_unit_reset ? "LOGICAL UNIT RESET" : "I_T NEXUS RESET";
    if (fn == tmf::abort_task)
        fmt::print("abort: {} of tag {:#x} on {}:{} answered {}; the command ended {}\n", name, victim, s.target, s.lun,
                   tmf_response_name(t.response), to_string(victim_c.outcome));
    else
        fmt::print("{}: {} on {}:{} answered {}\n", type == "lun" ? "lun reset" : "target reset", name, s.target, s.lun,
                   tmf_response_name(t.response));
    if (t.device_reset) return fail("the device was reset before it answered");
    return t.response == 0 || t.response == 10 ? 0 : 1;
}

}  // namespace vscsi_uio
