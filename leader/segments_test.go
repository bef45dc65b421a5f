package leader

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/internal/testlog"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// memStore applies commands to an FSM directly, as a single raft node
// would.
type memStore struct {
	mu    sync.Mutex
	f     *FSM
	index uint64
}

func (m *memStore) Apply(_ context.Context, t CommandType, at time.Time, body any) (any, error) {
	data, err := EncodeCommand(t, at, body)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.index++
	i := m.index
	m.mu.Unlock()
	resp := m.f.Apply(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data})
	if e, ok := resp.(error); ok {
		return nil, e
	}
	return resp, nil
}

func (m *memStore) FSM() *FSM { return m.f }

// segNova is a small Nova: services, servers on hosts, aggregates; enable
// can fail for chosen hosts and evacuate refuses disabled or down targets
// and chosen ones, as Nova's scheduler checks do.
type segNova struct {
	mu        sync.Mutex
	svcs      []nova.Service
	servers   map[string]*nova.Server
	aggs      []nova.Aggregate
	failEna   map[string]bool     // UpdateService(enabled) fails for these hosts
	refuse    map[string]bool     // evacuate to these hosts is refused
	evacuated map[string][]string // server → targets of accepted and refused calls
	added     []string            // "aggregate:host"
}

func newSegNova() *segNova {
	return &segNova{servers: map[string]*nova.Server{}, failEna: map[string]bool{}, refuse: map[string]bool{}, evacuated: map[string][]string{}}
}

func (n *segNova) addService(host, status, state string) {
	n.svcs = append(n.svcs, nova.Service{ID: "svc-" + host, Host: host, Binary: "nova-compute", Status: status, State: state, Zone: "nova"})
}

func (n *segNova) svc(id string) *nova.Service {
	for i := range n.svcs {
		if n.svcs[i].ID == id || n.svcs[i].Host == id {
			return &n.svcs[i]
		}
	}
	return nil
}

