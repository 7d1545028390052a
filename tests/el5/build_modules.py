#!/usr/bin/env python3
"""Build virtio_scsi.ko against one RHEL5 kernel-devel tree in each of the ways README.md
documents, outside the source tree, for the el5 suite:

  build_modules.py SOURCE_ROOT TARBALL WORK_DIR MESON_KO MAKE_KO BARE_KO

TARBALL (kernel-devel-<release>.tar.xz, the RPM's payload) is unpacked into WORK_DIR/tree
once (again only when the tarball is newer than its stamp); then, against
WORK_DIR/tree/usr/src/kernels/<the one tree there>:

  meson  a Meson build of its own: meson setup -Dvscsi_backend=rhel5 -Dkernel_dir=<tree>,
         then meson compile virtio_scsi.ko
  make   make -C kmod KSRC=<tree> (module and kmod RPM), with MOD_DIR and RPM_DIR in WORK_DIR
  bare   make -C <tree> M=<kmod> on a copy of the repository's kmod/ and include/

Each module is copied to its output as the build left it: nothing here touches it. A step
that fails prints the tail of its log and the script exits 1.
"""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'kmod'))
from test_el5_kbuild import copy_repository  # noqa: E402


def step(name, cmd, log):
    with open(log, 'w') as f:
        f.write('$ ' + ' '.join(cmd) + '\n')
        f.flush()
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        with open(log) as f:
            tail = f.read().splitlines()[-30:]
        print(f'build_modules: {name} failed (exit {p.returncode}); {log} ends:\n' + '\n'.join(tail),
              file=sys.stderr)
        sys.exit(1)


def unpack(tarball, work):
    """The kernel tree inside the unpacked tarball, unpacking it first if needed."""
    top = os.path.join(work, 'tree')
    stamp = top + '.stamp'
    if not os.path.exists(stamp) or os.path.getmtime(stamp) < os.path.getmtime(tarball):
        shutil.rmtree(top, ignore_errors=True)
        os.makedirs(top)
        step('unpacking ' + os.path.basename(tarball), ['tar', '-xJf', tarball, '-C', top], os.path.join(work, 'tar.log'))
        open(stamp, 'w').close()
    kernels = os.path.join(top, 'usr', 'src', 'kernels')
    trees = sorted(os.listdir(kernels)) if os.path.isdir(kernels) else []
    if len(trees) != 1:
        print(f'build_modules: {tarball} should hold one tree in usr/src/kernels/, not {trees}', file=sys.stderr)
        sys.exit(1)
    return os.path.join(kernels, trees[0])


def main():
    if len(sys.argv) != 7:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    src, tarball, work = (os.path.abspath(a) for a in sys.argv[1:4])
    meson_ko, make_ko, bare_ko = (os.path.abspath(a) for a in sys.argv[4:7])
    os.makedirs(work, exist_ok=True)
    tree = unpack(tarball, work)

    build = os.path.join(work, 'meson')
    if not os.path.isfile(os.path.join(build, 'build.ninja')):
        shutil.rmtree(build, ignore_errors=True)
        step('meson setup', ['meson', 'setup', build, src, '-Dvscsi_backend=rhel5', f'-Dkernel_dir={tree}',
                             '-Dfuzz=disabled'], os.path.join(work, 'meson-setup.log'))
    step('meson compile', ['meson', 'compile', '-C', build, 'virtio_scsi.ko'], os.path.join(work, 'meson.log'))
    shutil.copy2(os.path.join(build, 'kmod', 'virtio_scsi.ko'), meson_ko)

    step('make KSRC=', ['make', '--no-print-directory', '-C', os.path.join(src, 'kmod'), f'KSRC={tree}',
                        f'MOD_DIR={work}/make', f'RPM_DIR={work}/make-rpm', f'KO_OUT={make_ko}'],
         os.path.join(work, 'make.log'))

    repo = os.path.join(work, 'bare')
    shutil.rmtree(repo, ignore_errors=True)
    kmod = copy_repository(os.path.join(src, 'kmod'), repo)
    step('make -C <tree> M=', ['make', '-C', tree, f'M={kmod}'], os.path.join(work, 'bare.log'))
    shutil.copy2(os.path.join(kmod, 'virtio_scsi.ko'), bare_ko)


if __name__ == '__main__':
    main()
