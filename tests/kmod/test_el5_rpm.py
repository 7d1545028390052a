#!/usr/bin/env python3
"""The kmod RPM is one RHEL5's rpm 4.4 installs: built by kmod/build-kmod-rpm.sh from a
stand-in module (no RHEL5 tree needed) and read back with rpm -qp, rpm -qip, rpm2cpio | cpio.

  test_el5_rpm.py KMOD_DIR WORK_DIR [MODULE.ko]
"""
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import el5_standin  # noqa: E402

# What rpm 4.4 (RHEL5) can satisfy among rpmlib() dependencies.
RPM44_RPMLIB = {'rpmlib(CompressedFileNames)', 'rpmlib(PayloadFilesHavePrefix)',
                'rpmlib(VersionedDependencies)', 'rpmlib(PartialHardlinkSets)',
                'rpmlib(PayloadIsBzip2)', 'rpmlib(ScriptletInterpreterArgs)'}
failures = []


def check(name, cond, detail=''):
    print(('ok   ' if cond else 'FAIL ') + name + ('' if cond else f': {detail}'))
    if not cond:
        failures.append(name)


def q(rpm, *args):
    return subprocess.run(['rpm', '-qp', *args, rpm], capture_output=True, text=True,
                          check=True).stdout


def build_rpm(kmod_dir, ko, kversion, topdir):
    env = dict(os.environ, KO=ko, KVERSION=kversion, RPM_DIR=topdir, VERSION='0.1.0', RELEASE='1')
    p = subprocess.run(['sh', os.path.join(kmod_dir, 'build-kmod-rpm.sh')], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout + p.stderr)
        return None
    return p.stdout.strip().splitlines()[-1]


def package_cases(kmod_dir, ko, kversion, topdir, name):
    rpm = build_rpm(kmod_dir, ko, kversion, topdir)
    check(f'{kversion}: rpmbuild produced a package', rpm and os.path.isfile(rpm), rpm)
    if not rpm or not os.path.isfile(rpm):
        return
    check(f'{kversion}: package name', q(rpm, '--qf', '%{NAME}') == name, q(rpm, '--qf', '%{NAME}'))
    compressor, algo = q(rpm, '--qf', '%{PAYLOADCOMPRESSOR} %{FILEDIGESTALGO}').split()
    check(f'{kversion}: gzip payload', compressor == 'gzip', compressor)
    # rpm writes no FILEDIGESTALGO tag for MD5, the only algorithm rpm 4.4 knows.
    check(f'{kversion}: MD5 file digests', algo in ('(none)', '1'), algo)
    digests = [d for d in q(rpm, '--qf', '[%{FILEDIGESTS}\n]').split() if d]
    check(f'{kversion}: digests are 32 hex digits',
          digests and all(re.fullmatch(r'[0-9a-f]{32}', d) for d in digests), digests)

    info = q(rpm, '-i')
    check(f'{kversion}: rpm -qip names the package', re.search(rf'^Name\s*:\s*{name}$', info, re.M),
          info)
    cpio = subprocess.run(f'rpm2cpio "{rpm}" | cpio -t --quiet', shell=True, capture_output=True,
                          text=True, check=True).stdout.split()
    path = f'./lib/modules/{kversion}/extra/virtio_scsi/virtio_scsi.ko'
    check(f'{kversion}: payload holds the module under extra/', path in cpio, cpio)
    payload = subprocess.run(f'rpm2cpio "{rpm}" | cpio -i --quiet --to-stdout "{path}"', shell=True,
                             capture_output=True, check=True).stdout
    with open(ko, 'rb') as f:
        check(f'{kversion}: module packaged byte for byte', payload == f.read())

    requires = [r.strip() for r in q(rpm, '--requires').splitlines() if r.strip()]
    provides = [p.strip() for p in q(rpm, '--provides').splitlines() if p.strip()]
    variant = subprocess.run(['sh', os.path.join(kmod_dir, 'kmodtool'), 'variant', kversion],
                             capture_output=True, text=True, check=True).stdout.strip()
    verrel = kversion[:len(kversion) - len(variant)] if variant else kversion
    kernel = 'kernel' + (f'-{variant}' if variant else '')
    check(f'{kversion}: requires {kernel} = {verrel}', f'{kernel} = {verrel}' in requires, requires)
    check(f'{kversion}: requires depmod for its scriptlets', '/sbin/depmod' in requires, requires)
    check(f'{kversion}: provides kernel-modules', f'kernel-modules = {kversion}' in provides,
          provides)
    check(f'{kversion}: provides virtio_scsi-kmod', 'virtio_scsi-kmod = 0.1.0-1' in provides,
          provides)
    rpmlib = {r.split()[0] for r in requires if r.startswith('rpmlib(')}
    check(f'{kversion}: only rpmlib() features rpm 4.4 has', rpmlib <= RPM44_RPMLIB,
          rpmlib - RPM44_RPMLIB)
    # A rich (boolean) dependency is a parenthesised expression: "(a or b)".
    rich = [r for r in requires + provides if r.startswith('(')]
    check(f'{kversion}: no rich dependencies', not rich, rich)
    scripts = q(rpm, '--scripts')
    check(f'{kversion}: depmod for this kernel after install',
          f'/sbin/depmod -a {kversion}' in scripts, scripts)


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    kmod_dir, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if shutil.which('rpmbuild') is None:
        print('rpmbuild not found: scripts/setup installs the Debian package rpm', file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if len(sys.argv) == 4:
        ko = os.path.abspath(sys.argv[3])
    else:
        ko = el5_standin.build(work)
    package_cases(kmod_dir, ko, '2.6.18-164.el5', os.path.join(work, 'rpm'), 'kmod-virtio_scsi')
    package_cases(kmod_dir, ko, '2.6.18-274.7.1.el5xen', os.path.join(work, 'rpm-xen'),
                  'kmod-virtio_scsi-xen')

    bad = subprocess.run(['sh', os.path.join(kmod_dir, 'build-kmod-rpm.sh')],
                         env=dict(os.environ, KO=os.path.join(work, 'absent.ko'),
                                  KVERSION='2.6.18-164.el5', RPM_DIR=os.path.join(work, 'r'),
                                  VERSION='0.1.0'),
                         capture_output=True, text=True)
    check('missing module refused with one line', bad.returncode != 0 and
          'no module at' in bad.stderr, bad.stderr)
    print(f'{len(failures)} failed' if failures else 'all passed')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
