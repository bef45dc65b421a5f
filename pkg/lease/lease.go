package lease

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Params are the timings of a lease. L is configuration (WATCHDOG_LEASE);
// the others derive from it (DefaultParams). They travel in every grant, so
// an agent always follows the arithmetic of the leader that granted it.
type Params struct {
	// L is the lease: an agent feeds its watchdog for at most L after it
	// sent the request that was granted.
	L time.Duration `json:"l"`
	// Renew is how often an agent asks for a new lease (L/4).
	Renew time.Duration `json:"renew"`
	// MaxRTT bounds a renewal: an agent ignores a grant that arrives more
	// than MaxRTT after it sent the request (L/10), so that the leader can
	// bound when the agent learned of it.
	MaxRTT time.Duration `json:"max_rtt"`
	// Reach is what "I reach a controller" means in an answer to a peer:
	// my last successful renewal is at most Reach old (0.45 L).
	Reach time.Duration `json:"reach"`
	// Round is how often an agent whose lease ran out asks its peers again,
	// and PeerTimeout how long it waits for their answers (L/10 each).
	Round       time.Duration `json:"round"`
	PeerTimeout time.Duration `json:"peer_timeout"`
}

// DefaultParams derives the timings from L.
func DefaultParams(l time.Duration) Params {
	return Params{L: l, Renew: l / 4, MaxRTT: l / 10, Reach: l * 45 / 100, Round: l / 10, PeerTimeout: l / 10}
}

// ErrParams: timings that break the arithmetic.
var ErrParams = errors.New("lease: inconsistent timings")

// Validate checks the two inequalities the rules rest on:
//
//   - Renew + MaxRTT ≤ Reach: a holder that renews on time never looks cut
//     off to its peers, and the leader can see its reach as unbroken;
//   - Reach + Renew + 2·MaxRTT ≤ L: when the control plane stops granting,
//     the first holder whose lease runs out already finds every other
//     holder's last renewal older than Reach, so all of them say "I do not
//     reach a controller" and nobody resets for an outage.
func (p Params) Validate() error {
	switch {
	case p.L <= 0 || p.Renew <= 0 || p.MaxRTT <= 0 || p.Reach <= 0 || p.Round <= 0 || p.PeerTimeout <= 0:
		return fmt.Errorf("%w: every timing must be positive (%v)", ErrParams, p)
	case p.Renew+p.MaxRTT > p.Reach:
		return fmt.Errorf("%w: renew %v + max rtt %v > reach %v", ErrParams, p.Renew, p.MaxRTT, p.Reach)
	case p.Reach+p.Renew+2*p.MaxRTT > p.L:
		return fmt.Errorf("%w: reach %v + renew %v + 2 × max rtt %v > lease %v", ErrParams, p.Reach, p.Renew, p.MaxRTT, p.L)
	case p.PeerTimeout > p.Round:
		return fmt.Errorf("%w: peer timeout %v > round %v", ErrParams, p.PeerTimeout, p.Round)
	}
	return nil
}

func (p Params) String() string {
	return fmt.Sprintf("L %v, renew %v, max rtt %v, reach %v, round %v, peer timeout %v", p.L, p.Renew, p.MaxRTT, p.Reach, p.Round, p.PeerTimeout)
}

// Continues reports whether a grant committed at next keeps unbroken the
// reach of a holder whose previous grant was committed at prev: the holder
// learns of next at most MaxRTT after it (its request was sent before the
// grant and answered within MaxRTT), and its previous success still counts
// as "reaching" until prev + Reach.
func (p Params) Continues(prev, next time.Time) bool {
	return !prev.IsZero() && !next.Add(p.MaxRTT).After(prev.Add(p.Reach))
}

// Holder is what the leader knows of one other lease holder: since when it
// has reached a controller without a break (the first grant of the
// unbroken chain + MaxRTT; zero: it does not reach one now) and the last
// grant it acknowledged (Request.Ack). Both are leader clock readings
// committed to Raft.
type Holder struct {
	Host       string
	ReachSince time.Time
	LastGrant  time.Time
	Reach      time.Duration // the Reach of its last grant
}

