package leader

import "sync"

// episodeKind names a condition the reconciler reports once per episode:
// an episode begins when the condition is first seen (the report) and ends
// when the reconciler clears it (the condition went away), so that one that
// lasts for many cycles is one event, and one that comes back is another.
type episodeKind string

const (
	// episodeKdumpIgnored: a kdump notice for a host whose agent is alive
	// (KdumpNoticeIgnored).
	episodeKdumpIgnored episodeKind = "kdump"
	// episodeNovaBroken: nova-compute down on a live host
	// (NovaComputeBroken).
	episodeNovaBroken episodeKind = "nova"
	// episodeHeartbeatAlive: down in Nova, heartbeat fresh
	// (EventHostReachable).
	episodeHeartbeatAlive episodeKind = "hb"
	// episodeThreshold: THRESHOLD exceeded (ThresholdExceeded), for the
	// whole cloud (host ""), reported again when the number of admitted
	// candidates changes.
	episodeThreshold episodeKind = "threshold"
	// episodeForcedByOther: forced down and enabled by someone else
	// (ForcedDownByOther); never cleared.
	episodeForcedByOther episodeKind = "forced"
	// episodePowerOnWait: a fenced host waiting for its evacuations before
	// it is powered on; for the reconciler's term.
	episodePowerOnWait episodeKind = "poweron-wait"
)

type episodeKey struct {
	kind episodeKind
	host string
}

// episodes remembers which conditions were reported in their current
// episode. The zero value is ready; it is safe for concurrent use.
type episodes struct {
	mu   sync.Mutex
	seen map[episodeKey]string // → the variant reported (OnceFor)
}

// Once reports whether kind is new for host (host "" for the whole
// cloud): true the first time, false until Clear.
func (e *episodes) Once(kind episodeKind, host string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := episodeKey{kind, host}
	if _, ok := e.seen[k]; ok {
		return false
	}
	e.remember(k, "")
	return true
}

// OnceFor is Once for a condition with variants: true as well when
// variant differs from the one reported last in this episode.
func (e *episodes) OnceFor(kind episodeKind, host, variant string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := episodeKey{kind, host}
	if v, ok := e.seen[k]; ok && v == variant {
		return false
	}
	e.remember(k, variant)
	return true
}

// Clear ends kind's episode for host: the next Once reports again.
func (e *episodes) Clear(kind episodeKind, host string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.seen, episodeKey{kind, host})
}

// remember records k's variant; e.mu held.
func (e *episodes) remember(k episodeKey, variant string) {
	if e.seen == nil {
		e.seen = map[episodeKey]string{}
	}
	e.seen[k] = variant
}
