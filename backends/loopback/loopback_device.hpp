// An in-process virtio-scsi PCI function: the device half of everything the core drives.
//
// It plays QEMU's virtio-scsi-pci device: the legacy I/O BAR and the modern capability
// structures (transitional, modern-only or legacy-only), the device side of split and packed
// rings (direct and indirect chains, EVENT_IDX, packed rings' event suppression structures,
// IN_ORDER runs), a SCSI target with RAM-backed LUNs, the control
// queue (TMF, AN) and the event queue (hot-plug, hot-unplug, parameter change, missed
// events). It reaches driver memory only through bus addresses registered in a dma_map, so
// a driver that hands out virtual addresses fails.
//
// It also referees: every register access the spec forbids (out-of-order status, writes to
// read-only registers, wrong widths, notifications before DRIVER_OK, queue_enable = 0, ...)
// is recorded in violations(), and tests require that list to stay empty.
//
// Fault injection switches (faults()) make it hold or lose completions, answer with any
// response code, lie in the used ring, refuse FEATURES_OK, set NEEDS_RESET, drop events and
// write random bytes anywhere in a DMA region (what a device behind an IOMMU can still do).
//
// Nothing here allocates after construction and queue setup, so allocation-counting tests
// see only the driver.
#pragma once
#include <stdint.h>
#include <string.h>

#include <atomic>
#include <string>
#include <vector>

#include "pinned_thread.hpp"
#include "vscsi/wire.hpp"

namespace vscsi::loopback {

// Bus address -> host pointer for the regions a test shares with the device.
class dma_map {
public:
    void add(uint64_t bus, void* virt, size_t len) { regions_.push_back({bus, static_cast<uint8_t*>(virt), len}); }
    void clear() { regions_.clear(); }
    // nullptr unless [bus, bus+len) lies inside one region.
    uint8_t* translate(uint64_t bus, uint64_t len) const {
        if (last_ < regions_.size()) {  // most accesses hit the region the last one did
            const region& r = regions_[last_];
            if (bus >= r.bus && len <= r.len && bus - r.bus <= r.len - len) return r.virt + (bus - r.bus);
        }
        for (size_t i = 0; i < regions_.size(); ++i) {
            const region& r = regions_[i];
            if (bus >= r.bus && len <= r.len && bus - r.bus <= r.len - len) {
                last_ = i;
                return r.virt + (bus - r.bus);
            }
        }
        return nullptr;
    }

private:
    struct region {
        uint64_t bus;
        uint8_t* virt;
        size_t len;
    };
    std::vector<region> regions_;
    mutable size_t last_ = 0;
};

enum class personality { transitional, modern, legacy };

struct options {
    personality kind = personality::transitional;
    uint16_t num_queues = 1;       // request queues
    uint32_t queue_max = 256;      // per queue (QEMU default 256; up to 1024 there)
    uint32_t seg_max = 0;          // 0: queue_max - 2, as QEMU
    uint32_t max_sectors = 0xffff;
    uint32_t cmd_per_lun = 128;
    uint32_t event_info_size = 16;
    uint16_t max_channel = 0;
    uint16_t max_target = 255;
    uint32_t max_lun = 16383;
    bool indirect = true;
    bool event_idx = true;
    bool hotplug = true;
    bool change = true;
    bool inout = false;
    bool t10_pi = false;
    bool packed = false;           // offer VIRTIO_F_RING_PACKED (modern interface only, as QEMU's packed=on)
    bool in_order = false;         // offer VIRTIO_F_IN_ORDER: then used buffers go back in order, and
                                   // on packed rings one used descriptor answers each pass's run
    bool msix_enabled = false;     // legacy config moves to offset 24
    uint32_t notify_multiplier = 4;
    uint64_t withhold_features = 0;  // feature bits not offered (e.g. VERSION_1 on a "modern" device)
    bool incorrect_lun_for_missing = false;  // answer absent LUNs with INCORRECT_LUN, as some QEMUs
};

// Switches a test flips between steps.
struct faults {
    uint32_t hold_next = 0;        // hold the next N commands until release_held()
    uint32_t lose_next = 0;        // never complete the next N commands (until reset)
    uint16_t hold_only_lun = 0xffff;  // hold_next / lose_next take only commands to this LUN (0xffff: any)
    uint32_t force_response_next = 0;   // answer the next N commands with force_response
    uint8_t force_response = 0;
    uint8_t force_status = 0;           // SAM status with force_response == OK
    // The lies, each as it reads on a split ring (packed ring in brackets). In-order devices
    // must not be told to hold, lose or reorder commands.
    bool lie_bad_id = false;       // next completion carries an id past the ring
    bool lie_middle_id = false;    // next completion names a non-head descriptor (an id not in flight)
    bool lie_bad_len = false;      // next completion claims more bytes than the buffer
    bool lie_duplicate = false;    // next completion is reported twice
    bool lie_used_jump = false;    // next used idx jumps by queue size + 1 (the used descriptor is
                                   // stamped over the whole ring, as if the device ran a lap ahead)
    bool lie_residual = false;     // next response claims a residual past the buffers
    bool lie_sense_len = false;    // next response claims more sense than sense_size
    bool ignore_tmf = false;       // swallow control-queue requests (they never complete)
    bool refuse_features_ok = false;
    bool drop_events = false;      // events are lost; the next delivered one says EVENTS_MISSED
    bool out_of_order = false;     // complete each batch in reverse order
    uint32_t reset_delay_polls = 0;  // status reads that still show the old value after reset
    uint32_t generation_churn = 0;   // config_generation changes on each of the next N reads
    // Write anywhere in the DMA region [stomp_bus, stomp_bus + stomp_len): on every step() while
    // DRIVER_OK is set, stomp_writes runs of 1-8 random bytes at random offsets, one in four
    // aimed at a ring's index or event fields (avail/used idx, used_event, avail_event, flags).
    // stomp_seed is the generator's state and moves on with every write.
    uint32_t stomp_writes = 0;
    uint64_t stomp_bus = 0;
    uint64_t stomp_len = 0;
    uint64_t stomp_seed = 1;
};

class device {
public:
    explicit device(const options& o, const dma_map& mem);
    ~device() { stop_thread(); }
    device(const device&) = delete;
    device& operator=(const device&) = delete;

