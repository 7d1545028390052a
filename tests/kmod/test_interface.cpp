// The kernel module's protocol unit (kmod/vscsi_core.cpp) through its C interface, in
// userspace: the same object code the module links, checked against the kernel's uapi
// header for every size, constant and byte it puts on the wire.
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstring>
#include <string>
#include <utility>
#include <vector>
#include <linux/virtio_scsi.h>

#include "vscsi_kmod.h"

extern "C" const unsigned long vsk_c_layout[];
extern "C" const unsigned long vsk_c_layout_count;

namespace {

#define FIELD(s, f) offsetof(s, f), sizeof(s::f)
const unsigned long cxx_layout[] = {
    sizeof(vsk_cmd_result),
    FIELD(vsk_cmd_result, residual), FIELD(vsk_cmd_result, sense_len),
    FIELD(vsk_cmd_result, response), FIELD(vsk_cmd_result, status),
    FIELD(vsk_cmd_result, host), FIELD(vsk_cmd_result, written),
    sizeof(vsk_event),
    FIELD(vsk_event, event), FIELD(vsk_event, reason), FIELD(vsk_event, lun),
    FIELD(vsk_event, target), FIELD(vsk_event, action), FIELD(vsk_event, missed),
    FIELD(vsk_event, lun_valid),
    sizeof(vsk_config),
    FIELD(vsk_config, num_queues), FIELD(vsk_config, seg_max), FIELD(vsk_config, max_sectors),
    FIELD(vsk_config, cmd_per_lun), FIELD(vsk_config, event_info_size),
    FIELD(vsk_config, sense_size), FIELD(vsk_config, cdb_size), FIELD(vsk_config, max_lun),
    FIELD(vsk_config, max_channel), FIELD(vsk_config, max_target),
    sizeof(vsk_host_limits),
    FIELD(vsk_host_limits, request_queues), FIELD(vsk_host_limits, can_queue),
    FIELD(vsk_host_limits, sg_tablesize), FIELD(vsk_host_limits, max_sectors),
    FIELD(vsk_host_limits, cmd_per_lun), FIELD(vsk_host_limits, max_id),
    FIELD(vsk_host_limits, max_lun), FIELD(vsk_host_limits, max_channel),
    FIELD(vsk_host_limits, max_cmd_len),
    sizeof(vsk_outcome), sizeof(vsk_event_action),
};
#undef FIELD

// A response header as a device would write it (virtio 1.x, little-endian host).
std::vector<uint8_t> response(uint8_t code, uint8_t status, uint32_t sense_len, uint32_t residual,
                              uint8_t sense_fill = 0xab) {
    virtio_scsi_cmd_resp r{};
    r.sense_len = sense_len;
    r.resid = residual;
    r.status = status;
    r.response = code;
    std::memset(r.sense, sense_fill, sizeof(r.sense));
    std::vector<uint8_t> b(sizeof(r));
    std::memcpy(b.data(), &r, sizeof(r));
    return b;
}

vsk_cmd_result decode(const std::vector<uint8_t>& resp, uint32_t flags, uint32_t used_len, uint32_t data_len,
                      uint8_t* sense = nullptr, uint32_t cap = 0) {
    vsk_cmd_result r;
    std::memset(&r, 0x5a, sizeof(r));  // every field must be written
    vsk_cmd_resp(resp.data(), flags, used_len, data_len, sense, cap, &r);
    return r;
}

std::vector<uint8_t> event_bytes(uint32_t event, std::vector<uint8_t> lun, uint32_t reason) {
    virtio_scsi_event e{};
    e.event = event;
    std::memcpy(e.lun, lun.data(), 8);
    e.reason = reason;
    std::vector<uint8_t> b(sizeof(e));
    std::memcpy(b.data(), &e, sizeof(e));
    return b;
}

vsk_event decode_event(const std::vector<uint8_t>& b, uint32_t flags = 0, uint32_t used = VSK_EVENT_BYTES) {
    vsk_event e;
    std::memset(&e, 0x5a, sizeof(e));
    vsk_event_decode(b.data(), flags, used, &e);
    return e;
}

}  // namespace

TEST_CASE("C and C++ lay the interface structs out alike", "[kmod][layout]") {
    REQUIRE(vsk_c_layout_count == sizeof(cxx_layout) / sizeof(cxx_layout[0]));
    for (unsigned long i = 0; i < vsk_c_layout_count; ++i) {
        INFO("layout entry " << i);
        CHECK(vsk_c_layout[i] == cxx_layout[i]);
    }
}

