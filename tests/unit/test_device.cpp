// Device bring-up against the loopback register file, which fails on any status write out
// of order, any write to a read-only register and any feature not offered.
#include <catch2/catch.hpp>

#include <vscsi/device.hpp>
#include <vscsi/pci.hpp>

#include "loopback_device.hpp"

using namespace vscsi;
using vscsi::loopback::device;
using vscsi::loopback::personality;

namespace {
loopback::options opts(personality k) {
    loopback::options o;
    o.kind = k;
    return o;
}
}  // namespace

TEST_CASE("modern negotiation: ACK, DRIVER, features, FEATURES_OK re-checked, DRIVER_OK", "[device]") {
    loopback::dma_map map;
    device dev(opts(personality::modern), map);
    modern_pci<device> t(dev);
    REQUIRE(t.probe() == status::ok);
    virtio_device<modern_pci<device>> d(t);
    CHECK(d.driver_ok() == status::invalid_argument);  // nothing before negotiation
    CHECK(dev.status() == 0);
    // Ask for everything: only what was offered is accepted (checklist 33).
    REQUIRE(d.negotiate(~0ull) == status::ok);
    CHECK(d.features() == (t.device_features() & ~(feature::bit(feature::any_layout) |
                                                   feature::bit(feature::notify_on_empty))));
    CHECK(d.has(feature::version_1));
    CHECK(dev.status() == (dev_status::acknowledge | dev_status::driver | dev_status::features_ok));
    REQUIRE(d.write_cdb_sense_sizes(64, 128) == status::ok);
    CHECK(dev.cdb_size() == 64);
    CHECK(dev.sense_size() == 128);
    REQUIRE(d.driver_ok() == status::ok);
    CHECK((dev.status() & dev_status::driver_ok) != 0);
    CHECK(dev.violations().empty());
    // Reset brings the defaults back (checklist 59).
    REQUIRE(d.reset() == status::ok);
    CHECK(dev.status() == 0);
    CHECK(dev.cdb_size() == 32);
    CHECK(dev.sense_size() == 96);
    CHECK(d.driver_ok() == status::invalid_argument);
}

TEST_CASE("IN_ORDER is taken only with packed rings", "[device][packed]") {
    for (bool want_packed : {false, true}) {
        loopback::dma_map map;
        loopback::options o = opts(personality::modern);
        o.packed = true;
        o.in_order = true;
        device dev(o, map);
        modern_pci<device> t(dev);
        REQUIRE(t.probe() == status::ok);
        virtio_device<modern_pci<device>> d(t);
        const uint64_t packed = feature::bit(feature::ring_packed);
        REQUIRE(d.negotiate(want_packed ? ~0ull : ~packed) == status::ok);
        CHECK(d.has(feature::ring_packed) == want_packed);
        CHECK(d.has(feature::in_order) == want_packed);  // offered and asked for, but not alone
        CHECK(dev.violations().empty());
    }
}

TEST_CASE("only offered features are accepted; unknown offered bits are ignored", "[device]") {
    loopback::dma_map map;
    loopback::options o = opts(personality::modern);
    o.indirect = false;
    device dev(o, map);
    modern_pci<device> t(dev);
    REQUIRE(t.probe() == status::ok);
    virtio_device<modern_pci<device>> d(t);
    REQUIRE(d.negotiate(feature::bit(feature::ring_indirect_desc) | feature::bit(feature::ring_event_idx)) ==
            status::ok);
    CHECK(!d.has(feature::ring_indirect_desc));
    CHECK(d.has(feature::ring_event_idx));
    CHECK(d.has(feature::version_1));  // always accepted when offered (checklist 34)
    CHECK(!d.has(feature::scsi_hotplug));  // offered but not asked for
    CHECK(dev.violations().empty());
}

TEST_CASE("a modern device without VERSION_1 is refused", "[device]") {
    loopback::dma_map map;
    loopback::options o = opts(personality::modern);
    o.withhold_features = feature::bit(feature::version_1);
    device dev(o, map);
    modern_pci<device> t(dev);
    REQUIRE(t.probe() == status::ok);
    virtio_device<modern_pci<device>> d(t);
    CHECK(d.negotiate(~0ull) == status::device_error);
    CHECK((dev.status() & dev_status::failed) != 0);
    CHECK((dev.status() & dev_status::features_ok) == 0);
}

