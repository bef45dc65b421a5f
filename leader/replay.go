package leader

// Replay runs this build's reconciler over a decision log, offline: the
// same Cycle, verdict table (Judge), admission gates and planning as the
// live leader, in shadow mode (so nothing can act), fed with the recorded
// world instead of Nova, the mesh and the clock. Its decisions are then
// compared with the ones the log recorded: a rule change can be judged
// against last month's incidents before it ships.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// ReplayOptions configure a replay.
type ReplayOptions struct {
	// Settings, when set, replace the configuration the log recorded (iha
	// replay --config); nil replays with the recording's.
	Settings *config.Settings
	// Set overrides keys over the recording's configuration (or Settings):
	// KEY → value as config.yaml writes it (iha replay --set THRESHOLD=20).
	Set    map[string]string
	Logger *slog.Logger
}

// ReplayResult is what a replay found.
type ReplayResult struct {
	Files  []string  `json:"files"`
	From   time.Time `json:"from,omitzero"`
	To     time.Time `json:"to,omitzero"`
	Cycles int       `json:"cycles"`
	Terms  int       `json:"terms"`
	// Config lists the keys whose replayed value differs from the
	// recording's (empty: replayed with the recording's configuration).
	Config []ConfigChange `json:"config_changes"`
	// Recorded and Replayed are the decisions, in time order.
	Recorded []Decision `json:"recorded"`
	Replayed []Decision `json:"replayed"`
	// Rows pair them up: one row per decision of either side.
	Rows []ReplayRow `json:"rows"`
	// Differences counts the rows that differ.
	Differences int `json:"differences"`
	// Missing are the Nova reads the replayed rules made that the log does
	// not hold (answered as failures, as a Nova outage would be).
	Missing []string `json:"missing,omitempty"`
	// Notes: torn last lines, writes the replayed reconciler attempted.
	Notes []string `json:"notes,omitempty"`
}

// ConfigChange is one key the replay runs with another value.
type ConfigChange struct {
	Key      string `json:"key"`
	Recorded string `json:"recorded"`
	Replayed string `json:"replayed"`
}

// ReplayRow is one decision of the recording, of the replay, or both.
type ReplayRow struct {
	Host     string    `json:"host"`
	At       time.Time `json:"at"`
	Kind     string    `json:"kind"`
	Recorded *Decision `json:"recorded,omitempty"`
	Replayed *Decision `json:"replayed,omitempty"`
	// Differs says how (empty: the same decision at the same time).
	Differs string `json:"differs,omitempty"`
	// Why is the sentence the differing decision rests on.
	Why string `json:"why,omitempty"`
}

// Replay reads the decision log files (in the order written) and replays
// them.
func Replay(ctx context.Context, files []string, o ReplayOptions) (*ReplayResult, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(o.Set) > 0 {
		// Checked once before reading anything: a bad key is a usage error,
		// not a note at each term.
		base := config.Defaults()
		if o.Settings != nil {
			base = *o.Settings
		}
		if _, err := base.Override(o.Set); err != nil {
			return nil, err
		}
	}
	e := &replayer{ctx: ctx, opts: o, res: &ReplayResult{Files: files, Config: []ConfigChange{}}, world: newReplayWorld()}
	notes, err := readLog(files, e.record)
	if err != nil {
		return nil, err
	}
	if err := e.flush(); err != nil {
		return nil, err
	}
	e.res.Notes = append(notes, e.res.Notes...)
	e.res.Missing = e.world.missingList()
	if n := e.world.writes(); n > 0 {
		e.res.Notes = append(e.res.Notes, fmt.Sprintf("the replayed reconciler tried %d Nova writes (refused): a bug, shadow mode must never write", n))
	}
	e.res.Replayed = e.mem.decisions()
	e.res.Rows, e.res.Differences = compareDecisions(e.res.Recorded, e.res.Replayed)
	return e.res, nil
}

type replayer struct {
	ctx   context.Context
	opts  ReplayOptions
	res   *ReplayResult
	world *replayWorld

	recorded *config.Settings // the recording's configuration in force
	rec      *Reconciler
	mem      *memRecords
	store    *offlineStore
	clock    time.Time
	started  bool // startupReconcile ran in this term
	pending  bool // a cycle is read and waits for its trailing records
}

