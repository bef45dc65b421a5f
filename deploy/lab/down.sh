#!/usr/bin/env bash
# down.sh: stops exactly the processes the lab recorded in $LAB_DIR/pids
# (TERM to each recorded process group, KILL after a deadline), verifies
# each is gone, removes its pid file. Idempotent; exits 1 if anything
# survived. Writes the PIDs it stopped to $LAB_DIR/stopped.pids.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

[ -d "$PIDS" ] || { log "nothing to stop"; exit 0; }
DEADLINE="${LAB_STOP_DEADLINE:-8}"
t0=$SECONDS
for f in "$PIDS"/*.pid; do [ -e "$f" ] && cat "$f"; done >>"$LAB_DIR/stopped.pids"

stop_all() { # stop_all DEADLINE PIDFILE...: in parallel
  local d=$1 f rc=0 pids=()
  shift
  for f in "$@"; do
    [ -e "$f" ] || continue
    stop_group "$f" "$d" &
    pids+=($!)
  done
  for f in "${pids[@]}"; do wait "$f" || rc=1; done
  return $rc
}

rc=0
shopt -s nullglob
# 1. BMCs and the hosts' watchdogs first (nothing may restart or reset a
#    compute: an agent stopped without leaders stays armed), then the hosts
#    and the OpenStack services, then their infrastructure, epmd last.
stop_all "$DEADLINE" "$PIDS"/bmc-*.pid "$PIDS"/*.watchdog.pid || rc=1
stop_all "$DEADLINE" "$PIDS"/*.nova-compute.pid "$PIDS"/*.iha-agent.pid "$PIDS"/nova-*.pid \
  "$PIDS"/glance-api.pid "$PIDS"/placement.pid "$PIDS"/neutron-stub.pid "$PIDS"/net-*.pid || rc=1
stop_all 30 "$PIDS"/rabbitmq.pid "$PIDS"/mariadb.pid || rc=1
stop_all "$DEADLINE" "$PIDS"/*.pid || rc=1

delete_netns
left=("$PIDS"/*.pid)
if [ ${#left[@]} -gt 0 ] || [ $rc -ne 0 ]; then
  log "ERROR: still running: ${left[*]}"
  exit 1
fi
log "lab down in $((SECONDS - t0))s"
