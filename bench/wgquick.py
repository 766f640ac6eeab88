"""bmx7-wg beside wg-quick: the same N static peers, with one route per peer on both sides.

For each size N (real X25519 keys, one /128 per peer outside the interface's address, so
that both tools add one route per peer; an IPv4 endpoint each), in one network namespace:

  up from nothing   `bmx7-wg apply` (no interface yet; it starts wireguard-go)
                    vs `wg-quick up DIR/IFACE.conf` (no kernel WireGuard here: wg-quick falls
                    back to WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go, as it does on any
                    machine without the module)
  unchanged reload  `bmx7-wg apply` again  vs  `wg syncconf IFACE <(wg-quick strip CONF)`
                    (through bash, as a user types it)

Both sides run as a user runs them: a new process inside the namespace (`ip netns exec`).
The two devices live side by side (their peers' /128s differ, so their routes do not
collide); runs alternate which tool goes first; the links are deleted between runs.
When wg-quick's `up` has used more than --budget seconds at a size, it is not run again
at that size (its run count is reported). Medians; JSON (one object) for bench/report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.static import Namespace, _env, endpoint, keypair, median, sh

ADDRESS = {"bmx7": "fd00:a::1/64", "wgquick": "fd00:a:1::1/64"}
PEER_PREFIX = {"bmx7": "fd00:b", "wgquick": "fd00:c"}  # /32s outside both addresses


def peer_ip(side: str, i: int) -> str:
    return f"{PEER_PREFIX[side]}:{i >> 16:x}:{i & 0xFFFF:x}::1/128"


def wg_quick_env() -> dict[str, str]:
    env = _env()
    env["WG_QUICK_USERSPACE_IMPLEMENTATION"] = "wireguard-go"
    # wireguard-go must daemonize with its stdio on /dev/null (see Namespace.start_wireguard_go).
    for key in ("WG_PROCESS_FOREGROUND", "LOG_LEVEL"):
        env.pop(key, None)
    return env


def run_timed(cmd: list[str], env: dict[str, str], work: Path) -> tuple[float, str]:
    """Wall time and output of one command, which must succeed. Output goes to files, not
    pipes: a daemon it starts must not hold our end open."""
    out_path, err_path = work / "out.log", work / "err.log"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, timeout=3600)
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err_path.read_text()[-1000:]}")
    return elapsed, out_path.read_text()


def changed(output: str) -> bool:
    return bool(json.loads(output)["changed"])


def write_configs(work: Path, n: int, b_if: str, w_if: str) -> tuple[Path, Path]:
    private, _ = keypair()
    key_file = work / "own.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (private + "\n").encode())
    os.close(fd)
    publics = [keypair()[1] for _ in range(n)]
    b = [
        f"[interface.{b_if}]",
        f'private_key_file = "{key_file}"',
        "listen_port = 51820",
        'backend = "userspace"',
        f'addresses = ["{ADDRESS["bmx7"]}"]',
        "",
    ]
    w = ["[Interface]", f"PrivateKey = {private}", "ListenPort = 51821", f"Address = {ADDRESS['wgquick']}"]
    w.append("")
    for i, pub in enumerate(publics):
        b += [
            f"[[interface.{b_if}.peer]]",
            f'public_key = "{pub}"',
            f'endpoint = "{endpoint(i)}"',
            f'allowed_ips = ["{peer_ip("bmx7", i)}"]',
            "",
        ]
        w += [
            "[Peer]",
            f"PublicKey = {pub}",
            f"Endpoint = {endpoint(i)}",
            f"AllowedIPs = {peer_ip('wgquick', i)}",
            "",
        ]
    b_conf = work / "bmx7-wg.toml"
    b_conf.write_text("\n".join(b))
    # wg-quick names the interface after the file; a private key wants a private file.
    w_conf = work / f"{w_if}.conf"
    fd = os.open(w_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, "\n".join(w).encode())
    os.close(fd)
    return b_conf, w_conf


def route_count(ns: Namespace, ifname: str) -> int:
    out = sh(*ns.cmd("ip", "-6", "route", "show", "dev", ifname)).stdout
    return sum(1 for line in out.splitlines() if line.startswith(PEER_PREFIX["bmx7"] + ":")
               or line.startswith(PEER_PREFIX["wgquick"] + ":"))


def bench_size(n: int, runs: int, python: str, budget: float) -> dict[str, Any]:
    ns = Namespace()
    times: dict[str, list[float]] = {"apply_up": [], "wgquick_up": [], "apply_noop": [], "syncconf_strip": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bmx7-wg-bench.") as tmp:
            work = Path(tmp)
            os.chmod(work, 0o700)
            b_if = f"bq{ns.token}"  # bmx7-wg's device
            w_if = f"wq{ns.token}"  # wg-quick's device
            b_conf, w_conf = write_configs(work, n, b_if, w_if)
            bmx7 = ns.cmd(python, "-m", "bmx7_wg", "-c", str(b_conf), "apply", "--json")
            env, wq_env = _env(), wg_quick_env()
            wq_used = 0.0
            for run in range(runs):
                ns.delete_link(b_if)
                ns.delete_link(w_if)
                do_wq = run == 0 or wq_used <= budget

                def ours() -> None:
                    elapsed, out = run_timed(bmx7, env, work)
                    assert changed(out), "bmx7-wg apply from nothing changed nothing"
                    times["apply_up"].append(elapsed)
                    elapsed, out = run_timed(bmx7, env, work)
                    assert not changed(out), "the second bmx7-wg apply was not a no-op"
                    times["apply_noop"].append(elapsed)

                def theirs() -> None:
                    nonlocal wq_used
                    elapsed, _ = run_timed(ns.cmd("wg-quick", "up", str(w_conf)), wq_env, work)
                    wq_used += elapsed
                    times["wgquick_up"].append(elapsed)
                    strip = 'wg syncconf "$1" <(wg-quick strip "$2")'
                    elapsed, _ = run_timed(ns.cmd("bash", "-c", strip, "-", w_if, str(w_conf)), wq_env, work)
                    times["syncconf_strip"].append(elapsed)

                order = [ours, theirs] if run % 2 == 0 else [theirs, ours]
                for step in order:
                    if step is theirs and not do_wq:
                        continue
                    step()
            # Both tools must have set up the same thing: N peers and one route per peer each.
            check = subprocess.run(bmx7, capture_output=True, text=True, env=env, check=True)
            assert json.loads(check.stdout)["changed"] is False, check.stdout
            for ifname in (b_if, w_if):
                peers = sh(*ns.cmd("wg", "show", ifname, "peers")).stdout.split()
                routes = route_count(ns, ifname)
                assert len(peers) == n and routes == n, (ifname, len(peers), routes)
    finally:
        ns.close()
    return {
        "n": n,
        "runs": runs,
        "wgquick_runs": len(times["wgquick_up"]),
        "median": {k: median(v) for k, v in times.items()},
        "samples": times,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds of `wg-quick up` per size after which it is not run again",
    )
    parser.add_argument("--python", default=sys.executable, help="the python that runs bmx7-wg")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    results = [bench_size(int(n), args.runs, args.python, args.budget) for n in args.sizes.split(",")]
    json.dump({"wgquick": results}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
