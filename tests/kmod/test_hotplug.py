#!/usr/bin/env python3
"""Hot-plug and hot-unplug through QMP while I/O to another disk goes on: a LUN on an
existing target, a new target (its LUN 0 scans the whole target), a second LUN on it, a
capacity change (PARAM_CHANGE rescans the LUN), unplugging LUN 0 while another LUN of the
target stays, and a burst of plugs and unplugs with a single event buffer, which makes the
device drop events: EVENTS_MISSED rescans the host and removes the LUNs that vanished."""
import time

import kmodlib
from kmodlib import Report, GuestError, make_disk, scsi_controller, scsi_disk

ko, work = kmodlib.args()
r = Report('kmod-hotplug')

a = make_disk(f'{work}/a.img', 32 << 20)
b = make_disk(f'{work}/b.img', 16 << 20)
spares = {n: make_disk(f'{work}/{n}.img', 8 << 20) for n in ('h05', 'h20', 'h23')}
burst = {f'x{lun}': make_disk(f'{work}/x{lun}.img', (4 + lun) << 20) for lun in range(6)}
qemu = scsi_controller('scsi0') + scsi_disk('a', a, scsi_id=0, lun=0) + scsi_disk('b', b, scsi_id=1, lun=0)

g = kmodlib.guest(work, ko, qemu)


def plug(node, path, target, lun):
    g.qmp('blockdev-add', **{'node-name': node, 'driver': 'raw',
                            'file': {'driver': 'file', 'filename': path}})
    g.qmp('device_add', driver='scsi-hd', drive=node, id='hd-' + node, bus='scsi0.0',
          **{'scsi-id': target, 'lun': lun})


def unplug(node):
    g.qmp('device_del', id='hd-' + node)


