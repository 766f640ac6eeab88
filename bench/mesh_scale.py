"""`bmx7-wg run` with N mesh nodes: cold start, then single events, beside `wg setconf`.

For each size N, in one network namespace, with the bmx7 stand-in (tests/bmx7sim) serving
bmx7's control socket and runtime files:

cold start  N announcements (real X25519 keys, one node id each) lie in
            `rcvdSms/<NODEID>:wg-bmx7` before the service starts. Timed: from launching
            `bmx7-wg run` (a new process in the namespace) until its wireguard-go device
            holds all N peers (the device's UAPI socket read every 5 ms, or one read's
            time apart when a read takes longer). In the same run, `wg setconf` of the same
            N peers (public key, the node's fd77 /128, endpoint [fd70 address]:40456) on a
            fresh wireguard-go device (started untimed), timed as a new process. Between
            runs the service is stopped, its link deleted and its state directory
            (BMX7_WG_RUN_DIR) removed: every run starts cold. Medians.
events      With the last run's service holding N peers: E events one at a time,
            alternating "join" (a new node's announcement renamed into rcvdSms) and
            "key change" (a known node's file replaced, by rename, with a new key). Latency:
            rename -> the new key on the device (and, for a key change, the old key gone),
            the device read over UAPI every 0.5 ms (or one read's time apart when a read
            takes longer: at 10,000 peers a read is tens of ms, which bounds the
            resolution). CPU: the service's utime+stime (/proc/<pid>/stat) from just before
            the rename until 30 ms after the key appeared; ticks are 10 ms, so the mean is
            the total over all events / E; the per-event median comes from the scheduler's
            nanosecond counters (/proc/<pid>/task/*/schedstat). The poller is this process,
            not the service.
footprint   VmRSS and VmHWM after the events; CPU used over a quiet window after them.

Results are printed as JSON (one object) for bench/report.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.service import _proc_cpu, _proc_mem, percentile, start_run, stop, uapi_get
from bench.static import Namespace, keypair, median, timed
from bmx7_wg.base.nodeid import primary_address, tunnel_address
from bmx7_wg.mesh.announce import format_announcement
from tests.bmx7sim.sim import SimNode, make_node_id

SMS_NAME = "wg-bmx7"
PORT = 40456
SETTLE = 30e-3  # after the key appeared: let the service go back to sleep before reading its CPU


def public_keys(n: int) -> list[str]:
    """N distinct real X25519 public keys (base64)."""
    keys = [keypair()[1] for _ in range(n)]
    assert len(set(keys)) == n
    return keys


def hex_key(public: str) -> str:
    return base64.b64decode(public).hex()


def precise_cpu(pid: int) -> float | None:
    """CPU seconds of every thread of PID, from the scheduler's nanosecond counters."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


class Poller:
    """Reads a device over its UAPI socket until a condition holds; at most one read at a
    time, `interval` apart, or one read's duration apart when reads take longer."""

    def __init__(self, ifname: str, interval: float) -> None:
        self.ifname = ifname
        self.interval = interval
        self.reads: list[float] = []

    def until(
        self, done: Callable[[str], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]
    ) -> float:
        """perf_counter() when a read first satisfied DONE (the end of that read); PROC, the
        service, must keep running meanwhile."""
        deadline = time.perf_counter() + timeout
        while True:
            t0 = time.perf_counter()
            try:
                text = uapi_get(self.ifname)
            except OSError:
                text = None
            t1 = time.perf_counter()
            if text is not None:
                self.reads.append(t1 - t0)
                if done(text):
                    return t1
            if t1 > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            if proc.poll() is not None:
                raise RuntimeError(f"bmx7-wg run exited {proc.returncode} while waiting for {what}")
            time.sleep(max(self.interval, t1 - t0))


