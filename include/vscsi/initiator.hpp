// The virtio-scsi initiator: control, event and request queues over one device.
//
// Two caller-provided regions hold everything. The DMA region, the only memory the device is
// given, holds rings, indirect tables, request and response headers, sense and event buffers:
// initiator<...>::region_bytes(config) bytes. The private region, which the device never
// sees, holds the driver's bookkeeping (each ring's shadow and free list, request and
// control slots, the free-slot stack, per-LUN load):
// initiator<...>::private_bytes(config) bytes. Both sizes are constexpr functions of the
// configuration; nothing allocates after start(). Behind an IOMMU that maps only the DMA
// region, a device that lies cannot reach the driver's state at all.
//
// Concurrency: nothing is locked. The initiator's own calls (submit, kick, poll, TMF, AN,
// reset, stop) belong to one owner at a time, the control owner (a kernel's host lock, or
// one polling thread in userspace). A request queue can be handed to another owner through
// take_queue(): a move-only queue_handle with which one thread submits, kicks and polls that
// queue without locks, next to the other queues' owners. The control and event queues,
// escalation ladders past a re-kick and device resets stay with the control owner; the few
// words they share with queue owners are named in the class (the phase protocol).
//
// Time: the caller passes `now` (nanoseconds, any monotonic origin) into submit() and
// poll(); the core never reads a clock.
//
// Ownership rule (checklist 38): a request is completed to its caller only once the device
// no longer owns its buffers: the device returned it, or the device was reset. A request the
// device loses walks an escalation ladder (re-kick, ABORT TASK, LOGICAL UNIT RESET,
// I_T NEXUS RESET, device reset and re-initialisation) and is completed as timed_out at the
// end of it; its slot and data buffers are never reused while the device may still write
// them.
#pragma once
#include <stdint.h>
#include <stddef.h>

#include "device.hpp"
#include "lun.hpp"
#include "platform.hpp"
#include "ring.hpp"
#include "status.hpp"
#include "virtqueue.hpp"
#include "wire.hpp"

namespace vscsi {

// Where a request's data goes. Bidirectional needs VIRTIO_SCSI_F_INOUT (checklist 11).
struct io_request {
    uint8_t target = 0;
    uint16_t lun = 0;
    const uint8_t* cdb = nullptr;
    uint32_t cdb_len = 0;
    const sg_entry* data_out = nullptr;  // device-readable data (writes)
    uint32_t n_out = 0;
    const sg_entry* data_in = nullptr;   // device-writable data (reads)
    uint32_t n_in = 0;
    uint32_t pi_bytes_out = 0;  // T10 PI: leading bytes of data_out that are protection info
    uint32_t pi_bytes_in = 0;   // T10 PI: leading bytes of data_in that are protection info
    task_attr attr = task_attr::simple;  // checklist 7: SIMPLE unless the caller knows better
    uint64_t timeout_ns = 0;             // 0: the configured default
    uint16_t queue = 0;                  // request queue hint, taken modulo the queue count
    uint64_t user_data = 0;              // handed back in the completion
};

// What happened to a request, decoded from the response code and SAM status.
enum class io_outcome : uint8_t {
    good,               // response OK, status GOOD or CONDITION MET
    check_condition,    // response OK, CHECK CONDITION: see sense
    scsi_status,        // response OK, another SAM status (BUSY, TASK SET FULL, ...)
    overrun,            // VIRTIO_SCSI_S_OVERRUN: more data than the buffers
    aborted,            // VIRTIO_SCSI_S_ABORTED by an ABORT TASK the caller sent
    bad_target,         // BAD_TARGET or INCORRECT_LUN: no such target or LUN
    reset,              // VIRTIO_SCSI_S_RESET: a reset TMF hit it; retry
    busy,               // VIRTIO_SCSI_S_BUSY: retry on the same path (checklist 8)
    transport_failure,  // retry on another path if there is one
    target_failure,     // do not retry on another path (checklist 8)
    nexus_failure,      // retry on another path (checklist 8)
    failure,            // VIRTIO_SCSI_S_FAILURE
    unknown_response,   // a response code the spec does not define (checklist 5)
    no_response,        // the device returned the buffers without writing a response header
    timed_out,          // lost by the device; completed after recovery reclaimed it
    device_reset,       // in flight when the device was reset; not this request's fault
};

constexpr const char* to_string(io_outcome o) {
    switch (o) {
        case io_outcome::good: return "good";
        case io_outcome::check_condition: return "check condition";
        case io_outcome::scsi_status: return "SCSI status";
        case io_outcome::overrun: return "overrun";
        case io_outcome::aborted: return "aborted";
        case io_outcome::bad_target: return "bad target or LUN";
        case io_outcome::reset: return "reset";
        case io_outcome::busy: return "busy";
        case io_outcome::transport_failure: return "transport failure";
        case io_outcome::target_failure: return "target failure";
        case io_outcome::nexus_failure: return "nexus failure";
        case io_outcome::failure: return "failure";
        case io_outcome::unknown_response: return "unknown response";
        case io_outcome::no_response: return "no response";
        case io_outcome::timed_out: return "timed out";
        case io_outcome::device_reset: return "device reset";
    }
    return "?";
}

enum class retry_advice : uint8_t { none, same_path, other_path };

// What a multipath-aware caller may do with a failed request (checklist 8).
constexpr retry_advice advice(io_outcome o) {
    switch (o) {
        case io_outcome::busy:
        case io_outcome::reset:
        case io_outcome::device_reset: return retry_advice::same_path;
        case io_outcome::nexus_failure:
        case io_outcome::transport_failure: return retry_advice::other_path;
        default: return retry_advice::none;
    }
}

struct io_completion {
    uint64_t user_data;
    uint64_t tag;
    uint8_t target;
    uint16_t lun;
    io_outcome outcome;
    uint8_t response;        // raw virtio-scsi response code
    uint8_t scsi_status;     // SAM status (valid when response is OK)
    uint16_t status_qualifier;
    uint32_t residual;       // clamped to the data length (checklist 9)
    uint32_t transferred;    // data length minus residual
    const uint8_t* sense;    // valid during the callback only
    uint32_t sense_len;      // clamped to sense_size and to what the device wrote (checklist 10)
};

struct tmf_completion {
    uint64_t user_data;
    tmf function;
    uint8_t target;
    uint16_t lun;
    uint8_t response;        // FUNCTION_COMPLETE(0), SUCCEEDED(10), REJECTED(11), INCORRECT_LUN(12), ...
    bool device_reset;       // lost to a device reset before the device answered
};

struct an_completion {
    uint64_t user_data;
    ctrl_type type;          // an_query or an_subscribe
    uint8_t target;
    uint16_t lun;
    uint32_t event_actual;
    uint8_t response;
    bool device_reset;
};

struct event_info {
    event_type type;         // raw low bits; may be a value the spec does not define
    uint32_t raw_event;
    bool missed;             // EVENTS_MISSED: rescan and poll for unit attentions (checklist 20)
    bool lun_valid;
    uint8_t target;
    uint16_t lun;
    uint32_t reason;         // reset_reason, AN bits, or asc | ascq << 8 (checklist 19)
    // checklist 21: RESCAN or REMOVED for LUN 0 means the whole target may have changed.
    bool rescan_target;
};

// The caller's completion handler is a template parameter of poll(): a type with
//   void on_complete(const io_completion&);
//   void on_tmf(const tmf_completion&);
//   void on_an(const an_completion&);
//   void on_event(const event_info&);

// Which virtqueue format the initiator asks for: packed when the device offers it (and the
// ring type speaks it), or one of them only.
enum class ring_choice : uint8_t { automatic, split, packed };

struct initiator_config {
    uint32_t max_queue_size = 256;   // rings are planned for this many entries; a modern device is
                                     // asked for min(this, its maximum); a legacy device whose fixed
                                     // size exceeds it is refused (checklist 40)
    uint16_t max_request_queues = 1;
    uint16_t slots = 64;             // request slots: commands in flight at most
    uint16_t max_segments = 64;      // data segments per request (both directions together)
    uint16_t event_buffers = 8;      // kept posted on the event queue (checklist 17)
    uint16_t ctrl_slots = 4;         // control-queue slots for TMF and AN
    bool use_indirect = true;
    bool use_event_idx = true;
    bool accept_t10_pi = false;
    bool accept_inout = true;
    bool accept_access_platform = true;  // the platform's bus addresses are IOVAs (checklist 35)
    ring_choice ring = ring_choice::automatic;  // packed needs VIRTIO_F_RING_PACKED (virtio 1.x)
    uint64_t default_timeout_ns = 30ull * 1000 * 1000 * 1000;
    uint64_t escalation_step_ns = 5ull * 1000 * 1000 * 1000;  // wait per ladder step
    uint64_t scan_interval_ns = 100ull * 1000 * 1000;         // deadline and NEEDS_RESET checks
    uint32_t reset_polls = 1000000;
};

enum class initiator_state : uint8_t { stopped, running, failed };

// Counters a caller can print; they never influence behaviour.
struct initiator_stats {
    uint64_t submitted;
    uint64_t completed;
    uint64_t kicks;
    uint64_t events;
    uint64_t events_dropped;   // event buffers the device returned too short
    uint64_t rekicks;
    uint64_t aborts_sent;
    uint64_t lun_resets_sent;
    uint64_t nexus_resets_sent;
    uint64_t device_resets;
    uint64_t protocol_errors;  // rings latched broken
};

namespace initiator_detail {
// Words one thread writes and another reads (the phase protocol, escalations, counters).
// Compiler builtins only: the core stays freestanding.
template <class T>
inline T load_acquire(const T& x) {
    return __atomic_load_n(&x, __ATOMIC_ACQUIRE);
}
template <class T>
inline void store_release(T& x, T v) {
    __atomic_store_n(&x, v, __ATOMIC_RELEASE);
}
template <class T>
inline T load_relaxed(const T& x) {
    return __atomic_load_n(&x, __ATOMIC_RELAXED);
}
template <class T>
inline void store_relaxed(T& x, T v) {
    __atomic_store_n(&x, v, __ATOMIC_RELAXED);
}
// A counter with one writer at a time that any thread may read: a plain add, never torn.
inline void bump(uint64_t& c, uint64_t n = 1) { store_relaxed(c, load_relaxed(c) + n); }
constexpr uint32_t pow2_at_least(uint32_t v) {
    uint32_t p = 1;
    while (p < v) p *= 2;
    return p;
}
}  // namespace initiator_detail

template <class Platform, class Transport, uint32_t CdbSize = default_cdb_size,
          uint32_t SenseSize = default_sense_size, uint16_t MaxQueues = 16, class Ring = virtqueue<Platform>>
class initiator {
    static_assert(CdbSize >= 16 && CdbSize <= 255, "CDB buffer must hold a 16-byte CDB");
    static_assert(SenseSize >= 18 && SenseSize <= 4096, "sense buffer too small");
    static_assert(MaxQueues >= 1, "at least one request queue");

public:
    static constexpr size_t event_buffer_bytes = 64;  // >= sizeof(event) (checklist 18)
    static constexpr uint32_t lun_buckets = 256;      // per-LUN in-flight counters (checklist 26)

