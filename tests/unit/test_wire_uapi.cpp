// The virtio-scsi wire structs against the kernel's own uapi header: every size, every
// field offset, every constant.
#include <catch2/catch.hpp>
#include <cstddef>
#include <string>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_scsi.h>

#include <vscsi/wire.hpp>

using namespace vscsi;

#define SAME_FIELD(ours, theirs, field)                                  \
    do {                                                                 \
        CHECK(offsetof(ours, field) == offsetof(theirs, field));         \
        CHECK(sizeof(ours::field) == sizeof(theirs::field));             \
    } while (0)

TEST_CASE("cmd_req matches virtio_scsi_cmd_req", "[wire][uapi]") {
    using ours = cmd_req<>;
    using theirs = virtio_scsi_cmd_req;
    CHECK(sizeof(ours) == sizeof(theirs));
    SAME_FIELD(ours, theirs, lun);
    SAME_FIELD(ours, theirs, task_attr);
    SAME_FIELD(ours, theirs, prio);
    SAME_FIELD(ours, theirs, crn);
    SAME_FIELD(ours, theirs, cdb);
    CHECK(offsetof(ours, tag) == offsetof(theirs, tag));
    CHECK(sizeof(ours::tag) == sizeof(theirs::tag));
    CHECK(cmd_req_bytes(VIRTIO_SCSI_CDB_DEFAULT_SIZE, false) == sizeof(theirs));
}

TEST_CASE("cmd_req_pi matches virtio_scsi_cmd_req_pi (pi counts before the CDB)", "[wire][uapi]") {
    using ours = cmd_req_pi<>;
    using theirs = virtio_scsi_cmd_req_pi;
    CHECK(sizeof(ours) == sizeof(theirs));
    SAME_FIELD(ours, theirs, lun);
    SAME_FIELD(ours, theirs, tag);
    SAME_FIELD(ours, theirs, task_attr);
    SAME_FIELD(ours, theirs, prio);
    SAME_FIELD(ours, theirs, crn);
    SAME_FIELD(ours, theirs, pi_bytesout);
    SAME_FIELD(ours, theirs, pi_bytesin);
    SAME_FIELD(ours, theirs, cdb);
    CHECK(cmd_req_bytes(VIRTIO_SCSI_CDB_DEFAULT_SIZE, true) == sizeof(theirs));
}

TEST_CASE("cmd_resp matches virtio_scsi_cmd_resp", "[wire][uapi]") {
    using ours = cmd_resp<>;
    using theirs = virtio_scsi_cmd_resp;
    CHECK(sizeof(ours) == sizeof(theirs));
    SAME_FIELD(ours, theirs, sense_len);
    CHECK(offsetof(ours, residual) == offsetof(theirs, resid));
    CHECK(sizeof(ours::residual) == sizeof(theirs::resid));
    SAME_FIELD(ours, theirs, status_qualifier);
    SAME_FIELD(ours, theirs, status);
    SAME_FIELD(ours, theirs, response);
    SAME_FIELD(ours, theirs, sense);
    CHECK(cmd_resp_bytes(VIRTIO_SCSI_SENSE_DEFAULT_SIZE) == sizeof(theirs));
}

TEST_CASE("control queue structs match the uapi", "[wire][uapi]") {
    CHECK(sizeof(tmf_req) == sizeof(virtio_scsi_ctrl_tmf_req));
    SAME_FIELD(tmf_req, virtio_scsi_ctrl_tmf_req, type);
    SAME_FIELD(tmf_req, virtio_scsi_ctrl_tmf_req, subtype);
    SAME_FIELD(tmf_req, virtio_scsi_ctrl_tmf_req, lun);
    SAME_FIELD(tmf_req, virtio_scsi_ctrl_tmf_req, tag);
    CHECK(sizeof(tmf_resp) == sizeof(virtio_scsi_ctrl_tmf_resp));
    SAME_FIELD(tmf_resp, virtio_scsi_ctrl_tmf_resp, response);

    CHECK(sizeof(an_req) == sizeof(virtio_scsi_ctrl_an_req));
    SAME_FIELD(an_req, virtio_scsi_ctrl_an_req, type);
    SAME_FIELD(an_req, virtio_scsi_ctrl_an_req, lun);
    SAME_FIELD(an_req, virtio_scsi_ctrl_an_req, event_requested);
    CHECK(sizeof(an_resp) == sizeof(virtio_scsi_ctrl_an_resp));
    SAME_FIELD(an_resp, virtio_scsi_ctrl_an_resp, event_actual);
    SAME_FIELD(an_resp, virtio_scsi_ctrl_an_resp, response);
}

