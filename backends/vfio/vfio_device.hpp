// A PCI function driven through vfio-pci: the container (type1 IOMMU), the function's IOMMU
// group, and the device file, with what a userspace driver does through them: regions (BARs
// and configuration space), DMA mappings at IOVAs the driver chooses, and interrupts
// delivered to eventfds.
//
// Everything here is released by the kernel when the process ends, however it ends: closing
// the device file disables the function's interrupts and clears Bus Master Enable, and
// closing the container detaches the group from its IOMMU domain, which removes every DMA
// mapping and unpins the memory. A device left running by a killed driver can reach no
// memory at all after that (its DMA faults in the IOMMU), so close() here only does the same
// in a tidy order.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <string>
#include <vector>

#include "sysfs.hpp"

namespace vscsi::vfio {

// One region of the device file: a BAR, the ROM or configuration space.
struct region {
    uint64_t offset = 0;   // where it starts in the device file
    uint64_t size = 0;     // 0: absent
    bool readable = false;
    bool writable = false;
    bool mappable = false; // the whole region may be mmap()ed (no sparse areas)
};

// A range of IOVAs the IOMMU can map ([start, last], inclusive as the kernel reports it).
struct iova_range {
    uint64_t start;
    uint64_t last;
};

// The lowest IOVA at or above `prefer` (or, failing that, anywhere but page 0) where `bytes`
// fit inside one range, aligned to `align`; ~0 if none. Ranges come from the IOMMU.
uint64_t choose_iova(const std::vector<iova_range>& ranges, uint64_t bytes, uint64_t align, uint64_t prefer);

class device {
public:
    device() = default;
    ~device() { close(); }
    device(const device&) = delete;
    device& operator=(const device&) = delete;

    // Open the container, the function's group and the device. The function must be bound to
    // vfio-pci. Errors name the cause: no IOMMU, vfio not loaded, no access to the group file,
    // the group in use or not viable (another device of it bound to a driver), no type1 IOMMU.
    bool open(const uio::host_paths& hp, const std::string& bdf, std::string& err);
    void close();
    bool is_open() const { return device_ >= 0; }
    int fd() const { return device_; }
    const std::string& group() const { return group_name_; }

    // BARs 0-5 and configuration space.
    const region& bar(unsigned i) const { return regions_[i < 6 ? i : 6]; }
    const region& config() const { return regions_[7]; }

    // ---- DMA: the only memory the device can reach ----
    const std::vector<iova_range>& iova_ranges() const { return ranges_; }
    // Map [virt, virt + bytes) at `iova`, readable and writable by the device. The kernel pins
    // the pages (counted against RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK).
    bool map_dma(void* virt, size_t bytes, uint64_t iova, std::string& err);
    bool unmap_dma(uint64_t iova, size_t bytes);

    // ---- interrupts ----
    // How many vectors an interrupt index has (VFIO_PCI_INTX_IRQ_INDEX, ..._MSIX_IRQ_INDEX);
    // 0 if the function has none of that kind.
    uint32_t irq_count(uint32_t index) const;
    // Signal eventfds[i] for vector i of `index` (enables MSI-X for that index).
    bool set_irq_eventfds(uint32_t index, const int* eventfds, uint32_t n, std::string& err);
    // Turn the whole index off again.
    void disable_irqs(uint32_t index);
    // INTx is masked by the kernel each time it fires; this unmasks it.
    bool unmask_intx();

private:
    bool read_iommu_info();

    int container_ = -1;
    int group_ = -1;
    int device_ = -1;
    std::string group_name_;
    region regions_[8];
    std::vector<iova_range> ranges_;
};

}  // namespace vscsi::vfio
