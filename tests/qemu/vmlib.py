"""A QEMU guest for vscsi's end-to-end suites (qemu, kmod), from Debian's own packages.

The guest is Debian's kernel (/boot/vmlinuz-*) with an initramfs built here: busybox, the
kernel modules a test asks for (with their dependencies, depmod'ed so `modprobe` works),
the project's programs with every shared library they need, and an /init that runs a small
command loop on the serial console. The host sends shell commands over the serial line and
reads their output and exit code back; QMP (a unix socket) does hot-plug.

Only the Python standard library is used, so a fresh Debian 12 machine needs nothing but
the packages scripts/setup installs.
"""

import base64
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

READY = '@@VMLIB-READY@@'
DONE = re.compile(r'@@VMLIB-DONE (\d+) (\d+)@@')
# The tty line discipline takes at most 4095 bytes per line in canonical mode; commands go
# over in base64 chunks well below that.
CHUNK = 2048


class GuestError(Exception):
    """The guest did not answer in time, died, or could not be built."""


def kernel_release():
    """The newest Debian kernel that has both an image in /boot and its modules."""
    found = []
    for image in glob.glob('/boot/vmlinuz-*'):
        release = image[len('/boot/vmlinuz-'):]
        if os.path.isdir(f'/lib/modules/{release}/kernel'):
            found.append(release)
    if not found:
        raise GuestError('no kernel in /boot with modules in /lib/modules: install linux-image-amd64 '
                         '(scripts/setup does)')

    def version_key(release):
        return [int(x) if x.isdigit() else x for x in re.split(r'[.-]', release)]

    return sorted(found, key=version_key)[-1]


def make_disk(path, size_bytes):
    """A sparse raw disk image of exactly size_bytes."""
    with open(path, 'wb') as f:
        f.truncate(size_bytes)
    return path


# A q35 guest whose PCI functions sit behind an emulated Intel IOMMU, each in an IOMMU group of
# its own (functions behind a conventional PCI bridge share one), with interrupt remapping.
# The IOMMU device must come before the functions it translates for; the guest kernel needs
# IOMMU_KERNEL_ARGS, and a virtio device uses the IOMMU only with iommu_platform=on.
IOMMU_MACHINE = ['-machine', 'q35', '-device', 'intel-iommu,intremap=on,caching-mode=on']
IOMMU_KERNEL_ARGS = 'intel_iommu=on'
# vfio-pci with its dependencies, and the type1 IOMMU backend, which nothing depends on.
VFIO_MODULES = ['vfio_pci', 'vfio_iommu_type1']


def scsi_controller(ctrl_id, kind='transitional', num_queues=1, virtqueue_size=None, extra=''):
    """-device args for a virtio-scsi PCI function: transitional (1af4:1004, legacy and modern
    interfaces), modern (1af4:1048 only) or legacy (no modern capabilities)."""
    opts = [f'virtio-scsi-pci,id={ctrl_id}', f'num_queues={num_queues}']
    if kind == 'modern':
        opts.append('disable-legacy=on')
    elif kind == 'legacy':
        opts.append('disable-modern=on')
    elif kind != 'transitional':
        raise ValueError(f'unknown controller kind {kind!r}')
    if virtqueue_size:
        opts.append(f'virtqueue_size={virtqueue_size}')
    if extra:
        opts.append(extra)
    return ['-device', ','.join(opts)]


def scsi_disk(disk_id, path, bus='scsi0.0', scsi_id=0, lun=0, logical_block_size=512, fmt='raw',
              serial=None):
    """-drive and -device args for a scsi-hd on a virtio-scsi bus."""
    dev = [f'scsi-hd,drive={disk_id},id=hd-{disk_id},bus={bus},scsi-id={scsi_id},lun={lun}',
           f'logical_block_size={logical_block_size}', f'physical_block_size={logical_block_size}']
    if serial:
        dev.append(f'serial={serial}')
    return ['-drive', f'file={path},if=none,id={disk_id},format={fmt},cache=unsafe',
            '-device', ','.join(dev)]


