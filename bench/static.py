"""bmx7-wg beside `wg` on the same device kind, in one namespace, in one run.

The device kind is wireguard-go (`--backend userspace`, the default) or the kernel's
WireGuard (`--backend kernel`, for a kernel that has it: inside vm/run).

For each size N (static peers, real X25519 keys, one /128 each, an IPv4 endpoint each):

  apply from empty   `bmx7-wg apply --json` (creates the device)  vs  `wg setconf` on a fresh device
                     (wireguard-go started, or `ip link add ... type wireguard`, untimed)
  no-op apply        `bmx7-wg apply --json` again                 vs  `wg syncconf` of the same file
  one changed peer   apply of a file with one allowed_ip changed  vs  `wg syncconf` of such a file
  show --json        `bmx7-wg show --json`                        vs  `wg show all dump`

Both sides run as a user runs them: a new process inside the namespace (`ip netns exec`),
so interpreter start, imports and the namespace switch are counted on both sides. The two
devices live side by side in the same namespace; runs alternate between the two tools.

Results are printed as JSON (one object) for bench/report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return env


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=600, env=_env())


def timed(cmd: list[str]) -> float:
    """Wall time of one command, which must succeed."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[:500]}")
    return elapsed


def keypair() -> tuple[str, str]:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode(), base64.b64encode(pub).decode()


def peer_ip(i: int) -> str:
    return f"fd00:b:{i >> 16:x}:{i & 0xFFFF:x}::1/128"


