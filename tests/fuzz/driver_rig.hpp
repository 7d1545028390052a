// The real initiator (initiator.hpp over pci.hpp's legacy or modern transport) driven
// against hostile_device.hpp, with the books kept on the side: every request, TMF and AN the
// fuzzer submitted, every chain the device holds, and, before each poll, a prediction of what
// the driver must reap from the rings as they stand (ring_peer::reap). After every call into
// the driver it checks:
//
//   - every request completes exactly once, with the tag and target it was submitted with;
//   - a request completes only when the device returned it validly or was reset in that call
//     (never while the device still owns its buffers), and everything the device returned
//     validly completes in that poll;
//   - a completion says what the device wrote: response, status, qualifier and sense bytes,
//     with sense_len clamped to sense_size and to what the device wrote, residual clamped to
//     the data length;
//   - a ring the device lied on is not used again: the device is reset in that poll;
//   - events decode to what the device wrote, short ones are dropped (modern), and the event
//     queue is kept populated;
//   - every chain the driver posts is well formed and framed by the negotiated sizes, uses
//     memory of no chain in flight, and respects seg_max and cmd_per_lun;
//   - the driver's private region (its own allocation, never in the device's dma_space) is
//     exactly as the driver left it whenever the driver is called again: nothing the device
//     did between calls reached it.
//
// Request queues can be handed to queue handles (take_queue): submits to such a queue go
// through its handle, only the handle's poll reaps it, and the initiator's poll leaves it
// alone. A reset then waits for every handle's owner to call in, and each handle completes
// what the reset reclaimed at its next poll: those commands may complete later than the
// reset, as device_reset or timed_out, and nothing else of theirs may.
//
// A device that writes anywhere in the DMA region (device_stomp) leaves the books of this
// side behind: from then until the device is reset, the rig stops modelling rings and chains
// and holds the driver to what no lie can excuse: nothing completes twice or unasked for,
// completions name their own request with clamped lengths, the in-flight count is true,
// the private region stays untouched, and AddressSanitizer sees no stray access.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include <vscsi/initiator.hpp>
#include <vscsi/pci.hpp>

#include "dma_space.hpp"
#include "fuzz_check.hpp"
#include "hostile_device.hpp"
#include "ring_peer.hpp"

namespace fuzz {

// Everything the driver reported, in order.
struct recorder {
    struct io {
        vscsi::io_completion c;
        std::vector<uint8_t> sense;  // copied: the pointer is valid during the callback only
    };
    std::vector<io> done;
    std::vector<vscsi::tmf_completion> tmfs;
    std::vector<vscsi::an_completion> ans;
    std::vector<vscsi::event_info> events;
    void on_complete(const vscsi::io_completion& c) {
        FUZZ_CHECK(c.sense_len == 0 || c.sense, "sense_len %u without sense", c.sense_len);
        done.push_back(io{c, std::vector<uint8_t>(c.sense, c.sense + c.sense_len)});
    }
    void on_tmf(const vscsi::tmf_completion& c) { tmfs.push_back(c); }
    void on_an(const vscsi::an_completion& c) { ans.push_back(c); }
    void on_event(const vscsi::event_info& e) { events.push_back(e); }
    void clear() {
        done.clear();
        tmfs.clear();
        ans.clear();
        events.clear();
    }
};

// One request as the fuzzer shapes it.
struct request_shape {
    uint8_t target = 0;
    uint16_t lun = 0;
    uint8_t cdb_len = 6;
    uint8_t cdb_seed = 0;
    uint8_t attr = 0;
    uint8_t n_out = 0, n_in = 0;  // data segments
    uint16_t seg_len[4] = {512, 512, 512, 512};
    uint32_t pi_out = 0, pi_in = 0;
    uint64_t timeout_ns = 0;
    uint16_t queue = 0;
};

// What the device writes into a response header.
struct response_shape {
    uint8_t response = 0;
    uint8_t status = 0;
    uint16_t qualifier = 0;
    uint32_t sense_len = 0;
    uint32_t residual = 0;
    uint8_t sense_fill = 0;
    uint32_t data_fill = 0;  // data-in bytes the device writes
};

// How long the device says its answer is.
enum class len_mode : uint8_t { exact, header, header_and_sense, zero, short_header, raw };

template <class Transport>
class driver_rig {
public:
    // The hostile device speaks split rings (ring_peer.hpp): an initiator for split rings
    // alone, which declines VIRTIO_F_RING_PACKED whatever the device offers. Packed rings
    // have fuzz_packed_ring.
    using initiator_t =
        vscsi::initiator<vscsi::hosted_platform, Transport, 32, 96, 4, vscsi::split_ring<vscsi::hosted_platform>>;
    using handle_t = typename initiator_t::queue_handle;
    static constexpr uint64_t region_bus = 0x100000000ull;
    static constexpr uint64_t ladder_cookie = 1ull << 63;

    // region_fill: what the DMA region holds before the driver gets it (stale memory).
    driver_rig(const device_model& m, const vscsi::initiator_config& c, uint8_t region_fill = 0xa5)
        : dev_(m, mem_), transport_(dev_), cfg_(c), fill_(region_fill) {}

    ~driver_rig() {
        // Leave nothing device-owned behind: a device that never acknowledges resets is
        // allowed to at the end.
        finish();
    }

    hostile_device& device() { return dev_; }
    initiator_t* initiator() { return ini_.get(); }
    uint64_t now() const { return now_; }
    void advance(uint64_t ns) { now_ += ns; }
    bool running() const { return ini_ && ini_->state() == vscsi::initiator_state::running; }
    size_t outstanding() const { return reqs_.size(); }

    // ---- driver calls ----
    vscsi::status start() {
        if (!ini_) {
            FUZZ_CHECK(transport_.probe() == vscsi::status::ok, "probe of a well-formed function failed");
            ini_ = std::make_unique<initiator_t>(transport_);
            const size_t bytes = initiator_t::region_bytes(cfg_);
            FUZZ_CHECK(bytes > 0, "initiator config rejected");
            region_bus_ = region_bus;
            region_ = mem_.add(region_bus_, bytes, 4096, fill_);
            region_bytes_ = bytes;
            books_.allocate(initiator_t::private_bytes(cfg_), fill_);
        }
        FUZZ_CHECK(reqs_.empty() && ctrls_.empty(), "start with requests outstanding");
        vscsi::status s = vscsi::status::ok;
        call([&] { s = ini_->start(cfg_, vscsi::dma_region{region_, region_bus_, region_bytes_}, books_.region()); });
        if (s == vscsi::status::ok) {
            FUZZ_CHECK(dev_.status() & vscsi::dev_status::driver_ok, "start succeeded without DRIVER_OK");
            check_started();
        } else {
            FUZZ_CHECK(!(dev_.status() & vscsi::dev_status::driver_ok) || dev_.status() & vscsi::dev_status::failed,
                       "start failed (%s) and left the device running", vscsi::to_string(s));
        }
        return s;
    }

