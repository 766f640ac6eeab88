#!/bin/bash
# The demos (run as root; each installs what it needs first):
#   demo/demo.sh mesh     `make demo`: a BMX7 mesh in a line of network namespaces, `bmx7-wg run` on
#                         every node; the nodes find each other and form WireGuard tunnels by themselves
#   demo/demo.sh static   `make demo-static`: two hosts, one static tunnel from `bmx7-wg apply`
#   demo/demo.sh clean    `make demo-clean`: remove either (namespaces, and every process it started)
# The mesh runs the real bmx7: BMX7=/path/to/bmx7 (or BMX7=bmx7, the one on PATH; its plugins are
# found as bmx7 finds them: BMX7_LIB_PATH, else a lib/ beside the binary, else bmx7's default), else
# the build of scripts/build-bmx7 from the pinned source. The stand-in of tests/bmx7sim plays bmx7
# only with BMX7=stand-in, or when that build fails (the screen says so). DEMO_NODES=N makes a
# longer line (N >= 3).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$REPO/.cache/demo
PREFIX=bmx7wg-demo-
PY=/usr/bin/python3            # Debian's python3: the interpreter the package runs with
N=${DEMO_NODES:-3}
WAIT=${DEMO_WAIT:-60}          # seconds to wait for the mesh to form

bmx7wg() {  # bmx7wg NAMESPACE ARGS...: the command as a user runs it, inside a namespace
    local ns=$1; shift
    ip netns exec "$ns" env PYTHONPATH="$REPO" "$PY" -m bmx7_wg "$@"
}

if [ -t 1 ]; then B=$'\033[1m' R=$'\033[0m'; else B="" R=""; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$R"; }
note() { printf '   %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (it creates network namespaces)"; }

install_deps() {
    scripts/ensure-packages wireguard-go wireguard-tools iproute2 iputils-ping python3 python3-pyroute2 \
        python3-cryptography
}

# ---------------------------------------------------------------- processes, by their PIDs

start_time() {  # start_time PID: when the process started (field 22 of /proc/PID/stat; exec keeps it)
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

started() {  # started PID: remember a process this demo started, with its start time
    printf '%s %s\n' "$1" "$(start_time "$1")" >> "$WORK/pids"
}

ours() {  # ours PID START: is PID still the process we started (not a reused PID)?
    [ -n "$2" ] && [ "$(start_time "$1")" = "$2" ]
}

stop_recorded() {
    [ -f "$WORK/pids" ] || return 0
    local pid cmd left
    while read -r pid cmd; do
        ! ours "$pid" "$cmd" || kill -TERM "$pid" 2>/dev/null || true
    done < "$WORK/pids"
    for _ in $(seq 50); do
        left=0
        while read -r pid cmd; do ! ours "$pid" "$cmd" || left=1; done < "$WORK/pids"
        [ $left = 0 ] && return 0
        sleep 0.1
    done
    while read -r pid cmd; do ! ours "$pid" "$cmd" || kill -KILL "$pid" 2>/dev/null || true; done < "$WORK/pids"
}

clean() {
    stop_recorded
    local ns link pid
    for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX" || true); do
        # Deleting its link stops a wireguard-go; then whatever still runs in the namespace
        # (only this demo starts anything there), then the namespace.
        for link in $(ip -n "$ns" -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
            [ "$link" = lo ] || ip -n "$ns" link del "$link" 2>/dev/null || true
        done
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
        ip netns del "$ns"
    done
    rm -rf /etc/netns/"$PREFIX"* "$WORK"
}

# ---------------------------------------------------------------- bmx7, real or stand-in

pick_bmx7() {
    REAL="" LIBS=""
    case "${BMX7:-}" in
        stand-in)
            note "bmx7: the stand-in of tests/bmx7sim, as BMX7=stand-in asks (SMS, control socket, json/,"
            note "      fd70 routes through the middle nodes, with the delays measured on a real bmx7)."
            return ;;
        "")
            # The real bmx7, built from its pinned source (a shared copy of it, or downloaded).
            note "bmx7: building the real one from its pinned source (scripts/build-bmx7; once, about a minute)"
            if REAL=$(scripts/build-bmx7 2> "$WORK/build-bmx7.log"); then
                REAL=$(printf '%s\n' "$REAL" | tail -n 1)
            else
                REAL=""
                sed 's/^/   | /' "$WORK/build-bmx7.log" | tail -n 8
                note "${B}bmx7: THE BUILD FAILED, so this demo runs the STAND-IN of tests/bmx7sim, not bmx7.${R}"
                note "      (it plays bmx7's SMS, control socket, json/ and fd70 routes with measured delays)"
                note "      For the real one: fix the build above, or BMX7=/path/to/bmx7 make demo"
                return
            fi ;;
        *)
            REAL=$BMX7
            [ -x "$REAL" ] || REAL=$(command -v "$REAL" || true)
            [ -n "$REAL" ] && [ -x "$REAL" ] || die "BMX7=${BMX7:-} is not an executable (BMX7=stand-in for the stand-in)" ;;
    esac
    LIBS=${BMX7_LIB_PATH:-}
    [ -n "$LIBS" ] || [ ! -e "$(dirname "$REAL")/lib/bmx7_json.so" ] || LIBS=$(dirname "$REAL")/lib
    note "bmx7: the real one, $REAL${LIBS:+ (plugins: BMX7_LIB_PATH=$LIBS)}"
}

