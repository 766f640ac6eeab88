"""Fault injection: bmx7-wg killed mid-apply, and changes that fail half-way.

- SIGKILL at random moments of `apply` (a config with a few hundred peers, built from
  scratch or changed), each followed by an `apply` that must converge; at the end
  `apply --json` says changed:false and the device, addresses and routes are exactly
  what the configuration says.
- A netlink or UAPI step failing half-way (the interface deleted under it, its port
  taken by another socket, EPERM without CAP_NET_ADMIN, a user who is not root): a
  clear error naming what failed and what was done, and the next apply repairs it.

The half-way faults are injected at an exact step: this module doubles as a driver
(`python -m tests.integration.test_faults AFTER COMMAND CONFIG`) that runs the real CLI
with a hook that fires COMMAND after AFTER changes were carried out.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bmx7_wg.keys import PrivateKey
from tests.conftest import bmx7_wg_command, child_env
from tests.integration.netns import Host, Lab

pytestmark = pytest.mark.root

KILLS = int(os.environ.get("BMX7_WG_FAULT_KILLS", "50"))
PEERS = int(os.environ.get("BMX7_WG_FAULT_PEERS", "300"))


# --------------------------------------------------------------------- helpers


def peer_keys(n: int, seed: int) -> list[str]:
    # Public keys only: the peers need not exist for WireGuard to be configured.
    rnd = random.Random(seed)
    return [PrivateKey(rnd.randbytes(32)).public_key() for _ in range(n)]


def big_config(host: Host, keys: list[str], *, offset: int = 0, extra_address: bool = False) -> str:
    """One interface with len(keys) peers, each with its own /32 (so one route each)."""
    addresses = [f'"{host.tunnel_ip}/24"'] + (['"fd00:77::1/64"'] if extra_address else [])
    lines = [
        f"[interface.{host.ifname}]",
        f'private_key_file = "{host.key_path}"',
        "listen_port = 51820",
        f"addresses = [{', '.join(addresses)}]",
        'backend = "userspace"',
    ]
    for i, key in enumerate(keys):
        n = i + offset
        lines += [
            f"[[interface.{host.ifname}.peer]]",
            f'public_key = "{key}"',
            f'endpoint = "192.0.2.{n % 250 + 2}:{51820 + n % 7}"',
            f'allowed_ips = ["10.{100 + n // 65536}.{n // 256 % 256}.{n % 256}/32"]',
            f"persistent_keepalive = {25 if n % 2 else 0}",
        ]
    return "\n".join(lines) + "\n"


def expected_device(text: str) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """peer key -> (allowed ip, endpoint), and the routes, as the config above asks."""
    import tomllib

    doc = tomllib.loads(text)
    (iface,) = doc["interface"].values()
    peers = {p["public_key"]: (p["allowed_ips"][0], p["endpoint"]) for p in iface.get("peer", [])}
    return peers, {ip for ip, _ in peers.values()}


def device_state(host: Host) -> tuple[dict[str, tuple[str, str]], set[str], set[str], str]:
    """What the system has: peers, routes with bmx7-wg's protocol, addresses, alias."""
    dump = host.exec("wg", "show", host.ifname, "dump").stdout.strip().split("\n")
    peers = {}
    for line in dump[1:]:
        fields = line.split("\t")
        peers[fields[0]] = (fields[3], fields[2])
    routes = host.exec("ip", "-j", "route", "show", "dev", host.ifname, "proto", "77").stdout
    route_set = {r["dst"] if "/" in r["dst"] else r["dst"] + "/32" for r in json.loads(routes or "[]")}
    addrs = json.loads(host.exec("ip", "-j", "addr", "show", "dev", host.ifname).stdout)
    addr_set = {f"{a['local']}/{a['prefixlen']}" for a in addrs[0]["addr_info"] if a.get("scope") != "link"}
    return peers, route_set, addr_set, host.links()[host.ifname].get("ifalias", "")


def assert_matches(host: Host, text: str, addresses: set[str]) -> None:
    want_peers, want_routes = expected_device(text)
    peers, routes, addrs, alias = device_state(host)
    assert peers == want_peers
    assert routes == want_routes
    assert addrs == addresses
    assert alias == "managed-by=bmx7-wg"
    assert host.exec("wg", "show", host.ifname, "listen-port").stdout.strip() == "51820"


