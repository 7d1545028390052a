// fuzz_stomp: a device that writes any bytes anywhere in the DMA region it was given (ring
// indices, used entries, descriptors, the available ring, request and response headers,
// event buffers) while requests, TMFs and resets go on. Behind an IOMMU this is all a lying
// device can do; the driver must keep its books regardless. The checks are driver_rig.hpp's:
// once the device stomps, until it is reset, nothing completes twice or unasked for, every
// completion names its own request with clamped lengths, the in-flight count stays true,
// the driver's private region is exactly as the driver left it, and AddressSanitizer sees
// no access outside the two regions and the data buffers.
#include <iterator>

#include "rig_actions.hpp"
#include "seeds.hpp"

namespace {
using namespace fuzz;

const act table[] = {
    act::submit,  act::submit_batch, act::kick,         act::poll,        act::poll,
    act::return_request, act::answer_all, act::advance, act::tmf,         act::an,
    act::reset_device, act::needs_reset, act::interrupts, act::restart,   act::stomp,
    act::stomp,   act::stomp,
};
constexpr size_t n_table = std::size(table);

// Virtqueues: 0 control, 1 event, 2 the first request queue.
constexpr uint8_t used_of(uint8_t vq) { return uint8_t(1 | vq << 2); }
constexpr uint8_t avail_of(uint8_t vq) { return uint8_t(2 | vq << 2); }
constexpr uint8_t descs_of(uint8_t vq) { return uint8_t(3 | vq << 2); }

std::vector<named_seed> seeds() {
    std::vector<named_seed> out;
    auto add = [&](const char* name, const script& s) { out.emplace_back(name, s.bytes); };
    auto base = [](uint8_t features = 0x66, uint8_t queues = 0x00) {
        script s(table, n_table);
        s.setup(features, 0x33, 0x07, 0x2f, queues, 0x07, 0x33);
        return s;
    };
    request_shape tur;
    request_shape read;
    read.n_in = 1;
    read.cdb_len = 10;
    request_shape write;
    write.n_out = 2;
    write.cdb_len = 10;
    for (uint8_t f : {uint8_t(0x66), uint8_t(0x67), uint8_t(0x04)}) {
        const char* kind = f == 0x66 ? "modern" : f == 0x67 ? "legacy" : "direct";
        auto named = [&](const char* what) { return std::string(what) + "-" + kind; };
        auto traffic = [&](script& s) { s.submit(tur).submit(read).submit(write).kick(); };
        auto after = [&](script& s) {
            s.poll().advance(60).poll().advance(60).poll().reset_device();
            s.submit(read).kick().answer_all().poll();
        };
        std::vector<std::pair<std::string, script>> v;
        {
            script s = base(f);  // the used index jumps: more completions than in flight
            traffic(s);
            s.stomp(used_of(2), 2, {0x40, 0x00});
            after(s);
            v.emplace_back(named("used-idx"), s);
        }
        {
            script s = base(f);  // a forged used entry for a head in flight, then one for a free one
            traffic(s);
            s.stomp(used_of(2), 4, {0, 0, 0, 0, 0x6c, 0, 0, 0}).stomp(used_of(2), 2, {1, 0}).poll();
            s.stomp(used_of(2), 12, {7, 0, 0, 0, 0x10, 0, 0, 0}).stomp(used_of(2), 2, {2, 0});
            after(s);
            v.emplace_back(named("used-entries"), s);
        }
        {
            script s = base(f);  // descriptors and the available ring rewritten under the driver
            traffic(s);
            s.stomp(descs_of(2), 0, {1, 2, 3, 4, 5, 6, 7, 8}).stomp(descs_of(2), 14, {0xff, 0xff});
            s.stomp(avail_of(2), 2, {0x33, 0x12}).stomp(avail_of(2), 4, {9, 0});
            s.submit(tur).kick().poll().submit(read).kick();
            after(s);
            v.emplace_back(named("descriptors-avail"), s);
        }
        {
            script s = base(f);  // headers and sense: anywhere past the rings
            traffic(s);
            for (uint32_t off : {0x3000u, 0x3040u, 0x30b0u, 0x4010u, 0x5000u})
                s.stomp(0, off, {0xff, 0, 0xff, 0, 0x7f, 0x80, 0x01, 0xfe});
            s.stomp(used_of(2), 4, {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}).stomp(used_of(2), 2, {1, 0});
            after(s);
            v.emplace_back(named("headers"), s);
        }
        {
            script s = base(f);  // an event buffer returned with garbage, and the event ring's index
            traffic(s);
            s.stomp(used_of(1), 4, {0, 0, 0, 0, 16, 0, 0, 0}).stomp(used_of(1), 2, {1, 0}).poll();
            s.stomp(used_of(1), 2, {0x80, 0});
            after(s);
            v.emplace_back(named("events"), s);
        }
        {
            script s = base(f);  // a TMF and an escalation in flight while the control ring is forged
            s.submit(read).kick().tmf(vscsi::tmf::abort_task, 0, 0, 0).advance(60).poll();
            s.stomp(used_of(0), 4, {0, 0, 0, 0, 1, 0, 0, 0}).stomp(used_of(0), 2, {1, 0}).poll();
            s.advance(60).poll().advance(60).poll().stomp(used_of(0), 2, {9, 0});
            after(s);
            v.emplace_back(named("control"), s);
        }
        {
            script s = base(f);  // stomped, then stop and start in a new region
            traffic(s);
            s.stomp(0, 0x10, {0xde, 0xad, 0xbe, 0xef}).restart().submit(tur).kick().answer_all().poll();
            v.emplace_back(named("restart"), s);
        }
        for (auto& kv : v) add(kv.first.c_str(), kv.second);
    }
    {
        script s = base(0x66, 0x05);  // two request queues: one forged, the other answered
        s.submit_batch(4, 0).submit_batch(4, 1).kick().stomp(used_of(3), 2, {3, 0}).poll();
        s.answer_all().poll().reset_device().submit_batch(4, 1).kick().answer_all().poll();
        add("two-queues", s);
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    write_seeds_if_asked(seeds());
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    input in(data, size);
    play(read_rig_setup(in), in, table, n_table);
    return 0;
}