bmx7c() {  # bmx7c I WORDS...: bmx7 -c on node I, over its control socket
    local run=$WORK/node$1/run; shift
    if [ -n "$REAL" ]; then
        env ${LIBS:+BMX7_LIB_PATH=$LIBS} "$REAL" --runtimeDir="$run" -c "$@"
    else
        "$PY" tests/bmx7sim/bmx7 --runtimeDir="$run" -c "$@"
    fi
}

start_bmx7() {
    local i devs
    if [ -z "$REAL" ]; then
        local names=()
        for i in $(seq "$N"); do names+=("${PREFIX}n$i"); done
        # Runs in the root namespace: it only writes files and sets routes inside the namespaces.
        PYTHONPATH="$REPO" setsid "$PY" -m tests.bmx7sim serve --dir "$WORK" --ready "$WORK/nodes.json" \
            "${names[@]}" > "$WORK/bmx7.log" 2>&1 < /dev/null &
        started $!
        for _ in $(seq 100); do [ -f "$WORK/nodes.json" ] && break; kill -0 $! 2>/dev/null || break; sleep 0.1; done
        [ -f "$WORK/nodes.json" ] || { cat "$WORK/bmx7.log" >&2; die "the bmx7 stand-in did not start"; }
        return
    fi
    for i in $(seq "$N"); do
        mkdir -p "$WORK/node$i/run" "$WORK/node$i/etc"
        devs=()
        [ "$i" -gt 1 ] && devs+=("dev=bx$((i - 1))")
        [ "$i" -lt "$N" ] && devs+=("dev=bx$((i + 1))")
        # DESIGN.md "Running a real bmx7": --runtimeDir first, dev= last.
        ip netns exec "${PREFIX}n$i" env ${LIBS:+BMX7_LIB_PATH=$LIBS} setsid "$REAL" --runtimeDir="$WORK/node$i/run" \
            plugin=bmx7_json.so plugin=bmx7_sms.so debug=0 nodeRsaKey=6 /keyPath="$WORK/node$i/etc/rsa.der" \
            hostname="node$i" syslog=0 descSqnPath="$WORK/node$i/etc/descSqn" jsonUpdateInterval=1000 "${devs[@]}" \
            > "$WORK/node$i/bmx7.log" 2>&1 < /dev/null &
        started $!
    done
    for i in $(seq "$N"); do
        for _ in $(seq 150); do bmx7c "$i" jshow=status >/dev/null 2>&1 && break; sleep 0.2; done
        bmx7c "$i" jshow=status >/dev/null 2>&1 || { tail "$WORK/node$i/bmx7.log" >&2; die "bmx7 on node$i does not answer"; }
    done
}

