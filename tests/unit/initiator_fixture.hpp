// A driver (the core's initiator over pci.hpp) wired to the loopback device, for tests.
// DMA memory is registered with the device at a bus address unrelated to its virtual
// address, so any virtual address leaking into a descriptor is caught.
#pragma once
#include <stdlib.h>
#include <string.h>

#include <memory>
#include <vector>

#include <vscsi/initiator.hpp>
#include <vscsi/pci.hpp>

#include "loopback_device.hpp"

namespace fixture {

using vscsi::loopback::device;

struct recorder {
    std::vector<vscsi::io_completion> done;
    std::vector<std::vector<uint8_t>> sense;
    std::vector<vscsi::tmf_completion> tmfs;
    std::vector<vscsi::an_completion> ans;
    std::vector<vscsi::event_info> events;
    void on_complete(const vscsi::io_completion& c) {
        done.push_back(c);
        sense.emplace_back(c.sense, c.sense + c.sense_len);
    }
    void on_tmf(const vscsi::tmf_completion& c) { tmfs.push_back(c); }
    void on_an(const vscsi::an_completion& c) { ans.push_back(c); }
    void on_event(const vscsi::event_info& e) { events.push_back(e); }
    void clear() {
        done.clear();
        sense.clear();
        tmfs.clear();
        ans.clear();
        events.clear();
    }
};

// Page-aligned memory shared with the device at a chosen bus address.
struct shared_memory {
    uint8_t* virt = nullptr;
    size_t bytes = 0;
    uint64_t bus = 0;
    shared_memory(size_t n, uint64_t bus_addr, uint8_t fill = 0xa5) : bytes((n + 4095) & ~size_t(4095)), bus(bus_addr) {
        virt = static_cast<uint8_t*>(aligned_alloc(4096, bytes));
        memset(virt, fill, bytes);  // garbage: the driver must initialise what it uses
    }
    ~shared_memory() { free(virt); }
    shared_memory(const shared_memory&) = delete;
    shared_memory& operator=(const shared_memory&) = delete;
    uint64_t bus_of(const void* p) const { return bus + uint64_t(static_cast<const uint8_t*>(p) - virt); }
};

// The driver's private memory: never registered with the device, of exactly the size asked
// for (rounded to a cache line), between two guard areas the driver must never write.
struct private_memory {
    static constexpr size_t guard = 4096;
    static constexpr uint8_t guard_fill = 0x6b;
    uint8_t* block = nullptr;
    uint8_t* virt = nullptr;
    size_t bytes = 0;
    explicit private_memory(size_t n, uint8_t fill = 0xa5) : bytes((n + 63) & ~size_t(63)) {
        block = static_cast<uint8_t*>(aligned_alloc(vscsi::private_region_align, guard + bytes + guard));
        memset(block, guard_fill, guard + bytes + guard);
        virt = block + guard;
        memset(virt, fill, bytes);  // garbage: the driver must initialise what it uses
    }
    ~private_memory() { free(block); }
    private_memory(const private_memory&) = delete;
    private_memory& operator=(const private_memory&) = delete;
    vscsi::private_region region() const { return vscsi::private_region{virt, bytes}; }
    bool guards_intact() const {
        for (size_t i = 0; i < guard; ++i)
            if (block[i] != guard_fill || virt[bytes + i] != guard_fill) return false;
        return true;
    }
};

template <class Transport, uint16_t MaxQueues = 4, class Ring = vscsi::virtqueue<vscsi::hosted_platform>>
struct rig {
    using initiator_t = vscsi::initiator<vscsi::hosted_platform, Transport, 32, 96, MaxQueues, Ring>;
    vscsi::loopback::dma_map map;
    std::unique_ptr<device> dev;
    std::unique_ptr<Transport> transport;
    std::unique_ptr<initiator_t> ini;
    std::unique_ptr<shared_memory> region;   // what the device may access
    std::unique_ptr<private_memory> shadow;  // what it never sees
    std::unique_ptr<shared_memory> data;
    vscsi::initiator_config cfg;
    recorder rec;
    uint64_t now = 1000;
    uint8_t region_fill = 0xa5;  // what the region holds before start(): stale memory

