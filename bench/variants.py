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
    """rtnetlink through pyroute2's IPRoute (imported when the socket opens, as before)."""
    from bmx7_wg.net import rtnl

    rtnl.RouteSocket = _PyrouteSocket  # type: ignore[misc,assignment]


class _PyrouteSocket:
    """rtnl.RouteSocket's interface, by pyroute2: the calls bmx7-wg made before rtnl.py."""

    def __init__(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        self._error = NetlinkError
        self._ipr: Any = IPRoute()

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import os

        try:
            return fn(*args, **kwargs)
        except self._error as exc:
            raise OSError(exc.code, os.strerror(exc.code)) from None

    def close(self) -> None:
        self._ipr.close()

    def links(self) -> list[Any]:
        return [_link(m) for m in self._call(lambda: list(self._ipr.link("dump")))]

    def link(self, name: str) -> Any:
        import errno

        try:
            msgs = self._call(lambda: list(self._ipr.link("get", ifname=name)))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return _link(msgs[0]) if msgs else None

    def addresses(self) -> list[Any]:
        return [_address(m) for m in self._call(lambda: list(self._ipr.addr("dump")))]

    def routes(self, family: int = 0) -> list[Any]:
        import socket

        # pyroute2 0.7.2 dumps nothing for AF_UNSPEC: one dump per family.
        out = []
        for fam in (socket.AF_INET, socket.AF_INET6):
            out += [_route(m) for m in self._call(lambda f=fam: list(self._ipr.route("dump", family=f)))]
        return out

    def create_link(self, name: str, kind: str) -> None:
        self._call(self._ipr.link, "add", ifname=name, kind=kind)

    def delete_link(self, index: int) -> None:
        self._call(self._ipr.link, "del", index=index)

    def set_link(
        self,
        index: int,
        *,
        alias: str | None = None,
        mtu: int | None = None,
        flags: int = 0,
        change: int = 0,
        addr_gen_mode: int | None = None,
    ) -> None:
        request: dict[str, Any] = {"index": index}
        if alias is not None:
            request["ifalias"] = alias
        if mtu is not None:
            request["mtu"] = mtu
        if change:
            request["flags"], request["change"] = flags, change
        if addr_gen_mode is not None:
            inet6 = {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", addr_gen_mode)]}
            request["IFLA_AF_SPEC"] = {"attrs": [("AF_INET6", inet6)]}
        self._call(self._ipr.link, "set", **request)

    def add_address(self, index: int, family: int, address: bytes, prefixlen: int, flags: int = 0) -> None:
        import socket

        text = socket.inet_ntop(family, address)
        request: dict[str, Any] = {"index": index, "address": text, "prefixlen": prefixlen}
        if flags:
            request["flags"] = flags
        self._call(self._ipr.addr, "add", **request)

    def delete_address(self, index: int, family: int, address: bytes, prefixlen: int) -> None:
        import socket

        text = socket.inet_ntop(family, address)
        self._call(self._ipr.addr, "del", index=index, address=text, prefixlen=prefixlen)

    def add_route(self, *, family: int, dst: bytes, protocol: int, route_type: int, **key: Any) -> None:
        import socket

        self._call(
            self._ipr.route, "add", family=family, dst=socket.inet_ntop(family, dst),
            proto=protocol, type=route_type, **key,
        )

    def delete_route(self, *, family: int, dst: bytes, protocol: int, **key: Any) -> None:
        import socket

        self._call(
            self._ipr.route, "del", family=family, dst=socket.inet_ntop(family, dst), proto=protocol, **key
        )


def _link(msg: Any) -> Any:
    from bmx7_wg.net import rtnl

    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return rtnl.Link(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        kind=kind or None,
        alias=msg.get_attr("IFLA_IFALIAS") or None,
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        flags=int(msg["flags"]),
    )


def _packed(family: int, text: str | None) -> bytes | None:
    import socket

    return None if text is None else socket.inet_pton(family, text)


def _address(msg: Any) -> Any:
    from bmx7_wg.net import rtnl

    family = msg["family"]
    return rtnl.Address(
        family=family,
        index=int(msg["index"]),
        prefixlen=int(msg["prefixlen"]),
        address=_packed(family, msg.get_attr("IFA_ADDRESS")),
        local=_packed(family, msg.get_attr("IFA_LOCAL")),
    )


def _route(msg: Any) -> Any:
    from bmx7_wg.net import rtnl

    family = msg["family"]
    table = msg.get_attr("RTA_TABLE")
    return rtnl.Route(
        family=family,
        table=msg["table"] if table is None else table,
        type=msg["type"],
        protocol=msg["proto"],
        oif=msg.get_attr("RTA_OIF"),
        dst=_packed(family, msg.get_attr("RTA_DST")),
        dst_len=msg["dst_len"],
    )


def _without_fasttoml() -> None:
    """The whole file through tomllib."""
    import tomllib

    from bmx7_wg.config import fasttoml

    fasttoml.loads = tomllib.loads


def _without_fastip() -> None:
    """Canonical addresses and networks decided by ipaddress objects."""
    import ipaddress
    from functools import lru_cache

    from bmx7_wg.base import fastip

    @lru_cache(maxsize=fastip._CACHE_SIZE)
    def canonical_network(text: str) -> tuple[int, int, int] | None:
        try:
            net = ipaddress.ip_network(text)
        except ValueError:
            return None
        if str(net) != text or ("." in text and ":" in text):
            return None
        return net.version, net.prefixlen, int(net.network_address)

    @lru_cache(maxsize=fastip._CACHE_SIZE)
    def canonical_address(text: str) -> int | None:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return None
        return ip.version if str(ip) == text and not ("." in text and ":" in text) else None

    # Before any module of bmx7-wg imports them by name.
    fastip.canonical_network = canonical_network
    fastip.canonical_address = canonical_address


def _without_libcrypto() -> None:
    """Public keys by `cryptography`."""
    from bmx7_wg import keys

    keys._libcrypto = lambda: None  # type: ignore[assignment]


WITHOUT: dict[str, tuple[str, Callable[[], None]]] = {
    # name: (the module the replacement goes into, the replacement)
    "rtnl": ("bmx7_wg.net.rtnl", _without_rtnl),
    "fasttoml": ("bmx7_wg.config.fasttoml", _without_fasttoml),
    "fastip": ("bmx7_wg.base.fastip", _without_fastip),
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
