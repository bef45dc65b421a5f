#!/usr/bin/env bash
# deploy/nfpm/build.sh OUT_DIR — static binaries and packages, for `make
# rpm`, `make deb`, `make dist` and the deploy/pkgtest test.
#
#   OUT_DIR/bin/linux-ARCH/{iha-leader,iha-agent,iha}   CGO_ENABLED=0, -trimpath
#   OUT_DIR/*.rpm, OUT_DIR/*.deb                       one per package, format, arch
#
# Environment: ARCHES ("amd64 arm64"), FORMATS ("rpm deb"; "none" builds the
# binaries only), PACKAGES ("iha-agent iha-leader iha"), VERSION (default
# git describe), GO (go), NFPM_VERSION (pinned below; nfpm ≥ v2.46 needs
# modules the Go proxy does not serve).
#
# If a binary does not build, the others are still built and packaged, the
# package of the broken one fails with a message naming it, and the script
# exits non-zero.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${1:?usage: deploy/nfpm/build.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

GO=${GO:-go}
ARCHES=${ARCHES:-amd64 arm64}
FORMATS=${FORMATS:-rpm deb}
PACKAGES=${PACKAGES:-iha-agent iha-leader iha}
NFPM_VERSION=${NFPM_VERSION:-v2.45.2}
version=$(deploy/nfpm/version.sh version)
pkgversion=$(deploy/nfpm/version.sh package)
# pkg/version for every binary.
ldflags="-s -w -X github.com/ihaproject/iha/pkg/version.Version=$version"

failed=()
for arch in $ARCHES; do
	bin="$out/bin/linux-$arch"
	mkdir -p "$bin"
	for cmd in iha-leader iha-agent iha; do
		echo "build: $cmd $version linux/$arch"
		if ! CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -ldflags "$ldflags" \
			-o "$bin/$cmd" "./cmd/$cmd"; then
			echo "build: $cmd for linux/$arch does not build; its package is not made" >&2
			rm -f "$bin/$cmd"
			failed+=("$cmd/$arch")
		fi
	done
done

if [ "$FORMATS" != none ]; then
	tools="$out/.tools"
	if [ ! -x "$tools/nfpm" ]; then
		echo "nfpm: installing $NFPM_VERSION"
		GOBIN="$tools" "$GO" install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
	fi
	for arch in $ARCHES; do
		bin="$out/bin/linux-$arch"
		for p in $PACKAGES; do
			cmd=$p
			if [ ! -x "$bin/$cmd" ]; then
				echo "package: $p for $arch: NOT BUILT: the binary $cmd does not build (see above)" >&2
				failed+=("package $p/$arch")
				continue
			fi
			for f in $FORMATS; do
				IHA_ARCH=$arch IHA_BIN=$bin IHA_VERSION=$pkgversion \
					"$tools/nfpm" package --config "deploy/nfpm/$p.yaml" --packager "$f" --target "$out/"
			done
		done
	done
fi

if [ ${#failed[@]} -gt 0 ]; then
	echo "build.sh: failed: ${failed[*]}" >&2
	exit 1
fi
