#include "dma_memory.hpp"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sysfs.hpp"
#include "vfio_device.hpp"

namespace vscsi::uio {

namespace {

long meminfo_field(const std::string& proc, const char* name) {
    std::string text;
    if (!read_file(proc + "/meminfo", text)) return -1;
    const size_t at = text.find(name);
    if (at == std::string::npos) return -1;
    long v = -1;
    if (sscanf(text.c_str() + at + strlen(name), " %ld", &v) != 1) return -1;
    return v;
}

constexpr uint64_t pagemap_present = 1ull << 63;
constexpr uint64_t pagemap_pfn_mask = (1ull << 55) - 1;

// IOVAs start here when the IOMMU allows: far from where a guest's or small host's RAM lies,
// so a device that ignored the IOMMU would hit no memory rather than the wrong memory.
constexpr uint64_t preferred_iova = 1ull << 32;
constexpr size_t small_page = 4096;

}  // namespace

size_t default_hugepage_size(const std::string& proc) {
    const long kb = meminfo_field(proc, "Hugepagesize:");
    return kb > 0 ? size_t(kb) * 1024 : 0;
}

long free_hugepages(const std::string& proc) { return meminfo_field(proc, "HugePages_Free:"); }

bool dma_memory::allocate(size_t bytes, std::string& err) {
    release();
    page_ = default_hugepage_size();
    if (page_ == 0) {
        err = "this kernel offers no hugepages (no Hugepagesize in /proc/meminfo)";
        return false;
    }
    const size_t n = (bytes + page_ - 1) / page_;
    const size_t len = n * page_;
    // MAP_POPULATE faults every page in now; MAP_LOCKED keeps them resident. A hugepage is
    // never swapped, and a locked one is not migrated by compaction.
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE | MAP_LOCKED,
                   -1, 0);
    if (p == MAP_FAILED) {
        const int e = errno;
        const long free_pages = free_hugepages();
        char msg[320];
        if (e == ENOMEM || e == EINVAL)
            snprintf(msg, sizeof msg,
                     "no free hugepages: need %zu x %zu KiB, %ld free; reserve some with "
                     "'echo %zu > /proc/sys/vm/nr_hugepages' (or boot with hugepages=%zu)",
                     n, page_ / 1024, free_pages < 0 ? 0 : free_pages, n + 16, n + 16);
        else
            snprintf(msg, sizeof msg, "cannot map %zu hugepages: %s", n, strerror(e));
        err = msg;
        return false;
    }
    if (mlock(p, len) != 0) {
        err = std::string("cannot lock DMA memory: ") + strerror(errno) + " (raise RLIMIT_MEMLOCK or run as root)";
        munmap(p, len);
        return false;
    }
    // A child process must never share these pages copy-on-write: the parent's next store
    // would move it to a new physical page behind the device's back.
    madvise(p, len, MADV_DONTFORK);
    base_ = static_cast<uint8_t*>(p);
    bytes_ = len;
    huge_ = true;
    memset(base_, 0, len);  // also makes sure every page is really there

    const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = std::string("cannot open /proc/self/pagemap: ") + strerror(errno);
        release();
        return false;
    }
    pages_.assign(n, 0);
    for (size_t i = 0; i < n; ++i) {
        const uint64_t vpn = (reinterpret_cast<uintptr_t>(base_) + i * page_) / 4096;
        uint64_t e = 0;
        if (pread(fd, &e, sizeof e, off_t(vpn * sizeof e)) != ssize_t(sizeof e) || !(e & pagemap_present)) {
            err = "/proc/self/pagemap shows a DMA page as not present";
            close(fd);
            release();
            return false;
        }
        const uint64_t pfn = e & pagemap_pfn_mask;
        if (pfn == 0) {
            err = "/proc/self/pagemap hides physical addresses: run as root (CAP_SYS_ADMIN)";
            close(fd);
            release();
            return false;
        }
        pages_[i] = pfn * 4096;
    }
    close(fd);
    return true;
}

