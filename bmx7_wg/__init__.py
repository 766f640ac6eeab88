"""bmx7-wg: declarative WireGuard tunnels for BMX7 meshes and Linux servers."""

__version__ = "0.1.0"