TEST_CASE("interface sizes and constants match the kernel's uapi", "[kmod][uapi]") {
    CHECK(VSK_CDB_SIZE == VIRTIO_SCSI_CDB_DEFAULT_SIZE);
    CHECK(VSK_SENSE_SIZE == VIRTIO_SCSI_SENSE_DEFAULT_SIZE);
    CHECK(VSK_CMD_REQ_BYTES == sizeof(virtio_scsi_cmd_req));
    CHECK(VSK_CMD_RESP_BYTES == sizeof(virtio_scsi_cmd_resp));
    CHECK(VSK_TMF_REQ_BYTES == sizeof(virtio_scsi_ctrl_tmf_req));
    CHECK(VSK_TMF_RESP_BYTES == sizeof(virtio_scsi_ctrl_tmf_resp));
    CHECK(VSK_AN_REQ_BYTES == sizeof(virtio_scsi_ctrl_an_req));
    CHECK(VSK_AN_RESP_BYTES == sizeof(virtio_scsi_ctrl_an_resp));
    CHECK(VSK_EVENT_BYTES == sizeof(virtio_scsi_event));
    CHECK(VSK_CFG_SENSE_SIZE == offsetof(virtio_scsi_config, sense_size));
    CHECK(VSK_CFG_CDB_SIZE == offsetof(virtio_scsi_config, cdb_size));
    CHECK(VSK_F_INOUT == VIRTIO_SCSI_F_INOUT);
    CHECK(VSK_F_HOTPLUG == VIRTIO_SCSI_F_HOTPLUG);
    CHECK(VSK_F_CHANGE == VIRTIO_SCSI_F_CHANGE);
    CHECK(VSK_F_T10_PI == VIRTIO_SCSI_F_T10_PI);
    CHECK(VSK_TMF_ABORT_TASK == VIRTIO_SCSI_T_TMF_ABORT_TASK);
    CHECK(VSK_TMF_I_T_NEXUS_RESET == VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET);
    CHECK(VSK_TMF_LUN_RESET == VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET);
    CHECK(VSK_TMF_QUERY_TASK_SET == VIRTIO_SCSI_T_TMF_QUERY_TASK_SET);
    CHECK(VSK_AN_QUERY == VIRTIO_SCSI_T_AN_QUERY);
    CHECK(VSK_AN_SUBSCRIBE == VIRTIO_SCSI_T_AN_SUBSCRIBE);
    CHECK(VSK_AN_MEDIA_CHANGE == 16);
    CHECK(VSK_AN_DEVICE_BUSY == 64);
    CHECK(VSK_TASK_SIMPLE == VIRTIO_SCSI_S_SIMPLE);
    CHECK(VSK_TASK_ORDERED == VIRTIO_SCSI_S_ORDERED);
    CHECK(VSK_TASK_HEAD_OF_QUEUE == VIRTIO_SCSI_S_HEAD);
}

TEST_CASE("command request header", "[kmod][cmd]") {
    const uint8_t cdb[10] = {0x28, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 8, 0};
    uint8_t buf[VSK_CMD_REQ_BYTES + 4];
    std::memset(buf, 0xee, sizeof(buf));
    REQUIRE(vsk_cmd_req(buf, 0, 3, 0x4123, 0x1122334455667788ull, VSK_TASK_SIMPLE, cdb, sizeof(cdb)) ==
            VSK_CMD_REQ_BYTES);
    virtio_scsi_cmd_req r;
    std::memcpy(&r, buf, sizeof(r));
    const uint8_t lun[8] = {1, 3, 0x41, 0x23, 0, 0, 0, 0};
    CHECK(std::memcmp(r.lun, lun, 8) == 0);
    CHECK(r.tag == 0x1122334455667788ull);
    CHECK(r.task_attr == VIRTIO_SCSI_S_SIMPLE);
    CHECK(r.prio == 0);
    CHECK(r.crn == 0);
    CHECK(std::memcmp(r.cdb, cdb, sizeof(cdb)) == 0);
    for (size_t i = sizeof(cdb); i < sizeof(r.cdb); ++i) CHECK(r.cdb[i] == 0);
    CHECK(buf[VSK_CMD_REQ_BYTES] == 0xee);  // nothing past the header

    SECTION("a legacy device on a little-endian guest frames the same bytes") {
        uint8_t legacy[VSK_CMD_REQ_BYTES];
        REQUIRE(vsk_cmd_req(legacy, VSK_LEGACY, 3, 0x4123, 0x1122334455667788ull, 0, cdb, sizeof(cdb)) ==
                VSK_CMD_REQ_BYTES);
        CHECK(std::memcmp(legacy, buf, VSK_CMD_REQ_BYTES) == 0);
    }
    SECTION("LUN names at the edges: 0, 255, 256 and 16383 (flat space), LUN 5 by either name") {
        struct named {
            uint64_t name;
            uint8_t b2, b3;
        };
        for (const named& n : {named{0, 0x40, 0}, named{5, 0x40, 5}, named{0x4005, 0x40, 5}, named{255, 0x40, 0xff},
                               named{0x4100, 0x41, 0}, named{16684, 0x41, 0x2c}, named{0x7fff, 0x7f, 0xff}}) {
            INFO("name " << n.name);
            REQUIRE(vsk_cmd_req(buf, 0, 255, n.name, 1, 0, cdb, 6) == VSK_CMD_REQ_BYTES);
            const uint8_t want[8] = {1, 255, n.b2, n.b3, 0, 0, 0, 0};
            CHECK(std::memcmp(buf, want, 8) == 0);
        }
    }
    SECTION("what cannot be framed is refused and leaves the buffer alone") {
        uint8_t before[sizeof(buf)];
        std::memcpy(before, buf, sizeof(buf));
        uint8_t big[VSK_CDB_SIZE + 1] = {};
        // Names no LUN has: peripheral form on another bus (LUN numbers 256 and 16383 taken
        // for names), past flat space, the well-known LU, more than one level.
        for (uint64_t bad : {256ull, 16383ull, 0x8000ull, 0xc101ull, 0x10000ull, 1ull << 40})
            CHECK(vsk_cmd_req(buf, 0, 0, bad, 1, 0, cdb, 6) == 0);
        CHECK(vsk_cmd_req(buf, 0, 0, 0, 1, 0, big, sizeof(big)) == 0);
        CHECK(vsk_cmd_req(buf, 0, 0, 0, 1, 7, cdb, 6) == 0);
        CHECK(vsk_cmd_req(buf, 0, 0, 0, 1, 0, nullptr, 6) == 0);
        CHECK(std::memcmp(before, buf, sizeof(buf)) == 0);
        CHECK(vsk_cmd_req(buf, 0, 0, 0, 1, 0, big, VSK_CDB_SIZE) == VSK_CMD_REQ_BYTES);
    }
}