    class queue_handle;

    explicit initiator(Transport& t) : dev_(t) {}
    initiator(const initiator&) = delete;
    initiator& operator=(const initiator&) = delete;

    // Bytes of DMA region start() needs for this configuration (0 if the config is invalid):
    // device-visible memory only.
    static constexpr size_t region_bytes(const initiator_config& c) {
        if (!config_valid(c)) return 0;
        return layout_of(c).total;
    }

    // Bytes of private region start() needs (0 if the config is invalid): ordinary memory,
    // aligned to private_region_align, that the device is never given.
    static constexpr size_t private_bytes(const initiator_config& c) {
        if (!config_valid(c)) return 0;
        return layout_of(c).private_total;
    }

    // Negotiate, configure and start the device in `dev` (aligned to ring_region_align),
    // keeping the driver's bookkeeping in `priv` (which must not overlap `dev`). Every
    // queue_handle must have been given back (busy otherwise).
    status start(const initiator_config& c, dma_region dev, private_region priv) {
        if (handles_out()) return status::busy;
        if (!config_valid(c)) return status::invalid_argument;
        const layout l = layout_of(c);
        if (!dev.virt || dev.bytes < l.total) return status::too_small;
        if ((reinterpret_cast<uintptr_t>(dev.virt) | dev.bus) & (ring_region_align - 1))
            return status::invalid_argument;
        VSCSI_TRY(check_private_region(priv, l.private_total, dev));
        cfg_ = c;
        mem_ = dev;
        priv_ = static_cast<uint8_t*>(priv.virt);
        lay_ = l;
        slots_ = reinterpret_cast<slot*>(priv_at(l.slots));
        ladders_ = reinterpret_cast<ladder_entry*>(priv_at(l.ladders));
        slot_dma_ = reinterpret_cast<slot_dma*>(at(l.slot_dma));
        ctrl_ = reinterpret_cast<ctrl_slot*>(priv_at(l.ctrl_state));
        lun_load_ = reinterpret_cast<uint16_t*>(priv_at(l.lun_load));
        // Before anything can fail: stop() and reset_device() walk this bookkeeping and the
        // rings. The private region may hold anything until now, and rings of an earlier
        // start() may still point into regions the caller has since taken back.
        clear_bookkeeping();
        ctrlq_ = Ring{};
        eventq_ = Ring{};
        for (uint16_t q = 0; q < MaxQueues; ++q) rq_[q].ring = Ring{};
        nreq_ = 0;
        status s = bring_up();
        set_state(s == status::ok ? initiator_state::running : initiator_state::failed);
        return s;
    }

    // Queue one command (not visible to the device until kick()). Returns the command's tag.
    // The request goes to queue r.queue modulo request_queues(), which must not be handed to
    // a queue_handle (invalid_argument). busy: no free slot on that queue, the LUN is at
    // cmd_per_lun, the ring is full, or a reset is under way — retry after poll().
    result<uint64_t> submit(const io_request& r, uint64_t now) {
        if (state_ != initiator_state::running)
            return {state_ == initiator_state::failed ? status::needs_reset : status::invalid_argument, 0};
        const uint16_t q = uint16_t(r.queue % nreq_);
        if (taken(q)) return {status::invalid_argument, 0};
        if (quiescing_ || rq_[q].seen_phase != phase_) return {status::busy, 0};
        return submit_on(q, r, now);
    }

    // Publish every queued command and notify the device once per queue that needs it.
    void kick() {
        if (state_ != initiator_state::running || quiescing_) return;
        for (uint16_t q = 0; q < nreq_; ++q)
            if (!taken(q)) kick_queue(q);
    }

    // Reap the control and event queues and every request queue not handed to a
    // queue_handle, deliver completions and events, run deadlines and escalation ladders
    // (including those queue owners hand over), and recover the device when it needs it.
    // Returns how many request completions the device delivered.
    template <class Handler>
    uint32_t poll(uint64_t now, Handler& h) {
        if (state_ != initiator_state::running && !reset_waiting_) return 0;
        drained_ = 0;
        uint32_t n = 0;
        if (!quiescing_) {
            n = reap_own_queues(h);
            // The control and event queues are looked at before they are reaped: mostly they are empty.
            if (state_ == initiator_state::running && ctrlq_.has_used()) reap_control(h, now);
            if (state_ == initiator_state::running && eventq_.has_used()) reap_events(h);
            take_from_owners(now);
            if (state_ == initiator_state::running && now >= next_scan_) {
                next_scan_ = now + cfg_.scan_interval_ns;
                scan(now);
            }
        }
        if (recover_pending_ || reset_waiting_) recover(h);
        return n + drained_;
    }

    // Hand request queue `q` to one owner, through `h` (which must be empty): from then on
    // only h submits to, kicks and polls that queue, and the initiator's own calls leave it
    // alone. Pass h to its thread by any means that orders memory (creating the thread, a
    // mutex); it needs nothing more. The control and event queues stay with the caller of
    // poll(). invalid_argument: no such queue, or h is not empty; busy: the queue is handed
    // out already, or a reset is under way; needs_reset: the initiator is not running.
    status take_queue(uint16_t q, queue_handle& h) {
        if (state_ != initiator_state::running) return status::needs_reset;
        if (q >= nreq_ || h.valid()) return status::invalid_argument;
        if (quiescing_ || taken(q)) return status::busy;
        initiator_detail::store_relaxed(rq_[q].link.owned, 1u);
        h.ini_ = this;
        h.q_ = q;
        return status::ok;
    }

    // Task management from the caller (abort a tag, reset a LUN or the I_T nexus, query).
    // Completes through Handler::on_tmf.
    status submit_tmf(tmf function, uint8_t target, uint16_t lun, uint64_t tag, uint64_t user_data,
                      uint64_t now) {
        if (state_ != initiator_state::running) return status::needs_reset;
        if (uint32_t(function) > uint32_t(tmf::query_task_set)) return status::invalid_argument;
        if (!valid_lun(lun)) return status::invalid_argument;
        return send_tmf(function, target, lun, tag, user_data, ctrl_owner::caller, 0, now);
    }

    // Asynchronous notification query or subscribe (checklist 16). Completes through on_an.
    status submit_an(ctrl_type type, uint8_t target, uint16_t lun, uint32_t events, uint64_t user_data,
                     uint64_t now) {
        if (state_ != initiator_state::running) return status::needs_reset;
        if (type != ctrl_type::an_query && type != ctrl_type::an_subscribe) return status::invalid_argument;
        if (!valid_lun(lun)) return status::invalid_argument;
        const int ci = alloc_ctrl();
        if (ci < 0) return status::busy;
        ctrl_slot& c = ctrl_[ci];
        ctrl_dma& d = ctrl_dma_of(uint16_t(ci));
        for (size_t i = 0; i < sizeof(d); ++i) reinterpret_cast<uint8_t*>(&d)[i] = 0;
        d.an.type.set(order_, uint32_t(type));
        const lun_address la = make_lun(target, lun);
        for (int i = 0; i < 8; ++i) d.an.lun[i] = la.bytes[i];
        d.an.event_requested.set(order_, events);
        c.kind = ctrl_kind::an;
        c.an_type = type;
        c.owner = ctrl_owner::caller;
        c.user_data = user_data;
        c.target = target;
        c.lun = lun;
        c.deadline = now + cfg_.escalation_step_ns;
        const sg_entry out{mem_.bus_of(&d.an), uint32_t(sizeof(an_req))};
        const sg_entry in{mem_.bus_of(&d.an_r), uint32_t(sizeof(an_resp))};
        return post_ctrl(uint16_t(ci), out, in);
    }

    // Reset and re-initialise the device. Every command in flight on the caller's queues
    // completes as device_reset through the handler; queue handles complete theirs through
    // their own poll(). With queues handed out the reset waits until every owner has stopped
    // (their next call into the handle): busy until then, and poll() finishes it.
    template <class Handler>
    status reset_device(Handler& h) {
        if (state_ == initiator_state::stopped) return status::invalid_argument;
        recover_pending_ = true;
        return recover(h);
    }

    // Quiesce: reset the device (stops all DMA) and complete everything in flight as
    // device_reset. The regions may be freed afterwards. Every queue_handle must have been
    // given back first (busy otherwise).
    template <class Handler>
    status stop(Handler& h) {
        if (state_ == initiator_state::stopped) return status::ok;
        if (handles_out()) return status::busy;
        const status s = dev_.reset(cfg_.reset_polls);
        if (s != status::ok) {
            // The device did not stop: its buffers stay device-owned. Leave them alone.
            set_state(initiator_state::failed);
            return s;
        }
        reclaim_everything(h);
        // No owner holds a queue: nothing waits, nothing is owed.
        end_quiesce();
        recover_pending_ = false;
        set_state(initiator_state::stopped);
        return status::ok;
    }

    // Interrupt-driven users: disable before polling, enable when idle. enable returns true
    // when completions are already pending (poll again instead of sleeping). Both do nothing
    // unless running: the rings may never have been set up, or their region handed back.
    // They cover the control and event queues and the queues not handed out.
    void disable_interrupts() {
        if (state_ != initiator_state::running) return;
        for (uint16_t q = 0; q < nreq_; ++q)
            if (!taken(q)) rq_[q].ring.disable_interrupts();
        ctrlq_.disable_interrupts();
        eventq_.disable_interrupts();
    }
    bool enable_interrupts() {
        if (state_ != initiator_state::running) return false;
        bool pending = false;
        for (uint16_t q = 0; q < nreq_; ++q)
            if (!taken(q)) pending |= rq_[q].ring.enable_interrupts();
        pending |= ctrlq_.enable_interrupts();
        pending |= eventq_.enable_interrupts();
        return pending;
    }

