// virtio-pci transports against the uapi register layout and the loopback device's register
// file, which records every access the spec forbids; hostile capability lists.
#include <catch2/catch.hpp>

#include <vscsi/pci.hpp>
#include <vscsi/ring.hpp>

#include "loopback_device.hpp"

extern "C" size_t uapi_pci(int which);

using namespace vscsi;
using vscsi::loopback::device;
using vscsi::loopback::personality;

namespace {
struct bench {
    loopback::dma_map map;
    device dev;
    explicit bench(personality k, bool msix = false, uint32_t notify_multiplier = 4)
        : dev(make(k, msix, notify_multiplier), map) {}
    static loopback::options make(personality k, bool msix, uint32_t notify_multiplier) {
        loopback::options o;
        o.kind = k;
        o.msix_enabled = msix;
        o.notify_multiplier = notify_multiplier;
        return o;
    }
};
}  // namespace

TEST_CASE("register offsets match <linux/virtio_pci.h>", "[pci][uapi]") {
    CHECK(legacy_reg::host_features == uapi_pci(0));
    CHECK(legacy_reg::guest_features == uapi_pci(1));
    CHECK(legacy_reg::queue_pfn == uapi_pci(2));
    CHECK(legacy_reg::queue_num == uapi_pci(3));
    CHECK(legacy_reg::queue_sel == uapi_pci(4));
    CHECK(legacy_reg::queue_notify == uapi_pci(5));
    CHECK(legacy_reg::status == uapi_pci(6));
    CHECK(legacy_reg::isr == uapi_pci(7));
    CHECK(legacy_reg::msix_config == uapi_pci(8));
    CHECK(legacy_reg::msix_queue == uapi_pci(9));
    CHECK(legacy_reg::config_no_msix == uapi_pci(10));
    CHECK(legacy_reg::config_msix == uapi_pci(11));
    CHECK(legacy_reg::pfn_shift == uapi_pci(12));
    CHECK(legacy_reg::vring_align == uapi_pci(13));
    const uint32_t common[] = {common_reg::device_feature_select, common_reg::device_feature,
                               common_reg::driver_feature_select, common_reg::driver_feature,
                               common_reg::msix_config,           common_reg::num_queues,
                               common_reg::device_status,         common_reg::config_generation,
                               common_reg::queue_select,          common_reg::queue_size,
                               common_reg::queue_msix_vector,     common_reg::queue_enable,
                               common_reg::queue_notify_off,      common_reg::queue_desc_lo,
                               common_reg::queue_desc_hi,         common_reg::queue_driver_lo,
                               common_reg::queue_driver_hi,       common_reg::queue_device_lo,
                               common_reg::queue_device_hi};
    for (int i = 0; i < 19; ++i) {
        INFO("common cfg field " << i);
        CHECK(common[i] == uapi_pci(20 + i));
    }
    CHECK(modern_cap::vndr == uapi_pci(40));
    CHECK(modern_cap::next == uapi_pci(41));
    CHECK(modern_cap::len == uapi_pci(42));
    CHECK(modern_cap::cfg_type == uapi_pci(43));
    CHECK(modern_cap::bar == uapi_pci(44));
    CHECK(modern_cap::offset == uapi_pci(45));
    CHECK(modern_cap::length == uapi_pci(46));
    CHECK(modern_cap::cap_size == uapi_pci(47));
    CHECK(modern_cap::notify_off_multiplier == uapi_pci(48));
    CHECK(modern_cap::notify_cap_size == uapi_pci(49));
    CHECK(modern_cap::common_cfg == uapi_pci(50));
    CHECK(modern_cap::notify_cfg == uapi_pci(51));
    CHECK(modern_cap::isr_cfg == uapi_pci(52));
    CHECK(modern_cap::device_cfg == uapi_pci(53));
    CHECK(modern_cap::pci_cfg == uapi_pci(54));
    CHECK(modern_cap::shared_memory_cfg == uapi_pci(55));
}

TEST_CASE("PCI identity: 1af4:1004 (subsystem 8) and 1af4:1048, any revision", "[pci]") {
    bench t(personality::transitional);
    pci_identity id = probe_identity(t.dev);
    CHECK(id.vendor == 0x1af4);
    CHECK(id.device == 0x1004);
    CHECK(id.subsystem_device == 8);
    CHECK(is_virtio_scsi(id.vendor, id.device));
    bench m(personality::modern);
    id = probe_identity(m.dev);
    CHECK(id.device == 0x1048);
    CHECK(id.revision == 1);
    CHECK(is_virtio_scsi(id.vendor, id.device));
    CHECK(!is_virtio_scsi(0x1af4, 0x1001));  // virtio-blk
    CHECK(!is_virtio_scsi(0x8086, 0x1048));
}