TEST_CASE("every response code maps to a host outcome", "[kmod][resp]") {
    struct row {
        uint8_t code;
        vsk_outcome host;
    };
    const row rows[] = {
        {VIRTIO_SCSI_S_OK, VSK_HOST_OK},
        {VIRTIO_SCSI_S_OVERRUN, VSK_HOST_ERROR},
        {VIRTIO_SCSI_S_ABORTED, VSK_HOST_ABORT},
        {VIRTIO_SCSI_S_BAD_TARGET, VSK_HOST_BAD_TARGET},
        {VIRTIO_SCSI_S_RESET, VSK_HOST_RESET},
        {VIRTIO_SCSI_S_BUSY, VSK_HOST_BUS_BUSY},
        {VIRTIO_SCSI_S_TRANSPORT_FAILURE, VSK_HOST_TRANSPORT_DISRUPTED},
        {VIRTIO_SCSI_S_TARGET_FAILURE, VSK_HOST_TARGET_FAILURE},
        {VIRTIO_SCSI_S_NEXUS_FAILURE, VSK_HOST_NEXUS_FAILURE},
        {VIRTIO_SCSI_S_FAILURE, VSK_HOST_ERROR},
        {VIRTIO_SCSI_S_FUNCTION_SUCCEEDED, VSK_HOST_ERROR},
        {VIRTIO_SCSI_S_FUNCTION_REJECTED, VSK_HOST_ERROR},
        {VIRTIO_SCSI_S_INCORRECT_LUN, VSK_HOST_BAD_TARGET},
        {13, VSK_HOST_ERROR},
        {0xfe, VSK_HOST_ERROR},
    };
    for (const row& r : rows) {
        INFO("response " << int(r.code));
        const vsk_cmd_result c = decode(response(r.code, 0x02, 0, 0), 0, VSK_CMD_RESP_BYTES, 512);
        CHECK(c.host == r.host);
        CHECK(c.response == r.code);
        CHECK(c.written == 1);
        // The SAM status means something only with response OK.
        CHECK(c.status == (r.code == VIRTIO_SCSI_S_OK ? 0x02 : 0));
    }
    CHECK(std::string(vsk_response_name(VIRTIO_SCSI_S_INCORRECT_LUN)) == "INCORRECT_LUN");
    CHECK(std::string(vsk_response_name(VIRTIO_SCSI_S_OK)) == "OK");
    CHECK(std::string(vsk_response_name(200)) == "UNKNOWN");
}

