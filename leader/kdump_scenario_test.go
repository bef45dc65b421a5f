package leader_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/novasim"
)

// meshSettings: DETECTION_MODE both with a slow POLL and DELTA, so that
// anything decided within a few seconds was decided on the mesh's word.
func meshSettings() config.Settings {
	s := fastSettings()
	s.DetectionMode = "both"
	s.Delta = 20 * time.Second
	s.Poll = 15 * time.Second
	s.NovaReportInterval = time.Second
	s.MeshPartitionPercent = 50
	return s
}

func meshWorld(t *testing.T, s config.Settings, mesh *sandbox.Mesh) *world {
	w := newWorld(t, s, func(o *sandbox.Options) {
		o.Mesh = mesh
		o.Sim.ServiceDownTime = 30 * time.Second
		o.KdumpQuiet = 2 * time.Second
	})
	w.start()
	time.Sleep(500 * time.Millisecond) // the first poll has run; the next is POLL away
	return w
}

func (w *world) stepStarted(host, step string) time.Time {
	if rec := w.FSM().Host(host); rec != nil {
		for _, st := range rec.Steps {
			if st.Step == step {
				return st.Started
			}
		}
	}
	return time.Time{}
}

func (w *world) event(host, kind string) bool {
	for _, e := range w.FSM().Events(0, host, 0) {
		if e.Kind == kind {
			return true
		}
	}
	return false
}

// TestScenarioKdumpNoticeAtArrival: a host that crashed into kdump (its
// agent dead in the mesh, its nova-compute silent) is judged when the notice
// arrives — not at the next poll, not one report interval later — and is
// not powered off, so its dump completes; it is disabled with the (kdump)
// marker and evacuated; it is re-enabled only once it has been quiet for
// the R11.5 period after its last notice.
func TestScenarioKdumpNoticeAtArrival(t *testing.T) {
	t.Parallel()
	s := meshSettings()
	s.CheckKdump = true
	s.KdumpTimeout = 30 * time.Second // long: the notice must make the wait unnecessary
	s.NovaReportInterval = 5 * time.Second
	mesh := sandbox.NewMesh()
	w := meshWorld(t, s, mesh)

	crash := time.Now()
	w.Hang("c1")
	time.Sleep(1100 * time.Millisecond) // Nova's last heartbeat is now before the mesh's death
	mesh.Set("c1", leader.MeshDead, "c2", "c3")
	mesh.Kdump("c1", "127.0.0.11")
	waitFor(t, 10*time.Second, "c1 judged failed on the kdump notice", func() bool { return w.phase("c1") != "" })
	took := time.Since(crash)
	t.Logf("crash → kdump verdict in %s (report interval %s, POLL %s, KDUMP_TIMEOUT %s)", took, s.NovaReportInterval, s.Poll, s.KdumpTimeout)
	if took > 4*time.Second {
		t.Errorf("kdump verdict took %s: it should come at the notice, not after a report interval or a poll", took)
	}
	rec := w.FSM().Host("c1")
	if !rec.Kdump || rec.Evidence.Verdict != string(leader.VerdictKdump) || rec.Evidence.KdumpFrom != "127.0.0.11" {
		t.Errorf("record: kdump %v, evidence %+v", rec.Kdump, rec.Evidence)
	}
	if got := strings.Join(rec.Evidence.Accusers, ","); got != "c2,c3" {
		t.Errorf("accusers %q, want c2,c3", got)
	}
	var marker string
	waitFor(t, 30*time.Second, "c1's servers evacuated", func() bool {
		if svc, ok := w.Sim.Service("c1"); ok && strings.Contains(svc.DisabledReason, "(kdump)") {
			marker = svc.DisabledReason
		}
		r := w.FSM().Host("c1")
		return r != nil && (r.Phase == leader.PhaseReenabling || r.Phase == leader.PhaseDone)
	})
	if marker == "" {
		t.Error("the service was never disabled with the (kdump) marker")
	}
	if off, reqs, on := w.BMC("c1").Counts(); off != 0 || reqs != 0 || on != 0 {
		t.Errorf("a dumping host must not be powered off or on: %d off, %d requests, %d on", off, reqs, on)
	}
	if f := w.FSM().Host("c1").Fence; f == nil || f.Method != "kdump" {
		t.Errorf("fence result %+v", f)
	}
	for _, name := range []string{"vm1", "vm2", "vm3"} {
		if n := w.Sim.ServerCalls(w.servers[name], novasim.RouteEvacuate); n != 1 {
			t.Errorf("%s evacuated %d times, want 1", name, n)
		}
	}
	// The dump goes on for a while (notices every second), then the host
	// reboots by itself: no re-enable before 2 s of quiet after the last one.
	var last time.Time
	for i := 0; i < 3; i++ {
		mesh.Kdump("c1", "127.0.0.11")
		last = time.Now()
		time.Sleep(time.Second)
	}
	w.Sim.StartCompute("c1")
	mesh.Set("c1", leader.MeshAlive)
	waitFor(t, 40*time.Second, "c1 re-enabled", func() bool { return w.phase("c1") == leader.PhaseDone })
	first := w.stepStarted("c1", leader.StepUnforce)
	if first.IsZero() {
		first = w.stepStarted("c1", leader.StepEnable)
	}
	if first.Before(last.Add(2 * time.Second)) {
		t.Errorf("re-enable began %s after the last kdump notice, want at least the 2 s quiet period", first.Sub(last))
	}
}

