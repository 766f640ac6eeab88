"""Input that `check` must refuse with its position, before apply could trip over it.

IPv6 zones, names that cannot be interfaces, runaway nesting, unusable keys, key files
someone else could swap or block, and `-c` files that are not configuration files.
Each is a located error (PATH:LINE:COL naming the key), and reading never blocks.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from bmx7_wg.config.reader import MAX_CONFIG_SIZE, MAX_DIAGNOSTICS, MAX_KEY_PARTS, MAX_STRUCTURE, load, parse
from bmx7_wg.errors import ConfigError
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.announce import AnnouncementError, parse_announcement
from bmx7_wg.mesh.bmx7 import check_sms_name
from tests.conftest import bmx7_wg_command, child_env

PATH = "/etc/bmx7-wg.toml"
KEY_A = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
ZERO_KEY = "A" * 43 + "="


def errors(text: str, state_dir: str = "/nonexistent") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, PATH, state_dir=state_dir)
    return [str(d) for d in caught.value.diagnostics]


def nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


def key_file(path: Path, content: str | None = None, mode: int = 0o600) -> Path:
    path.write_text(PrivateKey.generate().to_base64() + "\n" if content is None else content)
    path.chmod(mode)
    return path


# ------------------------------------------------------------------ IPv6 zones


def test_zones_are_refused_in_every_address_and_network() -> None:
    text = """\
[interface.wg0]
addresses = ["fe80::1%eth0/64"]
announce_networks = ["fe80::%eth0/64"]
accept_networks = ["10.0.0.0/8", "fe80::%1/64"]
[[interface.wg0.peer]]
public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
endpoint = "[fe80::1%eth0]:51820"
allowed_ips = ["10.9.0.0/24", "fe80::%eth0/64"]
"""
    assert errors(text) == [
        f'{PATH}:2:14: interface.wg0.addresses[0]: "fe80::1%eth0/64" has an IPv6 zone ("%eth0"):'
        " remove it (an interface address has no zone)",
        f'{PATH}:3:22: interface.wg0.announce_networks[0]: "fe80::%eth0/64" has an IPv6 zone ("%eth0"):'
        " remove it (a network has no zone)",
        f'{PATH}:4:34: interface.wg0.accept_networks[1]: "fe80::%1/64" has an IPv6 zone ("%1"):'
        " remove it (a network has no zone)",
        f'{PATH}:7:12: interface.wg0.peer[0].endpoint: "[fe80::1%eth0]:51820" has an IPv6 zone'
        ' ("%eth0"): WireGuard drops it from an endpoint (use an address that is not link-local,'
        " or remove the zone)",
        f'{PATH}:8:31: interface.wg0.peer[0].allowed_ips[1]: "fe80::%eth0/64" has an IPv6 zone'
        ' ("%eth0"): remove it (a network has no zone)',
    ]


def test_a_zone_in_a_mesh_announcement_is_refused() -> None:
    # The same rule (base.iptext.ipv6_zone) keeps the mesh from bringing one in.
    payload = f"bmx7-wg 1\nkey {KEY_A}\nport 51820\nnet fe80::%eth0/64\n".encode()
    with pytest.raises(AnnouncementError, match="has an IPv6 zone"):
        parse_announcement(payload)


# ------------------------------------------------------------------ interface names


def test_names_that_cannot_be_interfaces() -> None:
    text = """\
[interface.all]
[interface.default]
[interface.lo]
[interface.-h]
[interface."wg%d"]
[interface."."]
[interface."a/b"]
[interface."wg 0"]
[interface.wg-with-a-long-name]
[interface.wg0]
"""
    bad = 'is not a valid interface name'
    assert errors(text) == [
        f'{PATH}:1:12: interface.all: "all" {bad} (reserved: /proc/sys/net/*/conf/all means every interface)',
        f'{PATH}:2:12: interface.default: "default" {bad}'
        " (reserved: /proc/sys/net/*/conf/default means interfaces yet to come)",
        f'{PATH}:3:12: interface.lo: "lo" {bad} (reserved: the loopback interface)',
        f'{PATH}:4:12: interface.-h: "-h" {bad} (must not start with "-": tools read it as an option)',
        f'{PATH}:5:12: interface."wg%d": "wg%d" {bad}'
        ' (must not contain "%": the kernel replaces "%d" by a free number)',
        f'{PATH}:6:12: interface.".": "." {bad} (must not be "." or "..")',
        f'{PATH}:7:12: interface."a/b": "a/b" {bad}'
        ' (must not contain "/", ":", whitespace or control characters)',
        f'{PATH}:8:12: interface."wg 0": "wg 0" {bad}'
        ' (must not contain "/", ":", whitespace or control characters)',
        f'{PATH}:9:12: interface.wg-with-a-long-name: "wg-with-a-long-name" {bad} (must be 1-15 characters)',
    ]


# ------------------------------------------------------------------ nesting


@pytest.mark.parametrize("opening", ["[", "{a = "])
def test_runaway_nesting_is_a_located_error(opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    text = "[interface.wg0]\n# [[[[ [ {\naddresses = [\"[[\", " + opening * 5000 + closing * 5000 + "]\n"
    # Level 1 is the addresses array; the 101st level opens at the 100th nested bracket.
    col = len('addresses = ["[[", ') + 99 * len(opening) + 1
    message = "invalid TOML: arrays or inline tables nested more than 100 deep"
    assert errors(text) == [f"{PATH}:3:{col}: {message}"]


# ------------------------------------------------------------------ keys in key files


def test_an_all_zero_private_key_is_refused(tmp_path: Path) -> None:
    # wireguard-go reads an all-zero key as "no key": every plan would set it again.
    zero = key_file(tmp_path / "zero.key", ZERO_KEY + "\n")
    psk = key_file(tmp_path / "zero.psk", ZERO_KEY + "\n")
    text = f"""\
