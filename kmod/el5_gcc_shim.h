/*
 * Forced include (gcc -include) for building against a RHEL5/CentOS5 2.6.18 tree with a
 * current gcc, without touching the tree.
 *
 * The tree's <linux/compiler.h> picks a compiler-gccN.h by __GNUC__ and stops with
 * "#error no compiler-gcc.h file for this gcc version" above gcc 4. This header is read
 * before any source file: it reads <linux/compiler.h> once while presenting the gcc
 * release the tree was made for (4.1, what RHEL5 itself ships), then gives the real
 * version back. compiler.h's include guard keeps later includes from reading it again,
 * so everything after it (builtin headers, vermagic) sees the real compiler.
 */
#ifndef VSCSI_EL5_GCC_SHIM_H
#define VSCSI_EL5_GCC_SHIM_H

#if defined(__KERNEL__) && !defined(__ASSEMBLY__) && __GNUC__ > 4
#pragma push_macro("__GNUC__")
#pragma push_macro("__GNUC_MINOR__")
#undef __GNUC__
#undef __GNUC_MINOR__
#define __GNUC__ 4
#define __GNUC_MINOR__ 1
#include <linux/compiler.h>
#pragma pop_macro("__GNUC_MINOR__")
#pragma pop_macro("__GNUC__")
#endif

#endif