class Report:
    """Checks of one test program; finish() prints a closing 'N passed, N failed' line."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def check(self, what, cond, detail=''):
        if cond:
            self.passed += 1
            print(f'ok   {self.name}: {what}', flush=True)
        else:
            self.failed += 1
            text = f'FAIL {self.name}: {what}'
            if detail:
                text += '\n' + '\n'.join('     | ' + line for line in str(detail).rstrip().splitlines()[-40:])
            print(text, flush=True)
        return bool(cond)

    def finish(self):
        print(f'{self.name}: {self.passed} passed, {self.failed} failed', flush=True)
        sys.exit(1 if self.failed or not self.passed else 0)


def _run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


class Guest:
    """One QEMU guest. Use as a context manager, or call start() and stop()."""

    def __init__(self, workdir, modules=(), ship_modules=(), extra_modules=None, binaries=(),
                 files=None, qemu_args=(), mem='1G', smp='1,maxcpus=2', hugepages=64,
                 kernel_args='', release=None):
        self.workdir = os.path.abspath(workdir)
        self.modules = list(modules)
        self.ship_modules = list(ship_modules)
        self.extra_modules = dict(extra_modules or {})
        self.binaries = list(binaries)
        self.files = dict(files or {})
        self.qemu_args = list(qemu_args)
        self.mem = mem
        self.smp = smp
        self.hugepages = hugepages
        self.kernel_args = kernel_args
        self.release = release or kernel_release()
        self.proc = None
        self.qmp_sock = None
        self.boot_seconds = None
        self._buf = ''
        self._cond = threading.Condition()
        self._eof = False
        self._seq = 0
        self._log = None
        self.qmp_events = []  # asynchronous QMP events seen so far (DEVICE_DELETED, ...)

    # ---- the initramfs ----

    def _module_path(self, name):
        try:
            path = _run(['modinfo', '-k', self.release, '-n', name]).strip()
        except subprocess.CalledProcessError:
            raise GuestError(f'kernel module {name!r} not found for {self.release}')
        return path if os.path.isfile(path) else None  # None: built into the kernel

    def _with_dependencies(self, names):
        order, seen = [], set()

        def visit(name):
            key = name.replace('-', '_')
            if key in seen:
                return
            seen.add(key)
            path = self._module_path(name)
            if path is None:
                return
            deps = _run(['modinfo', '-k', self.release, '-F', 'depends', name]).strip()
            for dep in filter(None, deps.split(',')):
                visit(dep)
            order.append(path)

        for n in names:
            visit(n)
        return order

    def _copy_with_libraries(self, root, binary, dest):
        os.makedirs(os.path.dirname(root + dest), exist_ok=True)
        shutil.copy2(binary, root + dest)
        try:
            out = subprocess.run(['ldd', binary], capture_output=True, text=True).stdout
        except OSError:
            out = ''
        for line in out.splitlines():
            m = re.search(r'(/\S+) \(0x', line)
            if not m:
                continue
            lib = m.group(1)
            target = root + lib
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(os.path.realpath(lib), target)

    def _build_initramfs(self):
        root = os.path.join(self.workdir, 'initramfs')
        shutil.rmtree(root, ignore_errors=True)
        for d in ('bin', 'sbin', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'run', 'mnt',
                  'etc', 'root', 'lib64', f'lib/modules/{self.release}/extra'):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        busybox = shutil.which('busybox') or '/bin/busybox'
        if not os.path.exists(busybox):
            raise GuestError('busybox not found: install busybox-static (scripts/setup does)')
        shutil.copy2(busybox, os.path.join(root, 'bin/busybox'))

        moddir = f'/lib/modules/{self.release}'
        for path in self._with_dependencies(self.modules + self.ship_modules):
            rel = os.path.relpath(path, moddir)
            os.makedirs(os.path.dirname(os.path.join(root, moddir[1:], rel)), exist_ok=True)
            shutil.copy2(path, os.path.join(root, moddir[1:], rel))
        for f in ('modules.builtin', 'modules.builtin.modinfo', 'modules.order'):
            if os.path.exists(os.path.join(moddir, f)):
                shutil.copy2(os.path.join(moddir, f), os.path.join(root, moddir[1:], f))
        for name, path in self.extra_modules.items():
            shutil.copy2(path, os.path.join(root, moddir[1:], 'extra', name + '.ko'))
        subprocess.run(['depmod', '-b', root, self.release], check=True, capture_output=True)

        for b in self.binaries:
            self._copy_with_libraries(root, b, '/usr/bin/' + os.path.basename(b))
        for dest, src in self.files.items():
            if os.access(src, os.X_OK) and not os.path.isdir(src):
                self._copy_with_libraries(root, src, dest)
            else:
                os.makedirs(os.path.dirname(root + dest), exist_ok=True)
                shutil.copy2(src, root + dest)

        with open(os.path.join(root, 'etc/passwd'), 'w') as f:
            f.write('root:x:0:0:root:/root:/bin/sh\n')
        with open(os.path.join(root, 'init'), 'w') as f:
            f.write(self._init_script())
        os.chmod(os.path.join(root, 'init'), 0o755)

        image = os.path.join(self.workdir, 'initramfs.cpio')
        files = subprocess.run(['find', '.', '-print0'], cwd=root, check=True, capture_output=True).stdout
        with open(image, 'wb') as out:
            subprocess.run(['cpio', '--null', '-o', '-H', 'newc', '--quiet'], cwd=root, input=files,
                           stdout=out, check=True)
        return image

    def _init_script(self):
        boot_modules = ' '.join(m.replace('-', '_') for m in self.modules)
        return f'''#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/hugepages
mount -t devpts devpts /dev/pts
mount -t hugetlbfs hugetlbfs /dev/hugepages
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
dmesg -n 1
for m in {boot_modules}; do modprobe "$m" || echo "vmlib: modprobe $m failed"; done
stty -F /dev/ttyS0 -echo 2>/dev/null
cd /root
echo {READY}
{self._command_loop()}'''

    # ---- what another guest kind changes (tests/el5 boots RHEL5 kernels) ----

    def _kernel_image(self):
        return f'/boot/vmlinuz-{self.release}'

    def _kernel_append(self):
        return f'console=ttyS0 loglevel=1 panic=-1 hugepages={self.hugepages} {self.kernel_args}'.strip()

    def _command_lines(self, command):
        """The "C <chunk>" lines that carry a command to the init script's loop."""
        encoded = base64.b64encode(command.encode()).decode()
        return [f'C {encoded[i:i + CHUNK]}\n' for i in range(0, len(encoded), CHUNK)]

    def _command_decoder(self):
        """Shell that turns $arg of a "C" line back into the command's text."""
        return 'echo "$arg" | base64 -d'

    def _command_loop(self):
        """The end of /init: "C <chunk>" lines accumulate a command, "E <n>" runs it and
        answers with its exit code (DONE). Output goes to the console as the command writes it."""
        return f'''cmd=/tmp/.vmlib-cmd
: > $cmd
while read -r kind arg; do
    case "$kind" in
    C) {self._command_decoder()} >> $cmd ;;
    E) sh $cmd < /dev/null; rc=$?; : > $cmd; echo "@@VMLIB-DONE $arg $rc@@" ;;
    esac
done
poweroff -f
'''

    # ---- running ----

    def start(self, timeout=120):
        os.makedirs(self.workdir, exist_ok=True)
        initrd = self._build_initramfs()
        self.qmp_path = os.path.join(self.workdir, 'qmp.sock')
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
        cmd = ['qemu-system-x86_64', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-no-reboot',
               '-m', self.mem, '-smp', self.smp, '-kernel', self._kernel_image(), '-initrd', initrd,
               '-append', self._kernel_append(), '-serial', 'stdio', '-monitor', 'none',
               '-qmp', f'unix:{self.qmp_path},server=on,wait=off'] + self.qemu_args
        self._log = open(os.path.join(self.workdir, 'console.log'), 'w')
        self._log.write('$ ' + ' '.join(cmd) + '\n')
        started = time.monotonic()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, bufsize=0)
        except OSError as e:
            raise GuestError(f'cannot run qemu-system-x86_64 ({e}): install qemu-system-x86 (scripts/setup does)')
        threading.Thread(target=self._reader, daemon=True).start()
        self._wait_for(lambda: READY in self._buf, timeout, 'the guest to boot')
        self.boot_seconds = time.monotonic() - started
        with self._cond:
            self._buf = self._buf[self._buf.index(READY) + len(READY):]
        return self

    def _reader(self):
        while True:
            data = self.proc.stdout.read(65536)  # unbuffered pipe: returns what is there
            if not data:
                break
            text = data.decode('utf-8', 'replace').replace('\r', '')
            self._log.write(text)
            self._log.flush()
            with self._cond:
                self._buf += text
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _wait_for(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                if self._eof:
                    raise GuestError(f'the guest died while waiting for {what}; console tail:\n{self._tail()}')
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GuestError(f'timed out after {timeout}s waiting for {what}; console tail:\n{self._tail()}')
                self._cond.wait(min(left, 1.0))

    def _tail(self, lines=40):
        return '\n'.join(self._buf.splitlines()[-lines:])

    def console(self):
        """Everything the guest printed since the last command started."""
        with self._cond:
            return self._buf

    def run(self, command, timeout=300):
        """Run a shell command in the guest; returns (exit code, output)."""
        if not self.proc:
            raise GuestError('the guest is not running')
        self._seq += 1
        n = self._seq
        with self._cond:
            self._buf = ''
        try:
            for line in self._command_lines(command) + [f'E {n}\n']:
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise GuestError(f'the guest is gone; console tail:\n{self._tail()}')
        found = {}

        def done():
            for m in DONE.finditer(self._buf):
                if int(m.group(1)) == n:
                    found['m'] = m
                    return True
            return False

        self._wait_for(done, timeout, f'`{command[:80]}`')
        with self._cond:
            m = found['m']
            out = self._buf[:m.start()]
            self._buf = self._buf[m.end():]
        return int(m.group(2)), out

    def run_bg(self, command):
        """Start a command in the background; its output should go to a file."""
        rc, out = self.run(f'( {command} ) </dev/null >/dev/null 2>&1 &')
        if rc != 0:
            raise GuestError(f'could not start `{command}` in the background: {out}')

    def dmesg(self):
        return self.run('dmesg')[1]

    # ---- QMP ----

    def _qmp_connect(self):
        if self.qmp_sock:
            return
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(60)
        s.connect(self.qmp_path)
        self.qmp_sock = s
        self._qmp_file = s.makefile('rwb', buffering=0)
        self._qmp_read()  # greeting
        self._qmp_send({'execute': 'qmp_capabilities'})

    def _qmp_read(self):
        while True:
            line = self._qmp_file.readline()
            if not line:
                raise GuestError('QMP connection closed')
            msg = json.loads(line)
            if 'event' in msg:
                self.qmp_events.append(msg)
                continue
            return msg

    def _qmp_send(self, obj):
        self._qmp_file.write((json.dumps(obj) + '\n').encode())
        reply = self._qmp_read()
        if 'error' in reply:
            raise GuestError(f'QMP {obj.get("execute")} failed: {reply["error"].get("desc", reply["error"])}')
        return reply.get('return', {})

    def qmp(self, command, **arguments):
        """A QMP command; returns its 'return' value, raises GuestError on an error reply."""
        self._qmp_connect()
        msg = {'execute': command}
        if arguments:
            msg['arguments'] = arguments
        return self._qmp_send(msg)

    def qmp_hmp(self, command_line):
        """A human monitor command through QMP; returns its text output."""
        return self.qmp('human-monitor-command', **{'command-line': command_line})

    # ---- the end ----

    def stop(self):
        if not self.proc:
            return
        try:
            if self.proc.poll() is None:
                try:
                    self.qmp('quit')
                except (GuestError, OSError, ValueError):
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        finally:
            if self.qmp_sock:
                self.qmp_sock.close()
                self.qmp_sock = None
            self.proc = None
            if self._log:
                self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
