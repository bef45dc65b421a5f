# shellcheck shell=bash
# The lab's networks for fault injection (LAB_CHAOS=1 at up; sourced by
# lib.sh). Nothing here touches the machine's own namespace: every address
# below lives only inside namespaces the lab creates and deletes.
#
#   management network  each compute's namespace reaches Nova, RabbitMQ,
#                       placement, glance and the neutron stub on 127.0.0.1
#                       through its proxy (net-HOST, lib.sh setup_netns);
#                       each controller's namespace reaches Nova's API,
#                       glance and the BMCs (UDP) through net-lab-leader-J
#   mesh network        a bridge in a switch namespace; computes at
#                       $LAB_MESH_NET.(10+i), controllers at $LAB_MESH_NET.J,
#                       an operator namespace (the tests' and the CLI's
#                       vantage point, never cut) at $LAB_MESH_NET.100:
#                       gossip, Raft, the status API and the agents' gate
#   BMC network         ipmi_sim on 127.0.0.1 in the lab's namespace
#
# Cuts (ctl.sh): `cut HOST mesh` detaches HOST's port from the bridge (its
# link stays up and frames go nowhere, like a dead switch port); `cut HOST
# mgmt` SIGSTOPs HOST's proxy (connections hang, no reset); HOST may be a
# compute or lab-leader-J; `bmc-cut HOST` SIGSTOPs HOST's ipmi_sim.

# 198.18.0.0/15 is reserved for network benchmarks (RFC 2544): never routed,
# and here never outside the lab's namespaces.
LAB_MESH_NET="${LAB_MESH_NET:-198.18.0}"

# chaos_on: true when this lab was brought up with the mesh network.
chaos_on() { [ -s "$LAB_DIR/netns/switch" ]; }

# switch_ns: the recorded switch namespace (ctl.sh may run without the
# lab's LAB_PORT_BASE), or the one setup_switch creates.
switch_ns() {
  if [ -s "$LAB_DIR/netns/switch" ]; then cat "$LAB_DIR/netns/switch"; else echo "iha-lab-$LAB_PORT_BASE-sw"; fi
}
controller_ns() { echo "iha-lab-$LAB_PORT_BASE-l$1"; }
ops_ns() { echo "iha-lab-$LAB_PORT_BASE-ops"; }

# leader_host J / agent_host I: where leader J and compute I's agent listen.
leader_host() { if chaos_on; then echo "$LAB_MESH_NET.$1"; else echo 127.0.0.1; fi; }
agent_host() { if chaos_on; then echo "$LAB_MESH_NET.$((10 + $1))"; else echo 127.0.0.1; fi; }

# bridge_port NAME: the switch-side name of a namespace's link.
bridge_port() {
  case $1 in
    lab-compute-*) echo "c${1#lab-compute-}" ;;
    lab-leader-*) echo "l${1#lab-leader-}" ;;
    ops) echo ops ;;
    *) die "bridge_port: unknown member $1" ;;
  esac
}

# setup_switch: the switch namespace and its bridge.
setup_switch() {
  local sw
  sw=$(switch_ns)
  mkdir -p "$LAB_DIR/netns"
  ip netns del "$sw" 2>/dev/null || true
  ip netns add "$sw"
  echo "$sw" >"$LAB_DIR/netns/switch"
  ip -n "$sw" link set lo up
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
}

# attach_mesh MEMBER NETNS ADDRESS: a veth from NETNS (mesh0, ADDRESS/24)
# to a port of the bridge.
attach_mesh() {
  local member=$1 ns=$2 addr=$3 sw port
  sw=$(switch_ns)
  port=$(bridge_port "$member")
  ip link add "$port" netns "$sw" type veth peer name mesh0 netns "$ns"
  ip -n "$sw" link set "$port" master br0 up
  ip -n "$ns" addr add "$addr/24" dev mesh0
  ip -n "$ns" link set mesh0 up
}

# setup_controller J: leader J's namespace, on the mesh, with its proxy to
# Nova's API, glance and every BMC (computes 1..N).
setup_controller() {
  local j=$1 n=$2 ns i specs=()
  ns=$(controller_ns "$j")
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  echo "$ns" >"$LAB_DIR/netns/lab-leader-$j"
  ip -n "$ns" link set lo up
  attach_mesh "lab-leader-$j" "$ns" "$LAB_MESH_NET.$j"
  for ((i = 1; i <= n; i++)); do specs+=("udp:$((LAB_BMC_PORT_BASE + i))"); done
  start_daemon "net-lab-leader-$j" "$PY3" "$LAB_HOME/shims/netns_proxy.py" "$ns" \
    "$LAB_NOVA_PORT" "$LAB_GLANCE_PORT" "${specs[@]}"
}

# setup_ops: the operator's namespace on the mesh (the tests read the
# leaders' APIs and run the CLI from here), with a proxy to Nova's API.
setup_ops() {
  local ns
  ns=$(ops_ns)
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  echo "$ns" >"$LAB_DIR/netns/ops"
  ip -n "$ns" link set lo up
  attach_mesh ops "$ns" "$LAB_MESH_NET.100"
}

# mesh_cut MEMBER / mesh_mend MEMBER: detach (attach) MEMBER's bridge port.
mesh_cut() { ip -n "$(switch_ns)" link set "$(bridge_port "$1")" nomaster; }
mesh_mend() { ip -n "$(switch_ns)" link set "$(bridge_port "$1")" master br0; }

# netns_of MEMBER: the namespace a compute or a leader lives in (empty: none).
netns_of() { [ -s "$LAB_DIR/netns/$1" ] && cat "$LAB_DIR/netns/$1"; return 0; }

# start_nova_control nova-api|nova-conductor|nova-scheduler: one of Nova's
# control services. With $LAB_DIR/nova-clock holding an offset (libfaketime's
# syntax, e.g. -30s) it runs that far from the machine's clock: the
# conductor stamps updated_at and nova-api judges up/down with it, so the
# whole of Nova is skewed against the leaders (ctl.sh nova-clock).
start_nova_control() {
  local svc=$1 mod pre=() offset=""
  case $svc in
    nova-api) mod=nova.cmd.api:main ;;
    nova-conductor) mod=nova.cmd.conductor:main ;;
    nova-scheduler) mod=nova.cmd.scheduler:main ;;
    *) die "start_nova_control: unknown service $svc" ;;
  esac
  [ -s "$LAB_DIR/nova-clock" ] && offset=$(cat "$LAB_DIR/nova-clock")
  if [ -n "$offset" ]; then
    pre=(env LD_PRELOAD=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 "FAKETIME=$offset")
  fi
  start_daemon "$svc" "${pre[@]}" "$PY3" "$LAB_HOME/shims/pymain.py" "$mod" "$svc" --config-file "$ETC/nova/nova.conf"
}
