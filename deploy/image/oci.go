package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// Options say what goes into the image.
type Options struct {
	// BinDir holds linux-ARCH/iha-leader and linux-ARCH/iha.
	BinDir string
	Arches []string
	// Version and Revision become labels; Created the image's time.
	Version, Revision string
	Created           time.Time
	// RefName names the image in the layout's index.
	RefName string
}

// The image's user: no login, no shell; DATA_DIR is its home.
const (
	UID        = 65532
	GID        = 65532
	Entrypoint = "/usr/bin/iha-leader"
	DataDir    = "/var/lib/iha"
	CAFile     = "/etc/ssl/certs/ca-certificates.crt"
)

// Media types of the OCI image spec.
const (
	mtIndex    = "application/vnd.oci.image.index.v1+json"
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtConfig   = "application/vnd.oci.image.config.v1+json"
	mtLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type blob struct {
	desc descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{desc: descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}, data: data}
}

// Build writes the OCI archive to out and returns the image's digest (its
// manifest's with one architecture, its index's with several).
func Build(out string, o Options) (string, error) {
	if len(o.Arches) == 0 {
		return "", fmt.Errorf("no architecture")
	}
	ca, err := caBundle()
	if err != nil {
		return "", err
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "iha-leader",
		"org.opencontainers.image.description": "IHA: instance high availability for OpenStack (controller side: iha-leader and the iha CLI)",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.created":     o.Created.Format(time.RFC3339),
		"org.opencontainers.image.source":      "https://github.com/ihaproject/iha",
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	var blobs []blob
	var manifests []descriptor
	for _, arch := range o.Arches {
		layer, diffID, err := rootfsLayer(filepath.Join(o.BinDir, "linux-"+arch), ca, o.Created)
		if err != nil {
			return "", fmt.Errorf("%s: %w", arch, err)
		}
		cfg := map[string]any{
			"created":      o.Created.Format(time.RFC3339),
			"architecture": arch,
			"os":           "linux",
			"config": map[string]any{
				"User":       fmt.Sprintf("%d:%d", UID, GID),
				"Env":        []string{"PATH=/usr/bin", "SSL_CERT_FILE=" + CAFile},
				"Entrypoint": []string{Entrypoint},
				"WorkingDir": DataDir,
				"Labels":     labels,
				"ExposedPorts": map[string]any{
					"7420/tcp": map[string]any{}, "7421/tcp": map[string]any{},
					"7946/tcp": map[string]any{}, "7946/udp": map[string]any{}, "7410/udp": map[string]any{},
				},
				"Volumes": map[string]any{DataDir: map[string]any{}},
			},
			"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
			"history": []map[string]any{{"created": o.Created.Format(time.RFC3339), "created_by": "deploy/image (make image)"}},
		}
		cfgBlob := newBlob(mtConfig, mustJSON(cfg))
		man := map[string]any{
			"schemaVersion": 2,
			"mediaType":     mtManifest,
			"config":        cfgBlob.desc,
			"layers":        []descriptor{layer.desc},
			"annotations":   labels,
		}
		manBlob := newBlob(mtManifest, mustJSON(man))
		blobs = append(blobs, layer, cfgBlob, manBlob)
		d := manBlob.desc
		d.Platform = &platform{Architecture: arch, OS: "linux"}
		manifests = append(manifests, d)
	}
	ref := map[string]string{"org.opencontainers.image.ref.name": o.RefName}
	var top descriptor
	if len(manifests) == 1 {
		top = manifests[0]
	} else {
		idx := newBlob(mtIndex, mustJSON(map[string]any{"schemaVersion": 2, "mediaType": mtIndex, "manifests": manifests}))
		blobs = append(blobs, idx)
		top = idx.desc
	}
	digest := top.Digest
	top.Annotations = ref
	index := mustJSON(map[string]any{"schemaVersion": 2, "mediaType": mtIndex, "manifests": []descriptor{top}})

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	write := func(name string, data []byte) error {
		if err := tw.WriteHeader(fileHeader(name, int64(len(data)), 0o644, 0, 0, o.Created)); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(dirHeader(d, 0o755, 0, 0, o.Created)); err != nil {
			return "", err
		}
	}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].desc.Digest < blobs[j].desc.Digest })
	seen := map[string]bool{}
	for _, b := range blobs {
		if seen[b.desc.Digest] {
			continue
		}
		seen[b.desc.Digest] = true
		if err := write("blobs/sha256/"+b.desc.Digest[len("sha256:"):], b.data); err != nil {
			return "", err
		}
	}
	if err := write("index.json", index); err != nil {
		return "", err
	}
	if err := write("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	return digest, os.Rename(tmp, out)
}

