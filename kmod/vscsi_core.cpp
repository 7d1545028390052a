// The kernel module's protocol unit: the only translation unit that includes the core. It
// is compiled for the kernel (freestanding, no exceptions, no RTTI, no C++ runtime) and for
// userspace tests alike, and talks to the kernel glue only through vscsi_kmod.h.
//
// Every byte the device wrote is read through the core's decoders, which clamp and
// range-check; nothing here trusts a length, a code or a LUN from the device.
#include "vscsi_kmod.h"

#include <vscsi/lun.hpp>
#include <vscsi/scsi.hpp>
#include <vscsi/wire.hpp>

namespace {

using vscsi::virtio_order;

// The interface's sizes are the core's, for the sizes the driver negotiates.
static_assert(VSK_CMD_REQ_BYTES == sizeof(vscsi::cmd_req<VSK_CDB_SIZE>), "command request size");
static_assert(VSK_CMD_REQ_BYTES == vscsi::cmd_req_bytes(VSK_CDB_SIZE, false), "command request framing");
static_assert(VSK_CMD_RESP_BYTES == sizeof(vscsi::cmd_resp<VSK_SENSE_SIZE>), "command response size");
static_assert(VSK_CMD_RESP_BYTES == vscsi::cmd_resp_bytes(VSK_SENSE_SIZE), "command response framing");
static_assert(VSK_TMF_REQ_BYTES == sizeof(vscsi::tmf_req) && VSK_TMF_RESP_BYTES == sizeof(vscsi::tmf_resp),
              "TMF sizes");
static_assert(VSK_AN_REQ_BYTES == sizeof(vscsi::an_req) && VSK_AN_RESP_BYTES == sizeof(vscsi::an_resp),
              "AN sizes");
static_assert(VSK_EVENT_BYTES == sizeof(vscsi::event), "event size");
static_assert(VSK_CFG_SENSE_SIZE == vscsi::config_offset::sense_size &&
                  VSK_CFG_CDB_SIZE == vscsi::config_offset::cdb_size,
              "config offsets");
static_assert(VSK_CONTROLQ == vscsi::controlq_index && VSK_EVENTQ == vscsi::eventq_index &&
                  VSK_FIRST_REQUESTQ == vscsi::first_request_queue,
              "queue numbering");
static_assert(VSK_F_INOUT == vscsi::feature::scsi_inout && VSK_F_HOTPLUG == vscsi::feature::scsi_hotplug &&
                  VSK_F_CHANGE == vscsi::feature::scsi_change && VSK_F_T10_PI == vscsi::feature::scsi_t10_pi,
              "feature bits");
static_assert(VSK_TMF_ABORT_TASK == uint32_t(vscsi::tmf::abort_task) &&
                  VSK_TMF_I_T_NEXUS_RESET == uint32_t(vscsi::tmf::i_t_nexus_reset) &&
                  VSK_TMF_LUN_RESET == uint32_t(vscsi::tmf::logical_unit_reset) &&
                  VSK_TMF_QUERY_TASK_SET == uint32_t(vscsi::tmf::query_task_set),
              "TMF functions");
static_assert(VSK_AN_QUERY == uint32_t(vscsi::ctrl_type::an_query) &&
                  VSK_AN_SUBSCRIBE == uint32_t(vscsi::ctrl_type::an_subscribe),
              "AN request types");
static_assert(VSK_AN_MEDIA_CHANGE == vscsi::an_event::media_change && VSK_AN_DEVICE_BUSY == vscsi::an_event::device_busy,
              "AN event classes");
static_assert(VSK_FLAT_LUN_NAME == vscsi::flat_space_name && VSK_MAX_LUN_NAME == vscsi::max_lun_name, "LUN names");
static_assert(sizeof(vsk_cmd_result) == 12 && sizeof(vsk_event) == 16, "C structs have no hidden padding");

constexpr uint8_t not_written = 0xff;

constexpr virtio_order order_of(uint32_t flags) { return virtio_order{(flags & VSK_LEGACY) != 0}; }

// Whether the device wrote at least `need` bytes. Legacy devices' used lengths are not
// trusted, so the buffer is taken as written.
constexpr bool wrote(uint32_t flags, uint32_t used_len, uint32_t need) {
    return (flags & VSK_LEGACY) != 0 || used_len >= need;
}

inline void copy(void* dst, const void* src, uint32_t n) { __builtin_memcpy(dst, src, n); }

// The 8-byte address of a target and a host LUN name; false for a name that addresses nothing.
bool encode(uint8_t target, uint64_t name, uint8_t out[8]) {
    const vscsi::decoded_lun d = vscsi::decode_lun_name(name);
    if (!d.valid) return false;
    vscsi::write_lun(out, target, d.lun);
    return true;
}

vsk_outcome host_of(vscsi::response r) {
    using vscsi::response;
    switch (r) {
        case response::ok: return VSK_HOST_OK;
        case response::overrun: return VSK_HOST_ERROR;
        case response::aborted: return VSK_HOST_ABORT;
        case response::bad_target:
        case response::incorrect_lun: return VSK_HOST_BAD_TARGET;
        case response::reset: return VSK_HOST_RESET;
        case response::busy: return VSK_HOST_BUS_BUSY;
        case response::transport_failure: return VSK_HOST_TRANSPORT_DISRUPTED;
        case response::target_failure: return VSK_HOST_TARGET_FAILURE;
        case response::nexus_failure: return VSK_HOST_NEXUS_FAILURE;
        case response::failure:
        case response::function_succeeded:  // TMF-only codes on a command: the device is confused
        case response::function_rejected: return VSK_HOST_ERROR;
    }
    return VSK_HOST_ERROR;  // a code the spec does not define
}

template <class T>
T load(const void* p) {
    T v;
    copy(&v, p, sizeof(v));
    return v;
}

}  // namespace

