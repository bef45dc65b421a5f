# The container image (issue 19), included by the top-level Makefile.
# deploy/image assembles it by hand (see deploy/image/doc.go for why).

GO           ?= go
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE_ARCHES ?= amd64
IMAGE_DIR    ?= dist/image
IMAGE        ?= dist/iha-leader-image.oci.tar
# The commit's time and id: the same commit gives the same digest.
IMAGE_EPOCH  ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_REV    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

.PHONY: image

image: ## OCI archive of iha-leader + iha (scratch, non-root, CA bundle) in dist/; one commit, one digest
	@set -e; for a in $(IMAGE_ARCHES); do \
	  echo "image: building iha-leader and iha $(VERSION) for linux/$$a"; \
	  for c in iha-leader iha; do \
	    CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -buildvcs=false \
	      -ldflags '-s -w -X github.com/ihaproject/iha/pkg/version.Version=$(VERSION)' \
	      -o $(IMAGE_DIR)/linux-$$a/$$c ./cmd/$$c; \
	  done; done
	$(GO) run ./deploy/image -bin $(IMAGE_DIR) -arches '$(IMAGE_ARCHES)' -version '$(VERSION)' \
	  -revision '$(IMAGE_REV)' -created '$(IMAGE_EPOCH)' -out $(IMAGE)
