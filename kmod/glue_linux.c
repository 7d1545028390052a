// SPDX-License-Identifier: MIT
/*
 * virtio_scsi for current Linux kernels: the kernel side of the module.
 *
 * This file owns the kernel objects (the virtio device and the kernel's own virtqueues, the
 * Scsi_Host, locks, work items); every byte on the wire is built and decoded by the
 * protocol unit behind vscsi_kmod.h. API differences between kernel versions are detected
 * from the tree by Kbuild (VSK_HAVE_* / VSK_* flags), not from version numbers, because
 * distribution kernels carry backports.
 *
 * Queues: control (TMFs), event (hot-plug, parameter changes), and one request queue per
 * blk-mq hardware queue, each with its own lock; a request queue's interrupt is affine to
 * the CPUs blk-mq maps to it.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/mutex.h>
#include <linux/delay.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>
#include <linux/completion.h>
#include <linux/interrupt.h>
#include <linux/rcupdate.h>
#include <linux/scatterlist.h>
#include <linux/bitmap.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_ring.h>
#include <linux/blk-mq.h>
#ifdef VSK_HAVE_BLK_MQ_VIRTIO
#include <linux/blk-mq-virtio.h>
#endif
#include <scsi/scsi.h>
#include <scsi/scsi_cmnd.h>
#include <scsi/scsi_device.h>
#include <scsi/scsi_host.h>

#include "vscsi_kmod.h"

#if VSK_INTERFACE_VERSION != 2
#error "glue_linux.c speaks version 2 of vscsi_kmod.h"
#endif

#define VSK_EVENT_NODES 8
#define VSK_INQUIRY_TIMEOUT (10 * HZ)
#define VSK_INQUIRY_BYTES 36

/*
 * Event buffers kept posted. Fewer make the device drop events sooner (it then reports
 * EVENTS_MISSED and the host is rescanned): the kmod tests use 1 to drive that path.
 */
static unsigned int event_buffers = VSK_EVENT_NODES;
module_param(event_buffers, uint, 0444);
MODULE_PARM_DESC(event_buffers, "event buffers kept posted, 1-8 (default 8)");

/*
 * How long a TMF may take before its handler gives up (and the error handler escalates);
 * the device keeps the request's buffers, which are freed when it does answer.
 */
static unsigned int tmf_timeout = 30;
module_param(tmf_timeout, uint, 0644);
MODULE_PARM_DESC(tmf_timeout, "seconds to wait for a task management function (default 30)");

/*
 * A pause before each event is handled. Zero in use; the kmod tests set it to hold event
 * work pending while the module is removed, which is when an unload race would strike.
 */
static unsigned int event_delay_ms;
module_param(event_delay_ms, uint, 0644);
MODULE_PARM_DESC(event_delay_ms, "delay before handling each event, for testing (default 0)");

/*
 * A test hook, off (0) unless set: the next N commands that carry no data to the device are
 * posted with a request header one byte shorter than the negotiated size. A virtio 1.x device
 * must take that as a malformed request; QEMU then sets DEVICE_NEEDS_RESET, and the kmod
 * tests watch the module recover. Never set it on a system in use.
 */
static unsigned int test_malformed_requests;
module_param(test_malformed_requests, uint, 0644);
MODULE_PARM_DESC(test_malformed_requests,
		 "testing only: send the next N commands without data out with a short header (default 0)");

/* Per SCSI command, in the command's private area: the device reads req, writes resp. */
struct vsk_cmd {
	u8 req[VSK_CMD_REQ_BYTES];
	u8 resp[VSK_CMD_RESP_BYTES];
};

/* A TMF on the control queue. */
struct vsk_tmf {
	u8 req[VSK_TMF_REQ_BYTES];
	u8 resp[VSK_TMF_RESP_BYTES];
	u32 used_len;
	bool abandoned; /* its waiter gave up: whoever gets it back frees it (ctrl.lock) */
	struct completion done;
};

/* An event buffer; it is either posted to the device, being handled by its work, or idle. */
enum { VSK_NODE_IDLE, VSK_NODE_POSTED, VSK_NODE_WORK };
struct vsk_host;
struct vsk_event_node {
	struct vsk_host *h;
	struct work_struct work;
	u8 buf[VSK_EVENT_BYTES];
	u32 used_len;
	int state; /* event.lock */
};

struct vsk_vq {
	spinlock_t lock;
	struct virtqueue *vq; /* NULL while the device is reset or torn down */
	u64 commands;         /* request queues: commands posted */
};

struct vsk_stats {
	atomic_t abort, lun_reset, target_reset, bus_reset, host_reset, tmf_failed;
	atomic_t events, scans, removals, restores, needs_reset;
};

struct vsk_host {
	struct Scsi_Host *shost;
	struct virtio_device *vdev;
	u32 flags;           /* VSK_LEGACY */
	bool events_stopped; /* event.lock: no new event work, no reposting */
	bool host_resetting; /* the freeze in progress is a host reset, not a PM transition */
	bool removing;       /* reset_lock: remove has begun, no reset work is queued */
	bool rescan_needed;  /* events were dropped while stopped: scan once running again */
	struct mutex reset_mutex;
	spinlock_t reset_lock;
	struct work_struct reset_work; /* the device set DEVICE_NEEDS_RESET */
	struct work_struct rescan_work;
	struct vsk_stats stats;
	struct vsk_vq ctrl;
	struct vsk_vq event;
	struct vsk_event_node nodes[VSK_EVENT_NODES];
	u32 nreq;
	struct vsk_vq req[];
};

static struct vsk_host *vsk_of_vdev(struct virtio_device *vdev)
{
	return shost_priv((struct Scsi_Host *)vdev->priv);
}

static void vsk_scsi_done(struct scsi_cmnd *sc)
{
#ifdef VSK_HAVE_SCSI_DONE
	scsi_done(sc);
#else
	sc->scsi_done(sc);
#endif
}

