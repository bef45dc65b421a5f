package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testaddr"
	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/novasim"
)

// These tests build the real binaries (go build into t.TempDir) and run
// controllers as separate processes on loopback, each with its own
// InstanceHA-style configuration directory, against one novasim.

// slowFactor stretches deadlines: IHA_TEST_SLOW=3 on a loaded machine.
func slowFactor() time.Duration {
	var n int
	if _, err := fmt.Sscan(os.Getenv("IHA_TEST_SLOW"), &n); err == nil && n > 1 {
		return time.Duration(n)
	}
	return 1
}

// buildBinaries builds iha-leader and iha once per test into dir.
func buildBinaries(t *testing.T) (leaderBin, cliBin string) {
	t.Helper()
	dir := t.TempDir()
	leaderBin, cliBin = filepath.Join(dir, "iha-leader"), filepath.Join(dir, "iha")
	for bin, pkg := range map[string]string{leaderBin: ".", cliBin: "../iha"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute*slowFactor())
		out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return leaderBin, cliBin
}

// pki is a throw-away CA that issues controller certificates for
// 127.0.0.1 and localhost, usable as TLS server and client.
type pki struct {
	ca     *testkit.CA
	caFile string
	dir    string
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	p := &pki{ca: testkit.NewCA(t, name), dir: t.TempDir()}
	p.caFile = filepath.Join(p.dir, "ca.crt")
	p.ca.WriteFile(t, p.caFile)
	return p
}