    // True when some queue poll() reaps holds completions or events it has not reaped yet:
    // lets a hybrid waiter spin a little before it enables interrupts and sleeps.
    bool completions_pending() const {
        if (state_ != initiator_state::running) return false;
        for (uint16_t q = 0; q < nreq_; ++q)
            if (!taken(q) && rq_[q].ring.has_used()) return true;
        return ctrlq_.has_used() || eventq_.has_used();
    }

    initiator_state state() const { return state_; }
    // Queue owners are asked to stop: a reset waits for them, or failed after they stopped.
    // (The control owner's view; a queue owner learns it from busy or needs_reset.)
    bool resetting() const { return quiescing_; }
    const scsi_config_values& device_config() const { return dcfg_; }
    uint64_t features() const { return dev_.features(); }
    uint16_t request_queues() const { return nreq_; }
    uint32_t queue_size(uint16_t q) const { return q < nreq_ ? rq_[q].ring.size() : 0; }
    // Request slots of queue q: at most this many of its commands in flight.
    uint32_t queue_slots(uint16_t q) const { return q < nreq_ ? rq_[q].slot_count : 0; }
    uint32_t cdb_size() const { return cdb_size_; }
    uint32_t sense_size() const { return sense_size_; }
    uint32_t cmd_per_lun() const { return cmd_per_lun_; }
    uint32_t max_data_segments() const { return max_data_segs_; }
    // Commands in flight on every queue (a snapshot while handles run).
    uint32_t in_flight() const {
        uint32_t n = 0;
        for (uint16_t q = 0; q < nreq_; ++q) n += rq_[q].slot_count - initiator_detail::load_relaxed(rq_[q].free_top);
        return n;
    }
    // Every queue's counters summed with the control owner's (a snapshot while handles run).
    initiator_stats stats() const {
        using initiator_detail::load_relaxed;
        initiator_stats s = ctl_stats_;
        for (uint16_t q = 0; q < MaxQueues; ++q) {
            const queue_counters& c = rq_[q].counts;
            s.submitted += load_relaxed(c.submitted);
            s.completed += load_relaxed(c.completed);
            s.kicks += load_relaxed(c.kicks);
            s.rekicks += load_relaxed(c.rekicks);
            s.protocol_errors += load_relaxed(c.protocol_errors);
        }
        return s;
    }
    virtio_device<Transport>& device() { return dev_; }
    bool legacy() const { return order_.legacy; }
    bool packed() const { return packed_; }

private:
    enum class slot_state : uint8_t { free, in_flight };
    // A request's own steps against a lost command; then its queue's owner hands it over.
    enum class ladder : uint8_t { none, rekicked, handed_off };
    // The control owner's steps for a handed-over command.
    enum class rung : uint8_t { idle, abort_due, abort_sent, lun_reset_sent, nexus_reset_sent };
    enum class ctrl_kind : uint8_t { none, tmf, an };
    enum class ctrl_owner : uint8_t { caller, ladder };
    static constexpr uint16_t no_bucket = 0xffff;  // the slot holds no per-LUN counter

    // One request slot, written by the owner of its queue. `live` and `aborted_tag` are the
    // two words the control owner shares: it reads `live` (is the command still out?) and
    // writes `aborted_tag` (a ladder TMF named it) before the TMF reaches the device.
    struct alignas(64) slot {
        uint64_t live;         // the tag while in flight, 0 when free
        uint64_t aborted_tag;  // ABORTED for this tag reads as timed out
        uint64_t user_data;
        uint64_t deadline;
        uint32_t data_out_len;
        uint32_t data_in_len;
        uint16_t lun;
        uint16_t bucket;       // per-LUN counter taken, or no_bucket
        uint8_t target;
        slot_state state;
        ladder stage;
    };
    // A handed-over command on the control owner's ladder, by slot.
    struct ladder_entry {
        uint64_t tag;
        uint64_t deadline;
        uint16_t lun;
        uint16_t queue;
        uint8_t target;
        rung stage;
    };
    // What a queue owner hands over: a command still out after a re-kick.
    struct escalation {
        uint64_t tag;
        uint16_t slot;
        uint16_t lun;
        uint8_t target;
    };
    struct ctrl_slot {
        uint64_t user_data;
        uint64_t deadline;
        uint64_t tag;        // TMF: the tag it manages
        uint16_t lun;
        uint16_t for_slot;   // ladder TMFs: the request slot that escalated
        uint8_t target;
        ctrl_kind kind;
        ctrl_owner owner;
        tmf function;
        ctrl_type an_type;
    };
    // A command's chain as the rings take it: its request header and the caller's data out
    // (device-readable), its response header and the caller's data in (device-writable).
    struct command_chain {
        sg_entry req, resp;
        const io_request& r;
        uint32_t readable() const { return r.n_out + 1; }
        uint32_t writable() const { return r.n_in + 1; }
        const sg_entry& readable_at(uint32_t i) const { return i ? r.data_out[i - 1] : req; }
        const sg_entry& writable_at(uint32_t i) const { return i ? r.data_in[i - 1] : resp; }
    };

    // Device-visible header memory of one request slot.
    // Each on cache lines of its own (the region and the array start on one): the driver
    // writes the request header while the device writes the response of the slot before, and
    // a line the two shared would bounce between their CPUs.
    struct slot_dma {
        uint8_t req[align_up(cmd_req_bytes(CdbSize, true), 64)];
        uint8_t resp[align_up(cmd_resp_bytes(SenseSize), 64)];
    };
    static_assert(sizeof(slot_dma::req) >= 19 + 8 + CdbSize, "submit() clears 8 + CdbSize bytes after the task attributes");
    struct ctrl_dma {
        tmf_req tmf;
        tmf_resp tmf_r;
        uint8_t pad0[7];
        an_req an;
        an_resp an_r;
        uint8_t pad1[11];
    };

    struct queue_counters {
        uint64_t submitted, completed, kicks, rekicks, protocol_errors;
    };
    // One request queue: its ring and what its owner alone touches, then the words it
    // shares with the control owner on a line of their own (written rarely: take and give
    // back, a reset's acknowledgement, a hand-over).
    struct alignas(64) request_queue {
        Ring ring;
        uint16_t* free_stack;   // private region: slot_count entries
        escalation* mailbox;    // private region: mailbox_size entries, a power of two
        uint64_t seq;           // next tag's upper bits: queue + 1 + k * MaxQueues
        uint64_t next_scan;
        uint32_t seen_phase;    // the phase this queue's owner last acted on
        uint32_t mailbox_size;
        uint16_t first_slot, slot_count;
        uint16_t free_top;      // written by the owner only, read by in_flight() from anywhere
        bool kick_pending;
        queue_counters counts;
        struct alignas(64) shared_words {
            uint32_t owned;         // a queue_handle has the queue (the control owner sets it, the handle clears it)
            uint32_t ack;           // the odd phase the owner has stopped for
            uint32_t reset_wanted;  // the owner's ring lied: the device needs a reset
            uint32_t esc_head;      // hand-overs posted (the owner writes)
            uint32_t esc_tail;      // hand-overs taken (the control owner writes)
        } link;
    };

    // Where one part of every ring goes (the rings themselves, or their private shadows): the
    // control and event queues' of `small` bytes each, then one of `req` bytes per request queue.
    struct ring_places {
        size_t ctrl, event, req, small, req_bytes;
        constexpr size_t of_request(uint16_t q) const { return req + req_bytes * q; }
    };
    static constexpr ring_places place_rings(size_t small, size_t req, uint16_t queues, size_t& off) {
        const ring_places r{off, off + small, off + 2 * small, small, req};
        off += 2 * small + req * queues;
        return r;
    }

    struct layout {
        ring_places rings;  // DMA region
        size_t slot_dma, ctrl_dma, events, total;
        ring_places shadows;  // private region
        size_t slots, ladders, ctrl_state, free_stacks, mailboxes, lun_load, private_total;
    };

    static constexpr bool config_valid(const initiator_config& c) {
        return c.max_queue_size >= 2 && c.max_queue_size <= ring_max_size && is_power_of_two(c.max_queue_size) &&
               c.max_request_queues >= 1 && c.max_request_queues <= MaxQueues && c.slots >= 1 &&
               c.slots <= 65535 && c.max_segments >= 1 && c.max_segments <= 4096 && c.event_buffers >= 1 &&
               c.ctrl_slots >= 1 && c.ctrl_slots <= 64 && c.escalation_step_ns > 0 && c.scan_interval_ns > 0;
    }

    // Every ring is planned for the legacy layout (the larger one) at max_queue_size, so the
    // same region works whichever transport the device turns out to have.
    static constexpr ring_config planned_request_ring(const initiator_config& c) {
        ring_config r{};
        r.size = c.max_queue_size;
        r.legacy = true;
        r.event_idx = true;
        r.indirect = c.use_indirect;
        r.indirect_tables = c.use_indirect ? uint16_t(c.slots < c.max_queue_size ? c.slots : c.max_queue_size) : 0;
        r.indirect_max = c.use_indirect ? uint16_t(c.max_segments + 2) : 0;
        // Header, response and up to two data segments go direct while the ring has room:
        // the device fetches no indirect table for them.
        r.direct_max = c.use_indirect ? 4 : 0;
        return r;
    }
    static constexpr ring_config planned_small_ring(const initiator_config& c) {
        ring_config r{};
        r.size = c.max_queue_size;
        r.legacy = true;
        r.event_idx = true;
        return r;
    }

