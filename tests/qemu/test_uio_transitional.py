#!/usr/bin/env python3
"""vscsi-uio against QEMU's transitional virtio-scsi device (legacy and modern interfaces)
with packed virtqueues offered (packed=on): the modern interface runs packed rings by
default and split ones with --ring split, the legacy interface split ones only.

One boot: two targets with several LUNs (512- and 4096-byte blocks, a read-only one, a
slow one), both interfaces and both ring formats, polled and interrupt completion, 64 MiB
write and verify, scan against the topology given to QEMU, hot-plug, hot-unplug and
capacity change through QMP seen by `events`, aborts and resets, every bad input, and the
cross-check with the kernel's own virtio_scsi driver (on packed rings too) in the same
guest.

usage: test_uio_transitional.py VSCSI_UIO WORKDIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uio_common import (Guest, GuestError, Report, bench_json, check_bad_inputs, check_kernel_cross,  # noqa: E402
                        check_verify, first_function, make_disk, parse_scan, pattern_md5, scsi_controller, scsi_disk)

binary, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
r = Report('uio-transitional')

MiB = 1 << 20
d00 = make_disk(os.path.join(work, 't0l0.img'), 80 * MiB)
d01 = make_disk(os.path.join(work, 't0l1.img'), 16 * MiB)
d02 = make_disk(os.path.join(work, 't0l2.img'), 4 * MiB)
d11 = make_disk(os.path.join(work, 't1l1.img'), 32 * MiB)
spare = make_disk(os.path.join(work, 'spare.img'), 2 * MiB)
# The topology QEMU is given, which scan must report back: (target, lun) -> blocks, block size, read-only.
topology = {
    (0, 0): (80 * MiB // 512, 512, False),
    (0, 1): (16 * MiB // 4096, 4096, False),
    (0, 2): (4 * MiB // 512, 512, True),
    (1, 1): (32 * MiB // 4096, 4096, False),
    (1, 4): ((1 << 30) // 512, 512, False),
}
qemu = scsi_controller('scsi0', kind='transitional', num_queues=2, extra='packed=on')
qemu += scsi_disk('d00', d00, scsi_id=0, lun=0, serial='t0l0')
qemu += scsi_disk('d01', d01, scsi_id=0, lun=1, logical_block_size=4096)
qemu += ['-drive', f'file={d02},if=none,id=d02,format=raw,readonly=on',
         '-device', 'scsi-hd,drive=d02,id=hd-d02,bus=scsi0.0,scsi-id=0,lun=2']
qemu += scsi_disk('d11', d11, scsi_id=1, lun=1, logical_block_size=4096)
# A slow LUN (every command takes 2 s): something is still in flight when the abort arrives.
qemu += ['-drive', 'driver=null-co,read-zeroes=on,latency-ns=2000000000,size=1G,if=none,id=slow',
         '-device', 'scsi-hd,drive=slow,id=hd-slow,bus=scsi0.0,scsi-id=1,lun=4']

g = Guest(os.path.join(work, 'guest'), modules=['uio_pci_generic'],
          ship_modules=['virtio_pci', 'virtio_scsi', 'sd_mod', 'ext4', 'crc32c_generic'],
          binaries=[binary], qemu_args=qemu, hugepages=64)
try:
    g.start()
    print(f'guest booted in {g.boot_seconds:.1f} s', flush=True)
    bdf = first_function(g)
    r.check('the guest has the virtio-scsi function', bdf is not None)

    rc, out = g.run('vscsi-uio list')
    r.check('list shows the function, unbound, transitional, 2 queues',
            rc == 0 and bdf in out and '1af4:1004' in out and 'transitional' in out and out.split()[-1] == '2', out)
    rc, out = g.run('vscsi-uio bind')
    r.check('bind (no -d: the only function) binds uio_pci_generic',
            rc == 0 and 'bound to uio_pci_generic' in out and os.path.basename('/dev/uio0') in out, out)
    rc, out = g.run(f'readlink /sys/bus/pci/devices/{bdf}/driver; ls /dev/uio0')
    r.check('sysfs agrees: driver is uio_pci_generic, /dev/uio0 exists',
            rc == 0 and out.split()[0].endswith('/uio_pci_generic'), out)

    # ---- scan against the topology ----
    for itf, rings in (('--modern', 'packed'), ('--modern --ring split', 'split'), ('--legacy', 'split')):
        rc, out = g.run(f'vscsi-uio scan {itf}', timeout=120)
        found = parse_scan(out)
        got = {k: (v['blocks'], v['block_size'], v['read_only']) for k, v in found.items()}
        r.check(f'scan {itf}: 2 targets, 5 LUNs, sizes, block sizes and read-only as given to QEMU',
                rc == 0 and got == topology and 'scan: 2 targets, 5 LUNs' in out, out)
        which = itf.split()[0][2:]
        r.check(f'scan {itf}: uses the {which} interface and {rings} rings',
                f'{which} interface, {rings} rings' in out, out)
    rc, out = g.run('vscsi-uio scan')
    r.check('the interface and rings are chosen automatically: modern and packed when offered',
            rc == 0 and 'modern interface, packed rings' in out, out)
    rc, out = g.run('vscsi-uio scan --ring packed --legacy 2>&1')
    r.check('--ring packed with --legacy: refused in one line, exit 2',
            rc == 2 and 'needs the modern interface' in out and len(out.strip().splitlines()) == 1, out)
    rc, out = g.run('vscsi-uio scan --ring ring 2>&1')
    r.check('--ring with a bad value: refused in one line, exit 2',
            rc == 2 and "--ring is split or packed, not 'ring'" in out and len(out.strip().splitlines()) == 1, out)

    rc, out = g.run('vscsi-uio inquiry -t 0 -l 0')
    r.check('inquiry: QEMU HARDDISK with the serial given', rc == 0 and 'QEMU HARDDISK' in out and 't0l0' in out, out)
    rc, out = g.run('vscsi-uio capacity -t 1 -l 1')
    r.check('capacity: 8192 blocks x 4096 B', rc == 0 and '8192 blocks x 4096 B' in out, out)
    rc, out = g.run('vscsi-uio capacity')
    r.check('-t/-l default to the first LUN (0:0)',
            rc == 0 and out.lstrip().startswith('0:0 ') and '163840 blocks' in out, out)

    # ---- data: 64 MiB on both interfaces and ring formats, both completions, both block sizes ----
    check_verify(r, g, 'modern, packed, polled', '-t 0 -l 0 --size 64m --seed 11', '64.0 MiB')
    check_verify(r, g, 'modern, split, polled', '-t 0 -l 0 --size 64m --seed 17 --ring split', '64.0 MiB')
    check_verify(r, g, 'legacy, polled', '-t 0 -l 0 --size 64m --seed 12 --legacy', '64.0 MiB')
    check_verify(r, g, 'modern, packed, interrupts', '-t 0 -l 1 --size 16m --seed 13 --irq', '16.0 MiB')
    check_verify(r, g, 'modern, split, interrupts', '-t 0 -l 1 --size 16m --seed 18 --irq --ring split', '16.0 MiB')
    check_verify(r, g, 'legacy, interrupts', '-t 1 -l 1 --size 8m --seed 14 --legacy --irq', '8.0 MiB')
    check_verify(r, g, 'modern, packed, hybrid', '-t 0 -l 1 --size 16m --seed 15 --hybrid', '16.0 MiB')
    check_verify(r, g, 'legacy, hybrid', '-t 1 -l 1 --size 8m --seed 16 --legacy --hybrid', '8.0 MiB')

    # The pattern on the disk is what the formula says, recomputed here independently.
    rc, out = g.run('vscsi-uio write -t 0 -l 0 --lba 4096 --count 2048 --pattern 99 && '
                    'vscsi-uio read -t 0 -l 0 --lba 4096 --count 2048 -o - | md5sum')
    r.check('write --pattern puts exactly the documented bytes on the disk',
            rc == 0 and pattern_md5(99, 4096 * 512, 2048 * 512) in out, out)
    rc, out = g.run('head -c 65536 /dev/urandom > /tmp/in && vscsi-uio write -t 1 -l 1 --lba 3 --count 16 -i /tmp/in'
                    ' --legacy && vscsi-uio read -t 1 -l 1 --lba 3 --count 16 -o /tmp/out && cmp /tmp/in /tmp/out')
    r.check('write -i FILE then read -o FILE round-trips 4096-byte blocks byte for byte', rc == 0, out)

    # ---- bench ----
    for args in ('--rw randread --bs 4k --iodepth 32 --runtime 1', '--rw randwrite --bs 4k --iodepth 8 --runtime 1',
                 '--rw randrw --bs 8k --iodepth 16 --runtime 1 --queues 2',
                 '--rw randrw --bs 8k --iodepth 16 --runtime 1 --queues 2 --ring split',
                 '--rw read --bs 64k --iodepth 4 --runtime 1 --legacy',
                 '--rw randread --bs 4k --iodepth 1 --runtime 1 --irq',
                 '--rw randread --bs 4k --iodepth 1 --runtime 1 --hybrid'):
        rc, out = g.run(f'vscsi-uio bench -t 0 -l 0 {args} --json', timeout=120)
        try:
            job = bench_json(out)['jobs'][0]
            ios = job['read']['total_ios'] + job['write']['total_ios']
            lat = job['read']['lat_ns'] if job['read']['total_ios'] else job['write']['lat_ns']
            ok = rc == 0 and job['error'] == 0 and ios > 0 and lat['mean'] > 0 and '99.000000' in lat['percentile']
        except (ValueError, KeyError, IndexError):
            ok = False
        r.check(f'bench {args}: fio-style JSON, I/O done, no errors', ok, out)
        try:
            want = 'split' if '--legacy' in args or '--ring split' in args else 'packed'
            ring_ok = bench_json(out)['jobs'][0]['job options']['ring'] == want
        except (ValueError, KeyError, IndexError):
            ring_ok = False
        r.check(f'bench {args}: says it ran {want} rings', ring_ok, out)
    # Interrupts at depth 32: every wake-up acknowledges and unmasks while completions keep
    # coming. An unmask the device model does not see moves its INTx line out of step: the
    # line stays high with nobody asserting it, the guest kernel disables the IRQ after
    # 100,000 spurious interrupts, and every wait after that runs into its 100 ms timeout.
    for mode in ('--irq', '--hybrid'):
        rc, out = g.run(f'vscsi-uio bench -t 0 -l 0 --rw randread --bs 4k --iodepth 32 --runtime 4 {mode} --json',
                        timeout=120)
        try:
            p99_ms = bench_json(out)['jobs'][0]['read']['lat_ns']['percentile']['99.000000'] / 1e6
        except (ValueError, KeyError, IndexError):
            p99_ms = None
        r.check(f'bench --iodepth 32 {mode}: no wait ran into its timeout (p99 {p99_ms} ms)',
                rc == 0 and p99_ms is not None and p99_ms < 50, out)
    irq = g.run(f'cat /sys/bus/pci/devices/{bdf}/irq')[1].strip().splitlines()[-1]
    rc, out = g.run('dmesg | grep -iE "nobody cared|disabling irq"; true')
    r.check('the guest kernel never disabled the IRQ as spurious', out.strip() == '', out)
    pic = g.qmp_hmp('info pic')
    irr = next((l.split()[1:] for l in pic.splitlines() if l.strip().startswith('IRR')), [])
    r.check(f'with the device idle its INTx line (IOAPIC pin {irq}) is low', irq.isdigit() and irq not in irr, pic)
    rc, out = g.run('vscsi-uio bench -t 0 -l 0 --rw randread --runtime 1')
    r.check('bench text output has IOPS and latency percentiles', rc == 0 and 'IOPS' in out and 'p99' in out, out)
    rc, out = g.run('vscsi-uio bench -t 0 -l 0 --rw randread --runtime 1 --hybrid')
    r.check('bench says which completion mode it ran', rc == 0 and 'hybrid' in out, out)
    rc, out = g.run('vscsi-uio scan --irq --hybrid 2>&1')
    r.check('--irq with --hybrid is refused in one line', rc != 0 and 'exclude each other' in out
            and len(out.strip().splitlines()) == 1, out)

    # ---- events: hot-plug, hot-unplug, capacity change ----
    g.run_bg('vscsi-uio events --timeout 60 > /tmp/ev.log 2>&1 & echo $! > /tmp/ev.pid')
    g.run('for i in $(seq 100); do grep -q listening /tmp/ev.log && break; sleep 0.1; done')
    rc, out = g.run('vscsi-uio scan 2>&1')
    r.check('a second vscsi-uio on a device in use is refused in one line',
            rc == 1 and 'is in use by another vscsi-uio' in out and out.strip().count('\n') == 0, out)
    rc, out = g.run('vscsi-uio unbind 2>&1')
    r.check('unbind of a device in use is refused', rc == 1 and 'in use by a running vscsi-uio' in out, out)
    g.qmp('blockdev-add', **{'node-name': 'spare', 'driver': 'raw',
                            'file': {'driver': 'file', 'filename': spare}})
    g.qmp('device_add', driver='scsi-hd', drive='spare', id='hd-spare', bus='scsi0.0', **{'scsi-id': 0, 'lun': 7})
    g.run('for i in $(seq 100); do grep -q hot-plug /tmp/ev.log && break; sleep 0.1; done')
    g.qmp('block_resize', **{'node-name': 'spare', 'size': 4 * MiB})
    g.run('for i in $(seq 100); do grep -q "parameter change" /tmp/ev.log && break; sleep 0.1; done')
    g.qmp('device_del', id='hd-spare')
    rc, log = g.run('for i in $(seq 100); do grep -q hot-unplug /tmp/ev.log && break; sleep 0.1; done; cat /tmp/ev.log')
    r.check('events: hot-plug of 0:7 (QMP device_add) shows up, with the new disk',
            'hot-plug: 0:7 (transport reset, rescan), QEMU QEMU HARDDISK 4096 blocks x 512 B' in log, log)
    r.check('events: capacity change (QMP block_resize) shows up as a parameter change',
            'parameter change: 0:7 asc 2ah ascq 09h (capacity data has changed, now 8192 blocks' in log, log)
    r.check('events: hot-unplug (QMP device_del) shows up', 'hot-unplug: 0:7 (transport reset, removed)' in log, log)
    r.check('events: the AN subscription on the control queue is answered', 'AN subscribe on 0:0 answered OK' in log, log)
    rc, log = g.run('p=$(cat /tmp/ev.pid); kill $p; while kill -0 $p 2>/dev/null; do sleep 0.1; done; cat /tmp/ev.log')
    r.check('events stops cleanly on SIGTERM and says how many it saw', 'events: 3 received' in log, log)

    # ---- task management ----
    for rings in ('packed', 'split'):
        rc, out = g.run(f'vscsi-uio reset -t 1 -l 4 --type abort --ring {rings}', timeout=120)
        r.check(f'abort on {rings} rings: ABORT TASK of a command in flight completes, and the command ends aborted',
                rc == 0 and 'answered FUNCTION COMPLETE' in out and 'the command ended aborted' in out, out)
    rc, out = g.run('vscsi-uio reset -t 0 -l 1 --type lun', timeout=120)
    r.check('LUN reset completes', rc == 0 and 'LOGICAL UNIT RESET on 0:1 answered FUNCTION COMPLETE' in out, out)
    rc, out = g.run('vscsi-uio reset -t 1 -l 1 --type target --legacy', timeout=120)
    r.check('target reset completes', rc == 0 and 'I_T NEXUS RESET on 1:1 answered FUNCTION COMPLETE' in out, out)
    for rings in ('packed', 'split'):
        rc, out = g.run(f'vscsi-uio reset --type device --ring {rings}', timeout=120)
        r.check(f'device reset on {rings} rings re-initialises, and the LUN answers afterwards',
                rc == 0 and 'afterwards: good' in out, out)

    # ---- bad input ----
    check_bad_inputs(r, g, '-t 0 -l 0', 80 * MiB // 512, read_only_arg='-t 0 -l 2')

    # ---- the kernel's own driver in the same guest ----
    def refusals(sd):
        rc, out = g.run('vscsi-uio bind')
        r.check('bind without --force refuses a function the kernel drives',
                rc != 0 and 'is bound to virtio-pci; add --force' in out, out)
        rc, sd1 = g.run('ls /sys/class/scsi_disk/*:0:0:1/device/block/')
        sd1 = sd1.strip()
        rc, out = g.run(f'modprobe crc32c_generic && modprobe ext4 && mke2fs -q -F -b 4096 /dev/{sd1} >/dev/null && '
                        f'mount /dev/{sd1} /mnt && vscsi-uio bind --force')
        r.check('bind --force still refuses while a disk is mounted', rc != 0 and 'is mounted on /mnt' in out, out)
        rc, out = g.run('umount /mnt')
        r.check('unmounted again', rc == 0, out)

    check_kernel_cross(r, g, bdf, while_kernel_owns=refusals)
except GuestError as e:
    r.check('the guest ran to the end', False, e)
finally:
    g.stop()
r.finish()
