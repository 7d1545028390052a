"""Stand-in kernel modules for the el5 tests: small relocatable x86_64 objects with what
el5_ko_fixup.py and the RPM build look at (.modinfo with a vermagic, __versions CRCs, calls
that today's assembler relocates with R_X86_64_PLT32), built with the host's gcc and ld, so
the tests need no RHEL5 tree. Variants add what must be refused.
"""
import os
import subprocess

RELEASE = '2.6.18-164.el5'
# Symbol versions of the stand-in's imports, as a tree's Module.symvers would list them.
SYMVERS = {'struct_module': 0xf8e3dbd2, 'printk': 0xdd132261, '__kmalloc': 0x5a34a45c}

SOURCE = r'''
extern int printk(const char *fmt, ...);
extern void *__kmalloc(unsigned long size, unsigned int flags);
EXTRA_DECLS
int standin_init(void)
{
	void *p = __kmalloc(16, 0);
	printk("standin %p\n", p);
	EXTRA_CALLS
	return 0;
}
static const char standin_modinfo[] __attribute__((section(".modinfo"), used, aligned(1))) =
	"license=GPL\0vermagic=RELEASE SMP mod_unload gcc-12.2\0";
struct modversion_info { unsigned long crc; char name[64 - sizeof(unsigned long)]; };
static const struct modversion_info standin_versions[]
	__attribute__((section("__versions"), used, aligned(8))) = {
VERSIONS
};
'''

VARIANTS = {
    # what a kernel build gives: kernel code model, no PIE
    'plain': ('', '', ['-fno-pie', '-mcmodel=kernel']),
    # C++ runtime: operator new and a guarded static
    'cxx_runtime': ('extern void *_Znwm(unsigned long); extern int __cxa_guard_acquire(long *);',
                    'static long g; __cxa_guard_acquire(&g); _Znwm(8);',
                    ['-fno-pie', '-mcmodel=kernel']),
    # a constructor, which the 2.6.18 loader would never run
    'constructor': ('__attribute__((constructor)) static void standin_ctor(void) { printk("c"); }',
                    '', ['-fno-pie', '-mcmodel=kernel']),
    # position-independent access to an extern: a GOT relocation the 2.6.18 loader lacks
    'foreign_reloc': ('extern int some_counter;', 'printk("%d", some_counter);', ['-fPIC']),
}


def build(work, variant='plain', release=RELEASE):
    """Compile and `ld -r` a stand-in; returns the .ko path."""
    decls, calls, flags = VARIANTS[variant]
    versions = ',\n'.join(f'\t{{ {crc:#x}, "{name}" }}' for name, crc in SYMVERS.items())
    src = (SOURCE.replace('EXTRA_DECLS', decls).replace('EXTRA_CALLS', calls)
           .replace('RELEASE', release).replace('VERSIONS', versions))
    base = os.path.join(work, f'standin_{variant}')
    with open(base + '.c', 'w') as f:
        f.write(src)
    subprocess.run(['gcc', '-c', '-O2', '-mno-red-zone', '-fno-asynchronous-unwind-tables',
                    '-fno-stack-protector', *flags, '-o', base + '.o', base + '.c'], check=True)
    subprocess.run(['ld', '-r', '-o', base + '.ko', base + '.o'], check=True)
    return base + '.ko'


def write_symvers(path, table):
    with open(path, 'w') as f:
        for name, crc in table.items():
            f.write(f'{crc:#010x}\t{name}\tvmlinux\tEXPORT_SYMBOL\n')
    return path