TEST_CASE("FEATURES_OK refused: FAILED set, nothing continues", "[device]") {
    loopback::dma_map map;
    device dev(opts(personality::modern), map);
    dev.fault().refuse_features_ok = true;
    modern_pci<device> t(dev);
    REQUIRE(t.probe() == status::ok);
    virtio_device<modern_pci<device>> d(t);
    CHECK(d.negotiate(~0ull) == status::device_error);
    CHECK(dev.status() == (dev_status::acknowledge | dev_status::driver | dev_status::failed));
    CHECK(d.driver_ok() == status::invalid_argument);
    CHECK(dev.violations().empty());
    // After FAILED, a reset makes the device usable again (checklist 36).
    dev.fault().refuse_features_ok = false;
    CHECK(d.negotiate(~0ull) == status::ok);
    CHECK(dev.violations().empty());
}

TEST_CASE("legacy negotiation: 32 feature bits, no FEATURES_OK, never VERSION_1", "[device]") {
    loopback::dma_map map;
    device dev(opts(personality::transitional), map);
    legacy_pci<device> t(dev);
    REQUIRE(t.probe() == status::ok);
    virtio_device<legacy_pci<device>> d(t);
    REQUIRE(d.negotiate(~0ull) == status::ok);
    CHECK(!d.has(feature::version_1));
    CHECK((d.features() >> 32) == 0);
    CHECK(d.has(feature::any_layout));
    CHECK(dev.status() == (dev_status::acknowledge | dev_status::driver));
    REQUIRE(d.driver_ok() == status::ok);
    CHECK(dev.violations().empty());
}

TEST_CASE("reset waits for the status to read 0, bounded", "[device]") {
    loopback::dma_map map;
    device dev(opts(personality::modern), map);
    modern_pci<device> t(dev);
    REQUIRE(t.probe() == status::ok);
    virtio_device<modern_pci<device>> d(t);
    REQUIRE(d.negotiate(~0ull) == status::ok);
    dev.fault().reset_delay_polls = 5;
    CHECK(d.reset(100) == status::ok);
    CHECK(dev.status() == 0);
    REQUIRE(d.negotiate(~0ull) == status::ok);
    dev.fault().reset_delay_polls = 1000;
    REQUIRE(d.negotiate(~0ull, 2000) == status::ok);  // waits out the slow reset
    CHECK(dev.violations().empty());
    CHECK(d.reset(10) == status::timeout);
}

TEST_CASE("config reads are consistent: generation retry, legacy double read", "[device][config]") {
    loopback::dma_map map;
    device dev(opts(personality::modern), map);
    modern_pci<device> t(dev);
    REQUIRE(t.probe() == status::ok);
    virtio_device<modern_pci<device>> d(t);
    scsi_config_values v{};
    dev.fault().generation_churn = 5;  // changes under the first reads
    REQUIRE(d.read_scsi_config(v) == status::ok);
    CHECK(v.num_queues == 1);
    CHECK(v.seg_max == 254);
    CHECK(v.max_sectors == 0xffff);
    CHECK(v.cmd_per_lun == 128);
    CHECK(v.event_info_size == 16);
    CHECK(v.sense_size == 96);
    CHECK(v.cdb_size == 32);
    CHECK(v.max_channel == 0);
    CHECK(v.max_target == 255);
    CHECK(v.max_lun == 16383);
    dev.fault().generation_churn = 1000;  // never holds still
    CHECK(d.read_scsi_config(v) == status::device_error);

    device ldev(opts(personality::legacy), map);
    legacy_pci<device> lt(ldev);
    REQUIRE(lt.probe() == status::ok);
    virtio_device<legacy_pci<device>> ld(lt);
    scsi_config_values lv{};
    REQUIRE(ld.read_scsi_config(lv) == status::ok);
    CHECK(lv.max_lun == 16383);
    CHECK(ldev.violations().empty());
}

TEST_CASE("config writes only before or after DRIVER_OK setup, never out of order", "[device]") {
    loopback::dma_map map;
    device dev(opts(personality::modern), map);
    modern_pci<device> t(dev);
    REQUIRE(t.probe() == status::ok);
    virtio_device<modern_pci<device>> d(t);
    CHECK(d.write_cdb_sense_sizes(32, 96) == status::invalid_argument);  // before negotiation
    REQUIRE(d.negotiate(~0ull) == status::ok);
    CHECK(d.write_cdb_sense_sizes(32, 96) == status::ok);
    d.fail();
    CHECK((dev.status() & dev_status::failed) != 0);
    CHECK((dev.status() & dev_status::features_ok) != 0);  // FAILED is OR-ed, nothing cleared
    CHECK(dev.violations().empty());
}