TEST_CASE("event and config match the uapi", "[wire][uapi]") {
    CHECK(sizeof(event) == sizeof(virtio_scsi_event));
    SAME_FIELD(event, virtio_scsi_event, event);
    SAME_FIELD(event, virtio_scsi_event, lun);
    SAME_FIELD(event, virtio_scsi_event, reason);

    using C = virtio_scsi_config;
    CHECK(sizeof(scsi_config) == sizeof(C));
    SAME_FIELD(scsi_config, C, num_queues);
    SAME_FIELD(scsi_config, C, seg_max);
    SAME_FIELD(scsi_config, C, max_sectors);
    SAME_FIELD(scsi_config, C, cmd_per_lun);
    SAME_FIELD(scsi_config, C, event_info_size);
    SAME_FIELD(scsi_config, C, sense_size);
    SAME_FIELD(scsi_config, C, cdb_size);
    SAME_FIELD(scsi_config, C, max_channel);
    SAME_FIELD(scsi_config, C, max_target);
    SAME_FIELD(scsi_config, C, max_lun);
    CHECK(config_offset::num_queues == offsetof(C, num_queues));
    CHECK(config_offset::seg_max == offsetof(C, seg_max));
    CHECK(config_offset::max_sectors == offsetof(C, max_sectors));
    CHECK(config_offset::cmd_per_lun == offsetof(C, cmd_per_lun));
    CHECK(config_offset::event_info_size == offsetof(C, event_info_size));
    CHECK(config_offset::sense_size == offsetof(C, sense_size));
    CHECK(config_offset::cdb_size == offsetof(C, cdb_size));
    CHECK(config_offset::max_channel == offsetof(C, max_channel));
    CHECK(config_offset::max_target == offsetof(C, max_target));
    CHECK(config_offset::max_lun == offsetof(C, max_lun));
    CHECK(config_offset::size == sizeof(C));
}