    // Stop, hand the driver a new region (the old one is freed, as stop() allows), start.
    vscsi::status restart() {
        give_back_all();
        const vscsi::status s = stop();
        if (s != vscsi::status::ok) return s;
        mem_.remove(region_bus_);
        region_bus_ += 0x10000000ull;
        region_ = mem_.add(region_bus_, region_bytes_, 4096, ++fill_);
        books_.allocate(books_.bytes(), fill_);
        return start();
    }

    vscsi::status submit(const request_shape& shape) {
        if (!ini_) return vscsi::status::invalid_argument;
        request_rec r;
        r.user_data = next_ud_++;
        r.target = shape.target;
        r.lun = shape.lun;
        r.attr = shape.attr;
        r.cdb.resize(shape.cdb_len);
        for (size_t i = 0; i < r.cdb.size(); ++i) r.cdb[i] = uint8_t(shape.cdb_seed * 31 + i * 7);
        for (uint8_t i = 0; i < shape.n_out + shape.n_in && i < 4; ++i) {
            const uint32_t len = shape.seg_len[i] ? shape.seg_len[i] : 1;
            const uint64_t bus = next_data_bus_;
            next_data_bus_ += (len + 127) & ~uint64_t(63);
            mem_.add(bus, len, 16, 0x5a);
            (i < shape.n_out ? r.out : r.in).push_back(vscsi::sg_entry{bus, len});
            r.data_len += len;
        }
        r.pi_out = shape.pi_out;
        r.pi_in = shape.pi_in;
        vscsi::io_request q{};
        q.target = r.target;
        q.lun = r.lun;
        q.cdb = r.cdb.data();
        q.cdb_len = uint32_t(r.cdb.size());
        q.data_out = r.out.empty() ? nullptr : r.out.data();
        q.n_out = uint32_t(r.out.size());
        q.data_in = r.in.empty() ? nullptr : r.in.data();
        q.n_in = uint32_t(r.in.size());
        q.pi_bytes_out = r.pi_out;
        q.pi_bytes_in = r.pi_in;
        q.attr = vscsi::task_attr(shape.attr);
        q.timeout_ns = shape.timeout_ns;
        q.queue = shape.queue;
        q.user_data = r.user_data;
        vscsi::result<uint64_t> res{};
        const uint16_t queue = ini_->request_queues() ? uint16_t(shape.queue % ini_->request_queues()) : 0;
        auto h = handles_.find(queue);
        call([&] {
            res = h != handles_.end() ? h->second.submit(q, now_) : ini_->submit(q, now_);
            if (res.ok()) {
                r.ring = queue;
                ring_peer* p = dev_.peer(uint16_t(vscsi::first_request_queue + r.ring));
                FUZZ_CHECK(p || !dev_.tracking(), "submitted to request queue %u that is not set up", r.ring);
                if (p) p->note_add();
                r.tag = res.value;
                r.deadline = now_ + (shape.timeout_ns ? shape.timeout_ns : cfg_.default_timeout_ns);
                FUZZ_CHECK(!tag_to_ud_.count(r.tag), "tag %#llx handed out twice", (unsigned long long)r.tag);
                for (const auto& kv : reqs_)
                    FUZZ_CHECK((kv.second.tag & 0xffff) != (r.tag & 0xffff), "slot %u reused while in flight",
                               unsigned(r.tag & 0xffff));
                tag_to_ud_[r.tag] = r.user_data;
                reqs_[r.user_data] = r;
            }
        });
        if (!res.ok()) {
            if (getenv("VSCSI_FUZZ_TRACE"))
                fprintf(stderr, "submit (%zu out, %zu in, cdb %zu): %s\n", r.out.size(), r.in.size(), r.cdb.size(),
                        vscsi::to_string(res.st));
            free_buffers(r);
            const vscsi::status s = res.st;
            FUZZ_CHECK(s == vscsi::status::busy || s == vscsi::status::invalid_argument ||
                           s == vscsi::status::not_supported || s == vscsi::status::needs_reset,
                       "submit failed with %s", vscsi::to_string(s));
        }
        return res.st;
    }

    void kick() {
        if (!ini_) return;
        call([&] {
            ini_->kick();
            for (auto& kv : handles_) kv.second.kick();
        });
    }

    // ---- queue handles ----
    void take_queue(uint16_t q) {
        if (!ini_ || handles_.count(q)) return;
        handle_t h;
        vscsi::status s = vscsi::status::ok;
        call([&] { s = ini_->take_queue(q, h); });
        FUZZ_CHECK(s == vscsi::status::ok || s == vscsi::status::busy || s == vscsi::status::needs_reset ||
                       s == vscsi::status::invalid_argument,
                   "take_queue: %s", vscsi::to_string(s));
        FUZZ_CHECK((s == vscsi::status::invalid_argument) == (q >= ini_->request_queues() && s != vscsi::status::needs_reset),
                   "take_queue(%u) of %u queues: %s", q, ini_->request_queues(), vscsi::to_string(s));
        FUZZ_CHECK(h.valid() == (s == vscsi::status::ok), "take_queue: %s, handle valid %d", vscsi::to_string(s), h.valid());
        if (s == vscsi::status::ok) handles_.emplace(q, std::move(h));
    }
    void give_back(uint16_t q) {
        auto h = handles_.find(q);
        if (h == handles_.end()) return;
        call([&] { handles_.erase(h); });
    }
    void give_back_all() {
        if (!handles_.empty()) call([&] { handles_.clear(); });
    }
    // The owner of queue q polls its handle: that queue alone is reaped.
    uint32_t poll_queue(uint16_t q) {
        auto h = handles_.find(q);
        if (h == handles_.end()) return 0;
        if (!dev_.tracking()) {
            uint32_t n = 0;
            call([&] { n = h->second.poll(now_, rec_); });
            return n;
        }
        expectation e = ini_->resetting() ? expectation{} : predict(int(q));
        const uint64_t errors_before = ini_->stats().protocol_errors;
        uint32_t n = 0;
        call([&] { n = h->second.poll(now_, rec_); }, &e);
        FUZZ_CHECK(n == e.reaped_requests, "queue %u's poll says %u completions from the device, %zu were returned validly",
                   q, n, e.reaped_requests);
        if (e.broken) {
            FUZZ_CHECK(ini_->stats().protocol_errors > errors_before, "a ring lie went uncounted");
            reset_owed_ = true;  // the control owner resets once every owner has stopped
        }
        return n;
    }
    size_t handles() const { return handles_.size(); }

