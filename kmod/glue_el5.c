/*
 * virtio_scsi for RHEL5/CentOS5 2.6.18 kernels (2.6.18-128.el5 and later): the kernel side.
 *
 * This file owns every kernel object: the virtio device and its three virtqueues (control,
 * event, one request queue) driven through the kernel's own vq_ops, the Scsi_Host, locks and
 * work items. What goes on the wire (request headers, LUN encoding, response, sense and event
 * decoding, TMF requests, config checks) is the protocol unit's, behind vscsi_kmod.h.
 *
 * The 2.6.18 family differs from current kernels in ways this file is written for:
 * queuecommand() takes a done callback and runs under host_lock; the data buffer is
 * request_buffer/use_sg; INIT_WORK takes three arguments; virtio_config has find_vq/del_vq
 * before 2.6.18-238.el5 and find_vqs/del_vqs from then on (VSCSI_EL5_FIND_VQS, detected by
 * Kbuild from the tree); scsi_device_get() fails while the module is being unloaded; the
 * virtio_pci transport speaks legacy virtio only and allocates each ring with one kzalloc().
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/list.h>
#include <linux/bitmap.h>
#include <linux/workqueue.h>
#include <linux/completion.h>
#include <linux/interrupt.h>
#include <linux/scatterlist.h>
#include <linux/err.h>
#include <linux/delay.h>
#include <linux/pci.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>
#include <scsi/scsi.h>
#include <scsi/scsi_cmnd.h>
#include <scsi/scsi_device.h>
#include <scsi/scsi_host.h>
#include <scsi/scsi_tcq.h>
#include <scsi/scsi_eh.h>

#include "vscsi_kmod.h"

#if VSK_INTERFACE_VERSION != 2
#error "glue_el5.c is written for version 2 of vscsi_kmod.h"
#endif

#ifndef VSCSI_EL5_FIND_VQS
#error "VSCSI_EL5_FIND_VQS must be set by Kbuild (0: find_vq/del_vq, 1: find_vqs/del_vqs)"
#endif

#define VS_VIRTIO_ID_SCSI 8
#define VS_NUM_VQS 3
#define VS_EVENT_BUFS 8
/* Everything on a legacy device is in guest byte order and used lengths are not trusted. */
#define VS_FLAGS VSK_LEGACY
/*
 * virtio_pci allocates a ring with one kzalloc(); the largest general slab cache of an
 * x86_64 2.6.18 kernel is 128 KiB. A host that offers a larger queue is asked for a smaller
 * one before the ring is set up.
 */
#define VS_RING_ALLOC_MAX (128 * 1024)

static unsigned int max_queue_size;
module_param(max_queue_size, uint, 0444);
MODULE_PARM_DESC(max_queue_size, "largest virtqueue size to accept (0: what the kernel can allocate)");

/*
 * After tmf_timeout seconds an abort or reset fails and the midlayer escalates; the tests
 * shorten it, and delay event handling to catch removal with event work pending.
 */
static unsigned int tmf_timeout = 30;
module_param(tmf_timeout, uint, 0644);
MODULE_PARM_DESC(tmf_timeout, "seconds to wait for a task management function (default 30)");

static unsigned int event_delay_ms;
module_param(event_delay_ms, uint, 0644);
MODULE_PARM_DESC(event_delay_ms, "delay before handling each event, for testing (default 0)");

/* One SCSI command in flight. The scatterlist follows the structure. */
struct vs_cmd {
	struct scsi_cmnd *sc;
	struct list_head node; /* vs_host.inflight, under req_lock */
	uint8_t req[VSK_CMD_REQ_BYTES];
	uint8_t resp[VSK_CMD_RESP_BYTES];
	struct scatterlist sg[0];
};

/*
 * A task management request; freed by its waiter, or once abandoned (its waiter gave up) by
 * the callback or a device reset.
 */
struct vs_tmf {
	struct completion done;
	struct list_head node; /* vs_host.tmfs while the device has it, under ctrl_lock */
	int abandoned; /* under ctrl_lock */
	int answered;  /* under ctrl_lock */
	unsigned int used_len;
	uint8_t req[VSK_TMF_REQ_BYTES];
	uint8_t resp[VSK_TMF_RESP_BYTES];
};

enum vs_event_state { VS_EV_IDLE, VS_EV_IN_RING, VS_EV_IN_WORK };

struct vs_event_buf {
	struct vs_host *vs;
	struct work_struct work;
	unsigned int used_len;
	int state; /* enum vs_event_state, under event_lock */
	uint8_t buf[VSK_EVENT_BYTES];
};

struct vs_host {
	struct virtio_device *vdev;
	struct Scsi_Host *shost;
	struct virtqueue *vq[VS_NUM_VQS];
	unsigned int req_vq_size;
	spinlock_t req_lock, ctrl_lock, event_lock;
	struct list_head inflight; /* vs_cmd, under req_lock */
	struct list_head tmfs;     /* vs_tmf, under ctrl_lock */
	int stopping;  /* under event_lock: remove() has begun, no event work is started */
	int resetting; /* under event_lock: the virtqueues are being replaced */
	struct vs_event_buf events[VS_EVENT_BUFS];
};

