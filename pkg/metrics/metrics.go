package metrics

import (
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// RaftStats is the node's Raft view at scrape time.
type RaftStats struct {
	State        string // Leader, Follower, Candidate, Shutdown
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	// LastContact is the time since the follower last heard from the
	// leader; 0 on the leader; negative when never.
	LastContact time.Duration
	LeaderKnown bool
	Voters      int
}

// Step is one finished recovery step.
type Step struct {
	Step    string
	OK      bool
	Seconds float64
}

// Record is what the metrics need of one host's recovery record.
type Record struct {
	Host   string
	Phase  string
	Active bool
	// PhaseSince is when the record entered Phase (zero: unknown).
	PhaseSince time.Time
	// DetectionSeconds is the time from the host's last Nova heartbeat to
	// the verdict (negative: unknown, e.g. a record adopted from a marker).
	DetectionSeconds float64
	Steps            []Step
	// Evacuations are the durations of the host's finished server
	// evacuations (request to done).
	Evacuations []float64
}

// Event is one replicated event.
type Event struct {
	Seq  uint64
	Host string
	Kind string
}

// MeshStats is the gossip mesh as this node sees it.
type MeshStats struct {
	Wired       bool           // false until the gossip layer reports
	States      map[string]int // alive, suspect, dead, left → members
	HealthScore int            // Lifeguard awareness: 0 is healthy
	// Contested hosts are spoken for by more than one member (an alarm);
	// Unverified members' claims are not believed; Rejected counts mesh
	// messages dropped for not verifying.
	Contested, Unverified int
	Rejected              uint64
}

// Source is the cluster as the metrics read it. Every method returns a
// copy and may be called from any goroutine.
type Source interface {
	Raft() RaftStats
	Records() []Record
	// EventsSince returns the kept events with Seq > seq, oldest first.
	EventsSince(seq uint64) []Event
	Mesh() MeshStats
	Paused() bool
}

// Buckets. InstanceHA's evacuation buckets are kept as they are; the step
// and detection buckets cover IHA's targets (seconds, not minutes).
var (
	StepBuckets       = []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600}
	DetectionBuckets  = []float64{1, 2, 3, 5, 7, 9, 11, 14, 20, 30, 45, 60, 90, 120, 300}
	EvacuationBuckets = []float64{10, 20, 30, 60, 120, 180, 300, 600}
	PollBuckets       = []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300}
)

// meshStates are always exposed, 0 until the mesh reports.
var meshStates = []string{"alive", "suspect", "dead", "left"}

// raftStates are exposed one-hot.
var raftStates = []string{"Leader", "Follower", "Candidate", "Shutdown"}

// Metrics is the registry of one iha-leader.
type Metrics struct {
	src Source
	reg *prometheus.Registry

	mu      sync.Mutex
	lastSeq uint64

	// Counted from the replicated event log.
	fencing      *prometheus.CounterVec
	evacuation   *prometheus.CounterVec
	instanceEvac *prometheus.CounterVec
	hostDown     *prometheus.CounterVec
	reenabled    *prometheus.CounterVec
	reachable    *prometheus.CounterVec
	completed    *prometheus.CounterVec
	procFailed   *prometheus.CounterVec
	threshold    prometheus.Counter
	orphan       prometheus.Counter
	allStale     prometheus.Counter
	rateLimited  prometheus.Counter
	events       *prometheus.CounterVec
	// Shadow mode (counted from the event log too).
	shadowDecisions *prometheus.CounterVec
	observed        *prometheus.CounterVec
	wdFences        *prometheus.CounterVec
	leaseLost       *prometheus.CounterVec

	// Pushed by the leader's reconciler.
	pollCycles   *prometheus.CounterVec
	pollDuration prometheus.Histogram
	pollFailures prometheus.Gauge
	verdicts     *prometheus.GaugeVec
}

