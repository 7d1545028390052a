// virtio-scsi LUN encoding (checklist 4) and decoding, including QEMU's event form.
#include <catch2/catch.hpp>

#include <vector>

#include <vscsi/lun.hpp>

using namespace vscsi;
using bytes = std::vector<uint8_t>;

static bytes b(const lun_address& a) { return bytes(a.bytes, a.bytes + 8); }

TEST_CASE("encoding", "[lun]") {
    CHECK(b(make_lun(0, 0)) == bytes{1, 0, 0x40, 0, 0, 0, 0, 0});
    CHECK(b(make_lun(2, 5)) == bytes{1, 2, 0x40, 5, 0, 0, 0, 0});
    CHECK(b(make_lun(255, 16383)) == bytes{1, 255, 0x7f, 0xff, 0, 0, 0, 0});
    CHECK(b(make_lun(7, 0x123)) == bytes{1, 7, 0x41, 0x23, 0, 0, 0, 0});
    CHECK(b(make_lun(3, wlun_report_luns)) == bytes{1, 3, 0xc1, 0x01, 0, 0, 0, 0});
    CHECK(b(report_luns_wlun()) == bytes{0xc1, 0x01, 0, 0, 0, 0, 0, 0});
    lun_address a{};
    CHECK(encode_lun(1, 16384, a) == status::invalid_argument);
    CHECK(encode_lun(1, 70000, a) == status::invalid_argument);
    REQUIRE(encode_lun(1, 16383, a) == status::ok);
    CHECK(b(a) == bytes{1, 1, 0x7f, 0xff, 0, 0, 0, 0});
    uint8_t raw[8];
    write_lun(raw, 9, 300);
    CHECK(bytes(raw, raw + 8) == bytes{1, 9, 0x41, 0x2c, 0, 0, 0, 0});
    CHECK(valid_lun(0));
    CHECK(valid_lun(16383));
    CHECK(!valid_lun(16384));
    CHECK(valid_lun(wlun_report_luns));
}

TEST_CASE("decoding the virtio form, flat and QEMU's peripheral form", "[lun]") {
    for (uint32_t lun : {0u, 1u, 255u, 256u, 4000u, 16383u}) {
        const lun_address a = make_lun(17, uint16_t(lun));
        const decoded_lun d = decode_lun(a.bytes);
        CHECK(d.valid);
        CHECK(d.target == 17);
        CHECK(d.lun == lun);
    }
    const uint8_t qemu_event[8] = {1, 4, 0x00, 0x07, 0, 0, 0, 0};
    decoded_lun q = decode_lun(qemu_event);
    CHECK(q.valid);
    CHECK(q.target == 4);
    CHECK(q.lun == 7);
    const uint8_t wl[8] = {1, 2, 0xc1, 0x01, 0, 0, 0, 0};
    CHECK(decode_lun(wl).lun == wlun_report_luns);
    const uint8_t bad0[8] = {2, 0, 0x40, 0, 0, 0, 0, 0};
    CHECK(!decode_lun(bad0).valid);
    const uint8_t bad_tail[8] = {1, 0, 0x40, 0, 0, 0, 0, 9};
    CHECK(!decode_lun(bad_tail).valid);
    const uint8_t bad_method[8] = {1, 0, 0x80, 1, 0, 0, 0, 0};
    CHECK(!decode_lun(bad_method).valid);
    const uint8_t bad_periph_bus[8] = {1, 0, 0x05, 1, 0, 0, 0, 0};
    CHECK(!decode_lun(bad_periph_bus).valid);
}

TEST_CASE("SAM single-level LUNs from REPORT LUNS", "[lun]") {
    const uint8_t p5[8] = {0x00, 0x05, 0, 0, 0, 0, 0, 0};
    CHECK(decode_sam_lun(p5).valid);
    CHECK(decode_sam_lun(p5).lun == 5);
    const uint8_t f300[8] = {0x41, 0x2c, 0, 0, 0, 0, 0, 0};
    CHECK(decode_sam_lun(f300).lun == 300);
    const uint8_t second_level[8] = {0x00, 0x01, 0x00, 0x02, 0, 0, 0, 0};
    CHECK(!decode_sam_lun(second_level).valid);
    const uint8_t bus3[8] = {0x03, 0x01, 0, 0, 0, 0, 0, 0};
    CHECK(!decode_sam_lun(bus3).valid);
    const uint8_t extended[8] = {0xc1, 0x01, 0, 0, 0, 0, 0, 0};
    CHECK(!decode_sam_lun(extended).valid);
}

