"""Mesh names on a line of real bmx7 daemons (`make test-bmx7`): `ping NAME.mesh` and
`ping SHORTID.mesh` through the tunnel, and a name two nodes give themselves resolves to
neither. Each namespace resolves through /etc/netns/NS/hosts (bind-mounted over /etc/hosts
by `ip netns exec`), the `hosts_file` of its node.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg.base.nodeid import tunnel_address
from bmx7_wg.net.hostsfile import split
from tests.bmx7.real import RealMesh
from tests.integration.service import Service
from tests.integration.test_mesh import Node, wait_for

pytestmark = pytest.mark.root

OUTSIDE = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
TIMEOUT = 120.0  # a line of three real nodes forms in ~5-15 s; the machine may be busy


@pytest.fixture
def named_line(tmp_path: Path) -> Iterator[tuple[RealMesh, list[Node], list[Path]]]:
    with RealMesh(n=3) as mesh:
        nodes, files, services = [], [], []
        try:
            for node in mesh.nodes:
                etc = Path("/etc/netns") / node.netns
                etc.mkdir(parents=True)
                (etc / "hosts").write_text(OUTSIDE)
                files.append(etc / "hosts")
                workdir = tmp_path / node.name
                workdir.mkdir()
                wg = Node(mesh, node, workdir)  # type: ignore[arg-type]  # the stand-in's interface
                wg.configure(trust="all", bmx7_extra=f'\n[names]\nhosts_file = "{etc / "hosts"}"\n')
                nodes.append(wg)
            for wg in nodes:
                services.append(
                    Service(wg.config_path.parent, wg.node.netns, wg.config_path, "--interval", "3")
                )
            for svc in services:
                svc.wait_notify("READY=1", timeout=60)
            yield mesh, nodes, files
        finally:
            for svc in services:
                svc.stop()
            for wg in nodes:
                wg.run("down", check=False)
            for f in files:
                f.unlink(missing_ok=True)
                f.parent.rmdir()


def names(path: Path) -> set[str]:
    return {n for line in split(path.read_text()).block or () for n in line.split()[1:]}


def test_real_nodes_reach_each_other_by_name_and_a_twice_claimed_name_goes(
    named_line: tuple[RealMesh, list[Node], list[Path]],
) -> None:
    mesh, (n1, n2, n3), (h1, _, _) = named_line
    short3 = f"{n3.node.node_id[:8].lower()}.mesh"
    assert wait_for(lambda: {"node2.mesh", "node3.mesh", short3} <= names(h1), TIMEOUT), h1.read_text()
    for name in ("node3.mesh", short3):
        assert wait_for(lambda: n1.ping(name), 60), name  # noqa: B023 - used at once
    assert n1.node.exec("getent", "ahostsv6", "node3.mesh").stdout.split()[0] == str(
        tunnel_address(n3.node.node_id)
    )
    # n2 restarts calling itself node3 too: neither keeps the name, both their short ids stay.
    bmx7 = mesh.nodes[1].bmx7
    bmx7.stop()
    bmx7.name = "node3"
    bmx7.start()
    assert wait_for(lambda: "node3.mesh" not in names(h1), TIMEOUT), h1.read_text()
    assert {short3, f"{n2.node.node_id[:8].lower()}.mesh"} <= names(h1)
    assert "node2.mesh" not in names(h1)
    assert wait_for(lambda: n1.ping(short3), 60)
    assert split(h1.read_text()).before == OUTSIDE
