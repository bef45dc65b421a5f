package gossip

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Profile holds the failure-detector knobs that operators may tune. Each has
// a config key (in the same `config:` map as InstanceHA's keys, or the
// agent's file); values are Go durations ("500ms") or seconds ("0.5").
//
//	                        field           fast (default)  lan (memberlist LAN)
//	GOSSIP_PROBE_INTERVAL   ProbeInterval   500ms           1s
//	GOSSIP_PROBE_TIMEOUT    ProbeTimeout    200ms           500ms
//	GOSSIP_SUSPICION_MULT   SuspicionMult   4               4
//	GOSSIP_GOSSIP_INTERVAL  GossipInterval  100ms           200ms
//
// Detection time (crash → first member declares the node dead) in a healthy
// mesh of N members, from memberlist's code (suspicion.go, util.go suspicionTimeout; state.go probeNode):
//
//	scale(N) = max(1, log10 N)
//	min      = SuspicionMult × scale(N) × ProbeInterval
//	max      = 6 × min                  (SuspicionMaxTimeoutMult)
//	k        = SuspicionMult − 2        confirmations that bring the timer
//	                                    from max down to min (0 when N−2 < k:
//	                                    min from the start)
//	expected ≈ 1.58 × ProbeInterval + ProbeInterval + min
//	worst    ≈ 2 × ProbeInterval + ProbeInterval + max   (no confirmations)
//
// A member that stalls for X (frozen, every packet lost) is not declared
// dead while X < StallTolerance = min − 2 × ProbeInterval: a probe of it
// fails one probe interval after the stall begins at the earliest, its
// accuser's timer runs min from there, and after the stall the member needs
// up to about two probe intervals to hear the suspicion and refute it. If its
// socket keeps the packets while it is stopped (SIGSTOP), it refutes at
// once and survives up to about min + ProbeInterval; StoppedTolerance
// promises min.
//
// Fast profile: N=10 min 2 s (the stopped-process tolerance), expected
// 3.3 s, stall tolerance 1 s; N=100 min 4 s, 5.3 s, 3 s; N=1000 min 6 s,
// 7.3 s, 5 s. LAN profile: twice each (N=10 6.6 s and 2 s; N=100 10.6 s
// and 6 s; N=1000 14.6 s and 10 s).
// Detection and tolerance move together: the same product SuspicionMult ×
// ProbeInterval sets both, and both grow with memberlist's log10 N. Why the
// default is fast, with the measurements: docs/benchmarks.md. SuspicionMult
// below 4 weakens Lifeguard's confirmations (k); above it, k grows and a
// small mesh must deliver more confirmations within min.
type Profile struct {
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
}

// DefaultProfile is IHA's default profile, FastProfile: the only one of
// the two whose crash detection stays within `both` mode's targets up to
// 1,000 computes (see Profile).
func DefaultProfile() Profile { return FastProfile() }

// LANProfile is memberlist's LAN profile (IHA's default before it chose
// FastProfile): twice the stall tolerance and twice the detection time.
func LANProfile() Profile {
	return Profile{ProbeInterval: time.Second, ProbeTimeout: 500 * time.Millisecond, SuspicionMult: 4, GossipInterval: 200 * time.Millisecond}
}

// FastProfile is LANProfile with half its intervals: detection ≈ 5.3 s at
// 100 members.
func FastProfile() Profile {
	return Profile{ProbeInterval: 500 * time.Millisecond, ProbeTimeout: 200 * time.Millisecond, SuspicionMult: 4, GossipInterval: 100 * time.Millisecond}
}

// Validate checks the ranges: probe interval 100ms–60s, probe timeout
// shorter than the interval, suspicion multiplier 2–20, gossip interval
// 10ms–10s.
func (p Profile) Validate() error {
	switch {
	case p.ProbeInterval < 100*time.Millisecond || p.ProbeInterval > time.Minute:
		return fmt.Errorf("GOSSIP_PROBE_INTERVAL %v: want 100ms–60s", p.ProbeInterval)
	case p.ProbeTimeout <= 0 || p.ProbeTimeout >= p.ProbeInterval:
		return fmt.Errorf("GOSSIP_PROBE_TIMEOUT %v: want more than 0 and less than GOSSIP_PROBE_INTERVAL (%v)", p.ProbeTimeout, p.ProbeInterval)
	case p.SuspicionMult < 2 || p.SuspicionMult > 20:
		return fmt.Errorf("GOSSIP_SUSPICION_MULT %d: want 2–20", p.SuspicionMult)
	case p.GossipInterval < 10*time.Millisecond || p.GossipInterval > 10*time.Second:
		return fmt.Errorf("GOSSIP_GOSSIP_INTERVAL %v: want 10ms–10s", p.GossipInterval)
	}
	return nil
}

