package metrics

import (
	"fmt"
	"sync"

	gometrics "github.com/hashicorp/go-metrics/compat"
	gmprom "github.com/hashicorp/go-metrics/compat/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// hashicorpSink guards the process-wide go-metrics configuration: raft and
// memberlist write to one global sink per process.
var hashicorpSink sync.Mutex

// ExportHashicorp sends what hashicorp/raft and hashicorp/memberlist emit
// through go-metrics (raft_commitTime, raft_leader_lastContact,
// raft_state_candidate, memberlist_health_score, memberlist_gossip, …) to
// reg, under their own names without a prefix. The metrics listed in
// HashicorpDeclared exist from the start (at zero), so that rules and
// dashboards always find them; the others appear once emitted and never
// expire.
//
// go-metrics is global: the last registry passed receives every later
// sample of the process (one daemon per process in production; dev mode
// and tests share it).
func ExportHashicorp(reg prometheus.Registerer) error {
	hashicorpSink.Lock()
	defer hashicorpSink.Unlock()
	opts := gmprom.PrometheusOpts{Expiration: 0, Registerer: reg, Name: "iha_hashicorp_sink"}
	for _, d := range HashicorpDeclared {
		switch d.Kind {
		case "gauge":
			opts.GaugeDefinitions = append(opts.GaugeDefinitions, gmprom.GaugeDefinition{Name: d.Key, Help: d.Help})
		case "counter":
			opts.CounterDefinitions = append(opts.CounterDefinitions, gmprom.CounterDefinition{Name: d.Key, Help: d.Help})
		case "summary":
			opts.SummaryDefinitions = append(opts.SummaryDefinitions, gmprom.SummaryDefinition{Name: d.Key, Help: d.Help})
		}
	}
	sink, err := gmprom.NewPrometheusSinkFrom(opts)
	if err != nil {
		return fmt.Errorf("metrics: register the raft/memberlist sink: %w", err)
	}
	cfg := gometrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableHostnameLabel = false
	cfg.EnableServiceLabel = false
	cfg.EnableRuntimeMetrics = false // the Go collector has them
	cfg.EnableTypePrefix = false
	if _, err := gometrics.NewGlobal(cfg, sink); err != nil {
		return fmt.Errorf("metrics: go-metrics: %w", err)
	}
	return nil
}

// HashicorpMetric is one go-metrics key declared up front.
type HashicorpMetric struct {
	Key  []string
	Kind string // gauge, counter, summary
	Help string
}

// Name is the metric's Prometheus name.
func (h HashicorpMetric) Name() string {
	n := ""
	for i, k := range h.Key {
		if i > 0 {
			n += "_"
		}
		n += k
	}
	return n
}

// HashicorpDeclared are the raft and memberlist metrics that rules and the
// dashboard use: declared so that they exist before their first sample.
var HashicorpDeclared = []HashicorpMetric{
	{[]string{"raft", "state", "candidate"}, "counter", "Times this node started an election (raft)."},
	{[]string{"raft", "state", "leader"}, "counter", "Times this node became the Raft leader (raft)."},
	{[]string{"raft", "transition", "heartbeat_timeout"}, "counter", "Times a follower lost the leader's heartbeat (raft)."},
	{[]string{"raft", "commitTime"}, "summary", "Milliseconds from an entry appended on the leader to its commit (raft)."},
	{[]string{"raft", "leader", "lastContact"}, "summary", "Milliseconds since the leader last heard from each follower (raft)."},
	{[]string{"raft", "fsm", "apply"}, "summary", "Milliseconds the FSM took to apply a batch (raft)."},
	{[]string{"memberlist", "health", "score"}, "gauge", "Lifeguard awareness of this member: 0 is healthy (memberlist)."},
	{[]string{"memberlist", "msg", "suspect"}, "counter", "Suspect messages received (memberlist)."},
	{[]string{"memberlist", "msg", "dead"}, "counter", "Dead messages received (memberlist)."},
}
