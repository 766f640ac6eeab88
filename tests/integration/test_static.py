"""The core engine as a user drives it: static peers between namespaces, real WireGuard.

Runs on the userspace backend (wireguard-go) on the host, and on the kernel backend
inside the VM harness (BMX7_WG_TEST_BACKEND=kernel).
"""

from __future__ import annotations

import sys

import pytest

from tests.integration.netns import BACKEND, Lab

pytestmark = pytest.mark.root


def up(lab: Lab) -> None:
    for host in lab.hosts:
        host.write_config(lab.config_for(host))
        result = host.run_json("apply")
        assert result["changed"] is True


def test_two_hosts_ping_through_the_tunnel(lab2: Lab) -> None:
    up(lab2)
    a, b = lab2.hosts
    assert a.ping(b.tunnel_ip)
    assert b.ping(a.tunnel_ip)
    link = a.links()[a.ifname]
    expected_kind = "wireguard" if BACKEND == "kernel" else "tun"
    assert link.get("linkinfo", {}).get("info_kind") == expected_kind
    assert link["ifalias"] == "managed-by=bmx7-wg"
    assert link["mtu"] == 1420


def test_three_hosts_full_mesh(lab3: Lab) -> None:
    up(lab3)
    for host in lab3.hosts:
        for other in lab3.hosts:
            if other is not host:
                assert host.ping(other.tunnel_ip, count=1), f"host{host.index} -> host{other.index}"


def test_second_apply_changes_nothing(lab2: Lab) -> None:
    up(lab2)
    a = lab2.hosts[0]
    before = a.snapshot()
    result = a.run_json("apply")
    assert result == {"changed": False, "check": False, "actions": []}
    assert a.snapshot() == before
    assert a.run("apply").stdout.strip() == "no changes"


def test_one_netlink_stack_per_backend(lab2: Lab) -> None:
    # `import pyroute2` costs ~100 ms per command: with wireguard-go, rtnetlink goes through
    # the standard library (net/rtnl.py) and pyroute2 is never imported; with the kernel's
    # WireGuard, whose generic netlink (wireguard/kernel.py) imports pyroute2 anyway,
    # rtnetlink goes through pyroute2 too (net/pyroute.py): one stack per backend.
    up(lab2)
    a = lab2.hosts[0]
    script = (
        "import sys\n"
        "from bmx7_wg import cli\n"
        "codes = [cli.main(['-c', sys.argv[1], *verb.split()]) for verb in ('apply', 'show', 'plan')]\n"
        "print(codes, 'pyroute2' in sys.modules, 'bmx7_wg.net.pyroute' in sys.modules)\n"
    )
    proc = a.exec(sys.executable, "-c", script, str(a.config_path))
    kernel = BACKEND == "kernel"
    assert proc.stdout.strip().splitlines()[-1] == f"[0, 0, 0] {kernel} {kernel}"


def test_drift_is_repaired(lab2: Lab) -> None:
    up(lab2)
    a, b = lab2.hosts
    assert a.ping(b.tunnel_ip)
    a.exec("wg", "set", a.ifname, "peer", b.public_key, "remove")
    a.exec("ip", "addr", "del", f"{a.tunnel_ip}/24", "dev", a.ifname)
    a.exec("wg", "set", a.ifname, "listen-port", "4444")
    assert not a.ping(b.tunnel_ip, count=1)

    pending = a.run_json("apply", "--check")
    kinds = sorted(x["action"] for x in pending["actions"])
    assert kinds == ["add_address", "add_peer", "set_listen_port"]
    assert pending["changed"] is True
    assert (
        a.exec("wg", "show", a.ifname, "listen-port").stdout.strip() == "4444"
    )  # check mode changed nothing

    repaired = a.run_json("apply")
    assert sorted(x["action"] for x in repaired["actions"]) == kinds
    assert a.exec("wg", "show", a.ifname, "listen-port").stdout.strip() == "51820"
    assert a.ping(b.tunnel_ip)
    assert a.run_json("apply")["changed"] is False


