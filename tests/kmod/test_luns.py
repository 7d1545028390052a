#!/usr/bin/env python3
"""LUNs above 255, in one guest boot. Target 3 has disks at LUNs 255, 256, 300 and 16383 and
no LUN 0, as a user would give QEMU; the midlayer's REPORT LUNS scan names the flat-space
ones 0x4000 | lun (3:16640, 3:16684, 3:32767). Each is found with its image's size; data the
guest writes to LUNs 300 and 16383 lands in their image files on the host and reads back; a
LUN reset reaches LUN 300 (QEMU's TMF trace names the LUN it got); both are hot-removed and
re-added through QMP and come back under the same name, with their data, and never twice; a
capacity change (PARAM_CHANGE) reaches LUN 300. Finally the kernel's own virtio_scsi, loaded
in the same guest, names every disk exactly as this module did."""
import hashlib
import os
import re
import time

import kmodlib
from kmodlib import Report, GuestError, make_disk, scsi_controller, scsi_disk

ko, work = kmodlib.args()
r = Report('kmod-luns')

# (target, lun) -> (MiB, disk id); the name the midlayer gives each LUN.
layout = {(0, 0): (8, 'l0'), (3, 255): (9, 'l255'), (3, 256): (10, 'l256'), (3, 300): (16, 'l300'),
          (3, 16383): (12, 'l16383')}


def name(lun):
    return lun if lun < 256 else 0x4000 | lun


images = {}
qemu = scsi_controller('scsi0')
for (t, lun), (mib, disk) in layout.items():
    images[lun] = make_disk(f'{work}/{disk}.img', mib << 20)
    qemu += scsi_disk(disk, images[lun], scsi_id=t, lun=lun)
trace = os.path.join(work, 'tmf-trace.log')
if os.path.exists(trace):
    os.unlink(trace)
qemu += ['-trace', 'enable=virtio_scsi_tmf_req', '-D', trace]
want = {(t, name(lun)) for (t, lun) in layout}

own_ko = f'/lib/modules/{kmodlib.kernel_release()}/kernel/drivers/scsi/virtio_scsi.ko'
if not os.path.isfile(own_ko):
    r.check(f'the kernel\'s own driver is at {own_ko}', False)
    r.finish()
# The kernel's own driver goes in as a plain file outside /lib/modules, so nothing loads it
# behind the test's back.
g = kmodlib.guest(work, ko, qemu, files={'/root/kernel_virtio_scsi.ko': own_ko})


