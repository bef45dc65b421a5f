package pkgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/novasim"
)

// slow scales every deadline: IHA_TEST_SLOW=3 on a loaded machine.
func slow() time.Duration {
	var n int
	if _, err := fmt.Sscan(os.Getenv("IHA_TEST_SLOW"), &n); err == nil && n > 1 {
		return time.Duration(n)
	}
	return 1
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", dir, err)
	}
	return dir
}

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"rpm", "systemd-analyze", "dpkg-deb", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/install-test-deps.sh (make test-deps)", tool)
		}
	}
}

// run runs a command with a deadline and returns its combined output.
func run(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout*slow())
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %v: %w", name, timeout*slow(), err)
	}
	return out.String(), err
}

// built is the output of one build.sh run, shared by the subtests.
type built struct {
	root, out, version string
	env                []string
}

// The packages are built once for every test of the package (a build
// costs about a minute), into a directory TestMain removes.
var (
	buildOnce sync.Once
	shared    built
	buildLog  string
	buildErr  error
	sharedDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

func build(t *testing.T) built {
	t.Helper()
	needTools(t)
	buildOnce.Do(func() {
		root := repoRoot(t)
		// One version for the whole run, even if HEAD moves meanwhile.
		v, err := run(t, time.Minute, root, nil, "git", "describe", "--tags", "--always", "--dirty")
		version := strings.TrimSpace(v)
		if err != nil || version == "" {
			version = "v0.0.0-pkgtest"
		}
		if sharedDir, buildErr = os.MkdirTemp("", "iha-pkgtest-"); buildErr != nil {
			return
		}
		shared = built{root: root, out: sharedDir, version: version,
			env: []string{"VERSION=" + version, "ARCHES=amd64", "FORMATS=rpm deb"}}
		start := time.Now()
		out, err := run(t, 8*time.Minute, root, shared.env, "deploy/nfpm/build.sh", shared.out)
		buildLog = fmt.Sprintf("build.sh (%v):\n%s", time.Since(start).Round(time.Second), out)
		if err != nil {
			buildErr = fmt.Errorf("deploy/nfpm/build.sh: %w", err)
		}
	})
	t.Log(buildLog)
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return shared
}

func TestPackages(t *testing.T) {
	b := build(t)

	t.Run("package-check accepts the packages", func(t *testing.T) {
		out, err := run(t, 3*time.Minute, b.root, b.env, "scripts/package-check.sh", b.out)
		t.Logf("package-check.sh:\n%s", out)
		if err != nil {
			t.Fatalf("package-check.sh failed: %v", err)
		}
		for _, want := range []string{
			"ok:   iha-agent: rpm -qpl lists the expected files",
			"ok:   iha-leader: rpm -qpc lists the config files",
			"ok:   iha-agent: no scriptlet starts, restarts, enables or stops a service",
			"ok:   installed iha-agent --version: iha-agent " + b.version,
			"ok:   systemd-analyze verify accepts",
			"ok:   iha-agent has no Nova or BMC client code",
			"ok:   iha: rpm -qpl lists the expected files",
			"ok:   iha.deb: dpkg-deb -c lists the expected files",
			"ok:   iha: man -l renders its",
			"ok:   iha: bash-completion loads the installed script; 'iha ho<TAB>' offers host hosts",
			"package-check: every check passed",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("package-check output lacks %q", want)
			}
		}
	})

	t.Run("package-check rejects a package that restarts its service", func(t *testing.T) {
		bad := t.TempDir()
		for _, f := range rpmFiles(t, b.out) {
			if !strings.HasPrefix(filepath.Base(f), "iha-agent-") {
				link(t, f, filepath.Join(bad, filepath.Base(f)))
			}
		}
		// The agent package again, with a post-install that restarts it.
		script := filepath.Join(t.TempDir(), "postinstall.sh")
		if err := os.WriteFile(script, []byte("#!/bin/sh\nsystemctl daemon-reload\nsystemctl try-restart iha-agent.service\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		conf := readFile(t, filepath.Join(b.root, "deploy/nfpm/iha-agent.yaml"))
		conf = strings.Replace(conf, "postinstall: deploy/nfpm/scripts/postinstall.sh", "postinstall: "+script, 1)
		cfg := filepath.Join(t.TempDir(), "bad-agent.yaml")
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		pv, err := run(t, time.Minute, b.root, b.env, "deploy/nfpm/version.sh", "package")
		if err != nil {
			t.Fatal(err)
		}
		env := append([]string{"IHA_ARCH=amd64", "IHA_BIN=" + filepath.Join(b.out, "bin/linux-amd64"),
			"IHA_VERSION=" + strings.TrimSpace(pv)}, b.env...)
		if out, err := run(t, 2*time.Minute, b.root, env, filepath.Join(b.out, ".tools/nfpm"),
			"package", "--config", cfg, "--packager", "rpm", "--target", bad+"/"); err != nil {
			t.Fatalf("nfpm: %v\n%s", err, out)
		}
		out, err := run(t, 3*time.Minute, b.root, b.env, "scripts/package-check.sh", bad)
		t.Logf("package-check.sh on the bad package:\n%s", out)
		if err == nil {
			t.Fatal("package-check.sh passed a package whose scriptlet restarts iha-agent")
		}
		if !strings.Contains(out, "FAIL: iha-agent: a scriptlet starts, restarts, enables or stops a service") {
			t.Fatal("package-check.sh failed, but not because of the restart")
		}
		if strings.Contains(out, "FAIL: iha-leader") {
			t.Fatal("package-check.sh blamed the good iha-leader package")
		}
	})

	t.Run("the iha package ships its man pages and shell completions", func(t *testing.T) {
		files := map[string]string{} // path → package format
		rpmList, err := run(t, time.Minute, b.root, nil, "rpm", "-qpl", pkgFile(t, b.out, "iha-[0-9]*.x86_64.rpm"))
		if err != nil {
			t.Fatalf("rpm -qpl: %v\n%s", err, rpmList)
		}
		for _, f := range strings.Fields(rpmList) {
			files[f] += "rpm "
		}
		debList, err := run(t, time.Minute, b.root, nil, "dpkg-deb", "-c", pkgFile(t, b.out, "iha_*_amd64.deb"))
		if err != nil {
			t.Fatalf("dpkg-deb -c: %v\n%s", err, debList)
		}
		for _, l := range strings.Split(debList, "\n") {
			if f := strings.Fields(l); len(f) >= 6 {
				files[strings.TrimPrefix(f[5], ".")] += "deb "
			}
		}
		for path, in := range map[string]string{
			"/usr/share/bash-completion/completions/iha":      "rpm deb ",
			"/usr/share/fish/vendor_completions.d/iha.fish":   "rpm deb ",
			"/usr/share/zsh/site-functions/_iha":              "rpm ",
			"/usr/share/zsh/vendor-completions/_iha":          "deb ",
			"/usr/share/man/man1/iha.1.gz":                    "rpm deb ",
			"/usr/share/man/man1/iha-hosts.1.gz":              "rpm deb ",
			"/usr/share/man/man1/iha-controllers-remove.1.gz": "rpm deb ",
		} {
			if files[path] != in {
				t.Errorf("%s is in %q, want %q", path, files[path], in)
			}
		}
		// The installed page is the iha that was installed, rendered.
		sys := install(t, b)
		page, err := run(t, time.Minute, sys, []string{"MANWIDTH=100", "MANPAGER=cat", "LC_ALL=C"}, "man", "-l", filepath.Join(sys, "usr/share/man/man1/iha-hosts.1.gz"))
		if err != nil || !strings.Contains(page, "iha-hosts - every compute") || !strings.Contains(page, "--watch") {
			t.Fatalf("man -l iha-hosts.1.gz: %v\n%s", err, page)
		}
		out, err := run(t, time.Minute, sys, nil, filepath.Join(sys, "usr/bin/iha"), "completion", "bash")
		if comp := readFile(t, filepath.Join(sys, "usr/share/bash-completion/completions/iha")); err != nil || comp != out {
			t.Fatalf("the packaged bash completion is not what the packaged iha prints (%v)", err)
		}
	})

	t.Run("the installed leader boots with the packaged samples", func(t *testing.T) {
		sys := install(t, b)
		bootLeader(t, sys)
	})
}

// install puts the built RPMs into a fresh root (no scriptlets: the root
// has no /bin/sh) and returns it.
func install(t *testing.T, b built) string {
	t.Helper()
	sys := t.TempDir()
	if out, err := run(t, time.Minute, sys, nil, "rpm", "--root", sys, "--initdb"); err != nil {
		t.Fatalf("rpm --initdb: %v\n%s", err, out)
	}
	args := append([]string{"-i", "--root", sys, "--nodeps", "--noscripts"}, rpmFiles(t, b.out)...)
	if out, err := run(t, 2*time.Minute, sys, nil, "rpm", args...); err != nil {
		t.Fatalf("rpm -i --root: %v\n%s", err, out)
	}
	return sys
}

// bootLeader starts the installed iha-leader with the installed sample
// files, changed only where a test machine must differ: Keystone's URL
// (novasim's), loopback listen ports, a temporary DATA_DIR, and BMC
// addresses moved from 192.0.2.x (documentation addresses) to 127.0.0.x,
// and a CA file for the bmh entry.
// INSTANCEHA_DISABLED=True keeps it from fencing anything.
func bootLeader(t *testing.T, sys string) {
	// novasim accepts the sample's user (admin, project admin) with the
	// sample secure.yaml's password.
	sim, err := novasim.New(novasim.Options{Password: "change-me", NoStartupDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	sim.AddCompute("compute-0", "nova")
	sim.AddCompute("compute-1", "nova")

	etc := filepath.Join(sys, "etc/iha")
	conf := t.TempDir()
	raftAddr, apiAddr := freeAddr(t), freeAddr(t)
	edit := func(name string, pairs ...string) {
		s := readFile(t, filepath.Join(etc, name))
		for i := 0; i < len(pairs); i += 2 {
			re := regexp.MustCompile(pairs[i])
			if !re.MatchString(s) {
				t.Fatalf("%s: the sample has no %q any more; update this test", name, pairs[i])
			}
			s = re.ReplaceAllString(s, pairs[i+1])
		}
		if err := os.WriteFile(filepath.Join(conf, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	edit("config.yaml",
		`(?m)^  RAFT_ADDR: .*$`, `  RAFT_ADDR: "`+raftAddr+`"`,
		`(?m)^  API_ADDR: .*$`, `  API_ADDR: "`+apiAddr+`"`,
		`(?m)^  DATA_DIR: .*$`, `  DATA_DIR: "`+filepath.Join(t.TempDir(), "raft")+`"`,
		`(?m)^  GOSSIP_BIND: .*$`, `  GOSSIP_BIND: "`+freeAddr(t)+`"`)
	edit("clouds.yaml", `https://keystone\.example\.com:5000/v3`, sim.AuthURL())
	edit("secure.yaml")
	// The bmh sample's ca_file defaults to the in-cluster service account
	// CA, which only exists inside Kubernetes: give it one.
	edit("fencing.yaml", `192\.0\.2\.`, `127.0.0.`,
		`(?m)^(    namespace: openstack)$`, "$1\n    ca_file: "+writeCA(t))
	// The packages ship no key: the mesh's keys are made once with the
	// packaged iha-leader, as docs/operations.md says, beside config.yaml
	// where the defaults look.
	for _, f := range []string{"gossip.keyring", "cluster.key"} {
		if _, err := os.Stat(filepath.Join(etc, f)); err == nil {
			t.Fatalf("the package installed %s: packaging must generate nothing secret", f)
		}
	}
	for name, args := range map[string][]string{"gossip.keyring": {"keygen", "gossip"}, "cluster.key": {"keygen", "cluster"}} {
		cmd := exec.Command(filepath.Join(sys, "usr/bin/iha-leader"), args...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("iha-leader %v: %v", args, err)
		}
		if err := os.WriteFile(filepath.Join(conf, name), out, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// `iha config check` (which also builds the fencing drivers, as the
	// leader does) accepts the packaged samples with those local values.
	out, err := run(t, time.Minute, sys, nil, filepath.Join(sys, "usr/bin/iha"), "config", "check", "--dir", conf)
	t.Logf("iha config check on the packaged samples:\n%s", out)
	if err != nil {
		t.Fatalf("iha config check on the packaged samples: %v", err)
	}

	logPath := filepath.Join(t.TempDir(), "iha-leader.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(sys, "usr/bin/iha-leader"))
	cmd.Env = append(os.Environ(),
		"INSTANCEHA_CONFIG_PATH="+filepath.Join(conf, "config.yaml"),
		"CLOUDS_CONFIG_PATH="+filepath.Join(conf, "clouds.yaml"),
		"SECURE_CONFIG_PATH="+filepath.Join(conf, "secure.yaml"),
		"FENCING_CONFIG_PATH="+filepath.Join(conf, "fencing.yaml"),
		"OS_CLOUD=overcloud", "INSTANCEHA_DISABLED=True", "NOTIFY_SOCKET=")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID; a no-op once it has exited
		<-exited
		t.Logf("iha-leader log:\n%s", readFile(t, logPath))
	})

	// /healthz: the process serves; /readyz: Raft has a leader and the
	// leader authenticated to Keystone with the sample credentials and
	// polled Nova.
	base := "http://" + apiAddr
	for _, path := range []string{"/healthz", "/readyz"} {
		if err := waitOK(base+path, 90*time.Second*slow(), exited); err != nil {
			t.Fatalf("installed iha-leader %s: %v", path, err)
		}
		t.Logf("installed iha-leader answers %s", path)
	}
	// The sample credentials (clouds.yaml + secure.yaml) got a token, and
	// the leader listed Nova's services with it.
	if n := sim.Calls(novasim.RouteTokens); n == 0 {
		t.Fatal("the installed leader is ready but never asked Keystone for a token")
	}
	if n := sim.Calls(novasim.RouteServicesList); n == 0 {
		t.Fatal("the installed leader is ready but never listed Nova's services")
	}
	if n := sim.Calls(novasim.RouteServiceUpdate); n != 0 {
		t.Fatalf("the installed leader changed %d Nova services of a healthy cloud", n)
	}

	// Stop it as systemd does: SIGTERM to the PID, then wait.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("iha-leader did not stop cleanly on SIGTERM: %v", waitErr)
		}
	case <-time.After(60 * time.Second * slow()):
		t.Fatal("iha-leader still runs 60 s after SIGTERM (TimeoutStopSec is 60 s)")
	}
}

func waitOK(url string, timeout time.Duration, exited <-chan struct{}) error {
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(timeout)
	last := errors.New("no answer yet")
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("iha-leader exited (its log follows)")
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("HTTP %d", resp.StatusCode)
		} else {
			last = err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no 200 within %v: %w", timeout, last)
}

// writeCA writes a self-signed CA certificate (PEM) and returns its path.
func writeCA(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.crt")
	testkit.WriteCA(t, path, "pkgtest CA")
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// pkgFile is the one file of dir matching glob.
func pkgFile(t *testing.T, dir, glob string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, glob))
	if err != nil || len(files) != 1 {
		t.Fatalf("want one %s in %s, got %v (%v)", glob, dir, files, err)
	}
	return files[0]
}

func rpmFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.x86_64.rpm"))
	if err != nil || len(files) != 3 {
		t.Fatalf("want 3 x86_64 RPMs in %s, got %v (%v)", dir, files, err)
	}
	return files
}

func link(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Link(from, to); err != nil {
		b, rerr := os.ReadFile(from)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
