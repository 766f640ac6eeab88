"""The service's step between full reconciles (bmx7_wg/service/incremental.py) against the
full reconcile, without root.

Both paths run here on the same `rcvdSms/` files, each against its own in-memory system:

(a) the service's way: a full reconcile, then `MeshTracker.step` for every change, its
    actions executed and `commit`ted; a step that returns None is followed by a full
    reconcile and a new tracker, as `Service.mesh_step` and `Service.reconcile` do;
(b) the reference: a full reconcile (`engine.reconcile`) after every change.

After every change both devices must hold the same peers, and the refusals the tracker
keeps must be the full reconcile's.

The seam is `engine.reconcile` itself, whole: the mesh is read by `mesh/session.py` from
a bmx7 runtime directory in a temporary directory, whose control socket the bmx7
stand-in (tests/bmx7sim, conformance-tested against the real bmx7, its answers in the
formats of the captured fixtures) serves from a thread; the files are written in
bmx7's format (`NODEID:SMS`, the announcement's bytes). Only the `System` is a fake
(`FakeSystem`: the links, addresses, routes and WireGuard devices of a namespace, in
memory, behind the real `System.execute`, so the executor's batching and the
device's allowed-ip moves are what a device gets). So the test covers every rule
between the files and the device, in both paths, with nothing but the kernel left out.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmx7_wg import lock
from bmx7_wg.config import reader
from bmx7_wg.engine import Engine, Reconciled, reconcile
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.announce import format_announcement
from bmx7_wg.mesh.bmx7 import Bmx7Runtime, ReceivedCache
from bmx7_wg.mesh.grace import MeshGrace
from bmx7_wg.plan.actions import DeviceChange
from bmx7_wg.plan.execute import Outcome
from bmx7_wg.plan.state import Device, HostNetworks, Implementation, ObservedInterface, ObservedState, Peer
from bmx7_wg.service.incremental import MeshTracker
from bmx7_wg.system import System
from tests.bmx7sim import SimNode
from tests.bmx7sim.sim import make_node_id

SMS = "wg-bmx7"
IFACE = "wgstep"
GRACE = 30.0
# Fixed from a seed, so that a failing example is the same example again.
_rng = random.Random(27)
NODES = [make_node_id(_rng.randbytes(256)) for _ in range(5)]
DENIED = make_node_id(_rng.randbytes(256))
KEYS = [PrivateKey(_rng.randbytes(32)).public_key() for _ in range(4)]
OWN_KEY = PrivateKey(_rng.randbytes(32))
STATIC_KEY = PrivateKey(_rng.randbytes(32)).public_key()
STATIC_IP = "10.200.0.1/32"
# Inside accept_networks, overlapping one another, or the static peer's address.
NETWORKS = ["10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16", "10.200.0.0/16"]


@pytest.fixture(scope="module", autouse=True)
def private_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each reconcile of (a) and (b) takes the namespace's lock, as the service's do: here
    in a directory of the test's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lock, "LOCK_DIR", str(tmp_path_factory.mktemp("lock")))
        yield


# -- the fake system -----------------------------------------------------------------


@dataclass
class FakeLink:
    ifindex: int
    managed: bool
    implementation: Implementation | None = None
    up: bool = False
    mtu: int = 1420
    addresses: set[str] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)  # bmx7-wg's (protocol 77)
    others: set[str] = field(default_factory=set)  # anybody else's
    device: Device | None = None


class FakeSystem(System):
    """A network namespace in memory: what `engine` reads (`observe`) and what the executor
    changes (links, addresses, routes; devices through `DeviceChange`, as wireguard-go
    takes it), behind the real `System.execute`. Publishing the announcement goes to the
    bmx7 runtime directory as it does in the service."""

    def __init__(self, private_key: PrivateKey) -> None:
        super().__init__(socket_dir="/nonexistent")  # never used: the devices are here
        self.links = {
            "eth0": FakeLink(1, False, up=True, addresses={"192.0.2.1/24"}, others={"192.0.2.0/24"}),
            # Made by an earlier apply: the backend is not probed, the session key is the device's.
            IFACE: FakeLink(2, True, "userspace", device=Device(private_key, 40456)),
        }

    def observe(
        self, declared: Iterable[str], *, all_wireguard: bool = False, devices: bool = True
    ) -> ObservedState:
        interfaces = {
            name: ObservedInterface(
                name, link.ifindex, link.implementation, link.managed, link.mtu, link.up,
                frozenset(link.addresses), frozenset(link.routes), link.device if devices else None,
            )
            for name, link in self.links.items()
            if link.managed or name in declared
        }
        host = HostNetworks(
            {n: frozenset(link.addresses) for n, link in self.links.items()},
            {n: frozenset(link.routes | link.others) for n, link in self.links.items()},
        )
        return ObservedState(interfaces, host)

    def device(self, implementation: Implementation) -> FakeSystem:  # type: ignore[override]
        return self

    def apply(self, change: DeviceChange) -> None:
        """One device change, as a WireGuard device makes it: an allowed-ip given to a peer
        leaves any other peer that had it."""
        link = self.links[change.interface]
        assert link.device is not None
        peers = dict(link.device.peers)

        def put(peer: Peer) -> None:
            for other_key, other in list(peers.items()):
                if other_key != peer.public_key and other.allowed_ips & peer.allowed_ips:
                    peers[other_key] = replace(other, allowed_ips=other.allowed_ips - peer.allowed_ips)
            peers[peer.public_key] = peer

        for key in change.remove_peers:
            peers.pop(key, None)
        for want, fields in change.update_peers:
            put(replace(peers[want.public_key], **{f: getattr(want, f) for f in fields}))
        for want in change.add_peers:
            put(Peer(want.public_key, want.allowed_ips, want.endpoint, want.persistent_keepalive,
                     want.preshared_key))
        link.device = replace(
            link.device,
            private_key=change.private_key or link.device.private_key,
            listen_port=change.listen_port if change.listen_port is not None else link.device.listen_port,
            peers=peers,
        )

    def _apply_link(self, action: Any) -> None:
        link = self.links[action.interface]
        kind = action.kind
        if kind == "set_up":
            link.up = True
        elif kind == "set_mtu":
            link.mtu = action.mtu
        elif kind == "add_address":
            link.addresses.add(action.address)
        elif kind == "remove_address":
            link.addresses.discard(action.address)
        elif kind == "add_route":
            link.routes.add(action.network)
        elif kind == "remove_route":
            link.routes.discard(action.network)
        else:
            raise AssertionError(f"not expected here: {action.describe()}")

    def peers(self) -> dict[str, Peer]:
        device = self.links[IFACE].device
        assert device is not None
        return dict(device.peers)


# -- the two paths -------------------------------------------------------------------


class Mesh:
    """A bmx7 runtime directory with its control socket (the stand-in), the configuration,
    a clock for the grace periods, and the two paths over them."""

    def __init__(self, base: Path) -> None:
        self.runtime = base / "run"
        self.bmx7 = SimNode(str(self.runtime), "self", sync_sms=(SMS,))
        self.bmx7.start()
        self.rcvd = self.runtime / "sms" / "rcvdSms"
        config = base / "bmx7-wg.toml"
        config.write_text(
            f'[bmx7]\nruntime_dir = "{self.runtime}"\nannounce = "{SMS}"\ntrust = "all"\n'
            f'grace = {GRACE:g}\ndenied = ["{DENIED}"]\n\n'
            f'[interface.{IFACE}]\nmesh = true\nbackend = "userspace"\nkey = "session"\n'
            'accept_networks = ["10.0.0.0/8"]\n\n'
            f'[[interface.{IFACE}.peer]]\nname = "static"\npublic_key = "{STATIC_KEY}"\n'
            f'allowed_ips = ["{STATIC_IP}"]\n'
        )
        self.config = reader.load(str(config))
        self.now = 1000.0
        self.stepped = Stepped(self)
        self.full = Full(self)

    def close(self) -> None:
        self.bmx7.stop()

    def clock(self) -> float:
        return self.now

    def write(self, entry: str, data: bytes | None, *, fresh: bool = False) -> None:
        """A file as bmx7 makes one: complete, renamed into place (None: removed). `fresh`:
        written a moment ago (far enough ahead that it stays so during the test)."""
        path = self.rcvd / entry
        if data is None:
            path.unlink(missing_ok=True)
            return
        incoming = self.rcvd / ".incoming"
        incoming.write_bytes(data)
        when = time.time() + (300 if fresh else -300)
        os.utime(incoming, (when, when))
        os.rename(incoming, path)

    def reconcile(
        self, system: FakeSystem, grace: MeshGrace, cache: ReceivedCache | None = None
    ) -> Reconciled:
        result = reconcile(
            Engine(system, session_keys={IFACE: OWN_KEY}), self.config, check=False, verb="run",
            resolve=lambda host, port: None, grace=grace, received_cache=cache,
        )
        assert not result.failures, [f.describe() for f in result.failures]
        return result


class Full:
    """(b): a full reconcile after every change."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.system = FakeSystem(OWN_KEY)
        self.grace = MeshGrace(GRACE, clock=mesh.clock)
        self.refusals: set[tuple[str, str]] = set()
        self.change()

    def change(self) -> None:
        self.refusals = set(self.mesh.reconcile(self.system, self.grace).mesh.refusals)


