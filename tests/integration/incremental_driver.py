"""Drive random announcement changes through the service's step and compare each result
with a full reconcile (run inside a network namespace by test_incremental.py).

One `Service` (bmx7_wg/service/loop.py) in this process, a wireguard-go device, the bmx7
stand-in. Each round changes a few `rcvdSms/` files at random (joins, departures, new
keys, a key another node claims, this node's own key, garbage, networks, a denied node,
a file name in lower case, a second file for a node, a rewrite with the same bytes),
tells the service which files changed, as inotify does, and lets it act. With
`--held-mix`, the grace periods run on the driver's clock, which jumps ahead at random
(holds start, end, and end while their node's claims still refuse others), and nodes
announce overlapping networks inside accept_networks. Then a full
reconcile in check mode, with a copy of the service's grace periods, must plan no peer
change, and must refuse what the service has logged as refused. Prints a JSON summary;
exits 1 at the first difference, describing it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from bmx7_wg.config import reader
from bmx7_wg.engine import reconcile
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.announce import format_announcement
from bmx7_wg.service.loop import Service
from tests.bmx7sim.sim import SimNode, make_node_id

SMS = "wg-bmx7"
PEER_ACTIONS = ("add_peer", "update_peer", "remove_peer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--grace", type=float, default=0)
    parser.add_argument("--ifname", required=True)
    parser.add_argument("--held-mix", action="store_true")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    logging.disable(logging.WARNING)  # the refusals the service logs are compared, not shown
    with tempfile.TemporaryDirectory(prefix="bmx7-wg-incremental.") as tmp:
        work = Path(tmp)
        os.environ["BMX7_WG_RUN_DIR"] = str(work / "state")
        runtime = work / "run"
        node = SimNode(str(runtime), "driver", sync_sms=(SMS,))
        node.start()
        service = None
        try:
            rcvd = runtime / "sms" / "rcvdSms"
            rcvd.mkdir(parents=True, exist_ok=True)
            files: dict[str, bytes] = {}  # file name -> bytes, as now in rcvdSms/
            gone: dict[str, bytes] = {}  # removed files, to bring back
            keys = [PrivateKey(rng.randbytes(32)).public_key() for _ in range(args.nodes * 3)]
            denied = node_id(rng)

            def write(name: str, data: bytes | None) -> None:
                path = rcvd / name
                if data is None:
                    path.unlink(missing_ok=True)
                    if name in files:
                        gone[name] = files.pop(name)
                    return
                tmp_path = rcvd / ".incoming"
                tmp_path.write_bytes(data)
                # A complete file, written a while ago: renamed into place, as bmx7 does.
                past = time.time() - 10
                os.utime(tmp_path, (past, past))
                os.rename(tmp_path, path)
                files[name] = data

            for _ in range(args.nodes):
                write(f"{node_id(rng)}:{SMS}", format_announcement(rng.choice(keys), 40456))
            own_key_file = work / "own.key"
            config_path = work / "mesh.toml"
            config_path.write_text(
                f'[bmx7]\nruntime_dir = "{runtime}"\nannounce = "{SMS}"\ntrust = "all"\n'
                f'grace = {args.grace:g}\ndenied = ["{denied}"]\n\n'
                f'[interface.{args.ifname}]\nmesh = true\nbackend = "userspace"\n'
                f'private_key_file = "{own_key_file}"\n'
                + ('accept_networks = ["10.0.0.0/8"]\n' if args.held_mix else "")
            )
            service = Service(str(config_path), reader.load(str(config_path)))
            clock = [time.monotonic()]
            if args.held_mix:
                service.grace.clock = lambda: clock[0]
            service.reconcile(["start"])
            own_key = Path(own_key_file).read_text().strip()
            own_public = PrivateKey.from_base64(own_key).public_key()
            counts = {"steps": 0, "full": 0, "changes": 0}
            for round_no in range(args.rounds):
                changed: list[str] = []
                reasons = [f"round {round_no}"]
                if args.held_mix:
                    clock[0] += rng.choice((0.0, 0.0, 1.0, 5.0, 12.0, args.grace))
                    deadline = service.grace.next_deadline()
                    if deadline is not None and deadline <= clock[0]:
                        reasons.append("mesh grace period ended")
                for _ in range(rng.randint(0 if len(reasons) > 1 else 1, 3)):
                    name, data = _random_change(rng, files, gone, keys, own_public, denied, args.held_mix)
                    write(name, data)
                    changed.append(name)
                counts["changes"] += len(changed)
                service.changed_files.update(changed)
                if service.mesh_step(reasons):
                    counts["steps"] += 1
                else:
                    service.reconcile([f"round {round_no}"])
                    counts["full"] += 1
                reference = reconcile(
                    service.engine,
                    service.config,
                    check=True,
                    verb="check",
                    resolve=service.resolver,
                    grace=copy.deepcopy(service.grace),
                )
                differences = [a.describe() for a in reference.actions if a.kind in PEER_ACTIONS]
                refused, logged = set(reference.mesh.refusals), service.report.refusals_logged
                if differences or refused != logged:
                    print(json.dumps({
                        "round": round_no,
                        "changed": changed,
                        "full reconcile would": differences,
                        "refused by the full reconcile only": sorted(map(list, refused - logged)),
                        "refused by the service only": sorted(map(list, logged - refused)),
                        **counts,
                    }, indent=1))
                    return 1
            print(json.dumps(counts))
            return 0
        finally:
            if service is not None:
                service.system.netlink.delete(args.ifname)
                service.close()
            node.stop()


def node_id(rng: random.Random) -> str:
    """A node id as bmx7 makes one, from the seed: a run is the same run every time."""
    return make_node_id(rng.randbytes(256))


def _random_change(
    rng: random.Random,
    files: dict[str, bytes],
    gone: dict[str, bytes],
    keys: list[str],
    own_public: str,
    denied: str,
    held_mix: bool = False,
) -> tuple[str, bytes | None]:
    """One file name in rcvdSms/ and its new bytes (None: removed)."""
    existing = sorted(files)
    # Weighted: the rare kinds send the service to a full reconcile for a while.
    kinds = ["join", "leave", "rekey", "same key as another", "same bytes", "own key", "garbage",
             "denied", "lower case", "back", "networks", "second file"]
    weights = [8, 6, 8, 3, 1, 1, 1, 1, 1, 3, 0.5, 0.5]
    if held_mix:
        kinds.append("overlapping networks")
        weights.append(4)
    kind = rng.choices(kinds, weights=weights)[0]
    if not existing and kind not in ("join", "denied", "lower case"):
        kind = "join"
    if kind == "join":
        return f"{node_id(rng)}:{SMS}", format_announcement(rng.choice(keys), 40456)
    if kind == "leave":
        return rng.choice(existing), None
    if kind == "rekey":
        return rng.choice(existing), format_announcement(rng.choice(keys), rng.choice((40456, 40457)))
    if kind == "same key as another":
        other = files[rng.choice(existing)]
        return rng.choice(existing), other
    if kind == "same bytes":
        name = rng.choice(existing)
        return name, files[name]
    if kind == "own key":
        return rng.choice(existing), format_announcement(own_public, 40456)
    if kind == "garbage":
        return rng.choice(existing), b"not an announcement\n"
    if kind == "overlapping networks":
        net = rng.choice(("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16", "10.1.0.0/16"))
        return rng.choice(existing), format_announcement(rng.choice(keys), 40456, [net])
    if kind == "networks":
        net = f"10.{rng.randint(0, 3)}.{rng.randint(0, 3)}.0/24"
        return rng.choice(existing), format_announcement(rng.choice(keys), 40456, [net])
    if kind == "denied":
        return f"{denied}:{SMS}", format_announcement(rng.choice(keys), 40456)
    if kind == "lower case":
        return f"{node_id(rng).lower()}:{SMS}", format_announcement(rng.choice(keys), 40456)
    if kind == "second file":
        name = rng.choice(existing)
        prefix = name[: -len(SMS) - 1]
        twin = prefix.lower() if prefix != prefix.lower() else prefix.upper()
        return f"{twin}:{SMS}", format_announcement(rng.choice(keys), 40456)
    # "back": a node that left comes back as it was (a new node if none has left)
    if gone:
        name = rng.choice(sorted(gone))
        return name, gone.pop(name)
    return f"{node_id(rng)}:{SMS}", format_announcement(rng.choice(keys), 40456)


if __name__ == "__main__":
    sys.exit(main())