static inline struct vs_host *vs_of(struct Scsi_Host *shost)
{
	return (struct vs_host *)shost->hostdata;
}

/* ---- virtqueues ---------------------------------------------------------------------- */

static void vs_req_done(struct virtqueue *vq);
static void vs_ctrl_done(struct virtqueue *vq);
static void vs_event_done(struct virtqueue *vq);

/*
 * The transport's private device structure starts like this in every 2.6.18 el5 tree that
 * has virtio; it is used only to reach the legacy queue-size register, and only after the
 * device has been checked to sit on the virtio_pci root.
 */
struct vs_virtio_pci_head {
	struct virtio_device vdev;
	struct pci_dev *pci_dev;
	void __iomem *ioaddr;
};

static unsigned int vs_ring_limit(void)
{
	unsigned int num = 32768;

	while (num > 1 && PAGE_ALIGN(vring_size(num, PAGE_SIZE)) > VS_RING_ALLOC_MAX)
		num >>= 1;
	if (max_queue_size && max_queue_size < num)
		num = max_queue_size;
	return num;
}

/*
 * Ask for queues the kernel can allocate. The legacy interface has no way to negotiate a
 * queue size; hosts that offer very large queues (e.g. Google Compute Engine) accept a
 * smaller value written to the size register before the ring address is set. Returns the
 * request queue's size as the device then reports it.
 */
static unsigned int vs_negotiate_queue_sizes(struct vs_host *vs)
{
	struct virtio_device *vdev = vs->vdev;
	struct vs_virtio_pci_head *vp;
	unsigned int i, limit = vs_ring_limit(), req_size = 0;

	if (!vdev->dev.parent || strcmp(vdev->dev.parent->bus_id, "virtio-pci") != 0)
		return 0;
	vp = container_of(vdev, struct vs_virtio_pci_head, vdev);
	for (i = 0; i < VS_NUM_VQS; i++) {
		unsigned int num, want;

		iowrite16(i, vp->ioaddr + VIRTIO_PCI_QUEUE_SEL);
		num = ioread16(vp->ioaddr + VIRTIO_PCI_QUEUE_NUM);
		want = vsk_queue_size(num, limit);
		if (num > limit && want) {
			iowrite16(want, vp->ioaddr + VIRTIO_PCI_QUEUE_NUM);
			num = ioread16(vp->ioaddr + VIRTIO_PCI_QUEUE_NUM);
			if (num != want)
				printk(KERN_WARNING "virtio_scsi: queue %u: host offers %u entries, "
				       "more than this kernel can allocate, and keeps it\n", i, num);
			else
				printk(KERN_INFO "virtio_scsi: queue %u: size %u (host offered more)\n",
				       i, num);
		}
		if (i == VSK_FIRST_REQUESTQ)
			req_size = num;
	}
	return req_size;
}

static int vs_find_vqs(struct vs_host *vs)
{
	struct virtio_device *vdev = vs->vdev;
#if VSCSI_EL5_FIND_VQS
	vq_callback_t *callbacks[VS_NUM_VQS] = { vs_ctrl_done, vs_event_done, vs_req_done };
	const char *names[VS_NUM_VQS] = { "control", "event", "request" };

	return vdev->config->find_vqs(vdev, VS_NUM_VQS, vs->vq, callbacks, names);
#else
	void (*callbacks[VS_NUM_VQS])(struct virtqueue *) = { vs_ctrl_done, vs_event_done,
							       vs_req_done };
	int i;

	for (i = 0; i < VS_NUM_VQS; i++) {
		struct virtqueue *vq = vdev->config->find_vq(vdev, i, callbacks[i]);

		if (IS_ERR(vq)) {
			while (--i >= 0)
				vdev->config->del_vq(vs->vq[i]);
			return PTR_ERR(vq);
		}
		vs->vq[i] = vq;
	}
	return 0;
#endif
}

static void vs_del_vqs(struct vs_host *vs)
{
#if VSCSI_EL5_FIND_VQS
	vs->vdev->config->del_vqs(vs->vdev);
#else
	int i;

	for (i = VS_NUM_VQS - 1; i >= 0; i--)
		vs->vdev->config->del_vq(vs->vq[i]);
#endif
}

/* ---- commands ------------------------------------------------------------------------ */

