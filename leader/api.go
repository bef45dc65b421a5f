package leader

// This file adapts the Raft node, its FSM and the leadership monitor to the
// status API (pkg/api.Backend) and to the metrics (pkg/metrics.Source). It
// only reads the replica and commits the operator commands of
// commands.go; it never acts on Nova or a BMC.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/metrics"
	"github.com/ihaproject/iha/pkg/nova"
)

// Observer receives what the reconciler measures that the replicated state
// does not hold. The reconciler calls it from its poll loop; implementations
// must return at once (no I/O). *API implements it.
type Observer interface {
	// PollCycle is called after every poll cycle of Nova: how long it took,
	// its error (nil on success) and how many cycles failed in a row.
	PollCycle(took time.Duration, err error, consecutiveFailures int)
	// ComputeServices is called with the nova-compute services of each
	// successful listing (the slice is not kept: implementations copy).
	ComputeServices(svcs []nova.Service, at time.Time)
	// Verdicts is called after each successful cycle with the verdict table's
	// row for every host it judged (hosts in recovery or maintenance are not
	// judged; the map is not kept).
	Verdicts(v map[string]Verdict, at time.Time)
}

// EvidenceObserver is an Observer that also wants what each verdict rested
// on (`iha host H` for a host that is not in recovery). The reconciler
// builds the evidence only for an observer that implements it; the same
// contract as Observer applies (return at once, the map is not kept).
type EvidenceObserver interface {
	Judgements(ev map[string]Evidence, at time.Time)
}

// HeartbeatObserver is an Observer that also wants, at each cycle with
// CHECK_HEARTBEAT, the InstanceHA heartbeats the rules read: when the
// listener started and when each listed host's last heartbeat came (the
// decision log keeps them so that a replay judges with them).
type HeartbeatObserver interface {
	Heartbeats(started time.Time, last map[string]time.Time, at time.Time)
}

// APIConfig wires an API adapter.
type APIConfig struct {
	Node     *Node
	Monitor  *Monitor // nil: readiness cannot see Nova (tests)
	Settings config.Settings
	Version  string
	// Metrics, when set, receives poll cycles from the Observer calls.
	Metrics *metrics.Metrics
	// MaxContactAge is how long a follower may go without hearing from the
	// leader and still call itself ready (default 10 s).
	MaxContactAge time.Duration
	// MaxApplyLag is how many committed entries a replica may still have to
	// apply and call itself caught up (default 64).
	MaxApplyLag uint64
	Logger      *slog.Logger
	// Mesh, when set, is the gossip mesh this controller is a member of
	// (nil: no mesh; /v1/cluster says so).
	Mesh MeshReporter
	// Security is what /v1/cluster reports of this controller's
	// protections (decided at start).
	Security api.Security
}

// API implements api.Backend, metrics.Source (via MetricsSource) and
// Observer over one node.
type API struct {
	node *Node
	mon  *Monitor
	cfg  APIConfig
	log  *slog.Logger

	obsCh   chan raft.Observation
	obs     *raft.Observer
	stop    chan struct{}
	stopped sync.Once

	mu        sync.Mutex
	services  []nova.Service // last listing seen by this node's reconciler
	servAt    time.Time
	verdicts  map[string]Verdict  // the reconciler's last verdict per host
	judged    map[string]Evidence // … and what each rested on
	judgedAt  time.Time
	failing   map[string]time.Time // voter id → last contact, while its heartbeats fail
	failures  int
	lastPollE error
}

var (
	_ api.Backend      = (*API)(nil)
	_ Observer         = (*API)(nil)
	_ EvidenceObserver = (*API)(nil)
)

// NewAPI builds the adapter. Close releases its Raft observer.
func NewAPI(cfg APIConfig) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxContactAge <= 0 {
		cfg.MaxContactAge = 10 * time.Second
	}
	if cfg.MaxApplyLag == 0 {
		cfg.MaxApplyLag = 64
	}
	a := &API{node: cfg.Node, mon: cfg.Monitor, cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), failing: map[string]time.Time{}}
	// Voter health on the leader: raft reports heartbeats that fail and
	// resume. Non-blocking: a full channel drops observations, never raft.
	a.obsCh = make(chan raft.Observation, 64)
	a.obs = raft.NewObserver(a.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation:
			return true
		}
		return false
	})
	cfg.Node.raft.RegisterObserver(a.obs)
	go a.watch()
	return a
}

// Close stops watching raft.
func (a *API) Close() {
	a.stopped.Do(func() {
		a.node.raft.DeregisterObserver(a.obs)
		close(a.stop)
	})
}