// TestScenarioKdumpWaitThenFence is R12.3 without InstanceHA's extra POLL:
// a failed host that sends no kdump notice is powered off KDUMP_TIMEOUT
// after it was judged failed (woken at the deadline, not at the next poll);
// one whose notice arrives during the wait is not powered off at all.
func TestScenarioKdumpWaitThenFence(t *testing.T) {
	t.Parallel()
	s := meshSettings()
	s.CheckKdump = true
	s.KdumpTimeout = 5 * time.Second
	mesh := sandbox.NewMesh()
	w := meshWorld(t, s, mesh)

	// c1: no notice ever: fenced after the wait.
	death := time.Now()
	w.Hang("c1")
	mesh.Set("c1", leader.MeshDead)
	// c2's servers: put one there so it is worth recovering.
	w.Sim.AddServer(novasim.ServerSpec{Name: "vm-c2", Host: "c2", ImageID: w.image})
	w.Hang("c2")
	mesh.Set("c2", leader.MeshDead)
	time.Sleep(3 * time.Second) // judged failed (≈ 3 s: report interval + margin); waiting for a notice
	if w.phase("c2") != "" || w.phase("c1") != "" {
		t.Fatalf("recovery began before KDUMP_TIMEOUT: c1 %q c2 %q", w.phase("c1"), w.phase("c2"))
	}
	mesh.Kdump("c2", "127.0.0.12")
	waitFor(t, 20*time.Second, "c1 fenced after the kdump wait", func() bool {
		r := w.FSM().Host("c1")
		return r != nil && r.Fence != nil
	})
	fenced := w.stepStarted("c1", leader.StepFence)
	t.Logf("death → fence intent %s (report interval %s + margin, KDUMP_TIMEOUT %s, POLL %s)", fenced.Sub(death), s.NovaReportInterval, s.KdumpTimeout, s.Poll)
	if d := fenced.Sub(death); d < s.KdumpTimeout {
		t.Errorf("c1 fenced %s after its death, before KDUMP_TIMEOUT %s", d, s.KdumpTimeout)
	}
	if d := fenced.Sub(death); d > s.KdumpTimeout+6*time.Second {
		t.Errorf("c1 fenced %s after its death: the wait should end at its deadline, not at the next poll", d)
	}
	if rec := w.FSM().Host("c1"); rec.Kdump {
		t.Error("c1 sent no notice but is recorded as dumping")
	}
	waitFor(t, 20*time.Second, "c2 recovered as dumping", func() bool {
		r := w.FSM().Host("c2")
		return r != nil && r.Fence != nil
	})
	if rec := w.FSM().Host("c2"); !rec.Kdump || rec.Fence.Method != "kdump" {
		t.Errorf("c2: kdump %v fence %+v", rec.Kdump, rec.Fence)
	}
	if _, reqs, _ := w.BMC("c2").Counts(); reqs != 0 {
		t.Errorf("c2 sent a kdump notice during the wait but got %d power-off requests", reqs)
	}
}