bool dma_memory::allocate_mapped(size_t bytes, vfio::device& d, std::string& err) {
    release();
    // Hugepages if enough are free; otherwise ordinary pages, which work as well behind an
    // IOMMU (the device sees one contiguous IOVA range either way). No MAP_LOCKED or mlock():
    // the IOMMU mapping pins the pages, and RLIMIT_MEMLOCK would count a lock twice.
    const size_t huge = default_hugepage_size();
    void* p = MAP_FAILED;
    size_t len = 0;
    if (huge) {
        const size_t n = (bytes + huge - 1) / huge;
        if (free_hugepages() >= long(n)) {
            len = n * huge;
            p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
            page_ = huge;
            huge_ = p != MAP_FAILED;
        }
    }
    if (p == MAP_FAILED) {
        len = (bytes + small_page - 1) / small_page * small_page;
        p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        page_ = small_page;
        huge_ = false;
    }
    if (p == MAP_FAILED) {
        err = "cannot allocate " + std::to_string(len >> 10) + " KiB for DMA: " + strerror(errno);
        return false;
    }
    // A child must not share the pages copy-on-write: the device keeps writing the originals.
    madvise(p, len, MADV_DONTFORK);
    base_ = static_cast<uint8_t*>(p);
    bytes_ = len;
    memset(base_, 0, len);
    const uint64_t iova = vfio::choose_iova(d.iova_ranges(), len, page_ > (1u << 21) ? page_ : (1u << 21), preferred_iova);
    if (iova == ~0ull) {
        err = "the IOMMU has no free IOVA range of " + std::to_string(len >> 10) + " KiB";
        release();
        return false;
    }
    if (!d.map_dma(base_, len, iova, err)) {
        release();
        return false;
    }
    iommu_ = &d;
    iova_ = iova;
    return true;
}

void dma_memory::release() {
    // The IOMMU forgets the range before the pages go back: the device can never reach them
    // once they are someone else's.
    if (iommu_) iommu_->unmap_dma(iova_, bytes_);
    iommu_ = nullptr;
    iova_ = 0;
    if (base_) munmap(base_, bytes_);
    base_ = nullptr;
    bytes_ = 0;
    huge_ = false;
    pages_.clear();
}

bool dma_memory::contiguous(const void* p, size_t len) const {
    if (len == 0 || iommu_) return true;
    const size_t off = size_t(static_cast<const uint8_t*>(p) - base_);
    const size_t first = off / page_, last = (off + len - 1) / page_;
    for (size_t i = first; i < last; ++i)
        if (pages_[i + 1] != pages_[i] + page_) return false;
    return true;
}

dma_region dma_memory::contiguous_head() const {
    if (!base_) return dma_region{nullptr, 0, 0};
    if (iommu_) return dma_region{base_, iova_, bytes_};
    size_t n = 1;
    while (n < pages_.size() && pages_[n] == pages_[n - 1] + page_) ++n;
    return dma_region{base_, pages_[0], n * page_};
}

uint32_t dma_memory::scatter(const void* p, size_t len, sg_entry* out, uint32_t max) const {
    const uint8_t* at = static_cast<const uint8_t*>(p);
    uint32_t n = 0;
    while (len) {
        const size_t off = size_t(at - base_);
        size_t run = iommu_ ? len : page_ - off % page_;
        // Extend over following pages while they continue physically.
        for (size_t pg = off / page_; run < len && pg + 1 < pages_.size() && pages_[pg + 1] == pages_[pg] + page_; ++pg)
            run += page_;
        if (run > len) run = len;
        if (run > 0xffffffffu) run = 0x80000000u;  // one sg entry holds a 32-bit length
        if (n == max) return 0;
        out[n++] = sg_entry{bus_of(at), uint32_t(run)};
        at += run;
        len -= run;
    }
    return n;
}

}  // namespace vscsi::uio