func (a *API) watch() {
	for {
		select {
		case <-a.stop:
			return
		case o := <-a.obsCh:
			a.mu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				a.failing[string(d.PeerID)] = d.LastContact
			case raft.ResumedHeartbeatObservation:
				delete(a.failing, string(d.PeerID))
			case raft.LeaderObservation:
				// A new term: heartbeat failures of the old one are moot.
				a.failing = map[string]time.Time{}
			}
			a.mu.Unlock()
		}
	}
}

// ---- Observer ----

// PollCycle implements Observer.
func (a *API) PollCycle(took time.Duration, err error, consecutiveFailures int) {
	a.mu.Lock()
	a.failures, a.lastPollE = consecutiveFailures, err
	a.mu.Unlock()
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.ObservePoll(took, err, consecutiveFailures)
	}
}

// ComputeServices implements Observer.
func (a *API) ComputeServices(svcs []nova.Service, at time.Time) {
	cp := append([]nova.Service(nil), svcs...)
	a.mu.Lock()
	a.services, a.servAt = cp, at
	a.mu.Unlock()
}

// Verdicts implements Observer.
func (a *API) Verdicts(v map[string]Verdict, _ time.Time) {
	cp := make(map[string]Verdict, len(v))
	for h, x := range v {
		cp[h] = x
	}
	a.mu.Lock()
	a.verdicts = cp
	a.mu.Unlock()
}

// Judgements implements EvidenceObserver.
func (a *API) Judgements(ev map[string]Evidence, at time.Time) {
	cp := make(map[string]Evidence, len(ev))
	for h, e := range ev {
		cp[h] = e
	}
	a.mu.Lock()
	a.judged, a.judgedAt = cp, at
	a.mu.Unlock()
}

// ---- api.Backend ----

// Freshness implements api.Backend.
func (a *API) Freshness() api.Freshness {
	_, lid := a.node.Leader()
	f := api.Freshness{Node: a.node.ID(), Role: a.node.State(), LeaderID: lid, AppliedIndex: a.node.fsm.AppliedIndex()}
	if !a.node.IsLeader() {
		f.LastContact = a.node.raft.LastContact().UTC()
	}
	return f
}

// LeaderAPI implements api.Backend. The address is the one the leader
// recorded at the start of its term; until the current leader has done so
// (a few milliseconds after its election) it is unknown. An address that
// listens on every interface (":7421", "0.0.0.0:7421") is completed with
// the host of the leader's Raft address.
func (a *API) LeaderAPI() (string, bool) {
	if a.node.IsLeader() {
		addr := ""
		if a.mon != nil {
			addr = a.mon.APIAddr
		}
		return addr, true
	}
	raddr, lid := a.node.Leader()
	info := a.node.fsm.LeaderInfo()
	if lid == "" || info.NodeID != lid || info.APIAddr == "" {
		return "", false
	}
	return reachableAddr(info.APIAddr, raddr), false
}

func reachableAddr(apiAddr, raftAddr string) string {
	host, port, err := net.SplitHostPort(apiAddr)
	if err != nil {
		return apiAddr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if rh, _, err := net.SplitHostPort(raftAddr); err == nil && rh != "" {
			return net.JoinHostPort(rh, port)
		}
	}
	return apiAddr
}

// consistentTimeout bounds the leadership check and barrier of a
// consistent read.
const consistentTimeout = 10 * time.Second

// ConsistentRead implements api.Backend through (*Node).ConsistentRead:
// the leader confirms its leadership with a quorum, then waits until every
// committed entry is applied here.
func (a *API) ConsistentRead(ctx context.Context) error {
	if !a.node.IsLeader() {
		return api.ErrNotLeader
	}
	ctx, cancel := context.WithTimeout(ctx, consistentTimeout)
	defer cancel()
	if err := a.node.ConsistentRead(ctx); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return api.ErrNotLeader
		}
		return err
	}
	return nil
}

func statUint(stats map[string]string, k string) uint64 {
	n, _ := strconv.ParseUint(stats[k], 10, 64)
	return n
}

