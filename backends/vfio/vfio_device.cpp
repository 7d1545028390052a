#include "vfio_device.hpp"

#include "pci_function.hpp"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

namespace vscsi::vfio {

namespace {

std::string errno_text(int e) { return strerror(e); }

// "0000:00:05.0 (virtio-pci)" for each member other than `self` that a driver holds.
std::string drivers_in_group(const uio::host_paths& hp, const std::string& group, const std::string& self) {
    std::string out;
    for (const std::string& m : uio::group_members(hp, group)) {
        if (m == self) continue;
        const std::string drv = uio::link_name(hp.pci_function(m) + "/driver");
        if (drv.empty() || drv == uio::vfio_driver) continue;
        out += (out.empty() ? "" : ", ") + m + " (" + drv + ")";
    }
    return out;
}

std::string memlock_text() {
    rlimit rl{};
    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) return "unknown";
    if (rl.rlim_cur == RLIM_INFINITY) return "unlimited";
    return std::to_string(rl.rlim_cur >> 10) + " KiB";
}

}  // namespace

uint64_t choose_iova(const std::vector<iova_range>& ranges, uint64_t bytes, uint64_t align, uint64_t prefer) {
    if (bytes == 0 || align == 0 || (align & (align - 1))) return ~0ull;
    auto fit = [&](uint64_t floor) {
        uint64_t best = ~0ull;
        for (const iova_range& r : ranges) {
            if (r.last < r.start) continue;
            uint64_t at = std::max(r.start, floor);
            if (at > ~0ull - (align - 1)) continue;
            at = (at + align - 1) & ~(align - 1);
            if (at < r.start || at > r.last || bytes - 1 > r.last - at) continue;
            best = std::min(best, at);
        }
        return best;
    };
    const uint64_t preferred = fit(prefer);
    return preferred != ~0ull ? preferred : fit(align);  // never IOVA 0: a null address is a bug's favourite
}

