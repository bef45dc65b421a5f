package leader

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/api"
)

// TestRemoveVoterThroughTheAPI drives the adapter of DELETE
// /v1/cluster/voters/{id} on a real 3-voter group over loopback TCP: the
// leader removes itself (raft commits with the two others, which elect a
// new leader), then a follower, and the last voter is refused. Each
// removal leaves a VoterRemoved audit event in the replicated log.
func TestRemoveVoterThroughTheAPI(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	l := startGroup(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), scaled(30*time.Second))
	defer cancel()
	apiOf := func(tn *testNode) *API {
		a := NewAPI(APIConfig{Node: tn.node, Logger: quietLogger(t)})
		t.Cleanup(a.Close)
		return a
	}

	// A follower refuses (the HTTP server forwards before it gets here).
	var fol *testNode
	for _, tn := range nodes {
		if tn != l {
			fol = tn
			break
		}
	}
	if _, err := apiOf(fol).Mutate(ctx, api.Mutation{Kind: api.MutRemoveVoter, Voter: l.id, By: "op"}); !errors.Is(err, api.ErrNotLeader) {
		t.Fatalf("remove on a follower: %v, want ErrNotLeader", err)
	}
	la := apiOf(l)
	if _, err := la.Mutate(ctx, api.Mutation{Kind: api.MutRemoveVoter, Voter: "ctl-nobody", By: "op"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("remove of an unknown id: %v, want ErrNotFound", err)
	}

	// The leader removes itself.
	start := time.Now()
	seq, err := la.Mutate(ctx, api.Mutation{Kind: api.MutRemoveVoter, Voter: l.id, By: "alice from 127.0.0.1", Reason: "hardware swap"})
	if err != nil {
		t.Fatalf("the leader removes itself: %v", err)
	}
	if seq == 0 {
		t.Error("no audit event seq for the leader's own removal")
	}
	var rest []*testNode
	for _, tn := range nodes {
		if tn != l {
			rest = append(rest, tn)
		}
	}
	l2 := waitTestLeader(t, rest)
	t.Logf("leader %s removed itself; %s leads after %v", l.id, l2.id, time.Since(start).Round(time.Millisecond))
	poll(t, 10*time.Second, "the old leader's raft stops", func() bool { return l.node.State() == "Shutdown" })
	if got := voterSet(t, l2.node); len(got) != 2 || got[l.id] != "" {
		t.Fatalf("voters after the leader removed itself: %v", got)
	}
	evs := l2.node.FSM().Events(0, "", 0)
	if len(evs) == 0 || evs[len(evs)-1].Kind != EventVoterRemoved || !strings.Contains(evs[len(evs)-1].Message, "hardware swap") ||
		!strings.Contains(evs[len(evs)-1].Message, "alice") || evs[len(evs)-1].Seq != seq {
		t.Fatalf("the new leader's event log does not end with the audited removal (seq %d): %+v", seq, evs)
	}

	// The new leader removes the other follower, then refuses the last voter.
	var other *testNode
	for _, tn := range rest {
		if tn != l2 {
			other = tn
		}
	}
	a2 := apiOf(l2)
	seq, err = a2.Mutate(ctx, api.Mutation{Kind: api.MutRemoveVoter, Voter: other.id, By: "op"})
	if err != nil || seq == 0 {
		t.Fatalf("remove a follower: seq %d, %v", seq, err)
	}
	if got := voterSet(t, l2.node); len(got) != 1 || got[l2.id] == "" {
		t.Fatalf("voters after removing %s: %v", other.id, got)
	}
	_, err = a2.Mutate(ctx, api.Mutation{Kind: api.MutRemoveVoter, Voter: l2.id, By: "op"})
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "last voter") {
		t.Fatalf("removing the last voter: %v, want ErrConflict saying why", err)
	}
	// The group of one still commits.
	apply(t, l2.node, CmdPause, PauseCmd{Paused: true, By: "op"})
	c, err := a2.Cluster(ctx)
	if err != nil || len(c.Voters) != 1 || c.Voters[0].ID != l2.id {
		t.Fatalf("cluster after the removals: %+v %v", c.Voters, err)
	}
}

// TestJoinRefusalSaysWhy: behind a listener that only requests a client
// certificate (the status API's), the join handler itself verifies it
// against RAFT_TLS_CA, and the joining controller's error says why.
func TestJoinRefusalSaysWhy(t *testing.T) {
	ca, other := newTestCA(t, "iha-cluster"), newTestCA(t, "someone-else")
	nodes := newTestNodes(t, 1, ca)
	if err := nodes[0].open(t, nil, false); err != nil {
		t.Fatal(err)
	}
	waitTestLeader(t, nodes)
	mux := http.NewServeMux()
	mux.Handle(JoinPath, nodes[0].node.JoinHandler())
	srv := httptest.NewUnstartedServer(mux)
	cfg := nodes[0].tls.Clone()
	cfg.ClientAuth = tls.RequestClientCert
	cfg.ClientCAs = nil
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)

	// The rogue trusts the cluster's CA (it could read ca.crt) but its own
	// certificate is of another CA.
	rogue := other.tlsConfig(t, "rogue")
	rogue.RootCAs = nodes[0].tls.RootCAs
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), scaled(time.Second))
	defer cancel()
	err := JoinCluster(ctx, JoinOptions{Targets: []string{srv.URL}, ID: "rogue", Addr: "127.0.0.1:9", TLS: rogue,
		Retry: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err == nil {
		t.Fatal("a controller with a foreign certificate joined")
	}
	for _, want := range []string{"403", "not one of the cluster CA", "join attempt failed"} {
		if !strings.Contains(err.Error()+logs.String(), want) {
			t.Errorf("the joiner's error and log lack %q:\n%v\n%s", want, err, logs.String())
		}
	}
	if got := voterSet(t, nodes[0].node); len(got) != 1 {
		t.Fatalf("voters after a refused join: %v", got)
	}
}

// TestJoinBacksOff: failed rounds wait Retry, then twice as long each
// time, up to MaxRetry.
func TestJoinBacksOff(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		writeJoin(w, http.StatusServiceUnavailable, JoinResponse{Error: "no leader known yet"})
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- JoinCluster(ctx, JoinOptions{Targets: []string{srv.URL}, ID: "n9", Addr: "127.0.0.1:9",
			Retry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond})
	}()
	poll(t, 10*time.Second, "six attempts", func() bool { mu.Lock(); defer mu.Unlock(); return len(at) >= 6 })
	cancel()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "no leader known yet") {
		t.Fatalf("JoinCluster after cancel: %v, want the last refusal in the error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Pauses 50, 100, 200, 200, 200 ms: each at least its floor (a busy
	// machine only makes them longer).
	floors := []time.Duration{50, 100, 200, 200, 200}
	for i, f := range floors {
		if gap := at[i+1].Sub(at[i]); gap < f*time.Millisecond {
			t.Errorf("pause %d was %v, want at least %v", i+1, gap, f*time.Millisecond)
		}
	}
	if total := at[5].Sub(at[0]); total > scaled(5*time.Second) {
		t.Errorf("five pauses took %v: MaxRetry did not cap them", total)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
