package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// NovaReader is every read the leader makes of Nova and Glance. The detect
// and admit stages and shadow mode's watching reach Nova only through this
// (Reconciler.read), never through the writer: in their files a Nova write
// does not compile into a call without the test
// TestStagesThatMustNotWriteHoldOnlyAReader failing.
type NovaReader interface {
	ListServices(ctx context.Context, binary string) ([]nova.Service, error)
	ListServicesOnHost(ctx context.Context, host, binary string) ([]nova.Service, error)
	ListServers(ctx context.Context, host string) ([]nova.Server, error)
	GetServer(ctx context.Context, id string) (nova.Server, error)
	ListMigrations(ctx context.Context, q nova.MigrationQuery) ([]nova.Migration, error)
	ListAggregates(ctx context.Context) ([]nova.Aggregate, error)
	ListFlavors(ctx context.Context) ([]nova.Flavor, error)
	ListImages(ctx context.Context) ([]nova.Image, error)
	GetImage(ctx context.Context, id string) (nova.Image, error)
}

// NovaWriter is every change the leader makes to Nova: the workflow's
// force-down, disable and enable (UpdateService), the evacuations and the
// locks, state resets and stops around them.
type NovaWriter interface {
	UpdateService(ctx context.Context, id string, u nova.ServiceUpdate) (nova.Service, error)
	Evacuate(ctx context.Context, id, targetHost string) error
	Lock(ctx context.Context, id, reason string) error
	Unlock(ctx context.Context, id string) error
	ResetState(ctx context.Context, id, state string) error
	Stop(ctx context.Context, id string) error
}

// Nova is what the leader needs of Nova and Glance (pkg/nova's *Client
// implements it). Implementations return *nova.APIError.
type Nova interface {
	NovaReader
	NovaWriter
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
	cfg     Policy
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
	// read is r.nova as a reader only: what the stages that must never
	// change the cloud use.
	read NovaReader
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
	return &Reconciler{obs: c.Observer, mesh: c.Mesh, wake: c.Wake, cfg: PolicyOf(c.Settings), nova: watched, read: watched, novaRaw: c.Nova, novaSeen: watched, fence: c.Fencers, store: c.Store, log: c.Logger, now: c.Now,
		track: c.TrackInterval, first: c.InitialTrackDelay, backoff: c.RetryBackoff, follow: c.FollowInterval, poke: make(chan struct{}, 1),
		sem: make(chan struct{}, workers), running: map[string]bool{}, unforceRefused: map[string]*unforceRefusal{},
		kdump: c.Kdump, kdumpQuiet: c.KdumpQuiet, kdumpWait: map[string]time.Time{}, kdumpDNS: kdumpCheck{resolver: c.Resolver},
		heartbeats: c.Heartbeats, contested: map[string]string{},
		clock: novaClock{interval: reportInterval(c.Settings.NovaReportInterval), margin: verdictMargin}}
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
			case errors.Is(err, errShadowChanged):
				// Again at once, before any cycle judges in the new mode.
				r.log.Info("shadow mode changed during the startup reconciliation: running it again in the new mode", "shadow", r.shadowing())
				continue
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

func (r *Reconciler) apply(ctx context.Context, t CommandType, body any) (any, error) {
	return r.store.Apply(ctx, t, r.now(), body)
}

func (r *Reconciler) paused() bool {
	return r.cfg.Disabled || r.store.FSM().Settings().Paused
}

func (r *Reconciler) event(ctx context.Context, host, kind, msg string, warn bool) {
	if _, err := r.apply(ctx, CmdEvent, EventCmd{Host: host, Kind: kind, Message: msg, Warning: warn}); err != nil {
		r.log.Warn("could not record event", "kind", kind, "err", err)
	}
}

// Cycle is one poll, in four stages (leader/DESIGN.md "Map"): detect
// judges every host not in recovery (detect.go), admit runs the gates on
// the failed ones and opens their records (admit.go), the workflow drives
// each open record on a worker of its own (workflow.go, evacuate.go), and
// re-enable brings back the hosts that returned (reenable.go). It makes one
// Nova call when nothing has failed.
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
	d := r.detectFailures(ctx, svcs, now)
	defer r.reportVerdicts(d, now)
	if err := r.admit(ctx, d, now); err != nil {
		return err
	}
	r.launchWorkers(ctx)
	r.reenable(ctx, d.byHost, d.cats, now)
	return nil
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