    vscsi::status tmf(vscsi::tmf function, uint8_t target, uint16_t lun, uint64_t tag) {
        if (!ini_) return vscsi::status::invalid_argument;
        ctrl_rec c{};
        c.user_data = next_ud_++;
        c.function = function;
        c.target = target;
        c.lun = lun;
        c.tag = tag;
        c.deadline = now_ + cfg_.escalation_step_ns;
        vscsi::status s = vscsi::status::ok;
        expect_caller_ctrl_ = &c;
        call([&] { s = ini_->submit_tmf(function, target, lun, tag, c.user_data, now_); });
        expect_caller_ctrl_ = nullptr;
        if (s == vscsi::status::ok) {
            FUZZ_CHECK(c.posted || !dev_.tracking(), "TMF accepted and not posted");
            ctrls_[c.user_data] = c;
        }
        return s;
    }

    vscsi::status an(vscsi::ctrl_type type, uint8_t target, uint16_t lun, uint32_t events) {
        if (!ini_) return vscsi::status::invalid_argument;
        ctrl_rec c{};
        c.user_data = next_ud_++;
        c.an = true;
        c.an_type = type;
        c.target = target;
        c.lun = lun;
        c.events = events;
        c.deadline = now_ + cfg_.escalation_step_ns;
        vscsi::status s = vscsi::status::ok;
        expect_caller_ctrl_ = &c;
        call([&] { s = ini_->submit_an(type, target, lun, events, c.user_data, now_); });
        expect_caller_ctrl_ = nullptr;
        if (s == vscsi::status::ok) {
            FUZZ_CHECK(c.posted || !dev_.tracking(), "AN accepted and not posted");
            ctrls_[c.user_data] = c;
        }
        return s;
    }

    uint32_t poll() {
        if (!ini_) return 0;
        if (!dev_.tracking()) {
            uint32_t n = 0;
            call([&] { n = ini_->poll(now_, rec_); });
            return n;
        }
        expectation e = ini_->resetting() ? expectation{} : predict();
        const uint64_t resets_before = dev_.resets();
        const uint64_t errors_before = ini_->stats().protocol_errors;
        const uint64_t drops_before = ini_->stats().events_dropped;
        const bool quiet = !e.broken && !needs_reset_ && !reset_owed_ && now_ < earliest_deadline();
        uint32_t n = 0;
        call([&] { n = ini_->poll(now_, rec_); }, &e);
        FUZZ_CHECK(n == e.reaped_requests, "poll says %u completions from the device, %zu were returned validly", n,
                   e.reaped_requests);
        FUZZ_CHECK(ini_->stats().events_dropped - drops_before == e.drops, "events dropped: %llu, expected %llu",
                   (unsigned long long)(ini_->stats().events_dropped - drops_before), (unsigned long long)e.drops);
        if (e.broken) {
            FUZZ_CHECK(ini_->stats().protocol_errors > errors_before, "a ring lie went uncounted");
            // With queues handed out the reset waits for their owners.
            if (handles_.empty()) FUZZ_CHECK(dev_.resets() > resets_before, "a ring lied and the device was not reset");
            reset_owed_ = true;
        }
        if (quiet) FUZZ_CHECK(dev_.resets() == resets_before, "device reset with no lie, deadline or NEEDS_RESET");
        if (dev_.resets() > resets_before) needs_reset_ = reset_owed_ = false;
        return n;
    }

    vscsi::status reset_device() {
        if (!ini_) return vscsi::status::invalid_argument;
        vscsi::status s = vscsi::status::ok;
        call([&] { s = ini_->reset_device(rec_); });
        FUZZ_CHECK(s != vscsi::status::busy || !handles_.empty(), "reset_device busy with no queue handed out");
        if (s == vscsi::status::busy)
            reset_owed_ = true;
        else
            needs_reset_ = reset_owed_ = false;
        return s;
    }

    vscsi::status stop() {
        if (!ini_) return vscsi::status::ok;
        vscsi::status s = vscsi::status::ok;
        call([&] { s = ini_->stop(rec_); });
        FUZZ_CHECK((s == vscsi::status::busy) == !handles_.empty(), "stop() says %s with %zu handles out",
                   vscsi::to_string(s), handles_.size());
        if (s == vscsi::status::busy) return s;
        if (s == vscsi::status::ok) {
            FUZZ_CHECK(reqs_.empty() && ctrls_.empty(), "stop left %zu requests, %zu control requests outstanding",
                       reqs_.size(), ctrls_.size());
            needs_reset_ = reset_owed_ = false;
        }
        return s;
    }

    void interrupts(bool enable) {
        if (!ini_) return;
        if (!enable) {
            call([&] { ini_->disable_interrupts(); });
            return;
        }
        bool owed = false;
        if (running())
            for (uint16_t i = 0; i < max_virtqueues; ++i)
                if (ring_peer* p = dev_.peer(i))
                    if (i < vscsi::first_request_queue || !handles_.count(uint16_t(i - vscsi::first_request_queue)))
                        owed |= p->used_idx() != p->last_used();
        bool pending = false;
        const bool tracked = dev_.tracking();
        call([&] { pending = ini_->enable_interrupts(); });
        if (running() && tracked)
            FUZZ_CHECK(pending == owed, "enable_interrupts says %d, used rings say %d", pending, owed);
    }

    // Stop; if the device will not acknowledge the reset, let it, and stop again: after that
    // nothing may be outstanding.
    void finish() {
        if (!ini_) return;
        if (getenv("VSCSI_FUZZ_TRACE")) trace();
        give_back_all();
        if (stop() != vscsi::status::ok) {
            dev_.model().reset_delay = 0;
            FUZZ_CHECK(stop() == vscsi::status::ok, "stop failed on a device that resets at once");
        }
        FUZZ_CHECK(ini_->in_flight() == 0, "in flight after stop");
    }

    // ---- device actions ----
    void set_needs_reset() {
        dev_.set_needs_reset();
        needs_reset_ = true;
    }

