# shellcheck shell=bash
# Common settings and helpers of the real-Nova lab; sourced by up.sh, down.sh,
# ctl.sh and status.sh. Every port, path and interval is overridable by env.

LAB_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY3="${LAB_PYTHON:-/usr/bin/python3}"  # Debian's: the OpenStack libraries live there
LAB_DIR="$(realpath -m "${LAB_DIR:-$LAB_HOME/.state}")"  # absolute: configs and wrappers embed it
LAB_CACHE="${LAB_CACHE:-/var/tmp/iha-lab-cache}"
# A running lab's port block, for scripts run without it (ctl.sh from a
# test or from a BMC): up.sh records it.
if [ -z "${LAB_PORT_BASE:-}" ] && [ -z "${LAB_UP:-}" ] && [ -s "$LAB_DIR/port-base" ]; then
  LAB_PORT_BASE=$(cat "$LAB_DIR/port-base")
fi
LAB_PORT_BASE="${LAB_PORT_BASE:-18700}"
LAB_MYSQL_PORT="${LAB_MYSQL_PORT:-$((LAB_PORT_BASE + 6))}"
LAB_EPMD_PORT="${LAB_EPMD_PORT:-$((LAB_PORT_BASE + 69))}"
LAB_RABBIT_PORT="${LAB_RABBIT_PORT:-$((LAB_PORT_BASE + 72))}"
LAB_RABBIT_DIST_PORT="${LAB_RABBIT_DIST_PORT:-$((LAB_PORT_BASE + 73))}"
LAB_NOVA_PORT="${LAB_NOVA_PORT:-$((LAB_PORT_BASE + 74))}"
LAB_PLACEMENT_PORT="${LAB_PLACEMENT_PORT:-$((LAB_PORT_BASE + 78))}"
LAB_GLANCE_PORT="${LAB_GLANCE_PORT:-$((LAB_PORT_BASE + 92))}"
LAB_NEUTRON_PORT="${LAB_NEUTRON_PORT:-$((LAB_PORT_BASE + 96))}"
# BMC of compute i listens on 127.0.0.1:$((LAB_BMC_PORT_BASE + i)).
LAB_BMC_PORT_BASE="${LAB_BMC_PORT_BASE:-$((LAB_PORT_BASE + 30))}"
LAB_REPORT_INTERVAL="${LAB_REPORT_INTERVAL:-10}"
LAB_SERVICE_DOWN_TIME="${LAB_SERVICE_DOWN_TIME:-60}"
LAB_BMC_USER="${LAB_BMC_USER:-admin}"
LAB_BMC_PASSWORD="${LAB_BMC_PASSWORD:-labpass}"
LAB_DB_USER=lab
LAB_DB_PASSWORD=labdb
export LAB_RABBIT_NODE="iha-lab-${LAB_RABBIT_PORT}@localhost"
# Scale every wait on a slow or busy machine: LAB_TIMEOUT_SCALE=2 doubles them.
LAB_TIMEOUT_SCALE="${LAB_TIMEOUT_SCALE:-1}"

# IHA on the lab: with LAB_IHA_BIN (a directory holding iha-agent), every
# compute's host also runs an iha-agent, and its nova-compute starts behind
# `iha-agent gate` (as the systemd drop-in's ExecStartPre) while
# $LAB_DIR/iha/gate-on exists (written by whoever runs the leaders: with no
# leader to ask, the gate would hold every compute start for its timeout).
# up.sh records the directory in $LAB_DIR/iha/bin for ctl.sh and the BMCs.
# Ports of the 3 leaders (j = 1..3) and of the agents (compute i = 1..9):
#   leader j: Raft +40+j, status API +44+j, gossip +48+j, fence_kdump UDP +52+j
#   agent  i: gossip +55+i, fence_kdump UDP +80+i
LAB_IHA_LEADERS=3
LAB_IHA_PORT_BASE="${LAB_IHA_PORT_BASE:-$((LAB_PORT_BASE + 40))}"
LAB_GATE_TIMEOUT="${LAB_GATE_TIMEOUT:-300}" # seconds; the drop-in's default is 600
if [ -z "${LAB_IHA_BIN:-}" ] && [ -s "$LAB_DIR/iha/bin" ]; then LAB_IHA_BIN=$(cat "$LAB_DIR/iha/bin"); fi
LAB_IHA_BIN="${LAB_IHA_BIN:-}"
# Watchdog self-fencing (issue 17): with LAB_WATCHDOG=W (e.g. 10s) at up,
# every host's agent is armed with a watchdog of timeout W, the device
# double iha-wddouble (a host process, HOST.watchdog) whose firing SIGKILLs
# the host's nova-compute and iha-agent, as a BMC power-off does. up.sh
# records W in $LAB_DIR/iha/watchdog for ctl.sh and the BMCs.
if [ -z "${LAB_WATCHDOG:-}" ] && [ -z "${LAB_UP:-}" ] && [ -s "$LAB_DIR/iha/watchdog" ]; then
  LAB_WATCHDOG=$(cat "$LAB_DIR/iha/watchdog")