TEST_CASE("host LUN names: the number a LUN is reported and named by", "[lun][name]") {
    // What a SAM device (QEMU) reports: peripheral form below 256, flat space above.
    CHECK(lun_name(0).value == 0);
    CHECK(lun_name(255).value == 255);
    CHECK(lun_name(256).value == 0x4100);
    CHECK(lun_name(300).value == 16684);  // Linux names LUN 300 H:C:T:16684
    CHECK(lun_name(16383).value == 32767);
    CHECK(lun_name(16383).ok());
    CHECK(lun_name(16384).st == status::invalid_argument);
    CHECK(lun_name(0xffffffffu).st == status::invalid_argument);
    CHECK(lun_name(wlun_report_luns).st == status::invalid_argument);

    // Every LUN number's name decodes back to it.
    for (uint32_t lun = 0; lun <= max_lun_number; ++lun) {
        const decoded_lun d = decode_lun_name(lun_name(lun).value);
        REQUIRE(d.valid);
        REQUIRE(d.lun == lun);
    }
    // Names at the edges: both forms of LUNs below 256, flat space up to 0x7fff.
    CHECK(decode_lun_name(255).lun == 255);
    CHECK(decode_lun_name(0x4000).valid);
    CHECK(decode_lun_name(0x4000).lun == 0);
    CHECK(decode_lun_name(0x40ff).lun == 255);
    CHECK(decode_lun_name(0x4100).lun == 256);
    CHECK(decode_lun_name(0x7fff).lun == 16383);
    // Peripheral form on another bus (256-0x3fff), extended and logical unit addressing
    // (0x8000-0xffff), anything of more than one level: refused, never read as a LUN number.
    for (uint64_t bad : {256ull, 300ull, 16383ull, 0x3fffull, 0x8000ull, 0xc101ull, 0xffffull, 0x10000ull,
                         0x00020001ull, 1ull << 40}) {
        INFO("name " << bad);
        CHECK(!decode_lun_name(bad).valid);
    }
}

TEST_CASE("host LUN names to 8-byte virtio addresses and back", "[lun][name]") {
    lun_address a{};
    // Names 0-255 address as they always did (flat form, 0x40 | hi).
    REQUIRE(encode_lun_name(3, 5, a) == status::ok);
    CHECK(b(a) == bytes{1, 3, 0x40, 5, 0, 0, 0, 0});
    REQUIRE(encode_lun_name(3, 255, a) == status::ok);
    CHECK(b(a) == bytes{1, 3, 0x40, 0xff, 0, 0, 0, 0});
    // Flat-space names: the name's two bytes are the address's.
    REQUIRE(encode_lun_name(3, 0x4100, a) == status::ok);
    CHECK(b(a) == bytes{1, 3, 0x41, 0x00, 0, 0, 0, 0});
    REQUIRE(encode_lun_name(3, 16684, a) == status::ok);
    CHECK(b(a) == bytes{1, 3, 0x41, 0x2c, 0, 0, 0, 0});
    REQUIRE(encode_lun_name(255, 32767, a) == status::ok);
    CHECK(b(a) == bytes{1, 255, 0x7f, 0xff, 0, 0, 0, 0});
    REQUIRE(encode_lun_name(3, 0x4005, a) == status::ok);  // LUN 5 named in flat form
    CHECK(b(a) == bytes{1, 3, 0x40, 5, 0, 0, 0, 0});
    // Unaddressable names leave the address alone.
    const lun_address before = a;
    for (uint64_t bad : {256ull, 300ull, 16383ull, 0x8000ull, 0xc101ull, 1ull << 32}) {
        INFO("name " << bad);
        CHECK(encode_lun_name(3, bad, a) == status::invalid_argument);
        CHECK(b(a) == b(before));
    }
    // What QEMU writes in an event decodes to the LUN the name stands for.
    for (uint32_t lun : {0u, 5u, 255u, 256u, 300u, 16383u}) {
        const uint32_t n = lun_name(lun).value;
        const uint8_t ev[8] = {1, 9, uint8_t(n >> 8), uint8_t(n & 0xff), 0, 0, 0, 0};
        const decoded_lun d = decode_lun(ev);
        CHECK(d.valid);
        CHECK(d.target == 9);
        CHECK(d.lun == lun);
    }
}

TEST_CASE("the other name of a LUN", "[lun][name]") {
    CHECK(lun_name_alias(0).value == 0x4000);
    CHECK(lun_name_alias(5).value == 0x4005);
    CHECK(lun_name_alias(255).value == 0x40ff);
    CHECK(lun_name_alias(0x4005).value == 5);
    CHECK(lun_name_alias(0x40ff).value == 255);
    // From 256 on only flat space can name a LUN.
    CHECK(lun_name_alias(0x4100).value == 0x4100);
    CHECK(lun_name_alias(16684).value == 16684);
    CHECK(lun_name_alias(32767).value == 32767);
    CHECK(lun_name_alias(256).st == status::invalid_argument);
    CHECK(lun_name_alias(32768).st == status::invalid_argument);
}

TEST_CASE("REPORT LUNS entries of both forms, at the edges", "[lun][name]") {
    struct entry {
        uint8_t b0, b1;
        bool valid;
        uint16_t lun;
    };
    for (const entry& e : {entry{0x00, 0x00, true, 0}, entry{0x00, 0xff, true, 255}, entry{0x40, 0x00, true, 0},
                           entry{0x40, 0xff, true, 255}, entry{0x41, 0x00, true, 256}, entry{0x7f, 0xff, true, 16383},
                           entry{0x01, 0x00, false, 0}, entry{0x3f, 0xff, false, 0}, entry{0x80, 0x00, false, 0},
                           entry{0xc0, 0x00, false, 0}}) {
        const uint8_t raw[8] = {e.b0, e.b1, 0, 0, 0, 0, 0, 0};
        INFO("entry " << int(e.b0) << " " << int(e.b1));
        const decoded_lun d = decode_sam_lun(raw);
        CHECK(d.valid == e.valid);
        if (e.valid) CHECK(d.lun == e.lun);
    }
}