    // ---- the Bus a driver's transport uses (pci.hpp) ----
    uint8_t read8(unsigned bar, uint32_t off) { return uint8_t(read(bar, off, 1)); }
    uint16_t read16(unsigned bar, uint32_t off) { return uint16_t(read(bar, off, 2)); }
    uint32_t read32(unsigned bar, uint32_t off) { return read(bar, off, 4); }
    void write8(unsigned bar, uint32_t off, uint8_t v) { write(bar, off, 1, v); }
    void write16(unsigned bar, uint32_t off, uint16_t v) { write(bar, off, 2, v); }
    void write32(unsigned bar, uint32_t off, uint32_t v) { write(bar, off, 4, v); }
    uint64_t bar_length(unsigned bar) const;
    uint8_t config_read8(uint32_t off) const { return off < 256 ? pcicfg_[off] : 0xff; }
    uint16_t config_read16(uint32_t off) const {
        return off + 2 <= 256 ? uint16_t(pcicfg_[off] | pcicfg_[off + 1] << 8) : 0xffff;
    }
    uint32_t config_read32(uint32_t off) const {
        return off + 4 <= 256 ? uint32_t(config_read16(off)) | uint32_t(config_read16(off + 2)) << 16 : ~0u;
    }
    // Tests may corrupt PCI config space to play a hostile device.
    uint8_t* pci_config() { return pcicfg_; }

    // ---- the target ----
    struct lun_info {
        uint8_t target;
        uint16_t lun;
        uint32_t block_size;
        uint64_t blocks;
        bool read_only;
    };
    // Adds a RAM-backed LUN (the storage is allocated here, not on the I/O path). When the
    // device is running and hotplug was negotiated, a RESCAN event is queued.
    bool add_lun(uint8_t target, uint16_t lun, uint64_t blocks, uint32_t block_size = 512, bool read_only = false);
    bool remove_lun(uint8_t target, uint16_t lun);  // queues a REMOVED event
    bool resize_lun(uint8_t target, uint16_t lun, uint64_t blocks);  // PARAM_CHANGE 2A/09
    uint8_t* lun_data(uint8_t target, uint16_t lun);
    const lun_info* find_lun(uint8_t target, uint16_t lun) const;
    void queue_event(uint32_t type, uint8_t target, uint16_t lun, uint32_t reason);

    // ---- running ----
    uint32_t step();                 // process every queue; returns requests consumed
    // Run step() on a thread of its own, polling shared memory, as a real device would. Start
    // it after the driver has brought the device up; while it runs, the driver may only touch
    // the rings and the notify register.
    void start_thread(int cpu = -1);  // cpu >= 0: the thread runs on that CPU only
    void stop_thread();
    uint32_t release_held();         // complete every held command normally
    void set_needs_reset();          // DEVICE_NEEDS_RESET + config interrupt

    faults& fault() { return faults_; }
    const std::vector<std::string>& violations() const { return violations_; }
    void clear_violations() { violations_.clear(); }