// Cluster implements api.Backend.
func (a *API) Cluster(_ context.Context) (api.Cluster, error) {
	stats := a.node.raft.Stats()
	raddr, lid := a.node.Leader()
	st := a.node.fsm.Settings()
	s := a.cfg.Settings
	c := api.Cluster{
		Version: a.cfg.Version, RaftState: a.node.State(), Term: statUint(stats, "term"),
		CommitIndex: statUint(stats, "commit_index"), Leader: lid,
		Paused: st.Paused || s.Disabled, PausedBy: st.PausedBy, PauseReason: st.PauseReason, Maintenance: st.Maintenance,
		Mesh: a.meshSummary(), Security: a.cfg.Security,
		Config: api.ConfigSummary{DetectionMode: s.DetectionMode, QuickEvacuateLevel: s.QuickEvacuateLevel,
			PollSeconds: int(s.Poll / time.Second), DeltaSeconds: int(s.Delta / time.Second), ThresholdPercent: s.Threshold,
			Workers: s.Workers, SmartEvacuation: s.SmartEvacuation, ReservedHosts: s.ReservedHosts, LeaveDisabled: s.LeaveDisabled,
			DisabledInConfig: s.Disabled},
	}
	if s.Disabled && !st.Paused {
		c.PausedBy, c.PauseReason = "configuration", "DISABLED is set in config.yaml or INSTANCEHA_DISABLED"
	}
	c.Config.ShadowInConfig, c.Shadow = s.Shadow, st.ShadowMode(s.Shadow)
	if c.Shadow {
		c.ShadowBy, c.ShadowReason = st.ShadowBy, st.ShadowReason
		if !st.ShadowSet {
			c.ShadowBy, c.ShadowReason = "configuration", "SHADOW is set in config.yaml"
		}
	}
	if len(c.Maintenance) == 0 {
		c.Maintenance = nil
	}
	c.LeaderAPI, _ = a.LeaderAPI()
	a.mu.Lock()
	failing := make(map[string]time.Time, len(a.failing))
	for k, v := range a.failing {
		failing[k] = v
	}
	a.mu.Unlock()
	if cf := a.node.raft.GetConfiguration(); cf.Error() == nil {
		for _, sv := range cf.Configuration().Servers {
			v := api.Voter{ID: string(sv.ID), Address: string(sv.Address), Leader: string(sv.ID) == lid, Suffrage: sv.Suffrage.String()}
			switch {
			case v.Leader && a.node.IsLeader():
				v.Health = "ok"
			case a.node.IsLeader():
				if t, bad := failing[v.ID]; bad {
					v.Health = "heartbeats failing since last contact " + t.UTC().Format(time.RFC3339)
				} else {
					v.Health = "ok"
				}
			case v.ID == a.node.ID():
				v.Health = "ok"
			case v.Leader && raddr != "":
				v.Health = "ok"
				if age := time.Since(a.node.raft.LastContact()); age > a.cfg.MaxContactAge {
					v.Health = fmt.Sprintf("no contact for %s", age.Round(time.Second))
				}
			default:
				v.Health = "unknown (ask the leader)"
			}
			if v.Leader {
				v.APIAddr = c.LeaderAPI
			}
			c.Voters = append(c.Voters, v)
		}
	}
	if a.node.IsLeader() {
		if r := currentOf(a.mon); r != nil {
			ok := r.Ready()
			c.NovaReady = &ok
			c.LastPoll = r.LastPoll()
		} else {
			no := false
			c.NovaReady = &no
		}
	}
	recs := a.node.fsm.Hosts()
	c.Hosts.ByPhase = map[string]int{}
	for _, h := range recs {
		c.Hosts.Records++
		c.Hosts.ByPhase[string(h.Phase)]++
		if h.Phase.Active() {
			c.Hosts.Active++
		}
		if h.Phase == PhaseFailed {
			c.Hosts.Failed++
		}
	}
	return c, nil
}

// currentOf is Monitor.Current tolerating a nil monitor.
func currentOf(m *Monitor) *Reconciler {
	if m == nil {
		return nil
	}
	return m.Current()
}

// Verdicts of api.HostSummary.
const (
	verdictHealthy     = "healthy"
	verdictDown        = "down" // Nova says down, no verdict of ours (yet)
	verdictRecovering  = "recovering"
	verdictRecovered   = "recovered"
	verdictFailed      = "failed"
	verdictSkipped     = "skipped"
	verdictMaintenance = "maintenance"
	verdictUnknown     = "unknown"
)

// hostView is what the host endpoints read, taken once per request.
type hostView struct {
	leader   bool
	svcs     []nova.Service
	servAt   time.Time
	verdicts map[string]Verdict
	judged   map[string]Evidence
	judgedAt time.Time
	snap     MeshSnapshot
	settings Settings
}

func (a *API) view() hostView {
	v := hostView{leader: a.node.IsLeader(), settings: a.node.fsm.Settings()}
	a.mu.Lock()
	if v.leader {
		// A follower's copies are from a term it led before: stale.
		v.svcs, v.servAt, v.verdicts, v.judged, v.judgedAt = a.services, a.servAt, a.verdicts, a.judged, a.judgedAt
	}
	a.mu.Unlock()
	if a.cfg.Mesh != nil {
		// Every controller is in the mesh: followers show the agents too.
		v.snap = a.cfg.Mesh.Snapshot()
	}
	return v
}

