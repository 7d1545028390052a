// vscsi-uio iommu-check: does the IOMMU confine the device? A diagnostic that reads one block
// into an IOVA outside every mapping and shows what came of it.
//
// The IOVA is, when the process may read /proc/self/pagemap (root), the physical address of
// a page of ours that is not mapped for the device and holds a sentinel: a device that
// bypassed the IOMMU would write the block there. Behind a working IOMMU the DMA faults
// instead (a guest logs a DMAR fault); what the device then does is its own affair: QEMU's
// leaves the command hanging, another may fail it or set NEEDS_RESET. The driver's
// escalation ends it either way (ABORT TASK, resets, at last a device reset), and the next
// command must succeed. Nothing is written to the disk.
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fmt/core.h>

#include <string>
#include <vector>

#include "session.hpp"

namespace vscsi_uio {

using namespace vscsi;
using vscsi::uio::controller;

namespace {

constexpr size_t page = 4096;

// Physical address of a locked page, or 0 (not root, or not present).
uint64_t physical_address(const void* p) {
    const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    uint64_t e = 0;
    const off_t at = off_t(reinterpret_cast<uintptr_t>(p) / page * sizeof e);
    const bool ok = pread(fd, &e, sizeof e, at) == ssize_t(sizeof e);
    close(fd);
    if (!ok || !(e >> 63)) return 0;
    return (e & ((1ull << 55) - 1)) * page;
}

}  // namespace

int cmd_iommu_check(const options& o) {
    device_session s;
    std::string err;
    if (!open_device(o, s, err) || !pick_lun(o, s, err)) return fail(err);
    controller& c = s.ctl;
    if (c.driver() != uio::host_driver::vfio)
        return fail(c.function().bdf + " is on " + uio::uio_driver + ": no IOMMU confines it, nothing to check");
    lun_info li;
    if (!probe_lun(c, s.target, s.lun, li, err) || !usable_capacity(li, err)) return fail(err);
    const uint32_t bs = li.cap.block_size;
    if (bs > page) return fail(fmt::format("{}-byte blocks do not fit the {}-byte sentinel page", bs, page));

    // What LBA 0 holds, read the ordinary way.
    if (!transfer(s, li, false, 0, 1, c.data(), err)) return fail(err);
    const std::vector<uint8_t> block(c.data(), c.data() + bs);

    // The sentinel: each byte the opposite of the block's, so the block landing there shows.
    void* m = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
    if (m == MAP_FAILED) return fail(std::string("cannot allocate a sentinel page: ") + strerror(errno));
    uint8_t* sentinel = static_cast<uint8_t*>(m);
    for (uint32_t i = 0; i < bs; ++i) sentinel[i] = uint8_t(~block[i]);
    const std::vector<uint8_t> before(sentinel, sentinel + bs);

    const uint64_t first = c.memory().iova(), end = first + c.memory().bytes();
    uint64_t iova = physical_address(sentinel);
    const bool physical = iova != 0 && !(iova + bs > first && iova < end);
    if (!physical) iova = (end + (2u << 20) - 1) / (2u << 20) * (2u << 20) + (2u << 20);  // a hole past the mapping
    const char* where =
        physical ? "the physical address of a page of ours that is not mapped for the device" : "an IOVA past the mapping";
    fmt::print("iommu-check {} {}:{}: DMA memory is {} at IOVA {:#x}..{:#x}; READ of LBA 0 into IOVA {:#x} ({})\n",
               c.function().bdf, li.target, li.lun, size_text(c.memory().bytes()), first, end - 1, iova, where);
    fflush(stdout);

    // Two seconds, then the escalation ladder, a step every few seconds.
    const initiator_stats st0 = c.ini().stats();
    tag_watch h{c.handler()};
    const status sent = send_read(c, li.target, li.lun, 0, iova, bs, 2000000000ull, h);
    if (sent != status::ok) return fail(std::string("could not send the READ: ") + to_string(sent));
    // The initiator's deadlines end the command whatever the device does (the escalation
    // ladder ends in a device reset), so this wait is bounded; the deadline is a backstop.
    const bool ended = c.wait_until(h, [&] { return h.done; }, c.now() + 120000000000ull);
    const initiator_stats& st1 = c.ini().stats();
    std::string ladder;
    const std::pair<const char*, uint64_t> steps[] = {
        {"re-kick", st1.rekicks - st0.rekicks},
        {"ABORT TASK", st1.aborts_sent - st0.aborts_sent},
        {"LOGICAL UNIT RESET", st1.lun_resets_sent - st0.lun_resets_sent},
        {"I_T NEXUS RESET", st1.nexus_resets_sent - st0.nexus_resets_sent},
        {"device reset", st1.device_resets - st0.device_resets},
    };
    for (const auto& [name, count] : steps)
        if (count) ladder += fmt::format("{}{}{}", ladder.empty() ? "" : ", ", name, count > 1 ? fmt::format(" x{}", count) : "");
    const bool intact = memcmp(sentinel, before.data(), bs) == 0;
    const bool landed = memcmp(sentinel, block.data(), bs) == 0;
    munmap(m, page);
    if (!ended) return fail("the READ into the unmapped IOVA never ended, and the device was not recovered");
    fmt::print("  the READ ended {}{}\n", to_string(h.c.outcome),
               ladder.empty() ? std::string() : "; the driver's recovery: " + ladder);
    fmt::print("  {} is {}\n", physical ? "the page at that physical address" : "our page outside the mapping",
               landed ? "overwritten with the block: the device bypassed the IOMMU" : intact ? "untouched" : "changed");

    // Afterwards everything works as before.
    memset(c.data(), 0, bs);
    const bool again = transfer(s, li, false, 0, 1, c.data(), err);
    const bool same = again && memcmp(c.data(), block.data(), bs) == 0;
    fmt::print("  READ of LBA 0 afterwards: {}\n", again ? (same ? "good, the same data" : "good, but different data") : err);
    if (!intact) return fail("the device wrote outside its IOMMU mappings");
    if (h.c.outcome == io_outcome::good) return fail("the READ into an unmapped IOVA completed good: nothing confined it");
    if (!same) return fail("the device did not recover: " + (again ? std::string("LBA 0 reads back different") : err));
    fmt::print("iommu-check: confined: the device could not reach memory outside its mappings, and recovered\n");
    return 0;
}

}  // namespace vscsi_uio
