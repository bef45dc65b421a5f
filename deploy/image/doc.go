// Command image assembles IHA's OCI image (iha-leader and iha) from static
// binaries, by hand, as an OCI image layout in a tar archive (an
// "oci-archive" that podman, skopeo, crane and containerd load).
//
// Why by hand: the image is one layer of a few files on `scratch`; writing
// the layout is a few hundred lines of the standard library, needs neither
// a daemon, nor root, nor user namespaces, nor a registry, nor the network
// (buildah and podman need the first ones and fetch a base image), and
// makes the digest a pure function of its inputs: the binaries (same
// commit, same Go toolchain), the CA bundle (golang.org/x/crypto/x509roots,
// pinned by go.sum), the labels and the creation time, which is the
// commit's time (SOURCE_DATE_EPOCH). Every tar header, file order, gzip
// header and JSON document is fixed, so `make image` twice gives one
// digest.
//
// The image: /usr/bin/iha-leader (the entrypoint) and /usr/bin/iha, user
// 65532:65532 (iha, no shell, no home but DATA_DIR), /var/lib/iha owned by
// it (the StatefulSet mounts a volume there), /tmp, /etc/passwd and
// /etc/group, and Mozilla's roots as /etc/ssl/certs/ca-certificates.crt
// (roots with a distrust-after constraint, which PEM cannot carry, are left
// out). Labels: org.opencontainers.image.{title,version,revision,created,
// source,licenses}.
//
// It owns the image format only; it never builds Go code (make image does)
// and never pushes anywhere.
package main