def wg_conf(path: Path, private: str, nodes: list[tuple[str, str]]) -> Path:
    out = ["[Interface]", f"PrivateKey = {private}", "ListenPort = 51821", ""]
    for node_id, public in nodes:
        out += [
            "[Peer]",
            f"PublicKey = {public}",
            f"AllowedIPs = {tunnel_address(node_id)}/128",
            f"Endpoint = [{primary_address(node_id)}]:{PORT}",
            "",
        ]
    path.write_text("\n".join(out))
    os.chmod(path, 0o600)
    return path


def bench_size(n: int, runs: int, events: int, idle_window: float, python: str) -> dict[str, Any]:
    ns = Namespace()
    try:
        # The stand-in and the service stop before their directory goes.
        with tempfile.TemporaryDirectory(prefix="bmx7-wg-bench.") as tmp:
            proc = None
            node = None
            try:
                work = Path(tmp)
                runtime = work / "run"
                node = SimNode(str(runtime), "bench", sync_sms=(SMS_NAME,))
                node.start()  # wipes rcvdSms/, as bmx7 does: the announcements come after it
                rcvd = runtime / "sms" / "rcvdSms"
                nodes = [(make_node_id(), public) for public in public_keys(n)]
                for node_id, public in nodes:
                    (rcvd / f"{node_id}:{SMS_NAME}").write_bytes(format_announcement(public, PORT))
                b_if = f"bm{ns.token}"  # the service's device
                w_if = f"bw{ns.token}"  # wg setconf's device
                config = work / "mesh.toml"
                config.write_text(
                    f'[bmx7]\nruntime_dir = "{runtime}"\nannounce = "{SMS_NAME}"\ntrust = "all"\n\n'
                    f'[interface.{b_if}]\nmesh = true\nbackend = "userspace"\n'
                    f'private_key_file = "{work / "own.key"}"\n'
                )
                conf = wg_conf(work / "wg.conf", keypair()[0], nodes)
                log = work / "run.log"
                state = work / "state"  # start_run's BMX7_WG_RUN_DIR
                poll = Poller(b_if, 0.005)

                def has_all(text: str) -> bool:
                    return text.count("public_key=") == n

                cold: list[float] = []
                setconf: list[float] = []
                for run in range(runs):
                    ns.create_device(w_if)
                    setconf.append(timed(ns.cmd("wg", "setconf", w_if, str(conf))))
                    got = uapi_get(w_if).count("public_key=")
                    assert got == n, f"wg setconf: {got} peers, not {n}"
                    ns.delete_link(w_if)
                    shutil.rmtree(state, ignore_errors=True)  # no remembered mesh view: cold
                    t0 = time.perf_counter()
                    proc = start_run(ns, python, config, log)
                    try:
                        t1 = poll.until(has_all, 60 + n / 50, f"{n} peers on the device", proc)
                    except RuntimeError as exc:
                        raise RuntimeError(f"{exc}; log:\n{log.read_text()[-2000:]}") from None
                    cold.append(t1 - t0)
                    if proc.poll() is not None:
                        raise RuntimeError(f"bmx7-wg run exited {proc.returncode}: {log.read_text()[-2000:]}")
                    if run < runs - 1:
                        stop(proc)
                        proc = None
                        ns.delete_link(b_if)
                assert proc is not None
                pid = proc.pid
                time.sleep(1.0)  # late link events of the first reconcile
                result = events_on(proc, b_if, work, rcvd, nodes, events, log)
                mem = _proc_mem(pid)
                time.sleep(0.5)
                idle0, idle_p0 = _proc_cpu(pid), precise_cpu(pid)
                time.sleep(idle_window)
                idle1, idle_p1 = _proc_cpu(pid), precise_cpu(pid)
                if proc.poll() is not None:
                    raise RuntimeError(f"bmx7-wg run exited {proc.returncode}: {log.read_text()[-2000:]}")
                final = uapi_get(b_if).count("public_key=")
                joins = sum(1 for i in range(events) if i % 2 == 0)
                assert final == n + joins, f"{final} peers on the device after the events, not {n + joins}"
            finally:
                if proc is not None:
                    stop(proc)
                if node is not None:
                    node.stop()
    finally:
        ns.close()
    return {
        "n": n,
        "runs": runs,
        "cold_start": median(cold),
        "setconf": median(setconf),
        "samples": {"cold_start": cold, "setconf": setconf},
        **result,
        "rss_mib": mem.get("VmRSS"),
        "peak_rss_mib": mem.get("VmHWM"),
        "idle_window": idle_window,
        "idle_cpu": idle1 - idle0,
        "idle_cpu_precise": None if idle_p0 is None or idle_p1 is None else idle_p1 - idle_p0,
    }


