// The data pattern of `write --pattern` and `verify`: every 8-byte word of the disk gets a
// value from the seed and the word's byte offset on the disk, so any range can be checked
// on its own, by any reader that knows the formula (the qemu tests recompute it in Python):
//
//   z = seed * 0x9E3779B97F4A7C15 + offset / 8        (mod 2^64)
//   z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9
//   z = (z ^ z >> 27) * 0x94D049BB133111EB
//   word = z ^ z >> 31, stored little-endian
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace vscsi_uio {

inline uint64_t pattern_word(uint64_t seed, uint64_t word_index) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + word_index;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Fill `len` bytes that sit at byte `disk_offset` of the disk (both multiples of 8).
inline void fill_pattern(uint8_t* dst, uint64_t disk_offset, size_t len, uint64_t seed) {
    const uint64_t first = disk_offset / 8;
    for (size_t i = 0; i < len / 8; ++i) {
        const uint64_t w = pattern_word(seed, first + i);
        uint8_t b[8];
        for (int k = 0; k < 8; ++k) b[k] = uint8_t(w >> (8 * k));
        memcpy(dst + 8 * i, b, 8);
    }
}

// Whether `len` bytes that came from byte `disk_offset` of the disk hold the pattern.
inline bool matches_pattern(const uint8_t* src, uint64_t disk_offset, size_t len, uint64_t seed) {
    const uint64_t first = disk_offset / 8;
    for (size_t i = 0; i < len / 8; ++i) {
        const uint64_t w = pattern_word(seed, first + i);
        for (int k = 0; k < 8; ++k)
            if (src[8 * i + k] != uint8_t(w >> (8 * k))) return false;
    }
    return true;
}

}  // namespace vscsi_uio
