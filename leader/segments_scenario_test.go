package leader_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// failEnable makes Nova refuse to enable one host's nova-compute, as a
// spare whose service update fails would.
type failEnable struct {
	leader.Nova
	svcID string
	calls atomic.Int32
}

func (f *failEnable) UpdateService(ctx context.Context, id string, u nova.ServiceUpdate) (nova.Service, error) {
	if id == f.svcID && u.Status != nil && *u.Status == "enabled" {
		f.calls.Add(1)
		return nova.Service{}, &nova.APIError{Op: "update service " + id, StatusCode: 500, Message: "injected: enable fails"}
	}
	return f.Nova.UpdateService(ctx, id, u)
}

// reserve adds a compute disabled as a spare.
func (w *world) reserve(host string) {
	w.t.Helper()
	w.AddCompute(host, "nova")
	svc, _ := w.Sim.Service(host)
	dis, why := "disabled", "reserved spare"
	if _, err := w.Nova.UpdateService(context.Background(), svc.ID, nova.ServiceUpdate{Status: &dis, DisabledReason: &why}); err != nil {
		w.t.Fatal(err)
	}
}

func segmentSettings(method string, hosts, reserved []string) config.Settings {
	s := fastSettings()
	s.Segments = config.Segments{Items: []config.Segment{{Name: "rack-a", RecoveryMethod: method, Enabled: true,
		Hosts: append(slices.Clone(hosts), reserved...), ReservedHosts: reserved, Source: "test"}}}
	return s
}

// evacuatedTo returns where c1's tagged servers went.
func (w *world) evacuatedTo() map[string]string {
	out := map[string]string{}
	for _, name := range []string{"vm1", "vm2", "vm3", "off"} {
		srv, _ := w.Sim.Server(w.servers[name])
		out[name] = srv.Host
	}
	return out
}

func TestScenarioSegmentReservedHostFirstSpareFailsToEnable(t *testing.T) {
	t.Parallel()
	var wrap *failEnable
	s := segmentSettings(config.MethodReservedHost, []string{"c1", "c2"}, []string{"spare1", "spare2"})
	s.SmartEvacuation = true // tracked to the end: the vmoves get their end time
	w := newWorld(t, s, func(o *sandbox.Options) {
		o.WrapNova = func(n leader.Nova) leader.Nova { wrap.Nova = n; return wrap }
	})
	w.reserve("spare1")
	w.reserve("spare2")
	svc, _ := w.Sim.Service("spare1")
	wrap = &failEnable{svcID: svc.ID}
	w.start()
	w.Hang("c1")
	waitFor(t, 40*time.Second, "c1 evacuated to a spare", func() bool {
		p := w.phase("c1")
		return p == leader.PhaseDone || p == leader.PhaseFailed
	})
	rec := w.FSM().Host("c1")
	if rec.Phase == leader.PhaseFailed {
		t.Fatalf("recovery failed: %s", rec.Reason)
	}
	if rec.ReservedHost != "spare2" || rec.Method != config.MethodReservedHost || rec.Segment != "rack-a" {
		t.Fatalf("record: reserved %q method %q segment %q, want spare2 reserved_host rack-a", rec.ReservedHost, rec.Method, rec.Segment)
	}
	if wrap.calls.Load() < 1 {
		t.Error("the first spare was never tried")
	}
	for name, host := range w.evacuatedTo() {
		if host != "spare2" {
			t.Errorf("%s went to %s, want spare2", name, host)
		}
	}
	if svc, _ := w.Sim.Service("spare1"); svc.Status != "disabled" {
		t.Errorf("spare1 is %s, want still disabled", svc.Status)
	}
	if svc, _ := w.Sim.Service("spare2"); svc.Status != "enabled" {
		t.Errorf("spare2 is %s, want enabled", svc.Status)
	}
	var failedStep, okStep bool
	for _, st := range rec.Steps {
		if st.Step == leader.StepReserve && !st.OK && strings.Contains(st.Detail, "spare1") {
			failedStep = true
		}
		if st.Step == leader.StepReserve && st.OK && strings.Contains(st.Detail, "spare2") {
			okStep = true
		}
	}
	if !failedStep || !okStep {
		t.Errorf("steps do not show spare1 failing then spare2: %+v", rec.Steps)
	}
	// vmoves: every evacuated server has source, destination, start and end.
	for _, sr := range rec.Servers {
		if sr.State == leader.ServerSkipped {
			continue
		}
		if sr.From != "c1" || sr.To != "spare2" || sr.StartedAt.IsZero() || sr.FinishedAt.IsZero() || sr.State != leader.ServerDone {
			t.Errorf("server record %+v", sr)
		}
	}
}