node_id() {  # node_id I: bmx7's node id of node I
    bmx7c "$1" jshow=status | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["status"]["nodeId"])'
}

# ---------------------------------------------------------------- the mesh demo

log_since() {  # log_since LINES TEXT: node1's service log after its first LINES lines, once TEXT is in it
    local deadline=$((SECONDS + 5))
    until tail -n +"$(($1 + 1))" "$WORK/node1/bmx7-wg.log" | grep -q "$2" || [ $SECONDS -ge $deadline ]; do
        sleep 0.05
    done
    tail -n +"$(($1 + 1))" "$WORK/node1/bmx7-wg.log" | sed 's/^/   | /'
}

peers_of() {  # peers_of I: how many WireGuard peers node I has
    ip netns exec "${PREFIX}n$1" wg show "wgmesh-n$1" peers 2>/dev/null | grep -c . || true
}

wait_peers() {  # wait_peers I COUNT: until node I has COUNT peers (at most $WAIT s)
    local deadline=$((SECONDS + WAIT))
    until [ "$(peers_of "$1")" = "$2" ]; do
        [ $SECONDS -lt $deadline ] || die "node$1 has $(peers_of "$1") peers, not $2, after ${WAIT} s (logs: $WORK/node$1/)"
        sleep 0.1
    done
}

