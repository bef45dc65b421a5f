#!/usr/bin/env bash
# Installs the Debian packages that `make test` needs: the real peers the
# tests start (ipmi_sim, ipmitool, fence_kdump_send, rpm tools…). Idempotent
# and safe on a shared machine: a private download directory and a dpkg lock
# timeout (see docs/real-peers.md).
set -euo pipefail

PKGS=(
  openipmi        # ipmi_sim: a real IPMI LAN BMC (fence/ipmi tests)
  ipmitool        # reference IPMI client (test cross-checks)
  fence-agents    # /usr/libexec/fence-agents/fence_kdump_send (agent kdump tests)
  iproute2        # ip netns for network tests
  rpm             # rpm -qpl/-qpc/--scripts/-i --root: deploy/pkgtest checks the RPMs
  systemd         # systemd-analyze verify of the units (deploy/pkgtest)
  python3-nova python3-placement python3-glance  # deploy/lab: a real Nova (Zed) with fake computes
  rabbitmq-server mariadb-server python3-pymysql # deploy/lab: its message bus and databases
  etcd-server     # etcd for the real kube-apiserver of the fence/bmh tests (scripts/build-kube-apiserver.sh)
  mount           # mount/umount of a small tmpfs: cmd/iha-leader's disk-full test (needs root)
  man-db groff-base  # man -l renders the iha man pages (cmd/iha, deploy/pkgtest)
  bash-completion    # bash sources the iha completion script (cmd/iha, deploy/pkgtest)
  prometheus      # promtool: check and unit-test the alert and recording rules (deploy/monitoring)
  podman runc     # run the OCI image of `make image` (deploy/image; runc: crun refuses cgroup v1 here)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
cache="${IHA_APT_CACHE:-/var/tmp/iha-apt-cache}"
mkdir -p "$cache/partial"
APT_OPTS=(-o "Dir::Cache::Archives=$cache" -o DPkg::Lock::Timeout=900 -y -q)
export DEBIAN_FRONTEND=noninteractive
# An update is needed on a fresh machine; a stale list only costs a retry.
$SUDO apt-get "${APT_OPTS[@]}" update >/dev/null || true
$SUDO apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}"
