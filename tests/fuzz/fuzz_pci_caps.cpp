// fuzz_pci_caps: PCI configuration space, capability lists and BAR lengths (pci.hpp). The
// input is the function's 256 bytes of configuration space, its six BAR lengths and what
// its registers read as; the modern transport probes the capability list, the legacy one
// its BAR 0, and both are then driven through every register they have.
//
// Checked: every configuration-space access lies inside the 256 bytes; every BAR access is
// aligned to its width (checklist 53), inside its BAR, and, on the modern transport, inside
// the structure a capability located; the walk of the list ends within 48 steps; and the
// structures probe() settles on are exactly the first usable capability of each type
// (checklist 52), by an independent reading of the rules.
#include <stdint.h>
#include <string.h>

#include <vscsi/pci.hpp>

#include "fuzz_check.hpp"
#include "fuzz_input.hpp"
#include "ring_peer.hpp"
#include "seeds.hpp"

namespace {
using namespace fuzz;

// A function whose configuration space, BAR lengths and register contents are the input's.
struct raw_function {
    uint8_t cfg[256];
    uint64_t bar_len[6];
    uint8_t regs[64];           // register bytes, repeated over every BAR
    const vscsi::modern_pci<raw_function>::region* allowed[4] = {};  // once probed: where accesses may go
    unsigned bar_accesses = 0;