bool device::open(const uio::host_paths& hp, const std::string& bdf, std::string& err) {
    close();
    group_name_ = uio::iommu_group(hp, bdf);
    if (group_name_.empty()) {
        err = "no IOMMU: " + bdf + " is in no IOMMU group, so vfio cannot confine its DMA (boot with "
              "intel_iommu=on or amd_iommu=on; a QEMU guest also needs -device intel-iommu); use --driver uio";
        return false;
    }
    const std::string node = hp.dev + "/vfio/vfio";
    container_ = ::open(node.c_str(), O_RDWR | O_CLOEXEC);
    if (container_ < 0) {
        err = errno == ENOENT ? "vfio is not loaded (" + node + " is missing): modprobe vfio-pci"
                              : "cannot open " + node + ": " + errno_text(errno);
        return false;
    }
    if (ioctl(container_, VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
        err = "the kernel's vfio speaks an unknown API version";
        return false;
    }
    const bool v2 = ioctl(container_, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) > 0;
    if (!v2 && ioctl(container_, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) <= 0) {
        err = "vfio offers no type1 IOMMU (modprobe vfio_iommu_type1)";
        return false;
    }
    const std::string gnode = hp.dev + "/vfio/" + group_name_;
    group_ = ::open(gnode.c_str(), O_RDWR | O_CLOEXEC);
    if (group_ < 0) {
        const int e = errno;
        if (e == ENOENT)
            err = bdf + " is not bound to " + uio::vfio_driver + " (" + gnode + " is missing): 'vscsi-uio bind --driver vfio'";
        else if (e == EBUSY)
            err = "IOMMU group " + group_name_ + " of " + bdf + " is in use by another process";
        else if (e == EACCES || e == EPERM)
            err = "no access to " + gnode + ": run as root, or give the user that file (chown)";
        else
            err = "cannot open " + gnode + ": " + errno_text(e);
        return false;
    }
    vfio_group_status gs{};
    gs.argsz = sizeof gs;
    if (ioctl(group_, VFIO_GROUP_GET_STATUS, &gs) != 0) {
        err = "cannot read the status of IOMMU group " + group_name_ + ": " + errno_text(errno);
        return false;
    }
    if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        const std::string others = drivers_in_group(hp, group_name_, bdf);
        err = "IOMMU group " + group_name_ + " is not viable: " +
              (others.empty() ? std::string("a device in it is bound to another driver")
                              : "it also holds " + others) +
              "; every device of the group must be bound to " + uio::vfio_driver + " or to no driver";
        return false;
    }
    if (ioctl(group_, VFIO_GROUP_SET_CONTAINER, &container_) != 0) {
        err = "cannot add IOMMU group " + group_name_ + " to a vfio container: " + errno_text(errno);
        return false;
    }
    if (ioctl(container_, VFIO_SET_IOMMU, v2 ? VFIO_TYPE1v2_IOMMU : VFIO_TYPE1_IOMMU) != 0) {
        err = "cannot set up the type1 IOMMU for group " + group_name_ + ": " + errno_text(errno);
        return false;
    }
    device_ = ioctl(group_, VFIO_GROUP_GET_DEVICE_FD, bdf.c_str());
    if (device_ < 0) {
        err = "cannot open " + bdf + " through vfio: " + errno_text(errno);
        return false;
    }
    vfio_device_info di{};
    di.argsz = sizeof di;
    if (ioctl(device_, VFIO_DEVICE_GET_INFO, &di) != 0 || !(di.flags & VFIO_DEVICE_FLAGS_PCI) ||
        di.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX) {
        err = bdf + ": vfio does not describe it as a PCI device";
        return false;
    }
    for (uint32_t i = 0; i <= VFIO_PCI_CONFIG_REGION_INDEX; ++i) {
        vfio_region_info ri{};
        ri.argsz = sizeof ri;
        ri.index = i;
        if (ioctl(device_, VFIO_DEVICE_GET_REGION_INFO, &ri) != 0) continue;  // stays absent
        region& r = regions_[i];
        r.offset = ri.offset;
        r.size = ri.size;
        r.readable = ri.flags & VFIO_REGION_INFO_FLAG_READ;
        r.writable = ri.flags & VFIO_REGION_INFO_FLAG_WRITE;
        // With capabilities (sparse areas: the MSI-X table's BAR) only parts may be mapped;
        // such a BAR is reached through read() and write() instead.
        r.mappable = (ri.flags & VFIO_REGION_INFO_FLAG_MMAP) && !(ri.flags & VFIO_REGION_INFO_FLAG_CAPS);
    }
    if (config().size < 256 || !config().readable) {
        err = bdf + ": vfio gives no access to its configuration space";
        return false;
    }
    if (!read_iommu_info()) {
        err = "cannot read the IOMMU's IOVA ranges for group " + group_name_ + ": " + errno_text(errno);
        return false;
    }
    return true;
}

bool device::read_iommu_info() {
    ranges_.clear();
    std::vector<uint8_t> buf(sizeof(vfio_iommu_type1_info));
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto* info = reinterpret_cast<vfio_iommu_type1_info*>(buf.data());
        info->argsz = uint32_t(buf.size());
        if (ioctl(container_, VFIO_IOMMU_GET_INFO, info) != 0) return false;
        if (info->argsz > buf.size()) {  // room for the capability chain, then ask again
            buf.assign(info->argsz, 0);
            continue;
        }
        if (!(info->flags & VFIO_IOMMU_INFO_CAPS)) break;
        // The chain comes from the kernel, but is walked as carefully as device memory.
        uint32_t off = info->cap_offset;
        for (int n = 0; off && n < 64; ++n) {
            if (off < sizeof(vfio_iommu_type1_info) || off + sizeof(vfio_info_cap_header) > buf.size()) break;
            vfio_info_cap_header h;
            memcpy(&h, buf.data() + off, sizeof h);
            if (h.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE &&
                off + sizeof(vfio_iommu_type1_info_cap_iova_range) <= buf.size()) {
                vfio_iommu_type1_info_cap_iova_range cap;
                memcpy(&cap, buf.data() + off, sizeof cap);
                const size_t first = off + sizeof cap;
                for (uint32_t i = 0; i < cap.nr_iovas && first + (i + 1) * sizeof(vfio_iova_range) <= buf.size(); ++i) {
                    vfio_iova_range r;
                    memcpy(&r, buf.data() + first + i * sizeof r, sizeof r);
                    ranges_.push_back({r.start, r.end});
                }
            }
            if (h.next <= off) break;  // the chain only goes forward
            off = h.next;
        }
        break;
    }
    // An IOMMU that names no ranges: assume the 39-bit space every VT-d implementation has.
    if (ranges_.empty()) ranges_.push_back({0, (1ull << 39) - 1});
    return true;
}