func (n *segNova) ListServices(context.Context, string) ([]nova.Service, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.svcs), nil
}
func (n *segNova) ListServicesOnHost(_ context.Context, host, _ string) ([]nova.Service, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.svc(host); s != nil {
		return []nova.Service{*s}, nil
	}
	return nil, nil
}
func (n *segNova) UpdateService(_ context.Context, id string, u nova.ServiceUpdate) (nova.Service, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.svc(id)
	if s == nil {
		return nova.Service{}, &nova.APIError{Op: "update service", StatusCode: 404}
	}
	if u.Status != nil && *u.Status == "enabled" && n.failEna[s.Host] {
		return nova.Service{}, &nova.APIError{Op: "update service " + id, StatusCode: 500, Message: "injected"}
	}
	if u.Status != nil {
		s.Status = *u.Status
		if *u.Status == "enabled" {
			s.DisabledReason = ""
		}
	}
	if u.DisabledReason != nil {
		s.DisabledReason = *u.DisabledReason
	}
	if u.ForcedDown != nil {
		s.ForcedDown = *u.ForcedDown
	}
	return *s, nil
}
func (n *segNova) ListServers(_ context.Context, host string) ([]nova.Server, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []nova.Server
	for _, s := range n.servers {
		if s.Host == host {
			out = append(out, *s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
func (n *segNova) GetServer(_ context.Context, id string) (nova.Server, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.servers[id]; ok {
		return *s, nil
	}
	return nova.Server{}, &nova.APIError{Op: "get server", StatusCode: 404}
}
func (n *segNova) Evacuate(_ context.Context, id, target string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.evacuated[id] = append(n.evacuated[id], target)
	if target != "" {
		s := n.svc(target)
		if s == nil || n.refuse[target] || s.Status != "enabled" || s.State != "up" {
			return &nova.APIError{Op: "evacuate " + id + " to " + target, StatusCode: 400, Message: "target host is disabled, down or refused"}
		}
	} else {
		target = "scheduler-choice"
	}
	n.servers[id].Host = target
	return nil
}
func (n *segNova) Lock(context.Context, string, string) error { return nil }
func (n *segNova) Unlock(context.Context, string) error       { return nil }
func (n *segNova) ResetState(context.Context, string, string) error {
	return nil
}
func (n *segNova) Stop(context.Context, string) error { return nil }
func (n *segNova) ListMigrations(context.Context, nova.MigrationQuery) ([]nova.Migration, error) {
	return nil, nil
}
func (n *segNova) ListAggregates(context.Context) ([]nova.Aggregate, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.aggs), nil
}
func (n *segNova) ListFlavors(context.Context) ([]nova.Flavor, error) { return nil, nil }
func (n *segNova) ListImages(context.Context) ([]nova.Image, error)   { return nil, nil }
func (n *segNova) GetImage(context.Context, string) (nova.Image, error) {
	return nova.Image{}, nova.ErrNotFound
}
func (n *segNova) AddHostToAggregate(_ context.Context, id int, host string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.added = append(n.added, fmt.Sprintf("%d:%s", id, host))
	return nil
}

// segWorld is a failed c1 of segment "seg" (c1, c2, c3, reserved s1, s2)
// with three servers, c4 outside every segment.
type segWorld struct {
	t     *testing.T
	nova  *segNova
	store *memStore
	r     *Reconciler
}

func newSegWorld(t *testing.T, method string, mutate func(*segNova, *config.Settings)) *segWorld {
	t.Helper()
	nv := newSegNova()
	for _, h := range []string{"c1", "c2", "c3", "c4"} {
		nv.addService(h, "enabled", "up")
	}
	nv.svc("c1").State, nv.svc("c1").Status, nv.svc("c1").ForcedDown = "down", "disabled", true
	for _, h := range []string{"s1", "s2"} {
		nv.addService(h, "disabled", "up")
		nv.svc(h).DisabledReason = "reserved"
	}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("vm%d", i)
		nv.servers[id] = &nova.Server{ID: id, Name: id, Host: "c1", Status: "ACTIVE"}
	}
	s := config.Defaults()
	s.TaggedAggregates, s.TaggedImages, s.TaggedFlavors = false, false, false
	s.EvacuationRetries = 2
	s.Segments = config.Segments{Items: []config.Segment{{Name: "seg", RecoveryMethod: method, Enabled: true,
		Hosts: []string{"c1", "c2", "c3", "s1", "s2"}, ReservedHosts: []string{"s1", "s2"}, Source: "test"}}}
	if mutate != nil {
		mutate(nv, &s)
	}
	st := &memStore{f: NewFSM()}
	r := NewReconciler(ReconcilerConfig{Settings: s, Nova: nv, Store: st, RetryBackoff: time.Millisecond, Logger: testLog(t)})
	r.termStart = time.Now()
	w := &segWorld{t: t, nova: nv, store: st, r: r}
	// c1 fenced and disabled: ready to plan.
	ctx := context.Background()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.Apply(ctx, CmdDetect, time.Now(), DetectCmd{Host: "c1", ServiceID: "svc-c1", Level: 2}))
	for _, step := range []string{StepFence, StepDisable} {
		op, err := st.Apply(ctx, CmdStepBegin, time.Now(), StepBeginCmd{Host: "c1", Step: step})
		must(op, err)
		must(st.Apply(ctx, CmdStepEnd, time.Now(), StepEndCmd{Host: "c1", Step: step, OpID: op.(OpID), OK: true,
			Fence: &FenceResult{Method: "ipmi", State: "off"}}))
	}
	return w
}

// run drives c1 from disabled until it is evacuated or failed.
func (w *segWorld) run() *HostRecord {
	w.t.Helper()
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		rec := w.store.f.Host("c1")
		var err error
		switch rec.Phase {
		case PhaseDisabled:
			err = w.r.planStep(ctx, rec)
		case PhaseEvacuating:
			err = w.r.evacuateStep(ctx, rec)
		default:
			return rec
		}
		if err != nil && err != errWait {
			w.t.Fatalf("step in %s: %v", rec.Phase, err)
		}
	}
	w.t.Fatalf("c1 never finished: %+v", w.store.f.Host("c1"))
	return nil
}

