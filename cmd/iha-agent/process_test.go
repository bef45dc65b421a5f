package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/identity"
)

// scale stretches deadlines on a slow or busy machine (testkit.ScaleEnv,
// default 2).
var scale = testkit.Scaler(2)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// agentBinary builds iha-agent once per test run.
func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "iha-agent-test")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "iha-agent")
		out, err := exec.Command("go", "build", "-ldflags", "-X github.com/ihaproject/iha/pkg/version.Version=9.9.9-test", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type agentProc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

// startAgent runs iha-agent as a child process; it is killed (by PID) when
// the test ends if it is still running.
func startAgent(t *testing.T, env []string, args ...string) *agentProc {
	t.Helper()
	p := &agentProc{cmd: exec.Command(agentBinary(t), args...), out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(os.Environ(), env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("iha-agent %v output:\n%s", args, p.out.String())
		}
	})
	return p
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type events struct {
	mu  sync.Mutex
	all []gossip.Event
}

func (e *events) find(kind gossip.Kind, node string) (gossip.Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.all {
		if ev.Kind == kind && ev.Node == node {
			return ev, true
		}
	}
	return gossip.Event{}, false
}

// testCluster is the tests' cluster key: the controllers hold it, each
// agent gets its host's key (testHostKey).
var testCluster = []byte("cluster-key-of-the-agent-tests!!")

// testHostKey writes host's key and returns the file's path.
func testHostKey(t *testing.T, host string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), host+".key")
	if err := os.WriteFile(path, []byte(identity.EncodeKey(identity.HostKey(testCluster, host))), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testKeyring writes a gossip keyring for one test's mesh and returns its
// path and keys.
func testKeyring(t *testing.T) (string, [][]byte) {
	t.Helper()
	key := []byte("0123456789abcdef0123456789abcdef")
	path := filepath.Join(t.TempDir(), "gossip.keyring")
	if err := gossip.WriteKeyring(path, [][]byte{key}); err != nil {
		t.Fatal(err)
	}
	return path, [][]byte{key}
}

// startController runs an in-process controller member on 127.0.0.1 with
// the default profile, the agents' default label and keys, and records its
// events.
func startController(t *testing.T, keys [][]byte) (*gossip.Mesh, *events) {
	t.Helper()
	m, err := gossip.New(gossip.Config{NodeName: "ctl", BindAddr: "127.0.0.1", Profile: gossip.DefaultProfile(), Keys: keys, Label: "iha",
		ClusterKey: testCluster,
		Meta:       gossip.Meta{Role: gossip.RoleController, NovaHost: "ctl", APIAddr: "127.0.0.1:7421"},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	ev := &events{}
	go func() {
		for e := range m.Events() {
			ev.mu.Lock()
			ev.all = append(ev.all, e)
			ev.mu.Unlock()
		}
	}()
	return m, ev
}

func state(m *gossip.Mesh, node string) gossip.State {
	for _, mem := range m.Members() {
		if mem.Name == node {
			return mem.State
		}
	}
	return ""
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(agentBinary(t), "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "iha-agent 9.9.9-test" {
		t.Fatalf("--version = %q, %v", out, err)
	}
}

// TestAgentProcessLifecycle runs three real iha-agent processes against an
// in-process controller over UDP/TCP on loopback (default profile):
//   - each tells systemd READY=1;
//   - one frozen with SIGSTOP for the default profile's StallTolerance is
//     not declared dead;
//   - one killed with SIGKILL is declared dead within the formula's time;
//   - one stopped with SIGTERM exits 0 and is reported left, not dead.
func TestAgentProcessLifecycle(t *testing.T) {
	keyring, keys := testKeyring(t)
	ctl, ev := startController(t, keys)
	dir := t.TempDir()
	readies := listenNotify(t, filepath.Join(dir, "notify.sock"))

	procs := map[string]*agentProc{}
	for i, name := range []string{"frozen", "killed", "stopped"} {
		cfg := writeConfig(t, fmt.Sprintf("node_name: %s\nnova_host: compute-%s\nbind: 127.0.0.%d:0\njoin: [%s]\nkdump_listen: \"off\"\nstate_dir: %s\nkeyring: %s\nhost_key: %s\n",
			name, name, i+2, ctl.Addr(), filepath.Join(dir, name), keyring, testHostKey(t, "compute-"+name)))
		procs[name] = startAgent(t, []string{"NOTIFY_SOCKET=" + filepath.Join(dir, "notify.sock")}, "-config", cfg)
	}
	// Each agent says READY=1 first, then STATUS=… as it joins; the three
	// agents' messages interleave.
	for i := 0; i < 3; {
		select {
		case msg := <-readies:
			switch {
			case strings.HasPrefix(msg, "READY=1"):
				i++
			case !strings.HasPrefix(msg, "STATUS="):
				t.Fatalf("sd_notify message %q", msg)
			}
		case <-time.After(scale(15 * time.Second)):
			t.Fatalf("only %d of 3 agents said READY=1", i)
		}
	}
	testkit.WaitFor(t, scale(10*time.Second), "four alive members", func() bool {
		return state(ctl, "frozen") == gossip.StateAlive && state(ctl, "killed") == gossip.StateAlive && state(ctl, "stopped") == gossip.StateAlive
	})
	p := gossip.DefaultProfile()
	const n = 4
	lo, _ := p.SuspicionTimeouts(n)

	t.Run("frozen for the stall tolerance is not dead", func(t *testing.T) {
		freeze := p.StallTolerance(n)
		if err := procs["frozen"].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(freeze)
		if err := procs["frozen"].cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// A dead verdict would come at most min suspicion after the first
		// failed probe; watch well past it.
		time.Sleep(lo + 3*p.ProbeInterval)
		if e, ok := ev.find(gossip.KindDead, "frozen"); ok {
			t.Fatalf("frozen %v (StallTolerance; min suspicion %v) and declared dead: %+v", freeze, lo, e)
		}
		if s := state(ctl, "frozen"); s != gossip.StateAlive {
			t.Fatalf("frozen agent is %s after thawing", s)
		}
		if _, ok := ev.find(gossip.KindSuspect, "frozen"); ok {
			t.Logf("frozen agent was suspected during its %v freeze and recovered", freeze)
		}
	})

	t.Run("killed is dead within the formula's time", func(t *testing.T) {
		killed := time.Now()
		if err := procs["killed"].cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, scale(p.WorstDetection(n)), "a dead event", func() bool { _, ok := ev.find(gossip.KindDead, "killed"); return ok })
		e, _ := ev.find(gossip.KindDead, "killed")
		t.Logf("SIGKILL → dead at the controller in %v (formula at N=%d: expected %v, worst %v); accusers %v, confirmations %d",
			e.At.Sub(killed).Round(time.Millisecond), n, p.ExpectedDetection(n), p.WorstDetection(n), e.Accusers, e.Confirmations)
		if e.Meta.NovaHost != "compute-killed" {
			t.Errorf("dead event meta = %+v", e.Meta)
		}
	})

	t.Run("SIGTERM leaves gracefully", func(t *testing.T) {
		pr := procs["stopped"]
		if err := pr.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-pr.done:
			if pr.err != nil {
				t.Fatalf("exit after SIGTERM: %v", pr.err)
			}
		case <-time.After(scale(10 * time.Second)):
			t.Fatal("iha-agent did not exit after SIGTERM")
		}
		testkit.WaitFor(t, scale(5*time.Second), "a left event", func() bool { _, ok := ev.find(gossip.KindLeft, "stopped"); return ok })
		time.Sleep(p.ExpectedDetection(n))
		if e, ok := ev.find(gossip.KindDead, "stopped"); ok {
			t.Fatalf("a gracefully stopped agent was declared dead: %+v", e)
		}
	})
}

func TestGateCommand(t *testing.T) {
	hostKey := identity.HostKey(testCluster, "compute-9")
	srv := func(allow bool, key []byte) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			nonce := r.URL.Query().Get("nonce")
			mac := ""
			if key != nil {
				mac = identity.GateMAC(key, "compute-9", allow, "evacuating 2 servers", nonce)
			}
			fmt.Fprintf(w, `{"host":"compute-9","allow":%v,"reason":"evacuating 2 servers","nonce":%q,"mac":%q}`, allow, nonce, mac)
		}))
	}
	allow, refuse, impostor := srv(true, hostKey), srv(false, hostKey), srv(true, nil)
	defer allow.Close()
	defer refuse.Close()
	defer impostor.Close()
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"allowed", []string{"-controllers", allow.URL}, 0, "may start nova-compute"},
		{"refused until the timeout", []string{"-controllers", refuse.URL}, 1, "nova-compute is NOT started"},
		{"an unsigned allow is no answer", []string{"-controllers", impostor.URL + "," + refuse.URL}, 1, "WARNING: ignoring the answer of " + impostor.URL},
		{"nobody answers: start", []string{"-controllers", "http://127.0.0.1:1"}, 0, "starting nova-compute without the check"},
		{"nobody answers: fail", []string{"-controllers", "http://127.0.0.1:1", "-on-no-answer", "fail"}, 1, "gate_on_no_answer: fail"},
		{"a controller without a scheme", []string{"-controllers", "127.0.0.1:1"}, exitUsage, "needs a scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, "nova_host: compute-9\nhost_key: "+testHostKey(t, "compute-9")+"\n")
			args := append([]string{"gate", "-config", cfg, "-timeout", "500ms", "-interval", "100ms"}, tc.args...)
			var out bytes.Buffer
			code := run(context.Background(), args, &out, &out)
			if code != tc.wantCode || !strings.Contains(out.String(), tc.wantOut) {
				t.Fatalf("code %d, output:\n%s\nwant code %d and %q", code, out.String(), tc.wantCode, tc.wantOut)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"-config", "/nonexistent/agent.yaml"}, &out, &out); code != exitUsage {
		t.Fatalf("missing explicit config: code %d\n%s", code, out.String())
	}
	if code := run(context.Background(), []string{"-config", writeConfig(t, "nova_host: x\n"), "extra"}, &out, &out); code != exitUsage {
		t.Fatalf("extra argument: code %d", code)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary != "" {
		_ = os.RemoveAll(filepath.Dir(binary))
	}
	os.Exit(code)
}

