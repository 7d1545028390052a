// The initiator end to end against the loopback device: bring-up on every personality,
// data integrity, back-pressure, every response code, sense and residual clamping, TMF,
// AN, events, the timeout escalation ladder and recovery from a lying device.
#include <catch2/catch.hpp>

#include <random>

#include "initiator_fixture.hpp"

using namespace vscsi;
using fixture::rig;
using fixture::rw10;
using fixture::tur;
using lb_options = vscsi::loopback::options;
using vscsi::loopback::personality;
using modern_t = modern_pci<loopback::device>;
using legacy_t = legacy_pci<loopback::device>;

namespace {
// packed: the device offers packed rings too (modern interface), which the initiator takes.
lb_options opts(personality k, bool packed = false) {
    lb_options o;
    o.kind = k;
    o.packed = packed;
    return o;
}

// Clear the power-on unit attention the device reports first, as any driver must.
template <class R>
void clear_ua(R& r, uint8_t target = 0, uint16_t lun = 0) {
    const io_completion c = r.command(target, lun, tur(), nullptr, 0);
    REQUIRE(c.outcome == io_outcome::check_condition);
    REQUIRE(c.sense_len >= 14);
    CHECK((r.rec.sense.back()[2] & 0x0f) == 0x6);  // UNIT ATTENTION
    CHECK(r.rec.sense.back()[12] == 0x29);         // power on / reset
    const io_completion ok = r.command(target, lun, tur(), nullptr, 0);
    REQUIRE(ok.outcome == io_outcome::good);
}
}  // namespace

TEST_CASE("bring-up on a modern device negotiates and configures", "[initiator]") {
    rig<modern_t> r(opts(personality::modern));
    r.dev->add_lun(0, 0, 2048);
    REQUIRE(r.start() == status::ok);
    CHECK(r.dev->violations().empty());
    CHECK((r.dev->status() & 0x0f) == (dev_status::acknowledge | dev_status::driver | dev_status::features_ok |
                                       dev_status::driver_ok));
    const uint64_t f = r.dev->driver_features();
    CHECK((f & feature::bit(feature::version_1)) != 0);
    CHECK((f & feature::bit(feature::ring_indirect_desc)) != 0);
    CHECK((f & feature::bit(feature::ring_event_idx)) != 0);
    CHECK((f & feature::bit(feature::scsi_hotplug)) != 0);
    CHECK((f & feature::bit(feature::any_layout)) == 0);  // legacy-only bit never on modern
    CHECK(r.ini->device_config().cmd_per_lun == 128);
    CHECK(r.ini->device_config().seg_max == 254);
    CHECK(r.ini->device_config().max_target == 255);
    CHECK(r.ini->device_config().max_lun == 16383);
    CHECK(r.dev->cdb_size() == 32);
    CHECK(r.dev->sense_size() == 96);
    CHECK(r.ini->queue_size(0) == 256);
    CHECK(!r.ini->legacy());
    clear_ua(r);
    CHECK(r.dev->violations().empty());
}

TEST_CASE("packed rings are taken when offered, on the modern interface only, as configured", "[initiator][packed]") {
    const uint64_t packed_bit = feature::bit(feature::ring_packed), in_order_bit = feature::bit(feature::in_order);
    {
        rig<modern_t> r(opts(personality::modern, true));  // QEMU's packed=on
        r.dev->add_lun(0, 0, 64);
        REQUIRE(r.start() == status::ok);
        CHECK(r.ini->packed());
        CHECK((r.dev->driver_features() & packed_bit) != 0);
        CHECK((r.dev->driver_features() & in_order_bit) == 0);  // not offered
        clear_ua(r);
        CHECK(r.dev->violations().empty());
    }
    {
        // A transitional device: its legacy interface knows no packed rings, its modern one does.
        rig<legacy_t> l(opts(personality::transitional, true));
        l.dev->add_lun(0, 0, 64);
        REQUIRE(l.start() == status::ok);
        CHECK(!l.ini->packed());
        CHECK((l.dev->driver_features() >> 32) == 0);
        clear_ua(l);
        rig<modern_t> m(opts(personality::transitional, true));
        m.dev->add_lun(0, 0, 64);
        REQUIRE(m.start() == status::ok);
        CHECK(m.ini->packed());
        clear_ua(m);
    }
    {
        // IN_ORDER comes with packed rings; with split rings it is not taken.
        lb_options o = opts(personality::modern, true);
        o.in_order = true;
        rig<modern_t> r(o);
        r.dev->add_lun(0, 0, 64);
        REQUIRE(r.start() == status::ok);
        CHECK((r.dev->driver_features() & (packed_bit | in_order_bit)) == (packed_bit | in_order_bit));
        clear_ua(r);
        initiator_config c;
        c.ring = ring_choice::split;
        rig<modern_t> s(o, c);
        s.dev->add_lun(0, 0, 64);
        REQUIRE(s.start() == status::ok);
        CHECK(!s.ini->packed());
        CHECK((s.dev->driver_features() & (packed_bit | in_order_bit)) == 0);
        clear_ua(s);
        CHECK(s.dev->violations().empty());
    }
    {
        // Packed asked for, but not offered (or no modern interface): refused, device FAILED.
        initiator_config c;
        c.ring = ring_choice::packed;
        rig<modern_t> r(opts(personality::modern), c);
        CHECK(r.start() == status::not_supported);
        CHECK(r.ini->state() == initiator_state::failed);
        CHECK((r.dev->status() & dev_status::failed) != 0);
        rig<legacy_t> l(opts(personality::legacy, true), c);
        CHECK(l.start() == status::not_supported);
        CHECK(r.dev->violations().empty());
        CHECK(l.dev->violations().empty());
    }
    {
        // One format by template: a split-only initiator never asks for packed rings, a
        // packed-only one needs them.
        rig<modern_t, 4, split_ring<hosted_platform>> s(opts(personality::modern, true));
        s.dev->add_lun(0, 0, 64);
        REQUIRE(s.start() == status::ok);
        CHECK(!s.ini->packed());
        CHECK((s.dev->driver_features() & packed_bit) == 0);
        clear_ua(s);
        rig<modern_t, 4, packed_ring<hosted_platform>> p(opts(personality::modern, true));
        p.dev->add_lun(0, 0, 64);
        REQUIRE(p.start() == status::ok);
        CHECK(p.ini->packed());
        clear_ua(p);
        rig<modern_t, 4, packed_ring<hosted_platform>> n(opts(personality::modern));
        CHECK(n.start() == status::not_supported);
    }
}

