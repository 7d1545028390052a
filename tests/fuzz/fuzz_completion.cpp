// fuzz_completion: used-ring entries and response headers (sense_len, residual, response,
// status) through the initiator. Requests of every shape go to a device that answers them
// truthfully or not, loses them (the escalation ladder runs), takes caller TMFs and gets
// reset. The checks are driver_rig.hpp's.
#include <iterator>

#include "rig_actions.hpp"
#include "seeds.hpp"

namespace {
using namespace fuzz;

const act table[] = {
    act::submit,      act::submit_batch, act::kick,     act::poll,         act::poll,
    act::return_request, act::return_request, act::return_control, act::answer_all, act::raw_entry,
    act::bump_used,   act::set_used,     act::suppress, act::scribble,     act::advance,
    act::tmf,         act::an,           act::reset_device, act::needs_reset, act::reset_delay,
    act::interrupts,  act::restart,
};
constexpr size_t n_table = std::size(table);

// The unit tests' scenarios (test_initiator.cpp, test_ring_hostile.cpp), as seeds.
std::vector<named_seed> seeds() {
    std::vector<named_seed> out;
    auto add = [&](const char* name, const script& s) { out.emplace_back(name, s.bytes); };
    // 0x66: modern, INDIRECT and EVENT_IDX offered and used; 0x67: the same on legacy.
    auto base = [](uint8_t features = 0x66, uint8_t queues = 0x00) {
        script s(table, n_table);
        s.setup(features, 0x33, 0x07, 0x2f, queues, 0x07, 0x33);
        return s;
    };
    request_shape tur;
    request_shape read;
    read.n_in = 1;
    read.cdb_len = 10;
    read.seg_len[0] = 512;
    request_shape write;
    write.n_out = 2;
    write.cdb_len = 10;
    request_shape bidi;
    bidi.n_out = 1;
    bidi.n_in = 1;
    for (uint8_t f : {uint8_t(0x66), uint8_t(0x67), uint8_t(0x00), uint8_t(0x01)}) {
        script s = base(f);
        s.submit(tur).submit(read).submit(write).kick().answer_all().poll();
        add(f & 1 ? (f & 2 ? "good-legacy" : "good-legacy-plain") : (f & 2 ? "good-modern" : "good-modern-plain"), s);
    }
    {
        script s = base();
        for (uint8_t code : {uint8_t(0), uint8_t(1), uint8_t(2), uint8_t(3), uint8_t(4), uint8_t(5), uint8_t(6),
                             uint8_t(7), uint8_t(8), uint8_t(9), uint8_t(10), uint8_t(11), uint8_t(12), uint8_t(13),
                             uint8_t(230)})
            s.submit(read).kick().return_request(0, 0, code, 0, 0, 0).poll();
        s.submit(tur).kick().return_request(0, 0, 0, 2, 18, 0).poll();  // CHECK CONDITION with sense
        s.submit(tur).kick().return_request(0, 0, 0, 8, 0, 0).poll();   // BUSY
        add("every-response-code", s);
    }
    {
        script s = base();
        s.submit(read).kick().return_request_raw(0, 0xffff, 0x7fffffff).poll();
        s.submit(read).kick().return_request(0, 0, 0, 2, 120, 199, len_mode::header_and_sense).poll();
        s.submit(read).kick().return_request(0, 0, 0, 0, 0, 96, len_mode::exact, 0, 512).poll();
        s.submit(tur).kick().return_request(0, 0, 0, 2, 40, 0, len_mode::header).poll();
        s.submit(tur).kick().return_request(0, 0, 0, 0, 0, 0, len_mode::short_header).poll();
        s.submit(tur).kick().return_request(0, 0, 0, 0, 0, 0, len_mode::zero).poll();
        add("sense-residual-clamps", s);
        script l = base(0x67);
        l.submit(read).kick().return_request_raw(0, 0xffff, 0x7fffffff).poll();
        l.submit(read).kick().return_request(0, 0, 0, 2, 96, 0, len_mode::zero).poll();
        add("sense-residual-clamps-legacy", l);
    }
    {
        script s = base();
        s.submit(read).kick();
        for (int i = 0; i < 8; ++i) s.advance(60).poll().return_control(0, 0).poll();  // rekick, ABORT, ... reset
        s.submit(tur).kick().answer_all().poll();
        add("lost-command-ladder", s);
        script h = base();
        h.submit(tur).kick().advance(60).poll().advance(60).poll();  // rekick, then ABORT TASK
        h.return_request(0, 0, 2, 0, 0, 0).return_control(0, 0).poll();
        add("held-command-aborted", h);
        script t = base();
        t.submit(tur).kick().tmf(vscsi::tmf::logical_unit_reset, 0, 0, 0);
        for (int i = 0; i < 6; ++i) t.advance(60).poll();
        add("tmf-ignored-reset", t);
        script q = base();
        q.submit(read).submit(tur).kick().tmf(vscsi::tmf::abort_task, 0, 0, 0).tmf(vscsi::tmf::query_task_set, 0, 0, 1);
        q.return_control(0, 0).return_control(0, 10).answer_all().poll();
        q.an(false, 0, 0, 0x7e).an(true, 1, 2, 0x10).return_control(0, 0, 0x10).return_control(0, 0, 2, len_mode::zero).poll();
        add("caller-tmf-an", q);
    }
    {
        // The lies of "a lying device gets reset": bad id, middle id, bad len, duplicate, jump.
        const char* names[] = {"lie-bad-id", "lie-middle-id", "lie-bad-len", "lie-duplicate", "lie-used-jump"};
        for (int lie = 0; lie < 5; ++lie) {
            script s = base(0x04);  // no indirect: chains of several descriptors
            s.submit(read).submit(read).submit(read).kick();
            switch (lie) {
                case 0: s.raw_entry(2, 0, 15, 0).bump_used(2, 1); break;
                case 1: s.raw_entry(2, 0, 1, 10).bump_used(2, 1); break;
                case 2: s.return_request(0, 0, 0, 0, 0, 0, len_mode::raw, 1u << 20); break;
                case 3: s.return_request(0, 0, 0, 0, 0, 0).raw_entry(2, 0, 0, 0).bump_used(2, 1); break;
                case 4: s.bump_used(2, 8); break;
            }
            s.poll().submit(tur).kick().answer_all().poll();
            add(names[lie], s);
        }
        script u = base();
        u.submit(tur).raw_entry(2, 0, 0, 6).bump_used(2, 1).poll().kick().poll();  // never published
        add("lie-unpublished", u);
    }
    {
        script s = base();
        s.needs_reset().advance(10).poll().submit(tur).kick().answer_all().poll();
        add("needs-reset", s);
        script r = base();
        r.submit(tur).kick().reset_delay(200).reset_device().submit(tur).reset_delay(0).reset_device().poll();
        add("reset-never-completes", r);
        script o = base();
        o.submit(read).submit(tur).submit(write).kick();
        o.return_request(0, 2, 0, 0, 0, 0).return_request(0, 0, 0, 0, 0, 0).return_request(0, 1, 0, 0, 0, 0).poll();
        add("out-of-order", o);
        script m = base(0x66, 0x05);  // two request queues on both sides
        m.submit_batch(8, 0).kick().answer_all().poll().submit_batch(8, 1).kick().answer_all().poll();
        add("two-queues", m);
        script st = base();
        st.submit(tur).submit(read).kick().restart().submit(tur).kick().answer_all().poll();
        add("stop-restart", st);
        script full = base();
        full.submit_batch(8).submit_batch(8).kick().answer_all().poll();
        add("full-ring", full);
    }
    {
        script b = base(0x6e);  // INOUT offered
        b.submit(bidi).kick().return_request(0, 0, 0, 0, 0, 4).poll();
        add("bidirectional", b);
        request_shape pi = read;
        pi.pi_out = 8;
        pi.pi_in = 8;
        script p = base(0xf6);  // T10 PI offered and accepted
        p.submit(pi).kick().answer_all().poll();
        add("t10-pi", p);
        script i = base();
        i.interrupts(false).submit(tur).kick().return_request(0, 0, 0, 0, 0, 0).interrupts(true).poll().interrupts(true);
        i.suppress(2, false, 5).submit_batch(6).kick().suppress(2, true, 1).submit(tur).kick().answer_all().poll();
        add("interrupts-suppression", i);
    }
    {
        // Regressions, each found by a fuzz target (see the unit test of the same name).
        // A failed start() (legacy queue larger than planned), then stop(): stale region bytes.
        script s(table, n_table);
        s.setup(0x67, 0x16, 0x07, 0x2f, 0x00, 0x07, 0x33, 0x01);
        s.reset_device();
        add("regress-failed-start-stale-region", s);
    }
    return out;
}

}  // namespace

VSCSI_FUZZ_ACTION_TARGET(table, seeds)