fi
LAB_WATCHDOG="${LAB_WATCHDOG:-}"

PIDS="$LAB_DIR/pids"
LOGS="$LAB_DIR/log"
ETC="$LAB_DIR/etc"

# Fault-injection networks (LAB_CHAOS=1): leader_host, agent_host, cuts.
. "$LAB_HOME/net.sh"

export PYTHONPATH="$LAB_HOME/shims${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

log() { printf '%s lab: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

db_url() { echo "mysql+pymysql://$LAB_DB_USER:$LAB_DB_PASSWORD@127.0.0.1:$LAB_MYSQL_PORT/$1?charset=utf8"; }
rabbit_url() { echo "rabbit://guest:guest@127.0.0.1:$LAB_RABBIT_PORT/"; }

# alive PID: true when PID exists and is not a zombie.
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}

# start_daemon NAME CMD...: starts CMD in a session of its own (setsid) so
# that the whole process tree it forks (workers, erl children) shares one
# process group whose id is the recorded PID; logs go to $LOGS/NAME.log.
start_daemon() {
  local name=$1; shift
  mkdir -p "$PIDS" "$LOGS"
  if [ -f "$PIDS/$name.pid" ] && alive "$(cat "$PIDS/$name.pid")"; then
    log "$name already running (pid $(cat "$PIDS/$name.pid"))"
    return 0
  fi
  # A background job of a non-interactive shell is not a group leader, so
  # setsid execs in place and $! is the daemon's own PID (checked below).
  setsid "$PY3" "$LAB_HOME/shims/exec_clean.py" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PIDS/$name.pid"
  local sid
  sid=$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ') || true
  if [ -n "$sid" ] && [ "$sid" != "$pid" ]; then
    sleep 0.2
    sid=$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ') || true
    [ -z "$sid" ] || [ "$sid" = "$pid" ] || log "warning: $name pid $pid is not its session leader (sid $sid)"
  fi
  log "started $name pid $pid"
}

# stop_group PIDFILE SIGNAL-DEADLINE-SECONDS: TERM the recorded process
# group, KILL it after the deadline, verify nothing of it is left.
stop_group() {
  local pidfile=$1 deadline=${2:-15} pid name
  pid=$(cat "$pidfile" 2>/dev/null) || return 0
  name=$(basename "$pidfile" .pid)
  [[ $pid =~ ^[0-9]+$ ]] || { rm -f "$pidfile"; return 0; }
  if group_alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    kill -CONT -- "-$pid" 2>/dev/null || true
    local end=$((SECONDS + deadline))
    while group_alive "$pid" && [ $SECONDS -lt $end ]; do sleep 0.2; done
    if group_alive "$pid"; then
      log "$name (pid $pid) ignored TERM for ${deadline}s: KILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      end=$((SECONDS + 10))
      while group_alive "$pid" && [ $SECONDS -lt $end ]; do sleep 0.1; done
    fi
  fi
  if group_alive "$pid"; then
    log "ERROR: $name (pid $pid) still alive"
    return 1
  fi
  rm -f "$pidfile"
}

# group_alive PID: the process or any member of its process group lives.
group_alive() {
  alive "$1" && return 0
  local p
  for p in $(pgrep -g "$1" 2>/dev/null); do alive "$p" && return 0; done
  return 1
}