// summaries builds the HostSummary of every host the view and the records
// know (only: of that host alone; the map is then empty if it is unknown).
func (a *API) summaries(v hostView, only string) map[string]*api.HostSummary {
	by := map[string]*api.HostSummary{}
	get := func(h string) *api.HostSummary {
		if s := by[h]; s != nil {
			return s
		}
		s := &api.HostSummary{Host: h, MeshState: "unknown", Verdict: verdictUnknown}
		by[h] = s
		return s
	}
	want := func(h string) bool { return only == "" || h == only }
	for _, sv := range v.svcs {
		if !want(sv.Host) {
			continue
		}
		s := get(sv.Host)
		s.NovaState, s.NovaStatus, s.ForcedDown = sv.State, sv.Status, sv.ForcedDown
		s.Verdict = verdictHealthy
		if sv.State == "down" {
			s.Verdict = verdictDown
		}
		// The verdict table's row, when it says more than "healthy":
		// nova-compute broken on a live host, waiting for a witness, …
		if vd, ok := v.verdicts[sv.Host]; ok && vd != VerdictHealthy {
			s.Verdict = string(vd)
		}
	}
	for h, m := range v.snap {
		if want(h) {
			s := get(h)
			s.MeshState = m.State
			if m.State == MeshContested {
				s.Reason = "claimed by " + strings.Join(m.Claimants, ", ") + ": judged by Nova's rule alone"
			}
		}
	}
	for h, why := range v.settings.Maintenance {
		if !want(h) {
			continue
		}
		s := get(h)
		s.Maintenance = why
		if why == "" {
			s.Maintenance = "(no reason given)"
		}
		s.Verdict = verdictMaintenance
	}
	for _, i := range a.node.fsm.Incidents(only, 0) {
		if i.Open() {
			get(i.Host).Shadow = shadowSummary(i)
		}
	}
	var recs []*HostRecord
	if only == "" {
		recs = a.node.fsm.Hosts()
	} else if rec := a.node.fsm.Host(only); rec != nil {
		recs = []*HostRecord{rec}
	}
	for _, rec := range recs {
		s := get(rec.Host)
		s.Phase, s.Since, s.Reason = string(rec.Phase), rec.PhaseSince.UTC(), rec.Reason
		if s.NovaState == "" {
			s.NovaState = rec.Evidence.NovaState
		}
		switch {
		case rec.Phase.Active():
			s.Verdict = verdictRecovering
		case rec.Phase == PhaseFailed:
			s.Verdict = verdictFailed
		case rec.Phase == PhaseSkipped:
			s.Verdict = verdictSkipped
		case rec.Phase == PhaseDone && s.Verdict != verdictMaintenance:
			s.Verdict = verdictRecovered
		}
		for _, sr := range rec.Servers {
			if sr.State == ServerSkipped {
				continue
			}
			s.Servers++
			if sr.State == ServerDone {
				s.ServersDone++
			}
		}
	}
	return by
}

