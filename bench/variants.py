"""Run bmx7-wg with one hand-written speed path replaced by the library it stands in for.

    python -m bench.variants VARIANT BMX7-WG-ARGUMENTS...

VARIANT is "fast" (the code as it is) or one of WITHOUT's names. Each replacement keeps
the behaviour (the same result, by the library's route) and costs what that library
costs, imports included: bench/paths.py times the same commands under each variant.
Only the standard library is imported before bmx7-wg's own start-up, so that "fast" costs
what `python -m bmx7_wg` costs.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from typing import Any


def _without_rtnl() -> None:
    """rtnetlink through pyroute2's IPRoute: net/pyroute.py, the kernel backend's socket
    (imported when the socket opens)."""
    from bmx7_wg.net import rtnl
    from bmx7_wg.net.pyroute import PyrouteSocket

    rtnl.RouteSocket = PyrouteSocket  # type: ignore[misc,assignment]


def _without_libcrypto() -> None:
    """Public keys by `cryptography`."""
    from bmx7_wg import keys

    keys._libcrypto = lambda: None  # type: ignore[assignment]


WITHOUT: dict[str, tuple[str, Callable[[], None]]] = {
    # name: (the module the replacement goes into, the replacement)
    "rtnl": ("bmx7_wg.net.rtnl", _without_rtnl),
    "libcrypto": ("bmx7_wg.keys", _without_libcrypto),
}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `patch` right after `module` is first imported, before whoever imported it
    goes on: a command that never imports the module pays nothing for the replacement,
    and `from module import name` already sees the replaced name."""

    def __init__(self, module: str, patch: Callable[[], None]) -> None:
        self.module = module
        self.patch = patch

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != self.module:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.loader is not None
        execute = spec.loader.exec_module
        patch = self.patch

        def exec_module(module: Any) -> None:
            execute(module)
            patch()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def main() -> int:
    variant, args = sys.argv[1], sys.argv[2:]
    if variant != "fast":
        sys.meta_path.insert(0, _AfterImport(*WITHOUT[variant]))
    from bmx7_wg import cli

    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
