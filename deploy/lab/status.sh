#!/usr/bin/env bash
# status.sh: every recorded daemon with its PID and liveness, then Nova's
# view of the computes.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
[ -d "$PIDS" ] || { echo "lab is down (no $PIDS)"; exit 1; }
rc=0
for f in "$PIDS"/*.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f")
  if group_alive "$pid"; then st=running; else st=DEAD; rc=1; fi
  printf '%-32s %8s %s\n' "$(basename "$f" .pid)" "$pid" "$st"
done
nova_get '/os-services?binary=nova-compute' 2>/dev/null | "$PY3" -c '
import json, sys
for s in json.load(sys.stdin)["services"]:
    print("%-20s %-5s %-8s forced_down=%s updated_at=%s" % (s["host"], s["state"], s["status"], s["forced_down"], s["updated_at"]))
' || { echo "nova-api does not answer"; rc=1; }
exit $rc
