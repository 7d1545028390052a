// fuzz_config: configuration-space values and bring-up. The device offers any feature bits
// (unknown ones too), any queue sizes (0, not a power of two, larger than planned), any
// notify offsets, any virtio-scsi config values, reads cdb_size/sense_size back as it
// likes, refuses FEATURES_OK, will not hold its config still, and changes it while running
// (then NEEDS_RESET, reset, restart). start() must succeed exactly on the devices it can
// drive, and then frame every request by what the device reported (driver_rig.hpp checks
// the framing, seg_max, cmd_per_lun and the status protocol).
#include <iterator>

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
    const uint32_t nreq = m.num_queues < c.max_request_queues ? m.num_queues : c.max_request_queues;
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
        const uint32_t nreq = m.num_queues < p.c.max_request_queues ? m.num_queues : p.c.max_request_queues;
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

}  // namespace

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