// Hosts implements api.Backend: every compute the leader's last poll saw
// (on a follower: none), every host the mesh knows, every host with a
// recovery record, and every host in maintenance.
func (a *API) Hosts(_ context.Context) ([]api.HostSummary, error) {
	by := a.summaries(a.view(), "")
	out := make([]api.HostSummary, 0, len(by))
	for _, s := range by {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out, nil
}

// Host implements api.Backend: any host that Hosts lists, with what Nova
// (on the leader), the mesh and the leader's last verdict say of it, and
// its recovery record if it has one. ErrNotFound for any other host.
func (a *API) Host(_ context.Context, host string) (api.Host, error) {
	v := a.view()
	sum := a.summaries(v, host)[host]
	if sum == nil {
		return api.Host{}, api.ErrNotFound
	}
	h := api.Host{Host: host, Verdict: sum.Verdict, Steps: []api.Step{}, Servers: []api.Instance{}}
	for _, sv := range v.svcs {
		if sv.Host == host {
			h.Nova = &api.NovaService{ID: sv.ID, Zone: sv.Zone, State: sv.State, Status: sv.Status, ForcedDown: sv.ForcedDown,
				DisabledReason: sv.DisabledReason, UpdatedAt: sv.UpdatedAt.UTC(), ListedAt: v.servAt.UTC()}
			h.Zone, h.ServiceID = sv.Zone, sv.ID
		}
	}
	if m, ok := v.snap[host]; ok {
		h.Mesh = &api.MeshMember{State: m.State, Since: m.Since.UTC(), Node: m.Node, Addr: m.Addr,
			Accusers: m.Accusers, Confirmations: m.Confirmations}
	}
	if ev, ok := v.judged[host]; ok {
		e := toAPIEvidence(ev, false, false)
		h.Judged, h.JudgedAt = &e, v.judgedAt.UTC()
	}
	h.Incident = a.latestIncident(host)
	h.Watchdog = watchdogView(a.node.fsm.Lease(host), a.node.fsm.Host(host))
	rec := a.node.fsm.Host(host)
	if rec == nil {
		h.Maintenance = v.settings.Maintenance[host]
		allow, why := GateAllows(nil)
		h.Gate = api.Gate{Host: host, Allow: allow, Reason: why}
		return h, nil
	}
	st := v.settings
	h.Phase, h.Active, h.PhaseSince = string(rec.Phase), rec.Phase.Active(), rec.PhaseSince.UTC()
	h.DetectedAt, h.FinishedAt, h.Zone, h.ServiceID = rec.DetectedAt.UTC(), rec.FinishedAt.UTC(), rec.Zone, rec.ServiceID
	h.Level, h.ReservedHost, h.LastError, h.Reason = rec.Level, rec.ReservedHost, rec.LastError, rec.Reason
	h.Maintenance = st.Maintenance[rec.Host]
	h.Evidence = toAPIEvidence(rec.Evidence, rec.Kdump, rec.Adopted)
	if rec.Fence != nil {
		h.Fence = &api.Fence{Method: rec.Fence.Method, State: rec.Fence.State, At: rec.Fence.At.UTC(), Detail: rec.Fence.Detail}
	}
	if c, ok := st.Confirmed[rec.Host]; ok {
		h.Confirmed = &api.Confirmation{By: c.By, Reason: c.Reason, At: c.At.UTC()}
	}
	for _, s := range rec.Steps {
		out := "ok"
		if !s.OK {
			out = "failed"
		}
		h.Steps = append(h.Steps, api.Step{Step: s.Step, Op: s.OpID.String(), ServerID: s.ServerID, Started: s.Started.UTC(),
			Finished: s.Finished.UTC(), Seconds: s.Finished.Sub(s.Started).Seconds(), Outcome: out, Detail: s.Detail})
	}
	pending := func(in *Intent) {
		if in != nil {
			h.Steps = append(h.Steps, api.Step{Step: in.Step, Op: in.OpID.String(), ServerID: in.ServerID, Started: in.At.UTC(), Outcome: "pending"})
		}
	}
	pending(rec.Pending)
	if rec.Pending != nil {
		h.Pending = rec.Pending.Step
	}
	h.Segment, h.RecoveryMethod, h.Method, h.Targets, h.FellBack, h.Parked = rec.Segment, rec.RecoveryMethod, rec.Method, rec.Targets, rec.FellBack, rec.Parked
	for _, sr := range rec.Servers {
		in := api.Instance{ID: sr.ID, Name: sr.Name, From: sr.From, To: sr.To, OrigStatus: sr.OrigStatus, State: string(sr.State),
			MigrationID: sr.MigrationID, Attempts: sr.Attempts, Error: sr.Error, RequestedAt: sr.RequestedAt.UTC(), FinishedAt: sr.FinishedAt.UTC(),
			StartedAt: sr.StartedAt.UTC(), HAEnabled: sr.HAEnabled}
		if sr.Pending != nil {
			in.Pending = sr.Pending.Step
			pending(sr.Pending)
		}
		h.Servers = append(h.Servers, in)
	}
	allow, why := GateAllows(rec)
	h.Gate = api.Gate{Host: rec.Host, Allow: allow, Reason: why}
	return h, nil
}

// watchdogView is a host's lease for the API (nil: none).
func watchdogView(l *LeaseRecord, rec *HostRecord) *api.Watchdog {
	if l == nil {
		return nil
	}
	w := &api.Watchdog{Armed: l.Armed, WSeconds: l.W.Seconds(), LeaseSeconds: l.Params.L.Seconds(), LastGrant: l.Granted.UTC(),
		Holders: l.Holders, Released: l.Released.UTC()}
	if !l.Granted.IsZero() {
		w.LeaseExpires = l.Granted.Add(l.Params.L).UTC()
	}
	if rec != nil && rec.Watchdog != nil && rec.Phase.Active() {
		w.WaitSince, w.FenceDeadline, w.BMCError = rec.Watchdog.Since.UTC(), rec.Watchdog.Deadline.UTC(), rec.Watchdog.BMCError
	}
	return w
}

func toAPIEvidence(e Evidence, kdump, adopted bool) api.Evidence {
	return api.Evidence{Mode: e.Mode, Source: e.Source, NovaState: e.NovaState,
		NovaUpdatedAt: e.NovaUpdatedAt.UTC(), Stale: e.Stale, ForcedDown: e.ForcedDown,
		DisabledReason: e.DisabledReason, Kdump: kdump, Adopted: adopted, Note: e.Note,
		Verdict: e.Verdict, MeshState: e.MeshState, MeshSince: e.MeshSince.UTC(),
		Accusers: e.Accusers, Confirmations: e.Confirmations, Partition: e.Partition,
		KdumpAt: e.KdumpAt.UTC(), KdumpFrom: e.KdumpFrom}
}

func toAPIEvent(e Event) api.Event {
	return api.Event{Seq: e.Seq, At: e.At.UTC(), Host: e.Host, Kind: e.Kind, Message: e.Message, Warning: e.Warning}
}

// Events implements api.Backend.
func (a *API) Events(q api.EventQuery) []api.Event {
	evs := a.node.fsm.Events(q.Since, q.Host, q.Limit)
	out := make([]api.Event, len(evs))
	for i, e := range evs {
		out[i] = toAPIEvent(e)
	}
	return out
}

// Gate implements api.Backend: GateAllows on this replica's record.
func (a *API) Gate(host string) api.Gate {
	rec := a.node.fsm.Host(host)
	if rec != nil && rec.Phase.Active() && a.mon != nil {
		// The host is booting: its recovery's next step may be due.
		if r := a.mon.Current(); r != nil {
			r.Poke()
		}
	}
	ok, why := GateAllows(rec)
	return api.Gate{Host: host, Allow: ok, Reason: why}
}

// auditKinds are the events each operator command writes (fsm.go).
var auditKinds = map[api.MutationKind]string{
	api.MutPause: "Paused", api.MutResume: "Resumed", api.MutConfirmFenced: "FencingConfirmedByOperator",
	api.MutMaintenanceOn: "MaintenanceOn", api.MutMaintenanceOff: "MaintenanceOff", api.MutRetry: "RecoveryRetried",
	api.MutShadowOn: "ShadowOn", api.MutShadowOff: "ShadowOff",
}

// Mutate implements api.Backend.
func (a *API) Mutate(ctx context.Context, m api.Mutation) (uint64, error) {
	if !a.node.IsLeader() {
		return 0, api.ErrNotLeader
	}
	var t CommandType
	var body any
	switch m.Kind {
	case api.MutPause:
		reason := m.Reason
		if reason == "" {
			reason = "(no reason given)"
		}
		t, body = CmdPause, PauseCmd{Paused: true, By: m.By, Reason: reason}
	case api.MutResume:
		t, body = CmdPause, PauseCmd{Paused: false, By: m.By, Reason: m.Reason}
	case api.MutConfirmFenced:
		t, body = CmdConfirmFence, ConfirmCmd{Host: m.Host, By: m.By, Reason: m.Reason}
	case api.MutMaintenanceOn, api.MutMaintenanceOff:
		t, body = CmdMaintenance, MaintenanceCmd{Host: m.Host, On: m.Kind == api.MutMaintenanceOn, By: m.By, Reason: m.Reason}
	case api.MutRemoveVoter:
		return a.removeVoter(ctx, m)
	case api.MutShadowOn, api.MutShadowOff:
		t, body = CmdShadow, ShadowCmd{On: m.Kind == api.MutShadowOn, By: m.By, Reason: m.Reason}
	case api.MutRetry:
		rec := a.node.fsm.Host(m.Host)
		if rec == nil {
			return 0, fmt.Errorf("%w: no recovery record for host %q", api.ErrNotFound, m.Host)
		}
		if rec.Phase != PhaseFailed {
			return 0, fmt.Errorf("%w: %s is %s, not failed: only a failed recovery can be retried", api.ErrConflict, m.Host, rec.Phase)
		}
		t, body = CmdRetry, RetryCmd{Host: m.Host, By: m.By, Reason: m.Reason}
	default:
		return 0, fmt.Errorf("%w: unknown command %q", api.ErrConflict, m.Kind)
	}
	var before uint64
	if last := a.node.fsm.Events(0, "", 1); len(last) > 0 {
		before = last[0].Seq
	}
	if _, err := a.node.Apply(ctx, t, time.Now(), body); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
			return 0, api.ErrNotLeader
		case errors.Is(err, ErrStalePhase), errors.Is(err, ErrNoRecord):
			return 0, fmt.Errorf("%w: %v", api.ErrConflict, err)
		}
		return 0, err
	}
	for _, e := range a.node.fsm.Events(before, m.Host, 0) {
		if e.Kind == auditKinds[m.Kind] {
			return e.Seq, nil
		}
	}
	return 0, nil
}

