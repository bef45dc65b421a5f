#!/usr/bin/env bash
# go-test.sh ARGS...: `go test ARGS...`, with the whole output as usual and,
# when it fails, a summary at the end: the first data-race reports in full
# (both goroutines' stacks) and every failing test. CI keeps only the tail
# of a long log; this puts what explains a failure there.
set -uo pipefail
log=$(mktemp "${TMPDIR:-/tmp}/iha-go-test.XXXXXX")
trap 'rm -f "$log"' EXIT
"${GO:-go}" test "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
	echo
	echo "== go test failed (exit $rc): summary"
	races=$(grep -c '^WARNING: DATA RACE' "$log" || true)
	if [ "$races" -gt 0 ]; then
		echo "-- $races data race report(s); the first 2 in full:"
		awk '/^WARNING: DATA RACE/ {n++; on = (n <= 2)} on {print} /^==================$/ && on && seen {on = 0} /^WARNING: DATA RACE/ {seen = 1}' "$log"
	fi
	if grep -q '^panic: ' "$log"; then
		echo "-- first panic:"
		grep -m1 -A 40 '^panic: ' "$log"
	fi
	echo "-- failing tests, with the first lines each one logged:"
	awk '/^[[:space:]]*--- FAIL/ {print; n = 6; next}
		n > 0 && /^[[:space:]]+[^[:space:]]+\.go:[0-9]+: / {print; n--; next}
		n > 0 && /^[[:space:]]{8,}[^[:space:]]/ {print; n--; next}
		{n = 0}
		/^FAIL/ {print}' "$log"
fi
exit "$rc"
