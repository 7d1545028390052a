// The vfio backend's logic that needs no kernel: where DMA memory goes in IOVA space, and the
// MSI-X vectors the transport writes for it, against the loopback device (whose MSI-X table
// holds 4 vectors and which forgets every vector on reset, as QEMU's does).
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <string.h>

#include <vscsi/initiator.hpp>

#include "loopback_device.hpp"
#include "pci_transport.hpp"
#include "vfio_device.hpp"

using namespace vscsi;
using vscsi::vfio::choose_iova;
using vscsi::vfio::iova_range;

TEST_CASE("IOVAs: the preferred address when it fits, else the lowest that does, never page 0", "[vfio]") {
    const uint64_t two_mib = 2 << 20, four_gib = 1ull << 32;
    // An Intel IOMMU with 39 address bits and the MSI window carved out.
    const std::vector<iova_range> vtd = {{0, 0xfedfffff}, {0xfef00000, (1ull << 39) - 1}};
    CHECK(choose_iova(vtd, 10 << 20, two_mib, four_gib) == four_gib);
    // Unaligned range starts are rounded up; a mapping never straddles a hole.
    const std::vector<iova_range> low = {{0x1000, 0x3fffffff}};
    CHECK(choose_iova(low, 10 << 20, two_mib, four_gib) == two_mib);  // nothing above 4 GiB: the lowest, not 0
    CHECK(choose_iova(low, 0x40000000, two_mib, four_gib) == ~0ull);  // does not fit at all
    const std::vector<iova_range> holes = {{0, 0x2fffff}, {0x400000, 0x5fffff}, {0x1000000, 0x1ffffff}};
    CHECK(choose_iova(holes, 3 << 20, two_mib, four_gib) == 0x1000000);
    CHECK(choose_iova(holes, 1 << 20, two_mib, four_gib) == two_mib);
    // The top of the address space: no overflow past 2^64.
    const std::vector<iova_range> top = {{~0ull - 0xfffff, ~0ull}};
    CHECK(choose_iova(top, 2 << 20, two_mib, four_gib) == ~0ull);
    CHECK(choose_iova(top, 4096, 4096, four_gib) == ~0ull - 0xfffff);
    // Nonsense in, no address out.
    CHECK(choose_iova(vtd, 0, two_mib, four_gib) == ~0ull);
    CHECK(choose_iova(vtd, 4096, 3, four_gib) == ~0ull);
    CHECK(choose_iova({{0x5000, 0x1000}}, 4096, 4096, 0) == ~0ull);  // an inverted range
}

namespace {

using transport_t = uio::basic_pci_transport<loopback::device>;
using initiator_t = initiator<hosted_platform, transport_t, 32, 96, 4>;

struct msix_rig {
    loopback::dma_map map;
    loopback::device dev;
    transport_t t{dev};
    initiator_t ini{t};
    initiator_config cfg;
    uint8_t* mem = nullptr;
    size_t bytes = 0;
    std::vector<uint8_t> books;  // the initiator's private region

    explicit msix_rig(uint16_t request_queues) : dev(options(request_queues), map) {
        cfg.max_request_queues = request_queues;
        bytes = (initiator_t::region_bytes(cfg) + 4095) & ~size_t(4095);
        mem = static_cast<uint8_t*>(aligned_alloc(4096, bytes));
        memset(mem, 0, bytes);
        map.add(0x100000000ull, mem, bytes);
        books.resize(initiator_t::private_bytes(cfg) + private_region_align);
        REQUIRE(t.probe_modern());
        t.use(false);
    }
    ~msix_rig() { free(mem); }
    static loopback::options options(uint16_t queues) {
        loopback::options o;
        o.kind = loopback::personality::modern;
        o.num_queues = queues;
        return o;
    }
    status start() {
        void* p = books.data() + (private_region_align - reinterpret_cast<uintptr_t>(books.data()) % private_region_align);
        return ini.start(cfg, dma_region{mem, 0x100000000ull, bytes}, private_region{p, initiator_t::private_bytes(cfg)});
    }
    // What the device holds now: the configuration vector and each virtqueue's.
    std::vector<uint16_t> vectors() {
        std::vector<uint16_t> v{dev.read16(4, loopback::device::common_off + common_reg::msix_config)};
        for (uint16_t q = 0; q < 2 + ini.request_queues(); ++q) {
            dev.write16(4, loopback::device::common_off + common_reg::queue_select, q);
            v.push_back(dev.read16(4, loopback::device::common_off + common_reg::queue_msix_vector));
        }
        return v;
    }
};

}  // namespace

TEST_CASE("MSI-X: a vector per virtqueue, written before each queue is enabled, again after every reset", "[vfio]") {
    msix_rig r(1);
    r.t.use_msix(0, 1, true);
    REQUIRE(r.start() == status::ok);
    CHECK(!r.t.msix_refused());
    CHECK(r.vectors() == std::vector<uint16_t>{0, 1, 2, 3});  // config, control, event, request 0
    // A device reset forgets them; the initiator's re-initialisation sets them up again.
    struct nothing {
        void on_complete(const io_completion&) {}
        void on_tmf(const tmf_completion&) {}
        void on_an(const an_completion&) {}
        void on_event(const event_info&) {}
    } h;
    REQUIRE(r.ini.reset_device(h) == status::ok);
    CHECK(r.vectors() == std::vector<uint16_t>{0, 1, 2, 3});
    CHECK(r.dev.violations().empty());
}

TEST_CASE("MSI-X: shared, every queue on one vector", "[vfio]") {
    msix_rig r(3);
    r.t.use_msix(0, 1, false);
    REQUIRE(r.start() == status::ok);
    CHECK(!r.t.msix_refused());
    CHECK(r.vectors() == std::vector<uint16_t>{0, 1, 1, 1, 1, 1});
}

TEST_CASE("MSI-X: a vector the device cannot take reads back NO_VECTOR and is reported", "[vfio]") {
    msix_rig r(3);                      // 5 virtqueues: vectors up to 5, the table holds 4
    r.t.use_msix(0, 1, true);
    REQUIRE(r.start() == status::ok);   // the device runs; it would signal nothing for two queues
    CHECK(r.t.msix_refused());
    CHECK(r.vectors() == std::vector<uint16_t>{0, 1, 2, 3, msix_no_vector, msix_no_vector});
    // Without MSI-X the transport writes no vector at all.
    msix_rig plain(1);
    REQUIRE(plain.start() == status::ok);
    CHECK(!plain.t.msix_refused());
    CHECK(plain.vectors() == std::vector<uint16_t>{msix_no_vector, msix_no_vector, msix_no_vector, msix_no_vector});
}
