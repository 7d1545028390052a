// The device's view of memory: bus address ranges the driver side shares with it, each an
// allocation of exactly its size (so AddressSanitizer flags any access past it), at a bus
// address unrelated to its virtual one (so a virtual address in a descriptor never
// translates).
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <vector>

#include <vscsi/platform.hpp>

#include "fuzz_check.hpp"

namespace fuzz {

class dma_space {
public:
    dma_space() = default;
    dma_space(const dma_space&) = delete;
    dma_space& operator=(const dma_space&) = delete;
    ~dma_space() {
        for (auto& r : regions_) free(r.second.virt);
    }

    // A new region of `bytes` bytes at `bus`, aligned to `align` in CPU space, filled with
    // `fill` (garbage the driver must initialise before it relies on it).
    uint8_t* add(uint64_t bus, size_t bytes, size_t align = 16, uint8_t fill = 0xa5) {
        void* p = nullptr;
        FUZZ_CHECK(bytes > 0 && posix_memalign(&p, align < sizeof(void*) ? sizeof(void*) : align, bytes) == 0,
                   "allocating %zu bytes", bytes);
        auto next = regions_.lower_bound(bus);
        FUZZ_CHECK(translate(bus, 1) == nullptr && (next == regions_.end() || next->first - bus >= bytes),
                   "bus range %#llx+%zu overlaps another region", (unsigned long long)bus, bytes);
        memset(p, fill, bytes);
        regions_[bus] = region{static_cast<uint8_t*>(p), bytes};
        return static_cast<uint8_t*>(p);
    }

    void remove(uint64_t bus) {
        auto it = regions_.find(bus);
        FUZZ_CHECK(it != regions_.end(), "removing unknown region %#llx", (unsigned long long)bus);
        free(it->second.virt);
        regions_.erase(it);
    }

    // The CPU address of [bus, bus+len), or nullptr unless it lies inside one region.
    uint8_t* translate(uint64_t bus, uint64_t len) const {
        auto it = regions_.upper_bound(bus);
        if (it == regions_.begin()) return nullptr;
        --it;
        const uint64_t off = bus - it->first;
        if (off >= it->second.bytes || len > it->second.bytes - off) return nullptr;
        return it->second.virt + off;
    }

private:
    struct region {
        uint8_t* virt;
        size_t bytes;
    };
    std::map<uint64_t, region> regions_;
};

// The driver's private region: an allocation of exactly its size (so AddressSanitizer flags
// any access past it), never part of a dma_space (so nothing the device does can reach it),
// with a copy of what the driver left in it at the end of its last call.
class private_books {
public:
    private_books() = default;
    private_books(const private_books&) = delete;
    private_books& operator=(const private_books&) = delete;
    ~private_books() { free(p_); }

    void allocate(size_t bytes, uint8_t fill) {
        free(p_);
        p_ = nullptr;
        void* p = nullptr;
        FUZZ_CHECK(bytes > 0 && posix_memalign(&p, vscsi::private_region_align, bytes) == 0,
                   "allocating %zu private bytes", bytes);
        p_ = static_cast<uint8_t*>(p);
        bytes_ = bytes;
        memset(p_, fill, bytes);  // garbage the driver must initialise
        copy_.clear();
    }
    vscsi::private_region region() const { return vscsi::private_region{p_, bytes_}; }
    size_t bytes() const { return bytes_; }

    void snapshot() { copy_.assign(p_, p_ + bytes_); }
    bool as_left() const { return copy_.empty() || memcmp(copy_.data(), p_, bytes_) == 0; }
    size_t changed() const {
        size_t n = 0;
        for (size_t i = 0; i < copy_.size(); ++i) n += copy_[i] != p_[i];
        return n;
    }

private:
    uint8_t* p_ = nullptr;
    size_t bytes_ = 0;
    std::vector<uint8_t> copy_;
};

}  // namespace fuzz
