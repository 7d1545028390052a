#!/usr/bin/env python3
"""A bare `make -C <2.6.18 tree> M=$PWD/kmod` (kmod/el5.mk's "Bare builds").

  test_el5_kbuild.py KMOD_DIR WORK_DIR
  test_el5_kbuild.py KMOD_DIR WORK_DIR TREE USE_FIND_VQS [REFERENCE_KO]

Without TREE (no RHEL5 tree needed): kmod/Kbuild and el5.mk read by a stand-in for the
pass of 2.6.18's kbuild that reads a module's Kbuild (scripts/Makefile.build: obj= on the
command line, the tree's variables in the environment), with a recorder in place of the
nested make. Checks what the pass builds itself, what it hands to GNUmakefile and what it
keeps from that make (the command line it inherited must not reach it), the copy of the
checked module, and the cases that must stay on the one-pass build or fail with a message.

With TREE (a configured RHEL5/CentOS5 2.6.18 tree, USE_FIND_VQS auto|0|1 as the build was
configured): the real thing on a copy of the repository's kmod/ and include/: the bare
build, el5_ko_fixup.py --check-only and modinfo on its module, the same module as
REFERENCE_KO (the Meson build's) once debug info is stripped, the other virtio API refused
by the compiler without a module left behind, modules_install, and clean.
Every case prints ok/FAIL; the exit status is 1 if any failed.
"""
import json
import os
import re
import shutil
import subprocess
import sys

failures = []


def check(name, cond, detail=''):
    print(('ok   ' if cond else 'FAIL ') + name + ('' if cond else f': {str(detail)[-2000:]}'))
    if not cond:
        failures.append(name)


def write(path, text, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    if mode:
        os.chmod(path, mode)
    return path


def copy_repository(kmod_src, dest):
    """What a checkout holds for the module: kmod/'s sources and tools, include/, and the
    top meson.build (GNUmakefile reads the version there). Build outputs stay behind."""
    kmod = os.path.join(dest, 'kmod')
    os.makedirs(kmod)
    for name in sorted(os.listdir(kmod_src)):
        path = os.path.join(kmod_src, name)
        if (os.path.isfile(path) and not name.endswith(('.mod.c', '.o', '.ko', '.cmd'))
                and (name in ('Kbuild', 'GNUmakefile')
                     or name.endswith(('.mk', '.c', '.h', '.cpp', '.py', '.sh')))):
            shutil.copy2(path, kmod)
    shutil.copytree(os.path.join(kmod_src, '..', 'include'), os.path.join(dest, 'include'))
    shutil.copy2(os.path.join(kmod_src, '..', 'meson.build'), dest)
    return kmod


def listing(top):
    """Every path below top (hidden ones too), relative."""
    out = set()
    for root, dirs, files in os.walk(top):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(root, n), top))
    return out


# ---- stand-in kbuild ---------------------------------------------------------------------

# The pass of 2.6.18's kbuild that reads a module's Kbuild gives it obj (on its command
# line), src, the quiet/cmd helpers and the tree's exported variables; it builds obj-m and
# always, prefixed with obj. `show` prints what the Kbuild decided.
STANDIN_PASS = r'''
src := $(obj)
quiet := quiet_
Q := @
cmd = @$(if $($(quiet)cmd_$(1)),echo '  $($(quiet)cmd_$(1))';) $(cmd_$(1))
include $(src)/Kbuild
always := $(addprefix $(obj)/,$(always))
.PHONY: __build show FORCE
__build: $(always)
	@:
show:
	@echo 'obj-m=$(strip $(obj-m))'
	@echo 'always=$(strip $(always))'
	@echo 'clean-dirs=$(strip $(clean-dirs))'
	@echo 'clean-files=$(strip $(clean-files))'
'''

# Stands in for the nested make: records how it was called, then leaves a module in
# MOD_DIR as GNUmakefile's `module` would (or fails when told to).
RECORDER = r'''#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
with open(os.environ['RECORD_TO'], 'a') as f:
    f.write(json.dumps({'args': args, 'makeflags': os.environ.get('MAKEFLAGS', ''),
                        'env': {k: os.environ[k] for k in ('obj', 'M', 'SUBDIRS', 'EXTRA_CFLAGS',
                                                           'NOSTDINC_FLAGS') if k in os.environ}}) + '\n')
if os.environ.get('RECORDER_FAIL'):
    sys.exit(2)
mod_dir = [a[len('MOD_DIR='):] for a in args if a.startswith('MOD_DIR=')][0]
os.makedirs(mod_dir, exist_ok=True)
with open(os.path.join(mod_dir, 'virtio_scsi.ko'), 'w') as f:
    f.write('module built in ' + mod_dir + '\n')
'''


