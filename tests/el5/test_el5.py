#!/usr/bin/env python3
"""The rhel5 virtio_scsi.ko in a real RHEL5/CentOS5 2.6.18 guest (suite el5): one boot of one
kernel of the el5 assets, every case in it.

  test_el5.py ASSETS RELEASE EL5_TOOL WORK_DIR FIRST MESON_KO MAKE_KO BARE_KO

The modules are the README's three builds against this kernel's kernel-devel tree (Meson,
make KSRC=, make -C <tree> M=), loaded exactly as the builds left them. FIRST (meson or make)
is loaded at boot, the bare one after rmmod, and the unload rounds load all three in turn.
Wherever the guest writes data the test reads it back from the host's disk image, and data
the host writes into an image is read back by the guest.

Cases, in order (each prints ok/FAIL lines; a table of cases and their times ends the run):
  harness     commands, output and exit codes travel intact over the serial console
  load        insmod, no fix-ups: both legacy-only controllers bound, nothing refused
  topology    two controllers, several targets and LUNs, each disk at its address with its
              size and block size (512 and 4096)
  data        every disk: guest -> host image and host image -> guest
  queue1024   the first controller's 1024-entry request queue: QEMU runs it at 1024 and
              more commands are in flight at once than a 256-entry queue could hold; the
              ring-full path; every block lands on the host images
  hotplug     QMP device_add of a new target and of a LUN on an existing target, data on
              them, device_del, while I/O goes on (and is verified) on another LUN
  capacity    block_resize: the guest sees the new size on its own, data past the old end
  lun300      LUNs 300 and 16383: found (named 0x4000|LUN by the midlayer), data, hot-removed
              and re-added, data again
  resets      ABORT TASK of a command held by I/O throttling (QEMU's trace: the abort named
              the command's tag); an abort that gets no answer escalates to a LUN reset;
              SG_SCSI_RESET device, bus and host: the handlers' TMFs in QEMU's trace, the
              disk works after each; I/O on another LUN goes on through them all
  reload      rmmod removes every disk; insmod of the bare build finds them again, data kept
  unload      rmmod with hot-plug events in flight, repeated with each build in turn; the
              module loads again and events still reach it
  kernel log  no oops, BUG, warning, soft lockup or "scheduling while atomic" in the run
"""
import hashlib
import os
import re
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from el5vm import El5Guest, GuestError  # noqa: E402
from vmlib import Report, make_disk, scsi_controller, scsi_disk  # noqa: E402

if len(sys.argv) != 9 or sys.argv[5] not in ('meson', 'make'):
    print(__doc__, file=sys.stderr)
    sys.exit(2)
ASSETS, RELEASE, TOOL, WORK, FIRST = sys.argv[1:6]
WORK = os.path.abspath(WORK)
MODULES = dict(zip(('meson', 'make', 'bare'), (os.path.abspath(p) for p in sys.argv[6:9])))
os.makedirs(WORK, exist_ok=True)
r = Report(f'el5 {RELEASE}')

KIB = 1024
MIB = 1024 * KIB
# The controllers, in PCI slot order: 2.6.18's virtio_pci numbers its devices (virtioN, under
# /sys/devices/virtio-pci, with no link to the PCI function) in the order it probes them.
CONTROLLERS = {'c0': 4, 'c1': 5}
VIRTIO_INDEX = {f'virtio{i}': c for i, c in enumerate(CONTROLLERS)}


def midlayer_lun(lun):
    """The number Linux's SCSI midlayer gives a LUN: QEMU reports LUNs from 256 on in the
    flat space, which the midlayer names 0x4000 | lun."""
    return lun if lun < 256 else 0x4000 | lun


class Disk:
    def __init__(self, name, ctrl, target, lun, mib, block=512):
        self.name, self.ctrl, self.target, self.lun, self.block = name, ctrl, target, lun, block
        self.path = make_disk(os.path.join(WORK, name + '.img'), mib * MIB)
        self.node = None  # the blockdev node of a hot-plugged disk

    @property
    def key(self):
        return (self.ctrl, self.target, midlayer_lun(self.lun))

    def sectors(self):
        return os.path.getsize(self.path) // 512

    def qemu_args(self):
        return scsi_disk(self.name, self.path, bus=self.ctrl + '.0', scsi_id=self.target, lun=self.lun,
                         logical_block_size=self.block)

    def __repr__(self):
        return f'{self.name}({self.ctrl} {self.target}:{self.lun})'


