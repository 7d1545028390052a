"""Shared pieces of the kmod suite: a guest that runs Debian's kernel with vscsi's
virtio_scsi.ko instead of the kernel's own, and the checks every test program repeats.

Usage from a test program:  python3 test_x.py <virtio_scsi.ko> <work dir>
"""
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'qemu'))
from vmlib import (Guest, GuestError, Report, kernel_release, make_disk,  # noqa: E402,F401
                   scsi_controller, scsi_disk)

# Programs the tests run in the guest (copied with their libraries).
TOOLS = ['sg_reset', 'sg_raw', 'sg_inq', 'mke2fs', 'e2fsck', 'fio']
OURS = '/lib/modules/extra/virtio_scsi.ko'


def args():
    """(module path, work dir) from the command line; exits with a clear message if absent."""
    if len(sys.argv) != 3:
        print(f'usage: {sys.argv[0]} VIRTIO_SCSI_KO WORK_DIR', file=sys.stderr)
        sys.exit(2)
    ko, work = sys.argv[1], sys.argv[2]
    if not os.path.isfile(ko):
        print(f'{ko}: no such module (build it: meson compile -C <build> virtio_scsi.ko)', file=sys.stderr)
        sys.exit(2)
    os.makedirs(work, exist_ok=True)
    return os.path.abspath(ko), os.path.abspath(work)


def module_release(ko):
    """The kernel release a .ko was built for (its vermagic)."""
    out = subprocess.run(['modinfo', '-F', 'vermagic', ko], capture_output=True, text=True).stdout
    return out.split()[0] if out.split() else ''


def tool_paths(names):
    paths = []
    for n in names:
        p = shutil.which(n) or shutil.which(n, path='/usr/sbin:/sbin')
        if not p:
            raise GuestError(f'{n} not found on the host: run scripts/setup (sg3-utils, e2fsprogs, fio)')
        paths.append(p)
    return paths


def guest(work, ko, qemu_args, name='guest', smp='1,maxcpus=2', mem='1G', ship=(), tools=TOOLS,
          kernel_args='', files=None):
    """A Guest with our module at /lib/modules/extra/virtio_scsi.ko, not loaded yet; files
    maps more guest paths to host files."""
    release = kernel_release()
    built_for = module_release(ko)
    if built_for != release:
        raise GuestError(f'{ko} was built for {built_for!r} but the guest kernel is {release!r}: '
                         f'configure with -Dkernel_dir=/lib/modules/{release}/build')
    files = dict(files or {})
    for p in tool_paths(tools):
        files['/usr/bin/' + os.path.basename(p)] = p
    return Guest(os.path.join(work, name), modules=['virtio_pci'],
                 ship_modules=['scsi_mod', 'sd_mod', 'sg'] + list(ship),
                 extra_modules={'virtio_scsi': ko}, files=files, qemu_args=qemu_args,
                 smp=smp, mem=mem, hugepages=0, kernel_args=kernel_args)


def load(g, params=''):
    """insmod our module (dependencies through modprobe); returns (rc, output)."""
    rel = g.release
    return g.run(f'modprobe scsi_mod && modprobe sd_mod && modprobe sg && modprobe virtio_ring && '
                 f'insmod /lib/modules/{rel}/extra/virtio_scsi.ko {params}')


def wait_disks(g, n, timeout=30):
    """Wait until exactly n SCSI disks exist; returns their H:C:T:L -> sdX map."""
    deadline = time.monotonic() + timeout
    disks = {}
    while time.monotonic() < deadline:
        disks = scsi_disks(g)
        if len(disks) == n:
            return disks
        time.sleep(0.5)
    return disks


def scsi_disks(g):
    """{'H:C:T:L': 'sdX'} for every SCSI disk the guest has now."""
    rc, out = g.run('for d in /sys/class/scsi_disk/*; do [ -e "$d" ] || continue; '
                    'echo "$(basename $d) $(ls $d/device/block 2>/dev/null)"; done')
    disks = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.match(r'^\d+:\d+:\d+:\d+$', parts[0]):
            disks[parts[0]] = parts[1]
    return disks


def by_target_lun(disks):
    """{(target, lun): 'sdX'}."""
    out = {}
    for hctl, dev in disks.items():
        _, _, t, lun = (int(x) for x in hctl.split(':'))
        out[(t, lun)] = dev
    return out


def stats(g):
    """Our module's counters (/sys/class/scsi_host/host*/vscsi_stats), summed over hosts,
    per host under 'hostN'."""
    rc, out = g.run('for h in /sys/class/scsi_host/host*; do [ -e $h/vscsi_stats ] && '
                    'echo "== $(basename $h)" && cat $h/vscsi_stats; done; true')
    total, hosts, cur = {}, {}, None
    for line in out.splitlines():
        if line.startswith('== '):
            cur = line[3:].strip()
            hosts[cur] = {}
            continue
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and cur:
            hosts[cur][parts[0]] = int(parts[1])
            total[parts[0]] = total.get(parts[0], 0) + int(parts[1])
    total['hosts'] = hosts
    return total


def kernel_trouble(dmesg):
    """Lines of a kernel log that mean the kernel itself went wrong."""
    bad = re.compile(r'BUG:|Oops|general protection|WARNING:|Call Trace|KASAN|use-after-free|'
                     r'list_(add|del) corruption|kernel BUG|refcount_t|INFO: task .* blocked')
    return [line for line in dmesg.splitlines() if bad.search(line)]


def write_verify(g, dev, mib=4, seed=1, offset_mib=0):
    """Write a pattern to /dev/dev with O_DIRECT, drop caches, read it back; True if equal."""
    cmd = (f'dd if=/dev/urandom of=/tmp/pat.{seed} bs=1M count={mib} 2>/dev/null && '
           f'dd if=/tmp/pat.{seed} of=/dev/{dev} bs=1M seek={offset_mib} oflag=direct conv=fsync 2>/dev/null && '
           f'echo 3 > /proc/sys/vm/drop_caches && '
           f'dd if=/dev/{dev} of=/tmp/back.{seed} bs=1M skip={offset_mib} count={mib} iflag=direct 2>/dev/null && '
           f'cmp /tmp/pat.{seed} /tmp/back.{seed} && rm -f /tmp/pat.{seed} /tmp/back.{seed}')
    rc, out = g.run(cmd, timeout=300)
    return rc == 0, out
