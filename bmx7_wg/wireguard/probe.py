"""Whether the running kernel has WireGuard, for `backend = "auto"` (engine.choose_implementation):
from files where they answer, so that neither pyroute2 nor a kernel module is loaded for it."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable
from pathlib import Path

from bmx7_wg.errors import Bmx7WgError


def kernel_has_wireguard() -> bool:
    """Whether the running kernel has WireGuard: loaded, built in, or installed as a module.

    Reads files only: it never loads a module (a netlink probe could, via autoloading).
    Except where the module directory is hidden, as systemd's ProtectKernelModules= does
    for the service: there it asks for WireGuard's generic netlink family, which makes
    the kernel load the module if it has one (the service would load it anyway, by
    creating its first WireGuard link).
    """
    release = os.uname().release
    module_dirs = [Path("/lib/modules") / release, Path("/usr/lib/modules") / release]
    if _wireguard_available(Path("/sys/module"), module_dirs, Path("/proc/config.gz")):
        return True
    if any(_hidden(d) for d in module_dirs):
        from bmx7_wg.wireguard.kernel import KernelWireGuard

        try:
            KernelWireGuard().close()  # opening WireGuard's generic netlink family
        except Bmx7WgError:
            return False
        return True
    return False


def _hidden(directory: Path) -> bool:
    """Whether the directory exists but this process may not look inside."""
    try:
        os.listdir(directory)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def _wireguard_available(sys_module: Path, module_dirs: Iterable[Path], config_gz: Path) -> bool:
    if (sys_module / "wireguard").exists():
        return True
    for directory in module_dirs:
        if _lists_module(directory / "modules.builtin", "wireguard"):
            return True
        if _lists_module(directory / "modules.dep", "wireguard"):
            return True
    return _config_builtin(config_gz, "CONFIG_WIREGUARD")


def _lists_module(path: Path, module: str) -> bool:
    """Whether modules.dep / modules.builtin names `module` (compressed or not)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        file_name = line.split(":", 1)[0].strip().rsplit("/", 1)[-1]
        if file_name.split(".ko", 1)[0] == module and ".ko" in file_name:
            return True
    return False


def _config_builtin(config_gz: Path, option: str) -> bool:
    """Whether the kernel's embedded config says `option=y` (for kernels without modules)."""
    try:
        with gzip.open(config_gz, "rt", encoding="utf-8", errors="replace") as config:
            return any(line.strip() == f"{option}=y" for line in config)
    except (OSError, EOFError):
        return False