    // A ring is planned for both formats the ring type speaks: the device says which one at
    // start. The packed form of a plan: virtio 1.x, with room for the in-order FIFO.
    static constexpr ring_config as_packed(ring_config r) {
        r.legacy = false;
        r.in_order = true;
        return r;
    }
    static constexpr size_t larger(size_t a, size_t b) { return a > b ? a : b; }
    static constexpr size_t ring_dev_bytes(const ring_config& r) {
        return larger(ring_bytes_for<Ring>(ring_format::split, r), ring_bytes_for<Ring>(ring_format::packed, as_packed(r)));
    }
    static constexpr size_t ring_priv_bytes(const ring_config& r) {
        return larger(ring_private_bytes_for<Ring>(ring_format::split, r),
                      ring_private_bytes_for<Ring>(ring_format::packed, as_packed(r)));
    }

    static constexpr layout layout_of(const initiator_config& c) {
        layout l{};
        size_t off = 0;
        l.rings = place_rings(align_up(ring_dev_bytes(planned_small_ring(c)), ring_region_align),
                              align_up(ring_dev_bytes(planned_request_ring(c)), ring_region_align),
                              c.max_request_queues, off);
        l.slot_dma = off;
        off += sizeof(slot_dma) * c.slots;
        off = align_up(off, 64);
        l.ctrl_dma = off;
        off += sizeof(ctrl_dma) * c.ctrl_slots;
        off = align_up(off, 64);
        l.events = off;
        off += event_buffer_bytes * c.event_buffers;
        l.total = align_up(off, ring_region_align);

        // Private bookkeeping: never handed to the device. Every part starts on a cache line,
        // and so does every queue's share of the per-queue parts (their owners differ).
        const size_t line = private_region_align;
        size_t p = 0;
        l.shadows = place_rings(align_up(ring_priv_bytes(planned_small_ring(c)), line),
                                align_up(ring_priv_bytes(planned_request_ring(c)), line), c.max_request_queues, p);
        l.slots = p;
        p += sizeof(slot) * c.slots;
        l.ladders = p;
        p = align_up(p + sizeof(ladder_entry) * c.slots, line);
        l.ctrl_state = p;
        p = align_up(p + sizeof(ctrl_slot) * c.ctrl_slots, line);
        // Free stacks and mailboxes are cut per queue when the queue count is known: room for
        // every slot once (mailboxes: rounded to a power of two, at most twice) plus a line
        // per queue.
        l.free_stacks = p;
        p = align_up(p + sizeof(uint16_t) * c.slots + line * c.max_request_queues, line);
        l.mailboxes = p;
        p = align_up(p + sizeof(escalation) * (2 * size_t(c.slots)) + line * c.max_request_queues, line);
        l.lun_load = p;
        l.private_total = align_up(p + sizeof(uint16_t) * lun_buckets, line);
        return l;
    }

    uint8_t* at(size_t off) const { return static_cast<uint8_t*>(mem_.virt) + off; }
    uint8_t* priv_at(size_t off) const { return priv_ + off; }
    slot_dma& dma_of(uint16_t i) const { return slot_dma_[i]; }
    ctrl_dma& ctrl_dma_of(uint16_t i) const { return reinterpret_cast<ctrl_dma*>(at(lay_.ctrl_dma))[i]; }
    uint8_t* event_buf(uint16_t i) const { return at(lay_.events) + size_t(i) * event_buffer_bytes; }

    dma_region sub(size_t off, size_t bytes) const {
        return dma_region{at(off), mem_.bus + off, bytes};
    }
    private_region priv_sub(size_t off, size_t bytes) const { return private_region{priv_at(off), bytes}; }

    // ---- ownership and the phase protocol ----
    //
    // The control owner (whoever calls poll()) owns the control and event queues, device
    // registers other than the notify ones, escalation ladders and recovery; each queue a
    // queue_handle holds is its owner's alone. They meet in a few words, each with one writer:
    //
    //   phase_      the control owner's: even while queues may run, odd while it waits for
    //               every queue owner to stop so that it can reset the device. [P1] its release
    //               store of an odd phase pairs with an owner's acquire load on entry; [P3] its
    //               release store of the next even phase, after the reset has re-initialised
    //               every ring, pairs with the same load, and tells the owner that everything it
    //               had in flight was reclaimed by the reset.
    //   link.ack    an owner's: the odd phase it has seen, stored with release after its last
    //               ring access, pairs with the control owner's acquire load [P2] before it
    //               resets the device and re-initialises that queue's ring.
    //   link.owned  set by take_queue(); cleared by the handle with release after its last
    //               access [O1], paired with the control owner's acquire load before it uses
    //               the queue again.
    //   mailbox     an owner posts a hand-over, then esc_head with release [M1] (the control
    //               owner's acquire load of esc_head pairs); the control owner takes it and
    //               stores esc_tail with release [M2] (the owner's acquire load pairs) before
    //               the owner may reuse the entry.
    //   slot.live / slot.aborted_tag: see slot.
    //
    // A queue owner that stops calling into its handle holds a reset up: keep polling while
    // holding a handle, or give it back.

    bool taken(uint16_t q) const { return initiator_detail::load_acquire(rq_[q].link.owned) != 0; }  // [O1]
    bool handles_out() const {
        for (uint16_t q = 0; q < MaxQueues; ++q)
            if (taken(q)) return true;
        return false;
    }
    void give_back(uint16_t q) { initiator_detail::store_release(rq_[q].link.owned, 0u); }  // [O1]
    // Back to an even phase with nobody asked to stop (start, stop: no queue is handed out).
    void end_quiesce() {
        if (phase_ & 1) initiator_detail::store_release(phase_, phase_ + 1);
        quiescing_ = reset_waiting_ = false;
    }
    void set_state(initiator_state s) { __atomic_store(&state_, &s, __ATOMIC_RELAXED); }
    initiator_state shared_state() const {
        initiator_state s;
        __atomic_load(&state_, &s, __ATOMIC_RELAXED);
        return s;
    }

    // A queue owner's entry into a call: ok when its queue may be used. On an odd phase the
    // owner acknowledges and stays out; on a new even phase it must first take back what the
    // reset reclaimed, which only poll() can (it has a handler).
    status enter(uint16_t q) {
        request_queue& rq = rq_[q];
        const uint32_t p = initiator_detail::load_acquire(phase_);  // [P1] [P3]
        if (p != rq.seen_phase) {
            if (!(p & 1)) return status::busy;
            rq.seen_phase = p;
            initiator_detail::store_release(rq.link.ack, p);  // [P2]
        }
        if (p & 1) return shared_state() == initiator_state::failed ? status::needs_reset : status::busy;
        return shared_state() == initiator_state::running ? status::ok : status::needs_reset;
    }
    template <class Handler>
    status enter_poll(uint16_t q, Handler& h) {
        request_queue& rq = rq_[q];
        const uint32_t p = initiator_detail::load_acquire(phase_);  // [P3]
        if (p != rq.seen_phase && !(p & 1)) {
            reclaim_queue(q, h);
            rq.seen_phase = p;
        }
        return enter(q);
    }

    // ---- a request queue, by whoever owns it ----
    result<uint64_t> submit_on(uint16_t q, const io_request& r, uint64_t now) {
        const status v = validate(r);
        if (v != status::ok) return {v, 0};
        request_queue& rq = rq_[q];
        // A ring latched broken waits for the reset it asked for (counted once, when caught).
        if (rq.free_top == 0 || rq.ring.broken()) return {status::busy, 0};
        uint16_t bucket = no_bucket;
        if (count_luns_) {
            bucket = lun_bucket(r.target, r.lun);
            if (!lun_take(bucket)) return {status::busy, 0};
        }
        const uint16_t idx = rq.free_stack[rq.free_top - 1];
        slot& s = slots_[idx];
        slot_dma& d = dma_of(idx);
        const uint64_t tag = (rq.seq << 16) | idx;  // unique across queues: rq.seq counts in steps of MaxQueues

        // The command's parts listed in place, and the format chosen here once, so the
        // ring's add() is the format's own.
        const command_chain chain{sg_entry{mem_.bus_of(d.req), req_bytes_}, sg_entry{mem_.bus_of(d.resp), resp_bytes_}, r};
        const status a = with_format<Ring>(packed_, [&](auto format) { return decltype(format)::of(rq.ring).add(chain, idx); });
        if (a != status::ok) {
            if (bucket != no_bucket) lun_put(bucket);
            return {a, 0};
        }
        // The device reads the headers only once kick() has published the chain, after a
        // write barrier: they may be written after the descriptors.
        write_request_header(d.req, r, tag);
        // The device writes the response header. A legacy device's used length says nothing,
        // so until it writes, the header holds no valid response code (0xff): buffers it
        // returns unwritten are never read as OK. A modern device's length says whether it
        // wrote the header; the line then stays with the device until the driver reads it.
        if (order_.legacy) {
            __builtin_memset(d.resp, 0, 12);
            d.resp[11] = 0xff;
        }
        uint32_t out_len = 0, in_len = 0;
        for (uint32_t i = 0; i < r.n_out; ++i) out_len += r.data_out[i].len;
        for (uint32_t i = 0; i < r.n_in; ++i) in_len += r.data_in[i].len;
        initiator_detail::store_relaxed(rq.free_top, uint16_t(rq.free_top - 1));
        rq.seq += MaxQueues;
        s.user_data = r.user_data;
        s.deadline = now + (r.timeout_ns ? r.timeout_ns : cfg_.default_timeout_ns);
        s.data_out_len = out_len;
        s.data_in_len = in_len;
        s.target = r.target;
        s.lun = r.lun;
        s.bucket = bucket;
        s.state = slot_state::in_flight;
        s.stage = ladder::none;
        initiator_detail::store_release(s.live, tag);
        rq.kick_pending = true;
        initiator_detail::bump(rq.counts.submitted);
        return {status::ok, tag};
    }

    void kick_queue(uint16_t q) {
        request_queue& rq = rq_[q];
        if (!rq.kick_pending) return;
        rq.kick_pending = false;
        // One notify decision per batch (checklist 46).
        if (rq.ring.publish()) {
            dev_.transport().notify(uint16_t(first_request_queue + q));
            initiator_detail::bump(rq.counts.kicks);
        }
    }

