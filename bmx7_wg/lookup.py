"""`bmx7-wg address NAME`: a mesh node found by the name users type.

A name resolves as the resolver would: through bmx7-wg's block of the hosts file
(NAME.DOMAIN, SHORTID.DOMAIN, or either without the domain). Where the block does not
have it (names are off, or the service has not written it yet), bmx7's view of the mesh
decides: a node whose host name is NAME (only if no other node has it), or whose short
id it is. The node id itself comes from bmx7's view when it knows the node.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmx7_wg.base.dnsname import dns_label
from bmx7_wg.base.nodeid import short_id, tunnel_host
from bmx7_wg.config.model import Config
from bmx7_wg.errors import Bmx7WgError, UsageError
from bmx7_wg.mesh.escape import escape
from bmx7_wg.net import hostsfile


@dataclass(frozen=True)
class FoundNode:
    tunnel_address: str  # fd77:..., no prefix length
    node_id: str | None  # None: the block has the name, bmx7 does not know the node now
    names: tuple[str, ...]


def find_node(config: Config, text: str) -> FoundNode:
    """The mesh node called `text`; UsageError if there is none, or more than one."""
    wanted = text.lower().rstrip(".")
    domain = config.names.domain
    bare = wanted.removesuffix("." + domain)
    if dns_label(bare) != bare:
        raise UsageError(
            f"address: {escape(text)!r} is not a BMX7 node id (56 hex characters) nor a mesh name"
        )
    full = f"{bare}.{domain}"
    known = _node_names(config)
    by_address = {tunnel_host(n).removesuffix("/128"): n for n in known}
    if config.names.hosts_file:
        try:
            block = hostsfile.read(config.names.hosts_file).block or ()
        except Bmx7WgError:
            block = ()
        for address, names in hostsfile.block_names(block).items():
            if full in names:
                return FoundNode(address, by_address.get(address), names)
    matches = sorted(
        n for n, name in known.items() if dns_label(name) == bare or short_id(n).lower() == bare
    )
    if len(matches) == 1:
        return FoundNode(tunnel_host(matches[0]).removesuffix("/128"), matches[0], ())
    if matches:
        raise UsageError(f"address: {len(matches)} mesh nodes are called {bare!r}: give a node id")
    raise UsageError(
        f"address: {bare!r} is not a BMX7 node id (56 hex characters), and no mesh node is called so "
        f"(as {full} in {config.names.hosts_file or 'the hosts file'}, or in bmx7's view)"
    )


def _node_names(config: Config) -> dict[str, str]:
    """Node id -> host name, as bmx7 knows the mesh now ({} without bmx7)."""
    from bmx7_wg.mesh.bmx7 import Bmx7Runtime

    if config.bmx7 is None:
        return {}
    try:
        return Bmx7Runtime(config.bmx7.runtime_dir).node_names()
    except Bmx7WgError:
        return {}
