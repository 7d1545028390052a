#!/usr/bin/env python3
"""el5_ko_fixup.py against real and crafted modules, results read back with readelf/modinfo.

  test_el5_fixup.py TOOL WORK_DIR [MODULE.ko KERNEL_DIR]

Without MODULE: stand-in modules built here (see el5_standin.py) and crafted bad inputs.
With MODULE (virtio_scsi.ko built against Debian's linux-headers) and its KERNEL_DIR: the
relocation rewrite, the vermagic stamp and the symbol and CRC checks on that module.
Every case prints ok/FAIL; the exit status is 1 if any failed.
"""
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import el5_standin  # noqa: E402

failures = []


def check(name, cond, detail=''):
    print(('ok   ' if cond else 'FAIL ') + name + ('' if cond else f': {detail}'))
    if not cond:
        failures.append(name)


def run_tool(*args):
    p = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)
    return p.returncode, (p.stdout + p.stderr).strip()


def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def reloc_counts(path):
    out = subprocess.run(['readelf', '-rW', path], capture_output=True, text=True, check=True).stdout
    counts = {}
    for m in re.finditer(r'^\s*[0-9a-f]+\s+[0-9a-f]+\s+(R_X86_64_\w+)', out, re.M):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def vermagic(path):
    return subprocess.run(['modinfo', '-F', 'vermagic', path], capture_output=True,
                          text=True).stdout.strip()


def sections(path):
    """{name: (type, offset, size)} from readelf -S."""
    out = subprocess.run(['readelf', '-SW', path], capture_output=True, text=True, check=True).stdout
    table = {}
    for m in re.finditer(r'^\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)',
                         out, re.M):
        table[m.group(1)] = (m.group(2), int(m.group(3), 16), int(m.group(4), 16))
    return table


def only_rela_changed(before, after):
    """Whether every byte that differs lies inside a RELA section of `before`."""
    with open(before, 'rb') as f:
        a = f.read()
    with open(after, 'rb') as f:
        b = f.read()
    if len(a) != len(b):
        return False
    ranges = [(off, off + size) for typ, off, size in sections(before).values() if typ == 'RELA']
    for i in (i for i in range(len(a)) if a[i] != b[i]):
        if not any(lo <= i < hi for lo, hi in ranges):
            return False
    return True


def no_leftovers(directory, stem):
    return not [f for f in os.listdir(directory) if f.startswith('.' + stem)]