static int vs_host_byte(uint8_t host)
{
	switch (host) {
	case VSK_HOST_OK:
		return DID_OK;
	case VSK_HOST_ABORT:
		return DID_ABORT;
	case VSK_HOST_BAD_TARGET:
		return DID_BAD_TARGET;
	case VSK_HOST_RESET:
		return DID_RESET;
	case VSK_HOST_BUS_BUSY:
		return DID_BUS_BUSY;
	case VSK_HOST_TRANSPORT_DISRUPTED:
#ifdef DID_TRANSPORT_DISRUPTED
		return DID_TRANSPORT_DISRUPTED;
#else
		return DID_BUS_BUSY;
#endif
	case VSK_HOST_TARGET_FAILURE:
		/* 2.6.18 has no DID_TARGET_FAILURE: fail without retrying, as it means. */
		return DID_BAD_TARGET;
	case VSK_HOST_NEXUS_FAILURE:
		/* No DID_NEXUS_FAILURE either: a plain retry is the nearest. */
		return DID_SOFT_ERROR;
	default:
		return DID_ERROR;
	}
}

/* Complete a command the device never answered (it was reset): the midlayer retries it. */
static void vs_fail_cmd(struct vs_cmd *cmd)
{
	struct scsi_cmnd *sc = cmd->sc;

	sc->result = DID_RESET << 16;
	kfree(cmd);
	sc->scsi_done(sc);
}

static void vs_complete_cmd(struct vs_cmd *cmd, unsigned int used_len)
{
	struct scsi_cmnd *sc = cmd->sc;
	struct vsk_cmd_result r;

	memset(sc->sense_buffer, 0, SCSI_SENSE_BUFFERSIZE);
	vsk_cmd_resp(cmd->resp, VS_FLAGS, used_len, sc->request_bufflen, sc->sense_buffer,
		     SCSI_SENSE_BUFFERSIZE, &r);
	sc->resid = r.residual;
	sc->result = (vs_host_byte(r.host) << 16) | r.status;
	if (r.host != VSK_HOST_OK && r.host != VSK_HOST_BAD_TARGET)
		printk(KERN_DEBUG "virtio_scsi: cmd %02x on %u:%u: response %s\n", sc->cmnd[0],
		       sc->device->id, sc->device->lun, vsk_response_name(r.response));
	kfree(cmd);
	sc->scsi_done(sc);
}

/* Reap the request queue; called with req_lock held. */
static void vs_reap_requests(struct vs_host *vs)
{
	struct virtqueue *vq = vs->vq[VSK_FIRST_REQUESTQ];
	struct vs_cmd *cmd;
	unsigned int len;

	do {
		vq->vq_ops->disable_cb(vq);
		while ((cmd = vq->vq_ops->get_buf(vq, &len)) != NULL) {
			list_del(&cmd->node);
			vs_complete_cmd(cmd, len);
		}
	} while (!vq->vq_ops->enable_cb(vq));
}

static void vs_req_done(struct virtqueue *vq)
{
	struct vs_host *vs = vs_of(vq->vdev->priv);
	unsigned long flags;

	spin_lock_irqsave(&vs->req_lock, flags);
	vs_reap_requests(vs);
	spin_unlock_irqrestore(&vs->req_lock, flags);
}

/* Describe the command's data: the scatterlist the midlayer built, or one flat buffer. */
static unsigned int vs_data_sg(struct scsi_cmnd *sc, struct scatterlist *sg)
{
	if (sc->request_bufflen == 0 || sc->sc_data_direction == DMA_NONE)
		return 0;
	if (sc->use_sg) {
		memcpy(sg, sc->request_buffer, sc->use_sg * sizeof(*sg));
		return sc->use_sg;
	}
	sg_set_buf(sg, sc->request_buffer, sc->request_bufflen);
	return 1;
}

/* Called by the midlayer with host_lock held and interrupts off. */
static int vs_queuecommand(struct scsi_cmnd *sc, void (*done)(struct scsi_cmnd *))
{
	struct vs_host *vs = vs_of(sc->device->host);
	struct virtqueue *vq = vs->vq[VSK_FIRST_REQUESTQ];
	unsigned int nsg = sc->use_sg ? sc->use_sg : 1, ndata, out, in;
	struct vs_cmd *cmd;
	unsigned long flags;
	int err;

	sc->scsi_done = done;
	if (sc->sc_data_direction != DMA_NONE && sc->sc_data_direction != DMA_TO_DEVICE &&
	    sc->sc_data_direction != DMA_FROM_DEVICE) {
		sc->result = DID_ERROR << 16; /* no bidirectional commands on 2.6.18 */
		done(sc);
		return 0;
	}
	cmd = kmalloc(sizeof(*cmd) + (nsg + 2) * sizeof(struct scatterlist), GFP_ATOMIC);
	if (!cmd)
		return SCSI_MLQUEUE_HOST_BUSY;
	cmd->sc = sc;
	if (!vsk_cmd_req(cmd->req, VS_FLAGS, sc->device->id, sc->device->lun,
			 (uint64_t)(unsigned long)cmd, VSK_TASK_SIMPLE, sc->cmnd, sc->cmd_len)) {
		kfree(cmd);
		sc->result = DID_BAD_TARGET << 16;
		done(sc);
		return 0;
	}
	/* A legacy device cannot say it wrote nothing: start from "no answer", never stale bytes. */
	vsk_cmd_resp_init(cmd->resp);

	/* Device-readable first (header, data out), then device-writable (response, data in). */
	sg_set_buf(&cmd->sg[0], cmd->req, VSK_CMD_REQ_BYTES);
	if (sc->sc_data_direction == DMA_TO_DEVICE) {
		ndata = vs_data_sg(sc, &cmd->sg[1]);
		out = 1 + ndata;
		sg_set_buf(&cmd->sg[out], cmd->resp, VSK_CMD_RESP_BYTES);
		in = 1;
	} else {
		out = 1;
		sg_set_buf(&cmd->sg[1], cmd->resp, VSK_CMD_RESP_BYTES);
		ndata = vs_data_sg(sc, &cmd->sg[2]);
		in = 1 + ndata;
	}

	spin_lock_irqsave(&vs->req_lock, flags);
	err = vq->vq_ops->add_buf(vq, cmd->sg, out, in, cmd);
	if (err >= 0) {
		list_add_tail(&cmd->node, &vs->inflight);
		vq->vq_ops->kick(vq);
	}
	spin_unlock_irqrestore(&vs->req_lock, flags);
	if (err < 0) {
		kfree(cmd);
		return SCSI_MLQUEUE_HOST_BUSY; /* ring full: the midlayer retries later */
	}
	return 0;
}