    uint8_t config_read8(uint32_t off) {
        FUZZ_CHECK(off < 256, "config read8 at %u", off);
        return cfg[off];
    }
    uint16_t config_read16(uint32_t off) {
        FUZZ_CHECK(off + 2 <= 256 && off % 2 == 0, "config read16 at %u", off);
        return ld16(cfg + off);
    }
    uint32_t config_read32(uint32_t off) {
        FUZZ_CHECK(off + 4 <= 256 && off % 4 == 0, "config read32 at %u", off);
        return ld32(cfg + off);
    }
    uint64_t bar_length(unsigned bar) {
        FUZZ_CHECK(bar < 6, "length of BAR %u", bar);
        return bar_len[bar];
    }
    void check(unsigned bar, uint32_t off, unsigned width) {
        ++bar_accesses;
        FUZZ_CHECK(bar < 6 && uint64_t(off) + width <= bar_len[bar], "%u-byte access at BAR %u offset %#x, length %#llx",
                   width, bar, off, bar < 6 ? (unsigned long long)bar_len[bar] : 0ull);
        FUZZ_CHECK(off % width == 0, "misaligned %u-byte access at BAR %u offset %#x (checklist 53)", width, bar, off);
        if (!allowed[0]) return;
        for (const auto* r : allowed)
            if (r->bar == bar && off >= r->offset && uint64_t(off) + width <= uint64_t(r->offset) + r->length) return;
        FUZZ_CHECK(false, "access at BAR %u offset %#x outside every structure", bar, off);
    }
    uint32_t value(uint32_t off, unsigned width) const {
        uint32_t v = 0;
        for (unsigned i = 0; i < width; ++i) v |= uint32_t(regs[(off + i) % sizeof(regs)]) << (8 * i);
        return v;
    }
    uint8_t read8(unsigned bar, uint32_t off) { return check(bar, off, 1), uint8_t(value(off, 1)); }
    uint16_t read16(unsigned bar, uint32_t off) { return check(bar, off, 2), uint16_t(value(off, 2)); }
    uint32_t read32(unsigned bar, uint32_t off) { return check(bar, off, 4), value(off, 4); }
    void write8(unsigned bar, uint32_t off, uint8_t) { check(bar, off, 1); }
    void write16(unsigned bar, uint32_t off, uint16_t) { check(bar, off, 2); }
    void write32(unsigned bar, uint32_t off, uint32_t) { check(bar, off, 4); }
};

using region = vscsi::modern_pci<raw_function>::region;

// The spec's rules for locating a structure, read independently: the first vendor
// capability of the type, in list order, whose BAR is not reserved, whose structure fits
// in its BAR, is long enough for what the driver uses, and is aligned as its type requires.
region expected(const raw_function& f, uint8_t type) {
    region none{};
    if (!(ld16(f.cfg + 6) & 0x10)) return none;
    uint32_t at = f.cfg[0x34] & 0xfc;
    for (int n = 0; n < 48 && at >= 0x40; ++n) {
        const uint8_t* c = f.cfg + at;
        const uint32_t next = c[1] & 0xfc;
        const uint32_t need = type == 2 ? 20 : 16;
        if (c[0] == 0x09 && at + need <= 256 && c[2] >= need && c[3] == type && c[4] <= 5) {
            const uint32_t off = ld32(c + 8), len = ld32(c + 12);
            const uint32_t align = type == 1 || type == 4 ? 4 : type == 2 ? 2 : 1;
            const uint32_t min = type == 1 ? 56 : type == 2 ? 2 : type == 3 ? 1 : 36;
            if (len && uint64_t(off) + len <= f.bar_len[c[4]] && off % align == 0 && len >= min)
                return region{true, c[4], off, len};
            (void)min;
        }
        at = next;
    }
    return none;
}

void drive_modern(raw_function& f) {
    vscsi::modern_pci<raw_function> t(f);
    const vscsi::status s = t.probe();
    const region* got[4] = {&t.common_region(), &t.notify_region(), &t.isr_region(), &t.device_region()};
    const region want[4] = {expected(f, 1), expected(f, 2), expected(f, 3), expected(f, 4)};
    const bool all = want[0].present && want[1].present && want[2].present && want[3].present;
    FUZZ_CHECK((s == vscsi::status::ok) == all, "probe() says %s, the list %s every structure", vscsi::to_string(s),
               all ? "has" : "lacks");
    if (s != vscsi::status::ok) return;
    for (int i = 0; i < 4; ++i)
        FUZZ_CHECK(got[i]->bar == want[i].bar && got[i]->offset == want[i].offset && got[i]->length == want[i].length,
                   "structure %d at BAR %u + %#x (%#x bytes), expected BAR %u + %#x (%#x bytes)", i + 1, got[i]->bar,
                   got[i]->offset, got[i]->length, want[i].bar, want[i].offset, want[i].length);
    for (int i = 0; i < 4; ++i) f.allowed[i] = got[i];
    // Drive every register once; the bus checks where each access lands.
    t.reset();
    (void)t.get_status();
    t.set_status(1);
    (void)t.device_features();
    t.set_driver_features(~0ull);
    const uint16_t nq = t.num_queues();
    for (uint16_t q = 0; q < 4 && q < nq; ++q) {
        const uint32_t max = t.queue_max_size(q);
        uint32_t size = 1;
        while (size * 2 <= max && size < 32768) size *= 2;
        if (t.setup_queue(q, size, 0x100000ull * (q + 1), 0x100000ull * (q + 1) + 0x10000,
                          0x100000ull * (q + 1) + 0x20000) == vscsi::status::ok)
            t.notify(q);
        (void)t.set_queue_vector(q, 0);
    }
    t.notify(300);  // past every queue: nothing
    for (uint32_t off = 0; off + 4 <= vscsi::config_offset::size; off += 4) (void)t.config_read32(off);
    (void)t.config_read16(vscsi::config_offset::max_channel);
    (void)t.config_read8(0);
    t.config_write32(vscsi::config_offset::sense_size, 96);
    (void)t.config_generation();
    (void)t.read_isr();
    (void)t.set_config_vector(0xffff);
}

void drive_legacy(raw_function& f) {
    vscsi::legacy_pci<raw_function> t(f);
    if (t.probe() != vscsi::status::ok) {
        FUZZ_CHECK(f.bar_len[0] < 20 + 36 + (vscsi::msix_enabled(f) ? 4 : 0), "legacy probe refused a BAR 0 of %llu bytes",
                   (unsigned long long)f.bar_len[0]);
        return;
    }
    t.reset();
    (void)t.get_status();
    (void)t.device_features();
    t.set_driver_features(~0ull);
    for (uint16_t q = 0; q < 3; ++q) {
        const uint32_t max = t.queue_max_size(q);
        const uint64_t desc = 0x1000000ull * (q + 1);
        const uint64_t avail = desc + 16ull * max;
        const uint64_t used = (avail + 6 + 2ull * max + 4095) & ~4095ull;
        if (t.setup_queue(q, max, desc, avail, used) == vscsi::status::ok) t.notify(q);
        (void)t.set_queue_vector(q, 0);
        t.disable_queue(q);
    }
    for (uint32_t off = 0; off + 4 <= vscsi::config_offset::size; off += 4) (void)t.config_read32(off);
    (void)t.config_read16(vscsi::config_offset::max_target);
    t.config_write32(vscsi::config_offset::cdb_size, 32);
    (void)t.read_isr();
    (void)t.set_config_vector(0);
}

// Configuration space as QEMU's virtio-scsi-pci lays it out (and the loopback device does),
// with the corruptions of test_pci.cpp's hostile capability lists, as seeds.
struct layout {
    uint8_t cfg[256] = {};
    uint8_t bars[6] = {0, 0, 0, 0, 0, 0};  // codes: 0 absent, n: 8 << n bytes
    uint8_t regs[64] = {};

