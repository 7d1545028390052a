// vscsi-uio: drive a virtio-scsi PCI function from userspace through uio_pci_generic.
//
//   vscsi-uio list
//   vscsi-uio bind|unbind [PCI] [--force]
//   vscsi-uio scan [-d PCI]
//   vscsi-uio inquiry|capacity -d PCI -t T -l L
//   vscsi-uio read  -d PCI -t T -l L --lba N --count C [-o FILE]
//   vscsi-uio write -d PCI -t T -l L --lba N --count C (-i FILE | --pattern SEED)
//   vscsi-uio verify -d PCI -t T -l L [--size BYTES] [--seed S]
//   vscsi-uio bench -d PCI -t T -l L --rw MODE --bs 4k --iodepth 32 --runtime 10 [--queues N] [--json]
//   vscsi-uio events -d PCI [--timeout S]
//   vscsi-uio reset -d PCI -t T -l L --type abort|lun|target|device
//
// Every device command also takes --irq (sleep on /dev/uioN instead of polling) and
// --legacy / --modern (force a virtio-pci interface). Errors are one line on stderr and a
// non-zero exit: 2 for a bad command line, 1 for everything else.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "bench.hpp"
#include "controller.hpp"
#include "luns.hpp"
#include "options.hpp"
#include "pattern.hpp"
#include "progress.hpp"

