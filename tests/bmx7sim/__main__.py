"""Run the bmx7 stand-in for namespaces that exist already (what `make demo` does without bmx7).

    python3 -m tests.bmx7sim serve --dir DIR --ready FILE [--node-timeout S] NETNS...

The namespaces form a line in the order given, wired as netns.py describes (in the
namespace of node i, `bx<j>` is the veth to node j). Per node it plays bmx7: runtime
directory DIR/node<i>/run (control socket, json/, sms/), the fd70 primary address, rule
and table-70 routes, forwarding; SMS move with bmx7's measured delays. When every node
answers, FILE gets one JSON object per node (netns, name, node_id, primary_ip, runtime_dir).
Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from .netns import Mesh
from .sim import Timings


def serve(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    timings = Timings(node_timeout=args.node_timeout)
    with Mesh(names=args.netns, create=False, base_dir=args.dir, timings=timings) as mesh:
        nodes = [{"netns": n.netns, "name": n.name, "node_id": n.node_id,
                  "primary_ip": n.primary_ip, "runtime_dir": n.runtime_dir} for n in mesh.nodes]
        tmp = args.ready + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(nodes, fh, indent=1)
        os.replace(tmp, args.ready)
        print(f"bmx7 stand-in: {len(nodes)} nodes in a line, pid {os.getpid()}", flush=True)
        stop.wait()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.bmx7sim")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("serve", help="play bmx7 for a line of existing namespaces")
    p.add_argument("--dir", required=True, help="where the runtime directories go")
    p.add_argument("--ready", required=True, help="file written with the node list once up")
    p.add_argument("--node-timeout", type=float, default=Timings().node_timeout,
                   help="seconds a killed node stays in the others' view (bmx7: ~68)")
    p.add_argument("netns", nargs="+", help="the namespaces, in line order")
    args = parser.parse_args(argv)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
