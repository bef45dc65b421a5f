package leader

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/lease"
)

// leaseMemStore commits to an in-memory FSM, as a single-voter leader would.
type leaseMemStore struct {
	mu      sync.Mutex
	f       *FSM
	index   uint64
	applies atomic.Int32
	leader  atomic.Bool
}

func newLeaseMemStore() *leaseMemStore {
	s := &leaseMemStore{f: NewFSM()}
	s.leader.Store(true)
	return s
}

func (s *leaseMemStore) FSM() *FSM      { return s.f }
func (s *leaseMemStore) IsLeader() bool { return s.leader.Load() }

func (s *leaseMemStore) Apply(_ context.Context, t CommandType, at time.Time, body any) (any, error) {
	if !s.leader.Load() {
		return nil, fmt.Errorf("raft apply %s: %w", t, raft.ErrNotLeader)
	}
	data, err := EncodeCommand(t, at, body)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.index++
	i := s.index
	s.mu.Unlock()
	s.applies.Add(1)
	r := s.f.Apply(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data})
	if e, ok := r.(error); ok {
		return nil, e
	}
	return r, nil
}

// testKeys derives host keys and the ticket key from a fixed secret.
type testKeys struct{ secret []byte }

func (k testKeys) HostKey(host string) []byte    { return lease.Sum(k.secret, "test host key", host) }
func (k testKeys) TicketKey() ed25519.PrivateKey { return lease.TicketKeyFrom(k.secret) }

func newLeaseService(t *testing.T, st LeaseStore, now func() time.Time) (*Leases, testKeys) {
	t.Helper()
	keys := testKeys{secret: []byte("cluster secret of the test")}
	s, err := NewLeases(LeasesConfig{Store: st, Params: lease.DefaultParams(15 * time.Second), Keys: keys, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, keys
}

func signed(keys testKeys, r lease.Request) lease.Request {
	if r.Boot == "" {
		r.Boot = "boot-1"
	}
	if r.Nonce == "" {
		r.Nonce = fmt.Sprintf("n%d", r.Seq)
	}
	r.Sign(keys.HostKey(r.Host))
	return r
}

func TestLeaseServiceGrantsOnlyWhatItCommitted(t *testing.T) {
	st := newLeaseMemStore()
	s, keys := newLeaseService(t, st, time.Now)
	ctx := context.Background()
	sent := time.Now()
	g, err := s.Grant(ctx, signed(keys, lease.Request{Host: "compute-1", Seq: 1, Sent: sent}))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Verify(keys.HostKey("compute-1"), "compute-1", "n1"); err != nil {
		t.Fatalf("the grant does not verify: %v", err)
	}
	l := st.FSM().Lease("compute-1")
	if !g.Granted || l == nil || !g.Ticket.Grant.Equal(l.Granted) || g.Ticket.Holders != 1 || g.Ticket.Grant.Before(sent) {
		t.Fatalf("grant %+v, committed %+v", g, l)
	}
	// Arming.
	g, err = s.Grant(ctx, signed(keys, lease.Request{Host: "compute-1", Seq: 2, Sent: time.Now(), Armed: true, W: 10 * time.Second}))
	if err != nil || !g.Granted || !st.FSM().Lease("compute-1").Armed {
		t.Fatalf("arming: %+v %v", g, err)
	}

	before := st.applies.Load()
	for name, tc := range map[string]struct {
		req  lease.Request
		want error
	}{
		"signed with another host's key": {func() lease.Request {
			r := lease.Request{Host: "compute-1", Boot: "b", Seq: 9, Sent: time.Now(), Nonce: "x"}
			r.Sign(keys.HostKey("compute-2"))
			return r
		}(), lease.ErrSignature},
		"three minutes old": {signed(keys, lease.Request{Host: "compute-1", Seq: 10, Sent: time.Now().Add(-3 * time.Minute)}), lease.ErrBadRequest},
		"malformed":         {signed(keys, lease.Request{Host: "compute-1", Seq: 0, Sent: time.Now()}), lease.ErrBadRequest},
	} {
		if _, err := s.Grant(ctx, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if n := st.applies.Load(); n != before {
		t.Fatalf("refused requests committed %d entries", n-before)
	}

	// Judged failed: refused, signed, without a commit.
	if _, err := st.Apply(ctx, CmdDetect, time.Now(), DetectCmd{Host: "compute-1", ServiceID: "s1", Level: 2}); err != nil {
		t.Fatal(err)
	}
	before = st.applies.Load()
	g, err = s.Grant(ctx, signed(keys, lease.Request{Host: "compute-1", Seq: 3, Sent: time.Now(), Armed: true, W: 10 * time.Second}))
	if err != nil || g.Granted || !strings.Contains(g.Reason, "recovery") || g.Verify(keys.HostKey("compute-1"), "compute-1", "n3") != nil {
		t.Fatalf("a host in recovery: %+v %v", g, err)
	}
	if st.applies.Load() != before {
		t.Fatal("a refusal of a host in recovery was committed")
	}

	// A follower's commit fails as "not the leader".
	st.leader.Store(false)
	if _, err := s.Grant(ctx, signed(keys, lease.Request{Host: "compute-2", Seq: 1, Sent: time.Now()})); !errors.Is(err, api.ErrNotLeader) {
		t.Fatalf("on a follower: %v", err)
	}
}

func TestLeaseServiceBatchesConcurrentRequests(t *testing.T) {
	st := newLeaseMemStore()
	s, keys := newLeaseService(t, st, time.Now)
	var wg sync.WaitGroup
	const n = 200
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			g, err := s.Grant(context.Background(), signed(keys, lease.Request{Host: fmt.Sprintf("compute-%d", i), Seq: 1, Sent: time.Now()}))
			if err == nil && !g.Granted {
				err = errors.New(g.Reason)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if c := st.applies.Load(); c > n/4 {
		t.Fatalf("%d requests took %d commits: not batched", n, c)
	}
	if h := st.FSM().Lease("compute-7").Holders; h < 1 || h > n {
		t.Fatalf("holders %d", h)
	}
	t.Logf("%d concurrent requests → %d lease.grant entries", n, st.applies.Load())
}

func TestLeaseLostIsReportedOncePerEpisode(t *testing.T) {
	st := newLeaseMemStore()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s, keys := newLeaseService(t, st, clock)
	s.sweep(context.Background()) // this controller leads from now on
	if _, err := s.Grant(context.Background(), signed(keys, lease.Request{Host: "compute-1", Seq: 1, Sent: clock()})); err != nil {
		t.Fatal(err)
	}
	lost := func() int {
		n := 0
		for _, e := range st.FSM().Events(0, "compute-1", 0) {
			if e.Kind == "LeaseLost" {
				n++
			}
		}
		return n
	}
	advance(10 * time.Second)
	s.sweep(context.Background())
	if lost() != 0 {
		t.Fatal("reported before the lease ran out")
	}
	advance(10 * time.Second)
	s.sweep(context.Background())
	s.sweep(context.Background())
	if lost() != 1 {
		t.Fatalf("LeaseLost reported %d times", lost())
	}
	if _, err := s.Grant(context.Background(), signed(keys, lease.Request{Host: "compute-1", Seq: 2, Sent: clock()})); err != nil {
		t.Fatal(err)
	}
	advance(20 * time.Second)
	s.sweep(context.Background())
	if lost() != 2 {
		t.Fatalf("a second episode: %d reports", lost())
	}
}
