// vscsi-loopback-demo: the whole initiator against the in-process loopback device.
//
// It does what the uio example does against a real device, without a VM: bring the
// device up, scan every target and LUN (REPORT LUNS, INQUIRY, READ CAPACITY, VPD block
// limits), write a pattern and verify it, and run a short random-read benchmark.
//
//   vscsi-loopback-demo [--modern|--legacy] [--size MiB] [--seconds S]
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fmt/core.h>

#include <string>
#include <vector>

#include <vscsi/initiator.hpp>
#include <vscsi/pci.hpp>
#include <vscsi/scsi.hpp>

#include "loopback_device.hpp"

namespace {

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

struct region {
    uint8_t* virt;
    size_t bytes;
    uint64_t bus;
};

region alloc_region(size_t bytes, uint64_t bus) {
    bytes = (bytes + 4095) & ~size_t(4095);
    auto* p = static_cast<uint8_t*>(aligned_alloc(4096, bytes));
    if (!p) {
        fmt::print(stderr, "vscsi-loopback-demo: out of memory ({} bytes)\n", bytes);
        exit(1);
    }
    memset(p, 0, bytes);
    return region{p, bytes, bus};
}

struct collector {
    uint32_t done = 0;
    vscsi::io_completion last{};
    uint8_t sense[96];
    void on_complete(const vscsi::io_completion& c) {
        ++done;
        last = c;
        memcpy(sense, c.sense ? c.sense : sense, c.sense_len);
    }
    void on_tmf(const vscsi::tmf_completion&) {}
    void on_an(const vscsi::an_completion&) {}
    void on_event(const vscsi::event_info&) {}
};

template <class Ini>
struct driver {
    Ini& ini;
    vscsi::loopback::device& dev;
    region data;
    collector col;

    // One command, synchronously; the device runs in this thread.
    vscsi::io_completion run(uint8_t t, uint16_t l, const uint8_t* cdb, uint32_t cdb_len, uint32_t in_len,
                             uint32_t out_len = 0) {
        vscsi::io_request r{};
        r.target = t;
        r.lun = l;
        r.cdb = cdb;
        r.cdb_len = cdb_len;
        vscsi::sg_entry sg{data.bus, in_len ? in_len : out_len};
        if (in_len) {
            r.data_in = &sg;
            r.n_in = 1;
        } else if (out_len) {
            r.data_out = &sg;
            r.n_out = 1;
        }
        for (int attempt = 0; attempt < 3; ++attempt) {
            const uint32_t before = col.done;
            if (ini.submit(r, now_ns()).st != vscsi::status::ok) break;
            ini.kick();
            while (col.done == before) {
                dev.step();
                ini.poll(now_ns(), col);
            }
            // A unit attention is news, not failure: note it and retry.
            const vscsi::scsi::sense_info si = vscsi::scsi::decode_sense(col.sense, col.last.sense_len);
            if (col.last.outcome == vscsi::io_outcome::check_condition && vscsi::scsi::is_unit_attention(si))
                continue;
            return col.last;
        }
        return col.last;
    }
};

}  // namespace

