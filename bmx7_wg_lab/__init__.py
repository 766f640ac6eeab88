"""bmx7-wg-lab: a mesh lab of real bmx7 nodes, each with `bmx7-wg run`, in network namespaces."""
