"""A QEMU guest running a RHEL5/CentOS5 2.6.18 kernel, for the el5 suite.

The guest is one of the kernels of an el5 assets directory (assets.py says what it holds)
with an initramfs written here: the assets' static busybox, the kernel's own virtio.ko,
virtio_ring.ko and virtio_pci.ko (and scsi_mod.ko, sd_mod.ko if it has them as modules;
/init loads them all), the modules under test (not loaded), and el5-tool. It shares the command loop and QMP of tests/qemu/vmlib.py; what
differs is what 2.6.18 lacks: no devtmpfs (the archive carries /dev/console and friends,
disks get their nodes from `el5-disks`), and a busybox without base64 or stty (commands
travel as printf escapes, el5-tool turns the console's echo off).
"""
import gzip
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'qemu'))
from vmlib import Guest, GuestError, READY  # noqa: E402
from assets import OPTIONAL_MODULES, REQUIRED_MODULES  # noqa: E402

# Bytes a command may carry as they are; everything else travels as a \0ooo escape.
PLAIN = re.compile(rb'[A-Za-z0-9_./:=,+@-]')
LINE = 900  # characters per command line, well below the tty's 4095

# Prints "H:C:T:L sdX sectors" for every disk and makes its /dev node: without devtmpfs
# or udev, a disk found later (hot-plug, rescan) has no node until someone makes it. (The
# shell's `read` must not read sysfs here: it polls first, and 2.6.18's sysfs never says
# readable.)
EL5_DISKS = r'''#!/bin/sh
for b in /sys/block/sd*; do
    [ -e "$b/dev" ] || continue
    n=${b##*/}
    dev=$(cat "$b/dev")
    # Made again only when it is missing or stale: a disk in use must keep its node.
    if [ "$(stat -c %t:%T "/dev/$n" 2>/dev/null)" != "$(printf %x:%x "${dev%:*}" "${dev#*:}")" ]; then
        rm -f "/dev/$n"
        mknod "/dev/$n" b "${dev%:*}" "${dev#*:}"
    fi
    echo "$(basename "$(readlink "$b/device")") $n $(cat "$b/size")"
done
'''

# el5-ioloop DEV: until /tmp/io.stop exists, write /tmp/io.pat (256 KiB) to one of 16 slots
# of DEV in turn, read it back and compare; rounds go to /tmp/io.count, failures to
# /tmp/io.bad, and /tmp/io.done says it has stopped.
EL5_IOLOOP = r'''#!/bin/sh
dev=$1
i=0
rm -f /tmp/io.stop /tmp/io.done
: > /tmp/io.bad
echo 0 > /tmp/io.count
while [ ! -e /tmp/io.stop ]; do
    off=$(( (i % 16) * 4 ))
    dd if=/tmp/io.pat of="$dev" bs=64k seek=$off oflag=direct 2>/dev/null || echo "write $i" >> /tmp/io.bad
    dd if="$dev" of=/tmp/io.back bs=64k skip=$off count=4 iflag=direct 2>/dev/null || echo "read $i" >> /tmp/io.bad
    cmp -s /tmp/io.pat /tmp/io.back || echo "data $i" >> /tmp/io.bad
    i=$((i + 1))
    echo $i > /tmp/io.count
done
touch /tmp/io.done
'''
GUEST_SCRIPTS = {'el5-disks': EL5_DISKS, 'el5-ioloop': EL5_IOLOOP}


class Cpio:
    """A newc archive written by hand, so device nodes need no root to make."""

    def __init__(self):
        self.data = bytearray()
        self.ino = 1

    def _entry(self, name, mode, body=b'', rdev=(0, 0)):
        fields = [self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        self.data += b'070701' + b''.join(b'%08x' % f for f in fields) + name.encode() + b'\0'
        self.data += b'\0' * (-len(self.data) % 4)
        self.data += body
        self.data += b'\0' * (-len(self.data) % 4)

    def dir(self, name):
        self._entry(name, 0o40755)

    def file(self, name, body, mode=0o644):
        self._entry(name, 0o100000 | mode, body)

    def symlink(self, name, target):
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name, major, minor):
        self._entry(name, 0o20600, rdev=(major, minor))

    def finish(self):
        self._entry('TRAILER!!!', 0)
        return bytes(self.data)


