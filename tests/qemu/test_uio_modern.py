#!/usr/bin/env python3
"""vscsi-uio against a modern-only virtio-scsi device (disable-legacy=on, 1af4:1048) with
128-entry virtqueues, 4 request queues and packed virtqueues offered (packed=on): packed
rings by default, split ones with --ring split; a guest with two vCPUs (bench --threads runs a
thread per request queue).

usage: test_uio_modern.py VSCSI_UIO WORKDIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uio_common import (Guest, GuestError, Report, bench_json, check_kernel_cross, check_verify,  # noqa: E402
                        first_function, make_disk, parse_scan, scsi_controller, scsi_disk)

binary, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
r = Report('uio-modern')
MiB = 1 << 20
disks = {(0, 0): (72 * MiB, 512), (0, 3): (8 * MiB, 4096), (2, 0): (64 * MiB, 4096), (2, 1): (4 * MiB, 512)}
qemu = scsi_controller('scsi0', kind='modern', num_queues=4, virtqueue_size=128, extra='packed=on')
for (t, l), (size, bs) in disks.items():
    path = make_disk(os.path.join(work, f't{t}l{l}.img'), size)
    qemu += scsi_disk(f'd{t}{l}', path, scsi_id=t, lun=l, logical_block_size=bs)
topology = {k: (size // bs, bs, False) for k, (size, bs) in disks.items()}

g = Guest(os.path.join(work, 'guest'), modules=['uio_pci_generic'], ship_modules=['virtio_pci', 'virtio_scsi', 'sd_mod'],
          binaries=[binary], qemu_args=qemu, hugepages=64, smp='2')
try:
    g.start()
    print(f'guest booted in {g.boot_seconds:.1f} s', flush=True)
    bdf = first_function(g)
    rc, out = g.run(f'vscsi-uio bind -d {bdf} && vscsi-uio list')
    r.check('list: 1af4:1048, modern, 4 queues, bound to uio_pci_generic',
            rc == 0 and '1af4:1048' in out and 'modern' in out and 'uio_pci_generic' in out and out.split()[-1] == '4',
            out)
    rc, out = g.run(f'vscsi-uio scan -d {bdf}', timeout=120)
    got = {k: (v['blocks'], v['block_size'], v['read_only']) for k, v in parse_scan(out).items()}
    r.check('scan: 2 targets, 4 LUNs as given to QEMU', rc == 0 and got == topology and 'scan: 2 targets, 4 LUNs' in out,
            out)
    r.check('scan: modern interface, packed rings, 4 request queues of 128 entries',
            'modern interface, packed rings, 4 request queues x 128 entries' in out, out)
    rc, out = g.run(f'vscsi-uio scan -d {bdf} --ring split', timeout=120)
    got = {k: (v['blocks'], v['block_size'], v['read_only']) for k, v in parse_scan(out).items()}
    r.check('scan --ring split: the same LUNs over split rings',
            rc == 0 and got == topology and 'modern interface, split rings, 4 request queues x 128 entries' in out, out)
    rc, out = g.run('vscsi-uio scan --legacy 2>&1')
    r.check('--legacy on a modern-only device: refused in one line',
            rc == 1 and out.strip().count('\n') == 0 and 'offers no legacy virtio-pci interface' in out, out)

    check_verify(r, g, 'polled, 512-byte blocks', '-t 0 -l 0 --size 64m --seed 21', '64.0 MiB')
    check_verify(r, g, 'polled, 4096-byte blocks, split rings', '-t 2 -l 0 --size 64m --seed 22 --ring split',
                 '64.0 MiB')
    check_verify(r, g, 'interrupts, 4096-byte blocks', '-t 0 -l 3 --seed 23 --irq', '8.0 MiB')

    rc, out = g.run('vscsi-uio bench -t 2 -l 0 --rw randrw --bs 4k --iodepth 64 --runtime 1 --queues 4 --json',
                    timeout=120)
    try:
        job = bench_json(out)['jobs'][0]
        ok = rc == 0 and job['error'] == 0 and job['job options']['queues'] == '4' and \
            job['read']['total_ios'] > 0 and job['write']['total_ios'] > 0
    except (ValueError, KeyError, IndexError):
        ok = False
    r.check('bench over 4 request queues at depth 64 (more than a 128-entry ring half holds), packed rings',
            ok and job['job options']['ring'] == 'packed', out)
    rc, out = g.run('vscsi-uio bench -t 2 -l 0 --rw randrw --bs 4k --iodepth 64 --runtime 1 --queues 4 --json '
                    '--ring split', timeout=120)
    try:
        job = bench_json(out)['jobs'][0]
        ok = rc == 0 and job['error'] == 0 and job['job options']['ring'] == 'split' and \
            job['read']['total_ios'] > 0 and job['write']['total_ios'] > 0
    except (ValueError, KeyError, IndexError):
        ok = False
    r.check('the same bench on split rings', ok, out)
    rc, out = g.run('vscsi-uio bench -t 0 -l 0 --rw randread --iodepth 200 --runtime 1 2>&1')
    r.check('bench --iodepth beyond cmd_per_lun (128): refused', rc == 2 and 'exceeds' in out, out)

    # A thread per request queue, each with its own queue handle, results merged.
    rc, out = g.run('vscsi-uio bench -t 2 -l 0 --rw randrw --bs 4k --iodepth 16 --runtime 1 --threads 2 --json',
                    timeout=120)
    try:
        job = bench_json(out)['jobs'][0]
        per = job['thread_iops']
        ok = rc == 0 and job['error'] == 0 and job['job options']['threads'] == '2' and \
            job['job options']['queues'] == '2' and len(per) == 2 and min(per) > 0 and \
            job['read']['total_ios'] > 0 and job['write']['total_ios'] > 0 and \
            abs(job['read']['iops'] + job['write']['iops'] - sum(per)) < 0.2 * sum(per)
    except (ValueError, KeyError, IndexError, TypeError):
        ok = False
    r.check('bench --threads 2: two threads, a request queue each, merged in --json', ok, out)
    rc, out = g.run('vscsi-uio bench -t 0 -l 0 --rw randread --iodepth 8 --runtime 1 --threads 4', timeout=120)
    r.check('bench --threads 4 on the 4 request queues',
            rc == 0 and 'threads=4 (a queue each)' in out and out.count('thread ') == 4 and 'errors: 0' in out, out)
    rc, out = g.run('vscsi-uio bench -t 0 -l 0 --runtime 1 --threads 5 2>&1')
    r.check('bench --threads 5 on a device with 4 request queues: refused',
            rc == 2 and 'needs a request queue per thread' in out, out)
    rc, out = g.run('vscsi-uio bench -t 0 -l 0 --runtime 1 --threads 2 --iodepth 100 2>&1')
    r.check('bench --threads 2 --iodepth 100 (200 > cmd_per_lun 128): refused', rc == 2 and 'exceeds' in out, out)
    rc, out = g.run('vscsi-uio bench -t 0 -l 0 --runtime 1 --threads 2 --hybrid 2>&1')
    r.check('bench --threads with --hybrid through uio (one INTx line for all queues): refused',
            rc == 2 and 'needs an interrupt vector per queue' in out and 'INTx (uio)' in out, out)

    rc, out = g.run('vscsi-uio reset -t 2 -l 1 --type lun')
    r.check('LUN reset on the modern device', rc == 0 and 'answered FUNCTION COMPLETE' in out, out)

    check_kernel_cross(r, g, bdf, target=2, lun=0, block_size=4096)
except GuestError as e:
    r.check('the guest ran to the end', False, e)
finally:
    g.stop()
r.finish()
