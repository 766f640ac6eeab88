from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg.mesh.bmx7 import (
    Bmx7CommandError,
    Bmx7Runtime,
    Bmx7Unavailable,
    NodeInfo,
    Parameter,
    ReceivedCache,
    parse_parameters_json,
    parse_parameters_text,
    parse_status,
    parse_trust_file_name,
    read_trusted_nodes,
)
from bmx7_wg.mesh.liveness import Liveness
from tests.bmx7sim import SimMesh, SimNode

FIXTURES = Path(__file__).resolve().parents[1] / "bmx7sim" / "fixtures"
N1 = "CAD0870E071C0642EBCA29759284D05B7B17A9887A8F6B2BC2D42CA5"
N2 = "89888EDF9B64A255C3AB1CD3CA9AA706C83DFBF9BDD04CCC70914889"


# ------------------------------------------------------------------ parsers, on real output

def test_parse_status_fixture() -> None:
    info = parse_status((FIXTURES / "n1-json" / "status").read_text())
    assert info == NodeInfo(N1, "node1")
    assert info.uptime == 110  # "0:00:01:50": days, hours, minutes, seconds
    jshow = (FIXTURES / "n1-jshow.txt").read_text().splitlines()[1]
    assert parse_status(jshow) == info


def test_parse_status_garbage() -> None:
    with pytest.raises(Bmx7CommandError):
        parse_status("{ \"status\": { } }")
    with pytest.raises(Bmx7CommandError):
        parse_status("nope")


def test_parse_parameters_text_fixture() -> None:
    params = parse_parameters_text((FIXTURES / "n1-parameters.txt").read_text())
    assert params[0] == Parameter("runtimeDir", "/run/bmx7-lab/n1/run")
    assert Parameter("nodeRsaKey", "6", (("keyPath", "/run/bmx7-lab/n1/etc/rsa.der"),)) in params
    assert [p.value for p in params if p.name == "plugin"][:2] == ["bmx7_json.so", "bmx7_sms.so"]
    assert not [p for p in params if p.name in ("syncSms", "trustedNodesDir")]
    # The same node later, with an SMS registered and a tunnel option with a child.
    later = (FIXTURES / "sms-tests.txt").read_text().split("### n1 parameters (-c parameters)\n")[1]
    params = parse_parameters_text(later)
    assert [p.value for p in params if p.name == "syncSms"] == ["wgkey"]
    assert Parameter("tunOut", "any6", (("network", "2001:db8::/32"),)) in params


def test_parse_parameters_json_fixture() -> None:
    n1 = parse_parameters_json((FIXTURES / "n1-json" / "parameters").read_text())
    assert [p.value for p in n1 if p.name == "syncSms"] == ["wgkey"]
    n2 = parse_parameters_json((FIXTURES / "n2-json" / "parameters").read_text())
    assert [p.value for p in n2 if p.name == "trustedNodesDir"] == ["/run/bmx7-lab/n2/etc/trustedNodes"]
    assert [p.value for p in n2 if p.name == "dev"] == ["bx2", "bx3a"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (N1, (N1, 2)),
        (N1.lower(), (N1, 2)),
        (f"{N1}.trust=2.support=2", (N1, 2)),
        (f"{N1}.trust=3.support=3", (N1, 3)),
        (f"{N1}.trust=0", (N1, 0)),
        (f"{N1}.support=0", (N1, 2)),
        (f"{N1}.trust=1", None),  # "recommended" is not allowed in file names
        (f"{N1}.trust=4", None),
        (f"{N1}.trust=22", None),
        (N1[:55], None),
        ("Z" + N1[1:], None),
        (".", None),
        ("README", None),
    ],
)
def test_trust_file_names(name: str, expected: tuple[str, int] | None) -> None:
    assert parse_trust_file_name(name) == expected


def test_read_trusted_nodes(tmp_path: Path) -> None:
    for name in (f"{N1}.trust=3.support=3", f"{N2}.trust=0", "junk", f"{N1}.trust=2"):
        (tmp_path / name).touch()
    assert read_trusted_nodes(str(tmp_path)) == {N1: 2, N2: 0}  # lowest of duplicates
    assert read_trusted_nodes(str(tmp_path / "missing")) == {}


# ------------------------------------------------------------------ files

@pytest.fixture
def runtime(tmp_path: Path) -> Bmx7Runtime:
    for sub in ("sms/sendSms", "sms/rcvdSms", "json/originators"):
        (tmp_path / sub).mkdir(parents=True)
    return Bmx7Runtime(str(tmp_path), timeout=1)