func TestScenarioSegmentRHPriorityWithoutSpareFallsBackToAuto(t *testing.T) {
	t.Parallel()
	s := segmentSettings(config.MethodRHPriority, []string{"c1", "c2", "c3"}, nil)
	w := newWorld(t, s)
	w.start()
	w.Hang("c1")
	waitFor(t, 40*time.Second, "c1 recovered", func() bool { return w.phase("c1") == leader.PhaseDone || w.phase("c1") == leader.PhaseFailed })
	rec := w.FSM().Host("c1")
	if rec.Phase != leader.PhaseDone {
		t.Fatalf("phase %s: %s", rec.Phase, rec.Reason)
	}
	if rec.Method != config.MethodAuto || !rec.FellBack || rec.RecoveryMethod != config.MethodRHPriority {
		t.Errorf("method %q fell back %v recovery_method %q", rec.Method, rec.FellBack, rec.RecoveryMethod)
	}
	used := map[string]bool{}
	for name, host := range w.evacuatedTo() {
		if host != "c2" && host != "c3" {
			t.Errorf("%s left the segment: it is on %s", name, host)
		}
		used[host] = true
	}
	if len(used) != 2 {
		t.Errorf("servers not spread over c2 and c3: %v", w.evacuatedTo())
	}
	var fallback bool
	for _, e := range w.FSM().Events(0, "c1", 0) {
		if e.Kind == "RecoveryMethodFallback" && strings.Contains(e.Message, "reserved_host: the segment has no reserved host") {
			fallback = true
		}
	}
	if !fallback {
		t.Errorf("no RecoveryMethodFallback event saying why: %+v", w.FSM().Events(0, "c1", 0))
	}
}

func TestScenarioRecoveredHostParkedUntilMaintenanceOff(t *testing.T) {
	t.Parallel()
	s := segmentSettings(config.MethodAuto, []string{"c1", "c2", "c3"}, nil)
	s.RecoveredHostMaintenance = true
	w := newWorld(t, s)
	w.start()
	w.Hang("c1")
	waitFor(t, 40*time.Second, "c1 parked in maintenance", func() bool {
		h := w.FSM().Host("c1")
		return h != nil && h.Parked
	})
	// The host is powered back on, force-down is lifted and its
	// nova-compute reports up; it stays disabled and in maintenance, cycle
	// after cycle.
	waitFor(t, 30*time.Second, "c1's nova-compute up again", func() bool {
		svc, _ := w.Sim.Service("c1")
		return svc.State == "up"
	})
	settle()
	svc, _ := w.Sim.Service("c1")
	if svc.Status != "disabled" {
		t.Fatalf("a parked host was re-enabled: %+v", svc)
	}
	if p := w.phase("c1"); p != leader.PhaseReenabling {
		t.Fatalf("phase %s, want reenabling (parked)", p)
	}
	if _, m := w.FSM().Settings().Maintenance["c1"]; !m {
		t.Fatal("c1 not in maintenance")
	}
	// A host in maintenance is never a new failure: c2 goes into
	// maintenance and dies; nothing happens to it.
	if _, err := w.Node().Apply(context.Background(), leader.CmdMaintenance, time.Now(), leader.MaintenanceCmd{Host: "c2", On: true, By: "test"}); err != nil {
		t.Fatal(err)
	}
	w.Hang("c2")
	time.Sleep(scale(3 * time.Second))
	if h := w.FSM().Host("c2"); h != nil {
		t.Errorf("a host in maintenance got a record: %+v", h)
	}
	if _, reqs, _ := w.BMC("c2").Counts(); reqs != 0 {
		t.Error("a host in maintenance was fenced")
	}
	// The operator returns c1: re-enable runs.
	if _, err := w.Node().Apply(context.Background(), leader.CmdMaintenance, time.Now(), leader.MaintenanceCmd{Host: "c1", On: false, By: "test"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "c1 re-enabled after maintenance off", func() bool { return w.phase("c1") == leader.PhaseDone })
	if svc, _ := w.Sim.Service("c1"); svc.Status != "enabled" || svc.ForcedDown {
		t.Errorf("c1 after maintenance off: %+v", svc)
	}
}
