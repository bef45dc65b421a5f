package leader

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/internal/testaddr"
	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/internal/testlog"
	"github.com/ihaproject/iha/pkg/secret"
)

// These tests run Raft voters over real TCP (or mutual TLS) on 127.0.0.1,
// without the reconciler: membership, reads, shutdown, restart, disk
// damage and certificates.

// scaled stretches deadlines on a slow or busy machine (testkit.ScaleEnv,
// default 3).
var scaled = testkit.Scaler(3)

// poll waits until cond holds or the (scaled) deadline passes.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, scaled(d), what, cond)
}

// testCA is a throw-away certificate authority.
type testCA struct{ *testkit.CA }

func newTestCA(t *testing.T, name string) *testCA { return &testCA{testkit.NewCA(t, name)} }

// issue writes a controller certificate for 127.0.0.1 signed by ca, and the
// CA file, and returns the three paths LoadTLS takes.
func (ca *testCA) issue(t *testing.T, name string) (cert, key, caFile string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = ca.IssueFiles(t, dir, name, "127.0.0.1")
	caFile = filepath.Join(dir, "ca.crt")
	ca.WriteFile(t, caFile)
	return cert, key, caFile
}

func (ca *testCA) tlsConfig(t *testing.T, name string) *tls.Config {
	t.Helper()
	c, k, a := ca.issue(t, name)
	cfg, err := LoadTLS(c, k, a)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// testJoinToken is the write token of the test groups: without TLS it is
// what a join must present.
var testJoinToken = secret.New("join-token-of-the-test-group")

// testNode is one voter of a test group, restartable on its directory and
// address.
type testNode struct {
	id, addr, dir string
	tls           *tls.Config
	node          *Node
	startFresh    bool
}

func (tn *testNode) open(t *testing.T, peers []Peer, noBootstrap bool) error {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ { // the port of a stopped node may take a moment to free
		if ln, err = net.Listen("tcp", tn.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	var layer raft.StreamLayer = NewTCPStreamLayer(ln)
	if tn.tls != nil {
		layer = NewTLSStreamLayer(ln, tn.tls)
	}
	n, err := OpenNode(NodeConfig{ID: tn.id, DataDir: tn.dir, Stream: layer, Peers: peers, NoBootstrap: noBootstrap,
		Timing: 0.3, TLS: tn.tls, JoinToken: testJoinToken, StartFresh: tn.startFresh, Logger: quietLogger(t)})
	if err != nil {
		_ = ln.Close()
		return err
	}
	tn.node = n
	go drainNotify(n)
	return nil
}

// drainNotify stands in for the Monitor: raft blocks on a full NotifyCh.
func drainNotify(n *Node) {
	for range n.Notify() {
	}
}

func (tn *testNode) stop() {
	if tn.node != nil {
		_ = tn.node.Close()
		tn.node = nil
	}
}

// newTestNodes reserves n loopback addresses and data directories.
func newTestNodes(t *testing.T, n int, ca *testCA) []*testNode {
	t.Helper()
	var out []*testNode
	for i := 1; i <= n; i++ {
		tn := &testNode{id: fmt.Sprintf("n%d", i), addr: testaddr.Loopback(t), dir: t.TempDir()}
		if ca != nil {
			tn.tls = ca.tlsConfig(t, tn.id)
		}
		out = append(out, tn)
	}
	t.Cleanup(func() {
		for _, tn := range out {
			tn.stop()
		}
	})
	return out
}

func peersOf(nodes []*testNode) []Peer {
	var p []Peer
	for _, tn := range nodes {
		p = append(p, Peer{ID: tn.id, Addr: tn.addr})
	}
	return p
}

// startGroup bootstraps nodes as one group and waits for a leader.
func startGroup(t *testing.T, nodes []*testNode) *testNode {
	t.Helper()
	for _, tn := range nodes {
		if err := tn.open(t, peersOf(nodes), false); err != nil {
			t.Fatal(err)
		}
	}
	return waitTestLeader(t, nodes)
}

func waitTestLeader(t *testing.T, nodes []*testNode) *testNode {
	t.Helper()
	var l *testNode
	poll(t, 10*time.Second, "a leader", func() bool {
		for _, tn := range nodes {
			if tn.node != nil && tn.node.IsLeader() {
				l = tn
				return true
			}
		}
		return false
	})
	return l
}

// quietLogger is nil (discard) unless IHA_CLUSTER_LOGS is set.
func quietLogger(t *testing.T) *slog.Logger {
	if os.Getenv("IHA_CLUSTER_LOGS") != "" {
		return slog.New(slog.NewTextHandler(testlog.Writer(t), nil))
	}
	return nil
}

func apply(t *testing.T, n *Node, ct CommandType, body any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scaled(5*time.Second))
	defer cancel()
	if _, err := n.Apply(ctx, ct, time.Unix(1700000000, 0), body); err != nil {
		t.Fatalf("apply %s: %v", ct, err)
	}
}

// onLeader runs an idempotent operation on whichever node leads, trying
// again when leadership moves under it: on a loaded 2-core machine a young
// group can lose its leader between waitTestLeader and the commit
// ("leadership lost while committing log"), which is the answer a client
// retries, not what these tests are about.
func onLeader(t *testing.T, nodes []*testNode, what string, op func(ctx context.Context, n *Node) error) {
	t.Helper()
	deadline := time.Now().Add(scaled(10 * time.Second))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), scaled(5*time.Second))
		err := op(ctx, waitTestLeader(t, nodes).node)
		cancel()
		if err == nil {
			return
		}
		if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %v; trying through the new leader", what, err)
	}
}

