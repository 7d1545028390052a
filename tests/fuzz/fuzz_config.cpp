// fuzz_config: configuration-space values and bring-up. The device offers any feature bits
// (unknown ones too), any queue sizes (0, not a power of two, larger than planned), any
// notify offsets, any virtio-scsi config values, reads cdb_size/sense_size back as it
// likes, refuses FEATURES_OK, will not hold its config still, and changes it while running
// (then NEEDS_RESET, reset, restart). start() must succeed exactly on the devices it can
// drive, and then frame every request by what the device reported (driver_rig.hpp checks
// the framing, seg_max, cmd_per_lun and the status protocol).
#include <iterator>
#include <string>

#include "rig_actions.hpp"
#include "seeds.hpp"

namespace {
using namespace fuzz;

const act table[] = {
    act::submit,     act::submit_batch,  act::kick,          act::poll,       act::poll,
    act::answer_all, act::answer_all,    act::advance,       act::needs_reset, act::reset_device,
    act::config_change, act::config_change, act::restart,    act::reset_delay, act::an,
    act::tmf,        act::return_request, act::interrupts,
};
constexpr size_t n_table = std::size(table);

// After the shared 8 bytes, the device in detail:
//   quirks: 1 refuse FEATURES_OK, 2 cdb/sense sizes read back as its own, 4 MSI-X on (legacy),
//           8 VERSION_1 withheld (modern), 16 more feature bits offered (a u64 follows)
//   own sense size, own cdb size (u8 each), virtqueues (u8), queue maxima (8 x u16),
//   notify multiplier (u8), notify offsets (8 x u8), num_queues, seg_max, cmd_per_lun,
//   event_info_size (each a u8, or a u32 after 0xff), max_target (u16), generation churn (u8)
void read_device(input& in, rig_setup& p) {
    device_model& m = p.m;
    const uint8_t quirks = in.u8();
    m.refuse_features_ok = quirks & 1;
    m.honour_size_writes = !(quirks & 2);
    m.msix = quirks & 4;
    m.own_sense_size = in.u8();
    m.own_cdb_size = in.u8();
    if (quirks & 8) m.features &= ~vscsi::feature::bit(vscsi::feature::version_1);
    if (quirks & 16) m.features |= in.u64() & (m.legacy ? 0xffffffffull : ~0ull);
    m.virtqueues = uint16_t(in.below(max_virtqueues + 1));
    for (uint16_t& q : m.queue_max) q = in.u16();
    static constexpr uint32_t mult[] = {4, 2, 0, 8, 1, 3, 4096, 6};
    m.notify_multiplier = mult[in.below(8)];
    for (uint16_t& o : m.notify_off) o = in.u8();
    auto value = [&in]() -> uint32_t {
        const uint8_t b = in.u8();
        return b == 0xff ? in.u32() : b;
    };
    m.num_queues = value();
    m.seg_max = value();
    m.cmd_per_lun = value();
    m.event_info_size = value();
    m.max_target = in.u16();
    m.generation_churn = in.u8() % 40;
}

// The request queues the driver uses: what the device has, at most the configured number,
// and no more than there are slots (every queue gets a share of them).
uint32_t request_queues(const device_model& m, const vscsi::initiator_config& c) {
    uint32_t n = m.num_queues < c.max_request_queues ? m.num_queues : c.max_request_queues;
    return n < c.slots ? n : c.slots;
}

// Whether a driver with config `c` can run this device: the rules of initiator.hpp's
// bring-up, restated from the spec's and the driver's documented limits.
bool drivable(const device_model& m, const vscsi::initiator_config& c) {
    using vscsi::feature::bit;
    if (!m.legacy && !(m.features & bit(vscsi::feature::version_1))) return false;  // checklist 34
    if (!m.legacy && m.refuse_features_ok) return false;
    if (!m.legacy && m.generation_churn >= 32) return false;  // 16 generation-checked attempts
    const uint32_t sense = m.honour_size_writes ? 96 : m.own_sense_size;
    const uint32_t cdb = m.honour_size_writes ? 32 : m.own_cdb_size;
    if (sense > 96 || cdb > 32 || cdb < 6) return false;
    if (m.num_queues == 0) return false;
    const uint32_t nreq = request_queues(m, c);
    for (uint32_t q = 0; q < 2 + nreq; ++q) {
        if (q >= m.virtqueues || m.queue_max[q] == 0) return false;
        if (m.legacy) {
            const uint32_t max = m.queue_max[q];
            if ((max & (max - 1)) || max > c.max_queue_size) return false;
        } else {
            // The notify address inside the structure, and 16-bit aligned (checklist 53, 55).
            const uint64_t off = uint64_t(m.notify_off[q]) * m.notify_multiplier;
            if (off + 2 > 0x1000 || (off & 1)) return false;
        }
    }
    return true;
}

template <class Transport>
void run(const rig_setup& p, input& in) {
    driver_rig<Transport> rig(p.m, p.c, p.fill);
    const bool expect = drivable(p.m, p.c);
    const vscsi::status s = rig.start();
    FUZZ_CHECK((s == vscsi::status::ok) == expect, "start() says %s, the device is %sdrivable", vscsi::to_string(s),
               expect ? "" : "not ");
    if (s == vscsi::status::ok) {
        auto* ini = rig.initiator();
        const device_model& m = p.m;
        const uint32_t nreq = request_queues(m, p.c);
        FUZZ_CHECK(ini->request_queues() == nreq, "%u request queues, expected %u", ini->request_queues(), nreq);
        const uint32_t cpl = m.cmd_per_lun == 0 ? 1 : m.cmd_per_lun > 0xffff ? 0xffff : m.cmd_per_lun;
        FUZZ_CHECK(ini->cmd_per_lun() == cpl, "cmd_per_lun %u, expected %u", ini->cmd_per_lun(), cpl);
        for (uint16_t q = 0; q < nreq; ++q) {
            const uint32_t size = ini->queue_size(q);
            const uint32_t max = m.queue_max[vscsi::first_request_queue + q];
            FUZZ_CHECK(size && !(size & (size - 1)) && size <= max && size <= p.c.max_queue_size,
                       "queue %u of size %u (device max %u)", q, size, max);
            if (!m.legacy)
                FUZZ_CHECK(size * 2 > (max < p.c.max_queue_size ? max : p.c.max_queue_size),
                           "queue %u of size %u: smaller than it could be", q, size);
        }
    }
    run_actions(rig, in, table, n_table);
}

// A device as read_device() reads it.
struct device_bytes {
    uint8_t quirks = 0, own_sense = 96, own_cdb = 32;
    uint64_t more_features = 0;
    uint8_t virtqueues = 3;
    uint16_t queue_max[max_virtqueues] = {64, 64, 64, 64, 64, 64, 64, 64};
    uint8_t multiplier = 0;  // index: 4, 2, 0, 8, 1, 3, 4096, 6
    uint8_t notify_off[max_virtqueues] = {0, 1, 2, 3, 4, 5, 6, 7};
    uint32_t num_queues = 1, seg_max = 8, cmd_per_lun = 64, event_info_size = 16;
    uint16_t max_target = 7;
    uint8_t churn = 0;
    void write(script& s) const {
        s.u8(quirks).u8(own_sense).u8(own_cdb);
        if (quirks & 16) s.u64(more_features);
        s.u8(virtqueues);
        for (uint16_t q : queue_max) s.u16(q);
        s.u8(multiplier);
        for (uint8_t o : notify_off) s.u8(o);
        for (uint32_t v : {num_queues, seg_max, cmd_per_lun, event_info_size}) {
            if (v < 0xff)
                s.u8(uint8_t(v));
            else
                s.u8(0xff).u32(v);
        }
        s.u16(max_target).u8(churn);
    }
};

// The unit tests' bring-up cases (test_device.cpp, test_initiator.cpp) and the config values
// a device may present, as seeds.
std::vector<named_seed> seeds() {
    std::vector<named_seed> out;
    auto add = [&](const std::string& name, const device_bytes& d, bool legacy = false, uint8_t queues = 0x00,
                   bool work = true) {
        script s(table, n_table);
        s.setup(legacy ? 0x67 : 0x66, 0x66, 0x07, 0x2f, queues, 0x07, 0x33);  // plan 128, device 128
        d.write(s);
        if (work) s.submit_batch(4).kick().answer_all().poll();
        out.emplace_back(name, s.bytes);
    };
    device_bytes good;
    add("good-modern", good);
    add("good-legacy", good, true);
    device_bytes d = good;
    d.quirks = 1;
    add("refuse-features-ok", d);
    d = good;
    d.quirks = 8;
    add("no-version-1", d);
    d = good;
    d.quirks = 16;
    d.more_features = ~0ull;
    add("every-feature-bit", d);
    add("every-feature-bit-legacy", d, true);
    for (uint8_t sense : {uint8_t(0), uint8_t(18), uint8_t(97), uint8_t(200)}) {
        d = good;
        d.quirks = 2;
        d.own_sense = sense;
        add("sense-size-" + std::to_string(sense), d);
    }
    for (uint8_t cdb : {uint8_t(5), uint8_t(6), uint8_t(16), uint8_t(33)}) {
        d = good;
        d.quirks = 2;
        d.own_cdb = cdb;
        add("cdb-size-" + std::to_string(cdb), d);
    }
    for (uint32_t n : {0u, 2u, 5u, 0xffffffffu}) {
        d = good;
        d.num_queues = n;
        d.virtqueues = 8;
        add("num-queues-" + std::to_string(n), d, false, 0x05);
    }
    d = good;
    d.queue_max[1] = 0;
    add("no-event-queue", d);
    d = good;
    d.virtqueues = 2;
    add("two-virtqueues", d);
    d = good;
    d.queue_max[2] = 100;
    add("queue-not-power-of-two", d);
    add("queue-not-power-of-two-legacy", d, true);
    d = good;
    for (uint16_t& q : d.queue_max) q = 1024;
    add("queues-larger-than-planned", d);
    add("queues-larger-than-planned-legacy", d, true);
    for (uint16_t& q : d.queue_max) q = 1;
    add("queues-of-one", d);
    for (uint8_t m = 1; m < 8; ++m) {
        d = good;
        d.multiplier = m;
        add("notify-multiplier-" + std::to_string(m), d);
    }
    d = good;
    d.notify_off[2] = 255;
    d.multiplier = 6;  // 4096: past the notify structure
    add("notify-past-structure", d);
    for (uint8_t churn : {uint8_t(20), uint8_t(31), uint8_t(32), uint8_t(39)}) {
        d = good;
        d.churn = churn;
        add("generation-churn-" + std::to_string(churn), d);
    }
    d = good;
    d.quirks = 4;
    add("legacy-msix", d, true);
    for (uint32_t cpl : {0u, 1u, 0x10000u}) {
        d = good;
        d.cmd_per_lun = cpl;
        add("cmd-per-lun-" + std::to_string(cpl), d);
    }
    for (uint32_t seg : {0u, 1u}) {
        d = good;
        d.seg_max = seg;
        add("seg-max-" + std::to_string(seg), d);
    }
    for (uint32_t info : {0u, 1000u}) {
        d = good;
        d.event_info_size = info;
        add("event-info-size-" + std::to_string(info), d);
    }
    {
        // A running device changes its config, then asks to be reset, or the driver restarts.
        script s(table, n_table);
        s.setup(0x66, 0x66, 0x07, 0x2f, 0x05, 0x07, 0x33);
        good.write(s);
        s.submit_batch(4).kick().config_change(2, 1).config_change(0, 2).needs_reset().advance(10).poll();
        s.submit_batch(4).kick().answer_all().poll().config_change(4, 120).restart().config_change(6, 0).restart();
        s.submit_batch(2).kick().answer_all().poll().config_change(5, 8).reset_device().submit_batch(2).kick().answer_all().poll();
        out.emplace_back("config-changes-while-running", s.bytes);
    }
    {
        // Regression (fuzz_config): after stop(), a start() in a new region failed before the
        // rings were set up; reset_device() then reset them in the freed old region.
        script s(table, n_table);
        s.setup(0x66, 0x66, 0x07, 0x2f, 0x00, 0x07, 0x33);
        good.write(s);
        s.config_change(4, 200).restart().reset_device();
        out.emplace_back("regress-restart-in-new-region", s.bytes);
        // Regression (fuzz_config): an odd notify multiplier made a misaligned notify write.
        device_bytes o = good;
        o.multiplier = 5;  // 3
        add("regress-odd-notify-multiplier", o);
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
    rig_setup p = read_rig_setup(in);
    read_device(in, p);
    if (p.m.legacy)
        run<vscsi::legacy_pci<hostile_device>>(p, in);
    else
        run<vscsi::modern_pci<hostile_device>>(p, in);
    return 0;
}
