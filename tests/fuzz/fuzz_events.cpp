// fuzz_events: event buffers. The device returns event-queue buffers with any 16 bytes
// (event type, EVENTS_MISSED, LUN in every form, reason) and any length, returns them twice,
// names buffers it was never given, moves the used index anywhere, and answers AN queries;
// requests keep flowing meanwhile. The driver must decode exactly what was written, drop
// short events on modern devices, keep the event queue populated, and reset a device that
// lies. The checks are driver_rig.hpp's.
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    input in(data, size);
    play(read_rig_setup(in), in, table, n_table);
    return 0;
}
