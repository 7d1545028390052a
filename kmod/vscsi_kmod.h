/*
 * The C interface between a kernel glue (C, one file per kernel family) and the protocol
 * unit (vscsi_core.cpp, C++ over include/vscsi).
 *
 * The glue owns every kernel object: the virtio device and its virtqueues, the Scsi_Host,
 * locks, work items, memory. The protocol unit owns the bytes on the wire: it builds request
 * headers in buffers the glue provides, encodes LUNs, decodes responses (outcome, SAM status,
 * sense and residual clamped), decodes events into what the glue should do about them, and
 * reads and checks the device configuration.
 *
 * Only fixed-width integers, plain structs and opaque pointers cross this line, so a 2.6.18
 * glue and a current one use the same unit. Nothing here allocates, sleeps or locks; every
 * function may be called from interrupt context.
 */
#ifndef VSCSI_KMOD_H
#define VSCSI_KMOD_H

#if defined(__KERNEL__) && !defined(__cplusplus)
#include <linux/types.h>
#else
#include <stdint.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this interface; a glue built against another one refuses to compile. */
#define VSK_INTERFACE_VERSION 2

/*
 * Sizes the driver negotiates and frames by: it writes VSK_CDB_SIZE and VSK_SENSE_SIZE into
 * the device's config, and every request and response header has exactly these lengths.
 */
#define VSK_CDB_SIZE 32
#define VSK_SENSE_SIZE 96
#define VSK_CMD_REQ_BYTES 51  /* lun 8, tag 8, task_attr, prio, crn, cdb 32 */
#define VSK_CMD_RESP_BYTES 108 /* sense_len 4, residual 4, qualifier 2, status, response, sense 96 */
#define VSK_TMF_REQ_BYTES 24
#define VSK_TMF_RESP_BYTES 1
#define VSK_AN_REQ_BYTES 16
#define VSK_AN_RESP_BYTES 5
#define VSK_EVENT_BYTES 16

/* Virtqueue numbering and the device's feature bits the glue may offer. */
#define VSK_CONTROLQ 0
#define VSK_EVENTQ 1
#define VSK_FIRST_REQUESTQ 2
#define VSK_F_INOUT 0
#define VSK_F_HOTPLUG 1
#define VSK_F_CHANGE 2
#define VSK_F_T10_PI 3

/* Config space offsets the glue writes (cdb_size, sense_size are driver-writable). */
#define VSK_CFG_SENSE_SIZE 20
#define VSK_CFG_CDB_SIZE 24

/*
 * Flags describing the device, passed to every function that touches device bytes.
 * VSK_LEGACY: a legacy (pre-1.0) device: fields are in guest byte order, and the used
 * length the device reports is not trusted (legacy devices were sloppy with it).
 * Without it: virtio 1.x, little-endian fields, used lengths are meaningful.
 */
#define VSK_LEGACY 1u

/*
 * LUN names. Every LUN crossing this interface is named the way the host's SCSI layer names
 * it (Linux's sdev->lun, in 2.6.18 as now): the first two bytes of the SAM LUN read as one
 * big-endian number, as REPORT LUNS lists it. Names 0-255 are LUNs 0-255 in peripheral form;
 * VSK_FLAT_LUN_NAME | n is LUN n (0-16383) in flat space: LUN 300 is 0x412c (16684). Other
 * names address nothing virtio-scsi can reach, and every function here refuses them.
 */
#define VSK_FLAT_LUN_NAME 0x4000
#define VSK_MAX_LUN_NAME 0x7fff
#define VSK_NO_LUN 0xffffffffu

/*
 * The other name of the same LUN: one below 256 has two (n and VSK_FLAT_LUN_NAME | n), and a
 * device may report it by either, so a glue looking a LUN up tries both. A name with no other
 * form is returned as it is; VSK_NO_LUN for a name that addresses nothing.
 */
uint32_t vsk_lun_alias(uint64_t name);

/* ---- commands ---- */

/* Task attributes (SAM). */
#define VSK_TASK_SIMPLE 0
#define VSK_TASK_ORDERED 1
#define VSK_TASK_HEAD_OF_QUEUE 2

/*
 * Build a command request header in req (VSK_CMD_REQ_BYTES bytes) for the LUN named lun. The
 * CDB is copied and zero-padded to VSK_CDB_SIZE. Returns VSK_CMD_REQ_BYTES, or 0 when the
 * name addresses no LUN or the CDB is longer than VSK_CDB_SIZE; req is then untouched.
 */
uint32_t vsk_cmd_req(void *req, uint32_t flags, uint8_t target, uint64_t lun, uint64_t tag,
		     uint8_t task_attr, const uint8_t *cdb, uint32_t cdb_len);

/*
 * What the glue puts in the host byte of a completed command, by meaning; each glue maps
 * these to its kernel's DID_ values (older kernels lack some and use the nearest).
 */