// New registers every metric over src. version labels iha_build_info.
func New(src Source, version string) *Metrics {
	m := &Metrics{src: src, reg: prometheus.NewRegistry()}
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	c := func(name, help string) prometheus.Counter {
		x := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		m.reg.MustRegister(x)
		return x
	}
	m.fencing = cv("instanceha_fencing_total", "Fencing operations by host and result (started, succeeded, failed).", "host", "result")
	m.evacuation = cv("instanceha_evacuation_total", "Host evacuations by host and result (started, succeeded, failed).", "host", "result")
	m.instanceEvac = cv("instanceha_instance_evacuation_total", "Instance evacuations by host and result (succeeded, failed).", "host", "result")
	m.hostDown = cv("instanceha_host_down_total", "Hosts judged failed.", "host")
	m.reenabled = cv("instanceha_host_reenabled_total", "Hosts re-enabled after recovery.", "host")
	m.reachable = cv("instanceha_host_reachable_total", "Hosts found reachable again before they were fenced.", "host")
	m.completed = cv("instanceha_recovery_completed_total", "Recoveries whose evacuations completed.", "host")
	m.procFailed = cv("instanceha_processing_failed_total", "Recoveries that failed and need an operator.", "host")
	m.threshold = c("instanceha_threshold_exceeded_total", "Poll cycles in which more than THRESHOLD percent of the computes failed.")
	m.orphan = c("instanceha_orphaned_host_recovered_total", "Forced-down hosts found at startup and resumed.")
	m.allStale = c("instanceha_all_services_stale_total", "Poll cycles in which every compute looked stale (breaker).")
	m.rateLimited = c("instanceha_fencing_rate_limited_total", "Hosts held back by MAX_HOSTS_PER_CYCLE.")
	m.events = cv("iha_events_total", "Replicated events by kind, counted on every controller.", "kind")
	m.shadowDecisions = cv("iha_shadow_decisions_total", "Shadow mode's would-be decisions by kind (ShadowWouldFence, ShadowWouldEvacuate, ShadowWouldSkip, …).", "kind")
	m.observed = cv("iha_observed_actions_total", "Actions of another agent seen in Nova while shadowing, by kind (ObservedForceDown, ObservedEvacuation, …).", "kind")
	m.wdFences = cv("iha_watchdog_fences_total", "Hosts recorded as fenced by their watchdog (the BMC failed, the agent was armed).", "host")
	m.leaseLost = cv("iha_watchdog_leases_lost_total", "Watchdog leases that ran out while the leader would have granted them.", "host")

	m.pollCycles = cv("instanceha_poll_cycles_total", "Poll cycles of Nova by result (success, error); leader only.", "result")
	m.pollDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "instanceha_poll_duration_seconds",
		Help: "Duration of one poll cycle of Nova; leader only.", Buckets: PollBuckets})
	m.pollFailures = prometheus.NewGauge(prometheus.GaugeOpts{Name: "instanceha_poll_consecutive_failures",
		Help: "Poll cycles failed in a row; leader only."})
	m.verdicts = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "iha_hosts_by_verdict",
		Help: "Hosts by the verdict of the last poll cycle (healthy, nova-compute-broken, wait, failed, …); leader only, hosts in recovery or maintenance are not judged."},
		[]string{"verdict"})
	m.reg.MustRegister(m.pollDuration, m.pollFailures, m.verdicts)

	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "iha_build_info", Help: "Always 1; the version is a label.",
		ConstLabels: prometheus.Labels{"version": version}})
	info.Set(1)
	m.reg.MustRegister(info, &stateCollector{m: m}, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObservePoll records one poll cycle of Nova. The leader's reconciler
// calls it after every cycle; failures counts the cycles failed in a row.
func (m *Metrics) ObservePoll(took time.Duration, err error, failures int) {
	res := "success"
	if err != nil {
		res = "error"
	}
	m.pollCycles.WithLabelValues(res).Inc()
	m.pollDuration.Observe(took.Seconds())
	m.pollFailures.Set(float64(failures))
}

// ObserveVerdicts records how many hosts the last poll cycle gave each
// verdict. Verdicts absent from counts (but seen before) drop to 0.
func (m *Metrics) ObserveVerdicts(counts map[string]int) {
	m.verdicts.Reset()
	for _, v := range KnownVerdicts {
		m.verdicts.WithLabelValues(v).Set(0)
	}
	for v, n := range counts {
		m.verdicts.WithLabelValues(v).Set(float64(n))
	}
}

// KnownVerdicts are exposed at 0 from the first cycle on, so that an alert
// on one of them has a series to read (the leader's verdict table,
// leader/verdict.go; pkg/metrics does not import the leader).
var KnownVerdicts = []string{"healthy", "nova-compute-broken", "wait", "failed", "instanceha-rule", "kdump", "kdump-ignored"}

// Sync counts the events applied since the last call. Handler calls it
// before every scrape; tests may call it directly.
func (m *Metrics) Sync() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.src.EventsSince(m.lastSeq) {
		m.count(e)
		m.lastSeq = e.Seq
	}
}

