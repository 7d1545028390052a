// vscsi-uio events: hot-plug, hot-unplug, parameter changes and notifications as they come.
#include <stdio.h>

#include <fmt/core.h>

#include <algorithm>
#include <string>
#include <vector>

#include "session.hpp"

namespace vscsi_uio {

using namespace vscsi;
using vscsi::uio::command_result;
using vscsi::uio::controller;

static const char* reset_reason_name(uint32_t r) {
    switch (r) {
        case 0: return "hard reset";
        case 1: return "rescan";
        case 2: return "removed";
        default: return "unknown reason";
    }
}

int cmd_events(const options& o) {
    double timeout = 0;
    if (o.values.count("--timeout") && !parse_seconds(o.get("--timeout"), 0.1, 86400 * 365, timeout))
        return fail("--timeout must be seconds, not '" + o.get("--timeout") + "'", exit_usage);
    device_session s;
    std::string err;
    if (!open_device(o, s, err)) return fail(err);
    controller& c = s.ctl;
    fmt::print("listening for events on {} ({}){}\n", c.function().bdf, c.ini().legacy() ? "legacy" : "modern",
               timeout > 0 ? fmt::format(" for {:g} s", timeout) : std::string(", Ctrl-C to stop"));
    fflush(stdout);
    // Ask for asynchronous notifications of every class on LUN 0:0; the answer says which
    // the device will send (checklist 16).
    const uint32_t all_classes = 2 | 4 | 8 | 16 | 32 | 64;
    if (c.ini().submit_an(ctrl_type::an_subscribe, 0, 0, all_classes, 0, c.now()) == status::ok &&
        c.wait_until(c.handler(), [&] { return !c.ans().empty(); }, c.now() + 10000000000ull)) {
        const an_completion a = c.ans().front();
        c.ans().clear();
        fmt::print("AN subscribe on 0:0 answered {}: the device will report events {:#x} of {:#x}\n",
                   a.response == 0 ? "OK" : fmt::format("response {}", a.response), a.event_actual, all_classes);
    }
    fflush(stdout);
    const uint64_t end = timeout > 0 ? c.now() + uint64_t(timeout * 1e9) : ~0ull;
    uint64_t seen = 0;
    while (!g_stop && c.now() < end) {
        const uint64_t slice = std::min<uint64_t>(end, c.now() + 200000000ull);
        c.wait_until(c.handler(), [&] { return !c.events().empty(); }, slice);
        if (c.ini().state() != initiator_state::running) return fail("the device failed");
        std::vector<event_info> evs;
        evs.swap(c.events());
        for (const event_info& e : evs) {
            ++seen;
            const std::string where = e.lun_valid ? fmt::format("{}:{}", e.target, e.lun) : std::string("?:?");
            if (e.missed) fmt::print("events missed: the device dropped events; rescan needed\n");
            switch (e.type) {
                case event_type::transport_reset: {
                    const char* what = e.reason == uint32_t(reset_reason::rescan)    ? "hot-plug"
                                       : e.reason == uint32_t(reset_reason::removed) ? "hot-unplug"
                                                                                     : "transport reset";
                    std::string detail;
                    if (e.reason == uint32_t(reset_reason::rescan) && e.lun_valid) {
                        lun_info li;
                        std::string why;
                        if (probe_lun(c, e.target, e.lun, li, why))
                            detail = fmt::format(", {} {} {} blocks x {} B", trimmed(li.inq.vendor, 8),
                                                 trimmed(li.inq.product, 16), li.cap.blocks(), li.cap.block_size);
                    }
                    fmt::print("{}: {} (transport reset, {}){}\n", what, where, reset_reason_name(e.reason), detail);
                    break;
                }
                case event_type::param_change: {
                    const uint8_t asc = uint8_t(e.reason & 0xff), ascq = uint8_t(e.reason >> 8);
                    std::string detail;
                    if (asc == scsi::asc::parameters_changed && ascq == scsi::asc::ascq_capacity_changed) {
                        detail = "capacity data has changed";
                        lun_info li;
                        std::string why;
                        if (e.lun_valid && probe_lun(c, e.target, e.lun, li, why))
                            detail += fmt::format(", now {} blocks x {} B", li.cap.blocks(), li.cap.block_size);
                    }
                    fmt::print("parameter change: {} asc {:02x}h ascq {:02x}h{}\n", where, asc, ascq,
                               detail.empty() ? "" : " (" + detail + ")");
                    break;
                }
                case event_type::async_notify:
                    fmt::print("async notification: {} events {:#x}\n", where, e.reason);
                    break;
                case event_type::no_event:
                    break;
                default:
                    fmt::print("event {:#x}: {} reason {:#x}\n", e.raw_event, where, e.reason);
            }
        }
        fflush(stdout);
    }
    fmt::print("events: {} received\n", seen);
    if (c.irq_mode()) fmt::print("interrupts: {}\n", interrupt_summary(c));
    return 0;
}

}  // namespace vscsi_uio