/* ---- completions ---- */

/* The kernel's host byte (and, for NEXUS_FAILURE on kernels without DID_NEXUS_FAILURE, the
 * status) for the protocol unit's outcome. */
static void vsk_set_result(struct scsi_cmnd *sc, const struct vsk_cmd_result *r)
{
	int host = DID_ERROR;
	int status = r->status;

	switch (r->host) {
	case VSK_HOST_OK:
		host = DID_OK;
		break;
	case VSK_HOST_ABORT:
		host = DID_ABORT;
		break;
	case VSK_HOST_BAD_TARGET:
		host = DID_BAD_TARGET;
		break;
	case VSK_HOST_RESET:
		host = DID_RESET;
		break;
	case VSK_HOST_BUS_BUSY:
		host = DID_BUS_BUSY;
		break;
	case VSK_HOST_TRANSPORT_DISRUPTED:
		host = DID_TRANSPORT_DISRUPTED;
		break;
	case VSK_HOST_TARGET_FAILURE:
#ifdef VSK_HAVE_DID_TARGET_FAILURE
		host = DID_TARGET_FAILURE;
#else
		host = DID_BAD_TARGET; /* fails at once, no retry: what TARGET_FAILURE asks */
#endif
		break;
	case VSK_HOST_NEXUS_FAILURE:
#ifdef VSK_HAVE_DID_TARGET_FAILURE
		host = DID_NEXUS_FAILURE;
#else
		/* These kernels report a lost I_T nexus as a reservation conflict. */
		host = DID_OK;
		status = SAM_STAT_RESERVATION_CONFLICT;
#endif
		break;
	default:
		host = DID_ERROR;
		break;
	}
	sc->result = host << 16 | status;
}

static void vsk_complete_cmd(struct vsk_host *h, void *buf, u32 len)
{
	struct scsi_cmnd *sc = buf;
	struct vsk_cmd *c = scsi_cmd_priv(sc);
	struct vsk_cmd_result r;

	vsk_cmd_resp(c->resp, h->flags, len, scsi_bufflen(sc), sc->sense_buffer,
		     SCSI_SENSE_BUFFERSIZE, &r);
	vsk_set_result(sc, &r);
	scsi_set_resid(sc, r.residual);
	vsk_scsi_done(sc);
}

static void vsk_complete_tmf(struct vsk_host *h, void *buf, u32 len)
{
	struct vsk_tmf *t = buf;

	t->used_len = len;
	if (t->abandoned)
		kfree(t);
	else
		complete(&t->done);
}

static void vsk_complete_event(struct vsk_host *h, void *buf, u32 len)
{
	struct vsk_event_node *n = buf;

	n->used_len = len;
	if (h->events_stopped) {
		n->state = VSK_NODE_IDLE;
		h->rescan_needed = true;
		return;
	}
	n->state = VSK_NODE_WORK;
	queue_work(system_freezable_wq, &n->work);
}

/*
 * Reap a virtqueue: interrupts off, take everything, interrupts on, and again if more
 * arrived meanwhile (enable_cb says so), so no completion waits for an interrupt that
 * already happened.
 */
static void vsk_reap(struct vsk_host *h, struct vsk_vq *q,
		     void (*fn)(struct vsk_host *, void *, u32))
{
	unsigned long fl;
	unsigned int len;
	void *buf;

	spin_lock_irqsave(&q->lock, fl);
	if (q->vq) {
		do {
			virtqueue_disable_cb(q->vq);
			while ((buf = virtqueue_get_buf(q->vq, &len)))
				fn(h, buf, len);
			if (unlikely(virtqueue_is_broken(q->vq)))
				break;
		} while (!virtqueue_enable_cb(q->vq));
	}
	spin_unlock_irqrestore(&q->lock, fl);
}

static void vsk_req_done(struct virtqueue *vq)
{
	struct vsk_host *h = vsk_of_vdev(vq->vdev);
	u32 i = vq->index - VSK_FIRST_REQUESTQ;

	if (i < h->nreq)
		vsk_reap(h, &h->req[i], vsk_complete_cmd);
}

static void vsk_ctrl_done(struct virtqueue *vq)
{
	struct vsk_host *h = vsk_of_vdev(vq->vdev);

	vsk_reap(h, &h->ctrl, vsk_complete_tmf);
}

static void vsk_event_done(struct virtqueue *vq)
{
	struct vsk_host *h = vsk_of_vdev(vq->vdev);

	vsk_reap(h, &h->event, vsk_complete_event);
}

static void vsk_reap_requests(struct vsk_host *h)
{
	u32 i;

	for (i = 0; i < h->nreq; i++)
		vsk_reap(h, &h->req[i], vsk_complete_cmd);
}

/* ---- submission ---- */

/* 1 when the test hook asks for this command's header to be cut short, else 0. */
static unsigned int vsk_malform(struct scsi_cmnd *sc)
{
	unsigned int n = READ_ONCE(test_malformed_requests);

	/* Data out would follow the header and make up the missing byte. */
	if (likely(!n) || sc->sc_data_direction == DMA_TO_DEVICE)
		return 0;
	return cmpxchg(&test_malformed_requests, n, n - 1) == n;
}

