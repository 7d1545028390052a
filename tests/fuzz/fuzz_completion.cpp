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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    input in(data, size);
    play(read_rig_setup(in), in, table, n_table);
    return 0;
}