    explicit layout(bool modern, bool msix = false) {
        st16(cfg + 0, 0x1af4);
        st16(cfg + 2, modern ? 0x1048 : 0x1004);
        st16(cfg + 6, 0x10);
        st16(cfg + 0x2e, 8);
        cfg[0x34] = 0x40;
        cfg[0x40] = 0x11;  // MSI-X
        cfg[0x41] = modern ? 0x50 : 0;
        st16(cfg + 0x42, uint16_t((msix ? 0x8000 : 0) | 3));
        bars[0] = 3;  // 64 bytes of legacy registers
        if (modern) {
            bars[4] = 11;  // 16 KiB
            cap(0x50, 0x60, 1, 0x0000, 0x1000);
            cap(0x60, 0x70, 3, 0x1000, 0x1000);
            cap(0x70, 0x80, 4, 0x2000, 0x1000);
            cap(0x80, 0x00, 2, 0x3000, 0x1000);
            st32(cfg + 0x80 + 16, 4);
        }
        for (size_t i = 0; i < sizeof(regs); ++i) regs[i] = uint8_t(i * 37 + 1);
        regs[12] = 0;  // legacy queue size 256
        regs[13] = 1;
    }
    void cap(uint32_t at, uint8_t next, uint8_t type, uint32_t off, uint32_t len) {
        cfg[at] = 0x09;
        cfg[at + 1] = next;
        cfg[at + 2] = type == 2 ? 20 : 16;
        cfg[at + 3] = type;
        cfg[at + 4] = 4;
        st32(cfg + at + 8, off);
        st32(cfg + at + 12, len);
    }
    std::vector<uint8_t> bytes() const {
        std::vector<uint8_t> b(cfg, cfg + 256);
        b.insert(b.end(), bars, bars + 6);
        b.insert(b.end(), regs, regs + 64);
        return b;
    }
};

std::vector<named_seed> seeds() {
    std::vector<named_seed> out;
    out.emplace_back("modern", layout(true).bytes());
    out.emplace_back("legacy", layout(false).bytes());
    out.emplace_back("legacy-msix", layout(false, true).bytes());
    layout l(true);
    l.cfg[0x80 + 1] = 0x50;  // a loop back to the first structure
    out.emplace_back("loop-after-all", l.bytes());
    l = layout(true);
    l.cfg[0x50 + 1] = 0x50;  // the first points at itself
    out.emplace_back("loop-at-once", l.bytes());
    l = layout(true);
    l.cfg[0x34] = 0xfe;
    out.emplace_back("pointer-past-space", l.bytes());
    l.cfg[0x34] = 0x10;
    out.emplace_back("pointer-into-header", l.bytes());
    l = layout(true);
    l.cfg[0x50 + 4] = 7;
    out.emplace_back("reserved-bar", l.bytes());
    l = layout(true);
    l.cfg[0x50 + 9] = 0xff;
    out.emplace_back("offset-past-bar", l.bytes());
    l = layout(true);
    l.cfg[0x50 + 2] = 8;
    out.emplace_back("short-cap", l.bytes());
    l = layout(true);
    l.cfg[0x80 + 1] = 0x90;  // an unknown type, then a second common structure
    l.cap(0x90, 0xa0, 42, 0, 16);
    l.cap(0xa0, 0x00, 1, 0x1000, 0x1000);
    out.emplace_back("unknown-type-second-common", l.bytes());
    l = layout(true);
    l.cfg[0x50 + 12] = 0x20;  // a common structure too short for its fields
    out.emplace_back("common-too-short", l.bytes());
    l = layout(true);
    l.cfg[6] = 0;
    out.emplace_back("no-capability-list", l.bytes());
    l = layout(true);
    st32(l.cfg + 0x80 + 16, 3);  // an odd notify multiplier
    out.emplace_back("odd-multiplier", l.bytes());
    l = layout(true);
    l.bars[4] = 0;
    out.emplace_back("bar-absent", l.bytes());
    // Regressions (fuzz_pci_caps): a misaligned device structure was taken; a too-short
    // common structure listed first hid a full one.
    l = layout(true);
    l.cfg[0x70 + 8] = 0xff;  // device config at 0x20ff
    out.emplace_back("regress-misaligned-device-cfg", l.bytes());
    l = layout(true);
    l.cfg[0x50 + 13] = 0;  // common: 0x10 bytes
    l.cfg[0x50 + 12] = 0x10;
    l.cfg[0x80 + 1] = 0xa0;
    l.cap(0xa0, 0x00, 1, 0x0000, 0x1000);
    out.emplace_back("regress-short-first-common", l.bytes());
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    write_seeds_if_asked(seeds());
    return 0;
}

// Input: 256 bytes of configuration space, then six BAR lengths (a byte each: 0, a power of
// two from 16 bytes to 1 MiB, or a u32 after 0xff), then 64 register bytes.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    input in(data, size);
    raw_function f{};
    for (uint8_t& b : f.cfg) b = in.u8();
    for (uint64_t& l : f.bar_len) {
        const uint8_t b = in.u8();
        l = b == 0xff ? in.u32() : b % 18 == 0 ? 0 : uint64_t(8) << (b % 18);
    }
    for (uint8_t& b : f.regs) b = in.u8();
    (void)vscsi::probe_identity(f);
    unsigned steps = 0;
    vscsi::walk_capabilities(f, [&](uint32_t at, uint8_t) {
        FUZZ_CHECK(at >= 0x40 && at + 2 <= 256, "walk visits %#x", at);
        FUZZ_CHECK(++steps <= 48, "walk does not end");
        return true;
    });
    drive_modern(f);
    raw_function g = f;
    for (auto*& r : g.allowed) r = nullptr;
    drive_legacy(g);
    return 0;
}
