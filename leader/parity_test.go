package leader_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/nova"
	"github.com/ihaproject/iha/pkg/novasim"
)

// Tests of issue 16: what an operator moving from InstanceHA would hit.

// markService writes Nova's state of host as InstanceHA (or an operator)
// left it.
func (w *world) markService(host, status, reason string, forced bool) {
	w.t.Helper()
	svc, ok := w.Sim.Service(host)
	if !ok {
		w.t.Fatalf("no service %s", host)
	}
	u := nova.ServiceUpdate{ForcedDown: &forced}
	if status != "" {
		u.Status = &status
	}
	if reason != "" {
		u.DisabledReason = &reason
	}
	if _, err := w.Nova.UpdateService(context.Background(), svc.ID, u); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) events(host, kind string) []leader.Event {
	var out []leader.Event
	for _, e := range w.FSM().Events(0, host, 0) {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// TestScenarioManualForceDownSurvivesALeaderChange is issue 16 item 1: an
// operator forces a live host's nova-compute down and leaves it enabled.
// The running leader leaves it alone (W9); so does every later leader, where
// the startup reconciliation used to adopt it as an orphan at each new term
// and power it off.
func TestScenarioManualForceDownSurvivesALeaderChange(t *testing.T) {
	t.Parallel()
	w := newWorld(t, fastSettings())
	w.start()
	waitFor(t, 10*time.Second, "the takeover recorded", func() bool { return len(w.events("", "StartupReconciled")) == 1 })
	w.markService("c2", "", "", true) // the operator's force-down: enabled, forced down
	waitFor(t, 10*time.Second, "the ForcedDownByOther event", func() bool { return len(w.events("c2", "ForcedDownByOther")) > 0 })

	obs := &judgedObserver{}
	w.SetObserver(obs)
	for term := 2; term <= 3; term++ { // a controller restart, then another
		w.StopLeader()
		before := obs.count("c2")
		w.start()
		// The new term's startup work ran before its first poll: two polls
		// that judged c2 mean it is over.
		waitFor(t, 20*time.Second, "two polls of the new term that judged c2", func() bool { return obs.count("c2") >= before+2 })
		if p := w.phase("c2"); p != "" {
			t.Fatalf("term %d: the operator's forced-down host has a recovery record, phase %s", term, p)
		}
	}
	if _, reqs, _ := w.BMC("c2").Counts(); reqs != 0 {
		t.Errorf("c2 got %d power-off requests", reqs)
	}
	if n := w.Sim.ServerCalls(w.servers["elsewhere"], novasim.RouteEvacuate); n != 0 {
		t.Errorf("c2's server evacuated %d times", n)
	}
	if n := len(w.events("", "StartupReconciled")); n != 1 {
		t.Errorf("%d StartupReconciled events, want 1 (once per cluster)", n)
	}
	if svc, _ := w.Sim.Service("c2"); !svc.ForcedDown || svc.Status != "enabled" {
		t.Errorf("c2's service was changed: %+v", svc)
	}
}

// judgedObserver counts, per host, the poll cycles that judged it.
type judgedObserver struct {
	mu     sync.Mutex
	judged map[string]int
}

func (o *judgedObserver) PollCycle(time.Duration, error, int)       {}
func (o *judgedObserver) ComputeServices([]nova.Service, time.Time) {}
func (o *judgedObserver) Verdicts(v map[string]leader.Verdict, _ time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.judged == nil {
		o.judged = map[string]int{}
	}
	for h := range v {
		o.judged[h]++
	}
}

func (o *judgedObserver) count(host string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.judged[host]
}

// TestScenarioEvacuationLocksAreReleased is issue 16 item 2: a leader
// releases, at its start, the evacuation locks left on the servers of
// forced-down hosts (here of a host InstanceHA marked FAILED), and a
// recovery releases its servers' evacuation locks when it ends, in
// traditional mode too (here a recovery InstanceHA started in smart mode
// and IHA resumes). A lock with another reason is the tenant's and stays.
func TestScenarioEvacuationLocksAreReleased(t *testing.T) {
	t.Parallel()
	w := newWorld(t, fastSettings()) // traditional mode
	ctx := context.Background()
	stuck := w.Sim.AddServer(novasim.ServerSpec{Name: "stuck", Host: "c3", ImageID: w.image, Locked: true, LockedReason: leader.LockReason})
	w.Hang("c3")
	w.markService("c3", "disabled", leader.Marker(leader.MarkerFailed, "", time.Now().Add(-time.Hour)), true)

	if err := w.Nova.Lock(ctx, w.servers["vm1"], leader.LockReason); err != nil {
		t.Fatal(err)
	}
	if err := w.Nova.Lock(ctx, w.servers["vm2"], "tenant: do not touch"); err != nil {
		t.Fatal(err)
	}
	w.Hang("c1")
	w.markService("c1", "disabled", leader.Marker(leader.MarkerPrefix, "", time.Now().Add(-time.Minute)), true)
	w.start()

	waitFor(t, 10*time.Second, "the FAILED host's server unlocked", func() bool {
		srv, _ := w.Sim.Server(stuck)
		return !srv.Locked
	})
	if p := w.phase("c3"); p != "" {
		t.Errorf("the FAILED host was touched: phase %s", p)
	}
	waitFor(t, 30*time.Second, "c1's resumed recovery evacuated", func() bool {
		r := w.FSM().Host("c1")
		return r != nil && (r.Phase == leader.PhaseReenabling || r.Phase == leader.PhaseDone)
	})
	if srv, _ := w.Sim.Server(w.servers["vm1"]); srv.Locked {
		t.Errorf("vm1 still locked (%q) after its recovery", srv.LockedReason)
	}
	if srv, _ := w.Sim.Server(w.servers["vm2"]); !srv.Locked || srv.LockedReason != "tenant: do not touch" {
		t.Errorf("the tenant's lock on vm2 was released: locked %v %q", srv.Locked, srv.LockedReason)
	}
}

// TestScenarioResumedKdumpMarkedHostIsNotPoweredOff is issue 16 item 7: a
// recovery InstanceHA started for a dumping host (marker "instanceha
// evacuation (kdump): …") is resumed without a power-off, which could cut
// the dump, and without a power-on at the end: the dump owns the host.
func TestScenarioResumedKdumpMarkedHostIsNotPoweredOff(t *testing.T) {
	t.Parallel()
	w := newWorld(t, fastSettings())
	w.Hang("c1")
	w.markService("c1", "disabled", leader.Marker(leader.MarkerPrefix, leader.MarkerKdumpSuffix, time.Now().Add(-time.Minute)), true)
	w.start()
	var marker string
	waitFor(t, 30*time.Second, "c1's resumed recovery evacuated", func() bool {
		if svc, ok := w.Sim.Service("c1"); ok {
			marker = svc.DisabledReason
		}
		r := w.FSM().Host("c1")
		return r != nil && (r.Phase == leader.PhaseReenabling || r.Phase == leader.PhaseDone)
	})
	rec := w.FSM().Host("c1")
	if !rec.Kdump || rec.Fence == nil || rec.Fence.Method != "kdump" {
		t.Errorf("record: kdump %v, fence %+v", rec.Kdump, rec.Fence)
	}
	if off, reqs, on := w.BMC("c1").Counts(); reqs != 0 || off != 0 || on != 0 {
		t.Errorf("a host InstanceHA kdump-fenced got %d power-off requests and %d power-ons", reqs, on)
	}
	if !strings.HasPrefix(marker, leader.MarkerComplete+leader.MarkerKdumpSuffix) {
		t.Errorf("marker %q, want the complete (kdump) marker", marker)
	}
	w.evacuatedOnce("vm1", "vm2", "vm3", "off")
}

// TestScenarioResumedHostWithUnreachableBMCWaitsForTheOperator keeps a
// deliberate difference (README, "How IHA differs"): InstanceHA resumes a
// marked host without fencing it; IHA powers it off first, and when its BMC
// does not answer nothing is evacuated until `iha confirm-fenced`.
func TestScenarioResumedHostWithUnreachableBMCWaitsForTheOperator(t *testing.T) {
	t.Parallel()
	w := newWorld(t, fastSettings())
	w.BMC("c1").SetFailOff(errors.New("BMC unreachable"))
	w.Hang("c1")
	w.markService("c1", "disabled", leader.Marker(leader.MarkerPrefix, "", time.Now().Add(-time.Minute)), true)
	w.start()
	waitFor(t, 10*time.Second, "a failed fence attempt", func() bool {
		r := w.FSM().Host("c1")
		return r != nil && r.FenceTries > 0
	})
	settle()
	if n := w.evacuations(); n != 0 {
		t.Fatalf("%d evacuations of a host whose BMC never confirmed it off", n)
	}
	if _, err := w.Node().Apply(context.Background(), leader.CmdConfirmFence, time.Now(),
		leader.ConfirmCmd{Host: "c1", By: "operator", Reason: "pulled the power cord"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "c1 evacuated after confirm-fenced", func() bool {
		r := w.FSM().Host("c1")
		return r != nil && (r.Phase == leader.PhaseReenabling || r.Phase == leader.PhaseDone)
	})
	if f := w.FSM().Host("c1").Fence; f == nil || f.Method != "operator" {
		t.Errorf("fence %+v, want the operator's confirmation", f)
	}
}

// TestScenarioResumedMigrationTimesOutFromItsCreation is issue 16 item 8
// (R10.5): a recovery InstanceHA left in progress is resumed in smart mode;
// one server's evacuation is still running in Nova, created shortly before
// EVACUATION_TIMEOUT ago. It is monitored, not evacuated again, and fails
// when EVACUATION_TIMEOUT has passed since the migration's created_at, not
// a fresh EVACUATION_TIMEOUT after the resume.
func TestScenarioResumedMigrationTimesOutFromItsCreation(t *testing.T) {
	t.Parallel()
	s := fastSettings()
	s.SmartEvacuation = true
	s.EvacuationTimeout = 20 * time.Second
	w := newWorld(t, s)
	left := 4 * time.Second
	created := time.Now().Add(-(s.EvacuationTimeout - left))
	w.Sim.AddInFlightEvacuation(novasim.InFlightEvacuation{ServerID: w.servers["vm1"], CreatedAt: created})
	w.Hang("c1")
	w.markService("c1", "disabled", leader.Marker(leader.MarkerPrefix, "", created), true)
	start := time.Now()
	w.start()
	waitFor(t, 40*time.Second, "vm1's evacuation given up", func() bool {
		r := w.FSM().Host("c1")
		return r != nil && r.Server(w.servers["vm1"]) != nil && r.Server(w.servers["vm1"]).State == leader.ServerFailed
	})
	took := time.Since(start)
	t.Logf("resumed migration given up %s after the leader started (%s left of EVACUATION_TIMEOUT %s at the start)", took, left, s.EvacuationTimeout)
	if took >= s.EvacuationTimeout-2*time.Second {
		t.Errorf("vm1 given up %s after the resume: its EVACUATION_TIMEOUT was counted from the resume, not from the migration's creation", took)
	}
	if n := w.Sim.ServerCalls(w.servers["vm1"], novasim.RouteEvacuate); n != 0 {
		t.Errorf("vm1's evacuation in progress was requested again %d times", n)
	}
	if sr := w.FSM().Host("c1").Server(w.servers["vm1"]); !strings.Contains(sr.Error, "EVACUATION_TIMEOUT") {
		t.Errorf("vm1's error %q", sr.Error)
	}
}

// TestScenarioServerImageMissingFromGlancesListIsLookedUp is issue 16 item
// 8 (R6.6): Glance's list leaves hidden images out; a server on one is
// matched by looking its image up, as InstanceHA does, instead of being
// left behind as untagged.
func TestScenarioServerImageMissingFromGlancesListIsLookedUp(t *testing.T) {
	t.Parallel()
	w := newWorld(t, fastSettings())
	hiddenTagged := w.Sim.AddImage(novasim.Image{Name: "hidden-tagged", Tags: []string{"evacuable"}, Hidden: true})
	hiddenPlain := w.Sim.AddImage(novasim.Image{Name: "hidden-plain", Hidden: true})
	vmh := w.Sim.AddServer(novasim.ServerSpec{Name: "on-hidden-tagged", Host: "c1", ImageID: hiddenTagged})
	vmp := w.Sim.AddServer(novasim.ServerSpec{Name: "on-hidden-plain", Host: "c1", ImageID: hiddenPlain})
	w.start()
	w.Hang("c1")
	waitFor(t, 30*time.Second, "c1 evacuated", func() bool {
		r := w.FSM().Host("c1")
		return r != nil && (r.Phase == leader.PhaseReenabling || r.Phase == leader.PhaseDone)
	})
	if srv, _ := w.Sim.Server(vmh); srv.Host == "c1" {
		t.Error("the server on a hidden image tagged evacuable was not evacuated")
	}
	if srv, _ := w.Sim.Server(vmp); srv.Host != "c1" || w.Sim.ServerCalls(vmp, novasim.RouteEvacuate) != 0 {
		t.Error("the server on a hidden untagged image was evacuated")
	}
	if srv, _ := w.Sim.Server(w.servers["untagged"]); srv.Host != "c1" {
		t.Error("the untagged server was evacuated")
	}
}

// TestScenarioFirstFlavorKeyWithTheTagDecides is issue 16 item 8 (R6.7):
// with several composite extra-spec keys containing the tag, InstanceHA
// looks at the first (in the order Nova lists them) and nothing else.
func TestScenarioFirstFlavorKeyWithTheTagDecides(t *testing.T) {
	t.Parallel()
	w := newWorld(t, fastSettings())
	plain := w.Sim.AddImage(novasim.Image{Name: "plain-2"})
	firstFalse := w.Sim.AddFlavor(novasim.Flavor{Name: "first-false", ExtraSpecs: map[string]string{"a:evacuable": "false", "b:evacuable": "true"}})
	firstTrue := w.Sim.AddFlavor(novasim.Flavor{Name: "first-true", ExtraSpecs: map[string]string{"a:evacuable": "true", "b:evacuable": "false"}})
	vmff := w.Sim.AddServer(novasim.ServerSpec{Name: "first-key-false", Host: "c1", ImageID: plain, FlavorID: firstFalse})
	vmft := w.Sim.AddServer(novasim.ServerSpec{Name: "first-key-true", Host: "c1", ImageID: plain, FlavorID: firstTrue})
	w.start()
	w.Hang("c1")
	waitFor(t, 30*time.Second, "c1 evacuated", func() bool {
		r := w.FSM().Host("c1")
		return r != nil && (r.Phase == leader.PhaseReenabling || r.Phase == leader.PhaseDone)
	})
	if srv, _ := w.Sim.Server(vmft); srv.Host == "c1" {
		t.Error("the server whose first composite key is true was not evacuated")
	}
	if srv, _ := w.Sim.Server(vmff); srv.Host != "c1" || w.Sim.ServerCalls(vmff, novasim.RouteEvacuate) != 0 {
		t.Error("the server whose first composite key is false was evacuated (a later key said true)")
	}
}

// lockedLog is a log the test reads while the leader writes it.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestScenarioMetricsSummaryIsLoggedEveryInterval: METRICS_LOG_INTERVAL is
// honoured: the leader logs a summary of what it did at that period.
func TestScenarioMetricsSummaryIsLoggedEveryInterval(t *testing.T) {
	t.Parallel()
	s := fastSettings()
	s.MetricsLogInterval = 500 * time.Millisecond
	var out lockedLog
	w := newWorld(t, s, func(o *sandbox.Options) { o.Logger = slog.New(slog.NewTextHandler(&out, nil)) })
	w.start()
	w.Hang("c1")
	waitFor(t, 30*time.Second, "a summary counting c1's recovery", func() bool {
		return strings.Contains(out.String(), `msg="metrics summary"`) && strings.Contains(out.String(), "hosts_fenced=1")
	})
	time.Sleep(time.Second)
	if n := strings.Count(out.String(), `msg="metrics summary"`); n < 2 {
		t.Errorf("%d summaries, want one every %s", n, s.MetricsLogInterval)
	}
}