TEST_CASE("modern probe finds every structure", "[pci][modern]") {
    bench b(personality::modern);
    modern_pci<device> t(b.dev);
    REQUIRE(t.probe() == status::ok);
    CHECK(t.common_region().bar == 4);
    CHECK(t.common_region().offset == device::common_off);
    CHECK(t.isr_region().offset == device::isr_off);
    CHECK(t.device_region().offset == device::device_off);
    CHECK(t.notify_region().offset == device::notify_off);
    CHECK(t.notify_multiplier() == 4);
    CHECK(t.num_queues() == 3);
    CHECK(t.queue_max_size(2) == 256);
    CHECK(t.queue_max_size(3) == 0);  // no such queue
    CHECK(t.config_read32(config_offset::cmd_per_lun) == 128);
    CHECK(t.config_read16(config_offset::max_target) == 255);
    CHECK(t.device_features() & feature::bit(feature::version_1));
    CHECK(!t.is_legacy());
    CHECK(b.dev.violations().empty());
}

TEST_CASE("a legacy-only function has no modern structures", "[pci][legacy]") {
    bench b(personality::legacy);
    modern_pci<device> m(b.dev);
    CHECK(m.probe() == status::no_device);
    legacy_pci<device> l(b.dev);
    REQUIRE(l.probe() == status::ok);
    CHECK(l.config_offset_in_bar() == 20);
    CHECK(l.is_legacy());
    CHECK(l.order().legacy);
    CHECK(l.queue_max_size(0) == 256);
    CHECK(l.config_read32(config_offset::max_lun) == 16383);
    bench nomodern(personality::modern);
    legacy_pci<device> l2(nomodern.dev);
    CHECK(l2.probe() == status::no_device);  // no I/O BAR
}

TEST_CASE("legacy device config sits at 24 while MSI-X is enabled", "[pci][legacy]") {
    bench b(personality::transitional, true);
    legacy_pci<device> l(b.dev);
    REQUIRE(l.probe() == status::ok);
    CHECK(l.config_offset_in_bar() == 24);
    CHECK(l.config_read32(config_offset::seg_max) == 254);
    CHECK(l.set_config_vector(1) == 1);
    CHECK(l.set_queue_vector(2, 3) == 3);
    bench n(personality::transitional, false);
    legacy_pci<device> l2(n.dev);
    REQUIRE(l2.probe() == status::ok);
    CHECK(l2.set_config_vector(1) == msix_no_vector);  // the register does not exist
    CHECK(b.dev.violations().empty());
}

TEST_CASE("queue programming: modern addresses and notify, legacy PFN", "[pci]") {
    bench b(personality::modern);
    modern_pci<device> t(b.dev);
    REQUIRE(t.probe() == status::ok);
    t.reset();
    CHECK(t.setup_queue(2, 100, 0x10000, 0x11000, 0x12000) == status::invalid_argument);  // not a power of two
    CHECK(t.setup_queue(2, 512, 0x10000, 0x11000, 0x12000) == status::invalid_argument);  // above max
    CHECK(t.setup_queue(2, 64, 0x10008, 0x11000, 0x12000) == status::invalid_argument);   // desc misaligned
    CHECK(t.setup_queue(9, 64, 0x10000, 0x11000, 0x12000) == status::no_device);
    REQUIRE(t.setup_queue(2, 64, 0x1'2345'6000ull, 0x1'2345'7000ull, 0x1'2345'8000ull) == status::ok);
    CHECK(b.dev.queue_size(2) == 64);
    // Read back the programmed 64-bit addresses through the common config.
    b.dev.write16(4, device::common_off + common_reg::queue_select, 2);
    CHECK(b.dev.read32(4, device::common_off + common_reg::queue_desc_lo) == 0x23456000u);
    CHECK(b.dev.read32(4, device::common_off + common_reg::queue_desc_hi) == 1u);
    CHECK(b.dev.read32(4, device::common_off + common_reg::queue_device_lo) == 0x23458000u);
    CHECK(b.dev.read16(4, device::common_off + common_reg::queue_enable) == 1);
    CHECK(b.dev.violations().empty());

    bench l(personality::legacy);
    legacy_pci<device> lt(l.dev);
    REQUIRE(lt.probe() == status::ok);
    ring_config rc;
    rc.size = 256;
    rc.legacy = true;
    const uint64_t base = 0x40000000;
    const uint64_t avail = base + 16 * 256, used = (avail + 6 + 2 * 256 + 4095) & ~4095ull;
    CHECK(lt.setup_queue(2, 128, base, avail, used) == status::invalid_argument);  // size is fixed
    CHECK(lt.setup_queue(2, 256, base + 64, avail, used) == status::invalid_argument);
    CHECK(lt.setup_queue(2, 256, base, avail + 4, used) == status::invalid_argument);
    CHECK(lt.setup_queue(2, 256, 1ull << 45, (1ull << 45) + 4096, (1ull << 45) + 8192) == status::invalid_argument);
    REQUIRE(lt.setup_queue(2, 256, base, avail, used) == status::ok);
    l.dev.write16(0, legacy_reg::queue_sel, 2);
    CHECK(l.dev.read32(0, legacy_reg::queue_pfn) == (base >> 12));
    CHECK(l.dev.violations().empty());
}