def standin_tree(work, name, virtio_api):
    """A directory with what el5.mk and GNUmakefile read of a 2.6.18 tree."""
    tree = os.path.join(work, name)
    write(os.path.join(tree, 'Makefile'), 'VERSION = 2\nPATCHLEVEL = 6\nSUBLEVEL = 18\n')
    write(os.path.join(tree, 'include/linux/utsrelease.h'), '#define UTS_RELEASE "2.6.18-164.el5"\n')
    write(os.path.join(tree, 'include/linux/virtio_config.h'),
          f'struct virtio_config_ops {{ void *{virtio_api}; }};\n')
    write(os.path.join(tree, 'Module.symvers'), '0x12345678\tprintk\tvmlinux\tEXPORT_SYMBOL\n')
    return tree


class Standin:
    def __init__(self, work, kmod):
        self.work, self.kmod = work, kmod
        self.pass_mk = write(os.path.join(work, 'standin-pass.mk'), STANDIN_PASS)
        self.recorder = write(os.path.join(work, 'bin', 'record-make'), RECORDER, 0o755)
        self.records = os.path.join(work, 'records.jsonl')

    def run(self, tree, goal='__build', args=(), env=None, cc='gcc'):
        if os.path.exists(self.records):
            os.unlink(self.records)
        e = dict(os.environ, srctree=tree, VERSION='2', PATCHLEVEL='6', SUBLEVEL='18', CC=cc,
                 NOSTDINC_FLAGS='-nostdinc', RECORD_TO=self.records)
        e.pop('MAKEFLAGS', None)
        e.update(env or {})
        p = subprocess.run(['make', '--no-print-directory', '-f', self.pass_mk, f'obj={self.kmod}',
                            f'M={self.kmod}', f'MAKE={self.recorder}', *args, goal],
                           env=e, capture_output=True, text=True)
        calls = []
        if os.path.exists(self.records):
            with open(self.records) as f:
                calls = [json.loads(line) for line in f]
        return p.returncode, p.stdout + p.stderr, calls

    def show(self, tree, args=(), cc='gcc'):
        rc, out, _ = self.run(tree, 'show', args, cc=cc)
        return rc, dict(line.split('=', 1) for line in out.splitlines() if re.match(r'^[a-z-]+=', line)), out


