// fuzz_events: event buffers. The device returns event-queue buffers with any 16 bytes
// (event type, EVENTS_MISSED, LUN in every form, reason) and any length, returns them twice,
// names buffers it was never given, moves the used index anywhere, and answers AN queries;
// requests keep flowing meanwhile. The driver must decode exactly what was written, drop
// short events on modern devices, keep the event queue populated, and reset a device that
// lies. The checks are driver_rig.hpp's.
#include <string.h>

#include <array>
#include <iterator>

#include "rig_actions.hpp"
#include "seeds.hpp"

namespace {
using namespace fuzz;

const act table[] = {
    act::return_event, act::return_event, act::return_event, act::return_event, act::poll,
    act::poll,         act::poll,         act::raw_entry,    act::bump_used,    act::set_used,
    act::suppress,     act::submit_batch, act::kick,         act::answer_all,   act::an,
    act::return_control, act::scribble,   act::reset_device, act::needs_reset,  act::interrupts,
    act::advance,      act::restart,
};
constexpr size_t n_table = std::size(table);

// Events of the unit tests (hot-plug, hot-unplug, parameter change, missed events) and the
// forms a device may write, as seeds.
std::vector<named_seed> seeds() {
    std::vector<named_seed> out;
    auto add = [&](const char* name, const script& s) { out.emplace_back(name, s.bytes); };
    // event_info_size 16 (limits 0x07) or 64 (0x1f), 4 event buffers (counts 0x2f)
    auto base = [](uint8_t features = 0x66, uint8_t limits = 0x07) {
        script s(table, n_table);
        s.setup(features, 0x33, 0x07, 0x2f, 0x00, limits, 0x33);
        return s;
    };
    // event, LUN bytes 4..11, reason
    auto ev = [](uint32_t event, uint8_t target, uint8_t lun2, uint8_t lun3, uint32_t reason) {
        std::array<uint8_t, 16> b{};
        st32(b.data(), event);
        b[4] = 1;
        b[5] = target;
        b[6] = lun2;
        b[7] = lun3;
        st32(b.data() + 12, reason);
        return b;
    };
    auto put = [](script& s, uint8_t pick, const std::array<uint8_t, 16>& b, uint32_t len = 16) {
        uint8_t raw[16];
        memcpy(raw, b.data(), 16);
        s.return_event(pick, raw, len);
    };
    for (uint8_t f : {uint8_t(0x66), uint8_t(0x67)}) {
        script s = base(f);
        put(s, 0, ev(1, 0, 0x40, 3, 1));        // TRANSPORT_RESET RESCAN, flat LUN 3
        put(s, 0, ev(1, 2, 0x00, 0, 2));        // REMOVED, LUN 0 in QEMU's peripheral form: whole target
        put(s, 0, ev(3, 0, 0x40, 0, 0x092a));   // PARAM_CHANGE capacity 2A/09
        put(s, 0, ev(2, 1, 0x40, 1, 0x10));     // ASYNC_NOTIFY media change
        s.poll();
        put(s, 0, ev(0x80000000u, 0, 0, 0, 0));  // NO_EVENT with EVENTS_MISSED: rescan
        put(s, 0, ev(0x80000001u, 0, 0x7f, 0xff, 0));  // missed + reset, LUN 16383
        put(s, 0, ev(0, 0, 0, 0, 0));           // NO_EVENT: nothing to deliver
        put(s, 0, ev(7, 0, 0, 0, 9));           // a type the spec does not define
        s.poll();
        put(s, 0, ev(1, 0, 0xc1, 0x01, 0));     // the REPORT LUNS well-known LU
        std::array<uint8_t, 16> bad = ev(1, 0, 0x80, 0, 1);
        put(s, 0, bad);                         // an addressing method virtio-scsi lacks
        bad = ev(1, 0, 0x40, 0, 1);
        bad[4] = 2;
        put(s, 0, bad);                         // not a virtio-scsi LUN
        bad = ev(1, 0, 0x40, 0, 1);
        bad[9] = 1;
        put(s, 0, bad);                         // a second level
        s.poll();
        add(f & 1 ? "events-legacy" : "events-modern", s);
    }
    {
        script s = base();
        put(s, 0, ev(1, 0, 0x40, 3, 1), 15);  // short: dropped on modern
        put(s, 0, ev(1, 0, 0x40, 3, 1), 0);
        put(s, 0, ev(1, 0, 0x40, 3, 1), 16);
        s.poll();
        add("events-short", s);
        script l = base(0x67);
        put(l, 0, ev(3, 0, 0x40, 0, 0x092a), 3);  // legacy: the length says nothing
        l.poll();
        add("events-short-legacy", l);
        script w = base(0x66, 0x1f);  // 64-byte event buffers
        put(w, 1, ev(1, 1, 0x40, 1, 1));
        w.poll();
        add("events-wide-buffers", w);
    }
    {
        script s = base();
        put(s, 0, ev(1, 0, 0x40, 3, 1));
        s.raw_entry(1, 0, 0, 8).bump_used(1, 1).poll();  // the same buffer twice
        add("event-twice", s);
        script b = base();
        b.raw_entry(1, 0, 15, 8).bump_used(1, 1).poll();  // a buffer never posted
        add("event-bad-id", b);
        script j = base();
        j.bump_used(1, 5).poll();  // more than the four posted
        add("event-used-jump", j);
        script r = base();
        put(r, 0, ev(1, 0, 0x40, 3, 1));
        r.raw_entry(1, 0, 0, 8).raw_entry(1, 1, 0, 8).bump_used(1, 2).poll();  // returned again before reposted
        add("event-return-repost", r);
        script a = base();
        a.an(false, 0, 0, 0x7e).return_control(0, 0, 0x10).an(true, 0, 1, 0x10).return_control(0, 0, 0, len_mode::zero);
        a.poll().submit_batch(3).kick().answer_all().poll();
        add("an-and-requests", a);
        script n = base();
        n.needs_reset().advance(10).poll();
        put(n, 0, ev(1, 0, 0x40, 3, 1));
        n.poll();
        add("events-after-reset", n);
    }
    {
        // Regression (fuzz_events): interrupt calls after a failed start() wrote through null.
        script s(table, n_table);
        s.setup(0x67, 0x16, 0x07, 0x2f, 0x00, 0x07, 0x33);
        s.interrupts(false).interrupts(true);
        add("regress-interrupts-after-failed-start", s);
    }
    return out;
}

}  // namespace

VSCSI_FUZZ_ACTION_TARGET(table, seeds)
