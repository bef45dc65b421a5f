package leader_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/novasim"
)

// novaDefaultSettings are IHA's defaults against Nova's: report_interval
// 10 s, DELTA 30, POLL 45, DETECTION_MODE both. Anything decided within
// seconds was decided on the mesh's word and Nova's missed report, not on a
// poll or on DELTA.
func novaDefaultSettings() config.Settings {
	s := fastSettings()
	s.DetectionMode = "both"
	s.Delta = 30 * time.Second
	s.Poll = 45 * time.Second
	s.NovaReportInterval = 10 * time.Second
	return s
}

// novaDefaultWorld is newWorld with novasim at Nova's defaults
// (report_interval 10 s, service_down_time 60 s) and a scripted mesh.
func novaDefaultWorld(t *testing.T, mesh *sandbox.Mesh) *world {
	w := newWorld(t, novaDefaultSettings(), func(o *sandbox.Options) {
		o.Mesh = mesh
		o.Sim.ReportInterval = 10 * time.Second
		o.Sim.ServiceDownTime = 60 * time.Second
	})
	w.start()
	return w
}

// justReported waits until host's heartbeat advances and returns the new
// updated_at (whole seconds) and the moment it was seen (a fraction of a
// second after the report itself).
func (w *world) justReported(host string) (updated, seen time.Time) {
	w.t.Helper()
	first, _ := w.Sim.Service(host)
	deadline := time.Now().Add(scale(15 * time.Second))
	for time.Now().Before(deadline) {
		if sv, _ := w.Sim.Service(host); sv.UpdatedAt.After(first.UpdatedAt) {
			return sv.UpdatedAt, time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.t.Fatalf("%s's heartbeat did not advance in 15 s", host)
	return
}

// TestScenarioVerdictAtNovaDefaults: at Nova's default report_interval
// (10 s) the second witness is "the host missed a report it should have
// sent". A host that dies just after a report is failed exactly when its
// next report is overdue (updated_at + report interval + margin), not a
// poll or a DELTA later; a host that dies late in its cycle is failed the
// moment the mesh declares it dead, without one more report interval.
func TestScenarioVerdictAtNovaDefaults(t *testing.T) {
	t.Parallel()
	const margin = 2 * time.Second // leader's verdict margin
	t.Run("dies just after a report: failed when the next one is overdue", func(t *testing.T) {
		t.Parallel()
		mesh := sandbox.NewMesh()
		w := novaDefaultWorld(t, mesh)
		updated, _ := w.justReported("c1")
		w.Hang("c1")
		mesh.Set("c1", leader.MeshDead, "c2", "c3")
		due := updated.Add(10*time.Second + margin)
		waitFor(t, 20*time.Second, "c1 judged failed", func() bool { return w.phase("c1") != "" })
		rec := w.FSM().Host("c1")
		t.Logf("verdict %s after the last heartbeat (due %s): %s", rec.DetectedAt.Sub(updated), due.Sub(updated), rec.Evidence.Note)
		if rec.DetectedAt.Before(due) {
			t.Fatalf("failed at %s, before its next report was overdue (%s): a healthy host's report could still come", rec.DetectedAt, due)
		}
		if late := rec.DetectedAt.Sub(due); late > scale(time.Second) {
			t.Errorf("failed %s after its report was overdue: the leader must wake at that moment, not at a poll", late)
		}
		if rec.Evidence.Verdict != string(leader.VerdictFailed) || rec.Evidence.Source != "gossip+nova" {
			t.Errorf("evidence %+v", rec.Evidence)
		}
	})
	t.Run("dies late in its cycle: failed the moment the mesh declares it dead", func(t *testing.T) {
		t.Parallel()
		mesh := sandbox.NewMesh()
		w := novaDefaultWorld(t, mesh)
		_, seen := w.justReported("c1")
		time.Sleep(time.Until(seen.Add(9 * time.Second)))
		w.Hang("c1") // before its next report, due about 1 s from now
		// The mesh needs a few seconds (fast profile: ~3 s) to declare it
		// dead; by then its report is overdue.
		time.Sleep(3500 * time.Millisecond)
		dead := time.Now()
		mesh.Set("c1", leader.MeshDead, "c2", "c3")
		waitFor(t, 10*time.Second, "c1 judged failed", func() bool { return w.phase("c1") != "" })
		rec := w.FSM().Host("c1")
		took := rec.DetectedAt.Sub(dead)
		t.Logf("mesh verdict → leader's verdict %s: %s", took, rec.Evidence.Note)
		if took > scale(time.Second) {
			t.Errorf("verdict %s after the mesh's: with its report already overdue it must come at once, not one report interval later", took)
		}
	})
}

// TestScenarioLeaderChangeBeforeTheMissedReport: the mesh declares c1 dead
// just after its last report, and the acting leader stops before the next
// report is overdue. The new leader judges c1 by the same rule: not before
// the report is overdue, and then as soon as it leads (not a report
// interval after its own term started); one fence, one evacuation per
// server.
func TestScenarioLeaderChangeBeforeTheMissedReport(t *testing.T) {
	t.Parallel()
	const ri, margin = 6 * time.Second, 2 * time.Second
	mesh := sandbox.NewMesh()
	s := novaDefaultSettings()
	s.NovaReportInterval = ri
	w := newClusterWorld(t, s, 3, true, func(o *sandbox.ClusterOptions) {
		o.Mesh = mesh
		o.Sim.ReportInterval, o.Sim.ServiceDownTime = ri, 60*time.Second
	})
	w.start()
	first, err := w.WaitLeader(context.Background(), scale(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Just after c1's report: its next one is overdue at updated + ri + margin.
	base, _ := w.Sim.Service("c1")
	for deadline := time.Now().Add(scale(2 * ri)); ; time.Sleep(5 * time.Millisecond) {
		if sv, _ := w.Sim.Service("c1"); sv.UpdatedAt.After(base.UpdatedAt) {
			base = sv
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("c1's heartbeat did not advance")
		}
	}
	w.Sim.StopCompute("c1")
	mesh.Set("c1", leader.MeshDead, "c2", "c3")
	due := base.UpdatedAt.Add(ri + margin)
	time.Sleep(300 * time.Millisecond)
	if w.phase("c1") != "" {
		t.Fatalf("c1 judged %s before its report was overdue", w.phase("c1"))
	}
	first.Stop(true) // graceful: leadership moves to a follower now
	var next *sandbox.Member
	waitFor(t, 10*time.Second, "a new leader", func() bool {
		next = w.Leader()
		return next != nil && next != first
	})
	led := time.Now()
	waitFor(t, 20*time.Second, "c1 judged failed by the new leader", func() bool { return w.phase("c1") != "" })
	rec := w.FSM().Host("c1")
	t.Logf("new leader %s at +%s, verdict at +%s (due +%s) after c1's last report: %s", next.ID,
		led.Sub(base.UpdatedAt), rec.DetectedAt.Sub(base.UpdatedAt), due.Sub(base.UpdatedAt), rec.Evidence.Note)
	if rec.DetectedAt.Before(due) {
		t.Fatalf("failed at %s, before its report was overdue (%s)", rec.DetectedAt, due)
	}
	if late := rec.DetectedAt.Sub(maxT(due, led)); late > scale(time.Second) {
		t.Errorf("verdict %s after both the due time and the new leader's start: the new term must not restart the wait", late)
	}
	waitFor(t, 30*time.Second, "c1 recovered", func() bool { return w.phase("c1") == leader.PhaseReenabling || w.phase("c1") == leader.PhaseDone })
	if off, reqs, _ := w.BMC("c1").Counts(); off != 1 || reqs != 1 {
		t.Errorf("c1: %d power-offs from %d requests, want exactly one", off, reqs)
	}
	for _, id := range w.servers {
		if n := w.Sim.ServerCalls(id, novasim.RouteEvacuate); n != 1 {
			t.Errorf("server %s: %d evacuate calls, want 1", id, n)
		}
	}
}

func maxT(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestScenarioRestoreFollowsTheHostBack: at IHA's default POLL (45 s) and
// Nova's defaults, the restore is driven by what announces it, not by the
// poll: the host is powered on seconds after its last rebuild, and
// re-enabled seconds after its nova-compute reports again (the agent's
// return to the mesh wakes the leader, which then looks every second until
// Nova un-forces the service).
func TestScenarioRestoreFollowsTheHostBack(t *testing.T) {
	t.Parallel()
	mesh := sandbox.NewMesh()
	s := novaDefaultSettings()
	s.SmartEvacuation = true
	w := newWorld(t, s, func(o *sandbox.Options) {
		o.Mesh = mesh
		o.Sim.ReportInterval, o.Sim.ServiceDownTime = 10*time.Second, 60*time.Second
		o.Sim.NoStartupDelay, o.Sim.StartupDelay = false, 5*time.Second // Nova's first report 5 s after start
		o.Sim.EvacuationDelay = 2 * time.Second
		o.BootDelay = 2 * time.Second
		o.OnBoot = func(host string) { mesh.Set(host, leader.MeshAlive) } // the agent starts first
		o.TrackInterval = 5 * time.Second                                 // production's tracking cadence
	})
	w.start()
	w.Hang("c1")
	mesh.Set("c1", leader.MeshDead, "c2")
	waitFor(t, 20*time.Second, "c1 recovered and re-enabled", func() bool { return w.phase("c1") == leader.PhaseDone })
	rec := w.FSM().Host("c1")
	var lastDone, poweredOn, enabled time.Time
	for _, sv := range rec.Servers {
		lastDone = maxT(lastDone, sv.FinishedAt)
	}
	for _, st := range rec.Steps {
		switch st.Step {
		case leader.StepPowerOn:
			poweredOn = st.Finished
		case leader.StepEnable:
			enabled = st.Finished
		}
	}
	t.Logf("verdict → last server rebuilt %s, → powered on %s, → re-enabled %s (POLL %s)",
		lastDone.Sub(rec.DetectedAt), poweredOn.Sub(rec.DetectedAt), enabled.Sub(rec.DetectedAt), s.Poll)
	if poweredOn.IsZero() || enabled.IsZero() {
		t.Fatalf("steps %+v", rec.Steps)
	}
	// Power-on: after the rebuilds, within a few follow intervals.
	if d := poweredOn.Sub(lastDone); d < 0 || d > scale(3*time.Second) {
		t.Errorf("powered on %s after the last rebuild, want within seconds (not a POLL)", d)
	}
	// Boot 2 s, gate, startup 5 s to the first report: re-enabled well before POLL.
	if d := enabled.Sub(poweredOn); d > scale(12*time.Second) {
		t.Errorf("re-enabled %s after the power-on, want within seconds of the first report", d)
	}
}

// TestScenarioNovaClockBehind is lab chaos scenario 8 in process: Nova's
// clock runs 30 s behind the leaders'. The leader notices (one
// NovaClockSkew event), judges no healthy host nova-compute-broken, never
// fails a host that is cut from the mesh only and keeps reporting to Nova,
// and still recovers a host that really died, by the same rule on its own
// clock.
func TestScenarioNovaClockBehind(t *testing.T) {
	t.Parallel()
	mesh := sandbox.NewMesh()
	w := newWorld(t, novaDefaultSettings(), func(o *sandbox.Options) {
		o.Mesh = mesh
		o.Sim.ReportInterval, o.Sim.ServiceDownTime = 10*time.Second, 60*time.Second
		o.Sim.ClockOffset = -30 * time.Second
	})
	w.start()
	waitFor(t, 30*time.Second, "the NovaClockSkew event", func() bool { return len(w.events("", leader.EventNovaClockSkew)) > 0 })
	t.Logf("event: %s", w.events("", leader.EventNovaClockSkew)[0].Message)

	// c1 is cut from the mesh only: Nova keeps hearing it.
	mesh.Set("c1", leader.MeshDead, "c2", "c3")
	for end := time.Now().Add(scale(25 * time.Second)); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if p := w.phase("c1"); p != "" {
			t.Fatalf("c1, cut from the mesh only, judged failed (phase %s): %s", p, w.FSM().Host("c1").Evidence.Note)
		}
	}
	if off, _, _ := w.BMC("c1").Counts(); off != 0 {
		t.Fatalf("c1 powered off %d times", off)
	}
	if n := len(w.events("", "NovaComputeBroken")); n != 0 {
		t.Errorf("%d NovaComputeBroken events: healthy hosts judged stale on Nova's clock", n)
	}

	// c2 really dies: failed once its report is overdue on the leader's clock.
	updated, seen := w.justReported("c2")
	w.Hang("c2")
	time.Sleep(3 * time.Second) // the mesh's detection time (fast profile: 2.6–3.5 s)
	mesh.Set("c2", leader.MeshDead, "c3", "c4")
	waitFor(t, 30*time.Second, "c2 judged failed", func() bool { return w.phase("c2") != "" })
	rec := w.FSM().Host("c2")
	took := rec.DetectedAt.Sub(seen)
	t.Logf("c2: verdict %s after its last report was seen (updated_at %s on Nova's clock): %s", took, updated.Format("15:04:05"), rec.Evidence.Note)
	if took < 10*time.Second || took > scale(10*time.Second+2*time.Second+2*time.Second) || rec.Evidence.Verdict != string(leader.VerdictFailed) {
		t.Errorf("verdict %s (%s) after c2's last report, want failed after report interval + margin (12 s) and at most the clock estimate's error more",
			took, rec.Evidence.Verdict)
	}
	if rec.Evidence.NovaClockSkew < 30*time.Second {
		t.Errorf("evidence skew %v", rec.Evidence.NovaClockSkew)
	}
	waitFor(t, 30*time.Second, "c2 recovered", func() bool { return w.phase("c2") == leader.PhaseReenabling || w.phase("c2") == leader.PhaseDone })
	if off, _, _ := w.BMC("c1").Counts(); off != 0 {
		t.Fatalf("c1 powered off %d times", off)
	}
}

// TestScenarioDeadBMCKeepsItsOneRecordWhileNovaStillSaysUp is what the
// lab's watchdog scenario d found (deploy/lab/README.md, issue 17): in
// both mode a host is failed while Nova still reports it up (Nova's state
// turns down only service_down_time after the last report, 60 s by
// default). When its BMC fence fails fast, the record is back in detected
// with Nova still saying up and updated_at younger than DELTA: the next
// poll cycle must not take that for "healthy again before it was fenced"
// and drop the record (HostSkipped), re-judge it at once (a second
// HostDown) and start the fence over; on the watchdog path the wait is
// lost with it and a new leader, which polls on taking over, started the
// BMC's timeout over. Healthy again means the judge no longer fails it:
// the host back in the mesh and reporting to Nova, which the test then
// makes true.
func TestScenarioDeadBMCKeepsItsOneRecordWhileNovaStillSaysUp(t *testing.T) {
	t.Parallel()
	mesh := sandbox.NewMesh()
	s := novaDefaultSettings()
	s.Poll = time.Second // cycles within the window in which Nova still says up
	s.NovaReportInterval = 2 * time.Second
	w := newWorld(t, s, func(o *sandbox.Options) {
		o.Mesh = mesh
		o.Sim.ReportInterval, o.Sim.ServiceDownTime = 2*time.Second, 60*time.Second
	})
	w.start()
	w.BMC("c1").SetFailOff(errors.New("BMC unreachable"))
	w.Hang("c1")
	mesh.Set("c1", leader.MeshDead, "c2", "c3")
	waitFor(t, 20*time.Second, "c1's BMC fence failed", func() bool { return len(w.events("c1", "FencingFailed")) > 0 })
	// Three more poll cycles, all well within DELTA (30 s) of c1's last
	// report and service_down_time (60 s): Nova says up all along.
	time.Sleep(3 * s.Poll)
	if sv, _ := w.Sim.Service("c1"); sv.State != "up" {
		t.Fatalf("Nova says c1 is %q: the scenario needs Nova to still say up", sv.State)
	}
	if n := len(w.events("c1", "HostDown")); n != 1 {
		t.Errorf("%d HostDown events for c1, want its one recovery", n)
	}
	if ev := w.events("c1", "HostSkipped"); len(ev) > 0 {
		t.Errorf("c1's recovery was dropped while the mesh still says it is dead and Nova has not heard it: %+v", ev[0])
	}
	if p := w.phase("c1"); !p.Active() {
		t.Errorf("c1's recovery is %s, want it still under way (waiting for its BMC)", p)
	}

	// The host comes back before anything was done to it (its agent alive
	// in the mesh, nova-compute reporting again): that is healthy again,
	// and the record is let go, once.
	w.Sim.StartCompute("c1")
	mesh.Set("c1", leader.MeshAlive)
	waitFor(t, 20*time.Second, "c1's recovery dropped once it is back", func() bool { return len(w.events("c1", "HostSkipped")) > 0 })
	time.Sleep(3 * s.Poll)
	if n, k := len(w.events("c1", "HostDown")), len(w.events("c1", "HostSkipped")); n != 1 || k != 1 {
		t.Errorf("%d HostDown and %d HostSkipped events for c1, want one each", n, k)
	}
	if off, _, _ := w.BMC("c1").Counts(); off != 0 || w.evacuations() != 0 {
		t.Errorf("c1: %d power-offs, %d evacuations: nothing was to be done", off, w.evacuations())
	}
}
