// fuzz_handles: request queues handed to queue handles (initiator::take_queue) and back, in
// any interleaving with the initiator's own calls: submits through handles, each handle's
// poll reaping its queue alone, lost commands re-kicked by their owner and handed over to the
// initiator's ladder, lies on any ring, resets that wait for every owner to call in, and the
// reclaimed commands each owner completes afterwards. The device answers truthfully or not,
// as in fuzz_completion. The checks are driver_rig.hpp's.
#include <iterator>

#include "rig_actions.hpp"
#include "seeds.hpp"

namespace {
using namespace fuzz;

const act table[] = {
    act::submit,     act::submit_batch, act::kick,       act::poll,           act::poll_queue,
    act::poll_queue, act::poll_queue,   act::take_queue, act::take_queue,     act::give_back,
    act::return_request, act::return_request, act::return_control, act::answer_all, act::raw_entry,
    act::bump_used,  act::scribble,     act::advance,    act::advance,        act::tmf,
    act::reset_device, act::needs_reset, act::reset_delay, act::interrupts,   act::restart,
};
constexpr size_t n_table = std::size(table);

std::vector<named_seed> seeds() {
    std::vector<named_seed> out;
    auto add = [&](const char* name, const script& s) { out.emplace_back(name, s.bytes); };
    // Two request queues on both sides (queues byte 0x05), modern or legacy.
    auto base = [](uint8_t features = 0x66) {
        script s(table, n_table);
        s.setup(features, 0x33, 0x0f, 0x2f, 0x05, 0x07, 0x33);
        return s;
    };
    request_shape tur;
    request_shape read;
    read.n_in = 1;
    read.cdb_len = 10;
    request_shape on1 = read;
    on1.queue = 1;
    for (uint8_t f : {uint8_t(0x66), uint8_t(0x67)}) {
        const bool legacy = f & 1;
        {
            script s = base(f);  // I/O through two handles and the initiator's own queue use
            s.take_queue(0).take_queue(1).submit(tur).submit(on1).submit(read).kick().answer_all();
            s.poll().poll_queue(0).poll_queue(1).give_back(0).submit(read).kick().answer_all().poll();
            add(legacy ? "io-legacy" : "io", s);
        }
        {
            script s = base(f);  // a lost command on a handle: re-kick, hand-over, ABORT TASK
            s.take_queue(1).submit(on1).kick();
            for (int i = 0; i < 3; ++i) s.advance(60).poll_queue(1).poll();
            s.return_request(1, 0, 2, 0, 0, 0).return_control(0, 0).poll().poll_queue(1);
            for (int i = 0; i < 6; ++i) s.advance(60).poll_queue(1).poll().return_control(0, 0).poll();
            add(legacy ? "handover-legacy" : "handover", s);
        }
        {
            script s = base(f);  // a reset waits for the handle's owner, who then takes back its commands
            s.take_queue(0).submit(tur).submit(read).kick().reset_device().poll().poll_queue(0).poll();
            s.poll_queue(0).submit(tur).kick().answer_all().poll_queue(0);
            add(legacy ? "reset-waits-legacy" : "reset-waits", s);
        }
        {
            script s = base(f);  // a lie on a handle's ring
            s.take_queue(1).submit(on1).submit(on1).kick().raw_entry(3, 0, 9, 0).bump_used(3, 1);
            s.poll_queue(1).poll().poll_queue(1).poll().poll_queue(1).submit(on1).kick().answer_all().poll_queue(1);
            add(legacy ? "lie-on-handle-legacy" : "lie-on-handle", s);
        }
        {
            script s = base(f);  // given back mid-reset with commands in flight
            s.take_queue(0).submit(read).kick().reset_device().poll_queue(0).give_back(0).poll();
            s.take_queue(0).submit(tur).kick().answer_all().poll_queue(0).restart();
            add(legacy ? "give-back-mid-reset-legacy" : "give-back-mid-reset", s);
        }
    }
    return out;
}

}  // namespace

VSCSI_FUZZ_ACTION_TARGET(table, seeds)
