#!/usr/bin/env bash
# Builds kube-apiserver from the Go module proxy and caches the binary, so the
# fence/bmh tests can run a real Kubernetes API server (Debian ships none, and
# envtest's downloader cannot reach its store; see docs/real-peers.md).
#
# The build lives in a throw-away wrapper module under the cache directory,
# never inside the repository's module: IHA's go.mod must not depend on
# k8s.io/kubernetes. The wrapper requires k8s.io/kubernetes at KUBE_VERSION and
# replaces every staging module upstream's go.mod lists (k8s.io/<name> =>
# ./staging/...) by its published v0.<minor>.<patch> release.
#
# Cold cost on 2 cores: ~1 min download, ~6 min compile, ~3 GB of Go caches,
# a ~105 MB binary. Warm cost: nothing (the binary is keyed by version).
#
# Usage: scripts/build-kube-apiserver.sh   -> prints the binary's path
# Env:   KUBE_VERSION   (default v1.36.3)
#        IHA_KUBE_CACHE (default /var/tmp/iha-kube)
set -euo pipefail

version="${KUBE_VERSION:-v1.36.3}"
cache="${IHA_KUBE_CACHE:-/var/tmp/iha-kube}"
out="$cache/kube-apiserver-$version"

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
# One build per machine at a time: a test and `make test-deps` may both ask.
exec 9>"$cache/build-$version.lock"
flock 9
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

case "$version" in
  v1.*.*) staging_version="v0.${version#v1.}" ;;
  *) echo "build-kube-apiserver: unsupported KUBE_VERSION $version" >&2; exit 2 ;;
esac

go="${GO:-go}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
work="$cache/wrapper-$version"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

upstream_mod="$("$go" mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[ -r "$upstream_mod" ] || { echo "build-kube-apiserver: no go.mod for k8s.io/kubernetes@$version" >&2; exit 1; }
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$upstream_mod")
[ ${#staging[@]} -gt 0 ] || { echo "build-kube-apiserver: no staging modules in $upstream_mod" >&2; exit 1; }
go_line="$(grep -m1 '^go ' "$upstream_mod")"

{
  echo "module iha.local/kube-apiserver-wrapper"
  echo
  echo "$go_line"
  echo
  echo "require k8s.io/kubernetes $version"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do
    echo "	$m => $m $staging_version"
  done
  echo ")"
} >go.mod

echo "build-kube-apiserver: resolving k8s.io/kubernetes@$version (${#staging[@]} staging modules at $staging_version)" >&2
"$go" get "k8s.io/kubernetes/cmd/kube-apiserver@$version" >&2
echo "build-kube-apiserver: compiling (several minutes on a cold cache)" >&2
"$go" build -trimpath -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv "$out.tmp" "$out"
echo "$out"