TEST_CASE("sense and residual are clamped", "[kmod][resp]") {
    uint8_t sense[128];
    SECTION("a CHECK CONDITION with sense copies what the device claims") {
        std::memset(sense, 0, sizeof(sense));
        const auto c = decode(response(0, 0x02, 18, 100, 0x70), 0, VSK_CMD_RESP_BYTES, 4096, sense, 96);
        CHECK(c.host == VSK_HOST_OK);
        CHECK(c.status == 0x02);
        CHECK(c.sense_len == 18);
        CHECK(c.residual == 100);
        CHECK(sense[0] == 0x70);
        CHECK(sense[17] == 0x70);
        CHECK(sense[18] == 0);  // not one byte more
    }
    SECTION("a sense_len beyond the sense buffer") {
        const auto c = decode(response(0, 0x02, 5000, 0), 0, VSK_CMD_RESP_BYTES, 0, sense, sizeof(sense));
        CHECK(c.sense_len == VSK_SENSE_SIZE);
    }
    SECTION("beyond the caller's buffer") {
        const auto c = decode(response(0, 0x02, 96, 0), 0, VSK_CMD_RESP_BYTES, 0, sense, 32);
        CHECK(c.sense_len == 32);
        CHECK(decode(response(0, 0x02, 96, 0), 0, VSK_CMD_RESP_BYTES, 0, nullptr, 96).sense_len == 0);
    }
    SECTION("beyond what a virtio 1.x device says it wrote") {
        const auto c = decode(response(0, 0x02, 96, 0), 0, 12 + 20, 0, sense, sizeof(sense));
        CHECK(c.sense_len == 20);
        // A legacy device's used length is not trusted: the claim and the buffer bound it.
        const auto l = decode(response(0, 0x02, 96, 0), VSK_LEGACY, 12 + 20, 0, sense, sizeof(sense));
        CHECK(l.sense_len == 96);
    }
    SECTION("a residual larger than the transfer") {
        CHECK(decode(response(0, 0, 0, 0xffffffff), 0, VSK_CMD_RESP_BYTES, 4096).residual == 4096);
        CHECK(decode(response(0, 0, 0, 4096), 0, VSK_CMD_RESP_BYTES, 4096).residual == 4096);
        CHECK(decode(response(0, 0, 0, 1), 0, VSK_CMD_RESP_BYTES, 0).residual == 0);
    }
    SECTION("no response header: an error, nothing transferred, no sense") {
        std::memset(sense, 0, sizeof(sense));
        const auto c = decode(response(0, 0, 18, 0), 0, 11, 4096, sense, sizeof(sense));
        CHECK(c.written == 0);
        CHECK(c.host == VSK_HOST_ERROR);
        CHECK(c.residual == 4096);
        CHECK(c.sense_len == 0);
        CHECK(c.status == 0);
        CHECK(sense[0] == 0);
        // The same bytes from a legacy device (used length 0, as some report) are decoded.
        const auto l = decode(response(0, 0, 0, 0), VSK_LEGACY, 0, 4096, sense, sizeof(sense));
        CHECK(l.written == 1);
        CHECK(l.host == VSK_HOST_OK);
        CHECK(l.residual == 0);
    }
}

TEST_CASE("TMF requests and responses", "[kmod][tmf]") {
    uint8_t buf[VSK_TMF_REQ_BYTES];
    REQUIRE(vsk_tmf_req(buf, 0, VSK_TMF_ABORT_TASK, 2, 5, 0xdeadbeefcafeull) == VSK_TMF_REQ_BYTES);
    virtio_scsi_ctrl_tmf_req t;
    std::memcpy(&t, buf, sizeof(t));
    CHECK(t.type == VIRTIO_SCSI_T_TMF);
    CHECK(t.subtype == VIRTIO_SCSI_T_TMF_ABORT_TASK);
    const uint8_t lun[8] = {1, 2, 0x40, 5, 0, 0, 0, 0};
    CHECK(std::memcmp(t.lun, lun, 8) == 0);
    CHECK(t.tag == 0xdeadbeefcafeull);

    REQUIRE(vsk_tmf_req(buf, 0, VSK_TMF_I_T_NEXUS_RESET, 7, 0, 0) == VSK_TMF_REQ_BYTES);
    std::memcpy(&t, buf, sizeof(t));
    CHECK(t.subtype == VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET);
    CHECK(t.lun[1] == 7);
    CHECK(vsk_tmf_req(buf, 0, 8, 0, 0, 0) == 0);
    REQUIRE(vsk_tmf_req(buf, 0, VSK_TMF_LUN_RESET, 3, 16684, 0) == VSK_TMF_REQ_BYTES);  // LUN 300
    std::memcpy(&t, buf, sizeof(t));
    const uint8_t lun300[8] = {1, 3, 0x41, 0x2c, 0, 0, 0, 0};
    CHECK(std::memcmp(t.lun, lun300, 8) == 0);
    REQUIRE(vsk_tmf_req(buf, 0, VSK_TMF_LUN_RESET, 3, 32767, 0) == VSK_TMF_REQ_BYTES);  // LUN 16383
    std::memcpy(&t, buf, sizeof(t));
    CHECK(t.lun[2] == 0x7f);
    CHECK(t.lun[3] == 0xff);
    CHECK(vsk_tmf_req(buf, 0, VSK_TMF_LUN_RESET, 0, 300, 0) == 0);
    CHECK(vsk_tmf_req(buf, 0, VSK_TMF_LUN_RESET, 0, 32768, 0) == 0);

    uint8_t code = 0;
    uint8_t r = VIRTIO_SCSI_S_OK;
    CHECK(vsk_tmf_resp(&r, 0, 1, &code) == 1);
    CHECK(code == VIRTIO_SCSI_S_OK);
    r = VIRTIO_SCSI_S_FUNCTION_SUCCEEDED;
    CHECK(vsk_tmf_resp(&r, 0, 1, nullptr) == 1);
    for (uint8_t bad : {uint8_t(VIRTIO_SCSI_S_FUNCTION_REJECTED), uint8_t(VIRTIO_SCSI_S_INCORRECT_LUN),
                        uint8_t(VIRTIO_SCSI_S_BAD_TARGET), uint8_t(VIRTIO_SCSI_S_FAILURE), uint8_t(77)}) {
        r = bad;
        CHECK(vsk_tmf_resp(&r, 0, 1, &code) == 0);
        CHECK(code == bad);
    }
    r = VIRTIO_SCSI_S_OK;
    CHECK(vsk_tmf_resp(&r, 0, 0, &code) == 0);  // never written by a 1.x device
    CHECK(code == 0xff);
    CHECK(vsk_tmf_resp(&r, VSK_LEGACY, 0, &code) == 1);
}