func TestSegmentRecoveryMethodsAndFallbacks(t *testing.T) {
	cases := []struct {
		name     string
		method   string
		mutate   func(*segNova, *config.Settings)
		phase    Phase
		used     string   // method in use at the end
		fellBack bool     // fell back to the other method
		reserved string   // reserved host held
		dest     []string // hosts that received servers (sorted, unique)
	}{
		{name: "auto spreads over up and enabled hosts of the segment", method: config.MethodAuto,
			phase: PhaseEvacuated, used: config.MethodAuto, dest: []string{"c2", "c3"}},
		{name: "auto skips a down host", method: config.MethodAuto,
			mutate: func(n *segNova, _ *config.Settings) { n.svc("c2").State = "down" },
			phase:  PhaseEvacuated, used: config.MethodAuto, dest: []string{"c3"}},
		{name: "auto with no target in the segment fails, never leaves it", method: config.MethodAuto,
			mutate: func(n *segNova, _ *config.Settings) { n.svc("c2").Status, n.svc("c3").State = "disabled", "down" },
			phase:  PhaseFailed},
		{name: "auto whose targets refuse fails within the segment", method: config.MethodAuto,
			mutate: func(n *segNova, _ *config.Settings) { n.refuse["c2"], n.refuse["c3"] = true, true },
			phase:  PhaseFailed, used: config.MethodAuto},
		{name: "reserved_host uses the first spare", method: config.MethodReservedHost,
			phase: PhaseEvacuated, used: config.MethodReservedHost, reserved: "s1", dest: []string{"s1"}},
		{name: "reserved_host: first spare fails to enable, the second is used", method: config.MethodReservedHost,
			mutate: func(n *segNova, _ *config.Settings) { n.failEna["s1"] = true },
			phase:  PhaseEvacuated, used: config.MethodReservedHost, reserved: "s2", dest: []string{"s2"}},
		{name: "reserved_host: a spare already enabled is in use, the next one is taken", method: config.MethodReservedHost,
			mutate: func(n *segNova, _ *config.Settings) { n.svc("s1").Status = "enabled" },
			phase:  PhaseEvacuated, used: config.MethodReservedHost, reserved: "s2", dest: []string{"s2"}},
		{name: "reserved_host: evacuation to the first spare fails, the next spare is tried", method: config.MethodReservedHost,
			mutate: func(n *segNova, _ *config.Settings) { n.refuse["s1"] = true },
			phase:  PhaseEvacuated, used: config.MethodReservedHost, reserved: "s2", dest: []string{"s2"}},
		{name: "reserved_host with no usable spare fails", method: config.MethodReservedHost,
			mutate: func(n *segNova, _ *config.Settings) { n.failEna["s1"], n.svc("s2").State = true, "down" },
			phase:  PhaseFailed},
		{name: "auto_priority: no auto target, falls back to a spare", method: config.MethodAutoPriority,
			mutate: func(n *segNova, _ *config.Settings) { n.svc("c2").Status, n.svc("c3").Status = "disabled", "disabled" },
			phase:  PhaseEvacuated, used: config.MethodReservedHost, fellBack: true, reserved: "s1", dest: []string{"s1"}},
		{name: "auto_priority: auto evacuations fail, falls back to a spare", method: config.MethodAutoPriority,
			mutate: func(n *segNova, _ *config.Settings) { n.refuse["c2"], n.refuse["c3"] = true, true },
			phase:  PhaseEvacuated, used: config.MethodReservedHost, fellBack: true, reserved: "s1", dest: []string{"s1"}},
		{name: "auto_priority: auto works, spares untouched", method: config.MethodAutoPriority,
			phase: PhaseEvacuated, used: config.MethodAuto, dest: []string{"c2", "c3"}},
		{name: "rh_priority: spare works", method: config.MethodRHPriority,
			phase: PhaseEvacuated, used: config.MethodReservedHost, reserved: "s1", dest: []string{"s1"}},
		{name: "rh_priority with no spare falls back to auto", method: config.MethodRHPriority,
			mutate: func(n *segNova, _ *config.Settings) { n.failEna["s1"], n.failEna["s2"] = true, true },
			phase:  PhaseEvacuated, used: config.MethodAuto, fellBack: true, dest: []string{"c2", "c3"}},
		{name: "rh_priority: evacuations to every spare fail, falls back to auto", method: config.MethodRHPriority,
			mutate: func(n *segNova, _ *config.Settings) { n.refuse["s1"], n.refuse["s2"] = true, true },
			phase:  PhaseEvacuated, used: config.MethodAuto, fellBack: true, reserved: "s2", dest: []string{"c2", "c3"}},
		{name: "rh_priority: nothing works anywhere, fails within the segment", method: config.MethodRHPriority,
			mutate: func(n *segNova, _ *config.Settings) {
				n.failEna["s1"], n.failEna["s2"] = true, true
				n.refuse["c2"], n.refuse["c3"] = true, true
			},
			phase: PhaseFailed, used: config.MethodAuto, fellBack: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newSegWorld(t, tc.method, tc.mutate)
			rec := w.run()
			if rec.Phase != tc.phase {
				t.Fatalf("phase %s (%s), want %s", rec.Phase, rec.Reason, tc.phase)
			}
			if rec.Method != tc.used || rec.FellBack != tc.fellBack || rec.ReservedHost != tc.reserved {
				t.Errorf("method %q fell back %v reserved %q, want %q %v %q", rec.Method, rec.FellBack, rec.ReservedHost, tc.used, tc.fellBack, tc.reserved)
			}
			if rec.Segment != "seg" || rec.RecoveryMethod != tc.method {
				t.Errorf("segment %q recovery_method %q", rec.Segment, rec.RecoveryMethod)
			}
			dest := map[string]bool{}
			for id, targets := range w.nova.evacuated {
				for _, tg := range targets {
					// Segment boundary: every call names a host of the segment.
					if !slices.Contains([]string{"c2", "c3", "s1", "s2"}, tg) {
						t.Errorf("%s evacuated to %q: outside the segment", id, tg)
					}
				}
				if h := w.nova.servers[id].Host; h != "c1" {
					dest[h] = true
				}
			}
			var got []string
			for h := range dest {
				got = append(got, h)
			}
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(tc.dest, ",") {
				t.Errorf("servers went to %v, want %v", got, tc.dest)
			}
			if tc.phase == PhaseEvacuated {
				for _, s := range rec.Servers {
					if s.State != ServerRequested || s.To == "" || s.StartedAt.IsZero() {
						t.Errorf("server record %+v", s)
					}
				}
			}
			if tc.reserved != "" {
				if s := w.nova.svc(tc.reserved); s.Status != "enabled" || s.DisabledReason != "" {
					t.Errorf("reserved host %s not enabled: %+v", tc.reserved, s)
				}
			}
		})
	}
}

