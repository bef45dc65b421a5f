package leader

import (
	"fmt"
	"time"

	"github.com/ihaproject/iha/pkg/nova"
)

// novaClock estimates how far Nova's clock (the one that stamps a service's
// updated_at) runs behind this leader's, from the listings of the compute
// services alone.
//
// A listing that arrives at readAt (this leader's clock) can only show
// heartbeats that happened before readAt, so for every service Nova
// calls up, readAt − updated_at ≥ D, where D is this leader's clock minus
// Nova's (updated_at is also truncated to the second, which only adds).
// The smallest such lag over the recent listings, Lag, is therefore an
// upper bound on D, and a tight one: among a handful of computes reporting
// every report_interval at their own phases, one has just reported.
//
// Judge reads Nova's times Lag later when |Lag| is past the verdict margin
// (within it, the margin already absorbs it, and the rule is the one
// measured at Nova's defaults): a heartbeat is then never placed earlier
// than it happened on this leader's clock, so a Nova whose clock runs
// behind cannot make a host heard after the mesh lost it look silent
// (chaos scenario 8: Nova 30 s behind, a host cut from the mesh only was
// judged failed and powered off). Reading a heartbeat too late only makes
// a verdict wait longer.
//
// If Nova's clock steps back (D grows), the older listings would keep Lag
// too small; a listing whose freshest up service is more than a report
// interval and the margin older than Lag allows cannot come from the same
// clock with computes reporting, and the older listings are forgotten
// (when Nova stopped recording heartbeats altogether, Lag grows with the
// outage: verdicts wait, which is the safe side).
// EventNovaClockSkew tells, once per episode, that Nova's clock is off from
// the leader's by more than the verdict margin (and when it agrees again).
const EventNovaClockSkew = "NovaClockSkew"

type novaClock struct {
	interval, margin time.Duration
	reads            []clockRead // newest last
}

type clockRead struct {
	at  time.Time
	lag time.Duration // min readAt − updated_at over the up services
	n   int           // services counted
}

const (
	clockWindow = 5 * time.Minute // listings older than this are forgotten
	clockReads  = 64              // and at most this many are kept
)

// observe records one listing of the compute services that arrived at
// readAt. It reports whether the older listings were dropped because this
// one cannot come from the same Nova clock.
func (c *novaClock) observe(svcs []nova.Service, readAt time.Time) (stepped bool) {
	var lag time.Duration
	n := 0
	for _, s := range svcs {
		if s.UpdatedAt.IsZero() || s.State != "up" || s.ForcedDown {
			continue
		}
		if l := readAt.Sub(s.UpdatedAt); n == 0 || l < lag {
			lag = l
		}
		n++
	}
	if n == 0 {
		return false
	}
	keep := c.reads[:0]
	for _, r := range c.reads {
		if readAt.Sub(r.at) <= clockWindow {
			keep = append(keep, r)
		}
	}
	c.reads = keep
	if old, ok := c.lag(); ok && lag > old+c.interval+c.margin {
		c.reads, stepped = c.reads[:0], true
	}
	c.reads = append(c.reads, clockRead{at: readAt, lag: lag, n: n})
	if len(c.reads) > clockReads {
		c.reads = c.reads[len(c.reads)-clockReads:]
	}
	return stepped
}

// lag is the smallest lag of the kept listings.
func (c *novaClock) lag() (time.Duration, bool) {
	if len(c.reads) == 0 {
		return 0, false
	}
	m := c.reads[0].lag
	for _, r := range c.reads[1:] {
		m = min(m, r.lag)
	}
	return m, true
}

// skew is how much later than its face value a Nova time is read: the lag
// when it is past the margin either way, else 0. It applies from the first
// listing on (an estimate too high only makes verdicts wait).
func (c *novaClock) skew() time.Duration {
	l, ok := c.lag()
	if !ok || (l <= c.margin && l >= -c.margin) {
		return 0
	}
	return l
}

// spacing is how far apart listings must come for the estimate to settle.
func (c *novaClock) spacing() time.Duration { return max(c.interval/10, 200*time.Millisecond) }

// settled reports whether the kept listings came densely over a whole
// report interval: then every up compute reported within a spacing of
// some listing, and the lag is within a spacing and a second (updated_at's
// truncation) of the true offset. A first listing may find every compute
// late in its report cycle: until the estimate settles, a skew past the
// margin may be that alone, so the reconciler looks again a spacing later
// (and raises no event yet).
func (c *novaClock) settled() bool {
	if len(c.reads) == 0 {
		return false
	}
	newest := c.reads[len(c.reads)-1].at
	n := 0
	for _, r := range c.reads {
		if !r.at.Before(newest.Add(-c.interval)) {
			n++
		}
	}
	return n >= int(c.interval/c.spacing())
}

// describe says what the estimate rests on, for the event and the log.
func (c *novaClock) describe() string {
	l, _ := c.lag()
	n := 0
	for _, r := range c.reads {
		n += r.n
	}
	dir := "behind"
	if l < 0 {
		dir, l = "ahead of", -l
	}
	return fmt.Sprintf("Nova's clock runs about %s %s this leader's (the freshest updated_at over %d listings, %d service rows; "+
		"or Nova stopped recording heartbeats): Nova's times are read %s later when judged against the mesh and DELTA (margin %s); check NTP on the controllers",
		l.Round(100*time.Millisecond), dir, len(c.reads), n, c.skew().Round(100*time.Millisecond), c.margin)
}
