"""The service's mesh names between reconciles (service/hostnames.py), on a real file."""

from __future__ import annotations

from pathlib import Path

from bmx7_wg.config.model import Config, NamesConfig
from bmx7_wg.net import hostsfile
from bmx7_wg.plan.actions import WriteHostNames
from bmx7_wg.plan.planner import plan_host_names
from bmx7_wg.service.hostnames import MeshNames

A = "89888EDF9B64A255C3AB1CD3CA9AA706C83DFBF9BDD04CCC70914889"
B = "1B2C3D4E" + "0" * 48
C = "CAFEBABE" + "1" * 48


def keeper(path: Path) -> MeshNames:
    return MeshNames(Config("test.toml", names=NamesConfig(hosts_file=str(path))))


def write(names: MeshNames, *args, **kwargs) -> list[str]:  # type: ignore[no-untyped-def]
    """Plan and carry out, as the service does; the block's names after it."""
    for action in names.plan("wgmesh", *args, **kwargs):
        assert isinstance(action, WriteHostNames)
        hostsfile.write_block(action.path, action.lines)
    block = hostsfile.read(names.path).block or ()
    return [n for line in block for n in line.split()[1:]]


def test_a_held_peer_keeps_its_name_also_across_a_service_restart(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost\n")
    names = keeper(path)
    assert write(names, [A, B], {A: "alpha", B: "beta"}, own_name="me") == [
        "beta.mesh", "1b2c3d4e.mesh", "alpha.mesh", "89888edf.mesh"
    ]
    # bmx7 restarted and forgot B for now; B is still a peer (held by the grace period).
    assert "beta.mesh" in write(names, [A, B], {A: "alpha"})
    # The service restarted too: the name comes from the block.
    assert "beta.mesh" in write(keeper(path), [A, B], {A: "alpha"}, own_name="me")
    # B's grace ended: its names go; the last peer's with it, then the block.
    assert write(names, [A], {A: "alpha"}) == ["alpha.mesh", "89888edf.mesh"]
    assert write(names, [], {}) == []
    assert path.read_text() == "127.0.0.1 localhost\n"


def test_bmx7_is_asked_only_for_a_new_peers_name(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    names = keeper(path)
    asked: list[int] = []

    def lookup() -> dict[str, str]:
        asked.append(1)
        return {C: "gamma"}

    write(names, [A], {A: "alpha"}, own_name="me")
    assert "gamma.mesh" in write(names, [A, C], {A: "alpha"}, lookup=lookup)  # a step adds C
    assert len(asked) == 1
    write(names, [A, B, C], {A: "alpha", C: "gamma"}, lookup=lookup)  # B has no name: asked once
    write(names, [A, B, C], {A: "alpha", C: "gamma"}, lookup=lookup)
    assert len(asked) == 2


def test_a_file_changed_by_someone_else_is_planned_again(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    names = keeper(path)
    write(names, [A], {A: "alpha"}, own_name="me")
    assert names.plan("wgmesh", [A], {A: "alpha"}) == []
    # Someone takes "alpha" outside the block: the next plan sees it and gives it up.
    path.write_text("10.0.0.1 alpha.mesh\n" + path.read_text())
    assert write(names, [A], {A: "alpha"}) == ["89888edf.mesh"]


def test_plan_host_names() -> None:
    lines = ("fd77::1\tn.mesh",)
    assert plan_host_names("wg0", "/h", lines, lines) == []
    assert plan_host_names("wg0", "/h", (), None) == []
    assert plan_host_names("wg0", "/h", lines, None) == [WriteHostNames("wg0", path="/h", lines=lines)]
    assert plan_host_names("wg0", "/h", (), ()) == [WriteHostNames("wg0", path="/h", lines=())]
    assert plan_host_names("wg0", "/h", (), lines)[0].describe() == "wg0: remove the mesh names from /h"