// TestScenarioKdumpNoticeForALiveAgent: a notice for a host whose agent is
// alive is spoofed or mis-mapped: an event, nothing done.
func TestScenarioKdumpNoticeForALiveAgent(t *testing.T) {
	t.Parallel()
	s := meshSettings()
	s.CheckKdump = true
	mesh := sandbox.NewMesh()
	w := meshWorld(t, s, mesh)
	mesh.Kdump("c2", "127.0.0.12")
	waitFor(t, 10*time.Second, "a KdumpNoticeIgnored event", func() bool { return w.event("c2", "KdumpNoticeIgnored") })
	time.Sleep(time.Second)
	if w.phase("c2") != "" || w.fenceRequests() != 0 || w.evacuations() != 0 {
		t.Errorf("a kdump notice for a live agent started something: phase %q", w.phase("c2"))
	}
}

// TestScenarioMeshPartitionGuard: the mesh loses three of four computes at
// once. Only c1 really died; c2 and c3 are cut off from this controller's
// mesh view. The guard makes the dead ones wait for Nova's DELTA rule: c1
// is recovered only once it is stale for DELTA, c2 and c3 are never
// touched, and the operator is told once.
func TestScenarioMeshPartitionGuard(t *testing.T) {
	t.Parallel()
	s := meshSettings()
	s.Delta = 6 * time.Second
	s.Threshold = 100
	s.MeshPartitionPercent = 50
	mesh := sandbox.NewMesh()
	w := meshWorld(t, s, mesh)

	w.Hang("c1")
	hung := time.Now()
	for _, h := range []string{"c1", "c2", "c3"} {
		mesh.Set(h, leader.MeshDead)
	}
	waitFor(t, 10*time.Second, "a MeshPartitionSuspected event", func() bool { return w.event("", "MeshPartitionSuspected") })
	waitFor(t, 30*time.Second, "c1 judged failed by Nova's rule", func() bool { return w.phase("c1") != "" })
	took := time.Since(hung)
	t.Logf("death → verdict %s under the partition guard (DELTA %s; without the guard ≈ report interval + margin)", took, s.Delta)
	if took < s.Delta-time.Second {
		t.Errorf("c1 judged %s after its death, before DELTA %s: the guard did not hold it", took, s.Delta)
	}
	rec := w.FSM().Host("c1")
	if rec.Evidence.Partition == "" || rec.Evidence.Verdict != string(leader.VerdictInstanceHA) {
		t.Errorf("evidence %+v", rec.Evidence)
	}
	waitFor(t, 30*time.Second, "c1 evacuated", func() bool {
		r := w.FSM().Host("c1")
		return r != nil && (r.Phase == leader.PhaseReenabling || r.Phase == leader.PhaseDone)
	})
	for _, h := range []string{"c2", "c3"} {
		if _, reqs, _ := w.BMC(h).Counts(); reqs != 0 || w.phase(h) != "" {
			t.Errorf("%s is alive for Nova and must not be touched (phase %q)", h, w.phase(h))
		}
	}
	n := 0
	for _, e := range w.FSM().Events(0, "", 0) {
		if e.Kind == "MeshPartitionSuspected" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d MeshPartitionSuspected events, want 1 per episode", n)
	}
}

// noDNS is a reverse DNS that knows no address (tests must not depend on
// the machine's resolver).
type noDNS struct{}

