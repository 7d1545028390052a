# The RHEL5/CentOS5 2.6.18 family, read by Kbuild at its el5 hook (2.6 trees). $(src) is
# this directory, $(srctree) the kernel tree, both absolute in an M= build.
#
# The tree is never edited. What a current gcc needs to compile against it (-fno-pie, gnu89
# inline semantics, the compiler.h shim; see GNUmakefile's el5_cflags) cannot be set from
# here: 2.6.18 compiles the generated virtio_scsi.mod.c in a later make that never reads
# this file, so those flags go in EXTRA_CFLAGS on the make command line. GNUmakefile and
# meson.build pass them; `make -C kmod el5-cflags KSRC=<tree>` prints them.

ifneq ($(SUBLEVEL),18)
$(error virtio_scsi: kernel 2.6.$(SUBLEVEL) is not supported: RHEL5/CentOS5 2.6.18 and current kernels are)
endif
ifeq ($(wildcard $(srctree)/include/linux/virtio_config.h),)
$(error virtio_scsi: $(srctree) has no include/linux/virtio_config.h: RHEL5 kernels have virtio from 2.6.18-128.el5 on)
endif

# Without the compat flags a current gcc stops deep inside the tree's headers: say why here.
ifeq ($(filter %el5_gcc_shim.h,$(EXTRA_CFLAGS)),)
ifneq ($(shell $(CC) -dumpversion | cut -d. -f1),4)
$(error virtio_scsi: a 2.6.18 tree with gcc $(shell $(CC) -dumpversion) needs compat flags: run 'make -C $(src) KSRC=$(srctree)', or add EXTRA_CFLAGS="$$(make -s -C $(src) el5-cflags KSRC=$(srctree))")
endif
endif

# Era of the tree's virtio API: find_vq/del_vq before 2.6.18-238.el5, find_vqs/del_vqs from
# then on. USE_FIND_VQS=0|1 on the command line overrides what the header says.
ifeq ($(USE_FIND_VQS),)
USE_FIND_VQS := $(if $(call vsk-has,linux/virtio_config.h,find_vqs,1),1,0)
endif
ifneq ($(filter-out 0 1,$(USE_FIND_VQS)),)
$(error virtio_scsi: USE_FIND_VQS must be 0 or 1, not '$(USE_FIND_VQS)')
endif

vsk-glue := glue_el5
vsk-family-flags := -DVSCSI_EL5_FIND_VQS=$(USE_FIND_VQS) \
	-DVSCSI_EL5_CANCEL_WORK_SYNC=$(if $(call vsk-has,linux/workqueue.h,cancel_work_sync,1),1,0)
# Debian's g++ builds position-independent code by default, which the kernel code model
# refuses; 2.6.18's CFLAGS do not say -fno-pie (gcc 4.1 had no such default), nor turn the
# stack protector off when the compiler does not enable it by itself.
vsk-family-cxxflags := -fno-pie -fno-stack-protector