    // The format is chosen once for the whole reap, not once per completion.
    template <class Handler>
    uint32_t reap_queue(uint16_t q, Handler& h) {
        return with_format<Ring>(packed_, [&](auto format) { return reap_queue(q, h, format); });
    }
    template <class Handler, class Format>
    uint32_t reap_queue(uint16_t q, Handler& h, Format) {
        request_queue& rq = rq_[q];
        auto& ring = Format::of(rq.ring);
        if (ring.broken()) return 0;  // counted once; the reset is asked for
        uint32_t n = 0;
        bool unposted = false;  // the ring gave a token we never posted: our latch, not a device lie
        // The ring reads the device's progress once for the batch and validates each
        // completion; what it hands over is a chain it held in flight. Once latched broken it
        // hands over nothing more.
        const result<uint32_t> r = ring.reap([&](const used_completion& u) {
            const uint32_t t = u.token;
            if (uint32_t(t - rq.first_slot) >= rq.slot_count || slots_[t].state != slot_state::in_flight) {
                // The ring vouched for a token we never posted: our own invariant is broken.
                Platform::bug("vscsi: ring returned a token with no request");
                ring.mark_broken();
                initiator_detail::store_release(rq.link.reset_wanted, 1u);
                unposted = true;
                return;
            }
            complete_from_device(q, uint16_t(t), u.len, h);
            ++n;
        });
        if (r.st == status::device_broken && !unposted) {
            initiator_detail::bump(rq.counts.protocol_errors);
            initiator_detail::store_release(rq.link.reset_wanted, 1u);
        }
        return n;
    }

    template <class Handler>
    uint32_t poll_queue(uint16_t q, uint64_t now, Handler& h) {
        if (enter_poll(q, h) != status::ok) return 0;
        request_queue& rq = rq_[q];
        const uint32_t n = reap_queue(q, h);
        if (now >= rq.next_scan) {
            rq.next_scan = now + cfg_.scan_interval_ns;
            scan_queue(q, now);
        }
        return n;
    }

    // Deadlines of one queue's commands: a lost command is re-kicked (perhaps only a
    // notification was lost; the device may ignore it harmlessly), then handed to the control
    // owner, whose ladder sends TMFs and, at its end, resets the device.
    void scan_queue(uint16_t q, uint64_t now) {
        request_queue& rq = rq_[q];
        const uint32_t end = uint32_t(rq.first_slot) + rq.slot_count;
        for (uint32_t i = rq.first_slot; i < end; ++i) {
            slot& s = slots_[i];
            if (s.state != slot_state::in_flight || now < s.deadline) continue;
            if (s.stage == ladder::none) {
                s.stage = ladder::rekicked;
                s.deadline = now + cfg_.escalation_step_ns;
                rq.ring.publish();
                dev_.transport().notify(uint16_t(first_request_queue + q));
                initiator_detail::bump(rq.counts.rekicks);
            } else if (hand_over(q, uint16_t(i))) {
                s.stage = ladder::handed_off;
                s.deadline = UINT64_MAX;  // the control owner's ladder has it now
            } else {
                s.deadline = now + cfg_.escalation_step_ns;  // mailbox full: try again later
            }
        }
    }

    bool hand_over(uint16_t q, uint16_t i) {
        request_queue& rq = rq_[q];
        const uint32_t head = rq.link.esc_head;  // ours alone to write
        if (head - initiator_detail::load_acquire(rq.link.esc_tail) >= rq.mailbox_size) return false;  // [M2]
        const slot& s = slots_[i];
        rq.mailbox[head & (rq.mailbox_size - 1)] = escalation{s.live, i, s.lun, s.target};
        initiator_detail::store_release(rq.link.esc_head, head + 1);  // [M1]
        return true;
    }

    // Complete every command still in flight on queue q after a device reset reclaimed it.
    template <class Handler>
    void reclaim_queue(uint16_t q, Handler& h) {
        request_queue& rq = rq_[q];
        const uint32_t end = uint32_t(rq.first_slot) + rq.slot_count;
        for (uint32_t i = rq.first_slot; i < end; ++i)
            if (slots_[i].state == slot_state::in_flight) complete_lost(q, uint16_t(i), h);
        rq.kick_pending = false;
        rq.next_scan = 0;
    }

    template <class Handler>
    void complete_from_device(uint16_t q, uint16_t idx, uint32_t used_len, Handler& h) {
        slot& s = slots_[idx];
        const slot_dma& d = dma_of(idx);
        const uint64_t tag = s.live;  // ours: written by this queue's owner
        // The response header is in device order; read it field by field from our copy.
        cmd_resp<SenseSize> resp;
        __builtin_memcpy(&resp, d.resp, sizeof(resp) < sizeof(d.resp) ? sizeof(resp) : sizeof(d.resp));
        io_completion c{};
        c.user_data = s.user_data;
        c.tag = tag;
        c.target = s.target;
        c.lun = s.lun;
        c.response = resp.response;
        c.scsi_status = resp.status;
        c.status_qualifier = resp.status_qualifier.get(order_);
        // checklist 48: a modern device says how much it wrote; a legacy one's len is ignored.
        const bool header_written = order_.legacy || used_len >= 12;
        const uint32_t sense_written = order_.legacy ? sense_size_ : (used_len > 12 ? used_len - 12 : 0);
        if (!header_written) {
            c.outcome = io_outcome::no_response;
        } else {
            c.outcome = outcome_of(resp.response, resp.status);
            // ABORTED by the ladder's own TMF: the command was lost, not aborted by the caller.
            // The control owner marks the tag before the TMF reaches the device.
            if (c.outcome == io_outcome::aborted && initiator_detail::load_acquire(s.aborted_tag) == tag)
                c.outcome = io_outcome::timed_out;
        }
        // checklist 10: sense_len clamped to sense_size, the buffer, and what was written.
        uint32_t sl = resp.sense_len.get(order_);
        if (sl > sense_size_) sl = sense_size_;
        if (sl > sense_written) sl = sense_written;
        if (!header_written) sl = 0;
        c.sense = d.resp + 12;
        c.sense_len = sl;
        // checklist 9: residual clamped to the data length.
        // A bidirectional command's residual counts both directions (checklist 9).
        const uint32_t data_len = s.data_in_len + s.data_out_len;
        uint32_t res = header_written ? resp.residual.get(order_) : data_len;
        if (res > data_len) res = data_len;
        c.residual = res;
        c.transferred = data_len - res;
        release_slot(q, idx);
        h.on_complete(c);
    }

    template <class Handler>
    void complete_lost(uint16_t q, uint16_t idx, Handler& h) {
        slot& s = slots_[idx];
        io_completion c{};
        c.user_data = s.user_data;
        c.tag = s.live;
        c.target = s.target;
        c.lun = s.lun;
        c.outcome = s.stage != ladder::none ? io_outcome::timed_out : io_outcome::device_reset;
        c.response = uint8_t(response::reset);
        c.residual = s.data_in_len + s.data_out_len;
        c.transferred = 0;
        c.sense = nullptr;
        c.sense_len = 0;
        release_slot(q, idx);
        h.on_complete(c);
    }

    void release_slot(uint16_t q, uint16_t idx) {
        request_queue& rq = rq_[q];
        slot& s = slots_[idx];
        s.state = slot_state::free;
        initiator_detail::store_release(s.live, uint64_t(0));
        if (s.bucket != no_bucket) lun_put(s.bucket);
        rq.free_stack[rq.free_top] = idx;
        initiator_detail::store_relaxed(rq.free_top, uint16_t(rq.free_top + 1));
        initiator_detail::bump(rq.counts.completed);
    }

    // ---- per-LUN limits (checklist 26) ----
    // Shared by every queue, so the counters are atomic: exact for any cmd_per_lun and any
    // number of queue owners, where per-queue shares would either exceed a small limit or
    // leave some queues none. They are skipped when cmd_per_lun is at least the slot count:
    // no LUN can exceed it then, and the data path touches no shared line.
    static uint16_t lun_bucket(uint8_t target, uint16_t lun) {
        // Hash of a LUN into a shared counter. Two LUNs that collide share one limit:
        // conservative, so no LUN ever exceeds cmd_per_lun.
        const uint32_t k = (uint32_t(target) << 14) | lun;
        return uint16_t((k * 2654435761u) >> 24);
    }
    bool lun_take(uint16_t b) {
        uint16_t cur = __atomic_load_n(&lun_load_[b], __ATOMIC_RELAXED);
        do {
            if (cur >= cmd_per_lun_) return false;
        } while (!__atomic_compare_exchange_n(&lun_load_[b], &cur, uint16_t(cur + 1), true, __ATOMIC_RELAXED,
                                              __ATOMIC_RELAXED));
        return true;
    }
    void lun_put(uint16_t b) { __atomic_fetch_sub(&lun_load_[b], uint16_t(1), __ATOMIC_RELAXED); }

    status validate(const io_request& r) const {
        if (!r.cdb || r.cdb_len - 1 >= cdb_size_) return status::invalid_argument;  // a cdb_len of 0 wraps
        if (!valid_lun(r.lun) || uint8_t(r.attr) > uint8_t(task_attr::aca)) return status::invalid_argument;
        // A command without data (or PI) needs nothing more.
        return (r.n_out | r.n_in | r.pi_bytes_out | r.pi_bytes_in) ? validate_data(r) : status::ok;
    }
    status validate_data(const io_request& r) const {
        if ((r.n_out && !r.data_out) || (r.n_in && !r.data_in)) return status::invalid_argument;
        if (r.n_out + r.n_in > max_data_segs_) return status::invalid_argument;
        if (r.n_out > seg_max_ || r.n_in > seg_max_) return status::invalid_argument;  // checklist 27
        if (r.n_out && r.n_in && !dev_.has(feature::scsi_inout)) return status::not_supported;  // checklist 11
        if ((r.pi_bytes_out || r.pi_bytes_in) && !pi_) return status::not_supported;
        return status::ok;
    }