func (noDNS) LookupAddr(context.Context, string) ([]string, error) { return nil, nil }

// keepSending records notices every 200 ms, as fence_kdump_send repeats
// them, until the test ends.
func keepSending(t *testing.T, mesh *sandbox.Mesh, notices ...leader.KdumpNotice) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			for _, n := range notices {
				mesh.KdumpNotice(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// TestScenarioKdumpNoticeMustComeFromTheHostItNames is issue 15's kdump
// rule: a notice withholds the power-off only when its source address
// belongs to the host it names (the address the host's agent advertises,
// kdump_hosts on the relaying agent, or reverse DNS) and it came through an
// authenticated channel. c1's notices come from c3's address and over an
// unauthenticated mesh: each is a KdumpNoticeRejected event, and c1 is
// powered off after KDUMP_TIMEOUT like any host that sent none. c2's come
// from its own advertised address: it is recovered without a power-off.
func TestScenarioKdumpNoticeMustComeFromTheHostItNames(t *testing.T) {
	t.Parallel()
	s := meshSettings()
	s.CheckKdump = true
	s.KdumpTimeout = 4 * time.Second
	s.Threshold = 75
	s.MeshPartitionPercent = 75
	mesh := sandbox.NewMesh()
	for i := 1; i <= 4; i++ {
		mesh.SetAddr(fmt.Sprintf("c%d", i), fmt.Sprintf("127.0.0.1%d:7946", i))
	}
	w := newWorld(t, s, func(o *sandbox.Options) {
		o.Mesh = mesh
		o.Sim.ServiceDownTime = 30 * time.Second
		o.KdumpQuiet = 2 * time.Second
		o.Resolver = noDNS{}
	})
	w.Sim.AddServer(novasim.ServerSpec{Name: "vm-c2", Host: "c2", ImageID: w.image})
	w.start()
	time.Sleep(500 * time.Millisecond)

	keepSending(t, mesh,
		leader.KdumpNotice{Host: "c1", From: "127.0.0.13", Via: leader.KdumpViaAgent, Relayer: "c4", MappedBy: leader.KdumpMappedByMesh},
		leader.KdumpNotice{Host: "c1", From: "127.0.0.11", Via: leader.KdumpViaAgent, Relayer: "rogue", MappedBy: leader.KdumpMappedByMesh,
			Untrusted: "relayed over a gossip mesh without GOSSIP_KEYRING"},
		leader.KdumpNotice{Host: "c2", From: "127.0.0.12", Via: leader.KdumpViaAgent, Relayer: "c4", MappedBy: leader.KdumpMappedByMesh})
	death := time.Now()
	w.Hang("c1")
	w.Hang("c2")
	time.Sleep(1100 * time.Millisecond) // Nova's last heartbeats are before the mesh's verdict
	mesh.Set("c1", leader.MeshDead, "c3", "c4")
	mesh.Set("c2", leader.MeshDead, "c3", "c4")

	waitFor(t, 20*time.Second, "c2 recovered as dumping", func() bool {
		r := w.FSM().Host("c2")
		return r != nil && r.Fence != nil
	})
	if rec := w.FSM().Host("c2"); !rec.Kdump || rec.Fence.Method != "kdump" || rec.Evidence.KdumpFrom != "127.0.0.12" {
		t.Errorf("c2: kdump %v, fence %+v, evidence %+v", rec.Kdump, rec.Fence, rec.Evidence)
	}
	waitFor(t, 20*time.Second, "c1 fenced after KDUMP_TIMEOUT", func() bool {
		r := w.FSM().Host("c1")
		return r != nil && r.Fence != nil
	})
	if rec := w.FSM().Host("c1"); rec.Kdump || rec.Fence.Method == "kdump" {
		t.Errorf("c1 was believed to be dumping: kdump %v, fence %+v", rec.Kdump, rec.Fence)
	}
	if d := w.stepStarted("c1", leader.StepFence).Sub(death); d < s.KdumpTimeout {
		t.Errorf("c1 fenced %s after its death, before KDUMP_TIMEOUT %s", d, s.KdumpTimeout)
	}
	if off, _, _ := w.BMC("c1").Counts(); off != 1 {
		t.Errorf("c1 powered off %d times, want 1", off)
	}
	if _, reqs, _ := w.BMC("c2").Counts(); reqs != 0 {
		t.Errorf("c2 was dumping but got %d power-off requests", reqs)
	}
	var why []string
	for _, e := range w.FSM().Events(0, "c1", 0) {
		if e.Kind == leader.EventKdumpNoticeRejected {
			why = append(why, e.Message)
		}
	}
	got := strings.Join(why, "\n")
	for _, want := range []string{"source address 127.0.0.13 does not belong to c1: the mesh says 127.0.0.13 is c3's agent",
		"without GOSSIP_KEYRING"} {
		if !strings.Contains(got, want) {
			t.Errorf("no KdumpNoticeRejected event saying %q; got:\n%s", want, got)
		}
	}
	if len(why) != 2 {
		t.Errorf("%d KdumpNoticeRejected events for c1, want one per source and reason:\n%s", len(why), got)
	}
	for _, e := range w.FSM().Events(0, "c2", 0) {
		if e.Kind == leader.EventKdumpNoticeRejected {
			t.Errorf("c2's notice from its own address was rejected: %s", e.Message)
		}
	}
}

// TestScenarioKdumpHostGateHoldsUntilTheRebuildsFinish: a host fenced by
// kdump (never powered off) reboots by itself when its dump is written. Its
// agent's gate must hold nova-compute until every evacuation from it has
// finished: a source compute that starts mid-rebuild cleans the
// evacuations up half done. (The wait used to guard only the hosts IHA
// powers on and those a watchdog reset; in traditional mode a kdump host's
// gate opened as soon as its evacuations were accepted.)
func TestScenarioKdumpHostGateHoldsUntilTheRebuildsFinish(t *testing.T) {
	t.Parallel()
	s := meshSettings()
	s.CheckKdump = true
	s.KdumpTimeout = 30 * time.Second
	mesh := sandbox.NewMesh()
	w := newWorld(t, s, func(o *sandbox.Options) {
		o.Mesh = mesh
		o.Sim.ServiceDownTime = 30 * time.Second
		o.Sim.EvacuationDelay = 4 * time.Second // rebuilds that take a while
		o.KdumpQuiet = 2 * time.Second
	})
	w.start()
	w.Hang("c1")
	time.Sleep(1100 * time.Millisecond)
	mesh.Set("c1", leader.MeshDead, "c2", "c3")
	mesh.Kdump("c1", "127.0.0.11")
	waitFor(t, 10*time.Second, "c1 judged failed on the kdump notice", func() bool { return w.phase("c1") != "" })
	rebuilding := func() []string {
		var out []string
		for _, name := range []string{"vm1", "vm2", "vm3"} {
			if srv, _ := w.Sim.Server(w.servers[name]); srv.Host == "c1" || srv.TaskState != "" || srv.Status != "ACTIVE" {
				out = append(out, fmt.Sprintf("%s %s/%s on %s", name, srv.Status, srv.TaskState, srv.Host))
			}
		}
		return out
	}
	var opened time.Time
	deadline := time.Now().Add(scale(40 * time.Second))
	for opened.IsZero() {
		rec := w.FSM().Host("c1")
		busy := rebuilding()
		if ok, why := leader.GateAllows(rec); ok {
			if len(busy) > 0 {
				t.Fatalf("the gate opened (%s) while evacuations were still running: %v", why, busy)
			}
			opened = time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gate never opened; phase %s, servers %v", w.phase("c1"), rebuilding())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if off, reqs, on := w.BMC("c1").Counts(); off != 0 || reqs != 0 || on != 0 {
		t.Errorf("a dumping host must not be powered off or on: %d off, %d requests, %d on", off, reqs, on)
	}
}