# wait_for DESCRIPTION SECONDS CMD...: polls CMD every 0.5 s until it
# succeeds or the (scaled) deadline passes.
wait_for() {
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs * LAB_TIMEOUT_SCALE))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { log "timed out after $((secs * LAB_TIMEOUT_SCALE))s waiting for $what"; return 1; }
    sleep 0.5
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# dump_path: the cached dump of the synced schemas for these package
# versions and ports (the dump holds the cell mappings: DB and RabbitMQ URLs).
dump_path() {
  local key
  key="nova-$(pkg_version python3-nova)_placement-$(pkg_version python3-placement)"
  key+="_glance-$(pkg_version python3-glance)_db$LAB_MYSQL_PORT-mq$LAB_RABBIT_PORT"
  echo "$LAB_CACHE/${key//[^A-Za-z0-9._-]/_}.sql"
}
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }

nova_get() {
  curl -fsS -H 'X-Auth-Token: admin:admin' -H 'OpenStack-API-Version: compute 2.53' \
    "http://127.0.0.1:$LAB_NOVA_PORT/v2.1$1"
}

compute_names() {
  local n=$1 i out=()
  for ((i = 1; i <= n; i++)); do out+=("lab-compute-$i"); done
  (IFS=,; echo "${out[*]}")
}

# Host processes: every process of the simulated host HOST has its pid file
# named HOST.<what>.pid (nova-compute, iha-agent), so a power-off kills them
# all and power_on is where a host's processes start.
start_compute() {
  local host=$1 pre=() gate=()
  [ -f "$ETC/nova/$host.conf" ] || die "unknown host $host (no $ETC/nova/$host.conf)"
  # A host with a network namespace (LAB_NETNS=1 at up) runs inside it.
  if [ -s "$LAB_DIR/netns/$host" ]; then pre=(ip netns exec "$(cat "$LAB_DIR/netns/$host")"); fi
  # With IHA: the gate runs first in the same process (group), as systemd's
  # ExecStartPre; its lines land in nova-compute's log as in its journal. A
  # gate that refuses until its timeout leaves nova-compute not started.
  if [ -n "$LAB_IHA_BIN" ]; then
    # shellcheck disable=SC2016 # expanded by the inner bash
    gate=(bash -c 'if [ -e "$1" ]; then echo "$(date +%T.%3N) lab: ExecStartPre: iha-agent gate"; "$2" gate --config "$3" || { echo "$(date +%T.%3N) lab: the gate refused: nova-compute not started"; exit 1; }; fi; shift 3; exec "$@"' \
      gate "$LAB_DIR/iha/gate-on" "$LAB_IHA_BIN/iha-agent" "$(agent_config "$host")")
  fi
  start_daemon "$host.nova-compute" "${pre[@]}" "${gate[@]}" "$PY3" "$LAB_HOME/shims/pymain.py" \
    nova.cmd.compute:main nova-compute --config-file "$ETC/nova/$host.conf"
}

# iha_port KIND J: the loopback port of leader J's raft|api|gossip|kdump, or
# of compute J's agent-gossip|agent-kdump.
iha_port() {
  case $1 in
    raft) echo $((LAB_IHA_PORT_BASE + $2)) ;;
    api) echo $((LAB_IHA_PORT_BASE + 4 + $2)) ;;
    gossip) echo $((LAB_IHA_PORT_BASE + 8 + $2)) ;;
    kdump) echo $((LAB_IHA_PORT_BASE + 12 + $2)) ;;
    agent-gossip) echo $((LAB_IHA_PORT_BASE + 15 + $2)) ;;
    agent-kdump) echo $((LAB_IHA_PORT_BASE + 40 + $2)) ;;
    *) die "iha_port: unknown kind $1" ;;
  esac
}

# iha_addrs KIND: the leaders' KIND addresses, comma-separated.
iha_addrs() {
  local j out=()
  for ((j = 1; j <= LAB_IHA_LEADERS; j++)); do out+=("$(leader_host "$j"):$(iha_port "$1" "$j")"); done
  (IFS=,; echo "${out[*]}")
}

