"""Shared pieces of the qemu suite's uio tests: the data pattern, scan parsing, and checks
that every device configuration runs."""

import hashlib
import json
import os
import re
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmlib import Guest, GuestError, Report, make_disk, scsi_controller, scsi_disk  # noqa: E402,F401

MASK = (1 << 64) - 1


def pattern(seed, offset, length):
    """The bytes vscsi-uio's `write --pattern SEED` puts at byte `offset` of a disk; the same
    formula as examples/uio/pattern.hpp, written again here so the check is independent."""
    assert offset % 8 == 0 and length % 8 == 0
    out = bytearray()
    for w in range(offset // 8, (offset + length) // 8):
        z = (seed * 0x9E3779B97F4A7C15 + w) & MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out += struct.pack('<Q', z ^ (z >> 31))
    return bytes(out)


def pattern_md5(seed, offset, length):
    h = hashlib.md5()
    step = 1 << 20
    for at in range(offset, offset + length, step):
        h.update(pattern(seed, at, min(step, offset + length - at)))
    return h.hexdigest()


SCAN_LINE = re.compile(r'^\s+(\d+):(\d+)\s+(\S+)\s+.*?(\d+) blocks x (\d+) B = .*?( read-only)?\s+max transfer')


def parse_scan(out):
    """{(target, lun): {'blocks': n, 'block_size': n, 'read_only': bool, 'type': str}}"""
    found = {}
    for line in out.splitlines():
        m = SCAN_LINE.match(line)
        if m:
            found[(int(m.group(1)), int(m.group(2)))] = {
                'type': m.group(3), 'blocks': int(m.group(4)), 'block_size': int(m.group(5)),
                'read_only': bool(m.group(6))}
    return found


def bench_json(out):
    """The JSON document in `bench --json` output (progress goes to stderr, not here)."""
    start = out.find('{')
    return json.loads(out[start:out.rindex('}') + 1])


def first_function(g):
    rc, out = g.run('ls /sys/bus/pci/devices/')
    for bdf in out.split():
        rc, ids = g.run(f'cat /sys/bus/pci/devices/{bdf}/vendor /sys/bus/pci/devices/{bdf}/device')
        if ids.split()[:1] == ['0x1af4'] and ids.split()[1] in ('0x1004', '0x1048'):
            return bdf
    return None


def check_verify(r, g, what, args, size_text):
    rc, out = g.run(f'vscsi-uio verify {args}', timeout=600)
    r.check(f'{what}: verify {args} writes and reads back {size_text} identically',
            rc == 0 and f'wrote and read back {size_text}' in out and 'identical' in out, out)


def check_bad_inputs(r, g, lun_arg, capacity_blocks, read_only_arg=None):
    """Every bad input gives one line on stderr and a non-zero exit, and writes nothing."""
    tail = f'vscsi-uio read {lun_arg} --lba {capacity_blocks - 4} --count 4 -o - | md5sum'
    rc, before = g.run(tail)
    def one(what, cmd, expect, code=None):
        rc, out = g.run(cmd + ' 2>&1')
        lines = [l for l in out.splitlines() if l.strip()]
        ok = rc != 0 and len(lines) == 1 and lines[0].startswith('vscsi-uio: ') and expect in lines[0]
        if code is not None:
            ok = ok and rc == code
        r.check(f'bad input, {what}: one-line error, exit {rc}', ok, out)

    one('unknown command', 'vscsi-uio frobnicate', "unknown command 'frobnicate'", 2)
    one('unknown option', 'vscsi-uio scan --frob', "unknown option '--frob'", 2)
    one('option without its value', f'vscsi-uio read {lun_arg} --lba', 'needs a value', 2)
    one('not a number', f'vscsi-uio read {lun_arg} --lba ten --count 1', '--lba must be', 2)
    one('no such device', 'vscsi-uio scan -d 0000:00:1f.7', 'no PCI function at 0000:00:1f.7')
    one('not a PCI address', 'vscsi-uio scan -d nowhere', 'not a PCI address')
    one('LBA beyond capacity', f'vscsi-uio read {lun_arg} --lba {capacity_blocks} --count 1', 'beyond the capacity')
    one('range running past the end', f'vscsi-uio write {lun_arg} --lba {capacity_blocks - 1} --count 2 --pattern 1',
        'beyond the capacity')
    one('absent LUN', 'vscsi-uio read -t 0 -l 77 --lba 0 --count 1', 'no LUN 0:77')
    one('absent target', 'vscsi-uio inquiry -t 9 -l 0', 'no LUN 9:0')
    one('target out of range', 'vscsi-uio inquiry -t 300 -l 0', '-t must be', 2)
    one('write without a source', f'vscsi-uio write {lun_arg} --lba 0 --count 1', 'exactly one of', 2)
    one('input file too short', f'head -c 100 /dev/zero > /tmp/short; vscsi-uio write {lun_arg} --lba 0 --count 4 '
        '-i /tmp/short', 'less than 4 blocks')
    one('bad --rw', f'vscsi-uio bench {lun_arg} --rw sideways', '--rw must be', 2)
    one('bad --type', f'vscsi-uio reset {lun_arg} --type everything', '--type must be', 2)
    if read_only_arg:
        one('write to a read-only LUN', f'vscsi-uio write {read_only_arg} --lba 0 --count 1 --pattern 1', 'read-only')
        one('verify on a read-only LUN', f'vscsi-uio verify {read_only_arg} --size 4096', 'read-only')
    rc, after = g.run(tail)
    md5 = re.compile(r'\b[0-9a-f]{32}\b')
    r.check('bad inputs wrote nothing (the last blocks are unchanged)',
            rc == 0 and md5.findall(before) and md5.findall(before) == md5.findall(after), before + after)
    # No hugepages: give them all back, try, and take them again.
    one('no hugepages', 'n=$(cat /proc/sys/vm/nr_hugepages); echo 0 > /proc/sys/vm/nr_hugepages; '
        'vscsi-uio scan; rc=$?; echo $n > /proc/sys/vm/nr_hugepages; exit $rc', 'no free hugepages')
    one('not root', "grep -q '^nobody:' /etc/passwd || echo 'nobody:x:65534:65534::/:/bin/sh' >> /etc/passwd; "
        "su nobody -s /bin/sh -c 'vscsi-uio scan'", 'needs root')


def kernel_disk_cmd(bdf, target, lun):
    """Shell that prints the kernel's block device for target:lun of the function at bdf
    (other functions may have a disk at the same target and LUN)."""
    return (f'for d in /sys/class/scsi_disk/*:0:{target}:{lun}; do readlink -f $d | grep -q "/{bdf}/" && '
            f'ls $d/device/block/ && break; done')


def check_kernel_cross(r, g, bdf, target=0, lun=0, block_size=512, while_kernel_owns=None):
    """Data vscsi-uio writes is read back by Linux's own virtio_scsi driver in the same guest,
    and data the kernel writes is read back by vscsi-uio, byte for byte. The function is
    handed from its userspace driver (uio_pci_generic or vfio-pci) to virtio-pci and back in
    between, through vscsi-uio itself."""
    first_lba = (4 << 20) // block_size   # 2 MiB of pattern at 4 MiB
    count = (2 << 20) // block_size
    lun_arg = f'-d {bdf} -t {target} -l {lun}'
    rc, out = g.run(f'vscsi-uio write {lun_arg} --lba {first_lba} --count {count} --pattern 4242')
    r.check('cross-check: vscsi-uio wrote 2 MiB of pattern', rc == 0, out)
    rc, out = g.run(f'vscsi-uio unbind {bdf} && for m in virtio_pci virtio_scsi sd_mod; do modprobe $m; done && '
                    f'for i in $(seq 100); do [ -n "$({kernel_disk_cmd(bdf, target, lun)})" ] && break;'
                    f' sleep 0.1; done; readlink /sys/bus/pci/devices/{bdf}/driver')
    r.check('unbind hands the function back; virtio-pci takes it', rc == 0 and out.strip().endswith('/virtio-pci'), out)
    rc, sd = g.run(kernel_disk_cmd(bdf, target, lun))
    sd = sd.strip()
    rc, out = g.run(f'dd if=/dev/{sd} bs=1M skip=4 count=2 2>/dev/null | md5sum')
    r.check(f'cross-check: the kernel (/dev/{sd}) reads back what vscsi-uio wrote, byte for byte',
            rc == 0 and sd != '' and pattern_md5(4242, 4 << 20, 2 << 20) in out, out)
    rc, out = g.run(f'head -c 3145728 /dev/urandom > /tmp/k && dd if=/tmp/k of=/dev/{sd} bs=1M seek=8 conv=fsync '
                    '2>/dev/null')
    r.check('cross-check: the kernel wrote 3 MiB of random data', rc == 0 and sd != '', out)
    if while_kernel_owns:
        while_kernel_owns(sd)
    rc, out = g.run(f'vscsi-uio bind {bdf} --force')
    r.check('bind --force takes the function back from virtio-pci', rc == 0 and 'taken from virtio-pci' in out, out)
    rc, out = g.run(f'vscsi-uio read {lun_arg} --lba {(8 << 20) // block_size} '
                    f'--count {(3 << 20) // block_size} -o /tmp/k2 && cmp /tmp/k /tmp/k2')
    r.check('cross-check: vscsi-uio reads back what the kernel wrote, byte for byte', rc == 0, out)
