#!/bin/bash
# `make deb`: build the .deb from the working tree in a clean environment.
#
# dpkg-buildpackage writes its results into the parent of the source tree, so the tree
# is copied to .cache/deb/build/ first; the .deb ends up in .cache/deb/.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
out=$top/.cache/deb
build=$out/build

"$top/scripts/ensure-packages" debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools scdoc dpkg-dev fakeroot

version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
src=$build/bmx7-wg-$version
rm -rf "$build"
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

# pyenv's shims and a virtualenv on PATH break pybuild: build with Debian's python3 only.
start=$(date +%s%N)
(cd "$src" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
	dpkg-buildpackage -us -uc -b) >"$build/build.log" 2>&1 || {
	tail -n 40 "$build/build.log" >&2
	echo "build.sh: dpkg-buildpackage failed; full log: $build/build.log" >&2
	exit 1
}
end=$(date +%s%N)

rm -f "$out"/bmx7-wg_*.deb "$out"/bmx7-wg_*.changes "$out"/bmx7-wg_*.buildinfo
mv "$build"/bmx7-wg_"$version"_*.deb "$build"/bmx7-wg_"$version"_*.changes \
	"$build"/bmx7-wg_"$version"_*.buildinfo "$out"/
echo "build.sh: $out/bmx7-wg_${version}_all.deb built in $(((end - start) / 1000000)) ms"