def endpoint(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:51820"


class Namespace:
    def __init__(self, backend: str = "userspace") -> None:
        self.backend = backend
        self.token = secrets.token_hex(3)
        self.name = f"bench{self.token}"
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")

    def cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def has_link(self, name: str) -> bool:
        return sh("ip", "-n", self.name, "link", "show", name, check=False).returncode == 0

    def delete_link(self, name: str) -> None:
        sh("ip", "-n", self.name, "link", "del", name, check=False)
        if self.backend == "kernel":
            return  # a kernel device is gone with its link
        # Deleting the tun link stops its wireguard-go daemon and removes the socket.
        deadline = time.monotonic() + 10
        while os.path.exists(f"/var/run/wireguard/{name}.sock") and time.monotonic() < deadline:
            time.sleep(0.01)

    def create_device(self, name: str) -> None:
        """A fresh, empty WireGuard device of the backend's kind for `wg setconf`."""
        if self.backend == "kernel":
            sh("ip", "-n", self.name, "link", "add", name, "type", "wireguard")
        else:
            self.start_wireguard_go(name)

    def start_wireguard_go(self, name: str) -> None:
        # As wg-quick starts it: wireguard-go daemonizes itself (no LOG_LEVEL, or the
        # daemon would keep our stdio) and runs until its link is deleted.
        env = {k: v for k, v in os.environ.items() if k not in ("WG_PROCESS_FOREGROUND", "LOG_LEVEL")}
        subprocess.run(
            self.cmd("wireguard-go", name),
            check=True,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(f"/var/run/wireguard/{name}.sock"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"wireguard-go {name} did not start")
            time.sleep(0.005)

    def close(self) -> None:
        proc = sh("ip", "-n", self.name, "-j", "link", "show", check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            for link in json.loads(proc.stdout):
                if link["ifname"] != "lo":
                    self.delete_link(link["ifname"])
        sh("ip", "netns", "del", self.name, check=False)


class Workload:
    """The same N peers written as a bmx7-wg configuration and as a `wg` configuration."""

    def __init__(
        self, workdir: Path, n: int, ifname: str, python: str, backend: str = "userspace"
    ) -> None:
        self.n = n
        self.backend = backend
        self.workdir = workdir
        self.ifname = ifname
        self.python = python
        private, _ = keypair()
        self.private = private
        self.key_file = workdir / "own.key"
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, (private + "\n").encode())
        os.close(fd)
        self.public_keys = [keypair()[1] for _ in range(n)]

    def allowed(self, i: int, variant: int) -> str:
        # The "changed peer" is peer 0; variant 1 gives it a second /128.
        if i == 0 and variant == 1:
            return f"{peer_ip(0)}, fd00:c::1/128"
        return peer_ip(i)

    def bmx7_conf(self, variant: int) -> Path:
        path = self.workdir / f"bmx7-wg-{variant}.toml"
        out = [
            f"[interface.{self.ifname}]",
            f'private_key_file = "{self.key_file}"',
            "listen_port = 51820",
            f'backend = "{self.backend}"',
            # The peers' /128s lie inside this address's /32, so the kernel routes them
            # through the connected prefix: the device is what both tools set up.
            'addresses = ["fd00:b::/32"]',
            "",
        ]
        for i, pub in enumerate(self.public_keys):
            ips = ", ".join(f'"{a.strip()}"' for a in self.allowed(i, variant).split(","))
            out += [
                f"[[interface.{self.ifname}.peer]]",
                f'public_key = "{pub}"',
                f'endpoint = "{endpoint(i)}"',
                f"allowed_ips = [{ips}]",
                "",
            ]
        path.write_text("\n".join(out))
        return path

    def wg_conf(self, variant: int) -> Path:
        path = self.workdir / f"wg-{variant}.conf"
        out = ["[Interface]", f"PrivateKey = {self.private}", "ListenPort = 51821", ""]
        for i, pub in enumerate(self.public_keys):
            out += [
                "[Peer]",
                f"PublicKey = {pub}",
                f"Endpoint = {endpoint(i)}",
                f"AllowedIPs = {self.allowed(i, variant)}",
                "",
            ]
        path.write_text("\n".join(out))
        fd = os.open(path, os.O_RDONLY)
        os.fchmod(fd, 0o600)
        os.close(fd)
        return path


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def bench_size(n: int, runs: int, python: str, backend: str = "userspace") -> dict[str, object]:
    ns = Namespace(backend)
    try:
        with tempfile.TemporaryDirectory(prefix="bmx7-wg-bench.") as tmp:
            workdir = Path(tmp)
            b_if = f"bb{ns.token}"  # bmx7-wg's device
            w_if = f"bw{ns.token}"  # wg's device
            work = Workload(workdir, n, b_if, python, backend)
            b_conf = [work.bmx7_conf(0), work.bmx7_conf(1)]
            w_conf = [work.wg_conf(0), work.wg_conf(1)]
            bmx7 = [python, "-m", "bmx7_wg"]
            times: dict[str, list[float]] = {
                k: []
                for k in (
                    "apply_empty",
                    "setconf",
                    "apply_noop",
                    "syncconf_noop",
                    "apply_one",
                    "syncconf_one",
                    "show_json",
                    "show_dump",
                )
            }
            for _ in range(runs):
                # From empty: bmx7-wg creates its device; wg gets a fresh device (untimed).
                ns.delete_link(b_if)
                ns.delete_link(w_if)
                times["apply_empty"].append(
                    timed(ns.cmd(*bmx7, "-c", str(b_conf[0]), "apply", "--json"))
                )
                ns.create_device(w_if)
                times["setconf"].append(timed(ns.cmd("wg", "setconf", w_if, str(w_conf[0]))))
                for variant in (1, 0):  # a change and back; each followed by a no-op
                    times["apply_noop"].append(
                        timed(ns.cmd(*bmx7, "-c", str(b_conf[1 - variant]), "apply", "--json"))
                    )
                    times["syncconf_noop"].append(
                        timed(ns.cmd("wg", "syncconf", w_if, str(w_conf[1 - variant])))
                    )
                    times["apply_one"].append(
                        timed(ns.cmd(*bmx7, "-c", str(b_conf[variant]), "apply", "--json"))
                    )
                    times["syncconf_one"].append(
                        timed(ns.cmd("wg", "syncconf", w_if, str(w_conf[variant])))
                    )
                times["show_json"].append(timed(ns.cmd(*bmx7, "-c", str(b_conf[0]), "show", "--json")))
                times["show_dump"].append(timed(ns.cmd("wg", "show", "all", "dump")))
            # The measurements are only worth something if both devices ended up alike.
            check = subprocess.run(
                ns.cmd(*bmx7, "-c", str(b_conf[0]), "apply", "--json"),
                capture_output=True,
                text=True,
                env=_env(),
                check=True,
            )
            assert json.loads(check.stdout)["changed"] is False, check.stdout
            b_peers = sh(*ns.cmd("wg", "show", b_if, "peers")).stdout.split()
            w_peers = sh(*ns.cmd("wg", "show", w_if, "peers")).stdout.split()
            assert sorted(b_peers) == sorted(w_peers) and len(b_peers) == n, (len(b_peers), len(w_peers))
    finally:
        ns.close()
    med = {k: median(v) for k, v in times.items()}
    return {"n": n, "runs": runs, "median": med, "samples": times}


def cold_start(runs: int, python: str, backend: str = "userspace") -> dict[str, float]:
    """Medians of `check`, `show` and a no-op `apply` on a one-peer configuration: what
    a new process costs before any per-peer work."""
    ns = Namespace(backend)
    try:
        with tempfile.TemporaryDirectory(prefix="bmx7-wg-bench.") as tmp:
            work = Workload(Path(tmp), 1, f"bc{ns.token}", python, backend)
            conf = str(work.bmx7_conf(0))
            bmx7 = [python, "-m", "bmx7_wg", "-c", conf]
            timed(ns.cmd(*bmx7, "apply"))
            times: dict[str, list[float]] = {"check": [], "show": [], "apply": [], "wg show": []}
            for _ in range(runs):
                times["check"].append(timed(ns.cmd(*bmx7, "check")))
                times["show"].append(timed(ns.cmd(*bmx7, "show")))
                times["apply"].append(timed(ns.cmd(*bmx7, "apply")))
                times["wg show"].append(timed(ns.cmd("wg", "show")))
    finally:
        ns.close()
    return {k: median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python", default=sys.executable, help="the python that runs bmx7-wg")
    parser.add_argument(
        "--backend",
        choices=("userspace", "kernel"),
        default="userspace",
        help="wireguard-go devices (default) or the kernel's WireGuard on both sides",
    )
    args = parser.parse_args(argv)
    results = [
        bench_size(int(n), args.runs, args.python, args.backend) for n in args.sizes.split(",")
    ]
    cold = cold_start(max(args.runs, 3), args.python, args.backend)
    json.dump(
        {
            "backend": args.backend,
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "static": results,
            "cold_start": cold,
        },
        sys.stdout,
        indent=1,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
