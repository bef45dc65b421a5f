package leader_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/lease"
	"github.com/ihaproject/iha/pkg/novasim"
)

// The watchdog path in the sandbox: every compute's "agent" renews an armed
// lease through the real lease service (signed requests, acknowledgements),
// c1 hangs with a dead BMC, and the leader must record it fenced by its
// watchdog no earlier than its last committed grant + L + W + margin.

type wdKeys struct{ secret []byte }

func (k wdKeys) HostKey(host string) []byte    { return lease.Sum(k.secret, "iha host key v1", host) }
func (k wdKeys) TicketKey() ed25519.PrivateKey { return lease.TicketKeyFrom(k.secret) }

// liveStore follows the sandbox's current node across StopLeader/StartLeader.
type liveStore struct{ w *world }

func (s liveStore) Apply(ctx context.Context, t leader.CommandType, at time.Time, body any) (any, error) {
	n := s.w.Node()
	if n == nil {
		return nil, raft.ErrNotLeader
	}
	return n.Apply(ctx, t, at, body)
}

func (s liveStore) FSM() *leader.FSM {
	if f := s.w.FSM(); f != nil {
		return f
	}
	return leader.NewFSM()
}

func (s liveStore) IsLeader() bool { n := s.w.Node(); return n != nil && n.IsLeader() }

// leaseAgents are the computes' lease renewals (the agent's keeper reduced
// to its requests: armed, W, acknowledging the grants that came in time).
type leaseAgents struct {
	t    *testing.T
	svc  *leader.Leases
	keys wdKeys
	w    time.Duration
	mu   sync.Mutex
	stop map[string]context.CancelFunc
	done map[string]chan struct{}
}