static int vsk_queuecommand(struct Scsi_Host *shost, struct scsi_cmnd *sc)
{
	struct vsk_host *h = shost_priv(shost);
	struct vsk_cmd *c = scsi_cmd_priv(sc);
	struct scsi_device *sdev = sc->device;
	u32 hwq = blk_mq_unique_tag_to_hwq(blk_mq_unique_tag(scsi_cmd_to_rq(sc)));
	struct vsk_vq *q = &h->req[hwq < h->nreq ? hwq : 0];
	struct scatterlist hdr_out, hdr_in, *sgs[4];
	unsigned int out = 0, in = 0;
	struct virtqueue *vq;
	bool notify = false;
	unsigned long fl;
	int err;

	if (!vsk_cmd_req(c->req, h->flags, sdev->id, sdev->lun, (u64)(uintptr_t)sc,
			 VSK_TASK_SIMPLE, sc->cmnd, sc->cmd_len)) {
		/* A LUN or CDB that virtio-scsi cannot express. */
		sc->result = DID_BAD_TARGET << 16;
		vsk_scsi_done(sc);
		return 0;
	}
	vsk_cmd_resp_init(c->resp);

	sg_init_one(&hdr_out, c->req, VSK_CMD_REQ_BYTES - vsk_malform(sc));
	sgs[out++] = &hdr_out;
	if (sc->sc_data_direction == DMA_TO_DEVICE && scsi_sg_count(sc))
		sgs[out++] = scsi_sglist(sc);
	sg_init_one(&hdr_in, c->resp, VSK_CMD_RESP_BYTES);
	sgs[out + in++] = &hdr_in;
	if (sc->sc_data_direction == DMA_FROM_DEVICE && scsi_sg_count(sc))
		sgs[out + in++] = scsi_sglist(sc);

	/*
	 * The RCU read section pairs with vsk_teardown's synchronize_rcu(): a virtqueue this
	 * function saw is not deleted before it has notified the device.
	 */
	rcu_read_lock();
	spin_lock_irqsave(&q->lock, fl);
	vq = q->vq;
	if (!vq) {
		err = -EAGAIN;
	} else {
		err = virtqueue_add_sgs(vq, sgs, out, in, sc, GFP_ATOMIC);
		if (!err) {
			q->commands++;
			/* blk-mq says when a batch ends; commit_rqs covers a batch cut short. */
			if (sc->flags & SCMD_LAST)
				notify = virtqueue_kick_prepare(vq);
		}
	}
	spin_unlock_irqrestore(&q->lock, fl);
	if (notify)
		virtqueue_notify(vq);
	rcu_read_unlock();

	if (err == -EIO) {
		/* The ring is broken (the device broke the protocol): fail, don't retry. */
		sc->result = DID_NO_CONNECT << 16;
		vsk_scsi_done(sc);
		return 0;
	}
	if (err)
		return SCSI_MLQUEUE_HOST_BUSY;
	return 0;
}

static void vsk_commit_rqs(struct Scsi_Host *shost, u16 hwq)
{
	struct vsk_host *h = shost_priv(shost);
	struct vsk_vq *q = &h->req[hwq < h->nreq ? hwq : 0];
	struct virtqueue *vq;
	bool notify = false;
	unsigned long fl;

	rcu_read_lock();
	spin_lock_irqsave(&q->lock, fl);
	vq = q->vq;
	if (vq)
		notify = virtqueue_kick_prepare(vq);
	spin_unlock_irqrestore(&q->lock, fl);
	if (notify)
		virtqueue_notify(vq);
	rcu_read_unlock();
}

#ifdef VSK_MAP_QUEUES_VOID
static void vsk_map_queues(struct Scsi_Host *shost)
#else
static int vsk_map_queues(struct Scsi_Host *shost)
#endif
{
	struct vsk_host *h = shost_priv(shost);
	struct blk_mq_queue_map *qmap = &shost->tag_set.map[HCTX_TYPE_DEFAULT];

#ifdef VSK_HAVE_BLK_MQ_VIRTIO
#ifdef VSK_MAP_QUEUES_VOID
	blk_mq_virtio_map_queues(qmap, h->vdev, VSK_FIRST_REQUESTQ);
#else
	return blk_mq_virtio_map_queues(qmap, h->vdev, VSK_FIRST_REQUESTQ);
#endif
#else
	blk_mq_map_hw_queues(qmap, &h->vdev->dev, VSK_FIRST_REQUESTQ);
#endif
}

/* ---- task management ---- */

/*
 * Send a TMF and wait for the device's answer. SUCCESS only when the device says the
 * function completed: only then has it returned every command the TMF touched, so the
 * midlayer may reuse them.
 */
static int vsk_tmf(struct vsk_host *h, u32 function, u8 target, u64 lun, u64 tag)
{
	struct scatterlist out, in, *sgs[2] = { &out, &in };
	struct vsk_tmf *t;
	struct virtqueue *vq;
	unsigned long fl;
	bool notify = false;
	u8 code = 0xff;
	int err, ok;

	t = kzalloc(sizeof(*t), GFP_NOIO);
	if (!t)
		return FAILED;
	init_completion(&t->done);
	if (!vsk_tmf_req(t->req, h->flags, function, target, lun, tag)) {
		kfree(t);
		return FAILED;
	}
	vsk_ctrl_resp_init(t->resp, sizeof(t->resp));
	sg_init_one(&out, t->req, sizeof(t->req));
	sg_init_one(&in, t->resp, sizeof(t->resp));

	spin_lock_irqsave(&h->ctrl.lock, fl);
	vq = h->ctrl.vq;
	err = vq ? virtqueue_add_sgs(vq, sgs, 1, 1, t, GFP_ATOMIC) : -EAGAIN;
	if (!err)
		notify = virtqueue_kick_prepare(vq);
	/* Notified under the lock: TMFs are rare, and teardown deletes vq under it. */
	if (notify)
		virtqueue_notify(vq);
	spin_unlock_irqrestore(&h->ctrl.lock, fl);
	if (err) {
		kfree(t);
		atomic_inc(&h->stats.tmf_failed);
		return FAILED;
	}

	if (!wait_for_completion_timeout(&t->done, max(1u, READ_ONCE(tmf_timeout)) * HZ)) {
		spin_lock_irqsave(&h->ctrl.lock, fl);
		if (!completion_done(&t->done)) {
			/* The device still owns t; it is freed when it comes back. */
			t->abandoned = true;
			spin_unlock_irqrestore(&h->ctrl.lock, fl);
			shost_printk(KERN_WARNING, h->shost,
				     "TMF %u to %u:%llu got no answer\n", function, target, lun);
			atomic_inc(&h->stats.tmf_failed);
			return FAILED;
		}
		spin_unlock_irqrestore(&h->ctrl.lock, fl);
	}
	ok = vsk_tmf_resp(t->resp, h->flags, t->used_len, &code);
	kfree(t);
	if (!ok) {
		shost_printk(KERN_INFO, h->shost, "TMF %u to %u:%llu: response %s\n", function,
			     target, lun, vsk_response_name(code));
		atomic_inc(&h->stats.tmf_failed);
		return FAILED;
	}
	/*
	 * The device completed the affected commands before answering, but their interrupt
	 * may not have been handled yet: reap them now, before the midlayer reuses them.
	 */
	vsk_reap_requests(h);
	return SUCCESS;
}