extern "C" {

uint32_t vsk_cmd_req(void* req, uint32_t flags, uint8_t target, uint64_t lun, uint64_t tag, uint8_t task_attr,
                     const uint8_t* cdb, uint32_t cdb_len) {
    using hdr = vscsi::cmd_req<VSK_CDB_SIZE>;
    if (!req || cdb_len > VSK_CDB_SIZE || (cdb_len && !cdb) || task_attr > VSK_TASK_HEAD_OF_QUEUE) return 0;
    // Written in place, field by field: this runs for every command.
    uint8_t* b = static_cast<uint8_t*>(req);
    if (!encode(target, lun, b + offsetof(hdr, lun))) return 0;
    vscsi::virtio64 t;
    t.set(order_of(flags), tag);
    copy(b + offsetof(hdr, tag), &t, sizeof(t));
    b[offsetof(hdr, task_attr)] = task_attr;
    b[offsetof(hdr, prio)] = 0;
    b[offsetof(hdr, crn)] = 0;
    uint8_t* c = b + offsetof(hdr, cdb);
    if (cdb_len) copy(c, cdb, cdb_len);
    for (uint32_t i = cdb_len; i < VSK_CDB_SIZE; ++i) c[i] = 0;
    return VSK_CMD_REQ_BYTES;
}

void vsk_cmd_resp_init(void* resp) {
    // The response code alone decides the outcome; 0xff is a code no spec defines.
    static_cast<uint8_t*>(resp)[offsetof(vscsi::cmd_resp<VSK_SENSE_SIZE>, response)] = not_written;
}

void vsk_cmd_resp(const void* resp, uint32_t flags, uint32_t used_len, uint32_t data_len, uint8_t* sense,
                  uint32_t sense_cap, vsk_cmd_result* out) {
    using hdr = vscsi::cmd_resp<VSK_SENSE_SIZE>;
    const uint8_t* b = static_cast<const uint8_t*>(resp);
    const virtio_order o = order_of(flags);
    vsk_cmd_result r{};
    // A virtio 1.x device reports how much it wrote; 12 bytes is the header without sense.
    const uint32_t header = offsetof(hdr, sense);
    if (!wrote(flags, used_len, header)) {
        r.host = VSK_HOST_ERROR;
        r.residual = data_len;
        r.response = not_written;
        *out = r;
        return;
    }
    r.written = 1;
    r.response = b[offsetof(hdr, response)];
    const vsk_outcome host = host_of(vscsi::response(r.response));
    r.host = uint8_t(host);
    r.status = host == VSK_HOST_OK ? b[offsetof(hdr, status)] : 0;

    // Residual: never more than the command carried.
    const uint32_t residual = load<vscsi::virtio32>(b + offsetof(hdr, residual)).get(o);
    r.residual = residual > data_len ? data_len : residual;

    // Sense: no more than the device claims, the buffer holds, it wrote, or the caller takes.
    uint32_t sl = load<vscsi::virtio32>(b + offsetof(hdr, sense_len)).get(o);
    if (sl > VSK_SENSE_SIZE) sl = VSK_SENSE_SIZE;
    if (!(flags & VSK_LEGACY) && sl > used_len - header) sl = used_len - header;
    if (sl > sense_cap) sl = sense_cap;
    if (!sense) sl = 0;
    if (sl) copy(sense, b + header, sl);
    r.sense_len = sl;
    *out = r;
}

uint32_t vsk_tmf_req(void* req, uint32_t flags, uint32_t function, uint8_t target, uint64_t lun, uint64_t tag) {
    vscsi::tmf_req t;
    if (!req || function > VSK_TMF_QUERY_TASK_SET) return 0;
    if (!encode(target, lun, t.lun)) return 0;
    const virtio_order o = order_of(flags);
    t.type.set(o, uint32_t(vscsi::ctrl_type::tmf));
    t.subtype.set(o, function);
    t.tag.set(o, tag);
    copy(req, &t, sizeof(t));
    return VSK_TMF_REQ_BYTES;
}

void vsk_ctrl_resp_init(void* resp, uint32_t len) {
    uint8_t* p = static_cast<uint8_t*>(resp);
    for (uint32_t i = 0; i < len; ++i) p[i] = not_written;
}

int vsk_tmf_resp(const void* resp, uint32_t flags, uint32_t used_len, uint8_t* response) {
    const uint8_t code = wrote(flags, used_len, VSK_TMF_RESP_BYTES) ? load<uint8_t>(resp) : not_written;
    if (response) *response = code;
    return code == uint8_t(vscsi::function_complete) || code == uint8_t(vscsi::response::function_succeeded);
}

uint32_t vsk_an_req(void* req, uint32_t flags, uint32_t type, uint8_t target, uint64_t lun, uint32_t events) {
    vscsi::an_req a;
    if (!req || (type != VSK_AN_QUERY && type != VSK_AN_SUBSCRIBE)) return 0;
    if (events & ~vscsi::an_event::all) return 0;
    if (!encode(target, lun, a.lun)) return 0;
    const virtio_order o = order_of(flags);
    a.type.set(o, type);
    a.event_requested.set(o, events);
    copy(req, &a, sizeof(a));
    return VSK_AN_REQ_BYTES;
}

uint8_t vsk_an_resp(const void* resp, uint32_t flags, uint32_t used_len, uint32_t* event_actual) {
    if (!wrote(flags, used_len, VSK_AN_RESP_BYTES)) {
        if (event_actual) *event_actual = 0;
        return not_written;
    }
    const auto a = load<vscsi::an_resp>(resp);
    if (event_actual) *event_actual = a.event_actual.get(order_of(flags));
    return a.response;
}

void vsk_event_decode(const void* buf, uint32_t flags, uint32_t used_len, vsk_event* out) {
    vsk_event ev{};
    if (!wrote(flags, used_len, VSK_EVENT_BYTES)) {
        *out = ev;  // a short event says nothing we can act on
        return;
    }
    const auto e = load<vscsi::event>(buf);
    const virtio_order o = order_of(flags);
    ev.event = e.event.get(o);
    ev.reason = e.reason.get(o);
    ev.missed = (ev.event & vscsi::event_missed_flag) != 0;
    const vscsi::decoded_lun dl = vscsi::decode_lun(e.lun);
    // The REPORT LUNS well-known LU is no unit a host can add or remove.
    const vscsi::result<uint32_t> name = vscsi::lun_name(dl.lun);
    ev.lun_valid = dl.valid && name.ok();
    if (ev.lun_valid) {
        ev.target = dl.target;
        ev.lun = name.value;
    }
    if (ev.missed) {
        // Events were lost: whatever this one says, only a full rescan is sure to be right.
        ev.action = VSK_EV_SCAN_HOST;
        *out = ev;
        return;
    }
    uint8_t action = VSK_EV_NONE;
    switch (vscsi::event_type(ev.event)) {
        case vscsi::event_type::transport_reset:
            if (!ev.lun_valid) break;
            if (ev.reason == uint32_t(vscsi::reset_reason::rescan))
                action = dl.lun == 0 ? VSK_EV_SCAN_TARGET : VSK_EV_ADD_LUN;
            else if (ev.reason == uint32_t(vscsi::reset_reason::removed))
                action = dl.lun == 0 ? VSK_EV_SCAN_TARGET : VSK_EV_REMOVE_LUN;
            break;  // a HARD reset needs nothing from the host: unit attentions follow
        case vscsi::event_type::param_change: {
            if (!ev.lun_valid) break;
            const uint8_t asc = uint8_t(ev.reason & 0xff);
            const uint8_t ascq = uint8_t((ev.reason >> 8) & 0xff);
            if (asc == vscsi::scsi::asc::target_changed && ascq == vscsi::scsi::asc::ascq_reported_luns_changed)
                action = VSK_EV_SCAN_TARGET;
            else
                action = VSK_EV_RESCAN_LUN;
            break;
        }
        default: break;  // NO_EVENT, ASYNC_NOTIFY (never subscribed), undefined types
    }
    ev.action = action;
    *out = ev;
}

int vsk_inquiry_lun_absent(const uint8_t* data, uint32_t len) {
    const vscsi::scsi::inquiry_data d = vscsi::scsi::decode_inquiry(data, len);
    // Too little data to tell is no reason to drop a disk someone may be using.
    return d.valid && !vscsi::scsi::lun_present(d);
}

void vsk_config_read(vsk_config* out, uint32_t flags, vsk_config_get_fn get, void* ctx) {
    namespace off = vscsi::config_offset;
    uint8_t raw[off::size] = {};
    const uint32_t words[] = {off::num_queues, off::seg_max,   off::max_sectors, off::cmd_per_lun,
                              off::event_info_size, off::sense_size, off::cdb_size, off::max_lun};
    for (uint32_t w : words) get(ctx, w, raw + w, 4);
    get(ctx, off::max_channel, raw + off::max_channel, 2);
    get(ctx, off::max_target, raw + off::max_target, 2);
    vsk_config_decode(out, flags, raw, sizeof(raw));
}

void vsk_config_decode(vsk_config* out, uint32_t flags, const void* raw, uint32_t len) {
    vsk_config c{};
    if (raw && len >= vscsi::config_offset::size) {
        const auto s = load<vscsi::scsi_config>(raw);
        const virtio_order o = order_of(flags);
        c.num_queues = s.num_queues.get(o);
        c.seg_max = s.seg_max.get(o);
        c.max_sectors = s.max_sectors.get(o);
        c.cmd_per_lun = s.cmd_per_lun.get(o);
        c.event_info_size = s.event_info_size.get(o);
        c.sense_size = s.sense_size.get(o);
        c.cdb_size = s.cdb_size.get(o);
        c.max_channel = s.max_channel.get(o);
        c.max_target = s.max_target.get(o);
        c.max_lun = s.max_lun.get(o);
    }
    *out = c;
}

void vsk_config_write_sizes(uint32_t flags, vsk_config_set_fn set, void* ctx) {
    const virtio_order o = order_of(flags);
    vscsi::virtio32 v;
    v.set(o, VSK_CDB_SIZE);
    set(ctx, VSK_CFG_CDB_SIZE, &v, 4);
    v.set(o, VSK_SENSE_SIZE);
    set(ctx, VSK_CFG_SENSE_SIZE, &v, 4);
}

void vsk_compute_limits(const vsk_config* cfg, uint32_t max_queues, uint32_t vq_size, int indirect, uint32_t sg_cap,
                        vsk_host_limits* out) {
    vsk_host_limits l{};
    const uint32_t want_queues = cfg->num_queues ? cfg->num_queues : 1;
    l.request_queues = max_queues == 0 ? 1 : (want_queues < max_queues ? want_queues : max_queues);
    l.can_queue = vq_size ? vq_size : 1;

    // Segments: what the device takes per command; without indirect descriptors the ring
    // must also hold the request and response headers beside them.
    uint32_t sg = cfg->seg_max ? cfg->seg_max : 1;
    if (!indirect) {
        const uint32_t room = vq_size > 2 ? vq_size - 2 : 1;
        if (sg > room) sg = room;
    }
    if (sg_cap && sg > sg_cap) sg = sg_cap;
    l.sg_tablesize = sg;

    l.max_sectors = cfg->max_sectors ? cfg->max_sectors : 0xffff;
    uint32_t per_lun = cfg->cmd_per_lun ? cfg->cmd_per_lun : 1;
    if (per_lun > l.can_queue) per_lun = l.can_queue;
    l.cmd_per_lun = per_lun;

    // One target byte and a 14-bit LUN in the virtio-scsi address. The host limits LUN names,
    // and the device's LUNs are named in flat space up to 0x4000 | max_lun.
    const uint32_t targets = uint32_t(cfg->max_target) + 1;
    l.max_id = targets > 256 ? 256 : targets;
    const uint32_t top = cfg->max_lun > vscsi::max_lun_number ? vscsi::max_lun_number : cfg->max_lun;
    l.max_lun = vscsi::flat_space_name + top + 1;
    l.max_channel = 0;
    l.max_cmd_len = VSK_CDB_SIZE;
    *out = l;
}

uint32_t vsk_queue_size(uint32_t offered, uint32_t limit) {
    if (!offered || !limit) return 0;
    const uint32_t m = offered < limit ? offered : limit;
    uint32_t p = 1;
    while (p <= m / 2) p <<= 1;
    return p;
}

uint32_t vsk_lun_alias(uint64_t name) {
    const vscsi::result<uint32_t> a = vscsi::lun_name_alias(name);
    return a.ok() ? a.value : VSK_NO_LUN;
}

const char* vsk_response_name(uint8_t response) { return vscsi::to_string(vscsi::response(response)); }

}  // extern "C"
