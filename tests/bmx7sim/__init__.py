"""A stand-in for bmx7 (control socket, JSON plugin files, SMS delivery, trust dir) for tests.

It lives under tests/, never in the package. See sim.py for what it emulates and
netns.py for an N-node mesh in network namespaces.
"""

from .netns import Mesh, MeshNode
from .sim import SimMesh, SimNode, Timings, make_node_id, primary_ip

__all__ = ["Mesh", "MeshNode", "SimMesh", "SimNode", "Timings", "make_node_id", "primary_ip"]
