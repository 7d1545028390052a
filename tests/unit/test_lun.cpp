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
