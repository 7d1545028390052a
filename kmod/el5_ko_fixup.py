#!/usr/bin/env python3
"""Make a module built with today's toolchain loadable by a stock RHEL5/CentOS5 2.6.18 kernel,
and prove that it is, or fail with one clear line.

What it does to an x86_64 relocatable .ko (ELF64, little-endian):
  - rewrites R_X86_64_PLT32 relocations to R_X86_64_PC32: for a module the two resolve to the
    same value (the loader links calls directly, there is no PLT), but the 2.6.18 loader knows
    only NONE, 64, 32, 32S and PC32 (its apply_relocate_add()) and refuses anything else;
  - fails if a relocation of another type remains in a section the loader relocates (the
    targets of SHF_ALLOC sections; it skips relocations of debug sections), and if the module
    has constructors (.init_array, .ctors), which that loader never runs;
  - stamps the compiler tag of the vermagic ("gcc-12.2" -> "gcc-4.1"): with MODVERSIONS the
    2.6.18 loader compares everything after the release string; the shorter tag is padded
    with NULs, which the loader skips when it walks .modinfo;
  - fails if an undefined symbol is not exported by the kernel (Module.symvers) or is part of
    a C++ runtime (__cxa_*, operator new/delete, unwinder, typeinfo), and if a __versions CRC
    differs from the tree's Module.symvers or an import has no CRC.

The output is written to a temporary file beside it, checked again, and renamed over the
target: bad input never leaves a half-written module behind.

Only the standard library is used, so the Meson build and the plain make build can both run it.
"""

import argparse
import os
import re
import struct
import sys
import tempfile


class KoError(Exception):
    """A problem with the input or a failed check: reported as one line, exit status 1."""


# ELF constants (System V gABI, x86-64 psABI).
ET_REL = 1
EM_X86_64 = 62
SHT_NULL, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 0, 2, 3, 4, 8, 9
SHF_ALLOC = 0x2
SHN_UNDEF, SHN_LORESERVE, SHN_XINDEX = 0, 0xff00, 0xffff
STB_LOCAL = 0

R_X86_64_NAMES = {
    0: "NONE", 1: "64", 2: "PC32", 3: "GOT32", 4: "PLT32", 5: "COPY", 6: "GLOB_DAT",
    7: "JUMP_SLOT", 8: "RELATIVE", 9: "GOTPCREL", 10: "32", 11: "32S", 12: "16", 13: "PC16",
    14: "8", 15: "PC8", 16: "DTPMOD64", 17: "DTPOFF64", 18: "TPOFF64", 19: "TLSGD", 20: "TLSLD",
    21: "DTPOFF32", 22: "GOTTPOFF", 23: "TPOFF32", 24: "PC64", 25: "GOTOFF64", 26: "GOTPC32",
    41: "GOTPCRELX", 42: "REX_GOTPCRELX",
}
R_X86_64_PC32 = 2
R_X86_64_PLT32 = 4
# The cases of apply_relocate_add() in the 2.6.18 tree's arch/x86_64/kernel/module.c.
EL5_LOADER_RELOCS = frozenset({0, 1, 2, 10, 11})

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")
RELA = struct.Struct("<QQq")
MODVERSION = struct.Struct("<Q56s")  # struct modversion_info on a 64-bit kernel

# Names no kernel exports: a C++ runtime and the unwinder. They get their own message,
# whatever Module.symvers says.
RUNTIME_PATTERNS = [
    (re.compile(r"^__cxa_"), "C++ ABI runtime (__cxa_*)"),
    (re.compile(r"^__gxx_personality"), "C++ exception personality"),
    (re.compile(r"^_Unwind_"), "unwinder"),
    (re.compile(r"^_Zn[wa]"), "operator new"),
    (re.compile(r"^_Zd[la]"), "operator delete"),
    (re.compile(r"^_ZT[VISI]"), "C++ vtable/typeinfo"),
    (re.compile(r"^_ZSt|^_ZNSt|^_ZNKSt"), "C++ standard library"),
    (re.compile(r"^__dynamic_cast$"), "C++ RTTI"),
]
# Why a symbol may be missing from Module.symvers, when the reason is a build flag.
MISSING_HINTS = {
    "__stack_chk_fail": "stack protector: build with -fno-stack-protector",
    "_GLOBAL_OFFSET_TABLE_": "position-independent code: build with -fno-pie",
    "__fentry__": "ftrace hooks: the kernel has no -mfentry support",
    "__x86_return_thunk": "return thunks: the kernel was not built with them",
}