// EventVoterRemoved is the audit event of a controller taken out of the
// Raft group through the API.
const EventVoterRemoved = "VoterRemoved"

// removeVoter takes m.Voter out of the Raft configuration and audits it in
// the event log. It refuses to remove the last voter (the group would have
// no member left to commit anything, the removal included). A follower is
// removed first and audited after; the leader removing itself audits
// first, because once raft commits a configuration without it, it steps
// down and (raft's ShutdownOnRemove) shuts its raft down: it can commit
// nothing more, and the remaining voters elect a leader among themselves
// after their election timeout.
func (a *API) removeVoter(ctx context.Context, m api.Mutation) (uint64, error) {
	cf := a.node.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return 0, fmt.Errorf("raft configuration: %w", err)
	}
	var target *raft.Server
	voters := 0
	for _, sv := range cf.Configuration().Servers {
		if sv.Suffrage == raft.Voter {
			voters++
		}
		if string(sv.ID) == m.Voter {
			target = &sv
		}
	}
	if target == nil {
		return 0, fmt.Errorf("%w: no controller %q in the Raft group (`iha controllers` lists them)", api.ErrNotFound, m.Voter)
	}
	if target.Suffrage == raft.Voter && voters == 1 {
		return 0, fmt.Errorf("%w: %s is the last voter: without it the group has no member to commit anything, "+
			"this removal included; stop iha-leader on it instead", api.ErrConflict, m.Voter)
	}
	self := m.Voter == a.node.ID()
	msg := fmt.Sprintf("controller %s (%s) removed from the Raft group by %s", m.Voter, target.Address, m.By)
	if self {
		msg = fmt.Sprintf("controller %s (%s), the leader, removes itself from the Raft group at the request of %s; "+
			"the %d remaining voter(s) elect a new leader", m.Voter, target.Address, m.By, voters-1)
	}
	if m.Reason != "" {
		msg += ": " + m.Reason
	}
	audit := func() (uint64, error) {
		var before uint64
		if last := a.node.fsm.Events(0, "", 1); len(last) > 0 {
			before = last[0].Seq
		}
		if _, err := a.node.Apply(ctx, CmdEvent, time.Now(), EventCmd{Kind: EventVoterRemoved, Message: msg, Warning: true}); err != nil {
			return 0, err
		}
		for _, e := range a.node.fsm.Events(before, "", 0) {
			if e.Kind == EventVoterRemoved {
				return e.Seq, nil
			}
		}
		return 0, nil
	}
	notLeader := func(err error) error {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return api.ErrNotLeader
		}
		return err
	}
	var seq uint64
	if self {
		var err error
		if seq, err = audit(); err != nil {
			return 0, notLeader(err)
		}
	}
	a.log.Warn("removing a controller from the Raft group", "node", m.Voter, "addr", string(target.Address), "by", m.By, "self", self)
	if err := a.node.Remove(ctx, m.Voter); err != nil {
		return seq, notLeader(err)
	}
	if self {
		return seq, nil
	}
	seq, err := audit()
	if err != nil {
		// The removal is committed; only its audit event is missing.
		a.log.Error("controller removed, but its audit event was not committed", "node", m.Voter, "err", err)
		return 0, nil
	}
	return seq, nil
}