TEST_CASE("AN requests and responses", "[kmod][an]") {
    uint8_t buf[VSK_AN_REQ_BYTES];
    REQUIRE(vsk_an_req(buf, 0, VSK_AN_SUBSCRIBE, 1, 2, VSK_AN_MEDIA_CHANGE | VSK_AN_DEVICE_BUSY) == VSK_AN_REQ_BYTES);
    virtio_scsi_ctrl_an_req a;
    std::memcpy(&a, buf, sizeof(a));
    CHECK(a.type == VIRTIO_SCSI_T_AN_SUBSCRIBE);
    CHECK(a.lun[1] == 1);
    CHECK(a.lun[3] == 2);
    CHECK(a.event_requested == (16 | 64));
    CHECK(vsk_an_req(buf, 0, VIRTIO_SCSI_T_TMF, 0, 0, 0) == 0);
    CHECK(vsk_an_req(buf, 0, VSK_AN_QUERY, 0, 0, 1) == 0);  // bit 0 names no event class
    CHECK(vsk_an_req(buf, 0, VSK_AN_QUERY, 0, 300, VSK_AN_MEDIA_CHANGE) == 0);  // no such name
    REQUIRE(vsk_an_req(buf, 0, VSK_AN_QUERY, 0, 16684, VSK_AN_MEDIA_CHANGE) == VSK_AN_REQ_BYTES);
    std::memcpy(&a, buf, sizeof(a));
    CHECK(a.lun[2] == 0x41);
    CHECK(a.lun[3] == 0x2c);

    virtio_scsi_ctrl_an_resp resp{};
    resp.event_actual = 16;
    resp.response = VIRTIO_SCSI_S_OK;
    uint32_t actual = 0;
    CHECK(vsk_an_resp(&resp, 0, sizeof(resp), &actual) == VIRTIO_SCSI_S_OK);
    CHECK(actual == 16);
    CHECK(vsk_an_resp(&resp, 0, 4, &actual) == 0xff);
    CHECK(actual == 0);
}

