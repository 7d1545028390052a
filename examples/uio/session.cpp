#include "session.hpp"

#include <stdio.h>

#include <fmt/core.h>

namespace vscsi_uio {

using namespace vscsi;
using vscsi::uio::command_result;

volatile bool g_stop = false;

int fail(const std::string& msg, int code) {
    fmt::print(stderr, "vscsi-uio: {}\n", msg);
    return code;
}

bool open_device(const options& o, device_session& s, std::string& err, size_t data_bytes, uint16_t queues,
                 uint16_t slots) {
    uio::open_options oo;
    oo.device = o.get("-d");
    oo.irq = o.flags.count("--irq") != 0 || o.flags.count("--hybrid") != 0;
    if (o.flags.count("--irq") && o.flags.count("--hybrid")) {
        err = "--irq and --hybrid exclude each other";
        return false;
    }
    // Hybrid: poll about as long as a command usually takes on a virtio-scsi device (tens of
    // microseconds), then sleep on the interrupt.
    if (o.flags.count("--hybrid")) oo.spin_ns = 50000;
    if (o.flags.count("--legacy") && o.flags.count("--modern")) {
        err = "--legacy and --modern exclude each other";
        return false;
    }
    if (o.flags.count("--legacy")) oo.transport = uio::transport_choice::legacy;
    if (o.flags.count("--modern")) oo.transport = uio::transport_choice::modern;
    uio::host_driver d;
    if (parse_driver(o, d, err)) oo.driver = d == uio::host_driver::vfio ? uio::driver_choice::vfio : uio::driver_choice::uio;
    else if (!err.empty()) return false;
    if (o.get("--ring") == "split") oo.ring = ring_choice::split;  // checked by parse_device_args
    if (o.get("--ring") == "packed") oo.ring = ring_choice::packed;
    oo.data_bytes = data_bytes;
    oo.queues = queues;
    oo.slots = slots;
    if (!s.ctl.open(oo, err)) return false;
    for (const std::string& note : s.ctl.notes()) fmt::print(stderr, "vscsi-uio: {}\n", note);
    return true;
}

bool parse_driver(const options& o, uio::host_driver& out, std::string& err) {
    err.clear();
    if (!o.values.count("--driver")) return false;
    const std::string v = o.get("--driver");
    if (v == "uio") {
        out = uio::host_driver::uio;
    } else if (v == "vfio") {
        out = uio::host_driver::vfio;
    } else {
        err = "--driver must be uio or vfio, not '" + v + "'";
        return false;
    }
    return true;
}

// -t/-l as numbers and --ring (checked before any device is touched: a usage error).
bool parse_device_args(const options& o, std::string& err) {
    if (o.values.count("--ring") && o.get("--ring") != "split" && o.get("--ring") != "packed") {
        err = "--ring is split or packed, not '" + o.get("--ring") + "'";
        return false;
    }
    if (o.get("--ring") == "packed" && o.flags.count("--legacy")) {
        err = "--ring packed needs the modern interface (packed rings are virtio 1.x), not --legacy";
        return false;
    }
    uint64_t v = 0;
    if (o.values.count("-t") && !parse_u64(o.get("-t"), 0, 255, v)) {
        err = "-t must be a target number 0..255, not '" + o.get("-t") + "'";
        return false;
    }
    if (o.values.count("-l") && !parse_u64(o.get("-l"), 0, max_lun_number, v)) {
        err = "-l must be a LUN number 0..16383, not '" + o.get("-l") + "'";
        return false;
    }
    return true;
}

// -t/-l (already checked by parse_device_args), or the first LUN there is. With only one of
// them given, the other is 0.
bool pick_lun(const options& o, device_session& s, std::string& err) {
    const bool has_t = o.values.count("-t"), has_l = o.values.count("-l");
    if (!has_t && !has_l) return first_lun(s.ctl, s.target, s.lun, err);
    uint64_t t = 0, l = 0;
    if (has_t) parse_u64(o.get("-t"), 0, 255, t);
    if (has_l) parse_u64(o.get("-l"), 0, max_lun_number, l);
    s.target = uint8_t(t);
    s.lun = uint16_t(l);
    return true;
}

// Split a transfer in commands no larger than this (and no larger than the LUN allows).
uint32_t chunk_blocks(const lun_info& li, size_t buffer_bytes) {
    uint64_t blocks = buffer_bytes / li.cap.block_size;
    if (blocks > (1u << 20) / li.cap.block_size) blocks = (1u << 20) / li.cap.block_size;  // 1 MiB
    if (li.limits.valid && li.limits.max_transfer && blocks > li.limits.max_transfer) blocks = li.limits.max_transfer;
    return blocks ? uint32_t(blocks) : 1;
}

bool usable_capacity(const lun_info& li, std::string& err) {
    const uint32_t bs = li.cap.block_size;
    if (li.cap.valid && bs >= 512 && bs <= 65536 && (bs & (bs - 1)) == 0 && li.cap.last_lba != ~0ull) return true;
    err = fmt::format("{}:{} did not report a usable capacity (block size {})", li.target, li.lun, bs);
    return false;
}

bool check_range(const lun_info& li, uint64_t lba, uint64_t count, std::string& err) {
    const uint64_t blocks = li.cap.blocks();
    if (count == 0) {
        err = "--count must be at least 1";
        return false;
    }
    if (lba >= blocks || count > blocks - lba) {
        err = fmt::format("LBA range {}..{} is beyond the capacity of {}:{} ({} blocks of {} bytes)", lba,
                          lba + count - 1, li.target, li.lun, blocks, li.cap.block_size);
        return false;
    }
    return true;
}

bool transfer(device_session& s, const lun_info& li, bool write, uint64_t lba, uint32_t blocks, uint8_t* buf,
              std::string& err) {
    uint8_t cdb[16];
    const uint32_t n = scsi::read_write(cdb, sizeof cdb, write, lba, blocks);
    const command_result r = s.ctl.command(li.target, li.lun, cdb, n, write, buf, blocks * li.cap.block_size);
    if (r.ok()) return true;
    if (write && r.outcome == io_outcome::check_condition && r.si.key == scsi::key::data_protect) {
        err = fmt::format("{}:{} is read-only: the write was refused (DATA PROTECT)", li.target, li.lun);
        return false;
    }
    err = fmt::format("{} of LBA {}..{} failed: {}", write ? "WRITE" : "READ", lba, lba + blocks - 1, describe(r));
    return false;
}

status send_read(uio::controller& c, uint8_t target, uint16_t lun, uint64_t lba, uint64_t bus, uint32_t len,
                 uint64_t timeout_ns, tag_watch& w) {
    uint8_t cdb[16];
    const uint32_t n = scsi::read_write(cdb, sizeof cdb, false, lba, 1);
    const sg_entry sg{bus, len};
    io_request r{};
    r.target = target;
    r.lun = lun;
    r.cdb = cdb;
    r.cdb_len = n;
    r.data_in = &sg;
    r.n_in = 1;
    r.timeout_ns = timeout_ns;
    const result<uint64_t> t = c.ini().submit(r, c.now());
    if (t.st != status::ok) return t.st;
    w.tag = t.value;
    w.done = false;
    c.ini().kick();
    return status::ok;
}

std::string interrupt_summary(const uio::controller& c) {
    std::string counts;
    for (const auto& [name, n] : c.interrupt_counts()) counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", name, n);
    return c.interrupt_source() + ": " + counts;
}

std::string size_text(uint64_t bytes) {
    if (bytes >= (1ull << 30)) return fmt::format("{:.1f} GiB", double(bytes) / double(1ull << 30));
    if (bytes >= (1ull << 20)) return fmt::format("{:.1f} MiB", double(bytes) / double(1ull << 20));
    return fmt::format("{:.1f} KiB", double(bytes) / 1024.0);
}

}  // namespace vscsi_uio