TEST_CASE("constants match the uapi", "[wire][uapi]") {
    CHECK(virtio_id_scsi == VIRTIO_ID_SCSI);
    CHECK(default_cdb_size == VIRTIO_SCSI_CDB_DEFAULT_SIZE);
    CHECK(default_sense_size == VIRTIO_SCSI_SENSE_DEFAULT_SIZE);

    CHECK(feature::scsi_inout == VIRTIO_SCSI_F_INOUT);
    CHECK(feature::scsi_hotplug == VIRTIO_SCSI_F_HOTPLUG);
    CHECK(feature::scsi_change == VIRTIO_SCSI_F_CHANGE);
    CHECK(feature::scsi_t10_pi == VIRTIO_SCSI_F_T10_PI);
    CHECK(feature::notify_on_empty == VIRTIO_F_NOTIFY_ON_EMPTY);
    CHECK(feature::any_layout == VIRTIO_F_ANY_LAYOUT);
    // virtio_ring.h is not C++-clean (vring_init); its feature values are checked in test_ring.
    CHECK(feature::ring_indirect_desc == 28);
    CHECK(feature::ring_event_idx == 29);
    CHECK(feature::version_1 == VIRTIO_F_VERSION_1);
    CHECK(feature::access_platform == VIRTIO_F_ACCESS_PLATFORM);
    CHECK(feature::ring_packed == VIRTIO_F_RING_PACKED);
    CHECK(feature::in_order == VIRTIO_F_IN_ORDER);
    CHECK(feature::order_platform == VIRTIO_F_ORDER_PLATFORM);
    CHECK(feature::sr_iov == VIRTIO_F_SR_IOV);
    CHECK(feature::ring_reset == VIRTIO_F_RING_RESET);

    CHECK(dev_status::acknowledge == VIRTIO_CONFIG_S_ACKNOWLEDGE);
    CHECK(dev_status::driver == VIRTIO_CONFIG_S_DRIVER);
    CHECK(dev_status::driver_ok == VIRTIO_CONFIG_S_DRIVER_OK);
    CHECK(dev_status::features_ok == VIRTIO_CONFIG_S_FEATURES_OK);
    CHECK(dev_status::needs_reset == VIRTIO_CONFIG_S_NEEDS_RESET);
    CHECK(dev_status::failed == VIRTIO_CONFIG_S_FAILED);

    CHECK(uint8_t(response::ok) == VIRTIO_SCSI_S_OK);
    CHECK(uint8_t(response::overrun) == VIRTIO_SCSI_S_OVERRUN);
    CHECK(uint8_t(response::aborted) == VIRTIO_SCSI_S_ABORTED);
    CHECK(uint8_t(response::bad_target) == VIRTIO_SCSI_S_BAD_TARGET);
    CHECK(uint8_t(response::reset) == VIRTIO_SCSI_S_RESET);
    CHECK(uint8_t(response::busy) == VIRTIO_SCSI_S_BUSY);
    CHECK(uint8_t(response::transport_failure) == VIRTIO_SCSI_S_TRANSPORT_FAILURE);
    CHECK(uint8_t(response::target_failure) == VIRTIO_SCSI_S_TARGET_FAILURE);
    CHECK(uint8_t(response::nexus_failure) == VIRTIO_SCSI_S_NEXUS_FAILURE);
    CHECK(uint8_t(response::failure) == VIRTIO_SCSI_S_FAILURE);
    CHECK(uint8_t(response::function_succeeded) == VIRTIO_SCSI_S_FUNCTION_SUCCEEDED);
    CHECK(uint8_t(response::function_rejected) == VIRTIO_SCSI_S_FUNCTION_REJECTED);
    CHECK(uint8_t(response::incorrect_lun) == VIRTIO_SCSI_S_INCORRECT_LUN);
    CHECK(uint8_t(function_complete) == VIRTIO_SCSI_S_OK);  // the 6.1 uapi has no separate name

    CHECK(uint32_t(ctrl_type::tmf) == VIRTIO_SCSI_T_TMF);
    CHECK(uint32_t(ctrl_type::an_query) == VIRTIO_SCSI_T_AN_QUERY);
    CHECK(uint32_t(ctrl_type::an_subscribe) == VIRTIO_SCSI_T_AN_SUBSCRIBE);
    CHECK(uint32_t(tmf::abort_task) == VIRTIO_SCSI_T_TMF_ABORT_TASK);
    CHECK(uint32_t(tmf::abort_task_set) == VIRTIO_SCSI_T_TMF_ABORT_TASK_SET);
    CHECK(uint32_t(tmf::clear_aca) == VIRTIO_SCSI_T_TMF_CLEAR_ACA);
    CHECK(uint32_t(tmf::clear_task_set) == VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET);
    CHECK(uint32_t(tmf::i_t_nexus_reset) == VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET);
    CHECK(uint32_t(tmf::logical_unit_reset) == VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET);
    CHECK(uint32_t(tmf::query_task) == VIRTIO_SCSI_T_TMF_QUERY_TASK);
    CHECK(uint32_t(tmf::query_task_set) == VIRTIO_SCSI_T_TMF_QUERY_TASK_SET);

    // The uapi names no AN event bits; these are the spec's values (checklist 16).
    CHECK(an_event::operational_change == 2);
    CHECK(an_event::power_mgmt == 4);
    CHECK(an_event::external_request == 8);
    CHECK(an_event::media_change == 16);
    CHECK(an_event::multi_host == 32);
    CHECK(an_event::device_busy == 64);
    CHECK(feature::notification_data == 38);
    CHECK(feature::notif_config_data == 39);

    CHECK(event_missed_flag == VIRTIO_SCSI_T_EVENTS_MISSED);
    CHECK(uint32_t(event_type::no_event) == VIRTIO_SCSI_T_NO_EVENT);
    CHECK(uint32_t(event_type::transport_reset) == VIRTIO_SCSI_T_TRANSPORT_RESET);
    CHECK(uint32_t(event_type::async_notify) == VIRTIO_SCSI_T_ASYNC_NOTIFY);
    CHECK(uint32_t(event_type::param_change) == VIRTIO_SCSI_T_PARAM_CHANGE);
    CHECK(uint32_t(reset_reason::hard) == VIRTIO_SCSI_EVT_RESET_HARD);
    CHECK(uint32_t(reset_reason::rescan) == VIRTIO_SCSI_EVT_RESET_RESCAN);
    CHECK(uint32_t(reset_reason::removed) == VIRTIO_SCSI_EVT_RESET_REMOVED);

    CHECK(uint8_t(task_attr::simple) == VIRTIO_SCSI_S_SIMPLE);
    CHECK(uint8_t(task_attr::ordered) == VIRTIO_SCSI_S_ORDERED);
    CHECK(uint8_t(task_attr::head_of_queue) == VIRTIO_SCSI_S_HEAD);
    CHECK(uint8_t(task_attr::aca) == VIRTIO_SCSI_S_ACA);
}

TEST_CASE("virtio-order fields: modern little-endian, legacy native", "[wire][endian]") {
    cmd_resp<> r{};
    virtio_order modern{};
    virtio_order legacy{true};
    r.residual.set(modern, 0x11223344u);
    const auto* b = reinterpret_cast<const uint8_t*>(&r.residual);
    CHECK(b[0] == 0x44);
    CHECK(b[3] == 0x11);
    CHECK(r.residual.get(modern) == 0x11223344u);
    r.sense_len.set(legacy, 0xA1B2C3D4u);
    uint32_t native;
    __builtin_memcpy(&native, &r.sense_len, 4);
    CHECK(native == 0xA1B2C3D4u);
}

TEST_CASE("response names cover every code and unknown ones", "[wire]") {
    for (unsigned v = 0; v <= 12; ++v)
        CHECK(std::string(to_string(response(v))) != "UNKNOWN");
    CHECK(std::string(to_string(response(13))) == "UNKNOWN");
    CHECK(std::string(to_string(response(255))) == "UNKNOWN");
}
