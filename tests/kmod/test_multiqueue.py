#!/usr/bin/env python3
"""Multiple request queues: with two CPUs and num_queues=2 the host gets two blk-mq
hardware queues, each on its own request virtqueue; I/O issued from each CPU travels on the
queue blk-mq maps that CPU to, and data written from both CPUs at once reads back intact.
A device offering more queues than there are CPUs gets one per CPU."""
import kmodlib
from kmodlib import Report, GuestError, make_disk, scsi_controller, scsi_disk

ko, work = kmodlib.args()
r = Report('kmod-multiqueue')

a = make_disk(f'{work}/a.img', 64 << 20)
b = make_disk(f'{work}/b.img', 16 << 20)
qemu = (scsi_controller('scsi0', num_queues=2) + scsi_disk('a', a, bus='scsi0.0') +
        scsi_controller('scsi1', num_queues=4) + scsi_disk('b', b, bus='scsi1.0'))
g = kmodlib.guest(work, ko, qemu, smp='2')


def queue_counts(host):
    st = kmodlib.stats(g)['hosts'].get(host, {})
    return [st.get(f'queue{i}', 0) for i in range(st.get('request_queues', 0))]


try:
    g.start()
    rc, out = kmodlib.load(g)
    r.check('insmod virtio_scsi.ko', rc == 0, out)
    disks = kmodlib.wait_disks(g, 2)
    host_of = {dev: f'host{hctl.split(":")[0]}' for hctl, dev in disks.items()}
    by_host = {h: d for d, h in host_of.items()}
    st = kmodlib.stats(g)['hosts']
    rc, out = g.run('nproc; for h in /sys/class/scsi_host/host*; do echo $(basename $h) '
                    '$(cat $h/device/../../device); done')
    r.check('two CPUs online', out.split()[:1] == ['2'], out)
    queues = {h: s.get('request_queues') for h, s in st.items()}
    r.check('both hosts have two request queues (num_queues=2, and 4 capped to the 2 CPUs)',
            sorted(queues.values()) == [2, 2], queues)

    dev = sorted(disks.values())[0]
    host = host_of[dev]
    rc, out = g.run(f'ls /sys/block/{dev}/mq/; for q in /sys/block/{dev}/mq/*; do echo $(basename $q): '
                    f'$(cat $q/cpu_list); done')
    hw = [line for line in out.splitlines() if ':' in line]
    r.check('blk-mq sees two hardware queues, one CPU each', len(hw) == 2 and
            sorted(line.split(':')[1].strip() for line in hw) == ['0', '1'], out)

    # I/O from CPU 0, then from CPU 1: each lands on the queue its CPU maps to.
    cpu_queue = {}
    for line in hw:
        q, cpus = line.split(':')
        cpu_queue[int(cpus.strip())] = int(q)
    moved = {}
    for cpu in (0, 1):
        before = queue_counts(host)
        rc, out = g.run(f'taskset -c {cpu} dd if=/dev/{dev} of=/dev/null bs=4k count=400 iflag=direct 2>&1')
        after = queue_counts(host)
        moved[cpu] = [x - y for x, y in zip(after, before)]
    detail = f'cpu->queue {cpu_queue}, commands per queue during each run {moved}'
    r.check('400 reads from each CPU went to that CPU\'s request virtqueue',
            len(cpu_queue) == 2 and all(moved[c][cpu_queue[c]] >= 400 and moved[c][1 - cpu_queue[c]] < 40
                                        for c in (0, 1)), detail)

    # Both CPUs writing at once, then read back cold.
    script = 'set -e\n'
    for cpu in (0, 1):
        script += f'dd if=/dev/urandom of=/tmp/p{cpu} bs=1M count=8 2>/dev/null\n'
    for cpu in (0, 1):
        script += (f'taskset -c {cpu} dd if=/tmp/p{cpu} of=/dev/{dev} bs=16k seek={cpu * 1024} '
                   f'oflag=direct 2>/dev/null &\n')
    script += 'wait\necho 3 > /proc/sys/vm/drop_caches\n'
    for cpu in (0, 1):
        script += (f'taskset -c {1 - cpu} dd if=/dev/{dev} of=/tmp/q{cpu} bs=16k skip={cpu * 1024} count=512 '
                   f'iflag=direct 2>/dev/null\ncmp /tmp/p{cpu} /tmp/q{cpu}\n')
    rc, out = g.run(script, timeout=600)
    counts = queue_counts(host)
    r.check('concurrent writers on both CPUs: data intact, both queues carried commands',
            rc == 0 and len(counts) == 2 and min(counts) > 100, f'{out}\n{counts}')
    ok, out = kmodlib.write_verify(g, by_host.get([h for h in queues if h != host][0], 'sdb'), mib=4)
    r.check('the capped host works too', ok, out)

    trouble = kmodlib.kernel_trouble(g.dmesg())
    r.check('no kernel warnings, oopses or hung tasks', not trouble, '\n'.join(trouble))
except GuestError as e:
    r.check('the guest ran', False, e)
finally:
    g.stop()
r.finish()
