package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// Nova is what the leader needs of Nova and Glance (pkg/nova's *Client
// implements it). Implementations return *nova.APIError.
type Nova interface {
	ListServices(ctx context.Context, binary string) ([]nova.Service, error)
	ListServicesOnHost(ctx context.Context, host, binary string) ([]nova.Service, error)
	UpdateService(ctx context.Context, id string, u nova.ServiceUpdate) (nova.Service, error)
	ListServers(ctx context.Context, host string) ([]nova.Server, error)
	GetServer(ctx context.Context, id string) (nova.Server, error)
	Evacuate(ctx context.Context, id, targetHost string) error
	Lock(ctx context.Context, id, reason string) error
	Unlock(ctx context.Context, id string) error
	ResetState(ctx context.Context, id, state string) error
	Stop(ctx context.Context, id string) error
	ListMigrations(ctx context.Context, q nova.MigrationQuery) ([]nova.Migration, error)
	ListAggregates(ctx context.Context) ([]nova.Aggregate, error)
	ListFlavors(ctx context.Context) ([]nova.Flavor, error)
	ListImages(ctx context.Context) ([]nova.Image, error)
	GetImage(ctx context.Context, id string) (nova.Image, error)
}

// Store is the replicated state as the reconciler uses it (*Node).
type Store interface {
	Apply(ctx context.Context, t CommandType, at time.Time, body any) (any, error)
	FSM() *FSM
}

// ReconcilerConfig wires a Reconciler.
type ReconcilerConfig struct {
	Settings config.Settings
	Nova     Nova
	Fencers  fence.Lookup
	Store    Store
	Logger   *slog.Logger
	// Now is the clock (tests may replace it). Default time.Now.
	Now func() time.Time
	// TrackInterval is how often a smart evacuation polls its migration
	// (upstream: 5 s) and InitialTrackDelay the wait after an accepted
	// evacuate (upstream: 10 s). Tests and dev mode shorten them.
	TrackInterval     time.Duration
	InitialTrackDelay time.Duration
	// RetryBackoff is the base of fencing/enable retries (upstream 1 s).
	RetryBackoff time.Duration
	// FollowInterval is how often the leader looks again while something
	// it waits for is expected within seconds: a smart evacuation's first
	// 30 s of tracking, the host's evacuations before it is powered on, and
	// a restoring host whose agent is back (default 1 s). POLL is for what
	// nobody announces.
	FollowInterval time.Duration
	// Observer, when set, sees every poll cycle and compute listing (the
	// status API's metrics and host list).
	Observer Observer
	// Mesh is the gossip mesh's view of the agents (nil: no mesh; every
	// host is judged by InstanceHA's rule). Wake, when it delivers, starts
	// a poll cycle at once (the mesh declared a member dead, or a kdump
	// notice arrived).
	Mesh MeshView
	Wake <-chan struct{}
	// Kdump holds the fence_kdump notices this controller received (used
	// with CHECK_KDUMP; nil: none).
	Kdump *KdumpLog
	// KdumpQuiet is how long a kdump-marked host must have sent no notice
	// before it is re-enabled (R11.5: 60 s).
	KdumpQuiet time.Duration
	// Resolver does the reverse-DNS check of a kdump notice's source
	// address (default net.DefaultResolver).
	Resolver AddrResolver
	// Heartbeats holds InstanceHA's compute heartbeats this controller
	// received (CHECK_HEARTBEAT; nil: none).
	Heartbeats *HeartbeatLog
}

// Reconciler is the leader-only subsystem that judges hosts and drives
// their recovery. One Reconciler runs per leadership term: Run returns when
// ctx is cancelled (leadership lost or shutdown) after its workers stopped.
type Reconciler struct {
	cfg     config.Settings
	nova    Nova
	fence   fence.Lookup
	store   Store
	log     *slog.Logger
	now     func() time.Time
	track   time.Duration
	first   time.Duration
	backoff time.Duration
	follow  time.Duration
	// poke wakes the poll loop at once (Poke: an agent asked its gate).
	poke chan struct{}

	sem     chan struct{} // WORKERS
	mu      sync.Mutex
	running map[string]bool
	wg      sync.WaitGroup
	// termStart is when this term's reconciler started: timeouts of work
	// inherited from an earlier leader count from here, not from a clock
	// we cannot trust across a failover.
	termStart time.Time

	seg segmentCache // failover segments (segments.go)

	tagMu  sync.Mutex
	tagIx  TagIndex
	tagAt  time.Time
	tagSet bool
	// imgLookups are images looked up one by one (serverImages).
	imgMu      sync.Mutex
	imgLookups map[string]imageLookup

	obs Observer

	// reportedOnce: conditions reported once for this term.
	reportedOnce episodes

	// mine holds the operation ids this reconciler began. An intent without
	// a result that is not in it was left by an earlier term, whose request
	// may still be on its way to Nova.
	mine sync.Map
	mesh MeshView
	wake <-chan struct{}
	// snap is the mesh's view taken at the start of each cycle, part the
	// mass-failure guard's finding on it.
	snap       MeshSnapshot
	part       Partition
	partLogged bool
	// contested is each host more than one member speaks for, with the
	// claimants the alarm named (claims.go).
	contested  map[string]string
	kdump      *KdumpLog
	kdumpQuiet time.Duration
	kdumpDNS   kdumpCheck
	heartbeats *HeartbeatLog
	hbCliff    heartbeatCliff
	// kdumpOK holds, for this cycle, each host's latest notice that passed
	// vetKdump (verdictInput reads it).
	kdumpOK map[string]KdumpNotice
	// kdumpRejected are the rejected notices (host|source|reason) already
	// reported, while they keep coming.
	kdumpRejected map[string]bool
	// kdumpWait is when each failed host without a kdump notice began
	// waiting for one (R12.3: up to KDUMP_TIMEOUT before a power-off).
	kdumpWait map[string]time.Time
	// nextLook is when a host the verdict table told us to wait for becomes
	// decidable (zero: none).
	nextLook time.Time

	// adoptOrphans says whether this term's startup reconciliation adopts
	// forced-down hosts (IHA's first term only); recordTakeover whether it
	// still has to commit that it ran.
	adoptOrphans   *bool
	recordTakeover bool

	// polls and pollErrors count this term's cycles; lastSummary is when
	// METRICS_LOG_INTERVAL's summary was last logged.
	polls, pollErrors int
	lastSummary       time.Time

	ready    atomic.Bool
	failures atomic.Int32
	lastPoll atomic.Int64 // unix nanos of the last successful poll
	// skips: the skipped conditions reported once per episode (events
	// and logs), touched only by the cycle's goroutine.
	skips episodes
	stale bool // AllServicesStale reported, to log it once per episode
	// unforceRefused follows hosts whose forced_down=false Nova refuses
	// (see noteUnforceRefused); touched only by the cycle's goroutine.
	unforceRefused map[string]*unforceRefusal
	// sh is shadow mode's memory (shadow.go).
	sh shadowState
	// clock estimates Nova's clock against this leader's (novaclock.go);
	// skewReported says the NovaClockSkew event of this episode was raised.
	clock        novaClock
	skewReported bool
	// novaSeen is r.nova (novaWatch): whether Nova answers at all
	// (readiness); novaRaw the Nova it wraps (optional interfaces).
	novaSeen *novaWatch
	novaRaw  Nova
	// hbStarted and hbLast are this cycle's reading of the InstanceHA
	// heartbeats (CHECK_HEARTBEAT): the listener's start and each listed
	// host's last heartbeat.
	hbStarted time.Time
	hbLast    map[string]time.Time
}

