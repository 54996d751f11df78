#!/usr/bin/env bash
# A virtual cluster on one machine, for tests and benchmarks: every host is a network namespace
# with its own hostname (unshare --uts), hosts of a site share a bridge (a LAN), and the sites
# are joined by a slow link (delaylink.py: a one-way delay and a bandwidth cap, since this kernel
# has no netem). Open MPI reaches the hosts through an rsh agent that starts its daemons inside
# them (--mca plm_rsh_agent), so ranks on different hosts talk TCP over these links, as on real
# machines. Needs root (ip netns, /dev/net/tun).
#
#   source tests/cluster/cluster.sh
#   cluster_up DIR "a:h0 a:h1 b:h2 b:h3" [DELAY_MS=10] [RATE_MBIT=200]   # site:host ...
#   cluster_mpirun --hostfile "$CLUSTER_DIR/hosts" -np 4 ranklm ...      # mpirun on the first host
#   MPIRUN=tests/cluster/mpirun ... # the same as a command (job scripts), once cluster_up ran
#   cluster_on h2 CMD...            # a command inside a host (hostname, network, TMPDIR, and a
#                                   # node-local disk: DIR/disk-h2 appears there as DIR/local)
#   cluster_partition h3 / cluster_heal h3   # cut a host off the network (its link stays up)
#   cluster_kill_host h3            # every process of the host SIGKILLed
#   cluster_host_down h3 / cluster_host_up h3  # a host that dies (cut off, processes killed,
#                                   # unreachable for new jobs) and comes back
#   cluster_down                    # everything removed (also run from the EXIT trap)
#
# Names: namespaces rlc<id>-<host> and rlc<id>-wan (id unique per cluster, so two tests may run
# at once); addresses 10.77.0.0/24, only inside these namespaces. /etc/netns/<namespace>/hosts
# gives every host the others' names (ip netns exec mounts it over /etc/hosts).

CLUSTER_SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

_cluster_ns() { echo "${CLUSTER_ID}-$1"; }