    // The device returns a chain it holds, after writing an answer into it.
    bool device_return(uint16_t qi, uint8_t pick, const response_shape& r, len_mode mode, uint32_t raw_len) {
        ring_peer* p = dev_.peer(qi);
        if (!p) return false;
        chain* c = pick_chain(*p, pick, true);
        if (!c) return false;
        uint32_t len = 0;
        if (qi >= vscsi::first_request_queue) {
            const uint32_t sense_size = dev_.live_sense_size();
            uint8_t hdr[12 + 256] = {};
            st32(hdr, r.sense_len);
            st32(hdr + 4, r.residual);
            st16(hdr + 8, r.qualifier);
            hdr[10] = r.status;
            hdr[11] = r.response;
            const uint32_t sense_bytes = sense_size < 256 ? sense_size : 256;
            for (uint32_t i = 0; i < sense_bytes; ++i) hdr[12 + i] = uint8_t(r.sense_fill + i);
            const uint32_t resp_len = 12 + sense_size;
            p->write(*c, 0, hdr, 12 + sense_bytes);
            uint32_t data = 0;
            const uint32_t room = c->writable > resp_len ? c->writable - resp_len : 0;
            data = r.data_fill < room ? r.data_fill : room;
            std::vector<uint8_t> fill(data, uint8_t(r.sense_fill ^ 0x3c));
            if (data) p->write(*c, resp_len, fill.data(), data);
            const uint32_t sl = r.sense_len < sense_size ? r.sense_len : sense_size;
            switch (mode) {
                case len_mode::exact: len = resp_len + data; break;
                case len_mode::header: len = 12; break;
                case len_mode::header_and_sense: len = 12 + sl; break;
                case len_mode::zero: len = 0; break;
                case len_mode::short_header: len = 11; break;
                case len_mode::raw: len = raw_len; break;
            }
        } else if (qi == vscsi::controlq_index) {
            uint8_t b[5];
            st32(b, r.residual);  // AN: event_actual
            b[4] = r.response;
            const bool is_an = c->bufs.size() == 2 && c->bufs[1].len == 5;
            if (is_an)
                p->write(*c, 0, b, 5);
            else
                p->write(*c, 0, &r.response, 1);
            len = mode == len_mode::exact ? c->writable : mode == len_mode::zero ? 0 : mode == len_mode::raw ? raw_len : 1;
        } else {
            return false;  // events: device_event()
        }
        c->cookie |= returned_mark;
        p->push(c->head, len);
        return true;
    }

    // The device returns an event buffer with these 16 bytes, saying it wrote `len`.
    bool device_event(uint8_t pick, const uint8_t (&ev)[16], uint32_t len) {
        ring_peer* p = dev_.peer(vscsi::eventq_index);
        if (!p) return false;
        chain* c = pick_chain(*p, pick, true);
        if (!c) return false;
        p->write(*c, 0, ev, 16);
        c->cookie |= returned_mark;
        p->push(c->head, len);
        return true;
    }

    // Answer everything the device holds the way a good device would.
    void device_answer_all() {
        for (uint16_t qi = 0; qi < max_virtqueues; ++qi) {
            if (qi == vscsi::eventq_index) continue;
            ring_peer* p = dev_.peer(qi);
            if (!p) continue;
            std::vector<uint16_t> heads;
            for (const auto& kv : p->held())
                if (kv.second.published && !(kv.second.cookie & returned_mark)) heads.push_back(kv.first);
            for (uint16_t h : heads) {
                chain& c = p->held()[h];
                response_shape good{};
                if (qi >= vscsi::first_request_queue) {
                    const request_rec* r = find_request(c.cookie & ~returned_mark);
                    good.data_fill = r ? r->in_len() : 0;
                }
                c.cookie |= returned_mark;
                write_answer(*p, c, qi, good);
            }
        }
    }

    void device_raw_entry(uint16_t qi, uint16_t ahead, uint32_t id, uint32_t len) {
        if (ring_peer* p = dev_.peer(qi)) p->put_entry(ahead, id, len);
    }
    void device_bump(uint16_t qi, uint16_t k) {
        if (ring_peer* p = dev_.peer(qi)) p->set_used(uint16_t(p->device_used() + k));
    }
    void device_set_used(uint16_t qi, uint16_t v) {
        if (ring_peer* p = dev_.peer(qi)) p->set_used(v);
    }
    void device_suppress(uint16_t qi, bool flags, uint16_t v) {
        ring_peer* p = dev_.peer(qi);
        if (!p) return;
        if (flags)
            p->set_used_flags(uint16_t(v & 1));
        else
            p->set_avail_event(v);
    }
    // A device may write anything into buffers it holds.
    void device_scribble(uint16_t qi, uint8_t pick, uint32_t off, uint8_t value, uint8_t n) {
        ring_peer* p = dev_.peer(qi);
        if (!p) return;
        chain* c = pick_chain(*p, pick, false);
        if (!c) return;
        std::vector<uint8_t> b(n, value);
        p->write(*c, off, b.data(), b.size());
    }

    // A device that writes wherever it may: `n` bytes at `off` of the DMA region (where 0), or
    // of one queue's used ring (1), available ring (2) or descriptor table (3), queue
    // where >> 2. Ring indices, descriptors, headers, sense, event buffers: all of it.
    void device_stomp(uint8_t where, uint32_t off, const uint8_t* bytes, uint8_t n) {
        if (!ini_) return;
        uint64_t base = region_bus_;
        uint64_t len = region_bytes_;
        if (where & 3) {
            const hostile_device::queue& q = dev_.q(uint16_t((where >> 2) % max_virtqueues));
            if (q.enabled) {
                switch (where & 3) {
                    case 1: base = q.used, len = 6 + 8ull * q.size; break;
                    case 2: base = q.avail, len = 6 + 2ull * q.size; break;
                    default: base = q.desc, len = 16ull * q.size; break;
                }
            }
        }
        const uint64_t at = base + off % len;
        const uint64_t k = n < len - off % len ? n : len - off % len;
        uint8_t* p = mem_.translate(at, k);
        FUZZ_CHECK(p && at >= region_bus_ && at + k <= region_bus_ + region_bytes_, "stomp outside the DMA region");
        memcpy(p, bytes, k);
        dev_.stop_tracking();
    }

    // A chain for the fuzzer to name: by its held order, or a request's by its user data.
    uint64_t outstanding_tag(uint8_t pick) const {
        if (reqs_.empty()) return 0;
        auto it = reqs_.begin();
        std::advance(it, pick % reqs_.size());
        return it->second.tag;
    }

    // What happened, for a person replaying one input (VSCSI_FUZZ_TRACE=1).
    void trace() const {
        const vscsi::initiator_stats& st = ini_->stats();
        fprintf(stderr,
                "state %d: submitted %llu completed %llu kicks %llu events %llu dropped %llu rekicks %llu aborts %llu "
                "lun resets %llu nexus resets %llu device resets %llu protocol errors %llu; device: resets %llu "
                "notifies %llu; outstanding %zu\n",
                int(ini_->state()), (unsigned long long)st.submitted, (unsigned long long)st.completed,
                (unsigned long long)st.kicks, (unsigned long long)st.events, (unsigned long long)st.events_dropped,
                (unsigned long long)st.rekicks, (unsigned long long)st.aborts_sent, (unsigned long long)st.lun_resets_sent,
                (unsigned long long)st.nexus_resets_sent, (unsigned long long)st.device_resets,
                (unsigned long long)st.protocol_errors, (unsigned long long)dev_.resets(),
                (unsigned long long)dev_.notifies(), reqs_.size());
    }

private:
    static constexpr uint64_t returned_mark = 1ull << 62;  // in chain cookies: the device gave it back

