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
#pragma once
#include <stdint.h>
#include <stddef.h>

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

// Memory only the driver touches (its bookkeeping): never handed to the device, so a device
// that writes where it should not cannot reach it.
struct private_region {
    void* virt;
    size_t bytes;
};

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