def test_received_reads_and_refuses(runtime: Bmx7Runtime, tmp_path: Path) -> None:
    rcvd = tmp_path / "sms" / "rcvdSms"
    (rcvd / f"{N1}:wg-bmx7").write_bytes(b"hello")
    (rcvd / f"{N1}:other").write_bytes(b"not ours")
    (rcvd / f"{N2}:wg-bmx7").symlink_to("/etc/passwd")
    (rcvd / f"{'A' * 56}:wg-bmx7").write_bytes(b"x" * 2000)
    (rcvd / "garbage:wg-bmx7").write_bytes(b"x")
    os.mkfifo(rcvd / f"{'B' * 56}:wg-bmx7")
    (rcvd / f"{'C' * 56}:wg-bmx7").mkdir()
    files = {f.file_name: f for f in runtime.received("wg-bmx7")}
    assert set(files) == {f"{N1}:wg-bmx7", f"{N2}:wg-bmx7", f"{'A' * 56}:wg-bmx7",
                          "garbage:wg-bmx7", f"{'B' * 56}:wg-bmx7", f"{'C' * 56}:wg-bmx7"}
    ok = files[f"{N1}:wg-bmx7"]
    assert ok.ok and ok.node_id == N1 and ok.data == b"hello"
    assert files[f"{N2}:wg-bmx7"].refusal == "is a symbolic link"
    assert "too large" in (files[f"{'A' * 56}:wg-bmx7"].refusal or "")
    assert files["garbage:wg-bmx7"].node_id is None
    assert files[f"{'B' * 56}:wg-bmx7"].refusal == "is not a regular file"
    assert not files[f"{'C' * 56}:wg-bmx7"].ok


def test_received_with_a_cache_reads_only_changed_files(runtime: Bmx7Runtime, tmp_path: Path) -> None:
    rcvd = tmp_path / "sms" / "rcvdSms"
    (rcvd / f"{N1}:wg-bmx7").write_bytes(b"one")
    (rcvd / f"{N2}:wg-bmx7").write_bytes(b"two")
    cache = ReceivedCache()
    first = {f.node_id: f for f in runtime.received("wg-bmx7", cache=cache)}
    # The same file (same inode, size and times) is not read again: the very same value.
    again = {f.node_id: f for f in runtime.received("wg-bmx7", cache=cache)}
    assert again[N1] is first[N1] and again[N2] is first[N2]
    # A new file (a rename into place, as bmx7 writes) is read; a removed one is forgotten.
    (rcvd / "tmp").write_bytes(b"ONE, longer")
    os.rename(rcvd / "tmp", rcvd / f"{N1}:wg-bmx7")
    (rcvd / f"{N2}:wg-bmx7").unlink()
    third = runtime.received("wg-bmx7", cache=cache)
    assert [(f.node_id, f.data) for f in third] == [(N1, b"ONE, longer")]
    assert set(cache.files) == {f"{N1}:wg-bmx7"}


def test_received_entries_reads_the_named_files(runtime: Bmx7Runtime, tmp_path: Path) -> None:
    rcvd = tmp_path / "sms" / "rcvdSms"
    (rcvd / f"{N1}:wg-bmx7").write_bytes(b"one")
    (rcvd / f"{N2}:wg-bmx7").symlink_to("/etc/passwd")
    cache = ReceivedCache()
    got = runtime.received_entries(
        [f"{N1}:wg-bmx7", f"{N2}:wg-bmx7", f"{'A' * 56}:wg-bmx7", f"{N1}:other"], "wg-bmx7", cache=cache
    )
    assert set(got) == {f"{N1}:wg-bmx7", f"{N2}:wg-bmx7", f"{'A' * 56}:wg-bmx7"}  # other SMS: left out
    one = got[f"{N1}:wg-bmx7"]
    assert one is not None and one.data == b"one"
    link = got[f"{N2}:wg-bmx7"]
    assert link is not None and link.refusal == "is a symbolic link"
    assert got[f"{'A' * 56}:wg-bmx7"] is None  # gone
    # What was read is what a full read with the cache starts from.
    full = {f.file_name: f for f in runtime.received("wg-bmx7", cache=cache)}
    assert full[f"{N1}:wg-bmx7"] is one


