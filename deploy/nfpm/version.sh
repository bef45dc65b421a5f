#!/bin/sh
# Prints the version for the binaries (`version`, git describe as is) or
# for the packages (`package`: RPM and deb versions allow no '-', and must
# start with a digit to sort).
#   v1.2.0               -> 1.2.0
#   v1.2.0-3-gabc1234    -> 1.2.0.3.gabc1234   (sorts after 1.2.0)
#   abc1234 (no tag yet) -> 0~git.abc1234      (sorts before any release)
#   1705232 (no tag yet) -> 0~git.1705232
#   … -dirty             -> ….dirty
set -eu
d=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
case "${1:-version}" in
version) echo "$d" ;;
package)
	v=${d#v}
	# A release tag is vN.N…; anything else (a bare commit id, which may
	# start with a digit) is a development build.
	if ! echo "$v" | grep -Eq '^[0-9]+\.[0-9]+'; then
		v="0~git.$v"
	fi
	echo "$v" | tr -- '-' '.'
	;;
*) echo "usage: $0 [version|package]" >&2; exit 2 ;;
esac