func TestHostInNoSegmentKeepsInstanceHABehaviour(t *testing.T) {
	w := newSegWorld(t, config.MethodReservedHost, func(_ *segNova, s *config.Settings) {
		s.Segments.Items[0].Hosts = []string{"c2", "c3", "s1", "s2"} // c1 is in no segment
		s.ReservedHosts = true                                       // InstanceHA's pool has s1, s2 "reserved"
		s.ForceReservedHostEvacuation = true
	})
	rec := w.run()
	if rec.Phase != PhaseEvacuated || rec.Segment != "" {
		t.Fatalf("record %+v", rec)
	}
	// InstanceHA's pool must not take a segment's spare: no target at all.
	for id, targets := range w.nova.evacuated {
		if len(targets) != 1 || targets[0] != "" {
			t.Errorf("%s evacuated to %q, want the scheduler's choice", id, targets)
		}
	}
	if rec.ReservedHost != "" {
		t.Errorf("a segment's spare %s was used for a host outside the segment", rec.ReservedHost)
	}
}

func TestAddReservedHostToFailedHostsAggregates(t *testing.T) {
	w := newSegWorld(t, config.MethodReservedHost, func(n *segNova, s *config.Settings) {
		s.AddReservedHostToAggregate = true
		n.aggs = []nova.Aggregate{{ID: 7, Name: "fast", Hosts: []string{"c1", "c2"}}, {ID: 8, Name: "other", Hosts: []string{"c3"}},
			{ID: 9, Name: "has-spare", Hosts: []string{"c1", "s1"}}}
	})
	if rec := w.run(); rec.Phase != PhaseEvacuated {
		t.Fatalf("record %+v", rec)
	}
	if strings.Join(w.nova.added, ",") != "7:s1" {
		t.Errorf("aggregates added %v, want only 7:s1", w.nova.added)
	}
}