enum vsk_outcome {
	VSK_HOST_OK = 0,              /* OK: the SAM status says the rest */
	VSK_HOST_ERROR,               /* OVERRUN, FAILURE, an undefined code, no response */
	VSK_HOST_ABORT,               /* ABORTED */
	VSK_HOST_BAD_TARGET,          /* BAD_TARGET, INCORRECT_LUN: no such target or LUN */
	VSK_HOST_RESET,               /* RESET: a reset TMF or device reset hit it; retry */
	VSK_HOST_BUS_BUSY,            /* BUSY: retry on the same path */
	VSK_HOST_TRANSPORT_DISRUPTED, /* TRANSPORT_FAILURE: retry, maybe on another path */
	VSK_HOST_TARGET_FAILURE,      /* TARGET_FAILURE: do not retry elsewhere */
	VSK_HOST_NEXUS_FAILURE        /* NEXUS_FAILURE: retry on another path */
};

struct vsk_cmd_result {
	uint32_t residual;  /* clamped to data_len */
	uint32_t sense_len; /* bytes copied to the caller's sense buffer */
	uint8_t response;   /* the raw virtio-scsi response code, for logging */
	uint8_t status;     /* SAM status; 0 unless the response is OK */
	uint8_t host;       /* enum vsk_outcome */
	uint8_t written;    /* 0 when the device returned the buffers without a response header */
};

/*
 * Before posting a command: mark its response header (VSK_CMD_RESP_BYTES) as not answered,
 * so that buffers a device returns without writing a header (a legacy device cannot say it
 * did not) decode to VSK_HOST_ERROR, never to stale bytes of an earlier command.
 */
void vsk_cmd_resp_init(void *resp);

/*
 * Decode a command response (resp: VSK_CMD_RESP_BYTES bytes the device wrote).
 * used_len: the length the device put in the used ring (ignored for VSK_LEGACY devices).
 * data_len: bytes of data the command carried (both directions).
 * sense/sense_cap: where the sense data goes (the kernel's sense buffer); at most
 * min(sense_len the device claims, VSK_SENSE_SIZE, what it wrote, sense_cap) bytes are copied.
 */
void vsk_cmd_resp(const void *resp, uint32_t flags, uint32_t used_len, uint32_t data_len,
		  uint8_t *sense, uint32_t sense_cap, struct vsk_cmd_result *out);

/* ---- task management and asynchronous notification (control queue) ---- */

#define VSK_TMF_ABORT_TASK 0
#define VSK_TMF_ABORT_TASK_SET 1
#define VSK_TMF_CLEAR_ACA 2
#define VSK_TMF_CLEAR_TASK_SET 3
#define VSK_TMF_I_T_NEXUS_RESET 4
#define VSK_TMF_LUN_RESET 5
#define VSK_TMF_QUERY_TASK 6
#define VSK_TMF_QUERY_TASK_SET 7

/*
 * Build a TMF request in req (VSK_TMF_REQ_BYTES) for the LUN named lun. tag names the command
 * for ABORT TASK and QUERY TASK (the tag its command header carried); 0 otherwise. Returns
 * VSK_TMF_REQ_BYTES, or 0 for an unknown function or a name that addresses no LUN.
 */
uint32_t vsk_tmf_req(void *req, uint32_t flags, uint32_t function, uint8_t target, uint64_t lun,
		     uint64_t tag);

/*
 * Before posting a TMF or AN request: mark its response (len bytes) as not answered, so a
 * response the device never wrote, or a request reclaimed by a device reset, reads as failed.
 */
void vsk_ctrl_resp_init(void *resp, uint32_t len);

/*
 * Whether a TMF succeeded: 1 for FUNCTION COMPLETE or FUNCTION SUCCEEDED, 0 otherwise
 * (REJECTED, INCORRECT_LUN, failures, a response that was never written). *response gets the
 * raw code (or 0xff when nothing was written) for logging; it may be NULL.
 */
int vsk_tmf_resp(const void *resp, uint32_t flags, uint32_t used_len, uint8_t *response);

#define VSK_AN_QUERY 1
#define VSK_AN_SUBSCRIBE 2
/* Event classes for AN requests (bit masks). */
#define VSK_AN_OPERATIONAL_CHANGE 2
#define VSK_AN_POWER_MGMT 4
#define VSK_AN_EXTERNAL_REQUEST 8
#define VSK_AN_MEDIA_CHANGE 16
#define VSK_AN_MULTI_HOST 32
#define VSK_AN_DEVICE_BUSY 64

/* Build an AN query or subscribe request (VSK_AN_REQ_BYTES) for the LUN named lun; 0 on bad
 * arguments. */
uint32_t vsk_an_req(void *req, uint32_t flags, uint32_t type, uint8_t target, uint64_t lun,
		    uint32_t events);
/* Decode an AN response: returns the response code (0xff if not written), *event_actual set. */
uint8_t vsk_an_resp(const void *resp, uint32_t flags, uint32_t used_len, uint32_t *event_actual);

/* ---- events ---- */

