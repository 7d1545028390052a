#!/bin/sh
# The README's promise that other projects can use the headers, kept honest: a Meson project
# takes vscsi as a subproject (and must see none of vscsi's tests), then vscsi is installed
# into a prefix and found through its vscsi.pc by a CMake project and by a plain Makefile.
# Every consumer builds and runs the same small program, which checks a few encodings.
#
# The subproject and the install-then-consume chain run side by side, and so do the CMake
# and Makefile consumers; each step has a log of its own, and the results are printed in
# order at the end. The install is of a -Dvscsi_backend=none build, which installs the
# headers and vscsi.pc and nothing that needs building, so it installs without compiling
# the project (the check that nothing else is installed makes sure that stays so).
# Usage: check_consumers.sh SOURCE_ROOT
set -eu
src=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# step NAME COMMAND...: runs COMMAND with its output in $tmp/NAME.log; $tmp/NAME.ok if it worked.
step() {
    name=$1
    shift
    if "$@" > "$tmp/$name.log" 2>&1; then
        touch "$tmp/$name.ok"
    fi
}

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
mkdir -p "$tmp/meson/subprojects"
cp "$tmp/app/main.cpp" "$tmp/meson/"
ln -s "$src" "$tmp/meson/subprojects/vscsi"
cat > "$tmp/meson/meson.build" <<'MESON'
project('consumer', 'cpp', default_options : ['cpp_std=gnu++17'])
vscsi_dep = dependency('vscsi', fallback : ['vscsi', 'vscsi_dep'])
executable('consumer', 'main.cpp', dependencies : vscsi_dep)
MESON
subproject_consumer() {
    meson setup "$tmp/b-meson" "$tmp/meson" && meson compile -C "$tmp/b-meson" && "$tmp/b-meson/consumer"
}
no_tests() {
    [ "$(meson introspect --tests "$tmp/b-meson")" = "[]" ]
}

# 2. Installed, found through pkg-config; 3. CMake, through pkg-config as the README shows;
# 4. a plain Makefile.
mkdir -p "$tmp/cmake" "$tmp/make"
cp "$tmp/app/main.cpp" "$tmp/cmake/"
cp "$tmp/app/main.cpp" "$tmp/make/"
cat > "$tmp/cmake/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(consumer CXX)
find_package(PkgConfig REQUIRED)
pkg_check_modules(VSCSI REQUIRED IMPORTED_TARGET vscsi)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE PkgConfig::VSCSI)
target_compile_features(consumer PRIVATE cxx_std_17)
CMAKE
printf 'CXXFLAGS += -std=gnu++17 $(shell pkg-config --cflags vscsi)\nconsumer: main.cpp\n\t$(CXX) $(CXXFLAGS) -o $@ $<\n' > "$tmp/make/Makefile"
install_prefix() {
    meson setup "$tmp/b-install" "$src" --prefix="$tmp/prefix" -Dvscsi_backend=none -Dfuzz=disabled &&
        meson install -C "$tmp/b-install" --no-rebuild &&
        installed=$(cd "$tmp/prefix" && find . -type f | sort) &&
        printf '%s\n' "$installed" &&
        [ "$(printf '%s\n' "$installed" | grep -cv '^\./include/vscsi/[a-z_]*\.hpp$')" = 1 ] &&
        printf '%s\n' "$installed" | grep -q '/pkgconfig/vscsi\.pc$'
}
find_pc() {
    [ -f "$tmp/prefix/include/vscsi/initiator.hpp" ] && pkg-config --cflags vscsi | grep -q -- "-I$tmp/prefix/include"
}
cmake_consumer() {
    cmake -S "$tmp/cmake" -B "$tmp/b-cmake" && cmake --build "$tmp/b-cmake" && "$tmp/b-cmake/consumer"
}
make_consumer() {
    make -C "$tmp/make" && "$tmp/make/consumer"
}

( step subproject subproject_consumer && step no-tests no_tests ) &
meson_job=$!
step install install_prefix
if [ -f "$tmp/install.ok" ]; then
    PKG_CONFIG_PATH=$(dirname "$(find "$tmp/prefix" -name vscsi.pc | head -1)")
    export PKG_CONFIG_PATH
    step pkg-config find_pc
    step cmake cmake_consumer &
    cmake_job=$!
    step make make_consumer
    wait "$cmake_job" || true
fi
wait "$meson_job" || true

passed=0
failed=0
for s in "subproject:a Meson project builds against vscsi as a subproject" \
         "no-tests:vscsi registers no tests when it is a subproject" \
         "install:meson install puts the headers and vscsi.pc in a prefix, and nothing else" \
         "pkg-config:pkg-config finds vscsi" \
         "cmake:a CMake project builds against the installed vscsi" \
         "make:a plain Makefile builds against the installed vscsi"; do
    name=${s%%:*}
    if [ -f "$tmp/$name.ok" ]; then
        passed=$((passed + 1))
        echo "ok   ${s#*:}"
    else
        failed=$((failed + 1))
        echo "FAIL ${s#*:}"
        [ -f "$tmp/$name.log" ] && tail -20 "$tmp/$name.log"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
