#!/bin/sh
# kmod/dkms.conf works: lay out a DKMS source tree the way the README says, and let dkms
# build the module for the given kernel, in private DKMS trees (nothing is installed).
# Usage: test_dkms.sh SOURCE_ROOT KERNEL_BUILD_DIR WORK_DIR
set -eu
root=$1
kdir=$2
work=$3
if ! command -v dkms >/dev/null 2>&1; then
    echo "FAIL dkms: dkms is not installed (scripts/setup installs it)"
    exit 1
fi
release=$(sed -n 's/^#define UTS_RELEASE "\(.*\)"$/\1/p' "$kdir/include/generated/utsrelease.h")
if [ -z "$release" ] || [ ! -e "/lib/modules/$release/build" ]; then
    echo "FAIL dkms: $kdir is not /lib/modules/<release>/build of an installed kernel"
    exit 1
fi
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$root/kmod/dkms.conf")
rm -rf "$work"
src="$work/src/vscsi-$version"
mkdir -p "$src" "$work/tree"
cp "$root"/kmod/Kbuild "$root"/kmod/dkms.conf "$root"/kmod/*.c "$root"/kmod/*.cpp "$root"/kmod/*.h "$src/"
cp -r "$root/include" "$src/"
failed=0
dkms add "vscsi/$version" --sourcetree "$work/src" --dkmstree "$work/tree" > "$work/add.log" 2>&1 || failed=1
dkms build "vscsi/$version" -k "$release" --sourcetree "$work/src" --dkmstree "$work/tree" > "$work/build.log" 2>&1 || failed=1
ko=$(find "$work/tree" -name 'virtio_scsi.ko*' | head -n 1)
if [ "$failed" -ne 0 ] || [ -z "$ko" ]; then
    echo "FAIL dkms: dkms did not build virtio_scsi.ko for $release"
    cat "$work/add.log" "$work/build.log"
    find "$work/tree" -name make.log -exec cat {} \;
    exit 1
fi
name=$(modinfo -F name "$ko")
magic=$(modinfo -F vermagic "$ko" | cut -d' ' -f1)
if [ "$name" != virtio_scsi ] || [ "$magic" != "$release" ]; then
    echo "FAIL dkms: built $ko is '$name' for '$magic', want virtio_scsi for $release"
    exit 1
fi
echo "ok   dkms: dkms built virtio_scsi.ko for $release from the README's source tree"
echo "dkms: 1 passed, 0 failed"