    struct request_rec {
        uint64_t user_data = 0, tag = 0, deadline = 0;
        uint8_t target = 0, attr = 0;
        uint16_t lun = 0, ring = 0;
        std::vector<uint8_t> cdb;
        std::vector<vscsi::sg_entry> out, in;
        uint32_t pi_out = 0, pi_in = 0;
        uint32_t data_len = 0;
        bool seen = false;    // the device has seen its chain
        bool ladder = false;  // a ladder TMF named its tag: ABORTED now reads as timed out
        bool reset_owed = false;  // a reset reclaimed it on a handle's queue: the handle completes it later
        uint32_t in_len() const {
            uint32_t n = 0;
            for (const auto& s : in) n += s.len;
            return n;
        }
    };
    struct ctrl_rec {
        uint64_t user_data = 0, tag = 0, deadline = 0;
        bool an = false, posted = false;
        vscsi::tmf function{};
        vscsi::ctrl_type an_type{};
        uint8_t target = 0;
        uint16_t lun = 0;
        uint32_t events = 0;
    };
    struct expected_io {
        uint8_t response, status;
        uint16_t qualifier;
        vscsi::io_outcome outcome;
        uint32_t residual, sense_len;
        std::vector<uint8_t> sense;
    };
    struct expected_ctrl {
        uint8_t response;
        uint32_t event_actual;
    };
    struct expectation {
        std::map<uint64_t, expected_io> io;      // by user data
        std::map<uint64_t, expected_ctrl> ctrl;  // caller TMF/AN by user data
        std::vector<vscsi::event_info> events;
        uint64_t drops = 0;
        size_t reaped_requests = 0;
        bool broken = false;
    };

    // Run one call into the driver, then check everything it did.
    template <class F>
    void call(F&& f, expectation* e = nullptr) {
        rec_.clear();
        FUZZ_CHECK(books_.as_left(), "the driver's private region changed while the device ran (%zu bytes)",
                   books_.changed());
        const uint64_t acks_before = dev_.reset_acks();
        const bool tracked = dev_.tracking();
        std::set<uint64_t> before;
        for (const auto& kv : reqs_) before.insert(kv.first);
        f();
        books_.snapshot();
        const bool reset_acked = dev_.reset_acks() > acks_before;
        if (reset_acked) ladder_deadlines_.clear();
        // The books of this side start again with the rings the driver set up after a reset.
        if (tracked || dev_.tracking()) take_new_chains();
        expectation none;
        check_completions(e ? *e : none, reset_acked, tracked);
        if (reset_acked) {
            for (uint64_t ud : before) {
                auto it = reqs_.find(ud);
                if (it == reqs_.end()) continue;
                FUZZ_CHECK(handles_.count(it->second.ring), "request %llu still outstanding after the device was reset",
                           (unsigned long long)ud);
                it->second.reset_owed = true;
            }
        }
        FUZZ_CHECK(ini_->in_flight() == reqs_.size(), "driver counts %u in flight, %zu outstanding",
                   ini_->in_flight(), reqs_.size());
        if (running()) check_started();
    }

    // Standing invariants of a running initiator.
    void check_started() {
        FUZZ_CHECK(ini_->sense_size() == dev_.live_sense_size() && ini_->cdb_size() == dev_.live_cdb_size(),
                   "driver frames with sense %u cdb %u, device says %u %u", ini_->sense_size(), ini_->cdb_size(),
                   dev_.live_sense_size(), dev_.live_cdb_size());
        if (!dev_.tracking()) return;
        ring_peer* ev = dev_.peer(vscsi::eventq_index);
        FUZZ_CHECK(ev, "running without an event queue");
        // A lie latched the event ring: nothing is reaped or reposted there until the reset
        // (which waits for queue owners when queues are handed out).
        if (ev->broken()) return;
        const uint32_t want = cfg_.event_buffers < ev->size() ? cfg_.event_buffers : ev->size();
        FUZZ_CHECK(ev->held().size() == want, "event queue holds %zu buffers, %u posted at start (checklist 17)",
                   ev->held().size(), want);
    }

    chain* pick_chain(ring_peer& p, uint8_t pick, bool honest) {
        std::vector<chain*> v;
        for (auto& kv : p.held())
            if (kv.second.published && (!honest || !(kv.second.cookie & returned_mark))) v.push_back(&kv.second);
        return v.empty() ? nullptr : v[pick % v.size()];
    }

    const request_rec* find_request(uint64_t ud) const {
        auto it = reqs_.find(ud);
        return it == reqs_.end() ? nullptr : &it->second;
    }

    void write_answer(ring_peer& p, chain& c, uint16_t qi, const response_shape& r) {
        uint32_t len;
        if (qi >= vscsi::first_request_queue) {
            uint8_t hdr[12] = {};
            st32(hdr + 4, 0);
            hdr[11] = r.response;
            p.write(c, 0, hdr, 12);
            const uint32_t resp_len = 12 + dev_.live_sense_size();
            std::vector<uint8_t> data(r.data_fill, 0x77);
            if (!data.empty()) p.write(c, resp_len, data.data(), data.size());
            len = resp_len + r.data_fill;
            if (len > c.writable) len = c.writable;
        } else {
            uint8_t b[5] = {0, 0, 0, 0, r.response};
            p.write(c, 0, c.writable >= 5 ? b : b + 4, c.writable >= 5 ? 5 : 1);
            len = c.writable;
        }
        p.push(c.head, len);
    }

    void free_buffers(const request_rec& r) {
        for (const auto& s : r.out) mem_.remove(s.addr);
        for (const auto& s : r.in) mem_.remove(s.addr);
    }

    uint64_t earliest_deadline() const {
        uint64_t t = UINT64_MAX;
        for (const auto& kv : reqs_) t = kv.second.deadline < t ? kv.second.deadline : t;
        for (const auto& kv : ctrls_) t = kv.second.deadline < t ? kv.second.deadline : t;
        for (const auto& kv : ladder_deadlines_) t = kv.second < t ? kv.second : t;
        return t;
    }