// FenceInput is what FencedAt decides on, all of it from the Raft log but
// Now and Margin (the deciding leader's clock and configuration).
type FenceInput struct {
	Now time.Time
	// Grant is the last grant committed for the host, and Params its
	// timings; W the watchdog timeout the agent reported when armed.
	Grant  time.Time
	Params Params
	W      time.Duration
	Margin time.Duration
	// HoldersAtGrant is the holder count the host was told with its last
	// grant (itself included): the N of its agent's rule.
	HoldersAtGrant int
	// Others are every other lease holder now (released ones too, with a
	// zero ReachSince: they count, and never reach).
	Others []Holder
}

// FenceDecision is FencedAt's answer.
type FenceDecision struct {
	// Fenced: the host's watchdog has reset it by Now − Margin.
	Fenced bool
	// Expired is when the host's lease ran out at the latest (Grant + L),
	// and Earliest the earliest time Fenced can be true given what is known
	// now (holders keep renewing): Grant + L + W + Margin, or later while
	// the holders' quorum is missing. Zero when no time can be given (not
	// enough holders reach a controller).
	Expired, Earliest time.Time
	// Need and Have: holders that must have reached a controller without a
	// break through the window, and how many did.
	Need, Have int
	Why        string
}

// FencedAt decides whether a host whose lease the leader stopped granting
// has been reset by its watchdog. With G the last grant committed for the
// host, L its lease, W its watchdog timeout, m the margin, r the peer round
// and d the peer timeout of that grant:
//
//	fenced at T  ⇔  T ≥ G + L + W + m                                     (1)
//	            ∧  at least k other holders reached a controller without a
//	               break through [T − m − W − r − d,  T − m + d]            (2)
//	k = ⌈(N − 1) − (N_G − 1)/2⌉   N: holders now, N_G: told to the host at G
//
// (1): the agent counts its lease from the moment it sent the request, which
// was before G, so it stops feeding by G + L unless its peers keep it (2);
// the watchdog resets it W after the last feed; m absorbs the clock skew
// between the controllers whose clocks wrote G and read T, the watchdog's
// own inaccuracy and the agent's scheduling delay between checking its
// lease and feeding.
//
// (2): past its lease the agent feeds only while a peer round that started
// at most r + d ago found more than (N_G − 1)/2 holders that do not reach a
// controller. Such a round needs more than (N_G − 1)/2 of the N − 1 others
// to be cut off while it asks, so if k of them reached a controller
// throughout every round that could have kept the host alive past T − m − W
// (those starting after T − m − W − r − d and answering before T − m + d),
// none did, and the host's last feed was before T − m − W. A holder reaches
// a controller from MaxRTT after a grant until Reach after it (Holder,
// Params.Continues). Without (2), a host cut off together with a few
// neighbours that vouch "the control plane is down" would keep running
// while the leader evacuates it.
func FencedAt(in FenceInput) FenceDecision {
	p := in.Params
	d := FenceDecision{Expired: in.Grant.Add(p.L)}
	base := in.Grant.Add(p.L + in.W + in.Margin)
	n := len(in.Others) + 1
	// ⌈(N−1) − (N_G−1)/2⌉ = (N−1) − ⌊(N_G−1)/2⌋. An unknown N_G (0) asks
	// for every other holder.
	need := max((n-1)-(in.HoldersAtGrant-1)/2, 0)
	d.Need = need
	// The window of (2) at T: [T − back, T + fwd].
	back := in.Margin + in.W + p.Round + p.PeerTimeout
	fwd := p.PeerTimeout - in.Margin
	covers := func(h Holder, t time.Time) bool {
		return !h.ReachSince.IsZero() && !h.ReachSince.After(t.Add(-back)) && !h.LastGrant.Add(h.Reach).Before(t.Add(fwd))
	}
	for _, h := range in.Others {
		if covers(h, in.Now) {
			d.Have++
		}
	}
	// Earliest: the k-th holder to have reached long enough, among those
	// still reaching (assuming they keep renewing).
	var since []time.Time
	for _, h := range in.Others {
		if !h.ReachSince.IsZero() && !h.LastGrant.Add(h.Reach).Before(in.Now.Add(fwd)) {
			since = append(since, h.ReachSince.Add(back))
		}
	}
	slices.SortFunc(since, func(a, b time.Time) int { return a.Compare(b) })
	switch {
	case need == 0:
		d.Earliest = base
	case len(since) >= need:
		d.Earliest = latest(base, since[need-1])
	}
	switch {
	case in.Now.Before(base):
		d.Why = fmt.Sprintf("lease ran out by %s; W %v and margin %v after it: %s", stamp(d.Expired), in.W, in.Margin, stamp(base))
	case d.Have < need:
		d.Why = fmt.Sprintf("only %d of the %d other lease holders reached a controller without a break since %s (%d needed): "+
			"the host's peers may have kept it running", d.Have, n-1, stamp(in.Now.Add(-back)), need)
	default:
		d.Fenced = true
		d.Why = fmt.Sprintf("lease expired at %s, W %v, margin %v; %d of %d other holders reached a controller throughout",
			stamp(d.Expired), in.W, in.Margin, d.Have, n-1)
	}
	return d
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func stamp(t time.Time) string { return t.UTC().Format("15:04:05.000") }

// PeerAnswer is one holder's answer to "do you reach a controller?", as the
// asking agent counts it: the host its ticket names, whether it holds a
// lease at all, whether its last renewal is at most Reach old, and the
// grant time on its ticket.
type PeerAnswer struct {
	Host   string
	Holder bool
	Reach  bool
	Grant  time.Time
}

// Verdict is the agent's decision after a peer round.
type Verdict struct {
	// Feed: the control plane is down, not this host: keep feeding until
	// the next round.
	Feed bool
	// Reach and NoReach count the distinct holders that answered.
	Reach, NoReach int
	// Why says which rule decided, for the log and the event.
	Why string
}

// PeerVerdict is the rule of an agent whose lease ran out. self is its own
// host, n the holder count of its last grant (itself included), grant that
// grant's time and l its lease. Answers are counted once per host (a host
// that says it reaches, in any answer, reaches), ignoring non-holders, the
// agent's own host and tickets older than grant − L (a holder that has not
// been granted since before this agent's lease began says nothing about
// the present). Then:
//
//   - no holder answered: this host is isolated; stop feeding (Proxmox,
//     self-node-remediation and deckhouse all reset an isolated node);
//   - more than (n − 1)/2 of all the other holders answered that they do
//     not reach a controller either: the control plane is down, or most of
//     the cloud is cut from it; keep feeding until the next round (a
//     control-plane outage must never reset every compute, and the leader
//     never counts on a reset while most holders are cut off: FencedAt);
//   - otherwise: more of the holders that answered reach a controller
//     (this host is the one cut off), or this host is cut off with a
//     minority that cannot speak for the cloud; stop feeding.
func PeerVerdict(self string, n int, grant time.Time, l time.Duration, answers []PeerAnswer) Verdict {
	reach := map[string]bool{}
	for _, a := range answers {
		if !a.Holder || a.Host == "" || a.Host == self || a.Grant.Before(grant.Add(-l)) {
			continue
		}
		reach[a.Host] = reach[a.Host] || a.Reach
	}
	var v Verdict
	for _, r := range reach {
		if r {
			v.Reach++
		} else {
			v.NoReach++
		}
	}
	others := max(n-1, 0)
	switch {
	case v.Reach+v.NoReach == 0:
		v.Why = "no lease holder answered: this host is isolated"
	case 2*v.NoReach > others:
		v.Feed = true
		v.Why = fmt.Sprintf("%d of the %d other lease holders cannot reach a controller either: the control plane is down, not this host", v.NoReach, others)
	case v.Reach >= v.NoReach:
		v.Why = fmt.Sprintf("%d of the %d holders that answered reach a controller: this host is the one cut off", v.Reach, v.Reach+v.NoReach)
	default:
		v.Why = fmt.Sprintf("%d holders cannot reach a controller, not a majority of the %d others: this host is cut off with a minority", v.NoReach, others)
	}
	return v
}