// applyOnLeader applies an idempotent command through onLeader.
func applyOnLeader(t *testing.T, nodes []*testNode, ct CommandType, body any) {
	t.Helper()
	onLeader(t, nodes, "apply "+string(ct), func(ctx context.Context, n *Node) error {
		_, err := n.Apply(ctx, ct, time.Unix(1700000000, 0), body)
		return err
	})
}

func TestClusterConsistentReadOnLeaderOnly(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	l := startGroup(t, nodes)
	apply(t, l.node, CmdPause, PauseCmd{Paused: true, By: "op", Reason: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), scaled(5*time.Second))
	defer cancel()
	if err := l.node.ConsistentRead(ctx); err != nil {
		t.Fatalf("consistent read on the leader: %v", err)
	}
	if !l.node.FSM().Settings().Paused {
		t.Error("after a consistent read the leader's FSM must show the acknowledged pause")
	}
	for _, tn := range nodes {
		if tn == l {
			continue
		}
		if err := tn.node.ConsistentRead(ctx); !errors.Is(err, ErrNotLeader) {
			t.Errorf("consistent read on follower %s: %v, want ErrNotLeader", tn.id, err)
		}
		poll(t, 5*time.Second, "the pause on follower "+tn.id, func() bool { return tn.node.FSM().Settings().Paused })
	}
}

func TestGracefulShutdownTransfersLeadership(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	l := startGroup(t, nodes)
	var mu sync.Mutex
	transfer := map[string]bool{}
	for _, tn := range nodes {
		if tn == l {
			continue
		}
		ch := make(chan raft.Observation, 64)
		tn.node.raft.RegisterObserver(raft.NewObserver(ch, false, func(o *raft.Observation) bool {
			_, ok := o.Data.(raft.RequestVoteRequest)
			return ok
		}))
		id := tn.id
		go func() {
			for o := range ch {
				if o.Data.(raft.RequestVoteRequest).LeadershipTransfer {
					mu.Lock()
					transfer[id] = true
					mu.Unlock()
				}
			}
		}()
	}
	if err := l.node.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	l.node = nil
	rest := []*testNode{}
	for _, tn := range nodes {
		if tn != l {
			rest = append(rest, tn)
		}
	}
	nl := waitTestLeader(t, rest)
	// Observations reach the goroutines above asynchronously: the new
	// leader can be known before its vote request was read.
	handed := func() bool { mu.Lock(); defer mu.Unlock(); return len(transfer) > 0 }
	deadline := time.Now().Add(scaled(2 * time.Second))
	for !handed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(transfer) == 0 {
		t.Errorf("no vote request carried the leadership-transfer flag: %s was elected after a timeout, not handed over", nl.id)
	}
}

