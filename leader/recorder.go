package leader

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// Recorder writes a leader's decision log (declog.go): it sees the poll
// cycles (as an Observer), the Nova reads the rules make (Nova), the mesh
// (Mesh) and the decisions committed (Store). Wrapping these four seams,
// it needs nothing of the reconciler's insides, and replay reads the same
// records back into the same reconciler. Safe for concurrent use; it never
// blocks the leader on anything but its own file.
type Recorder struct {
	mu   sync.Mutex
	out  recordSink
	node string

	cfg *config.SettingsRecord
	tag string // EVACUABLE_TAG in force: what the filters keep
	ha  string // HA_ENABLED_INSTANCE_KEY in force

	hosts    []string
	rows     map[string]nova.Service
	mesh     map[string]logMember
	kdump    map[string]KdumpNotice
	hbStart  time.Time
	hb       map[string]time.Time
	answers  map[string]logRecord
	verdicts map[string]Verdict
}

// recordSink is where records go: a decision log file, or memory (replay).
type recordSink interface {
	rotateIfFull()
	consumeFresh() bool
	write(logRecord)
	close() error
}

// OpenRecorder opens (creating) the decision log in o.Dir.
func OpenRecorder(o DecisionLogOptions) (*Recorder, error) {
	l, err := openDecisionLog(o)
	if err != nil {
		return nil, err
	}
	return newRecorder(l, o.Node), nil
}

func newRecorder(out recordSink, node string) *Recorder {
	return &Recorder{out: out, node: node, rows: map[string]nova.Service{}, mesh: map[string]logMember{},
		kdump: map[string]KdumpNotice{}, hb: map[string]time.Time{}, answers: map[string]logRecord{}, verdicts: map[string]Verdict{}}
}

// Close flushes and closes the log.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.close()
}

