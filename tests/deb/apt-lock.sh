#!/bin/bash
# Run inside a clean bookworm root (tests/deb/check.sh): scripts/ensure-packages waits for
# apt's locks that another apt holds (a fresh server's daily apt jobs at boot), says so, and
# then installs, instead of failing at once. Usage: apt-lock.sh PATH-TO-ensure-packages
set -euo pipefail
ensure=$1

# hold LOCKFILE: hold apt's lock (an fcntl lock, as apt takes it) until the file
# /tmp/release appears; prints once it holds it.
hold() {
	rm -f /tmp/release
	python3 - "$1" <<'PY' &
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("holding", sys.argv[1], flush=True)
while not os.path.exists("/tmp/release"):
    time.sleep(0.1)
PY
	holder=$!
	sleep 0.5
}
# release_when_waiting LOG: once ensure-packages says it waits, let the lock go.
release_when_waiting() {
	for _ in $(seq 600); do
		grep -q "waiting (at most" "$1" 2>/dev/null && break
		sleep 0.1
	done
	touch /tmp/release
}

# The dpkg lock (apt-get install).
dpkg-query -W -f '${db:Status-Status}' hello 2>/dev/null | grep -qx installed && exit 1
hold /var/lib/dpkg/lock-frontend
release_when_waiting /tmp/ensure.log &
"$ensure" hello 2>/tmp/ensure.log
wait
cat /tmp/ensure.log
grep -q "holds the dpkg lock; waiting (at most 600 s)" /tmp/ensure.log
dpkg-query -W -f '${db:Status-Status}\n' hello | grep -qx installed

# The package lists' lock (apt-get update, when there are no lists yet).
rm -f /var/lib/apt/lists/*_Packages* /var/lib/apt/lists/*Release*
hold /var/lib/apt/lists/lock
release_when_waiting /tmp/ensure.log &
"$ensure" cowsay 2>/tmp/ensure.log
wait
cat /tmp/ensure.log
grep -q "holds the package lists; waiting (at most 600 s)" /tmp/ensure.log
dpkg-query -W -f '${db:Status-Status}\n' cowsay | grep -qx installed
echo "apt-lock: ensure-packages waited for both locks"
