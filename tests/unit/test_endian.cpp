// Byte-order helpers: little, device-order and big-endian.
#include <catch2/catch.hpp>

#include <cstring>

#include <vscsi/endian.hpp>

using namespace vscsi;

TEST_CASE("little-endian fields store low byte first", "[endian]") {
    le32 v{};
    v.set(0x11223344u);
    uint8_t raw[4];
    std::memcpy(raw, &v, 4);
    CHECK(raw[0] == 0x44);
    CHECK(raw[3] == 0x11);
    CHECK(v.get() == 0x11223344u);
    le64 w{};
    w.set(0x0102030405060708ull);
    uint8_t r8[8];
    std::memcpy(r8, &w, 8);
    CHECK(r8[0] == 0x08);
    CHECK(r8[7] == 0x01);
}

TEST_CASE("big-endian loads and stores", "[endian]") {
    uint8_t b[8] = {};
    store_be16(b, 0x1234);
    CHECK(b[0] == 0x12);
    CHECK(load_be16(b) == 0x1234);
    store_be32(b, 0xdeadbeef);
    CHECK(b[0] == 0xde);
    CHECK(b[3] == 0xef);
    CHECK(load_be32(b) == 0xdeadbeef);
    CHECK(load_be24(b) == 0xdeadbe);
    store_be64(b, 0x0102030405060708ull);
    CHECK(b[0] == 1);
    CHECK(b[7] == 8);
    CHECK(load_be64(b) == 0x0102030405060708ull);
    static_assert(load_be16((const uint8_t[]){0xab, 0xcd}) == 0xabcd, "constexpr loads");
}

TEST_CASE("byte swaps and device order", "[endian]") {
    CHECK(bswap(uint16_t(0x1234)) == 0x3412);
    CHECK(bswap(uint32_t(0x12345678)) == 0x78563412u);
    CHECK(bswap(uint64_t(0x0102030405060708ull)) == 0x0807060504030201ull);
    virtio_order legacy{true}, modern{};
    virtio32 f{};
    f.set(modern, 0xa1b2c3d4u);
    uint8_t raw[4];
    std::memcpy(raw, &f, 4);
    CHECK(raw[0] == 0xd4);  // little-endian on the wire for virtio 1.x
    f.set(legacy, 0xa1b2c3d4u);
    uint32_t native;
    std::memcpy(&native, &f, 4);
    CHECK(native == 0xa1b2c3d4u);  // guest-native for legacy
    CHECK(f.get(legacy) == 0xa1b2c3d4u);
    CHECK(modern.dev16(0x1234) == (host_is_little_endian ? 0x1234 : 0x3412));
}