int main(int argc, char** argv) {
    using namespace vscsi;
    bool legacy = false;
    uint64_t mib = 64;
    double seconds = 2.0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--legacy") {
            legacy = true;
        } else if (a == "--modern") {
            legacy = false;
        } else if (a == "--size" && i + 1 < argc) {
            mib = strtoull(argv[++i], nullptr, 10);
            if (mib == 0 || mib > 4096) {
                fmt::print(stderr, "vscsi-loopback-demo: --size must be 1..4096 MiB\n");
                return 2;
            }
        } else if (a == "--seconds" && i + 1 < argc) {
            seconds = atof(argv[++i]);
            if (!(seconds > 0 && seconds <= 600)) {
                fmt::print(stderr, "vscsi-loopback-demo: --seconds must be in (0, 600]\n");
                return 2;
            }
        } else {
            fmt::print(stderr, "vscsi-loopback-demo: unknown argument '{}'\n"
                               "usage: vscsi-loopback-demo [--modern|--legacy] [--size MiB] [--seconds S]\n", a);
            return 2;
        }
    }

    loopback::dma_map map;
    loopback::options o;
    o.kind = legacy ? loopback::personality::legacy : loopback::personality::modern;
    loopback::device dev(o, map);
    dev.add_lun(0, 0, mib * 2048, 512);
    dev.add_lun(0, 1, mib * 256, 4096);
    dev.add_lun(1, 0, 2048, 512, true);

    initiator_config cfg;
    cfg.slots = 64;
    cfg.max_segments = 8;
    int rc = 0;
    auto go = [&](auto& transport) {
        using transport_t = std::remove_reference_t<decltype(transport)>;
        if (transport.probe() != status::ok) {
            fmt::print(stderr, "vscsi-loopback-demo: no virtio-scsi transport found\n");
            rc = 1;
            return;
        }
        initiator<hosted_platform, transport_t> ini(transport);
        region ring = alloc_region(decltype(ini)::region_bytes(cfg), 0x100000000ull);
        region data = alloc_region(16u << 20, 0x7000000000ull);
        // The driver's bookkeeping: ordinary memory, never given to the device.
        region books = alloc_region(decltype(ini)::private_bytes(cfg), 0);
        map.add(ring.bus, ring.virt, ring.bytes);
        map.add(data.bus, data.virt, data.bytes);
        const status s = ini.start(cfg, dma_region{ring.virt, ring.bus, ring.bytes}, private_region{books.virt, books.bytes});
        if (s != status::ok) {
            fmt::print(stderr, "vscsi-loopback-demo: device start failed: {}\n", to_string(s));
            rc = 1;
            return;
        }
        fmt::print("device: {} interface, {} request queue(s) of {} entries, cmd_per_lun {}, seg_max {}\n",
                   ini.legacy() ? "legacy" : "modern", ini.request_queues(), ini.queue_size(0), ini.cmd_per_lun(),
                   ini.device_config().seg_max);
        driver<decltype(ini)> drv{ini, dev, data, {}};

        // ---- scan ----
        fmt::print("\nscan:\n");
        uint8_t cdb[16];
        struct found {
            uint8_t t;
            uint16_t l;
            uint64_t blocks;
            uint32_t bs;
        };
        std::vector<found> luns;
        const uint16_t max_target = uint16_t(std::min<uint32_t>(ini.device_config().max_target, 3));
        for (uint16_t t = 0; t <= max_target; ++t) {
            uint32_t n = scsi::report_luns(cdb, 16, 4096);
            io_completion c = drv.run(uint8_t(t), wlun_report_luns, cdb, n, 4096);
            if (c.outcome == io_outcome::bad_target) continue;
            if (c.outcome != io_outcome::good) {
                fmt::print("  target {}: REPORT LUNS failed ({})\n", t, to_string(c.outcome));
                continue;
            }
            std::vector<uint16_t> list;
            scsi::report_luns_entries(data.virt, c.transferred, [&](const uint8_t* e) {
                const decoded_lun d = decode_sam_lun(e);
                if (d.valid) list.push_back(d.lun);
                return true;
            });
            for (uint16_t l : list) {
                n = scsi::inquiry(cdb, 16, 96);
                c = drv.run(uint8_t(t), l, cdb, n, 96);
                const scsi::inquiry_data inq = scsi::decode_inquiry(data.virt, c.transferred);
                if (!scsi::lun_present(inq)) continue;
                n = scsi::read_capacity_16(cdb, 16);
                c = drv.run(uint8_t(t), l, cdb, n, 32);
                const scsi::capacity cap = scsi::decode_capacity_16(data.virt, c.transferred);
                n = scsi::inquiry_vpd(cdb, 16, scsi::vpd::block_limits, 64);
                c = drv.run(uint8_t(t), l, cdb, n, 64);
                const scsi::block_limits bl = scsi::decode_block_limits(data.virt, c.transferred);
                n = scsi::mode_sense_6(cdb, 16, 0x3f, 0, 255);
                c = drv.run(uint8_t(t), l, cdb, n, 255);
                const scsi::mode_header mh = scsi::decode_mode_header(data.virt, c.transferred, false);
                fmt::print("  {}:{}  {:.8} {:.16} {:.4}  {} blocks x {} B = {} MiB{}  max transfer {} blocks\n", t, l,
                           std::string(inq.vendor, 8), std::string(inq.product, 16), std::string(inq.revision, 4),
                           cap.blocks(), cap.block_size, cap.blocks() * cap.block_size >> 20,
                           mh.write_protected ? " (read-only)" : "", bl.max_transfer);
                luns.push_back(found{uint8_t(t), l, cap.blocks(), cap.block_size});
            }
        }

        // ---- verify ----
        fmt::print("\nverify:\n");
        for (const found& f : luns) {
            const uint32_t chunk = 1u << 20;
            const uint64_t bytes = std::min<uint64_t>(f.blocks * f.bs, 8u << 20);
            uint64_t bad = 0;
            bool read_only = false;
            for (uint64_t off = 0; off < bytes && !read_only; off += chunk) {
                const uint32_t blocks = chunk / f.bs;
                for (uint32_t i = 0; i < chunk; ++i) data.virt[i] = uint8_t((off + i) * 131 + f.t * 7 + f.l);
                uint32_t n = scsi::read_write(cdb, 16, true, off / f.bs, blocks);
                io_completion c = drv.run(f.t, f.l, cdb, n, 0, chunk);
                if (c.outcome == io_outcome::check_condition &&
                    scsi::decode_sense(drv.col.sense, c.sense_len).key == scsi::key::data_protect) {
                    read_only = true;
                    break;
                }
                memset(data.virt, 0, chunk);
                n = scsi::read_write(cdb, 16, false, off / f.bs, blocks);
                c = drv.run(f.t, f.l, cdb, n, chunk);
                for (uint32_t i = 0; i < chunk; ++i) bad += data.virt[i] != uint8_t((off + i) * 131 + f.t * 7 + f.l);
            }
            if (read_only)
                fmt::print("  {}:{}  read-only: write refused with DATA PROTECT, as it should be\n", f.t, f.l);
            else
                fmt::print("  {}:{}  wrote and read back {} MiB: {}\n", f.t, f.l, bytes >> 20,
                           bad ? fmt::format("{} bytes differ", bad) : std::string("identical"));
            if (bad) rc = 1;
        }

        // ---- bench: 4 KiB random reads at depth 32 on LUN 0:0 ----
        if (!luns.empty()) {
            const found& f = luns.front();
            const uint32_t bs = 4096, depth = 32;
            const uint64_t span = f.blocks * f.bs / bs;
            uint64_t rng = 88172645463325252ull;
            uint64_t done = 0;
            std::vector<uint8_t> cdbs(depth * 16);
            struct counter {
                uint64_t n = 0, errors = 0;
                void on_complete(const io_completion& c) {
                    ++n;
                    errors += c.outcome != io_outcome::good;
                }
                void on_tmf(const tmf_completion&) {}
                void on_an(const an_completion&) {}
                void on_event(const event_info&) {}
            } cnt;
            auto submit_one = [&](uint32_t slot) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                const uint64_t lba = (rng % span) * (bs / f.bs);
                uint8_t* c = &cdbs[slot * 16];
                const uint32_t n = scsi::read_write(c, 16, false, lba, bs / f.bs);
                const sg_entry sg{data.bus + uint64_t(slot) * bs, bs};
                io_request r{};
                r.target = f.t;
                r.lun = f.l;
                r.cdb = c;
                r.cdb_len = n;
                r.data_in = &sg;
                r.n_in = 1;
                r.user_data = slot;
                return ini.submit(r, now_ns()).st == status::ok;
            };
            const uint64_t t0 = now_ns();
            for (uint32_t i = 0; i < depth; ++i) submit_one(i);
            ini.kick();
            struct resubmit {
                counter& c;
                decltype(submit_one)& again;
                void on_complete(const io_completion& x) {
                    c.on_complete(x);
                    again(uint32_t(x.user_data));
                }
                void on_tmf(const tmf_completion&) {}
                void on_an(const an_completion&) {}
                void on_event(const event_info&) {}
            } h{cnt, submit_one};
            uint64_t t = t0;
            while (t - t0 < uint64_t(seconds * 1e9)) {
                dev.step();
                ini.poll(t, h);
                ini.kick();
                t = now_ns();
            }
            done = cnt.n;
            const double secs = double(t - t0) / 1e9;
            fmt::print("\nbench: 4 KiB random reads, depth {}, {:.1f} s: {:.0f} IOPS, {:.1f} MiB/s, {} errors "
                       "(device and driver share one thread)\n",
                       depth, secs, double(done) / secs, double(done) * bs / secs / 1048576.0, cnt.errors);
            if (cnt.errors) rc = 1;
        }
        collector stop_col;
        ini.stop(stop_col);
        if (!dev.violations().empty()) {
            fmt::print(stderr, "device saw {} protocol violations, first: {}\n", dev.violations().size(),
                       dev.violations().front());
            rc = 1;
        }
        free(ring.virt);
        free(data.virt);
        free(books.virt);
    };
    if (legacy) {
        legacy_pci<loopback::device> t(dev);
        go(t);
    } else {
        modern_pci<loopback::device> t(dev);
        go(t);
    }
    return rc;
}