// begin starts a record under r.mu: a new file gets the configuration and
// the last known state again, so that every file replays alone.
func (r *Recorder) begin() {
	r.out.rotateIfFull()
	if !r.out.consumeFresh() {
		return
	}
	r.hosts, r.rows, r.verdicts = nil, map[string]nova.Service{}, map[string]Verdict{}
	if r.cfg != nil {
		r.out.write(logRecord{Kind: recConfig, T: time.Now().UTC(), Config: r.cfg})
	}
	if len(r.mesh) > 0 {
		var all []logMember
		for _, m := range r.mesh {
			all = append(all, m)
		}
		sort.Slice(all, func(i, j int) bool { return all[i].Host < all[j].Host })
		r.out.write(logRecord{Kind: recMesh, T: time.Now().UTC(), Mesh: all})
	}
	for _, h := range sortedKeys(r.kdump) {
		n := r.kdump[h]
		r.out.write(logRecord{Kind: recKdump, T: n.At, Kdump: &n})
	}
	if !r.hbStart.IsZero() || len(r.hb) > 0 {
		r.out.write(logRecord{Kind: recHB, T: time.Now().UTC(), HBStarted: r.hbStart, HB: maps.Clone(r.hb)})
	}
	for _, k := range sortedKeys(r.answers) {
		r.out.write(r.answers[k])
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Term records the start of a leadership term and the configuration in
// force (call it where each term's reconciler is built).
func (r *Recorder) Term(s config.Settings, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := s.Record()
	r.begin()
	r.cfg, r.tag, r.ha = &rec, s.EvacuableTag, s.HAEnabledInstanceKey
	r.out.write(logRecord{Kind: recConfig, T: at.UTC(), Config: r.cfg})
	r.out.write(logRecord{Kind: recTerm, T: at.UTC(), Node: r.node})
}

// ---- Observer ----

// Observer returns the recorder as the reconciler's observer (give the
// reconciler Observers(api, rec.Observer()) to keep the API's).
func (r *Recorder) Observer() Observer { return recordingObserver{r} }

type recordingObserver struct{ r *Recorder }

var (
	_ EvidenceObserver  = recordingObserver{}
	_ HeartbeatObserver = recordingObserver{}
)

func (o recordingObserver) PollCycle(time.Duration, error, int) {}

// ComputeServices writes a cycle: the rows that changed and every
// updated_at.
func (o recordingObserver) ComputeServices(svcs []nova.Service, at time.Time) {
	r := o.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begin()
	rec := logRecord{Kind: recCycle, T: at.UTC()}
	hosts := make([]string, len(svcs))
	for i, s := range svcs {
		hosts[i] = s.Host
	}
	if !slices.Equal(hosts, r.hosts) {
		rec.Hosts, r.hosts = hosts, hosts
	}
	rows := make(map[string]nova.Service, len(svcs))
	base := at.Truncate(time.Millisecond)
	rec.U = make([]*int64, len(svcs))
	for i, s := range svcs {
		key := s
		key.UpdatedAt = time.Time{}
		rows[s.Host] = key
		if old, ok := r.rows[s.Host]; !ok || old != key {
			rec.Rows = append(rec.Rows, key)
		}
		if !s.UpdatedAt.IsZero() {
			ms := base.Sub(s.UpdatedAt).Milliseconds()
			rec.U[i] = &ms
		}
	}
	r.rows = rows
	r.out.write(rec)
}

// Verdicts writes the verdicts that changed.
func (o recordingObserver) Verdicts(v map[string]Verdict, at time.Time) {
	r := o.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begin()
	changed := map[string]Verdict{}
	for h, x := range v {
		if r.verdicts[h] != x {
			changed[h] = x
		}
	}
	for h := range r.verdicts {
		if _, ok := v[h]; !ok {
			changed[h] = "" // no longer judged (in recovery, in maintenance, gone)
		}
	}
	r.verdicts = make(map[string]Verdict, len(v))
	for h, x := range v {
		r.verdicts[h] = x
	}
	if len(changed) > 0 {
		r.out.write(logRecord{Kind: recVerdicts, T: at.UTC(), Verdicts: changed})
	}
}

// Judgements writes the fence_kdump notices the verdicts saw.
func (o recordingObserver) Judgements(ev map[string]Evidence, at time.Time) {
	r := o.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begin()
	for _, h := range sortedKeys(ev) {
		e := ev[h]
		if e.KdumpAt.IsZero() || r.kdump[h].At.Equal(e.KdumpAt) {
			continue
		}
		n := KdumpNotice{Host: h, From: e.KdumpFrom, At: e.KdumpAt}
		r.kdump[h] = n
		r.out.write(logRecord{Kind: recKdump, T: n.At.UTC(), Kdump: &n})
	}
}

// Heartbeats writes the listener's start and the heartbeats that changed.
func (o recordingObserver) Heartbeats(started time.Time, last map[string]time.Time, at time.Time) {
	r := o.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begin()
	rec := logRecord{Kind: recHB, T: at.UTC()}
	if !started.Equal(r.hbStart) {
		rec.HBStarted, r.hbStart = started.UTC(), started
	}
	for h, t := range last {
		if !r.hb[h].Equal(t) {
			if rec.HB == nil {
				rec.HB = map[string]time.Time{}
			}
			rec.HB[h], r.hb[h] = t.UTC(), t
		}
	}
	if !rec.HBStarted.IsZero() || len(rec.HB) > 0 {
		r.out.write(rec)
	}
}

// Observers fans every observation out to several observers (the status
// API and a recorder).
func Observers(obs ...Observer) Observer { return fanout(obs) }

type fanout []Observer

var (
	_ EvidenceObserver  = fanout(nil)
	_ HeartbeatObserver = fanout(nil)
)

func (f fanout) PollCycle(took time.Duration, err error, n int) {
	for _, o := range f {
		o.PollCycle(took, err, n)
	}
}

func (f fanout) ComputeServices(svcs []nova.Service, at time.Time) {
	for _, o := range f {
		o.ComputeServices(svcs, at)
	}
}

func (f fanout) Verdicts(v map[string]Verdict, at time.Time) {
	for _, o := range f {
		o.Verdicts(v, at)
	}
}

func (f fanout) Heartbeats(started time.Time, last map[string]time.Time, at time.Time) {
	for _, o := range f {
		if h, ok := o.(HeartbeatObserver); ok {
			h.Heartbeats(started, last, at)
		}
	}
}

func (f fanout) Judgements(ev map[string]Evidence, at time.Time) {
	for _, o := range f {
		if e, ok := o.(EvidenceObserver); ok {
			e.Judgements(ev, at)
		}
	}
}

// ---- Mesh ----

// Mesh wraps the mesh view the reconciler judges with (nil: none).
func (r *Recorder) Mesh(m MeshView) MeshView {
	if m == nil {
		return nil
	}
	return recordingMesh{r, m}
}

type recordingMesh struct {
	r *Recorder
	m MeshView
}

// Snapshot writes the members that changed since the last snapshot.
func (m recordingMesh) Snapshot() MeshSnapshot {
	snap := m.m.Snapshot()
	r := m.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begin()
	var changed []logMember
	for h, x := range snap {
		lm := logMember{Host: h, State: x.State, Since: x.Since.UTC(), Accusers: x.Accusers, Confirmations: x.Confirmations}
		if old, ok := r.mesh[h]; !ok || old.State != lm.State || !old.Since.Equal(lm.Since) || old.Confirmations != lm.Confirmations ||
			!slices.Equal(old.Accusers, lm.Accusers) {
			changed = append(changed, lm)
			r.mesh[h] = lm
		}
	}
	for h := range r.mesh {
		if _, ok := snap[h]; !ok {
			changed = append(changed, logMember{Host: h, Gone: true})
			delete(r.mesh, h)
		}
	}
	if len(changed) > 0 {
		sort.Slice(changed, func(i, j int) bool { return changed[i].Host < changed[j].Host })
		r.out.write(logRecord{Kind: recMesh, T: time.Now().UTC(), Mesh: changed})
	}
	return snap
}

// ---- Nova ----

// Nova wraps the reconciler's Nova: the answers of the reads the rules
// use are written when they change (the compute services are the cycles'
// own records).
func (r *Recorder) Nova(n Nova) Nova { return &recordingNova{Nova: n, r: r} }

// Names of the recorded Nova reads.
const (
	callServices   = "services"   // ListServices(binary), key the binary (not nova-compute)
	callServers    = "servers"    // ListServers(host), key the host
	callImages     = "images"     // ListImages
	callImage      = "image"      // GetImage(id), key the id
	callFlavors    = "flavors"    // ListFlavors
	callAggregates = "aggregates" // ListAggregates
	callMigrations = "migrations" // ListMigrations of evacuations from a host, key the host
)

type recordingNova struct {
	Nova
	r *Recorder
}

func (n *recordingNova) answer(call, key string, v any, err error) {
	rec := logRecord{Kind: recNova, Call: call, Key: key}
	if err != nil {
		rec.Err = err.Error()
	} else {
		rec.Value, _ = json.Marshal(v)
	}
	r := n.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begin()
	id := call + "\x00" + key
	if old, ok := r.answers[id]; ok && old.Err == rec.Err && string(old.Value) == string(rec.Value) {
		return
	}
	rec.T = time.Now().UTC()
	r.answers[id] = rec
	r.out.write(rec)
}

func (n *recordingNova) filters() (tag, ha string) {
	n.r.mu.Lock()
	defer n.r.mu.Unlock()
	return n.r.tag, n.r.ha
}

func (n *recordingNova) ListServices(ctx context.Context, binary string) ([]nova.Service, error) {
	s, err := n.Nova.ListServices(ctx, binary)
	if binary != "nova-compute" {
		n.answer(callServices, binary, s, err)
	}
	return s, err
}

func (n *recordingNova) ListServers(ctx context.Context, host string) ([]nova.Server, error) {
	s, err := n.Nova.ListServers(ctx, host)
	tag, ha := n.filters()
	kept := make([]nova.Server, len(s))
	for i, x := range s {
		kept[i] = nova.Server{ID: x.ID, Name: x.Name, Status: x.Status, Host: x.Host, ImageID: x.ImageID,
			FlavorExtraSpecs: tagged(x.FlavorExtraSpecs, tag),
			Metadata:         keep(x.Metadata, RestartPriorityKey, RestartGroupKey, ha)}
	}
	n.answer(callServers, host, kept, err)
	return s, err
}

func (n *recordingNova) ListImages(ctx context.Context) ([]nova.Image, error) {
	s, err := n.Nova.ListImages(ctx)
	tag, _ := n.filters()
	kept := make([]nova.Image, len(s))
	for i, x := range s {
		kept[i] = nova.Image{ID: x.ID, Tags: x.Tags, Properties: tagged(x.Properties, tag)}
	}
	n.answer(callImages, "", kept, err)
	return s, err
}

func (n *recordingNova) GetImage(ctx context.Context, id string) (nova.Image, error) {
	x, err := n.Nova.GetImage(ctx, id)
	tag, _ := n.filters()
	n.answer(callImage, id, nova.Image{ID: x.ID, Tags: x.Tags, Properties: tagged(x.Properties, tag), Hidden: x.Hidden}, err)
	return x, err
}

func (n *recordingNova) ListFlavors(ctx context.Context) ([]nova.Flavor, error) {
	s, err := n.Nova.ListFlavors(ctx)
	tag, _ := n.filters()
	kept := make([]nova.Flavor, len(s))
	for i, x := range s {
		kept[i] = nova.Flavor{ID: x.ID, ExtraSpecs: tagged(x.ExtraSpecs, tag)}
	}
	n.answer(callFlavors, "", kept, err)
	return s, err
}

func (n *recordingNova) ListAggregates(ctx context.Context) ([]nova.Aggregate, error) {
	s, err := n.Nova.ListAggregates(ctx)
	tag, _ := n.filters()
	kept := make([]nova.Aggregate, len(s))
	for i, x := range s {
		md := tagged(x.Metadata, tag)
		for k, v := range x.Metadata {
			if k == MaxFailuresKey || strings.HasPrefix(k, "iha_") {
				if md == nil {
					md = map[string]string{}
				}
				md[k] = v
			}
		}
		kept[i] = nova.Aggregate{ID: x.ID, Name: x.Name, AvailabilityZone: x.AvailabilityZone, Hosts: x.Hosts, Metadata: md}
	}
	n.answer(callAggregates, "", kept, err)
	return s, err
}

func (n *recordingNova) ListMigrations(ctx context.Context, q nova.MigrationQuery) ([]nova.Migration, error) {
	s, err := n.Nova.ListMigrations(ctx, q)
	if q.SourceCompute != "" && q.InstanceUUID == "" {
		n.answer(callMigrations, q.SourceCompute, s, err)
	}
	return s, err
}

// AddHostToAggregate keeps the optional write of the wrapped Nova
// reachable (ADD_RESERVED_HOST_TO_AGGREGATE).
func (n *recordingNova) AddHostToAggregate(ctx context.Context, aggregateID int, host string) error {
	if a, ok := n.Nova.(aggregateAdder); ok {
		return a.AddHostToAggregate(ctx, aggregateID, host)
	}
	return &nova.APIError{Op: "add host to aggregate", Message: "this Nova client cannot add hosts to aggregates"}
}

// tagged keeps the keys of m that contain tag (the ones R6.1 reads).
func tagged(m map[string]string, tag string) map[string]string {
	var out map[string]string
	for k, v := range m {
		if tag != "" && strings.Contains(k, tag) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

func keep(m map[string]string, keys ...string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok && k != "" {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// ---- Store ----

// Store wraps the reconciler's store: each decision committed is written.
func (r *Recorder) Store(s Store) Store { return &recordingStore{Store: s, r: r} }

type recordingStore struct {
	Store
	r *Recorder
}

func (s *recordingStore) Apply(ctx context.Context, t CommandType, at time.Time, body any) (any, error) {
	resp, err := s.Store.Apply(ctx, t, at, body)
	if err != nil {
		return resp, err
	}
	ds := decisionsOf(s.Store.FSM(), t, at, body, resp)
	if len(ds) == 0 {
		return resp, err
	}
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begin()
	for i := range ds {
		r.out.write(logRecord{Kind: recDecision, T: ds[i].At, Decision: &ds[i]})
	}
	return resp, err
}

// decisionsOf maps a committed command to decisions: an acting one
// (detect, plan, complete) or a shadow one, in the one form replay
// compares.
func decisionsOf(f *FSM, t CommandType, at time.Time, body any, resp any) []Decision {
	at = at.UTC()
	switch b := body.(type) {
	case DetectCmd:
		if resp != true {
			return nil
		}
		d := Decision{At: at, Host: b.Host, Kind: ShadowFence, Verdict: b.Evidence.Verdict, Detail: b.Evidence.Note}
		switch {
		case b.Phase == PhaseSkipped:
			d.Kind, d.Verdict, d.Detail = ShadowSkip, "", b.Reason
		case b.Adopted && b.Phase == PhaseReenabling:
			d.Kind, d.Detail = ShadowReenable, b.Evidence.Note
		case b.Adopted:
			d.Kind, d.Detail = ShadowResume, strings.TrimSpace(b.Evidence.Note+" disabled_reason "+b.Evidence.DisabledReason)
		}
		return []Decision{d}
	case PlanCmd:
		d := Decision{At: at, Host: b.Host, Kind: decisionPlan}
		for _, s := range b.Servers {
			if s.State == ServerPending {
				d.Servers = append(d.Servers, s.ID)
			}
		}
		sort.Strings(d.Servers)
		if rec := f.Host(b.Host); rec != nil {
			d.Reserved, d.Targets = rec.ReservedHost, rec.Targets
		}
		return []Decision{d}
	case StepEndCmd:
		if b.Step == StepComplete && b.OK {
			return []Decision{{At: at, Host: b.Host, Kind: ShadowReenable, Detail: "recovery complete: " + b.Detail}}
		}
	case ShadowDecideCmd:
		if resp != true {
			return nil
		}
		sd := b.Decision
		d := Decision{At: at, Host: b.Host, Kind: sd.Kind, Shadow: true, Verdict: sd.Verdict, Detail: sd.Detail}
		if sd.Kind != ShadowFence {
			return []Decision{d}
		}
		p := Decision{At: at, Host: b.Host, Kind: decisionPlan, Shadow: true, Reserved: sd.Reserved, Targets: sd.Targets}
		for _, s := range sd.Servers {
			if s.Evacuate {
				p.Servers = append(p.Servers, s.ID)
			}
		}
		sort.Strings(p.Servers)
		return []Decision{d, p}
	}
	return nil
}