/* ---- task management ----------------------------------------------------------------- */

/* Hand a TMF back to its waiter, or free it if the waiter gave up; called with ctrl_lock held. */
static void vs_tmf_returned(struct vs_tmf *tmf, unsigned int used_len)
{
	list_del(&tmf->node);
	if (tmf->abandoned) {
		kfree(tmf);
		return;
	}
	tmf->used_len = used_len;
	tmf->answered = 1;
	complete(&tmf->done);
}

/* Reap the control queue; called with ctrl_lock held. */
static void vs_reap_ctrl(struct vs_host *vs)
{
	struct virtqueue *vq = vs->vq[VSK_CONTROLQ];
	struct vs_tmf *tmf;
	unsigned int len;

	do {
		vq->vq_ops->disable_cb(vq);
		while ((tmf = vq->vq_ops->get_buf(vq, &len)) != NULL)
			vs_tmf_returned(tmf, len);
	} while (!vq->vq_ops->enable_cb(vq));
}

static void vs_ctrl_done(struct virtqueue *vq)
{
	struct vs_host *vs = vs_of(vq->vdev->priv);
	unsigned long flags;

	spin_lock_irqsave(&vs->ctrl_lock, flags);
	vs_reap_ctrl(vs);
	spin_unlock_irqrestore(&vs->ctrl_lock, flags);
}

/* Send one TMF and wait for it. Returns SUCCESS or FAILED (the EH handlers' values). */
static int vs_tmf(struct vs_host *vs, uint32_t function, unsigned int target, unsigned int lun,
		  uint64_t tag)
{
	struct virtqueue *vq = vs->vq[VSK_CONTROLQ];
	struct scatterlist sg[2];
	struct vs_tmf *tmf;
	unsigned long flags;
	uint8_t response;
	int err, ok;

	tmf = kzalloc(sizeof(*tmf), GFP_NOIO);
	if (!tmf)
		return FAILED;
	init_completion(&tmf->done);
	if (!vsk_tmf_req(tmf->req, VS_FLAGS, function, target, lun, tag)) {
		kfree(tmf);
		return FAILED;
	}
	vsk_ctrl_resp_init(tmf->resp, sizeof(tmf->resp));
	sg_set_buf(&sg[0], tmf->req, VSK_TMF_REQ_BYTES);
	sg_set_buf(&sg[1], tmf->resp, VSK_TMF_RESP_BYTES);

	spin_lock_irqsave(&vs->ctrl_lock, flags);
	err = vq->vq_ops->add_buf(vq, sg, 1, 1, tmf);
	if (err >= 0) {
		list_add_tail(&tmf->node, &vs->tmfs);
		vq->vq_ops->kick(vq);
	}
	spin_unlock_irqrestore(&vs->ctrl_lock, flags);
	if (err < 0) {
		kfree(tmf);
		return FAILED;
	}

	if (!wait_for_completion_timeout(&tmf->done, max(1u, tmf_timeout) * HZ)) {
		spin_lock_irqsave(&vs->ctrl_lock, flags);
		if (!tmf->answered) {
			/* The device still owns the buffers: the callback or a reset frees them. */
			tmf->abandoned = 1;
			spin_unlock_irqrestore(&vs->ctrl_lock, flags);
			printk(KERN_WARNING "virtio_scsi: TMF %u to %u:%u timed out\n", function,
			       target, lun);
			return FAILED;
		}
		spin_unlock_irqrestore(&vs->ctrl_lock, flags);
	}
	ok = vsk_tmf_resp(tmf->resp, VS_FLAGS, tmf->used_len, &response);
	if (!ok)
		printk(KERN_INFO "virtio_scsi: TMF %u to %u:%u: response %u\n", function, target,
		       lun, response);
	kfree(tmf);

	/*
	 * A successful TMF means the device completed the commands it affected, but their
	 * callback may not have run yet: reap them now so none completes after this returns.
	 */
	spin_lock_irqsave(&vs->req_lock, flags);
	vs_reap_requests(vs);
	spin_unlock_irqrestore(&vs->req_lock, flags);
	return ok ? SUCCESS : FAILED;
}

