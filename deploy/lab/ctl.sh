#!/usr/bin/env bash
# ctl.sh stop|kill|start|restart|freeze|thaw|power HOST [PROC]
#   stop, kill  SIGKILL every process of HOST (power loss); idempotent
#   start       start HOST's processes again (new PIDs recorded): its iha-agent
#               and its gated nova-compute when the lab runs IHA; idempotent
#   restart     graceful: TERM (KILL after 30 s), then start
#   freeze/thaw SIGSTOP/SIGCONT HOST's processes (a hung host), except its
#               watchdog (LAB_WATCHDOG), which keeps counting as hardware does
#   restart, freeze and thaw with PROC (nova-compute or iha-agent) act on
#   that one process of the host only: a service restart, a hung daemon
#   power       prints power:1 or power:0
#   cut/mend    (LAB_NETNS=1 labs) stop/resume the only link of HOST's network
#               namespace: its traffic goes nowhere, like a pulled cable
# ctl.sh cut|mend MEMBER mgmt|mesh|all  (LAB_CHAOS=1 labs, net.sh)
#   MEMBER is a compute or lab-leader-J: mgmt is its way to Nova/RabbitMQ
#   (and, for a leader, the BMCs), mesh its port on the mesh network
# ctl.sh bmc-cut|bmc-mend HOST   SIGSTOP/SIGCONT HOST's ipmi_sim (no answer)
# ctl.sh bmc-hang HOST           the next power-off of HOST is carried out,
#                                then its BMC stops answering (bmc-mend)
# ctl.sh pause|resume DAEMON     SIGSTOP/SIGCONT a recorded daemon (nova-api,
#                                rabbitmq, nova-conductor…): hung, not dead
# ctl.sh nova-clock OFFSET|real  restart nova-api, -conductor and -scheduler
#                                OFFSET away from this machine's clock
#                                (libfaketime, e.g. -30s), or on it again
# ctl.sh bmc HOST get power | set power 0|1 | set reset 1 | set boot X
#   the ipmi_sim chassis_control protocol; every set power/reset is recorded
#   in $LAB_DIR/bmc/HOST/history with the power state it found.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() { echo "usage: ctl.sh stop|kill|start|restart|freeze|thaw|power|cut|mend|bmc-cut|bmc-mend|bmc-hang HOST [nova-compute|iha-agent|mgmt|mesh|all]; ctl.sh pause|resume DAEMON; ctl.sh nova-clock OFFSET|real" >&2; exit 2; }
[ $# -ge 2 ] || usage
op=$1 host=$2 proc=""
[[ $host =~ ^[A-Za-z0-9._-]+$ ]] || usage

# Operations on the lab's services rather than on a host.
case "$op" in
  pause | resume)
    f="$PIDS/$host.pid"
    [ -f "$f" ] || { echo "ctl.sh: no recorded daemon $host" >&2; exit 1; }
    if [ "$op" = pause ]; then sig=STOP; else sig=CONT; fi
    kill "-$sig" -- "-$(cat "$f")"
    exit 0
    ;;
  nova-clock)
    if [ "$host" = real ]; then rm -f "$LAB_DIR/nova-clock"; else echo "$host" >"$LAB_DIR/nova-clock"; fi
    for svc in nova-api nova-conductor nova-scheduler; do
      stop_group "$PIDS/$svc.pid" 30
      start_nova_control "$svc"
    done
    wait_for "nova-api" 90 nova_get /
    exit 0
    ;;
  cut | mend)
    if [[ $host == lab-leader-* ]]; then
      chaos_on || { echo "ctl.sh: no controller namespaces (up with LAB_CHAOS=1)" >&2; exit 1; }
      [ -s "$LAB_DIR/netns/$host" ] || { echo "ctl.sh: unknown controller $host" >&2; exit 1; }
    fi
    ;;
esac
if [[ $host != lab-leader-* ]]; then
  [ -f "$ETC/nova/$host.conf" ] || { echo "ctl.sh: unknown host $host" >&2; exit 1; }