def test_config_changes_keep_the_interface_and_its_session(lab3: Lab) -> None:
    a, b, c = lab3.hosts
    # Start with a and b only; then add c to a's config, change allowed-ips, remove c again.
    for host in (a, b):
        host.write_config(lab3.config_for(host, peers=[b if host is a else a]))
        host.run("apply")
    c.write_config(lab3.config_for(c))
    c.run("apply")
    assert a.ping(b.tunnel_ip)
    ifindex = a.links()[a.ifname]["ifindex"]
    handshake = a.exec("wg", "show", a.ifname, "latest-handshakes").stdout

    a.write_config(lab3.config_for(a))  # peer c added
    result = a.run_json("apply")
    assert [x["action"] for x in result["actions"]] == ["add_peer"]
    assert a.ping(c.tunnel_ip)

    text = lab3.config_for(a).replace(f'"{c.tunnel_ip}/32"', f'"{c.tunnel_ip}/32", "10.78.0.0/24"')
    a.write_config(text)
    result = a.run_json("apply")
    assert [(x["action"], x.get("changed")) for x in result["actions"]] == [
        ("update_peer", ["allowed_ips"]),
        ("add_route", None),
    ]
    route = a.exec("ip", "route", "show", "10.78.0.0/24").stdout
    assert a.ifname in route
    assert "proto 77" in route or "proto bmx7-wg" in route

    a.write_config(lab3.config_for(a, peers=[b]))  # peer c removed
    result = a.run_json("apply")
    assert sorted(x["action"] for x in result["actions"]) == ["remove_peer", "remove_route"]
    assert "10.78.0.0" not in a.exec("ip", "route", "show").stdout

    # The interface was never recreated and the a<->b session survived every change.
    assert a.links()[a.ifname]["ifindex"] == ifindex
    assert b.public_key in handshake
    assert a.exec("wg", "show", a.ifname, "latest-handshakes").stdout.split()[:2] == handshake.split()[:2]


def test_down_spares_foreign_interfaces(lab2: Lab) -> None:
    up(lab2)
    a = lab2.hosts[0]
    foreign = f"fx{lab2.token}"
    # (No dummy module on the host kernel: a veth pair is the foreign interface.)
    a.exec("ip", "link", "add", foreign, "type", "veth", "peer", "name", f"{foreign}w")

    refused = a.run("down", foreign, check=False)
    assert refused.returncode == 4
    assert "not managed by bmx7-wg" in refused.stderr

    a.run("down")
    links = a.links()
    assert a.ifname not in links
    assert foreign in links and f"{foreign}w" in links
    # The interface is gone from the plan's point of view too: apply would create it again.
    assert a.run_json("plan")["actions"][0]["action"] == "create_link"


def test_dropped_interface_is_removed_foreign_one_kept(lab2: Lab) -> None:
    up(lab2)
    a = lab2.hosts[0]
    a.write_config("# nothing declared any more\n")
    result = a.run_json("apply")
    assert [(x["action"], x["interface"]) for x in result["actions"]] == [("delete_link", a.ifname)]
    assert a.ifname not in a.links()


def test_declared_name_taken_by_a_non_wireguard_interface(lab2: Lab) -> None:
    a = lab2.hosts[0]
    a.exec("ip", "link", "add", a.ifname, "type", "bridge")
    a.write_config(lab2.config_for(a))
    before = a.snapshot()
    proc = a.run("apply", check=False)
    assert proc.returncode == 4
    assert "not a WireGuard interface" in proc.stderr
    assert a.snapshot() == before


BAD_CONFIGS = {
    "syntax error": ("[interface.IF\nmtu = 1420\n", ":1:"),
    "port out of range": ("[interface.IF]\nlisten_port = 99999\n", ":2:"),
    "unknown key": ("[interface.IF]\nlisten_prot = 51820\n", "did you mean"),
    "bad CIDR": ('[interface.IF]\naddresses = ["10.77.0.300/24"]\n', ":2:"),
    "malformed peer key": ('[interface.IF]\n[[interface.IF.peer]]\npublic_key = "nope"\n', ":3:"),
    "wrong type": ('[interface.IF]\nmtu = "1420"\n', ":2:"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_changes_nothing(lab2: Lab, case: str) -> None:
    up(lab2)
    a = lab2.hosts[0]
    before = a.snapshot()
    text, where = BAD_CONFIGS[case]
    a.write_config(text.replace("IF", a.ifname))
    for verb in (["check"], ["plan"], ["apply"], ["apply", "--check"]):
        proc = a.run(*verb, check=False)
        assert proc.returncode == 2, (verb, proc.stderr)
        assert f"{a.config_path}:" in proc.stderr and where in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert a.snapshot() == before
    assert a.ping(lab2.hosts[1].tunnel_ip, count=1)


def test_no_private_key_in_any_output(lab2: Lab) -> None:
    a = lab2.hosts[0]
    a.write_config(lab2.config_for(a))
    outputs = [a.run("plan", "--json").stdout, a.run("apply", "--json").stdout]
    outputs += [a.run("show", "--json").stdout, a.run("show").stdout, a.run("plan").stdout]
    private = a.key_path.read_text().strip()
    import base64

    private_hex = base64.b64decode(private).hex()
    for out in outputs:
        assert private not in out
        assert private_hex not in out
    assert a.public_key in outputs[2]


def test_missing_key_file_is_created_0600(lab2: Lab) -> None:
    a = lab2.hosts[0]
    a.key_path.unlink()
    a.write_config(lab2.config_for(a))
    plan = a.run_json("plan")
    assert plan["changed"] is True
    assert not a.key_path.exists()  # plan touches nothing
    a.run("apply")
    assert a.key_path.stat().st_mode & 0o777 == 0o600
    shown = a.run_json("show", a.ifname)["interfaces"][0]
    pub = a.run("pubkey", input=a.key_path.read_text()).stdout.strip()
    assert shown["public_key"] == pub