static int vs_eh_abort(struct scsi_cmnd *sc)
{
	struct vs_host *vs = vs_of(sc->device->host);
	struct vs_cmd *cmd, *found = NULL;
	unsigned long flags;

	/* The command's tag is its vs_cmd; if it is no longer in flight it has completed. */
	spin_lock_irqsave(&vs->req_lock, flags);
	list_for_each_entry(cmd, &vs->inflight, node) {
		if (cmd->sc == sc) {
			found = cmd;
			break;
		}
	}
	spin_unlock_irqrestore(&vs->req_lock, flags);
	if (!found)
		return SUCCESS;
	return vs_tmf(vs, VSK_TMF_ABORT_TASK, sc->device->id, sc->device->lun,
		      (uint64_t)(unsigned long)found);
}

static int vs_eh_device_reset(struct scsi_cmnd *sc)
{
	return vs_tmf(vs_of(sc->device->host), VSK_TMF_LUN_RESET, sc->device->id,
		      sc->device->lun, 0);
}

static int vs_reinit(struct vs_host *vs);

/*
 * Bus reset: an I_T NEXUS RESET to every target the host has a device on (2.6.18 has no
 * target reset handler: this is the step between a LUN reset and a device reset). If the
 * device refuses any of them, reset the device.
 */
static int vs_eh_bus_reset(struct scsi_cmnd *sc)
{
	struct Scsi_Host *shost = sc->device->host;
	struct vs_host *vs = vs_of(shost);
	DECLARE_BITMAP(targets, 256);
	struct scsi_device *sdev;
	unsigned int id;
	int failed = 0;

	bitmap_zero(targets, 256);
	shost_for_each_device(sdev, shost)
		if (sdev->id < 256)
			__set_bit(sdev->id, targets);
	for (id = find_first_bit(targets, 256); id < 256; id = find_next_bit(targets, 256, id + 1))
		if (vs_tmf(vs, VSK_TMF_I_T_NEXUS_RESET, id, 0, 0) != SUCCESS)
			failed = 1;
	if (!failed)
		return SUCCESS;
	return vs_reinit(vs) ? FAILED : SUCCESS;
}

/* Host reset: reset the virtio device and set it up again. */
static int vs_eh_host_reset(struct scsi_cmnd *sc)
{
	return vs_reinit(vs_of(sc->device->host)) ? FAILED : SUCCESS;
}

/* ---- events -------------------------------------------------------------------------- */

/* Give an event buffer to the device; called with event_lock held. */
static void vs_event_post(struct vs_host *vs, struct vs_event_buf *ev)
{
	struct virtqueue *vq = vs->vq[VSK_EVENTQ];
	struct scatterlist sg;

	sg_init_one(&sg, ev->buf, VSK_EVENT_BYTES);
	if (vq->vq_ops->add_buf(vq, &sg, 0, 1, ev) >= 0)
		ev->state = VS_EV_IN_RING;
	else
		ev->state = VS_EV_IDLE;
}

/*
 * Event work holds a module reference from the event's arrival to the end of its work.
 * Once rmmod has begun, 2.6.18's scsi_device_get() fails, so the midlayer's lookups in an
 * event's work would find no devices and its scans would add them twice (and leave a half-made
 * one that oopses scsi_remove_host). With the reference, rmmod is refused ("in use") while any
 * event is pending; an event that arrives once it has begun is dropped.
 */
static void vs_event_done(struct virtqueue *vq)
{
	struct vs_host *vs = vs_of(vq->vdev->priv);
	struct vs_event_buf *ev;
	unsigned long flags;
	unsigned int len;

	spin_lock_irqsave(&vs->event_lock, flags);
	do {
		vq->vq_ops->disable_cb(vq);
		while ((ev = vq->vq_ops->get_buf(vq, &len)) != NULL) {
			ev->used_len = len;
			if (vs->stopping || !try_module_get(THIS_MODULE)) {
				ev->state = VS_EV_IDLE;
				continue;
			}
			ev->state = VS_EV_IN_WORK;
			schedule_work(&ev->work);
		}
	} while (!vq->vq_ops->enable_cb(vq));
	spin_unlock_irqrestore(&vs->event_lock, flags);
}

