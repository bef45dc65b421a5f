#!/usr/bin/env bash
# deploy/nfpm/build.sh OUT_DIR — static binaries and packages, for `make
# rpm`, `make deb`, `make dist` and the deploy/pkgtest test.
#
#   OUT_DIR/bin/linux-ARCH/{iha-leader,iha-agent,iha}   CGO_ENABLED=0, -trimpath
#   OUT_DIR/share/man/man1/iha*.1.gz                    the iha man pages (iha docs man)
#   OUT_DIR/share/completion/iha.{bash,zsh,fish}        iha's shell completions
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
revision=$(git rev-parse HEAD 2>/dev/null || true)
if [ -n "$revision" ] && ! git diff --quiet HEAD 2>/dev/null; then
	revision="$revision-dirty"
fi
# pkg/version for every binary: the release and the commit.
ldflags="-s -w -X github.com/ihaproject/iha/pkg/version.Version=$version -X github.com/ihaproject/iha/pkg/version.Revision=$revision"

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

# The iha package's man pages and shell completions, generated from the
# command tree by an iha built for this machine (they do not depend on the
# architecture). Dated by the last commit, so that a rebuild is identical.
share="$out/share"
if [ "$FORMATS" != none ]; then
	rm -rf "$share"
	mkdir -p "$share/man/man1" "$share/completion" "$out/.tools"
	echo "docs: man pages and completions of iha $version"
	if CGO_ENABLED=0 "$GO" build -trimpath -ldflags "$ldflags" -o "$out/.tools/iha-docs" ./cmd/iha; then
		export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
		"$out/.tools/iha-docs" docs man --dir "$share/man/man1"
		gzip -9n "$share"/man/man1/*.1
		for sh in bash zsh fish; do
			"$out/.tools/iha-docs" completion "$sh" >"$share/completion/iha.$sh"
		done
	else
		echo "docs: iha does not build; its man pages and completions are not made" >&2
		failed+=("docs")
	fi
fi

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
				IHA_ARCH=$arch IHA_BIN=$bin IHA_SHARE=$share IHA_VERSION=$pkgversion \
					"$tools/nfpm" package --config "deploy/nfpm/$p.yaml" --packager "$f" --target "$out/"
			done
		done
	done
fi

if [ ${#failed[@]} -gt 0 ]; then
	echo "build.sh: failed: ${failed[*]}" >&2
	exit 1
fi
