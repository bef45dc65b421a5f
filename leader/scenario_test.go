package leader_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/novasim"
)

// scale stretches deadlines on a slow or busy machine.
func scale(d time.Duration) time.Duration { return d * 3 }

// fastSettings are InstanceHA's defaults with the clock turned up so that
// a scenario takes seconds (ranges apply to files, not to tests).
func fastSettings() config.Settings {
	s := config.Defaults()
	s.Poll = 200 * time.Millisecond
	s.Delta = 2 * time.Second
	s.FencingTimeout = 2 * time.Second
	s.EvacuationTimeout = 20 * time.Second
	s.EvacuationGrace = 3 * time.Second
	s.TaggedAggregates = false
	s.NodeName = "sandbox"
	return s
}

type world struct {
	*sandbox.Sandbox
	t       *testing.T
	servers map[string]string // name → id
	image   string
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newWorld builds 4 computes; c1 carries 3 tagged ACTIVE servers, one
// tagged SHUTOFF, one untagged.
func newWorld(t *testing.T, s config.Settings, opts ...func(*sandbox.Options)) *world {
	t.Helper()
	o := sandbox.Options{Settings: s, DataDir: t.TempDir(), Logger: testLogger(t),
		Sim: novasim.Options{ReportInterval: time.Second, ServiceDownTime: 3 * time.Second, NoStartupDelay: true,
			EvacuationDelay: 300 * time.Millisecond}}
	for _, f := range opts {
		f(&o)
	}
	sb, err := sandbox.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sb.Close)
	w := &world{Sandbox: sb, t: t, servers: map[string]string{}}
	for i := 1; i <= 4; i++ {
		sb.AddCompute(fmt.Sprintf("c%d", i), "nova")
	}
	sb.Sim.AddScheduler("ctl")
	w.image = sb.Sim.AddImage(novasim.Image{Name: "tagged", Tags: []string{"evacuable"}})
	plain := sb.Sim.AddImage(novasim.Image{Name: "plain"})
	for i := 1; i <= 3; i++ {
		w.servers[fmt.Sprintf("vm%d", i)] = sb.Sim.AddServer(novasim.ServerSpec{Name: fmt.Sprintf("vm%d", i), Host: "c1", ImageID: w.image})
	}
	w.servers["off"] = sb.Sim.AddServer(novasim.ServerSpec{Name: "off", Host: "c1", ImageID: w.image, Status: "SHUTOFF"})
	w.servers["untagged"] = sb.Sim.AddServer(novasim.ServerSpec{Name: "untagged", Host: "c1", ImageID: plain})
	w.servers["elsewhere"] = sb.Sim.AddServer(novasim.ServerSpec{Name: "elsewhere", Host: "c2", ImageID: w.image})
	return w
}

func (w *world) start() {
	w.t.Helper()
	if err := w.StartLeader(context.Background()); err != nil {
		w.t.Fatal(err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(scale(d))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *world) phase(host string) leader.Phase {
	if f := w.FSM(); f != nil {
		if h := f.Host(host); h != nil {
			return h.Phase
		}
	}
	return ""
}

func TestScenarioComputeFailsAndComesBack(t *testing.T) {
	w := newWorld(t, fastSettings())
	w.start()
	failAt := time.Now()
	w.Hang("c1")

	var sawMarker bool
	waitFor(t, 30*time.Second, "c1 evacuated and re-enabled", func() bool {
		if svc, ok := w.Sim.Service("c1"); ok && strings.HasPrefix(svc.DisabledReason, "instanceha evacuation: ") && svc.ForcedDown {
			sawMarker = true
		}
		return w.phase("c1") == leader.PhaseDone
	})
	t.Logf("failure → re-enabled in %s", time.Since(failAt))
	if !sawMarker {
		t.Error("the service was never seen forced down and disabled with InstanceHA's in-progress marker")
	}
	if off, _, _ := w.BMC("c1").Counts(); off != 1 {
		t.Errorf("c1 fenced %d times, want 1", off)
	}
	for _, h := range []string{"c2", "c3", "c4"} {
		if _, reqs, _ := w.BMC(h).Counts(); reqs != 0 {
			t.Errorf("healthy host %s was fenced", h)
		}
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
	if srv, _ := w.Sim.Server(w.servers["off"]); srv.Status != "SHUTOFF" {
		t.Errorf("the SHUTOFF server is %s after evacuation", srv.Status)
	}
	if srv, _ := w.Sim.Server(w.servers["untagged"]); srv.Host != "c1" || w.Sim.ServerCalls(w.servers["untagged"], novasim.RouteEvacuate) != 0 {
		t.Errorf("the untagged server must stay on c1, is on %s", srv.Host)
	}
	svc, _ := w.Sim.Service("c1")
	if svc.ForcedDown || svc.Status != "enabled" {
		t.Errorf("c1 not re-enabled: %+v", svc)
	}
	rec := w.FSM().Host("c1")
	if rec.Fence == nil || rec.Fence.State != "off" {
		t.Errorf("fence result: %+v", rec.Fence)
	}
}