/* Whether a known LUN still answers: INQUIRY, and the peripheral qualifier says so. */
static int vs_lun_present(struct scsi_device *sdev)
{
	static const unsigned char inquiry[6] = { INQUIRY, 0, 0, 0, 36, 0 };
	unsigned char *data;
	int result, present;

	data = kzalloc(36, GFP_KERNEL);
	if (!data)
		return 1;
	result = scsi_execute_req(sdev, inquiry, DMA_FROM_DEVICE, data, 36, NULL, 10 * HZ, 3);
	if (host_byte(result) == DID_BAD_TARGET || host_byte(result) == DID_NO_CONNECT)
		present = 0;
	else if (result)
		present = 1; /* cannot tell: keep it */
	else
		present = !vsk_inquiry_lun_absent(data, 36);
	kfree(data);
	return present;
}

/* Remove LUNs that are gone: all targets when target < 0, else that target's. */
static void vs_remove_vanished(struct Scsi_Host *shost, int target)
{
	struct scsi_device *sdev;

	shost_for_each_device(sdev, shost) {
		if (target >= 0 && sdev->id != (unsigned int)target)
			continue;
		if (!vs_lun_present(sdev)) {
			printk(KERN_INFO "virtio_scsi: %u:%u is gone, removing it\n", sdev->id,
			       sdev->lun);
			scsi_remove_device(sdev);
		}
	}
}

/*
 * The device the host has for a LUN, under the name an event gives or the LUN's other name
 * (a scan names a LUN as REPORT LUNS lists it), so an event never makes a second device.
 */
static struct scsi_device *vs_find_lun(struct Scsi_Host *shost, unsigned int target,
				       unsigned int name)
{
	struct scsi_device *sdev = scsi_device_lookup(shost, 0, target, name);
	uint32_t alias = vsk_lun_alias(name);

	if (!sdev && alias != name && alias != VSK_NO_LUN)
		sdev = scsi_device_lookup(shost, 0, target, alias);
	return sdev;
}

static void vs_handle_event(struct vs_host *vs, const struct vsk_event *e)
{
	struct Scsi_Host *shost = vs->shost;
	struct scsi_device *sdev;

	switch (e->action) {
	case VSK_EV_ADD_LUN:
		sdev = vs_find_lun(shost, e->target, e->lun);
		if (sdev)
			scsi_device_put(sdev);
		else
			scsi_add_device(shost, 0, e->target, e->lun);
		break;
	case VSK_EV_REMOVE_LUN:
		sdev = vs_find_lun(shost, e->target, e->lun);
		if (sdev) {
			scsi_remove_device(sdev);
			scsi_device_put(sdev);
		}
		break;
	case VSK_EV_SCAN_TARGET:
		vs_remove_vanished(shost, e->target);
		scsi_scan_target(&shost->shost_gendev, 0, e->target, SCAN_WILD_CARD, 1);
		break;
	case VSK_EV_RESCAN_LUN:
		sdev = vs_find_lun(shost, e->target, e->lun);
		if (sdev) {
			scsi_rescan_device(&sdev->sdev_gendev);
			scsi_device_put(sdev);
		}
		break;
	case VSK_EV_SCAN_HOST:
		vs_remove_vanished(shost, -1);
		scsi_scan_host(shost);
		break;
	default:
		break;
	}
}

/* Runs in keventd (2.6.18 work functions take the data pointer given to INIT_WORK). */
static void vs_event_work(void *data)
{
	struct vs_event_buf *ev = data;
	struct vs_host *vs = ev->vs;
	struct vsk_event e;
	unsigned long flags;
	int stopping;

	if (event_delay_ms)
		msleep(event_delay_ms);
	spin_lock_irqsave(&vs->event_lock, flags);
	stopping = vs->stopping;
	spin_unlock_irqrestore(&vs->event_lock, flags);
	if (!stopping) { /* the host is going: nothing to add to or remove from it */
		vsk_event_decode(ev->buf, VS_FLAGS, ev->used_len, &e);
		vs_handle_event(vs, &e);
	}

	spin_lock_irqsave(&vs->event_lock, flags);
	if (vs->stopping || vs->resetting) {
		ev->state = VS_EV_IDLE; /* a reset posts it again on the new queue */
	} else {
		vs_event_post(vs, ev);
		vs->vq[VSK_EVENTQ]->vq_ops->kick(vs->vq[VSK_EVENTQ]);
	}
	spin_unlock_irqrestore(&vs->event_lock, flags);
	/* remove() flushes this work before the module can go, so returning from here is safe. */
	module_put(THIS_MODULE);
}

/* Post every event buffer not being handled; called with event_lock held. */
static void vs_events_post_idle(struct vs_host *vs)
{
	int i;

	for (i = 0; i < VS_EVENT_BUFS; i++)
		if (vs->events[i].state != VS_EV_IN_WORK)
			vs_event_post(vs, &vs->events[i]);
	vs->vq[VSK_EVENTQ]->vq_ops->kick(vs->vq[VSK_EVENTQ]);
}