func TestRestartAllThreeKeepsState(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	l := startGroup(t, nodes)
	apply(t, l.node, CmdDetect, DetectCmd{Host: "c1", ServiceID: "s1", Evidence: Evidence{Source: "nova", NovaState: "down"}, Level: 2})
	apply(t, l.node, CmdStepBegin, StepBeginCmd{Host: "c1", Step: StepFence})
	apply(t, l.node, CmdMaintenance, MaintenanceCmd{Host: "c2", On: true, By: "op", Reason: "disk swap"})
	apply(t, l.node, CmdConfirmFence, ConfirmCmd{Host: "c3", By: "op", Reason: "pulled the plug"})
	// A snapshot on one node, so restart covers both snapshot restore and
	// log replay.
	if err := l.node.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	apply(t, l.node, CmdPause, PauseCmd{Paused: true, By: "op"})
	ctx, cancel := context.WithTimeout(context.Background(), scaled(5*time.Second))
	defer cancel()
	if err := l.node.ConsistentRead(ctx); err != nil {
		t.Fatal(err)
	}
	want := l.node.FSM()
	wantHosts, wantSettings, wantEvents := want.Hosts(), want.Settings(), want.Events(0, "", 0)
	for _, tn := range nodes {
		poll(t, 5*time.Second, tn.id+" caught up", func() bool { return tn.node.FSM().Settings().Paused })
	}
	for _, tn := range nodes {
		tn.stop()
	}
	for _, tn := range nodes {
		if err := tn.open(t, peersOf(nodes), false); err != nil {
			t.Fatalf("reopen %s: %v", tn.id, err)
		}
	}
	waitTestLeader(t, nodes)
	for _, tn := range nodes {
		f := tn.node.FSM()
		poll(t, 10*time.Second, tn.id+" replayed its state", func() bool { return f.Settings().Paused })
		if got := f.Hosts(); !reflect.DeepEqual(got, wantHosts) {
			t.Errorf("%s after restart: hosts %+v, want %+v", tn.id, got, wantHosts)
		}
		if got := f.Settings(); !reflect.DeepEqual(got, wantSettings) {
			t.Errorf("%s after restart: settings %+v, want %+v", tn.id, got, wantSettings)
		}
		if got := f.Events(0, "", 0); !reflect.DeepEqual(got, wantEvents) {
			t.Errorf("%s after restart: %d events, want %d", tn.id, len(got), len(wantEvents))
		}
		if rec := f.Host("c1"); rec == nil || rec.Pending == nil || rec.Pending.Step != StepFence {
			t.Errorf("%s after restart: the fence intent without a result is gone: %+v", tn.id, rec)
		}
	}
}