namespace {

using namespace vscsi;
using namespace vscsi_uio;
using vscsi::uio::command_result;
using vscsi::uio::controller;

volatile bool g_stop = false;
void on_signal(int) { g_stop = true; }

constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

int fail(const std::string& msg, int code = exit_failure) {
    fmt::print(stderr, "vscsi-uio: {}\n", msg);
    return code;
}

const char* const usage_text =
    "usage: vscsi-uio COMMAND [options]\n"
    "  list                                  virtio-scsi functions: address, driver, interface, queues\n"
    "  bind|unbind [PCI] [--force]           give a function to uio_pci_generic, or back to the kernel\n"
    "  scan [-d PCI]                         every target and LUN: identity, capacity, limits\n"
    "  inquiry|capacity -d PCI -t T -l L\n"
    "  read  -d PCI -t T -l L --lba N --count C [-o FILE|-]\n"
    "  write -d PCI -t T -l L --lba N --count C (-i FILE | --pattern SEED)\n"
    "  verify -d PCI -t T -l L [--size BYTES] [--seed S]\n"
    "  bench -d PCI -t T -l L --rw randread|randwrite|read|write|randrw --bs 4k --iodepth 32\n"
    "        --runtime 10 [--queues N] [--json]\n"
    "  events -d PCI [--timeout S]\n"
    "  reset -d PCI -t T -l L --type abort|lun|target|device\n"
    "device commands also take --irq (interrupts instead of polling) and --legacy | --modern;\n"
    "-d may be left out when there is one virtio-scsi function, -t/-l default to the first LUN.\n";

// ---- shared steps ----

struct device_session {
    controller ctl;
    uint8_t target = 0;
    uint16_t lun = 0;
};

// Open the device the options name. `data_bytes` is the DMA memory the command needs for data.
bool open_device(const options& o, device_session& s, std::string& err, size_t data_bytes = size_t(8) << 20,
                 uint16_t queues = 1, uint16_t slots = 128) {
    uio::open_options oo;
    oo.device = o.get("-d");
    oo.irq = o.flags.count("--irq") != 0;
    if (o.flags.count("--legacy") && o.flags.count("--modern")) {
        err = "--legacy and --modern exclude each other";
        return false;
    }
    if (o.flags.count("--legacy")) oo.transport = uio::transport_choice::legacy;
    if (o.flags.count("--modern")) oo.transport = uio::transport_choice::modern;
    oo.data_bytes = data_bytes;
    oo.queues = queues;
    oo.slots = slots;
    return s.ctl.open(oo, err);
}

// -t/-l as numbers (checked before any device is touched: a usage error).
bool parse_lun_args(const options& o, std::string& err) {
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

// -t/-l, or the first LUN there is. A missing -t means target 0, a missing -l LUN 0.
bool pick_lun(const options& o, device_session& s, std::string& err) {
    uint64_t t = 0, l = 0;
    const bool has_t = o.values.count("-t"), has_l = o.values.count("-l");
    if ((has_t && !parse_u64(o.get("-t"), 0, 255, t)) || (has_l && !parse_u64(o.get("-l"), 0, max_lun_number, l))) {
        err = "bad -t or -l";
        return false;
    }
    if (!has_t && !has_l) return first_lun(s.ctl, s.target, s.lun, err);
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

// ---- commands ----

int cmd_list(const options&) {
    const uio::host_paths hp;
    const std::vector<uio::pci_function> all = uio::find_virtio_scsi(hp);
    if (all.empty()) {
        fmt::print("no virtio-scsi PCI functions\n");
        return 0;
    }
    fmt::print("{:<14} {:<10} {:<17} {:<13} {}\n", "PCI", "ID", "driver", "interface", "queues");
    for (const uio::pci_function& f : all) {
        const uio::interfaces itf = uio::probe_interfaces(hp, f);
        std::string queues = "-";
        // The request queue count is a read-only config field; reading it disturbs no driver.
        uio::sysfs_bus bus;
        std::string err;
        if (geteuid() == 0 && bus.open(hp, f.bdf, err)) {
            const uint16_t cmd = bus.config_read16(pci_cfg::command);
            uio::pci_transport t(bus);
            bool ok = false;
            if ((cmd & pci_cfg::command_memory) && t.probe_modern()) {
                t.use(false);
                ok = true;
            } else if ((cmd & pci_cfg::command_io) && t.probe_legacy(bus.bar_is_io(0))) {
                t.use(true);
                ok = true;
            }
            if (ok) queues = std::to_string(t.config_read32(config_offset::num_queues));
        }
        fmt::print("{:<14} {:04x}:{:04x}  {:<17} {:<13} {}\n", f.bdf, f.vendor, f.device,
                   f.driver.empty() ? "-" : f.driver, uio::to_string(itf), queues);
    }
    return 0;
}

std::string named_function(const options& o) {
    if (!o.positional.empty() && o.values.count("-d")) return {};
    return o.positional.empty() ? o.get("-d") : o.positional.front();
}

int cmd_bind(const options& o) {
    if (geteuid() != 0) return fail("bind needs root (it writes PCI sysfs files)");
    if (!o.positional.empty() && o.values.count("-d")) return fail("name the function once (PCI or -d)", exit_usage);
    const uio::host_paths hp;
    uio::pci_function f;
    std::string err;
    if (!uio::select_function(hp, named_function(o), f, err)) return fail(err);
    const std::string before = f.driver;
    if (!uio::bind_uio(hp, f, o.flags.count("--force") != 0, err)) return fail(err);
    if (before == uio::uio_driver)
        fmt::print("{}: already bound to {} (/dev/{})\n", f.bdf, uio::uio_driver, f.uio);
    else
        fmt::print("{}: bound to {} (/dev/{}){}\n", f.bdf, uio::uio_driver, f.uio,
                   before.empty() ? "" : ", taken from " + before);
    return 0;
}

int cmd_unbind(const options& o) {
    if (geteuid() != 0) return fail("unbind needs root (it writes PCI sysfs files)");
    if (!o.positional.empty() && o.values.count("-d")) return fail("name the function once (PCI or -d)", exit_usage);
    const uio::host_paths hp;
    uio::pci_function f;
    std::string err, now;
    if (!uio::select_function(hp, named_function(o), f, err)) return fail(err);
    const std::string before = f.driver;
    if (!uio::release_to_kernel(hp, f, now, err)) return fail(err);
    if (before != uio::uio_driver && !before.empty())
        fmt::print("{}: not bound to {} (bound to {}); nothing to do\n", f.bdf, uio::uio_driver, before);
    else
        fmt::print("{}: released to the kernel; now {}\n", f.bdf, now.empty() ? "unbound" : "bound to " + now);
    return 0;
}

void print_device_line(device_session& s) {
    auto& ini = s.ctl.ini();
    const scsi_config_values& d = ini.device_config();
    fmt::print("{}: {} interface, {} request queue{} x {} entries, cmd_per_lun {}, seg_max {}, max_sectors {}, "
               "max_target {}, max_lun {}, {} completion\n",
               s.ctl.function().bdf, ini.legacy() ? "legacy" : "modern", d.num_queues, d.num_queues == 1 ? "" : "s",
               ini.queue_size(0), d.cmd_per_lun, d.seg_max, d.max_sectors, d.max_target, d.max_lun,
               s.ctl.irq_mode() ? "interrupt" : "polled");
}

std::string size_text(uint64_t bytes) {
    if (bytes >= (1ull << 30)) return fmt::format("{:.1f} GiB", double(bytes) / double(1ull << 30));
    if (bytes >= (1ull << 20)) return fmt::format("{:.1f} MiB", double(bytes) / double(1ull << 20));
    return fmt::format("{:.1f} KiB", double(bytes) / 1024.0);
}

void print_lun(const lun_info& li) {
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

bool parse_range(const options& o, uint64_t& lba, uint64_t& count, std::string& err) {
    if (!o.values.count("--lba") || !o.values.count("--count")) {
        err = "--lba and --count are required";
        return false;
    }
    if (!parse_u64(o.get("--lba"), 0, ~0ull >> 1, lba)) {
        err = "--lba must be a block number, not '" + o.get("--lba") + "'";
        return false;
    }
    if (!parse_u64(o.get("--count"), 0, 0xffffffffull, count)) {
        err = "--count must be a number of blocks, not '" + o.get("--count") + "'";
        return false;
    }
    return true;
}

void hexdump(const uint8_t* p, size_t n, uint64_t base) {
    for (size_t i = 0; i < n; i += 16) {
        std::string hex, txt;
        for (size_t k = 0; k < 16 && i + k < n; ++k) {
            hex += fmt::format("{:02x}{}", p[i + k], k == 7 ? "  " : " ");
            txt += (p[i + k] >= 0x20 && p[i + k] < 0x7f) ? char(p[i + k]) : '.';
        }
        fmt::print("{:08x}  {:<49} |{}|\n", base + i, hex, txt);
    }
}

bool write_all(int fd, const uint8_t* p, size_t n) {
    while (n) {
        const ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= size_t(w);
    }
    return true;
}

int cmd_read(const options& o) {
    uint64_t lba = 0, count = 0;
    std::string err;
    if (!parse_range(o, lba, count, err)) return fail(err, exit_usage);
    device_session s;
    if (!open_device(o, s, err) || !pick_lun(o, s, err)) return fail(err);
    lun_info li;
    if (!probe_lun(s.ctl, s.target, s.lun, li, err)) return fail(err);
    if (!check_range(li, lba, count, err)) return fail(err);
    const std::string out = o.get("-o");
    int fd = -1;
    if (out == "-") {
        fd = 1;
    } else if (!out.empty()) {
        fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) return fail("cannot create " + out + ": " + strerror(errno));
    }
    const uint32_t chunk = chunk_blocks(li, s.ctl.data_bytes());
    const uint32_t bs = li.cap.block_size;
    for (uint64_t done = 0; done < count && !g_stop;) {
        const uint32_t n = uint32_t(std::min<uint64_t>(chunk, count - done));
        if (!transfer(s, li, false, lba + done, n, s.ctl.data(), err)) return fail(err);
        if (fd >= 0) {
            if (!write_all(fd, s.ctl.data(), size_t(n) * bs)) return fail("cannot write " + out + ": " + strerror(errno));
        } else {
            hexdump(s.ctl.data(), size_t(n) * bs, (lba + done) * bs);
        }
        done += n;
    }
    if (fd > 1 && close(fd) != 0) return fail("cannot write " + out + ": " + strerror(errno));
    if (g_stop) return fail("interrupted");
    if (fd > 1) fmt::print(stderr, "read {} blocks ({} bytes) from {}:{} LBA {} into {}\n", count, count * bs, li.target, li.lun, lba, out);
    return 0;
}

int cmd_write(const options& o) {
    uint64_t lba = 0, count = 0, seed = 0;
    std::string err;
    if (!parse_range(o, lba, count, err)) return fail(err, exit_usage);
    const bool from_file = o.values.count("-i") != 0, from_pattern = o.values.count("--pattern") != 0;
    if (from_file == from_pattern) return fail("write needs exactly one of -i FILE and --pattern SEED", exit_usage);
    if (from_pattern && !parse_u64(o.get("--pattern"), 0, ~0ull, seed))
        return fail("--pattern must be a number (the seed), not '" + o.get("--pattern") + "'", exit_usage);
    int fd = -1;
    if (from_file) {
        fd = open(o.get("-i").c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return fail("cannot open " + o.get("-i") + ": " + strerror(errno));
    }
    device_session s;
    if (!open_device(o, s, err) || !pick_lun(o, s, err)) return fail(err);
    lun_info li;
    if (!probe_lun(s.ctl, s.target, s.lun, li, err)) return fail(err);
    if (!check_range(li, lba, count, err)) return fail(err);
    if (li.read_only) return fail(fmt::format("{}:{} is read-only (write-protected); nothing written", li.target, li.lun));
    const uint32_t bs = li.cap.block_size;
    if (from_file) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && uint64_t(st.st_size) < count * bs)
            return fail(fmt::format("{} holds {} bytes, less than {} blocks x {} B; nothing written", o.get("-i"),
                                    st.st_size, count, bs));
    }
    const uint32_t chunk = chunk_blocks(li, s.ctl.data_bytes());
    for (uint64_t done = 0; done < count && !g_stop;) {
        const uint32_t n = uint32_t(std::min<uint64_t>(chunk, count - done));
        const size_t bytes = size_t(n) * bs;
        if (from_file) {
            size_t got = 0;
            while (got < bytes) {
                const ssize_t r = read(fd, s.ctl.data() + got, bytes - got);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) break;
                got += size_t(r);
            }
            if (got < bytes)
                return fail(fmt::format("{} ended after {} bytes; {} blocks were written", o.get("-i"), done * bs + got, done));
        } else {
            fill_pattern(s.ctl.data(), (lba + done) * bs, bytes, seed);
        }
        if (!transfer(s, li, true, lba + done, n, s.ctl.data(), err)) return fail(err);
        done += n;
    }
    if (g_stop) return fail("interrupted");
    uint8_t cdb[16];
    const uint32_t n = scsi::synchronize_cache(cdb, sizeof cdb);
    const command_result r = s.ctl.command(li.target, li.lun, cdb, n, false, nullptr, 0);
    if (!r.ok() && !(r.outcome == io_outcome::check_condition && r.si.key == scsi::key::illegal_request))
        return fail("SYNCHRONIZE CACHE failed: " + describe(r));
    fmt::print("wrote {} blocks ({} bytes) to {}:{} at LBA {} from {}\n", count, count * bs, li.target, li.lun, lba,
               from_file ? o.get("-i") : "pattern seed " + std::to_string(seed));
    return 0;
}

int cmd_verify(const options& o) {
    uint64_t size = 64ull << 20, seed = 1;
    if (o.values.count("--size") && !parse_size(o.get("--size"), 1, ~0ull >> 1, size))
        return fail("--size must be a byte count (e.g. 64m), not '" + o.get("--size") + "'", exit_usage);
    if (o.values.count("--seed") && !parse_u64(o.get("--seed"), 0, ~0ull, seed))
        return fail("--seed must be a number, not '" + o.get("--seed") + "'", exit_usage);
    device_session s;
    std::string err;
    if (!open_device(o, s, err) || !pick_lun(o, s, err)) return fail(err);
    lun_info li;
    if (!probe_lun(s.ctl, s.target, s.lun, li, err)) return fail(err);
    const uint32_t bs = li.cap.block_size;
    if (size % bs) return fail(fmt::format("--size {} is not a multiple of the {}-byte blocks", size, bs), exit_usage);
    if (!o.values.count("--size") && size > li.cap.blocks() * bs) size = li.cap.blocks() * bs;
    const uint64_t count = size / bs;
    if (!check_range(li, 0, count, err)) return fail(err);
    if (li.read_only) return fail(fmt::format("{}:{} is read-only (write-protected); nothing written", li.target, li.lun));

    const uint32_t chunk = chunk_blocks(li, s.ctl.data_bytes());
    std::vector<uint8_t> expect(size_t(chunk) * bs);
    progress bar("verify");
    uint64_t bad = 0, first_bad = ~0ull;
    uint64_t t0 = s.ctl.now();
    for (uint64_t done = 0; done < count && !g_stop;) {
        const uint32_t n = uint32_t(std::min<uint64_t>(chunk, count - done));
        fill_pattern(s.ctl.data(), done * bs, size_t(n) * bs, seed);
        if (!transfer(s, li, true, done, n, s.ctl.data(), err)) return fail(err);
        done += n;
        bar.update(0.5 * double(done) / double(count));
    }
    const double write_s = double(s.ctl.now() - t0) / 1e9;
    t0 = s.ctl.now();
    for (uint64_t done = 0; done < count && !g_stop;) {
        const uint32_t n = uint32_t(std::min<uint64_t>(chunk, count - done));
        const size_t bytes = size_t(n) * bs;
        memset(s.ctl.data(), 0, bytes);  // stale data must not pass for what was read
        if (!transfer(s, li, false, done, n, s.ctl.data(), err)) return fail(err);
        fill_pattern(expect.data(), done * bs, bytes, seed);
        if (memcmp(expect.data(), s.ctl.data(), bytes) != 0) {
            for (size_t i = 0; i < bytes; ++i) {
                if (expect[i] == s.ctl.data()[i]) continue;
                if (first_bad == ~0ull) first_bad = done * bs + i;
                ++bad;
            }
        }
        done += n;
        bar.update(0.5 + 0.5 * double(done) / double(count));
    }
    const double read_s = double(s.ctl.now() - t0) / 1e9;
    bar.finish();
    if (g_stop) return fail("interrupted");
    if (bad)
        return fail(fmt::format("verify {}:{}: {} of {} bytes differ, the first at byte {} (LBA {})", li.target, li.lun,
                                bad, size, first_bad, first_bad / bs));
    fmt::print("verify {}:{}: wrote and read back {} ({} blocks of {} B from LBA 0, seed {}): identical; "
               "write {:.1f} MiB/s, read {:.1f} MiB/s\n",
               li.target, li.lun, size_text(size), count, bs, seed, double(size) / 1048576.0 / write_s,
               double(size) / 1048576.0 / read_s);
    return 0;
}

int cmd_bench(const options& o) {
    bench_params p;
    uint64_t v = 0;
    if (o.values.count("--rw") && !parse_rw(o.get("--rw"), p.mode))
        return fail("--rw must be randread, randwrite, read, write or randrw, not '" + o.get("--rw") + "'", exit_usage);
    if (o.values.count("--bs")) {
        if (!parse_size(o.get("--bs"), 512, 1u << 20, v)) return fail("--bs must be 512..1m, not '" + o.get("--bs") + "'", exit_usage);
        p.bs = uint32_t(v);
    }
    if (o.values.count("--iodepth")) {
        if (!parse_u64(o.get("--iodepth"), 1, 1024, v)) return fail("--iodepth must be 1..1024", exit_usage);
        p.iodepth = uint32_t(v);
    }
    if (o.values.count("--runtime") && !parse_seconds(o.get("--runtime"), 0.1, 86400, p.runtime_s))
        return fail("--runtime must be seconds (0.1..86400), not '" + o.get("--runtime") + "'", exit_usage);
    uint64_t queues = 1;
    if (o.values.count("--queues") && !parse_u64(o.get("--queues"), 1, 16, queues))
        return fail("--queues must be 1..16", exit_usage);
    p.json = o.flags.count("--json") != 0;
    device_session s;
    std::string err;
    const size_t data = std::max<size_t>(size_t(p.iodepth) * p.bs, size_t(2) << 20);
    const uint16_t slots = uint16_t(std::max<uint32_t>(128, p.iodepth));
    if (!open_device(o, s, err, data, uint16_t(queues), slots) || !pick_lun(o, s, err)) return fail(err);
    if (queues > s.ctl.ini().request_queues())
        fmt::print(stderr, "vscsi-uio: the device has {} request queue(s); using {}\n", s.ctl.ini().request_queues(),
                   s.ctl.ini().request_queues());
    if (!probe_lun(s.ctl, s.target, s.lun, p.lun, err)) return fail(err);
    if (p.mode != rw_mode::randread && p.mode != rw_mode::read && p.lun.read_only)
        return fail(fmt::format("{}:{} is read-only (write-protected); nothing written", s.target, s.lun));
    return run_bench(s.ctl, p, g_stop);
}

const char* reset_reason_name(uint32_t r) {
    switch (r) {
        case 0: return "hard reset";
        case 1: return "rescan";
        case 2: return "removed";
        default: return "unknown reason";
    }
}

int cmd_events(const options& o) {
    double timeout = 0;
    if (o.values.count("--timeout") && !parse_seconds(o.get("--timeout"), 0.1, 86400 * 365, timeout))
        return fail("--timeout must be seconds, not '" + o.get("--timeout") + "'", exit_usage);
    device_session s;
    std::string err;
    if (!open_device(o, s, err)) return fail(err);
    controller& c = s.ctl;
    fmt::print("listening for events on {} ({}){}\n", c.function().bdf, c.ini().legacy() ? "legacy" : "modern",
               timeout > 0 ? fmt::format(" for {:g} s", timeout) : std::string(", Ctrl-C to stop"));
    fflush(stdout);
    // Ask for asynchronous notifications of every class on LUN 0:0; the answer says which
    // the device will send (checklist 16).
    const uint32_t all_classes = 2 | 4 | 8 | 16 | 32 | 64;
    if (c.ini().submit_an(ctrl_type::an_subscribe, 0, 0, all_classes, 0, c.now()) == status::ok &&
        c.wait_until(c.handler(), [&] { return !c.ans().empty(); }, c.now() + 10000000000ull)) {
        const an_completion a = c.ans().front();
        c.ans().clear();
        fmt::print("AN subscribe on 0:0 answered {}: the device will report events {:#x} of {:#x}\n",
                   a.response == 0 ? "OK" : fmt::format("response {}", a.response), a.event_actual, all_classes);
    }
    fflush(stdout);
    const uint64_t end = timeout > 0 ? c.now() + uint64_t(timeout * 1e9) : ~0ull;
    uint64_t seen = 0;
    while (!g_stop && c.now() < end) {
        const uint64_t slice = std::min<uint64_t>(end, c.now() + 200000000ull);
        c.wait_until(c.handler(), [&] { return !c.events().empty(); }, slice);
        if (c.ini().state() != initiator_state::running) return fail("the device failed");
        std::vector<event_info> evs;
        evs.swap(c.events());
        for (const event_info& e : evs) {
            ++seen;
            const std::string where = e.lun_valid ? fmt::format("{}:{}", e.target, e.lun) : std::string("?:?");
            if (e.missed) fmt::print("events missed: the device dropped events; rescan needed\n");
            switch (e.type) {
                case event_type::transport_reset: {
                    const char* what = e.reason == uint32_t(reset_reason::rescan)    ? "hot-plug"
                                       : e.reason == uint32_t(reset_reason::removed) ? "hot-unplug"
                                                                                     : "transport reset";
                    std::string detail;
                    if (e.reason == uint32_t(reset_reason::rescan) && e.lun_valid) {
                        lun_info li;
                        std::string why;
                        if (probe_lun(c, e.target, e.lun, li, why))
                            detail = fmt::format(", {} {} {} blocks x {} B", trimmed(li.inq.vendor, 8),
                                                 trimmed(li.inq.product, 16), li.cap.blocks(), li.cap.block_size);
                    }
                    fmt::print("{}: {} (transport reset, {}){}\n", what, where, reset_reason_name(e.reason), detail);
                    break;
                }
                case event_type::param_change: {
                    const uint8_t asc = uint8_t(e.reason & 0xff), ascq = uint8_t(e.reason >> 8);
                    std::string detail;
                    if (asc == scsi::asc::parameters_changed && ascq == scsi::asc::ascq_capacity_changed) {
                        detail = "capacity data has changed";
                        lun_info li;
                        std::string why;
                        if (e.lun_valid && probe_lun(c, e.target, e.lun, li, why))
                            detail += fmt::format(", now {} blocks x {} B", li.cap.blocks(), li.cap.block_size);
                    }
                    fmt::print("parameter change: {} asc {:02x}h ascq {:02x}h{}\n", where, asc, ascq,
                               detail.empty() ? "" : " (" + detail + ")");
                    break;
                }
                case event_type::async_notify:
                    fmt::print("async notification: {} events {:#x}\n", where, e.reason);
                    break;
                case event_type::no_event:
                    break;
                default:
                    fmt::print("event {:#x}: {} reason {:#x}\n", e.raw_event, where, e.reason);
            }
        }
        fflush(stdout);
    }
    fmt::print("events: {} received\n", seen);
    return 0;
}

const char* tmf_response_name(uint8_t r) {
    switch (r) {
        case 0: return "FUNCTION COMPLETE";
        case 10: return "FUNCTION SUCCEEDED";
        case 11: return "FUNCTION REJECTED";
        case 12: return "INCORRECT LUN";
        case 3: return "BAD TARGET";
        case 4: return "RESET";
        case 5: return "BUSY";
        case 6: return "TRANSPORT FAILURE";
        case 7: return "TARGET FAILURE";
        case 8: return "NEXUS FAILURE";
        case 9: return "FAILURE";
        default: return "unknown response";
    }
}

int cmd_reset(const options& o) {
    const std::string type = o.get("--type");
    if (type != "abort" && type != "lun" && type != "target" && type != "device")
        return fail(type.empty() ? "reset needs --type abort|lun|target|device"
                                 : "--type must be abort, lun, target or device, not '" + type + "'",
                    exit_usage);
    device_session s;
    std::string err;
    if (!open_device(o, s, err) || !pick_lun(o, s, err)) return fail(err);
    controller& c = s.ctl;
    if (type == "device") {
        const status st = c.ini().reset_device(c.handler());
        if (st != status::ok) return fail(std::string("device reset failed: ") + to_string(st));
        uint8_t cdb[16];
        const uint32_t n = scsi::test_unit_ready(cdb, sizeof cdb);
        const command_result r = c.command(s.target, s.lun, cdb, n, false, nullptr, 0);
        fmt::print("device reset: {} re-initialised; TEST UNIT READY on {}:{} afterwards: {}\n", c.function().bdf,
                   s.target, s.lun, describe(r));
        return r.ok() ? 0 : 1;
    }
    lun_info li;
    if (!probe_lun(c, s.target, s.lun, li, err)) return fail(err);
    uint64_t victim = 0;
    bool victim_done = false;
    io_completion victim_c{};
    struct abort_handler {
        controller::sync_handler& base;
        uint64_t& victim;
        bool& done;
        io_completion& out;
        void on_complete(const io_completion& x) {
            if (x.tag == victim) {
                done = true;
                out = x;
            } else {
                base.on_complete(x);
            }
        }
        void on_tmf(const tmf_completion& t) { base.on_tmf(t); }
        void on_an(const an_completion& a) { base.on_an(a); }
        void on_event(const event_info& e) { base.on_event(e); }
    } h{c.handler(), victim, victim_done, victim_c};
    tmf fn = type == "abort" ? tmf::abort_task : type == "lun" ? tmf::logical_unit_reset : tmf::i_t_nexus_reset;
    if (fn == tmf::abort_task) {
        // Something to abort: a read of the first block, sent and aborted at once.
        uint8_t cdb[16];
        const uint32_t n = scsi::read_write(cdb, sizeof cdb, false, 0, 1);
        sg_entry sg{c.memory().bus_of(c.data()), li.cap.block_size};
        io_request r{};
        r.target = s.target;
        r.lun = s.lun;
        r.cdb = cdb;
        r.cdb_len = n;
        r.data_in = &sg;
        r.n_in = 1;
        const result<uint64_t> t = c.ini().submit(r, c.now());
        if (t.st != status::ok) return fail(std::string("could not send the command to abort: ") + to_string(t.st));
        victim = t.value;
        c.ini().kick();
    }
    c.tmfs().clear();
    const status st = c.ini().submit_tmf(fn, s.target, s.lun, victim, 0, c.now());
    if (st != status::ok) return fail(std::string("could not send the task management function: ") + to_string(st));
    const uint64_t deadline = c.now() + 60000000000ull;
    const bool ok = c.wait_until(h, [&] { return !c.tmfs().empty() && (victim == 0 || victim_done); }, deadline);
    if (!ok) return fail("the task management function did not complete");
    const tmf_completion t = c.tmfs().front();
    const char* name = fn == tmf::abort_task ? "ABORT TASK" : fn == tmf::logical_unit_reset ? "LOGICAL UNIT RESET" : "I_T NEXUS RESET";
    if (fn == tmf::abort_task)
        fmt::print("abort: {} of tag {:#x} on {}:{} answered {}; the command ended {}\n", name, victim, s.target, s.lun,
                   tmf_response_name(t.response), to_string(victim_c.outcome));
    else
        fmt::print("{}: {} on {}:{} answered {}\n", type == "lun" ? "lun reset" : "target reset", name, s.target, s.lun,
                   tmf_response_name(t.response));
    if (t.device_reset) return fail("the device was reset before it answered");
    return t.response == 0 || t.response == 10 ? 0 : 1;
}

struct command_entry {
    const char* name;
    int (*run)(const options&);
    option_spec spec;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        fmt::print(stderr, "{}", usage_text);
        return exit_usage;
    }
    const std::string cmd = argv[1];
    if (cmd == "help" || cmd == "--help" || cmd == "-h") {
        fmt::print("{}", usage_text);
        return 0;
    }
    const std::set<std::string> dev_flags = {"--irq", "--legacy", "--modern"};
    auto with = [](std::set<std::string> a, const std::set<std::string>& b) {
        a.insert(b.begin(), b.end());
        return a;
    };
    const std::set<std::string> lun_values = {"-d", "-t", "-l"};
    const command_entry commands[] = {
        {"list", cmd_list, {{}, {}, 0}},
        {"bind", cmd_bind, {{"-d"}, {"--force"}, 1}},
        {"unbind", cmd_unbind, {{"-d"}, {}, 1}},
        {"scan", cmd_scan, {{"-d"}, dev_flags, 0}},
        {"inquiry", cmd_inquiry, {lun_values, dev_flags, 0}},
        {"capacity", cmd_capacity, {lun_values, dev_flags, 0}},
        {"read", cmd_read, {with(lun_values, {"--lba", "--count", "-o"}), dev_flags, 0}},
        {"write", cmd_write, {with(lun_values, {"--lba", "--count", "-i", "--pattern"}), dev_flags, 0}},
        {"verify", cmd_verify, {with(lun_values, {"--size", "--seed"}), dev_flags, 0}},
        {"bench", cmd_bench,
         {with(lun_values, {"--rw", "--bs", "--iodepth", "--runtime", "--queues"}), with(dev_flags, {"--json"}), 0}},
        {"events", cmd_events, {{"-d", "--timeout"}, dev_flags, 0}},
        {"reset", cmd_reset, {with(lun_values, {"--type"}), dev_flags, 0}},
    };
    for (const command_entry& e : commands) {
        if (cmd != e.name) continue;
        options o;
        o.command = cmd;
        std::string err;
        if (!parse_options(argc, argv, 2, e.spec, o, err) || !parse_lun_args(o, err)) return fail(err, exit_usage);
        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, nullptr);
        sigaction(SIGTERM, &sa, nullptr);
        return e.run(o);
    }
    return fail("unknown command '" + cmd + "' (try 'vscsi-uio help')", exit_usage);
}
