package main

// Attacks on real iha-leader (and iha-agent) processes over loopback, one
// test per attack of issue 15, each with a rogue of the test's own: an HTTP
// client, a memberlist member, a raw UDP sender. Each asserts that the
// attack has no effect and what the operator sees (an event, a log line, an
// error).

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testaddr"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/novasim"
)

// newSim is a novasim with one compute, closed with the test.
func newSim(t *testing.T, computes ...string) *novasim.Sim {
	t.Helper()
	sim, err := novasim.New(novasim.Options{Password: "change-me", NoStartupDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	for _, c := range computes {
		sim.AddCompute(c, "nova")
	}
	return sim
}

// clusterOf reads GET /v1/cluster of c over plain HTTP.
func clusterOf(c *controller) (api.Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &api.Client{Addrs: []string{"http://" + c.apiAddr}, Token: processToken, HTTP: &http.Client{Timeout: 10 * time.Second}}
	return cl.Cluster(ctx, false)
}

// waitLeading waits until c reports a leader.
func waitLeading(t *testing.T, c *controller) api.Cluster {
	t.Helper()
	var got api.Cluster
	waitFor(t, 60*time.Second, c.name+" to know a leader", func() (bool, string) {
		cl, err := clusterOf(c)
		if err != nil {
			return false, err.Error()
		}
		got = cl
		return cl.Leader != "", "leader " + cl.Leader
	}, c)
	return got
}

// TestAttackJoinWithoutProofAddsNoVoter is attack 1: a stranger posts
// joins to a running controller without TLS. Without the write token
// nothing changes (401, logged with its source); with the token it still
// cannot replace the controller (409); the node stays ready, one voter,
// across a restart. The controller warns that Raft runs without TLS, in
// its log and in /v1/cluster.
func TestAttackJoinWithoutProofAddsNoVoter(t *testing.T) {
	leaderBin, _ := buildBinaries(t)
	sim := newSim(t, "compute-0")
	c := &controller{name: "ctl-1", raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
	c.writeConfig(t, sim, nil)
	c.start(t, leaderBin)
	cl := waitLeading(t, c)
	if !strings.Contains(c.log.String(), "raft without TLS") {
		t.Errorf("no warning about Raft without TLS at start:\n%s", lastLines(c.log.String(), 20))
	}
	if cl.Security.RaftTLS || !strings.Contains(strings.Join(cl.Security.Warnings, ";"), "raft without TLS") {
		t.Errorf("/v1/cluster security: %+v, want the Raft-without-TLS warning", cl.Security)
	}

	rogue := &http.Client{Timeout: 10 * time.Second}
	post := func(tok, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+c.apiAddr+"/v1/cluster/join", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := rogue.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, tok, body string
		code            int
	}{
		{"no token", "", `{"id":"evil","addr":"127.0.0.1:1"}`, http.StatusUnauthorized},
		{"a guessed token", "change-me", `{"id":"evil","addr":"127.0.0.1:1"}`, http.StatusUnauthorized},
		{"replace ctl-1 with the token", processToken, `{"id":"ctl-1","addr":"127.0.0.1:1"}`, http.StatusConflict},
		{"take ctl-1's address with the token", processToken, `{"id":"evil","addr":"` + c.raftAddr + `"}`, http.StatusConflict},
	} {
		code, body := post(tc.tok, tc.body)
		t.Logf("%s → %d %s", tc.name, code, strings.TrimSpace(body))
		if code != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.code)
		}
	}
	check := func(when string) {
		t.Helper()
		cl, err := clusterOf(c)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if len(cl.Voters) != 1 || cl.Voters[0].ID != "ctl-1" || cl.Voters[0].Address != c.raftAddr || cl.Leader != "ctl-1" {
			t.Errorf("%s: voters %+v, leader %q", when, cl.Voters, cl.Leader)
		}
		// Ready (a leader that passed its barrier and reached Nova), as a
		// controller without strangers is.
		waitFor(t, 60*time.Second, when+": /readyz", func() (bool, string) {
			resp, err := rogue.Get("http://" + c.apiAddr + "/readyz")
			if err != nil {
				return false, err.Error()
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, string(b)
		}, c)
	}
	check("after the attempts")
	log := c.log.String()
	if !strings.Contains(log, "join refused") || !strings.Contains(log, "node=evil") || !strings.Contains(log, "from=127.0.0.1:") {
		t.Errorf("the refusals are not logged with their source:\n%s", lastLines(log, 20))
	}
	c.stop(t)
	again := &controller{name: c.name, raftAddr: c.raftAddr, apiAddr: c.apiAddr, confDir: c.confDir, dataDir: c.dataDir}
	again.start(t, leaderBin)
	waitLeading(t, again)
	c = again
	check("after a restart")
}

// TestDamagedRaftDBStopsTheLeaderWithAStatusSystemdDoesNotRestart: a
// corrupt raft.db and an empty one each stop iha-leader with exit status 3
// (the unit's RestartPreventExitStatus) and a message naming the file, no
// panic; -start-fresh starts on the empty one.
func TestDamagedRaftDBStopsTheLeaderWithAStatusSystemdDoesNotRestart(t *testing.T) {
	leaderBin, _ := buildBinaries(t)
	unit, err := os.ReadFile("../../deploy/systemd/iha-leader.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nRestartPreventExitStatus=3\n") {
		t.Fatal("iha-leader.service does not keep systemd from restarting on exit status 3")
	}
	sim := newSim(t, "compute-0")
	c := &controller{name: "ctl-1", raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
	c.writeConfig(t, sim, nil)
	c.start(t, leaderBin)
	waitLeading(t, c)
	c.stop(t)
	db := filepath.Join(c.dataDir, "raft.db")
	good, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	run := func(data []byte, args ...string) (int, string) {
		if err := os.WriteFile(db, data, 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*slowFactor())
		defer cancel()
		cmd := exec.CommandContext(ctx, leaderBin, args...)
		cmd.Env = append(os.Environ(), c.env()...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	corrupt := append([]byte(nil), good...)
	for i := 2 * 4096; i < len(corrupt); i++ {
		corrupt[i] = byte(i*7 + 13)
	}
	for name, data := range map[string][]byte{"corrupt": corrupt, "empty": {}} {
		code, out := run(data)
		t.Logf("%s raft.db → exit %d\n%s", name, code, lastLines(out, 3))
		if code != exitDataDir || !strings.Contains(out, db) || strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
			t.Errorf("%s raft.db: exit %d, want %d with a message naming %s and no panic:\n%s", name, code, exitDataDir, db, out)
		}
	}
	// -start-fresh: the operator's choice; the node starts with no state.
	if err := os.WriteFile(db, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := &controller{name: c.name, raftAddr: c.raftAddr, apiAddr: c.apiAddr, confDir: c.confDir, dataDir: c.dataDir}
	fresh.args = []string{"-start-fresh"}
	fresh.start(t, leaderBin)
	waitLeading(t, fresh)
	if !strings.Contains(fresh.log.String(), "removing an empty raft.db") {
		t.Errorf("-start-fresh does not say what it did:\n%s", lastLines(fresh.log.String(), 10))
	}
}

// agentBinary builds iha-agent once per test binary (removed by TestMain).
var agentBin struct {
	once sync.Once
	path string
	err  error
}

func buildAgent(t *testing.T) string {
	t.Helper()
	agentBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "iha-agent-bin-")
		if err != nil {
			agentBin.err = err
			return
		}
		agentBin.path = filepath.Join(dir, "iha-agent")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute*slowFactor())
		defer cancel()
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", agentBin.path, "../iha-agent").CombinedOutput(); err != nil {
			agentBin.err = fmt.Errorf("go build iha-agent: %v\n%s", err, out)
		}
	})
	if agentBin.err != nil {
		t.Fatal(agentBin.err)
	}
	return agentBin.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agentBin.path != "" {
		_ = os.RemoveAll(filepath.Dir(agentBin.path))
	}
	os.Exit(code)
}

