"""When the service rewrites its mesh state file (service/state.py's MemoryWriter): when
its peers changed, or when it is SAVE_EVERY old; never for a peer's last-seen time alone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bmx7_wg.mesh.grace import Remembered
from bmx7_wg.plan.state import Peer
from bmx7_wg.service.state import SAVE_EVERY, MemoryWriter, MeshMemory

NODE = "A" * 56
KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


class CountingMemory(MeshMemory):
    """The state file, and how often it was written."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.writes = 0

    def save(self, interface: str, remembered: Mapping[str, Remembered]) -> None:
        self.writes += 1
        super().save(interface, remembered)


def seen(at: float, endpoint: str = "[fd70::1]:40456") -> dict[str, Remembered]:
    peer = Peer(KEY, frozenset({"fd77::1/128"}), endpoint, source="mesh", node_id=NODE)
    return {NODE: Remembered(peer, last_seen=at)}


def test_the_state_file_is_rewritten_when_its_peers_change_or_it_is_old(tmp_path: Path) -> None:
    memory = CountingMemory(str(tmp_path / "run"))
    now = [100.0]
    writer = MemoryWriter(memory, clock=lambda: now[0])
    writer.save("wg-mesh", seen(1.0))
    assert memory.writes == 1  # the first time
    assert memory.load("wg-mesh")[NODE].peer.endpoint == "[fd70::1]:40456"
    now[0] += 1
    writer.save("wg-mesh", seen(2.0))
    assert memory.writes == 1  # only seen again: not worth a write
    writer.save("wg-mesh", seen(2.0, endpoint="[fd70::2]:40456"))
    assert memory.writes == 2  # a peer changed
    assert memory.load("wg-mesh")[NODE].peer.endpoint == "[fd70::2]:40456"
    now[0] += SAVE_EVERY - 0.5
    writer.save("wg-mesh", seen(3.0, endpoint="[fd70::2]:40456"))
    assert memory.writes == 2
    now[0] += 0.5
    writer.save("wg-mesh", seen(4.0, endpoint="[fd70::2]:40456"))
    assert memory.writes == 3  # SAVE_EVERY old: the last-seen times are brought up to date
    writer.save("wg-mesh", seen(4.0, endpoint="[fd70::2]:40456"), force=True)
    assert memory.writes == 4  # the service stops: always
