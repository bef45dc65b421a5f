package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testkit"
)

// scale stretches deadlines on a slow or busy machine (testkit.ScaleEnv,
// default 2).
var scale = testkit.Scaler(2)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// binaries builds iha-leader and iha as `make image` does, once per test
// binary, into BinDir's layout (linux-amd64/).
func binaries(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "iha-image-bin-")
		if binErr != nil {
			return
		}
		// The image tool itself, built without the race detector (gzip
		// under -race takes minutes), run as `make image` runs it.
		if out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "image-tool"), ".").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build deploy/image: %v\n%s", err, out)
			return
		}
		// As make image builds them, and, under dev/, the same with the
		// demo's build tag: the shipped iha-leader has no demo, and the
		// demo image (tests only) shows the image's layout carries a whole
		// leader run.
		for _, v := range []struct{ dir, tags string }{{binDir, ""}, {filepath.Join(binDir, "dev"), "dev"}} {
			for _, c := range []string{"iha-leader", "iha"} {
				cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-tags", v.tags, "-ldflags", "-s -w -X github.com/ihaproject/iha/pkg/version.Version=v0.0.0-imagetest",
					"-o", filepath.Join(v.dir, "linux-amd64", c), "../../cmd/"+c)
				cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
				if out, err := cmd.CombinedOutput(); err != nil {
					binErr = fmt.Errorf("go build %s (tags %q): %v\n%s", c, v.tags, err, out)
					return
				}
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	for _, b := range []*builtImage{&shared, &demo} {
		if b.path != "" {
			_ = os.RemoveAll(filepath.Dir(b.path))
		}
	}
	os.Exit(code)
}

type builtImage struct {
	once   sync.Once
	path   string
	digest string
	err    error
}

// shared is the image as make image builds it; demo the same layout with
// the demo's build of iha-leader (demoOpts).
var shared, demo builtImage

// image builds the test image once per test binary (the content, dev-mode
// and podman tests read the same archive).
func image(t *testing.T) (path, digest string) {
	t.Helper()
	return shared.get(t, opts(t))
}

// demoImage is the image with iha-leader built with the demo's tag.
func demoImage(t *testing.T) (path, digest string) {
	t.Helper()
	return demo.get(t, demoOpts(t))
}

func (b *builtImage) get(t *testing.T, o Options) (path, digest string) {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "iha-image-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "image.tar")
		b.digest, b.err = build(t, b.path, o)
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path, b.digest
}

// build runs the image tool with o, as `make image` does, and returns the
// digest it prints.
func build(t *testing.T, out string, o Options) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binaries(t), "image-tool"), "-bin", o.BinDir, "-arches", strings.Join(o.Arches, " "),
		"-version", o.Version, "-revision", o.Revision, "-created", strconv.FormatInt(o.Created.Unix(), 10), "-tag", o.RefName, "-out", out)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("image tool: %v\n%s", err, b)
	}
	f := strings.Fields(string(b))
	if len(f) < 3 || !strings.HasPrefix(f[2], "sha256:") {
		return "", fmt.Errorf("image tool printed %q", b)
	}
	return f[2], nil
}

func opts(t *testing.T) Options {
	return Options{BinDir: binaries(t), Arches: []string{"amd64"}, Version: "v0.0.0-imagetest",
		Revision: "0123456789abcdef0123456789abcdef01234567", Created: time.Unix(1_796_644_008, 0).UTC(), RefName: "localhost/iha-leader:imagetest"}
}

// demoOpts builds the same image from the demo's binaries (binaries' dev/).
func demoOpts(t *testing.T) Options {
	o := opts(t)
	o.BinDir, o.RefName = filepath.Join(o.BinDir, "dev"), "localhost/iha-leader:imagetest-demo"
	return o
}

// layout is an OCI archive read back.
type layout struct {
	files map[string][]byte
}

func readArchive(t *testing.T, path string) layout {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := layout{files: map[string][]byte{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return l
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		l.files[h.Name] = b
	}
}

func (l layout) blob(t *testing.T, digest string) []byte {
	t.Helper()
	b, ok := l.files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing", digest)
	}
	return b
}

func (l layout) json(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// TestImageDigestIsReproducible: the same inputs give the same bytes, so
// the same commit gives the same digest; the commit's time is an input.
func TestImageDigestIsReproducible(t *testing.T) {
	dir := t.TempDir()
	o := opts(t)
	d1, err := build(t, filepath.Join(dir, "a.tar"), o)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := build(t, filepath.Join(dir, "b.tar"), o)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "a.tar"))
	b, _ := os.ReadFile(filepath.Join(dir, "b.tar"))
	if d1 != d2 || !bytes.Equal(a, b) {
		t.Fatalf("two builds differ: %s vs %s (archives equal: %v)", d1, d2, bytes.Equal(a, b))
	}
	t.Logf("digest %s, archive %d bytes", d1, len(a))
}