func TestSegmentAdmissionGate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*segNova, *config.Settings)
		host   string
		seg    string
		why    []string
	}{
		{"host of an enabled segment", nil, "c1", "seg", nil},
		{"host in no segment", nil, "c4", "", nil},
		{"disabled segment: skipped with a reason", func(_ *segNova, s *config.Settings) { s.Segments.Items[0].Enabled = false },
			"c2", "seg", []string{"failover segment seg is disabled"}},
		{"segment from aggregate metadata", func(n *segNova, _ *config.Settings) {
			n.aggs = []nova.Aggregate{{ID: 3, Name: "agg", Hosts: []string{"c4"}, Metadata: map[string]string{config.AggregateSegmentKey: "rack", config.AggregateMethodKey: "auto"}}}
		}, "c4", "rack", nil},
		{"bad aggregate metadata: its hosts are not recovered", func(n *segNova, _ *config.Settings) {
			n.aggs = []nova.Aggregate{{ID: 3, Name: "agg", Hosts: []string{"c4"}, Metadata: map[string]string{config.AggregateSegmentKey: "rack", config.AggregateMethodKey: "quick"}}}
		}, "c4", "", []string{"configuration is invalid", "iha_recovery_method", "\"quick\" is not a recovery method"}},
		{"bad aggregate metadata leaves unnamed hosts alone", func(n *segNova, _ *config.Settings) {
			n.aggs = []nova.Aggregate{{ID: 3, Name: "agg", Hosts: []string{"c4"}, Metadata: map[string]string{config.AggregateSegmentKey: "rack", config.AggregateMethodKey: "quick"}}}
			n.addService("c5", "enabled", "up")
		}, "c5", "", nil},
		{"reserved host not in Nova", func(_ *segNova, s *config.Settings) { s.Segments.Items[0].ReservedHosts = []string{"s1", "ghost"} },
			"c2", "", []string{"configuration is invalid", "segment seg", "ghost"}},
		{"host in an aggregate segment and in a file segment", func(n *segNova, _ *config.Settings) {
			n.aggs = []nova.Aggregate{{ID: 3, Name: "agg", Hosts: []string{"c2"}, Metadata: map[string]string{config.AggregateSegmentKey: "rack", config.AggregateMethodKey: "auto"}}}
		}, "c3", "", []string{"configuration is invalid", "host c2", "two segments"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newSegWorld(t, config.MethodAuto, tc.mutate)
			seg, why := w.r.segmentOf(context.Background(), tc.host, true)
			name := ""
			if seg != nil {
				name = seg.Name
			}
			if name != tc.seg {
				t.Errorf("segment %q, want %q", name, tc.seg)
			}
			if len(tc.why) == 0 && why != "" {
				t.Errorf("reason %q, want none", why)
			}
			for _, want := range tc.why {
				if !strings.Contains(why, want) {
					t.Errorf("reason %q lacks %q", why, want)
				}
			}
			if len(tc.why) > 0 && strings.Contains(tc.why[0], "invalid") {
				var ev *Event
				for _, e := range w.store.f.Events(0, "", 0) {
					if e.Kind == "SegmentConfigInvalid" {
						ev = &e
					}
				}
				if ev == nil || !strings.Contains(ev.Message, tc.why[len(tc.why)-1]) {
					t.Errorf("no SegmentConfigInvalid event naming %q: %+v", tc.why[len(tc.why)-1], ev)
				}
			}
		})
	}
}