// issue returns the paths of a certificate and key for name.
func (p *pki) issue(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	return p.ca.IssueFiles(t, p.dir, name, "127.0.0.1", "localhost")
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// controller is one iha-leader process.
type controller struct {
	name, raftAddr, apiAddr, confDir, dataDir string
	args                                      []string // command-line arguments
	extraEnv                                  []string // environment besides env()
	cmd                                       *exec.Cmd
	log                                       *lockedBuf
	exited                                    chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const processToken = "ProcTestWriteToken-5521"

// writeConfig writes the controller's four InstanceHA files; extra are
// more config: keys.
func (c *controller) writeConfig(t testing.TB, sim *novasim.Sim, extra map[string]string) {
	t.Helper()
	c.confDir, c.dataDir = t.TempDir(), filepath.Join(t.TempDir(), "raft")
	var cfg strings.Builder
	cfg.WriteString("config:\n")
	keys := map[string]string{"NODE_NAME": c.name, "RAFT_ADDR": c.raftAddr, "API_ADDR": c.apiAddr, "DATA_DIR": c.dataDir,
		"API_TOKEN": processToken, "GOSSIP_BIND": "off", "KDUMP_LISTEN": "off", "LOGLEVEL": "INFO"}
	for k, v := range extra {
		keys[k] = v
	}
	for k, v := range keys {
		fmt.Fprintf(&cfg, "  %s: %q\n", k, v)
	}
	writeFile(t, filepath.Join(c.confDir, "config.yaml"), []byte(cfg.String()))
	writeFile(t, filepath.Join(c.confDir, "clouds.yaml"), []byte(fmt.Sprintf(`clouds:
  overcloud:
    auth:
      auth_url: %s
      username: admin
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: regionOne
    interface: internal
    identity_api_version: 3
`, sim.AuthURL())))
	writeFile(t, filepath.Join(c.confDir, "secure.yaml"), []byte("clouds:\n  overcloud:\n    auth:\n      password: change-me\n"))
	writeFile(t, filepath.Join(c.confDir, "fencing.yaml"), []byte("FencingConfig: {}\n"))
}

// start runs the binary; Cleanup stops it by PID (SIGTERM, then SIGKILL).
func (c *controller) start(t testing.TB, bin string) {
	t.Helper()
	c.log = &lockedBuf{}
	c.cmd = exec.Command(bin, c.args...)
	c.cmd.Env = append(append(os.Environ(), c.env()...), c.extraEnv...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.exited = make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		c.stop(t)
		if t.Failed() {
			t.Logf("%s log:\n%s", c.name, c.log.String())
		}
	})
}

// env points iha-leader at the controller's configuration directory.
func (c *controller) env() []string {
	return []string{
		"INSTANCEHA_CONFIG_PATH=" + filepath.Join(c.confDir, "config.yaml"),
		"CLOUDS_CONFIG_PATH=" + filepath.Join(c.confDir, "clouds.yaml"),
		"SECURE_CONFIG_PATH=" + filepath.Join(c.confDir, "secure.yaml"),
		"FENCING_CONFIG_PATH=" + filepath.Join(c.confDir, "fencing.yaml"),
		"OS_CLOUD=overcloud", "INSTANCEHA_DISABLED=True", "NOTIFY_SOCKET="}
}

func (c *controller) stop(t testing.TB) {
	t.Helper()
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(60 * time.Second * slowFactor()):
		t.Errorf("%s still runs 60 s after SIGTERM; killing PID %d", c.name, c.cmd.Process.Pid)
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// waitFor polls cond until it holds, the deadline passes, or a process
// that must keep running exits.
func waitFor(t testing.TB, d time.Duration, what string, cond func() (bool, string), running ...*controller) {
	t.Helper()
	testkit.WaitForState(t, d*slowFactor(), 100*time.Millisecond, what, func() (bool, string) {
		ok, detail := cond()
		if ok {
			return true, detail
		}
		for _, c := range running {
			select {
			case <-c.exited:
				t.Fatalf("%s exited while waiting for %s; its log:\n%s", c.name, what, c.log.String())
			default:
			}
		}
		return false, detail
	})
}

// TestProcessesFormAQuorumOverTLSJoinAndRemove: two controllers bootstrap
// over mutual TLS, a third joins with RAFT_JOIN only and becomes a voter,
// a fourth whose certificate is of another CA cannot join (and its log
// says why), and `iha controllers remove` takes the third out again.
func TestProcessesFormAQuorumOverTLSJoinAndRemove(t *testing.T) {
	leaderBin, cliBin := buildBinaries(t)
	sim, err := novasim.New(novasim.Options{Password: "change-me", NoStartupDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	sim.AddCompute("compute-0", "nova")

	ca, rogueCA := newPKI(t, "iha-controllers"), newPKI(t, "someone-else")
	ctl := make([]*controller, 4)
	for i := range ctl {
		ctl[i] = &controller{name: fmt.Sprintf("ctl-%d", i+1), raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
	}
	tlsKeys := func(p *pki, name string) map[string]string {
		cert, key := p.issue(t, name)
		return map[string]string{"RAFT_TLS_CERT": cert, "RAFT_TLS_KEY": key, "RAFT_TLS_CA": ca.caFile,
			"API_TLS_CERT": cert, "API_TLS_KEY": key}
	}
	peers := ctl[0].name + "=" + ctl[0].raftAddr + "," + ctl[1].name + "=" + ctl[1].raftAddr
	join := ctl[0].apiAddr + "," + ctl[1].apiAddr
	for i, c := range ctl {
		keys := tlsKeys(ca, c.name)
		if i == 3 { // the stranger: a certificate of another CA (it trusts the cluster's)
			keys = tlsKeys(rogueCA, c.name)
		}
		if i < 2 {
			keys["RAFT_PEERS"] = peers
		} else {
			keys["RAFT_JOIN"] = join
		}
		c.writeConfig(t, sim, keys)
	}

	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(ca.caFile)
	pool.AppendCertsFromPEM(caPEM)
	client := func(c *controller) *api.Client {
		return &api.Client{Addrs: []string{"https://" + c.apiAddr}, Token: processToken, Actor: "process-test",
			HTTP: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}}
	}
	voters := func(c *controller) (map[string]api.Voter, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cl, err := client(c).Cluster(ctx, false)
		if err != nil {
			return nil, err.Error()
		}
		m := map[string]api.Voter{}
		for _, v := range cl.Voters {
			m[v.ID] = v
		}
		return m, fmt.Sprintf("leader %q, voters %v", cl.Leader, cl.Voters)
	}
	hasVoters := func(c *controller, want ...string) func() (bool, string) {
		return func() (bool, string) {
			m, detail := voters(c)
			if len(m) != len(want) {
				return false, detail
			}
			for _, w := range want {
				if m[w].Suffrage != "Voter" {
					return false, detail
				}
			}
			return true, detail
		}
	}

	// 1. Two controllers bootstrap over mutual TLS and elect a leader.
	ctl[0].start(t, leaderBin)
	ctl[1].start(t, leaderBin)
	waitFor(t, 60*time.Second, "a leader of ctl-1 and ctl-2", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cl, err := client(ctl[0]).Cluster(ctx, false)
		if err != nil {
			return false, err.Error()
		}
		return cl.Leader != "" && cl.LeaderAPI != "", fmt.Sprintf("leader %q api %q", cl.Leader, cl.LeaderAPI)
	}, ctl[0], ctl[1])

	// 2. The third joins with RAFT_JOIN only, and every member lists it.
	ctl[2].start(t, leaderBin)
	for _, c := range ctl[:3] {
		waitFor(t, 60*time.Second, c.name+" lists ctl-3 as a voter", hasVoters(c, "ctl-1", "ctl-2", "ctl-3"), ctl[0], ctl[1], ctl[2])
	}
	if log := ctl[2].log.String(); !strings.Contains(log, "joined the Raft group") {
		t.Errorf("ctl-3's log does not say it joined:\n%s", log)
	}

	// 3. A stranger with another CA's certificate is refused, and says why.
	ctl[3].start(t, leaderBin)
	waitFor(t, 60*time.Second, "ctl-4's log to say why its join was refused", func() (bool, string) {
		log := ctl[3].log.String()
		return strings.Contains(log, "join attempt failed") && strings.Contains(log, "not one of the cluster CA"), lastLines(log, 3)
	}, ctl[3])
	if m, detail := voters(ctl[0]); len(m) != 3 {
		t.Fatalf("after the stranger's attempts: %s", detail)
	}
	ctl[3].stop(t)

	// 4. `iha controllers remove ctl-3`, through a follower or the leader
	// alike (the CLI trusts the test CA through SSL_CERT_FILE).
	runCLI := func(args ...string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute*slowFactor())
		defer cancel()
		cmd := exec.CommandContext(ctx, cliBin, args...)
		cmd.Env = append(os.Environ(), "IHA_ADDR=https://"+ctl[1].apiAddr+",https://"+ctl[0].apiAddr,
			"IHA_TOKEN="+processToken, "SSL_CERT_FILE="+ca.caFile, "NO_COLOR=1")
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("iha %v: %v", args, err)
		}
		return code, string(out)
	}
	code, out := runCLI("controllers")
	t.Logf("iha controllers → %d\n%s", code, out)
	if code != 0 || !strings.Contains(out, "ctl-3") || !strings.Contains(out, "3 voter(s)") {
		t.Fatalf("iha controllers: exit %d\n%s", code, out)
	}
	code, out = runCLI("controllers", "remove", "ctl-3", "--reason", "process test")
	t.Logf("iha controllers remove ctl-3 → %d\n%s", code, out)
	if code != 0 || !strings.Contains(out, "ctl-3 removed from the Raft group") {
		t.Fatalf("iha controllers remove: exit %d\n%s", code, out)
	}
	for _, c := range ctl[:2] {
		waitFor(t, 30*time.Second, c.name+" lists two voters", hasVoters(c, "ctl-1", "ctl-2"), ctl[0], ctl[1])
	}
	// The removal is audited in the replicated event log.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := client(ctl[1]).Events(ctx, api.EventQuery{}, true) // through the leader: a replica may lag
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs.Events {
		found = found || (e.Kind == "VoterRemoved" && strings.Contains(e.Message, "ctl-3") && strings.Contains(e.Message, "process test"))
	}
	if !found {
		t.Errorf("no VoterRemoved event for ctl-3 in %+v", evs.Events)
	}
	// ctl-3 still runs but must not add itself back on restart: it has
	// Raft state, so it does not join again.
	ctl[2].stop(t)
	restarted := &controller{name: ctl[2].name, raftAddr: ctl[2].raftAddr, apiAddr: ctl[2].apiAddr, confDir: ctl[2].confDir, dataDir: ctl[2].dataDir}
	restarted.start(t, leaderBin)
	waitFor(t, 30*time.Second, "the removed ctl-3 to restart without joining", func() (bool, string) {
		log := restarted.log.String()
		return strings.Contains(log, "had_state=true"), lastLines(log, 3)
	}, restarted)
	if strings.Contains(restarted.log.String(), "joining the Raft group") {
		t.Error("the removed controller asked to join again after its restart")
	}
	if m, detail := voters(ctl[0]); len(m) != 2 {
		t.Fatalf("after ctl-3 restarted: %s", detail)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