// TestImageContent reads the archive as a runtime would: index, manifest,
// config (non-root user, entrypoint, labels) and the layer's files.
func TestImageContent(t *testing.T) {
	out, digest := image(t)
	l := readArchive(t, out)
	if string(l.files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout %q", l.files["oci-layout"])
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	l.json(t, l.files["index.json"], &index)
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != digest || index.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "localhost/iha-leader:imagetest" {
		t.Fatalf("index %+v, digest %s", index, digest)
	}
	var man struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	l.json(t, l.blob(t, digest), &man)
	var cfg struct {
		Architecture string `json:"architecture"`
		Config       struct {
			User       string
			Entrypoint []string
			Env        []string
			Labels     map[string]string
		} `json:"config"`
	}
	l.json(t, l.blob(t, man.Config.Digest), &cfg)
	if cfg.Config.User != "65532:65532" || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/usr/bin/iha-leader" || cfg.Architecture != "amd64" {
		t.Errorf("config %+v", cfg)
	}
	for k, v := range map[string]string{"org.opencontainers.image.version": "v0.0.0-imagetest",
		"org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
		"org.opencontainers.image.created":  "2026-12-07T11:46:48Z"} {
		if cfg.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cfg.Config.Labels[k], v)
		}
	}
	if len(man.Layers) != 1 {
		t.Fatalf("%d layers", len(man.Layers))
	}
	zr, err := gzip.NewReader(bytes.NewReader(l.blob(t, man.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	got := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
		if h.Name == "etc/ssl/certs/ca-certificates.crt" {
			b, _ := io.ReadAll(tr)
			if n := bytes.Count(b, []byte("BEGIN CERTIFICATE")); n < 100 {
				t.Errorf("CA bundle has %d certificates", n)
			}
		}
	}
	for name, want := range map[string]struct {
		mode int64
		uid  int
	}{"usr/bin/iha-leader": {0o755, 0}, "usr/bin/iha": {0o755, 0}, "var/lib/iha/": {0o750, UID}, "tmp/": {0o1777, 0},
		"etc/passwd": {0o644, 0}, "etc/ssl/certs/ca-certificates.crt": {0o644, 0}} {
		h := got[name]
		if h == nil {
			t.Errorf("%s missing from the layer", name)
			continue
		}
		if h.Mode != want.mode || h.Uid != want.uid {
			t.Errorf("%s: mode %o uid %d, want %o uid %d", name, h.Mode, h.Uid, want.mode, want.uid)
		}
	}
}

// extract unpacks the image's layer into dir (regular files and
// directories only: that is all the image has).
func extract(t *testing.T, archive, dir string) {
	t.Helper()
	l := readArchive(t, archive)
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	l.json(t, l.files["index.json"], &index)
	var man struct {
		Layers []descriptor `json:"layers"`
	}
	l.json(t, l.blob(t, index.Manifests[0].Digest), &man)
	zr, err := gzip.NewReader(bytes.NewReader(l.blob(t, man.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			if err := os.WriteFile(p, b, os.FileMode(h.Mode)&0o777); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// runDev runs cmd (iha-leader -dev, one way or another) to completion and
// checks that the demo recovered the failed compute.
func runDev(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v: %v\n%s", cmd.Args, err, out.String())
		}
	case <-time.After(scale(3 * time.Minute)):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not finish\n%s", cmd.Args, out.String())
	}
	if !strings.Contains(out.String(), "recovery done") {
		t.Fatalf("%v: no recovery in the output\n%s", cmd.Args, out.String())
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "recovery done") {
			t.Log(strings.TrimSpace(l))
		}
	}
}

// TestImageBinaryRunsDevMode extracts the image's root file system and runs
// its iha-leader: the shipped binary runs with nothing of this machine
// (-version) and has no demo (-dev exits 2 and says to run make dev); the
// same layout with the demo's build runs a whole leader, Raft, API and a
// recovery, to completion.
func TestImageBinaryRunsDevMode(t *testing.T) {
	out, _ := image(t)
	root := t.TempDir()
	extract(t, out, root)
	env := []string{"PATH=/usr/bin", "SSL_CERT_FILE=" + filepath.Join(root, CAFile), "TMPDIR=" + t.TempDir()}
	ver := exec.Command(filepath.Join(root, "usr/bin/iha-leader"), "-version")
	ver.Dir, ver.Env = root, env
	if b, err := ver.CombinedOutput(); err != nil || !strings.Contains(string(b), "v0.0.0-imagetest") {
		t.Fatalf("the image's iha-leader -version: %v\n%s", err, b)
	}
	dev := exec.Command(filepath.Join(root, "usr/bin/iha-leader"), "-dev")
	dev.Dir, dev.Env = root, env
	b, err := dev.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(b), "make dev") {
		t.Fatalf("the shipped iha-leader -dev: %v, want exit 2 naming make dev\n%s", err, b)
	}

	demoOut, _ := demoImage(t)
	demoRoot := t.TempDir()
	extract(t, demoOut, demoRoot)
	cmd := exec.Command(filepath.Join(demoRoot, "usr/bin/iha-leader"), "-dev")
	cmd.Dir = demoRoot
	cmd.Env = []string{"PATH=/usr/bin", "SSL_CERT_FILE=" + filepath.Join(demoRoot, CAFile), "TMPDIR=" + t.TempDir()}
	runDev(t, cmd)
}

// TestImageRunsWithPodman loads the archive into podman and runs the image
// itself, as its non-root user with a read-only root and no network: the
// demo (the image built with the demo's iha-leader) runs to completion. Podman runs containers on this kind of machine
// with runc and cgroupfs (crun refuses its cgroup v1 hierarchy) and with
// explicit ulimits (the sandbox refuses podman's defaults).
func TestImageRunsWithPodman(t *testing.T) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Fatalf("podman not found (Debian packages podman and runc; scripts/install-test-deps.sh): %v", err)
	}
	out, _ := demoImage(t)
	ref := demoOpts(t).RefName
	global := []string{"--runtime", "runc", "--cgroup-manager", "cgroupfs"}
	if b, err := exec.Command(podman, append(global, "load", "-q", "-i", out)...).CombinedOutput(); err != nil || !strings.Contains(string(b), ref) {
		t.Fatalf("podman load: %v\n%s", err, b)
	}
	t.Cleanup(func() { _ = exec.Command(podman, append(global, "rmi", "-f", ref)...).Run() })
	args := append(global, "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", ref, "-dev")
	runDev(t, exec.Command(podman, args...))
}
