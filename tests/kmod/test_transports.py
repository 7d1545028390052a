#!/usr/bin/env python3
"""The module drives every kind of virtio-scsi PCI function at once: transitional (the
kernel's virtio_pci speaks virtio 1.x to it), legacy-only (guest byte order, no used
lengths trusted) and modern-only; data written concurrently to all three reads back."""
import kmodlib
from kmodlib import Report, GuestError, make_disk, scsi_controller, scsi_disk

ko, work = kmodlib.args()
r = Report('kmod-transports')

kinds = {'transitional': 16, 'legacy': 20, 'modern': 24}  # kind -> MiB of its disk
qemu = []
for i, (kind, mib) in enumerate(kinds.items()):
    img = make_disk(f'{work}/{kind}.img', mib << 20)
    qemu += scsi_controller(f'scsi{i}', kind=kind, virtqueue_size=128 if kind == 'modern' else None)
    qemu += scsi_disk(f'd{i}', img, bus=f'scsi{i}.0', scsi_id=i, lun=0)

g = kmodlib.guest(work, ko, qemu)
try:
    g.start()
    rc, out = kmodlib.load(g)
    r.check('insmod virtio_scsi.ko', rc == 0, out)
    disks = kmodlib.wait_disks(g, 3)
    r.check('three disks, one per controller', len(disks) == 3, disks)

    # Which host is which: the PCI device ID and the module's own legacy flag.
    st = kmodlib.stats(g)
    rc, out = g.run('for h in /sys/class/scsi_host/host*; do '
                    'echo "$(basename $h) $(cat $h/device/../../device) $(cat $h/can_queue)"; done')
    hosts = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) == 3 and p[0].startswith('host'):
            hosts[p[0]] = (p[1], int(p[2]), st['hosts'].get(p[0], {}).get('legacy'))
    kinds_seen = sorted((pci, legacy) for pci, _, legacy in hosts.values())
    r.check('hosts: a modern 1048 (virtio 1.x), a transitional 1004 driven as virtio 1.x, a legacy 1004',
            kinds_seen == [('0x1004', 0), ('0x1004', 1), ('0x1048', 0)], f'{out}\n{st}')
    r.check('the modern host\'s queue depth follows its 128-entry virtqueue',
            any(pci == '0x1048' and cq == 128 for pci, cq, _ in hosts.values()), hosts)

    # Each disk: its size, then raw write/read-back.
    detail, ok_all = '', True
    by_host = {}
    for hctl, dev in disks.items():
        by_host[f'host{hctl.split(":")[0]}'] = dev
    for host, (pci, _, legacy) in sorted(hosts.items()):
        dev = by_host.get(host)
        ok, out = kmodlib.write_verify(g, dev, mib=8, seed=len(detail)) if dev else (False, 'no disk')
        ok_all &= ok
        detail += f'{host} {pci} legacy={legacy} {dev}: {"ok" if ok else out}\n'
    r.check('data read back equals data written on every kind of device', ok_all, detail)

    # All three at once: concurrent writers, then cold checksums.
    devs = sorted(disks.values())
    script = 'set -e\n'
    for i, d in enumerate(devs):
        script += f'dd if=/dev/urandom of=/tmp/c{i} bs=1M count=6 2>/dev/null\n'
    for i, d in enumerate(devs):
        script += f'dd if=/tmp/c{i} of=/dev/{d} bs=64k seek=16 oflag=direct 2>/dev/null &\n'
    script += 'wait\necho 3 > /proc/sys/vm/drop_caches\n'
    for i, d in enumerate(devs):
        script += (f'dd if=/dev/{d} bs=64k skip=16 count=96 iflag=direct 2>/dev/null | md5sum | cut -d" " -f1 > /tmp/r{i}\n'
                   f'md5sum < /tmp/c{i} | cut -d" " -f1 | cmp - /tmp/r{i}\n')
    rc, out = g.run(script, timeout=600)
    r.check('concurrent writes to all three controllers read back intact', rc == 0, out)

    trouble = kmodlib.kernel_trouble(g.dmesg())
    r.check('no kernel warnings, oopses or hung tasks', not trouble, '\n'.join(trouble))
except GuestError as e:
    r.check('the guest ran', False, e)
finally:
    g.stop()
r.finish()