/* Make sure no event work runs or is pending: remove() calls it before the host goes. */
static void vs_events_quiesce(struct vs_host *vs)
{
	unsigned long flags;

	spin_lock_irqsave(&vs->event_lock, flags);
	vs->stopping = 1;
	spin_unlock_irqrestore(&vs->event_lock, flags);
	/*
	 * Waits for work already running or queued (queued work finds stopping set and does
	 * nothing but drop its module reference); nothing new is scheduled once stopping.
	 */
	flush_scheduled_work();
}

/* ---- configuration and bring-up ------------------------------------------------------ */

static void vs_config_get(void *ctx, uint32_t offset, void *buf, uint32_t len)
{
	struct virtio_device *vdev = ctx;

	vdev->config->get(vdev, offset, buf, len);
}

static void vs_config_set(void *ctx, uint32_t offset, const void *buf, uint32_t len)
{
	struct virtio_device *vdev = ctx;

	vdev->config->set(vdev, offset, buf, len);
}

/* Queues, config sizes and event buffers: what probe and a reset both need. */
static int vs_setup_device(struct vs_host *vs)
{
	unsigned int size = vs_negotiate_queue_sizes(vs);
	unsigned long flags;
	int err;

	err = vs_find_vqs(vs);
	if (err)
		return err;
	if (size)
		vs->req_vq_size = size;
	vsk_config_write_sizes(VS_FLAGS, vs_config_set, vs->vdev);
	spin_lock_irqsave(&vs->event_lock, flags);
	vs->resetting = 0; /* the new event queue exists: event work may post to it again */
	vs_events_post_idle(vs);
	spin_unlock_irqrestore(&vs->event_lock, flags);
	return 0;
}

static void vs_set_driver_ok(struct virtio_device *vdev)
{
	vdev->config->set_status(vdev, vdev->config->get_status(vdev) | VIRTIO_CONFIG_S_DRIVER_OK);
}

/*
 * After a device reset: deliver what the device completed before it, and hand back every
 * command and TMF it still held: commands with DID_RESET (the midlayer retries them, and
 * ignores the completion of one it has already timed out), TMFs as failed (an abandoned one
 * is freed).
 */
static void vs_reclaim(struct vs_host *vs)
{
	struct vs_cmd *cmd, *cmd_next;
	struct vs_tmf *tmf, *tmf_next;
	unsigned long flags;

	spin_lock_irqsave(&vs->req_lock, flags);
	vs_reap_requests(vs);
	list_for_each_entry_safe(cmd, cmd_next, &vs->inflight, node) {
		list_del(&cmd->node);
		vs_fail_cmd(cmd);
	}
	spin_unlock_irqrestore(&vs->req_lock, flags);
	spin_lock_irqsave(&vs->ctrl_lock, flags);
	vs_reap_ctrl(vs);
	list_for_each_entry_safe(tmf, tmf_next, &vs->tmfs, node)
		vs_tmf_returned(tmf, 0); /* its response still says "not answered" */
	spin_unlock_irqrestore(&vs->ctrl_lock, flags);
}

