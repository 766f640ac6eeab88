"""`bmx7-wg-lab measure`: a fixed set of scenarios on a fresh lab, one JSON result and one SVG.

Scenarios, in this order, all timed from the lab's own clocks:
- converge: from the start of `up` until every node has every other node as a WireGuard
  peer and reaches it over fd77; beside it bmx7's floor, the moment the last announcement
  file (rcvdSms) was written on the last node;
- rekey: the node farthest from n1 gets a new key (its service restarts with it);
- revoke: every node revokes its trust in that node, then trusts it again;
- death: that node dies (SIGKILL to all of its processes) and stays dead.

bmx7-wg's own share of each change is exact, not sampled: bmx7 writes each announcement
file (its mtime says when) and the service logs each peer it adds or removes with a
timestamp (BMX7_WG_LOG_TIME=1); the share is the difference, per node and peer.
Reachability and the curves of the picture are sampled (every SAMPLE_S seconds).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bmx7_wg_lab import netns, observe, svg
from bmx7_wg_lab.errors import NotConverged
from bmx7_wg_lab.lab import ANNOUNCE, Lab
from bmx7_wg_lab.topology import Topology, diameter

FORMAT = "bmx7-wg-lab-measure/1"
SAMPLE_S = 0.25
DEATH_TIMEOUT = 240.0  # bmx7 keeps a silent node ~68 s, bmx7-wg then holds its peer for its grace (30 s)
LOG_LINE = re.compile(r"^(\d+\.\d+) bmx7-wg: \S+: (add|remove) peer ([A-Za-z0-9+/]{43}=)")
READY_LINE = re.compile(r"^(\d+\.\d+) bmx7-wg: bmx7-wg started: ")


@dataclass(frozen=True)
class PeerEvent:
    time: float
    node: int  # the node whose service logged it
    verb: str  # "add" | "remove"
    key: str  # the peer's public key


def read_peer_events(lab: Lab) -> list[PeerEvent]:
    """Peers added and removed, from the services' logs; a service's first "started" line is a
    PeerEvent with verb "ready" (its key empty): announcements it met before then are start-up."""
    events = []
    for n in lab.record.nodes:
        try:
            text = (lab.record.node_dir(n) / "bmx7-wg.log").read_text(errors="replace")
        except OSError:
            continue
        ready = False
        for line in text.splitlines():
            m = LOG_LINE.match(line)
            if m:
                events.append(PeerEvent(float(m.group(1)), n, m.group(2), m.group(3)))
            elif not ready and (r := READY_LINE.match(line)):
                ready = True
                events.append(PeerEvent(float(r.group(1)), n, "ready", ""))
    return events


def percentiles(values: Iterable[float]) -> dict[str, float | int | None]:
    data = sorted(values)
    if not data:
        return {"n": 0, "p50": None, "p99": None, "max": None}

    def pick(q: float) -> float:
        # nearest rank: the value below which q of the samples lie
        return data[min(len(data) - 1, max(0, int(q * len(data) + 0.999999) - 1))]

    return {
        "n": len(data),
        "p50": round(pick(0.5), 4),
        "p99": round(pick(0.99), 4),
        "max": round(data[-1], 4),
    }


@dataclass
class Observations:
    """What the sampler saw, in wall-clock seconds (time.time())."""

    first_held: dict[tuple[int, int], float] = field(default_factory=dict)  # (at, of) -> file mtime
    timeline: list[tuple[float, int, int, int, int]] = field(
        default_factory=list
    )  # t, held, peers, reached, pairs
    events: list[tuple[float, str]] = field(default_factory=list)


class Sampler:
    def __init__(self, lab: Lab, obs: Observations) -> None:
        self.lab = lab
        self.obs = obs
        self.prober = observe.Prober(lab)
        self.reached: set[tuple[int, int]] = set()
        self.not_before: dict[tuple[int, int], float] = {}  # an announcement counts if written after this
        self.last_probe = 0.0

    def close(self) -> None:
        self.prober.close()

    def sample(self, members: Sequence[int], trusted: Callable[[int, int], bool]) -> tuple[bool, bool, bool]:
        """One round; whether every pair of members is held, peered, reached (for the pairs that trust)."""
        views = observe.read_all(self.lab)
        owners = observe.key_owners(self.lab)
        now = time.time()
        pairs = [(a, b) for a in members for b in members if a != b and trusted(a, b)]
        held = peered = 0
        peer_ok: set[tuple[int, int]] = set()
        for a, b in pairs:
            v = views[a]
            written = v.held_mtime.get(b, now)
            if b in v.held and written >= self.not_before.get((a, b), 0.0):
                held += 1
                self.obs.first_held.setdefault((a, b), written)
            if v.device is not None and any(owners.get(k) == b for k in v.device.peers):
                peered += 1
                peer_ok.add((a, b))
        both = [
            (a, b) for a, b in pairs if (a, b) in peer_ok and (b, a) in peer_ok and (a, b) not in self.reached
        ]
        if both and now - self.last_probe > 1.0:
            self.last_probe = now
            for pair, ok in self.prober.probe(both, timeout=0.5).items():
                if ok:
                    self.reached.add(pair)
        reached = sum(1 for p in pairs if p in self.reached)
        self.obs.timeline.append((round(now, 3), held, peered, reached, len(pairs)))
        return held == len(pairs), peered == len(pairs), reached == len(pairs)

    def forget(self, nodes: Iterable[int], *, new_announcement_after: float | None = None) -> None:
        """Pairs with these nodes must be reached again (a new key, a restored trust); with
        `new_announcement_after`, only an announcement file written after that time counts as held."""
        gone = set(nodes)
        self.reached = {p for p in self.reached if not gone & set(p)}
        if new_announcement_after is not None:
            for pair in list(self.obs.first_held):
                if pair[1] in gone:  # what the others hold of these nodes; these nodes' own view stays
                    del self.obs.first_held[pair]
                    self.not_before[pair] = new_announcement_after


def _wait(
    sampler: Sampler, members: Sequence[int], trusted: Callable[[int, int], bool], timeout: float, what: str
) -> float:
    deadline = time.monotonic() + timeout
    while True:
        held, peered, reached = sampler.sample(members, trusted)
        if held and peered and reached:
            return time.time()
        if time.monotonic() > deadline:
            raise NotConverged(f"{what}: not done after {timeout:.0f} s (lab left for inspection is removed)")
        time.sleep(SAMPLE_S)


def farthest(topo_nodes: Sequence[int], links: Sequence[tuple[int, int]], start: int = 1) -> int:
    adjacent: dict[int, set[int]] = {n: set() for n in topo_nodes}
    for a, b in links:
        adjacent[a].add(b)
        adjacent[b].add(a)
    depth = {start: 0}
    todo = [start]
    for n in todo:
        for m in sorted(adjacent[n]):
            if m not in depth:
                depth[m] = depth[n] + 1
                todo.append(m)
    return max(sorted(depth), key=lambda n: depth[n])


def _resources(lab: Lab) -> dict[str, dict[str, float]]:
    """Resident memory and CPU time per node of bmx7, bmx7-wg and wireguard-go (every process
    of each node's namespace)."""
    tick = os.sysconf("SC_CLK_TCK")
    per_role: dict[str, list[tuple[float, float]]] = {}
    for n in lab.record.nodes:
        for pid in netns.pids(lab.record.namespaces[n]):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                status = Path(f"/proc/{pid}/status").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
            cpu = (int(stat[11]) + int(stat[12])) / tick
            exe = os.path.basename(cmdline[0].decode(errors="replace"))
            role = "bmx7-wg" if b"bmx7_wg" in cmdline else "wireguard-go" if "wireguard-go" in exe else exe
            per_role.setdefault(role, []).append((rss / 1024, cpu))
    out = {}
    for role, values in sorted(per_role.items()):
        out[role] = {
            "processes": len(values),
            "rss_mib_mean": round(statistics.fmean(v[0] for v in values), 1),
            "rss_mib_max": round(max(v[0] for v in values), 1),
            "cpu_s_mean": round(statistics.fmean(v[1] for v in values), 2),
            "cpu_s_max": round(max(v[1] for v in values), 2),
        }
    return out


def _share(
    events: Sequence[PeerEvent],
    first_held: Mapping[tuple[int, int], float],
    key_of: Mapping[int, str],
    since: float,
    pairs: Iterable[tuple[int, int]],
) -> tuple[list[float], list[float]]:
    """Per pair (at, of): the time the service at `at` added `of`'s key after `since`, and that minus
    the time bmx7 wrote `of`'s announcement at `at`. Returns (add times, shares in ms). An
    announcement written before the service at `at` was ready (its first reconcile done) counts
    in the add times but not in the shares: that wait is the service's start, not its reaction."""
    first_add: dict[tuple[int, str], float] = {}
    ready: dict[int, float] = {}
    for e in events:
        if e.verb == "add" and e.time >= since:
            first_add.setdefault((e.node, e.key), e.time)
        elif e.verb == "ready":
            ready.setdefault(e.node, e.time)
    adds, shares = [], []
    for at, of in pairs:
        t = first_add.get((at, key_of.get(of, "")))
        if t is None:
            continue
        adds.append(t)
        held = first_held.get((at, of))
        if held is not None and held >= ready.get(at, 0.0):
            shares.append((t - held) * 1000)
    return adds, shares


def run(lab: Lab, *, timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    r = lab.record
    t0 = r.created
    load_start = os.getloadavg()
    obs = Observations()
    sampler = Sampler(lab, obs)
    k = farthest(r.nodes, r.links)
    scenarios: dict[str, Any] = {}
    try:
        members = list(r.nodes)
        everyone = lab.trusts

        # converge
        log(f"converge: {len(members)} nodes, waiting for the full WireGuard mesh")
        t_full = _wait(sampler, members, everyone, timeout, "converge")
        time.sleep(2.0)  # the last log lines are written by now
        keys = {n: lab.public_key(n) or "" for n in members}
        events = read_peer_events(lab)
        pairs = [(a, b) for a in members for b in members if a != b]
        adds, shares = _share(events, obs.first_held, keys, t0, pairs)
        node_done = {
            n: max([t for (a, _), t in obs.first_held.items() if a == n], default=t0) - t0 for n in members
        }
        scenarios["converge"] = {
            "floor_s": round(max(obs.first_held.values()) - t0, 3),
            "peers_s": round(max(adds) - t0, 3) if adds else None,
            "full_s": round(t_full - t0, 3),
            "share_ms": percentiles(shares),
            "pairs_met_at_start": len(adds) - len(shares),  # announcement there before the service was ready
            "per_node_held_s": {str(n): round(v, 3) for n, v in node_done.items()},
        }
        obs.events.append((t_full, "mesh complete"))
        log(f"converge: floor {scenarios['converge']['floor_s']} s, full {scenarios['converge']['full_s']} s")
        resources_converged = _resources(lab)

        # rekey
        old_key = keys[k]
        t_f = time.time()
        obs.events.append((t_f, f"n{k}: new key"))
        sampler.forget([k], new_announcement_after=t_f)
        lab.new_key(k)
        keys[k] = lab.public_key(k) or ""
        t_done = _wait(sampler, members, everyone, timeout, "rekey")
        time.sleep(1.0)
        events = read_peer_events(lab)
        published = _mtime(r.node_dir(k) / "run" / "sms" / "sendSms" / ANNOUNCE)
        others = [a for a in members if a != k]
        adds, shares = _share(events, obs.first_held, keys, t_f, [(a, k) for a in others])
        removed_old = [e.time for e in events if e.verb == "remove" and e.key == old_key and e.time >= t_f]
        scenarios["rekey"] = {
            "node": k,
            "published_s": round(published - t_f, 3) if published else None,
            "floor_s": round(max(obs.first_held[(a, k)] for a in others) - t_f, 3),
            "peers_s": round(max(adds) - t_f, 3) if adds else None,
            "old_key_removed_s": round(max(removed_old) - t_f, 3) if removed_old else None,
            "full_s": round(t_done - t_f, 3),
            "share_ms": percentiles(shares),
        }
        log(f"rekey n{k}: every node has its new key after {scenarios['rekey']['peers_s']} s")

        # revoke, then trust again
        t_f = time.time()
        obs.events.append((t_f, f"trust in n{k} revoked"))
        for a in others:
            r.distrust += [(a, k), (k, a)]
        r.save()
        for n in members:
            lab.write_trust(n)
        deadline = time.monotonic() + timeout
        while True:
            sampler.sample(members, everyone)
            views = observe.read_all(lab)
            if not any(v.device and keys[k] in v.device.peers for n, v in views.items() if n != k):
                break
            if time.monotonic() > deadline:
                raise NotConverged("revoke: peers not removed in time")
            time.sleep(SAMPLE_S)
        time.sleep(1.0)
        events = read_peer_events(lab)
        removed = [e.time - t_f for e in events if e.verb == "remove" and e.key == keys[k] and e.time >= t_f]
        t_r = time.time()
        obs.events.append((t_r, f"trust in n{k} restored"))
        r.distrust = [p for p in r.distrust if k not in p]
        r.save()
        sampler.forget([k])
        for n in members:
            lab.write_trust(n)
        t_done = _wait(sampler, members, everyone, timeout, "trust restored")
        time.sleep(1.0)
        events = read_peer_events(lab)
        readded = [e.time - t_r for e in events if e.verb == "add" and e.key == keys[k] and e.time >= t_r]
        scenarios["revoke"] = {
            "node": k,
            "removed_s": percentiles(removed),
            "restored_s": percentiles(readded),
            "restored_full_s": round(t_done - t_r, 3),
        }
        log(f"revoke n{k}: removed everywhere after {scenarios['revoke']['removed_s']['max']} s")

        # death
        t_f = time.time()
        obs.events.append((t_f, f"n{k} dies"))
        lab.power_off(k)
        alive = [a for a in members if a != k]
        gone_files: dict[int, float] = {}
        deadline = time.monotonic() + DEATH_TIMEOUT
        while True:
            sampler.sample(alive, everyone)
            views = observe.read_all(lab)
            now = time.time()
            for a in alive:
                if k not in views[a].held:
                    gone_files.setdefault(a, now)
            if not any(v.device and keys[k] in v.device.peers for n, v in views.items() if n != k):
                break
            if time.monotonic() > deadline:
                raise NotConverged(f"death: n{k} still a peer after {DEATH_TIMEOUT:.0f} s")
            time.sleep(SAMPLE_S)
        time.sleep(1.0)
        events = read_peer_events(lab)
        removes = {
            e.node: e.time for e in events if e.verb == "remove" and e.key == keys[k] and e.time >= t_f
        }
        scenarios["death"] = {
            "node": k,
            "floor_s": round(max(gone_files.values()) - t_f, 3) if len(gone_files) == len(alive) else None,
            "removed_s": percentiles(t - t_f for t in removes.values()),
            "after_bmx7_s": percentiles(removes[a] - gone_files[a] for a in removes if a in gone_files),
        }
        obs.events.append((time.time(), f"n{k} gone from every node"))
        log(f"death n{k}: gone from every node after {scenarios['death']['removed_s']['max']} s")
    finally:
        sampler.close()
    topo = Topology(r.topology.split(":")[0], tuple(r.nodes), tuple(r.links))
    return build_result(
        lab_info={
            "name": r.name,
            "nodes": len(r.nodes),
            "topology": r.topology,
            "links": [list(x) for x in r.links],
            "diameter": diameter(topo.nodes, topo.links),
            "netem": r.netem,
            "backend": r.backend,
        },
        started=t0,
        scenarios=scenarios,
        resources={"converged": resources_converged},
        timeline=obs.timeline,
        events=obs.events,
        machine={
            "cpus": os.cpu_count() or 0,
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "kernel": os.uname().release,
        },
    )


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def build_result(
    *,
    lab_info: Mapping[str, Any],
    started: float,
    scenarios: Mapping[str, Any],
    resources: Mapping[str, Any],
    timeline: Sequence[tuple[float, int, int, int, int]],
    events: Sequence[tuple[float, str]],
    machine: Mapping[str, Any],
) -> dict[str, Any]:
    """The result file's content: times relative to `started` (the start of `up`)."""
    result = {
        "format": FORMAT,
        "lab": dict(lab_info),
        "started": round(started, 3),
        "machine": dict(machine),
        "scenarios": dict(scenarios),
        "resources": dict(resources),
        "timeline": [[round(t - started, 3), h, p, r, n] for t, h, p, r, n in timeline],
        "events": [[round(t - started, 3), text] for t, text in events],
    }
    validate(result)
    return result


REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str, "lab": dict, "started": (int, float), "machine": dict, "scenarios": dict,
    "resources": dict, "timeline": list, "events": list,
}  # fmt: skip
SCENARIO_KEYS = {
    "converge": ("floor_s", "peers_s", "full_s", "share_ms"),
    "rekey": ("node", "floor_s", "peers_s", "full_s", "share_ms"),
    "revoke": ("node", "removed_s", "restored_s"),
    "death": ("node", "floor_s", "removed_s"),
}


def validate(result: Mapping[str, Any]) -> None:
    """Raise ValueError unless `result` has the documented shape (bmx7-wg-lab(1), RESULT FILE)."""
    for key, kind in REQUIRED.items():
        if not isinstance(result.get(key), kind):
            raise ValueError(f"result: {key!r} missing or not {kind}")
    if result["format"] != FORMAT:
        raise ValueError(f"result: format {result['format']!r}, expected {FORMAT!r}")
    for key in ("name", "nodes", "topology", "links", "diameter"):
        if key not in result["lab"]:
            raise ValueError(f"result: lab.{key} missing")
    for name, keys in SCENARIO_KEYS.items():
        if name not in result["scenarios"]:
            continue  # a scenario that could not run is left out, and the run failed
        for key in keys:
            if key not in result["scenarios"][name]:
                raise ValueError(f"result: scenarios.{name}.{key} missing")
    for row in result["timeline"]:
        if not (isinstance(row, list) and len(row) == 5 and all(isinstance(x, int | float) for x in row)):
            raise ValueError(f"result: timeline row {row!r} is not [t, held, peers, reached, pairs]")
    for row in result["events"]:
        if not (isinstance(row, list) and len(row) == 2 and isinstance(row[1], str)):
            raise ValueError(f"result: event {row!r} is not [t, text]")


def write(result: Mapping[str, Any], out: str) -> list[str]:
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    lab = result["lab"]
    stem = f"lab-{lab['nodes']}-{str(lab['topology']).replace(':', '-')}"
    json_path = directory / f"{stem}.json"
    svg_path = directory / f"{stem}.svg"
    json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    svg_path.write_text(svg.render(result), encoding="utf-8")
    return [str(json_path), str(svg_path)]
