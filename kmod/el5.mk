# The RHEL5/CentOS5 2.6.18 family, read by Kbuild at its el5 hook (2.6 trees) in every
# kbuild pass that reads the module's Kbuild: the build (scripts/Makefile.build) and clean
# (scripts/Makefile.clean). $(src) is this directory, $(srctree) the kernel tree, both
# absolute in an M= build.
#
# The tree is never edited. What a current gcc needs to compile against it (-fno-pie, gnu89
# inline semantics, the compiler.h shim; see GNUmakefile's el5_cflags) must reach every
# compile, and 2.6.18 compiles the generated virtio_scsi.mod.c in a later make
# (scripts/Makefile.modpost) that never reads this file: only a make command line reaches
# it. GNUmakefile and meson.build put the flags there. A bare `make -C <tree> M=<this dir>`
# does not, so that pass builds nothing itself and hands the module to GNUmakefile, which
# runs kbuild again on the private directory below with the flags on its command line (see
# "Bare builds" at the end).

ifneq ($(SUBLEVEL),18)
$(error virtio_scsi: kernel 2.6.$(SUBLEVEL) is not supported: RHEL5/CentOS5 2.6.18 and current kernels are)
endif
ifeq ($(wildcard $(srctree)/include/linux/virtio_config.h),)
$(error virtio_scsi: $(srctree) has no include/linux/virtio_config.h: RHEL5 kernels have virtio from 2.6.18-128.el5 on)
endif

# Where a bare build builds, and what its outer pass leaves here (2.6.18's modpost writes
# them even when it has no module to process): removed by `make -C <tree> M=... clean`.
vsk-el5-dir := .el5-build
clean-dirs += $(vsk-el5-dir)
clean-files += Module.symvers Module.markers

# Era of the tree's virtio API: find_vq/del_vq before 2.6.18-238.el5, find_vqs/del_vqs from
# then on. USE_FIND_VQS=0|1 on the command line overrides what the header says.
ifeq ($(USE_FIND_VQS),)
USE_FIND_VQS := $(if $(call vsk-has,linux/virtio_config.h,find_vqs,1),1,0)
endif
ifneq ($(filter-out 0 1,$(USE_FIND_VQS)),)
$(error virtio_scsi: USE_FIND_VQS must be 0 or 1, not '$(USE_FIND_VQS)')
endif

vsk-glue := glue_el5
vsk-family-flags := -DVSCSI_EL5_FIND_VQS=$(USE_FIND_VQS)
# Debian's g++ builds position-independent code by default, which the kernel code model
# refuses; 2.6.18's CFLAGS do not say -fno-pie (gcc 4.1 had no such default), nor turn the
# stack protector off when the compiler does not enable it by itself.
vsk-family-cxxflags := -fno-pie -fno-stack-protector

# ---- Bare builds ---------------------------------------------------------------------
# A gcc other than 4.x, and no compat flags among the EXTRA_CFLAGS of the command line:
# this pass builds no module (an empty obj-m leaves nothing in .tmp_versions, so the
# modpost make that follows finds nothing to compile), and its one target runs
#
#   make -C <this dir> module KSRC=<tree> MOD_DIR=<this dir>/.el5-build ...
#
# GNUmakefile links the sources into .el5-build, runs kbuild on that directory (its own
# .tmp_versions and modpost pass) with the compat flags on the command line, and has
# el5_ko_fixup.py rewrite and check the module in place there; the checked module is then
# copied here, where the other builds leave theirs. modules_install with M=<this dir>
# installs nothing (2.6.18 installs what .tmp_versions lists, empty here); with
# M=<this dir>/.el5-build it installs the checked module.
ifeq ($(filter %el5_gcc_shim.h,$(EXTRA_CFLAGS)),)
ifneq ($(shell $(CC) -dumpversion | cut -d. -f1),4)
vsk-el5-bare := 1
endif
endif

ifdef vsk-el5-bare
ifneq ($(words $(wildcard $(src)/GNUmakefile $(src)/el5_ko_fixup.py)),2)
$(error virtio_scsi: a 2.6.18 tree with gcc $(shell $(CC) -dumpversion) needs compat flags, added by GNUmakefile and el5_ko_fixup.py beside Kbuild, and $(src) lacks them: build from the repository's kmod/)
endif
ifneq ($(VSCSI_MODNAME),virtio_scsi)
$(error virtio_scsi: VSCSI_MODNAME is for current kernels; a 2.6.18 module is always virtio_scsi)
endif

# The user's own EXTRA_CFLAGS (Kbuild adds to the variable after this file).
vsk-el5-user-cflags := $(EXTRA_CFLAGS)

obj-m :=
always := virtio_scsi.ko

# The nested make must not inherit this pass's command line: obj= (this directory) would
# replace the top Makefile's own obj, M= and SUBDIRS= would name this directory again, and
# EXTRA_CFLAGS is given anew. An empty MAKEOVERRIDES drops them all from its MAKEFLAGS (the
# jobserver and the options stay); what the user gave that matters is passed again below.
# The environment holds them too (make exports command-line variables); unexport them.
# NOSTDINC_FLAGS is exported by the top Makefile, which only appends to it: inherited, it
# would come out twice.
unexport obj M SUBDIRS EXTRA_CFLAGS NOSTDINC_FLAGS
vsk-el5-passed = $(foreach v,$(1),$(if $(filter command line,$(origin $(v))),'$(v)=$($(v))'))

quiet_cmd_vsk_el5_bare = EL5     $@ (gcc $(shell $(CC) -dumpversion): kbuild again in $(src)/$(vsk-el5-dir), with compat flags)
      cmd_vsk_el5_bare = rm -f $@ && \
	$(MAKE) -C $(abspath $(src)) module KSRC=$(abspath $(srctree)) \
		MOD_DIR=$(abspath $(src)/$(vsk-el5-dir)) \
		VSCSI_INCLUDE=$(abspath $(VSCSI_INCLUDE)) CXX=$(VSCSI_CXX) USE_FIND_VQS=$(USE_FIND_VQS) \
		'EXTRA_CFLAGS=$(vsk-el5-user-cflags)' \
		$(call vsk-el5-passed,V C CHECK CC CROSS_COMPILE ARCH VERMAGIC_GCC PYTHON) && \
	cp $(src)/$(vsk-el5-dir)/virtio_scsi.ko $@

$(obj)/virtio_scsi.ko: MAKEOVERRIDES :=
$(obj)/virtio_scsi.ko: FORCE
	+$(call cmd,vsk_el5_bare)
endif