static int vsk_eh_abort(struct scsi_cmnd *sc)
{
	struct vsk_host *h = shost_priv(sc->device->host);

	atomic_inc(&h->stats.abort);
	scmd_printk(KERN_INFO, sc, "abort\n");
	return vsk_tmf(h, VSK_TMF_ABORT_TASK, sc->device->id, sc->device->lun,
		       (u64)(uintptr_t)sc);
}

static int vsk_eh_device_reset(struct scsi_cmnd *sc)
{
	struct vsk_host *h = shost_priv(sc->device->host);

	atomic_inc(&h->stats.lun_reset);
	sdev_printk(KERN_INFO, sc->device, "logical unit reset\n");
	return vsk_tmf(h, VSK_TMF_LUN_RESET, sc->device->id, sc->device->lun, 0);
}

static int vsk_eh_target_reset(struct scsi_cmnd *sc)
{
	struct vsk_host *h = shost_priv(sc->device->host);

	atomic_inc(&h->stats.target_reset);
	sdev_printk(KERN_INFO, sc->device, "target reset (I_T nexus reset)\n");
	return vsk_tmf(h, VSK_TMF_I_T_NEXUS_RESET, sc->device->id, 0, 0);
}

/* Bus reset: an I_T NEXUS RESET to every target the host has a device on. */
static int vsk_eh_bus_reset(struct scsi_cmnd *sc)
{
	struct Scsi_Host *shost = sc->device->host;
	struct vsk_host *h = shost_priv(shost);
	DECLARE_BITMAP(targets, 256);
	struct scsi_device *sdev;
	int ret = SUCCESS;
	unsigned int id;

	atomic_inc(&h->stats.bus_reset);
	shost_printk(KERN_INFO, shost, "bus reset\n");
	bitmap_zero(targets, 256);
	shost_for_each_device(sdev, shost)
		if (sdev->id < 256)
			__set_bit(sdev->id, targets);
	for_each_set_bit(id, targets, 256)
		if (vsk_tmf(h, VSK_TMF_I_T_NEXUS_RESET, id, 0, 0) != SUCCESS)
			ret = FAILED;
	return ret;
}

/*
 * Reset the virtio device and bring it up again, the way a resume does; reset_mutex held.
 * Every buffer the device held is reclaimed by the reset; commands among them complete with
 * DID_RESET (the midlayer retries them).
 */
static int vsk_reinit_locked(struct vsk_host *h)
{
	int err = -EOPNOTSUPP;

#ifdef CONFIG_PM_SLEEP
	h->host_resetting = true;
	err = virtio_device_freeze(h->vdev);
	if (!err)
		err = virtio_device_restore(h->vdev);
	h->host_resetting = false;
#endif
	return err;
}

/* Host reset: the device reset and re-initialised. */
static int vsk_eh_host_reset(struct scsi_cmnd *sc)
{
	struct vsk_host *h = shost_priv(sc->device->host);
	int err;

	atomic_inc(&h->stats.host_reset);
	shost_printk(KERN_INFO, h->shost, "host reset: resetting the device\n");
	mutex_lock(&h->reset_mutex);
	err = vsk_reinit_locked(h);
	mutex_unlock(&h->reset_mutex);
	if (err) {
		shost_printk(KERN_ERR, h->shost, "host reset failed: %d\n", err);
		return FAILED;
	}
	return SUCCESS;
}

/*
 * DEVICE_NEEDS_RESET: the device found an error it cannot recover from by itself (QEMU: a
 * malformed request) and processes nothing more until reset. Reset it and bring it up again
 * as the host reset does, with new requests held back meanwhile; the commands it held
 * complete with DID_RESET and are retried. A host reset that got there first has cleared
 * the bit, and then nothing is left to do.
 */
static void vsk_reset_work(struct work_struct *w)
{
	struct vsk_host *h = container_of(w, struct vsk_host, reset_work);
	int err;

	mutex_lock(&h->reset_mutex);
	if (h->vdev->config->get_status(h->vdev) & VIRTIO_CONFIG_S_NEEDS_RESET) {
		atomic_inc(&h->stats.needs_reset);
		shost_printk(KERN_WARNING, h->shost,
			     "device needs reset: resetting and re-initialising it\n");
		scsi_block_requests(h->shost);
		err = vsk_reinit_locked(h);
		scsi_unblock_requests(h->shost);
		if (err)
			shost_printk(KERN_ERR, h->shost, "reset after DEVICE_NEEDS_RESET failed: %d\n",
				     err);
	}
	mutex_unlock(&h->reset_mutex);
}

/* A configuration change interrupt; DEVICE_NEEDS_RESET is the only change acted on. */
static void vsk_config_changed(struct virtio_device *vdev)
{
	struct vsk_host *h = vsk_of_vdev(vdev);
	unsigned long fl;

	if (!(vdev->config->get_status(vdev) & VIRTIO_CONFIG_S_NEEDS_RESET))
		return;
	spin_lock_irqsave(&h->reset_lock, fl);
	if (!h->removing)
		queue_work(system_freezable_wq, &h->reset_work);
	spin_unlock_irqrestore(&h->reset_lock, fl);
}

