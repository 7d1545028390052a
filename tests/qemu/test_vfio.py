#!/usr/bin/env python3
"""vscsi-uio through vfio-pci, behind QEMU's emulated Intel IOMMU.

One boot of a q35 guest with -device intel-iommu (intel_iommu=on in the guest), two vCPUs, and
seven virtio-scsi functions:

  A   00:04.0  iommu_platform=on, 4 request queues, packed virtqueues (packed=on): three targets,
               LUNs of 512- and 4096-byte blocks, a slow one; everything end to end (the other
               functions run split rings)
  V2  00:05.0  iommu_platform=on, vectors=2: too few MSI-X vectors for one per queue (shared);
               1024-entry virtqueues
  IX  00:06.0  iommu_platform=on, vectors=0: no MSI-X at all (INTx)
  NP  00:07.0  no iommu_platform: the device would bypass the IOMMU (refused)
  B1, B2       behind a PCIe-to-PCI bridge: one IOMMU group for both (shared; not viable)
  T   00:09.0  iommu_platform=on, 2 request queues served by an iothread: a thread per queue.
               (QEMU 7.2 aborts on a LOGICAL UNIT RESET to a device with an iothread,
               "blk_drain: Assertion `qemu_in_main_thread()' failed", so A has none.)

Checks: list, bind, scan, verify and bench in every completion mode; MSI-X vectors counted per
queue by the driver and in the guest's /proc/interrupts (each queue's vector fires for its own
queue, no INTx); events with hot-plug and hot-unplug; resets; the IOMMU confining the device
(iommu-check: a READ into an unmapped IOVA faults in the IOMMU, lands nowhere, and the driver
recovers); ordinary pages without hugepages; no root needed, and RLIMIT_MEMLOCK too low; a
killed driver; the refusals; and back to the kernel's virtio_scsi (behind the same IOMMU) with
data cross-checked both ways.

usage: test_vfio.py VSCSI_UIO WORKDIR
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uio_common import (Guest, GuestError, Report, bench_json, check_kernel_cross, check_verify,  # noqa: E402
                        make_disk, parse_scan, pattern_md5, scsi_controller, scsi_disk)
from vmlib import IOMMU_KERNEL_ARGS, IOMMU_MACHINE, VFIO_MODULES  # noqa: E402

binary, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
r = Report('vfio')
started = time.monotonic()
MiB = 1 << 20

A, V2, IX, NP, T = '0000:00:04.0', '0000:00:05.0', '0000:00:06.0', '0000:00:07.0', '0000:00:09.0'
disks = {(0, 0): (64 * MiB, 512), (0, 3): (8 * MiB, 4096), (2, 0): (32 * MiB, 4096)}
topology = {k: (size // bs, bs, False) for k, (size, bs) in disks.items()}
topology[(1, 4)] = ((1 << 30) // 512, 512, False)

qemu = list(IOMMU_MACHINE) + ['-object', 'iothread,id=io0']
qemu += scsi_controller('scsi0', kind='modern', num_queues=4, extra='iommu_platform=on,packed=on,addr=0x4')
for (t, l), (size, bs) in disks.items():
    qemu += scsi_disk(f'd{t}{l}', make_disk(os.path.join(work, f't{t}l{l}.img'), size), bus='scsi0.0', scsi_id=t,
                      lun=l, logical_block_size=bs)
# Every command on the slow LUN takes 2 s: something is still in flight when the abort arrives.
qemu += ['-drive', 'driver=null-co,read-zeroes=on,latency-ns=2000000000,size=1G,if=none,id=slow',
         '-device', 'scsi-hd,drive=slow,id=hd-slow,bus=scsi0.0,scsi-id=1,lun=4']
qemu += scsi_controller('scsi1', kind='modern', virtqueue_size=1024, extra='iommu_platform=on,vectors=2,addr=0x5')
qemu += scsi_disk('v2', make_disk(os.path.join(work, 'v2.img'), 8 * MiB), bus='scsi1.0')
qemu += scsi_controller('scsi2', kind='modern', extra='iommu_platform=on,vectors=0,addr=0x6')
qemu += scsi_disk('ix', make_disk(os.path.join(work, 'ix.img'), 8 * MiB), bus='scsi2.0')
qemu += scsi_controller('scsi3', kind='modern', extra='addr=0x7')
qemu += ['-device', 'pcie-pci-bridge,id=br0,addr=0x8']
qemu += scsi_controller('scsi4', kind='modern', extra='iommu_platform=on,bus=br0,addr=0x1')
qemu += scsi_controller('scsi5', kind='modern', extra='iommu_platform=on,bus=br0,addr=0x2')
qemu += scsi_controller('scsi6', kind='modern', num_queues=2, extra='iommu_platform=on,iothread=io0,addr=0x9')
qemu += scsi_disk('th', make_disk(os.path.join(work, 'th.img'), 32 * MiB), bus='scsi6.0')
spare = make_disk(os.path.join(work, 'spare.img'), 2 * MiB)


def interrupts(g, bdf):
    """{name: total over CPUs} of the guest's /proc/interrupts lines for one function."""
    rc, out = g.run('cat /proc/interrupts')
    found = {}
    for line in out.splitlines():
        if f'({bdf})' not in line:
            continue
        fields = line.split()
        counts = [int(x) for x in fields[1:] if x.isdigit()]
        found[fields[-1].split('(')[0]] = sum(counts)
    return found


