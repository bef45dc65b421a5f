package leader_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/metrics"
	"github.com/ihaproject/iha/pkg/nova"
	"github.com/ihaproject/iha/pkg/novasim"
	"github.com/ihaproject/iha/pkg/secret"
)

// writeRoutes are novasim's routes that change the cloud.
var writeRoutes = []string{novasim.RouteServiceUpdate, novasim.RouteEvacuate, novasim.RouteLock, novasim.RouteUnlock,
	novasim.RouteResetState, novasim.RouteStop, novasim.RouteStart, novasim.RouteServerCreate, novasim.RouteServerDelete,
	novasim.RouteAggregateAction}

func (w *world) novaWrites() map[string]int {
	out := map[string]int{}
	for _, r := range writeRoutes {
		if n := w.Sim.Calls(r); n > 0 {
			out[r] = n
		}
	}
	return out
}

func (w *world) powerChanges() int {
	n := 0
	for _, h := range w.Hosts() {
		_, off, on := w.BMC(h).Counts()
		n += off + on
	}
	return n
}

func fenceDecision(f *leader.FSM, host string) *leader.ShadowDecision {
	for _, i := range f.Incidents(host, 0) {
		if d := i.Decision(leader.ShadowFence); d != nil {
			return d
		}
	}
	return nil
}

func evacuated(d *leader.ShadowDecision) []string {
	var out []string
	for _, s := range d.Servers {
		if s.Evacuate {
			out = append(out, s.Name)
		}
	}
	sort.Strings(out)
	return out
}

// TestShadowModeDecidesButNeverFencesNorWritesToNova: with SHADOW on, a
// hung compute is judged, admitted and planned as when acting (the same
// servers, tagged ones only), each decision is an event, and neither the
// simulated Nova nor any BMC sees a single change.
func TestShadowModeDecidesButNeverFencesNorWritesToNova(t *testing.T) {
	t.Parallel()
	s := fastSettings()
	s.Shadow = true
	w := newWorld(t, s)
	w.start()
	hungAt := time.Now()
	w.Hang("c1")
	waitFor(t, 20*time.Second, "the shadow decision on c1", func() bool { return fenceDecision(w.FSM(), "c1") != nil })
	d := fenceDecision(w.FSM(), "c1")
	t.Logf("shadow decision %s after the hang: %s", d.At.Sub(hungAt).Round(time.Millisecond), d.Detail)
	if got := strings.Join(evacuated(d), ","); got != "off,vm1,vm2,vm3" {
		t.Errorf("would evacuate %s, want off,vm1,vm2,vm3 (the untagged server stays)", got)
	}
	if d.Verdict != string(leader.VerdictInstanceHA) || d.Level != 2 {
		t.Errorf("decision %+v", d)
	}
	settle()
	if n := w.powerChanges(); n != 0 {
		t.Errorf("%d power changes in shadow mode", n)
	}
	if wr := w.novaWrites(); len(wr) != 0 {
		t.Errorf("Nova writes in shadow mode: %v", wr)
	}
	if svc, _ := w.Sim.Service("c1"); svc.ForcedDown || svc.Status != "enabled" {
		t.Errorf("c1's service changed: %+v", svc)
	}
	if rec := w.FSM().Host("c1"); rec != nil {
		t.Errorf("a recovery record in shadow mode: %+v", rec)
	}
	if ok, why := leader.GateAllows(w.FSM().Host("c1")); !ok {
		t.Errorf("the gate holds c1's nova-compute in shadow mode: %s", why)
	}
	var kinds []string
	for _, e := range w.FSM().Events(0, "c1", 0) {
		kinds = append(kinds, e.Kind)
	}
	if n := strings.Count(strings.Join(kinds, " "), "ShadowWouldFence"); n != 1 {
		t.Errorf("%d ShadowWouldFence events over several cycles, want 1: %v", n, kinds)
	}
	if !slices.Contains(kinds, "ShadowWouldEvacuate") || !slices.Contains(kinds, "ShadowWouldLeave") {
		t.Errorf("events %v", kinds)
	}
	f := w.FSM().OpenIncident("c1").Findings()
	if len(f.Disagreements) != 1 || f.Disagreements[0].Kind != leader.DisagreeOnlyIHA || !strings.Contains(f.Disagreements[0].Message, "so far") {
		t.Errorf("findings with nobody acting: %+v", f)
	}
}