mesh() {
    need_root
    [ "$N" -ge 3 ] || die "DEMO_NODES must be 3 or more (so that a pair crosses a hop)"
    install_deps
    clean
    mkdir -p "$WORK"; chmod 700 "$WORK"
    local i t0 last=$N ids=() line="node1"
    for i in $(seq 2 "$N"); do line="$line - node$i"; done

    say "a BMX7 mesh of $N nodes in a line: $line"
    note "network namespaces ${PREFIX}n1 ... ${PREFIX}n$N, a veth between neighbours (bxJ leads to node J):"
    note "node1 and node$N reach each other only through the nodes between them"
    pick_bmx7
    for i in $(seq "$N"); do
        ip netns add "${PREFIX}n$i"
        ip -n "${PREFIX}n$i" link set lo up
        mkdir -p "$WORK/node$i"
        # The namespace's own hosts file (ip netns exec shows it as /etc/hosts): the names go there.
        mkdir -p "/etc/netns/${PREFIX}n$i"
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' > "/etc/netns/${PREFIX}n$i/hosts"
        # No duplicate address detection: link-local addresses usable at once. Forwarding on,
        # as bmx7 needs it to carry traffic between its neighbours.
        ip netns exec "${PREFIX}n$i" sh -c 'echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad;
            echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad; echo 1 > /proc/sys/net/ipv6/conf/all/forwarding'
    done
    for i in $(seq $((N - 1))); do
        ip link add "bx$((i + 1))" netns "${PREFIX}n$i" type veth peer name "bx$i" netns "${PREFIX}n$((i + 1))"
        ip -n "${PREFIX}n$i" link set "bx$((i + 1))" up
        ip -n "${PREFIX}n$((i + 1))" link set "bx$i" up
    done
    start_bmx7
    for i in $(seq "$N"); do
        ids+=("$(node_id "$i")")
        note "node$i  id ${ids[i - 1]}  fd70 $(bmx7wg "${PREFIX}n1" address "${ids[i - 1]}" | awk '/^primary/ {print $2}')"
    done

    # node1 follows bmx7's trusted nodes: a directory with one file per trusted node id.
    mkdir -p "$WORK/node1/trustedNodes"
    for i in $(seq "$N"); do touch "$WORK/node1/trustedNodes/${ids[i - 1]}"; done
    bmx7c 1 trustedNodesDir="$WORK/node1/trustedNodes" > /dev/null

    for i in $(seq "$N"); do
        cat > "$WORK/node$i/bmx7-wg.toml" <<CONF
# bmx7-wg on node$i: its peers come from the BMX7 mesh
[bmx7]
runtime_dir = "$WORK/node$i/run"

[names]
hosts_file = "/etc/netns/${PREFIX}n$i/hosts"

[interface.wgmesh-n$i]
mesh = true
private_key_file = "$WORK/node$i/wgmesh.key"
CONF
    done
    say "the configuration of node1 ($WORK/node1/bmx7-wg.toml); the others differ only in names"
    grep -v '^#' "$WORK/node1/bmx7-wg.toml"

    say "bmx7-wg run on every node (as the service runs; logs in $WORK/nodeI/bmx7-wg.log)"
    t0=$SECONDS
    for i in $(seq "$N"); do
        # BMX7_WG_RUN_DIR: each node's remembered mesh view stays in the demo's own directory
        # (not the machine's /run/bmx7-wg), so demo-clean leaves nothing behind.
        ip netns exec "${PREFIX}n$i" env PYTHONPATH="$REPO" BMX7_WG_RUN_DIR="$WORK/node$i/state" \
            setsid "$PY" -m bmx7_wg -c "$WORK/node$i/bmx7-wg.toml" run \
            > "$WORK/node$i/bmx7-wg.log" 2>&1 < /dev/null &
        started $!
    done
    for i in $(seq "$N"); do wait_peers "$i" $((N - 1)); done
    note "every node has the $((N - 1)) others as WireGuard peers, after $((SECONDS - t0)) s:"
    for i in $(seq "$N"); do
        note "node$i: $(ip netns exec "${PREFIX}n$i" wg show "wgmesh-n$i" peers | wc -l) peers on wgmesh-n$i"
    done

    local far
    far=$(bmx7wg "${PREFIX}n1" address "${ids[last - 1]}" | awk '/^tunnel/ {print $2}')
    say "ping from node1 to node$N's tunnel address $far by its name node$N.mesh (WireGuard, its endpoint routed by bmx7 through node2)"
    for _ in $(seq 100); do grep -q "[[:space:]]node$N.mesh" "/etc/netns/${PREFIX}n1/hosts" && break; sleep 0.1; done
    grep -A "$N" '^# BEGIN bmx7-wg' "/etc/netns/${PREFIX}n1/hosts" | sed 's/^/   | /'
    ip netns exec "${PREFIX}n1" ping -c 3 -i 0.2 -W 2 -w 20 "node$N.mesh"

    local short=${ids[last - 1]:0:8} mark
    say "trust: node1 stops trusting node$N (rm $WORK/node1/trustedNodes/$short...)"
    mark=$(wc -l < "$WORK/node1/bmx7-wg.log")
    rm "$WORK/node1/trustedNodes/${ids[last - 1]}"
    wait_peers 1 $((N - 2))
    note "node1 has $(peers_of 1) peer(s) now; node$N's is gone. Its log says why:"
    log_since "$mark" "$short"
    say "trust restored (touch $WORK/node1/trustedNodes/$short...)"
    mark=$(wc -l < "$WORK/node1/bmx7-wg.log")
    touch "$WORK/node1/trustedNodes/${ids[last - 1]}"
    wait_peers 1 $((N - 1))
    log_since "$mark" "add peer"
    if ip netns exec "${PREFIX}n1" ping -c 1 -W 2 -w 10 "$far" > /dev/null; then note "node1 reaches node$N again"
    else note "node1 does not reach node$N yet"; fi

    say "bmx7-wg show (node1)"
    bmx7wg "${PREFIX}n1" -c "$WORK/node1/bmx7-wg.toml" show

    say "the mesh stays up ($((SECONDS - t0)) s since the services started). Look at it:"
    note "ip netns exec ${PREFIX}n1 env PYTHONPATH=$REPO $PY -m bmx7_wg -c $WORK/node1/bmx7-wg.toml show"
    note "ip netns exec ${PREFIX}n1 wg show"
    note "ip netns exec ${PREFIX}n1 ip -6 route show table 70      # bmx7's fd70 routes"
    note "ip netns exec ${PREFIX}n1 ping node$N.mesh                # or ${short,,}.mesh, or $far"
    note "tail -f $WORK/node1/bmx7-wg.log                        # the service's log"
    note "ls $WORK/node1/run/sms/rcvdSms                          # the announcements bmx7 delivered"
    note "remove it all with: make demo-clean"
}