TEST_CASE("bring-up on legacy and transitional devices uses the legacy interface", "[initiator]") {
    for (personality k : {personality::legacy, personality::transitional}) {
        rig<legacy_t> r(opts(k));
        r.dev->add_lun(0, 0, 2048);
        REQUIRE(r.start() == status::ok);
        CHECK(r.ini->legacy());
        CHECK((r.dev->driver_features() >> 32) == 0);
        CHECK((r.dev->status() & dev_status::features_ok) == 0);  // no FEATURES_OK on legacy
        CHECK((r.dev->status() & dev_status::driver_ok) != 0);
        clear_ua(r);
        CHECK(r.dev->violations().empty());
    }
}

TEST_CASE("legacy config moves to offset 24 with MSI-X enabled", "[initiator]") {
    lb_options o = opts(personality::legacy);
    o.msix_enabled = true;
    o.cmd_per_lun = 7;
    rig<legacy_t> r(o);
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    CHECK(r.transport->config_offset_in_bar() == 24);
    CHECK(r.ini->device_config().cmd_per_lun == 7);
    CHECK(r.dev->violations().empty());
}

TEST_CASE("a device that refuses FEATURES_OK is failed, not used", "[initiator]") {
    rig<modern_t> r(opts(personality::modern));
    r.dev->fault().refuse_features_ok = true;
    CHECK(r.start() == status::device_error);
    CHECK((r.dev->status() & dev_status::failed) != 0);
    CHECK((r.dev->status() & dev_status::driver_ok) == 0);
    CHECK(r.ini->state() == initiator_state::failed);
    CHECK(r.dev->violations().empty());
}

TEST_CASE("a failed start leaves nothing in flight, whatever the region held before", "[initiator][regression]") {
    // Found by fuzz_completion: bring-up failed before the request bookkeeping was set up,
    // so stop() took stale bytes of the region for requests in flight.
    for (uint8_t fill : {uint8_t(0x00), uint8_t(0x01), uint8_t(0xa5), uint8_t(0xff)}) {
        rig<modern_t> r(opts(personality::modern));
        r.region_fill = fill;
        r.dev->fault().refuse_features_ok = true;
        INFO("region filled with " << int(fill));
        CHECK(r.start() == status::device_error);
        CHECK(r.ini->in_flight() == 0);
        r.dev->fault().refuse_features_ok = false;
        CHECK(r.ini->stop(r.rec) == status::ok);
        CHECK(r.rec.done.empty());
        CHECK(r.rec.tmfs.empty());
        CHECK(r.rec.ans.empty());
        CHECK(r.ini->in_flight() == 0);
    }
}

TEST_CASE("a failed restart in a new region never touches the old one", "[initiator][regression]") {
    // Found by fuzz_config: after stop(), start() in a new region failed before the rings
    // were set up again, and stop() then reset the rings where they were: in the region
    // the caller had taken back.
    rig<modern_t> r(opts(personality::modern));
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->stop(r.rec) == status::ok);
    fixture::shared_memory fresh(r.region->bytes, 0x200000000ull);
    r.map.add(fresh.bus, fresh.virt, fresh.bytes);
    memset(r.region->virt, 0x3c, r.region->bytes);  // the old region, the caller's again
    r.dev->fault().refuse_features_ok = true;
    CHECK(r.ini->start(r.cfg, dma_region{fresh.virt, fresh.bus, fresh.bytes}, r.shadow->region()) ==
          status::device_error);
    r.dev->fault().refuse_features_ok = false;
    CHECK(r.ini->reset_device(r.rec) == status::ok);
    CHECK(r.ini->stop(r.rec) == status::ok);
    size_t changed = 0;
    for (size_t i = 0; i < r.region->bytes; ++i) changed += r.region->virt[i] != 0x3c;
    CHECK(changed == 0);
    CHECK(r.rec.done.empty());
}

TEST_CASE("interrupt calls touch no ring unless the initiator runs", "[initiator][regression]") {
    // Found by fuzz_events: after a failed start() the rings were never set up, and
    // disable_interrupts() wrote through their null base.
    lb_options o = opts(personality::legacy);
    o.queue_max = 1024;  // larger than the planned 256: start() refuses before any ring exists
    rig<legacy_t> r(o);
    REQUIRE(r.start() == status::not_supported);
    r.ini->disable_interrupts();
    CHECK(!r.ini->enable_interrupts());
    // After stop() the region is the caller's again: nothing may write to it.
    rig<modern_t> m(opts(personality::modern));
    REQUIRE(m.start() == status::ok);
    REQUIRE(m.ini->stop(m.rec) == status::ok);
    memset(m.region->virt, 0x3c, m.region->bytes);
    m.ini->disable_interrupts();
    CHECK(!m.ini->enable_interrupts());
    size_t changed = 0;
    for (size_t i = 0; i < m.region->bytes; ++i) changed += m.region->virt[i] != 0x3c;
    CHECK(changed == 0);
}

TEST_CASE("a legacy device whose fixed queue exceeds the planned memory is refused cleanly", "[initiator]") {
    lb_options o = opts(personality::legacy);
    o.queue_max = 1024;
    initiator_config c;
    c.max_queue_size = 256;
    rig<legacy_t> r(o, c);
    CHECK(r.start() == status::not_supported);
    initiator_config big;
    big.max_queue_size = 1024;
    rig<legacy_t> r2(o, big);
    r2.dev->add_lun(0, 0, 64);
    CHECK(r2.start() == status::ok);
    CHECK(r2.ini->queue_size(0) == 1024);
}