func (e *replayer) record(file string, line int, rec logRecord) error {
	w := e.world
	switch rec.Kind {
	case recHeader:
	case recConfig:
		s, err := rec.Config.Settings()
		if err != nil {
			return err
		}
		e.recorded = &s
	case recTerm:
		if err := e.flush(); err != nil {
			return err
		}
		e.newTerm(rec.T)
	case recCycle:
		if err := e.flush(); err != nil {
			return err
		}
		if err := w.cycle(rec); err != nil {
			return err
		}
		if e.rec == nil {
			e.newTerm(rec.T) // a file rotated mid-term starts with a cycle
		}
		e.clock, e.pending = rec.T, true
		e.res.Cycles++
		if e.res.From.IsZero() {
			e.res.From = rec.T
		}
		e.res.To = rec.T
	case recMesh:
		w.meshRecord(rec.Mesh)
	case recKdump:
		if rec.Kdump != nil {
			w.kdump.Record(*rec.Kdump)
		}
	case recHB:
		if !rec.HBStarted.IsZero() {
			w.heartbeats.Started(rec.HBStarted)
		}
		for _, h := range sortedKeys(rec.HB) {
			w.heartbeats.restore(h, rec.HB[h])
		}
	case recNova:
		w.answers[rec.Call+"\x00"+rec.Key] = rec
	case recDecision:
		if rec.Decision != nil {
			d := *rec.Decision
			d.Cycle = e.clock
			e.res.Recorded = append(e.res.Recorded, d)
		}
	case recVerdicts:
		for _, h := range sortedKeys(rec.Verdicts) {
			if v := rec.Verdicts[h]; v != "" && v != VerdictHealthy {
				e.res.Recorded = append(e.res.Recorded, Decision{At: rec.T, Cycle: rec.T, Host: h, Kind: "verdict", Verdict: string(v)})
			}
		}
	default:
		// A record of a newer build: its content is not needed to replay.
	}
	return nil
}

// newTerm starts a fresh reconciler, as a new leader does.
func (e *replayer) newTerm(at time.Time) {
	e.res.Terms++
	s := config.Defaults()
	if e.recorded != nil {
		s = *e.recorded
	}
	if e.opts.Settings != nil {
		s = *e.opts.Settings
	}
	if len(e.opts.Set) > 0 {
		if o, err := s.Override(e.opts.Set); err == nil {
			s = o
		} else {
			e.res.Notes = append(e.res.Notes, "--set over the configuration of the term at "+at.UTC().Format(time.RFC3339)+": "+err.Error())
		}
	}
	if e.recorded != nil && len(e.res.Config) == 0 && (e.opts.Settings != nil || len(e.opts.Set) > 0) {
		e.res.Config = settingsDiff(*e.recorded, s)
	}
	s.Shadow = true // whatever the recording did: the replay never acts
	if e.mem == nil {
		e.mem = &memRecords{}
		e.store = newOfflineStore()
	}
	rec := newRecorder(e.mem, "replay")
	rec.Term(s, at)
	e.clock = at
	e.rec = NewReconciler(ReconcilerConfig{Settings: s, Nova: rec.Nova(e.world), Store: rec.Store(e.store), Logger: e.opts.Logger,
		Now: func() time.Time { return e.clock }, Observer: rec.Observer(), Mesh: e.world, Kdump: e.world.kdump, Heartbeats: e.world.heartbeats,
		TrackInterval: time.Second, InitialTrackDelay: time.Second, FollowInterval: time.Second})
	e.rec.termStart = at
	e.started = false
}

// flush runs the cycle read last, now that its trailing records (the mesh
// it saw, the answers it got, the decisions it took) are in.
func (e *replayer) flush() error {
	if !e.pending {
		return nil
	}
	e.pending = false
	if err := e.ctx.Err(); err != nil {
		return err
	}
	if !e.started {
		e.started = true
		if err := e.rec.startupReconcile(e.ctx); err != nil {
			e.res.Notes = append(e.res.Notes, "startup reconciliation at "+e.clock.UTC().Format(time.RFC3339)+": "+err.Error())
		}
	}
	if err := e.rec.Cycle(e.ctx); err != nil {
		e.res.Notes = append(e.res.Notes, "cycle at "+e.clock.UTC().Format(time.RFC3339Nano)+": "+err.Error())
	}
	return nil
}

// notARule are keys no decision depends on in a replay (it always
// shadows, and writes no log).
var notARule = map[string]bool{"SHADOW": true, "NODE_NAME": true, "DECISION_LOG": true, "DECISION_LOG_MAX_MB": true, "DECISION_LOG_FILES": true}