    // What the device saw, for tests.
    struct counters {
        uint64_t commands, tmfs, an, events_delivered, events_dropped, interrupts, notifies, resets;
        uint64_t aborted_by_tmf, reset_by_tmf;
        uint64_t stomps;  // runs of random bytes written by faults().stomp_writes
    };
    const counters& stats() const { return stats_; }
    uint8_t status() const { return status_; }
    uint64_t driver_features() const { return driver_features_; }
    uint32_t sense_size() const { return sense_size_; }
    uint32_t cdb_size() const { return cdb_size_; }
    uint32_t queue_size(uint16_t q) const { return q < queues_.size() ? queues_[q].size : 0; }
    uint32_t held_count() const;
    uint32_t last_tmf_subtype() const { return last_tmf_subtype_; }
    uint64_t last_tmf_tag() const { return last_tmf_tag_; }
    bool driver_ok() const { return status_ & dev_status::driver_ok; }

    static constexpr uint32_t legacy_bar_size = 64;
    static constexpr uint32_t modern_bar = 4;
    static constexpr uint32_t modern_bar_size = 0x4000;
    static constexpr uint32_t common_off = 0x0000, isr_off = 0x1000, device_off = 0x2000, notify_off = 0x3000;

private:
    struct queue {
        uint32_t size = 0;
        uint32_t max = 0;
        bool packed = false;         // the format, fixed when the ring is mapped
        uint8_t* desc_p = nullptr;   // host addresses of the ring parts, once mapped (packed:
        uint8_t* avail_p = nullptr;  // the driver's and the device's event structures)
        uint8_t* used_p = nullptr;
        bool enabled = false;
        uint64_t desc = 0, avail = 0, used = 0;
        uint16_t last_avail = 0;     // split: avail index; packed: ring position, with avail_wrap
        uint16_t used_idx = 0;       // split: used index; packed: ring position, with used_wrap
        bool avail_wrap = true;
        bool used_wrap = true;
        uint64_t used_total = 0;     // packed: descriptors used so far
        uint64_t signalled_total = 0;
        uint32_t device_event = 0;   // packed: what the device's event structure holds
        uint16_t signalled_used = 0;
        bool signalled_valid = false;
        uint16_t msix = 0xffff;
    };
    struct iov {
        uint8_t* p;
        uint32_t len;
    };
    // A parsed chain: readable iovs, then writable ones. Split rings name it by its head
    // descriptor; packed ones by its buffer id and where it lies in the ring, and once the
    // device holds on to it, by the copy it keeps of its descriptors (used descriptors for
    // later lists overwrite the ring meanwhile).
    struct chain {
        uint16_t head;
        uint16_t ndesc;  // ring descriptors it took
        uint16_t saved;  // packed: first record of its copy in the queue's pool, once held
        uint32_t n_read, n_write;
        uint64_t read_bytes, write_bytes;
        uint16_t pos;    // packed: ring position of its first descriptor, and that lap's wrap
        bool wrap;
    };
    // A packed ring descriptor as the device copied it; `link` is the next of its list.
    struct saved_desc {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        uint16_t link;
    };
    struct used_entry {
        chain c;
        uint32_t len;
    };
    struct held_cmd {
        bool used;
        bool lost;
        uint16_t queue;
        chain c;
        uint8_t target;
        uint16_t lun;
        uint64_t tag;
    };
    struct lun_store {
        lun_info info;
        std::vector<uint8_t> data;
        bool present;
        bool unit_attention;
        uint8_t ua_asc, ua_ascq;
    };
    struct pending_event {
        uint32_t type;
        uint8_t target;
        uint16_t lun;
        uint32_t reason;
    };

    uint32_t read(unsigned bar, uint32_t off, unsigned width);
    void write(unsigned bar, uint32_t off, unsigned width, uint32_t v);
    uint32_t legacy_read(uint32_t off, unsigned width);
    void legacy_write(uint32_t off, unsigned width, uint32_t v);
    uint32_t common_read(uint32_t off, unsigned width);
    void common_write(uint32_t off, unsigned width, uint32_t v);
    uint32_t devcfg_read(uint32_t off, unsigned width);
    void devcfg_write(uint32_t off, unsigned width, uint32_t v);
    void status_write(uint8_t v);
    void do_reset();
    void violation(const std::string& what);
    bool modern_features() const { return (driver_features_ >> feature::version_1) & 1; }

