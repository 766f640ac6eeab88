#!/bin/bash
# `make test-systemd`: the Debian package under real systemd, in a VM booted from a bookworm
# image on Debian's kernel. Builds the .deb (tests/deb/build.sh), the image (cached in
# .cache/systemd/), boots it and runs tests/systemd/test_systemd_service.py (bmx7-wg.service)
# and test_bmx7_service.py (bmx7.service, from the bmx7 package beside it) inside.
# Exit status: the payload's pytest status (124: VM timeout, 125: no result).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
t0=$(date +%s)
step() { echo "== test-systemd: $* ($(($(date +%s) - t0)) s)" >&2; }

step "kernel (vm/run --prepare)"
"$top/vm/run" --prepare
kdir=$(ls -d "$top"/.cache/vm/*/ready | sort -V | tail -n 1)
kdir=$(dirname "$kdir")

step "package"
if [ -z "${BMX7_WG_DEB:-}" ]; then
	bash "$top/tests/deb/build.sh" >&2
fi
deb=${BMX7_WG_DEB:-$(ls "$top"/.cache/deb/bmx7-wg_*_all.deb)}
bmx7_deb=${BMX7_DEB:-$(ls "$top"/.cache/deb/bmx7_*.deb)}
step "image"
mkdir -p "$top/.cache/systemd"
# One builder at a time (runs started together share the cache); the image is read-only
# afterwards (snapshot=on), so boots run in parallel.
image=$(flock "$top/.cache/systemd/.lock" sh -c '
	# A private copy: another build may replace .cache/deb/ while this run uses it.
	cp "$1" "$2/.cache/systemd/bmx7-wg.deb" && cp "$4" "$2/.cache/systemd/bmx7.deb" &&
	"$2/vm/systemd/build-image" "$2/.cache/systemd/bmx7-wg.deb" "$3" "$2/.cache/systemd/bmx7.deb"' \
	sh "$deb" "$top" "$kdir" "$bmx7_deb")

step "boot"
status=0
"$top/vm/systemd/boot" "$image" "$kdir" "${BMX7_WG_SYSTEMD_TIMEOUT:-900}" || status=$?
step "done, exit status $status"
exit "$status"
