#!/usr/bin/env python3
"""Throughput of vscsi's module beside the kernel's own virtio_scsi, in one guest.

Two identical virtio-scsi controllers, each with a QEMU null disk (read-zeroes). The kernel's
virtio_scsi drives one, vscsi's module (built as vscsi_bench.ko, so both can be loaded at
once) the other. fio does 4 KiB random reads at depth 1 (psync) and depth 32 (libaio), I/O
scheduler none, in short slices that alternate between the two disks (and which goes
first), so load on the host hits both alike; the drivers swap controllers every round.
Prints IOPS per round and the ratio vscsi / kernel.

A benchmark, not a test: it prints numbers and fails only if it cannot measure.

  bench_fio.py VSCSI_BENCH_KO WORK_DIR [--rounds N] [--slices N] [--seconds S]
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kmodlib  # noqa: E402
from kmodlib import Guest, GuestError, scsi_controller  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('ko', help='vscsi_bench.ko (meson compile -C <build> vscsi_bench.ko)')
    p.add_argument('work')
    p.add_argument('--rounds', type=int, default=4, help='even: each driver gets each controller equally')
    p.add_argument('--slices', type=int, default=4, help='alternations per round and depth')
    p.add_argument('--seconds', type=int, default=3, help='fio run time per slice')
    a = p.parse_args()
    if not os.path.isfile(a.ko):
        sys.exit(f'{a.ko}: no such module (meson compile -C <build> vscsi_bench.ko)')
    os.makedirs(a.work, exist_ok=True)

    qemu = []
    for i in range(2):
        qemu += scsi_controller(f'scsi{i}')
        qemu += ['-blockdev', f'driver=null-co,node-name=null{i},read-zeroes=on,size=1073741824',
                 '-device', f'scsi-hd,drive=null{i},id=hd-null{i},bus=scsi{i}.0,scsi-id=0,lun=0']
    release = kmodlib.kernel_release()
    if kmodlib.module_release(a.ko) != release:
        sys.exit(f'{a.ko} was not built for the guest kernel {release}')
    g = Guest(os.path.join(a.work, 'guest'), modules=['virtio_pci'],
              ship_modules=['scsi_mod', 'sd_mod', 'virtio_scsi'],
              extra_modules={'vscsi_bench': os.path.abspath(a.ko)},
              files={'/usr/bin/fio': kmodlib.tool_paths(['fio'])[0]}, qemu_args=qemu, hugepages=0)
    results = {}  # (round, driver, depth) -> [iops per slice]
    try:
        g.start()
        rc, out = g.run('modprobe sd_mod && modprobe virtio_scsi && '
                        f'insmod /lib/modules/{release}/extra/vscsi_bench.ko && ls /sys/bus/virtio/devices')
        if rc or out.split() != ['virtio0', 'virtio1']:
            raise GuestError(f'could not load both drivers: {out}')

        def assign(rnd):
            """Hand one controller to each driver (swapped every round); their disks."""
            mine, theirs = ('virtio1', 'virtio0') if rnd % 2 == 0 else ('virtio0', 'virtio1')
            rc, out = g.run(
                'for drv in virtio_scsi vscsi_bench; do for d in /sys/bus/virtio/drivers/$drv/virtio*; do '
                '[ -e "$d" ] && echo $(basename $d) > /sys/bus/virtio/drivers/$drv/unbind; done; done; '
                f'echo {theirs} > /sys/bus/virtio/drivers/virtio_scsi/bind && '
                f'echo {mine} > /sys/bus/virtio/drivers/vscsi_bench/bind && '
                'for t in $(seq 100); do [ $(ls /sys/class/scsi_disk | wc -l) = 2 ] && break; sleep 0.1; done; '
                'for d in /sys/class/scsi_disk/*; do b=$(ls $d/device/block); '
                'h=$(echo $(basename $d) | cut -d: -f1); '
                'if [ -e /sys/class/scsi_host/host$h/vscsi_stats ]; then echo vscsi $b; else echo kernel $b; fi; '
                'echo none > /sys/block/$b/queue/scheduler; done')
            disks = dict(line.split() for line in out.splitlines() if line.startswith(('vscsi ', 'kernel ')))
            if rc or set(disks) != {'vscsi', 'kernel'}:
                raise GuestError(f'could not give each driver a controller: {out}')
            print(f'round {rnd + 1}: kernel virtio_scsi drives {theirs} (/dev/{disks["kernel"]}), '
                  f'vscsi drives {mine} (/dev/{disks["vscsi"]})', flush=True)
            return disks

        def fio(dev, depth):
            engine = 'psync' if depth == 1 else 'libaio'
            rc, out = g.run(f'fio --name=bench --filename=/dev/{dev} --rw=randread --bs=4k --direct=1 '
                            f'--ioengine={engine} --iodepth={depth} --time_based --runtime={a.seconds} '
                            f'--ramp_time=1 --size=1g --output-format=json', timeout=a.seconds * 20 + 120)
            if rc:
                raise GuestError(f'fio failed on {dev}: {out}')
            return json.loads(out[out.index('{'):])['jobs'][0]['read']['iops']

        for rnd in range(a.rounds):
            disks = assign(rnd)
            for depth in (1, 32):
                for s in range(a.slices):
                    order = ('kernel', 'vscsi') if (s + rnd) % 2 == 0 else ('vscsi', 'kernel')
                    for driver in order:
                        results.setdefault((rnd, driver, depth), []).append(fio(disks[driver], depth))
                k = sum(results[(rnd, 'kernel', depth)]) / a.slices
                v = sum(results[(rnd, 'vscsi', depth)]) / a.slices
                print(f'round {rnd + 1} depth {depth:2}: kernel {k:8.0f} IOPS, vscsi {v:8.0f} IOPS, '
                      f'ratio {v / k:.3f}', flush=True)
    except GuestError as e:
        sys.exit(f'benchmark failed: {e}')
    finally:
        g.stop()

    def mean(rnd, driver, depth):
        return sum(results[(rnd, driver, depth)]) / len(results[(rnd, driver, depth)])

    print()
    print(f'fio 4 KiB random reads, null device, IOPS; {a.slices} alternating slices of {a.seconds} s per cell')
    print(f'{"round":>5} | {"kernel d1":>10} {"vscsi d1":>10} {"ratio":>6} | {"kernel d32":>10} {"vscsi d32":>10} {"ratio":>6}')
    for rnd in range(a.rounds):
        cells = []
        for depth in (1, 32):
            k, v = mean(rnd, 'kernel', depth), mean(rnd, 'vscsi', depth)
            cells.append(f'{k:10.0f} {v:10.0f} {v / k:6.3f}')
        print(f'{rnd + 1:>5} | ' + ' | '.join(cells))
    cells = []
    for depth in (1, 32):
        k = sum(mean(r, 'kernel', depth) for r in range(a.rounds)) / a.rounds
        v = sum(mean(r, 'vscsi', depth) for r in range(a.rounds)) / a.rounds
        cells.append(f'{k:10.0f} {v:10.0f} {v / k:6.3f}')
    print(f'{"all":>5} | ' + ' | '.join(cells))


if __name__ == '__main__':
    main()
