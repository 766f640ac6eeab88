#!/bin/bash
# `make test-deb`: the package's quality gates.
#   1. build the .deb (tests/deb/build.sh)
#   2. lintian --pedantic -I -E: no error or warning
#   3. piuparts: install, remove and purge leave the system clean
#   4. a clean bookworm (mmdebstrap): apt install ./bmx7-wg_*.deb --no-install-recommends works,
#      and there bmx7-wg --version, man bmx7-wg and systemd-analyze verify work
#   5. autopkgtest (debian/tests/) in another clean bookworm root
# Base tarballs are cached in .cache/deb/ (delete them to refresh).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
out=$top/.cache/deb
t0=$(date +%s)
step() { echo "== $* ($(($(date +%s) - t0)) s)"; }

# Every tool the gates below call (the build installs its own).
"$top/scripts/ensure-packages" lintian piuparts mmdebstrap autopkgtest

step build
"$top/tests/deb/build.sh"
deb=$(ls "$out"/bmx7-wg_*_all.deb)
changes=$(ls "$out"/bmx7-wg_*.changes)

step lintian
# -I shows informational tags too; only errors and warnings fail the gate.
lintian --pedantic -I -E --fail-on error,warning "$deb" "$changes"

# The same Debian archive the host uses, read from apt at run time (bookworm main only:
# the package must install from the release alone).
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' |
	awk '$2 == "bookworm" { print $1; exit }')
[ -n "$mirror" ] || { echo "check.sh: no bookworm source in apt's configuration" >&2; exit 1; }

base=$out/bookworm-minbase.tar.gz
if [ ! -s "$base" ]; then
	step "mmdebstrap minbase tarball for piuparts"
	mmdebstrap --quiet --variant=minbase bookworm "$base.tmp.tar.gz" "deb $mirror bookworm main"
	mv "$base.tmp.tar.gz" "$base"
fi

step piuparts
piuparts --basetgz="$base" --distribution=bookworm --mirror="$mirror main" \
	--no-upgrade-test --tmpdir="$out" --log-file="$out/piuparts.log" "$deb" >/dev/null ||
	{ tail -n 40 "$out/piuparts.log" >&2; exit 1; }
tail -n 1 "$out/piuparts.log"

# A bookworm with apt, and the tools the checks below call (not package dependencies).
apt_base=$out/bookworm-apt.tar.gz
if [ ! -s "$apt_base" ]; then
	step "mmdebstrap apt tarball"
	mmdebstrap --quiet --variant=apt --include=man-db,systemd bookworm "$apt_base.tmp.tar.gz" \
		"deb $mirror bookworm main"
	mv "$apt_base.tmp.tar.gz" "$apt_base"
fi

# A fresh bookworm root from the apt tarball, with /proc, /sys and /dev, removed on exit.
# A root is deleted only once nothing is mounted below it: rm -rf through a bind mount of
# /dev or /sys would delete the host's.
roots=()
remove_root() {
	local m
	for m in "$1/dev" "$1/sys" "$1/proc"; do
		if mountpoint -q "$m"; then umount -R "$m"; fi
	done
	if awk -v r="$1/" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
		echo "check.sh: $1 still has mounts; not deleting it" >&2
		return 1
	fi
	rm -rf "$1"
}
cleanup() {
	local r
	for r in "${roots[@]}"; do remove_root "$r" || true; done
}
trap cleanup EXIT
new_root() {
	if [ -e "$1" ]; then remove_root "$1"; fi
	mkdir -p "$1"
	roots+=("$1")
	tar -xzf "$apt_base" -C "$1"
	mount -t proc proc "$1/proc"
	mount --rbind /sys "$1/sys"
	mount --rbind /dev "$1/dev"
	cp /etc/resolv.conf "$1/etc/resolv.conf"
}

step "clean bookworm: apt install ./$(basename "$deb")"
root=$out/chroot
new_root "$root"
cp "$deb" "$root/tmp/"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
	DEBIAN_FRONTEND=noninteractive /bin/bash -euo pipefail -c '
	dpkg-query -W -f "\${Package}\n" | sort > /tmp/before
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends /tmp/bmx7-wg_*_all.deb > /tmp/install.log
	dpkg-query -W -f "\${Package}\n" | sort > /tmp/after
	echo "pulled in: $(comm -13 /tmp/before /tmp/after | tr "\n" " ")"
	# Every package apt pulled came from the Debian archive configured in the chroot.
	for p in $(comm -13 /tmp/before /tmp/after); do
		[ "$p" = bmx7-wg ] && continue
		apt-cache policy "$p" | grep -q "bookworm/main" || { echo "$p is not from Debian" >&2; exit 1; }
	done
	bmx7-wg --version
	bmx7-wg check
	test "$(stat -c %a /var/lib/bmx7-wg)" = 700
	test -f /etc/iproute2/rt_protos.d/bmx7-wg.conf
	systemctl is-enabled bmx7-wg.service
	man --warnings -E UTF-8 -Tutf8 -Z bmx7-wg > /dev/null
	man bmx7-wg | head -n 3
	man --warnings -E UTF-8 -Tutf8 -Z bmx7-wg.toml > /dev/null
	systemd-analyze verify /lib/systemd/system/bmx7-wg.service
	echo "clean bookworm: ok"
'
step "autopkgtest (debian/tests)"
version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
new_root "$out/autopkgtest-root"
autopkgtest -U "$deb" "$out/build/bmx7-wg-$version" -- chroot "$out/autopkgtest-root" \
	>"$out/autopkgtest.log" 2>&1 || status=$?
grep -a -E '^[a-z][a-z0-9-]* +(PASS|FAIL|SKIP|FLAKY)' "$out/autopkgtest.log" | sort -u
[ "${status:-0}" -eq 0 ] || {
	tail -n 40 "$out/autopkgtest.log" >&2
	echo "check.sh: autopkgtest failed (exit $status); full log: $out/autopkgtest.log" >&2
	exit 1
}

step "all package checks passed"
