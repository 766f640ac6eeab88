"""The man pages build cleanly and keep in step with `--help`, the exit codes and the config schema."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from bmx7_wg import errors
from bmx7_wg.config import model as config_model

REPO = Path(__file__).resolve().parents[2]
MAN = REPO / "man"
BUILD = REPO / "debian" / "scdoc-man"  # the same script debian/rules builds them with
PAGES = {
    "bmx7-wg.8": MAN / "bmx7-wg.8.scd",
    "bmx7-wg.toml.5": MAN / "bmx7-wg.toml.5.scd",
    "bmx7-wg-lab.1": MAN / "bmx7-wg-lab.1.scd",
}

# Keys that are not keys of the file: a table's name, its sub-tables, the loader's bookkeeping.
NOT_KEYS = {"name", "peers"}


def _scd(page: str) -> str:
    return PAGES[page].read_text(encoding="utf-8")


def _help(*args: str) -> str:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    out = subprocess.run(
        [sys.executable, "-m", "bmx7_wg", *args, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    return out.stdout


@cache
def _verbs() -> tuple[str, ...]:
    # argparse lists sub-commands indented by four spaces under "positional arguments".
    return tuple(re.findall(r"^    (\w+)\s", _help(), flags=re.MULTILINE))


def _options(help_text: str) -> set[str]:
    section = help_text.split("options:", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", section)) - {"-h", "--help"}


def _section(text: str, title: str) -> str:
    match = re.search(rf"^# {re.escape(title)}\n(.*?)(?=^# |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"man page has no section {title}"
    return match.group(1)


def test_every_verb_is_documented() -> None:
    verbs = _verbs()
    assert {"check", "plan", "apply", "show", "down", "run", "genkey", "pubkey", "address"} <= set(verbs)
    documented = set(re.findall(r"^\*(\w+)\*", _section(_scd("bmx7-wg.8"), "VERBS"), re.MULTILINE))
    assert set(verbs) == documented


def test_every_global_option_is_documented() -> None:
    options = _section(_scd("bmx7-wg.8"), "OPTIONS")
    for opt in _options(_help()):
        assert f"*{opt}*" in options, f"{opt} missing from OPTIONS in bmx7-wg(8)"


@pytest.mark.parametrize(
    "verb", ["check", "plan", "apply", "show", "down", "run", "address", "confirm", "metrics"]
)
def test_every_verb_option_is_documented(verb: str) -> None:
    verbs = _section(_scd("bmx7-wg.8"), "VERBS")
    entry = re.search(rf"^\*{verb}\*(.*?)(?=^\*\w+\*|\Z)", verbs, re.MULTILINE | re.DOTALL)
    assert entry, f"{verb} missing from VERBS"
    for opt in _options(_help(verb)):
        assert f"*{opt}*" in entry.group(1), f"{verb} {opt} missing from bmx7-wg(8)"


def test_every_exit_code_is_documented() -> None:
    codes = {0, 1} | {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.Bmx7WgError)
    }
    exit_status = _section(_scd("bmx7-wg.8"), "EXIT STATUS")
    documented = {int(c) for c in re.findall(r"^\*(\d+)\*$", exit_status, re.MULTILINE)}
    assert codes == documented
    epilog = _help().split("exit codes:", 1)[1]
    in_help = {int(c) for c in re.findall(r"^  (\d+) ", epilog, re.MULTILINE)}
    assert in_help == documented


def _toml_literal(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return f'"{value}"'
    if value == ():
        return "[]"
    return None


@pytest.mark.parametrize(
    "cls",
    [
        config_model.Bmx7Config,
        config_model.InterfaceConfig,
        config_model.PeerConfig,
        config_model.MetricsConfig,
    ],
)
def test_every_config_key_is_documented_with_its_default(cls: type) -> None:
    page = _scd("bmx7-wg.toml.5")
    for f in dataclasses.fields(cls):
        if f.name in NOT_KEYS and cls is not config_model.PeerConfig:
            continue
        entry = re.search(rf"^\*{f.name}\* \(([^)]*)\)\n((?:\t.*\n|\n)*)", page, re.MULTILINE)
        assert entry, f"{cls.__name__}.{f.name} missing from bmx7-wg.toml(5)"
        assert "Example:" in entry.group(2), f"{f.name} has no example"
        if f.default is dataclasses.MISSING or f.default is None:
            continue
        expected = _toml_literal(f.default)
        assert expected is not None
        assert f"default _{expected}_" in entry.group(1), f"{f.name}: default is {expected}"


def test_mesh_mode_is_explained() -> None:
    mesh = _section(_scd("bmx7-wg.toml.5"), "MESH MODE")
    for word in ("fd77", "fd70", "trust", "accept_networks", "announce"):
        assert word in mesh


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_builds_and_lints_clean(page: str, tmp_path: Path) -> None:
    for tool in ("scdoc", "mandoc", "man"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt install scdoc mandoc man-db)")
    out = tmp_path / page
    subprocess.run([str(BUILD), str(PAGES[page]), str(out)], check=True, timeout=30)
    # STYLE messages are left out: mandoc flags the lower-case title every command's page has.
    lint = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(out)], capture_output=True, text=True)
    assert lint.returncode == 0 and not lint.stdout + lint.stderr, lint.stdout + lint.stderr
    rendered = subprocess.run(
        ["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(out)],
        capture_output=True,
        text=True,
    )
    assert rendered.returncode == 0 and not rendered.stderr, rendered.stderr


def _lab_help(*args: str) -> str:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, "-m", "bmx7_wg_lab", *args, "--help"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    ).stdout  # fmt: skip


def test_every_lab_verb_and_its_options_are_documented() -> None:
    page = _scd("bmx7-wg-lab.1")
    verbs = re.findall(r"^    (\w+)\s", _lab_help(), flags=re.MULTILINE)
    assert set(verbs) == {"up", "status", "fault", "measure", "down"}
    documented = set(re.findall(r"^\*(\w+)\*", _section(page, "VERBS"), re.MULTILINE))
    assert set(verbs) <= documented
    for verb in verbs:
        for opt in _options(_lab_help(verb)):
            assert f"*{opt}*" in page, f"bmx7-wg-lab {verb} {opt} missing from bmx7-wg-lab(1)"
    faults = re.findall(r"^    (\w+)\s", _lab_help("fault"), flags=re.MULTILINE)
    assert {"kill", "restart", "cut", "restore", "revoke", "trust", "rekey", "add", "remove"} <= set(faults)
    for fault in faults:
        assert re.search(rf"^\t?\*{fault}\* [_*]", _section(page, "VERBS"), re.M), f"fault {fault} missing"


def test_every_lab_exit_code_is_documented() -> None:
    from bmx7_wg_lab import errors as lab_errors

    codes = {0, 1} | {
        cls.exit_code
        for cls in vars(lab_errors).values()
        if isinstance(cls, type) and issubclass(cls, lab_errors.LabError)
    }
    exit_status = _section(_scd("bmx7-wg-lab.1"), "EXIT STATUS")
    assert codes == {int(c) for c in re.findall(r"^\*(\d+)\*$", exit_status, re.MULTILINE)}
    epilog = _lab_help().split("exit codes:", 1)[1]
    assert codes == {int(c) for c in re.findall(r"^  (\d+) ", epilog, re.MULTILINE)}
