#!/bin/sh
# Post-install (RPM %post, deb postinst): make systemd read the new or
# changed units. Services are never started, restarted or enabled here: the
# operator decides when (docs/operations.md). A running daemon keeps its old
# binary until the operator restarts it (rolling upgrade).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