func TestParkRecoveredHostUntilMaintenanceOff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		global bool
		seg    *bool
		park   bool
	}{
		{"default: re-enabled", false, nil, false},
		{"RECOVERED_HOST_MAINTENANCE parks", true, nil, true},
		{"segment flag overrides the key (off)", true, ptr(false), false},
		{"segment flag overrides the key (on)", false, ptr(true), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSegWorld(t, config.MethodAuto, func(_ *segNova, s *config.Settings) {
				s.RecoveredHostMaintenance = tc.global
				s.Segments.Items[0].Maintenance = tc.seg
			})
			ctx := context.Background()
			if rec := w.run(); rec.Phase != PhaseEvacuated {
				t.Fatalf("c1 not evacuated: %+v", rec)
			}
			if _, err := w.store.Apply(ctx, CmdPhase, time.Now(), PhaseCmd{Host: "c1", Phase: PhaseReenabling}); err != nil {
				t.Fatal(err)
			}
			rec := w.store.f.Host("c1")
			parked, err := w.r.parkRecovered(ctx, rec)
			if err != nil || parked != tc.park {
				t.Fatalf("parked %v err %v, want %v", parked, err, tc.park)
			}
			if !tc.park {
				return
			}
			rec = w.store.f.Host("c1")
			if _, m := w.store.f.Settings().Maintenance["c1"]; !m || !rec.Parked || rec.Phase != PhaseReenabling {
				t.Fatalf("not parked: %+v", rec)
			}
			// Still parked on the next cycle.
			if parked, _ := w.r.parkRecovered(ctx, rec); !parked {
				t.Error("a parked host in maintenance was let go")
			}
			if _, err := w.store.Apply(ctx, CmdMaintenance, time.Now(), MaintenanceCmd{Host: "c1", On: false, By: "op"}); err != nil {
				t.Fatal(err)
			}
			if parked, _ := w.r.parkRecovered(ctx, w.store.f.Host("c1")); parked {
				t.Error("maintenance off did not release the host")
			}
		})
	}
}

func TestSelectSegmentServersOptIn(t *testing.T) {
	srv := func(id, status string, ha string, image string) nova.Server {
		md := map[string]string{}
		if ha != "" {
			md["HA_Enabled"] = ha
		}
		return nova.Server{ID: id, Name: id, Status: status, ImageID: image, Metadata: md}
	}
	servers := []nova.Server{
		srv("plain", "ACTIVE", "", "untagged"),
		srv("tagged", "ACTIVE", "", "img-evac"),
		srv("ha", "ACTIVE", "True", "untagged"),
		srv("ha-yes", "SHUTOFF", "yes", "untagged"),
		srv("ha-false", "ACTIVE", "false", "img-evac"),
		srv("ha-err", "ERROR", "true", "untagged"),
		srv("err", "ERROR", "", "img-evac"),
		srv("paused", "PAUSED", "true", "img-evac"),
	}
	ix := TagIndex{Tag: "evacuable", Images: map[string]bool{"img-evac": true}}
	cases := []struct {
		name          string
		all, ignore   bool
		tagged        bool
		want          string // pending servers in plan order
		skippedReason map[string]string
	}{
		{name: "Masakari defaults, no tags: opted-in first, the rest after", all: true, want: "ha,ha-yes,ha-err,plain,tagged,ha-false,err"},
		{name: "opted-in only", all: false, want: "ha,ha-yes,ha-err",
			skippedReason: map[string]string{"plain": "EVACUATE_ALL_INSTANCES is false"}},
		{name: "ignore ERROR", all: true, ignore: true, want: "ha,ha-yes,plain,tagged,ha-false",
			skippedReason: map[string]string{"ha-err": "IGNORE_INSTANCES_IN_ERROR_STATE", "err": "IGNORE_INSTANCES_IN_ERROR_STATE"}},
		{name: "with InstanceHA's image tags: opted-in always, others only tagged", all: true, tagged: true, want: "ha,ha-yes,ha-err,tagged,ha-false,err",
			skippedReason: map[string]string{"plain": "image and flavor not tagged", "paused": "status PAUSED"}},
		{name: "tags and opted-in only", all: false, tagged: true, want: "ha,ha-yes,ha-err"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := config.Defaults()
			s.EvacuateAllInstances, s.IgnoreInstancesInErrorState = tc.all, tc.ignore
			s.TaggedImages, s.TaggedFlavors = tc.tagged, false
			plan := ix.SelectSegmentServers(PolicyOf(s), "c1", servers, false)
			var got []string
			for _, r := range plan {
				if r.State == ServerPending {
					got = append(got, r.ID)
				}
				if want, ok := tc.skippedReason[r.ID]; ok && (r.State != ServerSkipped || !strings.Contains(r.Error, want)) {
					t.Errorf("%s: %s %q, want skipped for %q", r.ID, r.State, r.Error, want)
				}
			}
			if strings.Join(got, ",") != tc.want {
				t.Errorf("pending %s, want %s", strings.Join(got, ","), tc.want)
			}
		})
	}
	// A host in no segment is InstanceHA's rule: HA_Enabled is not looked at.
	s := config.Defaults()
	s.TaggedImages, s.TaggedFlavors = true, false
	for _, r := range ix.selectFor(PolicyOf(s), nil, "c1", servers, false) {
		if r.ID == "ha" && r.State != ServerSkipped {
			t.Errorf("outside a segment an untagged HA_Enabled server is evacuated: %+v", r)
		}
	}
}

