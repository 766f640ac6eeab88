"""`bmx7-wg run` as a service: mesh reaction latency, idle CPU and memory.

reaction  One node in a namespace runs `bmx7-wg run` against the bmx7 stand-in
          (tests/bmx7sim). For each event a new node's announcement is written into
          `rcvdSms/<NODEID>:wg-bmx7`, as bmx7's SMS plugin does, and the time until its
          public key is a peer of the wireguard-go device is measured (polling the device's
          UAPI socket every 0.5 ms). p50/p99 over all events.
idle      `bmx7-wg run` with N static peers: after the first reconcile and a settle time,
          CPU time (utime+stime from /proc) used during a quiet window, and RSS (VmRSS,
          VmHWM) at its end.

Results are printed as JSON (one object) for bench/report.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.static import Namespace, Workload, _env, keypair
from bmx7_wg.mesh.announce import format_announcement
from tests.bmx7sim.sim import SimNode, make_node_id

SOCKET_DIR = "/var/run/wireguard"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def uapi_get(ifname: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(os.path.join(SOCKET_DIR, f"{ifname}.sock"))
        s.sendall(b"get=1\n\n")
        chunks = []
        while True:
            data = s.recv(1 << 18)
            if not data:
                break
            chunks.append(data)
            if data.endswith(b"\n\n"):
                break
    return b"".join(chunks).decode()


def peer_count(ifname: str) -> int:
    try:
        return uapi_get(ifname).count("public_key=")
    except OSError:
        return -1


def start_run(ns: Namespace, python: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    # `ip netns exec` execs the command: the PID is bmx7-wg's own.
    # The service's state files and mesh names go next to its log, not into the machine's
    # /run/bmx7-wg and /etc/hosts.
    env = dict(_env(), BMX7_WG_RUN_DIR=str(log.parent / "state"))
    env["BMX7_WG_HOSTS_FILE"] = str(log.parent / "hosts")
    # Logs go to LOG (stderr), never to the journal, even when the bench itself runs under
    # systemd: mesh_scale.py times the service's log lines.
    for name in ("JOURNAL_STREAM", "INVOCATION_ID", "BMX7_WG_LOG"):
        env.pop(name, None)
    with open(log, "wb") as out:
        return subprocess.Popen(
            ns.cmd(python, "-m", "bmx7_wg", "-c", str(config), "run"),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def percentile(xs: list[float], p: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def reaction(events: int, python: str) -> dict[str, object]:
    ns = Namespace()
    proc = None
    node = None
    try:
        with tempfile.TemporaryDirectory(prefix="bmx7-wg-bench.") as tmp:
            work = Path(tmp)
            runtime = work / "run"
            node = SimNode(str(runtime), "bench", sync_sms=("wg-bmx7",))
            node.start()
            ifname = f"bm{ns.token}"
            config = work / "mesh.toml"
            config.write_text(
                f'[bmx7]\nruntime_dir = "{runtime}"\nannounce = "wg-bmx7"\ntrust = "all"\n\n'
                f'[interface.{ifname}]\nmesh = true\nbackend = "userspace"\n'
                f'private_key_file = "{work / "own.key"}"\n'
            )
            log = work / "run.log"
            proc = start_run(ns, python, config, log)
            wait_for(lambda: peer_count(ifname) == 0, 30, "the service's first reconcile")
            time.sleep(0.5)
            rcvd = runtime / "sms" / "rcvdSms"
            latencies: list[float] = []
            for i in range(events):
                public = keypair()[1]
                needle = "public_key=" + base64.b64decode(public).hex()
                node_id = make_node_id()
                data = format_announcement(public, 40456)
                tmp_path = work / "sms.tmp"
                tmp_path.write_bytes(data)
                t0 = time.perf_counter()
                os.rename(tmp_path, rcvd / f"{node_id}:wg-bmx7")
                deadline = t0 + 10
                while needle not in uapi_get(ifname):
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"event {i}: peer did not appear; log:\n{log.read_text()[-2000:]}")
                    time.sleep(0.0005)
                latencies.append(time.perf_counter() - t0)
                # Let the service go back to sleep: events are measured one at a time.
                time.sleep(0.02)
            if proc.poll() is not None:
                raise RuntimeError(f"bmx7-wg run exited {proc.returncode}: {log.read_text()[-2000:]}")
    finally:
        if proc is not None:
            stop(proc)
        if node is not None:
            node.stop()
        ns.close()
    return {
        "events": events,
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "mean": statistics.mean(latencies),
    }


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _proc_mem(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024  # MiB
    return out


def idle(n: int, window: float, python: str) -> dict[str, object]:
    ns = Namespace()
    proc = None
    try:
        with tempfile.TemporaryDirectory(prefix="bmx7-wg-bench.") as tmp:
            work = Path(tmp)
            ifname = f"bi{ns.token}"
            config = Workload(work, n, ifname, python).bmx7_conf(0)
            log = work / "run.log"
            t0 = time.perf_counter()
            proc = start_run(ns, python, config, log)
            wait_for(lambda: peer_count(ifname) == n, 120, f"{n} peers on the device")
            first = time.perf_counter() - t0
            time.sleep(3)  # settle: late link events of the first reconcile
            cpu0 = _proc_cpu(proc.pid)
            time.sleep(window)
            cpu1 = _proc_cpu(proc.pid)
            mem = _proc_mem(proc.pid)
            if proc.poll() is not None:
                raise RuntimeError(f"bmx7-wg run exited {proc.returncode}: {log.read_text()[-2000:]}")
    finally:
        if proc is not None:
            stop(proc)
        ns.close()
    return {
        "n": n,
        "first_reconcile": first,
        "window": window,
        "cpu_seconds": cpu1 - cpu0,
        "rss_mib": mem.get("VmRSS"),
        "peak_rss_mib": mem.get("VmHWM"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--idle-sizes", default="1000,10000")
    parser.add_argument("--idle-window", type=float, default=20.0)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    out = {
        "reaction": reaction(args.events, args.python),
        "idle": [idle(int(n), args.idle_window, args.python) for n in args.idle_sizes.split(",")],
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
