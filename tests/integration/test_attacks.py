"""The attack surface: what a hostile mesh node (or a careless local file) can and cannot do.

bmx7-wg runs in a namespace with a real WireGuard interface; bmx7 is played by its
runtime directory (sms/rcvdSms, sms/sendSms) and the stand-in's control socket alone (no
stand-in mesh delivers SMS), so the hostile files are exactly what the test writes and
nothing moves them. What a
received file says is authenticated by BMX7 only as far as its file name's node id.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bmx7_wg import keys
from bmx7_wg.base.nodeid import primary_address, tunnel_address
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.announce import format_announcement
from bmx7_wg.mesh.escape import escape
from tests.bmx7sim.sim import SimNode
from tests.conftest import bmx7_wg_command, child_env
from tests.integration.netns import Host, Lab

pytestmark = pytest.mark.root

FLOOD = int(os.environ.get("BMX7_WG_ATTACK_FLOOD", "5000"))


def node_id() -> str:
    return secrets.token_hex(28).upper()


class _Bmx7Socket(SimNode):
    """The stand-in's control socket, leaving json/ to the test: it does not list the
    originators, so bmx7-wg reads node names from json/originators/, as it does from a
    bmx7 without them."""

    def write_json(self) -> None:
        pass

    def _apply(self, word: str, out: list[str]) -> bool:
        return word != "jshow=originators" and super()._apply(word, out)


class FakeBmx7:
    """bmx7's runtime directory and control socket (bmx7-wg believes bmx7 runs only if it
    answers), without a mesh: what it received is what the test writes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sim = _Bmx7Socket(str(root), "self", node_id=node_id())
        self.sim.start()
        self.own_id = self.sim.node_id
        self.rcvd = root / "sms" / "rcvdSms"

    def stop(self) -> None:
        self.sim.stop()

    def receive(self, sender: str, data: bytes) -> Path:
        path = self.rcvd / f"{sender}:wg-bmx7"
        path.write_bytes(data)
        return path


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Host, FakeBmx7]]:
    lab = Lab(tmp_path, 1)
    lab.make_keys()
    bmx7 = FakeBmx7(tmp_path / "bmx7")
    try:
        yield lab.hosts[0], bmx7
    finally:
        bmx7.stop()
        lab.close()


def mesh_config(host: Host, bmx7: FakeBmx7, *, trust: str, accept: str, extra: str = "") -> None:
    host.write_config(f"""[bmx7]
runtime_dir = "{bmx7.root}"
trust = "{trust}"
{extra}

[interface.{host.ifname}]
mesh = true
backend = "userspace"
private_key_file = "{host.key_path}"
accept_networks = [{accept}]
""")


@contextmanager
def one_mesh_node(tmp_path: Path) -> Iterator[tuple[Host, FakeBmx7]]:
    """One host in its namespace, applied with a mesh interface that trusts every node, and
    the bmx7 stand-in it follows; both gone after the block."""
    lab = Lab(tmp_path, 1)
    lab.make_keys()
    bmx7 = FakeBmx7(tmp_path / "bmx7")
    try:
        host = lab.hosts[0]
        mesh_config(host, bmx7, trust="all", accept="")
        host.run("apply")
        yield host, bmx7
    finally:
        bmx7.stop()
        lab.close()


def allowed_ips(host: Host) -> dict[str, set[str]]:
    out = host.exec("wg", "show", host.ifname, "allowed-ips").stdout
    result = {}
    for line in out.strip().splitlines():
        key, _, ips = line.partition("\t")
        result[key] = set(ips.split()) - {"(none)"}
    return result


def routes(host: Host) -> str:
    return (
        host.exec("ip", "route", "show", "table", "all").stdout
        + host.exec("ip", "-6", "route", "show", "table", "all").stdout
    )


def pubkey() -> str:
    return PrivateKey.generate().public_key()


