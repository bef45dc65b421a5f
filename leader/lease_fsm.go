package leader

import (
	"fmt"
	"sort"
	"time"

	"github.com/ihaproject/iha/pkg/lease"
)

// Watchdog self-fencing, replicated part (pkg/lease has the arithmetic).
// Leases are granted in batches: one lease.grant entry answers every
// request the leader collected for a moment, and its At is the grant time
// of all of them. Nothing here reads a clock: the grant time, the lease's
// timings and the margin travel in the commands.

// Commands of the watchdog lease.
const (
	CmdLeaseGrant    CommandType = "lease.grant"   // LeaseGrantCmd
	CmdWatchdogFence CommandType = "host.watchdog" // WatchdogWaitCmd
	CmdLeaseForget   CommandType = "lease.forget"  // LeaseForgetCmd
)

// LeaseAsk is one agent's request inside a LeaseGrantCmd (its signature
// was checked before it was proposed).
type LeaseAsk struct {
	Host    string        `json:"host"`
	Boot    string        `json:"boot"`
	Seq     int64         `json:"seq"`
	Armed   bool          `json:"armed,omitempty"`
	W       time.Duration `json:"w,omitempty"`
	Release bool          `json:"release,omitempty"`
	Ack     time.Time     `json:"ack,omitzero"`
}

// LeaseGrantCmd grants (or refuses) a batch of requests at the command's
// At, with the timings of Params.
type LeaseGrantCmd struct {
	Params lease.Params `json:"params"`
	Asks   []LeaseAsk   `json:"asks"`
}

