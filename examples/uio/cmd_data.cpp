// vscsi-uio read, write, verify: blocks to and from a LUN.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <string>
#include <vector>

#include "pattern.hpp"
#include "progress.hpp"
#include "session.hpp"

namespace vscsi_uio {

using namespace vscsi;
using vscsi::uio::command_result;
using vscsi::uio::controller;

static bool parse_range(const options& o, uint64_t& lba, uint64_t& count, std::string& err) {
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

static void hexdump(const uint8_t* p, size_t n, uint64_t base) {
    for (size_t i = 0; i < n; i += 16) {
        std::string hex, txt;
        for (size_t k = 0; k < 16 && i + k < n; ++k) {
            hex += fmt::format("{:02x}{}", p[i + k], k == 7 ? "  " : " ");
            txt += (p[i + k] >= 0x20 && p[i + k] < 0x7f) ? char(p[i + k]) : '.';
        }
        fmt::print("{:08x}  {:<49} |{}|\n", base + i, hex, txt);
    }
}

static bool write_all(int fd, const uint8_t* p, size_t n) {
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
    if (!probe_lun(s.ctl, s.target, s.lun, li, err) || !usable_capacity(li, err)) return fail(err);
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
    if (!probe_lun(s.ctl, s.target, s.lun, li, err) || !usable_capacity(li, err)) return fail(err);
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
    if (!probe_lun(s.ctl, s.target, s.lun, li, err) || !usable_capacity(li, err)) return fail(err);
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

}  // namespace vscsi_uio