def test_hostile_node_cannot_take_addresses_or_routes(node: tuple[Host, FakeBmx7]) -> None:
    host, bmx7 = node
    static_key = pubkey()
    # The operator accepts anything under 10.9/16 and every IPv6 network from the mesh,
    # and has one static peer for 10.9.9.0/24.
    mesh_config(host, bmx7, trust="all", accept='"10.9.0.0/16", "::/0"')
    host.write_config(
        host.config_path.read_text()
        + f'[[interface.{host.ifname}.peer]]\npublic_key = "{static_key}"\nallowed_ips = ["10.9.9.0/24"]\n'
    )
    honest, hostile = node_id(), node_id()
    honest_key, hostile_key = pubkey(), pubkey()
    victim_tunnel = f"{tunnel_address(honest)}/128"
    bmx7.receive(honest, format_announcement(honest_key, 40456, ["10.9.1.0/24"]))
    bmx7.receive(
        hostile,
        format_announcement(
            hostile_key,
            40456,
            [
                victim_tunnel,  # the honest node's tunnel address
                "fd77::/16",  # the whole mesh prefix
                "10.0.0.0/8",  # outside accept_networks
                "0.0.0.0/0",  # a default route
                "10.9.9.0/24",  # the static peer's network
                "10.9.9.128/25",  # a more specific part of it
                "10.9.2.0/24",  # a network it may announce
            ],
        ),
    )
    result = host.run_json("apply")
    refused = [r["reason"] for r in result["refused"] if r["node_id"] == hostile]
    assert len(refused) == 6, refused
    have = allowed_ips(host)
    assert have[honest_key] == {victim_tunnel, "10.9.1.0/24"}
    assert have[hostile_key] == {f"{tunnel_address(hostile)}/128", "10.9.2.0/24"}
    assert have[static_key] == {"10.9.9.0/24"}
    table = routes(host)
    assert "10.0.0.0/8" not in table and "default" not in table.split(host.ifname)[0].split("\n")[-1]
    assert "10.9.9.128/25" not in table
    assert host.run_json("apply")["changed"] is False  # and nothing flaps


def test_a_copied_key_or_contested_network_is_never_captured(node: tuple[Host, FakeBmx7]) -> None:
    host, bmx7 = node
    mesh_config(host, bmx7, trust="all", accept='"10.9.0.0/16"')
    honest, thief = node_id(), node_id()
    honest_key = pubkey()
    bmx7.receive(honest, format_announcement(honest_key, 40456, ["10.9.1.0/24"]))
    host.run("apply")
    assert allowed_ips(host)[honest_key] == {f"{tunnel_address(honest)}/128", "10.9.1.0/24"}
    # A thief copies the honest announcement, key and network: it must not get the tunnel.
    # Both claimants are refused (bmx7 cannot tell us which one holds the private key):
    # the price is that a hostile node can take a contested peer down, never capture it.
    bmx7.receive(thief, format_announcement(honest_key, 40456, ["10.9.1.0/24"]))
    result = host.run_json("apply")
    assert {r["node_id"] for r in result["refused"]} == {honest, thief}
    assert allowed_ips(host) == {}
    assert "10.9.1.0" not in routes(host)
    # The same network from a new key: neither node gets it.
    (bmx7.rcvd / f"{thief}:wg-bmx7").write_bytes(format_announcement(pubkey(), 40456, ["10.9.1.0/24"]))
    host.run("apply")
    assert all("10.9.1.0/24" not in ips for ips in allowed_ips(host).values())


def rusage_run(host: Host, *args: str) -> tuple[int, int, str]:
    """Run bmx7-wg; return (exit code, its peak RSS in KiB, stderr)."""
    cmd = ["ip", "netns", "exec", host.ns, *bmx7_wg_command(), "-c", str(host.config_path), *args]
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss, err


