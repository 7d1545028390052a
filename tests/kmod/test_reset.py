#!/usr/bin/env python3
"""The error handlers, driven for real: a command held back by I/O throttling times out and
is aborted (ABORT TASK succeeds once the device lets go of it); one held back for good makes
the abort time out and the midlayer escalate to a LUN reset; sg_reset drives the device,
target, bus and host reset handlers. QEMU's own trace of the TMFs it received confirms each
one reached the device, and the disks keep working (and keep their data) after every step.
Last, DEVICE_NEEDS_RESET: the module's test hook sends one malformed request, QEMU sets the
status bit and stops processing, and the module resets and re-initialises the device with
I/O running; the I/O goes on with its data intact."""
import os
import re
import time

import kmodlib
from kmodlib import Report, GuestError, make_disk, scsi_controller, scsi_disk

ko, work = kmodlib.args()
r = Report('kmod-reset')

a = make_disk(f'{work}/a.img', 32 << 20)
b = make_disk(f'{work}/b.img', 16 << 20)
trace = os.path.join(work, 'tmf-trace.log')
if os.path.exists(trace):
    os.unlink(trace)
qemu = (scsi_controller('scsi0') + scsi_disk('a', a, scsi_id=0, lun=0) + scsi_disk('b', b, scsi_id=1, lun=0) +
        ['-trace', 'enable=virtio_scsi_tmf_req', '-D', trace])
g = kmodlib.guest(work, ko, qemu)

TMF_NAMES = {0: 'ABORT_TASK', 4: 'I_T_NEXUS_RESET', 5: 'LOGICAL_UNIT_RESET'}


def tmfs_seen():
    """The TMF subtypes QEMU received so far, in order."""
    try:
        with open(trace) as f:
            return [int(m.group(1)) for m in re.finditer(r'virtio_scsi_tmf_req.*?subtype=(\d+)', f.read())]
    except OSError:
        return []


def throttle(bps_rd):
    g.qmp('block_set_io_throttle', id='hd-b', bps=0, bps_rd=bps_rd, bps_wr=0, iops=0, iops_rd=0, iops_wr=0)


def delta(before, after, key):
    return after.get(key, 0) - before.get(key, 0)