# ---------------------------------------------------------------- the static demo

static() {
    need_root
    install_deps
    clean
    mkdir -p "$WORK"; chmod 700 "$WORK"
    local NS_A=${PREFIX}a NS_B=${PREFIX}b PUB_A PUB_B

    say "two hosts: $NS_A (192.0.2.1) and $NS_B (192.0.2.2) on one veth link"
    ip netns add "$NS_A"; ip netns add "$NS_B"
    ip -n "$NS_A" link set lo up; ip -n "$NS_B" link set lo up
    ip -n "$NS_A" link add eth0 type veth peer name eth0 netns "$NS_B"
    ip -n "$NS_A" addr add 192.0.2.1/24 dev eth0; ip -n "$NS_A" link set eth0 up
    ip -n "$NS_B" addr add 192.0.2.2/24 dev eth0; ip -n "$NS_B" link set eth0 up

    say "keys: bmx7-wg genkey / pubkey (interchangeable with wg genkey / wg pubkey)"
    for ns in $NS_A $NS_B; do
        (umask 077; bmx7wg "$ns" genkey > "$WORK/$ns.key")
    done
    PUB_A=$(bmx7wg "$NS_A" pubkey < "$WORK/$NS_A.key")
    PUB_B=$(bmx7wg "$NS_B" pubkey < "$WORK/$NS_B.key")
    echo "$NS_A: $PUB_A"; echo "$NS_B: $PUB_B"

    write_static_config "$NS_A" demoa 10.77.0.1 "$PUB_B" 192.0.2.2 10.77.0.2
    write_static_config "$NS_B" demob 10.77.0.2 "$PUB_A" 192.0.2.1 10.77.0.1
    say "$WORK/$NS_A.toml"
    cat "$WORK/$NS_A.toml"

    say "bmx7-wg check"
    bmx7wg "$NS_A" -c "$WORK/$NS_A.toml" check
    say "bmx7-wg plan  ($NS_A)"
    bmx7wg "$NS_A" -c "$WORK/$NS_A.toml" plan
    for ns in $NS_A $NS_B; do
        say "bmx7-wg apply  ($ns)"
        bmx7wg "$ns" -c "$WORK/$ns.toml" apply
    done
    say "ping through the tunnel: $NS_A -> 10.77.0.2"
    ip netns exec "$NS_A" ping -c 3 -i 0.2 -W 2 10.77.0.2
    say "bmx7-wg apply again: nothing to change"
    bmx7wg "$NS_A" -c "$WORK/$NS_A.toml" apply
    say "bmx7-wg show  ($NS_A)"
    bmx7wg "$NS_A" -c "$WORK/$NS_A.toml" show
    say "done; remove it with: make demo-clean"
}

write_static_config() {  # NS IFNAME OWN_IP PEER_PUB PEER_UNDERLAY PEER_IP
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

case "${1:-mesh}" in
    mesh|up) mesh ;;
    static) static ;;
    clean) need_root; clean; echo "demo removed" ;;
    *) echo "usage: $0 mesh|static|clean" >&2; exit 64 ;;
esac