// runOnce runs bin until it exits (or the deadline) and returns its exit
// status and output.
func runOnce(t *testing.T, d time.Duration, env []string, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d*slowFactor())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
	}
	return 0, string(out)
}

// TestMeshRefusesToRunUnencryptedUnlessInsecure: iha-leader with the mesh
// on and iha-agent both refuse to start without the gossip keyring, naming
// what is missing; with the insecure switch each starts and warns, and
// /v1/cluster (iha status) shows it.
func TestMeshRefusesToRunUnencryptedUnlessInsecure(t *testing.T) {
	leaderBin, cliBin := buildBinaries(t)
	agent := buildAgent(t)
	sim := newSim(t, "compute-0")
	gossipAddr := testaddr.Loopback(t)
	c := &controller{name: "ctl-1", raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
	c.writeConfig(t, sim, map[string]string{"GOSSIP_BIND": gossipAddr})
	code, out := runOnce(t, time.Minute, c.env(), leaderBin)
	keyring := filepath.Join(c.confDir, "gossip.keyring")
	if code == 0 || !strings.Contains(out, "GOSSIP_KEYRING") || !strings.Contains(out, keyring) || !strings.Contains(out, "encrypted by default") {
		t.Errorf("iha-leader without a keyring: exit %d\n%s", code, out)
	}
	agentYAML := filepath.Join(t.TempDir(), "agent.yaml")
	writeFile(t, agentYAML, []byte("nova_host: compute-0\nbind: 127.0.0.1:0\nkdump_listen: \"off\"\njoin: ["+gossipAddr+"]\n"))
	code, out = runOnce(t, time.Minute, nil, agent, "-config", agentYAML)
	if code == 0 || !strings.Contains(out, "keyring is not set") {
		t.Errorf("iha-agent without a keyring: exit %d\n%s", code, out)
	}

	// The insecure switch: both run, and say so at start.
	c.writeConfig(t, sim, map[string]string{"GOSSIP_BIND": gossipAddr, "GOSSIP_INSECURE": "true"})
	c.start(t, leaderBin)
	cl := waitLeading(t, c)
	if !strings.Contains(c.log.String(), "GOSSIP_INSECURE: the gossip mesh is NOT encrypted") {
		t.Errorf("no warning at start:\n%s", lastLines(c.log.String(), 20))
	}
	if cl.Security.MeshEncrypted || !strings.Contains(strings.Join(cl.Security.Warnings, ";"), "mesh not encrypted (GOSSIP_INSECURE)") {
		t.Errorf("/v1/cluster security %+v", cl.Security)
	}
	st, out := runOnce(t, time.Minute, []string{"IHA_ADDR=http://" + c.apiAddr, "NO_COLOR=1"}, cliBin, "status")
	if flat := strings.Join(strings.Fields(out), " "); !strings.Contains(flat, "security: WARNING:") || !strings.Contains(flat, "mesh not encrypted (GOSSIP_INSECURE)") {
		t.Errorf("iha status (exit %d) does not show the insecure mesh:\n%s", st, out)
	}
	writeFile(t, agentYAML, []byte("nova_host: compute-0\nbind: 127.0.0.1:0\nkdump_listen: \"off\"\njoin: ["+gossipAddr+"]\ninsecure: true\nstate_dir: "+t.TempDir()+"\n"))
	a := &controller{name: "agent", log: &lockedBuf{}}
	a.cmd = exec.Command(agent, "-config", agentYAML)
	a.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.exited = make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() { a.stop(t) })
	waitFor(t, 30*time.Second, "the insecure agent to join and warn", func() (bool, string) {
		l := a.log.String()
		return strings.Contains(l, "NOT encrypted") && strings.Contains(l, "iha-agent ready"), lastLines(l, 3)
	}, a)
}