def one_line_error(out, rc, expect):
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return rc != 0 and len(lines) == 1 and lines[0].startswith('vscsi-uio: ') and expect in lines[0]


g = Guest(os.path.join(work, 'guest'), modules=VFIO_MODULES,
          ship_modules=['virtio_pci', 'virtio_scsi', 'sd_mod'], binaries=[binary], qemu_args=qemu,
          smp='2', hugepages=64, kernel_args=IOMMU_KERNEL_ARGS)
try:
    g.start(timeout=300)
    print(f'guest booted in {g.boot_seconds:.1f} s', flush=True)
    rc, out = g.run('ls /sys/bus/pci/devices/')
    bridged = sorted(b for b in out.split() if not b.startswith('0000:00:') and
                     g.run(f'cat /sys/bus/pci/devices/{b}/vendor')[1].strip() == '0x1af4')
    B1, B2 = (bridged + ['?', '?'])[:2]

    # ---- list and bind ----
    rc, out = g.run('vscsi-uio list')
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith('0000:')}
    r.check('list: seven virtio-scsi functions, modern, each with an IOMMU group; the bridged two share one (*)',
            rc == 0 and len(rows) == 7 and all(rows[b][3] == 'modern' for b in rows) and
            rows[A][4].isdigit() and rows[B1][4].endswith('*') and rows[B1][4] == rows[B2][4], out)
    group = rows.get(A, ['', '', '', '', '?'])[4]
    rc, out = g.run(f'vscsi-uio bind -d {A}')
    r.check('bind with no --driver picks vfio-pci where the function has an IOMMU group',
            rc == 0 and f'bound to vfio-pci (/dev/vfio/{group})' in out, out)
    rc, out = g.run(f'readlink /sys/bus/pci/devices/{A}/driver && ls /dev/vfio/{group} && vscsi-uio list')
    r.check('sysfs agrees, /dev/vfio/<group> exists, list shows vfio-pci',
            rc == 0 and out.split()[0].endswith('/vfio-pci') and re.search(rf'{A}\s+1af4:1048\s+vfio-pci', out), out)

    # ---- scan, data, bench ----
    rc, out = g.run(f'vscsi-uio scan -d {A}', timeout=120)
    got = {k: (v['blocks'], v['block_size'], v['read_only']) for k, v in parse_scan(out).items()}
    r.check('scan: 3 targets, 4 LUNs as given to QEMU', rc == 0 and got == topology and 'scan: 3 targets, 4 LUNs' in out, out)
    r.check('scan: modern interface, packed rings, 4 request queues',
            'modern interface, packed rings, 4 request queues' in out, out)
    rc, out = g.run(f'vscsi-uio scan -d {A} --ring split', timeout=120)
    r.check('scan --ring split: the same LUNs on split rings',
            rc == 0 and 'modern interface, split rings, 4 request queues' in out and 'scan: 3 targets, 4 LUNs' in out, out)
    r.check('scan: DMA memory is hugepages at an IOVA of the driver\'s choosing, through IOMMU group ' + group,
            re.search(rf'vfio-pci: IOMMU group {group}, .* \(2048 KiB hugepages\) at IOVA 0x[0-9a-f]+, '
                      r'[0-9.]+ KiB of bookkeeping not mapped', out), out)
    check_verify(r, g, 'polled, 512-byte blocks', f'-d {A} -t 0 -l 0 --size 32m --seed 31', '32.0 MiB')
    check_verify(r, g, 'MSI-X interrupts, 4096-byte blocks', f'-d {A} -t 2 -l 0 --size 16m --seed 32 --irq', '16.0 MiB')
    check_verify(r, g, 'hybrid, 4096-byte blocks', f'-d {A} -t 0 -l 3 --seed 33 --hybrid', '8.0 MiB')
    for mode, depth in (('', 32), (' --irq', 1), (' --hybrid', 1), (' --irq', 32)):
        rc, out = g.run(f'vscsi-uio bench -d {A} -t 0 -l 0 --rw randrw --iodepth {depth} --runtime 1{mode} --json',
                        timeout=120)
        try:
            job = bench_json(out)['jobs'][0]
            ok = rc == 0 and job['error'] == 0 and job['driver'] == 'vfio-pci' and \
                job['read']['total_ios'] > 0 and job['write']['total_ios'] > 0
            if mode:
                ok = ok and job['interrupts']['source'] == 'MSI-X, 4 vectors' and job['interrupts']['request0'] > 0
        except (ValueError, KeyError, IndexError):
            ok = False
        r.check(f'bench{mode or " (polled)"} at depth {depth}: reads and writes, no errors', ok, out)

    # ---- MSI-X: one vector per queue, each firing for its own queue, no INTx ----
    g.run_bg(f'vscsi-uio bench -d {A} -t 0 -l 0 --rw randread --iodepth 8 --queues 4 --runtime 5 --irq --json '
             '> /tmp/msix.json 2>&1')
    g.run(f'for i in $(seq 100); do grep -q "vfio-msix.*({A})" /proc/interrupts && break; sleep 0.1; done; sleep 1')
    first = interrupts(g, A)
    g.run('sleep 1.5')
    second = interrupts(g, A)
    rc, out = g.run('while pidof vscsi-uio >/dev/null; do sleep 0.2; done; cat /tmp/msix.json', timeout=120)
    delta = {k: second.get(k, 0) - first.get(k, 0) for k in second}
    r.check('/proc/interrupts: 7 MSI-X vectors for the function (config, control, event, 4 request queues), no INTx',
            sorted(first) == [f'vfio-msix[{i}]' for i in range(7)], first)
    r.check('/proc/interrupts: every request queue\'s vector fires during the run, the others stay quiet',
            all(delta.get(f'vfio-msix[{i}]', 0) > 0 for i in range(3, 7)) and
            all(delta.get(f'vfio-msix[{i}]', -1) == 0 for i in range(3)), f'{first}\n{second}')
    try:
        irqs = bench_json(out)['jobs'][0]['interrupts']
        ok = all(irqs[f'request{q}'] > 0 for q in range(4)) and irqs['config'] == irqs['control'] == irqs['event'] == 0
    except (ValueError, KeyError, IndexError):
        irqs, ok = out, False
    r.check('the driver counts wake-ups on each request queue\'s eventfd, and none on the others', ok, irqs)
    rc, out = g.run(f'grep "({A})" /proc/interrupts; true')
    r.check('the vectors are released when the driver exits', out.strip() == '', out)
    g.run_bg(f'vscsi-uio bench -d {A} --iodepth 8 --queues 4 --runtime 3 > /tmp/polled.log 2>&1')
    g.run(f'for i in $(seq 100); do grep -q "vfio-msix.*({A})" /proc/interrupts && break; sleep 0.1; done; sleep 1.5')
    polled = interrupts(g, A)
    g.run('while pidof vscsi-uio >/dev/null; do sleep 0.2; done')
    r.check('polled: MSI-X on with one vector and every queue on NO_VECTOR: the device never interrupts',
            polled == {'vfio-msix[0]': 0}, polled)

    # ---- shared MSI-X vectors, and INTx ----
    for bdf, what, source, key in ((V2, 'too few MSI-X vectors: the queues share one', 'MSI-X, 2 vectors, shared', 'queues'),
                                   (IX, 'no MSI-X: INTx through vfio', 'INTx (vfio)', 'INTx')):
        rc, out = g.run(f'vscsi-uio bind -d {bdf} >/dev/null && vscsi-uio verify -d {bdf} --size 4m --irq 2>&1')
        r.check(f'{what}: verify --irq, and the fallback is said on stderr',
                rc == 0 and 'identical' in out and ('share one' in out if key == 'queues' else 'using INTx' in out), out)
        rc, out = g.run(f'vscsi-uio bench -d {bdf} --iodepth 4 --runtime 1 --irq --json 2>/dev/null', timeout=120)
        try:
            job = bench_json(out)['jobs'][0]
            ok = rc == 0 and job['error'] == 0 and job['interrupts']['source'] == source and job['interrupts'][key] > 0
        except (ValueError, KeyError, IndexError):
            ok = False
        r.check(f'{what}: bench --irq wakes on it ({source})', ok, out)
        check_verify(r, g, f'{what}, polled', f'-d {bdf} --size 4m --seed 38', '4.0 MiB')

    # ---- a device whose queues an iothread serves ----
    rc, out = g.run(f'vscsi-uio bind -d {T}')
    r.check('bind the iothread device', rc == 0 and 'bound to vfio-pci' in out, out)
    check_verify(r, g, 'iothread device, MSI-X', f'-d {T} --size 16m --seed 37 --irq', '16.0 MiB')
    rc, out = g.run(f'vscsi-uio scan -d {V2}')
    r.check('1024-entry virtqueues through vfio', rc == 0 and '1 request queue x 1024 entries' in out, out)

    # ---- a thread per request queue (2 vCPUs, the device's queues on an iothread) ----
    rc, out = g.run(f'vscsi-uio verify -d {T} --seed 40', timeout=300)
    r.check('the iothread device holds the pattern of seed 40 everywhere', rc == 0 and 'identical' in out, out)
    iops = {}
    for threads, mode in ((1, ''), (2, ''), (2, ' --irq')):
        rc, out = g.run(f'vscsi-uio bench -d {T} --threads {threads} --rw randrw --iodepth 16 --runtime 3 '
                        f'--verify 40 --json{mode}', timeout=120)
        try:
            job = bench_json(out)['jobs'][0]
            reads = job['read']['total_ios']
            ok = rc == 0 and job['error'] == 0 and job['errors'] == 0 and reads > 0 and job['write']['total_ios'] > 0 \
                and job['verified_reads'] == reads and job['corrupt_reads'] == 0 and \
                len(job['thread_iops']) == threads and all(x > 0 for x in job['thread_iops'])
            if mode:
                ok = ok and all(job['interrupts'][f'request{q}'] > 0 for q in range(threads))
            iops[(threads, mode)] = job['read']['iops'] + job['write']['iops']
        except (ValueError, KeyError, IndexError):
            ok = False
        r.check(f'bench --threads {threads}{mode}: a queue each, every read checked against the pattern, no errors',
                ok, out)
    print(f'vfio --threads on the iothread device, 3 s of 4 KiB randrw at depth 16 per thread: '
          f'1 thread {iops.get((1, ""), 0):.0f} IOPS, 2 threads {iops.get((2, ""), 0):.0f} IOPS, '
          f'2 threads --irq {iops.get((2, " --irq"), 0):.0f} IOPS', flush=True)
    rc, out = g.run(f'vscsi-uio read -d {T} --lba 0 --count 65536 -o - | md5sum', timeout=300)
    r.check('every write of the threads landed where it belongs: the whole LUN still holds the pattern',
            rc == 0 and pattern_md5(40, 0, 32 * MiB) in out, out)
    rc, out = g.run(f'vscsi-uio bench -d {V2} --threads 1 --irq --runtime 1 2>&1')
    r.check('--threads with interrupts on shared vectors: refused, saying why',
            rc == 2 and 'needs an interrupt vector per queue' in out, out)

    # ---- two functions through vfio at once: two containers, two processes ----
    g.run_bg(f'vscsi-uio bench -d {T} --rw randrw --iodepth 16 --runtime 3 --irq --json > /tmp/two.json 2>&1')
    rc, out = g.run(f'vscsi-uio bench -d {A} --rw randrw --iodepth 16 --runtime 3 --json; '
                    'while pidof vscsi-uio >/dev/null; do sleep 0.2; done', timeout=120)
    rc2, out2 = g.run('cat /tmp/two.json')
    try:
        a, t = bench_json(out)['jobs'][0], bench_json(out2)['jobs'][0]
        ok = a['error'] == 0 and t['error'] == 0 and a['read']['total_ios'] > 0 and t['write']['total_ios'] > 0
    except (ValueError, KeyError, IndexError):
        ok = False
    r.check('two functions driven through vfio at the same time, no errors on either', ok, out + out2)

    # ---- events: hot-plug, capacity change, hot-unplug, on the event queue's own vector ----
    # On split rings (--ring split on A's packed=on device): a packed ring's driver event
    # structure really turns interrupts off, and QEMU may answer the AN subscribe before the
    # driver goes to sleep, so no control interrupt would be owed and the control vector's
    # check below would have nothing to count.
    g.run_bg(f'vscsi-uio events -d {A} --irq --ring split --timeout 60 > /tmp/ev.log 2>&1 & echo $! > /tmp/ev.pid')
    g.run('for i in $(seq 100); do grep -q listening /tmp/ev.log && break; sleep 0.1; done')
    rc, out = g.run(f'vscsi-uio scan -d {A} 2>&1')
    r.check('a second vscsi-uio on a function in use is refused in one line',
            one_line_error(out, rc, 'is in use by another vscsi-uio'), out)
    g.qmp('blockdev-add', **{'node-name': 'spare', 'driver': 'raw', 'file': {'driver': 'file', 'filename': spare}})
    g.qmp('device_add', driver='scsi-hd', drive='spare', id='hd-spare', bus='scsi0.0', **{'scsi-id': 0, 'lun': 7})
    g.run('for i in $(seq 100); do grep -q hot-plug /tmp/ev.log && break; sleep 0.1; done')
    g.qmp('block_resize', **{'node-name': 'spare', 'size': 4 * MiB})
    g.run('for i in $(seq 100); do grep -q "parameter change" /tmp/ev.log && break; sleep 0.1; done')
    g.qmp('device_del', id='hd-spare')
    g.run('for i in $(seq 100); do grep -q hot-unplug /tmp/ev.log && break; sleep 0.1; done')
    during = interrupts(g, A)
    rc, log = g.run('p=$(cat /tmp/ev.pid); kill $p; while kill -0 $p 2>/dev/null; do sleep 0.1; done; cat /tmp/ev.log')
    r.check('events: hot-plug of 0:7 with the new disk, capacity change, hot-unplug',
            'hot-plug: 0:7 (transport reset, rescan), QEMU QEMU HARDDISK 4096 blocks x 512 B' in log and
            'parameter change: 0:7 asc 2ah ascq 09h (capacity data has changed, now 8192 blocks' in log and
            'hot-unplug: 0:7 (transport reset, removed)' in log and 'events: 3 received' in log, log)
    m = re.search(r'interrupts: MSI-X, \d+ vectors: config (\d+), control (\d+), event (\d+), request0 (\d+)', log)
    r.check('events: the event queue\'s vector woke the driver for the events, the control queue\'s for the AN '
            'answer (request queue 0\'s for the probe of the new LUN)',
            m and int(m.group(3)) >= 3 and int(m.group(2)) >= 1 and int(m.group(4)) > 0, log)
    r.check('/proc/interrupts agrees: vector 2 (event queue) fired 3 times or more, vector 1 (control) at least once',
            during.get('vfio-msix[2]', 0) >= 3 and during.get('vfio-msix[1]', 0) >= 1, during)

    # ---- task management and resets ----
    rc, out = g.run(f'vscsi-uio reset -d {A} -t 1 -l 4 --type abort --irq', timeout=120)
    r.check('abort of a command in flight (MSI-X)',
            rc == 0 and 'answered FUNCTION COMPLETE' in out and 'the command ended aborted' in out, out)
    rc, out = g.run(f'vscsi-uio reset -d {A} -t 0 -l 3 --type lun', timeout=120)
    r.check('LUN reset', rc == 0 and 'LOGICAL UNIT RESET on 0:3 answered FUNCTION COMPLETE' in out, out)
    rc, out = g.run(f'vscsi-uio reset -d {A} -t 2 -l 0 --type target --hybrid', timeout=120)
    r.check('target reset', rc == 0 and 'I_T NEXUS RESET on 2:0 answered FUNCTION COMPLETE' in out, out)
    rc, out = g.run(f'vscsi-uio reset -d {A} --type device --irq', timeout=120)
    r.check('device reset: re-initialised (MSI-X vectors written again), the LUN answers afterwards',
            rc == 0 and 'afterwards: good' in out, out)

    # ---- the IOMMU confines the device ----
    rc, out = g.run(f'vscsi-uio iommu-check -d {A} --irq', timeout=180)
    # QEMU's own messages share the console with the guest's and may land inside its lines.
    guest_out = re.sub(r'qemu-system-x86_64: [^\n]*\n', '', out)
    m = re.search(r'into IOVA (0x[0-9a-f]+) \(the physical address of a page of ours', guest_out)
    r.check('iommu-check: a READ into the physical address of an unmapped page of ours does not land, and the '
            'driver recovers',
            rc == 0 and m and 'is untouched' in guest_out and 'afterwards: good, the same data' in guest_out, out)
    r.check('iommu-check: QEMU\'s IOMMU reports the translation failure', 'detected translation failure' in out, out)
    rc, dm = g.run('dmesg | grep DMAR')
    r.check('iommu-check: the guest logs the DMAR fault at that address',
            m is not None and re.search(rf'Request device \[00:04\.0\] fault addr {m.group(1)}\b', dm), dm)
    check_verify(r, g, 'after the fault', f'-d {A} -t 0 -l 0 --size 4m --seed 34 --irq', '4.0 MiB')

    # ---- ordinary pages, no root, RLIMIT_MEMLOCK ----
    rc, out = g.run(f'n=$(cat /proc/sys/vm/nr_hugepages); echo 0 > /proc/sys/vm/nr_hugepages; '
                    f'vscsi-uio scan -d {A} && vscsi-uio verify -d {A} -t 0 -l 0 --size 8m --seed 35; rc=$?; '
                    'echo $n > /proc/sys/vm/nr_hugepages; exit $rc', timeout=300)
    r.check('without hugepages: ordinary 4 KiB pages behind the IOMMU, and the data is right',
            rc == 0 and '(4 KiB pages) at IOVA' in out and 'identical' in out, out)
    nobody = ("grep -q '^nobody:' /etc/passwd || echo 'nobody:x:65534:65534::/:/bin/sh' >> /etc/passwd; "
              f"chown 65534 /dev/vfio/{group}; ")
    rc, out = g.run(nobody + f"ulimit -l 65536; su nobody -s /bin/sh -c 'vscsi-uio scan -d {A}'; rc=$?; "
                    f"chown 0 /dev/vfio/{group}; exit $rc", timeout=120)
    r.check('no root needed: a user given /dev/vfio/<group> and the memlock limit scans', rc == 0 and
            'scan: 3 targets, 4 LUNs' in out, out)
    rc, out = g.run(nobody + f"ulimit -l 64; su nobody -s /bin/sh -c 'vscsi-uio scan -d {A}' 2>&1; rc=$?; "
                    f"chown 0 /dev/vfio/{group}; exit $rc")
    r.check('RLIMIT_MEMLOCK too low: one line naming it and the limit',
            one_line_error(out, rc, 'RLIMIT_MEMLOCK is 64 KiB'), out)

    # ---- a killed driver: the kernel's cleanup is enough ----
    g.run_bg(f'vscsi-uio bench -d {A} --iodepth 16 --queues 4 --runtime 60 --irq > /tmp/k.log 2>&1')
    rc, out = g.run(f'for i in $(seq 200); do grep -q "vfio-msix.*({A})" /proc/interrupts && break; sleep 0.1; done; '
                    'sleep 1; grep HugePages_Free /proc/meminfo; kill -9 $(pidof vscsi-uio); '
                    'while pidof vscsi-uio >/dev/null; do sleep 0.1; done; '
                    f'grep "({A})" /proc/interrupts; grep HugePages_Free /proc/meminfo')
    free = re.findall(r'HugePages_Free:\s+(\d+)', out)
    r.check('kill -9 in the middle of I/O: the kernel frees the vectors and unpins the memory',
            len(free) == 2 and int(free[0]) < 64 and free[1] == '64' and 'vfio-msix' not in out, out)
    check_verify(r, g, 'right after the killed driver', f'-d {A} -t 0 -l 0 --size 4m --seed 36 --irq', '4.0 MiB')

    # ---- refusals ----
    rc, out = g.run(f'vscsi-uio bind -d {NP}')
    r.check('bind a device without iommu_platform (it has an IOMMU group)', rc == 0 and 'bound to vfio-pci' in out, out)
    rc, out = g.run(f'vscsi-uio scan -d {NP} 2>&1')
    r.check('a device without iommu_platform is refused before it learns an address',
            one_line_error(out, rc, 'does not offer VIRTIO_F_ACCESS_PLATFORM'), out)
    rc, out = g.run(f'vscsi-uio bind -d {B1} 2>&1; echo "override: $(cat /sys/bus/pci/devices/{B1}/driver_override)"')
    r.check('bind refuses a function whose IOMMU group is shared, and writes nothing',
            'is shared with' in out and B2 in out and 'override: (null)' in out, out)
    rc, out = g.run(f'echo vfio-pci > /sys/bus/pci/devices/{B1}/driver_override && '
                    f'echo {B1} > /sys/bus/pci/drivers_probe && modprobe virtio_pci && '
                    f'readlink /sys/bus/pci/devices/{B1}/driver; readlink /sys/bus/pci/devices/{B2}/driver')
    r.check('by hand: one function of the shared group on vfio-pci, the other on virtio-pci',
            rc == 0 and out.split()[-2:] and out.split()[-2].endswith('/vfio-pci') and
            out.split()[-1].endswith('/virtio-pci'), out)
    rc, out = g.run(f'vscsi-uio scan -d {B1} 2>&1')
    r.check('a group that is not viable is refused, naming the function that spoils it',
            one_line_error(out, rc, 'is not viable') and f'{B2} (virtio-pci)' in out, out)
    rc, out = g.run(f'vscsi-uio scan -d {A} --legacy 2>&1')
    r.check('--legacy through vfio is refused in one line', one_line_error(out, rc, 'not through vfio'), out)
    rc, out = g.run(f'vscsi-uio scan -d {A} --driver uio 2>&1')
    r.check('--driver uio on a function bound to vfio-pci: refused with the command that moves it',
            one_line_error(out, rc, f"'vscsi-uio bind --driver uio {A}'"), out)
    rc, out = g.run(f'vscsi-uio bind -d {A} --driver vfo 2>&1')
    r.check('a bad --driver is a usage error', rc == 2 and one_line_error(out, rc, '--driver must be uio or vfio'), out)

    rc, out = g.run('dmesg | grep -iE "nobody cared|disabling irq"; true')
    r.check('the guest kernel never saw an interrupt nobody handled (polled, the devices are kept silent)',
            out.strip() == '', out)

    # ---- back to the kernel's driver, behind the same IOMMU ----
    check_kernel_cross(r, g, A, target=2, lun=0, block_size=4096)
    rc, out = g.run(f'readlink /sys/bus/pci/devices/{A}/driver')
    r.check('bind --force gave it to vfio-pci again', out.strip().endswith('/vfio-pci'), out)
except GuestError as e:
    r.check('the guest ran to the end', False, e)
finally:
    g.stop()
print(f'vfio: {time.monotonic() - started:.0f} s', flush=True)
r.finish()
