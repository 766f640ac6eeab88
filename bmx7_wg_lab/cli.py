"""bmx7-wg-lab's command line; the only place errors become messages and exit codes."""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from collections.abc import Sequence

from bmx7_wg_lab import observe, topology
from bmx7_wg_lab.errors import LabError, NotConverged, UsageError
from bmx7_wg_lab.lab import Bmx7, Lab, check_inotify, check_memory, check_name, check_tools
from bmx7_wg_lab.status import status_data, status_text

DEFAULT_NAME = "lab"

EPILOG = """\
exit codes:
  0  done
  1  the lab could not be changed (the message says why)
  2  usage: a wrong option or value
  3  a tool is missing (bmx7, wireguard-go, ip, tc)
  4  the name clashes with an existing lab or network namespace
  5  not enough memory, or inotify instances, for that many nodes
  6  no lab of that name
  7  a node's daemon did not start (the message names its log)
  8  up --wait or measure: the mesh did not converge in time
"""


def _node(text: str) -> int:
    digits = text[1:] if text.startswith("n") else text
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a node (n1, n2, ... or 1, 2, ...)")
    return int(digits)


def _nodes(text: str) -> list[int]:
    return [_node(t) for t in text.split(",") if t]


def _nonneg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _lab_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--name", default=DEFAULT_NAME, help="the lab's name (default %(default)s); namespaces are NAME-nI"
    )


