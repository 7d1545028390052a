// Invariant checks of the fuzz harness. A failed check is a finding: it prints what broke
// and aborts, so libFuzzer records the input as a crash.
#pragma once
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

namespace fuzz {

[[noreturn]] inline void check_failed(const char* file, int line, const char* cond, const char* fmt, ...) {
    fprintf(stderr, "%s:%d: invariant failed: %s: ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

}  // namespace fuzz

// FUZZ_CHECK(condition, "printf format", args...)
#define FUZZ_CHECK(cond, ...) \
    do { \
        if (!(cond)) ::fuzz::check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    } while (0)
