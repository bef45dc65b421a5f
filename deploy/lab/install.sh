#!/usr/bin/env bash
# Installs the Debian packages the real-Nova lab needs, idempotently.
# Only the library packages: python3-nova ships no daemons' scripts, which is
# what we want (nova-api/nova-compute pull libvirt, qemu, uwsgi, dbconfig).
# Private download dir + dpkg lock timeout: other engineers install at the
# same time on this machine (see docs/real-peers.md).
set -euo pipefail

PKGS=(
  python3-nova python3-placement python3-glance
  rabbitmq-server mariadb-server python3-pymysql
  openipmi ipmitool
  libfaketime # LD_PRELOAD clock offset for Nova's services (make lab-chaos: clock skew)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "lab install: all packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
cache="${IHA_APT_CACHE:-/var/tmp/iha-apt-lab}"
mkdir -p "$cache/partial"
APT_OPTS=(-o "Dir::Cache::Archives=$cache" -o DPkg::Lock::Timeout=900 -y -q)
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
$SUDO apt-get "${APT_OPTS[@]}" update >/dev/null || true
$SUDO apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}"
echo "lab install: ${#missing[@]} packages (plus dependencies) in $(( $(date +%s) - start )) s"