    // Request header: LUN, tag, task attribute, priority and CRN 0 (checklist 7), the PI
    // counts if negotiated, the CDB, and zeros up to cdb_size so the device sees a clean
    // field. The buffer has room for CdbSize bytes after the PI counts, so the whole area is
    // cleared with fixed-size stores, and the CDB (validated: 1 to cdb_size bytes) copied
    // without a call.
    void write_request_header(uint8_t* hdr, const io_request& r, uint64_t tag) const {
        const lun_address la = make_lun(r.target, r.lun);
        virtio64 tagf;
        tagf.set(order_, tag);
        __builtin_memset(hdr + 16, 0, 3 + 8 + CdbSize);
        __builtin_memcpy(hdr, la.bytes, 8);
        __builtin_memcpy(hdr + 8, &tagf, 8);
        hdr[16] = uint8_t(r.attr);
        uint8_t* cdb = hdr + 19;
        if (pi_) {
            virtio32 po, pin;
            po.set(order_, r.pi_bytes_out);
            pin.set(order_, r.pi_bytes_in);
            __builtin_memcpy(hdr + 19, &po, 4);
            __builtin_memcpy(hdr + 23, &pin, 4);
            cdb = hdr + 27;
        }
        const uint8_t* src = r.cdb;
        const uint32_t n = r.cdb_len;
        // Whole words, then the last word again where it overlaps: never a byte past n.
        if (n >= 8) {
            for (uint32_t i = 0; i + 8 < n; i += 8) __builtin_memcpy(cdb + i, src + i, 8);
            __builtin_memcpy(cdb + n - 8, src + n - 8, 8);
        } else if (n >= 4) {
            __builtin_memcpy(cdb, src, 4);
            __builtin_memcpy(cdb + n - 4, src + n - 4, 4);
        } else {
            cdb[0] = src[0];
            if (n > 1) __builtin_memcpy(cdb + n - 2, src + n - 2, 2);
        }
    }

    // Reset, negotiate, configure, set queues up, post event buffers, DRIVER_OK (checklist 31).
    status bring_up() {
        uint64_t want = feature::bit(feature::version_1) | feature::bit(feature::scsi_hotplug) |
                        feature::bit(feature::scsi_change) | feature::bit(feature::any_layout);
        if (cfg_.use_indirect) want |= feature::bit(feature::ring_indirect_desc);
        if (cfg_.use_event_idx) want |= feature::bit(feature::ring_event_idx);
        if (cfg_.accept_t10_pi) want |= feature::bit(feature::scsi_t10_pi);
        if (cfg_.accept_inout) want |= feature::bit(feature::scsi_inout);
        if (cfg_.accept_access_platform) want |= feature::bit(feature::access_platform);
        // checklist 35: the platform's barriers are hardware barriers, so ORDER_PLATFORM is
        // honoured as it is; RING_PACKED is taken when offered (unless the caller asked for
        // split rings), and with it IN_ORDER (device.hpp takes that only with packed rings).
        // The notification-data features are not: plain 16-bit notifications (a documented
        // deviation from that SHOULD).
        want |= feature::bit(feature::order_platform);
        if (ring_kind<Ring>::packed && cfg_.ring != ring_choice::split)
            want |= feature::bit(feature::ring_packed) | feature::bit(feature::in_order);
        VSCSI_TRY(dev_.negotiate(want));
        packed_ = dev_.has(feature::ring_packed);
        // A format the caller insists on, or the only one this ring type speaks, must be there.
        if ((cfg_.ring == ring_choice::packed || !ring_kind<Ring>::split) && !packed_) {
            dev_.fail();
            return status::not_supported;
        }
        const status s = configure();
        if (s != status::ok) {
            dev_.fail();
            return s;
        }
        return status::ok;
    }

    status configure() {
        Transport& t = dev_.transport();
        order_ = t.order();
        pi_ = dev_.has(feature::scsi_t10_pi);
        // checklist 25: the only config writes; they reset to 32/96 on every device reset.
        VSCSI_TRY(dev_.write_cdb_sense_sizes(CdbSize, SenseSize));
        VSCSI_TRY(dev_.read_scsi_config(dcfg_));
        // The device frames by what it reports back; our buffers must hold that much.
        if (dcfg_.cdb_size > CdbSize || dcfg_.sense_size > SenseSize) return status::not_supported;
        if (dcfg_.cdb_size < 6) return status::device_error;
        cdb_size_ = dcfg_.cdb_size;
        sense_size_ = dcfg_.sense_size;
        req_bytes_ = cmd_req_bytes(cdb_size_, pi_);
        resp_bytes_ = cmd_resp_bytes(sense_size_);
        if (dcfg_.num_queues == 0) return status::device_error;
        // No more queues than slots: every queue gets a share of them.
        uint32_t queues = dcfg_.num_queues < cfg_.max_request_queues ? dcfg_.num_queues : cfg_.max_request_queues;
        if (queues > cfg_.slots) queues = cfg_.slots;
        const bool handed_out = handles_out();
        if (handed_out) {
            // Owners hold queues and slots: the device must still have every queue in use.
            if (queues < nreq_) return status::device_error;
        } else {
            nreq_ = uint16_t(queues);
        }
        cmd_per_lun_ = dcfg_.cmd_per_lun == 0 ? 1 : dcfg_.cmd_per_lun;
        if (cmd_per_lun_ > 0xffff) cmd_per_lun_ = 0xffff;
        // With no fewer commands allowed per LUN than slots, no LUN can pass the limit: the
        // per-LUN counters are not kept.
        count_luns_ = cmd_per_lun_ < cfg_.slots;
        // seg_max counts data segments (checklist 27); 0 from a device means it gave no limit
        // it can mean: the driver's own maximum applies.
        seg_max_ = dcfg_.seg_max ? dcfg_.seg_max : cfg_.max_segments;
        max_data_segs_ = cfg_.max_segments;
        event_len_ = dcfg_.event_info_size > event_buffer_bytes ? uint32_t(event_buffer_bytes)
                     : dcfg_.event_info_size < sizeof(event)   ? uint32_t(sizeof(event))
                                                               : dcfg_.event_info_size;

        const ring_places& r = lay_.rings;
        const ring_places& sh = lay_.shadows;
        VSCSI_TRY(setup_ring(ctrlq_, controlq_index, planned_small_ring(cfg_), sub(r.ctrl, r.small),
                             priv_sub(sh.ctrl, sh.small)));
        VSCSI_TRY(setup_ring(eventq_, eventq_index, planned_small_ring(cfg_), sub(r.event, r.small),
                             priv_sub(sh.event, sh.small)));
        for (uint16_t q = 0; q < nreq_; ++q)
            VSCSI_TRY(setup_ring(rq_[q].ring, uint16_t(first_request_queue + q), planned_request_ring(cfg_),
                                 sub(r.of_request(q), r.req_bytes), priv_sub(sh.of_request(q), sh.req_bytes)));
        if (!handed_out) share_slots();

        // checklist 17: the event queue is populated before DRIVER_OK; notify only after it (32).
        const uint16_t nev = uint16_t(cfg_.event_buffers < eventq_.size() ? cfg_.event_buffers : eventq_.size());
        for (uint16_t i = 0; i < nev; ++i) VSCSI_TRY(post_event(i));
        const bool notify_events = eventq_.publish();
        VSCSI_TRY(dev_.driver_ok());
        if (notify_events) t.notify(eventq_index);
        return status::ok;
    }

    // Every request, control and ladder slot free, every queue idle and the caller's.
    void clear_bookkeeping() {
        for (uint16_t i = 0; i < cfg_.slots; ++i) {
            slots_[i] = slot{};
            ladders_[i] = ladder_entry{};
        }
        for (uint16_t i = 0; i < cfg_.ctrl_slots; ++i) ctrl_[i] = ctrl_slot{};
        for (uint32_t i = 0; i < lun_buckets; ++i) lun_load_[i] = 0;
        end_quiesce();
        recover_pending_ = false;
        for (uint16_t q = 0; q < MaxQueues; ++q) {
            request_queue& rq = rq_[q];
            rq.free_stack = nullptr;
            rq.mailbox = nullptr;
            rq.seq = 1 + q;
            rq.next_scan = 0;
            rq.seen_phase = phase_;
            rq.mailbox_size = 0;
            rq.first_slot = rq.slot_count = rq.free_top = 0;
            rq.kick_pending = false;
            rq.counts = queue_counters{};
            rq.link = typename request_queue::shared_words{};
        }
        ctl_stats_ = initiator_stats{};
        next_scan_ = 0;
    }

    // Slots, free stacks and mailboxes cut into one share per request queue (no queue is
    // handed out, so every slot is free).
    void share_slots() {
        const size_t line = private_region_align;
        size_t stacks = lay_.free_stacks, boxes = lay_.mailboxes;
        uint16_t first = 0;
        for (uint16_t q = 0; q < nreq_; ++q) {
            request_queue& rq = rq_[q];
            const uint16_t n = uint16_t(cfg_.slots / nreq_ + (q < cfg_.slots % nreq_ ? 1 : 0));
            rq.first_slot = first;
            rq.slot_count = n;
            rq.free_stack = reinterpret_cast<uint16_t*>(priv_at(stacks));
            stacks = align_up(stacks + sizeof(uint16_t) * n, line);
            rq.mailbox_size = initiator_detail::pow2_at_least(n);
            rq.mailbox = reinterpret_cast<escalation*>(priv_at(boxes));
            boxes = align_up(boxes + sizeof(escalation) * rq.mailbox_size, line);
            for (uint16_t i = 0; i < n; ++i) rq.free_stack[i] = uint16_t(first + n - 1 - i);
            rq.free_top = n;
            rq.link.esc_head = rq.link.esc_tail = 0;
            first = uint16_t(first + n);
        }
    }

    status setup_ring(Ring& ring, uint16_t index, ring_config planned, dma_region dev, private_region priv) {
        Transport& t = dev_.transport();
        const uint32_t max = t.queue_max_size(index);
        if (max == 0) return status::no_device;
        uint32_t size;
        if (t.queue_size_settable()) {
            // A modern device takes any power of two up to its maximum (checklist 40).
            const uint32_t limit = max < planned.size ? max : planned.size;
            size = 1;
            while (size * 2 <= limit) size *= 2;
        } else {
            // Legacy: the device's size is fixed; our memory must fit it, or we refuse cleanly.
            if (!is_power_of_two(max) || max > planned.size) return status::not_supported;
            size = max;
        }
        ring_config rc = planned;
        rc.size = size;
        rc.legacy = order_.legacy;
        rc.event_idx = dev_.has(feature::ring_event_idx);
        rc.indirect = planned.indirect && dev_.has(feature::ring_indirect_desc);
        if (!rc.indirect) {
            rc.indirect_tables = 0;
            rc.indirect_max = 0;
        } else if (rc.indirect_tables > size) {
            rc.indirect_tables = uint16_t(size);
        }
        rc.in_order = packed_ && dev_.has(feature::in_order);
        VSCSI_TRY(init_ring(ring, packed_ ? ring_format::packed : ring_format::split, rc, dev, priv));
        return t.setup_queue(index, size, ring.desc_bus(), ring.driver_area_bus(), ring.device_area_bus());
    }

