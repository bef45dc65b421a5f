package metrics

import "github.com/prometheus/client_golang/prometheus"

// Lease is one watchdog lease as the leader's metrics read it.
type Lease struct {
	Host string
	// Holder: not released; Armed: the agent's watchdog is armed; Expired:
	// the last grant + L has passed on this node's clock; Waiting: the BMC
	// fence failed and the leader waits for the host's watchdog.
	Holder, Armed, Expired, Waiting bool
}

// LeaseSource is a Source that knows the watchdog leases (the leader's).
type LeaseSource interface {
	Leases() []Lease
}

var (
	descLeaseHolders = prometheus.NewDesc("iha_watchdog_lease_holders", "Agents holding a watchdog lease (not released).", nil, nil)
	descLeaseArmed   = prometheus.NewDesc("iha_watchdog_armed_hosts", "Hosts whose agent armed its watchdog under a lease.", nil, nil)
	descLeaseExpired = prometheus.NewDesc("iha_watchdog_leases_expired", "Lease holders whose last grant + L has passed (not renewing: cut off, stopped, or in recovery).", nil, nil)
	descLeaseWaiting = prometheus.NewDesc("iha_watchdog_fence_waits", "Hosts whose BMC fence failed and whose watchdog the leader waits for.", nil, nil)
)

func collectLeases(src Source, ch chan<- prometheus.Metric) {
	ls, ok := src.(LeaseSource)
	if !ok {
		return
	}
	var holders, armed, expired, waiting float64
	for _, l := range ls.Leases() {
		if !l.Holder {
			continue
		}
		holders++
		armed += b2f(l.Armed)
		expired += b2f(l.Expired)
		waiting += b2f(l.Waiting)
	}
	for d, v := range map[*prometheus.Desc]float64{descLeaseHolders: holders, descLeaseArmed: armed, descLeaseExpired: expired, descLeaseWaiting: waiting} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
}