# agent_config HOST: writes (if missing) and prints the path of HOST's
# agent.yaml: its Nova host name, a gossip and a fence_kdump port of its
# own, the lab's gossip keyring (up.sh made it), its host key, the leaders' gossip
# addresses to join and their status APIs for the gate. No Nova or BMC
# credential: the agent holds none. LAB_AGENT_GOSSIP_PROFILE (default fast) is
# its failure-detector profile.
# No /metrics: every agent would take the default 127.0.0.1:7422 (the
# first wins, the others warn), and a test elsewhere may want that port.
agent_config() {
  local host=$1 i dir
  i=${host#lab-compute-}
  dir="$LAB_DIR/iha/agents/$host"
  if [ ! -s "$dir/agent.yaml" ]; then
    mkdir -p "$dir/state"
    # Its host key, derived from the lab's cluster key as an operator does.
    (umask 077 && "$LAB_IHA_BIN/iha-leader" keygen host -cluster-key "$LAB_DIR/iha/cluster.key" "$host" >"$dir/host.key" 2>/dev/null) ||
      die "cannot make $host's host key"
    cat >"$dir/agent.yaml" <<AGENT
# iha-agent of $host (written by deploy/lab/lib.sh)
nova_host: $host
bind: $(agent_host "$i"):$(iha_port agent-gossip "$i")
join: [$(iha_addrs gossip)]
keyring: $LAB_DIR/iha/gossip.keyring
host_key: $dir/host.key
kdump_listen: $(agent_host "$i"):$(iha_port agent-kdump "$i")
controllers: [$(iha_addrs api | sed 's#^#http://#; s#,#,http://#g')]
state_dir: $dir/state
gossip: {GOSSIP_PROFILE: ${LAB_AGENT_GOSSIP_PROFILE:-fast}}
gate_timeout: ${LAB_GATE_TIMEOUT}s
gate_interval: 1s
gate_on_no_answer: start
log_level: info
metrics_listen: off
AGENT
    if [ -n "$LAB_WATCHDOG" ]; then
      # The device double (start_watchdog) serves this FIFO; never a
      # FIFO in production (allow_fifo warns at every start).
      echo "watchdog: {device: $dir/watchdog, timeout: $LAB_WATCHDOG, allow_fifo: true}" >>"$dir/agent.yaml"
    fi
  fi
  echo "$dir/agent.yaml"
}

# start_agent HOST: HOST's iha-agent, one of its host processes. With
# LAB_NETNS=1 alone it runs in the root network namespace (the namespace
# proxy carries TCP only, not gossip's UDP): a cut link is not seen by the
# mesh. With LAB_CHAOS=1 it runs in HOST's namespace, on the mesh network.
start_agent() {
  local host=$1 conf pre=()
  conf=$(agent_config "$host")
  if chaos_on; then pre=(ip netns exec "$(netns_of "$host")"); fi
  start_daemon "$host.iha-agent" "${pre[@]}" "$LAB_IHA_BIN/iha-agent" --config "$conf"
}

# start_watchdog HOST: HOST's watchdog (LAB_WATCHDOG), one of its host
# processes: the device double serving $LAB_DIR/iha/agents/HOST/watchdog.
# Armed when the agent opens it (after its first lease); unfed for W it
# SIGKILLs the groups of HOST.nova-compute and HOST.iha-agent (pid files read
# when it fires: either may have restarted), records "fired" in
# watchdog.jsonl beside it and exits. Like hardware it keeps counting while
# the host hangs (ctl.sh freeze leaves it alone) and dies with the host's
# power (power_off).
start_watchdog() {
  local host=$1 dir
  dir="$LAB_DIR/iha/agents/$host"
  mkdir -p "$dir"
  start_daemon "$host.watchdog" "$LAB_IHA_BIN/iha-wddouble" -fifo "$dir/watchdog" -timeout "$LAB_WATCHDOG" \
    -pgid-file "$PIDS/$host.nova-compute.pid" -pgid-file "$PIDS/$host.iha-agent.pid" -record "$dir/watchdog.jsonl"
  wait_for "$host's watchdog device" 10 test -p "$dir/watchdog"
}

# netns_name HOST: the network namespace of HOST, unique per port block.
netns_name() { echo "iha-lab-$LAB_PORT_BASE-${1#lab-compute-}"; }

# setup_netns HOST: a fresh namespace with loopback up and a proxy (pid file
# net-HOST.pid, not HOST.*: the link is not the host) carrying the ports a
# compute needs. ctl.sh cut/mend HOST stops and resumes the proxy.
setup_netns() {
  local host=$1 ns
  ns=$(netns_name "$host")
  mkdir -p "$LAB_DIR/netns"
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  echo "$ns" >"$LAB_DIR/netns/$host"
  ip netns exec "$ns" ip link set lo up
  start_daemon "net-$host" "$PY3" "$LAB_HOME/shims/netns_proxy.py" "$ns" \
    "$LAB_RABBIT_PORT" "$LAB_PLACEMENT_PORT" "$LAB_GLANCE_PORT" "$LAB_NEUTRON_PORT" "$LAB_NOVA_PORT"
}

# delete_netns: remove every namespace this lab recorded.
delete_netns() {
  local f
  for f in "$LAB_DIR"/netns/*; do
    [ -e "$f" ] || continue
    ip netns del "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

# host_pidfiles HOST: the pid files of HOST's processes.
host_pidfiles() {
  local f
  for f in "$PIDS/$1".*.pid; do [ -e "$f" ] && echo "$f"; done
  return 0
}

# power_state HOST: 1 when any of HOST's processes lives, else 0.
power_state() {
  local f
  for f in $(host_pidfiles "$1"); do
    group_alive "$(cat "$f")" && { echo 1; return; }
  done
  echo 0
}

# power_off HOST: SIGKILL every process of HOST (power loss). Idempotent.
power_off() {
  local f pid end
  for f in $(host_pidfiles "$1"); do
    pid=$(cat "$f")
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    end=$((SECONDS + 10))
    while group_alive "$pid" && [ $SECONDS -lt $end ]; do sleep 0.05; done
    group_alive "$pid" && { log "ERROR: $f pid $pid survived SIGKILL"; return 1; }
    rm -f "$f"
  done
  return 0
}

# power_on HOST: start HOST's processes unless running. Idempotent.
power_on() {
  [ "$(power_state "$1")" = 1 ] && return 0
  # A power-on is a new boot: the agent keeps the watchdog state of this
  # boot only (its state file names /proc/sys/kernel/random/boot_id, which
  # the lab's hosts share with the machine), so the last boot's goes.
  if [ -n "$LAB_IHA_BIN" ]; then rm -f "$LAB_DIR/iha/agents/$1/state/watchdog.json"; fi
  if [ -n "$LAB_IHA_BIN" ] && [ -n "$LAB_WATCHDOG" ]; then start_watchdog "$1"; fi
  if [ -n "$LAB_IHA_BIN" ]; then start_agent "$1"; fi
  start_compute "$1"
}

# bmc_history HOST OP: one line per chassis command in
# $LAB_DIR/bmc/HOST/history: "<unix ms> <op> was power:<0|1>", written
# before acting, so tests can count real power transitions.
bmc_history() {
  mkdir -p "$LAB_DIR/bmc/$1"
  echo "$(date +%s%3N) $2 was power:$(power_state "$1")" >>"$LAB_DIR/bmc/$1/history"
}

# start_bmc HOST PORT: an ipmi_sim whose chassis power is HOST's processes.
start_bmc() {
  local host=$1 port=$2 dir
  dir="$LAB_DIR/bmc/$1"
  mkdir -p "$dir/state"
  cat >"$dir/power" <<POWER
#!/usr/bin/env bash
# ipmi_sim chassis_control program for $host: "power DEVICE get power" or
# "power DEVICE set power 0|1" (also set reset 1, set boot X).
export LAB_DIR="$LAB_DIR"
exec "$LAB_HOME/ctl.sh" bmc "\$@"
POWER
  chmod +x "$dir/power"
  cat >"$dir/lan.conf" <<LAN
name "$host"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $port
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abc$(printf '%03d' "${host##*-}")
  endlan
  chassis_control "$dir/power $host"
user 1 true  ""       "test"   user  10 none md2 md5 straight
user 2 true  "$LAB_BMC_USER" "$LAB_BMC_PASSWORD" admin 10 none md2 md5 straight
LAN
  cat >"$dir/bmc.emu" <<'EMU'
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
EMU
  chmod 600 "$dir/lan.conf"
  start_daemon "bmc-$host" ipmi_sim -n -c "$dir/lan.conf" -f "$dir/bmc.emu" -s "$dir/state"
}
