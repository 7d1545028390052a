// Little-endian loads and stores on byte pointers, for test code that plays the device and
// reads ring fields itself rather than through the core's types (an independent account).
#pragma once
#include <stdint.h>

namespace le_bytes {

inline uint16_t ld16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
inline uint32_t ld32(const uint8_t* p) { return uint32_t(ld16(p)) | uint32_t(ld16(p + 2)) << 16; }
inline uint64_t ld64(const uint8_t* p) { return uint64_t(ld32(p)) | uint64_t(ld32(p + 4)) << 32; }
inline void st16(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v);
    p[1] = uint8_t(v >> 8);
}
inline void st32(uint8_t* p, uint32_t v) {
    st16(p, uint16_t(v));
    st16(p + 2, uint16_t(v >> 16));
}

}  // namespace le_bytes
