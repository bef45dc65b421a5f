#!/usr/bin/env bash
# up.sh [N]: brings up a real Nova (Zed) with N fake-driver computes
# (lab-compute-1..N, default 3) on 127.0.0.1, in a state directory of its own
# ($LAB_DIR, default deploy/lab/.state). Every daemon runs in its own session
# with its PID recorded in $LAB_DIR/pids; down.sh stops exactly those.
# Writes $LAB_DIR/env for the novasim contract suite. See README.md.
# up.sh --dump-path prints where the schema dump of this setup is cached.
set -Eeuo pipefail
iha_bin_arg=${LAB_IHA_BIN:-} # only the caller's: not a wiped lab's record
LAB_UP=1                      # nor a wiped lab's port block
. "$(dirname "$0")/lib.sh"
LAB_IHA_BIN=$iha_bin_arg
. "$LAB_HOME/configs.sh"

if [ "${1:-}" = --dump-path ]; then dump_path; exit 0; fi
N="${1:-${LAB_COMPUTES:-3}}"
[[ $N =~ ^[1-9][0-9]*$ ]] || die "usage: up.sh [number of computes]"
t0=$SECONDS
mark() { log "$1 (+$((SECONDS - t0))s)"; }

# 0. Refuse to run over a live lab; wipe a dead one.
if [ -d "$PIDS" ]; then
  for f in "$PIDS"/*.pid; do
    [ -e "$f" ] || continue
    group_alive "$(cat "$f")" && die "lab already up ($(basename "$f" .pid) pid $(cat "$f") alive): run down.sh first"
  done
fi
# Only ever wipe a directory that is empty or was a lab (LAB_DIR=/ must not hurt).
if [ -d "$LAB_DIR" ] && [ -n "$(ls -A "$LAB_DIR")" ] && [ ! -e "$LAB_DIR/computes" ]; then
  die "$LAB_DIR is not empty and holds no lab: refusing to wipe it"
fi
rm -rf "$LAB_DIR"
mkdir -p "$LAB_DIR" "$PIDS" "$LOGS"
echo "$N" >"$LAB_DIR/computes"
echo "$LAB_PORT_BASE" >"$LAB_DIR/port-base"
# IHA's binaries (LAB_IHA_BIN): each host also runs an iha-agent (lib.sh).
if [ -n "$LAB_IHA_BIN" ]; then
  [ -x "$LAB_IHA_BIN/iha-agent" ] || die "LAB_IHA_BIN=$LAB_IHA_BIN holds no iha-agent"
  [ "$N" -le 9 ] || die "the lab's IHA ports fit 9 computes at most"
  [ -x "$LAB_IHA_BIN/iha-leader" ] || die "LAB_IHA_BIN=$LAB_IHA_BIN holds no iha-leader (it makes the mesh's keys)"
  LAB_IHA_BIN=$(realpath "$LAB_IHA_BIN")
  mkdir -p "$LAB_DIR/iha"
  echo "$LAB_IHA_BIN" >"$LAB_DIR/iha/bin"
  if [ -n "$LAB_WATCHDOG" ]; then
    [[ $LAB_WATCHDOG =~ ^[1-9][0-9]*s$ ]] || die "LAB_WATCHDOG=$LAB_WATCHDOG: want whole seconds such as 10s"
    [ -x "$LAB_IHA_BIN/iha-wddouble" ] || die "LAB_IHA_BIN=$LAB_IHA_BIN holds no iha-wddouble (LAB_WATCHDOG's device double)"
    echo "$LAB_WATCHDOG" >"$LAB_DIR/iha/watchdog"
  fi
  # The mesh's keys, made once as an operator makes them (docs/operations.md,
  # "The mesh's keys"): every agent.yaml (lib.sh) and the scenarios' leaders
  # use them; the mesh is encrypted as in production.
  (umask 077 && "$LAB_IHA_BIN/iha-leader" keygen gossip >"$LAB_DIR/iha/gossip.keyring" &&
    "$LAB_IHA_BIN/iha-leader" keygen cluster >"$LAB_DIR/iha/cluster.key")
fi
on_exit() {
  local rc=$?
  [ $rc -eq 0 ] && return
  log "up failed ($rc); logs in $LOGS; stopping what was started"
  "$LAB_HOME/down.sh" || true
}
trap on_exit EXIT

# 1. Configuration.
write_configs "$N"

# 2. MariaDB on a private datadir, socket and port; RabbitMQ on private ports
#    with its own epmd; both start in parallel.
mkdir -p "$LAB_DIR/mysql"
mariadb-install-db --no-defaults --datadir="$LAB_DIR/mysql/data" --user="$(id -un)" \
  --auth-root-authentication-method=normal --skip-test-db >"$LOGS/mariadb-install.log" 2>&1
start_daemon mariadb mariadbd --no-defaults --datadir="$LAB_DIR/mysql/data" \
  --socket="$LAB_DIR/mysql/mysql.sock" --pid-file="$LAB_DIR/mysql/mysql.pid" \
  --port="$LAB_MYSQL_PORT" --bind-address=127.0.0.1 --user="$(id -un)" \
  --skip-name-resolve --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 \
  --innodb-doublewrite=0 --max-connections=500 --log-error="$LOGS/mariadb.err"

start_daemon epmd epmd -port "$LAB_EPMD_PORT" -address 127.0.0.1
wait_for "epmd" 20 port_open "$LAB_EPMD_PORT"
# HOME holds the Erlang cookie: a private one, not root's.
HOME="$LAB_DIR/rabbitmq" ERL_EPMD_PORT="$LAB_EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_NODENAME="$LAB_RABBIT_NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT="$LAB_RABBIT_PORT" RABBITMQ_DIST_PORT="$LAB_RABBIT_DIST_PORT" \
  RABBITMQ_MNESIA_BASE="$LAB_DIR/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$LAB_DIR/rabbitmq/log" \
  RABBITMQ_CONFIG_FILE="$LAB_DIR/rabbitmq/rabbitmq.conf" \
  RABBITMQ_ADVANCED_CONFIG_FILE="$LAB_DIR/rabbitmq/advanced.config" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$LAB_DIR/rabbitmq/enabled_plugins" \
  RABBITMQ_PID_FILE="$LAB_DIR/rabbitmq/rabbit.pid" RABBITMQ_CONF_ENV_FILE=/dev/null \
  start_daemon rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server

start_daemon neutron-stub "$PY3" "$LAB_HOME/shims/neutron_stub.py" 127.0.0.1 "$LAB_NEUTRON_PORT"

mysql_root() { mariadb --no-defaults --socket="$LAB_DIR/mysql/mysql.sock" -uroot "$@"; }
wait_for "mariadb" 60 mysql_root -e 'select 1'
mysql_root <<SQL
CREATE USER '$LAB_DB_USER'@'127.0.0.1' IDENTIFIED BY '$LAB_DB_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$LAB_DB_USER'@'127.0.0.1';
CREATE DATABASE nova_api; CREATE DATABASE nova; CREATE DATABASE nova_cell0;
CREATE DATABASE placement; CREATE DATABASE glance;
SQL
mark "mariadb ready"

# 3. Schemas: restore the cached dump of a synced schema, or sync and cache.
#    The dump holds the cell mappings (DB and RabbitMQ URLs), so the key
#    includes the ports as well as the package versions.
dump=$(dump_path)
NOVA_MANAGE=("$PY3" "$LAB_HOME/shims/pymain.py" nova.cmd.manage:main nova-manage --config-file "$ETC/nova/nova.conf")
if [ -s "$dump" ]; then
  if ! mysql_root <"$dump" 2>"$LOGS/restore.log"; then
    rm -f "$dump" # the next up syncs afresh
    die "restoring $dump failed ($(head -c 300 "$LOGS/restore.log")); removed it"
  fi
  mark "schemas restored from $dump"
else
  (
    "$PY3" "$LAB_HOME/shims/pymain.py" placement.cmd.manage:main placement-manage \
      --config-dir "$ETC/placement" db sync
  ) >"$LOGS/placement-db-sync.log" 2>&1 &
  psync=$!
  (
    "$PY3" "$LAB_HOME/shims/pymain.py" glance.cmd.manage:main glance-manage \
      --config-file "$ETC/glance/glance-api.conf" db_sync
  ) >"$LOGS/glance-db-sync.log" 2>&1 &
  gsync=$!
  {
    "${NOVA_MANAGE[@]}" api_db sync
    "${NOVA_MANAGE[@]}" cell_v2 map_cell0
    "${NOVA_MANAGE[@]}" cell_v2 create_cell --name cell1
    "${NOVA_MANAGE[@]}" db sync
  } >"$LOGS/nova-db-sync.log" 2>&1
  wait "$psync" || die "placement db sync failed: $LOGS/placement-db-sync.log"
  wait "$gsync" || die "glance db sync failed: $LOGS/glance-db-sync.log"
  mkdir -p "$LAB_CACHE"
  mariadb-dump --no-defaults --socket="$LAB_DIR/mysql/mysql.sock" -uroot \
    --databases nova_api nova nova_cell0 placement glance --add-drop-database >"$dump.tmp.$$"
  mv "$dump.tmp.$$" "$dump"
  mark "schemas synced, cached in $dump"
fi

# 4. Placement needs only its tables; the Nova services need RabbitMQ.
OS_PLACEMENT_CONFIG_DIR="$ETC/placement" \
  start_daemon placement "$PY3" "$LAB_HOME/shims/placement_server.py" 127.0.0.1 "$LAB_PLACEMENT_PORT"
wait_for "rabbitmq" 90 port_open "$LAB_RABBIT_PORT"
mark "rabbitmq ready"

# 5. OpenStack services; the computes after placement answers, or their
#    first resource report fails and waits a minute for the next.
PY=("$PY3" "$LAB_HOME/shims/pymain.py")
start_daemon glance-api "${PY[@]}" glance.cmd.api:main glance-api --config-file "$ETC/glance/glance-api.conf"
for svc in nova-api nova-conductor nova-scheduler; do start_nova_control "$svc"; done
wait_for "placement" 60 curl -fsS -H 'X-Auth-Token: admin:admin' "http://127.0.0.1:$LAB_PLACEMENT_PORT/"
if [ "${LAB_CHAOS:-0}" = 1 ]; then
  # The mesh network (net.sh): the computes' agents and the leaders in
  # namespaces of their own, so that each link can be cut alone.
  LAB_NETNS=1
  setup_switch
  setup_ops
fi
if [ "${LAB_NETNS:-0}" = 1 ]; then
  for ((i = 1; i <= N; i++)); do
    setup_netns "lab-compute-$i"
    if chaos_on; then attach_mesh "lab-compute-$i" "$(netns_name "lab-compute-$i")" "$(agent_host "$i")"; fi
  done
fi
if chaos_on; then
  for ((j = 1; j <= LAB_IHA_LEADERS; j++)); do setup_controller "$j" "$N"; done
fi
for ((i = 1; i <= N; i++)); do power_on "lab-compute-$i"; done

wait_for "nova-api" 90 nova_get /
wait_for "glance-api" 60 curl -fsS "http://127.0.0.1:$LAB_GLANCE_PORT/healthcheck"
mark "APIs answer"

# 6. Healthy: N computes up, their compute nodes mapped to the cell.
computes_up() {
  local got
  got=$(nova_get '/os-services?binary=nova-compute' |
    "$PY3" -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin)["services"] if s["state"]=="up"))')
  [ "$got" -ge "$N" ]
}
hypervisors() {
  local got
  got=$(nova_get '/os-hypervisors' | "$PY3" -c 'import json,sys; print(len(json.load(sys.stdin)["hypervisors"]))')
  [ "$got" -ge "$N" ]
}
# The scheduler's periodic discover_hosts maps each compute node to the
# cell; only a mapped host can be scheduled to.
host_mappings() {
  local got
  got=$(mysql_root -N -e 'SELECT COUNT(*) FROM nova_api.host_mappings')
  [ "$got" -ge "$N" ]
}
wait_for "$N computes up" 120 computes_up
wait_for "$N host mappings" 90 host_mappings
wait_for "$N hypervisors" 30 hypervisors
mark "$N computes up and discovered"

# 7. A flavor and an image for tests.
FLAVOR=lab-small
curl -fsS -X POST -H 'X-Auth-Token: admin:admin' -H 'Content-Type: application/json' \
  -d "{\"flavor\": {\"name\": \"$FLAVOR\", \"id\": \"$FLAVOR\", \"ram\": 64, \"vcpus\": 1, \"disk\": 1}}" \
  "http://127.0.0.1:$LAB_NOVA_PORT/v2.1/flavors" >/dev/null
IMAGE=$(curl -fsS -X POST -H 'Content-Type: application/json' \
  -d '{"name": "lab-image", "disk_format": "raw", "container_format": "bare", "visibility": "public"}' \
  "http://127.0.0.1:$LAB_GLANCE_PORT/v2/images" | "$PY3" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
head -c 4096 /dev/zero | curl -fsS -X PUT -H 'Content-Type: application/octet-stream' \
  --data-binary @- "http://127.0.0.1:$LAB_GLANCE_PORT/v2/images/$IMAGE/file"
image_active() {
  curl -fsS "http://127.0.0.1:$LAB_GLANCE_PORT/v2/images/$IMAGE" | grep -q '"status": *"active"'
}
wait_for "image active" 30 image_active

# 8. BMCs (ipmi_sim) whose chassis power kills/starts the compute.
if [ "${LAB_BMC:-1}" = 1 ] && command -v ipmi_sim >/dev/null; then
  for ((i = 1; i <= N; i++)); do start_bmc "lab-compute-$i" "$((LAB_BMC_PORT_BASE + i))"; done
fi

# 9. The contract suite's environment. ctl.sh finds a lab by LAB_DIR: a lab
#    outside the default directory gets a wrapper that carries it.
CTL="$LAB_HOME/ctl.sh"
if [ "$LAB_DIR" != "$LAB_HOME/.state" ]; then
  CTL="$LAB_DIR/ctl"
  printf '#!/bin/sh\nLAB_DIR=%q exec %q "$@"\n' "$LAB_DIR" "$LAB_HOME/ctl.sh" >"$CTL"
  chmod +x "$CTL"
fi
cat >"$LAB_DIR/env" <<ENV
export NOVA_CONTRACT_URL=http://127.0.0.1:$LAB_NOVA_PORT/v2.1
export NOVA_CONTRACT_TOKEN=admin:admin
export NOVA_CONTRACT_COMPUTES=$(compute_names "$N")
export NOVA_CONTRACT_CTL=$CTL
export NOVA_CONTRACT_IMAGE=$IMAGE
export NOVA_CONTRACT_FLAVOR=$FLAVOR
export LAB_GLANCE_URL=http://127.0.0.1:$LAB_GLANCE_PORT
export LAB_DIR=$LAB_DIR
export LAB_REPORT_INTERVAL=$LAB_REPORT_INTERVAL
export LAB_SERVICE_DOWN_TIME=$LAB_SERVICE_DOWN_TIME
export LAB_BMC_PORT_BASE=$LAB_BMC_PORT_BASE
export LAB_BMC_USER=$LAB_BMC_USER
ENV
if [ -n "$LAB_IHA_BIN" ]; then
  # Where IHA's leaders must listen for the agents to find them (lib.sh).
  cat >>"$LAB_DIR/env" <<ENV
export LAB_IHA_BIN=$LAB_IHA_BIN
export LAB_IHA_RAFT_ADDRS=$(iha_addrs raft)
export LAB_IHA_API_ADDRS=$(iha_addrs api)
export LAB_IHA_GOSSIP_ADDRS=$(iha_addrs gossip)
export LAB_IHA_KDUMP_ADDRS=$(iha_addrs kdump)
export LAB_IHA_GATE_FILE=$LAB_DIR/iha/gate-on
export LAB_IHA_KEYRING=$LAB_DIR/iha/gossip.keyring
export LAB_IHA_CLUSTER_KEY=$LAB_DIR/iha/cluster.key
export LAB_WATCHDOG=$LAB_WATCHDOG
ENV
fi
if chaos_on; then
  # The leaders run in these namespaces; tests read them from the ops one.
  ns=()
  for ((j = 1; j <= LAB_IHA_LEADERS; j++)); do ns+=("$(controller_ns "$j")"); done
  cat >>"$LAB_DIR/env" <<ENV
export LAB_CHAOS=1
export LAB_IHA_NETNS=$(IFS=,; echo "${ns[*]}")
export LAB_OPS_NETNS=$(ops_ns)
export LAB_MESH_NET=$LAB_MESH_NET
ENV
fi
mark "lab up: $N computes, env in $LAB_DIR/env"