// Ready implements api.Backend.
func (a *API) Ready(_ context.Context) error {
	raddr, lid := a.node.Leader()
	if raddr == "" || lid == "" {
		return errors.New("no Raft leader known")
	}
	commit := a.node.raft.CommitIndex()
	if applied := a.node.fsm.AppliedIndex(); commit > applied+a.cfg.MaxApplyLag {
		return fmt.Errorf("replica is catching up: applied %d of %d committed entries", applied, commit)
	}
	if !a.node.IsLeader() {
		if age := time.Since(a.node.raft.LastContact()); age > a.cfg.MaxContactAge {
			return fmt.Errorf("no contact with the leader %s for %s", lid, age.Round(time.Millisecond))
		}
		return nil
	}
	r := currentOf(a.mon)
	if r == nil {
		return errors.New("leader is starting its term (barrier not passed yet)")
	}
	if !r.Ready() {
		return errors.New("leader has not reached Nova in its last polls")
	}
	return nil
}

// ---- metrics.Source ----

// MetricsSource returns the metrics' view of this node.
func (a *API) MetricsSource() metrics.Source { return metricsSource{a} }

type metricsSource struct{ a *API }

func (m metricsSource) Raft() metrics.RaftStats {
	n := m.a.node
	stats := n.raft.Stats()
	rs := metrics.RaftStats{State: n.State(), Term: statUint(stats, "term"), CommitIndex: n.raft.CommitIndex(),
		AppliedIndex: n.fsm.AppliedIndex(), LastContact: -1}
	if a, _ := n.Leader(); a != "" {
		rs.LeaderKnown = true
	}
	if n.IsLeader() {
		rs.LastContact = 0
	} else if lc := n.raft.LastContact(); !lc.IsZero() {
		rs.LastContact = time.Since(lc)
	}
	if cf := n.raft.GetConfiguration(); cf.Error() == nil {
		for _, s := range cf.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				rs.Voters++
			}
		}
	}
	return rs
}