def reloc_name(rtype):
    return "R_X86_64_" + R_X86_64_NAMES.get(rtype, str(rtype))


class Section:
    __slots__ = ("index", "name", "type", "flags", "offset", "size", "link", "info",
                 "entsize", "hdr_offset")


class Ko:
    """An x86_64 relocatable ELF held in a bytearray, every offset range-checked."""

    def __init__(self, data, label):
        self.data = data
        self.label = label
        self._parse()

    def fail(self, msg):
        raise KoError(f"{self.label}: {msg}")

    def _parse(self):
        d = self.data
        if len(d) < EHDR.size:
            self.fail(f"too short for an ELF header ({len(d)} bytes)")
        (ident, e_type, e_machine, _ver, _entry, _phoff, e_shoff, _flags, e_ehsize,
         _phentsize, _phnum, e_shentsize, e_shnum, e_shstrndx) = EHDR.unpack_from(d, 0)
        if ident[:4] != b"\x7fELF":
            self.fail("not an ELF file")
        if ident[4] != 2 or ident[5] != 1:
            self.fail("not a 64-bit little-endian ELF file")
        if e_type != ET_REL:
            self.fail(f"not a relocatable object (e_type {e_type}); a .ko is ET_REL")
        if e_machine != EM_X86_64:
            self.fail(f"not an x86_64 object (e_machine {e_machine})")
        if e_shentsize != SHDR.size:
            self.fail(f"unexpected section header size {e_shentsize}")
        if e_shoff == 0 or e_shoff + SHDR.size > len(d):
            self.fail("section header table lies outside the file (truncated?)")
        # Extended numbering: the real counts live in section 0.
        sh0 = SHDR.unpack_from(d, e_shoff)
        shnum = e_shnum if e_shnum else sh0[5]
        shstrndx = sh0[6] if e_shstrndx == SHN_XINDEX else e_shstrndx
        if shnum == 0 or e_shoff + shnum * SHDR.size > len(d):
            self.fail(f"section header table ({shnum} entries at {e_shoff}) runs past the end "
                      f"of the file ({len(d)} bytes): truncated")
        self.sections = []
        for i in range(shnum):
            off = e_shoff + i * SHDR.size
            (name, stype, flags, _addr, offset, size, link, info, _align,
             entsize) = SHDR.unpack_from(d, off)
            s = Section()
            s.index, s.type, s.flags, s.offset, s.size = i, stype, flags, offset, size
            s.link, s.info, s.entsize, s.hdr_offset = link, info, entsize, off
            s.name = name
            if stype not in (SHT_NULL, SHT_NOBITS) and offset + size > len(d):
                self.fail(f"section {i} ({offset:#x}+{size:#x}) runs past the end of the file "
                          f"({len(d):#x} bytes): truncated")
            self.sections.append(s)
        if shstrndx >= shnum or self.sections[shstrndx].type != SHT_STRTAB:
            self.fail("section name string table index is invalid")
        shstr = self.sections[shstrndx]
        for s in self.sections:
            s.name = self._string(shstr, s.name, "section name")
        self._parse_symtab()

    def _string(self, strtab, offset, what):
        if offset >= strtab.size:
            self.fail(f"{what} offset {offset} outside its string table")
        start = strtab.offset + offset
        end = self.data.find(b"\0", start, strtab.offset + strtab.size)
        if end < 0:
            self.fail(f"{what} at offset {offset} is not NUL-terminated")
        return bytes(self.data[start:end]).decode("latin-1")

    def _parse_symtab(self):
        tabs = [s for s in self.sections if s.type == SHT_SYMTAB]
        if len(tabs) != 1:
            self.fail(f"expected one symbol table, found {len(tabs)}")
        st = tabs[0]
        if st.entsize != SYM.size or st.size % SYM.size:
            self.fail(f"symbol table entry size {st.entsize} / size {st.size} invalid")
        if st.link >= len(self.sections) or self.sections[st.link].type != SHT_STRTAB:
            self.fail("symbol table does not link to a string table")
        strtab = self.sections[st.link]
        self.symtab_index = st.index
        self.symbols = []
        for i in range(st.size // SYM.size):
            name, info, _other, shndx, _value, _size = SYM.unpack_from(self.data,
                                                                       st.offset + i * SYM.size)
            self.symbols.append((self._string(strtab, name, "symbol name") if name else "",
                                 info >> 4, shndx))

    def section(self, name):
        for s in self.sections:
            if s.name == name:
                return s
        return None

    # -- relocations ------------------------------------------------------------------------

    def rela_sections(self):
        """(rela section, target section) for every SHT_RELA section, validated."""
        out = []
        for s in self.sections:
            if s.type == SHT_REL:
                target = self.sections[s.info] if s.info < len(self.sections) else None
                if target is not None and target.flags & SHF_ALLOC:
                    self.fail(f"{s.name}: REL relocations (without addend) are not supported by "
                              f"the x86_64 module loader")
                continue
            if s.type != SHT_RELA:
                continue
            if s.entsize != RELA.size or s.size % RELA.size:
                self.fail(f"{s.name}: relocation entry size {s.entsize} / size {s.size} invalid")
            if s.info >= len(self.sections) or s.info == 0:
                self.fail(f"{s.name}: relocates nonexistent section {s.info}")
            if s.link != self.symtab_index:
                self.fail(f"{s.name}: does not use the symbol table")
            out.append((s, self.sections[s.info]))
        return out

    def rewrite_plt32(self):
        """PLT32 -> PC32 everywhere; returns how many were rewritten."""
        count = 0
        for rs, _target in self.rela_sections():
            for off in range(rs.offset, rs.offset + rs.size, RELA.size):
                r_offset, r_info, addend = RELA.unpack_from(self.data, off)
                if r_info & 0xffffffff == R_X86_64_PLT32:
                    RELA.pack_into(self.data, off, r_offset,
                                   (r_info & ~0xffffffff) | R_X86_64_PC32, addend)
                    count += 1
        return count

    def check_relocs(self, allowed):
        """Every relocation the loader applies has a known type, a valid symbol and fits."""
        bad = {}
        nsyms = len(self.symbols)
        for rs, target in self.rela_sections():
            if not target.flags & SHF_ALLOC:
                continue
            for off in range(rs.offset, rs.offset + rs.size, RELA.size):
                r_offset, r_info, _addend = RELA.unpack_from(self.data, off)
                rtype, rsym = r_info & 0xffffffff, r_info >> 32
                if rsym >= nsyms:
                    self.fail(f"{rs.name}: relocation refers to symbol {rsym}, table has {nsyms}")
                width = 8 if rtype == 1 else 4
                if target.type != SHT_NOBITS and r_offset + width > target.size:
                    self.fail(f"{rs.name}: relocation at {r_offset:#x} outside {target.name} "
                              f"({target.size:#x} bytes)")
                if rtype not in allowed:
                    bad.setdefault(rtype, []).append(f"{target.name}+{r_offset:#x}")
        if bad:
            parts = [f"{reloc_name(t)} x{len(w)} (first at {w[0]})" for t, w in sorted(bad.items())]
            self.fail("relocation types the RHEL5 2.6.18 module loader does not know: "
                      + ", ".join(parts))

    def count_relocs(self, rtype):
        n = 0
        for rs, _t in self.rela_sections():
            for off in range(rs.offset, rs.offset + rs.size, RELA.size):
                if RELA.unpack_from(self.data, off)[1] & 0xffffffff == rtype:
                    n += 1
        return n

    def check_no_constructors(self):
        """The 2.6.18 loader never runs constructors: a module that has some would run
        without them (a C++ global with a non-trivial constructor, __attribute__((constructor)))."""
        found = [s.name for s in self.sections
                 if (s.name.startswith((".init_array", ".ctors", ".preinit_array"))) and s.size]
        if found:
            self.fail("has constructors the RHEL5 2.6.18 loader never runs: " + ", ".join(found))

    # -- .modinfo ---------------------------------------------------------------------------

    def vermagic(self):
        """(absolute offset, text) of the vermagic= entry of .modinfo."""
        mi = self.section(".modinfo")
        if mi is None or mi.type == SHT_NOBITS:
            self.fail("no .modinfo section: not a kernel module")
        start, end = mi.offset, mi.offset + mi.size
        pos, found = start, None
        while pos < end:
            nul = self.data.find(b"\0", pos, end)
            stop = end if nul < 0 else nul
            if self.data.startswith(b"vermagic=", pos) and stop > pos:
                if found is not None:
                    self.fail(".modinfo has more than one vermagic entry")
                found = (pos, bytes(self.data[pos:stop]).decode("latin-1"))
            pos = stop + 1
        if found is None:
            self.fail(".modinfo has no vermagic entry")
        return found

    def stamp_compiler(self, tag):
        """Replace the vermagic's compiler tag with tag, NUL-padding the rest."""
        pos, text = self.vermagic()
        words = text[len("vermagic="):].split(" ")
        idx = [i for i, w in enumerate(words) if re.fullmatch(r"gcc-\S+", w)]
        if len(idx) != 1:
            self.fail(f"vermagic '{text[9:]}' has no single gcc-X.Y compiler tag to stamp")
        old = words[idx[0]]
        if len(tag) > len(old):
            self.fail(f"compiler tag '{tag}' is longer than '{old}' and cannot be stamped "
                      f"in place")
        words[idx[0]] = tag
        new = ("vermagic=" + " ".join(words)).encode("latin-1")
        self.data[pos:pos + len(text)] = new + b"\0" * (len(text) - len(new))
        return old

    # -- symbols ----------------------------------------------------------------------------

    def undefined(self):
        return sorted({name for name, bind, shndx in self.symbols
                       if shndx == SHN_UNDEF and bind != STB_LOCAL and name})

    def versions(self):
        sec = self.section("__versions")
        if sec is None:
            return None
        if sec.size % MODVERSION.size:
            self.fail(f"__versions size {sec.size} is not a multiple of {MODVERSION.size}")
        out = {}
        for off in range(sec.offset, sec.offset + sec.size, MODVERSION.size):
            crc, raw = MODVERSION.unpack_from(self.data, off)
            if b"\0" not in raw:
                self.fail("__versions entry name is not NUL-terminated")
            out[raw.split(b"\0", 1)[0].decode("latin-1")] = crc
        return out


def read_symvers(path):
    """Module.symvers: 'CRC<tab>symbol<tab>module[<tab>...]' per line -> {symbol: crc}."""
    try:
        with open(path, encoding="latin-1") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise KoError(f"cannot read Module.symvers '{path}': {e.strerror}") from None
    table = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 2 or not re.fullmatch(r"0x[0-9a-fA-F]{1,16}", fields[0]):
            raise KoError(f"{path}:{n}: not a Module.symvers line: {line[:60]!r}")
        table[fields[1]] = int(fields[0], 16)
    if not table:
        raise KoError(f"{path}: empty Module.symvers: the tree exports nothing to check against")
    return table


def check_symbols(ko, symvers, need_versions):
    undef = ko.undefined()
    runtime = []
    for name in undef:
        for pattern, what in RUNTIME_PATTERNS:
            if pattern.search(name):
                runtime.append(f"{name} ({what})")
                break
    if runtime:
        ko.fail("needs symbols no kernel provides: " + ", ".join(runtime))
    if symvers is None:
        return len(undef), 0
    missing = [n + (f" ({MISSING_HINTS[n]})" if n in MISSING_HINTS else "")
               for n in undef if n not in symvers]
    if missing:
        ko.fail(f"undefined symbols not exported by the kernel (not in Module.symvers): "
                + ", ".join(missing))
    versions = ko.versions()
    if versions is None:
        if need_versions:
            ko.fail("no __versions section: modpost found no CRCs (is the tree's Module.symvers "
                    "missing or without CRCs?)")
        return len(undef), 0
    wrong = [f"{n} (module {c:#010x}, tree {symvers[n]:#010x})" for n, c in versions.items()
             if n in symvers and symvers[n] != c]
    unknown = [n for n in versions if n not in symvers]
    if wrong:
        ko.fail("__versions CRCs differ from the tree's Module.symvers: " + ", ".join(wrong))
    if unknown:
        ko.fail("__versions names symbols not in the tree's Module.symvers: " + ", ".join(unknown))
    unversioned = [n for n in undef if n not in versions]
    if unversioned and need_versions:
        ko.fail("imports without a __versions CRC (the loader would taint the kernel): "
                + ", ".join(unversioned))
    return len(undef), len(versions)


def write_atomically(path, data, mode):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def process(args):
    try:
        with open(args.input, "rb") as f:
            data = bytearray(f.read())
        mode = os.stat(args.input).st_mode & 0o777
    except OSError as e:
        raise KoError(f"cannot read '{args.input}': {e.strerror}") from None
    label = os.path.basename(args.input)
    ko = Ko(data, label)
    symvers = read_symvers(args.symvers) if args.symvers else None
    el5 = args.target == "rhel5"

    notes = []
    if el5 and not args.check_only:
        n = ko.rewrite_plt32()
        notes.append(f"{n} PLT32->PC32")
    if el5:
        ko.check_relocs(EL5_LOADER_RELOCS)
        ko.check_no_constructors()
    if el5 and args.compiler_tag and not args.check_only:
        old = ko.stamp_compiler(args.compiler_tag)
        notes.append(f"vermagic {old}->{args.compiler_tag}")
    if el5 and args.compiler_tag and args.check_only:
        text = ko.vermagic()[1]
        if args.compiler_tag not in text[len("vermagic="):].split(" "):
            ko.fail(f"vermagic '{text[9:]}' does not carry compiler tag '{args.compiler_tag}'")
    if args.release:
        words = ko.vermagic()[1][len("vermagic="):].split(" ")
        if words[0] != args.release:
            ko.fail(f"vermagic release '{words[0]}' is not the tree's '{args.release}'")
    nundef, nver = check_symbols(ko, symvers, need_versions=el5 and symvers is not None)
    notes.append(f"{nundef} imports" + (f", {nver} CRCs match Module.symvers" if nver else ""))

    if not args.check_only:
        # Check what is about to be written, exactly as a fresh reader sees it.
        again = Ko(bytearray(ko.data), label)
        if el5:
            if again.count_relocs(R_X86_64_PLT32):
                again.fail("internal error: PLT32 relocations left after rewrite")
            again.check_relocs(EL5_LOADER_RELOCS)
        check_symbols(again, symvers, need_versions=el5 and symvers is not None)
        out = args.output or args.input
        try:
            write_atomically(out, bytes(ko.data), mode)
        except OSError as e:
            raise KoError(f"cannot write '{out}': {e.strerror}") from None
    if not args.quiet:
        print(f"{label}: " + "; ".join(notes) + (" (checked only)" if args.check_only else ""))


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Rewrite and check a .ko so a stock RHEL5 2.6.18 kernel loads it.")
    p.add_argument("input", help="the module (.ko) to process")
    p.add_argument("-o", "--output", help="where to write the result (default: in place)")
    p.add_argument("--target", choices=["rhel5", "linux"], default="rhel5",
                   help="rhel5: rewrite relocations, stamp vermagic, require CRCs (default); "
                        "linux: symbol checks only")
    p.add_argument("--symvers", help="the kernel tree's Module.symvers")
    p.add_argument("--compiler-tag", default="gcc-4.1",
                   help="compiler tag the target kernel's vermagic carries (default gcc-4.1; "
                        "empty: leave the vermagic alone)")
    p.add_argument("--release", help="fail unless the vermagic starts with this kernel release")
    p.add_argument("--check-only", action="store_true",
                   help="write nothing: check that the module is already fit to load")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.compiler_tag and not re.fullmatch(r"gcc-[0-9]+\.[0-9]+", args.compiler_tag):
        p.error(f"--compiler-tag '{args.compiler_tag}' is not of the form gcc-X.Y")
    try:
        process(args)
    except KoError as e:
        print(f"el5_ko_fixup: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