/* Reset the device and set it up again (EH or SG_SCSI_RESET context, may sleep). */
static int vs_reinit(struct vs_host *vs)
{
	struct virtio_device *vdev = vs->vdev;
	unsigned long flags;
	int err;

	printk(KERN_INFO "virtio_scsi: resetting the device\n");
	spin_lock_irqsave(&vs->event_lock, flags);
	vs->resetting = 1;
	spin_unlock_irqrestore(&vs->event_lock, flags);

	vdev->config->reset(vdev); /* the device lets go of every buffer */
	vs_reclaim(vs);
	vs_del_vqs(vs);

	/* The bring-up the virtio bus did at probe time, again. */
	vdev->config->set_status(vdev, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	vdev->config->set_status(vdev, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
	vdev->config->finalize_features(vdev);

	err = vs_setup_device(vs);
	if (err) {
		printk(KERN_ERR "virtio_scsi: re-initialisation failed (%d)\n", err);
		vdev->config->set_status(vdev, VIRTIO_CONFIG_S_FAILED);
		return err;
	}
	vs_set_driver_ok(vdev);
	return 0;
}

static int vs_slave_configure(struct scsi_device *sdev)
{
	if (sdev->tagged_supported)
		scsi_activate_tcq(sdev, sdev->host->cmd_per_lun);
	return 0;
}

static int vs_change_queue_depth(struct scsi_device *sdev, int depth)
{
	struct Scsi_Host *shost = sdev->host;

	if (depth > shost->can_queue)
		depth = shost->can_queue;
	if (depth < 1)
		depth = 1;
	scsi_adjust_queue_depth(sdev, scsi_get_tag_type(sdev), depth);
	return sdev->queue_depth;
}

static struct scsi_host_template vs_template = {
	.module = THIS_MODULE,
	.name = "Virtio SCSI HBA",
	.proc_name = "virtio_scsi",
	.queuecommand = vs_queuecommand,
	.eh_abort_handler = vs_eh_abort,
	.eh_device_reset_handler = vs_eh_device_reset,
	.eh_bus_reset_handler = vs_eh_bus_reset,
	.eh_host_reset_handler = vs_eh_host_reset,
	.slave_configure = vs_slave_configure,
	.change_queue_depth = vs_change_queue_depth,
	.this_id = -1,
	.can_queue = 1,
	.sg_tablesize = 1,
	.cmd_per_lun = 1,
	.use_clustering = ENABLE_CLUSTERING,
	/* The midlayer sleeps 10 s after a bus or host reset for a bus to settle; virtio has none. */
	.skip_settle_delay = 1,
};

static int vs_probe(struct virtio_device *vdev)
{
	struct Scsi_Host *shost;
	struct vs_host *vs;
	struct vsk_config cfg;
	struct vsk_host_limits lim;
	int i, err;

	shost = scsi_host_alloc(&vs_template, sizeof(struct vs_host));
	if (!shost)
		return -ENOMEM;
	vs = vs_of(shost);
	memset(vs, 0, sizeof(*vs));
	vs->vdev = vdev;
	vs->shost = shost;
	vdev->priv = shost;
	spin_lock_init(&vs->req_lock);
	spin_lock_init(&vs->ctrl_lock);
	spin_lock_init(&vs->event_lock);
	INIT_LIST_HEAD(&vs->inflight);
	INIT_LIST_HEAD(&vs->tmfs);
	for (i = 0; i < VS_EVENT_BUFS; i++) {
		vs->events[i].vs = vs;
		vs->events[i].state = VS_EV_IDLE;
		INIT_WORK(&vs->events[i].work, vs_event_work, &vs->events[i]);
	}
	vs->req_vq_size = 128; /* QEMU's default, if the size cannot be read */

	err = vs_setup_device(vs);
	if (err)
		goto fail_put;

	vsk_config_read(&cfg, VS_FLAGS, vs_config_get, vdev);
	vsk_compute_limits(&cfg, 1, vs->req_vq_size, 0, SCSI_MAX_PHYS_SEGMENTS, &lim);
	shost->can_queue = lim.can_queue;
	shost->sg_tablesize = lim.sg_tablesize;
	shost->max_sectors = lim.max_sectors > 0xffff ? 0xffff : lim.max_sectors;
	shost->cmd_per_lun = lim.cmd_per_lun > 0x7fff ? 0x7fff : lim.cmd_per_lun;
	shost->max_id = lim.max_id;
	shost->max_lun = lim.max_lun;
	shost->max_channel = lim.max_channel;
	shost->max_cmd_len = lim.max_cmd_len > MAX_COMMAND_SIZE ? MAX_COMMAND_SIZE
								 : lim.max_cmd_len;
	shost->unique_id = vdev->index;

	err = scsi_add_host(shost, &vdev->dev);
	if (err)
		goto fail_vqs;
	/* The virtio bus sets DRIVER_OK after probe; the scan below needs the device running. */
	vs_set_driver_ok(vdev);
	scsi_scan_host(shost);
	return 0;

fail_vqs:
	vs_events_quiesce(vs);
	vdev->config->reset(vdev);
	vs_del_vqs(vs);
fail_put:
	scsi_host_put(shost);
	return err;
}

static void vs_remove(struct virtio_device *vdev)
{
	struct Scsi_Host *shost = vdev->priv;
	struct vs_host *vs = vs_of(shost);

	/* No event work may run once the host is gone (the unload race of older drivers). */
	vs_events_quiesce(vs);
	scsi_remove_host(shost);
	vdev->config->reset(vdev);
	vs_reclaim(vs); /* a TMF abandoned earlier may still be in the control queue */
	vs_del_vqs(vs);
	scsi_host_put(shost);
}

static struct virtio_device_id vs_id_table[] = {
	{ VS_VIRTIO_ID_SCSI, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static unsigned int vs_features[] = { VSK_F_HOTPLUG, VSK_F_CHANGE };

static struct virtio_driver vs_driver = {
	.driver.name = "virtio_scsi",
	.driver.owner = THIS_MODULE,
	.id_table = vs_id_table,
	.feature_table = vs_features,
	.feature_table_size = ARRAY_SIZE(vs_features),
	.probe = vs_probe,
	.remove = vs_remove,
};

static int __init vs_init(void)
{
	return register_virtio_driver(&vs_driver);
}

static void __exit vs_exit(void)
{
	unregister_virtio_driver(&vs_driver);
}

module_init(vs_init);
module_exit(vs_exit);
MODULE_DEVICE_TABLE(virtio, vs_id_table);
MODULE_DESCRIPTION("Virtio SCSI HBA driver (vscsi)");
MODULE_LICENSE("GPL");