func startLeaseService(t *testing.T, w *world, p lease.Params, watchdogW time.Duration) *leaseAgents {
	t.Helper()
	keys := wdKeys{secret: []byte("watchdog scenario cluster key....")}
	svc, err := leader.NewLeases(leader.LeasesConfig{Store: liveStore{w}, Params: p, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	a := &leaseAgents{t: t, svc: svc, keys: keys, w: watchdogW, stop: map[string]context.CancelFunc{}, done: map[string]chan struct{}{}}
	t.Cleanup(func() {
		a.mu.Lock()
		hosts := make([]string, 0, len(a.stop))
		for h := range a.stop {
			hosts = append(hosts, h)
		}
		a.mu.Unlock()
		for _, h := range hosts {
			a.Stop(h)
		}
		cancel()
		<-done
	})
	return a
}

func (a *leaseAgents) Start(host string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	a.mu.Lock()
	a.stop[host], a.done[host] = cancel, done
	a.mu.Unlock()
	p := a.svc.Params()
	go func() {
		defer close(done)
		var seq int64
		var ack time.Time
		tick := time.NewTicker(p.Renew)
		defer tick.Stop()
		for {
			seq++
			r := lease.Request{Host: host, Boot: "boot-1", Seq: seq, Sent: time.Now(), Armed: true, W: a.w, Ack: ack, Nonce: fmt.Sprintf("n%d", seq)}
			r.Sign(a.keys.HostKey(host))
			cctx, ccancel := context.WithTimeout(ctx, p.L)
			g, err := a.svc.Grant(cctx, r)
			ccancel()
			if err == nil && g.Granted && time.Since(r.Sent) <= p.MaxRTT {
				ack = g.Ticket.Grant
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// Stop stops host's renewals and returns once none is in flight.
func (a *leaseAgents) Stop(host string) {
	a.mu.Lock()
	cancel, done := a.stop[host], a.done[host]
	delete(a.stop, host)
	a.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// watchdogWorld: four armed computes renewing leases of L with watchdog W.
func watchdogWorld(t *testing.T, l, watchdogW, margin time.Duration) (*world, *leaseAgents) {
	s := fastSettings()
	s.WatchdogLease, s.WatchdogMargin = l, margin
	w := newWorld(t, s)
	w.start()
	agents := startLeaseService(t, w, lease.DefaultParams(l), watchdogW)
	hosts := []string{"c1", "c2", "c3", "c4"}
	for _, h := range hosts {
		agents.Start(h)
	}
	waitFor(t, 10*time.Second, "every compute armed and reaching", func() bool {
		for _, h := range hosts {
			x := w.FSM().Lease(h)
			if x == nil || !x.Armed || x.ReachSince.IsZero() {
				return false
			}
		}
		return true
	})
	return w, agents
}

// checkWatchdogRecovery asserts the end of a watchdog-fenced recovery of c1
// whose last grant was g.
func checkWatchdogRecovery(t *testing.T, w *world, g time.Time, l, watchdogW, margin time.Duration) {
	t.Helper()
	rec := w.FSM().Host("c1")
	if rec.Fence == nil || rec.Fence.Method != "watchdog" || rec.Fence.State != "reset" {
		t.Fatalf("fence result %+v, want the watchdog's", rec.Fence)
	}
	floor := g.Add(l + watchdogW + margin)
	fenced := w.events("", "FencingSucceeded")
	assumed := w.events("", "WatchdogSelfFenceAssumed")
	pending := w.events("", "WatchdogFencePending")
	if len(fenced) != 1 || len(assumed) != 1 || len(pending) != 1 {
		t.Fatalf("events: %d FencingSucceeded, %d WatchdogSelfFenceAssumed, %d WatchdogFencePending; want one each", len(fenced), len(assumed), len(pending))
	}
	if fenced[0].At.Before(floor) || rec.Fence.At.Before(floor) {
		t.Fatalf("fenced at %s, before the last grant %s + L %v + W %v + margin %v = %s",
			fenced[0].At.Format(time.RFC3339Nano), g.Format(time.RFC3339Nano), l, watchdogW, margin, floor.Format(time.RFC3339Nano))
	}
	if pending[0].Seq > fenced[0].Seq || !strings.Contains(rec.Fence.Detail, "lease expired") {
		t.Errorf("pending %+v, fenced %+v, fence detail %q", pending[0], fenced[0], rec.Fence.Detail)
	}
	if !strings.Contains(fenced[0].Message, "watchdog self-fence (lease expired at") {
		t.Errorf("FencingSucceeded says %q", fenced[0].Message)
	}
	if off, _, _ := w.BMC("c1").Counts(); off != 0 {
		t.Errorf("the dead BMC powered c1 off %d times", off)
	}
	for _, name := range []string{"vm1", "vm2", "vm3", "off"} {
		srv, _ := w.Sim.Server(w.servers[name])
		if srv.Host == "c1" {
			t.Errorf("%s still on c1", name)
		}
		if n := w.Sim.ServerCalls(w.servers[name], novasim.RouteEvacuate); n != 1 {
			t.Errorf("%s evacuated %d times, want 1", name, n)
		}
	}
	// The first evacuation came after the fence was recorded.
	for _, e := range w.FSM().Events(0, "c1", 0) {
		if strings.HasPrefix(e.Kind, "Evacuat") && e.Seq < fenced[0].Seq {
			t.Errorf("%s (seq %d) before the fence (seq %d)", e.Kind, e.Seq, fenced[0].Seq)
		}
	}
	if x := w.FSM().Lease("c1"); !x.Granted.Equal(g) {
		t.Errorf("c1 was granted again during its recovery: last grant %s, want %s", x.Granted, g)
	}
}

// waitRecovered waits for c1's recovery to finish; once c1 is recorded
// fenced it boots again, as a host its watchdog reset does (its
// nova-compute held by the gate until the recovery allows it).
func waitRecovered(t *testing.T, w *world) {
	t.Helper()
	booted := false
	waitFor(t, 40*time.Second, "c1 recovered", func() bool {
		if rec := w.FSM().Host("c1"); !booted && rec != nil && rec.Fence != nil {
			booted = true
			w.Boot("c1")
		}
		return w.phase("c1") == leader.PhaseDone
	})
}

func TestWatchdogFencesAHostWhoseBMCIsDead(t *testing.T) {
	t.Parallel()
	const l, wd, margin = 3 * time.Second, time.Second, 500 * time.Millisecond
	w, agents := watchdogWorld(t, l, wd, margin)

	w.BMC("c1").SetFailOff(errors.New("BMC unreachable"))
	agents.Stop("c1") // hung: no more renewals
	g := w.FSM().Lease("c1").Granted
	failAt := time.Now()
	w.Hang("c1")

	waitRecovered(t, w)
	rec := w.FSM().Host("c1")
	t.Logf("L %v, W %v, margin %v: hang → fenced %v (last grant → fenced %v), hang → done %v",
		l, wd, margin, rec.Fence.At.Sub(failAt).Round(time.Millisecond), rec.Fence.At.Sub(g).Round(time.Millisecond), time.Since(failAt).Round(time.Millisecond))
	checkWatchdogRecovery(t, w, g, l, wd, margin)
	if _, reqs, _ := w.BMC("c1").Counts(); reqs == 0 {
		t.Error("the BMC was never tried: FENCING order is BMC, then watchdog")
	}
	for _, h := range []string{"c2", "c3", "c4"} {
		if _, reqs, _ := w.BMC(h).Counts(); reqs != 0 {
			t.Errorf("healthy host %s was fenced", h)
		}
	}
}

// A host whose agent was not armed: the BMC fails, and the leader waits for
// an operator as before.
func TestWatchdogUnarmedHostWaitsForTheOperator(t *testing.T) {
	t.Parallel()
	const l, wd, margin = 3 * time.Second, time.Second, 500 * time.Millisecond
	w, agents := watchdogWorld(t, l, wd, margin)
	agents.Stop("c1")
	// c1's agent re-asks unarmed (a clean stop that did not release, then
	// a restart without watchdog:).
	r := lease.Request{Host: "c1", Boot: "boot-1", Seq: 1 << 40, Sent: time.Now(), Nonce: "unarmed"}
	r.Sign(agents.keys.HostKey("c1"))
	if g, err := agents.svc.Grant(context.Background(), r); err != nil || !g.Granted {
		t.Fatalf("unarmed grant: %+v %v", g, err)
	}
	w.BMC("c1").SetFailOff(errors.New("BMC unreachable"))
	w.Hang("c1")
	waitFor(t, 20*time.Second, "c1's BMC fence failed", func() bool { return len(w.events("", "FencingFailed")) > 0 })
	grant := w.FSM().Lease("c1").Granted
	// Past every time the watchdog path could have given.
	time.Sleep(scale(l + wd + margin))
	if rec := w.FSM().Host("c1"); rec.Fence != nil || rec.Watchdog != nil || w.evacuations() != 0 {
		t.Fatalf("unarmed c1: phase %s, watchdog %+v, %d evacuations (last grant %s)", rec.Phase, rec.Watchdog, w.evacuations(), grant)
	}
}

// The acting leader stops while it waits for c1's watchdog: the next one
// resumes the wait from the committed grant, and c1 is fenced once, no
// earlier, each server evacuated once.
func TestWatchdogWaitSurvivesALeaderRestart(t *testing.T) {
	t.Parallel()
	const l, wd, margin = 3 * time.Second, 2 * time.Second, 500 * time.Millisecond
	w, agents := watchdogWorld(t, l, wd, margin)

	w.BMC("c1").SetFailOff(errors.New("BMC unreachable"))
	agents.Stop("c1")
	g := w.FSM().Lease("c1").Granted
	w.Hang("c1")
	waitFor(t, 20*time.Second, "the watchdog wait committed", func() bool {
		rec := w.FSM().Host("c1")
		return rec != nil && rec.Watchdog != nil
	})
	if rec := w.FSM().Host("c1"); rec.Fence != nil || !rec.Watchdog.Grant.Equal(g) || !rec.Watchdog.Deadline.After(g.Add(l+wd+margin-time.Nanosecond)) {
		t.Fatalf("the wait: %+v (fence %+v), last grant %s", rec.Watchdog, rec.Fence, g)
	}
	w.StopLeader()
	if err := w.StartLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitRecovered(t, w)
	checkWatchdogRecovery(t, w, g, l, wd, margin)
}