    explicit rig(const vscsi::loopback::options& o, vscsi::initiator_config c = {}, size_t data_bytes = 8 << 20)
        : cfg(c) {
        dev = std::make_unique<device>(o, map);
        transport = std::make_unique<Transport>(*dev);
        data = std::make_unique<shared_memory>(data_bytes, 0x7000000000ull);
        map.add(data->bus, data->virt, data->bytes);
    }

    vscsi::status start() {
        const vscsi::status p = transport->probe();
        if (p != vscsi::status::ok) return p;
        ini = std::make_unique<initiator_t>(*transport);
        const size_t need = initiator_t::region_bytes(cfg);
        if (!need) return vscsi::status::invalid_argument;
        region = std::make_unique<shared_memory>(need, 0x100000000ull, region_fill);
        map.add(region->bus, region->virt, region->bytes);
        shadow = std::make_unique<private_memory>(initiator_t::private_bytes(cfg), region_fill);
        return ini->start(cfg, dma(), shadow->region());
    }
    vscsi::dma_region dma() const { return vscsi::dma_region{region->virt, region->bus, region->bytes}; }

    // Run device and driver until `pred` holds or `rounds` pass.
    template <class P>
    bool run_until(P pred, int rounds = 1000) {
        for (int i = 0; i < rounds; ++i) {
            if (pred()) return true;
            dev->step();
            ini->poll(now, rec);
        }
        return pred();
    }
    // Like run_until, with the clock moving `step_ns` per round (deadlines, escalation).
    template <class P>
    bool advance_until(P pred, uint64_t step_ns, int rounds = 100) {
        for (int i = 0; i < rounds && !pred(); ++i) {
            now += step_ns;
            dev->step();
            ini->poll(now, rec);
        }
        return pred();
    }
    void settle(int rounds = 4) {
        for (int i = 0; i < rounds; ++i) {
            dev->step();
            ini->poll(now, rec);
        }
    }

    // One synchronous command; returns the completion.
    vscsi::io_completion command(uint8_t target, uint16_t lun, const std::vector<uint8_t>& cdb, uint8_t* in,
                                 uint32_t in_len, const uint8_t* out = nullptr, uint32_t out_len = 0) {
        vscsi::io_request r{};
        r.target = target;
        r.lun = lun;
        r.cdb = cdb.data();
        r.cdb_len = uint32_t(cdb.size());
        vscsi::sg_entry si{in ? data->bus_of(in) : 0, in_len};
        vscsi::sg_entry so{out ? data->bus_of(out) : 0, out_len};
        if (in_len) {
            r.data_in = &si;
            r.n_in = 1;
        }
        if (out_len) {
            r.data_out = &so;
            r.n_out = 1;
        }
        r.user_data = 0xC0FFEE;
        const size_t before = rec.done.size();
        const auto s = ini->submit(r, now);
        if (s.st != vscsi::status::ok) {
            vscsi::io_completion bad{};
            bad.outcome = vscsi::io_outcome::failure;
            bad.response = 0xee;
            return bad;
        }
        ini->kick();
        run_until([&] { return rec.done.size() > before; });
        if (rec.done.size() == before) {
            vscsi::io_completion lost{};
            lost.outcome = vscsi::io_outcome::timed_out;
            lost.response = 0xdd;
            return lost;
        }
        return rec.done.back();
    }

    // The data area as a scratch buffer.
    uint8_t* buf(size_t off = 0) { return data->virt + off; }
};

// Deadlines in microseconds instead of seconds, so the ladder runs in a few polls.
inline vscsi::initiator_config fast_ladder() {
    vscsi::initiator_config c;
    c.default_timeout_ns = 1000;
    c.escalation_step_ns = 1000;
    c.scan_interval_ns = 100;
    return c;
}

inline std::vector<uint8_t> rw10(bool write, uint32_t lba, uint16_t blocks) {
    return {uint8_t(write ? 0x2a : 0x28), 0, uint8_t(lba >> 24), uint8_t(lba >> 16), uint8_t(lba >> 8), uint8_t(lba),
            0, uint8_t(blocks >> 8), uint8_t(blocks), 0};
}
inline std::vector<uint8_t> tur() { return {0, 0, 0, 0, 0, 0}; }

}  // namespace fixture