TEST_CASE("an odd notify multiplier never yields a misaligned notify", "[pci][hostile][regression]") {
    // Found by fuzz_config: with notify_off_multiplier 3 (the spec wants an even power of
    // two, or 0) queue 1's notify address was odd, and the 16-bit notify write misaligned.
    for (uint32_t mult : {1u, 3u, 5u}) {
        bench b(personality::modern, false, mult);
        modern_pci<device> t(b.dev);
        REQUIRE(t.probe() == status::ok);
        t.reset();
        INFO("multiplier " << mult);
        CHECK(t.setup_queue(0, 64, 0x10000, 0x11000, 0x12000) == status::ok);  // offset 0
        CHECK(t.setup_queue(1, 64, 0x20000, 0x21000, 0x22000) == status::device_error);
        t.notify(0);
        t.notify(1);  // never set up: nothing is written
        CHECK(b.dev.violations().size() == 1);  // the notify of queue 0 before DRIVER_OK, nothing else
    }
    bench g(personality::modern, false, 2);
    modern_pci<device> t(g.dev);
    REQUIRE(t.probe() == status::ok);
    CHECK(t.setup_queue(1, 64, 0x20000, 0x21000, 0x22000) == status::ok);
}

TEST_CASE("capabilities at misaligned offsets are ignored", "[pci][hostile][regression]") {
    // Found by fuzz_pci_caps: a device-config structure at offset 0x20ff was taken, and
    // every 32-bit config read through it was misaligned (checklist 53). The spec has the
    // common and device structures 4-byte aligned, the notify structure 2-byte aligned;
    // the ISR byte may sit anywhere.
    const struct {
        uint32_t field;  // low byte of the offset field of one capability
        uint8_t value;
        bool usable;
    } cases[] = {
        {0x58, 0x02, false},  // common at 0x0002
        {0x78, 0x01, false},  // device config at 0x2001
        {0x78, 0x02, false},  // device config at 0x2002
        {0x88, 0x01, false},  // notify at 0x3001
        {0x88, 0x02, true},   // notify at 0x3002 (0x800 long): 2-byte aligned is enough
        {0x68, 0x03, true},   // ISR at 0x1003
    };
    for (const auto& c : cases) {
        bench b(personality::modern);
        b.dev.pci_config()[c.field] = c.value;
        b.dev.pci_config()[0x8d] = 0x08;  // the notify structure 0x800 long, so it fits when moved
        modern_pci<device> t(b.dev);
        INFO("offset field at " << c.field << " = " << int(c.value));
        CHECK((t.probe() == status::ok) == c.usable);
    }
    // A later, aligned structure of the same type is used instead (checklist 52).
    bench b(personality::modern);
    uint8_t* c = b.dev.pci_config();
    c[0x78] = 0x01;
    c[0x80 + 1] = 0xa0;
    c[0xa0] = 0x09;
    c[0xa1] = 0;
    c[0xa2] = 16;
    c[0xa3] = 4;  // device config
    c[0xa4] = 4;
    c[0xa9] = 0x20;  // offset 0x2000
    c[0xad] = 0x10;  // length 0x1000
    modern_pci<device> t(b.dev);
    REQUIRE(t.probe() == status::ok);
    CHECK(t.device_region().offset == device::device_off);
    CHECK(t.config_read32(config_offset::num_queues) == 1);
    CHECK(b.dev.violations().empty());
}

