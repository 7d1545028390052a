// The action language of the initiator-level targets: fuzz input decoded, action by action,
// into calls on a driver_rig (driver calls and device moves). Each target picks which
// actions its opcodes map to, and so what it concentrates on; seeds are written with the
// encoder below, in the same language.
#pragma once
#include <stdint.h>

#include <initializer_list>
#include <vector>

#include "driver_rig.hpp"
#include "fuzz_input.hpp"

namespace fuzz {

enum class act : uint8_t {
    submit,          // one request, shaped by the input
    submit_batch,    // 1..8 plain requests
    kick,
    poll,
    return_request,  // the device answers a request it holds: response header, data, used len
    return_control,  // ... a TMF or AN
    return_event,    // ... an event buffer, with these 16 bytes
    answer_all,      // the device answers everything it holds, correctly
    raw_entry,       // any id and len into a used-ring slot
    bump_used,       // used idx forward by k
    set_used,        // used idx to any value
    suppress,        // used flags or avail_event
    scribble,        // bytes into a held chain's writable buffers
    advance,         // the clock moves
    tmf,             // the caller sends a TMF
    an,              // the caller sends an AN query or subscribe
    reset_device,
    needs_reset,     // the device sets DEVICE_NEEDS_RESET
    reset_delay,     // the device's next resets take this many status reads
    interrupts,
    restart,         // stop, then start again
    config_change,   // the device changes a config value (generation bumped)
    stomp,           // the device writes any bytes anywhere in the DMA region
    count
};

// Which virtqueue a device move names: 0 control, 1 event, 2.. request queues.
inline uint16_t pick_queue(input& in) { return uint16_t(in.below(2 + 4)); }

inline request_shape read_request(input& in) {
    request_shape s;
    const uint8_t b = in.u8();
    s.n_out = b & 3;
    s.n_in = (b >> 2) & 3;
    if (s.n_out + s.n_in > 4) s.n_in = uint8_t(4 - s.n_out);
    s.target = in.u8() & 3;
    const uint8_t l = in.u8();
    s.lun = l == 0xff ? vscsi::wlun_report_luns : l == 0xfe ? uint16_t(16384) : uint16_t(l & 7);
    s.cdb_len = uint8_t(1 + in.below(34));
    s.cdb_seed = in.u8();
    s.attr = uint8_t(in.below(5));
    for (int i = 0; i < s.n_out + s.n_in; ++i) s.seg_len[i] = uint16_t(1 + in.u16() % 2048);
    if (b & 0x10) {
        s.pi_out = in.u8();
        s.pi_in = in.u8();
    }
    const uint8_t t = in.u8();
    s.timeout_ns = t < 128 ? 0 : uint64_t(t - 127) * 1000;
    s.queue = in.u8();
    return s;
}

inline response_shape read_response(input& in) {
    response_shape r;
    const uint8_t code = in.u8();
    r.response = code < 224 ? uint8_t(code % 14) : code;
    const uint8_t st = in.u8();
    r.status = st < 192 ? uint8_t((st % 6) * 2) : st;  // GOOD, CHECK CONDITION, ... or anything
    r.qualifier = in.u16();
    const uint8_t sl = in.u8();
    r.sense_len = sl < 200 ? sl : in.u32();
    const uint8_t res = in.u8();
    r.residual = res < 200 ? uint32_t(res) * 16 : in.u32();
    r.sense_fill = in.u8();
    r.data_fill = in.u16() % 4096;
    return r;
}

// The device and the driver's configuration, and the region's stale contents: the first
// 8 bytes of every input.
//   0  features: 1 legacy device, 2 INDIRECT_DESC, 4 EVENT_IDX, 8 INOUT, 16 T10_PI offered;
//      32 the driver uses indirect, 64 EVENT_IDX, 128 accepts T10 PI
//   1  queue sizes: low nibble the device's maximum, high nibble the driver's plan (2 << n%7)
//   2  request slots (1 + n%16)
//   3  segments per request (1 + n%4), event buffers (1 + n>>2 %8), control slots (1 + n>>5)
//   4  request queues: device 1 + n%3, driver 1 + (n>>2)%2; seg_max (n>>4)%4, 0 = no limit
//   5  cmd_per_lun n%8 (0 = 1), event_info_size one of 16, 8, 32, 64, 100
//   6  timeouts: the request default 1 + n%16 us, each ladder step 1 + n>>4 us
//   7  the byte the region is filled with before start()
struct rig_setup {
    device_model m;
    vscsi::initiator_config c;
    uint8_t fill = 0xa5;
};

inline rig_setup read_rig_setup(input& in) {
    rig_setup p;
    const uint8_t f = in.u8();
    const uint8_t sizes = in.u8();
    const uint8_t slots = in.u8();
    const uint8_t counts = in.u8();
    const uint8_t queues = in.u8();
    const uint8_t limits = in.u8();
    const uint8_t times = in.u8();
    p.fill = in.u8();
    device_model& m = p.m;
    using vscsi::feature::bit;
    m.legacy = f & 1;
    m.features = (f & 2 ? bit(vscsi::feature::ring_indirect_desc) : 0) | (f & 4 ? bit(vscsi::feature::ring_event_idx) : 0) |
                 (f & 8 ? bit(vscsi::feature::scsi_inout) : 0) | (f & 16 ? bit(vscsi::feature::scsi_t10_pi) : 0) |
                 bit(vscsi::feature::scsi_hotplug) | bit(vscsi::feature::scsi_change);
    if (!m.legacy) m.features |= bit(vscsi::feature::version_1);
    m.num_queues = 1 + queues % 3;
    m.virtqueues = uint16_t(2 + m.num_queues);
    const uint16_t qmax = uint16_t(2u << ((sizes & 15) % 7));
    for (uint16_t i = 0; i < max_virtqueues; ++i) m.queue_max[i] = i < m.virtqueues ? qmax : 0;
    m.seg_max = (queues >> 4) % 4;
    m.cmd_per_lun = limits % 8;
    static constexpr uint32_t info[] = {16, 8, 32, 64, 100};
    m.event_info_size = info[(limits >> 3) % 5];
    vscsi::initiator_config& c = p.c;
    c.max_queue_size = 2u << ((sizes >> 4) % 7);
    c.max_request_queues = uint16_t(1 + (queues >> 2) % 2);
    c.slots = uint16_t(1 + slots % 16);
    c.max_segments = uint16_t(1 + counts % 4);
    c.event_buffers = uint16_t(1 + (counts >> 2) % 8);
    c.ctrl_slots = uint16_t(1 + (counts >> 5) % 4);
    c.use_indirect = f & 32;
    c.use_event_idx = f & 64;
    c.accept_t10_pi = f & 128;
    c.default_timeout_ns = 1000ull * (1 + times % 16);
    c.escalation_step_ns = 1000ull * (1 + (times >> 4));
    c.scan_interval_ns = 100;
    c.reset_polls = 32;
    return p;
}

template <class Rig>
void run_actions(Rig& rig, input& in, const act* table, size_t n_table, unsigned max_actions = 400) {
    for (unsigned step = 0; step < max_actions && !in.done(); ++step) {
        const act a = table[in.u8() % n_table];
        switch (a) {
            case act::submit: rig.submit(read_request(in)); break;
            case act::submit_batch: {
                const uint8_t n = uint8_t(1 + in.below(8));
                const uint8_t q = in.u8();
                for (uint8_t i = 0; i < n; ++i) {
                    request_shape s;
                    s.cdb_len = 6;
                    s.queue = uint16_t(q + i);
                    s.n_in = uint8_t(q & i & 1);
                    s.seg_len[0] = 512;
                    if (rig.submit(s) != vscsi::status::ok) break;
                }
                break;
            }
            case act::kick: rig.kick(); break;
            case act::poll: rig.poll(); break;
            case act::return_request: {
                const uint16_t qi = uint16_t(vscsi::first_request_queue + in.below(4));
                const uint8_t pick = in.u8();
                const response_shape r = read_response(in);
                const len_mode m = len_mode(in.below(6));
                const uint32_t raw = m == len_mode::raw ? in.u32() : 0;
                rig.device_return(qi, pick, r, m, raw);
                break;
            }
            case act::return_control: {
                const uint8_t pick = in.u8();
                response_shape r;
                r.response = in.u8();
                r.residual = in.u32();
                const len_mode m = len_mode(in.below(6));
                const uint32_t raw = m == len_mode::raw ? in.u32() : 0;
                rig.device_return(vscsi::controlq_index, pick, r, m, raw);
                break;
            }
            case act::return_event: {
                const uint8_t pick = in.u8();
                uint8_t ev[16];
                for (uint8_t& b : ev) b = in.u8();
                const uint8_t l = in.u8();
                const uint32_t len = l < 128 ? 16 : l < 192 ? uint32_t(l - 128) % 17 : in.u32();
                rig.device_event(pick, ev, len);
                break;
            }
            case act::answer_all: rig.device_answer_all(); break;
            case act::raw_entry: {
                const uint16_t qi = pick_queue(in);
                const uint16_t ahead = uint16_t(in.below(4));
                const uint8_t k = in.u8();
                const uint32_t id = k < 128 ? uint32_t(k % 16) : k < 192 ? in.u16() : in.u32();
                const uint8_t l = in.u8();
                const uint32_t len = l < 192 ? uint32_t(l) * 2 : in.u32();
                rig.device_raw_entry(qi, ahead, id, len);
                break;
            }
            case act::bump_used: {
                const uint16_t qi = pick_queue(in);
                rig.device_bump(qi, uint16_t(1 + in.below(8)));
                break;
            }
            case act::set_used: {
                const uint16_t qi = pick_queue(in);
                rig.device_set_used(qi, in.u16());
                break;
            }
            case act::suppress: {
                const uint16_t qi = pick_queue(in);
                const bool flags = in.flag();
                rig.device_suppress(qi, flags, in.u16());
                break;
            }
            case act::scribble: {
                const uint16_t qi = pick_queue(in);
                const uint8_t pick = in.u8();
                const uint32_t off = in.u16() % 1024;
                const uint8_t v = in.u8();
                rig.device_scribble(qi, pick, off, v, uint8_t(1 + in.below(32)));
                break;
            }
            case act::advance: {
                const uint8_t t = in.u8();
                rig.advance(t < 200 ? uint64_t(t) * 100 : uint64_t(t - 199) * 1000000);
                break;
            }
            case act::tmf: {
                const uint8_t f = in.u8();
                const uint8_t target = in.u8() & 3;
                const uint8_t l = in.u8();
                const uint16_t lun = l == 0xff ? uint16_t(20000) : uint16_t(l & 7);
                const uint8_t t = in.u8();
                const uint64_t tag = t < 200 ? rig.outstanding_tag(t) : in.u64();
                rig.tmf(vscsi::tmf(f % 9), target, lun, tag);
                break;
            }
            case act::an: {
                const bool sub = in.flag();
                const uint8_t target = in.u8() & 3;
                const uint16_t lun = uint16_t(in.u8() & 7);
                rig.an(sub ? vscsi::ctrl_type::an_subscribe : vscsi::ctrl_type::an_query, target, lun, in.u8());
                break;
            }
            case act::reset_device: rig.reset_device(); break;
            case act::needs_reset: rig.set_needs_reset(); break;
            case act::reset_delay: rig.device().model().reset_delay = in.u8(); break;
            case act::interrupts: rig.interrupts(in.flag()); break;
            case act::restart: rig.restart(); break;
            case act::config_change: {
                device_model& m = rig.device().model();
                const uint8_t field = in.u8();
                const uint32_t v = in.u8() < 200 ? in.u8() : in.u32();
                switch (field % 8) {
                    case 0: m.num_queues = v; break;
                    case 1: m.seg_max = v; break;
                    case 2: m.cmd_per_lun = v; break;
                    case 3: m.event_info_size = v; break;
                    case 4: m.own_sense_size = v; m.honour_size_writes = false; break;
                    case 5: m.own_cdb_size = v; m.honour_size_writes = false; break;
                    case 6: m.honour_size_writes = true; break;
                    case 7: m.generation_churn = v % 40; break;
                }
                rig.device().bump_generation();
                break;
            }
            case act::stomp: {
                const uint8_t where = in.u8();
                const uint32_t off = in.u16() | uint32_t(in.u8()) << 16;
                uint8_t b[8];
                const uint8_t n = uint8_t(1 + in.below(8));
                for (uint8_t i = 0; i < n; ++i) b[i] = in.u8();
                rig.device_stomp(where, off, b, n);
                break;
            }
            case act::count: break;
        }
    }
}

// Build the rig for the device's transport, start it, and play the rest of the input.
template <class Transport>
void play(const rig_setup& p, input& in, const act* table, size_t n_table) {
    driver_rig<Transport> rig(p.m, p.c, p.fill);
    rig.start();
    run_actions(rig, in, table, n_table);
}

inline void play(const rig_setup& p, input& in, const act* table, size_t n_table) {
    if (p.m.legacy)
        play<vscsi::legacy_pci<hostile_device>>(p, in, table, n_table);
    else
        play<vscsi::modern_pci<hostile_device>>(p, in, table, n_table);
}

// Writing seeds in the same language: each method encodes one action exactly as
// run_actions() decodes it, through the target's opcode table.
class script : public seed {
public:
    script(const act* table, size_t n) : table_(table), n_(n) {}