fi
case "$op" in
  restart | freeze | thaw)
    if [ $# -ge 3 ]; then
      proc=$3
      [[ $proc == nova-compute || $proc == iha-agent ]] || usage
    fi
    ;;
esac

# proc_pidfiles: the pid files acted on: HOST's PROC, or all of HOST's.
proc_pidfiles() {
  if [ -n "$proc" ]; then
    [ -f "$PIDS/$host.$proc.pid" ] && echo "$PIDS/$host.$proc.pid"
    return 0
  fi
  host_pidfiles "$host"
}

signal_host() {
  local f
  for f in $(proc_pidfiles); do
    # A hung host's hardware watchdog keeps counting (LAB_WATCHDOG).
    [[ $f == *.watchdog.pid ]] && continue
    kill "-$1" -- "-$(cat "$f")" 2>/dev/null || kill "-$1" "$(cat "$f")" 2>/dev/null || true
  done
}

case "$op" in
  stop | kill) power_off "$host" ;;
  start) power_on "$host" ;;
  restart)
    for f in $(proc_pidfiles); do stop_group "$f" 30; done
    case "$proc" in
      nova-compute) start_compute "$host" ;;
      iha-agent) start_agent "$host" ;;
      *) power_on "$host" ;;
    esac
    ;;
  freeze) signal_host STOP ;;
  thaw) signal_host CONT ;;
  power) echo "power:$(power_state "$host")" ;;
  cut | mend)
    link=${3:-mgmt}
    [[ $link == mgmt || $link == mesh || $link == all ]] || usage
    if [ "$link" != mesh ]; then
      f="$PIDS/net-$host.pid"
      [ -f "$f" ] || { echo "ctl.sh: $host has no network namespace (up with LAB_NETNS=1)" >&2; exit 1; }
      if [ "$op" = cut ]; then sig=STOP; else sig=CONT; fi
      kill "-$sig" -- "-$(cat "$f")"
    fi
    if [ "$link" != mgmt ]; then
      chaos_on || { echo "ctl.sh: no mesh network (up with LAB_CHAOS=1)" >&2; exit 1; }
      if [ "$op" = cut ]; then mesh_cut "$host"; else mesh_mend "$host"; fi
    fi
    ;;
  bmc-cut | bmc-mend)
    f="$PIDS/bmc-$host.pid"
    [ -f "$f" ] || { echo "ctl.sh: $host has no BMC" >&2; exit 1; }
    if [ "$op" = bmc-cut ]; then sig=STOP; else sig=CONT; rm -f "$LAB_DIR/bmc/$host/hang-after-off"; fi
    kill "-$sig" -- "-$(cat "$f")" 2>/dev/null || kill "-$sig" "$(cat "$f")"
    ;;
  bmc-hang)
    mkdir -p "$LAB_DIR/bmc/$host"
    touch "$LAB_DIR/bmc/$host/hang-after-off"
    ;;
  bmc)
    shift 2
    case "${1:-} ${2:-}" in
      "get power") echo "power:$(power_state "$host")" ;;
      "set power")
        case "${3:-}" in
          0)
            bmc_history "$host" off
            power_off "$host" >>"$LOGS/bmc-$host.power.log" 2>&1
            # bmc-hang: the power is off, and the BMC never says so (it
            # stops before it answers this command) until bmc-mend.
            if [ -e "$LAB_DIR/bmc/$host/hang-after-off" ]; then
              echo "$(date +%s%3N) hang was power:$(power_state "$host")" >>"$LAB_DIR/bmc/$host/history"
              kill -STOP "$(cat "$PIDS/bmc-$host.pid")"
            fi
            ;;
          1) bmc_history "$host" on; power_on "$host" >>"$LOGS/bmc-$host.power.log" 2>&1 ;;
          *) exit 1 ;;
        esac
        ;;
      "set reset")
        bmc_history "$host" reset
        { power_off "$host" && power_on "$host"; } >>"$LOGS/bmc-$host.power.log" 2>&1 ;;
      "set boot") ;;
      *) exit 1 ;;
    esac
    ;;
  *) usage ;;
esac
