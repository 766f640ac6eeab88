#!/bin/bash
# `make test-deb`: the packages' quality gates (bmx7-wg, and bmx7 + bmx7-plugins).
#   1. build the packages (tests/deb/build.sh)
#   2. lintian --pedantic -I -E: no error or warning (bmx7: its source package too)
#   3. piuparts: install, remove and purge leave the system clean
#   4. a clean bookworm (mmdebstrap): apt install ./bmx7-wg_*.deb --no-install-recommends works,
#      and there bmx7-wg --version, man bmx7-wg and systemd-analyze verify work; then the
#      README's apt install ./bmx7_*.deb ./bmx7-wg_*.deb, and the same checks of bmx7
#   5. autopkgtest in other clean bookworm roots: bmx7-wg's debian/tests (its mesh test runs
#      the packaged bmx7 and bmx7-wg on three nodes), and bmx7's (two nodes see each other)
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
lab=$(ls "$out"/bmx7-wg-lab_*_all.deb)  # the lab's own binary package, from the same source
changes=$(ls "$out"/bmx7-wg_*.changes)
bmx7_deb=$(ls "$out"/bmx7_*.deb)
bmx7_plugins_deb=$(ls "$out"/bmx7-plugins_*.deb)
bmx7_changes=$(ls "$out"/bmx7_*.changes)

step lintian
# -I shows informational tags too; only errors and warnings fail the gate.
lintian --pedantic -I -E --fail-on error,warning "$deb" "$lab" "$changes"
# bmx7's .changes names its source package (.dsc, orig tarball, patches) and both binaries.
lintian --pedantic -I -E --fail-on error,warning "$bmx7_changes"

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
	--no-upgrade-test --tmpdir="$out" --log-file="$out/piuparts.log" "$deb" "$lab" "$bmx7_deb" "$bmx7_plugins_deb" \
	>/dev/null ||
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
	# What tests mounted inside (ip netns add: the root's run/netns), deepest first.
	awk -v r="$1/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
		umount "$m" || true
	done
	if mountpoint -q "$1"; then umount "$1"; fi
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
	# The root is a mount point of its own: `ip netns exec` (the mesh tests) makes / a slave
	# mount in its namespace, which fails on a directory that is not one.
	mount --bind "$1" "$1"
	mount -t proc proc "$1/proc"
	mount --rbind /sys "$1/sys"
	mount --rbind /dev "$1/dev"
	cp /etc/resolv.conf "$1/etc/resolv.conf"
}

step "clean bookworm: apt install ./$(basename "$deb")"
root=$out/chroot
new_root "$root"
cp "$deb" "$bmx7_deb" "$bmx7_plugins_deb" "$root/tmp/"
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
	dpkg-query -W -f "\${Recommends}\n" bmx7-wg | grep -qw bmx7
	echo "clean bookworm: bmx7-wg alone ok"
	# The README'"'"'s install line (here without recommends: wireguard-tools would pull a kernel
	# into a root that has none).
	cd /tmp
	apt-get install -y -qq --no-install-recommends ./bmx7_*.deb ./bmx7-wg_*.deb > /tmp/install.log
	systemctl is-enabled bmx7.service
	systemd-analyze verify /lib/systemd/system/bmx7.service
	man --warnings -E UTF-8 -Tutf8 -Z bmx7 > /dev/null
	test -f "$(dirname "$(dpkg -L bmx7 | grep "/bmx7_sms[.]so\$")")/bmx7_json.so"
	apt-get install -y -qq ./bmx7-plugins_*.deb > /tmp/install.log
	apt-get purge -y -qq bmx7-plugins bmx7 > /tmp/install.log
	test ! -e /etc/bmx7
	echo "clean bookworm: bmx7 and bmx7-wg ok"
'
step "clean bookworm: scripts/ensure-packages waits for apt's locks"
cp "$top/scripts/ensure-packages" "$top/tests/deb/apt-lock.sh" "$root/tmp/"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
	/tmp/apt-lock.sh /tmp/ensure-packages

# run_autopkgtest NAME SOURCE-TREE DEB...: the tests of SOURCE-TREE in a fresh root, with DEB...
# installed from the files (a test that is skipped fails the gate).
run_autopkgtest() {
	local name=$1 tree=$2 log=$out/autopkgtest-$1.log status=0
	shift 2
	step "autopkgtest ($name)"
	new_root "$out/autopkgtest-root-$name"
	autopkgtest -U "$@" "$tree" -- chroot "$out/autopkgtest-root-$name" >"$log" 2>&1 || status=$?
	grep -a -E '^[a-z][a-z0-9-]* +(PASS|FAIL|SKIP|FLAKY)' "$log" | sort -u
	if [ "$status" -ne 0 ] || grep -a -q -E '^[a-z][a-z0-9-]* +SKIP' "$log"; then
		tail -n 60 "$log" >&2
		echo "check.sh: autopkgtest $name failed (exit $status); full log: $log" >&2
		exit 1
	fi
	remove_root "$out/autopkgtest-root-$name"
}
version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
bmx7_version=$(dpkg-parsechangelog -l "$top/packaging/bmx7/debian/changelog" -S Version)
run_autopkgtest bmx7-wg "$out/build/bmx7-wg-$version" "$deb" "$lab" "$bmx7_deb"
run_autopkgtest bmx7 "$out/build/bmx7-${bmx7_version%-*}" "$bmx7_deb" "$bmx7_plugins_deb"

step "all package checks passed"
