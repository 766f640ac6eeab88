"""The validated configuration: plain frozen values, produced only by `config.load`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Backend = Literal["auto", "kernel", "userspace"]
KeyMode = Literal["persistent", "session"]
TrustMode = Literal["bmx7", "all", "listed"]

DEFAULT_CONFIG_PATH = "/etc/bmx7-wg.toml"
DEFAULT_STATE_DIR = "/var/lib/bmx7-wg"
DEFAULT_MTU = 1420
DEFAULT_MESH_PORT = 40456
# Seconds a mesh peer whose announcement vanished is kept. Measured on a real three-node
# line: after bmx7 restarts on the middle node, the far node's announcement is back after
# 6-11 s (its fd70 route after 12-17 s); 30 s covers that with room to spare, while a node
# that really left goes ~68 s (bmx7's own timeout) + 30 s after it died.
DEFAULT_GRACE = 30
DEFAULT_HOSTS_FILE = "/etc/hosts"
DEFAULT_NAMES_DOMAIN = "mesh"


@dataclass(frozen=True)
class Endpoint:
    """A peer's endpoint as configured: host may be a name, resolved at apply time."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PeerConfig:
    public_key: str  # base64, validated
    allowed_ips: tuple[str, ...] = ()  # canonical CIDR strings ("10.9.1.0/24"), sorted
    endpoint: Endpoint | None = None
    persistent_keepalive: int = 0  # seconds, 0 = off
    preshared_key_file: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class InterfaceConfig:
    name: str
    private_key_file: str  # defaults to <state dir>/<name>.key
    key: KeyMode = "persistent"
    listen_port: int | None = None  # None: the kernel/wireguard-go picks one (mesh: DEFAULT_MESH_PORT)
    mtu: int = DEFAULT_MTU
    fwmark: int = 0
    addresses: tuple[str, ...] = ()  # canonical interface strings ("10.9.0.1/24"), sorted
    backend: Backend = "auto"
    mesh: bool = False
    announce_networks: tuple[str, ...] = ()  # canonical CIDR strings
    accept_networks: tuple[str, ...] = ()  # canonical CIDR strings
    route_allowed_ips: bool = True  # route each peer's allowed-ips into the interface
    peers: tuple[PeerConfig, ...] = ()


@dataclass(frozen=True)
class Bmx7Config:
    runtime_dir: str = "/var/run/bmx7"
    announce: str = "wg-bmx7"
    trust: TrustMode = "bmx7"
    trusted_nodes_dir: str = "/etc/bmx7/trustedNodes"
    trusted: tuple[str, ...] = ()  # upper-case node ids
    denied: tuple[str, ...] = ()  # upper-case node ids
    grace: int = DEFAULT_GRACE  # seconds a vanished announcement's peer is kept


# Where Debian's prometheus-node-exporter reads textfiles (--collector.textfile.directory).
DEFAULT_METRICS_TEXTFILE = "/var/lib/prometheus/node-exporter/bmx7-wg.prom"


@dataclass(frozen=True)
class MetricsConfig:
    textfile: str = DEFAULT_METRICS_TEXTFILE  # "" : the service writes no metrics file


@dataclass(frozen=True)
class NamesConfig:
    """Mesh peers' names in a marked block of a hosts file (mesh/names.py, net/hostsfile.py)."""

    hosts_file: str = DEFAULT_HOSTS_FILE  # "": no names are written
    domain: str = DEFAULT_NAMES_DOMAIN  # lower-case DNS name: peers are NAME.DOMAIN, SHORTID.DOMAIN


@dataclass(frozen=True)
class Config:
    path: str
    interfaces: tuple[InterfaceConfig, ...] = ()
    bmx7: Bmx7Config | None = None
    names: NamesConfig = field(default_factory=NamesConfig)
    metrics: MetricsConfig = MetricsConfig()
    # Source positions are kept out of equality: two identical configs compare equal.
    positions: Mapping[tuple[str | int, ...], tuple[int, int]] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )
