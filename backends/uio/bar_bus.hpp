// Register access to a PCI function: the Bus policy pci.hpp's transports use, through sysfs
// (a function bound to uio_pci_generic) or through the vfio device file (vfio-pci).
//
// - Memory BARs (the modern interface's capability BAR): mmap of
//   /sys/bus/pci/devices/<bdf>/resourceN (uio_pci_generic exposes no uio map for them), or
//   of the BAR's region of the vfio device file; accessed with loads and stores of the
//   field's width. A vfio region that may not be mapped whole (sparse areas around an MSI-X
//   table) is reached with pread/pwrite of the device file instead.
// - I/O BARs (the legacy interface): with sysfs, port I/O instructions after ioperm() when
//   the process may (root, ports below 64 KiB, x86), else pread/pwrite of the same resourceN
//   file, which the kernel turns into one in/out of the requested width; with vfio,
//   pread/pwrite of the BAR's region.
// - Configuration space: pread/pwrite of sysfs `config`, or of vfio's configuration region
//   (where the kernel keeps MSI-X and a few other registers to itself).
//
// The data path only writes the notify register; on a memory BAR that is one store, with
// ioperm one `out` instruction: no system call per I/O either way.
#pragma once
#include <stdint.h>

#include <string>

#include "pci_function.hpp"
#include "sysfs.hpp"

namespace vscsi::vfio {
class device;
}

namespace vscsi::uio {

class bar_bus {
public:
    bar_bus() = default;
    ~bar_bus() { close(); }
    bar_bus(const bar_bus&) = delete;
    bar_bus& operator=(const bar_bus&) = delete;

    // Open config space and every BAR of the function through sysfs. Needs root for the full
    // config space and the BAR files.
    bool open(const host_paths& hp, const std::string& bdf, std::string& err);
    // The same through an open vfio device; the device must stay open while this is.
    bool open_vfio(const vfio::device& d, std::string& err);
    void close();

    // ---- the Bus policy (pci.hpp) ----
    uint8_t read8(unsigned bar, uint32_t off) { return uint8_t(read(bar, off, 1)); }
    uint16_t read16(unsigned bar, uint32_t off) { return uint16_t(read(bar, off, 2)); }
    uint32_t read32(unsigned bar, uint32_t off) { return read(bar, off, 4); }
    void write8(unsigned bar, uint32_t off, uint8_t v) { write(bar, off, 1, v); }
    void write16(unsigned bar, uint32_t off, uint16_t v) { write(bar, off, 2, v); }
    void write32(unsigned bar, uint32_t off, uint32_t v) { write(bar, off, 4, v); }
    uint64_t bar_length(unsigned bar) const { return bar < 6 && bars_[bar].usable() ? bars_[bar].len : 0; }
    uint8_t config_read8(uint32_t off) { return uint8_t(config_read(off, 1)); }
    uint16_t config_read16(uint32_t off) { return uint16_t(config_read(off, 2)); }
    uint32_t config_read32(uint32_t off) { return config_read(off, 4); }

    // ---- beyond the policy ----
    bool config_write16(uint32_t off, uint16_t v);
    // Bus Master Enable in the command register: DMA is impossible without it, and neither
    // uio_pci_generic nor vfio-pci sets it (both clear it when their file is closed).
    bool set_bus_master(bool on);
    bool bar_is_io(unsigned bar) const { return bar < 6 && bars_[bar].io; }
    bool bar_uses_ports(unsigned bar) const { return bar < 6 && bars_[bar].ports; }
    bool bar_is_mapped(unsigned bar) const { return bar < 6 && bars_[bar].mmio; }

private:
    struct bar {
        volatile uint8_t* mmio = nullptr;  // mapped memory BAR
        uint64_t len = 0;
        int fd = -1;                       // resourceN or the vfio device: pread/pwrite
        uint64_t fd_offset = 0;            // where the BAR starts in that file
        bool owns_fd = false;              // resourceN is ours to close; the vfio device is not
        uint16_t port = 0;                 // first port, when `ports`
        bool io = false;
        bool ports = false;                // ioperm granted: in/out instructions
        bool usable() const { return mmio || fd >= 0 || ports; }
    };

    uint32_t read(unsigned b, uint32_t off, unsigned width) {
        if (b >= 6 || uint64_t(off) + width > bars_[b].len) return ~0u;  // never outside the BAR
        const bar& x = bars_[b];
        if (x.mmio) {
            volatile uint8_t* p = x.mmio + off;
            if (width == 1) return *p;
            if (width == 2) return *reinterpret_cast<volatile uint16_t*>(p);
            return *reinterpret_cast<volatile uint32_t*>(p);
        }
        return read_slow(x, off, width);
    }
    void write(unsigned b, uint32_t off, unsigned width, uint32_t v) {
        if (b >= 6 || uint64_t(off) + width > bars_[b].len) return;
        const bar& x = bars_[b];
        if (x.mmio) {
            volatile uint8_t* p = x.mmio + off;
            if (width == 1)
                *p = uint8_t(v);
            else if (width == 2)
                *reinterpret_cast<volatile uint16_t*>(p) = uint16_t(v);
            else
                *reinterpret_cast<volatile uint32_t*>(p) = v;
            return;
        }
        write_slow(x, off, width, v);
    }
    static uint32_t read_slow(const bar& x, uint32_t off, unsigned width);
    static void write_slow(const bar& x, uint32_t off, unsigned width, uint32_t v);
    uint32_t config_read(uint32_t off, unsigned width);

    bar bars_[6];
    int config_fd_ = -1;
    uint64_t config_offset_ = 0;
    bool owns_config_fd_ = false;
};

}  // namespace vscsi::uio
