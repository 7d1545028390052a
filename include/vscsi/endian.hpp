// Explicit byte order for everything that crosses the device boundary.
//
// virtio 1.x fields are little-endian; legacy virtio fields are in the guest's native order;
// SCSI CDB and sense fields are big-endian. Wire structs use the le*/be helpers below so a
// field's byte order is part of its type, and the split ring uses virtio_order to choose at
// run time between "little" (modern) and "native" (legacy).
#pragma once
#include <stdint.h>
#include <stddef.h>

namespace vscsi {

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
inline constexpr bool host_is_little_endian = false;
#else
inline constexpr bool host_is_little_endian = true;
#endif

constexpr uint16_t bswap(uint16_t v) { return static_cast<uint16_t>((v >> 8) | (v << 8)); }
constexpr uint32_t bswap(uint32_t v) { return __builtin_bswap32(v); }
constexpr uint64_t bswap(uint64_t v) { return __builtin_bswap64(v); }

template <class T>
constexpr T to_le(T v) { return host_is_little_endian ? v : bswap(v); }
template <class T>
constexpr T from_le(T v) { return to_le(v); }

// A little-endian integer stored in device-visible memory. Trivial, so wire structs stay
// trivially copyable and have no constructors (no global constructors in the core).
template <class T>
struct little {
    T raw;
    constexpr T get() const { return from_le(raw); }
    constexpr void set(T v) { raw = to_le(v); }
};
using le16 = little<uint16_t>;
using le32 = little<uint32_t>;
using le64 = little<uint64_t>;
static_assert(sizeof(le16) == 2 && sizeof(le32) == 4 && sizeof(le64) == 8, "le types must be bare");

// Byte order of virtio ring and config fields for one device: virtio 1.x devices are
// little-endian, legacy devices use the guest's order.
struct virtio_order {
    bool legacy = false;
    constexpr uint16_t dev16(uint16_t v) const { return (legacy || host_is_little_endian) ? v : bswap(v); }
    constexpr uint32_t dev32(uint32_t v) const { return (legacy || host_is_little_endian) ? v : bswap(v); }
    constexpr uint64_t dev64(uint64_t v) const { return (legacy || host_is_little_endian) ? v : bswap(v); }
};

// A field in the device's byte order (virtio-scsi headers, ring fields, config space): little
// for virtio 1.x, native for legacy. Reading or writing it needs the device's virtio_order.
template <class T>
struct virtio_int {
    T raw;
    constexpr T get(virtio_order o) const { return convert(o, raw); }
    constexpr void set(virtio_order o, T v) { raw = convert(o, v); }

private:
    static constexpr T convert(virtio_order o, T v) {
        return (o.legacy || host_is_little_endian) ? v : bswap(v);
    }
};
using virtio16 = virtio_int<uint16_t>;
using virtio32 = virtio_int<uint32_t>;
using virtio64 = virtio_int<uint64_t>;
static_assert(sizeof(virtio16) == 2 && sizeof(virtio32) == 4 && sizeof(virtio64) == 8,
              "virtio types must be bare");

// Big-endian loads and stores for SCSI CDBs and parameter data, on byte pointers so they
// are alignment-safe.
constexpr uint16_t load_be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
constexpr uint32_t load_be24(const uint8_t* p) {
    return (uint32_t(p[0]) << 16) | (uint32_t(p[1]) << 8) | p[2];
}
constexpr uint32_t load_be32(const uint8_t* p) {
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
constexpr uint64_t load_be64(const uint8_t* p) {
    return (uint64_t(load_be32(p)) << 32) | load_be32(p + 4);
}
constexpr void store_be16(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}
constexpr void store_be32(uint8_t* p, uint32_t v) {
    p[0] = uint8_t(v >> 24);
    p[1] = uint8_t(v >> 16);
    p[2] = uint8_t(v >> 8);
    p[3] = uint8_t(v);
}
constexpr void store_be64(uint8_t* p, uint64_t v) {
    store_be32(p, uint32_t(v >> 32));
    store_be32(p + 4, uint32_t(v));
}

}  // namespace vscsi