TEST_CASE("a modern device offering a larger queue is asked for the planned size", "[initiator]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    lb_options o = opts(personality::modern, packed);
    o.queue_max = 32768;
    initiator_config c;
    c.max_queue_size = 128;
    rig<modern_t> r(o, c);
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    CHECK(r.ini->queue_size(0) == 128);
    CHECK(r.dev->queue_size(2) == 128);
}

TEST_CASE("write then read returns the same bytes on 512 and 4096-byte LUNs", "[initiator]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    for (uint32_t bs : {512u, 4096u}) {
        rig<modern_t> r(opts(personality::modern, packed));
        r.dev->add_lun(0, 3, 256, bs);
        REQUIRE(r.start() == status::ok);
        REQUIRE(r.ini->packed() == packed);
        clear_ua(r, 0, 3);
        uint8_t* out = r.buf(0);
        uint8_t* in = r.buf(1 << 20);
        for (uint32_t i = 0; i < 8 * bs; ++i) out[i] = uint8_t(i * 7 + bs);
        io_completion w = r.command(0, 3, rw10(true, 10, 8), nullptr, 0, out, 8 * bs);
        REQUIRE(w.outcome == io_outcome::good);
        CHECK(w.residual == 0);
        CHECK(w.transferred == 8 * bs);
        CHECK(memcmp(r.dev->lun_data(0, 3) + 10 * bs, out, 8 * bs) == 0);
        memset(in, 0, 8 * bs);
        io_completion rd = r.command(0, 3, rw10(false, 10, 8), in, 8 * bs);
        REQUIRE(rd.outcome == io_outcome::good);
        CHECK(memcmp(in, out, 8 * bs) == 0);
        CHECK(rd.user_data == 0xC0FFEE);
        CHECK(r.dev->violations().empty());
    }
}

TEST_CASE("random I/O keeps data intact across index wrap, queue sizes and ring modes", "[initiator][integrity]") {
    struct mode {
        uint32_t qsize;
        bool indirect, event_idx;
        personality kind;
    };
    const mode modes[] = {{4, false, false, personality::modern},  {8, true, true, personality::modern},
                          {256, true, true, personality::modern},  {256, false, true, personality::legacy},
                          {128, true, false, personality::legacy}, {4, true, false, personality::modern}};
    for (const mode& m : modes) {
        lb_options o = opts(m.kind);
        o.queue_max = m.qsize;
        o.indirect = m.indirect;
        o.event_idx = m.event_idx;
        initiator_config c;
        c.max_queue_size = m.qsize < 2 ? 2 : m.qsize;
        c.slots = 32;
        c.max_segments = 4;
        const uint32_t blocks = 512;
        auto body = [&](auto& r) {
            r.dev->add_lun(0, 0, blocks);
            r.dev->add_lun(1, 5, blocks);
            REQUIRE(r.start() == status::ok);
            clear_ua(r, 0, 0);
            clear_ua(r, 1, 5);
            std::mt19937 rng(m.qsize * 31 + m.indirect);
            std::vector<uint8_t> model0(blocks * 512, 0), model1(blocks * 512, 0);
            // Each in-flight request owns a data slot of 4 blocks split into up to 4 segments.
            const uint32_t slot_bytes = 4 * 512;
            struct pending {
                bool write;
                uint8_t target;
                uint32_t lba, n;
                uint32_t slot;
            };
            std::vector<pending> meta(64);
            // What each read must return: the model when it was submitted (the device
            // executes one queue in order, so later writes do not affect it).
            std::vector<std::vector<uint8_t>> expect(64);
            std::vector<uint32_t> free_slots;
            for (uint32_t i = 0; i < 32; ++i) free_slots.push_back(i);
            uint64_t done = 0, issued = 0;
            const uint64_t total = 70000;  // past the 16-bit index wrap
            while (done < total) {
                // Submit as many as fit.
                while (issued < total && !free_slots.empty()) {
                    pending p{};
                    p.write = rng() & 1;
                    p.target = uint8_t(rng() & 1);
                    p.n = 1 + rng() % 4;
                    p.lba = rng() % (blocks - p.n);
                    p.slot = free_slots.back();
                    uint8_t* b = r.buf(p.slot * slot_bytes);
                    std::vector<uint8_t>& model = p.target ? model1 : model0;
                    if (p.write)
                        for (uint32_t i = 0; i < p.n * 512; ++i) b[i] = uint8_t(rng());
                    sg_entry sg[4];
                    // A chain, indirect or not, must fit the ring with its two headers (checklist 42).
                    const uint32_t max_seg = std::min<uint32_t>(4, m.qsize - 2);
                    const uint32_t nseg = std::min<uint32_t>(p.n, 1 + rng() % max_seg);
                    uint32_t off = 0;
                    for (uint32_t s = 0; s < nseg; ++s) {
                        const uint32_t len = s + 1 == nseg ? p.n * 512 - off : 512;
                        sg[s] = sg_entry{r.data->bus_of(b + off), len};
                        off += len;
                    }
                    const std::vector<uint8_t> cdb = rw10(p.write, p.lba, uint16_t(p.n));
                    io_request q{};
                    q.target = p.target;
                    q.lun = p.target ? 5 : 0;
                    q.cdb = cdb.data();
                    q.cdb_len = 10;
                    (p.write ? q.data_out : q.data_in) = sg;
                    (p.write ? q.n_out : q.n_in) = nseg;
                    q.user_data = p.slot;
                    const auto s = r.ini->submit(q, r.now);
                    if (s.st == status::busy) break;
                    REQUIRE(s.st == status::ok);
                    if (p.write)
                        memcpy(model.data() + p.lba * 512, b, p.n * 512);
                    else
                        expect[p.slot].assign(model.begin() + p.lba * 512, model.begin() + (p.lba + p.n) * 512);
                    meta[p.slot] = p;
                    free_slots.pop_back();
                    ++issued;
                }
                r.ini->kick();
                r.dev->step();
                r.rec.done.clear();
                r.rec.sense.clear();
                r.ini->poll(r.now, r.rec);
                for (const io_completion& c : r.rec.done) {
                    REQUIRE(c.outcome == io_outcome::good);
                    const pending& p = meta[c.user_data];
                    if (!p.write) REQUIRE(memcmp(r.buf(p.slot * slot_bytes), expect[p.slot].data(), p.n * 512) == 0);
                    free_slots.push_back(p.slot);
                    ++done;
                }
            }
            CHECK(memcmp(r.dev->lun_data(0, 0), model0.data(), model0.size()) == 0);
            CHECK(memcmp(r.dev->lun_data(1, 5), model1.data(), model1.size()) == 0);
            CHECK(r.ini->stats().completed >= total);
            CHECK(r.dev->violations().empty());
            CHECK(r.ini->in_flight() == 0);
        };
        INFO("queue size " << m.qsize << " indirect " << m.indirect << " event_idx " << m.event_idx);
        if (m.kind == personality::legacy) {
            rig<legacy_t> r(o, c);
            body(r);
        } else {
            rig<modern_t> r(o, c);
            body(r);
        }
    }
}