TEST_CASE("events decode to the rescan the host needs", "[kmod][event]") {
    const std::vector<uint8_t> lun0 = {1, 4, 0x40, 0, 0, 0, 0, 0};
    const std::vector<uint8_t> lun3 = {1, 4, 0x40, 3, 0, 0, 0, 0};
    const std::vector<uint8_t> lun3_peripheral = {1, 4, 0, 3, 0, 0, 0, 0};  // QEMU's form below 256
    const std::vector<uint8_t> garbage = {2, 4, 0x40, 3, 0, 0, 0, 0};
    const uint32_t reset = VIRTIO_SCSI_T_TRANSPORT_RESET;

    auto e = decode_event(event_bytes(reset, lun3, VIRTIO_SCSI_EVT_RESET_RESCAN));
    CHECK(e.action == VSK_EV_ADD_LUN);
    CHECK(e.target == 4);
    CHECK(e.lun == 3);
    CHECK(e.lun_valid == 1);
    CHECK(e.missed == 0);
    CHECK(e.event == reset);
    CHECK(e.reason == VIRTIO_SCSI_EVT_RESET_RESCAN);
    CHECK(decode_event(event_bytes(reset, lun3_peripheral, VIRTIO_SCSI_EVT_RESET_RESCAN)).action == VSK_EV_ADD_LUN);
    CHECK(decode_event(event_bytes(reset, lun3, VIRTIO_SCSI_EVT_RESET_REMOVED)).action == VSK_EV_REMOVE_LUN);
    // LUN 0 stands for the whole target.
    CHECK(decode_event(event_bytes(reset, lun0, VIRTIO_SCSI_EVT_RESET_RESCAN)).action == VSK_EV_SCAN_TARGET);
    CHECK(decode_event(event_bytes(reset, lun0, VIRTIO_SCSI_EVT_RESET_REMOVED)).action == VSK_EV_SCAN_TARGET);
    CHECK(decode_event(event_bytes(reset, lun3, VIRTIO_SCSI_EVT_RESET_HARD)).action == VSK_EV_NONE);
    CHECK(decode_event(event_bytes(reset, lun3, 9)).action == VSK_EV_NONE);
    CHECK(decode_event(event_bytes(reset, garbage, VIRTIO_SCSI_EVT_RESET_RESCAN)).action == VSK_EV_NONE);
    CHECK(decode_event(event_bytes(reset, garbage, VIRTIO_SCSI_EVT_RESET_RESCAN)).lun_valid == 0);

    // LUNs from 256 on are named in flat space, whichever form the device wrote below 256.
    for (const auto& [raw, name] : {std::pair<std::vector<uint8_t>, uint32_t>{{1, 4, 0x41, 0x2c, 0, 0, 0, 0}, 16684},
                                    {{1, 4, 0x7f, 0xff, 0, 0, 0, 0}, 32767},
                                    {{1, 4, 0x41, 0x00, 0, 0, 0, 0}, 0x4100},
                                    {{1, 4, 0x40, 0xff, 0, 0, 0, 0}, 255},
                                    {{1, 4, 0x00, 0xff, 0, 0, 0, 0}, 255}}) {
        INFO("name " << name);
        for (uint32_t reason : {uint32_t(VIRTIO_SCSI_EVT_RESET_RESCAN), uint32_t(VIRTIO_SCSI_EVT_RESET_REMOVED)}) {
            const auto ev = decode_event(event_bytes(reset, raw, reason));
            CHECK(ev.action == (reason == VIRTIO_SCSI_EVT_RESET_RESCAN ? VSK_EV_ADD_LUN : VSK_EV_REMOVE_LUN));
            CHECK(ev.lun == name);
            CHECK(ev.target == 4);
        }
        const auto pc = decode_event(event_bytes(VIRTIO_SCSI_T_PARAM_CHANGE, raw, 0x2a | 0x09 << 8));
        CHECK(pc.action == VSK_EV_RESCAN_LUN);
        CHECK(pc.lun == name);
    }
    // LUN 0 in flat form stands for the whole target too; addresses no LUN has are ignored.
    CHECK(decode_event(event_bytes(reset, {1, 4, 0x40, 0, 0, 0, 0, 0}, VIRTIO_SCSI_EVT_RESET_RESCAN)).action ==
          VSK_EV_SCAN_TARGET);
    for (const std::vector<uint8_t>& bad : {std::vector<uint8_t>{1, 4, 0x01, 0x2c, 0, 0, 0, 0},
                                            std::vector<uint8_t>{1, 4, 0x80, 0x01, 0, 0, 0, 0},
                                            std::vector<uint8_t>{1, 4, 0xc1, 0x01, 0, 0, 0, 0}}) {
        const auto ev = decode_event(event_bytes(reset, bad, VIRTIO_SCSI_EVT_RESET_RESCAN));
        CHECK(ev.action == VSK_EV_NONE);
        CHECK(ev.lun_valid == 0);
    }

    // PARAM_CHANGE: asc | ascq << 8.
    auto p = decode_event(event_bytes(VIRTIO_SCSI_T_PARAM_CHANGE, lun3, 0x2a | 0x09 << 8));
    CHECK(p.action == VSK_EV_RESCAN_LUN);
    CHECK(p.lun == 3);
    CHECK(decode_event(event_bytes(VIRTIO_SCSI_T_PARAM_CHANGE, lun3, 0x3f | 0x0e << 8)).action == VSK_EV_SCAN_TARGET);
    CHECK(decode_event(event_bytes(VIRTIO_SCSI_T_PARAM_CHANGE, garbage, 0x2a | 0x09 << 8)).action == VSK_EV_NONE);

    // EVENTS_MISSED overrides everything, even with a LUN that makes no sense.
    auto m = decode_event(event_bytes(VIRTIO_SCSI_T_EVENTS_MISSED, garbage, 0));
    CHECK(m.action == VSK_EV_SCAN_HOST);
    CHECK(m.missed == 1);
    CHECK(decode_event(event_bytes(reset | VIRTIO_SCSI_T_EVENTS_MISSED, lun3, VIRTIO_SCSI_EVT_RESET_RESCAN)).action ==
          VSK_EV_SCAN_HOST);

    CHECK(decode_event(event_bytes(VIRTIO_SCSI_T_NO_EVENT, lun3, 0)).action == VSK_EV_NONE);
    CHECK(decode_event(event_bytes(VIRTIO_SCSI_T_ASYNC_NOTIFY, lun3, 16)).action == VSK_EV_NONE);
    CHECK(decode_event(event_bytes(77, lun3, VIRTIO_SCSI_EVT_RESET_RESCAN)).action == VSK_EV_NONE);

    // A 1.x device that wrote less than an event said nothing; a legacy one is believed.
    const auto short_one = event_bytes(reset, lun3, VIRTIO_SCSI_EVT_RESET_RESCAN);
    CHECK(decode_event(short_one, 0, 15).action == VSK_EV_NONE);
    CHECK(decode_event(short_one, 0, 15).event == 0);
    CHECK(decode_event(short_one, VSK_LEGACY, 0).action == VSK_EV_ADD_LUN);
}

