"""Inside one process: what reading the TOML file and writing node addresses cost.

    python -m bench.inprocess --sizes 1000,10000 --runs 5

For each size N: `tomllib.loads` on a configuration of N static peers (bench/static.py's
shape: one /128 and an IPv4 endpoint each), and N node addresses written by `ipaddress`
(what base/nodeid.py writes per mesh node). Best of --runs, in milliseconds, printed as
one JSON object.

These figures say where a command's time goes, not whether a speed path would pay: that
verdict rests on bench/paths.py, which times whole commands as a user runs them
(HACKING.md, "Hand-written speed paths, measured").
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import time
import tomllib
from collections.abc import Callable
from typing import Any


def configuration(peers: int) -> str:
    """One interface with `peers` static peers, written as `bmx7-wg` users write them."""
    head = '[interface.wg0]\nprivate_key_file = "/var/lib/bmx7-wg/wg0.key"\nlisten_port = 51820\n'
    return head + "".join(
        f"\n[[interface.wg0.peer]]\n"
        f'public_key = "{base64.b64encode(i.to_bytes(32, "big")).decode()}"\n'
        f'endpoint = "10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:51820"\n'
        f'allowed_ips = ["fd00:b:{i >> 16:x}:{i & 0xFFFF:x}::1/128"]\n'
        for i in range(peers)
    )


def node_addresses(count: int) -> list[bytes]:
    """fd77::/16 addresses as base/nodeid.py builds them from node ids (14 bytes each)."""
    return [b"\xfd\x77" + i.to_bytes(14, "big") for i in range(1, count + 1)]


def best_ms(work: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return round(min(times) * 1000, 2)


def measure(size: int, runs: int) -> dict[str, float]:
    text = configuration(size)
    packed = node_addresses(size)
    return {
        "toml_bytes": len(text),
        "tomllib_loads_ms": best_ms(lambda: tomllib.loads(text), runs),
        "ipaddress_text_ms": best_ms(lambda: [str(ipaddress.IPv6Address(p)) for p in packed], runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(json.dumps({str(n): measure(n, args.runs) for n in sizes}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
