#!/usr/bin/env python3
"""The guest harness itself: boot, commands and exit codes, modules, hugepages, QMP hot-plug.

Everything the qemu and kmod suites rely on, checked once against the real QEMU and
Debian's kernel.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmlib import Guest, GuestError, Report, kernel_release, make_disk, scsi_controller, scsi_disk  # noqa: E402

work = sys.argv[1] if len(sys.argv) > 1 else '/tmp/vscsi-harness'
os.makedirs(work, exist_ok=True)
r = Report('harness')
disk = make_disk(os.path.join(work, 'd0.img'), 8 << 20)
spare = make_disk(os.path.join(work, 'd1.img'), 4 << 20)

g = Guest(os.path.join(work, 'guest'), modules=['virtio_pci'], ship_modules=['virtio_scsi', 'sd_mod'],
          qemu_args=scsi_controller('scsi0') + scsi_disk('d0', disk),
          hugepages=32)
try:
    g.start()
    print(f'guest booted in {g.boot_seconds:.1f} s', flush=True)
    rc, out = g.run('uname -r')
    r.check('the guest runs the host\'s Debian kernel', rc == 0 and out.strip() == kernel_release(), out)
    rc, out = g.run('echo hello; echo oops >&2; exit 3')
    r.check('exit codes and both output streams come back', rc == 3 and 'hello' in out and 'oops' in out, out)
    long = 'x' * 9000
    rc, out = g.run(f'v={long}; echo ${{#v}}')
    r.check('a command longer than one console line runs whole', rc == 0 and out.strip() == '9000', out)
    rc, out = g.run('grep HugePages_Total /proc/meminfo; mount | grep -c hugetlbfs')
    r.check('hugepages reserved and hugetlbfs mounted', rc == 0 and 'HugePages_Total:      32' in out, out)
    rc, out = g.run('cat /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device')
    r.check('the virtio-scsi function is on the bus (1af4:1004)', '0x1af4' in out and '0x1004' in out, out)
    rc, out = g.run('lsmod')
    r.check('boot modules loaded, shipped ones not', 'virtio_pci' in out and 'virtio_scsi' not in out, out)
    rc, out = g.run('modprobe virtio_scsi && modprobe sd_mod && sleep 2 && cat /sys/block/sd*/size')
    r.check('a shipped module loads with modprobe and finds the disk', rc == 0 and '16384' in out.split(), out)
    status = g.qmp('query-status')
    r.check('QMP answers', status.get('status') == 'running', status)
    g.qmp('blockdev-add', **{'node-name': 'spare', 'driver': 'raw',
                            'file': {'driver': 'file', 'filename': spare}})
    g.qmp('device_add', driver='scsi-hd', drive='spare', id='hd-spare', bus='scsi0.0', **{'scsi-id': 1, 'lun': 0})
    rc, out = g.run('for i in $(seq 50); do ls /sys/block | grep -c sd | grep -q 2 && break; sleep 0.2; done;'
                    ' cat /sys/block/sd*/size')
    r.check('QMP device_add hot-plugs a disk the guest sees', '8192' in out.split(), out)
    r.check('human monitor commands work', 'hd-spare' in g.qmp_hmp('info qtree'))
    try:
        g.run('sleep 30', timeout=2)
        r.check('a command past its timeout raises', False)
    except GuestError as e:
        r.check('a command past its timeout raises', 'timed out' in str(e), e)
except GuestError as e:
    r.check('the guest ran', False, e)
finally:
    g.stop()
r.finish()
