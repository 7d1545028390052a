#!/usr/bin/env python3
"""Freeze and restore: a suspend cycle with the kernel's PM test mode 'devices' (every
device's suspend and resume callbacks run; virtio-pci calls the driver's freeze and
restore) tears the virtqueues down and builds them again. Data written before reads back
after, I/O started before goes on after, and hot-plug still works (event buffers are
posted again). Then the same through hibernation's freeze/thaw path."""
import time

import kmodlib
from kmodlib import Report, GuestError, make_disk, scsi_controller, scsi_disk

ko, work = kmodlib.args()
r = Report('kmod-freeze')

a = make_disk(f'{work}/a.img', 32 << 20)
b = make_disk(f'{work}/b.img', 16 << 20)
spare = make_disk(f'{work}/spare.img', 8 << 20)
qemu = scsi_controller('scsi0', num_queues=2) + scsi_disk('a', a, scsi_id=0) + scsi_disk('b', b, scsi_id=1)
g = kmodlib.guest(work, ko, qemu, smp='2')

try:
    g.start()
    rc, out = kmodlib.load(g)
    r.check('insmod virtio_scsi.ko', rc == 0, out)
    disks = kmodlib.by_target_lun(kmodlib.wait_disks(g, 2))
    da, db = disks.get((0, 0), 'sda'), disks.get((1, 0), 'sdb')
    rc, out = g.run(f'dd if=/dev/urandom of=/tmp/before bs=1M count=4 2>/dev/null && '
                    f'dd if=/tmp/before of=/dev/{db} bs=1M oflag=direct 2>/dev/null')
    r.check('data written before the freeze', rc == 0, out)

    g.run('dd if=/dev/urandom of=/tmp/pat bs=64k count=16 2>/dev/null')
    g.run_bg(f'''i=0; : > /tmp/io.bad
while [ ! -e /tmp/io.stop ]; do
  off=$(( (i % 16) * 16 ))
  dd if=/tmp/pat of=/dev/{da} bs=64k seek=$off oflag=direct 2>/dev/null || echo "write $i" >> /tmp/io.bad
  dd if=/dev/{da} of=/tmp/back bs=64k skip=$off count=16 iflag=direct 2>/dev/null || echo "read $i" >> /tmp/io.bad
  cmp -s /tmp/pat /tmp/back || echo "data $i" >> /tmp/io.bad
  i=$((i + 1)); echo $i > /tmp/io.count
done''')
    time.sleep(1)

    for cycle, (state, what) in enumerate((('freeze', 'suspend-to-idle'), ('disk', 'hibernation'))):
        before = kmodlib.stats(g)
        rc, out = g.run('echo 1 > /sys/module/suspend/parameters/pm_test_delay 2>/dev/null; '
                        f'echo devices > /sys/power/pm_test && echo {state} > /sys/power/state; echo rc=$?',
                        timeout=300)
        after = kmodlib.stats(g)
        r.check(f'{what} cycle (pm_test=devices) completes', 'rc=0' in out, out)
        r.check(f'{what}: the driver froze and restored the device',
                after.get('restores', 0) - before.get('restores', 0) == 1, after)
        rc, out = g.run(f'dd if=/dev/{db} of=/tmp/after bs=1M count=4 iflag=direct 2>/dev/null && '
                        f'cmp /tmp/before /tmp/after')
        r.check(f'{what}: data written before reads back after', rc == 0, out)
        ok, out = kmodlib.write_verify(g, db, mib=2, seed=cycle, offset_mib=8)
        r.check(f'{what}: new writes read back', ok, out)

    # Events flow again after restore: hot-plug a disk.
    g.qmp('blockdev-add', **{'node-name': 'spare', 'driver': 'raw',
                            'file': {'driver': 'file', 'filename': spare}})
    g.qmp('device_add', driver='scsi-hd', drive='spare', id='hd-spare', bus='scsi0.0', **{'scsi-id': 2, 'lun': 0})
    found = {}
    for _ in range(60):
        found = kmodlib.by_target_lun(kmodlib.scsi_disks(g))
        if (2, 0) in found:
            break
        time.sleep(0.5)
    r.check('hot-plug after restore: the new disk appears', (2, 0) in found, found)

    rc, count = g.run('cat /tmp/io.count')
    time.sleep(2)
    rc, out = g.run('touch /tmp/io.stop; sleep 2; cat /tmp/io.count; cat /tmp/io.bad')
    words = out.split()
    r.check('I/O started before the freezes went on after them, data intact',
            len(words) == 1 and count.strip().isdigit() and int(words[0]) > int(count.strip()), f'{count!r} {out!r}')
    trouble = kmodlib.kernel_trouble(g.dmesg())
    r.check('no kernel warnings, oopses or hung tasks', not trouble, '\n'.join(trouble))
except GuestError as e:
    r.check('the guest ran', False, e)
finally:
    g.stop()
r.finish()