class El5Guest(Guest):
    """A 2.6.18 guest. modules: {name: .ko path}, shipped as /lib/modules/extra/<name>.ko."""

    def __init__(self, workdir, assets, release, tool, modules=None, qemu_args=(), mem='512M'):
        super().__init__(workdir, qemu_args=qemu_args, mem=mem, smp='1,maxcpus=2', hugepages=0,
                         release=release)
        self.assets = assets
        self.tool = tool
        self.shipped = dict(modules or {})
        for path in [self._kernel_image(), os.path.join(assets, 'busybox')] + \
                [self._kernel_module(m) for m in REQUIRED_MODULES]:
            if not os.path.isfile(path):
                raise GuestError(f'{path}: missing from the el5 assets')
        # The kernel's own modules /init loads, in order.
        self.boot_modules = [m for m in OPTIONAL_MODULES if os.path.isfile(self._kernel_module(m))]
        self.boot_modules += REQUIRED_MODULES

    def task_dump(self, wait=5):
        """Every task's kernel stack, from SysRq-T on the guest's keyboard (the handler prints
        to the console whatever the log level): what a guest that stopped answering is stuck on."""
        try:
            self.qmp_hmp('sendkey alt-sysrq-t')
        except (GuestError, OSError, ValueError) as e:
            return f'(no task dump: {e})'
        time.sleep(wait)
        return self.console()

    def _kernel_module(self, name):
        return os.path.join(self.assets, self.release, 'modules', name + '.ko')

    def _kernel_image(self):
        return os.path.join(self.assets, self.release, 'vmlinuz')

    def _kernel_append(self):
        # panic=1: 2.6.18 reboots (and QEMU, given -no-reboot, exits) only for a positive delay.
        return 'console=ttyS0 loglevel=1 panic=1'

    def _command_lines(self, command):
        lines, line = [], ''
        for b in command.encode():
            piece = chr(b) if PLAIN.fullmatch(bytes([b])) else '\\0%03o' % b
            if len(line) + len(piece) > LINE:  # never split an escape
                lines.append(f'C {line}\n')
                line = ''
            line += piece
        return lines + ([f'C {line}\n'] if line else [])

    def _command_decoder(self):
        return 'printf \'%b\' "$arg"'

    def _init_script(self):
        loads = '\n'.join(f'insmod /lib/modules/{m}.ko || echo "el5vm: insmod {m} failed"' for m in self.boot_modules)
        return f'''#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
{loads}
el5-tool noecho
cd /tmp
echo {READY}
{self._command_loop()}'''

    def _build_initramfs(self):
        a = Cpio()
        for d in ('bin', 'dev', 'proc', 'sys', 'tmp', 'mnt', 'lib', 'lib/modules', 'lib/modules/extra'):
            a.dir(d)
        for name, major, minor in (('console', 5, 1), ('null', 1, 3), ('zero', 1, 5), ('urandom', 1, 9),
                                   ('ttyS0', 4, 64)):
            a.chardev('dev/' + name, major, minor)
        with open(os.path.join(self.assets, 'busybox'), 'rb') as f:
            a.file('bin/busybox', f.read(), 0o755)
        applets = subprocess.run([os.path.join(self.assets, 'busybox'), '--list'], check=True,
                                 capture_output=True, text=True).stdout.split()
        for applet in applets:
            if applet != 'busybox':
                a.symlink('bin/' + applet, 'busybox')
        with open(self.tool, 'rb') as f:
            a.file('bin/el5-tool', f.read(), 0o755)
        for name, text in GUEST_SCRIPTS.items():
            a.file('bin/' + name, text.encode(), 0o755)
        for m in self.boot_modules:
            with open(self._kernel_module(m), 'rb') as f:
                a.file(f'lib/modules/{m}.ko', f.read())
        for name, path in self.shipped.items():
            with open(path, 'rb') as f:
                a.file(f'lib/modules/extra/{name}.ko', f.read())
        a.file('init', self._init_script().encode(), 0o755)
        image = os.path.join(self.workdir, 'initramfs.cpio.gz')
        with gzip.open(image, 'wb', compresslevel=6) as f:
            f.write(a.finish())
        return image
