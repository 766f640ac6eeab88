"""Command line: parse arguments, run a verb, turn typed errors into messages and exit codes.

Exit codes (also in --help, the README and bmx7-wg(8)):
  0  success (for plan/apply --check: whether or not changes are pending)
  1  unexpected error
  2  invalid configuration or key file; nothing was changed
  3  the WireGuard implementation asked for is not available; nothing was changed
  4  conflict: a name is taken by an interface bmx7-wg does not manage; nothing was changed
  5  some changes failed (each named, with its reason); everything independent of them
     was applied; the next apply retries the rest
  6  the current state (links, routes, a WireGuard device) cannot be read; nothing was changed
  7  another bmx7-wg held this network namespace's lock for over 10 s; nothing was changed
  8  an apply --confirm waits for its confirmation here; apply and down are refused
  9  apply --confirm was not confirmed and was rolled back (confirm: there is nothing to
     confirm, the last one was rolled back)
  64 usage error
With apply, a failed change that has an exit code of its own (2, 3) gives that code. A
rollback that could not undo everything exits 5 and names what is left as applied.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

from bmx7_wg import __version__
from bmx7_wg.config.model import DEFAULT_CONFIG_PATH, Config
from bmx7_wg.errors import Bmx7WgError, ChangesFailed, ConfigError, UsageError

if TYPE_CHECKING:
    from bmx7_wg.mesh.liveness import Liveness
    from bmx7_wg.plan.actions import Action
    from bmx7_wg.plan.desired import Publication
    from bmx7_wg.plan.state import ObservedAnnouncement

log = logging.getLogger("bmx7_wg")

EXIT_CODES = __doc__.split("Exit codes", 1)[1].split("\n", 1)[1].rstrip() if __doc__ else ""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see bmx7-wg --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bmx7-wg",
        description="Declarative WireGuard tunnels for BMX7 meshes and Linux servers.",
        epilog="exit codes:\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help=f"configuration file (default {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug messages")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done on stderr")
    parser.add_argument("--version", action="version", version=f"bmx7-wg {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True

    verbs.add_parser("check", help="validate the configuration; touch nothing")
    p = verbs.add_parser("plan", help="print what apply would change; touch nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verbs.add_parser("apply", help="make the system match the configuration")
    p.add_argument("--check", action="store_true", help="report only, change nothing (check mode)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--confirm",
        type=float,
        metavar="SECONDS",
        help="wait for `bmx7-wg confirm`; without it in time, or when the terminal goes away, roll "
        "everything back (interfaces, keys, peers, addresses, routes, announcement, configuration file)",
    )
    p.add_argument(
        "--confirm-handshake",
        metavar="PEER",
        help="with --confirm: confirm by itself once PEER (public key or name) has a fresh handshake",
    )
    p.add_argument(
        "--new-config",
        metavar="PATH",
        help="with --confirm: install PATH as the configuration file (-c) first; rolled back with the rest",
    )
    p = verbs.add_parser("show", help="interfaces, peers, handshakes and transfer")
    p.add_argument("interface", nargs="?", metavar="IFACE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verbs.add_parser(
        "down", help="remove interfaces bmx7-wg manages (never others) and withdraw the mesh announcement"
    )
    p.add_argument("interfaces", nargs="*", metavar="IFACE")
    p.add_argument("--check", action="store_true", help="report only, change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verbs.add_parser("run", help="the service: reconcile now and on every change")
    p.add_argument(
        "--interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="full reconcile at least this often, as a safety net (default 60)",
    )
    verbs.add_parser("confirm", help="keep the changes of the apply --confirm that waits")
    verbs.add_parser(
        "metrics", help="print handshakes, transfer, peers and mesh nodes in the Prometheus text format"
    )
    verbs.add_parser("genkey", help="print a new private key (like wg genkey)")
    verbs.add_parser("pubkey", help="read a private key on stdin, print its public key (like wg pubkey)")
    p = verbs.add_parser(
        "address", help="print the tunnel (fd77) and primary (fd70) address of a node id or mesh name"
    )
    p.add_argument("node_id", metavar="NODEID|NAME")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    collecting = gc.isenabled()
    try:
        return _main(argv)
    finally:
        if collecting:
            gc.enable()  # main() is also called in-process (tests)


def _main(argv: Sequence[str] | None) -> int:
    debug = False
    try:
        args = build_parser().parse_args(argv)
        debug = args.debug
        if args.verb != "run":
            # A one-shot command makes hundreds of thousands of small objects at 10,000
            # peers (parsed tables, peers, actions) and few reference cycles, and exits
            # within seconds: the cycle collector's passes over them cost 50-80 ms of a
            # no-op apply and would free nothing. The service keeps the collector.
            gc.disable()
        _setup_logging(args)
        verb: Callable[[argparse.Namespace], int] = VERBS[args.verb]
        return verb(args)
    except ConfigError as exc:
        for d in exc.diagnostics:
            print(d, file=sys.stderr)
        print(f"bmx7-wg: {len(exc.diagnostics)} error(s); nothing was changed", file=sys.stderr)
        return exc.exit_code
    except Bmx7WgError as exc:
        print(f"bmx7-wg: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # the one place that turns a bug into a message, not a traceback
        if debug:
            raise
        print(
            f"bmx7-wg: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1


def _setup_logging(args: argparse.Namespace) -> None:
    from bmx7_wg.service.logsetup import setup_logging

    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    setup_logging(level, service=args.verb == "run")


def _load(args: argparse.Namespace) -> Config:
    from bmx7_wg.config import reader

    return reader.load(args.config)


def _print_json(obj: Any) -> None:
    # One write: json.dump would issue one per token (400,000 for 10,000 peers).
    sys.stdout.write(format_json(obj) + "\n")


def format_json(value: Any, indent: str = "") -> str:
    """JSON indented by two spaces, with every object that holds no list of objects (an
    action, a peer) on one line.

    Readable and greppable line by line, and cheaper than `json.dumps(indent=...)`, which
    falls back to the pure-Python encoder: each one-line object goes through the C one.
    """
    inner = indent + "  "
    if _spans_lines(value):
        items = [f"{inner}{json.dumps(str(k))}: {format_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if _is_list_of_containers(value):
        return "[\n" + ",\n".join([inner + format_json(v, inner) for v in value]) + f"\n{indent}]"
    return json.dumps(value)


def _spans_lines(value: Any) -> bool:
    """Whether `value` is an object that holds, at any depth, a list of objects or lists."""
    return type(value) is dict and any(_is_list_of_containers(v) or _spans_lines(v) for v in value.values())


def _is_list_of_containers(value: Any) -> bool:
    return type(value) is list and any(map(_is_container, value))


def _is_container(value: Any) -> bool:
    return type(value) is dict or type(value) is list


# -- verbs -------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args)
    n = len(cfg.interfaces)
    print(f"{args.config}: OK ({n} interface{'s' if n != 1 else ''})")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    return _reconcile(args, check=True, verb="plan")


def cmd_apply(args: argparse.Namespace) -> int:
    if args.confirm is None:
        if args.confirm_handshake or args.new_config:
            raise UsageError("apply: --confirm-handshake and --new-config go with --confirm SECONDS")
        if not args.check:
            _refuse_while_pending("apply")
        return _reconcile(args, check=args.check, verb="apply")
    if args.check:
        raise UsageError("apply: --check and --confirm do not go together (--check changes nothing)")
    if not 0 < args.confirm <= 86400:
        raise UsageError("apply: --confirm takes a number of seconds between 0 and 86400")
    return _apply_confirmed(args)


def _refuse_while_pending(verb: str) -> None:
    from bmx7_wg.pending import refuse_while_pending

    refuse_while_pending(verb)


def _apply_confirmed(args: argparse.Namespace) -> int:
    from bmx7_wg import confirm

    def show_applied(r: confirm.Result) -> None:
        if not args.json:
            _say_lines([a.describe() for a in r.actions])
            _say_lines([f"failed: {f.describe()}" for f in r.failures])
            failed = f", {len(r.failures)} failed" if r.failures else ""
            _say_lines([f"{len(r.actions)} change(s) applied{failed}"])

    say = (lambda line: _say_lines([line], err=True)) if args.json else (lambda line: _say_lines([line]))
    result = confirm.apply_confirmed(
        args.config,
        args.confirm,
        new_config=args.new_config,
        handshake_peer=args.confirm_handshake,
        say=say,
        show_applied=show_applied,
    )
    if args.json:
        out: dict[str, Any] = {
            "changed": bool(result.actions),
            "check": False,
            "actions": [a.to_json() for a in result.actions],
        }
        if result.failures:
            out["failed"] = [f.to_json() for f in result.failures]
        out["confirm"] = {"outcome": result.outcome or "nothing to confirm", "reason": result.reason}
        if result.outcome and result.outcome != "confirmed":
            out["confirm"]["rollback"] = [a.to_json() for a in result.rollback]
            out["confirm"]["config_restored"] = result.config_restored
            if result.rollback_failures:
                out["confirm"]["rollback_failed"] = [f.to_json() for f in result.rollback_failures]
        try:
            _print_json(out)
        except OSError:
            pass  # the terminal is gone: the journal has it
    elif not result.outcome:
        _say_lines(["no changes"])
    elif result.outcome == "confirmed":
        _say_lines([f"{result.reason}: the changes stay"])
    else:
        _say_lines([f"undone: {a.describe()}" for a in result.rollback])
        if result.config_restored:
            _say_lines([f"{args.config}: restored as it was"])
    confirm.raise_for(result)
    return 0


def _say_lines(lines: list[str], *, err: bool = False) -> None:
    """Print, unless the terminal is gone (a rollback after SIGHUP still runs to its end)."""
    stream = sys.stderr if err else sys.stdout
    try:
        for line in lines:
            stream.write(line + "\n")
        stream.flush()
    except OSError:
        pass


def cmd_metrics(args: argparse.Namespace) -> int:
    from bmx7_wg import metrics
    from bmx7_wg.engine import Engine, reconcile
    from bmx7_wg.system import System

    cfg = _load(args)
    with System() as system:
        r = reconcile(Engine(system), cfg, check=True, verb="metrics")
    sys.stdout.write(
        metrics.render(r.plan.observed, metrics.context(r.plan.desired, r.plan.mesh_peers, r.mesh))
    )
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from bmx7_wg import confirm

    confirm.confirm(lambda line: print(line))
    return 0


def _reconcile(args: argparse.Namespace, *, check: bool, verb: str) -> int:
    from bmx7_wg.engine import Engine, reconcile
    from bmx7_wg.system import System

    cfg = _load(args)
    with System() as system:
        r = reconcile(Engine(system), cfg, check=check, verb=verb, on_done=_log_done)
    result: dict[str, Any] = {"changed": bool(r.actions), "check": check}
    if verb == "plan":
        del result["check"]
    result["actions"] = [a.to_json() for a in r.actions]
    if r.failures:
        result["failed"] = [f.to_json() for f in r.failures]
    if r.mesh.refusals:
        result["refused"] = r.mesh.refusals_json()
    bmx7 = r.mesh.bmx7_json(r.plan.desired)
    if bmx7 is not None:
        result["bmx7"] = bmx7
    for line in r.mesh.describe_bmx7(r.plan.desired):
        log.warning("%s", line)
    if args.json:
        _print_json(result)
    else:
        _print_result(r.actions, r.mesh.describe_refusals(), check=check, verb=verb, failed=len(r.failures))
    if r.failures:
        # The failures, each with its resource and reason, go to stderr with the exit code.
        raise ChangesFailed(r.failures, applied=len(r.actions))
    return 0


def _print_result(
    actions: Sequence[Action], refusals: list[str], *, check: bool, verb: str, failed: int
) -> None:
    for a in actions:
        print(a.describe())
    for line in refusals:
        print(line)
    if failed:
        print(f"{len(actions)} change(s) applied, {failed} failed")
    elif not actions:
        print("no changes")
    elif check:
        suffix = " (check mode: nothing was changed)" if verb in ("apply", "down") else ""
        print(f"{len(actions)} change(s) pending{suffix}")
    else:
        print(f"{len(actions)} change(s) applied")


def _log_done(action: Action) -> None:
    # Described only when shown (-v): 10,000 new peers would be 10,000 texts for nothing.
    if log.isEnabledFor(logging.INFO):
        log.info("%s", action.describe())


def cmd_show(args: argparse.Namespace) -> int:
    from bmx7_wg import show
    from bmx7_wg.engine import observe
    from bmx7_wg.system import System

    labels, bmx7, host_names = _peer_labels(args)
    with System() as system:
        observed = observe(system, [args.interface] if args.interface else [], all_wireguard=True)
    if args.interface:
        if args.interface not in observed.interfaces:
            raise UsageError(f"show: no WireGuard interface named {args.interface}")
        from bmx7_wg.plan.state import ObservedState

        observed = ObservedState({args.interface: observed.interfaces[args.interface]})
    data = show.interfaces_json(observed, labels, host_names)
    if bmx7 is not None and not bmx7.answering:
        log.warning("%s; mesh peers stay as they are until it answers", bmx7.describe())
    if args.json:
        result: dict[str, Any] = {"interfaces": data}
        if bmx7 is not None:
            result["bmx7"] = {"running": bmx7.answering, "socket": bmx7.socket}
            if not bmx7.answering:
                result["bmx7"]["reason"] = bmx7.reason
        _print_json(result)
    elif data:
        print(show.render_text(data))
    return 0


def _peer_labels(
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, str]], Liveness | None, dict[str, tuple[str, ...]]]:
    """Peer names from the configuration and the mesh, if they can be read (show works
    without), whether bmx7 answers (None: no mesh interface), and the mesh peers' names
    in the hosts file (tunnel address -> names)."""
    from bmx7_wg.config import reader

    try:
        cfg = reader.load(args.config)
    except Bmx7WgError:
        return {}, None, {}
    labels: dict[str, dict[str, str]] = {}
    for iface in cfg.interfaces:
        labels[iface.name] = {p.public_key: (p.name or "") for p in iface.peers}
    from bmx7_wg.mesh.session import bmx7_liveness, mesh_labels

    for name, peers in mesh_labels(cfg).items():
        labels.setdefault(name, {}).update(peers)
    return labels, bmx7_liveness(cfg), _host_names(cfg)


def _host_names(cfg: Config) -> dict[str, tuple[str, ...]]:
    from bmx7_wg.net import hostsfile

    if not cfg.names.hosts_file:
        return {}
    try:
        return hostsfile.block_names(hostsfile.read(cfg.names.hosts_file).block or ())
    except Bmx7WgError:
        return {}


def cmd_down(args: argparse.Namespace) -> int:
    import contextlib

    from bmx7_wg import lock
    from bmx7_wg.engine import observe
    from bmx7_wg.plan.actions import DeleteLink
    from bmx7_wg.plan.planner import plan_down
    from bmx7_wg.system import System

    check = args.check
    if not check:
        _refuse_while_pending("down")
    mesh = _publication_for_down(args)
    with contextlib.nullcontext() if check else lock.held("down"), System() as system:
        observed = observe(system, args.interfaces)
        if mesh is not None:
            observed = replace(observed, announcement=mesh[2])
        actions = plan_down(observed, args.interfaces, (mesh[0], mesh[1]) if mesh is not None else None)
        # The mesh interface's names go with it (a failure is named, not fatal).
        names = _names_removal(args.config, [a.interface for a in actions if isinstance(a, DeleteLink)])
        outcome = None if check else system.execute(actions, {}, _log_done)
        if outcome is not None and names:
            named = system.execute(names, {}, _log_done)
            outcome.done += named.done
            for failure in named.failures:
                log.warning("%s", failure.describe())
        elif names:
            actions = actions + names
    done = actions if outcome is None else outcome.done
    failures = [] if outcome is None else outcome.failures
    if args.json:
        result: dict[str, Any] = {"changed": bool(done), "check": check}
        result["actions"] = [a.to_json() for a in done]
        if failures:
            result["failed"] = [f.to_json() for f in failures]
        _print_json(result)
    else:
        _print_result(done, [], check=check, verb="down", failed=len(failures))
    if failures:
        raise ChangesFailed(failures, applied=len(done))
    return 0


def _publication_for_down(args: argparse.Namespace) -> tuple[str, Publication, ObservedAnnouncement] | None:
    """Where the mesh announcement is published, if the configuration can be read: `down`
    works without a valid configuration (it removes what is managed), and then says that
    it cannot withdraw an announcement."""
    from bmx7_wg.config import reader
    from bmx7_wg.mesh.session import publication

    try:
        cfg = reader.load(args.config)
    except Bmx7WgError as exc:
        log.warning(
            "cannot read %s (%s): a mesh announcement is not withdrawn",
            args.config,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return None
    return publication(cfg)


def cmd_run(args: argparse.Namespace) -> int:
    from bmx7_wg.service.loop import run

    if not args.interval > 0:
        raise UsageError("run: --interval must be a positive number of seconds")
    return run(args.config, interval=args.interval)


def cmd_genkey(args: argparse.Namespace) -> int:
    from bmx7_wg.keys import PrivateKey

    print(PrivateKey.generate().to_base64())
    return 0


def cmd_pubkey(args: argparse.Namespace) -> int:
    from bmx7_wg.keys import PrivateKey

    text = sys.stdin.read()
    try:
        key = PrivateKey.from_base64(text)
    except ValueError as exc:
        raise UsageError(f"pubkey: standard input is {exc}") from None
    print(key.public_key())
    return 0


def cmd_address(args: argparse.Namespace) -> int:
    import ipaddress

    from bmx7_wg.base import nodeid

    node_id: str | None = args.node_id.upper()
    names: tuple[str, ...] = ()
    if nodeid.NODE_ID_RE.match(args.node_id):
        tunnel = nodeid.tunnel_address(args.node_id)
    else:
        # A name (node3, node3.mesh, a short id): as the hosts file's block or bmx7 has it.
        from bmx7_wg.lookup import find_node

        found = find_node(_names_config(args), args.node_id)
        node_id, names = found.node_id, found.names
        tunnel = ipaddress.IPv6Address(found.tunnel_address)
    # Both addresses carry the same 14 bytes of the node id, behind their own prefixes.
    primary = ipaddress.IPv6Address(nodeid.PRIMARY_PREFIX.to_bytes(2, "big") + tunnel.packed[2:])
    if args.json:
        out: dict[str, Any] = {
            "node_id": node_id,
            "short_id": node_id[:8] if node_id else None,
            "tunnel_address": str(tunnel),
            "primary_address": str(primary),
        }
        if names:
            out["names"] = list(names)
        _print_json(out)
    else:
        print(f"tunnel {tunnel}")
        print(f"primary {primary}")
    return 0


def _names_removal(config_path: str, interfaces: Sequence[str]) -> list[Action]:
    from bmx7_wg.config import reader
    from bmx7_wg.service.hostnames import removal

    try:
        return removal(reader.load(config_path), interfaces)
    except Bmx7WgError:
        return []


def _names_config(args: argparse.Namespace) -> Config:
    """The configuration, for the names it sets; without a file, the defaults."""
    import os

    try:
        return _load(args)
    except ConfigError:
        if os.path.lexists(args.config):
            raise
    from bmx7_wg.config.model import NamesConfig
    from bmx7_wg.config.reader import default_hosts_file

    return Config(args.config, names=NamesConfig(hosts_file=default_hosts_file()))


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check": cmd_check,
    "plan": cmd_plan,
    "apply": cmd_apply,
    "show": cmd_show,
    "down": cmd_down,
    "confirm": cmd_confirm,
    "metrics": cmd_metrics,
    "run": cmd_run,
    "genkey": cmd_genkey,
    "pubkey": cmd_pubkey,
    "address": cmd_address,
}
