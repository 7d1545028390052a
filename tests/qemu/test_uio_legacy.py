#!/usr/bin/env python3
"""vscsi-uio against a legacy-only virtio-scsi device (disable-modern=on: no virtio
capabilities, the I/O BAR only) with 1024-entry virtqueues.

usage: test_uio_legacy.py VSCSI_UIO WORKDIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uio_common import (Guest, GuestError, Report, bench_json, check_kernel_cross, check_verify,  # noqa: E402
                        first_function, make_disk, parse_scan, scsi_controller, scsi_disk)

binary, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
r = Report('uio-legacy')
MiB = 1 << 20
disks = {(0, 0): (72 * MiB, 512), (0, 1): (12 * MiB, 4096), (3, 5): (2 * MiB, 512)}
qemu = scsi_controller('scsi0', kind='legacy', num_queues=1, virtqueue_size=1024)
for (t, l), (size, bs) in disks.items():
    path = make_disk(os.path.join(work, f't{t}l{l}.img'), size)
    qemu += scsi_disk(f'd{t}{l}', path, scsi_id=t, lun=l, logical_block_size=bs)
spare = make_disk(os.path.join(work, 'spare.img'), 1 * MiB)
topology = {k: (size // bs, bs, False) for k, (size, bs) in disks.items()}

g = Guest(os.path.join(work, 'guest'), modules=['uio_pci_generic'], ship_modules=['virtio_pci', 'virtio_scsi', 'sd_mod'],
          binaries=[binary], qemu_args=qemu, hugepages=64)
try:
    g.start()
    print(f'guest booted in {g.boot_seconds:.1f} s', flush=True)
    bdf = first_function(g)
    rc, out = g.run('vscsi-uio list')
    r.check('list: 1af4:1004 without virtio capabilities is legacy', rc == 0 and 'legacy' in out, out)
    rc, out = g.run(f'vscsi-uio bind --driver vfio {bdf} 2>&1')
    r.check('bind --driver vfio without an IOMMU: refused in one line, nothing bound',
            rc == 1 and out.strip().count('\n') == 0 and 'no IOMMU' in out and '--driver uio' in out, out)
    rc, out = g.run('vscsi-uio bind && vscsi-uio scan', timeout=120)
    got = {k: (v['blocks'], v['block_size'], v['read_only']) for k, v in parse_scan(out).items()}
    r.check('scan: 2 targets, 3 LUNs as given to QEMU', rc == 0 and got == topology and 'scan: 2 targets, 3 LUNs' in out,
            out)
    r.check('scan: legacy interface, split rings, queues of 1024 entries',
            'legacy interface, split rings, 1 request queue x 1024 entries' in out,
            out)
    rc, out = g.run('vscsi-uio scan --modern 2>&1')
    r.check('--modern on a legacy-only device: refused in one line',
            rc == 1 and out.strip().count('\n') == 0 and 'offers no modern virtio-pci interface' in out, out)

    check_verify(r, g, 'polled', '-t 0 -l 0 --size 64m --seed 31', '64.0 MiB')
    check_verify(r, g, 'interrupts, 4096-byte blocks', '-t 0 -l 1 --seed 32 --irq', '12.0 MiB')

    rc, out = g.run('vscsi-uio bench -t 0 -l 0 --rw randread --bs 4k --iodepth 128 --runtime 1 --json', timeout=120)
    try:
        job = bench_json(out)['jobs'][0]
        ok = rc == 0 and job['error'] == 0 and job['read']['total_ios'] > 0 and job['job options']['interface'] == 'legacy'
    except (ValueError, KeyError, IndexError):
        ok = False
    r.check('bench at depth 128 on the legacy interface', ok, out)

    g.run_bg('vscsi-uio events --timeout 60 --irq > /tmp/ev.log 2>&1 & echo $! > /tmp/ev.pid')
    g.run('for i in $(seq 100); do grep -q listening /tmp/ev.log && break; sleep 0.1; done')
    g.qmp('blockdev-add', **{'node-name': 'spare', 'driver': 'raw', 'file': {'driver': 'file', 'filename': spare}})
    g.qmp('device_add', driver='scsi-hd', drive='spare', id='hd-spare', bus='scsi0.0', **{'scsi-id': 3, 'lun': 0})
    g.run('for i in $(seq 100); do grep -q hot-plug /tmp/ev.log && break; sleep 0.1; done')
    g.qmp('device_del', id='hd-spare')
    rc, log = g.run('for i in $(seq 100); do grep -q hot-unplug /tmp/ev.log && break; sleep 0.1; done; cat /tmp/ev.log')
    r.check('events (interrupts, legacy): hot-plug of 3:0', 'hot-plug: 3:0 (transport reset, rescan)' in log, log)
    r.check('events (interrupts, legacy): hot-unplug of 3:0', 'hot-unplug: 3:0 (transport reset, removed)' in log, log)
    rc, log = g.run('p=$(cat /tmp/ev.pid); kill $p; while kill -0 $p 2>/dev/null; do sleep 0.1; done; cat /tmp/ev.log')
    r.check('events stops cleanly on SIGTERM and says how many it saw', 'events: 2 received' in log, log)

    rc, out = g.run('vscsi-uio iommu-check 2>&1')
    r.check('iommu-check on uio_pci_generic: nothing confines it, said in one line',
            rc == 1 and out.strip().count('\n') == 0 and 'no IOMMU confines it' in out, out)

    rc, out = g.run('vscsi-uio reset -t 3 -l 5 --type target')
    r.check('target reset on the legacy device', rc == 0 and 'answered FUNCTION COMPLETE' in out, out)

    check_kernel_cross(r, g, bdf)
except GuestError as e:
    r.check('the guest ran to the end', False, e)
finally:
    g.stop()
r.finish()