/* What the glue does about an event. */
enum vsk_event_action {
	VSK_EV_NONE = 0,     /* nothing: no event, an undefined type, a bad LUN, HARD reset, AN */
	VSK_EV_ADD_LUN,      /* transport reset RESCAN of a LUN other than 0: add that LUN */
	VSK_EV_REMOVE_LUN,   /* transport reset REMOVED of a LUN other than 0: remove it */
	VSK_EV_SCAN_TARGET,  /* LUN 0 RESCAN or REMOVED, or REPORTED LUNS DATA HAS CHANGED:
			      * drop the target's LUNs that vanished, then scan the target */
	VSK_EV_RESCAN_LUN,   /* PARAM_CHANGE (e.g. CAPACITY DATA HAS CHANGED): re-read the LUN */
	VSK_EV_SCAN_HOST     /* EVENTS_MISSED: drop every vanished LUN, then scan the host */
};

struct vsk_event {
	uint32_t event;   /* raw event word, missed flag included */
	uint32_t reason;  /* reset reason, AN bits, or asc | ascq << 8 for PARAM_CHANGE */
	uint32_t lun;     /* the LUN's name, as a SAM device reports it (0-255 in peripheral form,
			   * VSK_FLAT_LUN_NAME | lun from 256); valid when lun_valid is */
	uint8_t target;
	uint8_t action;   /* enum vsk_event_action */
	uint8_t missed;   /* EVENTS_MISSED was set */
	uint8_t lun_valid;
};

/*
 * Decode one event buffer (buf: VSK_EVENT_BYTES the device wrote, used_len from the used
 * ring). A short event from a virtio 1.x device decodes to VSK_EV_NONE.
 */
void vsk_event_decode(const void *buf, uint32_t flags, uint32_t used_len, struct vsk_event *out);

/*
 * Whether standard INQUIRY data (len bytes the device returned) says there is no logical
 * unit at this address: 1 when the peripheral qualifier is not 0; 0 when it is, or when
 * there are too few bytes to tell.
 */
int vsk_inquiry_lun_absent(const uint8_t *data, uint32_t len);

/* ---- configuration ---- */

struct vsk_config {
	uint32_t num_queues;  /* request queues */
	uint32_t seg_max;
	uint32_t max_sectors;
	uint32_t cmd_per_lun;
	uint32_t event_info_size;
	uint32_t sense_size;
	uint32_t cdb_size;
	uint32_t max_lun;
	uint16_t max_channel;
	uint16_t max_target;
};

/*
 * Read the device's configuration through get(ctx, offset, buf, len), which copies len
 * (2 or 4) raw bytes of config space at offset into buf, as the device holds them.
 */
typedef void (*vsk_config_get_fn)(void *ctx, uint32_t offset, void *buf, uint32_t len);
typedef void (*vsk_config_set_fn)(void *ctx, uint32_t offset, const void *buf, uint32_t len);
void vsk_config_read(struct vsk_config *out, uint32_t flags, vsk_config_get_fn get, void *ctx);
/* The same from a raw copy of the config space (at least 36 bytes). */
void vsk_config_decode(struct vsk_config *out, uint32_t flags, const void *raw, uint32_t len);
/* Write cdb_size = VSK_CDB_SIZE and sense_size = VSK_SENSE_SIZE through set(). */
void vsk_config_write_sizes(uint32_t flags, vsk_config_set_fn set, void *ctx);

/* The Scsi_Host limits that follow from a configuration and what the glue can do. */
struct vsk_host_limits {
	uint32_t request_queues; /* in [1, max_queues] */
	uint32_t can_queue;      /* commands in flight per request queue */
	uint32_t sg_tablesize;   /* data segments per command */
	uint32_t max_sectors;    /* 512-byte sectors per command */
	uint32_t cmd_per_lun;    /* in [1, can_queue] */
	uint32_t max_id;         /* targets: max_target + 1, at most 256 */
	uint32_t max_lun;        /* LUN names: VSK_FLAT_LUN_NAME + max_lun + 1, at most 0x8000, so
				  * the flat-space names of the device's LUNs get through */
	uint32_t max_channel;    /* always 0: virtio-scsi has one channel */
	uint32_t max_cmd_len;    /* VSK_CDB_SIZE */
};

/*
 * max_queues: request virtqueues the glue can use (CPUs, or 1); vq_size: descriptors in a
 * request virtqueue; indirect: whether the ring has indirect descriptors (without them a
 * command needs its segments plus two headers in the ring); sg_cap: the kernel's own cap
 * on segments (0: none).
 */
void vsk_compute_limits(const struct vsk_config *cfg, uint32_t max_queues, uint32_t vq_size,
			int indirect, uint32_t sg_cap, struct vsk_host_limits *out);

/*
 * Queue-size down-negotiation: the largest power of two no larger than offered and limit
 * (at least 1 when both are non-zero), for kernels that cannot allocate the ring the host
 * offers. 0 when offered or limit is 0.
 */
uint32_t vsk_queue_size(uint32_t offered, uint32_t limit);

/* ---- diagnostics ---- */

/* Name of a virtio-scsi response code ("OK", "INCORRECT_LUN", ..., "UNKNOWN"). */
const char *vsk_response_name(uint8_t response);

#ifdef __cplusplus
}
#endif

#endif /* VSCSI_KMOD_H */