# At boot. a: the disk other cases keep I/O going on; r: resets; s: capacity change.
a = Disk('a', 'c0', 0, 0, 32)
b = Disk('b', 'c0', 0, 1, 16, 4096)
rd = Disk('r', 'c0', 1, 0, 16)
s = Disk('s', 'c0', 1, 2, 8)
e = Disk('e', 'c1', 0, 0, 16, 4096)
f = Disk('f', 'c1', 2, 3, 8)
l0 = Disk('l0', 'c1', 4, 0, 4)
l300 = Disk('l300', 'c1', 4, 300, 8)
l16383 = Disk('l16383', 'c1', 4, 16383, 8, 4096)
BOOT = [a, b, rd, s, e, f, l0, l300, l16383]
# Hot-plugged: a new target, a LUN of an existing one; spares for the unload rounds.
h1 = Disk('h1', 'c0', 2, 0, 8)
h2 = Disk('h2', 'c0', 0, 4, 8, 4096)
SPARES = [Disk(f'u{i}', 'c1', 5 + i % 2, i, 4) for i in range(3)]

trace = os.path.join(WORK, 'trace.log')
if os.path.exists(trace):
    os.unlink(trace)
qemu = []
for ctrl, slot in CONTROLLERS.items():
    qemu += scsi_controller(ctrl, kind='legacy', virtqueue_size=1024 if ctrl == 'c0' else None,
                            extra=f'addr={slot:#x}')
for d in BOOT:
    qemu += d.qemu_args()
qemu += ['-trace', 'enable=virtio_scsi_tmf_req', '-D', trace]
g = El5Guest(os.path.join(WORK, 'guest'), ASSETS, RELEASE, TOOL, modules=MODULES, qemu_args=qemu)

kernel_log = []  # every line the guest kernel logged from the first insmod on, case by case


# ---- the guest's view ----

def collect_log():
    rc, out = g.run('dmesg -c')
    kernel_log.extend(out.splitlines())
    return out


def scan():
    """{(controller, target, midlayer LUN): (sdX, 512-byte sectors)} for every disk now, with
    its /dev node made."""
    rc, out = g.run('for h in /sys/class/scsi_host/host*; do [ -e "$h" ] && echo "${h##*/} $(readlink $h/device)"; '
                    'done; el5-disks')
    hosts, disks = {}, {}
    for line in out.splitlines():
        m = re.match(r'^host(\d+) .*/(virtio\d+)/host\d+$', line)
        if m and m.group(2) in VIRTIO_INDEX:
            hosts[int(m.group(1))] = VIRTIO_INDEX[m.group(2)]
            continue
        m = re.match(r'^(\d+):0:(\d+):(\d+) (sd[a-z]+) (\d+)$', line)
        if m and int(m.group(1)) in hosts:
            disks[(hosts[int(m.group(1))], int(m.group(2)), int(m.group(3)))] = (m.group(4), int(m.group(5)))
    return disks