def test_a_file_unlinked_between_listing_and_open_is_gone_not_refused(
    runtime: Bmx7Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bmx7 wipes rcvdSms/ when it restarts: a listed file may be gone when it is opened."""
    rcvd = tmp_path / "sms" / "rcvdSms"
    (rcvd / f"{N1}:wg-bmx7").write_bytes(b"one")
    (rcvd / f"{N2}:wg-bmx7").write_bytes(b"two")
    real_listdir = os.listdir

    def listdir_then_wipe(path: int) -> list[str]:
        names = real_listdir(path)
        (rcvd / f"{N2}:wg-bmx7").unlink()
        return names

    monkeypatch.setattr(os, "listdir", listdir_then_wipe)
    files = runtime.received("wg-bmx7", cache=ReceivedCache())
    assert [(f.node_id, f.data, f.refusal) for f in files] == [(N1, b"one", None)]


def test_a_file_rewritten_while_it_is_read_is_read_again(
    runtime: Bmx7Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sms" / "rcvdSms" / f"{N1}:wg-bmx7"
    path.write_bytes(b"the first half")
    real_read = os.read
    rewrites = [b"the whole of the second version"]

    def read_while_written(fd: int, size: int) -> bytes:
        chunk = real_read(fd, size)
        if rewrites:
            path.write_bytes(rewrites.pop())  # in place: the same inode, a new size
        return chunk

    monkeypatch.setattr(os, "read", read_while_written)
    (got,) = runtime.received("wg-bmx7")
    assert got.data == b"the whole of the second version" and got.refusal is None


def test_a_file_that_never_holds_still_counts_as_vanished(
    runtime: Bmx7Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sms" / "rcvdSms" / f"{N1}:wg-bmx7"
    path.write_bytes(b"x")
    real_read = os.read
    writes = [0]

    def read_while_written(fd: int, size: int) -> bytes:
        chunk = real_read(fd, size)
        writes[0] += 1
        path.write_bytes(b"x" * (1 + writes[0] % 2))  # a new size at every read
        return chunk

    monkeypatch.setattr(os, "read", read_while_written)
    assert runtime.received("wg-bmx7") == []
    assert runtime.received_entries([f"{N1}:wg-bmx7"], "wg-bmx7") == {f"{N1}:wg-bmx7": None}


def test_a_file_written_a_moment_ago_is_marked_fresh(runtime: Bmx7Runtime, tmp_path: Path) -> None:
    path = tmp_path / "sms" / "rcvdSms" / f"{N1}:wg-bmx7"
    path.write_bytes(b"x")
    assert [f.fresh for f in runtime.received("wg-bmx7")] == [True]
    old = time.time() - 10
    os.utime(path, (old, old))
    assert [f.fresh for f in runtime.received("wg-bmx7")] == [False]


def test_received_without_directory(tmp_path: Path) -> None:
    assert Bmx7Runtime(str(tmp_path)).received("wg-bmx7") == []


def test_publish_is_atomic_and_idempotent(runtime: Bmx7Runtime, tmp_path: Path) -> None:
    path = tmp_path / "sms" / "sendSms" / "wg-bmx7"
    assert runtime.publish("wg-bmx7", b"one")
    first = path.stat().st_ino
    assert not runtime.publish("wg-bmx7", b"one")
    assert path.stat().st_ino == first  # unchanged: not rewritten
    assert runtime.publish("wg-bmx7", b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path / "sms" / "sendSms") == ["wg-bmx7"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert runtime.withdraw("wg-bmx7")
    assert not runtime.withdraw("wg-bmx7")


def test_publish_without_sms_plugin(tmp_path: Path) -> None:
    with pytest.raises(Bmx7Unavailable, match="SMS plugin"):
        Bmx7Runtime(str(tmp_path)).publish("wg-bmx7", b"x")


@pytest.mark.parametrize("linked", ["sms", "sms/rcvdSms", "sms/sendSms", "json", "json/originators"])
def test_no_symlinked_directory_is_followed(tmp_path: Path, linked: str) -> None:
    # Elsewhere: a tree that would give a peer, a name and a parameter if it were read.
    root, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    for base in (root, elsewhere):
        for sub in ("sms/sendSms", "sms/rcvdSms", "json/originators"):
            (base / sub).mkdir(parents=True, exist_ok=True)
    (elsewhere / "sms" / "rcvdSms" / f"{N1}:wg-bmx7").write_bytes(b"hello")
    (elsewhere / "sms" / "sendSms" / "wg-bmx7").write_bytes(b"precious")
    (elsewhere / "json" / "originators" / "n1").write_text(f'{{"nodeId": "{N1}", "name": "far"}}')
    (elsewhere / "json" / "parameters").write_text(
        '{"OPTIONS": [{"name": "syncSms", "INSTANCES": [{"value": "x"}]}]}'
    )
    target = root / linked
    shutil.rmtree(target)
    target.symlink_to(elsewhere / linked)
    runtime = Bmx7Runtime(str(root), timeout=0.5)
    if linked in ("sms", "sms/rcvdSms"):
        with pytest.raises(Bmx7Unavailable, match="symbolic link, not bmx7's directory"):
            runtime.received("wg-bmx7")
        with pytest.raises(Bmx7Unavailable, match="symbolic link"):
            runtime.received_entries([f"{N1}:wg-bmx7"], "wg-bmx7")
    else:
        assert runtime.received("wg-bmx7") == []
    assert runtime.node_names() == {}  # no socket here: the files only, and not those elsewhere
    with pytest.raises(Bmx7Unavailable):
        runtime.parameters()
    if linked in ("sms", "sms/sendSms"):
        with pytest.raises(Bmx7Unavailable, match="symbolic link"):
            runtime.publish("wg-bmx7", b"mine")
        with pytest.raises(Bmx7Unavailable, match="symbolic link"):
            runtime.withdraw("wg-bmx7")
        with pytest.raises(ValueError, match="symbolic link"):
            runtime.sent("wg-bmx7", 100)
    else:
        assert runtime.publish("wg-bmx7", b"mine") and runtime.sent("wg-bmx7", 100) == b"mine"
    assert (elsewhere / "sms" / "sendSms" / "wg-bmx7").read_bytes() == b"precious"


def test_bad_sms_names_are_refused(runtime: Bmx7Runtime) -> None:
    for name in ("", "a" * 16, "a b", "a/b", "x#"):
        with pytest.raises(ValueError):
            runtime.publish(name, b"x")


# ------------------------------------------------------------------ socket

def test_not_running_is_clear(tmp_path: Path) -> None:
    runtime = Bmx7Runtime(str(tmp_path), timeout=0.5)
    with pytest.raises(Bmx7Unavailable) as info:
        runtime.own_node()
    assert str(info.value) == f"bmx7 is not running (no answer on {tmp_path}/sock: No such file or directory)"
    seen = runtime.liveness()
    assert not seen.answering and seen.reason == "No such file or directory"


def test_stale_socket_is_not_running(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "sock"))
    stale.close()  # the file stays, nobody listens: like a killed bmx7
    with pytest.raises(Bmx7Unavailable, match="bmx7 is not running"):
        Bmx7Runtime(str(tmp_path), timeout=0.5).command("parameters")


def test_stale_json_status_does_not_count_as_running(tmp_path: Path) -> None:
    # A killed bmx7 leaves json/status (and its socket file) behind: only an answer counts.
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "status").write_bytes((FIXTURES / "n1-json" / "status").read_bytes())
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "sock"))
    stale.close()
    runtime = Bmx7Runtime(str(tmp_path), timeout=0.5)
    with pytest.raises(Bmx7Unavailable, match="Connection refused"):
        runtime.own_node()
    assert runtime.liveness() == Liveness(str(tmp_path / "sock"), False, reason="Connection refused")


def test_hung_daemon_times_out(tmp_path: Path, no_hang: None) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "sock"))
    server.listen(1)  # accepts (by the kernel) but never answers
    try:
        with pytest.raises(Bmx7Unavailable, match="no answer within"):
            Bmx7Runtime(str(tmp_path), timeout=0.3).command("parameters")
    finally:
        server.close()


class _DrippingBmx7:
    """A control socket that answers one byte at a time, `every` seconds apart, for ever."""

    def __init__(self, path: Path, every: float) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.every = every
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.recv(2000)
                while not self.done.wait(self.every):
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        break

    def close(self) -> None:
        self.done.set()
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(10)


def test_a_dripping_answer_has_one_deadline(tmp_path: Path) -> None:
    # Before, each byte restarted the timeout: this command never ended.
    dripping = _DrippingBmx7(tmp_path / "sock", every=0.1)
    try:
        raised: list[BaseException] = []

        def ask() -> None:
            try:
                Bmx7Runtime(str(tmp_path), timeout=0.5).command("parameters")
            except BaseException as exc:  # reported below
                raised.append(exc)

        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        asking.join(30)  # a guard: the deadline is 0.5 s
        assert not asking.is_alive(), "the command is still waiting for the end of the answer"
        assert len(raised) == 1 and isinstance(raised[0], Bmx7Unavailable)
        assert "no complete answer within 0.5 s" in str(raised[0])
        seen = Bmx7Runtime(str(tmp_path), timeout=0.5).liveness()
        assert not seen.answering and "no complete answer" in seen.reason
    finally:
        dripping.close()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimNode]:
    mesh = SimMesh(delay=0.0)
    node = mesh.add(SimNode(str(tmp_path / "run"), "node1",
                            trusted_nodes_dir=str(tmp_path / "trusted")))
    (tmp_path / "trusted").mkdir()
    try:
        yield node
    finally:
        mesh.stop()


def test_socket_commands_against_stand_in(sim: SimNode) -> None:
    runtime = Bmx7Runtime(sim.runtime_dir)
    assert runtime.own_node() == NodeInfo(sim.node_id, "node1")
    seen = runtime.liveness()
    assert seen.answering and seen.node_id == sim.node_id
    assert seen.started is not None and abs(seen.started - time.time()) < 3  # it just started
    assert sim.commands[-1] == "jshow=status  #"  # exactly what `bmx7 -c jshow=status` sends
    assert runtime.node_names() == {sim.node_id: "node1"}
    assert runtime.trusted_nodes_dir_of(runtime.parameters()) == sim.trusted_nodes_dir


def test_register_sms_only_once(sim: SimNode) -> None:
    runtime = Bmx7Runtime(sim.runtime_dir)
    assert runtime.register_sms("wg-bmx7")
    assert sim.commands[-1] == "syncSms=wg-bmx7  #"
    assert sim.live_sms == ["wg-bmx7"]
    count = len(sim.commands)
    assert not runtime.register_sms("wg-bmx7")
    assert [c for c in sim.commands[count:] if c.startswith("syncSms")] == []
    assert runtime.unregister_sms("wg-bmx7")
    assert sim.live_sms == []
    assert not runtime.unregister_sms("wg-bmx7")


def test_refused_command_is_an_error(sim: SimNode) -> None:
    with pytest.raises(Bmx7CommandError, match="invalid argument"):
        Bmx7Runtime(sim.runtime_dir).command("syncSms=abcdefghijklmnopq")


def test_a_half_written_announcement_is_held_then_read_again(sim: SimNode, tmp_path: Path) -> None:
    """bmx7 rewrites a file in place in two writes: read between them, its content does not
    parse. Written a moment ago, that is no verdict: the node's announcement is held (its
    peer stays) and the file is named to be read again; the same bytes in a file written
    long ago are a refusal."""
    from bmx7_wg.config import reader
    from bmx7_wg.keys import encode_key
    from bmx7_wg.mesh.announce import format_announcement
    from bmx7_wg.mesh.grace import MeshGrace
    from bmx7_wg.mesh.session import mesh_inputs

    config_path = tmp_path / "mesh.toml"
    config_path.write_text(
        f'[bmx7]\nruntime_dir = "{sim.runtime_dir}"\ntrust = "all"\n\n'
        f'[interface.wm0]\nmesh = true\nprivate_key_file = "{tmp_path / "key"}"\n'
    )
    config = reader.load(str(config_path))
    path = Path(sim.runtime_dir, "sms", "rcvdSms", f"{N2}:wg-bmx7")
    whole = format_announcement(encode_key(bytes([7]) * 32), 40456)
    path.write_bytes(whole)
    past = time.time() - 10
    os.utime(path, (past, past))
    grace = MeshGrace(30)
    first = mesh_inputs(config, grace=grace)
    assert [p.node_id for p in first.inputs["wm0"].peers] == [N2]
    path.write_bytes(whole[: len(whole) // 2])  # the first of two writes
    half = mesh_inputs(config, grace=grace)
    assert [p.node_id for p in half.inputs["wm0"].peers] == [N2]  # held
    assert half.unsettled == [f"{N2}:wg-bmx7"] and half.refusals == []
    os.utime(path, (past, past))  # the same bytes, long ago: the complete content is bad
    done = mesh_inputs(config, grace=grace)
    assert done.inputs["wm0"].peers == () and done.unsettled == []
    assert [n for n, _ in done.refusals] == [N2]