    // ---- new chains: check and attribute ----
    void take_new_chains() {
        const std::vector<std::vector<uint16_t>> fresh = dev_.sync();
        for (uint16_t qi = 0; qi < max_virtqueues; ++qi) {
            ring_peer* p = dev_.peer(qi);
            for (uint16_t h : fresh[qi]) {
                chain& c = p->held()[h];
                if (qi == vscsi::controlq_index)
                    take_ctrl(c);
                else if (qi == vscsi::eventq_index)
                    take_event(c);
                else
                    take_request(c, uint16_t(qi - vscsi::first_request_queue));
            }
        }
        // cmd_per_lun (checklist 26): never more commands in flight to one LUN.
        const uint32_t dev_cpl = dev_.live().cmd_per_lun;
        const uint32_t limit = dev_cpl == 0 ? 1 : dev_cpl > 0xffff ? 0xffff : dev_cpl;
        std::map<uint32_t, uint32_t> per_lun;
        for (uint16_t qi = vscsi::first_request_queue; qi < max_virtqueues; ++qi)
            if (ring_peer* p = dev_.peer(qi))
                for (const auto& kv : p->held())
                    if (const request_rec* r = find_request(kv.second.cookie & ~returned_mark))
                        FUZZ_CHECK(++per_lun[uint32_t(r->target) << 16 | r->lun] <= limit,
                                   "more than cmd_per_lun=%u commands in flight to one LUN", limit);
    }

    void take_request(chain& c, uint16_t ring) {
        const bool pi = dev_.negotiated(vscsi::feature::scsi_t10_pi);
        const uint32_t req_bytes = 19 + dev_.live_cdb_size() + (pi ? 8 : 0);
        FUZZ_CHECK(!c.bufs.empty() && !c.bufs[0].writable && c.bufs[0].len == req_bytes,
                   "request header of %u bytes, framing says %u", c.bufs.empty() ? 0 : c.bufs[0].len, req_bytes);
        const uint8_t* h = mem_.translate(c.bufs[0].bus, req_bytes);
        const uint64_t tag = ld64(h + 8);
        auto t = tag_to_ud_.find(tag);
        FUZZ_CHECK(t != tag_to_ud_.end() && reqs_.count(t->second), "request chain with unknown tag %#llx",
                   (unsigned long long)tag);
        request_rec& r = reqs_[t->second];
        FUZZ_CHECK(!r.seen, "request %llu posted twice", (unsigned long long)r.user_data);
        r.seen = true;
        c.cookie = r.user_data;
        FUZZ_CHECK(ring == r.ring, "request for ring %u posted on ring %u", r.ring, ring);
        const vscsi::lun_address la = vscsi::make_lun(r.target, r.lun);
        FUZZ_CHECK(memcmp(h, la.bytes, 8) == 0, "LUN bytes of the request header");
        FUZZ_CHECK(h[16] == r.attr && h[17] == 0 && h[18] == 0, "task attribute, priority or CRN");
        const uint8_t* cdb = h + 19;
        if (pi) {
            FUZZ_CHECK(ld32(h + 19) == r.pi_out && ld32(h + 23) == r.pi_in, "PI byte counts");
            cdb = h + 27;
        }
        FUZZ_CHECK(memcmp(cdb, r.cdb.data(), r.cdb.size()) == 0, "CDB bytes");
        for (uint32_t i = uint32_t(r.cdb.size()); i < dev_.live_cdb_size(); ++i) FUZZ_CHECK(cdb[i] == 0, "CDB padding");
        const size_t want = 2 + r.out.size() + r.in.size();
        FUZZ_CHECK(c.bufs.size() == want, "request chain of %zu buffers, expected %zu", c.bufs.size(), want);
        size_t k = 1;
        for (const auto& s : r.out) {
            FUZZ_CHECK(!c.bufs[k].writable && c.bufs[k].bus == s.addr && c.bufs[k].len == s.len, "data-out segment");
            ++k;
        }
        FUZZ_CHECK(c.bufs[k].writable && c.bufs[k].len == 12 + dev_.live_sense_size(), "response buffer of %u bytes",
                   c.bufs[k].len);
        ++k;
        for (const auto& s : r.in) {
            FUZZ_CHECK(c.bufs[k].writable && c.bufs[k].bus == s.addr && c.bufs[k].len == s.len, "data-in segment");
            ++k;
        }
        const uint32_t seg_max = dev_.live().seg_max;
        if (seg_max) FUZZ_CHECK(r.out.size() <= seg_max && r.in.size() <= seg_max, "seg_max exceeded (checklist 27)");
        FUZZ_CHECK(r.out.empty() || r.in.empty() || dev_.negotiated(vscsi::feature::scsi_inout),
                   "bidirectional without INOUT (checklist 11)");
    }

    void take_ctrl(chain& c) {
        FUZZ_CHECK(c.bufs.size() == 2 && !c.bufs[0].writable && c.bufs[1].writable, "control chain shape");
        const uint8_t* q = mem_.translate(c.bufs[0].bus, c.bufs[0].len);
        const uint32_t type = c.bufs[0].len >= 4 ? ld32(q) : ~0u;
        ctrl_rec* caller = expect_caller_ctrl_;
        if (type == uint32_t(vscsi::ctrl_type::tmf)) {
            FUZZ_CHECK(c.bufs[0].len == sizeof(vscsi::tmf_req) && c.bufs[1].len == 1, "TMF framing");
            const uint32_t subtype = ld32(q + 4);
            const uint64_t tag = ld64(q + 16);
            FUZZ_CHECK(subtype <= uint32_t(vscsi::tmf::query_task_set), "TMF subtype %u", subtype);
            if (caller) {
                FUZZ_CHECK(!caller->an && !caller->posted && subtype == uint32_t(caller->function) && tag == caller->tag,
                           "TMF posted differs from the one submitted");
                const vscsi::lun_address la = vscsi::make_lun(caller->target, caller->lun);
                FUZZ_CHECK(memcmp(q + 8, la.bytes, 8) == 0, "TMF LUN bytes");
                caller->posted = true;
                c.cookie = caller->user_data;
                return;
            }
            // The escalation ladder's own: ABORT TASK, LOGICAL UNIT RESET, I_T NEXUS RESET.
            FUZZ_CHECK(subtype == uint32_t(vscsi::tmf::abort_task) || subtype == uint32_t(vscsi::tmf::logical_unit_reset) ||
                           subtype == uint32_t(vscsi::tmf::i_t_nexus_reset),
                       "ladder TMF subtype %u", subtype);
            auto t = tag_to_ud_.find(tag);
            FUZZ_CHECK(t != tag_to_ud_.end() && reqs_.count(t->second), "ladder TMF for tag %#llx not in flight",
                       (unsigned long long)tag);
            request_rec& r = reqs_[t->second];
            FUZZ_CHECK(now_ >= r.deadline, "ladder TMF before the request's deadline");
            r.ladder = true;
            c.cookie = ladder_cookie | tag;
            ladder_deadlines_[tag] = now_ + cfg_.escalation_step_ns;
            return;
        }
        FUZZ_CHECK(type == uint32_t(vscsi::ctrl_type::an_query) || type == uint32_t(vscsi::ctrl_type::an_subscribe),
                   "control request type %u", type);
        FUZZ_CHECK(c.bufs[0].len == sizeof(vscsi::an_req) && c.bufs[1].len == sizeof(vscsi::an_resp), "AN framing");
        FUZZ_CHECK(caller && caller->an && !caller->posted && type == uint32_t(caller->an_type) &&
                       ld32(q + 12) == caller->events,
                   "AN posted differs from the one submitted");
        caller->posted = true;
        c.cookie = caller->user_data;
    }

