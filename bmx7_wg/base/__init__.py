"""The rules the configuration and the mesh share: address text, node ids, SMS names,
DNS names.

The lowest layer: it imports nothing of bmx7_wg, so config, plan and mesh can all use it."""
