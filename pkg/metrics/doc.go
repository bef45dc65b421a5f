// Package metrics is IHA's Prometheus exposition: InstanceHA's metric names
// where the meaning is the same (so existing dashboards keep working), and
// IHA's own for Raft, the gossip mesh, detection latency and the duration
// of each recovery step.
//
// It owns the metric names, labels and buckets. It reads the cluster only
// through the Source interface, at scrape time: counters of recovery events
// are counted from the replicated event log (so every controller, leader or
// follower, exposes the same counts, and a failover does not lose them),
// and the step histograms are computed from the replicated step records
// (StepRecord.Started/Finished). The only measurements it is pushed are
// those the log does not hold: poll cycles, through ObservePoll, which
// the leader's reconciler calls.
//
// It must never import the daemons (leader, agent, gossip), never block a
// scrape on the network, and never expose a credential in a label.
package metrics
