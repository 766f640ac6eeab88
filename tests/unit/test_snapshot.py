"""The state kept by apply --confirm: saved and read back whole, root's alone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bmx7_wg import snapshot
from bmx7_wg.keys import PresharedKey, PrivateKey, encode_key
from bmx7_wg.plan.desired import Publication
from bmx7_wg.plan.state import (
    Announcement,
    Device,
    ObservedAnnouncement,
    ObservedInterface,
    ObservedState,
    Peer,
)

KEY = PrivateKey(bytes(range(32)))
PSK = PresharedKey(bytes(range(2, 34)))
PEER = Peer(encode_key(bytes(31) + b"\x05"), frozenset({"10.9.1.0/24"}), "192.0.2.1:51820", 25, PSK)


def _observed() -> ObservedState:
    device = Device(private_key=KEY, listen_port=51820, fwmark=7, peers={PEER.public_key: PEER})
    wg0 = ObservedInterface("wg0", 3, "kernel", True, 1400, True, frozenset({"10.9.0.1/24"}),
                            frozenset({"10.9.1.0/24"}), device)  # fmt: skip
    veth = ObservedInterface("wg1", 4, None, False, 1500, True, frozenset(), frozenset(), None)
    return ObservedState({"wg0": wg0, "wg1": veth})


def test_saved_and_loaded_whole(tmp_path: Path) -> None:
    config = tmp_path / "bmx7-wg.toml"
    config.write_bytes(b"# before\n")
    os.chmod(config, 0o640)
    published = ObservedAnnouncement(
        "wg-bmx7", Announcement(KEY.public_key(), 51820, ("10.9.0.0/24",)), True, True
    )
    taken = snapshot.take(_observed(), ("wg0", Publication("/run/bmx7", "wg-bmx7"), published),
                          snapshot.read_config(str(config)))  # fmt: skip
    assert [d.name for d in taken.state.interfaces] == ["wg0"]  # not WireGuard: never touched
    assert "PrivateKey(<redacted>)" in repr(taken) and KEY.to_base64() not in repr(taken)
    assert b"# before" not in repr(taken).encode()
    keep = tmp_path / "keep"
    keep.mkdir(mode=0o700)
    snapshot.save(taken, str(keep))
    for f in keep.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    loaded = snapshot.load(str(keep))
    assert loaded == taken
    assert loaded.state.interfaces[0].peers[PEER.public_key].preshared_key == PSK
    assert loaded.config.mode == 0o640


def test_the_configuration_file_comes_back(tmp_path: Path) -> None:
    config = tmp_path / "bmx7-wg.toml"
    config.write_bytes(b"old\n")
    os.chmod(config, 0o640)
    kept = snapshot.read_config(str(config))
    config.write_bytes(b"new\n")
    os.chmod(config, 0o600)
    assert snapshot.restore_config(kept)
    assert config.read_bytes() == b"old\n" and stat.S_IMODE(config.stat().st_mode) == 0o640
    assert not snapshot.restore_config(kept)  # already as it was
    missing = snapshot.read_config(str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("made by the apply\n")
    assert snapshot.restore_config(missing) and not (tmp_path / "none.toml").exists()