try:
    g.start()
    rc, out = kmodlib.load(g, 'tmf_timeout=3')
    r.check('insmod virtio_scsi.ko tmf_timeout=3', rc == 0, out)
    disks = kmodlib.by_target_lun(kmodlib.wait_disks(g, 2))
    r.check('two disks', set(disks) == {(0, 0), (1, 0)}, disks)
    da, db = disks.get((0, 0), 'sda'), disks.get((1, 0), 'sdb')
    rc, sgb = g.run(f'basename /sys/block/{db}/device/scsi_generic/*')
    sgb = sgb.strip()

    # Background I/O on disk A, verified, through every reset below.
    g.run('dd if=/dev/urandom of=/tmp/pat bs=64k count=16 2>/dev/null')
    g.run_bg(f'''i=0; : > /tmp/io.bad
while [ ! -e /tmp/io.stop ]; do
  off=$(( (i % 16) * 16 ))
  dd if=/tmp/pat of=/dev/{da} bs=64k seek=$off oflag=direct 2>/dev/null || echo "write $i" >> /tmp/io.bad
  dd if=/dev/{da} of=/tmp/back bs=64k skip=$off count=16 iflag=direct 2>/dev/null || echo "read $i" >> /tmp/io.bad
  cmp -s /tmp/pat /tmp/back || echo "data $i" >> /tmp/io.bad
  i=$((i + 1)); echo $i > /tmp/io.count
done''')
    ok, out = kmodlib.write_verify(g, db, mib=4, seed=1, offset_mib=8)
    r.check('disk B works before the resets', ok, out)

    # 1. Abort that succeeds: a 16 KiB read fills the 4 KiB/s read bucket, so the next read
    # waits about 4 s; it times out after 2 s, and the device answers the ABORT TASK when
    # the throttled request finishes.
    before, seen = kmodlib.stats(g), len(tmfs_seen())
    throttle(4096)
    rc, out = g.run(f'dd if=/dev/{db} of=/dev/null bs=16k count=1 iflag=direct 2>&1; '
                    f'sg_raw --timeout=2 -r 512 /dev/{sgb} 28 00 00 00 00 40 00 00 01 00 2>&1', timeout=120)
    after = kmodlib.stats(g)
    new = tmfs_seen()[seen:]
    r.check('a timed-out command is aborted: the abort handler ran and the device got ABORT TASK',
            delta(before, after, 'abort') >= 1 and 0 in new, f'{out}\n{after}\nTMFs: {new}')
    r.check('the abort succeeded (no LUN reset needed)', delta(before, after, 'lun_reset') == 0 and
            delta(before, after, 'tmf_failed') == 0, after)
    throttle(0)
    ok, out = kmodlib.write_verify(g, db, mib=4, seed=2, offset_mib=8)
    r.check('disk B works after the abort', ok, out)

    # 2. Abort that cannot succeed: the read waits about 100 s behind 400 KiB at 4 KiB/s,
    # ABORT TASK gets no answer within tmf_timeout, and the midlayer escalates.
    before, seen = kmodlib.stats(g), len(tmfs_seen())
    throttle(4096)
    rc, out = g.run(f'dd if=/dev/{db} of=/dev/null bs=400k count=1 iflag=direct 2>&1; '
                    f'sg_raw --timeout=2 -r 512 /dev/{sgb} 28 00 00 00 00 80 00 00 01 00 2>&1', timeout=300)
    after = kmodlib.stats(g)
    new = tmfs_seen()[seen:]
    r.check('an abort without an answer times out and escalates to a LUN reset',
            delta(before, after, 'abort') >= 1 and delta(before, after, 'tmf_failed') >= 1 and
            delta(before, after, 'lun_reset') >= 1 and 5 in new, f'{out}\n{after}\nTMFs: {new}')
    throttle(0)
    ok, out = kmodlib.write_verify(g, db, mib=4, seed=3, offset_mib=8)
    r.check('disk B works after the escalation', ok, out)

    # 3. sg_reset, without escalation (-N): each handler by itself.
    for flag, key, subtypes, what in (('-d', 'lun_reset', [5], 'device (LUN) reset'),
                                      ('-t', 'target_reset', [4], 'target reset (I_T NEXUS RESET)'),
                                      ('-b', 'bus_reset', [4, 4], 'bus reset (I_T NEXUS RESET per target)'),
                                      ('-H', 'host_reset', [], 'host reset (device reset and re-initialisation)')):
        before, seen = kmodlib.stats(g), len(tmfs_seen())
        rc, out = g.run(f'sg_reset -N {flag} /dev/{db} 2>&1', timeout=120)
        after = kmodlib.stats(g)
        new = tmfs_seen()[seen:]
        r.check(f'sg_reset {flag}: the {what} handler ran and succeeded',
                rc == 0 and delta(before, after, key) == 1 and delta(before, after, 'tmf_failed') == 0,
                f'rc={rc} {out}\n{after}')
        r.check(f'sg_reset {flag}: QEMU received {[TMF_NAMES[s] for s in subtypes] or "no TMF"}',
                new == subtypes, f'TMFs seen: {new}')
        if key == 'host_reset':
            r.check('host reset re-initialised the device', delta(before, after, 'restores') == 1, after)
        ok, out = kmodlib.write_verify(g, db, mib=4, seed=10 + len(key), offset_mib=8)
        r.check(f'disk B works after sg_reset {flag}', ok, out)

    # 4. DEVICE_NEEDS_RESET, with the I/O on disk A running: one read goes out with a header a
    # byte short; QEMU stops the device and sets NEEDS_RESET; the module resets it.
    before = kmodlib.stats(g)
    rc, count_before = g.run('cat /tmp/io.count')
    rc, out = g.run('echo 1 > /sys/module/virtio_scsi/parameters/test_malformed_requests && '
                    f'dd if=/dev/{db} of=/dev/null bs=4k count=16 iflag=direct 2>&1 && '
                    'cat /sys/module/virtio_scsi/parameters/test_malformed_requests', timeout=300)
    after = kmodlib.stats(g)
    r.check('a read during DEVICE_NEEDS_RESET completes (retried after the reset); the hook fired once',
            rc == 0 and out.split()[-1:] == ['0'], out)
    with open(os.path.join(work, 'guest', 'console.log'), errors='replace') as f:
        qemu_said = 'wrong size for virtio-scsi headers' in f.read()
    r.check('QEMU took the short header for a malformed request', qemu_said)
    r.check('the module saw DEVICE_NEEDS_RESET once and re-initialised the device, without the error handler',
            delta(before, after, 'needs_reset') == 1 and delta(before, after, 'restores') == 1 and
            delta(before, after, 'host_reset') == 0 and delta(before, after, 'abort') == 0, after)
    dmesg = g.dmesg()
    r.check('dmesg shows the reset', 'device needs reset: resetting and re-initialising it' in dmesg,
            dmesg[-2000:])
    time.sleep(2)
    rc, count_after = g.run('cat /tmp/io.count; cat /tmp/io.bad')
    r.check('I/O on disk A went on after the reset, intact',
            count_after.split()[:1] != count_before.split()[:1] and len(count_after.split()) == 1,
            f'{count_before!r} {count_after!r}')
    ok, out = kmodlib.write_verify(g, db, mib=4, seed=40, offset_mib=8)
    r.check('disk B works after the reset', ok, out)

    rc, count = g.run('cat /tmp/io.count')
    time.sleep(2)
    rc, out = g.run('touch /tmp/io.stop; sleep 2; cat /tmp/io.count; cat /tmp/io.bad')
    words = out.split()
    r.check('I/O on disk A went on through every reset, every block read back intact',
            len(words) == 1 and count.strip().isdigit() and int(words[0]) > int(count.strip()), f'{count!r} {out!r}')
    trouble = kmodlib.kernel_trouble(g.dmesg())
    r.check('no kernel warnings, oopses or hung tasks', not trouble, '\n'.join(trouble))
except GuestError as e:
    r.check('the guest ran', False, e)
finally:
    g.stop()
r.finish()