    void take_event(chain& c) {
        const uint32_t info = dev_.live().event_info_size;
        const uint32_t want = info > 64 ? 64 : info < 16 ? 16 : info;
        FUZZ_CHECK(c.bufs.size() == 1 && c.bufs[0].writable && c.bufs[0].len == want,
                   "event buffer: %zu buffers, %u bytes, want one writable of %u (checklist 18)", c.bufs.size(),
                   c.bufs.empty() ? 0 : c.bufs[0].len, want);
    }

    // ---- what the driver must reap ----
    static vscsi::io_outcome outcome_for(uint8_t response, uint8_t status) {
        using o = vscsi::io_outcome;
        switch (response) {
            case 0: return status == 0 || status == 4 ? o::good : status == 2 ? o::check_condition : o::scsi_status;
            case 1: return o::overrun;
            case 2: return o::aborted;
            case 3: case 12: return o::bad_target;
            case 4: return o::reset;
            case 5: return o::busy;
            case 6: return o::transport_failure;
            case 7: return o::target_failure;
            case 8: return o::nexus_failure;
            case 9: return o::failure;
        }
        return o::unknown_response;
    }

    // What a poll reaps: the initiator's (only_queue < 0) takes the control and event queues and
    // every request queue no handle holds; a handle's, its queue alone.
    expectation predict(int only_queue = -1) {
        expectation e;
        if (!running()) return e;
        const bool legacy = dev_.live().legacy;
        for (uint16_t qi = 0; qi < max_virtqueues; ++qi) {
            const bool request = qi >= vscsi::first_request_queue;
            const uint16_t ring = uint16_t(qi - vscsi::first_request_queue);
            if (only_queue >= 0 ? !request || ring != only_queue : request && handles_.count(ring)) continue;
            ring_peer* p = dev_.peer(qi);
            if (!p) continue;
            // A ring latched broken earlier (its reset waits for queue owners) lies no more.
            const bool was_broken = p->broken();
            const ring_peer::prediction pr = p->reap();
            e.broken |= pr.broken && !was_broken;
            for (const ring_peer::reaped& it : pr.items) {
                const uint64_t cookie = it.c.cookie & ~returned_mark;
                if (qi >= vscsi::first_request_queue) {
                    const request_rec* r = find_request(cookie);
                    FUZZ_CHECK(r, "reaped a request chain with no request");
                    const uint8_t* h = mem_.translate(it.c.bufs[1 + r->out.size()].bus, 12);
                    expected_io x{};
                    x.response = h[11];
                    x.status = h[10];
                    x.qualifier = ld16(h + 8);
                    const uint32_t sense_size = ini_->sense_size();
                    const bool written = legacy || it.len >= 12;
                    const uint32_t sense_written = legacy ? sense_size : it.len > 12 ? it.len - 12 : 0;
                    x.outcome = written ? outcome_for(x.response, x.status) : vscsi::io_outcome::no_response;
                    if (x.outcome == vscsi::io_outcome::aborted && r->ladder) x.outcome = vscsi::io_outcome::timed_out;
                    uint32_t sl = ld32(h);
                    if (sl > sense_size) sl = sense_size;
                    if (sl > sense_written) sl = sense_written;
                    x.sense_len = written ? sl : 0;
                    const uint8_t* s = mem_.translate(it.c.bufs[1 + r->out.size()].bus + 12, x.sense_len);
                    x.sense.assign(s, s + x.sense_len);
                    const uint32_t res = ld32(h + 4);
                    x.residual = !written ? r->data_len : res > r->data_len ? r->data_len : res;
                    e.io[cookie] = x;
                    ++e.reaped_requests;
                } else if (qi == vscsi::controlq_index) {
                    if (cookie & ladder_cookie) {
                        ladder_deadlines_.erase(cookie & ~ladder_cookie);
                        continue;
                    }
                    auto c = ctrls_.find(cookie);
                    FUZZ_CHECK(c != ctrls_.end(), "reaped a control chain with no request");
                    const uint8_t* b = mem_.translate(it.c.bufs[1].bus, it.c.bufs[1].len);
                    expected_ctrl x{};
                    if (c->second.an) {
                        const bool written = legacy || it.len >= 5;
                        x.event_actual = written ? ld32(b) : 0;
                        x.response = written ? b[4] : uint8_t(vscsi::response::failure);
                    } else {
                        x.response = legacy || it.len >= 1 ? b[0] : uint8_t(vscsi::response::failure);
                    }
                    e.ctrl[cookie] = x;
                } else {
                    uint8_t b[16];
                    memcpy(b, mem_.translate(it.c.bufs[0].bus, 16), 16);
                    if (!legacy && it.len < 16) {
                        ++e.drops;
                        continue;
                    }
                    vscsi::event_info ev{};
                    ev.raw_event = ld32(b);
                    ev.missed = ev.raw_event >> 31;
                    ev.type = vscsi::event_type(ev.raw_event & 0x7fffffffu);
                    ev.reason = ld32(b + 12);
                    const bool zero_tail = !(b[8] | b[9] | b[10] | b[11]);
                    if (b[4] == 1 && zero_tail && (b[6] >> 6) == 1) {
                        ev.lun_valid = true;
                        ev.lun = uint16_t((b[6] & 0x3f) << 8 | b[7]);
                    } else if (b[4] == 1 && zero_tail && b[6] == 0) {
                        ev.lun_valid = true;
                        ev.lun = b[7];
                    } else if (b[4] == 1 && zero_tail && b[6] == 0xc1 && b[7] == 1) {
                        ev.lun_valid = true;
                        ev.lun = vscsi::wlun_report_luns;
                    }
                    ev.target = ev.lun_valid ? b[5] : 0;
                    ev.rescan_target = ev.type == vscsi::event_type::transport_reset && ev.lun_valid && ev.lun == 0 &&
                                       (ev.reason == 1 || ev.reason == 2);
                    if (ev.type != vscsi::event_type::no_event || ev.missed) e.events.push_back(ev);
                }
            }
        }
        return e;
    }