TEST_CASE("INQUIRY says whether a LUN is there", "[kmod][inquiry]") {
    uint8_t inq[36] = {};
    inq[0] = 0x00;  // disk, connected
    inq[4] = 31;
    CHECK(vsk_inquiry_lun_absent(inq, sizeof(inq)) == 0);
    inq[0] = 0x7f;  // qualifier 3: no LU here
    CHECK(vsk_inquiry_lun_absent(inq, sizeof(inq)) == 1);
    inq[0] = 0x20;  // qualifier 1: not connected
    CHECK(vsk_inquiry_lun_absent(inq, sizeof(inq)) == 1);
    CHECK(vsk_inquiry_lun_absent(inq, 2) == 0);  // too little to tell: keep the disk
    CHECK(vsk_inquiry_lun_absent(nullptr, 0) == 0);
}

namespace {
struct fake_config {
    virtio_scsi_config cfg;
    std::vector<std::pair<uint32_t, uint32_t>> reads;
    std::vector<std::pair<uint32_t, uint32_t>> writes;
};
void cfg_get(void* ctx, uint32_t offset, void* buf, uint32_t len) {
    auto* f = static_cast<fake_config*>(ctx);
    f->reads.emplace_back(offset, len);
    REQUIRE(offset + len <= sizeof(f->cfg));
    std::memcpy(buf, reinterpret_cast<uint8_t*>(&f->cfg) + offset, len);
}
void cfg_set(void* ctx, uint32_t offset, const void* buf, uint32_t len) {
    auto* f = static_cast<fake_config*>(ctx);
    f->writes.emplace_back(offset, len);
    REQUIRE(offset + len <= sizeof(f->cfg));
    std::memcpy(reinterpret_cast<uint8_t*>(&f->cfg) + offset, buf, len);
}
}  // namespace

TEST_CASE("configuration is read field by field and the sizes written", "[kmod][config]") {
    fake_config f{};
    f.cfg.num_queues = 4;
    f.cfg.seg_max = 126;
    f.cfg.max_sectors = 0xffff;
    f.cfg.cmd_per_lun = 128;
    f.cfg.event_info_size = 16;
    f.cfg.sense_size = 96;
    f.cfg.cdb_size = 32;
    f.cfg.max_channel = 0;
    f.cfg.max_target = 255;
    f.cfg.max_lun = 16383;
    vsk_config c;
    std::memset(&c, 0x5a, sizeof(c));
    vsk_config_read(&c, 0, cfg_get, &f);
    CHECK(c.num_queues == 4);
    CHECK(c.seg_max == 126);
    CHECK(c.max_sectors == 0xffff);
    CHECK(c.cmd_per_lun == 128);
    CHECK(c.event_info_size == 16);
    CHECK(c.sense_size == 96);
    CHECK(c.cdb_size == 32);
    CHECK(c.max_channel == 0);
    CHECK(c.max_target == 255);
    CHECK(c.max_lun == 16383);
    // Transports read config space in naturally aligned 2- and 4-byte accesses.
    for (auto& r : f.reads) {
        CHECK((r.second == 2 || r.second == 4));
        CHECK(r.first % r.second == 0);
    }
    CHECK(f.reads.size() == 10);

    vsk_config d;
    vsk_config_decode(&d, 0, &f.cfg, sizeof(f.cfg));
    CHECK(std::memcmp(&c, &d, sizeof(c)) == 0);
    vsk_config_decode(&d, 0, &f.cfg, 35);  // too short: all zero
    CHECK(d.num_queues == 0);
    CHECK(d.max_lun == 0);

    f.cfg.cdb_size = 0;
    f.cfg.sense_size = 0;
    vsk_config_write_sizes(0, cfg_set, &f);
    CHECK(f.cfg.cdb_size == VIRTIO_SCSI_CDB_DEFAULT_SIZE);
    CHECK(f.cfg.sense_size == VIRTIO_SCSI_SENSE_DEFAULT_SIZE);
    CHECK(f.writes.size() == 2);
    CHECK(f.cfg.seg_max == 126);  // nothing else touched
}