def crafted_cases(work):
    standin = el5_standin.build(work)
    symvers = el5_standin.write_symvers(os.path.join(work, 'Module.symvers'), el5_standin.SYMVERS)
    release = el5_standin.RELEASE
    before = reloc_counts(standin)
    check('stand-in has PLT32 relocations to rewrite', before.get('R_X86_64_PLT32', 0) > 0, before)
    in_hash = digest(standin)

    out = os.path.join(work, 'out.ko')
    rc, msg = run_tool('--symvers', symvers, '--release', release, '-o', out, standin)
    check('rhel5 fixup of a stand-in succeeds', rc == 0, msg)
    after = reloc_counts(out)
    check('no PLT32 left', 'R_X86_64_PLT32' not in after, after)
    check('PLT32 became PC32', after.get('R_X86_64_PC32', 0) ==
          before.get('R_X86_64_PC32', 0) + before['R_X86_64_PLT32'], (before, after))
    check('vermagic stamped gcc-4.1', vermagic(out) == f'{release} SMP mod_unload gcc-4.1',
          vermagic(out))
    with open(out, 'rb') as f:
        data = f.read()
    check('shorter tag is NUL-padded in place',
          b'vermagic=' + release.encode() + b' SMP mod_unload gcc-4.1\0\0' in data)
    check('.modinfo keeps its size', sections(out)['.modinfo'][2] == sections(standin)['.modinfo'][2])
    check('input left untouched with -o', digest(standin) == in_hash)
    rc, msg = run_tool('--check-only', '--symvers', symvers, out)
    check('result passes --check-only', rc == 0, msg)
    rc, msg = run_tool('--check-only', '--symvers', symvers, standin)
    check('unprocessed module fails --check-only', rc == 1 and 'PLT32' in msg, msg)

    rc, msg = run_tool('--compiler-tag', 'gcc-4.4', '--symvers', symvers, '-o', out, standin)
    check('compiler tag is overridable', rc == 0 and vermagic(out).endswith(' gcc-4.4'), msg)
    os.unlink(out)
    rc, msg = run_tool('--compiler-tag', 'gcc-10.10', '--symvers', symvers, '-o', out, standin)
    check('longer tag refused, nothing written', rc == 1 and 'longer' in msg and
          not os.path.exists(out), msg)
    rc, msg = run_tool('--compiler-tag', 'clang-15', standin)
    check('malformed tag refused', rc == 2 and 'gcc-X.Y' in msg, msg)
    rc, msg = run_tool('--release', '2.6.18-274.el5', '--symvers', symvers, '-o', out, standin)
    check('wrong kernel release refused', rc == 1 and 'release' in msg and
          not os.path.exists(out), msg)

    bad = dict(el5_standin.SYMVERS, printk=0xdeadbeef)
    bad_sv = el5_standin.write_symvers(os.path.join(work, 'bad_crc.symvers'), bad)
    rc, msg = run_tool('--symvers', bad_sv, '-o', out, standin)
    check('CRC that differs from Module.symvers refused', rc == 1 and 'printk' in msg and
          '0xdeadbeef' in msg and not os.path.exists(out), msg)
    short = {k: v for k, v in el5_standin.SYMVERS.items() if k != '__kmalloc'}
    short_sv = el5_standin.write_symvers(os.path.join(work, 'short.symvers'), short)
    rc, msg = run_tool('--symvers', short_sv, '-o', out, standin)
    check('import the kernel does not export refused', rc == 1 and '__kmalloc' in msg and
          'not exported' in msg, msg)
    broken_sv = os.path.join(work, 'broken.symvers')
    with open(broken_sv, 'w') as f:
        f.write('0x1234\tprintk\tvmlinux\nthis is not a symvers line\n')
    rc, msg = run_tool('--symvers', broken_sv, '-o', out, standin)
    check('malformed Module.symvers refused with its line', rc == 1 and ':2:' in msg, msg)
    rc, msg = run_tool('--symvers', os.path.join(work, 'absent.symvers'), '-o', out, standin)
    check('missing Module.symvers refused', rc == 1 and 'cannot read' in msg, msg)

    cxx = el5_standin.build(work, 'cxx_runtime')
    rc, msg = run_tool('--symvers', symvers, '-o', out, cxx)
    check('C++ runtime symbols refused', rc == 1 and '_Znwm' in msg and
          '__cxa_guard_acquire' in msg and not os.path.exists(out), msg)

    ctor = el5_standin.build(work, 'constructor')
    rc, msg = run_tool('--symvers', symvers, '-o', out, ctor)
    check('constructors refused', rc == 1 and 'constructors' in msg and
          not os.path.exists(out), msg)

    foreign = el5_standin.build(work, 'foreign_reloc')
    kinds = reloc_counts(foreign)
    got = [k for k in kinds if 'GOT' in k]
    check('foreign stand-in has a GOT relocation', bool(got), kinds)
    foreign_hash = digest(foreign)
    rc, msg = run_tool('--symvers', symvers, foreign)  # in place
    check('relocation type unknown to 2.6.18 refused', rc == 1 and got and got[0] in msg, msg)
    check('refused module left as it was', digest(foreign) == foreign_hash)
    check('no temporary file left behind', no_leftovers(work, os.path.basename(foreign)))

    # Truncations: the section header table cut off, and one section claiming bytes past EOF.
    with open(standin, 'rb') as f:
        data = f.read()
    cut = os.path.join(work, 'cut.ko')
    with open(cut, 'wb') as f:
        f.write(data[:len(data) * 2 // 3])
    cut_hash = digest(cut)
    rc, msg = run_tool('--symvers', symvers, cut)
    check('truncated file refused', rc == 1 and 'truncated' in msg, msg)
    check('truncated file left as it was', digest(cut) == cut_hash)
    check('no temporary file left behind (truncated)', no_leftovers(work, 'cut.ko'))

    e_shoff, = struct.unpack_from('<Q', data, 0x28)
    e_shnum, = struct.unpack_from('<H', data, 0x3c)
    text = sections(standin)['.text']
    idx = next(i for i in range(e_shnum)
               if struct.unpack_from('<Q', data, e_shoff + i * 64 + 24)[0] == text[1])
    long_sec = bytearray(data)
    struct.pack_into('<Q', long_sec, e_shoff + idx * 64 + 32, len(data))  # sh_size
    over = os.path.join(work, 'oversized.ko')
    with open(over, 'wb') as f:
        f.write(long_sec)
    rc, msg = run_tool('--symvers', symvers, '-o', out, over)
    check('section running past the end refused', rc == 1 and 'past the end' in msg and
          not os.path.exists(out), msg)

    junk = os.path.join(work, 'junk.ko')
    with open(junk, 'w') as f:
        f.write('not a module\n' * 10)
    rc, msg = run_tool(junk)
    check('non-ELF refused', rc == 1 and 'not an ELF' in msg, msg)
    rc, msg = run_tool(os.path.join(work, 'absent.ko'))
    check('missing input refused', rc == 1 and 'cannot read' in msg, msg)


def module_cases(work, module, kernel_dir):
    symvers = os.path.join(kernel_dir, 'Module.symvers')
    ko = os.path.join(work, 'virtio_scsi.ko')
    shutil.copyfile(module, ko)
    release = vermagic(ko).split()[0]
    rc, msg = run_tool('--target', 'linux', '--check-only', '--symvers', symvers,
                       '--release', release, ko)
    check('Debian-built module: imports exported, CRCs match Module.symvers',
          rc == 0 and 'CRCs match' in msg, msg)

    before = reloc_counts(ko)
    out = os.path.join(work, 'rewritten.ko')
    rc, msg = run_tool('--target', 'rhel5', '--compiler-tag', '', '--symvers', symvers,
                       '-o', out, ko)
    check('Debian-built module: relocation rewrite succeeds', rc == 0, msg)
    after = reloc_counts(out)
    check('Debian-built module: no PLT32 left', 'R_X86_64_PLT32' not in after, after)
    check('Debian-built module: PLT32 became PC32', after.get('R_X86_64_PC32', 0) ==
          before.get('R_X86_64_PC32', 0) + before.get('R_X86_64_PLT32', 0), (before, after))
    check('Debian-built module: only relocation entries changed', only_rela_changed(ko, out))
    check('Debian-built module: vermagic left alone without a tag', vermagic(out) == vermagic(ko))

    # Current vermagics carry no compiler tag: give the module one, as gcc 4.x-era kernels
    # did, and stamp it.
    modinfo = os.path.join(work, 'modinfo.bin')
    subprocess.run(['objcopy', '-O', 'binary', '--only-section=.modinfo', ko, modinfo], check=True)
    with open(modinfo, 'rb') as f:
        raw = f.read()
    old = re.search(rb'vermagic=[^\0]*', raw).group(0)
    tagged = old.rstrip(b' ') + b' gcc-12.2'
    with open(modinfo, 'wb') as f:
        f.write(raw.replace(old, tagged))
    with_tag = os.path.join(work, 'tagged.ko')
    subprocess.run(['objcopy', '--update-section', f'.modinfo={modinfo}', ko, with_tag], check=True)
    rc, msg = run_tool('--symvers', symvers, '--release', release, '-o', out, with_tag)
    check('Debian-built module: full rhel5 fixup', rc == 0, msg)
    check('Debian-built module: vermagic stamped',
          vermagic(out) == tagged[len('vermagic='):].decode().replace('gcc-12.2', 'gcc-4.1'),
          vermagic(out))

    table = {}
    with open(symvers) as f:
        for line in f:
            fields = line.split()
            table[fields[1]] = int(fields[0], 16)
    victim = subprocess.run(['nm', '-u', ko], capture_output=True, text=True,
                            check=True).stdout.split()[-1]
    table[victim] ^= 0x1
    bad = el5_standin.write_symvers(os.path.join(work, 'altered.symvers'), table)
    os.unlink(out)
    rc, msg = run_tool('--target', 'linux', '--symvers', bad, '-o', out, ko)
    check(f'Debian-built module: altered CRC of {victim} refused',
          rc == 1 and victim in msg and not os.path.exists(out), msg)


if __name__ == '__main__':
    if len(sys.argv) not in (3, 5):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    TOOL = os.path.abspath(sys.argv[1])
    WORK = os.path.abspath(sys.argv[2])
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    if len(sys.argv) == 5:
        module_cases(WORK, sys.argv[3], sys.argv[4])
    else:
        crafted_cases(WORK)
    print(f'{len(failures)} failed' if failures else 'all passed')
    sys.exit(1 if failures else 0)
