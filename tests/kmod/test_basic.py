#!/usr/bin/env python3
"""vscsi's virtio_scsi.ko in Debian's kernel, instead of the kernel's own driver: two targets
with several LUNs appear with the right addresses and sizes; a filesystem made, written,
synced, read back cold and checked with fsck; raw data verified on every LUN; sense data and
residuals reach userspace; rmmod and insmod again find the same disks and data."""
import kmodlib
from kmodlib import Report, GuestError, make_disk, scsi_controller, scsi_disk

ko, work = kmodlib.args()
r = Report('kmod-basic')

# (target, lun) -> MiB
layout = {(0, 0): 64, (0, 1): 16, (0, 2): 8, (1, 0): 24, (1, 3): 12}
qemu = scsi_controller('scsi0')
for (t, lun), mib in layout.items():
    img = make_disk(f'{work}/t{t}l{lun}.img', mib << 20)
    qemu += scsi_disk(f't{t}l{lun}', img, scsi_id=t, lun=lun, serial=f'vs-t{t}l{lun}')

g = kmodlib.guest(work, ko, qemu, ship=['ext4', 'crc32c_generic'])
try:
    g.start()
    rc, out = g.run('lsmod')
    r.check('no virtio_scsi before insmod (the kernel\'s own is not in the guest)', 'virtio_scsi' not in out, out)
    rc, out = kmodlib.load(g)
    r.check('insmod virtio_scsi.ko', rc == 0, out)
    rc, out = g.run('cat /sys/module/virtio_scsi/taint; ls /sys/bus/virtio/drivers/virtio_scsi/')
    r.check('the bound driver is ours (out-of-tree taint, bound to the device)',
            rc == 0 and 'O' in out.split()[0] and 'virtio0' in out, out)

    disks = kmodlib.wait_disks(g, len(layout))
    found = kmodlib.by_target_lun(disks)
    r.check('every LUN of both targets appears at its address', set(found) == set(layout), disks)
    sizes_ok = True
    detail = ''
    for key, dev in found.items():
        rc, out = g.run(f'cat /sys/block/{dev}/size')
        want = layout.get(key, 0) << 11
        detail += f'{key} {dev} {out.strip()} want {want}\n'
        sizes_ok &= rc == 0 and out.strip() == str(want)
    r.check('each disk has its image\'s size', sizes_ok, detail)
    st = kmodlib.stats(g)
    r.check('vscsi_stats: one request queue, commands counted', st.get('request_queues') == 1 and
            st.get('queue0', 0) > 0, st)

    # A filesystem on target 0 LUN 0: write, sync, drop caches, verify, fsck.
    fs = found.get((0, 0), 'sda')
    script = f'''set -e
modprobe crc32c_generic; modprobe ext4
/usr/bin/mke2fs -q -t ext4 -F /dev/{fs}
mkdir -p /mnt/fs && mount -t ext4 /dev/{fs} /mnt/fs
for i in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=/mnt/fs/f$i bs=64k count=$((i * 5)) 2>/dev/null; done
mkdir /mnt/fs/dir && cp /mnt/fs/f3 /mnt/fs/dir/copy
(cd /mnt/fs && md5sum f? dir/copy > /tmp/sums)
sync
umount /mnt/fs
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 /dev/{fs} /mnt/fs
(cd /mnt/fs && md5sum -c /tmp/sums)
umount /mnt/fs
e2fsck -fn /dev/{fs}
'''
    rc, out = g.run(script, timeout=600)
    r.check('ext4: files written, synced, read back cold with the same checksums, fsck clean', rc == 0, out)

    ok_all, detail = True, ''
    for i, (key, dev) in enumerate(sorted(found.items())):
        if key == (0, 0):
            continue
        ok, out = kmodlib.write_verify(g, dev, mib=4, seed=i)
        ok_all &= ok
        detail += f'{key} {dev}: {"ok" if ok else out}\n'
    r.check('raw data written and read back on every other LUN', ok_all, detail)

    # Sense data: READ(10) past the end of target 1 LUN 3 (12 MiB = 24576 blocks).
    dev = found.get((1, 3), 'sde')
    rc, sg = g.run(f'basename /sys/block/{dev}/device/scsi_generic/*')
    sg = sg.strip()
    rc, out = g.run(f'sg_raw -r 512 /dev/{sg} 28 00 00 00 ff 00 00 00 01 00 2>&1')
    r.check('a read past the end returns CHECK CONDITION with ILLEGAL REQUEST sense',
            'Check Condition' in out and 'Illegal Request' in out, out)
    # Residual: REPORT LUNS (to LUN 0) with a 256-byte allocation on target 0 (three LUNs) returns the
    # 8-byte header and three entries; the residual says the rest was not transferred.
    dev0 = found.get((0, 0), 'sda')
    rc, sg0 = g.run(f'basename /sys/block/{dev0}/device/scsi_generic/*')
    rc, out = g.run(f'sg_raw -r 256 /dev/{sg0.strip()} a0 00 00 00 00 00 00 00 01 00 00 00 2>&1')
    r.check('REPORT LUNS returns 32 of 256 bytes (the residual reaches userspace)',
            rc == 0 and 'Received 32 bytes' in out, out)
    rc, out = g.run(f'sg_inq /dev/{sg}')
    r.check('standard INQUIRY through the module', rc == 0 and 'QEMU' in out, out)

    # Unload and load again: same disks, same data.
    rc, out = g.run('rmmod virtio_scsi && ls /sys/class/scsi_disk | wc -l')
    r.check('rmmod removes every disk', rc == 0 and out.strip() == '0', out)
    rc, out = kmodlib.load(g)
    r.check('insmod again', rc == 0, out)
    disks2 = kmodlib.wait_disks(g, len(layout))
    r.check('the same LUNs appear again', set(kmodlib.by_target_lun(disks2)) == set(layout), disks2)
    fs = kmodlib.by_target_lun(disks2).get((0, 0), 'sda')
    rc, out = g.run(f'mount -t ext4 /dev/{fs} /mnt/fs && (cd /mnt/fs && md5sum -c /tmp/sums) && umount /mnt/fs '
                    f'&& e2fsck -fn /dev/{fs}', timeout=300)
    r.check('the filesystem and its files survive rmmod/insmod', rc == 0, out)

    trouble = kmodlib.kernel_trouble(g.dmesg())
    r.check('no kernel warnings, oopses or hung tasks', not trouble, '\n'.join(trouble))
except GuestError as e:
    r.check('the guest ran', False, e)
finally:
    g.stop()
r.finish()
