// virtio-scsi wire formats and every constant of the virtio-scsi device type.
//
// Field order and sizes follow the virtio specification (device-types/scsi) and, where the
// two differ, the layout every implementation uses: the T10 PI request places pi_bytesout
// and pi_bytesin *before* the CDB (Linux uapi virtio_scsi_cmd_req_pi and QEMU agree; the
// spec's prose lists them after). tests/unit/test_wire_uapi.cpp checks every size and offset
// against the kernel's uapi headers.
//
// Multi-byte virtio-scsi fields are in the device's byte order (virtio16/32/64): little for
// virtio 1.x, native for legacy devices.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include "endian.hpp"

namespace vscsi {

// PCI identity and device ID.
inline constexpr uint16_t pci_vendor_virtio = 0x1af4;
inline constexpr uint16_t pci_device_scsi_transitional = 0x1004;
inline constexpr uint16_t pci_device_scsi_modern = 0x1048;  // 0x1040 + device ID 8
inline constexpr uint16_t virtio_id_scsi = 8;

// Device status bits.
namespace dev_status {
inline constexpr uint8_t acknowledge = 1;
inline constexpr uint8_t driver = 2;
inline constexpr uint8_t driver_ok = 4;
inline constexpr uint8_t features_ok = 8;
inline constexpr uint8_t needs_reset = 0x40;
inline constexpr uint8_t failed = 0x80;
}  // namespace dev_status

// Feature bits: the virtio-scsi device's own and the transport bits this driver uses.
namespace feature {
inline constexpr unsigned scsi_inout = 0;      // bidirectional commands
inline constexpr unsigned scsi_hotplug = 1;    // RESCAN/REMOVED transport reset events
inline constexpr unsigned scsi_change = 2;     // PARAM_CHANGE events
inline constexpr unsigned scsi_t10_pi = 3;     // protection information in requests
inline constexpr unsigned notify_on_empty = 24;   // legacy only
inline constexpr unsigned any_layout = 27;        // legacy: framing independent of descriptors
inline constexpr unsigned ring_indirect_desc = 28;
inline constexpr unsigned ring_event_idx = 29;
inline constexpr unsigned version_1 = 32;
inline constexpr unsigned access_platform = 33;
inline constexpr unsigned ring_packed = 34;
inline constexpr unsigned in_order = 35;
inline constexpr unsigned order_platform = 36;
inline constexpr unsigned sr_iov = 37;
inline constexpr unsigned notification_data = 38;
inline constexpr unsigned notif_config_data = 39;
inline constexpr unsigned ring_reset = 40;

constexpr uint64_t bit(unsigned b) { return uint64_t(1) << b; }
}  // namespace feature

// Response codes (request queue and control queue).
enum class response : uint8_t {
    ok = 0,
    overrun = 1,
    aborted = 2,
    bad_target = 3,
    reset = 4,
    busy = 5,
    transport_failure = 6,
    target_failure = 7,
    nexus_failure = 8,
    failure = 9,
    function_succeeded = 10,
    function_rejected = 11,
    incorrect_lun = 12,
};
// TMF FUNCTION_COMPLETE shares the value of OK.
inline constexpr response function_complete = response::ok;

constexpr const char* to_string(response r) {
    switch (r) {
        case response::ok: return "OK";
        case response::overrun: return "OVERRUN";
        case response::aborted: return "ABORTED";
        case response::bad_target: return "BAD_TARGET";
        case response::reset: return "RESET";
        case response::busy: return "BUSY";
        case response::transport_failure: return "TRANSPORT_FAILURE";
        case response::target_failure: return "TARGET_FAILURE";
        case response::nexus_failure: return "NEXUS_FAILURE";
        case response::failure: return "FAILURE";
        case response::function_succeeded: return "FUNCTION_SUCCEEDED";
        case response::function_rejected: return "FUNCTION_REJECTED";
        case response::incorrect_lun: return "INCORRECT_LUN";
    }
    return "UNKNOWN";  // devices may send values the spec does not define
}

// Task attributes.
enum class task_attr : uint8_t { simple = 0, ordered = 1, head_of_queue = 2, aca = 3 };

// Control queue request types and TMF subtypes.
enum class ctrl_type : uint32_t { tmf = 0, an_query = 1, an_subscribe = 2 };
enum class tmf : uint32_t {
    abort_task = 0,
    abort_task_set = 1,
    clear_aca = 2,
    clear_task_set = 3,
    i_t_nexus_reset = 4,
    logical_unit_reset = 5,
    query_task = 6,
    query_task_set = 7,
};

// Asynchronous notification event bits (AN query/subscribe, ASYNC_NOTIFY reason).
namespace an_event {
inline constexpr uint32_t operational_change = 2;
inline constexpr uint32_t power_mgmt = 4;
inline constexpr uint32_t external_request = 8;
inline constexpr uint32_t media_change = 16;
inline constexpr uint32_t multi_host = 32;
inline constexpr uint32_t device_busy = 64;
inline constexpr uint32_t all = 2 | 4 | 8 | 16 | 32 | 64;
}  // namespace an_event

// Event queue.
inline constexpr uint32_t event_missed_flag = 0x80000000u;
enum class event_type : uint32_t { no_event = 0, transport_reset = 1, async_notify = 2, param_change = 3 };
enum class reset_reason : uint32_t { hard = 0, rescan = 1, removed = 2 };

// Size defaults and limits.
inline constexpr uint32_t default_cdb_size = 32;
inline constexpr uint32_t default_sense_size = 96;

// Request-queue command header (device-readable), without protection information.
template <size_t CdbSize = default_cdb_size>
struct __attribute__((packed)) cmd_req {
    uint8_t lun[8];
    virtio64 tag;  // the spec's "id"
    uint8_t task_attr;
    uint8_t prio;
    uint8_t crn;
    uint8_t cdb[CdbSize];
};

// Request-queue command header with T10 PI (VIRTIO_SCSI_F_T10_PI): pi byte counts precede
// the CDB in every implementation (see the top of this file).
template <size_t CdbSize = default_cdb_size>
struct __attribute__((packed)) cmd_req_pi {
    uint8_t lun[8];
    virtio64 tag;
    uint8_t task_attr;
    uint8_t prio;
    uint8_t crn;
    virtio32 pi_bytesout;
    virtio32 pi_bytesin;
    uint8_t cdb[CdbSize];
};

// Request-queue response header plus sense (device-writable); data-in follows.
template <size_t SenseSize = default_sense_size>
struct __attribute__((packed)) cmd_resp {
    virtio32 sense_len;
    virtio32 residual;
    virtio16 status_qualifier;
    uint8_t status;
    uint8_t response;
    uint8_t sense[SenseSize];
};

// Bytes of the request and response headers for configured CDB and sense sizes: the device
// frames by the negotiated sizes, not by the compile-time struct.
constexpr uint32_t cmd_req_bytes(uint32_t cdb_size, bool pi) { return 19 + cdb_size + (pi ? 8 : 0); }
constexpr uint32_t cmd_resp_bytes(uint32_t sense_size) { return 12 + sense_size; }

struct __attribute__((packed)) tmf_req {
    virtio32 type;  // ctrl_type::tmf
    virtio32 subtype;
    uint8_t lun[8];
    virtio64 tag;
};
struct __attribute__((packed)) tmf_resp {
    uint8_t response;
};

struct __attribute__((packed)) an_req {
    virtio32 type;  // ctrl_type::an_query or an_subscribe
    uint8_t lun[8];
    virtio32 event_requested;
};
struct __attribute__((packed)) an_resp {
    virtio32 event_actual;
    uint8_t response;
};

struct __attribute__((packed)) event {
    virtio32 event;  // event_type, bit 31 = events missed
    uint8_t lun[8];
    virtio32 reason;
};

// Device configuration space, as laid out in the device-specific config area.
struct __attribute__((packed)) scsi_config {
    virtio32 num_queues;  // request queues only
    virtio32 seg_max;
    virtio32 max_sectors;
    virtio32 cmd_per_lun;
    virtio32 event_info_size;
    virtio32 sense_size;  // driver-writable
    virtio32 cdb_size;    // driver-writable
    virtio16 max_channel;
    virtio16 max_target;
    virtio32 max_lun;
};

// Byte offsets of the config fields, for transports that read config space field by field.
namespace config_offset {
inline constexpr uint32_t num_queues = 0;
inline constexpr uint32_t seg_max = 4;
inline constexpr uint32_t max_sectors = 8;
inline constexpr uint32_t cmd_per_lun = 12;
inline constexpr uint32_t event_info_size = 16;
inline constexpr uint32_t sense_size = 20;
inline constexpr uint32_t cdb_size = 24;
inline constexpr uint32_t max_channel = 28;
inline constexpr uint32_t max_target = 30;
inline constexpr uint32_t max_lun = 32;
inline constexpr uint32_t size = 36;
}  // namespace config_offset

// Queue numbering.
inline constexpr uint16_t controlq_index = 0;
inline constexpr uint16_t eventq_index = 1;
inline constexpr uint16_t first_request_queue = 2;

static_assert(sizeof(cmd_req<>) == 51, "cmd_req layout");
static_assert(sizeof(cmd_req_pi<>) == 59, "cmd_req_pi layout");
static_assert(sizeof(cmd_resp<>) == 108, "cmd_resp layout");
static_assert(sizeof(cmd_req<>) == cmd_req_bytes(32, false) && sizeof(cmd_req_pi<>) == cmd_req_bytes(32, true),
              "cmd_req_bytes");
static_assert(sizeof(cmd_resp<>) == cmd_resp_bytes(96), "cmd_resp_bytes");
static_assert(offsetof(cmd_req<>, tag) == 8 && offsetof(cmd_req<>, task_attr) == 16 && offsetof(cmd_req<>, cdb) == 19,
              "cmd_req offsets");
static_assert(offsetof(cmd_req_pi<>, pi_bytesout) == 19 && offsetof(cmd_req_pi<>, cdb) == 27, "cmd_req_pi offsets");
static_assert(offsetof(cmd_resp<>, residual) == 4 && offsetof(cmd_resp<>, status_qualifier) == 8 &&
                  offsetof(cmd_resp<>, status) == 10 && offsetof(cmd_resp<>, response) == 11 &&
                  offsetof(cmd_resp<>, sense) == 12,
              "cmd_resp offsets");
static_assert(sizeof(tmf_req) == 24 && offsetof(tmf_req, lun) == 8 && offsetof(tmf_req, tag) == 16, "tmf_req");
static_assert(sizeof(tmf_resp) == 1, "tmf_resp");
static_assert(sizeof(an_req) == 16 && offsetof(an_req, event_requested) == 12, "an_req");
static_assert(sizeof(an_resp) == 5, "an_resp");
static_assert(sizeof(event) == 16 && offsetof(event, reason) == 12, "event");
static_assert(sizeof(scsi_config) == config_offset::size, "scsi_config");
static_assert(offsetof(scsi_config, max_channel) == config_offset::max_channel &&
                  offsetof(scsi_config, max_lun) == config_offset::max_lun &&
                  offsetof(scsi_config, cdb_size) == config_offset::cdb_size,
              "scsi_config offsets");

}  // namespace vscsi