func TestCorruptFollowerBoltFileFailsLoudly(t *testing.T) {
	for _, damage := range []struct {
		name string
		do   func(t *testing.T, path string)
	}{
		{"garbage over the meta pages", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			junk := make([]byte, 16<<10)
			for i := range junk {
				junk[i] = byte(i*31 + 7)
			}
			if _, err := f.WriteAt(junk, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated to a few bytes", func(t *testing.T, path string) {
			if err := os.Truncate(path, 100); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(damage.name, func(t *testing.T) {
			nodes := newTestNodes(t, 3, nil)
			l := startGroup(t, nodes)
			apply(t, l.node, CmdPause, PauseCmd{Paused: true, By: "op"})
			var f *testNode
			for _, tn := range nodes {
				if tn != l {
					f = tn
					break
				}
			}
			poll(t, 5*time.Second, "the follower caught up", func() bool { return f.node.FSM().Settings().Paused })
			f.stop()
			path := filepath.Join(f.dir, "raft.db")
			damage.do(t, path)
			err := f.open(t, peersOf(nodes), false)
			if err == nil {
				t.Fatal("OpenNode on a damaged raft.db succeeded")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("the error does not name the file %s: %v", path, err)
			}
			t.Logf("OpenNode: %v", err)
			// The two others carry on.
			rest := []*testNode{}
			for _, tn := range nodes {
				if tn != f {
					rest = append(rest, tn)
				}
			}
			l = waitTestLeader(t, rest)
			apply(t, l.node, CmdMaintenance, MaintenanceCmd{Host: "c9", On: true, By: "op"})
		})
	}
}

// joinServer serves n's JoinHandler on loopback, over TLS when n has TLS.
func joinServer(t *testing.T, tn *testNode) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(JoinPath, tn.node.JoinHandler())
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	if tn.tls != nil {
		cfg := tn.tls.Clone()
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		srv.TLS = cfg
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv
}

func voterSet(t *testing.T, n *Node) map[string]string {
	t.Helper()
	v, err := n.Voters()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, p := range v {
		m[p.ID] = p.Addr
	}
	return m
}

func TestJoinThroughAnyMember(t *testing.T) {
	nodes := newTestNodes(t, 4, nil)
	n1, n2, n3, n4 := nodes[0], nodes[1], nodes[2], nodes[3]
	if err := n1.open(t, nil, false); err != nil { // alone
		t.Fatal(err)
	}
	waitTestLeader(t, nodes[:1])
	for _, tn := range nodes[1:] {
		if err := tn.open(t, nil, true); err != nil {
			t.Fatal(err)
		}
	}
	s1 := joinServer(t, n1)
	// The leader's API address is what a term start records (Monitor).
	apply(t, n1.node, CmdLeaderAPI, LeaderAPICmd{NodeID: n1.id, APIAddr: s1.URL})
	ctx, cancel := context.WithTimeout(context.Background(), scaled(20*time.Second))
	defer cancel()
	if err := JoinCluster(ctx, JoinOptions{Targets: []string{s1.URL}, ID: n2.id, Addr: n2.addr, Token: testJoinToken, Retry: 100 * time.Millisecond}); err != nil {
		t.Fatalf("n2 joins through the leader: %v", err)
	}
	poll(t, 5*time.Second, "n2 replicates", func() bool { return n2.node.FSM().LeaderInfo().APIAddr == s1.URL })
	// n3 asks the follower n2 (and a dead address first): redirected to the leader.
	s2 := joinServer(t, n2)
	if err := JoinCluster(ctx, JoinOptions{Targets: []string{"127.0.0.1:1", s2.URL}, ID: n3.id, Addr: n3.addr, Token: testJoinToken, Retry: 100 * time.Millisecond}); err != nil {
		t.Fatalf("n3 joins through a follower: %v", err)
	}
	if got := voterSet(t, n1.node); len(got) != 3 || got[n3.id] != n3.addr {
		t.Fatalf("voters after joins: %v", got)
	}
	idx := n1.node.raft.LastIndex()
	// Joining again is a no-op: no configuration change is written.
	if err := JoinCluster(ctx, JoinOptions{Targets: []string{s2.URL}, ID: n3.id, Addr: n3.addr, Token: testJoinToken}); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	if n1.node.raft.LastIndex() != idx {
		t.Errorf("a second join of the same voter wrote to the log (last index %d → %d)", idx, n1.node.raft.LastIndex())
	}
	// Same id at a new address (a rebuilt controller): refused unless the
	// joiner proved to be that server; then the old entry goes.
	if err := n1.node.Join(ctx, n3.id, n4.addr, nil); !errors.Is(err, ErrVoterExists) {
		t.Fatalf("join n3 at a new address without proof: %v, want ErrVoterExists", err)
	}
	if err := n1.node.Join(ctx, n3.id, n4.addr, func(id string) bool { return id == n3.id }); err != nil {
		t.Fatalf("join n3 at a new address: %v", err)
	}
	if got := voterSet(t, n1.node); len(got) != 3 || got[n3.id] != n4.addr {
		t.Errorf("same id, new address: voters %v, want n3 at %s only", got, n4.addr)
	}
	// Same address, new id: the holder of the address goes, on the same
	// condition.
	if err := n1.node.Join(ctx, n4.id, n4.addr, func(id string) bool { return id == n4.id }); !errors.Is(err, ErrVoterExists) {
		t.Fatalf("join n4 at n3's address proving only n4: %v, want ErrVoterExists", err)
	}
	if err := n1.node.Join(ctx, n4.id, n4.addr, func(id string) bool { return id == n3.id }); err != nil {
		t.Fatalf("join n4 at n3's address: %v", err)
	}
	if got := voterSet(t, n1.node); len(got) != 3 || got[n4.id] != n4.addr || got[n3.id] != "" {
		t.Errorf("same address, new id: voters %v", got)
	}
	// A follower asked directly refuses with ErrNotLeader.
	if err := n2.node.Join(ctx, "x", "127.0.0.1:9", nil); !errors.Is(err, ErrNotLeader) {
		t.Errorf("join on a follower: %v, want ErrNotLeader", err)
	}
}

func TestTLSStrangerCannotJoinNorReceiveEntries(t *testing.T) {
	ca, other := newTestCA(t, "iha-cluster"), newTestCA(t, "someone-else")
	nodes := newTestNodes(t, 2, ca)
	n1, n2 := nodes[0], nodes[1]
	rogue := newTestNodes(t, 1, other)[0]
	rogue.id = "rogue"
	if err := n1.open(t, nil, false); err != nil {
		t.Fatal(err)
	}
	waitTestLeader(t, nodes[:1])
	for _, tn := range []*testNode{n2, rogue} {
		if err := tn.open(t, nil, true); err != nil {
			t.Fatal(err)
		}
	}
	s1 := joinServer(t, n1)
	ctx, cancel := context.WithTimeout(context.Background(), scaled(20*time.Second))
	defer cancel()
	if err := JoinCluster(ctx, JoinOptions{Targets: []string{s1.URL}, ID: n2.id, Addr: n2.addr, TLS: n2.tls}); err != nil {
		t.Fatalf("a controller with the cluster's certificate cannot join: %v", err)
	}
	applyOnLeader(t, nodes, CmdPause, PauseCmd{Paused: true, By: "op"})
	poll(t, 5*time.Second, "n2 receives entries over TLS", func() bool { return n2.node.FSM().Settings().Paused })

	// The stranger's join is refused: its certificate is not of the CA.
	sctx, scancel := context.WithTimeout(ctx, time.Second)
	err := JoinCluster(sctx, JoinOptions{Targets: []string{s1.URL}, ID: rogue.id, Addr: rogue.addr, TLS: rogue.tls, Retry: 100 * time.Millisecond})
	scancel()
	if err == nil {
		t.Fatal("a controller with a foreign certificate joined")
	}
	// Without any client certificate the handler itself refuses.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := insecure.Post(s1.URL+JoinPath, "application/json", strings.NewReader(`{"id":"rogue","addr":"`+rogue.addr+`"}`))
	if err != nil {
		t.Fatalf("post without a certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("join without a client certificate: %s, want 403", resp.Status)
	}
	if got := voterSet(t, n1.node); len(got) != 2 {
		t.Fatalf("voters after refused joins: %v", got)
	}
	// Even added by hand (an operator's mistake), it receives nothing: the
	// leader cannot complete a handshake with it, and the two real voters
	// still make a quorum of three.
	// (Through whichever node leads now: on a loaded machine n2 may have
	// taken over.)
	onLeader(t, nodes, "add the stranger by hand", func(ctx context.Context, n *Node) error {
		return n.Join(ctx, rogue.id, rogue.addr, nil)
	})
	for i := 0; i < 5; i++ {
		applyOnLeader(t, nodes, CmdMaintenance, MaintenanceCmd{Host: fmt.Sprintf("c%d", i), On: true, By: "op"})
	}
	poll(t, 5*time.Second, "n2 has the entries", func() bool { return len(n2.node.FSM().Settings().Maintenance) == 5 })
	if got := rogue.node.raft.LastIndex(); got != 0 {
		t.Errorf("the stranger received log entries up to index %d", got)
	}
	if rogue.node.FSM().Settings().Paused || len(rogue.node.FSM().Settings().Maintenance) > 0 {
		t.Error("the stranger's FSM has the cluster's state")
	}
}

func TestLoadTLSRefusesIncompleteOrBadFiles(t *testing.T) {
	ca := newTestCA(t, "ca")
	c, k, a := ca.issue(t, "n1")
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		cert, key, ca string
		want          string
	}{
		{"key missing", c, "", a, "must be set together"},
		{"ca holds no certificate", c, k, bad, "holds no PEM certificate"},
		{"cert unreadable", bad, k, a, "raft tls: load"},
		{"ca missing", c, k, filepath.Join(t.TempDir(), "nope"), "read CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadTLS(tc.cert, tc.key, tc.ca)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadTLS: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	cfg, err := LoadTLS(c, k, a)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("LoadTLS: min version %x, client auth %v", cfg.MinVersion, cfg.ClientAuth)
	}
}

// TestHeartbeatAfterCloseDoesNotPanic: raft's heartbeat fast path may save
// a new term a moment after Shutdown returned; on a closed bolt file raft
// panics ("failed to save current term: database not open"), which took a
// whole test binary down once. The guarded store drops that write.
func TestHeartbeatAfterCloseDoesNotPanic(t *testing.T) {
	nodes := newTestNodes(t, 1, nil)
	if err := nodes[0].open(t, nil, false); err != nil {
		t.Fatal(err)
	}
	waitTestLeader(t, nodes)
	n := nodes[0].node
	nodes[0].stop()
	if err := n.store.SetUint64([]byte("CurrentTerm"), 99); err != nil {
		t.Errorf("a term saved after close: %v, want it dropped", err)
	}
	if _, err := n.store.GetUint64([]byte("CurrentTerm")); !errors.Is(err, errStoreClosed) {
		t.Errorf("a read after close: %v, want errStoreClosed", err)
	}
	if err := n.store.StoreLog(&raft.Log{Index: 99}); !errors.Is(err, errStoreClosed) {
		t.Errorf("a log written after close: %v, want errStoreClosed", err)
	}
}

// TestJoinNeedsProofAndNeverReplacesAStranger: without TLS a join needs the
// write token; a node without a token refuses every join; a join with the
// token never replaces an existing voter; with TLS a certificate that does
// not name an existing voter cannot take its place.
func TestJoinNeedsProofAndNeverReplacesAStranger(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	n1, n2 := nodes[0], nodes[1]
	if err := n1.open(t, nil, false); err != nil {
		t.Fatal(err)
	}
	waitTestLeader(t, nodes[:1])
	if err := n2.open(t, nil, true); err != nil {
		t.Fatal(err)
	}
	s1 := joinServer(t, n1)
	post := func(tok, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, s1.URL+JoinPath, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	evil := `{"id":"evil","addr":"127.0.0.1:1"}`
	for _, tc := range []struct {
		name, tok, body string
		code            int
		want            string
	}{
		{"no token", "", evil, http.StatusUnauthorized, "needs proof"},
		{"wrong token", "guess", evil, http.StatusUnauthorized, "needs proof"},
		{"trailing data", testJoinToken.Reveal(), evil + `{"id":"x"}`, http.StatusBadRequest, "trailing data"},
		{"unknown field", testJoinToken.Reveal(), `{"id":"evil","addr":"127.0.0.1:1","voter":true}`, http.StatusBadRequest, "unknown field"},
		{"replaces n1 by id", testJoinToken.Reveal(), `{"id":"n1","addr":"127.0.0.1:1"}`, http.StatusConflict, "never replaces"},
		{"replaces n1 by address", testJoinToken.Reveal(), `{"id":"evil","addr":"` + n1.addr + `"}`, http.StatusConflict, "never replaces"},
	} {
		code, body := post(tc.tok, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %d containing %q", tc.name, code, body, tc.code, tc.want)
		}
	}
	if got := voterSet(t, n1.node); len(got) != 1 || got["n1"] != n1.addr {
		t.Fatalf("voters after refused joins: %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scaled(20*time.Second))
	defer cancel()
	if err := JoinCluster(ctx, JoinOptions{Targets: []string{s1.URL}, ID: n2.id, Addr: n2.addr, Token: testJoinToken}); err != nil {
		t.Fatalf("a join with the token: %v", err)
	}
	if got := voterSet(t, n1.node); len(got) != 2 {
		t.Fatalf("voters after the join: %v", got)
	}

	// A node with neither TLS nor a token refuses every join.
	bare := newTestNodes(t, 1, nil)[0]
	ln, err := net.Listen("tcp", bare.addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := OpenNode(NodeConfig{ID: bare.id, DataDir: bare.dir, Stream: NewTCPStreamLayer(ln), Timing: 0.3, Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	go drainNotify(n)
	t.Cleanup(func() { _ = n.Close() })
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, JoinPath, strings.NewReader(evil))
	req.Header.Set("Authorization", "Bearer anything")
	n.JoinHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "neither RAFT_TLS_*") {
		t.Errorf("join on a node without proof to check: %d %s", rec.Code, rec.Body.String())
	}
}

// TestTLSJoinReplacesOnlyTheServerItsCertificateNames: a controller of the
// cluster CA may take the place of the server its certificate names (a
// rebuilt controller), never another one's.
func TestTLSJoinReplacesOnlyTheServerItsCertificateNames(t *testing.T) {
	ca := newTestCA(t, "iha-cluster")
	nodes := newTestNodes(t, 2, ca)
	n1, n2 := nodes[0], nodes[1]
	if err := n1.open(t, nil, false); err != nil {
		t.Fatal(err)
	}
	waitTestLeader(t, nodes[:1])
	if err := n2.open(t, nil, true); err != nil {
		t.Fatal(err)
	}
	s1 := joinServer(t, n1)
	ctx, cancel := context.WithTimeout(context.Background(), scaled(20*time.Second))
	defer cancel()
	if err := JoinCluster(ctx, JoinOptions{Targets: []string{s1.URL}, ID: n2.id, Addr: n2.addr, TLS: n2.tls}); err != nil {
		t.Fatal(err)
	}
	// n2's certificate presented as "n1" at a new address: refused.
	sctx, scancel := context.WithTimeout(ctx, scaled(time.Second))
	err := JoinCluster(sctx, JoinOptions{Targets: []string{s1.URL}, ID: "n1", Addr: "127.0.0.1:2", TLS: n2.tls, Retry: 50 * time.Millisecond})
	scancel()
	if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "never replaces") {
		t.Fatalf("n2 posing as n1: %v, want a 409 that says why", err)
	}
	if got := voterSet(t, n1.node); got["n1"] != n1.addr || got["n2"] != n2.addr {
		t.Fatalf("voters: %v", got)
	}
}