func (m metricsSource) Records() []metrics.Record {
	recs := m.a.node.fsm.Hosts()
	out := make([]metrics.Record, 0, len(recs))
	for _, h := range recs {
		r := metrics.Record{Host: h.Host, Phase: string(h.Phase), Active: h.Phase.Active(), PhaseSince: h.PhaseSince, DetectionSeconds: -1}
		// The last heartbeat on this leader's clock (Nova's, read as late
		// as the verdict read it).
		if heard := h.Evidence.NovaUpdatedAt.Add(h.Evidence.NovaClockSkew); !h.Evidence.NovaUpdatedAt.IsZero() && !h.Adopted && h.DetectedAt.After(heard) {
			r.DetectionSeconds = h.DetectedAt.Sub(heard).Seconds()
		}
		for _, s := range h.Steps {
			if s.Finished.IsZero() || s.Started.IsZero() {
				continue
			}
			r.Steps = append(r.Steps, metrics.Step{Step: s.Step, OK: s.OK, Seconds: s.Finished.Sub(s.Started).Seconds()})
		}
		for _, s := range h.Servers {
			if s.State == ServerDone && !s.RequestedAt.IsZero() && !s.FinishedAt.IsZero() {
				r.Evacuations = append(r.Evacuations, s.FinishedAt.Sub(s.RequestedAt).Seconds())
			}
		}
		out = append(out, r)
	}
	return out
}

// Leases implements metrics.LeaseSource.
func (m metricsSource) Leases() []metrics.Lease {
	now := time.Now()
	fsm := m.a.node.fsm
	var out []metrics.Lease
	for _, l := range fsm.Leases() {
		x := metrics.Lease{Host: l.Host, Holder: l.Holder(), Armed: l.Armed, Expired: !now.Before(l.Granted.Add(l.Params.L))}
		if h := fsm.Host(l.Host); h != nil && h.Watchdog != nil && h.Phase == PhaseDetected {
			x.Waiting = true
		}
		out = append(out, x)
	}
	return out
}

func (m metricsSource) EventsSince(seq uint64) []metrics.Event {
	evs := m.a.node.fsm.Events(seq, "", 0)
	out := make([]metrics.Event, len(evs))
	for i, e := range evs {
		out[i] = metrics.Event{Seq: e.Seq, Host: e.Host, Kind: e.Kind}
	}
	return out
}

// Mesh reports the gossip mesh (all zero without one).
func (m metricsSource) Mesh() metrics.MeshStats {
	if m.a.cfg.Mesh == nil {
		return metrics.MeshStats{States: map[string]int{}}
	}
	s := m.a.cfg.Mesh.Summary()
	return metrics.MeshStats{Wired: s.Wired, States: s.States, HealthScore: s.HealthScore, Contested: s.Contested,
		Unverified: s.Unverified, Rejected: s.Rejected}
}

// meshSummary is the mesh as /v1/cluster shows it.
func (a *API) meshSummary() api.Mesh {
	if a.cfg.Mesh == nil {
		return api.Mesh{Wired: false, States: map[string]int{}}
	}
	s := a.cfg.Mesh.Summary()
	return api.Mesh{Wired: s.Wired, Members: s.Members, States: s.States, HealthScore: s.HealthScore,
		ContestedHosts: s.Contested, UnverifiedMembers: s.Unverified, MessagesRejected: s.Rejected}
}

func (m metricsSource) Paused() bool {
	return m.a.node.fsm.Settings().Paused || m.a.cfg.Settings.Disabled
}
