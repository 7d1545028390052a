#include "bar_bus.hpp"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vscsi/pci.hpp>

#include "vfio_device.hpp"
#if defined(__x86_64__) || defined(__i386__)
#include <sys/io.h>
#define VSCSI_HAVE_PORT_IO 1
#endif

namespace vscsi::uio {

namespace {

constexpr uint32_t first_bar_register = 0x10;  // BAR 0 in configuration space

#ifdef VSCSI_HAVE_PORT_IO
uint32_t port_in(uint16_t port, unsigned width) {
    if (width == 1) return inb(port);
    if (width == 2) return inw(port);
    return inl(port);
}
void port_out(uint16_t port, unsigned width, uint32_t v) {
    if (width == 1)
        outb(uint8_t(v), port);
    else if (width == 2)
        outw(uint16_t(v), port);
    else
        outl(v, port);
}
#endif

}  // namespace

bool bar_bus::open(const host_paths& hp, const std::string& bdf, std::string& err) {
    close();
    const std::string dir = hp.pci_function(bdf);
    config_fd_ = ::open((dir + "/config").c_str(), O_RDWR | O_CLOEXEC);
    if (config_fd_ < 0) {
        err = "cannot open " + dir + "/config: " + strerror(errno);
        return false;
    }
    owns_config_fd_ = true;
    bar_resource res[6];
    if (!read_bars(hp, bdf, res)) {
        err = "cannot read " + dir + "/resource";
        return false;
    }
    for (unsigned i = 0; i < 6; ++i) {
        const bar_resource& r = res[i];
        if (!r.present()) continue;
        bar& b = bars_[i];
        b.len = r.length();
        const std::string file = dir + "/resource" + std::to_string(i);
        if (r.mem()) {
            const int fd = ::open(file.c_str(), O_RDWR | O_SYNC | O_CLOEXEC);
            if (fd < 0) {
                err = "cannot open " + file + ": " + strerror(errno);
                return false;
            }
            void* p = mmap(nullptr, b.len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            ::close(fd);  // the mapping stays
            if (p == MAP_FAILED) {
                err = "cannot map " + file + ": " + strerror(errno);
                return false;
            }
            b.mmio = static_cast<volatile uint8_t*>(p);
            continue;
        }
        b.io = true;
#ifdef VSCSI_HAVE_PORT_IO
        if (r.end < 0x10000 && ioperm(r.start, b.len, 1) == 0) {
            b.ports = true;
            b.port = uint16_t(r.start);
            continue;
        }
#endif
        b.fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
        if (b.fd < 0) {
            err = "cannot open " + file + ": " + strerror(errno);
            return false;
        }
        b.owns_fd = true;
    }
    return true;
}

bool bar_bus::open_vfio(const vfio::device& d, std::string& err) {
    close();
    config_fd_ = d.fd();
    config_offset_ = d.config().offset;
    for (unsigned i = 0; i < 6; ++i) {
        const vfio::region& r = d.bar(i);
        if (r.size == 0 || !r.readable || !r.writable) continue;
        bar& b = bars_[i];
        b.len = r.size;
        if (r.mappable) {
            void* p = mmap(nullptr, r.size, PROT_READ | PROT_WRITE, MAP_SHARED, d.fd(), off_t(r.offset));
            if (p == MAP_FAILED) {
                err = "cannot map BAR " + std::to_string(i) + " through vfio: " + strerror(errno);
                return false;
            }
            b.mmio = static_cast<volatile uint8_t*>(p);
            continue;
        }
        // An I/O BAR, or one vfio lets us map only in parts: every access a pread/pwrite.
        b.fd = d.fd();
        b.fd_offset = r.offset;
        // Bit 0 of the BAR register says I/O space (vfio shows the BAR's type as it is).
        b.io = (config_read32(first_bar_register + 4 * i) & 1) != 0;
    }
    return true;
}

void bar_bus::close() {
    for (bar& b : bars_) {
        if (b.mmio) munmap(const_cast<uint8_t*>(b.mmio), b.len);
        if (b.owns_fd && b.fd >= 0) ::close(b.fd);
#ifdef VSCSI_HAVE_PORT_IO
        if (b.ports) ioperm(b.port, b.len, 0);
#endif
        b = bar{};
    }
    if (owns_config_fd_ && config_fd_ >= 0) ::close(config_fd_);
    config_fd_ = -1;
    config_offset_ = 0;
    owns_config_fd_ = false;
}

uint32_t bar_bus::read_slow(const bar& x, uint32_t off, unsigned width) {
#ifdef VSCSI_HAVE_PORT_IO
    if (x.ports) return port_in(uint16_t(x.port + off), width);
#endif
    uint32_t v = 0;
    if (x.fd < 0 || pread(x.fd, &v, width, off_t(x.fd_offset + off)) != ssize_t(width)) return ~0u;
    return v;
}

void bar_bus::write_slow(const bar& x, uint32_t off, unsigned width, uint32_t v) {
#ifdef VSCSI_HAVE_PORT_IO
    if (x.ports) {
        port_out(uint16_t(x.port + off), width, v);
        return;
    }
#endif
    if (x.fd >= 0) (void)!pwrite(x.fd, &v, width, off_t(x.fd_offset + off));
}

uint32_t bar_bus::config_read(uint32_t off, unsigned width) {
    uint32_t v = 0;
    if (config_fd_ < 0 || pread(config_fd_, &v, width, off_t(config_offset_ + off)) != ssize_t(width))
        return ~0u >> (32 - 8 * width);
    return v;
}

bool bar_bus::config_write16(uint32_t off, uint16_t v) {
    return config_fd_ >= 0 && pwrite(config_fd_, &v, 2, off_t(config_offset_ + off)) == 2;
}

bool bar_bus::set_bus_master(bool on) {
    const uint16_t cmd = config_read16(pci_cfg::command);
    const uint16_t want = on ? uint16_t(cmd | pci_cfg::command_bus_master) : uint16_t(cmd & ~pci_cfg::command_bus_master);
    if (cmd == want) return true;
    return config_write16(pci_cfg::command, want) &&
           (config_read16(pci_cfg::command) & pci_cfg::command_bus_master) == (want & pci_cfg::command_bus_master);
}

}  // namespace vscsi::uio
