# shellcheck shell=bash
# Common settings and helpers of the real-Nova lab; sourced by up.sh, down.sh,
# ctl.sh and status.sh. Every port, path and interval is overridable by env.

LAB_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY3="${LAB_PYTHON:-/usr/bin/python3}"  # Debian's: the OpenStack libraries live there
LAB_DIR="$(realpath -m "${LAB_DIR:-$LAB_HOME/.state}")"  # absolute: configs and wrappers embed it
LAB_CACHE="${LAB_CACHE:-/var/tmp/iha-lab-cache}"
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

PIDS="$LAB_DIR/pids"
LOGS="$LAB_DIR/log"
ETC="$LAB_DIR/etc"

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
# named HOST.<what>.pid (nova-compute now; iha-agent later), so a power-off
# kills them all and power_on is where a host's processes start.
start_compute() {
  local host=$1 pre=()
  [ -f "$ETC/nova/$host.conf" ] || die "unknown host $host (no $ETC/nova/$host.conf)"
  # A host with a network namespace (LAB_NETNS=1 at up) runs inside it.
  if [ -s "$LAB_DIR/netns/$host" ]; then pre=(ip netns exec "$(cat "$LAB_DIR/netns/$host")"); fi
  start_daemon "$host.nova-compute" "${pre[@]}" "$PY3" "$LAB_HOME/shims/pymain.py" \
    nova.cmd.compute:main nova-compute --config-file "$ETC/nova/$host.conf"
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
  start_compute "$1"
  # The host's iha-agent joins here once it exists, as "$1.iha-agent".
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
