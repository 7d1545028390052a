// What the two virtqueue formats (ring.hpp's split ring, packed_ring.hpp's packed ring) share:
// their configuration, the scatter-gather entries a chain is built from, what the reaper
// hands back, and the driver's private shadow of one chain in flight.
#pragma once
#include <stdint.h>
#include <stddef.h>

#include "platform.hpp"
#include "status.hpp"

namespace vscsi {

inline constexpr uint32_t ring_max_size = 32768;
inline constexpr size_t ring_region_align = 4096;

struct ring_config {
    uint32_t size = 0;            // entries: 1..32768; a power of two for split rings (checklist 40)
    bool legacy = false;          // split only: contiguous layout, used ring 4096-aligned, used len clamped
    bool event_idx = false;       // VIRTIO_RING_F_EVENT_IDX negotiated
    bool indirect = false;        // VIRTIO_RING_F_INDIRECT_DESC negotiated
    bool in_order = false;        // packed only: VIRTIO_F_IN_ORDER negotiated
    uint16_t indirect_tables = 0; // indirect tables preallocated in the region (<= size)
    uint16_t indirect_max = 0;    // descriptors per indirect table
    uint16_t direct_max = 0;      // chains this short go direct while half the ring is free (0: never)
};

struct sg_entry {
    uint64_t addr;  // bus address
    uint32_t len;
};

// A chain's segments, as the rings take them: any type with
//   uint32_t readable() const;                      // how many device-readable segments
//   uint32_t writable() const;                      // how many device-writable ones
//   const sg_entry& readable_at(uint32_t i) const;  // i < readable(), in order
//   const sg_entry& writable_at(uint32_t i) const;  // i < writable(), in order
// sg_lists is the plain one: two arrays. A caller whose chain is made of parts (a header,
// the caller's data, another header) lists them without copying them into one array first.
struct sg_lists {
    const sg_entry* out;
    uint32_t n_out;
    const sg_entry* in;
    uint32_t n_in;
    uint32_t readable() const { return n_out; }
    uint32_t writable() const { return n_in; }
    const sg_entry& readable_at(uint32_t i) const { return out[i]; }
    const sg_entry& writable_at(uint32_t i) const { return in[i]; }
};

struct used_completion {
    uint32_t token;
    uint32_t len;  // bytes the device wrote, validated against the chain
};

namespace ring_detail {
// Private shadow of one chain in flight (per head for split rings, per buffer id for packed
// ones): what the driver posted, never read back from device memory.
struct head_state {
    uint64_t added_in;   // 0: not in flight; else the publication epoch in which it was added
    uint32_t token;
    uint32_t writable;   // device-writable bytes of the chain
    uint32_t readable;   // device-readable bytes of the chain (saturated at 2^32 - 1)
    uint16_t ndesc;      // descriptors the chain takes in the ring
    uint16_t table;      // indirect table index, or no_table
};
static_assert(sizeof(head_state) == 24, "head_state packing");
inline constexpr uint16_t no_table = 0xffff;

// The indirect-table part of a configuration.
constexpr bool indirect_config_valid(const ring_config& c) {
    if (c.indirect) {
        if (c.indirect_tables == 0 || c.indirect_tables > c.size) return false;
        if (c.indirect_max < 1 || c.indirect_max > ring_max_size) return false;
    } else if (c.indirect_tables != 0) {
        return false;
    }
    return true;
}

// A chain's byte counts, taken as its descriptors are written: device-readable and
// device-writable bytes, and whether a segment was empty.
struct chain_bytes {
    uint64_t readable = 0, writable = 0;
    bool empty = false;
    void count_readable(uint32_t len) {
        empty |= len == 0;
        readable += len;
    }
    void count_writable(uint32_t len) {
        empty |= len == 0;
        writable += len;
    }
    // Non-empty segments, at most 4 GiB in all (checklist 42), at most 4 GiB device-writable.
    bool valid() const { return !empty && readable + writable <= (uint64_t(1) << 32) && writable <= 0xffffffffu; }
};

template <class Chain>
bool segments_valid(const Chain& c) {
    chain_bytes b;
    for (uint32_t i = 0; i < c.readable(); ++i) b.count_readable(c.readable_at(i).len);
    for (uint32_t i = 0; i < c.writable(); ++i) b.count_writable(c.writable_at(i).len);
    return b.valid();
}

// The shadow of a chain just added (valid byte counts), in flight from publication `epoch`.
inline void record(head_state& h, uint64_t epoch, uint32_t token, const chain_bytes& b, uint16_t ndesc, uint16_t table) {
    h.added_in = epoch;
    h.token = token;
    h.writable = uint32_t(b.writable);
    h.readable = b.readable > 0xffffffffu ? 0xffffffffu : uint32_t(b.readable);
    h.ndesc = ndesc;
    h.table = table;
}

// With direct_max set, short chains go direct while at least half the ring is free: the
// device fetches one line less for them. Past that, and for longer chains, an indirect
// table keeps each chain to one ring descriptor, so the ring does not run out first.
constexpr bool use_indirect(const ring_config& c, uint32_t n, uint32_t num_free, uint16_t tables_free) {
    if (!c.indirect || n < 2 || n > c.indirect_max || tables_free == 0) return false;
    return n > c.direct_max || num_free < n + c.size / 2;
}

// The tokens of the chains in flight, one call each.
template <class F>
void for_each_in_flight(const head_state* heads, uint32_t n, F&& f) {
    for (uint32_t i = 0; i < n; ++i)
        if (heads[i].added_in) f(heads[i].token);
}
inline bool token_in_flight(const head_state* heads, uint32_t n, uint32_t token) {
    for (uint32_t i = 0; i < n; ++i)
        if (heads[i].added_in && heads[i].token == token) return true;
    return false;
}

// The device-visible region a ring is given: present, as large as its layout, 16-byte aligned
// in both address spaces (descriptors are).
inline status check_ring_region(const dma_region& dev, size_t need) {
    if (!dev.virt || dev.bytes < need) return status::too_small;
    if ((reinterpret_cast<uintptr_t>(dev.virt) & 15) || (dev.bus & 15)) return status::invalid_argument;
    return status::ok;
}

// Checks a used length against the chain it names. A length within the writable bytes is
// what the device wrote. Legacy devices historically reported other lengths (checklist 48),
// and QEMU's virtio-scsi reports the whole chain for a write (data-out plus response) on
// modern devices too: a length within the chain is clamped to what the device may write.
// One beyond the whole chain is a lie (false) unless `lenient`.
constexpr bool accept_used_len(const head_state& h, uint32_t& len, bool lenient) {
    if (len <= h.writable) return true;
    if (!lenient && uint64_t(len) > uint64_t(h.writable) + h.readable) return false;
    len = h.writable;
    return true;
}

}  // namespace ring_detail

}  // namespace vscsi
