"""What the QEMU benchmarks share: the guest's CPU time from /proc/stat, and one measurement
(an fio-style JSON job, from fio or vscsi-uio bench) with the CPU it cost."""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(here), 'qemu'))
from vmlib import GuestError  # noqa: E402


def busy_jiffies(g):
    """(busy, total) jiffies of the guest's CPUs from /proc/stat."""
    # A kernel message may land in the middle of the line on the shared console: read again
    # until the line comes back whole.
    for _ in range(5):
        rc, out = g.run('head -1 /proc/stat')
        line = next((l for l in out.splitlines() if l.startswith('cpu ')), '')
        fields = line.split()[1:]
        if len(fields) >= 8 and all(x.isdigit() for x in fields):
            f = [int(x) for x in fields]
            idle = f[3] + f[4]
            return sum(f) - idle, sum(f)
    raise GuestError(f'cannot read /proc/stat: {out!r}')


def hz(g):
    rc, out = g.run('getconf CLK_TCK 2>/dev/null || echo 100')
    try:
        return int(out.split()[-1])
    except (ValueError, IndexError):
        return 100


def measure(g, cmd, ticks, runtime):
    """Run an fio-style JSON job; its read IOPS, mean and p99 latency (us) and the guest's CPU
    time per I/O (us): all non-idle time of the guest's CPUs over the run, divided by the I/Os."""
    b0, _ = busy_jiffies(g)
    rc, out = g.run(cmd, timeout=runtime * 3 + 120)
    b1, _ = busy_jiffies(g)
    if rc != 0:
        raise GuestError(f'`{cmd}` failed ({rc}):\n{out}')
    doc = json.loads(out[out.find('{'):out.rindex('}') + 1])
    job = doc['jobs'][0]['read']
    ios = job['total_ios']
    lat = job.get('clat_ns') or job['lat_ns']
    pct = lat.get('percentile', {})
    return {
        'iops': job['iops'],
        'lat_us': job['lat_ns']['mean'] / 1000,
        'p99_us': pct.get('99.000000', 0) / 1000,
        'cpu_us': (b1 - b0) / ticks * 1e6 / ios if ios else 0,
    }