// LeaseOutcome is Apply's answer for one ask, in the order of Asks.
type LeaseOutcome struct {
	Host     string `json:"host"`
	Granted  bool   `json:"granted"`
	Released bool   `json:"released,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Holders is the holder count told with the grant (N).
	Holders int `json:"holders,omitempty"`
}

// LeaseRecord is what the cluster knows of one host's lease.
type LeaseRecord struct {
	Host  string `json:"host"`
	Boot  string `json:"boot"`
	Seq   int64  `json:"seq"`
	Armed bool   `json:"armed"`
	// ArmedSince is the first grant of the current armed stretch.
	ArmedSince time.Time     `json:"armed_since,omitzero"`
	W          time.Duration `json:"w,omitempty"`
	Params     lease.Params  `json:"params"`
	// Granted is the last grant (leader clock) and PrevGranted the one
	// before; Acked the last grant the agent acknowledged having accepted
	// in time, and ReachSince the start of its unbroken reach of a
	// controller over acknowledged grants (lease.Params.Continues).
	Granted     time.Time `json:"granted"`
	PrevGranted time.Time `json:"prev_granted,omitzero"`
	Acked       time.Time `json:"acked,omitzero"`
	ReachSince  time.Time `json:"reach_since,omitzero"`
	// Holders is N as told with the last grant.
	Holders int `json:"holders"`
	// Released is when a clean stop disarmed the host (zero: a holder).
	Released time.Time `json:"released,omitzero"`
}

// Holder reports whether the record counts among the lease holders.
func (l *LeaseRecord) Holder() bool { return l.Released.IsZero() }

// WatchdogWaitCmd records that a host's BMC fence failed while its agent
// was armed: the leader now waits for the watchdog (the record's Watchdog).
type WatchdogWaitCmd struct {
	Host     string        `json:"host"`
	Grant    time.Time     `json:"grant"`
	W        time.Duration `json:"w"`
	L        time.Duration `json:"l"`
	Margin   time.Duration `json:"margin"`
	Deadline time.Time     `json:"deadline"`
	BMCError string        `json:"bmc_error"`
}

// WatchdogWait is a host record's watchdog path: the last grant, W, L and
// margin it rests on, and when G + L + W + margin falls.
type WatchdogWait struct {
	Since    time.Time     `json:"since"`
	Grant    time.Time     `json:"grant"`
	W        time.Duration `json:"w"`
	L        time.Duration `json:"l"`
	Margin   time.Duration `json:"margin"`
	Deadline time.Time     `json:"deadline"`
	BMCError string        `json:"bmc_error,omitempty"`
}

// LeaseForgetCmd drops a host's lease record (a decommissioned host:
// `iha forget`), so it no longer counts among the holders.
type LeaseForgetCmd struct {
	Host string `json:"host"`
	By   string `json:"by"`
}

// holders counts the lease holders (released records excluded).
func (s *fsmState) holders() int {
	n := 0
	for _, l := range s.Leases {
		if l.Holder() {
			n++
		}
	}
	return n
}

// leaseGrant applies a LeaseGrantCmd. A host with an active recovery
// record (other than a returning host's re-enable) is never granted: from
// the moment the leader judges it failed, its last grant is final.
func (s *fsmState) leaseGrant(c Command, b LeaseGrantCmd) (any, error) {
	if err := b.Params.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if s.Leases == nil {
		s.Leases = map[string]*LeaseRecord{}
	}
	out := make([]LeaseOutcome, len(b.Asks))
	granted := make([]*LeaseRecord, 0, len(b.Asks))
	for i, a := range b.Asks {
		o := &out[i]
		o.Host = a.Host
		if a.Host == "" || a.Boot == "" {
			return nil, fmt.Errorf("%w: lease ask without host or boot", errMalformed)
		}
		if h := s.Hosts[a.Host]; h != nil && h.Phase.Active() && h.Phase != PhaseReenabling {
			o.Reason = fmt.Sprintf("the host is in recovery (phase %s): no lease", h.Phase)
			continue
		}
		l := s.Leases[a.Host]
		switch {
		case l != nil && l.Boot == a.Boot && a.Seq <= l.Seq:
			o.Reason = "a request older than the last one of this boot (a replay, or reordered)"
			continue
		case l != nil && l.Boot != a.Boot && a.Armed:
			o.Reason = "a new boot must first ask unarmed"
			continue
		}
		if a.Release {
			if l == nil {
				l = &LeaseRecord{Host: a.Host}
				s.Leases[a.Host] = l
			}
			wasArmed := l.Armed
			l.Boot, l.Seq, l.Armed, l.ArmedSince, l.W, l.Released = a.Boot, a.Seq, false, time.Time{}, 0, c.At
			l.ReachSince, l.Acked = time.Time{}, time.Time{}
			o.Released = true
			if wasArmed {
				s.event(c, a.Host, "WatchdogDisarmed", "the agent stopped cleanly and disarmed its watchdog", false)
			}
			continue
		}
		if l == nil {
			l = &LeaseRecord{Host: a.Host}
			s.Leases[a.Host] = l
		}
		s.ack(l, a.Ack)
		if a.Armed && !l.Armed {
			l.ArmedSince = c.At
			s.event(c, a.Host, "WatchdogArmed", fmt.Sprintf("the agent armed its watchdog (W %v) under a lease of %v", a.W, b.Params.L), false)
		}
		if !a.Armed {
			l.ArmedSince = time.Time{}
		}
		l.PrevGranted = l.Granted
		l.Boot, l.Seq, l.Armed, l.W, l.Params, l.Granted, l.Released = a.Boot, a.Seq, a.Armed, a.W, b.Params, c.At, time.Time{}
		o.Granted = true
		granted = append(granted, l)
	}
	n := s.holders()
	for _, l := range granted {
		l.Holders = n
	}
	for i := range out {
		if out[i].Granted {
			out[i].Holders = n
		}
	}
	return out, nil
}

// ack records that the agent accepted the grant of time at in time: one of
// the last two grants (a lost answer makes the agent ack the older one),
// never going back. The unbroken reach runs over acknowledged grants only.
func (s *fsmState) ack(l *LeaseRecord, at time.Time) {
	if at.IsZero() || !(at.Equal(l.Granted) || at.Equal(l.PrevGranted)) || !at.After(l.Acked) {
		return
	}
	if !l.Params.Continues(l.Acked, at) || l.ReachSince.IsZero() {
		l.ReachSince = at.Add(l.Params.MaxRTT)
	}
	l.Acked = at
}

// watchdogWait applies a WatchdogWaitCmd.
func (s *fsmState) watchdogWait(c Command, b WatchdogWaitCmd) error {
	h, err := s.active(b.Host)
	if err != nil {
		return err
	}
	if h.Phase != PhaseDetected {
		return fmt.Errorf("%w: %s is %s, not detected", ErrStalePhase, b.Host, h.Phase)
	}
	if h.Watchdog != nil {
		return nil // already waiting: the deadline rests on the same frozen grant
	}
	h.Watchdog = &WatchdogWait{Since: c.At, Grant: b.Grant, W: b.W, L: b.L, Margin: b.Margin, Deadline: b.Deadline, BMCError: b.BMCError}
	s.event(c, h.Host, "WatchdogFencePending", fmt.Sprintf("BMC fence failed (%s); the agent was armed: waiting for its watchdog until %s (lease expired at %s, W %v, margin %v)",
		b.BMCError, b.Deadline.UTC().Format(time.RFC3339), b.Grant.Add(b.L).UTC().Format(time.RFC3339), b.W, b.Margin), true)
	return nil
}

func (s *fsmState) leaseForget(c Command, b LeaseForgetCmd) error {
	if _, ok := s.Leases[b.Host]; !ok {
		return fmt.Errorf("%w: no lease of %s", ErrNoRecord, b.Host)
	}
	if h := s.Hosts[b.Host]; h != nil && h.Phase.Active() {
		return fmt.Errorf("%w: %s is in recovery", ErrStalePhase, b.Host)
	}
	delete(s.Leases, b.Host)
	s.event(c, b.Host, "LeaseForgotten", "lease record forgotten by "+b.By, false)
	return nil
}

func (l *LeaseRecord) clone() *LeaseRecord {
	c := *l
	return &c
}

// Lease returns a copy of host's lease record, or nil.
func (f *FSM) Lease(host string) *LeaseRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if l := f.st.Leases[host]; l != nil {
		return l.clone()
	}
	return nil
}

// Leases returns copies of every lease record, sorted by host.
func (f *FSM) Leases() []*LeaseRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*LeaseRecord, 0, len(f.st.Leases))
	for _, l := range f.st.Leases {
		out = append(out, l.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}
