#!/bin/sh
# Inside the systemd VM: run the payload's tests, print the closing line the host waits
# for (vm/systemd/boot), power off. The closing line carries pytest's exit status.
cd /usr/local/lib/bmx7-wg-systemd-test || exit 1
echo "bmx7-wg-systemd: payload started, system is $(systemctl is-system-running)"
BMX7_WG_SYSTEMD_VM=1 python3 -m pytest -v -s --color=no -p no:cacheprovider test_systemd_service.py test_bmx7_service.py
rc=$?
echo "BMX7WG-SYSTEMD-RESULT rc=$rc"
systemctl poweroff --no-block
