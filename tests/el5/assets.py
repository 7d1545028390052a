#!/usr/bin/env python3
"""What an el5 assets directory holds (README.md, "The el5 suite"):

  busybox                          static busybox that runs on 2.6.18
  <release>/vmlinuz                a bootable RHEL5/CentOS5 kernel
  <release>/modules/*.ko           its virtio.ko, virtio_ring.ko, virtio_pci.ko (and scsi_mod.ko,
                                   sd_mod.ko where the kernel has them as modules)
  kernel-devel-<release>.tar.xz    its kernel-devel RPM's payload: usr/src/kernels/<release>-<arch>/

  assets.py releases DIR           the releases DIR holds completely, one per line
  assets.py missing DIR            why DIR holds none (one line; nothing when it holds some)
"""
import os
import sys

REQUIRED_MODULES = ('virtio', 'virtio_ring', 'virtio_pci')
# Loaded before virtio, when the kernel has them as modules (stock RHEL5 kernels do).
OPTIONAL_MODULES = ('scsi_mod', 'sd_mod')


def tarball(assets, release):
    return os.path.join(assets, f'kernel-devel-{release}.tar.xz')


def missing_parts(assets, release):
    """What a release lacks, as paths relative to the assets directory."""
    want = [os.path.join(release, 'vmlinuz'), os.path.basename(tarball(assets, release))]
    want += [os.path.join(release, 'modules', m + '.ko') for m in REQUIRED_MODULES]
    return [p for p in want if not os.path.isfile(os.path.join(assets, p))]


def releases(assets):
    if not os.path.isdir(assets) or not os.path.isfile(os.path.join(assets, 'busybox')):
        return []
    found = [d for d in sorted(os.listdir(assets)) if os.path.isdir(os.path.join(assets, d, 'modules'))]
    return [r for r in found if not missing_parts(assets, r)]


def why_none(assets):
    if not os.path.isdir(assets):
        return f'no el5 assets at {assets}'
    if not os.path.isfile(os.path.join(assets, 'busybox')):
        return f'{assets} has no busybox'
    partial = [d for d in sorted(os.listdir(assets)) if os.path.isdir(os.path.join(assets, d, 'modules'))]
    if not partial:
        return f'{assets} has no <release>/modules directory'
    return '; '.join(f'{r} lacks {", ".join(missing_parts(assets, r))}' for r in partial)


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] not in ('releases', 'missing'):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    d = os.path.abspath(sys.argv[2])
    if sys.argv[1] == 'releases':
        print('\n'.join(releases(d)))
    elif not releases(d):
        print(why_none(d))
