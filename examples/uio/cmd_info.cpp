// vscsi-uio scan, inquiry, capacity: what is behind a function.
#include <fmt/core.h>

#include <string>
#include <vector>

#include "session.hpp"

namespace vscsi_uio {

using namespace vscsi;
using vscsi::uio::command_result;
using vscsi::uio::controller;

// How the function reaches us: the kernel driver, where DMA memory is and what the device
// calls it, and the interrupts.
static void print_host_line(const controller& c) {
    const uio::dma_memory& m = c.memory();
    const std::string pages = m.hugepages() ? fmt::format("{} KiB hugepages", m.page_size() >> 10) : "4 KiB pages";
    if (c.driver() == uio::host_driver::vfio)
        fmt::print("  {}: IOMMU group {}, {} of DMA memory ({}) at IOVA {:#x}, {} of bookkeeping not mapped, "
                   "interrupts {}\n",
                   uio::vfio_driver, c.function().iommu_group, size_text(m.bytes()), pages, m.iova(),
                   size_text(c.private_bytes()), c.interrupt_source());
    else
        fmt::print("  {}: {} of DMA memory ({}) at physical addresses, {} of bookkeeping apart, interrupts {}\n",
                   uio::uio_driver, size_text(m.bytes()), pages, size_text(c.private_bytes()), c.interrupt_source());
}

static void print_device_line(device_session& s) {
    auto& ini = s.ctl.ini();
    const scsi_config_values& d = ini.device_config();
    fmt::print("{}: {} interface, {} rings, {} request queue{} x {} entries, cmd_per_lun {}, seg_max {}, "
               "max_sectors {}, max_target {}, max_lun {}, {} completion\n",
               s.ctl.function().bdf, ini.legacy() ? "legacy" : "modern", ini.packed() ? "packed" : "split",
               d.num_queues, d.num_queues == 1 ? "" : "s",
               ini.queue_size(0), d.cmd_per_lun, d.seg_max, d.max_sectors, d.max_target, d.max_lun,
               s.ctl.wait_mode());
    print_host_line(s.ctl);
}


static void print_lun(const lun_info& li) {
    fmt::print("  {}:{}  {:<6} {:<8} {:<16} {:<4}  {} blocks x {} B = {}{}  max transfer {}{}\n", li.target, li.lun,
               device_type_name(li.inq.device_type), trimmed(li.inq.vendor, 8), trimmed(li.inq.product, 16),
               trimmed(li.inq.revision, 4), li.cap.blocks(), li.cap.block_size,
               size_text(li.cap.blocks() * li.cap.block_size), li.read_only ? " read-only" : "",
               li.limits.valid && li.limits.max_transfer ? std::to_string(li.limits.max_transfer) + " blocks" : "-",
               li.serial.empty() ? "" : "  serial " + li.serial);
}

int cmd_scan(const options& o) {
    device_session s;
    std::string err;
    if (!open_device(o, s, err)) return fail(err);
    print_device_line(s);
    std::vector<lun_info> luns;
    unsigned targets = 0;
    if (!scan_luns(s.ctl, luns, err, &targets)) return fail(err);
    for (const lun_info& li : luns) print_lun(li);
    fmt::print("scan: {} target{}, {} LUN{}\n", targets, targets == 1 ? "" : "s", luns.size(), luns.size() == 1 ? "" : "s");
    return 0;
}

int cmd_inquiry(const options& o) {
    device_session s;
    std::string err;
    if (!open_device(o, s, err) || !pick_lun(o, s, err)) return fail(err);
    lun_info li;
    if (!probe_lun(s.ctl, s.target, s.lun, li, err)) return fail(err);
    fmt::print("{}:{} on {}\n", li.target, li.lun, s.ctl.function().bdf);
    fmt::print("  type      {} ({:02x}h){}\n", device_type_name(li.inq.device_type), li.inq.device_type,
               li.inq.removable ? ", removable" : "");
    fmt::print("  vendor    {}\n  product   {}\n  revision  {}\n", trimmed(li.inq.vendor, 8),
               trimmed(li.inq.product, 16), trimmed(li.inq.revision, 4));
    fmt::print("  version   SPC {:02x}h, command queueing {}\n", li.inq.version, li.inq.cmdque ? "yes" : "no");
    if (!li.serial.empty()) fmt::print("  serial    {}\n", li.serial);
    // Device identification designators (VPD 83h).
    uint8_t cdb[16];
    const uint32_t n = scsi::inquiry_vpd(cdb, sizeof cdb, scsi::vpd::device_identification, 255);
    const command_result r = s.ctl.command(li.target, li.lun, cdb, n, false, s.ctl.data(), 255);
    if (r.ok()) {
        scsi::vpd_designators(s.ctl.data(), r.transferred, [&](const scsi::designator& d) {
            std::string v;
            if (d.code_set == 2 || d.code_set == 3)
                v = trimmed(reinterpret_cast<const char*>(d.data), d.size);
            else
                for (uint32_t i = 0; i < d.size; ++i) v += fmt::format("{:02x}", d.data[i]);
            fmt::print("  id        type {} association {}: {}\n", d.type, d.association, v);
            return true;
        });
    }
    return 0;
}

int cmd_capacity(const options& o) {
    device_session s;
    std::string err;
    if (!open_device(o, s, err) || !pick_lun(o, s, err)) return fail(err);
    lun_info li;
    if (!probe_lun(s.ctl, s.target, s.lun, li, err)) return fail(err);
    if (!li.cap.valid) return fail(fmt::format("{}:{} did not report its capacity", li.target, li.lun));
    fmt::print("{}:{}  {} blocks x {} B = {} ({} bytes), last LBA {}\n", li.target, li.lun, li.cap.blocks(),
               li.cap.block_size, size_text(li.cap.blocks() * li.cap.block_size), li.cap.blocks() * li.cap.block_size,
               li.cap.last_lba);
    fmt::print("  {} logical block{} per physical block, lowest aligned LBA {}{}\n", 1u << li.cap.lbppb_exponent,
               li.cap.lbppb_exponent ? "s" : "", li.cap.lowest_aligned,
               li.cap.prot_en ? fmt::format(", protection type {}", li.cap.p_type + 1) : "");
    if (li.limits.valid)
        fmt::print("  block limits: max transfer {} blocks, optimal transfer {} blocks, optimal granularity {}\n",
                   li.limits.max_transfer, li.limits.optimal_transfer, li.limits.optimal_granularity);
    fmt::print("  {}\n", li.read_only ? "read-only (write-protected)" : "writable");
    return 0;
}

}  // namespace vscsi_uio