void device::close() {
    if (device_ >= 0) ::close(device_);
    device_ = -1;
    if (group_ >= 0) {
        ioctl(group_, VFIO_GROUP_UNSET_CONTAINER);
        ::close(group_);
    }
    group_ = -1;
    if (container_ >= 0) ::close(container_);
    container_ = -1;
    for (region& r : regions_) r = region{};
    ranges_.clear();
}

bool device::map_dma(void* virt, size_t bytes, uint64_t iova, std::string& err) {
    vfio_iommu_type1_dma_map m{};
    m.argsz = sizeof m;
    m.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    m.vaddr = reinterpret_cast<uintptr_t>(virt);
    m.iova = iova;
    m.size = bytes;
    if (ioctl(container_, VFIO_IOMMU_MAP_DMA, &m) == 0) return true;
    const int e = errno;
    if (e == ENOMEM)
        err = "cannot pin " + std::to_string(bytes >> 10) + " KiB for DMA: RLIMIT_MEMLOCK is " + memlock_text() +
              " (the IOMMU mapping locks the memory); raise it (ulimit -l, LimitMEMLOCK=) or run as root";
    else
        err = "cannot map DMA memory at IOVA " + std::to_string(iova) + ": " + errno_text(e);
    return false;
}

bool device::unmap_dma(uint64_t iova, size_t bytes) {
    vfio_iommu_type1_dma_unmap u{};
    u.argsz = sizeof u;
    u.iova = iova;
    u.size = bytes;
    return container_ >= 0 && ioctl(container_, VFIO_IOMMU_UNMAP_DMA, &u) == 0;
}

uint32_t device::irq_count(uint32_t index) const {
    vfio_irq_info ii{};
    ii.argsz = sizeof ii;
    ii.index = index;
    if (device_ < 0 || ioctl(device_, VFIO_DEVICE_GET_IRQ_INFO, &ii) != 0) return 0;
    return (ii.flags & VFIO_IRQ_INFO_EVENTFD) ? ii.count : 0;
}

bool device::set_irq_eventfds(uint32_t index, const int* eventfds, uint32_t n, std::string& err) {
    std::vector<uint8_t> buf(sizeof(vfio_irq_set) + sizeof(int32_t) * n);
    auto* s = reinterpret_cast<vfio_irq_set*>(buf.data());
    s->argsz = uint32_t(buf.size());
    s->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    s->index = index;
    s->start = 0;
    s->count = n;
    for (uint32_t i = 0; i < n; ++i) {
        const int32_t fd = eventfds[i];
        memcpy(s->data + i * sizeof fd, &fd, sizeof fd);
    }
    if (ioctl(device_, VFIO_DEVICE_SET_IRQS, s) == 0) return true;
    err = std::string("cannot enable ") + (index == VFIO_PCI_MSIX_IRQ_INDEX ? "MSI-X" : "INTx") + " through vfio: " +
          errno_text(errno);
    return false;
}

void device::disable_irqs(uint32_t index) {
    if (device_ < 0) return;
    vfio_irq_set s{};
    s.argsz = sizeof s;
    s.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    s.index = index;
    s.count = 0;
    ioctl(device_, VFIO_DEVICE_SET_IRQS, &s);
}

bool device::unmask_intx() {
    vfio_irq_set s{};
    s.argsz = sizeof s;
    s.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
    s.index = VFIO_PCI_INTX_IRQ_INDEX;
    s.start = 0;
    s.count = 1;
    return device_ >= 0 && ioctl(device_, VFIO_DEVICE_SET_IRQS, &s) == 0;
}

}  // namespace vscsi::vfio
