# The RHEL5/CentOS5 2.6.18 family: read by kmod/Kbuild (its el5 hook) when the tree is a
# 2.6.18 one, i.e. when kbuild is that old and names its flags CFLAGS, not KBUILD_CFLAGS.
# $(src) is this directory, $(srctree) the kernel tree, both absolute in an M= build.
#
# The tree is never edited. What a current gcc needs to build against it (-fno-pie, gnu89
# inline semantics, the compiler.h shim) cannot be set from here: 2.6.18 compiles the
# generated virtio_scsi.mod.c in a later make that never reads this file, so those flags go
# in EXTRA_CFLAGS on the make command line; GNUmakefile and meson.build pass them
# ($(vscsi_el5_compat_cflags) below is what they pass, printed by 'make el5-cflags').

# Era of the tree's virtio API: find_vq/del_vq before 2.6.18-238.el5, find_vqs/del_vqs from
# then on. USE_FIND_VQS=0|1 on the command line overrides what the header says.
ifeq ($(USE_FIND_VQS),)
USE_FIND_VQS := $(if $(shell grep -s -l 'find_vqs' $(srctree)/include/linux/virtio_config.h),1,0)
endif
vscsi_el5_cancel_work_sync := $(if $(shell grep -s -l 'cancel_work_sync' $(srctree)/include/linux/workqueue.h),1,0)

ifeq ($(wildcard $(srctree)/include/linux/virtio_config.h),)
$(error virtio_scsi: $(srctree) has no include/linux/virtio_config.h: RHEL5 kernels have virtio from 2.6.18-128.el5 on)
endif

# Without the compat flags a current gcc stops deep inside the tree's headers; say why here.
ifeq ($(filter %el5_gcc_shim.h,$(EXTRA_CFLAGS)),)
ifneq ($(shell $(CC) -dumpversion | cut -d. -f1),4)
$(error virtio_scsi: building against a 2.6.18 tree with gcc $(shell $(CC) -dumpversion) needs the compat flags: run 'make -C $(src) KSRC=$(srctree)' instead, or add EXTRA_CFLAGS="$$(make -s -C $(src) el5-cflags KSRC=$(srctree))")
endif
endif

obj-m := virtio_scsi.o
virtio_scsi-objs := glue_el5.o vscsi_core.o
CFLAGS_glue_el5.o := -DVSCSI_EL5_FIND_VQS=$(USE_FIND_VQS) \
		     -DVSCSI_EL5_CANCEL_WORK_SYNC=$(vscsi_el5_cancel_work_sync)

# The C++ unit: the kernel's own code-generation flags (code model, red zone, no SSE, the
# optimisation level) from 2.6.18's CFLAGS, minus what is C only, plus what a freestanding
# C++17 object without a runtime needs. It includes no kernel header.
VSCSI_CXX ?= g++
# The core headers: beside kmod/ in the source tree; a build that mirrors kmod/ elsewhere says where.
VSCSI_INCLUDE ?= $(src)/../include
vscsi_el5_c_only := -Wstrict-prototypes -Werror-implicit-function-declaration \
		    -Wdeclaration-after-statement -Wno-pointer-sign -std=gnu89 -std=gnu99
vscsi_el5_cxxflags := $(filter-out $(vscsi_el5_c_only),$(CFLAGS)) \
	-fno-pie -fno-stack-protector -std=gnu++17 -fno-exceptions -fno-rtti -ffreestanding \
	-fno-threadsafe-statics -fno-use-cxa-atexit -nostdinc -nostdinc++ \
	-isystem $(shell $(VSCSI_CXX) -print-file-name=include) \
	-I$(src) -I$(VSCSI_INCLUDE) -D__KERNEL__ -DMODULE -Wall -Wextra

quiet_cmd_vscsi_el5_cxx = CXX [M]  $@
      cmd_vscsi_el5_cxx = $(VSCSI_CXX) -Wp,-MD,$(depfile) $(vscsi_el5_cxxflags) -c -o $@ $<

$(obj)/vscsi_core.o: $(src)/vscsi_core.cpp FORCE
	$(call if_changed_dep,vscsi_el5_cxx)

targets += vscsi_core.o