cluster_up() {
  local dir="$1" spec="$2" delay="${3:-10}" rate="${4:-200}"
  if [[ $(id -u) -ne 0 ]]; then echo "cluster_up: needs root (network namespaces)" >&2; return 1; fi
  CLUSTER_DIR="$dir"
  CLUSTER_ID="rlc$(( ($$ + RANDOM) % 100000 ))"
  CLUSTER_HOSTS=()
  CLUSTER_SITES=()
  mkdir -p "$dir"
  : > "$dir/hosts"
  local wan; wan="$(_cluster_ns wan)"
  ip netns add "$wan" || return 1
  ip -n "$wan" link set lo up
  local i=0 entry site host sites=()
  for entry in $spec; do
    site="${entry%%:*}"; host="${entry#*:}"
    CLUSTER_HOSTS+=("$host")
    CLUSTER_SITES+=("$site")
    if [[ ! " ${sites[*]} " =~ " $site " ]]; then
      sites+=("$site")
      ip -n "$wan" link add "br-$site" type bridge || return 1
      ip -n "$wan" link set "br-$site" up
    fi
    local ns; ns="$(_cluster_ns "$host")"
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
    ip link add "p$i" netns "$wan" type veth peer name eth0 netns "$ns" || return 1
    ip -n "$wan" link set "p$i" master "br-$site" up
    ip -n "$ns" addr add "10.77.0.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
    # A dead peer is noticed in seconds, not the default 15 minutes of retransmissions.
    ip netns exec "$ns" sysctl -q -w net.ipv4.tcp_retries2=6 >/dev/null
    echo "$host slots=${CLUSTER_SLOTS:-1}" >> "$dir/hosts"
    i=$((i + 1))
  done
  # /etc/hosts inside every host.
  local hosts_file="$dir/etc-hosts"
  printf '127.0.0.1 localhost\n' > "$hosts_file"
  for ((i = 0; i < ${#CLUSTER_HOSTS[@]}; i++)); do echo "10.77.0.$((i + 1)) ${CLUSTER_HOSTS[$i]}" >> "$hosts_file"; done
  for host in "${CLUSTER_HOSTS[@]}"; do
    mkdir -p "/etc/netns/$(_cluster_ns "$host")"
    cp "$hosts_file" "/etc/netns/$(_cluster_ns "$host")/hosts"
  done
  # The slow links: one delaylink process per pair of neighbouring sites (a chain of sites).
  CLUSTER_LINK_PIDS=()
  local s
  for ((s = 1; s < ${#sites[@]}; s++)); do
    local ta="t${s}a" tb="t${s}b"
    ip -n "$wan" tuntap add dev "$ta" mode tap || return 1
    ip -n "$wan" tuntap add dev "$tb" mode tap || return 1
    ip -n "$wan" link set "$ta" master "br-${sites[$((s - 1))]}" up
    ip -n "$wan" link set "$tb" master "br-${sites[$s]}" up
    ip netns exec "$wan" python3 "$CLUSTER_SELF/delaylink.py" --tap-a "$ta" --tap-b "$tb" --delay-ms "$delay" \
      --rate-mbit "$rate" > "$dir/delaylink-$s.log" 2>&1 &
    CLUSTER_LINK_PIDS+=($!)
    disown $!
  done
  mkdir -p "$dir/local"
  export RLC_ID="$CLUSTER_ID" RLC_DIR="$dir" RLC_FIRST="${CLUSTER_HOSTS[0]}"
  # Job scripts check hosts with the agent mpirun uses (jobs/run_mpirun.sh preflight).
  export OMPI_MCA_plm_rsh_agent="$CLUSTER_SELF/rsh-agent"
  # The caller removes it: trap "cluster_down" EXIT (with its own cleanup).
  # Wait for the links: every host answers the first (a refused TCP connection is an answer).
  local first="${CLUSTER_HOSTS[0]}" t
  for host in "${CLUSTER_HOSTS[@]:1}"; do
    for t in $(seq 1 50); do
      _cluster_reaches "$first" "$host" && break
      sleep 0.2
    done
    _cluster_reaches "$first" "$host" || { echo "cluster_up: $host does not answer $first" >&2; return 1; }
  done
}

# Whether host a reaches host b: a TCP connection to a closed port is refused at once when b is
# there, and times out when it is not.
_cluster_reaches() {
  cluster_on "$1" timeout 2 bash -c "echo > /dev/tcp/$2/9" 2>/dev/null
  [[ $? -ne 124 ]]
}

# A command inside a host (its network, hostname, TMPDIR and node-local disk DIR/local).
cluster_on() { "$CLUSTER_SELF/enter" "$@"; }

# mpirun on the first host, daemons through the rsh agent (also a command: tests/cluster/mpirun).
cluster_mpirun() { "$CLUSTER_SELF/mpirun" "$@"; }

_cluster_index() {
  local i
  for ((i = 0; i < ${#CLUSTER_HOSTS[@]}; i++)); do [[ "${CLUSTER_HOSTS[$i]}" == "$1" ]] && { echo "$i"; return; }; done
  echo "cluster: no host $1" >&2; return 1
}

# Cut a host off (its port leaves the bridge: frames vanish, its own link stays up, as when a
# switch or a cable between sites fails), and join it again.
cluster_partition() { ip -n "$(_cluster_ns wan)" link set "p$(_cluster_index "$1")" nomaster; }
cluster_heal() {
  local i; i="$(_cluster_index "$1")"
  ip -n "$(_cluster_ns wan)" link set "p$i" master "br-${CLUSTER_SITES[$i]}"
}

# A host that dies (power lost): cut off, every process of it killed, and unreachable for new
# connections until cluster_host_up (the agent then fails as ssh does).
cluster_host_down() {
  cluster_partition "$1"
  touch "$CLUSTER_DIR/down-$1"
  cluster_kill_host "$1"
}
cluster_host_up() {
  rm -f "$CLUSTER_DIR/down-$1"
  cluster_heal "$1"
}

# Every process of a host killed at once.
cluster_kill_host() {
  local pids; pids="$(ip netns pids "$(_cluster_ns "$1")")"
  [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null
  return 0
}

cluster_down() {
  [[ -n "${CLUSTER_ID:-}" ]] || return 0
  local host ns
  for host in "${CLUSTER_HOSTS[@]}"; do
    ns="$(_cluster_ns "$host")"
    local pids; pids="$(ip netns pids "$ns" 2>/dev/null)"
    [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null
  done
  local p
  for p in "${CLUSTER_LINK_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  local wpids; wpids="$(ip netns pids "$(_cluster_ns wan)" 2>/dev/null)"
  [[ -n "$wpids" ]] && kill -9 $wpids 2>/dev/null
  for host in "${CLUSTER_HOSTS[@]}"; do
    ns="$(_cluster_ns "$host")"
    ip netns del "$ns" 2>/dev/null
    rm -rf "/etc/netns/$ns"
  done
  ip netns del "$(_cluster_ns wan)" 2>/dev/null
  CLUSTER_ID=""
}