def standin_cases(kmod_src, work):
    kmod = copy_repository(kmod_src, os.path.join(work, 'repo'))
    include = os.path.join(work, 'repo', 'include')
    old_api = standin_tree(work, 'tree-find_vq', 'find_vq')
    new_api = standin_tree(work, 'tree-find_vqs', 'find_vqs')
    s = Standin(work, kmod)
    ko = os.path.join(kmod, 'virtio_scsi.ko')
    private = os.path.join(kmod, '.el5-build')

    rc, shown, out = s.show(old_api)
    check('bare: the pass builds no module itself', rc == 0 and shown.get('obj-m') == '', out)
    check('bare: its one target is the module here', shown.get('always') == ko, out)
    check('bare and any: clean removes the private directory and what modpost leaves',
          shown.get('clean-dirs') == '.el5-build'
          and set(shown.get('clean-files', '').split()) == {'Module.symvers', 'Module.markers'}, out)

    write(ko, 'stale module\n')
    rc, out, calls = s.run(old_api, args=['SUBDIRS=' + kmod, 'V=1', 'EXTRA_CFLAGS=-DPROBE_A -DPROBE_B',
                                          'VERMAGIC_GCC=gcc-4.4'])
    check('bare: one nested make', rc == 0 and len(calls) == 1, out)
    if len(calls) != 1:
        return
    args = calls[0]['args']
    want = ['-C', kmod, 'module', f'KSRC={old_api}', f'MOD_DIR={private}',
            f'VSCSI_INCLUDE={include}', 'USE_FIND_VQS=0', 'EXTRA_CFLAGS=-DPROBE_A -DPROBE_B',
            'V=1', 'VERMAGIC_GCC=gcc-4.4']
    check("bare: GNUmakefile's module, private directory, tree, include, virtio API from the "
          "tree, the user's EXTRA_CFLAGS, V and VERMAGIC_GCC",
          all(w in args for w in want) and args.index('-C') + 1 == args.index(kmod),
          f'missing {[w for w in want if w not in args]} in {args}')
    inherited = [w for w in ('obj=', 'M=', 'SUBDIRS=', 'EXTRA_CFLAGS=')
                 if re.search(r'(^| )' + w, calls[0]['makeflags'])]
    check("bare: the pass's command line does not reach the nested make's MAKEFLAGS",
          not inherited, calls[0]['makeflags'])
    check('bare: nor its environment (obj, M, SUBDIRS, EXTRA_CFLAGS, NOSTDINC_FLAGS)',
          not calls[0]['env'], calls[0]['env'])
    with open(ko) as f:
        copied = f.read()
    check('bare: the module the nested make left in .el5-build is copied here',
          copied == f'module built in {private}\n', copied)

    rc, out, calls = s.run(new_api)
    check('bare: a find_vqs tree gives USE_FIND_VQS=1',
          rc == 0 and calls and 'USE_FIND_VQS=1' in calls[0]['args'], out + str(calls))
    rc, out, calls = s.run(new_api, args=['USE_FIND_VQS=0'])
    check('bare: USE_FIND_VQS=0 on the command line reaches the nested make',
          rc == 0 and calls and 'USE_FIND_VQS=0' in calls[0]['args'], out + str(calls))
    rc, out, calls = s.run(new_api, args=['USE_FIND_VQS=2'])
    check('bare: USE_FIND_VQS=2 refused with a message, nothing run',
          rc != 0 and "USE_FIND_VQS must be 0 or 1, not '2'" in out and not calls, out)

    write(ko, 'stale module\n')
    rc, out, calls = s.run(old_api, env={'RECORDER_FAIL': '1'})
    check('bare: a failed nested build fails the pass and leaves no module here',
          rc != 0 and len(calls) == 1 and not os.path.exists(ko), out)

    rc, out, calls = s.run(old_api, args=['VSCSI_MODNAME=vscsi_bench'])
    check('bare: VSCSI_MODNAME refused with a message', rc != 0 and 'VSCSI_MODNAME' in out
          and not calls, out)

    # GNUmakefile's own kbuild run carries the compat flags: el5.mk must build there in one
    # pass, or the bare build would hand itself over again.
    p = subprocess.run(['make', '-s', '--no-print-directory', '-C', kmod, 'el5-cflags', f'KSRC={old_api}'],
                       capture_output=True, text=True)
    flags = p.stdout.strip()
    check('GNUmakefile prints the compat flags', p.returncode == 0 and 'el5_gcc_shim.h' in flags,
          p.stdout + p.stderr)
    rc, shown, out = s.show(old_api, args=[f'EXTRA_CFLAGS={flags}'])
    check("with GNUmakefile's compat flags the pass builds the module itself",
          rc == 0 and shown.get('obj-m') == 'virtio_scsi.o' and shown.get('always') == '', out)
    # (make -n still runs the lines that call $(MAKE): `true` stands in for it.)
    p = subprocess.run(['make', '-n', '--no-print-directory', '-C', kmod, 'module', f'KSRC={old_api}',
                        f'MOD_DIR={private}', 'EXTRA_CFLAGS=-DPROBE_A', 'MAKE=true'],
                       capture_output=True, text=True)
    kbuild = [line for line in p.stdout.splitlines() if f'M={private}' in line]
    check("GNUmakefile's kbuild run: compat flags, then the user's EXTRA_CFLAGS",
          p.returncode == 0 and kbuild and f'EXTRA_CFLAGS="{flags} -DPROBE_A"' in kbuild[0],
          p.stdout + p.stderr)

    # RHEL5's own gcc 4.x compiles against the tree without help: one pass.
    old_gcc = write(os.path.join(work, 'gcc4', 'gcc'),
                    '#!/bin/sh\n[ "$1" = -dumpversion ] && echo 4.1.2 && exit 0\nexit 1\n', 0o755)
    write(os.path.join(work, 'gcc4', 'g++'), '#!/bin/sh\nexit 1\n', 0o755)
    rc, shown, out = s.show(old_api, cc=old_gcc)
    check('gcc 4: the pass builds the module itself',
          rc == 0 and shown.get('obj-m') == 'virtio_scsi.o' and shown.get('always') == '', out)

    os.unlink(os.path.join(kmod, 'GNUmakefile'))
    rc, out, calls = s.run(old_api)
    check('bare without GNUmakefile beside Kbuild: a message, nothing run',
          rc != 0 and 'GNUmakefile' in out and not calls, out)


# ---- a real 2.6.18 tree ------------------------------------------------------------------

def release_of(tree):
    with open(os.path.join(tree, 'include/linux/utsrelease.h')) as f:
        return re.search(r'UTS_RELEASE "([^"]+)"', f.read()).group(1)