def test_large_and_many_announcements_do_not_exhaust_memory(node: tuple[Host, FakeBmx7]) -> None:
    host, bmx7 = node
    friend = node_id()
    mesh_config(host, bmx7, trust="listed", accept='"10.9.0.0/16"', extra=f'trusted = ["{friend}"]')
    friend_key = pubkey()
    bmx7.receive(friend, format_announcement(friend_key, 40456))
    code, baseline, err = rusage_run(host, "apply")
    assert code == 0, err

    # One trusted node sends 1 GiB (a sparse file: what matters is its size), one a FIFO
    # that would block a reader forever, and FLOOD untrusted nodes 1 KiB of noise each.
    big = bmx7.receive(friend, b"")
    os.truncate(big, 1 << 30)
    fifo_sender = node_id()
    os.mkfifo(bmx7.rcvd / f"{fifo_sender}:wg-bmx7")
    noise = b"bmx7-wg 1\n" + b"n" * 1000 + b"\n"
    for _ in range(FLOOD):
        bmx7.receive(node_id(), noise)
    code, peak, err = rusage_run(host, "apply", "--json")
    assert code == 0, err
    # Refusing thousands of strangers costs a few MiB, not their payloads' size.
    assert peak < baseline + 64 * 1024, (baseline, peak)
    out = host.run_json("apply")
    reasons = {r["node_id"]: r["reason"] for r in out["refused"]}
    assert "too large" in reasons[friend]
    assert "not a regular file" in reasons[fifo_sender]
    assert len(reasons) == FLOOD + 2
    # The friend's last good announcement is gone (it sent junk): its peer went with it.
    assert friend_key not in allowed_ips(host)


def test_no_symlink_is_followed_out_of_bmx7_directories(node: tuple[Host, FakeBmx7], tmp_path: Path) -> None:
    host, bmx7 = node
    mesh_config(host, bmx7, trust="all", accept='"10.9.0.0/16"')
    outside = tmp_path / "outside"
    outside.mkdir()
    # A file outside bmx7's directories that would be a valid announcement if followed.
    secret_key = pubkey()
    secret = outside / "secret"
    secret.write_bytes(format_announcement(secret_key, 40456))
    linked = node_id()
    (bmx7.rcvd / f"{linked}:wg-bmx7").symlink_to(secret)
    (bmx7.root / "json" / "originators" / linked).symlink_to(secret)
    # Our own published announcement is a symlink to a file that must not be overwritten.
    victim = outside / "victim"
    victim.write_text("precious\n")
    send = bmx7.root / "sms" / "sendSms" / "wg-bmx7"
    send.symlink_to(victim)

    result = host.run_json("apply")
    refused = {r["node_id"]: r["reason"] for r in result["refused"]}
    assert "symbolic link" in refused[linked]
    assert secret_key not in allowed_ips(host)
    assert victim.read_text() == "precious\n"
    assert not send.is_symlink() and send.read_bytes().startswith(b"bmx7-wg 1\n")
    assert secret_key not in host.run("show").stdout


