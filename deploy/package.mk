# Packaging targets (issue 7), included by the top-level Makefile.
# deploy/nfpm/build.sh does the work; these targets only choose what to build.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
PKG_DIR ?= dist
# Architectures for `make rpm`/`make deb` (dist always builds both).
PKG_ARCHES ?= amd64 arm64

.PHONY: rpm deb packages dist package-check

rpm: ## build the iha-agent, iha-leader and iha RPMs into dist/ (nfpm, no rpmbuild)
	VERSION='$(VERSION)' GO='$(GO)' ARCHES='$(PKG_ARCHES)' FORMATS=rpm deploy/nfpm/build.sh $(PKG_DIR)

deb: ## build the same packages as .deb for Debian and Ubuntu sites
	VERSION='$(VERSION)' GO='$(GO)' ARCHES='$(PKG_ARCHES)' FORMATS=deb deploy/nfpm/build.sh $(PKG_DIR)

packages: ## rpm and deb in one go
	VERSION='$(VERSION)' GO='$(GO)' ARCHES='$(PKG_ARCHES)' FORMATS='rpm deb' deploy/nfpm/build.sh $(PKG_DIR)

dist: ## static binaries for linux/amd64 and linux/arm64 with version, as tarballs with SHA256SUMS
	VERSION='$(VERSION)' GO='$(GO)' ARCHES='amd64 arm64' FORMATS=none deploy/nfpm/build.sh $(PKG_DIR)
	@set -e; cd $(PKG_DIR); rm -f SHA256SUMS; \
	for a in amd64 arm64; do \
	  t=iha-$(VERSION)-linux-$$a.tar.gz; \
	  tar -C bin/linux-$$a --owner=0 --group=0 -czf $$t iha-leader iha-agent iha; \
	  echo "dist: $(PKG_DIR)/$$t"; \
	done; \
	sha256sum iha-*.tar.gz > SHA256SUMS; cat SHA256SUMS

package-check: ## build the amd64 RPMs and .debs and check them (rpm -qpl/-qpc/--scripts, scratch install, systemd-analyze verify)
	VERSION='$(VERSION)' GO='$(GO)' ARCHES=amd64 FORMATS='rpm deb' deploy/nfpm/build.sh $(PKG_DIR)/check
	VERSION='$(VERSION)' GO='$(GO)' scripts/package-check.sh $(PKG_DIR)/check
