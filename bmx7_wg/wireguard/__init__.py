"""The WireGuard devices: wireguard-go over its UAPI socket, and kernel WireGuard over generic netlink."""