func (m *Metrics) count(e Event) {
	m.events.WithLabelValues(e.Kind).Inc()
	switch {
	case strings.HasPrefix(e.Kind, "ShadowWould"):
		m.shadowDecisions.WithLabelValues(e.Kind).Inc()
	case strings.HasPrefix(e.Kind, "Observed"):
		m.observed.WithLabelValues(e.Kind).Inc()
	}
	h := e.Host
	switch e.Kind {
	case "HostDown":
		m.hostDown.WithLabelValues(h).Inc()
	case "FencingStarted":
		m.fencing.WithLabelValues(h, "started").Inc()
	case "FencingSucceeded", "FencingConfirmedByOperator":
		m.fencing.WithLabelValues(h, "succeeded").Inc()
	case "FencingFailed":
		m.fencing.WithLabelValues(h, "failed").Inc()
	case "EvacuationStarted":
		m.evacuation.WithLabelValues(h, "started").Inc()
	case "EvacuationSucceeded":
		m.evacuation.WithLabelValues(h, "succeeded").Inc()
	case "EvacuationFailed":
		m.evacuation.WithLabelValues(h, "failed").Inc()
	case "InstanceEvacuationSucceeded":
		m.instanceEvac.WithLabelValues(h, "succeeded").Inc()
	case "InstanceEvacuationFailed":
		m.instanceEvac.WithLabelValues(h, "failed").Inc()
	case "InstanceEvacuationStarted":
		m.instanceEvac.WithLabelValues(h, "started").Inc()
	case "HostReenabled":
		m.reenabled.WithLabelValues(h).Inc()
	case "HostReachable":
		m.reachable.WithLabelValues(h).Inc()
	case "RecoveryCompleted":
		m.completed.WithLabelValues(h).Inc()
	case "ProcessingFailed":
		m.procFailed.WithLabelValues(h).Inc()
	case "ThresholdExceeded":
		m.threshold.Inc()
	case "OrphanedHostRecovered":
		m.orphan.Inc()
	case "AllServicesStale":
		m.allStale.Inc()
	case "FencingRateLimited":
		m.rateLimited.Inc()
	case "WatchdogSelfFenceAssumed":
		m.wdFences.WithLabelValues(h).Inc()
	case "LeaseLost":
		m.leaseLost.WithLabelValues(h).Inc()
	}
}

// Registry is the registry (for tests and for adding collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves /metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.Sync()
		h.ServeHTTP(w, r)
	})
}

// stateCollector computes, at each scrape, the gauges and histograms that
// the replicated state determines.
type stateCollector struct{ m *Metrics }

var (
	descProcessing = prometheus.NewDesc("instanceha_hosts_processing", "Hosts whose recovery is in progress.", nil, nil)
	descRecords    = prometheus.NewDesc("iha_recovery_records", "Recovery records by phase.", []string{"phase"}, nil)
	descPhaseSince = prometheus.NewDesc("iha_recovery_phase_since_timestamp_seconds", "When each host in recovery entered its current phase (Unix time); active records only.", []string{"host", "phase"}, nil)
	descStep       = prometheus.NewDesc("iha_recovery_step_duration_seconds", "Duration of each recovery step (intent committed to result committed), from the replicated step records.", []string{"step", "outcome"}, nil)
	descDetect     = prometheus.NewDesc("iha_detection_latency_seconds", "Time from a failed host's last Nova heartbeat to the verdict.", nil, nil)
	descEvacDur    = prometheus.NewDesc("instanceha_instance_evacuation_duration_seconds", "Duration of instance evacuations (request to done), by source host.", []string{"host"}, nil)
	descPaused     = prometheus.NewDesc("iha_paused", "1 when recovery is paused (DISABLED at run time).", nil, nil)
	descRaftState  = prometheus.NewDesc("iha_raft_state", "1 for this node's Raft state.", []string{"state"}, nil)
	descRaftLeader = prometheus.NewDesc("iha_raft_leader", "1 when this node is the Raft leader.", nil, nil)
	descRaftKnown  = prometheus.NewDesc("iha_raft_leader_known", "1 when this node knows a Raft leader.", nil, nil)
	descTerm       = prometheus.NewDesc("iha_raft_term", "Current Raft term.", nil, nil)
	descCommit     = prometheus.NewDesc("iha_raft_commit_index", "Raft commit index.", nil, nil)
	descApplied    = prometheus.NewDesc("iha_raft_applied_index", "Last Raft entry applied to this replica.", nil, nil)
	descContact    = prometheus.NewDesc("iha_raft_last_contact_seconds", "Seconds since this follower heard from the leader (0 on the leader, -1 never).", nil, nil)
	descVoters     = prometheus.NewDesc("iha_raft_voters", "Voters in the Raft configuration.", nil, nil)
	descMeshWired  = prometheus.NewDesc("iha_mesh_wired", "1 once the gossip mesh reports to this node; mesh gauges are 0 before.", nil, nil)
	descMesh       = prometheus.NewDesc("iha_mesh_members", "Gossip mesh members by state.", []string{"state"}, nil)
	descHealth     = prometheus.NewDesc("iha_mesh_health_score", "memberlist Lifeguard awareness score of this node (0 is healthy).", nil, nil)
	descContested  = prometheus.NewDesc("iha_mesh_contested_hosts", "Hosts more than one mesh member speaks for (an alarm: each is judged by Nova's rule alone).", nil, nil)
	descUnverified = prometheus.NewDesc("iha_mesh_unverified_members", "Compute members whose claim to a host is not believed (no current proof of identity).", nil, nil)
	descRejected   = prometheus.NewDesc("iha_mesh_messages_rejected_total", "Mesh messages dropped because they did not verify or spoke for another member.", nil, nil)
	descShadow     = prometheus.NewDesc("iha_shadow_mode", "1 when the leader shadows: it decides and records, and never fences nor writes to Nova.", nil, nil)
	descIncidents  = prometheus.NewDesc("iha_shadow_incidents_open", "Shadow mode's open incidents (hosts failing now, by either side's account).", nil, nil)
)