def make(*args):
    p = subprocess.run(['make', *args], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def stripped(ko, out):
    subprocess.run(['objcopy', '--strip-debug', ko, out], check=True)
    with open(out, 'rb') as f:
        return f.read()


def tree_cases(kmod_src, work, tree, use_find_vqs, reference):
    kmod = copy_repository(kmod_src, os.path.join(work, 'repo'))
    ko = os.path.join(kmod, 'virtio_scsi.ko')
    release = release_of(tree)
    symvers = os.path.join(tree, 'Module.symvers')
    fixup = os.path.join(kmod, 'el5_ko_fixup.py')
    before = listing(kmod)
    with open(os.path.join(tree, 'include/linux/virtio_config.h')) as f:
        detected = '1' if 'find_vqs' in f.read() else '0'
    api = detected if use_find_vqs == 'auto' else use_find_vqs
    pin = [] if use_find_vqs == 'auto' else [f'USE_FIND_VQS={use_find_vqs}']

    other = '1' if detected == '0' else '0'
    rc, out = make('-C', tree, f'M={kmod}', f'USE_FIND_VQS={other}')
    check(f'{release}: USE_FIND_VQS={other} (not this tree\'s API) fails in the compiler, no module left',
          rc != 0 and re.search(r'error: .*(find_vq|del_vq)', out) and not os.path.exists(ko), out)

    rc, out = make('-C', tree, f'M={kmod}', *pin)
    print('\n'.join(line for line in out.splitlines()
                    if 'PLT32' in line or line.startswith('  EL5')))
    check(f'{release}: bare make -C <tree> M=<kmod> builds kmod/virtio_scsi.ko',
          rc == 0 and os.path.isfile(ko), out)
    if not os.path.isfile(ko):
        return
    check(f'{release}: ... through the private kbuild run and el5_ko_fixup.py',
          'EL5 ' in out and re.search(r'virtio_scsi\.ko: \d+ PLT32->PC32; vermagic gcc-\S+->gcc-4\.1', out), out)
    p = subprocess.run([sys.executable, fixup, '--check-only', '--symvers', symvers,
                        '--release', release, ko], capture_output=True, text=True)
    print(p.stdout.strip())
    check(f'{release}: el5_ko_fixup.py --check-only accepts it', p.returncode == 0, p.stdout + p.stderr)
    relocs = subprocess.run(['readelf', '-rW', ko], capture_output=True, text=True).stdout
    check(f'{release}: no R_X86_64_PLT32 left', 'R_X86_64_PLT32' not in relocs)
    magic = subprocess.run(['modinfo', '-F', 'vermagic', ko], capture_output=True, text=True).stdout.split()
    check(f'{release}: modinfo vermagic is the tree release with gcc-4.1',
          magic[:1] == [release] and magic[-1:] == ['gcc-4.1'], magic)
    with open(os.path.join(kmod, '.el5-build', '.glue_el5.o.cmd')) as f:
        check(f'{release}: the glue was compiled for USE_FIND_VQS={api}',
              f'-DVSCSI_EL5_FIND_VQS={api}' in f.read())
    if reference:
        check(f'{release}: the same module as the Meson build once debug info is stripped',
              stripped(ko, os.path.join(work, 'bare.ko')) == stripped(reference, os.path.join(work, 'meson.ko')))

    inst = os.path.join(work, 'inst')
    rc, out = make('-C', tree, f'M={kmod}', 'modules_install', f'INSTALL_MOD_PATH={inst}')
    installed = [n for n in listing(inst) if n.endswith('.ko')] if os.path.isdir(inst) else []
    check(f'{release}: modules_install with M=<kmod> installs nothing (as the README says)',
          rc == 0 and not installed, out + str(installed))
    rc, out = make('-C', tree, f'M={kmod}/.el5-build', 'modules_install', f'INSTALL_MOD_PATH={inst}')
    dest = os.path.join(inst, 'lib/modules', release, 'extra/virtio_scsi.ko')
    same = os.path.isfile(dest) and open(dest, 'rb').read() == open(ko, 'rb').read()
    check(f'{release}: modules_install with M=<kmod>/.el5-build installs the checked module',
          rc == 0 and same, out)

    rc, out = make('-C', tree, f'M={kmod}', 'clean')
    after = listing(kmod)
    check(f'{release}: clean leaves kmod/ as it was', rc == 0 and after == before,
          f'left {sorted(after - before)}, removed {sorted(before - after)}\n{out}')


if __name__ == '__main__':
    if len(sys.argv) not in (3, 5, 6):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    KMOD = os.path.abspath(sys.argv[1])
    WORK = os.path.abspath(sys.argv[2])
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    if len(sys.argv) == 3:
        standin_cases(KMOD, WORK)
    else:
        tree_cases(KMOD, WORK, os.path.abspath(sys.argv[3]), sys.argv[4],
                   os.path.abspath(sys.argv[5]) if len(sys.argv) == 6 else None)
    print(f'{len(failures)} failed' if failures else 'all passed')
    sys.exit(1 if failures else 0)