/* No reset work runs, nor is queued, once this returns: remove calls it first. */
static void vsk_stop_reset_work(struct vsk_host *h)
{
	unsigned long fl;

	spin_lock_irqsave(&h->reset_lock, fl);
	h->removing = true;
	spin_unlock_irqrestore(&h->reset_lock, fl);
	cancel_work_sync(&h->reset_work);
}

/* ---- events ---- */

/* Post an event buffer, unless events are stopped. Called with event.lock held. */
static bool vsk_post_event_locked(struct vsk_host *h, struct vsk_event_node *n)
{
	struct scatterlist sg;

	if (h->events_stopped || !h->event.vq) {
		n->state = VSK_NODE_IDLE;
		return false;
	}
	memset(n->buf, 0, sizeof(n->buf));
	sg_init_one(&sg, n->buf, sizeof(n->buf));
	if (virtqueue_add_inbuf(h->event.vq, &sg, 1, n, GFP_ATOMIC)) {
		n->state = VSK_NODE_IDLE;
		return false;
	}
	n->state = VSK_NODE_POSTED;
	return true;
}

static int vsk_event_nodes(void)
{
	return clamp_t(unsigned int, event_buffers, 1, VSK_EVENT_NODES);
}

/* Post every idle event buffer and let events flow. Only after DRIVER_OK. */
static void vsk_start_events(struct vsk_host *h)
{
	unsigned long fl;
	bool posted = false, rescan;
	int i;

	if (!virtio_has_feature(h->vdev, VSK_F_HOTPLUG) &&
	    !virtio_has_feature(h->vdev, VSK_F_CHANGE))
		return;
	spin_lock_irqsave(&h->event.lock, fl);
	h->events_stopped = false;
	for (i = 0; i < vsk_event_nodes(); i++)
		if (h->nodes[i].state == VSK_NODE_IDLE)
			posted |= vsk_post_event_locked(h, &h->nodes[i]);
	if (posted && h->event.vq)
		virtqueue_kick(h->event.vq);
	rescan = h->rescan_needed;
	h->rescan_needed = false;
	spin_unlock_irqrestore(&h->event.lock, fl);
	if (rescan)
		queue_work(system_freezable_wq, &h->rescan_work);
}

/*
 * Stop turning events into work. With wait, also cancel queued work and wait for running
 * work, so nothing touches the host afterwards (remove, PM freeze). Without (host reset,
 * which may run while an event work waits for a command), running work finishes later and
 * reposts its buffer only if events flow again by then.
 */
static void vsk_stop_events(struct vsk_host *h, bool wait)
{
	unsigned long fl;
	int i;

	spin_lock_irqsave(&h->event.lock, fl);
	h->events_stopped = true;
	spin_unlock_irqrestore(&h->event.lock, fl);
	if (!wait)
		return;
	for (i = 0; i < VSK_EVENT_NODES; i++) {
		if (cancel_work_sync(&h->nodes[i].work))
			h->rescan_needed = true; /* an event was dropped */
	}
	if (cancel_work_sync(&h->rescan_work))
		h->rescan_needed = true;
	spin_lock_irqsave(&h->event.lock, fl);
	for (i = 0; i < VSK_EVENT_NODES; i++)
		if (h->nodes[i].state == VSK_NODE_WORK)
			h->nodes[i].state = VSK_NODE_IDLE;
	spin_unlock_irqrestore(&h->event.lock, fl);
}

/* Whether a LUN the host knows is gone: the device says so to an INQUIRY. */
static bool vsk_lun_vanished(struct scsi_device *sdev, u8 *inq)
{
	static const u8 cdb[6] = { INQUIRY, 0, 0, 0, VSK_INQUIRY_BYTES, 0 };
	int resid = 0;
	int result;

	memset(inq, 0, VSK_INQUIRY_BYTES);
#ifdef VSK_HAVE_SCSI_EXECUTE_CMD
	{
		const struct scsi_exec_args args = { .resid = &resid };

		result = scsi_execute_cmd(sdev, cdb, REQ_OP_DRV_IN, inq, VSK_INQUIRY_BYTES,
					  VSK_INQUIRY_TIMEOUT, 3, &args);
	}
#else
	result = scsi_execute_req(sdev, cdb, DMA_FROM_DEVICE, inq, VSK_INQUIRY_BYTES, NULL,
				  VSK_INQUIRY_TIMEOUT, 3, &resid);
#endif
	if (result < 0)
		return false; /* not asked (device going away, no memory): keep it */
	if (host_byte(result) == DID_BAD_TARGET)
		return true; /* the whole target is gone */
	if (result != 0 || resid < 0 || resid > VSK_INQUIRY_BYTES)
		return false;
	return vsk_inquiry_lun_absent(inq, VSK_INQUIRY_BYTES - resid);
}

/* Remove the host's LUNs (of one target, or all when target < 0) that vanished. */
static void vsk_drop_vanished(struct vsk_host *h, int target)
{
	struct scsi_device *sdev;
	u8 *inq = kmalloc(VSK_INQUIRY_BYTES, GFP_KERNEL);

	if (!inq)
		return;
	shost_for_each_device(sdev, h->shost) {
		if (target >= 0 && sdev->id != (unsigned int)target)
			continue;
		if (vsk_lun_vanished(sdev, inq)) {
			sdev_printk(KERN_INFO, sdev, "no longer present, removing\n");
			atomic_inc(&h->stats.removals);
			scsi_remove_device(sdev);
		}
	}
	kfree(inq);
}

/*
 * The device the host has for a LUN, under the name an event gives or the LUN's other name
 * (a scan names a LUN as REPORT LUNS lists it), so an event never makes a second device.
 */
static struct scsi_device *vsk_find_lun(struct vsk_host *h, u8 target, u32 name)
{
	struct scsi_device *sdev = scsi_device_lookup(h->shost, 0, target, name);
	u32 alias = vsk_lun_alias(name);