def test_key_file_created_0600_without_a_window(node: tuple[Host, FakeBmx7], tmp_path: Path) -> None:
    host, _ = node
    state = tmp_path / "state"
    key_path = state / "wg.key"
    host.write_config(
        f'[interface.{host.ifname}]\nbackend = "userspace"\n'
        f'private_key_file = "{key_path}"\nlisten_port = 51820\n'
    )
    # Even with umask 000 the directory and the file are private.
    cmd = ["ip", "netns", "exec", host.ns, "sh", "-c", 'umask 000; exec "$@"', "sh",
           *bmx7_wg_command(), "-v", "--debug", "-c", str(host.config_path), "apply"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    private = key_path.read_text().strip()
    raw_hex = base64.b64decode(private).hex()
    outputs = proc.stdout + proc.stderr
    outputs += host.run("show", "--json").stdout + host.run("plan", "--json").stdout
    outputs += host.run("-v", "--debug", "apply", "--json").stderr
    assert private not in outputs and raw_hex not in outputs

    # A key file others can read is refused, and nothing changes.
    key_path.chmod(0o640)
    before = host.snapshot()
    proc = host.run("apply", check=False)
    assert proc.returncode == 2 and "readable by group or others" in proc.stderr
    assert host.snapshot() == before


def test_key_bytes_are_written_only_into_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process, to see every write: the file is private before its first byte.
    modes: list[int] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        modes.append(os.fstat(fd).st_mode & 0o777)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    old = os.umask(0)
    try:
        key = keys.create_key_file(str(tmp_path / "new" / "wg.key"))
    finally:
        os.umask(old)
    assert modes == [0o600]
    assert (tmp_path / "new" / "wg.key").stat().st_mode & 0o777 == 0o600
    assert key.to_base64() not in repr(key) and key.to_base64() not in str(key)


def test_service_never_logs_the_private_key(node: tuple[Host, FakeBmx7], tmp_path: Path) -> None:
    host, _ = node
    host.write_config(
        f'[interface.{host.ifname}]\nbackend = "userspace"\nkey = "session"\nlisten_port = 51820\n'
        f'addresses = ["{host.tunnel_ip}/24"]\n'
    )
    log = tmp_path / "service.log"
    cmd = [
        "ip",
        "netns",
        "exec",
        host.ns,
        *bmx7_wg_command(),
        "-v",
        "--debug",
        "-c",
        str(host.config_path),
        "run",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=child_env(), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and host.ifname not in host.links():
            time.sleep(0.1)
        dump = ""
        while time.monotonic() < deadline and not dump:
            dump = host.exec("wg", "show", host.ifname, "private-key", check=False).stdout.strip()
            time.sleep(0.1)
        assert dump, log.read_text()
        # A change while running: logged, still without the key.
        host.exec("ip", "addr", "del", f"{host.tunnel_ip}/24", "dev", host.ifname)
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    assert "add address" in text or "add_address" in text, text
    assert dump not in text and base64.b64decode(dump).hex() not in text


def _bmx7_wg(host: Host, config: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    """bmx7-wg -c CONFIG ARGS in the host's namespace; a hang fails the test (timeout)."""
    cmd = ["ip", "netns", "exec", host.ns, *bmx7_wg_command(), "-c", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=30)


def test_config_that_is_a_device_or_a_fifo(node: tuple[Host, FakeBmx7], tmp_path: Path) -> None:
    host, _ = node
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    before = host.snapshot()
    for config, what in (("/dev/zero", "a character device"), (fifo, "a FIFO")):
        for verb in (("check",), ("plan",), ("apply",)):
            proc = _bmx7_wg(host, config, *verb)
            assert proc.returncode == 2, (verb, proc.stderr)
            assert f"{config}:1:1: cannot read the file: it is {what}, not a regular file" in proc.stderr
            assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert host.snapshot() == before


def test_key_file_swapped_for_a_fifo_after_check(node: tuple[Host, FakeBmx7]) -> None:
    host, _ = node
    host.write_config(
        f'[interface.{host.ifname}]\nbackend = "userspace"\n'
        f'private_key_file = "{host.key_path}"\nlisten_port = 51820\n'
    )
    assert host.run("check").returncode == 0
    host.run("apply")
    before = host.snapshot()
    # A local user who could swap the key file puts a FIFO there: every command must
    # refuse it at once (a plain open() waits for a writer forever).
    host.key_path.unlink()
    os.mkfifo(host.key_path, 0o600)
    for verb in (("check",), ("plan",), ("apply",), ("apply", "--check")):
        proc = _bmx7_wg(host, host.config_path, *verb)
        assert proc.returncode == 2, (verb, proc.stderr)
        assert f'"{host.key_path}" is not a regular file (a FIFO)' in proc.stderr
    assert host.snapshot() == before


def test_key_file_owned_by_someone_else(node: tuple[Host, FakeBmx7], tmp_path: Path) -> None:
    host, _ = node
    # A 0600 key that another user placed where the configuration points (a shared
    # directory like /tmp): that user knows the key, so it must not be used.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    planted = shared / "wg.key"
    planted.write_text(PrivateKey.generate().to_base64() + "\n")
    planted.chmod(0o600)
    os.chown(planted, pwd.getpwnam("nobody").pw_uid, -1)
    host.write_config(
        f'[interface.{host.ifname}]\nbackend = "userspace"\n'
        f'private_key_file = "{planted}"\nlisten_port = 51820\n'
    )
    before = host.snapshot()
    for verb in ("check", "plan", "apply"):
        proc = host.run(verb, check=False)
        assert proc.returncode == 2, (verb, proc.stderr)
        assert "is owned by uid" in proc.stderr and "not by root or the user running bmx7-wg" in proc.stderr
    assert host.snapshot() == before
    assert host.ifname not in host.links()


def test_hostile_node_names_reach_no_output_raw(node: tuple[Host, FakeBmx7]) -> None:
    host, bmx7 = node
    mesh_config(host, bmx7, trust="all", accept='"10.9.0.0/16"')
    hostile = "\x1b[2J\x1b[31mowned\nbmx7-wg: peer added\r\u202e"
    named, broken = node_id(), node_id()
    for sender in (named, broken):
        originator = {"nodeId": sender, "name": hostile}
        (bmx7.root / "json" / "originators" / sender).write_text(json.dumps(originator))
    key = pubkey()
    bmx7.receive(named, format_announcement(key, 40456))
    bmx7.receive(broken, f"bmx7-wg 1\nkey {pubkey()}\nport 1\nnet \x1b[31m{hostile}\n".encode())
    outputs = [
        host.run("-v", "apply", check=False),
        host.run("apply", "--json", check=False),
        host.run("plan"),
        host.run("show"),
        host.run("show", "--json"),
    ]
    text = "".join(p.stdout + p.stderr for p in outputs)
    assert "owned" in text and "\\x1b[2J" in text  # the name is shown, escaped
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
    assert not any(line.startswith("bmx7-wg: peer added") for line in text.splitlines())
    # JSON carries the same escaped text (never a raw control character once decoded).
    peers = json.loads(outputs[4].stdout)["interfaces"][0]["peers"]
    assert [p["name"] for p in peers if p["public_key"] == key] == [escape(hostile)]


# --- issue 16: claims that overlap, networks of this node, other namespaces' devices -----


def mesh_routes(host: Host) -> set[str]:
    """Destinations routed into the mesh interface (every table, both families)."""
    out = set()
    for family in ("-4", "-6"):
        shown = host.exec("ip", family, "route", "show", "table", "all", "dev", host.ifname).stdout
        out.update(line.split()[0] for line in shown.splitlines())
    return out


def test_overlapping_claims_capture_nothing(node: tuple[Host, FakeBmx7]) -> None:
    host, bmx7 = node
    mesh_config(host, bmx7, trust="all", accept='"10.0.0.0/8", "172.16.0.0/12"')
    g, h, site = node_id(), node_id(), node_id()
    g_key, h_key, site_key = pubkey(), pubkey(), pubkey()
    bmx7.receive(g, format_announcement(g_key, 40456, ["10.1.0.0/16"]))
    host.run("apply")
    assert allowed_ips(host)[g_key] == {f"{tunnel_address(g)}/128", "10.1.0.0/16"}
    # H repeats G's network and announces one covering it; a third node one inside it.
    bmx7.receive(h, format_announcement(h_key, 40456, ["10.0.0.0/8", "10.1.0.0/16"]))
    bmx7.receive(site, format_announcement(site_key, 40456, ["10.1.7.0/24", "172.16.5.0/24"]))
    result = host.run_json("apply")
    have = allowed_ips(host)
    assert have[g_key] == {f"{tunnel_address(g)}/128"}
    assert have[h_key] == {f"{tunnel_address(h)}/128"}
    assert have[site_key] == {f"{tunnel_address(site)}/128", "172.16.5.0/24"}
    assert not {r for r in mesh_routes(host) if r.startswith("10.1.") or r == "10.0.0.0/8"}
    refused = {(r["node_id"], r["reason"].split("network ")[1].split()[0]) for r in result["refused"]}
    assert refused == {(g, "10.1.0.0/16"), (h, "10.0.0.0/8"), (h, "10.1.0.0/16"), (site, "10.1.7.0/24")}
    assert host.run_json("apply")["changed"] is False
    # When H withdraws, G gets its network back, and the site its /24.
    bmx7.receive(h, format_announcement(h_key, 40456))
    host.run("apply")
    assert allowed_ips(host)[g_key] == {f"{tunnel_address(g)}/128"}  # the site's /24 is inside it
    (bmx7.rcvd / f"{site}:wg-bmx7").unlink()
    host.run("apply")
    assert allowed_ips(host)[g_key] == {f"{tunnel_address(g)}/128", "10.1.0.0/16"}


def test_networks_of_this_node_are_never_pulled_into_the_tunnel(node: tuple[Host, FakeBmx7]) -> None:
    host, bmx7 = node
    # The operator accepts a lot; the host's LAN is 192.0.2.0/24 on eth0, with a router
    # behind which 198.51.100.0/24 lies.
    host.exec("ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.254", "dev", "eth0")
    mesh_config(host, bmx7, trust="all", accept='"0.0.0.0/0", "::/0"')
    hostile, hostile_key = node_id(), pubkey()
    other = node_id()
    asked = [
        "192.0.2.0/24",  # the connected LAN itself (the route add said "File exists")
        "192.0.2.128/25",  # a more specific of the LAN: would pull LAN traffic in silently
        f"{host.underlay}/32",  # this host's own address
        "198.51.100.0/25",  # inside a route via the LAN's router
        "127.0.0.0/8",  # loopback
        "fd70::/16",  # bmx7's underlay: a routing loop
        f"{primary_address(other)}/128",  # another node's primary address
        "::/0",  # covers fd70::/16 and fd77::/16
        "203.0.113.0/24",  # nobody's: granted
    ]
    bmx7.receive(hostile, format_announcement(hostile_key, 40456, asked))
    before = host.exec("ip", "route", "show", "table", "all", "dev", "eth0").stdout
    result = host.run_json("apply")
    refused = {r["reason"].split("network ")[1].split()[0] for r in result["refused"]}
    assert refused == set(asked) - {"203.0.113.0/24"}
    assert allowed_ips(host)[hostile_key] == {f"{tunnel_address(hostile)}/128", "203.0.113.0/24"}
    assert not any(r.startswith(("192.0.2", "198.51", "127.", "fd70", "default")) for r in mesh_routes(host))
    assert host.exec("ip", "route", "show", "table", "all", "dev", "eth0").stdout == before
    assert host.run_json("apply")["changed"] is False


def test_a_node_announcing_our_own_key_is_refused(node: tuple[Host, FakeBmx7]) -> None:
    host, bmx7 = node
    mesh_config(host, bmx7, trust="all", accept='"10.0.0.0/8"')
    mimic = node_id()
    bmx7.receive(mimic, format_announcement(host.public_key, 40456, ["10.3.0.0/16"]))
    result = host.run_json("apply")
    assert [(r["node_id"], r["reason"]) for r in result["refused"]] == [
        (mimic, f"mesh: refused node {mimic[:8]}: announces this node's own public key")
    ]
    assert allowed_ips(host) == {}
    assert "refused node" in host.run("plan").stdout


def test_a_foreign_link_with_our_alias_is_never_deleted(node: tuple[Host, FakeBmx7]) -> None:
    host, _ = node
    host.write_config(
        f'[interface.{host.ifname}]\nbackend = "userspace"\nprivate_key_file = "{host.key_path}"\n'
    )
    host.exec("ip", "link", "add", "br-forged", "type", "bridge")
    host.exec("ip", "tuntap", "add", "dev", "tun-forged", "mode", "tun")
    for link in ("br-forged", "tun-forged"):
        host.exec("ip", "link", "set", link, "alias", "managed-by=bmx7-wg")
    result = host.run_json("apply")
    assert {a["interface"] for a in result["actions"]} == {host.ifname}
    host.run("down")
    assert {"br-forged", "tun-forged"} <= set(host.links())
    assert host.ifname not in host.links()


def test_another_namespaces_device_of_the_same_name_is_not_ours(tmp_path: Path) -> None:
    # /run/wireguard is shared by every namespace: a wireguard-go wg0 in A has its socket
    # where B's bmx7-wg looks for a wg0. Before, a plain TUN named wg0 in B was taken for
    # A's device: `apply` in B adopted it and replaced A's key and peers.
    lab = Lab(tmp_path, 2)
    lab.make_keys()
    try:
        a, b = lab.hosts
        name = a.ifname
        a.write_config(lab.config_for(a, backend="userspace", peers=[b]))
        a.run("apply")
        dump = a.exec("wg", "show", name, "dump").stdout
        b.ifname = name
        b.write_config(lab.config_for(b, backend="userspace", peers=[a]))

        b.exec("ip", "tuntap", "add", "dev", name, "mode", "tun")
        for verb in ("plan", "apply"):
            proc = b.run(verb, check=False)
            assert proc.returncode == 4, proc.stdout + proc.stderr
            assert "not a WireGuard interface" in proc.stderr
        assert a.exec("wg", "show", name, "dump").stdout == dump

        # Without a link in B: a conflict at once, A's daemon untouched.
        b.exec("ip", "link", "del", name)
        started = time.monotonic()
        proc = b.run("apply", check=False)
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert "another network namespace" in proc.stderr
        assert time.monotonic() - started < 10
        assert name not in b.links()
        assert a.exec("wg", "show", name, "dump").stdout == dump
        assert a.run_json("apply")["changed"] is False
    finally:
        lab.close()


def service_caps() -> str:
    """The capabilities systemd/bmx7-wg.service leaves the service (and the wireguard-go
    it starts), as setpriv's --bounding-set."""
    unit = Path(__file__).resolve().parents[2] / "systemd" / "bmx7-wg.service"
    line = next(x for x in unit.read_text().splitlines() if x.startswith("CapabilityBoundingSet="))
    return ",".join(["-all"] + [f"+{c.lower().removeprefix('cap_')}" for c in line.split("=", 1)[1].split()])


def test_the_services_capabilities_are_enough_for_300_peers(tmp_path: Path) -> None:
    lab = Lab(tmp_path, 2)
    lab.make_keys()
    try:
        a, b = lab.hosts
        extra = "".join(
            f'[[interface.{a.ifname}.peer]]\npublic_key = "{pubkey()}"\n'
            f'allowed_ips = ["10.88.{i // 250}.{i % 250}/32"]\n'
            for i in range(299)
        )
        a.write_config(lab.config_for(a, backend="userspace", port=443) + extra)
        b.write_config(lab.config_for(b, backend="userspace", port=443))
        b.run("apply")

        def confined(*args: str) -> subprocess.CompletedProcess[str]:
            cmd = ["ip", "netns", "exec", a.ns, "setpriv", f"--bounding-set={service_caps()}", "--",
                   *bmx7_wg_command(), "-c", str(a.config_path), *args]  # fmt: skip
            return subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=120)

        proc = confined("apply")
        assert proc.returncode == 0, proc.stderr
        assert len(a.exec("wg", "show", a.ifname, "peers").stdout.split()) == 300
        assert a.ping(b.tunnel_ip)
        assert "no changes" in confined("apply").stdout
        # Without CAP_NET_BIND_SERVICE wireguard-go could not bind port 443.
        proc = confined("down")
        assert proc.returncode == 0, proc.stderr
        assert a.ifname not in a.links()
    finally:
        lab.close()


def test_zoned_and_local_networks_among_good_ones(node: tuple[Host, FakeBmx7]) -> None:
    host, bmx7 = node
    mesh_config(host, bmx7, trust="all", accept='"0.0.0.0/0", "fe80::/10", "ff00::/8", "2001:db8::/32"')
    sender, key = node_id(), pubkey()
    local = ["fe80::/64", "169.254.0.0/16", "224.0.0.0/4", "ff02::/16", "127.0.0.0/8"]
    good = ["10.4.0.0/16", "2001:db8:4::/48"]
    # A zoned network makes the whole announcement invalid (the parser refuses it). Before,
    # it reached wireguard-go, which refused it and the whole device change (exit 5).
    path = bmx7.receive(sender, format_announcement(key, 40456, local + good))
    path.write_bytes(path.read_bytes() + b"net fe80::%eth0/64\n")
    result = host.run_json("apply")
    assert [r["node_id"] for r in result["refused"]] == [sender]
    assert "zone" in result["refused"][0]["reason"]
    assert key not in allowed_ips(host)
    # Without it, the local networks go and the good ones stay.
    bmx7.receive(sender, format_announcement(key, 40456, local + good))
    result = host.run_json("apply")
    assert {r["reason"].split("network ")[1].split()[0] for r in result["refused"]} == set(local)
    assert allowed_ips(host)[key] == {f"{tunnel_address(sender)}/128", *good}
    assert host.run_json("apply")["changed"] is False