func TestHAEnabledValues(t *testing.T) {
	for v, want := range map[string]bool{"True": true, "true": true, "YES": true, "1": true, "on": true, "t": true, "y": true,
		"false": false, "0": false, "": false, "enabled": false, "truthy": false} {
		if got := HAEnabled(map[string]string{"HA_Enabled": v}, "HA_Enabled"); got != want {
			t.Errorf("HA_Enabled=%q → %v, want %v", v, got, want)
		}
	}
	if HAEnabled(map[string]string{"HA_Enabled": "true"}, "") {
		t.Error("an empty key opted a server in")
	}
}

func testLog(t *testing.T) *slog.Logger { return testlog.New(t, slog.LevelInfo) }

// The StuckForcedDown report is per episode: a refusal in a later
// re-enable of the same host (same term) does not inherit the earlier
// episode's clock, and a stuck host is reported once.
func TestStuckForcedDownIsReportedOncePerEpisode(t *testing.T) {
	st := &memStore{f: NewFSM()}
	s := config.Defaults()
	s.Delta = time.Second
	r := NewReconciler(ReconcilerConfig{Settings: s, Nova: newSegNova(), Store: st, Logger: testLog(t)})
	ctx := context.Background()
	stuck := func() int {
		n := 0
		for _, e := range st.f.Events(0, "c1", 0) {
			if e.Kind == EventStuckForcedDown {
				n++
			}
		}
		return n
	}
	t0 := time.Unix(1700000000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	// Episode 1: refused, the heartbeat advances, but less than DELTA passes
	// (then an operator un-forces the host by hand: no success is seen here).
	ep1 := &HostRecord{Host: "c1", Phase: PhaseReenabling, PhaseSince: t0}
	svc := nova.Service{Host: "c1", UpdatedAt: t0}
	r.noteUnforceRefused(ctx, ep1, svc, at(0))
	svc.UpdatedAt = at(10 * time.Second)
	r.noteUnforceRefused(ctx, ep1, svc, at(10*time.Second))
	r.noteUnforceRefused(ctx, ep1, svc, at(10*time.Second+500*time.Millisecond))
	if n := stuck(); n != 0 {
		t.Fatalf("reported before the heartbeat advanced for DELTA: %d events", n)
	}

	// Episode 2, an hour later: its first refusal is the normal wait for
	// nova-compute's restart, not a stuck host.
	ep2 := &HostRecord{Host: "c1", Phase: PhaseReenabling, PhaseSince: at(time.Hour)}
	svc.UpdatedAt = at(time.Hour)
	r.noteUnforceRefused(ctx, ep2, svc, at(time.Hour+time.Second))
	if n := stuck(); n != 0 {
		t.Fatalf("a new episode inherited the previous one's clock: %d events", n)
	}
	// It does get stuck: heartbeat advancing, still refused after DELTA.
	svc.UpdatedAt = at(time.Hour + 5*time.Second)
	r.noteUnforceRefused(ctx, ep2, svc, at(time.Hour+5*time.Second))
	r.noteUnforceRefused(ctx, ep2, svc, at(time.Hour+7*time.Second))
	r.noteUnforceRefused(ctx, ep2, svc, at(time.Hour+9*time.Second))
	if n := stuck(); n != 1 {
		t.Fatalf("%d StuckForcedDown events, want 1", n)
	}
}