TEST_CASE("a full ring or slot pool says busy and loses nothing", "[initiator]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    lb_options o = opts(personality::modern, packed);
    o.queue_max = 8;
    o.indirect = false;
    initiator_config c;
    c.max_queue_size = 8;
    c.slots = 16;
    rig<modern_t> r(o, c);
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    clear_ua(r);
    const std::vector<uint8_t> cdb = tur();
    io_request q{};
    q.cdb = cdb.data();
    q.cdb_len = 6;
    int accepted = 0;
    for (int i = 0; i < 16; ++i) {
        q.user_data = uint64_t(i);
        const auto s = r.ini->submit(q, r.now);
        if (s.st == status::busy) break;
        REQUIRE(s.st == status::ok);
        ++accepted;
    }
    // Without indirect each TUR takes two descriptors: four fit in eight.
    CHECK(accepted == 4);
    CHECK(r.ini->submit(q, r.now).st == status::busy);
    r.ini->kick();
    r.settle();
    CHECK(r.rec.done.size() == 6);  // the two from clear_ua and these four
    for (size_t i = 2; i < r.rec.done.size(); ++i) CHECK(r.rec.done[i].outcome == io_outcome::good);
    CHECK(r.ini->submit(q, r.now).st == status::ok);
}

TEST_CASE("cmd_per_lun bounds commands in flight per LUN", "[initiator]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    lb_options o = opts(personality::modern, packed);
    o.cmd_per_lun = 3;
    rig<modern_t> r(o);
    r.dev->add_lun(0, 0, 64);
    r.dev->add_lun(0, 1, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    const std::vector<uint8_t> cdb = tur();
    io_request q{};
    q.cdb = cdb.data();
    q.cdb_len = 6;
    for (int i = 0; i < 3; ++i) CHECK(r.ini->submit(q, r.now).st == status::ok);
    CHECK(r.ini->submit(q, r.now).st == status::busy);
    q.lun = 1;
    CHECK(r.ini->submit(q, r.now).st == status::ok);
    r.ini->kick();
    r.settle();
    CHECK(r.rec.done.size() == 4);
    q.lun = 0;
    CHECK(r.ini->submit(q, r.now).st == status::ok);
}

TEST_CASE("every response code decodes to its outcome, unknown ones too", "[initiator]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    rig<modern_t> r(opts(personality::modern, packed));
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    clear_ua(r);
    const std::pair<uint8_t, io_outcome> cases[] = {
        {1, io_outcome::overrun},           {2, io_outcome::aborted},        {3, io_outcome::bad_target},
        {4, io_outcome::reset},             {5, io_outcome::busy},           {6, io_outcome::transport_failure},
        {7, io_outcome::target_failure},    {8, io_outcome::nexus_failure},  {9, io_outcome::failure},
        {10, io_outcome::unknown_response}, {11, io_outcome::unknown_response}, {12, io_outcome::bad_target},
        {13, io_outcome::unknown_response}, {200, io_outcome::unknown_response}};
    for (const auto& [code, outcome] : cases) {
        r.dev->fault().force_response_next = 1;
        r.dev->fault().force_response = code;
        const io_completion c = r.command(0, 0, tur(), nullptr, 0);
        INFO("response " << int(code));
        CHECK(c.response == code);
        CHECK(c.outcome == outcome);
    }
    // FUNCTION_SUCCEEDED/REJECTED are control-queue answers; on a request they are unknown
    // (10, 11), while INCORRECT_LUN (12) is what QEMU sends for absent LUNs.
    CHECK(advice(io_outcome::busy) == retry_advice::same_path);
    CHECK(advice(io_outcome::nexus_failure) == retry_advice::other_path);
    CHECK(advice(io_outcome::target_failure) == retry_advice::none);
    // SAM status with response OK.
    r.dev->fault().force_response_next = 1;
    r.dev->fault().force_response = 0;
    r.dev->fault().force_status = 0x08;  // BUSY
    io_completion b = r.command(0, 0, tur(), nullptr, 0);
    CHECK(b.outcome == io_outcome::scsi_status);
    CHECK(b.scsi_status == 0x08);
    r.dev->fault().force_response_next = 1;
    r.dev->fault().force_status = 0x02;
    io_completion cc = r.command(0, 0, tur(), nullptr, 0);
    CHECK(cc.outcome == io_outcome::check_condition);
    CHECK(cc.sense_len == 18);
    CHECK((r.rec.sense.back()[2] & 0xf) == 0x2);
    CHECK(r.dev->violations().empty());
}

TEST_CASE("sense and residual from the device are clamped", "[initiator]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    rig<modern_t> r(opts(personality::modern, packed));
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    clear_ua(r);
    r.dev->fault().lie_residual = true;
    uint8_t* in = r.buf();
    io_completion c = r.command(0, 0, rw10(false, 0, 1), in, 512);
    CHECK(c.residual == 512);  // clamped to the buffer (checklist 9)
    CHECK(c.transferred == 0);
    r.dev->fault().lie_sense_len = true;
    io_completion s = r.command(0, 0, tur(), nullptr, 0);
    CHECK(s.sense_len == 96);  // clamped to sense_size (checklist 10)
    // Honest residual: 1 block asked into a 4-block buffer.
    io_completion h = r.command(0, 0, rw10(false, 0, 1), in, 2048);
    CHECK(h.outcome == io_outcome::good);
    CHECK(h.residual == 1536);
    CHECK(h.transferred == 512);
}

TEST_CASE("absent targets and LUNs", "[initiator]") {
    lb_options o = opts(personality::modern);
    rig<modern_t> r(o);
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    clear_ua(r);
    CHECK(r.command(9, 0, tur(), nullptr, 0).outcome == io_outcome::bad_target);
    io_completion c = r.command(0, 4, tur(), nullptr, 0);
    CHECK(c.outcome == io_outcome::check_condition);
    CHECK(r.rec.sense.back()[12] == 0x25);  // LOGICAL UNIT NOT SUPPORTED
    // REPORT LUNS through the well-known LU.
    const std::vector<uint8_t> rl = {0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
    io_completion l = r.command(0, wlun_report_luns, rl, r.buf(), 256);
    CHECK(l.outcome == io_outcome::good);
    CHECK(load_be32(r.buf()) == 8);  // one LUN
}

TEST_CASE("argument errors are values", "[initiator]") {
    rig<modern_t> r(opts(personality::modern));
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    io_request q{};
    CHECK(r.ini->submit(q, r.now).st == status::invalid_argument);  // no CDB
    uint8_t cdb[40] = {};
    q.cdb = cdb;
    q.cdb_len = 33;
    CHECK(r.ini->submit(q, r.now).st == status::invalid_argument);  // longer than cdb_size
    q.cdb_len = 6;
    q.lun = 16384;
    CHECK(r.ini->submit(q, r.now).st == status::invalid_argument);
    q.lun = 0;
    sg_entry sg{r.data->bus, 512};
    q.data_in = &sg;
    q.n_in = 1;
    q.data_out = &sg;
    q.n_out = 1;
    CHECK(r.ini->submit(q, r.now).st == status::not_supported);  // bidi without INOUT
    q.n_out = 0;
    q.pi_bytes_in = 8;
    CHECK(r.ini->submit(q, r.now).st == status::not_supported);  // PI without T10_PI
    CHECK(r.ini->in_flight() == 0);
    initiator_config bad;
    bad.max_queue_size = 100;
    CHECK(decltype(r)::initiator_t::region_bytes(bad) == 0);
    CHECK(decltype(r)::initiator_t::private_bytes(bad) == 0);
}

TEST_CASE("start() keeps its bookkeeping in a private region the device cannot reach", "[initiator][private]") {
    using ini_t = rig<modern_t>::initiator_t;
    initiator_config c;
    const size_t dev_bytes = ini_t::region_bytes(c);
    const size_t priv_bytes = ini_t::private_bytes(c);
    REQUIRE(dev_bytes > 0);
    REQUIRE(priv_bytes > 0);
    CHECK(dev_bytes % ring_region_align == 0);
    CHECK(priv_bytes % private_region_align == 0);
    // Refused before the device is touched: no private region, one too small, one off its
    // cache line, one inside or around the DMA region.
    auto refused = [&](auto&& call_start, status want) {
        rig<modern_t> r(opts(personality::modern));
        REQUIRE(r.start() == status::ok);
        REQUIRE(r.ini->stop(r.rec) == status::ok);
        const uint64_t resets = r.dev->stats().resets;
        CHECK(call_start(r) == want);
        CHECK(r.dev->stats().resets == resets);
        CHECK(r.ini->state() == initiator_state::stopped);
    };
    refused([](auto& r) { return r.ini->start(r.cfg, r.dma(), private_region{nullptr, 1 << 20}); },
            status::invalid_argument);
    refused([](auto& r) { return r.ini->start(r.cfg, r.dma(), private_region{r.shadow->virt, r.shadow->bytes - 64}); },
            status::too_small);
    refused([](auto& r) { return r.ini->start(r.cfg, r.dma(), private_region{r.shadow->virt + 16, r.shadow->bytes}); },
            status::invalid_argument);
    refused([](auto& r) { return r.ini->start(r.cfg, r.dma(), private_region{r.region->virt, r.shadow->bytes}); },
            status::invalid_argument);
    refused([](auto& r) {
        const dma_region d = r.dma();
        return r.ini->start(r.cfg, dma_region{d.virt, d.bus, d.bytes}, private_region{r.region->virt + d.bytes - 64, r.shadow->bytes});
    }, status::invalid_argument);
    // A too-small DMA region is still refused as such.
    refused([](auto& r) {
        const dma_region d = r.dma();
        return r.ini->start(r.cfg, dma_region{d.virt, d.bus, d.bytes - 4096}, r.shadow->region());
    }, status::too_small);

    // Running: the DMA region can be rewritten byte for byte by a device and the driver still
    // knows exactly what it has in flight (its books are elsewhere), reclaims it all on a
    // reset, and carries on.
    rig<modern_t> r(opts(personality::modern));
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    clear_ua(r);
    r.dev->fault().hold_next = 3;
    io_request q{};
    const auto cdb = fixture::tur();
    q.cdb = cdb.data();
    q.cdb_len = uint32_t(cdb.size());
    for (uint64_t i = 0; i < 3; ++i) {
        q.user_data = 100 + i;
        REQUIRE(r.ini->submit(q, r.now).ok());
    }
    r.ini->kick();
    r.settle();
    REQUIRE(r.dev->held_count() == 3);
    CHECK(r.ini->in_flight() == 3);
    r.rec.clear();
    std::vector<uint8_t> before(r.shadow->virt, r.shadow->virt + r.shadow->bytes);
    memset(r.region->virt, 0x00, r.region->bytes);
    CHECK(std::vector<uint8_t>(r.shadow->virt, r.shadow->virt + r.shadow->bytes) == before);
    CHECK(r.ini->in_flight() == 3);
    CHECK(r.ini->reset_device(r.rec) == status::ok);
    REQUIRE(r.rec.done.size() == 3);
    uint64_t seen = 0;
    for (const auto& d : r.rec.done) {
        CHECK(d.outcome == io_outcome::device_reset);
        seen |= 1ull << (d.user_data - 100);
    }
    CHECK(seen == 7);
    CHECK(r.ini->in_flight() == 0);
    CHECK(r.shadow->guards_intact());
    clear_ua(r);
    CHECK(r.command(0, 0, fixture::tur(), nullptr, 0).outcome == io_outcome::good);
}

TEST_CASE("task management functions complete through on_tmf", "[initiator][tmf]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    rig<modern_t> r(opts(personality::modern, packed));
    r.dev->add_lun(0, 0, 64);
    r.dev->add_lun(0, 1, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    clear_ua(r);
    // Hold a command, abort it: the command completes ABORTED before the TMF completes.
    r.dev->fault().hold_next = 1;
    const std::vector<uint8_t> cdb = tur();
    io_request q{};
    q.cdb = cdb.data();
    q.cdb_len = 6;
    q.user_data = 77;
    const auto s = r.ini->submit(q, r.now);
    REQUIRE(s.st == status::ok);
    r.ini->kick();
    r.settle();
    CHECK(r.dev->held_count() == 1);
    REQUIRE(r.ini->submit_tmf(tmf::query_task, 0, 0, s.value, 1, r.now) == status::ok);
    r.settle();
    REQUIRE(r.rec.tmfs.size() == 1);
    CHECK(r.rec.tmfs[0].response == uint8_t(response::function_succeeded));
    const size_t before = r.rec.done.size();
    REQUIRE(r.ini->submit_tmf(tmf::abort_task, 0, 0, s.value, 2, r.now) == status::ok);
    r.settle();
    REQUIRE(r.rec.tmfs.size() == 2);
    CHECK(r.rec.tmfs[1].response == uint8_t(function_complete));
    CHECK(r.rec.tmfs[1].user_data == 2);
    CHECK(r.dev->last_tmf_tag() == s.value);
    REQUIRE(r.rec.done.size() == before + 1);
    CHECK(r.rec.done.back().user_data == 77);
    CHECK(r.rec.done.back().outcome == io_outcome::aborted);
    // Every subtype reaches the device with its code.
    for (uint32_t t = 0; t <= 7; ++t) {
        REQUIRE(r.ini->submit_tmf(tmf(t), 0, 1, 0, 100 + t, r.now) == status::ok);
        r.settle();
        CHECK(r.dev->last_tmf_subtype() == t);
    }
    CHECK(r.rec.tmfs.back().user_data == 107);
    // LUN reset on an absent LUN: INCORRECT_LUN; absent target: BAD_TARGET.
    REQUIRE(r.ini->submit_tmf(tmf::logical_unit_reset, 0, 9, 0, 0, r.now) == status::ok);
    r.settle();
    CHECK(r.rec.tmfs.back().response == uint8_t(response::incorrect_lun));
    REQUIRE(r.ini->submit_tmf(tmf::logical_unit_reset, 7, 0, 0, 0, r.now) == status::ok);
    r.settle();
    CHECK(r.rec.tmfs.back().response == uint8_t(response::bad_target));
    CHECK(r.ini->submit_tmf(tmf(9), 0, 0, 0, 0, r.now) == status::invalid_argument);
    CHECK(r.dev->violations().empty());
}

TEST_CASE("asynchronous notification query and subscribe", "[initiator][an]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    rig<modern_t> r(opts(personality::modern, packed));
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    REQUIRE(r.ini->submit_an(ctrl_type::an_query, 0, 0, an_event::all, 5, r.now) == status::ok);
    REQUIRE(r.ini->submit_an(ctrl_type::an_subscribe, 0, 0, an_event::media_change, 6, r.now) == status::ok);
    r.settle();
    REQUIRE(r.rec.ans.size() == 2);
    CHECK(r.rec.ans[0].user_data == 5);
    CHECK(r.rec.ans[0].type == ctrl_type::an_query);
    CHECK(r.rec.ans[0].response == 0);
    CHECK(r.rec.ans[0].event_actual == 0);
    CHECK(r.rec.ans[1].type == ctrl_type::an_subscribe);
    CHECK(r.ini->submit_an(ctrl_type::tmf, 0, 0, 0, 0, r.now) == status::invalid_argument);
}

TEST_CASE("hot-plug, hot-unplug, parameter change and missed events reach on_event", "[initiator][events]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    rig<modern_t> r(opts(personality::modern, packed));
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    r.dev->add_lun(0, 300, 64);
    r.settle();
    REQUIRE(r.rec.events.size() == 1);
    CHECK(r.rec.events[0].type == event_type::transport_reset);
    CHECK(r.rec.events[0].reason == uint32_t(reset_reason::rescan));
    CHECK(r.rec.events[0].lun_valid);
    CHECK(r.rec.events[0].target == 0);
    CHECK(r.rec.events[0].lun == 300);
    CHECK(!r.rec.events[0].rescan_target);
    CHECK(!r.rec.events[0].missed);
    r.dev->add_lun(1, 0, 64);  // LUN 0 of a new target: rescan the target (checklist 21)
    r.settle();
    REQUIRE(r.rec.events.size() == 2);
    CHECK(r.rec.events[1].target == 1);
    CHECK(r.rec.events[1].lun == 0);
    CHECK(r.rec.events[1].rescan_target);
    r.dev->remove_lun(0, 300);
    r.settle();
    REQUIRE(r.rec.events.size() == 3);
    CHECK(r.rec.events[2].reason == uint32_t(reset_reason::removed));
    r.dev->resize_lun(0, 0, 128);
    r.settle();
    REQUIRE(r.rec.events.size() == 4);
    CHECK(r.rec.events[3].type == event_type::param_change);
    CHECK(r.rec.events[3].reason == (0x2au | 0x09u << 8));
    r.dev->fault().drop_events = true;
    r.dev->add_lun(0, 7, 8);
    r.dev->add_lun(0, 8, 8);
    r.dev->fault().drop_events = false;
    r.dev->add_lun(0, 9, 8);
    r.settle();
    REQUIRE(r.rec.events.size() == 5);
    CHECK(r.rec.events[4].missed);
    CHECK(r.rec.events[4].lun == 9);
    // More events than buffers: the initiator reposts, nothing is lost.
    for (uint16_t l = 20; l < 60; ++l) {
        r.dev->add_lun(0, l, 1);
        r.settle(1);
    }
    r.settle();
    CHECK(r.rec.events.size() == 45);
    CHECK(r.dev->violations().empty());
}

TEST_CASE("a lost command climbs the escalation ladder and completes once, timed out", "[initiator][recovery]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    rig<modern_t> r(opts(personality::modern, packed), fixture::fast_ladder());
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    clear_ua(r);
    r.dev->fault().lose_next = 1;
    const std::vector<uint8_t> cdb = rw10(false, 0, 1);
    sg_entry sg{r.data->bus, 512};
    io_request q{};
    q.cdb = cdb.data();
    q.cdb_len = 10;
    q.data_in = &sg;
    q.n_in = 1;
    q.user_data = 4242;
    REQUIRE(r.ini->submit(q, r.now).st == status::ok);
    // A second command on another LUN-less path completes normally meanwhile.
    r.ini->kick();
    r.settle();
    const size_t before = r.rec.done.size();
    r.advance_until([&] { return r.rec.done.size() > before; }, 300);
    REQUIRE(r.rec.done.size() == before + 1);
    CHECK(r.rec.done.back().user_data == 4242);
    CHECK(r.rec.done.back().outcome == io_outcome::timed_out);
    const initiator_stats& st = r.ini->stats();
    CHECK(st.rekicks == 1);
    CHECK(st.aborts_sent == 1);
    CHECK(st.lun_resets_sent == 1);
    CHECK(st.nexus_resets_sent == 1);
    CHECK(st.device_resets == 1);
    CHECK(r.dev->stats().resets >= 2);
    // Completed exactly once, and the device works again.
    r.settle();
    CHECK(r.rec.done.size() == before + 1);
    CHECK(r.ini->state() == initiator_state::running);
    io_completion after = r.command(0, 0, tur(), nullptr, 0);
    CHECK(after.outcome == io_outcome::check_condition);  // the reset's unit attention
    CHECK(r.command(0, 0, tur(), nullptr, 0).outcome == io_outcome::good);
    CHECK(r.dev->violations().empty());
}

TEST_CASE("a held command that answers to ABORT TASK completes timed out without a device reset", "[initiator][recovery]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    rig<modern_t> r(opts(personality::modern, packed), fixture::fast_ladder());
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    clear_ua(r);
    r.dev->fault().hold_next = 1;
    const std::vector<uint8_t> cdb = tur();
    io_request q{};
    q.cdb = cdb.data();
    q.cdb_len = 6;
    q.user_data = 9;
    REQUIRE(r.ini->submit(q, r.now).st == status::ok);
    r.ini->kick();
    const size_t before = r.rec.done.size();
    r.advance_until([&] { return r.rec.done.size() > before; }, 300);
    REQUIRE(r.rec.done.size() == before + 1);
    CHECK(r.rec.done.back().outcome == io_outcome::timed_out);
    CHECK(r.ini->stats().aborts_sent == 1);
    CHECK(r.ini->stats().device_resets == 0);
    CHECK(r.dev->stats().aborted_by_tmf == 1);
}

TEST_CASE("a device that ignores TMFs is reset; caller TMFs complete as device_reset", "[initiator][recovery]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    initiator_config c;
    c.escalation_step_ns = 1000;
    c.scan_interval_ns = 100;
    rig<modern_t> r(opts(personality::modern, packed), c);
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    r.dev->fault().ignore_tmf = true;
    REQUIRE(r.ini->submit_tmf(tmf::logical_unit_reset, 0, 0, 0, 31, r.now) == status::ok);
    r.advance_until([&] { return !r.rec.tmfs.empty(); }, 300, 20);
    REQUIRE(r.rec.tmfs.size() == 1);
    CHECK(r.rec.tmfs[0].device_reset);
    CHECK(r.rec.tmfs[0].user_data == 31);
    CHECK(r.ini->stats().device_resets == 1);
    CHECK(r.ini->state() == initiator_state::running);
}

TEST_CASE("a lying device gets reset; everything in flight completes once", "[initiator][hostile]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    enum lie { bad_id, middle_id, bad_len, duplicate, used_jump };
    for (lie l : {bad_id, middle_id, bad_len, duplicate, used_jump}) {
        lb_options o = opts(personality::modern, packed);
        o.indirect = false;  // chains of several descriptors, so a middle id exists
        rig<modern_t> r(o);
        r.dev->add_lun(0, 0, 64);
        REQUIRE(r.start() == status::ok);
        REQUIRE(r.ini->packed() == packed);
        clear_ua(r);
        r.rec.clear();
        const std::vector<uint8_t> cdb = rw10(false, 0, 1);
        sg_entry sg[3] = {{r.data->bus, 512}, {r.data->bus + 4096, 512}, {r.data->bus + 8192, 512}};
        for (int i = 0; i < 3; ++i) {
            io_request q{};
            q.cdb = cdb.data();
            q.cdb_len = 10;
            q.data_in = &sg[i];
            q.n_in = 1;
            q.user_data = uint64_t(i);
            REQUIRE(r.ini->submit(q, r.now).st == status::ok);
        }
        switch (l) {
            case bad_id: r.dev->fault().lie_bad_id = true; break;
            case middle_id: r.dev->fault().lie_middle_id = true; break;
            case bad_len: r.dev->fault().lie_bad_len = true; break;
            case duplicate: r.dev->fault().lie_duplicate = true; break;
            case used_jump: r.dev->fault().lie_used_jump = true; break;
        }
        r.ini->kick();
        r.settle(6);
        INFO("lie " << int(l));
        CHECK(r.ini->stats().protocol_errors >= 1);
        CHECK(r.ini->stats().device_resets == 1);
        CHECK(r.ini->state() == initiator_state::running);
        // Each request completed exactly once.
        std::vector<int> seen(3, 0);
        for (const io_completion& c : r.rec.done) seen.at(c.user_data)++;
        CHECK(seen == std::vector<int>({1, 1, 1}));
        CHECK(r.ini->in_flight() == 0);
        // The device is usable again.
        CHECK(r.command(0, 0, tur(), nullptr, 0).outcome == io_outcome::check_condition);
        CHECK(r.command(0, 0, tur(), nullptr, 0).outcome == io_outcome::good);
    }
}

TEST_CASE("DEVICE_NEEDS_RESET triggers recovery", "[initiator][recovery]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    initiator_config c;
    c.scan_interval_ns = 10;
    rig<modern_t> r(opts(personality::modern, packed), c);
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    clear_ua(r);
    r.dev->set_needs_reset();
    r.now += 100;
    r.ini->poll(r.now, r.rec);
    r.ini->poll(r.now, r.rec);
    CHECK(r.ini->stats().device_resets == 1);
    CHECK((r.dev->status() & dev_status::needs_reset) == 0);
    CHECK(r.ini->state() == initiator_state::running);
}

TEST_CASE("a reset that never completes leaves the device failed, buffers untouched", "[initiator][recovery]") {
    initiator_config c;
    c.reset_polls = 50;
    rig<modern_t> r(opts(personality::modern), c);
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    r.dev->fault().reset_delay_polls = 1000;
    CHECK(r.ini->reset_device(r.rec) == status::timeout);
    CHECK(r.ini->state() == initiator_state::failed);
    io_request q{};
    const uint8_t cdb[6] = {};
    q.cdb = cdb;
    q.cdb_len = 6;
    CHECK(r.ini->submit(q, r.now).st == status::needs_reset);
}

TEST_CASE("out-of-order completions are matched to their requests", "[initiator]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    rig<modern_t> r(opts(personality::modern, packed));
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    clear_ua(r);
    r.rec.clear();
    r.dev->fault().out_of_order = true;
    for (uint32_t i = 0; i < 8; ++i) {
        uint8_t* b = r.buf(i * 512);
        memset(b, int(i + 1), 512);
        const std::vector<uint8_t> cdb = rw10(true, i, 1);
        sg_entry sg{r.data->bus_of(b), 512};
        io_request q{};
        q.cdb = cdb.data();
        q.cdb_len = 10;
        q.data_out = &sg;
        q.n_out = 1;
        q.user_data = i;
        REQUIRE(r.ini->submit(q, r.now).st == status::ok);
    }
    r.ini->kick();
    r.settle();
    REQUIRE(r.rec.done.size() == 8);
    CHECK(r.rec.done.front().user_data == 7);
    CHECK(r.rec.done.back().user_data == 0);
    for (uint32_t i = 0; i < 8; ++i) CHECK(r.dev->lun_data(0, 0)[i * 512] == i + 1);
}

TEST_CASE("multiple request queues spread commands", "[initiator]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    lb_options o = opts(personality::modern, packed);
    o.num_queues = 3;
    initiator_config c;
    c.max_request_queues = 4;
    rig<modern_t> r(o, c);
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    CHECK(r.ini->request_queues() == 3);
    clear_ua(r);
    const std::vector<uint8_t> cdb = tur();
    for (uint16_t q = 0; q < 6; ++q) {
        io_request rq{};
        rq.cdb = cdb.data();
        rq.cdb_len = 6;
        rq.queue = q;
        REQUIRE(r.ini->submit(rq, r.now).st == status::ok);
    }
    r.ini->kick();
    r.settle();
    CHECK(r.rec.done.size() == 8);
    CHECK(r.dev->violations().empty());
}

TEST_CASE("stop completes everything in flight and resets the device", "[initiator]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    rig<modern_t> r(opts(personality::modern, packed));
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    r.dev->fault().hold_next = 2;
    const std::vector<uint8_t> cdb = tur();
    io_request q{};
    q.cdb = cdb.data();
    q.cdb_len = 6;
    REQUIRE(r.ini->submit(q, r.now).st == status::ok);
    REQUIRE(r.ini->submit(q, r.now).st == status::ok);
    r.ini->kick();
    r.settle();
    CHECK(r.rec.done.empty());
    CHECK(r.ini->stop(r.rec) == status::ok);
    REQUIRE(r.rec.done.size() == 2);
    CHECK(r.rec.done[0].outcome == io_outcome::device_reset);
    CHECK(r.dev->status() == 0);
    CHECK(r.ini->state() == initiator_state::stopped);
}

TEST_CASE("completions_pending peeks at every queue without reaping", "[initiator]") {
    const bool packed = GENERATE(false, true);  // split rings, then packed ones
    rig<modern_t> r(opts(personality::modern, packed));
    r.dev->add_lun(0, 0, 64);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.ini->packed() == packed);
    r.ini->poll(r.now, r.rec);
    CHECK(!r.ini->completions_pending());
    r.dev->fault().hold_next = 1;
    const std::vector<uint8_t> cdb = tur();
    io_request q{};
    q.cdb = cdb.data();
    q.cdb_len = 6;
    REQUIRE(r.ini->submit(q, r.now).st == status::ok);
    r.ini->kick();
    r.dev->step();
    CHECK(!r.ini->completions_pending());  // held by the device: nothing to reap
    r.dev->release_held();
    CHECK(r.ini->completions_pending());
    CHECK(r.ini->completions_pending());  // still there: a peek consumes nothing
    CHECK(r.rec.done.empty());
    r.ini->poll(r.now, r.rec);
    CHECK(r.rec.done.size() == 1);
    CHECK(!r.ini->completions_pending());
    // Events count too: a hot-plug notice waits in the event queue until poll() reaps it.
    r.dev->add_lun(0, 1, 64);
    r.dev->step();
    CHECK(r.ini->completions_pending());
    r.ini->poll(r.now, r.rec);
    CHECK(!r.ini->completions_pending());
}