class Stepped:
    """(a): the service's way, as Service.mesh_step and Service.reconcile do it."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.system = FakeSystem(OWN_KEY)
        self.grace = MeshGrace(GRACE, clock=mesh.clock)
        self.cache = ReceivedCache()
        self.tracker: MeshTracker | None = None
        self.waiting: set[str] = set()  # files a step found being written: read again
        self.steps = self.fulls = 0
        self.reconcile()

    def reconcile(self) -> None:
        result = self.mesh.reconcile(self.system, self.grace, self.cache)
        observed = self.system.observe([]) if result.actions else result.plan.observed
        have = observed.interfaces.get(IFACE)
        self.tracker = MeshTracker.from_full(
            self.mesh.config, result.mesh, result.plan, have.device if have is not None else None
        )
        assert self.tracker is not None
        self.waiting = set(result.mesh.unsettled)  # read again, as the service does
        self.fulls += 1

    def change(self, entries: Sequence[str]) -> bool:
        """The step for the files named (and any grace period over); False: it returned None
        and a full reconcile followed."""
        assert self.tracker is not None
        names = set(entries) | self.waiting
        files = Bmx7Runtime(str(self.mesh.runtime)).received_entries(sorted(names), SMS, cache=self.cache)
        step = self.tracker.step(files, self.grace)
        if step is None:
            self.reconcile()
            return False
        outcome: Outcome = self.system.execute(step.actions, {IFACE: "userspace"})
        assert not outcome.failures, [f.describe() for f in outcome.failures]
        self.tracker.commit(step, outcome.done)
        self.waiting = set(step.unsettled)
        self.steps += 1
        return True

    def refusals(self) -> set[tuple[str, str]]:
        assert self.tracker is not None
        return {r for rs in self.tracker.refusals.values() for r in rs}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path)
    yield m
    m.close()


def entry(node_id: str, *, lower: bool = False) -> str:
    return f"{node_id.lower() if lower else node_id}:{SMS}"


def announcement(key: str, networks: Sequence[str] = (), port: int = 40456) -> bytes:
    return format_announcement(key, port, networks)


# -- examples ------------------------------------------------------------------------


def test_a_new_node_becomes_a_peer(mesh: Mesh, no_hang: None) -> None:
    mesh.write(entry(NODES[0]), announcement(KEYS[0]))
    assert mesh.stepped.change([entry(NODES[0])])
    peers = mesh.stepped.system.peers()
    assert KEYS[0] in peers
    assert peers[KEYS[0]].endpoint is not None and peers[KEYS[0]].endpoint.endswith(":40456")
    assert len(peers[KEYS[0]].allowed_ips) == 1  # its tunnel address, from its node id
    mesh.full.change()
    assert mesh.stepped.system.peers() == mesh.full.system.peers()


def test_a_key_claimed_twice_refuses_both_and_frees_when_one_goes(mesh: Mesh, no_hang: None) -> None:
    mesh.write(entry(NODES[0]), announcement(KEYS[0]))
    assert mesh.stepped.change([entry(NODES[0])])
    mesh.write(entry(NODES[1]), announcement(KEYS[0]))
    assert mesh.stepped.change([entry(NODES[1])])
    assert KEYS[0] not in mesh.stepped.system.peers()
    refused = {node for node, message in mesh.stepped.refusals() if "public key also claimed" in message}
    assert refused == {NODES[0], NODES[1]}
    mesh.write(entry(NODES[0]), None)
    assert mesh.stepped.change([entry(NODES[0])])
    assert KEYS[0] in mesh.stepped.system.peers()
    assert not mesh.stepped.refusals()


def test_a_static_peer_wins_over_a_mesh_node_with_its_key(mesh: Mesh, no_hang: None) -> None:
    mesh.write(entry(NODES[0]), announcement(STATIC_KEY))
    assert mesh.stepped.change([entry(NODES[0])])
    assert mesh.stepped.system.peers()[STATIC_KEY].allowed_ips == {STATIC_IP}
    mesh.write(entry(NODES[0]), announcement(KEYS[1]))
    assert mesh.stepped.change([entry(NODES[0])])
    peers = mesh.stepped.system.peers()
    assert peers[STATIC_KEY].allowed_ips == {STATIC_IP}
    assert KEYS[1] in peers


def test_a_node_with_networks_is_left_to_a_full_reconcile(mesh: Mesh, no_hang: None) -> None:
    mesh.write(entry(NODES[0]), announcement(KEYS[0], ["10.2.0.0/16"]))
    files = Bmx7Runtime(str(mesh.runtime)).received_entries([entry(NODES[0])], SMS)
    assert mesh.stepped.tracker is not None
    assert mesh.stepped.tracker.step(files, mesh.stepped.grace) is None
    assert not mesh.stepped.change([entry(NODES[0])])  # so the service reconciles in full
    assert mesh.stepped.system.peers()[KEYS[0]].allowed_ips >= {"10.2.0.0/16"}


def test_a_second_file_for_a_node_is_left_to_a_full_reconcile(mesh: Mesh, no_hang: None) -> None:
    mesh.write(entry(NODES[0]), announcement(KEYS[0]))
    assert mesh.stepped.change([entry(NODES[0])])
    mesh.write(entry(NODES[0], lower=True), announcement(KEYS[1]))
    assert not mesh.stepped.change([entry(NODES[0], lower=True)])
    assert (NODES[0], f"mesh: refused node {NODES[0][:8]}: announced twice") in mesh.stepped.refusals()


def test_a_held_claim_refuses_until_its_grace_ends(mesh: Mesh, no_hang: None) -> None:
    """A node whose announcement vanished keeps its claims while it is held: an overlapping
    network of another node stays refused until the grace ends, in both paths."""
    mesh.write(entry(NODES[0]), announcement(KEYS[0], ["10.1.0.0/16"]))
    mesh.write(entry(NODES[1]), announcement(KEYS[1], ["10.1.2.0/24"]))
    mesh.stepped.change([entry(NODES[0]), entry(NODES[1])])
    mesh.full.change()
    assert "10.1.2.0/24" not in mesh.full.system.peers()[KEYS[1]].allowed_ips
    mesh.write(entry(NODES[0]), None)
    for elapsed in (0.0, GRACE / 2, GRACE):
        mesh.now += elapsed
        mesh.stepped.change([entry(NODES[0])] if elapsed == 0 else [])
        mesh.full.change()
        assert mesh.stepped.system.peers() == mesh.full.system.peers()
        assert mesh.stepped.refusals() == mesh.full.refusals
    assert "10.1.2.0/24" in mesh.stepped.system.peers()[KEYS[1]].allowed_ips
    assert KEYS[0] not in mesh.stepped.system.peers()


# -- random changes through both paths -----------------------------------------------

# One change to rcvdSms/: (what, node, key, networks, lower-case file name)
rarely = st.sampled_from([False] * 5 + [True])
change = st.one_of(
    st.tuples(st.just("announce"), st.sampled_from([*NODES, DENIED]),
              st.sampled_from([*KEYS, STATIC_KEY, OWN_KEY.public_key()]),
              st.sampled_from([(), (), (), *((n,) for n in NETWORKS)]), rarely),
    st.tuples(st.just("leave"), st.sampled_from(NODES), st.none(), st.none(), rarely),
    st.tuples(st.just("garbage"), st.sampled_from(NODES), st.none(), st.none(), st.booleans()),
    st.tuples(st.just("echo"), st.none(), st.none(), st.none(), st.just(False)),
)
rounds = st.lists(
    st.tuples(st.lists(change, max_size=3), st.sampled_from([0.0, 0.0, 1.0, 12.0, GRACE])),
    min_size=1,
    max_size=12,
)


# no_hang: one alarm for all the examples (the fixture is not made anew for each).
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rounds=rounds)
def test_steps_keep_the_device_where_full_reconciles_put_it(
    tmp_path_factory: pytest.TempPathFactory, no_hang: None, rounds: list[tuple[list[tuple], float]]
) -> None:
    mesh = Mesh(Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())))
    try:
        own = mesh.bmx7.node_id
        for changes, elapsed in rounds:
            mesh.now += elapsed
            entries = []
            for what, node, key, networks, lower in changes:
                if what == "announce":
                    mesh.write(entry(node, lower=lower), announcement(key, networks))
                    entries.append(entry(node, lower=lower))
                elif what == "leave":
                    mesh.write(entry(node, lower=lower), None)
                    entries.append(entry(node, lower=lower))
                elif what == "garbage":
                    # `lower` here: written a moment ago (a writer may not be done).
                    mesh.write(entry(node), b"not an announcement\n", fresh=lower)
                    entries.append(entry(node))
                else:
                    mesh.write(entry(own), announcement(OWN_KEY.public_key()))
                    entries.append(entry(own))
            mesh.stepped.change(entries)
            mesh.full.change()
            assert mesh.stepped.system.peers() == mesh.full.system.peers(), changes
            assert mesh.stepped.refusals() == mesh.full.refusals, changes
    finally:
        mesh.close()