TEST_CASE("host limits follow the configuration", "[kmod][config]") {
    vsk_config c{};
    c.num_queues = 4;
    c.seg_max = 254;
    c.max_sectors = 0xffff;
    c.cmd_per_lun = 128;
    c.max_target = 255;
    c.max_lun = 16383;
    vsk_host_limits l;
    std::memset(&l, 0x5a, sizeof(l));
    vsk_compute_limits(&c, 2, 256, 1, 0, &l);
    CHECK(l.request_queues == 2);
    CHECK(l.can_queue == 256);
    CHECK(l.sg_tablesize == 254);
    CHECK(l.max_sectors == 0xffff);
    CHECK(l.cmd_per_lun == 128);
    CHECK(l.max_id == 256);
    CHECK(l.max_lun == 0x8000);  // LUN 16383 is named 0x7fff
    CHECK(l.max_channel == 0);
    CHECK(l.max_cmd_len == VSK_CDB_SIZE);

    vsk_compute_limits(&c, 8, 256, 1, 128, &l);
    CHECK(l.request_queues == 4);
    CHECK(l.sg_tablesize == 128);  // the kernel's cap

    vsk_compute_limits(&c, 8, 128, 0, 0, &l);
    CHECK(l.sg_tablesize == 126);  // no indirect: segments and two headers fit the ring
    CHECK(l.cmd_per_lun == 128);
    CHECK(l.can_queue == 128);

    vsk_config z{};  // a device that leaves everything 0
    vsk_compute_limits(&z, 0, 64, 1, 0, &l);
    CHECK(l.request_queues == 1);
    CHECK(l.sg_tablesize == 1);
    CHECK(l.max_sectors == 0xffff);
    CHECK(l.cmd_per_lun == 1);
    CHECK(l.max_id == 1);
    CHECK(l.max_lun == 0x4001);  // LUN 0 by either name

    vsk_config huge{};
    huge.max_lun = 0xffffffff;
    huge.max_target = 0xffff;
    huge.cmd_per_lun = 100000;
    vsk_compute_limits(&huge, 1, 64, 1, 0, &l);
    CHECK(l.max_lun == 0x8000);
    CHECK(l.max_id == 256);
    CHECK(l.cmd_per_lun == 64);

    vsk_config some{};  // LUNs up to 255: their flat names fit
    some.max_lun = 255;
    vsk_compute_limits(&some, 1, 64, 1, 0, &l);
    CHECK(l.max_lun == 0x4100);
}

TEST_CASE("queue-size down-negotiation", "[kmod][queue]") {
    CHECK(vsk_queue_size(1024, 256) == 256);
    CHECK(vsk_queue_size(128, 256) == 128);
    CHECK(vsk_queue_size(8192, 1000) == 512);
    CHECK(vsk_queue_size(300, 300) == 256);
    CHECK(vsk_queue_size(1, 256) == 1);
    CHECK(vsk_queue_size(0, 256) == 0);
    CHECK(vsk_queue_size(256, 0) == 0);
}

TEST_CASE("an unanswered response never reads as success", "[kmod][resp]") {
    // A response buffer left over from an earlier, successful command.
    auto stale = response(VIRTIO_SCSI_S_OK, 0, 0, 0);
    vsk_cmd_resp_init(stale.data());
    // A legacy device cannot say it wrote nothing; the marker makes that an error.
    const auto c = decode(stale, VSK_LEGACY, 0, 512);
    CHECK(c.host == VSK_HOST_ERROR);
    CHECK(c.status == 0);
    // A device that does answer overwrites the marker.
    auto fresh = response(VIRTIO_SCSI_S_OK, 0, 0, 0);
    CHECK(decode(fresh, VSK_LEGACY, 0, 512).host == VSK_HOST_OK);

    uint8_t tmf = VIRTIO_SCSI_S_OK;
    vsk_ctrl_resp_init(&tmf, 1);
    CHECK(vsk_tmf_resp(&tmf, VSK_LEGACY, 0, nullptr) == 0);
    virtio_scsi_ctrl_an_resp an{};
    vsk_ctrl_resp_init(&an, sizeof(an));
    uint32_t actual = 0;
    CHECK(vsk_an_resp(&an, VSK_LEGACY, 0, &actual) != VIRTIO_SCSI_S_OK);
}

TEST_CASE("the other name of a LUN", "[kmod][lun]") {
    CHECK(vsk_lun_alias(0) == 0x4000);
    CHECK(vsk_lun_alias(7) == 0x4007);
    CHECK(vsk_lun_alias(0x4007) == 7);
    CHECK(vsk_lun_alias(255) == 0x40ff);
    CHECK(vsk_lun_alias(16684) == 16684);
    CHECK(vsk_lun_alias(VSK_MAX_LUN_NAME) == VSK_MAX_LUN_NAME);
    CHECK(vsk_lun_alias(256) == VSK_NO_LUN);
    CHECK(vsk_lun_alias(VSK_MAX_LUN_NAME + 1) == VSK_NO_LUN);
    CHECK(vsk_lun_alias(1ull << 32) == VSK_NO_LUN);
}