	if (!sdev && alias != name && alias != VSK_NO_LUN)
		sdev = scsi_device_lookup(h->shost, 0, target, alias);
	return sdev;
}

static void vsk_add_lun(struct vsk_host *h, u8 target, u32 name)
{
	struct scsi_device *sdev = vsk_find_lun(h, target, name);
	int err;

	if (sdev) {
		scsi_device_put(sdev);
		return;
	}
	err = scsi_add_device(h->shost, 0, target, name);
	if (err)
		shost_printk(KERN_WARNING, h->shost, "adding %u:%u failed: %d\n", target, name, err);
}

static void vsk_remove_lun(struct vsk_host *h, u8 target, u32 name)
{
	struct scsi_device *sdev = vsk_find_lun(h, target, name);

	if (!sdev)
		return;
	atomic_inc(&h->stats.removals);
	scsi_remove_device(sdev);
	scsi_device_put(sdev);
}

static void vsk_rescan_lun(struct vsk_host *h, u8 target, u32 name)
{
	struct scsi_device *sdev = vsk_find_lun(h, target, name);

	if (!sdev)
		return;
#ifdef VSK_RESCAN_TAKES_SDEV
	scsi_rescan_device(sdev);
#else
	scsi_rescan_device(&sdev->sdev_gendev);
#endif
	scsi_device_put(sdev);
}

static void vsk_scan_host(struct vsk_host *h)
{
	atomic_inc(&h->stats.scans);
	vsk_drop_vanished(h, -1);
	scsi_scan_host(h->shost);
}

static void vsk_handle_event(struct vsk_host *h, const struct vsk_event *ev)
{
	switch (ev->action) {
	case VSK_EV_ADD_LUN:
		vsk_add_lun(h, ev->target, ev->lun);
		break;
	case VSK_EV_REMOVE_LUN:
		vsk_remove_lun(h, ev->target, ev->lun);
		break;
	case VSK_EV_SCAN_TARGET:
		atomic_inc(&h->stats.scans);
		vsk_drop_vanished(h, ev->target);
		scsi_scan_target(&h->shost->shost_gendev, 0, ev->target, SCAN_WILD_CARD,
				 SCSI_SCAN_RESCAN);
		break;
	case VSK_EV_RESCAN_LUN:
		vsk_rescan_lun(h, ev->target, ev->lun);
		break;
	case VSK_EV_SCAN_HOST:
		vsk_scan_host(h);
		break;
	default:
		break;
	}
}

static void vsk_event_work(struct work_struct *w)
{
	struct vsk_event_node *n = container_of(w, struct vsk_event_node, work);
	struct vsk_host *h = n->h;
	struct vsk_event ev;
	unsigned long fl;

	if (READ_ONCE(event_delay_ms))
		msleep(READ_ONCE(event_delay_ms));
	vsk_event_decode(n->buf, h->flags, n->used_len, &ev);
	atomic_inc(&h->stats.events);
	vsk_handle_event(h, &ev);

	spin_lock_irqsave(&h->event.lock, fl);
	if (vsk_post_event_locked(h, n))
		virtqueue_kick(h->event.vq);
	spin_unlock_irqrestore(&h->event.lock, fl);
}

static void vsk_rescan_work(struct work_struct *w)
{
	vsk_scan_host(container_of(w, struct vsk_host, rescan_work));
}

/* ---- virtqueues, bring-up and teardown ---- */

static void vsk_cfg_get(void *ctx, u32 offset, void *buf, u32 len)
{
	struct virtio_device *vdev = ctx;

	vdev->config->get(vdev, offset, buf, len);
}

static void vsk_cfg_set(void *ctx, u32 offset, const void *buf, u32 len)
{
	struct virtio_device *vdev = ctx;

	vdev->config->set(vdev, offset, buf, len);
}

static int vsk_find_vqs(struct vsk_host *h)
{
	struct irq_affinity desc = { .pre_vectors = VSK_FIRST_REQUESTQ };
	u32 n = VSK_FIRST_REQUESTQ + h->nreq, i;
	struct virtqueue **vqs;
	unsigned long fl;
	int err = -ENOMEM;
#ifdef VSK_HAVE_VQ_INFO
	struct virtqueue_info *info;

	vqs = kcalloc(n, sizeof(*vqs), GFP_KERNEL);
	info = kcalloc(n, sizeof(*info), GFP_KERNEL);
	if (!vqs || !info)
		goto out;
	info[VSK_CONTROLQ].name = "control";
	info[VSK_CONTROLQ].callback = vsk_ctrl_done;
	info[VSK_EVENTQ].name = "event";
	info[VSK_EVENTQ].callback = vsk_event_done;
	for (i = VSK_FIRST_REQUESTQ; i < n; i++) {
		info[i].name = "request";
		info[i].callback = vsk_req_done;
	}
	err = virtio_find_vqs(h->vdev, n, vqs, info, &desc);
#else
	vq_callback_t **callbacks;
	const char **names;

	vqs = kcalloc(n, sizeof(*vqs), GFP_KERNEL);
	callbacks = kcalloc(n, sizeof(*callbacks), GFP_KERNEL);
	names = kcalloc(n, sizeof(*names), GFP_KERNEL);
	if (!vqs || !callbacks || !names)
		goto out;
	callbacks[VSK_CONTROLQ] = vsk_ctrl_done;
	names[VSK_CONTROLQ] = "control";
	callbacks[VSK_EVENTQ] = vsk_event_done;
	names[VSK_EVENTQ] = "event";
	for (i = VSK_FIRST_REQUESTQ; i < n; i++) {
		callbacks[i] = vsk_req_done;
		names[i] = "request";
	}
	err = virtio_find_vqs(h->vdev, n, vqs, callbacks, names, &desc);
#endif
	if (err)
		goto out;

	spin_lock_irqsave(&h->ctrl.lock, fl);
	h->ctrl.vq = vqs[VSK_CONTROLQ];
	spin_unlock_irqrestore(&h->ctrl.lock, fl);
	spin_lock_irqsave(&h->event.lock, fl);
	h->event.vq = vqs[VSK_EVENTQ];
	spin_unlock_irqrestore(&h->event.lock, fl);
	for (i = 0; i < h->nreq; i++) {
		spin_lock_irqsave(&h->req[i].lock, fl);
		h->req[i].vq = vqs[VSK_FIRST_REQUESTQ + i];
		spin_unlock_irqrestore(&h->req[i].lock, fl);
	}
	/* The sizes every header is framed by (driver-writable config). */
	vsk_config_write_sizes(h->flags, vsk_cfg_set, h->vdev);
out:
#ifdef VSK_HAVE_VQ_INFO
	kfree(info);
#else
	kfree(callbacks);
	kfree(names);
#endif
	kfree(vqs);
	return err;
}