def wait_disks(pred, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        found = scan()
        if pred(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def node(found, d):
    return '/dev/' + found[d.key][0] if d.key in found else '/dev/missing-' + d.name


def load(build, **params):
    """insmod; parameters are set through sysfs afterwards (the assets' busybox insmod passes
    none to the kernel)."""
    sets = ''.join(f' && echo {v} > /sys/module/virtio_scsi/parameters/{k}' for k, v in params.items())
    rc, out = g.run(f'insmod /lib/modules/extra/{build}.ko{sets}')
    return rc == 0, out


def unloaded():
    rc, out = g.run('lsmod | grep -c "^virtio_scsi " ; ls /sys/block | grep -c "^sd"')
    return out.split() == ['0', '0'], out


# ---- data, checked against the host's images ----

def image_md5(d, offset, length):
    with open(d.path, 'rb') as fh:
        fh.seek(offset)
        return hashlib.md5(fh.read(length)).hexdigest()


def guest_md5(out):
    m = re.search(r'^([0-9a-f]{32})\s', out, re.M)
    return m.group(1) if m else None


def guest_to_host(found, d, offset, length):
    """The guest writes random data (O_DIRECT) at offset; the host's image must hold it."""
    rc, out = g.run(f'dd if=/dev/urandom of=/tmp/w bs=4k count={length // 4096} 2>/dev/null && '
                    f'dd if=/tmp/w of={node(found, d)} bs=4k seek={offset // 4096} oflag=direct 2>&1 && '
                    f'md5sum /tmp/w')
    want = guest_md5(out)
    return rc == 0 and want is not None and want == image_md5(d, offset, length), f'{d}: {out}'


def host_to_guest(found, d, offset, length):
    """The host writes random data into the image at offset; the guest must read it (O_DIRECT)."""
    data = os.urandom(length)
    with open(d.path, 'r+b') as fh:
        fh.seek(offset)
        fh.write(data)
    rc, out = g.run(f'dd if={node(found, d)} bs=4k skip={offset // 4096} count={length // 4096} iflag=direct '
                    f'2>/dev/null | md5sum')
    return rc == 0 and guest_md5(out) == hashlib.md5(data).hexdigest(), f'{d}: {out}'


def roundtrip(found, d, slot, length=256 * KIB):
    """Both directions, in the slot-th pair of length-byte areas of the disk."""
    ok1, out1 = guest_to_host(found, d, slot * 2 * length, length)
    ok2, out2 = host_to_guest(found, d, slot * 2 * length + length, length)
    return ok1 and ok2, f'guest->host {"ok" if ok1 else out1}; host->guest {"ok" if ok2 else out2}'


IO_SLOT = 256 * KIB  # el5-ioloop's slots


def ioloop_start(found, d):
    g.run('dd if=/dev/urandom of=/tmp/io.pat bs=64k count=4 2>/dev/null')
    g.run_bg(f'el5-ioloop {node(found, d)}')


def ioloop_stop(d, what):
    """Stop el5-ioloop; check it made progress with no error, and that the image holds its
    pattern in every slot it wrote."""
    rc, before = g.run('cat /tmp/io.count')
    rc, out = g.run('touch /tmp/io.stop; for i in $(seq 600); do [ -e /tmp/io.done ] && break; sleep 0.1; done; '
                    'cat /tmp/io.count; cat /tmp/io.bad; md5sum /tmp/io.pat', timeout=120)
    words = out.split()
    rounds = int(words[0]) if words and words[0].isdigit() else 0
    bad = re.findall(r'^(?:write|read|data) \d+$', out, re.M)[:12]
    want = guest_md5(out.splitlines()[-1] if out.strip() else '')
    images = [image_md5(d, i * IO_SLOT, IO_SLOT) for i in range(min(rounds, 16))]
    r.check(f'I/O on {d} went on through {what}, every block read back intact in the guest',
            rounds > 0 and not bad, f'{rounds} rounds (before the stop: {before.strip()}), errors: {bad}')
    r.check(f'... and the host\'s image of {d} holds what it wrote', rounds > 0 and images and
            all(m == want for m in images), f'guest {want}, image slots {images}')


# ---- QEMU ----

def plug(d):
    if d.node is None:
        d.node = d.name + '-node'
        g.qmp('blockdev-add', **{'node-name': d.node, 'driver': 'raw',
                                'file': {'driver': 'file', 'filename': d.path}})
    g.qmp('device_add', driver='scsi-hd', drive=d.node, id='hd-' + d.name, bus=d.ctrl + '.0',
          **{'scsi-id': d.target, 'lun': d.lun, 'logical_block_size': d.block, 'physical_block_size': d.block})


def unplug(d):
    g.qmp('device_del', id='hd-' + d.name)


def toggle(d, plugged):
    """Unplug d if it is in the set plugged, else plug it; the set follows."""
    if d.name in plugged:
        unplug(d)
        plugged.discard(d.name)
    else:
        plug(d)
        plugged.add(d.name)


def throttle(d, **limits):
    args = dict(bps=0, bps_rd=0, bps_wr=0, iops=0, iops_rd=0, iops_wr=0)
    args.update(limits)
    g.qmp('block_set_io_throttle', id='hd-' + d.name, **args)


def traced():
    """[(kind, lun, tag, subtype or cmd)] of the requests QEMU traced so far."""
    try:
        with open(trace) as fh:
            text = fh.read()
    except OSError:
        return []
    return [(m.group(1), int(m.group(2)), m.group(3), m.group(4))
            for m in re.finditer(r'virtio_scsi_(tmf|cmd)_req lun=(\d+) tag=0x([0-9a-f]+) (?:subtype|cmd)=(\S+)', text)]


def tmfs_since(n):
    return [int(x[3]) for x in traced()[n:] if x[0] == 'tmf']


# ---- the cases ----

def case_harness():
    text = ''.join(chr(c) for c in range(32, 127) if chr(c) != "'") * 30  # longer than a console line
    rc, out = g.run(f"printf '%s\\n' '{text}'; exit 3")
    r.check('commands of any length and bytes, their output and exit codes travel intact',
            rc == 3 and out.splitlines()[-1:] == [text], out[-300:])


def case_load():
    collect_log()  # the kernel's own boot (TCG makes it warn about its NMI watchdog): not checked
    with open(os.path.join(WORK, 'boot.log'), 'w') as fh:
        fh.write('\n'.join(kernel_log) + '\n')
    kernel_log.clear()
    ok, out = load(FIRST)
    r.check(f'insmod of the {FIRST} build as it was built (no fix-ups)', ok, out)
    log = collect_log()
    refused = [line for line in log.splitlines() if re.search(
        r'version magic|Unknown rela|disagrees about version|Unknown symbol|no symbol version|invalid module', line)]
    r.check('the kernel took it without a complaint', ok and not refused, '\n'.join(refused))
    rc, out = g.run('lsmod; ls /sys/bus/virtio/drivers/virtio_scsi')
    r.check('virtio_scsi is loaded and bound to both legacy-only controllers',
            re.search(r'^virtio_scsi ', out, re.M) and 'virtio0' in out and 'virtio1' in out, out)


def case_topology():
    found = wait_disks(lambda x: all(d.key in x for d in BOOT if d.lun < 256))
    for d in BOOT:
        if d.lun >= 256:
            continue  # the lun300 case
        dev, sectors = found.get(d.key, (None, 0))
        rc, bs = g.run(f'el5-tool blksz /dev/{dev}') if dev else (1, '')
        r.check(f'{d}: found, {d.sectors()} sectors of 512 bytes, block size {d.block}',
                dev and sectors == d.sectors() and bs.strip() == str(d.block), f'{found} blksz {bs!r}')
    return found


def case_data(found):
    for d in BOOT:
        if d.lun >= 256:
            continue
        ok, detail = roundtrip(found, d, 0)
        r.check(f'{d}: data guest -> host image and host image -> guest', ok, detail)


def case_queue1024(found):
    status = {c: g.qmp('x-query-virtio-queue-status', path=f'/machine/peripheral/{c}/virtio-backend', queue=2)
              for c in CONTROLLERS}
    r.check('QEMU runs the first controller\'s request queue at 1024 entries (the other at its default 256)',
            status['c0'].get('vring-num') == 1024 and status['c1'].get('vring-num') == 256, status)

    # Every c0 LUN but r gets 120 one-block O_DIRECT writes at once while QEMU holds them
    # (iops=1): a 256-entry ring holds 85 such three-descriptor commands, a 1024-entry one
    # 341; the rest wait for room (the ring-full path). Then they all go through.
    disks = [a, b, s]
    per, base = 120, 1024  # writes per disk; first 4 KiB block of the area they write (4 MiB in)
    rc, host = g.run(f'basename $(readlink /sys/block/{found[a.key][0]}/device)')
    hostno = host.split(':')[0]
    for d in disks:
        throttle(d, iops=1)
    script = ['dd if=/dev/urandom of=/tmp/deep.pat bs=4k count=%d 2>/dev/null; : > /tmp/deep.done' % per]
    for d in disks:
        dev = found[d.key][0]
        script.append(f'echo 300 > /sys/block/{dev}/device/timeout')
        script.append(f'for i in $(seq 0 {per - 1}); do (dd if=/tmp/deep.pat of=/dev/{dev} bs=4k skip=$i '
                      f'seek=$(({base} + $i)) count=1 oflag=direct 2>/dev/null; echo "{dev} $i $?" >> /tmp/deep.done) & '
                      f'done')
    g.run('\n'.join(script), timeout=300)
    busy = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and busy < 300:
        rc, out = g.run(f'cat /sys/class/scsi_host/host{hostno}/host_busy')
        busy = max(busy, int(out.strip()) if out.strip().isdigit() else 0)
        time.sleep(1)
    st = g.qmp('x-query-virtio-queue-status', path='/machine/peripheral/c0/virtio-backend', queue=2)
    r.check(f'more commands in flight on the 1024-entry queue than a 256-entry one holds (host_busy {busy})',
            busy >= 300, f'host_busy {busy}; {st}')
    for d in disks:
        throttle(d)
    rc, out = g.run(f'for t in $(seq 1200); do [ $(wc -l < /tmp/deep.done) -ge {per * len(disks)} ] && break; '
                    f'sleep 0.1; done; cat /tmp/deep.done; md5sum /tmp/deep.pat; ' +
                    '; '.join(f'echo 30 > /sys/block/{found[d.key][0]}/device/timeout' for d in disks), timeout=300)
    results = re.findall(r'^sd\w+ \d+ (\d+)$', out, re.M)
    r.check(f'all {per * len(disks)} writes completed without an error', len(results) == per * len(disks) and
            set(results) == {'0'}, out[-2000:])
    want = guest_md5(out.splitlines()[-1] if out.strip() else '')
    images = {d.name: image_md5(d, base * 4096, per * 4096) for d in disks}
    r.check('every block is on the host\'s images', all(m == want for m in images.values()),
            f'guest {want}: {images}')


def case_hotplug(found):
    ioloop_start(found, a)
    plug(h1)
    plug(h2)
    found = wait_disks(lambda x: h1.key in x and h2.key in x)
    for d, what in ((h1, 'LUN 0 of a new target'), (h2, 'a LUN of an existing target')):
        r.check(f'{d} hot-plugged ({what}) appears with its size', found.get(d.key, (0, 0))[1] == d.sectors(), found)
        ok, detail = roundtrip(found, d, 0)
        r.check(f'{d}: data on the hot-plugged disk, both ways', ok, detail)
    unplug(h1)
    unplug(h2)
    found = wait_disks(lambda x: h1.key not in x and h2.key not in x)
    r.check('both hot-unplugged disks go away', h1.key not in found and h2.key not in found, found)
    ioloop_stop(a, 'hot-plug and hot-unplug')
    return found


def case_capacity(found):
    want = 12 * MIB
    g.qmp('block_resize', device=s.name, size=want)
    dev = found.get(s.key, ('missing',))[0]
    size = ''
    for _ in range(60):
        rc, size = g.run(f'cat /sys/block/{dev}/size')
        if size.strip() == str(want // 512):
            break
        time.sleep(0.5)
    r.check(f'{s}: block_resize 8 -> 12 MiB reaches the guest by itself (PARAM_CHANGE rescans the LUN)',
            size.strip() == str(want // 512), size)
    ok, detail = roundtrip(found, s, 20)  # 10 MiB in: past the old end
    r.check(f'{s}: data past the old end, both ways', ok, detail)


def case_lun300(found):
    big = [l300, l16383]
    for d in big:
        dev, sectors = found.get(d.key, (None, 0))
        r.check(f'{d}: found as {d.target}:{d.key[2]:#x} with {d.sectors()} sectors', dev and sectors == d.sectors(),
                found)
        ok, detail = roundtrip(found, d, 0)
        r.check(f'{d}: data both ways', ok, detail)
    for d in big:
        unplug(d)
    found = wait_disks(lambda x: all(d.key not in x for d in big))
    r.check('both hot-removed (QMP device_del)', all(d.key not in found for d in big), found)
    for d in big:
        plug(d)
    found = wait_disks(lambda x: all(d.key in x for d in big))
    for d in big:
        r.check(f'{d}: re-added (QMP device_add) and found again', found.get(d.key, (0, 0))[1] == d.sectors(), found)
        ok, detail = roundtrip(found, d, 1)
        r.check(f'{d}: data both ways after the re-add', ok, detail)
    return found


def case_resets(found):
    dev = node(found, rd)
    lun = rd.lun
    # 1. ABORT TASK: a 32 KiB read fills the 4 KiB/s read bucket, so the next read waits
    # about 8 s; it times out after 2 s and the midlayer aborts it.
    g.qmp('trace-event-set-state', name='virtio_scsi_cmd_req', enable=True)
    n = len(traced())
    throttle(rd, bps_rd=4096)
    rc, out = g.run(f'dd if={dev} of=/dev/null bs=32k count=1 iflag=direct 2>/dev/null; '
                    f'el5-tool read {dev} 128 1 512 2000', timeout=180)
    g.qmp('trace-event-set-state', name='virtio_scsi_cmd_req', enable=False)
    seen = traced()[n:]
    aborts = [x for x in seen if x[0] == 'tmf' and x[3] == '0' and x[1] == lun]
    reads = {x[2] for x in seen if x[0] == 'cmd' and x[3] == '0x28' and x[1] == lun}
    m = re.search(r'status (\d+) host (\d+) driver (\d+) resid -?\d+ ms (\d+)', out)
    r.check('a command that times out comes back to its caller after the timeout, failed',
            rc == 0 and m and int(m.group(4)) >= 1900 and (int(m.group(1)), int(m.group(2)), int(m.group(3))) != (0, 0, 0),
            out)
    r.check('the device got ABORT TASK naming that READ command\'s tag',
            len(aborts) == 1 and aborts[0][2] in reads, f'aborts {aborts}, READ tags {sorted(reads)}')
    throttle(rd)
    ok, detail = roundtrip(found, rd, 0)
    r.check(f'{rd} works after the abort', ok, detail)

    # 2. An abort without an answer: the read waits about 100 s behind 400 KiB, the abort
    # gets no answer within tmf_timeout (3 s), and the midlayer escalates to a LUN reset,
    # which QEMU completes by draining the LUN.
    n = len(traced())
    g.run('echo 3 > /sys/module/virtio_scsi/parameters/tmf_timeout')
    throttle(rd, bps_rd=4096)
    rc, out = g.run(f'dd if={dev} of=/dev/null bs=400k count=1 iflag=direct 2>/dev/null; '
                    f'el5-tool read {dev} 256 1 512 2000', timeout=300)
    tmfs = tmfs_since(n)
    throttle(rd)
    g.run('echo 30 > /sys/module/virtio_scsi/parameters/tmf_timeout')
    log = collect_log()
    r.check('an abort without an answer times out and the midlayer escalates to a LUN reset',
            rc == 0 and tmfs[:2] == [0, 5], f'TMFs {tmfs}\n{out}\n{log}')
    ok, detail = roundtrip(found, rd, 1)
    r.check(f'{rd} works after the escalation', ok, detail)

    # 3. SG_SCSI_RESET, each handler, while I/O goes on on a. During the host reset a read of
    # b is held in QEMU (throttled): the reset takes it from the device, and it must come back
    # to its caller at once, not when its own timeout (60 s) runs out.
    ioloop_start(found, a)
    c0_targets = sorted({d.target for d in BOOT if d.ctrl == 'c0'})
    for kind, want, what in (('device', [5], 'LOGICAL UNIT RESET'),
                             ('bus', [4] * len(c0_targets), 'I_T NEXUS RESET to each target'),
                             ('host', [], 'no TMF: the virtio device is reset')):
        if kind == 'host':
            throttle(b, bps_rd=4096)
            g.run_bg(f'dd if={node(found, b)} of=/dev/null bs=400k count=1 iflag=direct; '
                     f'el5-tool read {node(found, b)} 0 1 4096 60000 > /tmp/held.out 2>&1')
            time.sleep(3)
        n = len(traced())
        started = time.monotonic()
        rc, out = g.run(f'el5-tool reset {kind} {dev}', timeout=180)
        took = time.monotonic() - started
        log = collect_log()
        r.check(f'SG_SCSI_RESET {kind}: the handler succeeded', rc == 0, out + log)
        if kind != 'device':
            r.check(f'SG_SCSI_RESET {kind}: no settle delay (virtio has no bus to settle): {took:.1f} s', took < 5)
        r.check(f'SG_SCSI_RESET {kind}: QEMU received {what}', tmfs_since(n) == want, f'TMFs {tmfs_since(n)}')
        if kind == 'host':
            r.check('the host reset re-initialised the device', 'resetting the device' in log, log)
            rc, out = g.run('for i in $(seq 300); do [ -s /tmp/held.out ] && break; sleep 0.1; done; cat /tmp/held.out',
                            timeout=120)
            m = re.search(r'status \d+ host \d+ driver (\d+) resid -?\d+ ms (\d+)', out)
            r.check('a command the reset took from the device comes back to its caller at once, not at its timeout',
                    m and int(m.group(1)) != 6 and int(m.group(2)) < 30000, out or 'no answer within 30 s')
            throttle(b)
        ok, detail = roundtrip(found, rd, 2)
        r.check(f'{rd} works after SG_SCSI_RESET {kind}', ok, detail)
    ioloop_stop(a, 'LUN, bus and host resets')


def case_reload(found):
    marker = a  # case_data wrote and read a's first 512 KiB; the image still holds both halves
    want = image_md5(marker, 0, 512 * KIB)
    rc, out = g.run('rmmod virtio_scsi')
    ok, detail = unloaded()
    r.check('rmmod removes the module and every disk', rc == 0 and ok, out + detail)
    ok, out = load('bare')
    r.check('insmod of the bare make -C <tree> M= build', ok, out)
    found = wait_disks(lambda x: all(d.key in x for d in BOOT))
    r.check('every disk comes back at its address', all(d.key in found for d in BOOT), found)
    rc, out = g.run(f'dd if={node(found, marker)} bs=4k count=128 iflag=direct 2>/dev/null | md5sum')
    r.check(f'{marker} still holds its data', guest_md5(out) == want, out)
    return found


def case_unload():
    rounds = 6
    builds = ['meson', 'make', 'bare']
    plugged = set()
    rc, out = g.run('rmmod virtio_scsi')
    done = refused = 0
    for n in range(rounds):
        build = builds[n % 3]
        ok, out = load(build, event_delay_ms=300)
        if not ok:
            r.check(f'round {n}: insmod of the {build} build', False, out)
            break
        # (LUNs above 255 are the lun300 case's business; a round need not wait for them.)
        want = {d.key for d in BOOT if d.lun < 256} | {d.key for d in SPARES if d.name in plugged}
        wait_disks(lambda x: want <= set(x))
        # rmmod after a varying delay (0-0.9 s), while a burst of events is on its way: before
        # they arrive it wins and they are dropped; once they are pending it is refused
        # (module in use) until their work is done, and retries.
        g.run_bg(f'sleep 0.{n * 3 % 10}; i=0; until rmmod virtio_scsi 2>/dev/null; do i=$((i + 1)); sleep 0.05; '
                 f'done; echo $i > /tmp/rmmod.{n}')
        for d in SPARES:
            toggle(d, plugged)
        deadline = time.monotonic() + 120
        while not g.run(f'[ -e /tmp/rmmod.{n} ]')[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        ok, detail = unloaded()
        if not ok:
            r.check(f'round {n}: rmmod finished with events in flight', False, detail + stuck())
            break
        rc, out = g.run(f'cat /tmp/rmmod.{n}')
        refused += int(out.strip() or 0) > 0
        done += 1
    r.check(f'{rounds} rounds of rmmod with hot-plug events in flight, each build in turn', done == rounds,
            f'{done} rounds')
    # An event being handled holds the module: rmmod is refused ("in use") and retried.
    r.check(f'rmmod met pending events (refused while they were handled) in {refused} of {done} rounds',
            refused > 0)
    ok, out = load(FIRST)
    r.check('insmod once more', ok, out)
    want = {d.key for d in BOOT} | {d.key for d in SPARES if d.name in plugged}
    found = wait_disks(lambda x: set(x) == want)
    r.check('exactly the disks the host has now are there', set(found) == want, f'{sorted(found)} want {sorted(want)}')
    toggle(SPARES[0], plugged)
    want = {x.key for x in BOOT} | {x.key for x in SPARES if x.name in plugged}
    found = wait_disks(lambda x: set(x) == want)
    r.check('hot-plug events still reach the module', set(found) == want, f'{sorted(found)} want {sorted(want)}')


def stuck():
    """What the guest's tasks are doing (for a failure's detail)."""
    rc, out = g.run('ps; dmesg -c > /dev/null; echo t > /proc/sysrq-trigger; dmesg -c')
    return out


TROUBLE = re.compile(r'BUG|Oops|general protection|WARNING|warning at|Call Trace|scheduling while atomic|'
                     r'Unable to handle|soft lockup|list_(add|del) corruption|blocked for more than|Badness|'
                     r'bad page|slab error|double free')


def case_kernel_log():
    collect_log()
    trouble = [line for line in kernel_log if TROUBLE.search(line)]
    r.check('no oops, BUG, warning, soft lockup or "scheduling while atomic" in the kernel log since insmod',
            not trouble,
            '\n'.join(trouble))
    with open(os.path.join(WORK, 'kernel.log'), 'w') as fh:
        fh.write('\n'.join(kernel_log) + '\n')


# ---- running them ----

results = []
dead = None
found = {}
# For working on one case: VSCSI_EL5_CASES=resets,unload runs those (after harness, load and
# topology).
ONLY = set(filter(None, os.environ.get('VSCSI_EL5_CASES', '').split(',')))


def run_case(name, fn, *args):
    global dead
    failed, started = r.failed, time.monotonic()
    value = None
    if ONLY and name not in ONLY | {'harness', 'load', 'topology'}:
        results.append((name, 'not run (VSCSI_EL5_CASES)', 0))
        return None
    if dead:
        r.check(f'{name}: not run, the guest died in {dead}', False)
    else:
        try:
            value = fn(*args)
            collect_log()
        except GuestError as ex:
            dead = name
            dump = os.path.join(WORK, f'stuck-{name}.log')
            with open(dump, 'w') as fh:
                fh.write(g.task_dump())
            r.check(f'{name}: the guest answered', False,
                    f'{ex}\n(its console: {g.workdir}/console.log; its tasks\' stacks: {dump})')
        except Exception:  # a check that could not even look (a disk missing, ...): this case fails
            r.check(f'{name}: ran to its end', False, traceback.format_exc())
    results.append((name, 'pass' if r.failed == failed else 'FAIL', time.monotonic() - started))
    return value


started = time.monotonic()
try:
    g.start()
    print(f'{RELEASE}: booted in {g.boot_seconds:.1f} s', flush=True)
    run_case('harness', case_harness)
    run_case('load', case_load)
    found = run_case('topology', case_topology) or {}
    run_case('data', case_data, found)
    run_case('queue1024', case_queue1024, found)
    found = run_case('hotplug', case_hotplug, found) or found
    run_case('capacity', case_capacity, found)
    found = run_case('lun300', case_lun300, found) or found
    run_case('resets', case_resets, found)
    found = run_case('reload', case_reload, found) or found
    run_case('unload', case_unload)
    run_case('kernel log', case_kernel_log)
except GuestError as ex:
    r.check('the guest booted', False, ex)
finally:
    g.stop()
print(f'\n{RELEASE}: cases ({time.monotonic() - started:.0f} s in all)')
for name, result, took in results:
    print(f'  {name:<12} {result}  {took:6.1f} s')
r.finish()