// ShadowSource is a Source that knows shadow mode.
type ShadowSource interface {
	Shadow() bool
	OpenIncidents() int
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descProcessing, descRecords, descPhaseSince, descStep, descDetect, descEvacDur, descPaused,
		descRaftState, descRaftLeader, descRaftKnown, descTerm, descCommit, descApplied, descContact, descVoters,
		descMeshWired, descMesh, descHealth, descContested, descUnverified, descRejected, descShadow, descIncidents,
		descLeaseHolders, descLeaseArmed, descLeaseExpired, descLeaseWaiting} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.m.src
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}

	rs := src.Raft()
	for _, s := range raftStates {
		gauge(descRaftState, b2f(rs.State == s), s)
	}
	gauge(descRaftLeader, b2f(rs.State == "Leader"))
	gauge(descRaftKnown, b2f(rs.LeaderKnown))
	gauge(descTerm, float64(rs.Term))
	counter(descCommit, float64(rs.CommitIndex))
	counter(descApplied, float64(rs.AppliedIndex))
	contact := rs.LastContact.Seconds()
	if rs.LastContact < 0 {
		contact = -1
	}
	gauge(descContact, contact)
	gauge(descVoters, float64(rs.Voters))

	ms := src.Mesh()
	gauge(descMeshWired, b2f(ms.Wired))
	for _, s := range meshStates {
		gauge(descMesh, float64(ms.States[s]), s)
	}
	gauge(descHealth, float64(ms.HealthScore))
	gauge(descContested, float64(ms.Contested))
	gauge(descUnverified, float64(ms.Unverified))
	counter(descRejected, float64(ms.Rejected))
	gauge(descPaused, b2f(src.Paused()))
	if ss, ok := src.(ShadowSource); ok {
		gauge(descShadow, b2f(ss.Shadow()))
		gauge(descIncidents, float64(ss.OpenIncidents()))
	}
	collectLeases(src, ch)

	recs := src.Records()
	active := 0
	phases := map[string]int{}
	steps := map[[2]string]*hist{}
	detect := newHist(DetectionBuckets)
	evac := map[string]*hist{}
	for _, r := range recs {
		if r.Active {
			active++
			if !r.PhaseSince.IsZero() {
				gauge(descPhaseSince, float64(r.PhaseSince.UnixNano())/1e9, r.Host, r.Phase)
			}
		}
		phases[r.Phase]++
		if r.DetectionSeconds >= 0 {
			detect.observe(r.DetectionSeconds)
		}
		for _, s := range r.Steps {
			out := "ok"
			if !s.OK {
				out = "failed"
			}
			k := [2]string{s.Step, out}
			if steps[k] == nil {
				steps[k] = newHist(StepBuckets)
			}
			steps[k].observe(s.Seconds)
		}
		for _, d := range r.Evacuations {
			if evac[r.Host] == nil {
				evac[r.Host] = newHist(EvacuationBuckets)
			}
			evac[r.Host].observe(d)
		}
	}
	gauge(descProcessing, float64(active))
	names := make([]string, 0, len(phases))
	for p := range phases {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		gauge(descRecords, float64(phases[p]), p)
	}
	for k, h := range steps {
		ch <- prometheus.MustNewConstHistogram(descStep, h.n, h.sum, h.buckets(), k[0], k[1])
	}
	ch <- prometheus.MustNewConstHistogram(descDetect, detect.n, detect.sum, detect.buckets())
	for host, h := range evac {
		ch <- prometheus.MustNewConstHistogram(descEvacDur, h.n, h.sum, h.buckets(), host)
	}
}

// hist accumulates a histogram for a const metric.
type hist struct {
	bounds []float64
	counts []uint64
	n      uint64
	sum    float64
}

func newHist(b []float64) *hist { return &hist{bounds: b, counts: make([]uint64, len(b))} }

func (h *hist) observe(v float64) {
	h.n++
	h.sum += v
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i]++
		}
	}
}

// buckets are cumulative, as Prometheus wants them.
func (h *hist) buckets() map[float64]uint64 {
	out := make(map[float64]uint64, len(h.bounds))
	for i, b := range h.bounds {
		out[b] = h.counts[i]
	}
	return out
}