def wait_until(pred, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        found = kmodlib.by_target_lun(kmodlib.scsi_disks(g))
        if pred(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def scsi_devices():
    """Every scsi_device of target 3 (disks or not), to catch a second device for one LUN."""
    rc, out = g.run('ls /sys/bus/scsi/devices')
    return sorted(d for d in out.split() if re.match(r'^\d+:0:3:\d+$', d))


def image_md5(path, offset_mib, mib):
    with open(path, 'rb') as f:
        f.seek(offset_mib << 20)
        return hashlib.md5(f.read(mib << 20)).hexdigest()


def write_pattern(dev, seed, offset_mib, mib=2):
    """Random data to /dev/dev at offset_mib (O_DIRECT, synced); returns its md5 or ''."""
    rc, out = g.run(f'dd if=/dev/urandom of=/tmp/p{seed} bs=1M count={mib} 2>/dev/null && '
                    f'dd if=/tmp/p{seed} of=/dev/{dev} bs=1M seek={offset_mib} oflag=direct conv=fsync 2>/dev/null && '
                    f'md5sum /tmp/p{seed}', timeout=300)
    return out.split()[0] if rc == 0 and out.split() else ''


def read_md5(dev, offset_mib, mib=2):
    rc, out = g.run(f'echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/{dev} bs=1M skip={offset_mib} count={mib} '
                    f'iflag=direct 2>/dev/null | md5sum', timeout=300)
    return out.split()[0] if rc == 0 and out.split() else 'unreadable'


def wait_released(drive, timeout=30):
    """Until QEMU has let go of an unplugged disk's drive (and its image's lock)."""
    deadline = time.monotonic() + timeout
    while any(b.get('device') == drive for b in g.qmp('query-block')) and time.monotonic() < deadline:
        time.sleep(0.2)


def plug(node, path, target, lun):
    g.qmp('blockdev-add', **{'node-name': node, 'driver': 'raw', 'file': {'driver': 'file', 'filename': path}})
    g.qmp('device_add', driver='scsi-hd', drive=node, id='hd-' + node, bus='scsi0.0',
          **{'scsi-id': target, 'lun': lun})


def tmfs_seen():
    """(lun, subtype) of every TMF QEMU received so far."""
    try:
        with open(trace) as f:
            return [(int(m.group(1)), int(m.group(2)))
                    for m in re.finditer(r'virtio_scsi_tmf_req lun=(\d+) .*?subtype=(\d+)', f.read())]
    except OSError:
        return []


try:
    g.start()
    rc, out = kmodlib.load(g)
    r.check('insmod virtio_scsi.ko', rc == 0, out)
    found = wait_until(lambda f: set(f) == want)
    r.check('LUNs 255, 256, 300 and 16383 of a target without LUN 0 are found, named 255, 16640, 16684 and 32767',
            set(found) == want, found)
    sizes_ok, detail = True, ''
    for (t, lun), (mib, _) in layout.items():
        dev = found.get((t, name(lun)))
        rc, out = g.run(f'cat /sys/block/{dev}/size') if dev else (1, '')
        sizes_ok &= out.strip() == str(mib << 11)
        detail += f'{t}:{lun} {dev} {out.strip()} want {mib << 11}\n'
    r.check('each LUN is the disk QEMU has at that LUN (its image\'s size)', sizes_ok, detail)
    dmesg = g.dmesg()
    r.check('the midlayer refused no LUN', 'larger than allowed' not in dmesg and 'larger than currently' not in dmesg,
            '\n'.join(line for line in dmesg.splitlines() if 'LUN' in line))

    # Data: written in the guest, found in the host's image, read back in the guest.
    d300, d16383 = found.get((3, 16684), 'nonexistent'), found.get((3, 32767), 'nonexistent')
    md5_300 = write_pattern(d300, 300, offset_mib=3)
    md5_16383 = write_pattern(d16383, 16383, offset_mib=5)
    r.check('LUN 300: what the guest wrote is in LUN 300\'s image at that offset',
            md5_300 and image_md5(images[300], 3, 2) == md5_300, md5_300)
    r.check('LUN 16383: what the guest wrote is in LUN 16383\'s image at that offset',
            md5_16383 and image_md5(images[16383], 5, 2) == md5_16383, md5_16383)
    untouched = {lun: not any(open(images[lun], 'rb').read()) for (t, lun) in layout if lun not in (300, 16383)}
    r.check('the other images are still all zeros (no write went to another LUN)', all(untouched.values()),
            untouched)
    r.check('LUN 300 and LUN 16383 read back what was written, cold', read_md5(d300, 3) == md5_300 and
            read_md5(d16383, 5) == md5_16383)
    ok, out = kmodlib.write_verify(g, found.get((3, 16640), 'nonexistent'), mib=2, seed=256)
    r.check('LUN 256 (the first flat-space LUN) reads back what was written', ok, out)
    ok, out = kmodlib.write_verify(g, found.get((3, 255), 'nonexistent'), mib=2, seed=255)
    r.check('LUN 255 (the last peripheral-form LUN) reads back what was written', ok, out)

    # A LUN reset to LUN 300: QEMU must get it for LUN 300 and complete it.
    before, seen = kmodlib.stats(g), len(tmfs_seen())
    rc, out = g.run(f'sg_reset -N -d /dev/{d300} 2>&1', timeout=120)
    after = kmodlib.stats(g)
    new = tmfs_seen()[seen:]
    r.check('sg_reset -d on LUN 300: QEMU received LOGICAL UNIT RESET for LUN 300 and it succeeded',
            rc == 0 and new == [(300, 5)] and after.get('lun_reset', 0) == before.get('lun_reset', 0) + 1 and
            after.get('tmf_failed', 0) == before.get('tmf_failed', 0), f'rc={rc} {out}\nTMFs {new}\n{after}')

    # Hot-unplug and re-add, each under the name the scan gave it.
    for lun, disk, md5, off in ((300, 'l300', md5_300, 3), (16383, 'l16383', md5_16383, 5)):
        key = (3, name(lun))
        g.qmp('device_del', id='hd-' + disk)
        found = wait_until(lambda f: key not in f)
        r.check(f'LUN {lun} hot-unplugged: its disk goes away, the others stay', set(found) == want - {key}, found)
        wait_released(disk)
        plug(f'{disk}b', images[lun], 3, lun)
        found = wait_until(lambda f: key in f)
        r.check(f'LUN {lun} hot-plugged again: it comes back as 3:{name(lun)}', set(found) == want, found)
        devs = scsi_devices()
        r.check(f'LUN {lun}: one scsi_device per LUN of target 3, none added twice',
                len(devs) == len({d.split(':')[3] for d in devs}) and
                {int(d.split(':')[3]) for d in devs} == {name(lun) for (t, lun) in layout if t == 3}, devs)
        r.check(f'LUN {lun} re-added still holds its data', read_md5(found.get(key, 'nonexistent'), off) == md5)

    # PARAM_CHANGE for LUN 300: 16 MiB -> 20 MiB.
    d300 = found.get((3, 16684), 'nonexistent')
    g.qmp('block_resize', **{'node-name': 'l300b', 'size': 20 << 20})
    size = ''
    for _ in range(60):
        rc, size = g.run(f'cat /sys/block/{d300}/size')
        if size.strip() == str(20 << 11):
            break
        time.sleep(0.5)
    r.check('a capacity change of LUN 300 reaches its disk (PARAM_CHANGE rescans 3:16684)',
            size.strip() == str(20 << 11), size)
    r.check('the capacity change added no device', set(wait_until(lambda f: False, timeout=1)) == want)
    st = kmodlib.stats(g)
    r.check('events were handled (two unplugs, two plugs, a parameter change)', st.get('events', 0) >= 5, st)

    trouble = kmodlib.kernel_trouble(g.dmesg())
    r.check('no kernel warnings, oopses or hung tasks', not trouble, '\n'.join(trouble))

    # The kernel's own driver, for comparison: the same names.
    rc, out = g.run('rmmod virtio_scsi && insmod /root/kernel_virtio_scsi.ko')
    r.check('the kernel\'s own virtio_scsi loads in place of this one', rc == 0, out)
    theirs = wait_until(lambda f: set(f) == want)
    r.check('the kernel\'s own virtio_scsi names every LUN as this module does', set(theirs) == want, theirs)
except GuestError as e:
    r.check('the guest ran', False, e)
finally:
    g.stop()
r.finish()