// TestAgentIsReadyWhileTheControllersAreAway: a compute booting while no
// controller answers must not wait for them: the agent says READY=1 at once
// with a "joining" status, keeps trying, and says "joined" once a
// controller appears.
func TestAgentIsReadyWhileTheControllersAreAway(t *testing.T) {
	dir := t.TempDir()
	msgs := listenNotify(t, filepath.Join(dir, "notify.sock"))
	// A controller address nobody listens on yet.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	away := l.Addr().String()
	l.Close()
	keyring, keys := testKeyring(t)
	cfg := writeConfig(t, fmt.Sprintf("nova_host: compute-early\nbind: 127.0.0.5:0\njoin: [%s]\nkdump_listen: \"off\"\nstate_dir: %s\nkeyring: %s\nhost_key: %s\n",
		away, filepath.Join(dir, "state"), keyring, testHostKey(t, "compute-early")))
	start := time.Now()
	startAgent(t, []string{"NOTIFY_SOCKET=" + filepath.Join(dir, "notify.sock")}, "-config", cfg)
	select {
	case msg := <-msgs:
		if !strings.HasPrefix(msg, "READY=1") || !strings.Contains(msg, "STATUS=joining") {
			t.Fatalf("first sd_notify message %q, want READY=1 with a joining status", msg)
		}
		t.Logf("READY=1 %s after start with no controller: %q", time.Since(start).Round(time.Millisecond), msg)
	case <-time.After(scale(10 * time.Second)):
		t.Fatal("no READY=1 while the controllers are away")
	}
	// The controller comes up at that address: the agent joins and says so.
	_, port, _ := net.SplitHostPort(away)
	p, _ := strconv.Atoi(port)
	ctl, err := gossip.New(gossip.Config{NodeName: "ctl", BindAddr: "127.0.0.1", BindPort: p, Profile: gossip.FastProfile(), Keys: keys, Label: "iha",
		Meta: gossip.Meta{Role: gossip.RoleController, APIAddr: "127.0.0.1:7421"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctl.Shutdown)
	deadline := time.After(scale(60 * time.Second))
	for {
		select {
		case msg := <-msgs:
			if strings.Contains(msg, "STATUS=joined") {
				return
			}
		case <-deadline:
			t.Fatal("the agent never said it joined once the controller was up")
		}
	}
}

// listenNotify plays systemd's notify socket at path: what the agent sends
// arrives on the channel.
func listenNotify(t *testing.T, path string) <-chan string {
	t.Helper()
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notify.Close() })
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return msgs
}
