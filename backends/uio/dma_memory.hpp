// DMA memory for a userspace driver, and the bus addresses the device knows it by.
//
// Without an IOMMU (uio_pci_generic) a device sees physical addresses. A hugepage is
// physically contiguous and never swapped or moved while locked, so its physical address,
// read once from /proc/self/pagemap, stays valid for the life of the mapping. That read
// needs CAP_SYS_ADMIN (others see PFN 0), so this way needs root.
//
// Behind an IOMMU (vfio) the driver chooses the addresses: the whole allocation is mapped at
// one IOVA range, so it is contiguous for the device however its pages lie in physical
// memory. Hugepages when enough are free (fewer IOMMU entries), ordinary pages otherwise;
// the mapping pins them. No physical address is ever looked at, and no root is needed.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <string>
#include <vector>

#include <vscsi/platform.hpp>
#include <vscsi/ring.hpp>

namespace vscsi::vfio {
class device;
}

namespace vscsi::uio {

class dma_memory {
public:
    dma_memory() = default;
    ~dma_memory() { release(); }
    dma_memory(const dma_memory&) = delete;
    dma_memory& operator=(const dma_memory&) = delete;

    // Map `bytes` (rounded up to whole hugepages), lock them and look up their bus
    // addresses. On failure `err` names the problem and the remedy (no free hugepages, not
    // root, ...).
    bool allocate(size_t bytes, std::string& err);
    // Take `bytes` (rounded up to whole pages) and map them for `d`'s device at an IOVA chosen
    // from the IOMMU's ranges. `d` must stay open until release(), which unmaps.
    bool allocate_mapped(size_t bytes, vfio::device& d, std::string& err);
    void release();

    uint8_t* virt() const { return base_; }
    size_t bytes() const { return bytes_; }
    size_t page_size() const { return page_; }
    bool hugepages() const { return huge_; }
    // Behind an IOMMU: the first IOVA and how far the mapping goes.
    bool iommu_mapped() const { return iommu_ != nullptr; }
    uint64_t iova() const { return iova_; }

    // Bus address of a byte inside the mapping.
    uint64_t bus_of(const void* p) const {
        const size_t off = size_t(static_cast<const uint8_t*>(p) - base_);
        if (iommu_) return iova_ + off;
        return pages_[off / page_] + off % page_;
    }
    // Whether [p, p + len) is one physically contiguous run (always, inside one hugepage).
    bool contiguous(const void* p, size_t len) const;
    // The largest run starting at the mapping's beginning that is physically contiguous,
    // as a region the core can take (rings must be contiguous in bus space).
    dma_region contiguous_head() const;
    // Scatter list of [p, p + len): one entry per physically contiguous run. Returns the
    // number of entries, or 0 if more than `max` would be needed.
    uint32_t scatter(const void* p, size_t len, sg_entry* out, uint32_t max) const;

private:
    uint8_t* base_ = nullptr;
    size_t bytes_ = 0;
    size_t page_ = 0;
    bool huge_ = false;
    std::vector<uint64_t> pages_;     // bus address of each hugepage (physical: uio)
    vfio::device* iommu_ = nullptr;   // mapped there at iova_ (vfio)
    uint64_t iova_ = 0;
};

// Size of the system's default hugepage (from /proc/meminfo), 0 if unknown.
size_t default_hugepage_size(const std::string& proc = "/proc");
// HugePages_Free, or -1 if unknown.
long free_hugepages(const std::string& proc = "/proc");

}  // namespace vscsi::uio