    status post_event(uint16_t i) {
        uint8_t* b = event_buf(i);
        for (size_t k = 0; k < event_buffer_bytes; ++k) b[k] = 0;
        const sg_entry in{mem_.bus_of(b), event_len_};
        return eventq_.add(nullptr, 0, &in, 1, i);  // device-writable (checklist 18)
    }

    // ---- the control queue ----
    int alloc_ctrl() const {
        for (uint16_t i = 0; i < cfg_.ctrl_slots; ++i)
            if (ctrl_[i].kind == ctrl_kind::none) return i;
        return -1;
    }

    // Post a control request. `mark`, for a ladder TMF: the command's slot, marked with its
    // tag once the chain is in the ring and before the device can see it.
    status post_ctrl(uint16_t ci, const sg_entry& out, const sg_entry& in, slot* mark = nullptr, uint64_t tag = 0) {
        const status s = ctrlq_.add(&out, 1, &in, 1, ci);
        if (s != status::ok) {
            ctrl_[ci].kind = ctrl_kind::none;
            if (s == status::device_broken) recover_pending_ = true;
            return s;
        }
        if (mark) initiator_detail::store_release(mark->aborted_tag, tag);  // before publish() shows the TMF
        if (ctrlq_.publish()) dev_.transport().notify(controlq_index);
        return status::ok;
    }

    status send_tmf(tmf function, uint8_t target, uint16_t lun, uint64_t tag, uint64_t user_data, ctrl_owner owner,
                    uint16_t for_slot, uint64_t now) {
        const int ci = alloc_ctrl();
        if (ci < 0) return status::busy;
        ctrl_slot& c = ctrl_[ci];
        ctrl_dma& d = ctrl_dma_of(uint16_t(ci));
        for (size_t i = 0; i < sizeof(d); ++i) reinterpret_cast<uint8_t*>(&d)[i] = 0;
        // checklist 14: every field is present even when the TMF ignores it.
        d.tmf.type.set(order_, uint32_t(ctrl_type::tmf));
        d.tmf.subtype.set(order_, uint32_t(function));
        const lun_address la = make_lun(target, lun);
        for (int i = 0; i < 8; ++i) d.tmf.lun[i] = la.bytes[i];
        d.tmf.tag.set(order_, tag);
        d.tmf_r.response = 0xff;  // not a valid answer: tells us if the device wrote nothing
        c.kind = ctrl_kind::tmf;
        c.function = function;
        c.owner = owner;
        c.user_data = user_data;
        c.target = target;
        c.lun = lun;
        c.tag = tag;
        c.for_slot = for_slot;
        c.deadline = now + cfg_.escalation_step_ns;
        const sg_entry out{mem_.bus_of(&d.tmf), uint32_t(sizeof(tmf_req))};
        const sg_entry in{mem_.bus_of(&d.tmf_r), uint32_t(sizeof(tmf_resp))};
        return post_ctrl(uint16_t(ci), out, in, owner == ctrl_owner::ladder ? &slots_[for_slot] : nullptr, tag);
    }

    static io_outcome outcome_of(uint8_t resp, uint8_t scsi_status) {
        switch (response(resp)) {
            case response::ok:
                if (scsi_status == 0x00 || scsi_status == 0x04) return io_outcome::good;
                if (scsi_status == 0x02) return io_outcome::check_condition;
                return io_outcome::scsi_status;
            case response::overrun: return io_outcome::overrun;
            case response::aborted: return io_outcome::aborted;
            case response::bad_target:
            case response::incorrect_lun: return io_outcome::bad_target;  // QEMU sends 12 here too
            case response::reset: return io_outcome::reset;
            case response::busy: return io_outcome::busy;
            case response::transport_failure: return io_outcome::transport_failure;
            case response::target_failure: return io_outcome::target_failure;
            case response::nexus_failure: return io_outcome::nexus_failure;
            case response::failure: return io_outcome::failure;
            default: return io_outcome::unknown_response;
        }
    }

    // ---- the control owner ----
    template <class Handler>
    uint32_t reap_own_queues(Handler& h) {
        uint32_t n = 0;
        for (uint16_t q = 0; q < nreq_; ++q) {
            if (taken(q)) continue;
            // Given back after a reset it had not caught up with: its commands were reclaimed.
            if (rq_[q].seen_phase != phase_) {
                reclaim_queue(q, h);
                rq_[q].seen_phase = phase_;
            }
            n += reap_queue(q, h);
        }
        return n;
    }

    template <class Handler>
    void reap_control(Handler& h, uint64_t now) {
        for (;;) {
            const result<used_completion> r = ctrlq_.pop();
            if (r.st == status::empty) return;
            if (r.st != status::ok) {
                ++ctl_stats_.protocol_errors;
                recover_pending_ = true;
                return;
            }
            if (r.value.token >= cfg_.ctrl_slots || ctrl_[r.value.token].kind == ctrl_kind::none) {
                Platform::bug("vscsi: control ring returned a token with no request");
                recover_pending_ = true;
                return;
            }
            const uint16_t ci = uint16_t(r.value.token);
            ctrl_slot c = ctrl_[ci];
            const ctrl_dma& d = ctrl_dma_of(ci);
            ctrl_[ci].kind = ctrl_kind::none;
            if (c.kind == ctrl_kind::an) {
                an_completion a{};
                a.user_data = c.user_data;
                a.type = c.an_type;
                a.target = c.target;
                a.lun = c.lun;
                const bool written = order_.legacy || r.value.len >= sizeof(an_resp);
                a.event_actual = written ? d.an_r.event_actual.get(order_) : 0;
                a.response = written ? d.an_r.response : uint8_t(response::failure);
                h.on_an(a);
                continue;
            }
            const bool written = order_.legacy || r.value.len >= 1;
            const uint8_t resp = written ? d.tmf_r.response : uint8_t(response::failure);
            // checklist 15: the device finished every affected command before this TMF; reap
            // them before judging whether a command is still outstanding (on queues a handle
            // holds, its owner reaps them; the ladder looks again at its next scan).
            drained_ += reap_own_queues(h);
            if (c.owner == ctrl_owner::caller) {
                tmf_completion t{};
                t.user_data = c.user_data;
                t.function = c.function;
                t.target = c.target;
                t.lun = c.lun;
                t.response = resp;
                h.on_tmf(t);
            } else {
                ladder_tmf_done(c, now);
            }
        }
    }

    // A ladder TMF came back. If its command is still outstanding, climb: at once when the
    // command's queue is ours (its completion, if the TMF brought one, was reaped just now);
    // a step later when a handle's owner has it, which may not have reaped it yet.
    void ladder_tmf_done(const ctrl_slot& c, uint64_t now) {
        if (c.for_slot >= cfg_.slots) return;
        ladder_entry& e = ladders_[c.for_slot];
        if (e.stage == rung::idle || e.tag != c.tag) return;
        if (initiator_detail::load_acquire(slots_[c.for_slot].live) != e.tag) {
            e.stage = rung::idle;  // resolved meanwhile
            return;
        }
        if (taken(e.queue)) {
            e.deadline = now + cfg_.escalation_step_ns;
        } else {
            e.deadline = now;
            next_scan_ = 0;
        }
    }

    template <class Handler>
    void reap_events(Handler& h) {
        bool reposted = false;
        for (;;) {
            const result<used_completion> r = eventq_.pop();
            if (r.st == status::empty) break;
            if (r.st != status::ok) {
                ++ctl_stats_.protocol_errors;
                recover_pending_ = true;
                return;
            }
            const uint16_t i = uint16_t(r.value.token);
            const uint8_t* b = event_buf(i);
            if (!order_.legacy && r.value.len < sizeof(event)) {
                ++ctl_stats_.events_dropped;  // a short event says nothing we can trust
            } else {
                event e;
                __builtin_memcpy(&e, b, sizeof(e));
                event_info ev{};
                ev.raw_event = e.event.get(order_);
                ev.missed = (ev.raw_event & event_missed_flag) != 0;
                ev.type = event_type(ev.raw_event & ~event_missed_flag);
                ev.reason = e.reason.get(order_);
                const decoded_lun dl = decode_lun(e.lun);
                ev.lun_valid = dl.valid;
                ev.target = dl.target;
                ev.lun = dl.lun;
                ev.rescan_target = ev.type == event_type::transport_reset && dl.valid && dl.lun == 0 &&
                                   (ev.reason == uint32_t(reset_reason::rescan) ||
                                    ev.reason == uint32_t(reset_reason::removed));
                ++ctl_stats_.events;
                if (ev.type != event_type::no_event || ev.missed) h.on_event(ev);
            }
            if (post_event(i) != status::ok) {
                recover_pending_ = true;
                return;
            }
            reposted = true;
        }
        if (reposted && eventq_.publish()) dev_.transport().notify(eventq_index);
    }

    // What every queue's owner (ours too) left: requests for a reset (its ring lied), and
    // hand-overs onto the ladder. Usually nothing: two loads per queue.
    void take_from_owners(uint64_t now) {
        for (uint16_t q = 0; q < nreq_; ++q) {
            const typename request_queue::shared_words& l = rq_[q].link;
            if (initiator_detail::load_acquire(l.reset_wanted)) recover_pending_ = true;
            if (initiator_detail::load_acquire(l.esc_head) != l.esc_tail) take_hand_overs(q, now);  // [M1]
        }
    }

    // A queue's hand-overs onto the ladder, whose first rung, ABORT TASK, goes out at once.
    void take_hand_overs(uint16_t q, uint64_t now) {
        request_queue& rq = rq_[q];
        uint32_t tail = rq.link.esc_tail;  // ours alone to write
        const uint32_t head = initiator_detail::load_acquire(rq.link.esc_head);  // [M1]
        for (; tail != head; ++tail) {
            const escalation m = rq.mailbox[tail & (rq.mailbox_size - 1)];
            if (m.slot >= cfg_.slots) continue;
            ladders_[m.slot] = ladder_entry{m.tag, now, m.lun, q, m.target, rung::abort_due};
            climb(m.slot, now);
        }
        initiator_detail::store_release(rq.link.esc_tail, tail);  // [M2]
    }