// rootfsLayer is the image's only layer, gzipped, and its diff id (the
// digest of the uncompressed tar).
func rootfsLayer(binDir string, ca []byte, at time.Time) (blob, string, error) {
	leader, err := os.ReadFile(filepath.Join(binDir, "iha-leader"))
	if err != nil {
		return blob{}, "", err
	}
	cli, err := os.ReadFile(filepath.Join(binDir, "iha"))
	if err != nil {
		return blob{}, "", err
	}
	type entry struct {
		name string
		dir  bool
		mode int64
		uid  int
		data []byte
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\niha:x:%d:%d:IHA:%s:/sbin/nologin\n", UID, GID, DataDir)
	group := fmt.Sprintf("root:x:0:\niha:x:%d:\n", GID)
	entries := []entry{ // in tar order: every directory before what it holds
		{name: "etc/", dir: true, mode: 0o755},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/ssl/", dir: true, mode: 0o755},
		{name: "etc/ssl/certs/", dir: true, mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca},
		{name: "tmp/", dir: true, mode: 0o1777},
		{name: "usr/", dir: true, mode: 0o755},
		{name: "usr/bin/", dir: true, mode: 0o755},
		{name: "usr/bin/iha", mode: 0o755, data: cli},
		{name: "usr/bin/iha-leader", mode: 0o755, data: leader},
		{name: "var/", dir: true, mode: 0o755},
		{name: "var/lib/", dir: true, mode: 0o755},
		{name: "var/lib/iha/", dir: true, mode: 0o750, uid: UID},
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		gid := 0
		if e.uid != 0 {
			gid = GID
		}
		if e.dir {
			if err := tw.WriteHeader(dirHeader(e.name, e.mode, e.uid, gid, at)); err != nil {
				return blob{}, "", err
			}
			continue
		}
		if err := tw.WriteHeader(fileHeader(e.name, int64(len(e.data)), e.mode, e.uid, gid, at)); err != nil {
			return blob{}, "", err
		}
		if _, err := tw.Write(e.data); err != nil {
			return blob{}, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return blob{}, "", err
	}
	diff := sha256.Sum256(raw.Bytes())
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.DefaultCompression) // header: no name, no time
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return blob{}, "", err
	}
	if err := zw.Close(); err != nil {
		return blob{}, "", err
	}
	return newBlob(mtLayer, gz.Bytes()), "sha256:" + hex.EncodeToString(diff[:]), nil
}

func fileHeader(name string, size, mode int64, uid, gid int, at time.Time) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: mode, Uid: uid, Gid: gid,
		ModTime: at, Format: tar.FormatPAX}
}

func dirHeader(name string, mode int64, uid, gid int, at time.Time) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: gid, ModTime: at, Format: tar.FormatPAX}
}

// caBundle is Mozilla's root store (through golang.org/x/crypto/x509roots,
// pinned by go.sum) as PEM, without the roots that carry a constraint PEM
// cannot express.
func caBundle() ([]byte, error) {
	var b bytes.Buffer
	n := 0
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate}); err != nil {
			return nil, err
		}
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("the CA bundle is empty")
	}
	return b.Bytes(), nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
