"""BMX7: its runtime files and control socket, the announcement format, trust and claims."""