    // Deadlines and device health, at most every scan_interval.
    void scan(uint64_t now) {
        if (dev_.needs_reset()) {  // checklist 37
            recover_pending_ = true;
            return;
        }
        for (uint16_t i = 0; i < cfg_.ctrl_slots; ++i) {
            // A TMF the device sits on: nothing short of a reset gets its buffers back.
            if (ctrl_[i].kind != ctrl_kind::none && now >= ctrl_[i].deadline) {
                recover_pending_ = true;
                return;
            }
        }
        for (uint16_t q = 0; q < nreq_; ++q)
            if (!taken(q)) scan_queue(q, now);
        take_from_owners(now);
        for (uint16_t i = 0; i < cfg_.slots; ++i) {
            if (ladders_[i].stage == rung::idle || now < ladders_[i].deadline) continue;
            climb(i, now);
            if (recover_pending_) return;
        }
    }

    // One rung up for the command in slot i, if it is still out: ABORT TASK, LOGICAL UNIT
    // RESET, I_T NEXUS RESET, then a device reset. Each TMF names the command's tag.
    void climb(uint16_t i, uint64_t now) {
        ladder_entry& e = ladders_[i];
        if (initiator_detail::load_acquire(slots_[i].live) != e.tag) {
            e.stage = rung::idle;  // it came back meanwhile
            return;
        }
        tmf f = tmf::abort_task;
        rung next = rung::abort_sent;
        uint64_t* counter = &ctl_stats_.aborts_sent;
        uint16_t lun = e.lun;
        switch (e.stage) {
            case rung::idle: return;
            case rung::abort_due: break;
            case rung::abort_sent:
                f = tmf::logical_unit_reset, next = rung::lun_reset_sent, counter = &ctl_stats_.lun_resets_sent;
                break;
            case rung::lun_reset_sent:
                f = tmf::i_t_nexus_reset, next = rung::nexus_reset_sent, counter = &ctl_stats_.nexus_resets_sent;
                lun = 0;
                break;
            case rung::nexus_reset_sent:
                recover_pending_ = true;
                return;
        }
        if (send_tmf(f, e.target, lun, e.tag, 0, ctrl_owner::ladder, i, now) != status::ok)
            return;  // no control slot now: try again next scan
        e.stage = next;
        e.deadline = now + cfg_.escalation_step_ns;
        ++*counter;
    }

    // Complete everything the device held, after it was reset (it owns nothing any more):
    // the caller's queues now, handed-out queues through their owners' next poll().
    template <class Handler>
    void reclaim_everything(Handler& h) {
        for (uint16_t q = 0; q < nreq_; ++q) {
            request_queue& rq = rq_[q];
            if (!taken(q)) reclaim_queue(q, h);
            // Every owner has stopped: what it posted for the old rings goes with them.
            rq.link.esc_head = rq.link.esc_tail = 0;
            rq.link.reset_wanted = 0;
            rq.kick_pending = false;
        }
        for (uint16_t i = 0; i < cfg_.slots; ++i) ladders_[i].stage = rung::idle;
        ctrlq_.reclaim_all([](uint32_t) {});
        eventq_.reclaim_all([](uint32_t) {});
        for (uint16_t i = 0; i < cfg_.ctrl_slots; ++i) {
            ctrl_slot c = ctrl_[i];
            if (c.kind == ctrl_kind::none) continue;
            ctrl_[i].kind = ctrl_kind::none;
            if (c.owner != ctrl_owner::caller) continue;
            if (c.kind == ctrl_kind::tmf) {
                tmf_completion t{};
                t.user_data = c.user_data;
                t.function = c.function;
                t.target = c.target;
                t.lun = c.lun;
                t.response = uint8_t(response::reset);
                t.device_reset = true;
                h.on_tmf(t);
            } else {
                an_completion a{};
                a.user_data = c.user_data;
                a.type = c.an_type;
                a.target = c.target;
                a.lun = c.lun;
                a.response = uint8_t(response::reset);
                a.device_reset = true;
                h.on_an(a);
            }
        }
    }

    // The last rung: stop every queue owner, reset the device, reclaim every buffer, bring it
    // up again. Returns busy while some owner has not stopped yet (poll() tries again).
    template <class Handler>
    status recover(Handler& h) {
        if (!quiescing_) {
            quiescing_ = true;
            initiator_detail::store_release(phase_, phase_ + 1);  // odd: [P1]
        }
        reset_waiting_ = true;
        for (uint16_t q = 0; q < nreq_; ++q)
            if (taken(q) && initiator_detail::load_acquire(rq_[q].link.ack) != phase_) return status::busy;  // [P2]
        reset_waiting_ = false;
        recover_pending_ = false;
        ++ctl_stats_.device_resets;
        const status s = dev_.reset(cfg_.reset_polls);
        if (s != status::ok) {
            // It never acknowledged the reset: its buffers may still be written. Give up
            // without touching them (checklist 38); owners stay stopped.
            set_state(initiator_state::failed);
            return s;
        }
        reclaim_everything(h);
        const status b = bring_up();
        set_state(b == status::ok ? initiator_state::running : initiator_state::failed);
        quiescing_ = false;
        const uint32_t p = phase_ + 1;
        for (uint16_t q = 0; q < nreq_; ++q)
            if (!taken(q)) rq_[q].seen_phase = p;
        initiator_detail::store_release(phase_, p);  // even: [P3]
        return b;
    }

    virtio_device<Transport> dev_;
    initiator_config cfg_{};
    dma_region mem_{};
    uint8_t* priv_ = nullptr;
    layout lay_{};
    virtio_order order_{};
    scsi_config_values dcfg_{};
    Ring ctrlq_{};
    Ring eventq_{};
    slot* slots_ = nullptr;
    ladder_entry* ladders_ = nullptr;
    slot_dma* slot_dma_ = nullptr;
    ctrl_slot* ctrl_ = nullptr;
    uint16_t* lun_load_ = nullptr;
    initiator_stats ctl_stats_{};
    uint64_t next_scan_ = 0;
    uint32_t cdb_size_ = 0;
    uint32_t sense_size_ = 0;
    uint32_t req_bytes_ = 0;
    uint32_t resp_bytes_ = 0;
    uint32_t cmd_per_lun_ = 1;
    uint32_t seg_max_ = 0;
    uint32_t max_data_segs_ = 0;
    uint32_t event_len_ = sizeof(event);
    uint32_t drained_ = 0;
    uint16_t nreq_ = 0;
    bool pi_ = false;
    bool packed_ = false;  // the rings are packed (VIRTIO_F_RING_PACKED negotiated)
    bool count_luns_ = false;  // the per-LUN counters can bind (cmd_per_lun below the slots)
    bool recover_pending_ = false;
    bool quiescing_ = false;      // phase_ is odd: queue owners stop
    bool reset_waiting_ = false;  // ... and a reset waits for them to
    initiator_state state_ = initiator_state::stopped;
    alignas(64) uint32_t phase_ = 0;  // read by every queue owner on every call: a line of its own
    request_queue rq_[MaxQueues]{};

public:
    // A request queue handed to one owner (a thread): it submits to, kicks and polls that
    // queue alone, without locks; the initiator's own calls leave the queue alone. Move-only,
    // so there is one owner at a time. Dropping it (or release()) gives the queue, and what
    // it has in flight, back to the initiator; every handle goes back before stop(), start()
    // or the initiator's end. Its poll() needs a handler with on_complete() only: TMFs, AN
    // and events go to the initiator's poll().
    class queue_handle {
    public:
        queue_handle() = default;
        queue_handle(queue_handle&& o) noexcept : ini_(o.ini_), q_(o.q_) { o.ini_ = nullptr; }
        queue_handle& operator=(queue_handle&& o) noexcept {
            if (this != &o) {
                release();
                ini_ = o.ini_;
                q_ = o.q_;
                o.ini_ = nullptr;
            }
            return *this;
        }
        queue_handle(const queue_handle&) = delete;
        queue_handle& operator=(const queue_handle&) = delete;
        ~queue_handle() { release(); }

        bool valid() const { return ini_ != nullptr; }
        uint16_t queue() const { return q_; }

        // As initiator::submit(), on this queue (r.queue is ignored). busy also while a
        // reset is under way, and after one until poll() has completed what it reclaimed.
        result<uint64_t> submit(const io_request& r, uint64_t now) {
            if (!ini_) return {status::invalid_argument, 0};
            const status g = ini_->enter(q_);
            if (g != status::ok) return {g, 0};
            return ini_->submit_on(q_, r, now);
        }
        void kick() {
            if (ini_ && ini_->enter(q_) == status::ok) ini_->kick_queue(q_);
        }
        // Reap this queue, run its deadlines (lost commands are re-kicked, then handed to the
        // initiator's ladder), and take part in resets. Returns completions from the device.
        template <class Handler>
        uint32_t poll(uint64_t now, Handler& h) {
            return ini_ ? ini_->poll_queue(q_, now, h) : 0;
        }
        void disable_interrupts() {
            if (ini_ && ini_->enter(q_) == status::ok) ini_->rq_[q_].ring.disable_interrupts();
        }
        bool enable_interrupts() {
            return ini_ && ini_->enter(q_) == status::ok && ini_->rq_[q_].ring.enable_interrupts();
        }
        bool completions_pending() const {
            return ini_ && ini_->rq_[q_].seen_phase == initiator_detail::load_acquire(ini_->phase_) &&
                   !(ini_->rq_[q_].seen_phase & 1) && ini_->rq_[q_].ring.has_used();
        }
        uint32_t in_flight() const { return ini_ ? ini_->rq_[q_].slot_count - ini_->rq_[q_].free_top : 0; }
        void release() {
            if (!ini_) return;
            ini_->give_back(q_);
            ini_ = nullptr;
        }

    private:
        friend class initiator;
        initiator* ini_ = nullptr;
        uint16_t q_ = 0;
    };
};

}  // namespace vscsi