    // tracked: this side kept the device's books through the call, so every completion must
    // be one it predicted or one a reset reclaimed; after a stomp only what no lie excuses.
    void check_completions(expectation& e, bool reset_acked, bool tracked) {
        for (const recorder::io& d : rec_.done) {
            const vscsi::io_completion& c = d.c;
            auto it = reqs_.find(c.user_data);
            FUZZ_CHECK(it != reqs_.end(), "completion for user data %llu: unknown or completed twice",
                       (unsigned long long)c.user_data);
            request_rec& r = it->second;
            FUZZ_CHECK(c.tag == r.tag && c.target == r.target && c.lun == r.lun, "completion names another request");
            FUZZ_CHECK(c.residual <= r.data_len && c.transferred == r.data_len - c.residual,
                       "residual %u, transferred %u, data length %u (checklist 9)", c.residual, c.transferred, r.data_len);
            FUZZ_CHECK(c.sense_len <= ini_->sense_size() && c.sense_len <= 96, "sense_len %u past sense_size %u (checklist 10)",
                       c.sense_len, ini_->sense_size());
            auto x = e.io.find(c.user_data);
            if (!tracked) {
                FUZZ_CHECK(c.outcome != vscsi::io_outcome::device_reset || reset_acked || r.reset_owed,
                           "request completed as device_reset with no reset");
            } else if (x != e.io.end()) {
                const expected_io& w = x->second;
                FUZZ_CHECK(c.response == w.response && c.scsi_status == w.status && c.status_qualifier == w.qualifier,
                           "response %u/%u/%u, device wrote %u/%u/%u", c.response, c.scsi_status, c.status_qualifier,
                           w.response, w.status, w.qualifier);
                FUZZ_CHECK(c.outcome == w.outcome, "outcome %s, expected %s", vscsi::to_string(c.outcome),
                           vscsi::to_string(w.outcome));
                FUZZ_CHECK(c.residual == w.residual, "residual %u, expected %u", c.residual, w.residual);
                FUZZ_CHECK(c.sense_len == w.sense_len && d.sense == w.sense, "sense_len %u, expected %u", c.sense_len,
                           w.sense_len);
                e.io.erase(x);
            } else {
                FUZZ_CHECK(reset_acked || r.reset_owed,
                           "request %llu completed while the device still owns its buffers (checklist 38)",
                           (unsigned long long)c.user_data);
                FUZZ_CHECK(c.outcome == vscsi::io_outcome::device_reset || c.outcome == vscsi::io_outcome::timed_out,
                           "reclaimed request completed as %s", vscsi::to_string(c.outcome));
                if (now_ < r.deadline)
                    FUZZ_CHECK(c.outcome == vscsi::io_outcome::device_reset, "timed out before its deadline");
                FUZZ_CHECK(c.response == uint8_t(vscsi::response::reset) && c.residual == r.data_len && c.sense_len == 0,
                           "reclaimed request's completion fields");
            }
            free_buffers(r);
            tag_to_ud_.erase(r.tag);
            reqs_.erase(it);
        }
        FUZZ_CHECK(e.io.empty(), "%zu requests returned validly did not complete", e.io.size());

        auto ctrl_done = [&](uint64_t ud, bool an, bool device_reset, uint8_t response, uint32_t actual) {
            auto it = ctrls_.find(ud);
            FUZZ_CHECK(it != ctrls_.end() && it->second.an == an, "control completion %llu: unknown or twice",
                       (unsigned long long)ud);
            auto x = e.ctrl.find(ud);
            if (!tracked) {
                FUZZ_CHECK(!device_reset || reset_acked, "control request completed as reset with no reset");
            } else if (x != e.ctrl.end()) {
                FUZZ_CHECK(!device_reset && response == x->second.response, "control response %u, expected %u",
                           response, x->second.response);
                if (an) FUZZ_CHECK(actual == x->second.event_actual, "event_actual");
                e.ctrl.erase(x);
            } else {
                FUZZ_CHECK(reset_acked && device_reset && response == uint8_t(vscsi::response::reset),
                           "control request completed while the device owns it");
            }
            ctrls_.erase(it);
        };
        for (const auto& t : rec_.tmfs) ctrl_done(t.user_data, false, t.device_reset, t.response, 0);
        for (const auto& a : rec_.ans) ctrl_done(a.user_data, true, a.device_reset, a.response, a.event_actual);
        FUZZ_CHECK(e.ctrl.empty(), "%zu control requests returned validly did not complete", e.ctrl.size());
        if (reset_acked)
            FUZZ_CHECK(ctrls_.empty(), "control requests outstanding after the device was reset");

        if (!tracked) return;
        FUZZ_CHECK(rec_.events.size() == e.events.size(), "%zu events delivered, %zu expected", rec_.events.size(),
                   e.events.size());
        for (size_t i = 0; i < e.events.size(); ++i) {
            const vscsi::event_info& a = rec_.events[i];
            const vscsi::event_info& b = e.events[i];
            FUZZ_CHECK(a.raw_event == b.raw_event && a.type == b.type && a.missed == b.missed && a.reason == b.reason &&
                           a.lun_valid == b.lun_valid && a.target == b.target && a.lun == b.lun &&
                           a.rescan_target == b.rescan_target,
                       "event %zu decoded differently", i);
        }
    }

    dma_space mem_;
    hostile_device dev_;
    Transport transport_;
    vscsi::initiator_config cfg_;
    std::unique_ptr<initiator_t> ini_;
    uint8_t fill_;
    uint8_t* region_ = nullptr;
    uint64_t region_bus_ = 0;
    size_t region_bytes_ = 0;
    private_books books_;
    std::map<uint16_t, handle_t> handles_;  // request queues handed out, by queue
    bool reset_owed_ = false;  // a lie or a reset request waits for queue owners to stop
    recorder rec_;
    uint64_t now_ = 1000;
    uint64_t next_ud_ = 1;
    uint64_t next_data_bus_ = 0x7000000000ull;
    std::map<uint64_t, request_rec> reqs_;  // outstanding, by user data
    std::map<uint64_t, uint64_t> tag_to_ud_;
    std::map<uint64_t, ctrl_rec> ctrls_;    // caller TMF/AN outstanding, by user data
    std::map<uint64_t, uint64_t> ladder_deadlines_;  // ladder TMFs the device holds: tag -> deadline
    ctrl_rec* expect_caller_ctrl_ = nullptr;
    bool needs_reset_ = false;
};

}  // namespace fuzz