def _build_options(p: argparse.ArgumentParser, nodes: int | None, kind: str | None) -> None:
    p.add_argument("--nodes", type=int, default=nodes, required=nodes is None, help="how many nodes")
    p.add_argument(
        "--topology", default=kind, required=kind is None,
        help="line, ring, grid or random[:SEED] (random without a seed picks one and prints it)",
    )  # fmt: skip
    p.add_argument(
        "--delay", type=_nonneg, default=0.0, metavar="MS", help="netem delay on every link, each way"
    )
    p.add_argument("--jitter", type=_nonneg, default=0.0, metavar="MS", help="netem jitter on every link")
    p.add_argument(
        "--loss", type=_nonneg, default=0.0, metavar="PCT", help="netem loss on every link, each way"
    )
    p.add_argument(
        "--backend", choices=("auto", "userspace", "kernel"), default="auto",
        help="WireGuard of the nodes' bmx7-wg (auto: the kernel's if it has one, else wireguard-go)",
    )  # fmt: skip
    p.add_argument("--bmx7", metavar="PATH", help="the bmx7 daemon (default: $BMX7, else bmx7 on PATH)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="bmx7-wg-lab",
        description="A lab of real bmx7 nodes running bmx7-wg, in network namespaces: rehearse a mesh, "
        "break it, measure it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    up = verbs.add_parser("up", help="start a lab")
    _lab_options(up)
    _build_options(up, None, None)
    up.add_argument(
        "--wait", type=_nonneg, default=0.0, metavar="SECONDS",
        help="then wait until the WireGuard mesh is complete (exit 8 if not in time)",
    )  # fmt: skip

    st = verbs.add_parser("status", help="what every node sees, and who reaches whom over fd77")
    _lab_options(st)
    st.add_argument("--json", action="store_true", help="as JSON")

    fault = verbs.add_parser("fault", help="break or mend a node, a link, trust or a key")
    _lab_options(fault)
    kinds = fault.add_subparsers(dest="fault", required=True, metavar="FAULT")
    for word, text in (
        ("kill", "SIGKILL a node's daemon"),
        ("restart", "stop (if running) and start it again"),
    ):
        p = kinds.add_parser(word, help=text)
        p.add_argument("node", type=_node)
        p.add_argument("daemon", choices=("bmx7", "bmx7-wg"))
    for word, text in (
        ("cut", "set a link down (both ends)"),
        ("restore", "set a cut link up again"),
        ("revoke", "two nodes stop trusting each other"),
        ("trust", "they trust each other again"),
    ):
        p = kinds.add_parser(word, help=text)
        p.add_argument("a", type=_node)
        p.add_argument("b", type=_node)
    p = kinds.add_parser("rekey", help="give a node a new WireGuard key")
    p.add_argument("node", type=_node)
    p = kinds.add_parser("add", help="add a node, linked to the nodes given")
    p.add_argument("--to", type=_nodes, required=True, metavar="N[,M...]", help="the nodes it is linked to")
    p = kinds.add_parser("remove", help="remove a node (its namespace, links and daemons)")
    p.add_argument("node", type=_node)

    me = verbs.add_parser("measure", help="run the fixed scenarios on a new lab; write JSON and SVG")
    _lab_options(me)
    _build_options(me, 10, "grid")
    me.add_argument("--out", default=".", metavar="DIR", help="where the result files go (default: here)")
    me.add_argument(
        "--timeout", type=_nonneg, default=0.0, metavar="SECONDS",
        help="per scenario (default: 120 s, plus 2 s per node and 8 s per hop across the mesh)",
    )  # fmt: skip

    dn = verbs.add_parser("down", help="remove the lab: its processes, namespaces and files")
    _lab_options(dn)
    return top


def _topology(args: argparse.Namespace) -> topology.Topology:
    kind, seed = topology.parse_spec(args.topology)
    if kind == "random" and seed is None:
        seed = random.randrange(1_000_000)
    return topology.build(args.nodes, kind, seed)


def _netem(args: argparse.Namespace) -> dict[str, float]:
    if args.loss > 100:
        raise UsageError(f"--loss {args.loss}: at most 100 (percent)")
    return {"delay_ms": args.delay, "jitter_ms": args.jitter, "loss_pct": args.loss}


def _start(args: argparse.Namespace) -> Lab:
    topo = _topology(args)
    netem = _netem(args)
    bmx7 = Bmx7.find(args.bmx7)
    check_tools(args.backend)
    check_memory(args.nodes)
    check_inotify(args.nodes)
    print(
        f"lab {args.name}: {len(topo.nodes)} nodes, {len(topo.links)} links, topology {topo.spec}", flush=True
    )
    try:
        return Lab.create(args.name, topo, bmx7=bmx7, backend=args.backend, netem=netem)
    except BaseException:
        # Whatever was made so far is in the record; a failed start leaves nothing behind.
        try:
            Lab.open(args.name).down()
        except LabError:
            pass
        raise


def _status(lab: Lab) -> dict[str, object]:
    views = observe.read_all(lab)
    pairs, sampled = observe.probe_pairs(lab)
    prober = observe.Prober(lab)
    try:
        reach = prober.probe(pairs)
    finally:
        prober.close()
    return status_data(lab, views, observe.key_owners(lab), reach, sampled)


def cmd_up(args: argparse.Namespace) -> int:
    with Lab.locked(args.name):
        lab = _start(args)
        print(f"bmx7 answers on every node; bmx7-wg runs on every node (files: {lab.record.directory})")
        if args.wait:
            deadline = time.monotonic() + args.wait
            start = time.monotonic()
            while True:
                data = _status(lab)
                if data["complete"]:
                    print(f"the WireGuard mesh is complete after {time.monotonic() - start:.1f} s")
                    break
                if time.monotonic() > deadline:
                    print(status_text(data))
                    raise NotConverged(f"the mesh is not complete after {args.wait:g} s (bmx7-wg-lab status)")
                time.sleep(1.0)
        print(f"watch it: bmx7-wg-lab status --name {args.name}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    data = _status(Lab.open(args.name))
    print(json.dumps(data, indent=1) if args.json else status_text(data))
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    with Lab.locked(args.name):
        lab = Lab.open(args.name)
        f = args.fault
        if f in ("kill", "restart"):
            lab.node(args.node)
            if f == "kill":
                lab.stop(args.node, args.daemon, sig=signal.SIGKILL)
            else:
                lab.stop(args.node, args.daemon)
                if args.daemon == "bmx7":
                    lab.start_bmx7(args.node)
                    lab.wait_for_bmx7([args.node])
                else:
                    lab.start_service(args.node)
            print(f"n{args.node}: {args.daemon} {'killed' if f == 'kill' else 'restarted'}")
        elif f in ("cut", "restore"):
            lab.set_link(args.a, args.b, up=f == "restore")
            print(f"link n{args.a}-n{args.b} {'cut' if f == 'cut' else 'restored'}")
        elif f in ("revoke", "trust"):
            lab.set_trust(args.a, args.b, trusted=f == "trust")
            print(f"n{args.a} and n{args.b} {'no longer trust' if f == 'revoke' else 'trust'} each other")
        elif f == "rekey":
            lab.node(args.node)
            lab.new_key(args.node)
            print(f"n{args.node}: a new WireGuard key, public {lab.public_key(args.node)}")
        elif f == "add":
            n = lab.add_node(args.to)
            print(f"n{n} added, linked to {', '.join(f'n{m}' for m in args.to)}")
        elif f == "remove":
            lab.remove_node(args.node)
            print(f"n{args.node} removed")
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from bmx7_wg_lab import measure

    with Lab.locked(args.name):
        lab = _start(args)
        try:
            # bmx7 carries an announcement about 5 s per hop on a loaded machine (bench/RESULTS.md)
            hops = topology.diameter(lab.record.nodes, lab.record.links)
            timeout = args.timeout or 120.0 + 2.0 * args.nodes + 8.0 * hops
            result = measure.run(lab, timeout=timeout, log=lambda text: print(text, flush=True))
            paths = measure.write(result, args.out)
        finally:
            lab.down()
    for path in paths:
        print(f"wrote {path}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    check_name(args.name)
    with Lab.locked(args.name):
        Lab.open(args.name).down()
    print(f"lab {args.name} removed")
    return 0


def _terminated(signum: int, frame: object) -> None:
    # SIGTERM (kill, a CI job's timeout) unwinds like an error, so `measure` removes its lab
    # and `up` what it made so far.
    raise LabError(f"stopped by signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminated)
    args = parser().parse_args(argv)
    handlers = {
        "up": cmd_up,
        "status": cmd_status,
        "fault": cmd_fault,
        "measure": cmd_measure,
        "down": cmd_down,
    }
    try:
        if args.verb != "down":
            check_name(args.name)
        return handlers[args.verb](args)
    except LabError as exc:
        print(f"bmx7-wg-lab: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bmx7-wg-lab: interrupted (bmx7-wg-lab down removes what was made)", file=sys.stderr)
        return 130