TEST_CASE("a structure too short to use gives way to a later one", "[pci][hostile][regression]") {
    // Found by fuzz_pci_caps: a 16-byte common structure listed first was taken, and probe()
    // then refused the device although a full one followed. The driver should use the first
    // instance it can support (checklist 52).
    bench b(personality::modern);
    uint8_t* c = b.dev.pci_config();
    c[0x5c] = 0x10;  // common: 16 bytes, less than the 56 the driver uses
    c[0x5d] = 0x00;
    modern_pci<device> t(b.dev);
    CHECK(t.probe() == status::no_device);  // and nothing else to use
    c[0x80 + 1] = 0xa0;
    c[0xa0] = 0x09;
    c[0xa1] = 0;
    c[0xa2] = 16;
    c[0xa3] = 1;  // common
    c[0xa4] = 4;
    c[0xad] = 0x10;  // offset 0, length 0x1000
    REQUIRE(t.probe() == status::ok);
    CHECK(t.common_region().length == 0x1000);
    CHECK(t.num_queues() == 3);
    CHECK(b.dev.violations().empty());
}

TEST_CASE("hostile capability lists never read out of bounds", "[pci][hostile]") {
    SECTION("a loop in the next pointers terminates") {
        bench b(personality::modern);
        uint8_t* c = b.dev.pci_config();
        c[0x80 + 1] = 0x50;  // notify cap's next points back at common cfg
        modern_pci<device> t(b.dev);
        CHECK(t.probe() == status::ok);  // everything found before the loop
        c[0x50 + 1] = 0x50;               // common points at itself: later caps unreachable
        modern_pci<device> t2(b.dev);
        CHECK(t2.probe() == status::no_device);
    }
    SECTION("a pointer outside config space or below the header") {
        bench b(personality::modern);
        b.dev.pci_config()[0x34] = 0xfe;
        modern_pci<device> t(b.dev);
        CHECK(t.probe() == status::no_device);
        b.dev.pci_config()[0x34] = 0x10;
        CHECK(t.probe() == status::no_device);
    }
    SECTION("a reserved BAR, an offset past the BAR, a short cap are ignored") {
        bench b(personality::modern);
        uint8_t* c = b.dev.pci_config();
        c[0x50 + 4] = 7;  // common cfg in BAR 7
        modern_pci<device> t(b.dev);
        CHECK(t.probe() == status::no_device);
        c[0x50 + 4] = 4;
        c[0x50 + 8 + 1] = 0xff;  // offset 0xff00: past the 0x4000-byte BAR
        CHECK(t.probe() == status::no_device);
        c[0x50 + 8 + 1] = 0x00;
        c[0x50 + 2] = 8;  // cap_len too small
        CHECK(t.probe() == status::no_device);
        c[0x50 + 2] = 16;
        CHECK(t.probe() == status::ok);
    }
    SECTION("the first capability of a type wins; unknown types are skipped") {
        bench b(personality::modern);
        uint8_t* c = b.dev.pci_config();
        // Add a second common cfg (pointing at the ISR area) after the list's end, and an
        // unknown type before it.
        c[0x80 + 1] = 0x90;
        c[0x90] = 0x09;
        c[0x91] = 0xa0;
        c[0x92] = 16;
        c[0x93] = 42;  // unknown cfg_type
        c[0x94] = 4;
        c[0xa0] = 0x09;
        c[0xa1] = 0;
        c[0xa2] = 16;
        c[0xa3] = 1;  // common again
        c[0xa4] = 4;
        c[0xa8] = 0x00;
        c[0xa9] = 0x10;
        c[0xac] = 0x00;
        c[0xad] = 0x10;
        modern_pci<device> t(b.dev);
        REQUIRE(t.probe() == status::ok);
        CHECK(t.common_region().offset == device::common_off);
    }
    SECTION("no capability list at all") {
        bench b(personality::modern);
        b.dev.pci_config()[0x06] = 0;
        modern_pci<device> t(b.dev);
        CHECK(t.probe() == status::no_device);
    }
}