// settingsDiff lists the keys whose values differ.
func settingsDiff(a, b config.Settings) []ConfigChange {
	ra, rb := a.Record(), b.Record()
	var out []ConfigChange
	for _, k := range config.KeyNames() {
		if notARule[k] {
			continue
		}
		va, oka := ra.Keys[k]
		vb, okb := rb.Keys[k]
		if oka && okb && string(va) != string(vb) {
			out = append(out, ConfigChange{Key: k, Recorded: strings.Trim(string(va), `"`), Replayed: strings.Trim(string(vb), `"`)})
		}
	}
	if ja, _ := json.Marshal(ra.Segments); string(ja) != func() string { jb, _ := json.Marshal(rb.Segments); return string(jb) }() {
		out = append(out, ConfigChange{Key: "segments", Recorded: fmt.Sprintf("%d segments", len(ra.Segments)), Replayed: fmt.Sprintf("%d segments", len(rb.Segments))})
	}
	if out == nil {
		out = []ConfigChange{}
	}
	return out
}

// ---- the recorded world ----

// replayWorld answers the reconciler from the log: Nova (reads only), the
// mesh and the kdump notices.
type replayWorld struct {
	mu    sync.Mutex
	hosts []string
	rows  map[string]nova.Service
	svcs  []nova.Service
	mesh  MeshSnapshot
	kdump *KdumpLog
	// heartbeats are the InstanceHA heartbeats the recording's rules read
	// (CHECK_HEARTBEAT).
	heartbeats *HeartbeatLog
	answers    map[string]logRecord
	missing    map[string]bool
	nwrites    int
}

func newReplayWorld() *replayWorld {
	return &replayWorld{rows: map[string]nova.Service{}, mesh: MeshSnapshot{}, kdump: NewKdumpLog(), heartbeats: NewHeartbeatLog(),
		answers: map[string]logRecord{}, missing: map[string]bool{}}
}

func (w *replayWorld) cycle(rec logRecord) error {
	if rec.Hosts != nil {
		w.hosts = rec.Hosts
	}
	for _, r := range rec.Rows {
		w.rows[r.Host] = r
	}
	if len(rec.U) != len(w.hosts) {
		return fmt.Errorf("cycle at %s has %d heartbeats for %d hosts", rec.T.Format(time.RFC3339), len(rec.U), len(w.hosts))
	}
	base := rec.T.Truncate(time.Millisecond)
	w.svcs = make([]nova.Service, len(w.hosts))
	for i, h := range w.hosts {
		s, ok := w.rows[h]
		if !ok {
			return fmt.Errorf("cycle at %s: host %s has no row", rec.T.Format(time.RFC3339), h)
		}
		if rec.U[i] != nil {
			s.UpdatedAt = base.Add(-time.Duration(*rec.U[i]) * time.Millisecond).UTC()
		}
		w.svcs[i] = s
	}
	return nil
}

func (w *replayWorld) meshRecord(ms []logMember) {
	for _, m := range ms {
		if m.Gone {
			delete(w.mesh, m.Host)
			continue
		}
		w.mesh[m.Host] = MeshMember{Host: m.Host, Node: m.Host, State: m.State, Since: m.Since, Accusers: m.Accusers, Confirmations: m.Confirmations}
	}
}

// Snapshot implements MeshView.
func (w *replayWorld) Snapshot() MeshSnapshot {
	out := make(MeshSnapshot, len(w.mesh))
	for h, m := range w.mesh {
		out[h] = m
	}
	return out
}