/* Detach every buffer the device still held; called after the device was reset. */
static void vsk_reclaim(struct vsk_host *h)
{
	struct vsk_event_node *n;
	struct scsi_cmnd *sc;
	struct vsk_tmf *t;
	unsigned long fl;
	u32 i;

	/* A re-initialisation that failed left no virtqueues, and nothing to reclaim. */
	for (i = 0; i < h->nreq; i++) {
		spin_lock_irqsave(&h->req[i].lock, fl);
		while (h->req[i].vq && (sc = virtqueue_detach_unused_buf(h->req[i].vq))) {
			sc->result = DID_RESET << 16;
			vsk_scsi_done(sc);
		}
		spin_unlock_irqrestore(&h->req[i].lock, fl);
	}
	spin_lock_irqsave(&h->ctrl.lock, fl);
	while (h->ctrl.vq && (t = virtqueue_detach_unused_buf(h->ctrl.vq)))
		vsk_complete_tmf(h, t, 0); /* its response still says "not answered" */
	spin_unlock_irqrestore(&h->ctrl.lock, fl);
	spin_lock_irqsave(&h->event.lock, fl);
	while (h->event.vq && (n = virtqueue_detach_unused_buf(h->event.vq)))
		n->state = VSK_NODE_IDLE;
	spin_unlock_irqrestore(&h->event.lock, fl);
}

/*
 * Reset the device and delete the virtqueues. Completions that were already in the used
 * rings are delivered first; everything else the device held is reclaimed.
 */
static void vsk_teardown(struct vsk_host *h)
{
	unsigned long fl;
	u32 i;

#ifdef VSK_HAVE_VIRTIO_RESET_DEVICE
	virtio_reset_device(h->vdev);
#else
	h->vdev->config->reset(h->vdev);
#endif
	vsk_reap_requests(h);
	vsk_reap(h, &h->ctrl, vsk_complete_tmf);
	vsk_reclaim(h);

	/* Unpublish the virtqueues, then wait out submitters that saw them (RCU). */
	for (i = 0; i < h->nreq; i++) {
		spin_lock_irqsave(&h->req[i].lock, fl);
		h->req[i].vq = NULL;
		spin_unlock_irqrestore(&h->req[i].lock, fl);
	}
	spin_lock_irqsave(&h->ctrl.lock, fl);
	h->ctrl.vq = NULL;
	spin_unlock_irqrestore(&h->ctrl.lock, fl);
	spin_lock_irqsave(&h->event.lock, fl);
	h->event.vq = NULL;
	spin_unlock_irqrestore(&h->event.lock, fl);
	synchronize_rcu();
	h->vdev->config->del_vqs(h->vdev);
}

/* ---- sysfs: counters the tests (and curious admins) read ---- */

static ssize_t vscsi_stats_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct Scsi_Host *shost = class_to_shost(dev);
	struct vsk_host *h = shost_priv(shost);
	struct vsk_stats *s = &h->stats;
	int n;
	u32 i;

	n = scnprintf(buf, PAGE_SIZE,
		      "abort %d\nlun_reset %d\ntarget_reset %d\nbus_reset %d\nhost_reset %d\n"
		      "tmf_failed %d\nevents %d\nscans %d\nremovals %d\nrestores %d\n"
		      "needs_reset %d\nlegacy %d\nrequest_queues %u\n",
		      atomic_read(&s->abort), atomic_read(&s->lun_reset),
		      atomic_read(&s->target_reset), atomic_read(&s->bus_reset),
		      atomic_read(&s->host_reset), atomic_read(&s->tmf_failed),
		      atomic_read(&s->events), atomic_read(&s->scans), atomic_read(&s->removals),
		      atomic_read(&s->restores), atomic_read(&s->needs_reset),
		      (h->flags & VSK_LEGACY) ? 1 : 0, h->nreq);
	for (i = 0; i < h->nreq; i++)
		n += scnprintf(buf + n, PAGE_SIZE - n, "queue%u %llu\n", i,
			       (unsigned long long)READ_ONCE(h->req[i].commands));
	return n;
}
static DEVICE_ATTR_RO(vscsi_stats);

#ifdef VSK_HAVE_SHOST_GROUPS
static struct attribute *vsk_host_attrs[] = {
	&dev_attr_vscsi_stats.attr,
	NULL,
};
ATTRIBUTE_GROUPS(vsk_host);
#else
static struct device_attribute *vsk_host_attrs[] = {
	&dev_attr_vscsi_stats,
	NULL,
};
#endif

/* ---- the driver ---- */

static struct scsi_host_template vsk_template = {
	.module = THIS_MODULE,
	.name = "Virtio SCSI HBA (vscsi)",
	.proc_name = "virtio_scsi",
	.this_id = -1,
	.cmd_size = sizeof(struct vsk_cmd),
	.queuecommand = vsk_queuecommand,
	.commit_rqs = vsk_commit_rqs,
	.map_queues = vsk_map_queues,
	.change_queue_depth = scsi_change_queue_depth,
	.eh_abort_handler = vsk_eh_abort,
	.eh_device_reset_handler = vsk_eh_device_reset,
	.eh_target_reset_handler = vsk_eh_target_reset,
	.eh_bus_reset_handler = vsk_eh_bus_reset,
	.eh_host_reset_handler = vsk_eh_host_reset,
	.can_queue = 1024,
	.dma_boundary = UINT_MAX,
	.track_queue_depth = 1,
#ifdef VSK_HAVE_SHOST_GROUPS
	.shost_groups = vsk_host_groups,
#else
	.shost_attrs = vsk_host_attrs,
#endif
};

