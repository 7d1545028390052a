#!/bin/sh
# Build the kmod RPM of a checked virtio_scsi.ko so that RHEL5's rpm 4.4 installs it.
# Environment: KO (the module), KVERSION (its kernel release), RPM_DIR (rpmbuild top dir),
# VERSION and RELEASE of the package. Prints the path of the RPM.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${KO:?KO= the module to package}" "${KVERSION:?KVERSION= the kernel release}"
: "${RPM_DIR:?RPM_DIR= the rpmbuild directory}" "${VERSION:?}" "${RELEASE:=1}"
command -v rpmbuild >/dev/null || { echo "build-kmod-rpm: rpmbuild not found (Debian package 'rpm')" >&2; exit 1; }
[ -f "$KO" ] || { echo "build-kmod-rpm: no module at $KO" >&2; exit 1; }
mkdir -p "$RPM_DIR"
RPM_DIR=$(cd "$RPM_DIR" && pwd)
KO=$(cd "$(dirname "$KO")" && pwd)/$(basename "$KO")

# rpm 4.4 knows gzip payloads and MD5 file digests (algorithm 1), not today's defaults
# (zstd, SHA-256), which would add rpmlib() requirements it cannot satisfy.
rpmbuild -bb --quiet --target x86_64 --nodeps \
    --define "_topdir $RPM_DIR" \
    --define "_binary_payload w9.gzdio" \
    --define "_binary_filedigest_algorithm 1" \
    --define "_source_filedigest_algorithm 1" \
    --define "_buildhost vscsi" \
    --define "kversion $KVERSION" \
    --define "ko $KO" \
    --define "kmodtool $here/kmodtool" \
    --define "version $VERSION" \
    --define "release $RELEASE" \
    "$here/virtio_scsi-kmod.spec" >&2
variant=$(sh "$here/kmodtool" variant "$KVERSION")
rpm_file=$RPM_DIR/RPMS/x86_64/kmod-virtio_scsi${variant:+-$variant}-$VERSION-$RELEASE.x86_64.rpm
[ -f "$rpm_file" ] || { echo "build-kmod-rpm: rpmbuild produced no $rpm_file" >&2; exit 1; }
echo "$rpm_file"