func (w *replayWorld) missingList() []string {
	var out []string
	for k := range w.missing {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (w *replayWorld) writes() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nwrites
}

// errNotRecorded answers a read the log does not hold.
func (w *replayWorld) notRecorded(call, key string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	name := call
	if key != "" {
		name += " " + key
	}
	w.missing[name] = true
	return &nova.APIError{Op: "replay " + name, Message: "not in the decision log"}
}

func decodeAnswer[T any](w *replayWorld, call, key string) (T, error) {
	var v T
	w.mu.Lock()
	rec, ok := w.answers[call+"\x00"+key]
	w.mu.Unlock()
	if !ok {
		return v, w.notRecorded(call, key)
	}
	if rec.Err != "" {
		return v, &nova.APIError{Op: "replay " + call, Message: rec.Err}
	}
	if err := json.Unmarshal(rec.Value, &v); err != nil {
		return v, &nova.APIError{Op: "replay " + call, Message: "undecodable answer: " + err.Error()}
	}
	return v, nil
}

func (w *replayWorld) ListServices(_ context.Context, binary string) ([]nova.Service, error) {
	if binary == "nova-compute" {
		return append([]nova.Service(nil), w.svcs...), nil
	}
	return decodeAnswer[[]nova.Service](w, callServices, binary)
}

func (w *replayWorld) ListServicesOnHost(_ context.Context, host, binary string) ([]nova.Service, error) {
	if binary != "nova-compute" {
		return nil, w.notRecorded(callServices, binary+" on "+host)
	}
	var out []nova.Service
	for _, s := range w.svcs {
		if s.Host == host {
			out = append(out, s)
		}
	}
	return out, nil
}

func (w *replayWorld) ListServers(_ context.Context, host string) ([]nova.Server, error) {
	return decodeAnswer[[]nova.Server](w, callServers, host)
}

func (w *replayWorld) ListImages(context.Context) ([]nova.Image, error) {
	return decodeAnswer[[]nova.Image](w, callImages, "")
}

func (w *replayWorld) GetImage(_ context.Context, id string) (nova.Image, error) {
	return decodeAnswer[nova.Image](w, callImage, id)
}

func (w *replayWorld) ListFlavors(context.Context) ([]nova.Flavor, error) {
	return decodeAnswer[[]nova.Flavor](w, callFlavors, "")
}

func (w *replayWorld) ListAggregates(context.Context) ([]nova.Aggregate, error) {
	return decodeAnswer[[]nova.Aggregate](w, callAggregates, "")
}

func (w *replayWorld) ListMigrations(_ context.Context, q nova.MigrationQuery) ([]nova.Migration, error) {
	if q.SourceCompute == "" || q.InstanceUUID != "" {
		return nil, w.notRecorded(callMigrations, "of one server")
	}
	migs, err := decodeAnswer[[]nova.Migration](w, callMigrations, q.SourceCompute)
	if err != nil {
		return nil, err
	}
	out := migs[:0:0]
	for _, m := range migs {
		if q.ChangesSince.IsZero() || !m.UpdatedAt.Before(q.ChangesSince.Truncate(time.Second)) {
			out = append(out, m)
		}
	}
	return out, nil
}

func (w *replayWorld) GetServer(_ context.Context, id string) (nova.Server, error) {
	return nova.Server{}, w.notRecorded("server", id)
}

func (w *replayWorld) refuse(op string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.nwrites++
	return &nova.APIError{Op: "replay " + op, Message: "a replay never writes"}
}

func (w *replayWorld) UpdateService(context.Context, string, nova.ServiceUpdate) (nova.Service, error) {
	return nova.Service{}, w.refuse("update service")
}
func (w *replayWorld) Evacuate(context.Context, string, string) error { return w.refuse("evacuate") }
func (w *replayWorld) Lock(context.Context, string, string) error     { return w.refuse("lock") }
func (w *replayWorld) Unlock(context.Context, string) error           { return w.refuse("unlock") }
func (w *replayWorld) ResetState(context.Context, string, string) error {
	return w.refuse("reset state")
}
func (w *replayWorld) Stop(context.Context, string) error { return w.refuse("stop") }

// ---- an FSM without raft ----

// offlineStore applies commands to an FSM in memory, as raft would.
type offlineStore struct {
	mu    sync.Mutex
	fsm   *FSM
	index uint64
}

func newOfflineStore() *offlineStore { return &offlineStore{fsm: NewFSM()} }

func (m *offlineStore) Apply(_ context.Context, t CommandType, at time.Time, body any) (any, error) {
	data, err := EncodeCommand(t, at, body)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.index++
	idx := m.index
	m.mu.Unlock()
	resp := m.fsm.Apply(&raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data})
	if e, ok := resp.(error); ok {
		return nil, e
	}
	return resp, nil
}

func (m *offlineStore) FSM() *FSM { return m.fsm }

// memRecords keeps the decisions and verdicts a replayed reconciler
// writes.
type memRecords struct {
	mu   sync.Mutex
	recs []logRecord
}

func (m *memRecords) rotateIfFull()      {}
func (m *memRecords) consumeFresh() bool { return false }
func (m *memRecords) close() error       { return nil }
func (m *memRecords) write(rec logRecord) {
	if rec.Kind != recDecision && rec.Kind != recVerdicts {
		return
	}
	m.mu.Lock()
	m.recs = append(m.recs, rec)
	m.mu.Unlock()
}