[interface.wg0]
private_key_file = "{zero}"
[[interface.wg0.peer]]
public_key = "{KEY_A}"
preshared_key_file = "{psk}"
"""
    assert errors(text) == [
        f'{PATH}:2:20: interface.wg0.private_key_file: "{zero}" holds an all-zero key, which'
        " WireGuard reads as no key (make one with `bmx7-wg genkey`)",
        f'{PATH}:5:22: interface.wg0.peer[0].preshared_key_file: "{psk}" holds an all-zero key, which'
        " WireGuard reads as no key (make one with `bmx7-wg genkey`)",
    ]


def test_key_files_that_could_be_swapped_or_block(tmp_path: Path, no_hang: None) -> None:
    target = key_file(tmp_path / "target.key")
    (tmp_path / "link.key").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.key", 0o600)
    big = tmp_path / "big.key"
    with open(big, "wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: refused by its size, never read
    big.chmod(0o600)
    theirs = key_file(tmp_path / "theirs.key")
    os.chown(theirs, nobody(), -1)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    in_open_dir = key_file(open_dir / "wg.key")
    text = f"""\
[interface.wg0]
private_key_file = "{tmp_path}/link.key"
[interface.wg1]
private_key_file = "{tmp_path}/fifo.key"
[interface.wg2]
private_key_file = "{big}"
[interface.wg3]
private_key_file = "{theirs}"
[interface.wg4]
private_key_file = "{in_open_dir}"
[interface.wg5]
private_key_file = "{open_dir}/new/wg.key"
"""
    assert errors(text) == [
        f'{PATH}:2:20: interface.wg0.private_key_file: "{tmp_path}/link.key" is a symbolic link'
        " (a key file must be the file itself)",
        f'{PATH}:4:20: interface.wg1.private_key_file: "{tmp_path}/fifo.key" is not a regular file (a FIFO)',
        f'{PATH}:6:20: interface.wg2.private_key_file: "{big}" is larger than 4096 bytes (67108864):'
        " not a key file",
        f'{PATH}:8:20: interface.wg3.private_key_file: "{theirs}" is owned by uid {nobody()},'
        " not by root or the user running bmx7-wg",
        f'{PATH}:10:20: interface.wg4.private_key_file: "{in_open_dir}" is in a directory others can'
        f" write ({open_dir}, mode 0777)",
        # Not there yet, so it would be created: in a directory others could swap it in.
        f'{PATH}:12:20: interface.wg5.private_key_file: "{open_dir}/new/wg.key" is in a directory'
        f" others can write ({open_dir}, mode 0777)",
    ]


def test_a_sticky_shared_directory_is_not_a_problem(tmp_path: Path) -> None:
    # As /tmp: others may create files there but not rename or remove this one.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    good = key_file(shared / "wg.key")
    config = parse(f'[interface.wg0]\nprivate_key_file = "{good}"\n', PATH, state_dir="/nonexistent")
    assert config.interfaces[0].private_key_file == str(good)


# ------------------------------------------------------------------ -c FILE


def test_config_that_is_a_device_fifo_or_too_large(tmp_path: Path, no_hang: None) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as fh:
        fh.truncate(MAX_CONFIG_SIZE + 1)
    cases = {
        "/dev/zero": "/dev/zero:1:1: cannot read the file: it is a character device, not a regular file",
        str(fifo): f"{fifo}:1:1: cannot read the file: it is a FIFO, not a regular file",
        str(tmp_path): f"{tmp_path}:1:1: cannot read the file: it is a directory, not a regular file",
        str(huge): f"{huge}:1:1: cannot read the file: it is larger than 4 MiB"
        f" ({MAX_CONFIG_SIZE + 1} bytes)",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError) as caught:
            load(path)
        assert str(caught.value) == message


def test_a_config_just_under_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "padded.toml"
    path.write_text("[interface.wg0]\n" + "#" * (MAX_CONFIG_SIZE - 100) + "\n")
    assert load(str(path), state_dir="/nonexistent").interfaces[0].name == "wg0"


# ------------------------------------------------------------------ SMS names


@pytest.mark.parametrize(
    "name",
    ["wg-bmx7", "wg.mesh_1", "a", "A" * 15, "A" * 16, "", "-wg", ".wg", "wg.", "a+b", "a@b", "a%b",
     "a=b", "a,b", "a b", "a/b", "x#", "wg\n", "wé"],
)
def test_one_sms_name_rule_for_the_config_and_bmx7(name: str) -> None:
    # Only what bmx7's validate_name_string takes, at most 15 characters, and not a name
    # that `syncSms=-NAME` would read as a removal.
    bmx7_takes = True
    try:
        check_sms_name(name)
    except ValueError:
        bmx7_takes = False
    text = f"[bmx7]\nannounce = {json.dumps(name)}\n"
    try:
        parse(text, PATH)
        config_takes = True
    except ConfigError:
        config_takes = False
    assert config_takes == bmx7_takes
    assert bmx7_takes == (name in ("wg-bmx7", "wg.mesh_1", "a", "A" * 15))


# ------------------------------------------------------------------ keys and tables the parsers choke on


def test_a_50000_part_key_is_a_located_error_at_once(tmp_path: Path) -> None:
    # Found: 100 KB with one 50,000-part dotted key took `check` 46 s and 7 GB.
    path = tmp_path / "huge-key.toml"
    path.write_text("[interface.wg0]\nlisten_port = 51820\n" + "a" + ".a" * 50_000 + " = 1\n")
    started = time.monotonic()
    proc = subprocess.run(
        [*bmx7_wg_command(), "-c", str(path), "check"],
        capture_output=True, text=True, env=child_env(), timeout=60, check=False,
    )
    took = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        f"{path}:3:1: key '{'a.' * 19}..' has more than {MAX_KEY_PARTS} dotted parts"
    ), proc.stderr
    assert took < 10, took  # a guard, far above what it takes (well under a second)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[" + ".".join(["t"] * 17) + "]\n", (1, 2)),
        ("[[" + ".".join(["t"] * 17) + "]]\n", (1, 3)),
        ("[bmx7]\n  " + " . ".join(["t"] * 17) + " = 1\n", (2, 3)),
        ('x = {q = "a", ' + ".".join(['"t"'] * 17) + " = 1}\n", (1, 15)),
        ("# a comment\nx = [\n  {" + ".".join(["t"] * 20) + " = 1},\n]\n", (3, 4)),
    ],
)
def test_a_key_of_too_many_parts_is_located(text: str, where: tuple[int, int]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, PATH)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.col) == where
    assert f"has more than {MAX_KEY_PARTS} dotted parts" in diagnostic.message


@pytest.mark.parametrize(
    "text",
    [
        "[bmx7]\n" + ".".join(["t"] * MAX_KEY_PARTS) + " = 1\n",  # at the bound: unknown, not too long
        'name = "' + ".".join(["t"] * 40) + '"\n',  # in a string
        "# " + ".".join(["t"] * 40) + "\n",  # in a comment
        'x = """\n' + ".".join(["t"] * 40) + ' = 1\n"""\n',  # in a multi-line string
    ],
)
def test_dots_that_are_no_long_key_are_not_refused_for_it(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse("bogus = 1\n" + text, PATH)  # an unknown key, to have an error
    assert "dotted parts" not in str(caught.value)


def test_too_many_tables_is_a_located_error(tmp_path: Path) -> None:
    # 250,001 one-part table headers, well inside the size bound: tomllib would take
    # most of a minute on them.
    path = tmp_path / "tables.toml"
    path.write_text("".join(f"[t{i}]\n" for i in range(MAX_STRUCTURE + 1)))
    proc = subprocess.run(
        [*bmx7_wg_command(), "-c", str(path), "check"],
        capture_output=True, text=True, env=child_env(), timeout=60, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        f"{path}:{MAX_STRUCTURE + 1}:1: more than {MAX_STRUCTURE:,} table headers, arrays, inline tables"
    ), proc.stderr


def test_addresses_in_strings_do_not_count_as_tables() -> None:
    # Dots and brackets in strings are not structure: many addresses are fine.
    key = PrivateKey.generate().public_key()

    def peer(i: int) -> str:
        ips = ", ".join(f'"10.{i // 250}.{i % 250}.{n}/32"' for n in range(20))
        return f'[[interface.wg0.peer]]\npublic_key = "{key[:-4]}{i:03x}="\nallowed_ips = [{ips}]\n'

    # Over the bound if they counted (4,000 x 65), and 60 dots on each allowed_ips line.
    peers = "".join(peer(i) for i in range(4000))
    assert peers.count(".") + peers.count("[") > MAX_STRUCTURE
    config = parse("[interface.wg0]\nlisten_port = 51820\n" + peers, PATH, state_dir="/nonexistent")
    assert len(config.interfaces[0].peers) == 4000


def test_many_problems_are_counted_not_all_listed() -> None:
    text = "[bmx7]\n" + "".join(f"k{i} = 1\n" for i in range(MAX_DIAGNOSTICS + 50))
    with pytest.raises(ConfigError) as caught:
        parse(text, PATH)
    diagnostics = caught.value.diagnostics
    assert len(diagnostics) == MAX_DIAGNOSTICS + 1
    assert diagnostics[-1].message == "... and 50 more problems"
