#!/bin/bash
# `make deb`: build the Debian packages in a clean environment, into .cache/deb/:
#   - bmx7-wg, from the working tree (debian/);
#   - bmx7 and bmx7-plugins (source package bmx7), from bmx7's pinned orig tarball
#     (scripts/bmx7-orig: BMX7_ORIG=FILE, else ../shared/upstream/, else downloaded and
#     verified) with packaging/bmx7/debian/.
# dpkg-buildpackage writes its results into the parent of the source tree, so each tree
# is set up in .cache/deb/build/ first. `build.sh bmx7-wg` or `build.sh bmx7` builds one.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
out=$top/.cache/deb
build=$out/build
what=${1:-all}

"$top/scripts/ensure-packages" debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools \
	scdoc dpkg-dev fakeroot libmbedtls-dev libjson-c-dev zlib1g-dev libiw-dev
mkdir -p "$build"

# dpkg_buildpackage DIR LOG ARGS...: pyenv's shims and a virtualenv on PATH break pybuild:
# build with Debian's tools only.
dpkg_buildpackage() {
	local dir=$1 log=$2
	shift 2
	(cd "$dir" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		dpkg-buildpackage -us -uc "$@") >"$log" 2>&1 || {
		tail -n 40 "$log" >&2
		echo "build.sh: dpkg-buildpackage failed in $dir; full log: $log" >&2
		exit 1
	}
}

build_bmx7_wg() {
	local version src start end
	version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
	src=$build/bmx7-wg-$version
	rm -rf "$src"
	mkdir -p "$src"
	# The files a clean checkout would have (tracked, plus new files not ignored), without
	# caches, virtualenvs or earlier build results.
	if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
		(cd "$top" && git ls-files -z --cached --others --exclude-standard |
			while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
			tar --null -T - -cf -) | tar -xf - -C "$src"
	else
		tar -C "$top" --exclude=./.git --exclude=./.venvs --exclude=./.cache -cf - . | tar -xf - -C "$src"
	fi
	start=$(date +%s%N)
	dpkg_buildpackage "$src" "$build/bmx7-wg.build.log" -b
	end=$(date +%s%N)
	rm -f "$out"/bmx7-wg_*.deb "$out"/bmx7-wg-lab_*.deb "$out"/bmx7-wg_*.changes "$out"/bmx7-wg_*.buildinfo
	mv "$build"/bmx7-wg_"$version"_*.deb "$build"/bmx7-wg-lab_"$version"_*.deb "$build"/bmx7-wg_"$version"_*.changes \
		"$build"/bmx7-wg_"$version"_*.buildinfo "$out"/
	echo "build.sh: $out/bmx7-wg_${version}_all.deb built in $(((end - start) / 1000000)) ms"
}

# bmx7: a source package in Debian's 3.0 (quilt) format (the orig tarball untouched, our
# debian/ beside it, upstream changes only as patches), built as source and binaries, so
# that lintian checks the source package too.
build_bmx7() {
	local orig version upstream src start end
	orig=$("$top/scripts/bmx7-orig")
	version=$(dpkg-parsechangelog -l "$top/packaging/bmx7/debian/changelog" -S Version)
	upstream=${version%-*}
	src=$build/bmx7-$upstream
	rm -rf "$src" "$build"/bmx7_* "$build"/bmx7-plugins_* "$build"/bmx7-dbgsym_* "$build"/bmx7-plugins-dbgsym_*
	mkdir -p "$src"
	cp "$orig" "$build/bmx7_$upstream.orig.tar.gz"
	tar -xzf "$orig" -C "$src" --strip-components=1
	cp -r "$top/packaging/bmx7/debian" "$src/debian"
	start=$(date +%s%N)
	dpkg_buildpackage "$src" "$build/bmx7.build.log"
	end=$(date +%s%N)
	rm -f "$out"/bmx7_* "$out"/bmx7-plugins_* "$out"/bmx7-dbgsym_* "$out"/bmx7-plugins-dbgsym_*
	mv "$build"/bmx7_"$version"* "$build"/bmx7_"$upstream".orig.tar.gz "$build"/bmx7-plugins_"$version"_*.deb "$out"/
	mv "$build"/bmx7-dbgsym_"$version"_* "$build"/bmx7-plugins-dbgsym_"$version"_* "$out"/ 2>/dev/null || true
	echo "build.sh: $(ls "$out"/bmx7_"$version"_*.deb "$out"/bmx7-plugins_"$version"_*.deb | tr '\n' ' ')built in $(((end - start) / 1000000)) ms"
}

case $what in
all) build_bmx7_wg; build_bmx7 ;;
bmx7-wg) build_bmx7_wg ;;
bmx7) build_bmx7 ;;
*) echo "usage: build.sh [bmx7-wg|bmx7]" >&2; exit 2 ;;
esac
