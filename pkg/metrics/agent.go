package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// KdumpStats are the agent's fence_kdump packet counters: every packet read
// is in Received and in exactly one outcome.
type KdumpStats struct {
	Received uint64
	// Outcomes by name: relayed, repeated (relayed less than the relay
	// interval ago), and the drops short, bad_magic, flood, unresolved,
	// relay_error. A longer packet or another version is no drop: it is
	// read by its magic, as InstanceHA reads it.
	Outcomes map[string]uint64
}

// KdumpOutcomes are always exposed (0 until seen).
var KdumpOutcomes = []string{"relayed", "repeated", "short", "bad_magic", "flood", "unresolved", "relay_error"}

// GateResults are the answers `iha-agent gate` got, always exposed: allow,
// refuse (the leader holds nova-compute), unverified (an answer that could
// not be read or trusted: not 200, not the gate's JSON, a TLS failure) and
// unreachable (no answer).
var GateResults = []string{"allow", "refuse", "unverified", "unreachable"}

// AgentSource is an iha-agent as its metrics read it, at scrape time.
type AgentSource interface {
	// Joined is true once the agent reached a member of the mesh.
	Joined() bool
	Mesh() MeshStats
	// Controllers is how many controllers the mesh shows alive.
	Controllers() int
	// Kdump is nil when the kdump listener is off.
	Kdump() *KdumpStats
	// Gate returns the answers every `iha-agent gate` run on this host
	// recorded, by result.
	Gate() map[string]uint64
}

// Agent is the registry of one iha-agent.
type Agent struct {
	reg *prometheus.Registry
}

// NewAgent registers the agent's metrics over src.
func NewAgent(src AgentSource, version string) *Agent {
	a := &Agent{reg: prometheus.NewRegistry()}
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "iha_agent_build_info", Help: "Always 1; the version is a label.",
		ConstLabels: prometheus.Labels{"version": version}})
	info.Set(1)
	a.reg.MustRegister(info, &agentCollector{src: src}, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return a
}

// Registry is the registry (for tests and for the memberlist sink).
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// Handler serves /metrics in Prometheus' text format.
func (a *Agent) Handler() http.Handler { return promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}) }

var (
	descAgentJoined  = prometheus.NewDesc("iha_agent_mesh_joined", "1 once this agent reached a member of the gossip mesh.", nil, nil)
	descAgentMembers = prometheus.NewDesc("iha_agent_mesh_members", "Gossip mesh members by state, as this agent sees them.", []string{"state"}, nil)
	descAgentHealth  = prometheus.NewDesc("iha_agent_mesh_health_score", "memberlist Lifeguard awareness score of this agent (0 is healthy).", nil, nil)
	descAgentCtl     = prometheus.NewDesc("iha_agent_controllers_alive", "Controllers (iha-leader) alive in the mesh, as this agent sees them.", nil, nil)
	descKdumpRecv    = prometheus.NewDesc("iha_agent_kdump_packets_received_total", "fence_kdump packets read by this agent.", nil, nil)
	descKdumpOut     = prometheus.NewDesc("iha_agent_kdump_packets_total", "fence_kdump packets by outcome: relayed, repeated, or dropped (short, bad_magic, flood, unresolved, relay_error).", []string{"outcome"}, nil)
	descKdumpOn      = prometheus.NewDesc("iha_agent_kdump_listening", "1 when this agent listens for fence_kdump packets.", nil, nil)
	descWdArmed      = prometheus.NewDesc("iha_agent_watchdog_armed", "1 while this agent holds its watchdog open (armed under a lease); absent when watchdog: is off.", nil, nil)
	descWdFeeding    = prometheus.NewDesc("iha_agent_watchdog_feeding", "1 while this agent feeds its watchdog (0 when armed: it is self-fencing).", nil, nil)
	descWdRemaining  = prometheus.NewDesc("iha_agent_watchdog_lease_remaining_seconds", "What is left of this agent's watchdog lease (negative: it ran out).", nil, nil)
	descWdTimeout    = prometheus.NewDesc("iha_agent_watchdog_timeout_seconds", "W, the watchdog's timeout as the device reports it.", nil, nil)
	descWdRequests   = prometheus.NewDesc("iha_agent_watchdog_lease_requests_total", "Lease requests by result: granted, refused (by the leader), failed (no verified answer).", []string{"result"}, nil)
	descWdRounds     = prometheus.NewDesc("iha_agent_watchdog_peer_rounds_total", "Peer rounds after the lease ran out, by verdict: feed (the control plane is down) or stop (this host is cut off).", []string{"verdict"}, nil)
	descWdFeedErrors = prometheus.NewDesc("iha_agent_watchdog_feed_errors_total", "Writes to the watchdog device that failed.", nil, nil)
	descGate         = prometheus.NewDesc("iha_agent_gate_answers_total", "Answers the nova-compute gate (iha-agent gate) got from controllers, by result (allow, refuse, unverified, unreachable).", []string{"result"}, nil)
)

// WatchdogStats are the watchdog keeper's state and counters.
type WatchdogStats struct {
	Armed, Feeding                                                 bool
	W, Remaining                                                   time.Duration
	Grants, Refusals, Failures, FeedErrors, RoundsFeed, RoundsStop uint64
}

// WatchdogSource is an AgentSource whose agent may keep a watchdog;
// Watchdog returns nil when it is off.
type WatchdogSource interface {
	Watchdog() *WatchdogStats
}

type agentCollector struct{ src AgentSource }

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAgentJoined, descAgentMembers, descAgentHealth, descAgentCtl, descKdumpRecv, descKdumpOut, descKdumpOn, descGate,
		descWdArmed, descWdFeeding, descWdRemaining, descWdTimeout, descWdRequests, descWdRounds, descWdFeedErrors} {
		ch <- d
	}
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descAgentJoined, b2f(c.src.Joined()))
	ms := c.src.Mesh()
	for _, s := range meshStates {
		gauge(descAgentMembers, float64(ms.States[s]), s)
	}
	gauge(descAgentHealth, float64(ms.HealthScore))
	gauge(descAgentCtl, float64(c.src.Controllers()))
	k := c.src.Kdump()
	gauge(descKdumpOn, b2f(k != nil))
	if k == nil {
		k = &KdumpStats{}
	}
	counter(descKdumpRecv, k.Received)
	for _, o := range KdumpOutcomes {
		counter(descKdumpOut, k.Outcomes[o], o)
	}
	g := c.src.Gate()
	for _, r := range GateResults {
		counter(descGate, g[r], r)
	}
	if ws, ok := c.src.(WatchdogSource); ok {
		if w := ws.Watchdog(); w != nil {
			gauge(descWdArmed, b2f(w.Armed))
			gauge(descWdFeeding, b2f(w.Feeding))
			gauge(descWdRemaining, w.Remaining.Seconds())
			gauge(descWdTimeout, w.W.Seconds())
			counter(descWdRequests, w.Grants, "granted")
			counter(descWdRequests, w.Refusals, "refused")
			counter(descWdRequests, w.Failures, "failed")
			counter(descWdRounds, w.RoundsFeed, "feed")
			counter(descWdRounds, w.RoundsStop, "stop")
			counter(descWdFeedErrors, w.FeedErrors)
		}
	}
}