// SuspicionTimeouts returns memberlist's min and max suspicion timeouts for
// a mesh of n members (util.go suspicionTimeout, SuspicionMaxTimeoutMult 6).
func (p Profile) SuspicionTimeouts(n int) (lo, hi time.Duration) {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	lo = time.Duration(float64(p.SuspicionMult) * scale * float64(p.ProbeInterval))
	// memberlist rounds to whole milliseconds.
	lo = lo.Truncate(time.Millisecond)
	return lo, 6 * lo
}

// ExpectedDetection is the formula's expected crash → dead time at n members.
func (p Profile) ExpectedDetection(n int) time.Duration {
	lo, _ := p.SuspicionTimeouts(n)
	return time.Duration(2.58*float64(p.ProbeInterval)) + lo
}

// StallTolerance is the longest a member of a mesh of n may stall (a frozen
// host: every packet to and from it lost) without being declared dead: the
// minimum suspicion timeout minus two probe intervals. A probe that the
// stall makes fail ends, and its prober suspects the member, one probe
// interval after it began, no earlier than the stall; the prober's timer
// declares the member dead the minimum suspicion timeout later at the
// earliest; after the stall the member refutes only when a probe carries the
// suspicion to it, up to about two probe intervals later.
func (p Profile) StallTolerance(n int) time.Duration {
	lo, _ := p.SuspicionTimeouts(n)
	return max(0, lo-2*p.ProbeInterval)
}

// StoppedTolerance is the longest a member's process may be stopped
// (SIGSTOP, a container freeze) while its host's kernel keeps receiving,
// without being declared dead: the minimum suspicion timeout. A probe that
// began just before the stop fails one probe interval later at the
// earliest, its prober's timer runs the minimum suspicion timeout from
// there, and the member, which finds the probes and the suspicion in its
// socket's buffer when it runs again, refutes within a gossip round or two:
// the bound leaves a probe interval, less that round trip, to spare
// (measured, fast profile at 10 members: 2.25–2.5 s never dead, 2 s
// promised). TestStoppedAgentWithinToleranceIsNotDead proves it on a real
// iha-agent process.
func (p Profile) StoppedTolerance(n int) time.Duration {
	lo, _ := p.SuspicionTimeouts(n)
	return lo
}

// WorstDetection is the crash → dead time when the accuser gets no
// confirmations (max suspicion timeout), with a generous two intervals until
// the first probe.
func (p Profile) WorstDetection(n int) time.Duration {
	_, hi := p.SuspicionTimeouts(n)
	return 3*p.ProbeInterval + hi
}

// Config keys of the profile.
const (
	KeyProbeInterval  = "GOSSIP_PROBE_INTERVAL"
	KeyProbeTimeout   = "GOSSIP_PROBE_TIMEOUT"
	KeySuspicionMult  = "GOSSIP_SUSPICION_MULT"
	KeyGossipInterval = "GOSSIP_GOSSIP_INTERVAL"
	KeyProfile        = "GOSSIP_PROFILE" // "fast", "lan" or "default" (DefaultProfile): the base the other keys override
)

// ProfileFromKeys builds a profile from config keys; lookup returns a key's
// value and whether it is set. Unset keys keep the base profile's value.
func ProfileFromKeys(lookup func(key string) (string, bool)) (Profile, error) {
	p := DefaultProfile()
	if v, ok := lookup(KeyProfile); ok {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "", "default":
		case "fast":
			p = FastProfile()
		case "lan":
			p = LANProfile()
		default:
			return Profile{}, fmt.Errorf("%s %q: want fast, lan or default", KeyProfile, v)
		}
	}
	for key, dst := range map[string]*time.Duration{KeyProbeInterval: &p.ProbeInterval, KeyProbeTimeout: &p.ProbeTimeout, KeyGossipInterval: &p.GossipInterval} {
		v, ok := lookup(key)
		if !ok {
			continue
		}
		d, err := parseDuration(v)
		if err != nil {
			return Profile{}, fmt.Errorf("%s: %w", key, err)
		}
		*dst = d
	}
	if v, ok := lookup(KeySuspicionMult); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return Profile{}, fmt.Errorf("%s %q: not an integer", KeySuspicionMult, v)
		}
		p.SuspicionMult = n
	}
	return p, p.Validate()
}

// parseDuration accepts a Go duration or a number of seconds.
func parseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || f > 3600 {
			return 0, fmt.Errorf("%q seconds out of range", v)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q: want a duration (500ms) or seconds (0.5)", v)
	}
	return d, nil
}