    bool map_ring(queue& q) { return q.desc_p || map_ring_parts(q); }
    bool map_ring_parts(queue& q);
    bool pop_chain(uint16_t qi, chain& c);
    bool pop_packed(uint16_t qi, chain& c);
    // The chain's buffers into iovs_: split from the descriptor table, packed from the copy.
    bool walk_chain(uint16_t qi, chain& c);
    bool walk_split(queue& q, chain& c);
    bool walk_packed(uint16_t qi, chain& c);
    bool take_table(uint64_t addr, uint32_t len, bool& seen_write, chain& c);
    bool save_packed(uint16_t qi, chain& c);
    // Is a packed descriptor with these flags available in a lap with wrap counter `wrap`?
    static bool packed_available(uint16_t flags, bool wrap) {
        return bool(flags & (1u << 7)) == wrap && bool(flags & (1u << 15)) != wrap;
    }
    bool take_buffer(uint64_t addr, uint32_t len, bool writable, bool& seen_write, chain& c);
    void free_saved(uint16_t qi, const chain& c);
    struct lies {
        bool bad_id, middle_id, duplicate, used_jump;
        uint32_t extra_len;
    };
    lies take_lies(uint16_t qi);
    bool lies_armed() const {
        return faults_.lie_bad_id | faults_.lie_middle_id | faults_.lie_bad_len | faults_.lie_duplicate |
               faults_.lie_used_jump;
    }
    void push_used(uint16_t qi, const chain& c, uint32_t len);
    void push_used_packed(uint16_t qi, const chain& c, uint32_t len, uint32_t skip);
    void set_device_event(queue& q);
    void process_queue(uint16_t qi);
    void process_request(uint16_t qi, const chain& c);
    void process_control(uint16_t qi, const chain& c);
    void deliver_events();
    void complete_cmd(uint16_t qi, const chain& c, uint8_t response, uint8_t status, const uint8_t* sense,
                      uint32_t sense_len, uint32_t residual, uint32_t data_written);
    void interrupt(uint16_t qi);
    void stomp();
    lun_store* lookup(uint8_t target, uint16_t lun);
    bool target_exists(uint8_t target) const;

    // Gather/scatter over the current chain's iovs.
    uint32_t copy_from_readable(uint8_t* dst, uint64_t off, uint32_t len) const;
    uint32_t copy_to_writable(uint64_t off, const uint8_t* src, uint32_t len);
    void execute_scsi(lun_store* l, bool lun_exists, const uint8_t* cdb, uint64_t out_off, uint64_t out_len,
                      uint64_t in_off, uint64_t in_len, uint8_t& status, uint8_t* sense, uint32_t& sense_len,
                      uint32_t& data_in, uint32_t& data_out_used);
    void set_sense(uint8_t* sense, uint32_t& len, uint8_t key, uint8_t asc, uint8_t ascq);

    options opt_;
    const dma_map& mem_;
    bool kind_legacy_used_ = false;  // the driver talked to the legacy BAR
    uint8_t pcicfg_[256]{};
    uint8_t status_ = 0;
    uint8_t isr_ = 0;
    uint8_t config_generation_ = 0;
    uint32_t reset_reads_left_ = 0;
    uint8_t status_before_reset_ = 0;
    uint64_t device_features_ = 0;
    uint64_t driver_features_ = 0;
    bool driver_features_written_ = false;
    uint32_t dfselect_ = 0, gfselect_ = 0;
    uint16_t queue_select_ = 0;
    uint8_t cur_target_ = 0;
    uint16_t msix_config_ = 0xffff;
    // A vector past the MSI-X table cannot be mapped: the register then reads NO_VECTOR, as
    // the spec lets a device answer a vector it cannot use (checklist 56).
    static constexpr uint16_t msix_table_size = 4;
    static uint16_t msix_vector(uint32_t v) { return v < msix_table_size ? uint16_t(v) : uint16_t(0xffff); }
    uint32_t sense_size_ = default_sense_size;
    uint32_t cdb_size_ = default_cdb_size;
    bool needs_reset_ = false;
    std::vector<queue> queues_;
    std::vector<iov> iovs_;  // current chain, preallocated
    uint32_t iov_read_ = 0, iov_write_ = 0;
    std::vector<held_cmd> held_;
    std::vector<lun_store> luns_;
    pending_event events_[64]{};
    uint32_t event_head_ = 0, event_count_ = 0;
    bool events_missed_ = false;
    std::vector<used_entry> batch_;  // completions of batch_queue_ held back until its pass ends
    bool batching_ = false;
    uint16_t batch_queue_ = 0;
    // Per queue, packed rings: the copies of the lists the device holds (a free list of
    // queue_max records), and which buffer ids it holds.
    std::vector<std::vector<saved_desc>> pools_;
    std::vector<uint16_t> pool_free_;
    std::vector<std::vector<uint8_t>> id_busy_;
    faults faults_{};
    counters stats_{};
    uint32_t last_tmf_subtype_ = ~0u;
    uint64_t last_tmf_tag_ = 0;
    std::vector<std::string> violations_;
    pinned_thread thread_;
    std::atomic<bool> running_{false};
};

}  // namespace vscsi::loopback