// TestAttackAlsoTheAPIBoundsItsClientsAndTheAuditIsNotForged covers the
// "Also" items against a real iha-leader: a config.yaml holding the token
// and readable by every user is warned about at start; a client with the
// write token cannot name someone else in the audit (X-IHA-By), and the
// leader logs it; a client that sends half a request is cut off; idle
// connections beyond API_MAX_CONNECTIONS and streams beyond API_MAX_STREAMS
// are refused, with a log line or a 503 saying why.
func TestAttackAlsoTheAPIBoundsItsClientsAndTheAuditIsNotForged(t *testing.T) {
	leaderBin, _ := buildBinaries(t)
	sim := newSim(t, "compute-0")
	c := &controller{name: "ctl-1", raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
	c.writeConfig(t, sim, map[string]string{"API_MAX_CONNECTIONS": "16", "API_MAX_STREAMS": "2", "API_IDLE_TIMEOUT": "2", "API_READ_TIMEOUT": "2"})
	if err := os.Chmod(filepath.Join(c.confDir, "config.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.start(t, leaderBin)
	waitLeading(t, c)
	if log := c.log.String(); !strings.Contains(log, "config.yaml: mode 0644: every user of this host can read it, and it holds API_TOKEN") {
		t.Errorf("no warning about the readable config.yaml:\n%s", lastLines(log, 20))
	}

	// The audit: a token holder posing as a forwarding controller.
	req, _ := http.NewRequest(http.MethodPost, "http://"+c.apiAddr+"/v1/pause", strings.NewReader(`{"reason":"who did this"}`))
	req.Header.Set("Authorization", "Bearer "+processToken)
	req.Header.Set("X-IHA-Actor", "mallory")
	req.Header.Set("X-IHA-Forwarded-By", "ctl-2")
	req.Header.Set("X-IHA-By", "admin@ops from 10.0.0.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.Contains(string(b), "admin@ops") || !strings.Contains(string(b), "mallory from 127.0.0.1") {
		t.Errorf("pause with a forged identity: %d %s", resp.StatusCode, b)
	}
	waitFor(t, 10*time.Second, "the leader to log the forged identity", func() (bool, string) {
		return strings.Contains(c.log.String(), "X-IHA-By) from a client that is not an authenticated controller is ignored"), ""
	}, c)

	// A body with a second object after the first is refused whole.
	req, _ = http.NewRequest(http.MethodPost, "http://"+c.apiAddr+"/v1/hosts/compute-0/confirm-fenced",
		strings.NewReader(`{"reason":"powered off at the PDU"}{"reason":"or not"}`))
	req.Header.Set("Authorization", "Bearer "+processToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "data after its JSON object") {
		t.Errorf("a body with trailing data: %d %s", resp.StatusCode, b)
	}

	// Half a request: cut off after API_READ_TIMEOUT.
	slow, err := net.Dial("tcp", c.apiAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_, _ = slow.Write([]byte("POST /v1/pause HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"))
	start := time.Now()
	_ = slow.SetReadDeadline(time.Now().Add(30 * time.Second * slowFactor()))
	_, rerr := io.ReadAll(slow)
	if ne, ok := rerr.(net.Error); ok && ne.Timeout() {
		t.Error("a client that sends half a request is never cut off")
	}
	t.Logf("half a request cut off after %v (API_READ_TIMEOUT 2)", time.Since(start).Round(100*time.Millisecond))

	// Two event streams, a third refused.
	var codes []int
	for i := 0; i < 3; i++ {
		r, err := http.Get("http://" + c.apiAddr + "/v1/events/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		codes = append(codes, r.StatusCode)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != http.StatusServiceUnavailable {
		t.Errorf("three streams: %v, want 200 200 503", codes)
	}
	// Idle connections: 14 more fill API_MAX_CONNECTIONS (16 with the
	// streams); the next is closed at once and logged.
	for i := 0; i < 14; i++ {
		cn, err := net.Dial("tcp", c.apiAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer cn.Close()
	}
	// The listener accepts in arrival order: the next connection is the
	// 17th it counts.
	extra, err := net.Dial("tcp", c.apiAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second * slowFactor()))
	_, rerr = io.ReadAll(extra)
	if ne, ok := rerr.(net.Error); ok && ne.Timeout() {
		t.Error("a connection beyond API_MAX_CONNECTIONS is held open")
	}
	waitFor(t, 10*time.Second, "the refused connection in the log", func() (bool, string) {
		return strings.Contains(c.log.String(), "API_MAX_CONNECTIONS reached"), ""
	}, c)
}
