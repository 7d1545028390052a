// Instantiates the whole core the way a freestanding user would: no libc, no libstdc++.
// tests/unit/check_headers.sh compiles this with -ffreestanding -nostdinc and checks the
// object references nothing but memcpy/memset/memmove (GCC may emit those in any mode).
#include <vscsi/device.hpp>
#include <vscsi/initiator.hpp>
#include <vscsi/pci.hpp>
#include <vscsi/packed_ring.hpp>
#include <vscsi/ring.hpp>
#include <vscsi/virtqueue.hpp>

namespace {
struct null_bus {
    volatile uint32_t sink;
    uint8_t read8(unsigned, uint32_t) { return uint8_t(sink); }
    uint16_t read16(unsigned, uint32_t) { return uint16_t(sink); }
    uint32_t read32(unsigned, uint32_t) { return sink; }
    void write8(unsigned, uint32_t, uint8_t v) { sink = v; }
    void write16(unsigned, uint32_t, uint16_t v) { sink = v; }
    void write32(unsigned, uint32_t, uint32_t v) { sink = v; }
    uint64_t bar_length(unsigned) { return sink; }
    uint8_t config_read8(uint32_t) { return uint8_t(sink); }
    uint16_t config_read16(uint32_t) { return uint16_t(sink); }
    uint32_t config_read32(uint32_t) { return sink; }
};
struct null_handler {
    uint32_t n;
    void on_complete(const vscsi::io_completion&) { ++n; }
    void on_tmf(const vscsi::tmf_completion&) { ++n; }
    void on_an(const vscsi::an_completion&) { ++n; }
    void on_event(const vscsi::event_info&) { ++n; }
};
}  // namespace

template class vscsi::split_ring<vscsi::hosted_platform>;
template class vscsi::packed_ring<vscsi::hosted_platform>;
template class vscsi::virtqueue<vscsi::hosted_platform>;
template class vscsi::legacy_pci<null_bus>;
template class vscsi::modern_pci<null_bus>;
template class vscsi::virtio_device<vscsi::modern_pci<null_bus>>;
template class vscsi::initiator<vscsi::hosted_platform, vscsi::modern_pci<null_bus>>;
// One ring format by template, each on its own.
template class vscsi::initiator<vscsi::hosted_platform, vscsi::modern_pci<null_bus>, 32, 96, 4,
                                vscsi::split_ring<vscsi::hosted_platform>>;
template class vscsi::initiator<vscsi::hosted_platform, vscsi::modern_pci<null_bus>, 32, 96, 4,
                                vscsi::packed_ring<vscsi::hosted_platform>>;
template class vscsi::initiator<vscsi::hosted_platform, vscsi::legacy_pci<null_bus>, 32, 96, 4>;

// Non-template entry points so the templates' member functions are really emitted.
int vscsi_freestanding_drive(void* mem, uint64_t bus, size_t bytes, void* priv, size_t priv_bytes, uint64_t now) {
    null_bus b{};
    vscsi::modern_pci<null_bus> t(b);
    if (t.probe() != vscsi::status::ok) return 1;
    vscsi::initiator<vscsi::hosted_platform, vscsi::modern_pci<null_bus>> ini(t);
    vscsi::initiator_config c{};
    if (ini.start(c, vscsi::dma_region{mem, bus, bytes}, vscsi::private_region{priv, priv_bytes}) != vscsi::status::ok)
        return 2;
    static const uint8_t cdb[6] = {0, 0, 0, 0, 0, 0};
    vscsi::io_request r{};
    r.cdb = cdb;
    r.cdb_len = 6;
    (void)ini.submit(r, now);
    ini.kick();
    null_handler h{};
    ini.poll(now, h);
    (void)ini.submit_tmf(vscsi::tmf::logical_unit_reset, 0, 0, 0, 0, now);
    (void)ini.submit_an(vscsi::ctrl_type::an_query, 0, 0, vscsi::an_event::all, 0, now);
    (void)ini.reset_device(h);
    (void)ini.stop(h);
    return int(h.n);
}
int vscsi_freestanding_legacy(void* mem, uint64_t bus, size_t bytes, void* priv, size_t priv_bytes, uint64_t now) {
    null_bus b{};
    vscsi::legacy_pci<null_bus> t(b);
    if (t.probe() != vscsi::status::ok) return 1;
    vscsi::initiator<vscsi::hosted_platform, vscsi::legacy_pci<null_bus>, 32, 96, 4> ini(t);
    vscsi::initiator_config c{};
    if (ini.start(c, vscsi::dma_region{mem, bus, bytes}, vscsi::private_region{priv, priv_bytes}) != vscsi::status::ok)
        return 2;
    null_handler h{};
    return int(ini.poll(now, h));
}