def wireguard_go_pids(ifname: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(cmdline) >= 2 and cmdline[0].endswith(b"wireguard-go") and cmdline[1] == ifname.encode():
            pids.append(int(entry))
    return pids


# --------------------------------------------------------------------- SIGKILL during apply


def test_sigkill_during_apply_always_converges(lab1: Lab) -> None:
    host = lab1.hosts[0]
    keys_a = peer_keys(PEERS, 1)
    # B keeps half of A's peers, changes the endpoints of a quarter, adds new ones.
    keys_b = keys_a[: PEERS // 2] + peer_keys(PEERS // 2, 2)
    configs = [
        (big_config(host, keys_a), {f"{host.tunnel_ip}/24"}),
        (big_config(host, keys_b, offset=3, extra_address=True), {f"{host.tunnel_ip}/24", "fd00:77::1/64"}),
    ]
    # How long a full apply takes here: kills are spread over that span.
    host.write_config(configs[0][0])
    started = time.monotonic()
    host.run("apply")
    span = time.monotonic() - started
    host.exec("ip", "link", "del", host.ifname)

    rnd = random.Random(int(os.environ.get("BMX7_WG_FAULT_SEED", "0")) or None)
    kills = finished_first = 0
    target = 0
    attempts = 0
    while kills < KILLS:
        attempts += 1
        assert attempts <= KILLS * 3, f"only {kills} kills landed during an apply in {attempts} tries"
        # Alternate the configurations; now and then start from nothing (link and key gone).
        target = 1 - target
        text, addresses = configs[target]
        host.write_config(text)
        if attempts % 5 == 0:
            host.exec("ip", "link", "del", host.ifname, check=False)
        if attempts % 10 == 0:
            host.key_path.unlink(missing_ok=True)
        cmd = ["ip", "netns", "exec", host.ns, *bmx7_wg_command(), "-c", str(host.config_path), "apply"]
        proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rnd.uniform(0.0, span))
        proc.send_signal(signal.SIGKILL)  # its own PID: `ip netns exec` execs the command
        _, err = proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        else:
            finished_first += 1
            assert proc.returncode == 0, err.decode()
        converged = host.run("apply", check=False)
        assert converged.returncode == 0, f"after kill {kills}: {converged.stderr}"
        assert host.run_json("plan")["changed"] is False, f"apply after kill {kills} did not converge"
        assert len(wireguard_go_pids(host.ifname)) == 1
    final = host.run_json("apply")
    assert final == {"changed": False, "check": False, "actions": []}
    assert_matches(host, text, addresses)
    mode = host.key_path.stat().st_mode & 0o777
    assert mode == 0o600
    # A key file left half-made by a kill is never readable by others either.
    for leftover in host.key_path.parent.glob(host.key_path.name + ".tmp.*"):
        assert leftover.stat().st_mode & 0o077 == 0
    print(
        f"\nfaults: {kills} SIGKILLs during apply ({PEERS} peers, apply span {span:.2f} s), "
        f"{finished_first} applies finished before the kill"
    )


# --------------------------------------------------------------------- failures half-way


def inject(host: Host, after: int, command: str) -> subprocess.CompletedProcess[str]:
    """`apply` with `command` run (in the namespace) once `after` changes are done."""
    cmd = [
        "ip",
        "netns",
        "exec",
        host.ns,
        sys.executable,
        "-m",
        "tests.integration.test_faults",
        str(after),
        command,
        str(host.config_path),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=120)


def test_interface_deleted_under_apply(lab1: Lab) -> None:
    host = lab1.hosts[0]
    keys = peer_keys(20, 3)
    text = big_config(host, keys)
    host.write_config(text)
    # create_link, set_mtu, the device batch (key, port, 20 peers): then the link vanishes.
    proc = inject(host, 24, f"ip link del {host.ifname}")
    assert proc.returncode == 5, proc.stderr
    message = proc.stderr.strip()
    assert "Traceback" not in message
    assert host.ifname in message
    assert "add address" in message and f"{host.tunnel_ip}/24" in message  # what failed
    assert "24 applied" in message  # what was done
    # The link is gone: what needs it is not tried, and says so.
    assert f"not tried: {host.ifname} failed" in message
    assert "the next apply retries the rest" in message
    host.run("apply")
    assert_matches(host, text, {f"{host.tunnel_ip}/24"})


def test_listen_port_taken_by_another_socket(lab1: Lab) -> None:
    host = lab1.hosts[0]
    text = big_config(host, peer_keys(5, 4))
    host.write_config(text)
    # Another program holds UDP port 51820 in this namespace (IPv4 and IPv6).
    holder = host.python(
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
        "s.bind(('::', 51820))\n"
        "print('bound', flush=True)\n"
        "time.sleep(120)\n",
        ready="bound",
    )
    try:
        proc = host.run("apply", check=False)
        message = proc.stderr.strip()
        assert proc.returncode == 5, message
        assert "Traceback" not in message
        assert host.ifname in message
        assert "set listen port 51820" in message and "in use" in message  # what failed, and why
        assert "1 change(s) failed" in message  # only that: the rest does not need the port
        peers, _, _, _ = device_state(host)
        assert len(peers) == 5
    finally:
        holder.kill()
        holder.wait()
    host.run("apply")
    assert_matches(host, text, {f"{host.tunnel_ip}/24"})


def test_eperm_half_way_without_cap_net_admin(lab1: Lab) -> None:
    host = lab1.hosts[0]
    first = big_config(host, peer_keys(5, 5))
    host.write_config(first)
    host.run("apply")
    changed = big_config(host, peer_keys(8, 5), extra_address=True)
    host.write_config(changed)
    # Root without CAP_NET_ADMIN: the device (a root-owned socket) still takes the peer
    # changes, the kernel refuses the address: a failure half-way.
    cmd = [
        "ip",
        "netns",
        "exec",
        host.ns,
        "capsh",
        "--drop=cap_net_admin",
        "--",
        "-c",
        " ".join([*bmx7_wg_command(), "-c", str(host.config_path), "apply"]),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=120)
    message = proc.stderr.strip()
    assert proc.returncode == 5, message
    assert "Traceback" not in message
    assert f"{host.ifname}: cannot add address fd00:77::1/64" in message
    assert "Operation not permitted" in message
    assert "3 applied" in message  # the three added peers
    peers, _, _, _ = device_state(host)
    assert len(peers) == 8  # what was done stays done
    host.run("apply")
    assert_matches(host, changed, {f"{host.tunnel_ip}/24", "fd00:77::1/64"})


def test_not_root_changes_nothing_and_says_why(lab1: Lab) -> None:
    host = lab1.hosts[0]
    text = big_config(host, peer_keys(3, 6))
    host.write_config(text)
    host.run("apply")
    host.write_config(big_config(host, peer_keys(4, 6)))
    os.chmod(host.config_path, 0o644)
    before = host.snapshot()
    cmd = [
        "ip",
        "netns",
        "exec",
        host.ns,
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        *bmx7_wg_command(),
        "-c",
        str(host.config_path),
        "apply",
    ]
    env = child_env()
    env["HOME"] = "/"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd="/")
    message = proc.stderr.strip()
    assert proc.returncode != 0
    assert "Traceback" not in message and "internal error" not in message, message
    assert str(host.key_path) in message or "Permission denied" in message, message
    assert host.snapshot() == before


# --------------------------------------------------------------------- the driver


def _driver(after: int, command: str, config_path: str) -> int:
    """Run `bmx7-wg -c CONFIG apply`, running COMMAND once AFTER changes are done."""
    import shlex

    from bmx7_wg import cli
    from bmx7_wg.system import System

    original = System.execute

    def execute(self, actions, implementations, on_done=lambda a: None):  # type: ignore[no-untyped-def]
        done = 0

        def hook(action):  # type: ignore[no-untyped-def]
            nonlocal done
            on_done(action)
            done += 1
            if done == after:
                subprocess.run(shlex.split(command), check=True)

        return original(self, actions, implementations, hook)

    System.execute = execute  # type: ignore[method-assign]
    return cli.main(["-c", config_path, "apply"])


if __name__ == "__main__":
    sys.exit(_driver(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