static int vsk_probe(struct virtio_device *vdev)
{
	struct vsk_host_limits lim;
	struct vsk_config cfg;
	struct Scsi_Host *shost;
	struct vsk_host *h;
	u32 flags = virtio_has_feature(vdev, VIRTIO_F_VERSION_1) ? 0 : VSK_LEGACY;
	int err, i;

	if (!vdev->config->get || !vdev->config->set) {
		dev_err(&vdev->dev, "transport has no config space access\n");
		return -EINVAL;
	}
	vsk_config_read(&cfg, flags, vsk_cfg_get, vdev);
	/* The queue count first: it sizes the host. */
	vsk_compute_limits(&cfg, nr_cpu_ids, 1, 1, 0, &lim);

	shost = scsi_host_alloc(&vsk_template, struct_size(h, req, lim.request_queues));
	if (!shost)
		return -ENOMEM;
	h = shost_priv(shost);
	h->shost = shost;
	h->vdev = vdev;
	h->flags = flags;
	h->nreq = lim.request_queues;
	h->events_stopped = true;
	mutex_init(&h->reset_mutex);
	spin_lock_init(&h->reset_lock);
	INIT_WORK(&h->reset_work, vsk_reset_work);
	INIT_WORK(&h->rescan_work, vsk_rescan_work);
	spin_lock_init(&h->ctrl.lock);
	spin_lock_init(&h->event.lock);
	for (i = 0; i < h->nreq; i++)
		spin_lock_init(&h->req[i].lock);
	for (i = 0; i < VSK_EVENT_NODES; i++) {
		h->nodes[i].h = h;
		h->nodes[i].state = VSK_NODE_IDLE;
		INIT_WORK(&h->nodes[i].work, vsk_event_work);
	}
	vdev->priv = shost;

	err = vsk_find_vqs(h);
	if (err) {
		dev_err(&vdev->dev, "virtqueues: %d\n", err);
		goto fail_host;
	}
	vsk_compute_limits(&cfg, h->nreq, virtqueue_get_vring_size(h->req[0].vq),
			   virtio_has_feature(vdev, VIRTIO_RING_F_INDIRECT_DESC), SG_MAX_SEGMENTS,
			   &lim);
	shost->can_queue = lim.can_queue;
	shost->sg_tablesize = lim.sg_tablesize;
	shost->max_sectors = lim.max_sectors;
	shost->cmd_per_lun = lim.cmd_per_lun;
	shost->max_id = lim.max_id;
	shost->max_lun = lim.max_lun;
	shost->max_channel = lim.max_channel;
	shost->max_cmd_len = lim.max_cmd_len;
	shost->nr_hw_queues = h->nreq;

	err = scsi_add_host(shost, &vdev->dev);
	if (err)
		goto fail_vqs;
	virtio_device_ready(vdev);
	vsk_start_events(h);
	dev_info(&vdev->dev,
		 "vscsi: %s device, %u request queue(s) of %u, %u segments, %u targets, %u LUNs\n",
		 flags & VSK_LEGACY ? "legacy" : "virtio 1.x", h->nreq, lim.can_queue,
		 lim.sg_tablesize, lim.max_id, lim.max_lun - VSK_FLAT_LUN_NAME);
	scsi_scan_host(shost);
	return 0;

fail_vqs:
	vsk_teardown(h);
fail_host:
	scsi_host_put(shost);
	return err;
}

static void vsk_remove(struct virtio_device *vdev)
{
	struct Scsi_Host *shost = vdev->priv;
	struct vsk_host *h = shost_priv(shost);

	/* No event or reset work may run once the host is gone, nor after this module is. */
	vsk_stop_reset_work(h);
	vsk_stop_events(h, true);
	scsi_remove_host(shost);
	vsk_teardown(h);
	scsi_host_put(shost);
}

#ifdef CONFIG_PM_SLEEP
static int vsk_freeze(struct virtio_device *vdev)
{
	struct vsk_host *h = vsk_of_vdev(vdev);

	vsk_stop_events(h, !h->host_resetting);
	vsk_teardown(h);
	return 0;
}

static int vsk_restore(struct virtio_device *vdev)
{
	struct vsk_host *h = vsk_of_vdev(vdev);
	int err;

	err = vsk_find_vqs(h);
	if (err)
		return err;
	virtio_device_ready(vdev);
	vsk_start_events(h);
	atomic_inc(&h->stats.restores);
	dev_info(&vdev->dev, "vscsi: device restored, %u request queue(s)\n", h->nreq);
	return 0;
}
#endif

static const struct virtio_device_id vsk_ids[] = {
	{ VIRTIO_ID_SCSI, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static const unsigned int vsk_features[] = {
	VSK_F_HOTPLUG,
	VSK_F_CHANGE,
};

static struct virtio_driver vsk_driver = {
	.feature_table = vsk_features,
	.feature_table_size = ARRAY_SIZE(vsk_features),
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.id_table = vsk_ids,
	.probe = vsk_probe,
	.remove = vsk_remove,
	.config_changed = vsk_config_changed,
#ifdef CONFIG_PM_SLEEP
	.freeze = vsk_freeze,
	.restore = vsk_restore,
#endif
};

module_virtio_driver(vsk_driver);

MODULE_DEVICE_TABLE(virtio, vsk_ids);
MODULE_DESCRIPTION("virtio-scsi host driver on the vscsi core");
MODULE_LICENSE("Dual MIT/GPL");