    script& setup(uint8_t features, uint8_t sizes, uint8_t slots, uint8_t counts, uint8_t queues, uint8_t limits,
                  uint8_t times, uint8_t fill = 0xa5) {
        u8(features).u8(sizes).u8(slots).u8(counts).u8(queues).u8(limits).u8(times).u8(fill);
        return *this;
    }
    script& submit(const request_shape& r) {
        op(act::submit);
        const bool pi = r.pi_out || r.pi_in;
        u8(uint8_t(r.n_out | r.n_in << 2 | (pi ? 0x10 : 0))).u8(r.target);
        u8(r.lun == vscsi::wlun_report_luns ? 0xff : uint8_t(r.lun)).u8(uint8_t(r.cdb_len - 1)).u8(r.cdb_seed).u8(r.attr);
        for (int i = 0; i < r.n_out + r.n_in; ++i) u16(uint16_t(r.seg_len[i] - 1));
        if (pi) u8(uint8_t(r.pi_out)).u8(uint8_t(r.pi_in));
        return static_cast<script&>(u8(r.timeout_ns ? uint8_t(127 + r.timeout_ns / 1000) : 0).u8(uint8_t(r.queue)));
    }
    script& submit_batch(uint8_t n, uint8_t q = 0) { return static_cast<script&>(op(act::submit_batch).u8(uint8_t(n - 1)).u8(q)); }
    script& kick() { return op(act::kick); }
    script& poll(int times = 1) {
        for (int i = 0; i < times; ++i) op(act::poll);
        return *this;
    }
    // status: an even SAM status up to 10 (GOOD, CHECK CONDITION, CONDITION MET, BUSY, ...);
    // sense_len and residual small (< 200, residual in units of 16) unless raw.
    // response: 0..13, or >= 224 for itself
    script& return_request(uint8_t queue, uint8_t pick, uint8_t response, uint8_t status, uint8_t sense_len,
                           uint8_t residual16, len_mode m = len_mode::exact, uint32_t raw = 0, uint16_t data = 0) {
        op(act::return_request).u8(queue).u8(pick).u8(response).u8(uint8_t(status / 2)).u16(0x1234);
        u8(sense_len).u8(residual16).u8(0x40).u16(data).u8(uint8_t(m));
        if (m == len_mode::raw) u32(raw);
        return *this;
    }
    script& return_request_raw(uint8_t pick, uint32_t sense_len, uint32_t residual) {
        op(act::return_request).u8(0).u8(pick).u8(0).u8(1).u16(0).u8(0xff).u32(sense_len).u8(0xff).u32(residual);
        return static_cast<script&>(u8(0x11).u16(0).u8(uint8_t(len_mode::exact)));
    }
    script& return_control(uint8_t pick, uint8_t response, uint32_t actual = 0, len_mode m = len_mode::exact) {
        return static_cast<script&>(op(act::return_control).u8(pick).u8(response).u32(actual).u8(uint8_t(m)));
    }
    // len: 16, or 0..16 for a short one
    script& return_event(uint8_t pick, const uint8_t (&ev)[16], uint32_t len = 16) {
        op(act::return_event).u8(pick);
        for (uint8_t b : ev) u8(b);
        return static_cast<script&>(u8(len == 16 ? 0 : uint8_t(128 + len)));
    }
    script& answer_all() { return op(act::answer_all); }
    script& raw_entry(uint8_t queue, uint8_t ahead, uint8_t id, uint8_t len2) {
        return static_cast<script&>(op(act::raw_entry).u8(queue).u8(ahead).u8(uint8_t(id % 16)).u8(len2));
    }
    script& bump_used(uint8_t queue, uint8_t k) { return static_cast<script&>(op(act::bump_used).u8(queue).u8(uint8_t(k - 1))); }
    script& set_used(uint8_t queue, uint16_t v) { return static_cast<script&>(op(act::set_used).u8(queue).u16(v)); }
    script& suppress(uint8_t queue, bool flags, uint16_t v) {
        return static_cast<script&>(op(act::suppress).u8(queue).u8(flags).u16(v));
    }
    script& scribble(uint8_t queue, uint8_t pick, uint16_t off, uint8_t v, uint8_t n) {
        return static_cast<script&>(op(act::scribble).u8(queue).u8(pick).u16(off).u8(v).u8(uint8_t(n - 1)));
    }
    // t < 200: t x 100 ns; t >= 200: (t - 199) ms
    script& advance(uint8_t t) { return static_cast<script&>(op(act::advance).u8(t)); }
    script& tmf(vscsi::tmf f, uint8_t target, uint8_t lun, uint8_t pick_outstanding) {
        return static_cast<script&>(op(act::tmf).u8(uint8_t(f)).u8(target).u8(lun).u8(pick_outstanding));
    }
    script& an(bool subscribe, uint8_t target, uint8_t lun, uint8_t events) {
        return static_cast<script&>(op(act::an).u8(subscribe).u8(target).u8(lun).u8(events));
    }
    script& reset_device() { return op(act::reset_device); }
    script& needs_reset() { return op(act::needs_reset); }
    script& reset_delay(uint8_t polls) { return static_cast<script&>(op(act::reset_delay).u8(polls)); }
    script& interrupts(bool on) { return static_cast<script&>(op(act::interrupts).u8(on)); }
    script& restart() { return op(act::restart); }
    // field: 0 num_queues, 1 seg_max, 2 cmd_per_lun, 3 event_info_size, 4 own sense size,
    // 5 own cdb size, 6 honour writes again, 7 generation churn
    script& config_change(uint8_t field, uint8_t v) { return static_cast<script&>(op(act::config_change).u8(field).u8(0).u8(v)); }
    // where: 0 anywhere in the DMA region, or 1 used ring, 2 avail ring, 3 descriptor table of
    // virtqueue (where >> 2); off is taken modulo that part's size.
    script& stomp(uint8_t where, uint32_t off, std::initializer_list<uint8_t> bytes) {
        op(act::stomp).u8(where).u16(uint16_t(off)).u8(uint8_t(off >> 16)).u8(uint8_t(bytes.size() - 1));
        for (uint8_t b : bytes) u8(b);
        return *this;
    }
    // Whether this target's table has the action (seeds skip what a target does not do).
    bool has(act a) const {
        for (size_t i = 0; i < n_; ++i)
            if (table_[i] == a) return true;
        return false;
    }

private:
    script& op(act a) {
        for (size_t i = 0; i < n_; ++i)
            if (table_[i] == a) return static_cast<script&>(u8(uint8_t(i)));
        FUZZ_CHECK(false, "action %u not in this target's table", unsigned(a));
        return *this;
    }
    const act* table_;
    size_t n_;
};

}  // namespace fuzz
