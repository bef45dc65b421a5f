#!/bin/sh
# Pre-install (RPM %pre, deb preinst): create the system user iha that both
# daemons run as. Nothing is started, stopped or restarted.
set -e
nologin=/sbin/nologin
[ -x "$nologin" ] || nologin=/usr/sbin/nologin
if ! getent group iha >/dev/null 2>&1; then
	groupadd --system iha
fi
if ! getent passwd iha >/dev/null 2>&1; then
	useradd --system --gid iha --home-dir /var/lib/iha --no-create-home \
		--shell "$nologin" --comment "IHA instance high availability" iha
fi
exit 0
