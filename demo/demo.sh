#!/bin/bash
# The built-in example: two hosts (network namespaces) joined by a veth link get a real
# WireGuard tunnel from `bmx7-wg apply`, ping through it, and `bmx7-wg show` it.
#   demo/demo.sh up      set it up (installs what it needs first)
#   demo/demo.sh clean   remove it
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$REPO/.cache/demo
NS_A=bmx7wg-demo-a
NS_B=bmx7wg-demo-b

bmx7wg() {  # bmx7wg NAMESPACE ARGS...: the command as a user runs it, inside a namespace
    local ns=$1; shift
    ip netns exec "$ns" env PYTHONPATH="$REPO" /usr/bin/python3 -m bmx7_wg "$@"
}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

clean() {
    for ns in $NS_A $NS_B; do
        if ip netns list | grep -qw "$ns"; then
            bmx7wg "$ns" -c "$WORK/$ns.toml" down >/dev/null 2>&1 || true
            ip netns del "$ns"
        fi
    done
    rm -rf "$WORK"
}

install_deps() {
    "$(dirname "$0")/../scripts/ensure-packages" wireguard-go wireguard-tools iproute2 iputils-ping python3 python3-pyroute2 python3-cryptography
}

up() {
    [ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
    install_deps
    clean
    mkdir -p "$WORK"; chmod 700 "$WORK"

    say "two hosts: $NS_A (192.0.2.1) and $NS_B (192.0.2.2) on one veth link"
    ip netns add $NS_A; ip netns add $NS_B
    ip -n $NS_A link set lo up; ip -n $NS_B link set lo up
    ip -n $NS_A link add eth0 type veth peer name eth0 netns $NS_B
    ip -n $NS_A addr add 192.0.2.1/24 dev eth0; ip -n $NS_A link set eth0 up
    ip -n $NS_B addr add 192.0.2.2/24 dev eth0; ip -n $NS_B link set eth0 up

    say "keys: bmx7-wg genkey / pubkey (interchangeable with wg genkey / wg pubkey)"
    for ns in $NS_A $NS_B; do
        (umask 077; bmx7wg $ns genkey > "$WORK/$ns.key")
    done
    PUB_A=$(bmx7wg $NS_A pubkey < "$WORK/$NS_A.key")
    PUB_B=$(bmx7wg $NS_B pubkey < "$WORK/$NS_B.key")
    echo "$NS_A: $PUB_A"; echo "$NS_B: $PUB_B"

    write_config $NS_A demoa 10.77.0.1 "$PUB_B" 192.0.2.2 10.77.0.2
    write_config $NS_B demob 10.77.0.2 "$PUB_A" 192.0.2.1 10.77.0.1
    say "$WORK/$NS_A.toml"
    cat "$WORK/$NS_A.toml"

    say "bmx7-wg check"
    bmx7wg $NS_A -c "$WORK/$NS_A.toml" check
    say "bmx7-wg plan  ($NS_A)"
    bmx7wg $NS_A -c "$WORK/$NS_A.toml" plan
    for ns in $NS_A $NS_B; do
        say "bmx7-wg apply  ($ns)"
        bmx7wg $ns -c "$WORK/$ns.toml" apply
    done
    say "ping through the tunnel: $NS_A -> 10.77.0.2"
    ip netns exec $NS_A ping -c 3 -i 0.2 -W 2 10.77.0.2
    say "bmx7-wg apply again: nothing to change"
    bmx7wg $NS_A -c "$WORK/$NS_A.toml" apply
    say "bmx7-wg show  ($NS_A)"
    bmx7wg $NS_A -c "$WORK/$NS_A.toml" show
    say "done; remove it with: make demo-clean"
}

write_config() {  # NS IFNAME OWN_IP PEER_PUB PEER_UNDERLAY PEER_IP
    cat > "$WORK/$1.toml" <<CONF
# bmx7-wg demo: one WireGuard interface with one static peer.
[interface.$2]
private_key_file = "$WORK/$1.key"
listen_port = 51820
addresses = ["$3/24"]
backend = "auto"          # the kernel's WireGuard if it has one, else wireguard-go

[[interface.$2.peer]]
name = "the other host"
public_key = "$4"
endpoint = "$5:51820"
allowed_ips = ["$6/32"]
persistent_keepalive = 25
CONF
}

case "${1:-up}" in
    up) up ;;
    clean) clean; echo "demo removed" ;;
    *) echo "usage: $0 up|clean" >&2; exit 64 ;;
esac
