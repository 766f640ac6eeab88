"""What each hand-written speed path saves, as a share of the whole command's time.

For each size N (bench/static.py's workload: N static peers on wireguard-go, in a network
namespace) and each variant of bench/variants.py ("fast": the code as it is; the others:
one speed path replaced by its library), four commands are timed as a user runs them, a
new process each: `apply --json` from no interface, a no-op `apply --json`, `check` and
`show`. The variants take turns within each round, in a new order every round, so that a
busy moment of a shared machine falls on all of them alike; medians are reported.

    python bench/paths.py --sizes 100,1000 --runs 9 > paths.json
    python bench/paths.py --report paths.json

The second form prints the table HACKING.md quotes (median milliseconds, and what the
path saves: the variant's median minus fast's, over fast's).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.static import Namespace, Workload, _env
from bench.variants import WITHOUT

COMMANDS = ("apply_empty", "apply_noop", "check", "show")
VARIANTS = ("fast", *WITHOUT)


def run(cmd: list[str]) -> tuple[tuple[float, float], str]:
    """Wall time and CPU time (user + system, its waited-for children included) of one
    command, which must succeed, and its output. On a shared machine the CPU time is the
    steadier measure: a busy neighbour stretches the wall time, not the work done."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.read()[:500]!r}")
        return (elapsed, usage.ru_utime + usage.ru_stime), out.read().decode()


def changed(output: str) -> bool:
    return bool(json.loads(output)["changed"])


Times = dict[str, dict[str, list[tuple[float, float]]]]  # variant -> command -> (wall, cpu) per run


def bench_size(n: int, runs: int, python: str, backend: str = "userspace") -> Times:
    ns = Namespace(backend)
    times: Times = {v: {c: [] for c in COMMANDS} for v in VARIANTS}
    try:
        with tempfile.TemporaryDirectory(prefix="bmx7-wg-paths.") as tmp:
            ifname = f"bp{ns.token}"
            work = Workload(Path(tmp), n, ifname, python, backend)
            conf = str(work.bmx7_conf(0))
            for _ in range(runs):
                order = list(VARIANTS)
                random.shuffle(order)
                for variant in order:
                    bmx7 = ns.cmd(python, "-m", "bench.variants", variant, "-c", conf)
                    ns.delete_link(ifname)
                    elapsed, out = run([*bmx7, "apply", "--json"])
                    assert changed(out), f"{variant}: apply from empty changed nothing"
                    times[variant]["apply_empty"].append(elapsed)
                    elapsed, out = run([*bmx7, "apply", "--json"])
                    # Every variant must leave the same device: a no-op after its own apply.
                    assert not changed(out), f"{variant}: the second apply was not a no-op"
                    times[variant]["apply_noop"].append(elapsed)
                    times[variant]["check"].append(run([*bmx7, "check"])[0])
                    elapsed, out = run([*bmx7, "show"])
                    assert out.count("  peer: ") == n, f"{variant}: show lists the wrong peers"
                    times[variant]["show"].append(elapsed)
    finally:
        ns.close()
    return times


def report(results: dict[str, Times]) -> str:
    lines = []
    for measure, which in (("wall", 0), ("CPU", 1)):
        for size, times in results.items():
            lines.append(f"{size} peers, {measure} time, median ms (the path's saving over fast's median):")
            lines.append(f"{'variant':<12}" + "".join(f"{c:>18}" for c in COMMANDS))
            fast = {c: statistics.median(t[which] for t in times["fast"][c]) for c in COMMANDS}
            for variant, by_command in times.items():
                cells = []
                for c in COMMANDS:
                    med = statistics.median(t[which] for t in by_command[c])
                    cell = f"{med * 1000:.0f}"
                    if variant != "fast":
                        cell += f" ({(med - fast[c]) / fast[c] * 100:+.0f}%)"
                    cells.append(f"{cell:>18}")
                lines.append(f"{variant:<12}" + "".join(cells))
            lines.append(f"({len(times['fast']['check'])} runs)")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--python", default=sys.executable, help="the python that runs bmx7-wg")
    parser.add_argument(
        "--backend",
        choices=("userspace", "kernel"),
        default="userspace",
        help="wireguard-go (the default) or the kernel's WireGuard (inside vm/run)",
    )
    parser.add_argument("--report", metavar="JSON", help="print the table of an earlier run")
    args = parser.parse_args(argv)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    results = {n: bench_size(int(n), args.runs, args.python, args.backend) for n in args.sizes.split(",")}
    json.dump(results, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
