/* The kernel's own split-ring layout, compiled as C: <linux/virtio_ring.h> is not C++-clean
 * (vring_init converts void*), so test_ring.cpp asks these functions instead. */
#include <stddef.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>

size_t uapi_vring_size(unsigned int num, unsigned long align) { return vring_size(num, align); }

/* Offsets, in a vring laid out by vring_init at address 0 with `align`. */
void uapi_vring_offsets(unsigned int num, unsigned long align, size_t *avail, size_t *used,
                        size_t *used_event, size_t *avail_event) {
    struct vring vr;
    vring_init(&vr, num, (void *)0, align);
    *avail = (size_t)(unsigned long)vr.avail;
    *used = (size_t)(unsigned long)vr.used;
    *used_event = (size_t)(unsigned long)&vring_used_event(&vr);
    *avail_event = (size_t)(unsigned long)&vring_avail_event(&vr);
}

size_t uapi_sizeof_desc(void) { return sizeof(struct vring_desc); }
size_t uapi_sizeof_used_elem(void) { return sizeof(struct vring_used_elem); }
size_t uapi_desc_offset_len(void) { return offsetof(struct vring_desc, len); }
size_t uapi_desc_offset_flags(void) { return offsetof(struct vring_desc, flags); }
size_t uapi_desc_offset_next(void) { return offsetof(struct vring_desc, next); }
int uapi_need_event(unsigned short e, unsigned short n, unsigned short o) { return vring_need_event(e, n, o); }
unsigned uapi_ring_flags(int which) {
    switch (which) {
    case 0: return VRING_DESC_F_NEXT;
    case 1: return VRING_DESC_F_WRITE;
    case 2: return VRING_DESC_F_INDIRECT;
    case 3: return VRING_USED_F_NO_NOTIFY;
    case 4: return VRING_AVAIL_F_NO_INTERRUPT;
    case 5: return VIRTIO_RING_F_INDIRECT_DESC;
    case 6: return VIRTIO_RING_F_EVENT_IDX;
    }
    return 0xffffffffu;
}

/* The packed ring's structures and constants. */
size_t uapi_packed(int which) {
    switch (which) {
    case 0: return sizeof(struct vring_packed_desc);
    case 1: return offsetof(struct vring_packed_desc, addr);
    case 2: return offsetof(struct vring_packed_desc, len);
    case 3: return offsetof(struct vring_packed_desc, id);
    case 4: return offsetof(struct vring_packed_desc, flags);
    case 5: return sizeof(struct vring_packed_desc_event);
    case 6: return offsetof(struct vring_packed_desc_event, off_wrap);
    case 7: return offsetof(struct vring_packed_desc_event, flags);
    case 8: return 1u << VRING_PACKED_DESC_F_AVAIL;
    case 9: return 1u << VRING_PACKED_DESC_F_USED;
    case 10: return VRING_PACKED_EVENT_FLAG_ENABLE;
    case 11: return VRING_PACKED_EVENT_FLAG_DISABLE;
    case 12: return VRING_PACKED_EVENT_FLAG_DESC;
    case 13: return 1u << VRING_PACKED_EVENT_F_WRAP_CTR;
    case 14: return VIRTIO_F_RING_PACKED;
    case 15: return VIRTIO_F_IN_ORDER;
    }
    return (size_t)-1;
}

/* virtio_pci.h: legacy registers and modern structures. */
size_t uapi_pci(int which) {
    switch (which) {
    case 0: return VIRTIO_PCI_HOST_FEATURES;
    case 1: return VIRTIO_PCI_GUEST_FEATURES;
    case 2: return VIRTIO_PCI_QUEUE_PFN;
    case 3: return VIRTIO_PCI_QUEUE_NUM;
    case 4: return VIRTIO_PCI_QUEUE_SEL;
    case 5: return VIRTIO_PCI_QUEUE_NOTIFY;
    case 6: return VIRTIO_PCI_STATUS;
    case 7: return VIRTIO_PCI_ISR;
    case 8: return VIRTIO_MSI_CONFIG_VECTOR;
    case 9: return VIRTIO_MSI_QUEUE_VECTOR;
    case 10: return VIRTIO_PCI_CONFIG_OFF(0);
    case 11: return VIRTIO_PCI_CONFIG_OFF(1);
    case 12: return VIRTIO_PCI_QUEUE_ADDR_SHIFT;
    case 13: return VIRTIO_PCI_VRING_ALIGN;
    case 20: return offsetof(struct virtio_pci_common_cfg, device_feature_select);
    case 21: return offsetof(struct virtio_pci_common_cfg, device_feature);
    case 22: return offsetof(struct virtio_pci_common_cfg, guest_feature_select);
    case 23: return offsetof(struct virtio_pci_common_cfg, guest_feature);
    case 24: return offsetof(struct virtio_pci_common_cfg, msix_config);
    case 25: return offsetof(struct virtio_pci_common_cfg, num_queues);
    case 26: return offsetof(struct virtio_pci_common_cfg, device_status);
    case 27: return offsetof(struct virtio_pci_common_cfg, config_generation);
    case 28: return offsetof(struct virtio_pci_common_cfg, queue_select);
    case 29: return offsetof(struct virtio_pci_common_cfg, queue_size);
    case 30: return offsetof(struct virtio_pci_common_cfg, queue_msix_vector);
    case 31: return offsetof(struct virtio_pci_common_cfg, queue_enable);
    case 32: return offsetof(struct virtio_pci_common_cfg, queue_notify_off);
    case 33: return offsetof(struct virtio_pci_common_cfg, queue_desc_lo);
    case 34: return offsetof(struct virtio_pci_common_cfg, queue_desc_hi);
    case 35: return offsetof(struct virtio_pci_common_cfg, queue_avail_lo);
    case 36: return offsetof(struct virtio_pci_common_cfg, queue_avail_hi);
    case 37: return offsetof(struct virtio_pci_common_cfg, queue_used_lo);
    case 38: return offsetof(struct virtio_pci_common_cfg, queue_used_hi);
    case 40: return offsetof(struct virtio_pci_cap, cap_vndr);
    case 41: return offsetof(struct virtio_pci_cap, cap_next);
    case 42: return offsetof(struct virtio_pci_cap, cap_len);
    case 43: return offsetof(struct virtio_pci_cap, cfg_type);
    case 44: return offsetof(struct virtio_pci_cap, bar);
    case 45: return offsetof(struct virtio_pci_cap, offset);
    case 46: return offsetof(struct virtio_pci_cap, length);
    case 47: return sizeof(struct virtio_pci_cap);
    case 48: return offsetof(struct virtio_pci_notify_cap, notify_off_multiplier);
    case 49: return sizeof(struct virtio_pci_notify_cap);
    case 50: return VIRTIO_PCI_CAP_COMMON_CFG;
    case 51: return VIRTIO_PCI_CAP_NOTIFY_CFG;
    case 52: return VIRTIO_PCI_CAP_ISR_CFG;
    case 53: return VIRTIO_PCI_CAP_DEVICE_CFG;
    case 54: return VIRTIO_PCI_CAP_PCI_CFG;
    case 55: return VIRTIO_PCI_CAP_SHARED_MEMORY_CFG;
    }
    return (size_t)-1;
}
