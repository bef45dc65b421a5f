package leader

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// HeartbeatLog keeps the last InstanceHA heartbeat (HBV2, CHECK_HEARTBEAT)
// of each host, by short name as InstanceHA stores it (R13.2). Every
// controller fills its own from its listener and the copies the others
// forward, so a new leader has them too. Safe for concurrent use.
type HeartbeatLog struct {
	mu      sync.Mutex
	started time.Time
	hosts   map[string]heartbeatEntry
}

type heartbeatEntry struct {
	at   time.Time // when this controller received it (its clock)
	sent time.Time // the sender's timestamp
}

// NewHeartbeatLog returns an empty log.
func NewHeartbeatLog() *HeartbeatLog { return &HeartbeatLog{hosts: map[string]heartbeatEntry{}} }

// ErrHeartbeatReplay: a heartbeat not newer than the last one accepted from
// its host (a copy forwarded by another controller, or a replay).
var ErrHeartbeatReplay = errors.New("heartbeat not newer than the last one from its host")

// Started records when the listener started: the grace period (R13.4)
// runs from there.
func (h *HeartbeatLog) Started(at time.Time) {
	h.mu.Lock()
	h.started = at
	h.mu.Unlock()
}

// Record stores a heartbeat of host sent at sent and received at at. A
// heartbeat whose timestamp is not later than the last accepted one from
// the same host is refused with ErrHeartbeatReplay: a captured packet
// replayed within InstanceHA's 120 s window cannot keep a dead host alive
// (W18: InstanceHA has no replay check).
func (h *HeartbeatLog) Record(host string, sent, at time.Time) error {
	if h == nil || host == "" {
		return nil
	}
	host = config.ShortName(host)
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.hosts[host]; ok && !sent.After(e.sent) {
		return ErrHeartbeatReplay
	}
	if len(h.hosts) > 2000 { // InstanceHA's cleanup threshold and age
		for k, e := range h.hosts {
			if at.Sub(e.at) > 600*time.Second {
				delete(h.hosts, k)
			}
		}
	}
	h.hosts[host] = heartbeatEntry{at: at, sent: sent}
	return nil
}

// Last returns when this controller last received a heartbeat of the Nova
// host host (matched by short name).
func (h *HeartbeatLog) Last(host string) (time.Time, bool) {
	if h == nil {
		return time.Time{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.hosts[config.ShortName(host)]
	return e.at, ok
}

// snapshot returns when the listener started and the last heartbeat of
// each of hosts that has one.
func (h *HeartbeatLog) snapshot(hosts []string) (time.Time, map[string]time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	last := make(map[string]time.Time, len(hosts))
	for _, host := range hosts {
		if e, ok := h.hosts[config.ShortName(host)]; ok {
			last[host] = e.at
		}
	}
	return h.started, last
}

// restore sets host's last heartbeat as a decision log recorded it
// (replay): the sender's timestamp is not kept, so the check for replayed
// packets is not what is restored.
func (h *HeartbeatLog) restore(host string, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hosts[config.ShortName(host)] = heartbeatEntry{at: at, sent: at}
}

// EventHostReachable is InstanceHA's event for a host Nova reports down
// whose heartbeat is fresh: it is not fenced.
const (
	EventHostReachable         = "HostReachable"
	EventHeartbeatCliff        = "HeartbeatCliff"
	EventHeartbeatCliffExpired = "HeartbeatCliffExpired"
)

// heartbeatCliff is the heartbeat's mass-loss guard (R13.6–R13.9), computed
// from the heartbeats themselves rather than from the hosts in recovery
// (W2): of the active computes heard within the last two HEARTBEAT_TIMEOUTs
// (at least three), the share that went silent within the last one. At
// HEARTBEAT_CLIFF_THRESHOLD percent or more the network, not the hosts, is
// the likelier story: the verdicts that rest on InstanceHA's rule wait.
// The episode ends when the heartbeats come back (fewer than the threshold
// of its hosts still silent and active), or, after
// HEARTBEAT_CLIFF_MAX_CYCLES poll intervals, the loss is taken as genuine.
type heartbeatCliff struct {
	since    time.Time // when the current episode began (zero: none)
	expired  bool
	lost     []string // the hosts that went silent when it began
	baseline int
}

// observeHeartbeats updates the cliff guard for this cycle (CHECK_HEARTBEAT).
func (r *Reconciler) observeHeartbeats(ctx context.Context, svcs []nova.Service, now time.Time) {
	if !r.cfg.CheckHeartbeat || r.heartbeats == nil || r.heartbeatGrace(now) {
		return
	}
	timeout := r.cfg.HeartbeatTimeout
	active := make(map[string]bool, len(svcs))
	for _, s := range svcs {
		active[s.Host] = !disabled(s) && !s.ForcedDown
	}
	silent := func(h string) bool {
		at, ok := r.hbLast[h]
		return !ok || now.Sub(at) > timeout
	}
	c := &r.hbCliff
	pct := r.cfg.HeartbeatCliffThreshold
	if !c.since.IsZero() {
		still := 0
		for _, h := range c.lost {
			if active[h] && silent(h) {
				still++
			}
		}
		if still*100 < pct*c.baseline {
			r.log.Info("heartbeat cliff over", "still_silent", still, "of", len(c.lost), "expired", c.expired)
			*c = heartbeatCliff{}
			return
		}
	} else {
		var lost []string
		baseline := 0
		for _, s := range svcs {
			if !active[s.Host] {
				continue
			}
			at, ok := r.hbLast[s.Host]
			if !ok || now.Sub(at) > 2*timeout {
				continue
			}
			baseline++
			if now.Sub(at) > timeout {
				lost = append(lost, s.Host)
			}
		}
		if baseline < 3 || len(lost)*100 < pct*baseline {
			return
		}
		sort.Strings(lost)
		*c = heartbeatCliff{since: now, lost: lost, baseline: baseline}
		msg := fmt.Sprintf("heartbeats of %d of %d computes stopped within HEARTBEAT_TIMEOUT (>= %d%%): suspecting the network; "+
			"hosts judged by Nova's rule alone wait up to %s (HEARTBEAT_CLIFF_MAX_CYCLES x POLL): %v",
			len(lost), baseline, pct, r.cliffWindow(), lost)
		r.log.Error(msg)
		r.event(ctx, "", EventHeartbeatCliff, msg, true)
	}
	window := r.cliffWindow()
	if !c.expired && now.Sub(c.since) >= window {
		c.expired = true
		msg := fmt.Sprintf("heartbeat cliff lasted %s (HEARTBEAT_CLIFF_MAX_CYCLES x POLL): taken as genuine failures: %v", window, c.lost)
		r.log.Warn(msg)
		r.event(ctx, "", EventHeartbeatCliffExpired, msg, true)
	}
	if !c.expired {
		r.lookAt(c.since.Add(window))
	}
}

func (r *Reconciler) cliffWindow() time.Duration {
	return time.Duration(max(1, r.cfg.HeartbeatCliffMaxCycles)) * r.cfg.Poll
}

// heartbeatGrace is R13.4: until the listener has run for HEARTBEAT_TIMEOUT
// every host passes untouched (it may not have heard anyone yet).
func (r *Reconciler) heartbeatGrace(now time.Time) bool {
	st := r.hbStarted
	return st.IsZero() || now.Sub(st) < r.cfg.HeartbeatTimeout
}
