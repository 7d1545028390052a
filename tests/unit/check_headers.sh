#!/bin/sh
# Compile every vscsi header alone, then all together, the way a kernel module or firmware
# would: freestanding, no exceptions, no RTTI, no libc or libstdc++ headers, warnings as
# errors. Usage: check_headers.sh COMPILER INCLUDE_DIR
set -eu
cxx=$1
inc=$2
if ! command -v "$cxx" >/dev/null 2>&1; then
    echo "compiler $cxx not found" >&2
    exit 1
fi
sysinc=$("$cxx" -print-file-name=include)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flags="-std=gnu++17 -ffreestanding -fno-exceptions -fno-rtti -fno-threadsafe-statics -nostdinc -isystem $sysinc -I$inc -Wall -Wextra -Werror -Wpedantic -O2"
passed=0
failed=0
all=""
for h in "$inc"/vscsi/*.hpp; do
    name=$(basename "$h")
    all="$all#include <vscsi/$name>
"
    printf '#include <vscsi/%s>\n#include <vscsi/%s>\nint vscsi_header_check_anchor;\n' "$name" "$name" > "$tmp/one.cpp"
    if $cxx $flags -c "$tmp/one.cpp" -o "$tmp/one.o" 2> "$tmp/err"; then
        passed=$((passed + 1))
    else
        echo "FAIL: $name does not compile alone with $cxx:" >&2
        cat "$tmp/err" >&2
        failed=$((failed + 1))
    fi
done
printf '%sint vscsi_header_check_anchor;\n' "$all" > "$tmp/all.cpp"
if $cxx $flags -c "$tmp/all.cpp" -o "$tmp/all.o" 2> "$tmp/err"; then
    passed=$((passed + 1))
else
    echo "FAIL: headers together do not compile with $cxx:" >&2
    cat "$tmp/err" >&2
    failed=$((failed + 1))
fi
# Every template instantiated, freestanding: the object may reference nothing but the
# memory primitives every freestanding environment provides, and has no constructors.
here=$(dirname "$0")
if $cxx $flags -c "$here/freestanding_instance.cpp" -o "$tmp/inst.o" 2> "$tmp/err"; then
    undefined=$(nm "$tmp/inst.o" | awk '$1 == "U" {print $2}' | grep -v -E '^(memcpy|memset|memmove)$' || true)
    if [ -n "$undefined" ]; then
        echo "FAIL: the instantiated core references external symbols:" >&2
        echo "$undefined" >&2
        failed=$((failed + 1))
    elif readelf -S "$tmp/inst.o" | grep -q -E '\.init_array|\.ctors'; then
        echo "FAIL: the instantiated core has global constructors" >&2
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
else
    echo "FAIL: instantiating the core freestanding fails with $cxx:" >&2
    cat "$tmp/err" >&2
    failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
