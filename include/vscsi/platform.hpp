// The platform policy: what the core needs from its host, as a template parameter.
//
// A Platform is a type with these static members (kernel, uio, loopback and tests each
// provide one in a few lines):
//
//   static void mb();        // full barrier: orders stores before later loads (notify decision)
//   static void rmb();       // read barrier: device-written index before the data it covers
//   static void wmb();       // write barrier: descriptors/data before the index that publishes them
//   static void bug(const char* what);   // an internal invariant failed (WARN / assert / abort)
//
// Addresses are not translated by the platform: every region the core uses is handed over
// as a dma_region (CPU pointer plus the bus address of its first byte, contiguous in bus
// space), and data buffers are handed over as bus addresses.
//
// The driver's own bookkeeping (free lists, what each chain holds, request slots) lives in a
// private_region instead: ordinary memory the device is never given, so that a device that
// lies, or one behind an IOMMU that writes wherever it is allowed to, reaches none of it.
// The core refuses a private region that overlaps the DMA region.
#pragma once
#include <stdint.h>
#include <stddef.h>

#include "status.hpp"

namespace vscsi {

// Memory shared with the device: `virt` as the CPU sees it, `bus` as the device sees it.
struct dma_region {
    void* virt;
    uint64_t bus;
    size_t bytes;

    constexpr uint64_t bus_of(const void* p) const {
        return bus + static_cast<uint64_t>(static_cast<const uint8_t*>(p) - static_cast<const uint8_t*>(virt));
    }
};

// Memory only the driver touches: never mapped for the device, never named in a descriptor.
// It needs no bus address and no special allocation (not hugepages, not DMA memory).
struct private_region {
    void* virt;
    size_t bytes;
};

// Private regions start on a cache line: the core lays out per-queue state on lines of its own.
inline constexpr size_t private_region_align = 64;

// Does the driver's private memory share a byte with memory the device may access?
inline bool regions_overlap(const dma_region& dev, const private_region& priv) {
    const uintptr_t d = reinterpret_cast<uintptr_t>(dev.virt);
    const uintptr_t p = reinterpret_cast<uintptr_t>(priv.virt);
    if (dev.bytes == 0 || priv.bytes == 0) return false;
    // [d, d + dev.bytes) and [p, p + priv.bytes), written without forming an end past the
    // top of the address space.
    return p >= d ? p - d < dev.bytes : d - p < priv.bytes;
}

// Can the core keep `need` bytes of bookkeeping in `priv`, next to the device's `dev`?
// Present, on a cache line and out of the device's reach (invalid_argument), large enough
// (too_small).
inline status check_private_region(const private_region& priv, size_t need, const dma_region& dev) {
    if (!priv.virt || (reinterpret_cast<uintptr_t>(priv.virt) & (private_region_align - 1)))
        return status::invalid_argument;
    if (regions_overlap(dev, priv)) return status::invalid_argument;
    return priv.bytes < need ? status::too_small : status::ok;
}

constexpr size_t align_up(size_t v, size_t a) { return (v + a - 1) & ~(a - 1); }
constexpr bool is_power_of_two(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

// A ready platform for hosted userspace on cache-coherent machines (uio, loopback, tests):
// compiler builtins only, so it stays freestanding. seq_cst fences are full hardware
// barriers (mfence on x86); acquire/release fences order loads/stores as the ring needs.
struct hosted_platform {
    static void mb() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    static void rmb() { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static void wmb() { __atomic_thread_fence(__ATOMIC_RELEASE); }
    static void bug(const char*) { __builtin_trap(); }
};

}  // namespace vscsi
