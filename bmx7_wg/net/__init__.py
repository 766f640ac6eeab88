"""rtnetlink: links, addresses and routes."""
