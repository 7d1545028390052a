// CDB builders and decoders against bytes worked out by hand from SPC-4 and SBC-3.
#include <catch2/catch.hpp>

#include <vector>

#include <vscsi/scsi.hpp>

using namespace vscsi;
using namespace vscsi::scsi;
using bytes = std::vector<uint8_t>;

namespace {
bytes cdb_of(uint32_t n, const uint8_t* c) { return bytes(c, c + n); }
}  // namespace

TEST_CASE("simple CDBs", "[scsi][cdb]") {
    uint8_t c[16];
    REQUIRE(test_unit_ready(c, 16) == 6);
    CHECK(cdb_of(6, c) == bytes{0x00, 0, 0, 0, 0, 0});
    REQUIRE(request_sense(c, 16, 96) == 6);
    CHECK(cdb_of(6, c) == bytes{0x03, 0, 0, 0, 0x60, 0});
    REQUIRE(inquiry(c, 16, 96) == 6);
    CHECK(cdb_of(6, c) == bytes{0x12, 0, 0, 0x00, 0x60, 0});
    REQUIRE(inquiry_vpd(c, 16, 0xb0, 0x0100) == 6);
    CHECK(cdb_of(6, c) == bytes{0x12, 0x01, 0xb0, 0x01, 0x00, 0});
    REQUIRE(inquiry_vpd(c, 16, 0x83, 255) == 6);
    CHECK(cdb_of(6, c) == bytes{0x12, 0x01, 0x83, 0x00, 0xff, 0});
    REQUIRE(read_capacity_10(c, 16) == 10);
    CHECK(cdb_of(10, c) == bytes{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    REQUIRE(read_capacity_16(c, 16, 32) == 16);
    CHECK(cdb_of(16, c) == bytes{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0});
    REQUIRE(report_luns(c, 16, 0x1000, 0x02) == 12);
    CHECK(cdb_of(12, c) == bytes{0xa0, 0, 0x02, 0, 0, 0, 0x00, 0x00, 0x10, 0x00, 0, 0});
    CHECK(report_luns(c, 16, 15) == 0);  // allocation length below 16 is invalid
    REQUIRE(mode_sense_6(c, 16, 0x3f, 0, 0xff) == 6);
    CHECK(cdb_of(6, c) == bytes{0x1a, 0x08, 0x3f, 0, 0xff, 0});
    REQUIRE(mode_sense_10(c, 16, 0x08, 0, 0x200, false, 2) == 10);
    CHECK(cdb_of(10, c) == bytes{0x5a, 0, 0x88, 0, 0, 0, 0, 0x02, 0x00, 0});
    CHECK(mode_sense_6(c, 16, 0x40, 0, 4) == 0);
    REQUIRE(start_stop_unit(c, 16, true, false, true) == 6);
    CHECK(cdb_of(6, c) == bytes{0x1b, 0x01, 0, 0, 0x01, 0});
    REQUIRE(start_stop_unit(c, 16, false, true) == 6);
    CHECK(cdb_of(6, c) == bytes{0x1b, 0, 0, 0, 0x02, 0});
    CHECK(test_unit_ready(c, 5) == 0);
    CHECK(read_capacity_16(c, 10) == 0);
}

TEST_CASE("READ/WRITE choose (10) or (16) at exactly the boundaries", "[scsi][cdb]") {
    uint8_t c[16];
    REQUIRE(read_write(c, 16, false, 0x12345678, 8) == 10);
    CHECK(cdb_of(10, c) == bytes{0x28, 0, 0x12, 0x34, 0x56, 0x78, 0, 0x00, 0x08, 0});
    REQUIRE(read_write(c, 16, true, 0x10, 0x100, true) == 10);
    CHECK(cdb_of(10, c) == bytes{0x2a, 0x08, 0, 0, 0, 0x10, 0, 0x01, 0x00, 0});
    // 65535 blocks fit (10); 65536 do not.
    CHECK(read_write(c, 16, false, 0, 65535) == 10);
    CHECK(cdb_of(10, c) == bytes{0x28, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0});
    REQUIRE(read_write(c, 16, false, 0, 65536) == 16);
    CHECK(cdb_of(16, c) == bytes{0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, 0x00, 0x00, 0, 0});
    // A range ending exactly at 2^32 fits (10); one block further does not.
    CHECK(read_write(c, 16, false, 0xffffffffull, 1) == 10);
    CHECK(cdb_of(10, c) == bytes{0x28, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0});
    REQUIRE(read_write(c, 16, false, 0xffffffffull, 2) == 16);
    CHECK(cdb_of(16, c) == bytes{0x88, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, 0, 0});
    REQUIRE(read_write(c, 16, true, 0x0102030405060708ull, 0x11223344, false) == 16);
    CHECK(cdb_of(16, c) == bytes{0x8a, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x22, 0x33, 0x44, 0, 0});
    CHECK(needs_rw16(0xfffffff0ull, 0x10) == false);
    CHECK(needs_rw16(0xfffffff0ull, 0x11) == true);
    // Zero blocks is legal; too many blocks or a wrapping range is not encodable.
    CHECK(read_write(c, 16, false, 5, 0) == 10);
    CHECK(read_write(c, 16, false, 0, 0x100000000ull) == 0);
    CHECK(read_write(c, 16, false, ~0ull, 2) == 0);
    CHECK(read_write(c, 10, false, 0, 65536) == 0);  // needs 16 bytes of buffer
}

TEST_CASE("SYNCHRONIZE CACHE", "[scsi][cdb]") {
    uint8_t c[16];
    REQUIRE(synchronize_cache(c, 16) == 10);
    CHECK(cdb_of(10, c) == bytes{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    REQUIRE(synchronize_cache(c, 16, 0x100000000ull, 8, true) == 16);
    CHECK(cdb_of(16, c) == bytes{0x91, 0x02, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0});
}

TEST_CASE("fixed-format sense", "[scsi][sense]") {
    // 70h current, key UNIT ATTENTION, ASC 29h ASCQ 00h, additional length 10.
    const bytes s = {0x70, 0, 0x06, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0};
    sense_info i = decode_sense(s.data(), uint32_t(s.size()));
    CHECK(i.valid);
    CHECK(i.current);
    CHECK(!i.descriptor);
    CHECK(i.key == key::unit_attention);
    CHECK(i.asc == 0x29);
    CHECK(i.ascq == 0x00);
    CHECK(!i.info_valid);
    CHECK(is_unit_attention(i));
    CHECK(classify(i) == sense_action::unit_attention);
    // Deferred, VALID with information 0x00ABCDEF, MEDIUM ERROR 11/00.
    const bytes d = {0xf1, 0, 0x03, 0x00, 0xab, 0xcd, 0xef, 0x0a, 0, 0, 0, 0, 0x11, 0x00};
    sense_info j = decode_sense(d.data(), uint32_t(d.size()));
    CHECK(j.valid);
    CHECK(!j.current);
    CHECK(j.info_valid);
    CHECK(j.information == 0x00abcdef);
    CHECK(classify(j) == sense_action::medium_error);
    // Truncated: asc/ascq beyond what was written read as 0, never past len.
    sense_info t = decode_sense(s.data(), 12);
    CHECK(t.valid);
    CHECK(t.key == key::unit_attention);
    CHECK(t.asc == 0);
    // The additional length bounds the fields too.
    bytes shortlen = s;
    shortlen[7] = 4;
    CHECK(decode_sense(shortlen.data(), uint32_t(shortlen.size())).asc == 0);
    CHECK(!decode_sense(s.data(), 2).valid);
    CHECK(!decode_sense(nullptr, 18).valid);
    const bytes junk = {0x12, 0x34, 0x56};
    CHECK(!decode_sense(junk.data(), 3).valid);
}

TEST_CASE("descriptor-format sense with an information descriptor", "[scsi][sense]") {
    // 72h, key ILLEGAL REQUEST, 24h/00h, additional length 12: one information descriptor.
    const bytes s = {0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0x0c, 0x00, 0x0a, 0x80, 0x00,
                     0x00, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78};
    sense_info i = decode_sense(s.data(), uint32_t(s.size()));
    CHECK(i.valid);
    CHECK(i.descriptor);
    CHECK(i.current);
    CHECK(i.key == key::illegal_request);
    CHECK(i.asc == 0x24);
    CHECK(i.info_valid);
    CHECK(i.information == 0x12345678);
    CHECK(classify(i) == sense_action::illegal_request);
    // The descriptor cut short by len is ignored.
    sense_info t = decode_sense(s.data(), 15);
    CHECK(t.valid);
    CHECK(!t.info_valid);
    // NOT READY, becoming ready -> retry; medium not present -> not_ready.
    const bytes nr = {0x72, 0x02, 0x04, 0x01, 0, 0, 0, 0};
    CHECK(classify(decode_sense(nr.data(), 8)) == sense_action::retry);
    const bytes np = {0x72, 0x02, 0x3a, 0x00, 0, 0, 0, 0};
    CHECK(classify(decode_sense(np.data(), 8)) == sense_action::not_ready);
}

TEST_CASE("standard INQUIRY data", "[scsi][inquiry]") {
    bytes b(36, 0);
    b[0] = 0x00;
    b[1] = 0x80;
    b[2] = 0x05;
    b[3] = 0x02;
    b[4] = 31;
    b[7] = 0x02;
    const char* v = "QEMU    QEMU HARDDISK   2.5+";
    for (int i = 0; i < 28; ++i) b[8 + i] = uint8_t(v[i]);
    inquiry_data d = decode_inquiry(b.data(), 36);
    CHECK(d.valid);
    CHECK(d.qualifier == 0);
    CHECK(d.device_type == 0);
    CHECK(d.removable);
    CHECK(d.version == 5);
    CHECK(d.cmdque);
    CHECK(std::string(d.vendor, 8) == "QEMU    ");
    CHECK(std::string(d.product, 16) == "QEMU HARDDISK   ");
    CHECK(std::string(d.revision, 4) == "2.5+");
    CHECK(lun_present(d));
    // No LU at this address: qualifier 3, type 1Fh.
    const bytes none = {0x7f, 0, 5, 2, 0};
    inquiry_data n = decode_inquiry(none.data(), 5);
    CHECK(n.qualifier == 3);
    CHECK(n.device_type == 0x1f);
    CHECK(!lun_present(n));
    // Truncated: strings padded with blanks, nothing read past len.
    inquiry_data t = decode_inquiry(b.data(), 12);
    CHECK(std::string(t.vendor, 8) == "QEMU    ");
    CHECK(std::string(t.product, 16) == std::string(16, ' '));
    CHECK(!decode_inquiry(b.data(), 4).valid);
}

TEST_CASE("VPD pages 00, 80, 83, B0", "[scsi][vpd]") {
    const bytes p0 = {0x00, 0x00, 0x00, 0x04, 0x00, 0x80, 0x83, 0xb0};
    CHECK(vpd_supports(p0.data(), 8, 0x83));
    CHECK(vpd_supports(p0.data(), 8, 0xb0));
    CHECK(!vpd_supports(p0.data(), 8, 0xb1));
    CHECK(!vpd_supports(p0.data(), 7, 0xb0));  // not written
    const bytes p80 = {0x00, 0x80, 0x00, 0x04, 'S', 'N', '4', '2', 0xee};
    byte_span s = vpd_serial(p80.data(), uint32_t(p80.size()));
    CHECK(s.size == 4);
    CHECK(std::string(reinterpret_cast<const char*>(s.data), s.size) == "SN42");
    // 83h: NAA binary designator (8 bytes) then a T10 ASCII one (4 bytes).
    const bytes p83 = {0x00, 0x83, 0x00, 0x14, 0x01, 0x03, 0x00, 0x08, 0x60, 1, 2, 3, 4, 5, 6, 7,
                       0x02, 0x01, 0x00, 0x04, 'A', 'B', 'C', 'D'};
    std::vector<designator> ds;
    CHECK(vpd_designators(p83.data(), uint32_t(p83.size()), [&](const designator& d) {
              ds.push_back(d);
              return true;
          }) == 2);
    REQUIRE(ds.size() == 2);
    CHECK(ds[0].code_set == 1);
    CHECK(ds[0].type == 3);
    CHECK(ds[0].size == 8);
    CHECK(ds[0].data[0] == 0x60);
    CHECK(ds[1].code_set == 2);
    CHECK(ds[1].type == 1);
    CHECK(std::string(reinterpret_cast<const char*>(ds[1].data), 4) == "ABCD");
    // Truncated in the second designator: only the first is visited.
    CHECK(vpd_designators(p83.data(), 22, [](const designator&) { return true; }) == 1);
    // B0h: full page.
    bytes b0(64, 0);
    b0[1] = 0xb0;
    b0[3] = 0x3c;
    b0[5] = 0x01;
    store_be16(&b0[6], 8);
    store_be32(&b0[8], 0xffff);
    store_be32(&b0[12], 0x80);
    store_be32(&b0[20], 0x400000);
    store_be32(&b0[24], 1);
    store_be64(&b0[36], 0x100000ull);
    block_limits l = decode_block_limits(b0.data(), 64);
    CHECK(l.valid);
    CHECK(l.max_compare_write == 1);
    CHECK(l.optimal_granularity == 8);
    CHECK(l.max_transfer == 0xffff);
    CHECK(l.optimal_transfer == 0x80);
    CHECK(l.max_unmap_lba_count == 0x400000);
    CHECK(l.max_unmap_descriptors == 1);
    CHECK(l.max_write_same == 0x100000);
    // A short page (length 0x0c): fields past it are absent.
    b0[3] = 0x0c;
    block_limits s2 = decode_block_limits(b0.data(), 64);
    CHECK(s2.max_transfer == 0xffff);
    CHECK(s2.optimal_transfer == 0x80);
    CHECK(s2.max_unmap_lba_count == 0);
    CHECK(!decode_block_limits(p80.data(), 9).valid);
}

TEST_CASE("READ CAPACITY (10) and (16)", "[scsi][capacity]") {
    const bytes c10 = {0x00, 0x01, 0xff, 0xff, 0x00, 0x00, 0x02, 0x00};
    capacity c = decode_capacity_10(c10.data(), 8);
    CHECK(c.valid);
    CHECK(c.last_lba == 0x1ffff);
    CHECK(c.blocks() == 0x20000);
    CHECK(c.block_size == 512);
    CHECK(!needs_capacity_16(c));
    const bytes big = {0xff, 0xff, 0xff, 0xff, 0, 0, 0x10, 0};
    CHECK(needs_capacity_16(decode_capacity_10(big.data(), 8)));
    bytes c16(32, 0);
    store_be64(&c16[0], 0x2'0000'0000ull);
    store_be32(&c16[8], 4096);
    c16[12] = 0x03;  // P_TYPE 1, PROT_EN
    c16[13] = 0x03;  // 8 logical per physical
    store_be16(&c16[14], 0x4007);
    capacity d = decode_capacity_16(c16.data(), 32);
    CHECK(d.last_lba == 0x200000000ull);
    CHECK(d.block_size == 4096);
    CHECK(d.prot_en);
    CHECK(d.p_type == 1);
    CHECK(d.lbppb_exponent == 3);
    CHECK(d.lowest_aligned == 7);
    CHECK(!decode_capacity_16(c16.data(), 11).valid);
    CHECK(!decode_capacity_10(c10.data(), 7).valid);
}

TEST_CASE("REPORT LUNS parameter data", "[scsi][report_luns]") {
    // Three LUNs: 0 (peripheral), 5 (peripheral), 300 (flat 0x41 0x2c); list length 24.
    const bytes b = {0, 0, 0, 24, 0, 0, 0, 0, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0x00, 0x05, 0, 0,
                     0, 0, 0, 0, 0x41, 0x2c, 0, 0, 0, 0, 0, 0};
    std::vector<bytes> seen;
    CHECK(report_luns_entries(b.data(), uint32_t(b.size()), [&](const uint8_t* e) {
              seen.emplace_back(e, e + 8);
              return true;
          }) == 3);
    REQUIRE(seen.size() == 3);
    CHECK(seen[2][0] == 0x41);
    CHECK(report_luns_list_bytes(b.data(), 32) == 24);
    // The device claims more than it wrote: only whole written entries are visited.
    bytes lie = b;
    lie[3] = 0xff;
    CHECK(report_luns_entries(lie.data(), 30, [](const uint8_t*) { return true; }) == 2);
    CHECK(report_luns_entries(b.data(), 7, [](const uint8_t*) { return true; }) == 0);
}

TEST_CASE("MODE SENSE header and pages", "[scsi][mode]") {
    // MODE SENSE(6): length 23, WP set, no block descriptors, caching page 08h (len 0x12).
    bytes m6(24, 0);
    m6[0] = 23;
    m6[2] = 0x80;
    m6[4] = 0x08;
    m6[5] = 0x12;
    m6[6] = 0x04;
    mode_header h = decode_mode_header(m6.data(), 24, false);
    CHECK(h.valid);
    CHECK(h.data_length == 23);
    CHECK(h.write_protected);
    CHECK(h.block_desc_length == 0);
    std::vector<mode_page> pages;
    CHECK(mode_pages(m6.data(), 24, false, [&](const mode_page& p) {
              pages.push_back(p);
              return true;
          }) == 1);
    REQUIRE(pages.size() == 1);
    CHECK(pages[0].code == 0x08);
    CHECK(pages[0].size == 20);
    CHECK((pages[0].data[2] & 0x04) != 0);  // WCE
    // MODE SENSE(10) with an 8-byte block descriptor and no pages.
    bytes m10(16, 0);
    store_be16(&m10[0], 14);
    m10[3] = 0x10;
    store_be16(&m10[6], 8);
    mode_header h10 = decode_mode_header(m10.data(), 16, true);
    CHECK(h10.valid);
    CHECK(!h10.write_protected);
    CHECK(h10.dpofua);
    CHECK(h10.block_desc_length == 8);
    CHECK(mode_pages(m10.data(), 16, true, [](const mode_page&) { return true; }) == 0);
    // A page that runs past the data is not visited.
    CHECK(mode_pages(m6.data(), 20, false, [](const mode_page&) { return true; }) == 0);
    CHECK(!decode_mode_header(m6.data(), 3, false).valid);
}