def wait_until(pred, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        found = kmodlib.by_target_lun(kmodlib.scsi_disks(g))
        if pred(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


try:
    g.start()
    rc, out = kmodlib.load(g)
    r.check('insmod virtio_scsi.ko', rc == 0, out)
    found = wait_until(lambda f: len(f) == 2)
    r.check('two disks at boot', set(found) == {(0, 0), (1, 0)}, found)
    io_dev = found.get((0, 0), 'sda')

    # I/O that must keep going, and keep its data, through everything below.
    g.run('dd if=/dev/urandom of=/tmp/pat bs=64k count=16 2>/dev/null')
    g.run_bg(f'''i=0; : > /tmp/io.bad
while [ ! -e /tmp/io.stop ]; do
  off=$(( (i % 16) * 16 ))
  dd if=/tmp/pat of=/dev/{io_dev} bs=64k seek=$off oflag=direct 2>/dev/null || echo "write $i" >> /tmp/io.bad
  dd if=/dev/{io_dev} of=/tmp/back bs=64k skip=$off count=16 iflag=direct 2>/dev/null || echo "read $i" >> /tmp/io.bad
  cmp -s /tmp/pat /tmp/back || echo "data $i" >> /tmp/io.bad
  i=$((i + 1)); echo $i > /tmp/io.count
done''')

    plug('h05', spares['h05'], 0, 5)
    found = wait_until(lambda f: (0, 5) in f)
    r.check('a LUN hot-plugged on an existing target appears', (0, 5) in found, found)

    plug('h20', spares['h20'], 2, 0)
    found = wait_until(lambda f: (2, 0) in f)
    r.check('LUN 0 of a new target appears (the target is scanned)', (2, 0) in found, found)
    plug('h23', spares['h23'], 2, 3)
    found = wait_until(lambda f: (2, 3) in f)
    r.check('a second LUN of the new target appears', (2, 3) in found, found)
    ok, out = kmodlib.write_verify(g, found.get((2, 0), 'nonexistent'), mib=2, seed=20)
    r.check('a hot-plugged disk reads back what was written', ok, out)

    # Capacity change: 8 MiB -> 12 MiB, reported by the device as PARAM_CHANGE.
    dev = found.get((0, 5), 'nonexistent')
    g.qmp('block_resize', **{'node-name': 'h05', 'size': 12 << 20})
    size = ''
    for _ in range(60):
        rc, size = g.run(f'cat /sys/block/{dev}/size')
        if size.strip() == str(12 << 11):
            break
        time.sleep(0.5)
    r.check('a capacity change reaches the disk (PARAM_CHANGE rescans the LUN)', size.strip() == str(12 << 11),
            size)

    unplug('h05')
    found = wait_until(lambda f: (0, 5) not in f)
    r.check('a hot-unplugged LUN goes away', (0, 5) not in found, found)

    # LUN 0 leaves, LUN 3 of the same target stays.
    unplug('h20')
    found = wait_until(lambda f: (2, 0) not in f)
    r.check('unplugging LUN 0 removes it (target rescan) and keeps LUN 3', (2, 0) not in found and (2, 3) in found,
            found)
    ok, out = kmodlib.write_verify(g, found.get((2, 3), 'nonexistent'), mib=2, seed=23)
    r.check('the remaining LUN of that target still works', ok, out)
    unplug('h23')
    found = wait_until(lambda f: (2, 3) not in f)
    r.check('the last LUN of the target goes away', set(found) == {(0, 0), (1, 0)}, found)

    rc, count = g.run('cat /tmp/io.count')
    time.sleep(2)
    rc, count2 = g.run('touch /tmp/io.stop; sleep 1; cat /tmp/io.count; cat /tmp/io.bad')
    lines = count2.split()
    r.check('I/O to the other disk went on through every plug and unplug, data intact',
            count.strip().isdigit() and len(lines) == 1 and int(lines[0]) > int(count.strip()) > 5,
            f'before {count!r} after {count2!r}')
    st = kmodlib.stats(g)
    r.check('events were handled (vscsi_stats)', st.get('events', 0) >= 7, st)

    # One event buffer: a burst of plugs outruns it; the device reports EVENTS_MISSED.
    rc, out = g.run('rmmod virtio_scsi')
    r.check('rmmod', rc == 0, out)
    rc, out = kmodlib.load(g, 'event_buffers=1')
    r.check('insmod with event_buffers=1', rc == 0, out)
    wait_until(lambda f: len(f) == 2)
    for lun, node in enumerate(burst):
        plug(node, burst[node], 3, lun)
    want = {(0, 0), (1, 0)} | {(3, lun) for lun in range(6)}
    found = wait_until(lambda f: set(f) == want, timeout=60)
    r.check('a burst of six hot-plugs: every LUN appears', set(found) == want, found)
    st = kmodlib.stats(g)
    r.check('the burst overflowed the event queue and the host was rescanned', st.get('scans', 0) >= 1, st)
    sizes_ok, detail = True, ''
    for lun in range(6):
        dev = found.get((3, lun))
        rc, out = g.run(f'cat /sys/block/{dev}/size') if dev else (1, '')
        sizes_ok &= out.strip() == str((4 + lun) << 11)
        detail += f'3:{lun} {dev} {out.strip()}\n'
    r.check('each LUN found by the rescan is the right disk', sizes_ok, detail)
    scans_before = st.get('scans', 0)
    for node in burst:
        unplug(node)
    found = wait_until(lambda f: set(f) == {(0, 0), (1, 0)}, timeout=60)
    r.check('a burst of six hot-unplugs: every LUN goes away', set(found) == {(0, 0), (1, 0)}, found)
    st = kmodlib.stats(g)
    r.check('LUNs that vanished while events were missed were found and removed',
            st.get('scans', 0) > scans_before and st.get('removals', 0) >= 1, st)
    ok, out = kmodlib.write_verify(g, found.get((1, 0), 'nonexistent'), mib=2, seed=9)
    r.check('the remaining disks still work', ok, out)

    trouble = kmodlib.kernel_trouble(g.dmesg())
    r.check('no kernel warnings, oopses or hung tasks', not trouble, '\n'.join(trouble))
except GuestError as e:
    r.check('the guest ran', False, e)
finally:
    g.stop()
r.finish()
