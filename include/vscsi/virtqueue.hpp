// A virtqueue of either format: split (ring.hpp) or packed (packed_ring.hpp), chosen when the
// queue is set up, once the device has said whether it takes VIRTIO_F_RING_PACKED.
//
// It holds both rings and forwards every call to the one in use: one well-predicted branch per
// call. The initiator takes it as its default ring type; a user who wants one format only
// instantiates the initiator with split_ring or packed_ring directly and pays nothing for the
// other (ring_kind below says which formats a ring type speaks).
#pragma once
#include <stdint.h>
#include <stddef.h>

#include "packed_ring.hpp"
#include "platform.hpp"
#include "ring.hpp"
#include "ring_common.hpp"
#include "status.hpp"

namespace vscsi {

enum class ring_format : uint8_t { split, packed };

// Which formats a ring type speaks.
template <class Ring>
struct ring_kind;
template <class P>
struct ring_kind<split_ring<P>> {
    static constexpr bool split = true, packed = false;
};
template <class P>
struct ring_kind<packed_ring<P>> {
    static constexpr bool split = false, packed = true;
};

template <class Platform>
class virtqueue;
template <class P>
struct ring_kind<virtqueue<P>> {
    static constexpr bool split = true, packed = true;
};

// Bytes a ring of this type needs for this config in the given format (0 if it cannot).
template <class Ring>
constexpr size_t ring_bytes_for(ring_format f, const ring_config& c) {
    if (f == ring_format::packed)
        return ring_kind<Ring>::packed ? packed_ring_region_bytes(c) : 0;
    return ring_kind<Ring>::split ? ring_region_bytes(c) : 0;
}
template <class Ring>
constexpr size_t ring_private_bytes_for(ring_format f, const ring_config& c) {
    if (f == ring_format::packed)
        return ring_kind<Ring>::packed ? packed_ring_private_bytes(c) : 0;
    return ring_kind<Ring>::split ? ring_private_bytes(c) : 0;
}

template <class Platform>
class virtqueue {
public:
    status init(ring_format f, const ring_config& cfg, dma_region dev, private_region priv) {
        packed_ = f == ring_format::packed;
        return packed_ ? p_.init(cfg, dev, priv) : s_.init(cfg, dev, priv);
    }
    ring_format format() const { return packed_ ? ring_format::packed : ring_format::split; }

    uint64_t desc_bus() const { return packed_ ? p_.desc_bus() : s_.desc_bus(); }
    uint64_t driver_area_bus() const { return packed_ ? p_.driver_area_bus() : s_.driver_area_bus(); }
    uint64_t device_area_bus() const { return packed_ ? p_.device_area_bus() : s_.device_area_bus(); }
    uint32_t size() const { return packed_ ? p_.size() : s_.size(); }
    uint32_t free_descriptors() const { return packed_ ? p_.free_descriptors() : s_.free_descriptors(); }
    uint32_t in_flight() const { return packed_ ? p_.in_flight() : s_.in_flight(); }
    bool broken() const { return packed_ ? p_.broken() : s_.broken(); }
    void mark_broken() { packed_ ? p_.mark_broken() : s_.mark_broken(); }
    const ring_config& config() const { return packed_ ? p_.config() : s_.config(); }

    bool can_add(uint32_t n_out, uint32_t n_in) const {
        return packed_ ? p_.can_add(n_out, n_in) : s_.can_add(n_out, n_in);
    }
    status add(const sg_entry* out, uint32_t n_out, const sg_entry* in, uint32_t n_in, uint32_t token) {
        return packed_ ? p_.add(out, n_out, in, n_in, token) : s_.add(out, n_out, in, n_in, token);
    }
    template <class Chain>
    status add(const Chain& chain, uint32_t token) {
        return packed_ ? p_.add(chain, token) : s_.add(chain, token);
    }
    bool publish() { return packed_ ? p_.publish() : s_.publish(); }
    result<used_completion> pop() { return packed_ ? p_.pop() : s_.pop(); }
    template <class F>
    result<uint32_t> reap(F&& on_used) {
        return packed_ ? p_.reap(on_used) : s_.reap(on_used);
    }
    void disable_interrupts() { packed_ ? p_.disable_interrupts() : s_.disable_interrupts(); }
    bool enable_interrupts() { return packed_ ? p_.enable_interrupts() : s_.enable_interrupts(); }
    bool has_used() const { return packed_ ? p_.has_used() : s_.has_used(); }
    template <class F>
    void reclaim_all(F&& on_token) {
        if (packed_)
            p_.reclaim_all(on_token);
        else
            s_.reclaim_all(on_token);
    }
    bool token_in_flight(uint32_t token) const { return packed_ ? p_.token_in_flight(token) : s_.token_in_flight(token); }

    // The ring of each format, for callers that chose the format once for many calls.
    split_ring<Platform>& split() { return s_; }
    packed_ring<Platform>& packed() { return p_; }

private:
    split_ring<Platform> s_{};
    packed_ring<Platform> p_{};
    bool packed_ = false;
};

// The two formats as types: of(ring) is the ring of that format inside a ring type (the
// ring itself, or virtqueue's member). A hot loop chooses the format once and calls the ring
// of it directly, with no branch per call.
struct split_format {
    template <class P>
    static split_ring<P>& of(split_ring<P>& r) { return r; }
    template <class P>
    static split_ring<P>& of(virtqueue<P>& v) { return v.split(); }
};
struct packed_format {
    template <class P>
    static packed_ring<P>& of(packed_ring<P>& r) { return r; }
    template <class P>
    static packed_ring<P>& of(virtqueue<P>& v) { return v.packed(); }
};

// f(split_format{}) or f(packed_format{}), for the format in use: a branch for a ring type
// that speaks both, none for one of one format.
template <class Ring, class F>
decltype(auto) with_format(bool packed, F&& f) {
    if constexpr (ring_kind<Ring>::split && ring_kind<Ring>::packed) {
        if (packed) return f(packed_format{});
        return f(split_format{});
    } else if constexpr (ring_kind<Ring>::packed) {
        (void)packed;
        return f(packed_format{});
    } else {
        (void)packed;
        return f(split_format{});
    }
}

// Set up a ring of any of the three types in a format (not_supported: it does not speak it).
template <class P>
status init_ring(split_ring<P>& r, ring_format f, const ring_config& c, dma_region dev, private_region priv) {
    return f == ring_format::split ? r.init(c, dev, priv) : status::not_supported;
}
template <class P>
status init_ring(packed_ring<P>& r, ring_format f, const ring_config& c, dma_region dev, private_region priv) {
    return f == ring_format::packed ? r.init(c, dev, priv) : status::not_supported;
}
template <class P>
status init_ring(virtqueue<P>& r, ring_format f, const ring_config& c, dma_region dev, private_region priv) {
    return r.init(f, c, dev, priv);
}

}  // namespace vscsi
