#!/bin/sh
# The README's promise that other projects can use the headers, kept honest: a Meson project
# takes vscsi as a subproject (and must see none of vscsi's tests), then vscsi is installed
# into a prefix and found through its vscsi.pc by a CMake project and by a plain Makefile.
# Every consumer builds and runs the same small program, which checks a few encodings.
# Usage: check_consumers.sh SOURCE_ROOT
set -eu
src=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [ -f "$tmp/log" ] && tail -20 "$tmp/log"; }

mkdir -p "$tmp/app"
cat > "$tmp/app/main.cpp" <<'CPP'
#include <vscsi/initiator.hpp>
#include <vscsi/pci.hpp>
#include <vscsi/scsi.hpp>
#include <stdio.h>

int main() {
    const vscsi::lun_address a = vscsi::make_lun(1, 300);
    uint8_t cdb[16];
    const uint32_t n = vscsi::scsi::read_write(cdb, sizeof cdb, false, uint64_t(1) << 33, 8);
    const vscsi::initiator_config cfg{};
    using ini_t = vscsi::initiator<vscsi::hosted_platform, vscsi::modern_pci<struct fake_bus>>;
    const size_t bytes = ini_t::region_bytes(cfg);
    const size_t books = ini_t::private_bytes(cfg);
    const bool ok = a.bytes[0] == 1 && a.bytes[1] == 1 && a.bytes[2] == 0x41 && a.bytes[3] == 0x2c &&
                    n == 16 && cdb[0] == 0x88 && bytes > 0 && books > 0;
    puts(ok ? "consumer ok" : "consumer: wrong encodings");
    return ok ? 0 : 1;
}
struct fake_bus {};
CPP

# 1. Meson subproject.
mkdir -p "$tmp/app/subprojects"
ln -s "$src" "$tmp/app/subprojects/vscsi"
cat > "$tmp/app/meson.build" <<'MESON'
project('consumer', 'cpp', default_options : ['cpp_std=gnu++17'])
vscsi_dep = dependency('vscsi', fallback : ['vscsi', 'vscsi_dep'])
executable('consumer', 'main.cpp', dependencies : vscsi_dep)
MESON
if meson setup "$tmp/b-meson" "$tmp/app" > "$tmp/log" 2>&1 && meson compile -C "$tmp/b-meson" >> "$tmp/log" 2>&1 &&
   "$tmp/b-meson/consumer" >> "$tmp/log" 2>&1; then
    pass "a Meson project builds against vscsi as a subproject"
else
    fail "a Meson project builds against vscsi as a subproject"
fi
if meson introspect --tests "$tmp/b-meson" > "$tmp/log" 2>&1 && [ "$(cat "$tmp/log")" = "[]" ]; then
    pass "vscsi registers no tests when it is a subproject"
else
    fail "vscsi registers no tests when it is a subproject"
fi

# 2. Installed, found through pkg-config.
if meson setup "$tmp/b-install" "$src" --prefix="$tmp/prefix" -Dvscsi_backend=none > "$tmp/log" 2>&1 &&
   meson install -C "$tmp/b-install" >> "$tmp/log" 2>&1; then
    pass "meson install puts the headers and vscsi.pc in a prefix"
else
    fail "meson install puts the headers and vscsi.pc in a prefix"
fi
pcdir=$(dirname "$(find "$tmp/prefix" -name vscsi.pc | head -1)")
export PKG_CONFIG_PATH="$pcdir"
if [ -f "$tmp/prefix/include/vscsi/initiator.hpp" ] && pkg-config --cflags vscsi | grep -q -- "-I$tmp/prefix/include"; then
    pass "pkg-config finds vscsi"
else
    fail "pkg-config finds vscsi"
fi

# 3. CMake, through pkg-config as the README shows.
mkdir -p "$tmp/cmake"
cp "$tmp/app/main.cpp" "$tmp/cmake/"
cat > "$tmp/cmake/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(consumer CXX)
find_package(PkgConfig REQUIRED)
pkg_check_modules(VSCSI REQUIRED IMPORTED_TARGET vscsi)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE PkgConfig::VSCSI)
target_compile_features(consumer PRIVATE cxx_std_17)
CMAKE
if cmake -S "$tmp/cmake" -B "$tmp/b-cmake" > "$tmp/log" 2>&1 && cmake --build "$tmp/b-cmake" >> "$tmp/log" 2>&1 &&
   "$tmp/b-cmake/consumer" >> "$tmp/log" 2>&1; then
    pass "a CMake project builds against the installed vscsi"
else
    fail "a CMake project builds against the installed vscsi"
fi

# 4. A plain Makefile.
mkdir -p "$tmp/make"
cp "$tmp/app/main.cpp" "$tmp/make/"
printf 'CXXFLAGS += -std=gnu++17 $(shell pkg-config --cflags vscsi)\nconsumer: main.cpp\n\t$(CXX) $(CXXFLAGS) -o $@ $<\n' > "$tmp/make/Makefile"
if make -C "$tmp/make" > "$tmp/log" 2>&1 && "$tmp/make/consumer" >> "$tmp/log" 2>&1; then
    pass "a plain Makefile builds against the installed vscsi"
else
    fail "a plain Makefile builds against the installed vscsi"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
