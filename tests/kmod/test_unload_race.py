#!/usr/bin/env python3
"""Module unload never races pending event work: over and over, the host hot-plugs and
hot-unplugs disks through QMP while the guest is running rmmod, so that event buffers
complete and event work is queued or running while the driver is being removed. The module
is loaded with event_delay_ms=300, so that work is still pending when removal starts, and
the kernel poisons freed memory (slub_debug): work left behind runs on a freed host or on
unloaded module text and oopses the guest (a build whose remove skips cancelling the
event work fails this test in its first rounds). Afterwards the module loads again and
works."""
import time

import kmodlib
from kmodlib import Report, GuestError, make_disk, scsi_controller, scsi_disk

ko, work = kmodlib.args()
r = Report('kmod-unload-race')
ROUNDS = 12

a = make_disk(f'{work}/a.img', 16 << 20)
spares = [make_disk(f'{work}/s{i}.img', 4 << 20) for i in range(3)]
qemu = scsi_controller('scsi0') + scsi_disk('a', a, scsi_id=0)
# Freed memory is poisoned, so work that runs on a freed host faults at once.
g = kmodlib.guest(work, ko, qemu, smp='2', kernel_args='slub_debug=FZPU')
plugged = set()


def plug(i):
    g.qmp('device_add', driver='scsi-hd', drive=f's{i}', id=f'hd-s{i}', bus='scsi0.0',
          **{'scsi-id': 1 + i % 2, 'lun': i})
    plugged.add(i)


def unplug(i):
    g.qmp('device_del', id=f'hd-s{i}')
    plugged.discard(i)


try:
    g.start()
    for i, path in enumerate(spares):
        g.qmp('blockdev-add', **{'node-name': f's{i}', 'driver': 'raw',
                                'file': {'driver': 'file', 'filename': path}})
    unloaded = 0
    alive = True
    for n in range(ROUNDS):
        # Each event waits 300 ms before it is handled: work is pending while rmmod runs.
        rc, out = kmodlib.load(g, 'event_delay_ms=300')
        if rc != 0:
            r.check(f'round {n}: insmod', False, out)
            break
        kmodlib.wait_disks(g, 1 + len(plugged), timeout=20)
        # rmmod starts after a varying delay while a burst of events is on its way; it is
        # refused (module in use) while the event work holds a device, so it retries.
        g.run_bg(f'sleep 0.{n % 4}{n % 3}; until rmmod virtio_scsi 2>/dev/null; do sleep 0.05; done; '
                 f'echo done > /tmp/rmmod.{n}')
        for i in range(len(spares)):
            if i in plugged:
                unplug(i)
            else:
                plug(i)
        for i in range(len(spares)):
            if n % 2 and i in plugged:
                unplug(i)
        rc, out = g.run(f'for t in $(seq 600); do [ -e /tmp/rmmod.{n} ] && break; sleep 0.1; done; '
                        f'cat /tmp/rmmod.{n}; lsmod | grep -c "^virtio_scsi " || true', timeout=120)
        if 'done' not in out or out.split()[-1] != '0':
            r.check(f'round {n}: rmmod finished with events in flight', False, out)
            alive = False
            break
        unloaded += 1
    r.check(f'{ROUNDS} rounds of rmmod with hot-plug events in flight', unloaded == ROUNDS, f'{unloaded} rounds')
    rc, out = g.run('echo alive')
    r.check('the guest is alive', rc == 0 and 'alive' in out, out)
    trouble = kmodlib.kernel_trouble(g.dmesg())
    r.check('no oops, warning or hung task in the kernel log', not trouble, '\n'.join(trouble))

    rc, out = kmodlib.load(g)
    r.check('insmod once more', rc == 0, out)
    found = kmodlib.by_target_lun(kmodlib.wait_disks(g, 1 + len(plugged)))
    want = {(0, 0)} | {(1 + i % 2, i) for i in plugged}
    r.check('exactly the disks the host has now are there', set(found) == want, f'{found} want {want}')
    ok, out = kmodlib.write_verify(g, found.get((0, 0), 'sda'), mib=2)
    r.check('and they work', ok, out)
    # Events still flow: toggle one spare and watch the guest follow.
    if 0 in plugged:
        unplug(0)
    else:
        plug(0)
    want = {(0, 0)} | {(1 + i % 2, i) for i in plugged}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = kmodlib.by_target_lun(kmodlib.scsi_disks(g))
        if set(found) == want:
            break
        time.sleep(0.5)
    r.check('hot-plug events still reach the reloaded module', set(found) == want, f'{found} want {want}')
except GuestError as e:
    r.check('the guest ran', False, e)
finally:
    g.stop()
r.finish()