// TestShadowBesideAnActingLeader is the in-process version of the lab's
// shadow scenario: one IHA leader acts, a second one shadows the same
// cloud. The shadow decides the same host, servers and (within a poll)
// time as the acting one, sees each of its actions in Nova, closes the
// incident when the host is back, finds no disagreement, and neither
// writes to Nova nor changes any power state.
func TestShadowBesideAnActingLeader(t *testing.T) {
	t.Parallel()
	w := newWorld(t, fastSettings())
	w.start()
	ss := fastSettings()
	ss.Shadow, ss.NodeName = true, "shadow"
	sec, err := w.StartSecond(context.Background(), sandbox.SecondOptions{Settings: ss, DataDir: t.TempDir(), Logger: testLogger(t).With("leader", "shadow")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sec.Stop)
	w.Hang("c1")
	waitFor(t, 40*time.Second, "c1 recovered by the acting leader and the shadow's incident closed", func() bool {
		incs := sec.Node.FSM().Incidents("c1", 0)
		return w.phase("c1") == leader.PhaseDone && len(incs) == 1 && !incs[0].Open()
	})
	acting := w.FSM().Host("c1")
	inc := sec.Node.FSM().Incidents("c1", 0)[0]
	d := inc.Decision(leader.ShadowFence)
	if d == nil {
		t.Fatalf("the shadow never decided on c1: %+v", inc)
	}
	lag := d.At.Sub(acting.DetectedAt)
	t.Logf("acting verdict %s, shadow decision %s (%+v)", acting.DetectedAt.Format("15:04:05.000"), d.At.Format("15:04:05.000"), lag)
	if lag < -scale(time.Second) || lag > scale(time.Second) {
		t.Errorf("the shadow decided %s from the acting leader (POLL %s)", lag, fastSettings().Poll)
	}
	var actingServers []string
	for _, s := range acting.Servers {
		if s.State != leader.ServerSkipped {
			actingServers = append(actingServers, s.Name)
		}
	}
	sort.Strings(actingServers)
	if got, want := strings.Join(evacuated(d), ","), strings.Join(actingServers, ","); got != want {
		t.Errorf("shadow would evacuate %s, the acting leader evacuated %s", got, want)
	}
	var kinds []string
	for _, o := range inc.Actor {
		kinds = append(kinds, o.Kind)
	}
	for _, k := range []string{leader.ObservedForceDown, leader.ObservedMarker, leader.ObservedEvacuation} {
		if !slices.Contains(kinds, k) {
			t.Errorf("the shadow did not observe %s: %v", k, kinds)
		}
	}
	// The end of the recovery: the complete marker, or (when the acting
	// leader wrote it, unforced and re-enabled between two of the
	// shadow's polls, as it does in about one run in four here) the
	// re-enable. The shadow reads Nova once a poll; it cannot see a row
	// that lived shorter than that.
	if !slices.Contains(kinds, leader.ObservedComplete) && !slices.Contains(kinds, leader.ObservedEnable) {
		t.Errorf("the shadow observed neither the complete marker nor the re-enable: %v", kinds)
	}
	f := inc.Findings()
	if !f.Agree() {
		t.Errorf("the two sides disagree: %+v", f.Disagreements)
	}
	if f.Lead == nil || *f.Lead < -scale(time.Second) || *f.Lead > scale(2*time.Second) {
		t.Errorf("lead %v: the acting leader's first action in Nova should follow its verdict (= the shadow's) by its fence", f.Lead)
	}
	if wr := sec.Nova.Writes(); len(wr) != 0 {
		t.Errorf("the shadow wrote to Nova: %v", wr)
	}
	if pc := sec.Fence.PowerChanges(); len(pc) != 0 {
		t.Errorf("the shadow changed power states: %v", pc)
	}
	if off, _, _ := w.BMC("c1").Counts(); off != 1 {
		t.Errorf("c1 powered off %d times, want 1 (by the acting leader)", off)
	}
}

// TestShadowSwitchedThroughTheAPI: `iha shadow on` is a replicated,
// audited command; while it holds, a failure is decided and shown in
// /v1/incidents, /v1/hosts/H and /metrics, and nothing is touched; `iha
// shadow off` hands the host to the acting workflow at once.
func TestShadowSwitchedThroughTheAPI(t *testing.T) {
	t.Parallel()
	w := newWorld(t, fastSettings())
	w.start()
	backend := leader.NewAPI(leader.APIConfig{Node: w.Node(), Monitor: w.Monitor(), Settings: fastSettings(), Version: "test"})
	t.Cleanup(backend.Close)
	w.SetObserver(backend)
	met := metrics.New(backend.MetricsSource(), "test")
	srv := httptest.NewServer(api.NewServer(api.Config{Backend: backend, Token: secret.New("rw-token"), Metrics: met.Handler()}))
	t.Cleanup(srv.Close)
	cl := &api.Client{Addrs: []string{srv.URL}, Token: "rw-token", Actor: "alice@test"}
	ctx := context.Background()

	res, err := cl.Mutate(ctx, api.MutShadowOn, "", "trying IHA beside InstanceHA")
	if err != nil || res.EventSeq == 0 {
		t.Fatalf("shadow on: %+v %v", res, err)
	}
	c, err := cl.Cluster(ctx, false)
	if err != nil || !c.Shadow || !strings.HasPrefix(c.ShadowBy, "alice@test from ") || c.ShadowReason != "trying IHA beside InstanceHA" || c.Config.ShadowInConfig {
		t.Fatalf("cluster after shadow on: shadow %v by %q reason %q (%v)", c.Shadow, c.ShadowBy, c.ShadowReason, err)
	}
	w.Hang("c1")
	waitFor(t, 20*time.Second, "the shadow decision", func() bool { return fenceDecision(w.FSM(), "c1") != nil })
	incs, err := cl.Incidents(ctx, api.IncidentQuery{Host: "c1"}, false)
	if err != nil || !incs.Shadow || len(incs.Incidents) != 1 || incs.Incidents[0].IHAWhat != "would fence and evacuate" ||
		len(incs.Incidents[0].IHAServers) != 4 || incs.Incidents[0].Agree {
		t.Fatalf("incidents %+v %v", incs, err)
	}
	if _, err := cl.Incidents(ctx, api.IncidentQuery{ID: 99}, false); err == nil || !strings.Contains(err.Error(), "no incident 99") {
		t.Fatalf("an unknown incident: %v", err)
	}
	h, err := cl.Host(ctx, "c1", false)
	if err != nil || h.Incident == nil || h.Incident.ID != incs.Incidents[0].ID || h.Phase != "" {
		t.Fatalf("host c1: incident %+v phase %q %v", h.Incident, h.Phase, err)
	}
	body := scrape(t, srv.URL+"/metrics")
	for _, want := range []string{"iha_shadow_mode 1", "iha_shadow_incidents_open 1", `iha_shadow_decisions_total{kind="ShadowWouldFence"} 1`,
		`iha_shadow_decisions_total{kind="ShadowWouldEvacuate"} 4`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if n := w.powerChanges(); n != 0 {
		t.Fatalf("%d power changes while shadowing", n)
	}

	if _, err := cl.Mutate(ctx, api.MutShadowOff, "", "InstanceHA stopped"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "c1 recovered once shadow mode is off", func() bool { return w.phase("c1") == leader.PhaseDone })
	if off, _, _ := w.BMC("c1").Counts(); off != 1 {
		t.Errorf("c1 powered off %d times, want 1", off)
	}
	var audit []string
	for _, e := range w.FSM().Events(0, "", 0) {
		if e.Kind == "ShadowOn" || e.Kind == "ShadowOff" {
			audit = append(audit, e.Kind+": "+e.Message)
		}
	}
	if len(audit) != 2 || !strings.Contains(audit[0], "alice@test") || !strings.Contains(audit[1], "InstanceHA stopped") {
		t.Errorf("audit %v", audit)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestShadowLaterThanTheActorJudgesTheHostAsItFailed: the other agent
// acts first and has moved the servers off the host before the shadow
// decides (here the shadow's DELTA is longer; on a site, its poll came
// later). The shadow still plans the servers the host carried when it
// failed (found through the other agent's evacuation migrations, a server
// being rebuilt judged by its tags), instead of "no evacuable server".
func TestShadowLaterThanTheActorJudgesTheHostAsItFailed(t *testing.T) {
	t.Parallel()
	// The host stays down a while after the actor powers it on (a real
	// boot takes minutes): long enough for the shadow's DELTA.
	w := newWorld(t, fastSettings(), func(o *sandbox.Options) { o.BootDelay = scale(8 * time.Second) })
	w.start()
	ss := fastSettings()
	ss.Shadow, ss.NodeName, ss.Delta = true, "shadow", 4*time.Second
	sec, err := w.StartSecond(context.Background(), sandbox.SecondOptions{Settings: ss, DataDir: t.TempDir(), Logger: testLogger(t).With("leader", "shadow")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sec.Stop)
	w.Hang("c1")
	waitFor(t, 40*time.Second, "the shadow's decision on c1", func() bool {
		for _, i := range sec.Node.FSM().Incidents("c1", 0) {
			if len(i.IHA) > 0 {
				return true
			}
		}
		return false
	})
	inc := sec.Node.FSM().Incidents("c1", 0)[0]
	d := inc.Decision(leader.ShadowFence)
	if d == nil {
		t.Fatalf("the shadow did not decide to fence c1: %+v", inc.IHA)
	}
	moved := 0
	for _, o := range inc.Actor {
		if o.Kind == leader.ObservedEvacuation && o.Seen.Before(d.At) {
			moved++
		}
	}
	t.Logf("the shadow decided %s after the actor's first action; %d evacuations seen before", d.At.Sub(inc.Actor[0].At).Round(time.Millisecond), moved)
	if moved == 0 {
		t.Fatalf("the actor had moved nothing when the shadow decided: the scenario did not happen (%+v)", inc.Actor)
	}
	if got := strings.Join(evacuated(d), ","); got != "off,vm1,vm2,vm3" {
		t.Errorf("the shadow would evacuate %q, want off,vm1,vm2,vm3 (the servers c1 carried when it failed)", got)
	}
	if f := inc.Findings(); !f.Agree() {
		t.Errorf("the two sides disagree: %+v", f.Disagreements)
	}
	if wr := sec.Nova.Writes(); len(wr) != 0 {
		t.Errorf("the shadow wrote to Nova: %v", wr)
	}
	if pc := sec.Fence.PowerChanges(); len(pc) != 0 {
		t.Errorf("the shadow changed power states: %v", pc)
	}
}

// TestShadowLeaderStartReleasesNoLockAndTakesNothingOver: a shadow leader
// that starts while the other agent is mid-recovery (c1 forced down and
// down, a server under InstanceHA's evacuation lock) unlocks nothing (the
// start of an acting term releases leftover locks: here they are the other
// agent's, in use) and records no takeover (that is the first acting
// term's), yet decides on the orphan as a shadow.
func TestShadowLeaderStartReleasesNoLockAndTakesNothingOver(t *testing.T) {
	t.Parallel()
	s := fastSettings()
	s.Shadow = true
	w := newWorld(t, s)
	w.orphanC1()
	w.Sim.ResetCounters()
	w.start()
	waitFor(t, 20*time.Second, "the shadow's decision on the orphan c1", func() bool {
		incs := w.FSM().Incidents("c1", 0)
		return len(incs) == 1 && len(incs[0].IHA) > 0
	})
	settle()
	if wr := w.novaWrites(); len(wr) != 0 {
		t.Errorf("Nova writes by a shadow leader's start: %v", wr)
	}
	if srv, _ := w.Sim.Server(w.servers["vm1"]); !srv.Locked {
		t.Errorf("vm1's evacuation lock was released by the shadow")
	}
	if at := w.FSM().Settings().TakenOver; !at.IsZero() {
		t.Errorf("a shadow recorded the takeover at %s", at)
	}
	if n := w.powerChanges(); n != 0 {
		t.Errorf("%d power changes", n)
	}
}

// TestShadowOffTakesOverTheOrphansTheOtherAgentLeft is the migration path:
// IHA shadows InstanceHA (SHADOW in its config), InstanceHA crashes
// between its force-down and its disable of c1 and is retired, and the
// operator runs `iha shadow off`. The first acting moment is IHA's
// takeover: the orphan is adopted and recovered, once, and its leftover
// lock released. (The shadow's events used to count as the cluster's
// history, so the takeover recorded "nothing adopted" and c1 stayed
// forced down.)
func TestShadowOffTakesOverTheOrphansTheOtherAgentLeft(t *testing.T) {
	t.Parallel()
	s := fastSettings()
	s.Shadow = true
	w := newWorld(t, s)
	ctx := context.Background()
	w.orphanC1()
	w.start()
	backend := leader.NewAPI(leader.APIConfig{Node: w.Node(), Monitor: w.Monitor(), Settings: s, Version: "test"})
	t.Cleanup(backend.Close)
	srv := httptest.NewServer(api.NewServer(api.Config{Backend: backend, Token: secret.New("rw-token")}))
	t.Cleanup(srv.Close)
	cl := &api.Client{Addrs: []string{srv.URL}, Token: "rw-token", Actor: "alice@test"}
	waitFor(t, 20*time.Second, "the shadow's decision on the orphan c1", func() bool {
		incs := w.FSM().Incidents("c1", 0)
		return len(incs) == 1 && len(incs[0].IHA) > 0
	})
	if len(w.FSM().Events(0, "", 0)) == 0 {
		t.Fatal("the shadow wrote no event: the test would not show that a shadow's history is not acting")
	}
	if _, err := cl.Mutate(ctx, api.MutShadowOff, "", "InstanceHA retired"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 40*time.Second, "the orphan c1 adopted and recovered", func() bool { return w.phase("c1") == leader.PhaseDone })
	rec := w.FSM().Host("c1")
	if !rec.Adopted || rec.Evidence.Source != "orphan" {
		t.Errorf("c1's record: adopted %v, source %q", rec.Adopted, rec.Evidence.Source)
	}
	took := w.events("", "StartupReconciled")
	if len(took) != 1 || !strings.Contains(took[0].Message, "adopted c1") {
		t.Errorf("takeover events %+v", took)
	}
	w.evacuatedOnce("vm1", "vm2", "vm3", "off")
	if srv, _ := w.Sim.Server(w.servers["vm1"]); srv.Locked {
		t.Error("vm1 still under the other agent's evacuation lock")
	}
}

// flipAfterOrphan is the reconciler's store with a hook: flip runs once,
// right after the startup reconciliation's OrphanedHostRecovered event
// commits.
type flipAfterOrphan struct {
	leader.Store
	once sync.Once
	flip atomic.Pointer[func()]
}

func (f *flipAfterOrphan) Apply(ctx context.Context, t leader.CommandType, at time.Time, body any) (any, error) {
	res, err := f.Store.Apply(ctx, t, at, body)
	if ev, ok := body.(leader.EventCmd); ok && ev.Kind == "OrphanedHostRecovered" {
		if fn := f.flip.Load(); fn != nil {
			f.once.Do(*fn)
		}
	}
	return res, err
}

// TestShadowOffDuringTheStartupReconciliationStillTakesOver: `iha shadow
// off` committed while the first term's startup reconciliation is deciding
// (in shadow) on InstanceHA's orphan c1. The takeover must not be recorded
// by that pass (it adopted nothing: its decision on c1 was a shadow's), so
// the first acting pass adopts c1 and recovers it once. (Seen under load:
// the pass recorded the takeover "adopted c1", released the locks, and c1
// stayed forced down for good.)
func TestShadowOffDuringTheStartupReconciliationStillTakesOver(t *testing.T) {
	t.Parallel()
	s := fastSettings()
	s.Shadow = true
	hook := &flipAfterOrphan{}
	w := newWorld(t, s, func(o *sandbox.Options) {
		o.WrapStore = func(st leader.Store) leader.Store { hook.Store = st; return hook }
	})
	ctx := context.Background()
	w.orphanC1()
	// The reconciler starts with the node; the operator's client comes
	// with the API right after. The hook waits for it (holding the
	// reconciliation between its decision on c1 and its takeover record).
	var client atomic.Pointer[api.Client]
	flipped := make(chan error, 1)
	flip := func() {
		for client.Load() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		_, err := client.Load().Mutate(ctx, api.MutShadowOff, "", "InstanceHA retired")
		flipped <- err
	}
	hook.flip.Store(&flip)
	w.start()
	backend := leader.NewAPI(leader.APIConfig{Node: w.Node(), Monitor: w.Monitor(), Settings: s, Version: "test"})
	t.Cleanup(backend.Close)
	srv := httptest.NewServer(api.NewServer(api.Config{Backend: backend, Token: secret.New("rw-token")}))
	t.Cleanup(srv.Close)
	client.Store(&api.Client{Addrs: []string{srv.URL}, Token: "rw-token", Actor: "alice@test"})
	select {
	case err := <-flipped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(scale(20 * time.Second)):
		t.Fatal("the startup reconciliation never decided on the orphan c1: the test did not reach the window it is about")
	}
	waitFor(t, 40*time.Second, "the orphan c1 adopted and recovered", func() bool { return w.phase("c1") == leader.PhaseDone })
	if rec := w.FSM().Host("c1"); !rec.Adopted || rec.Evidence.Source != "orphan" {
		t.Errorf("c1's record: adopted %v, source %q", rec.Adopted, rec.Evidence.Source)
	}
	took := w.events("", "StartupReconciled")
	if len(took) != 1 || !strings.Contains(took[0].Message, "adopted c1") {
		t.Errorf("takeover events %+v", took)
	}
	w.evacuatedOnce("vm1", "vm2", "vm3", "off")
}

// orphanC1 leaves c1 as another agent that stopped mid-recovery does: hung,
// down in Nova, forced down but not disabled, vm1 under the evacuation
// lock.
func (w *world) orphanC1() {
	w.t.Helper()
	ctx := context.Background()
	w.Hang("c1")
	var c1 nova.Service
	waitFor(w.t, 20*time.Second, "c1 down in Nova", func() bool {
		svcs, err := w.Nova.ListServices(ctx, "nova-compute")
		for _, x := range svcs {
			if x.Host == "c1" {
				c1 = x
			}
		}
		return err == nil && c1.State == "down"
	})
	yes := true
	if _, err := w.Nova.UpdateService(ctx, c1.ID, nova.ServiceUpdate{ForcedDown: &yes}); err != nil {
		w.t.Fatal(err)
	}
	if err := w.Nova.Lock(ctx, w.servers["vm1"], leader.LockReason); err != nil {
		w.t.Fatal(err)
	}
}
