"""The command line as a user meets it: keys, addresses, exit codes, no tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import bmx7_wg_command, child_env

NODE2 = "89888EDF9B64A255C3AB1CD3CA9AA706C83DFBF9BDD04CCC70914889"  # from the bmx7 fixtures


def cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*bmx7_wg_command(), *args], input=input, capture_output=True, text=True, env=child_env(), timeout=60
    )


def test_address_of_a_node_id() -> None:
    proc = cli("address", NODE2)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "tunnel fd77:8988:8edf:9b64:a255:c3ab:1cd3:ca9a",
        "primary fd70:8988:8edf:9b64:a255:c3ab:1cd3:ca9a",  # as bmx7 itself reports it
    ]
    data = json.loads(cli("address", NODE2.lower(), "--json").stdout)
    assert data["short_id"] == "89888EDF"
    assert data["tunnel_address"] == "fd77:8988:8edf:9b64:a255:c3ab:1cd3:ca9a"


def test_address_rejects_a_bad_node_id() -> None:
    proc = cli("address", "89888EDF")
    assert proc.returncode == 64
    assert "not a BMX7 node id" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(shutil.which("wg") is None, reason="needs wg (wireguard-tools); CI installs it")
def test_keys_are_interchangeable_with_wg() -> None:
    for _ in range(5):
        ours = cli("genkey").stdout.strip()
        theirs = subprocess.run(["wg", "genkey"], capture_output=True, text=True).stdout.strip()
        for key in (ours, theirs):
            wg_pub = subprocess.run(["wg", "pubkey"], input=key, capture_output=True, text=True).stdout
            assert cli("pubkey", input=key + "\n").stdout == wg_pub


def test_pubkey_refuses_garbage() -> None:
    proc = cli("pubkey", input="not a key\n")
    assert proc.returncode == 64
    assert "standard input is not a WireGuard key" in proc.stderr


def test_check_reports_every_error_with_location(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[interface.wg0]\nlisten_port = 0\nmtu = "big"\n[interface.wg0.nope]\n')
    proc = cli("-c", str(path), "check")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"{path}:2:15: interface.wg0.listen_port:")
    assert lines[1].startswith(f"{path}:3:7: interface.wg0.mtu: expected an integer")
    assert lines[-1] == f"bmx7-wg: {len(lines) - 1} error(s); nothing was changed"
    assert any("interface.wg0.nope" in line for line in lines[:-1])
    assert "Traceback" not in proc.stderr


def test_check_of_a_missing_file(tmp_path: Path) -> None:
    proc = cli("-c", str(tmp_path / "none.toml"), "check")
    assert proc.returncode == 2
    assert str(tmp_path / "none.toml") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_usage_errors_exit_64() -> None:
    assert cli().returncode == 64
    assert cli("frobnicate").returncode == 64
    assert cli("apply", "--bogus").returncode == 64


def test_help_documents_exit_codes() -> None:
    out = cli("--help").stdout
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "64"):
        assert f"\n  {code}" in out


VERBS_WITHOUT_NETLINK = [
    ["check"],
    ["genkey"],
    ["address", NODE2],
]


@pytest.mark.parametrize("verb", VERBS_WITHOUT_NETLINK, ids=lambda v: v[0])
def test_light_verbs_do_not_import_pyroute2(verb: list[str], tmp_path: Path) -> None:
    """`import pyroute2` costs 150+ ms: verbs that need no netlink must not pay it."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[interface.wg0]\nlisten_port = 51820\n")
    code = (
        "import sys, contextlib, io\n"
        "from bmx7_wg.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main({['-c', str(cfg), *verb]!r})\n"
        "print(rc, 'pyroute2' in sys.modules)\n"
    )
    proc = subprocess.run(
        [bmx7_wg_command()[0], "-c", code], capture_output=True, text=True, env=child_env(), timeout=60
    )
    assert proc.stdout.split() == ["0", "False"], proc.stderr


# --- JSON output ---------------------------------------------------------------------------


def test_json_output_puts_each_action_on_one_line() -> None:
    from bmx7_wg.cli import format_json

    actions = [
        {"kind": "add_peer", "interface": "wg0", "allowed_ips": ["10.0.0.0/24"], "endpoint": None},
        {"kind": "set_mtu", "interface": "wg0", "mtu": 1420},
    ]
    result = {"changed": True, "check": False, "actions": actions, "refused": [], "empty": {}}
    text = format_json(result)
    assert json.loads(text) == result
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    first = '{"kind": "add_peer", "interface": "wg0", "allowed_ips": ["10.0.0.0/24"], "endpoint": null}'
    assert f"    {first}," in lines
    assert '    {"kind": "set_mtu", "interface": "wg0", "mtu": 1420}' in lines
    assert '  "refused": [],' in lines
    # An action that carries a peer object is still one line.
    nested = {"interface": "wg0", "action": "add_peer", "peer": {"public_key": "k", "allowed_ips": []}}
    assert format_json({"actions": [nested]}).splitlines()[2] == "    " + json.dumps(nested)


def test_json_output_of_show_puts_each_peer_on_one_line() -> None:
    from bmx7_wg.cli import format_json

    peers = [{"public_key": f"k{i}", "allowed_ips": ["10.0.0.0/24"]} for i in range(3)]
    text = format_json({"interfaces": [{"name": "wg0", "peers": peers}]})
    lines = [line.rstrip(",") for line in text.splitlines()]
    for peer in peers:
        assert "        " + json.dumps(peer) in lines


def test_json_output_of_nested_objects_and_odd_values() -> None:
    from bmx7_wg.cli import format_json

    for value in [
        {},
        [],
        {"interfaces": [{"name": "wg0", "peers": [{"public_key": "k", "name": "é\"\n"}]}]},
        [[1], [2, [3]]],
        {"a": {"b": {"c": [1.5, True, None]}}},
        "text",
        7,
    ]:
        assert json.loads(format_json(value)) == value