def events_on(
    proc: subprocess.Popen[bytes],
    ifname: str,
    work: Path,
    rcvd: Path,
    nodes: list[tuple[str, str]],
    events: int,
    log: Path,
) -> dict[str, Any]:
    pid = proc.pid
    poll = Poller(ifname, 0.0005)
    latency: dict[str, list[float]] = {"join": [], "key change": []}
    applied: dict[str, list[float]] = {"join": [], "key change": []}
    cpu: dict[str, float] = {"join": 0.0, "key change": 0.0}
    precise: list[float] = []
    for i in range(events):
        kind = "join" if i % 2 == 0 else "key change"
        public = keypair()[1]
        new = "public_key=" + hex_key(public)
        old = None
        if kind == "join":
            node_id = make_node_id()
            nodes.append((node_id, public))
        else:
            index = (i // 2) % len(nodes)  # a different known node each time
            node_id, before = nodes[index]
            old = "public_key=" + hex_key(before)
            nodes[index] = (node_id, public)
        tmp_path = work / "sms.tmp"
        tmp_path.write_bytes(format_announcement(public, PORT))

        def done(text: str, new: str = new, old: str | None = old) -> bool:
            return new in text and (old is None or old not in text)

        c0, p0 = _proc_cpu(pid), precise_cpu(pid)
        logged = log.stat().st_size
        t0 = time.perf_counter()
        os.rename(tmp_path, rcvd / f"{node_id}:{SMS_NAME}")
        # The service logs each change once its device change has returned: the moment
        # the device has the peer, without the cost of a UAPI read of the whole device
        # (tens of ms at 10,000 peers, and the device is locked meanwhile).
        applied_by = t0 + 10
        while log.stat().st_size == logged and time.perf_counter() < applied_by:
            time.sleep(0.0002)
        applied[kind].append(time.perf_counter() - t0)
        try:
            t1 = poll.until(done, 10 + len(nodes) / 500, f"event {i} ({kind}) on the device", proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; log:\n{log.read_text()[-2000:]}") from None
        latency[kind].append(t1 - t0)
        time.sleep(SETTLE)
        c1, p1 = _proc_cpu(pid), precise_cpu(pid)
        cpu[kind] += c1 - c0
        if p0 is not None and p1 is not None:
            precise.append(p1 - p0)
    every = latency["join"] + latency["key change"]
    every_applied = applied["join"] + applied["key change"]
    total = cpu["join"] + cpu["key change"]
    return {
        "events": events,
        "cpu_per_event": total / events if events else float("nan"),
        "cpu_total": cpu,
        "cpu_per_event_precise_mean": statistics.mean(precise) if precise else None,
        "cpu_per_event_precise_median": statistics.median(precise) if precise else None,
        "applied_p50": statistics.median(every_applied),
        "applied_p99": percentile(every_applied, 99),
        "applied_max": max(every_applied),
        "p50": statistics.median(every),
        "p99": percentile(every, 99),
        "max": max(every),
        "latency_by_kind": {
            k: {"p50": statistics.median(v), "max": max(v)} for k, v in latency.items() if v
        },
        "event_read": median(poll.reads),  # one read of the device while polling
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,5000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of the quiet window")
    parser.add_argument("--python", default=sys.executable, help="the python that runs bmx7-wg")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.events < 1:
        parser.error("--runs and --events must be at least 1")
    results = [
        bench_size(int(n), args.runs, args.events, args.idle, args.python) for n in args.sizes.split(",")
    ]
    json.dump({"mesh": results}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