// NewReconciler builds a reconciler for one leadership term.
func NewReconciler(c ReconcilerConfig) *Reconciler {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TrackInterval <= 0 {
		c.TrackInterval = 5 * time.Second
	}
	if c.InitialTrackDelay <= 0 {
		c.InitialTrackDelay = time.Second
	}
	if c.FollowInterval <= 0 {
		c.FollowInterval = min(time.Second, c.TrackInterval)
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = time.Second
	}
	if c.KdumpQuiet <= 0 {
		c.KdumpQuiet = 60 * time.Second
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	workers := max(c.Settings.Workers, 1)
	if c.Observer == nil {
		c.Observer = noObserver{}
	}
	watched := &novaWatch{Nova: c.Nova, now: c.Now}
	return &Reconciler{obs: c.Observer, mesh: c.Mesh, wake: c.Wake, cfg: c.Settings, nova: watched, novaRaw: c.Nova, novaSeen: watched, fence: c.Fencers, store: c.Store, log: c.Logger, now: c.Now,
		track: c.TrackInterval, first: c.InitialTrackDelay, backoff: c.RetryBackoff, follow: c.FollowInterval, poke: make(chan struct{}, 1),
		sem: make(chan struct{}, workers), running: map[string]bool{}, unforceRefused: map[string]*unforceRefusal{},
		kdump: c.Kdump, kdumpQuiet: c.KdumpQuiet, kdumpWait: map[string]time.Time{}, kdumpDNS: kdumpCheck{resolver: c.Resolver},
		heartbeats: c.Heartbeats, contested: map[string]string{},
		clock: novaClock{interval: reportInterval(c.Settings.NovaReportInterval), margin: verdictMargin}}
}

// reportInterval is Nova's report_interval as configured, 10 s (Nova's
// default) when unset.
func reportInterval(d time.Duration) time.Duration {
	if d <= 0 {
		return 10 * time.Second
	}
	return d
}

// novaNow is now on Nova's clock as far as this leader can tell: the time
// to compare Nova's updated_at with (DELTA's staleness).
func (r *Reconciler) novaNow(now time.Time) time.Time { return now.Add(-r.clock.skew()) }

// observeNovaClock feeds a listing of the compute services to the clock
// estimate, looks again soon while a skew past the margin is unsettled,
// and tells the operator once per episode when Nova's clock is off by more
// than the verdict margin.
func (r *Reconciler) observeNovaClock(ctx context.Context, svcs []nova.Service, readAt time.Time) {
	if r.clock.observe(svcs, readAt) {
		r.log.Warn("Nova's heartbeats are suddenly older than its clock allowed: its clock stepped back or it stopped recording heartbeats; the earlier listings are forgotten",
			"estimate", r.clock.describe())
	}
	skew := r.clock.skew()
	if skew != 0 && !r.clock.settled() {
		r.lookAt(readAt.Add(r.clock.spacing()))
		return
	}
	switch {
	case skew != 0 && !r.skewReported:
		r.skewReported = true
		msg := r.clock.describe()
		r.log.Warn("Nova's clock is off from this leader's", "detail", msg, "skew", skew)
		r.event(ctx, "", EventNovaClockSkew, msg, true)
	case skew == 0 && r.skewReported:
		r.skewReported = false
		msg := "Nova's clock agrees with this leader's again (within the verdict margin " + verdictMargin.String() + ")"
		r.log.Info(msg)
		r.event(ctx, "", EventNovaClockSkew, msg, false)
	}
}

// Ready reports whether the last poll cycles reached Nova and Nova
// answers (readiness): false from the third failed poll in a row, or while
// Nova has left a request unanswered (its NOVA_API_TIMEOUT ran out, or the
// connection failed) and answered none since.
func (r *Reconciler) Ready() bool { return r.ready.Load() && r.novaSeen.silentSince().IsZero() }

// LastPoll is when the last poll cycle succeeded (zero if never).
func (r *Reconciler) LastPoll() time.Time {
	n := r.lastPoll.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// retryAfter is how long the poll loop waits after its n-th failed cycle
// in a row: 2 s (or POLL when shorter), doubling, never more than POLL.
// InstanceHA (R3.4) waits POLL × 2^n up to 300 s: 90 s after one failed
// poll at POLL 45, and up to 5 minutes after Nova is back; a monitor's
// retry must not be slower than its normal cadence. Readiness still drops
// at the third failure in a row (about 6 s into an outage at POLL 45).
func retryAfter(poll time.Duration, n int) time.Duration {
	base := min(poll, 2*time.Second)
	return min(base*time.Duration(1<<min(max(n-1, 0), 16)), poll)
}

// Run polls Nova every POLL and drives recoveries until ctx ends. The
// caller has already made the FSM current with a Barrier for this term.
func (r *Reconciler) Run(ctx context.Context) error {
	r.termStart = r.now()
	r.lastSummary = r.termStart
	r.log.Info("reconciler starting", "poll", r.cfg.Poll, "delta", r.cfg.Delta, "mode", r.cfg.DetectionMode,
		"quick_evacuate_level", r.cfg.QuickEvacuateLevel)
	defer r.wg.Wait()
	reconciled := false
	for {
		wait := r.cfg.Poll
		if reconciled && r.recordTakeover && !r.shadowing() {
			// Shadow mode ended during this term (`iha shadow off`): the
			// takeover runs now, adopting the orphans the other agent left.
			r.log.Info("shadow mode ended: taking over from the other agent (startup reconciliation)")
			reconciled = false
		}
		if !reconciled {
			err := r.startupReconcile(ctx)
			switch {
			case ctx.Err() != nil:
				return nil // the term ended while it ran
			case err == nil:
				reconciled = true
			case errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost):
				// Its commit found this node no longer leading: raft tells
				// the monitor, which ends this term (a regained leadership is
				// a new term with a new reconciler); do not touch Nova
				// meanwhile.
				r.log.Warn("startup reconciliation interrupted: leadership lost; waiting for the term to end", "err", err)
				<-ctx.Done()
				return nil
			default:
				r.log.Warn("startup reconciliation skipped: Nova not reachable", "err", err)
			}
		}
		start := r.now()
		r.polls++
		if err := r.Cycle(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.pollErrors++
			n := r.failures.Add(1)
			r.obs.PollCycle(r.now().Sub(start), err, int(n))
			// Not ready at the third failure in a row (R3.4); a poll Nova
			// left unanswered for NOVA_API_TIMEOUT makes it unready at once
			// (novaWatch).
			if n >= 3 {
				r.ready.Store(false)
			}
			wait = retryAfter(r.cfg.Poll, int(n))
			r.log.Error("poll cycle failed", "err", err, "consecutive_failures", n, "retry_in", wait)
		} else {
			r.failures.Store(0)
			r.ready.Store(true)
			r.lastPoll.Store(r.now().UnixNano())
			r.obs.PollCycle(r.now().Sub(start), nil, 0)
			r.log.Debug("poll cycle done", "took", r.now().Sub(start))
		}
		r.maybeLogSummary()
		if !r.nextLook.IsZero() {
			if d := r.nextLook.Sub(r.now()); d < wait {
				wait = max(d, 10*time.Millisecond)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-r.poke:
		case <-time.After(wait):
		}
	}
}

// Poke makes the poll loop look at once (an agent asked whether its
// nova-compute may start: its host is booting). Never blocks.
func (r *Reconciler) Poke() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// lookAt brings the next look forward to t.
func (r *Reconciler) lookAt(t time.Time) {
	if r.nextLook.IsZero() || t.Before(r.nextLook) {
		r.nextLook = t
	}
}

// maybeLogSummary logs, every METRICS_LOG_INTERVAL, a line of what this
// leader did (InstanceHA's metrics summary; the figures are also on
// /metrics).
func (r *Reconciler) maybeLogSummary() {
	iv := r.cfg.MetricsLogInterval
	if iv <= 0 || r.now().Sub(r.lastSummary) < iv {
		return
	}
	r.lastSummary = r.now()
	phases := map[Phase]int{}
	fenced, evacuated, failedServers := 0, 0, 0
	for _, h := range r.store.FSM().Hosts() {
		phases[h.Phase]++
		if h.Fence != nil {
			fenced++
		}
		for _, sv := range h.Servers {
			switch sv.State {
			case ServerDone:
				evacuated++
			case ServerFailed:
				failedServers++
			}
		}
	}
	active := 0
	for p, n := range phases {
		if p.Active() {
			active += n
		}
	}
	r.log.Info("metrics summary", "polls", r.polls, "poll_errors", r.pollErrors, "hosts_in_recovery", active,
		"hosts_done", phases[PhaseDone], "hosts_failed", phases[PhaseFailed], "hosts_skipped", phases[PhaseSkipped],
		"hosts_fenced", fenced, "servers_evacuated", evacuated, "servers_failed", failedServers, "interval", iv)
}

// verdictInput gathers what the verdict table needs of one service: Nova's
// row, this cycle's mesh snapshot and the host's last kdump notice.
func (r *Reconciler) verdictInput(s nova.Service, now time.Time) VerdictInput {
	in := VerdictInput{Mode: r.cfg.DetectionMode, Service: s, Now: now, Delta: r.cfg.Delta,
		ReportInterval: r.cfg.NovaReportInterval, Margin: verdictMargin, NovaSkew: r.clock.skew(),
		CheckKdump: r.cfg.CheckKdump, KdumpTimeout: r.cfg.KdumpTimeout}
	if r.mesh != nil {
		if m, ok := r.snap[s.Host]; ok {
			// Since is this controller's own observation (every controller
			// is a mesh member), so it holds across a change of leader: the
			// rule compares it with Nova's updated_at, and waits for a
			// missed report measured from updated_at, not from this term.
			in.MeshState, in.MeshSince = m.State, m.Since
			in.Partition = r.part.Suspected && slices.Contains(r.part.Hosts, s.Host)
		}
	}
	if n, ok := r.kdumpOK[s.Host]; ok {
		in.Kdump = n
	}
	if in.ReportInterval <= 0 {
		in.ReportInterval = 10 * time.Second
	}
	if in.KdumpTimeout <= 0 {
		in.KdumpTimeout = 30 * time.Second
	}
	if r.cfg.CheckHeartbeat {
		in.CheckHeartbeat, in.HeartbeatTimeout = true, r.cfg.HeartbeatTimeout
		in.HeartbeatGrace = r.heartbeatGrace(now)
		in.Heartbeat = r.hbLast[s.Host]
		in.HeartbeatCliff = !r.hbCliff.since.IsZero() && !r.hbCliff.expired
	}
	return in
}

// judge applies the verdict table to one service.
func (r *Reconciler) judge(s nova.Service, now time.Time) (Verdict, string, time.Time) {
	return Judge(r.verdictInput(s, now))
}

// evidence records what the verdict of s rested on.
func (r *Reconciler) evidence(s nova.Service, now time.Time, v Verdict, why string) Evidence {
	in := r.verdictInput(s, now)
	ev := Evidence{Source: "nova", Verdict: string(v), NovaState: s.State, NovaUpdatedAt: s.UpdatedAt,
		Stale: IsStale(s, r.novaNow(now), r.cfg.Delta), Note: why, NovaClockSkew: in.NovaSkew}
	if m, ok := r.snap[s.Host]; ok {
		ev.MeshState, ev.MeshSince, ev.Accusers, ev.Confirmations = m.State, m.Since, m.Accusers, m.Confirmations
		if m.State == MeshDead {
			ev.Source = "gossip+nova"
		}
	}
	if in.Partition {
		ev.Partition = r.part.String()
	}
	if !in.Kdump.At.IsZero() {
		ev.KdumpAt, ev.KdumpFrom = in.Kdump.At, in.Kdump.From
	}
	if v == VerdictKdump {
		ev.Source = "kdump+" + ev.Source
	}
	return ev
}

// observeMesh takes this cycle's mesh snapshot and runs the mass-failure
// guard, telling the operator once per episode.
func (r *Reconciler) observeMesh(ctx context.Context, now time.Time) {
	if r.mesh == nil {
		return
	}
	r.snap = r.mesh.Snapshot()
	pct, win := r.cfg.MeshPartitionPercent, r.cfg.MeshPartitionWindow
	if pct <= 0 {
		pct = 30
	}
	if win <= 0 {
		win = 60 * time.Second
	}
	r.part = CheckPartition(r.snap, now, win, pct)
	switch {
	case r.part.Suspected && !r.partLogged:
		r.partLogged = true
		msg := fmt.Sprintf("the mesh lost %s (> %d%%): suspecting this controller's network; those hosts need Nova's DELTA rule too: %v",
			r.part, pct, r.part.Hosts)
		r.log.Error(msg)
		r.event(ctx, "", "MeshPartitionSuspected", msg, true)
	case !r.part.Suspected && r.partLogged:
		r.partLogged = false
		r.log.Info("mesh partition guard cleared", "lost", r.part.Lost, "total", r.part.Total)
	}
	r.observeClaims(ctx)
}

// verdictMargin absorbs updated_at's whole-second truncation and the
// report's delays when judging that a host missed a report.
const verdictMargin = config.NovaHeartbeatMargin

// startupReconcile is R17.1, once per cluster: when IHA first takes over,
// hosts forced down and down but not disabled, with no record of ours, are
// InstanceHA's orphans (it crashed between its force-down and its disable)
// and are adopted (upstream writes the "(recovered)" marker so that its
// resume rule picks them up; we open a record, and the disable step writes
// that marker). The takeover is committed, and later terms adopt nothing:
// IHA never leaves a host forced down and enabled (one request sets both),
// so such a host is an operator's, left alone with an event (W9) whatever
// the leader. Every term also releases evacuation locks left behind
// (releaseLeftoverLocks).
func (r *Reconciler) startupReconcile(ctx context.Context) error {
	svcs, err := r.nova.ListServices(ctx, "nova-compute")
	if err != nil {
		return err
	}
	fsm := r.store.FSM()
	if r.adoptOrphans == nil {
		// Decided once per term, before this term writes anything: a cluster
		// that acted and has no takeover recorded was upgraded from a
		// version that re-ran the reconciliation at every term. A history
		// of shadowing only is not acting: the other agent was, and the
		// first acting term takes over what it left.
		first := fsm.Settings().TakenOver.IsZero()
		fresh := first && !fsm.ActedBefore()
		r.adoptOrphans = &fresh
		r.recordTakeover = first
	}
	r.segments(ctx, true) // invalid failover segments are reported at the start of the term
	var adopted []string
	for _, s := range svcs {
		if !*r.adoptOrphans || !(s.ForcedDown && s.State == "down" && !disabled(s)) {
			continue
		}
		if rec := fsm.Host(s.Host); rec != nil && rec.Phase.Active() {
			continue
		}
		r.log.Warn("orphaned forced-down host found at IHA's first start: adopting its recovery", "host", s.Host)
		if err := r.detect(ctx, s, Evidence{Source: "orphan", NovaState: s.State, NovaUpdatedAt: s.UpdatedAt, ForcedDown: true,
			Note: "forced down but not disabled when IHA took over (R17.1)"}, true, ""); err != nil {
			return err
		}
		adopted = append(adopted, s.Host)
		_, _ = r.apply(ctx, CmdEvent, EventCmd{Host: s.Host, Kind: "OrphanedHostRecovered", Message: "forced down but not disabled: recovery adopted"})
	}
	// A shadow takes nothing over: the takeover is recorded by the first
	// acting term (the orphans above are shadow decisions).
	if r.recordTakeover && !r.shadowing() {
		if _, err := r.apply(ctx, CmdTakeover, TakeoverCmd{Adopted: adopted, Skipped: !*r.adoptOrphans}); err != nil {
			return err
		}
		r.recordTakeover = false
	}
	r.releaseLeftoverLocks(ctx, svcs)
	return nil
}

func (r *Reconciler) apply(ctx context.Context, t CommandType, body any) (any, error) {
	return r.store.Apply(ctx, t, r.now(), body)
}

func (r *Reconciler) paused() bool {
	return r.cfg.Disabled || r.store.FSM().Settings().Paused
}

func (r *Reconciler) detect(ctx context.Context, s nova.Service, ev Evidence, adopted bool, phase Phase) error {
	ev.Mode = r.cfg.DetectionMode
	// A recovery adopted from a (kdump) marker is one InstanceHA (or an
	// earlier leader) started because the host was dumping: it is not
	// powered off now, possibly mid-dump, nor powered on at the end (R11.1).
	kd := ev.Verdict == string(VerdictKdump) || adopted && strings.Contains(ev.DisabledReason, MarkerKdumpSuffix)
	if r.shadowing() {
		return r.shadowDetect(ctx, s, ev, adopted, phase) // a decision instead of a recovery (shadow.go)
	}
	_, err := r.apply(ctx, CmdDetect, DetectCmd{Host: s.Host, ServiceID: s.ID, Zone: s.Zone, Evidence: ev,
		Level: r.cfg.QuickEvacuateLevel, Adopted: adopted, Phase: phase, Kdump: kd})
	return err
}

// skip records that a failed host is not recovered, once per reason.
func (r *Reconciler) skip(ctx context.Context, s nova.Service, reason string, now time.Time) {
	if r.shadowing() {
		r.shadowSkip(ctx, s, reason)
		return
	}
	if rec := r.store.FSM().Host(s.Host); rec != nil && rec.Phase == PhaseSkipped && rec.Reason == reason {
		return
	}
	r.log.Warn("failed host not recovered", "host", s.Host, "reason", reason)
	_, err := r.apply(ctx, CmdDetect, DetectCmd{Host: s.Host, ServiceID: s.ID, Zone: s.Zone, Phase: PhaseSkipped, Reason: reason,
		Level: r.cfg.QuickEvacuateLevel,
		Evidence: Evidence{Mode: r.cfg.DetectionMode, Source: "nova", NovaState: s.State, NovaUpdatedAt: s.UpdatedAt,
			Stale: IsStale(s, r.novaNow(now), r.cfg.Delta), NovaClockSkew: r.clock.skew()}})
	if err != nil {
		r.log.Warn("could not record skipped host", "host", s.Host, "err", err)
	}
}

func (r *Reconciler) event(ctx context.Context, host, kind, msg string, warn bool) {
	if _, err := r.apply(ctx, CmdEvent, EventCmd{Host: host, Kind: kind, Message: msg, Warning: warn}); err != nil {
		r.log.Warn("could not record event", "kind", kind, "err", err)
	}
}

// Cycle is one poll: read the compute services, categorise, run the gate
// chain on new failures, admit them, start workers, and re-enable hosts
// that came back. It makes one Nova call when nothing has failed.
func (r *Reconciler) Cycle(ctx context.Context) error {
	now := r.now()
	r.nextLook = time.Time{}
	svcs, err := r.nova.ListServices(ctx, "nova-compute")
	if err != nil {
		return fmt.Errorf("list compute services: %w", err)
	}
	r.observeNovaClock(ctx, svcs, now)
	r.obs.ComputeServices(svcs, now)
	if r.shadowing() {
		svcs = r.shadowCycle(ctx, svcs, now) // watch the other agent (shadow.go)
	}
	fsm := r.store.FSM()
	settings := fsm.Settings()
	records := map[string]*HostRecord{}
	for _, h := range fsm.Hosts() {
		records[h.Host] = h
	}
	byHost := make(map[string]nova.Service, len(svcs))
	for _, s := range svcs {
		byHost[s.Host] = s
	}
	cats := Categorize(svcs, r.novaNow(now), r.cfg.Delta)
	r.observeMesh(ctx, now)
	r.vetKdumpNotices(ctx, svcs, now)

	var cands, resume []nova.Service
	var inflight []string
	for h, rec := range records {
		if rec.Phase.Active() {
			inflight = append(inflight, h)
		}
	}
	if r.cfg.CheckHeartbeat && r.heartbeats != nil {
		// One reading of the heartbeats per cycle: the rules judge with
		// it, and the decision log keeps it.
		hosts := make([]string, len(svcs))
		for i, s := range svcs {
			hosts[i] = s.Host
		}
		r.hbStarted, r.hbLast = r.heartbeats.snapshot(hosts)
		if hbObs, ok := r.obs.(HeartbeatObserver); ok {
			hbObs.Heartbeats(r.hbStarted, r.hbLast, now)
		}
	}
	r.observeHeartbeats(ctx, svcs, now)
	why := map[string]string{}
	verdicts := map[string]Verdict{}
	judged := make(map[string]Verdict, len(svcs))
	evObs, wantEvidence := r.obs.(EvidenceObserver)
	var evidence map[string]Evidence
	if wantEvidence {
		evidence = make(map[string]Evidence, len(svcs))
	}
	defer func() {
		r.obs.Verdicts(judged, now)
		if wantEvidence {
			evObs.Judgements(evidence, now)
		}
	}()
	for _, s := range svcs {
		if rec := records[s.Host]; rec != nil && rec.Phase.Active() {
			continue // G2: already in recovery
		}
		if _, m := settings.Maintenance[s.Host]; m {
			continue // a host in maintenance is never a new failure
		}
		v, reason, look := r.judge(s, now)
		judged[s.Host] = v
		if wantEvidence {
			ev := r.evidence(s, now, v, reason)
			ev.Mode, ev.ForcedDown, ev.DisabledReason = r.cfg.DetectionMode, s.ForcedDown, s.DisabledReason
			evidence[s.Host] = ev
		}
		switch v {
		case VerdictFailed, VerdictInstanceHA, VerdictKdump:
			cands = append(cands, s)
			why[s.Host], verdicts[s.Host] = reason, v
		case VerdictKdumpIgnored:
			if r.skips.Once(episodeKdumpIgnored, s.Host) {
				r.log.Warn("kdump notice for a host whose agent is alive: not acted on while it is", "host", s.Host, "evidence", reason)
				r.event(ctx, s.Host, "KdumpNoticeIgnored", reason, true)
			}
			continue
		case VerdictNovaBroken:
			if r.skips.Once(episodeNovaBroken, s.Host) {
				r.log.Warn("nova-compute is down on a live host: not evacuating", "host", s.Host, "verdict", v, "evidence", reason)
				r.event(ctx, s.Host, "NovaComputeBroken", reason, true)
			}
			continue
		case VerdictHeartbeatAlive:
			if r.skips.Once(episodeHeartbeatAlive, s.Host) {
				r.log.Warn("reported down by Nova but its heartbeat is fresh: not fencing", "host", s.Host, "evidence", reason)
				r.event(ctx, s.Host, EventHostReachable, reason, true)
			}
			continue
		case VerdictWait:
			r.log.Info("not judged yet", "host", s.Host, "verdict", v, "evidence", reason)
			r.lookAt(look)
		}
		r.skips.Clear(episodeNovaBroken, s.Host)
		r.skips.Clear(episodeKdumpIgnored, s.Host)
		r.skips.Clear(episodeHeartbeatAlive, s.Host)
	}
	for h := range r.kdumpWait {
		if _, failed := verdicts[h]; !failed {
			delete(r.kdumpWait, h) // healthy again, or in recovery
		}
	}
	for _, s := range cats.Resume {
		if rec := records[s.Host]; rec != nil && rec.Phase.Active() {
			continue
		}
		resume = append(resume, s)
	}
	// A host judged failed but not yet fenced that is healthy again is
	// let go: nothing was done to it.
	for _, rec := range records {
		if rec.Phase != PhaseDetected || rec.Pending != nil || rec.Adopted {
			continue
		}
		if s, ok := byHost[rec.Host]; ok && s.State == "up" && !IsStale(s, r.novaNow(now), r.cfg.Delta) && !s.ForcedDown && !disabled(s) {
			r.log.Info("host is healthy again before it was fenced: recovery dropped", "host", rec.Host)
			_, _ = r.apply(ctx, CmdPhase, PhaseCmd{Host: rec.Host, Phase: PhaseSkipped, From: PhaseDetected,
				Reason: "host reported up again before it was fenced"})
		}
	}
	if len(cands)+len(resume) > 0 {
		if err := r.admit(ctx, svcs, cands, resume, inflight, now, why, verdicts); err != nil {
			return err
		}
	} else {
		r.stale = false
	}
	r.launchWorkers(ctx)
	r.reenable(ctx, byHost, cats, now)
	return nil
}

// admit runs the gate chain (behaviour §4) and opens records.
func (r *Reconciler) admit(ctx context.Context, svcs, cands, resume []nova.Service, inflight []string, now time.Time,
	why map[string]string, verdicts map[string]Verdict) error {
	// G4: all services stale → Nova or our clock is broken.
	if AllServicesStale(svcs, len(cands)) {
		if !r.stale {
			r.stale = true
			msg := fmt.Sprintf("all %d active compute services look failed: suspect Nova or clock trouble, not acting", activeServices(svcs))
			r.log.Error(msg)
			r.event(ctx, "", "AllServicesStale", msg, true)
		}
		return nil
	}
	r.stale = false
	for _, s := range cands {
		r.log.Info("failed host: applying the admission gates", "host", s.Host, "verdict", verdicts[s.Host], "evidence", why[s.Host])
	}
	// G5: evacuability.
	var ix TagIndex
	if len(cands) > 0 {
		ix = r.tagIndex(ctx, true)
	}
	var admitted []nova.Service
	for _, s := range cands {
		seg, segWhy := r.segmentOf(ctx, s.Host, true)
		if segWhy != "" {
			r.skip(ctx, s, segWhy, now)
			continue
		}
		if seg == nil && !ix.HostInScope(r.cfg, s.Host) {
			r.skip(ctx, s, "host is not in an aggregate tagged "+r.cfg.EvacuableTag+" (TAGGED_AGGREGATES)", now)
			continue
		}
		servers, err := r.serversOf(ctx, s.Host)
		if err != nil {
			r.log.Warn("cannot list servers of failed host; keeping it", "host", s.Host, "err", err)
			admitted = append(admitted, s)
			continue
		}
		if len(servers) == 0 {
			r.skip(ctx, s, "no servers on the host: nothing to evacuate", now)
			continue
		}
		if !anyPending(r.serverImages(ctx, ix, servers).selectFor(r.cfg, seg, s.Host, servers, false)) {
			r.skip(ctx, s, "no evacuable server on the host (status, name or tags)", now)
			continue
		}
		admitted = append(admitted, s)
	}
	// G6: global threshold, on the new candidates that remain.
	if len(admitted) > 0 {
		var scope map[string]bool
		if r.cfg.TaggedAggregates {
			scope = ix.EvacuableHosts
		}
		counted := slices.Clone(admitted)
		var lost []string // hosts only the mesh counts
		if r.mesh != nil && r.cfg.DetectionMode != "nova" {
			for _, s := range MeshFailing(r.snap, svcs, r.clock.skew()) {
				if !slices.ContainsFunc(admitted, func(a nova.Service) bool { return a.Host == s.Host }) {
					counted, lost = append(counted, s), append(lost, s.Host)
				}
			}
			slices.Sort(lost)
		}
		pct := ThresholdPercent(svcs, counted, scope)
		if ThresholdExceeded(pct, r.cfg.Threshold) {
			reason := fmt.Sprintf("THRESHOLD exceeded: %.1f%% of computes failed or in recovery > %d%%; suspect a partition, not acting",
				pct, r.cfg.Threshold)
			if len(lost) > 0 {
				reason = fmt.Sprintf("THRESHOLD exceeded: %.1f%% of computes failed, in recovery or being lost by the mesh (%s) > %d%%; suspect a partition, not acting",
					pct, strings.Join(lost, ", "), r.cfg.Threshold)
			}
			key := fmt.Sprintf("threshold:%d", len(admitted))
			if r.skips.OnceFor(episodeThreshold, "", key) {
				r.event(ctx, "", "ThresholdExceeded", reason, true)
			}
			for _, s := range admitted {
				r.skip(ctx, s, reason, now)
			}
			return nil
		}
		r.skips.Clear(episodeThreshold, "")
	}
	// G7: per-aggregate limit.
	if r.cfg.TaggedAggregates && len(admitted) > 0 {
		aggs, err := r.nova.ListAggregates(ctx)
		if err == nil {
			blocked := AggregateLimited(aggs, r.cfg.EvacuableTag, admitted, inflight)
			kept := admitted[:0:0]
			for _, s := range admitted {
				if a, ok := blocked[s.Host]; ok {
					r.skip(ctx, s, "aggregate "+a+" exceeds "+MaxFailuresKey, now)
					continue
				}
				kept = append(kept, s)
			}
			admitted = kept
		}
	}
	if len(admitted) == 0 && len(resume) == 0 {
		return nil
	}
	// G8: rate limit.
	if n := r.cfg.MaxHostsPerCycle; n > 0 && len(admitted) > n {
		r.event(ctx, "", "FencingRateLimited", fmt.Sprintf("%d failed hosts, %d admitted this cycle (MAX_HOSTS_PER_CYCLE), the rest next cycle", len(admitted), n), true)
		admitted = admitted[:n]
	}
	// G9: DISABLED / paused.
	if r.paused() {
		r.log.Warn("DISABLED is true (or recovery is paused), not evacuating", "failed_hosts", len(admitted), "to_resume", len(resume))
		return nil
	}
	// G10: a scheduler must be up to place the servers.
	scheds, serr := r.nova.ListServices(ctx, "nova-scheduler")
	if !SchedulerUp(scheds, serr) {
		r.event(ctx, "", "SchedulerDown", "no nova-scheduler is up: not starting recoveries", true)
		return nil
	}
	for _, s := range admitted {
		v := verdicts[s.Host]
		if r.cfg.CheckKdump && v != VerdictKdump && !r.kdumpWaitOver(s.Host, now) {
			continue
		}
		ev := r.evidence(s, now, v, why[s.Host])
		r.log.Warn("host judged failed", "host", s.Host, "verdict", v, "evidence", why[s.Host], "nova_state", s.State,
			"updated_at", s.UpdatedAt, "stale", ev.Stale, "mesh", ev.MeshState, "accusers", ev.Accusers)
		if err := r.detect(ctx, s, ev, false, ""); err != nil {
			return err
		}
	}
	for _, s := range resume {
		r.log.Warn("resuming a recovery marked in Nova", "host", s.Host, "disabled_reason", s.DisabledReason)
		ev := Evidence{Source: "marker", NovaState: s.State, NovaUpdatedAt: s.UpdatedAt, ForcedDown: s.ForcedDown,
			DisabledReason: s.DisabledReason}
		if err := r.detect(ctx, s, ev, true, ""); err != nil {
			return err
		}
	}
	return nil
}

// kdumpWaitOver is R12.3 (b–d): a failed host with no kdump notice is given
// KDUMP_TIMEOUT from the first time it was judged failed for one to arrive
// before it is powered off, so a dump in progress is not cut. Unlike
// InstanceHA the wait ends at its deadline, not at the next poll, and a
// notice ends it at once (the mesh wakes the reconciler).
func (r *Reconciler) kdumpWaitOver(host string, now time.Time) bool {
	start, ok := r.kdumpWait[host]
	if !ok {
		start = now
		r.kdumpWait[host] = now
	}
	timeout := r.cfg.KdumpTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	deadline := start.Add(timeout)
	if !now.Before(deadline) {
		r.log.Info("no kdump notice within KDUMP_TIMEOUT: fencing", "host", host, "waited", now.Sub(start).Round(time.Millisecond))
		return true
	}
	if !ok {
		r.log.Info("waiting for a kdump notice before powering off (CHECK_KDUMP)", "host", host, "until", deadline.UTC().Format(time.RFC3339))
	}
	r.lookAt(deadline)
	return false
}

// tagCacheTTL is upstream's cache TTL for tagged images and flavors.
const tagCacheTTL = 300 * time.Second

// tagIndex returns the tag index, refreshed when forced or older than the
// TTL. Fetch errors give empty lists (fail-open, as upstream).
func (r *Reconciler) tagIndex(ctx context.Context, refresh bool) TagIndex {
	r.tagMu.Lock()
	defer r.tagMu.Unlock()
	if r.tagSet && !refresh && r.now().Sub(r.tagAt) < tagCacheTTL {
		return r.tagIx
	}
	// The three listings are independent: made at once, they cost the
	// slowest of them, not their sum, on the path from verdict to fence.
	var images []nova.Image
	var flavors []nova.Flavor
	var aggs []nova.Aggregate
	var aggErr error
	var wg sync.WaitGroup
	if r.cfg.TaggedImages {
		wg.Go(func() {
			var err error
			if images, err = r.nova.ListImages(ctx); err != nil {
				r.log.Warn("cannot list images; treating none as tagged", "err", err)
			}
		})
	}
	if r.cfg.TaggedFlavors {
		wg.Go(func() {
			var err error
			if flavors, err = r.nova.ListFlavors(ctx); err != nil {
				r.log.Warn("cannot list flavors; treating none as tagged", "err", err)
			}
		})
	}
	if r.cfg.TaggedAggregates {
		wg.Go(func() {
			if aggs, aggErr = r.nova.ListAggregates(ctx); aggErr != nil {
				r.log.Warn("cannot list aggregates; not filtering by aggregate", "err", aggErr)
			}
		})
	}
	wg.Wait()
	r.tagIx = BuildTagIndex(r.cfg, images, flavors, aggs, aggErr)
	r.tagAt, r.tagSet = r.now(), true
	return r.tagIx
}

// serverImages completes ix with the images of servers that Glance's list
// did not show (hidden, or another project's), looked up one by one as
// InstanceHA does (R6.6); an answer is kept for the tag cache's TTL, a
// failed lookup counts as untagged and is tried again next time.
func (r *Reconciler) serverImages(ctx context.Context, ix TagIndex, servers []nova.Server) TagIndex {
	if !r.cfg.TaggedImages || !ix.filtersImagesOrFlavors(r.cfg) {
		return ix
	}
	var missing []string
	for _, srv := range servers {
		if srv.ImageID != "" && !ix.Known[srv.ImageID] && !slices.Contains(missing, srv.ImageID) {
			missing = append(missing, srv.ImageID)
		}
	}
	if len(missing) == 0 {
		return ix
	}
	out := ix
	out.Images, out.Known = maps.Clone(ix.Images), maps.Clone(ix.Known)
	if out.Images == nil {
		out.Images = map[string]bool{}
	}
	if out.Known == nil {
		out.Known = map[string]bool{}
	}
	for _, id := range missing {
		r.imgMu.Lock()
		l, ok := r.imgLookups[id]
		r.imgMu.Unlock()
		if !ok || r.now().Sub(l.at) >= tagCacheTTL {
			im, err := r.nova.GetImage(ctx, id)
			if err != nil {
				r.log.Warn("cannot look up a server's image; treating it as untagged", "image_id", id, "err", err)
				continue
			}
			l = imageLookup{tagged: ImageTagged(im, r.cfg.EvacuableTag), at: r.now()}
			r.imgMu.Lock()
			if r.imgLookups == nil {
				r.imgLookups = map[string]imageLookup{}
			}
			r.imgLookups[id] = l
			r.imgMu.Unlock()
			r.log.Info("image not in Glance's list looked up", "image_id", id, "hidden", im.Hidden, "tagged", l.tagged)
		}
		out.Known[id] = true
		if l.tagged {
			out.Images[id] = true
		}
	}
	return out
}

type imageLookup struct {
	tagged bool
	at     time.Time
}

// launchWorkers starts a worker for every active record that needs work
// and has none.
func (r *Reconciler) launchWorkers(ctx context.Context) {
	paused := r.paused()
	for _, rec := range r.store.FSM().Hosts() {
		if !rec.Phase.Active() || rec.Phase == PhaseReenabling {
			continue
		}
		if paused && (rec.Phase == PhaseDetected || rec.Phase == PhaseFencing && rec.Pending == nil) {
			continue
		}
		r.mu.Lock()
		if r.running[rec.Host] {
			r.mu.Unlock()
			continue
		}
		r.running[rec.Host] = true
		r.mu.Unlock()
		r.wg.Add(1)
		go func(host string) {
			defer r.wg.Done()
			defer func() {
				r.mu.Lock()
				delete(r.running, host)
				r.mu.Unlock()
			}()
			select {
			case r.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-r.sem }()
			r.recoverHost(ctx, host)
		}(rec.Host)
	}
}

// WaitIdle waits until no worker runs (tests, dev mode).
func (r *Reconciler) WaitIdle() { r.wg.Wait() }

// errWait means a step cannot proceed yet; the next cycle tries again.
var errWait = errors.New("waiting")

// errParked is a wait with nothing to follow: a host left in maintenance,
// or one whose next look is already scheduled.
var errParked = fmt.Errorf("%w: nothing to follow", errWait)

type noObserver struct{}

func (noObserver) PollCycle(time.Duration, error, int)       {}
func (noObserver) Verdicts(map[string]Verdict, time.Time)    {}
func (noObserver) ComputeServices([]nova.Service, time.Time) {}