func (m *memRecords) decisions() []Decision {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Decision
	for _, r := range m.recs {
		switch r.Kind {
		case recDecision:
			d := *r.Decision
			d.Cycle = d.At // the replay's clock stands still during a cycle
			out = append(out, d)
		case recVerdicts:
			for _, h := range sortedKeys(r.Verdicts) {
				if v := r.Verdicts[h]; v != "" && v != VerdictHealthy {
					out = append(out, Decision{At: r.T, Cycle: r.T, Host: h, Kind: "verdict", Verdict: string(v)})
				}
			}
		}
	}
	return out
}

// ---- comparison ----

// timedKinds are the decisions whose time the rules set (verdicts and the
// start of a recovery); a plan or a re-enable follows the workflow, whose
// pace a replay does not reproduce, so only their content is compared.
var timedKinds = map[string]bool{"verdict": true, ShadowFence: true, ShadowSkip: true, ShadowResume: true}

// compareDecisions pairs the n-th decision of a kind on a host in the
// recording with the n-th of the same kind in the replay.
func compareDecisions(recorded, replayed []Decision) ([]ReplayRow, int) {
	type key struct{ host, kind string }
	idx := func(ds []Decision) map[key][]int {
		m := map[key][]int{}
		for i, d := range ds {
			k := key{d.Host, d.Kind}
			m[k] = append(m[k], i)
		}
		return m
	}
	ri, pi := idx(recorded), idx(replayed)
	keys := map[key]bool{}
	for k := range ri {
		keys[k] = true
	}
	for k := range pi {
		keys[k] = true
	}
	var rows []ReplayRow
	diffs := 0
	for k := range keys {
		a, b := ri[k], pi[k]
		for n := 0; n < max(len(a), len(b)); n++ {
			row := ReplayRow{Host: k.host, Kind: k.kind}
			if n < len(a) {
				d := recorded[a[n]]
				row.Recorded, row.At = &d, d.At
			}
			if n < len(b) {
				d := replayed[b[n]]
				row.Replayed = &d
				if row.Recorded == nil {
					row.At = d.At
				}
			}
			row.Differs, row.Why = differs(row.Recorded, row.Replayed)
			if row.Differs != "" {
				diffs++
			}
			rows = append(rows, row)
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if !rows[i].At.Equal(rows[j].At) {
			return rows[i].At.Before(rows[j].At)
		}
		if rows[i].Host != rows[j].Host {
			return rows[i].Host < rows[j].Host
		}
		return rows[i].Kind < rows[j].Kind
	})
	return rows, diffs
}

func differs(a, b *Decision) (string, string) {
	switch {
	case a == nil:
		return "only in the replay", b.Detail + verdictNote(b)
	case b == nil:
		return "only in the recording", "the replayed rules took no " + a.Kind + " decision here"
	}
	var what []string
	if timedKinds[a.Kind] && !a.Cycle.Equal(b.Cycle) {
		what = append(what, fmt.Sprintf("in the cycle of %s instead of %s (%+.3fs)", b.Cycle.UTC().Format("15:04:05.000"), a.Cycle.UTC().Format("15:04:05.000"), b.Cycle.Sub(a.Cycle).Seconds()))
	}
	if a.Verdict != b.Verdict {
		what = append(what, fmt.Sprintf("verdict %s instead of %s", dashIfEmpty(b.Verdict), dashIfEmpty(a.Verdict)))
	}
	if a.Kind == ShadowSkip && a.Detail != b.Detail {
		what = append(what, "another reason")
	}
	if strings.Join(a.Servers, ",") != strings.Join(b.Servers, ",") {
		what = append(what, fmt.Sprintf("servers %s instead of %s", strings.Join(b.Servers, ","), strings.Join(a.Servers, ",")))
	}
	if a.Reserved != b.Reserved || strings.Join(a.Targets, ",") != strings.Join(b.Targets, ",") {
		what = append(what, fmt.Sprintf("targets %s%s instead of %s%s", b.Reserved, strings.Join(b.Targets, ","), a.Reserved, strings.Join(a.Targets, ",")))
	}
	if len(what) == 0 {
		return "", ""
	}
	return strings.Join(what, "; "), b.Detail + verdictNote(b)
}

func verdictNote(d *Decision) string {
	if d.Kind == "verdict" {
		return "verdict " + d.Verdict
	}
	return ""
}
