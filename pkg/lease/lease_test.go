package lease

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)

func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func at(s float64) time.Time { return t0.Add(sec(s)) }

func TestDefaultParamsAreConsistent(t *testing.T) {
	for _, l := range []time.Duration{time.Second, 3 * time.Second, 15 * time.Second, 60 * time.Second, 10 * time.Minute} {
		if err := DefaultParams(l).Validate(); err != nil {
			t.Errorf("DefaultParams(%v): %v", l, err)
		}
	}
}

func TestParamsValidateNamesTheBrokenInequality(t *testing.T) {
	ok := DefaultParams(15 * time.Second)
	for _, tc := range []struct {
		name string
		mod  func(*Params)
		want string
	}{
		{"zero lease", func(p *Params) { p.L = 0 }, "positive"},
		{"renewing slower than reach", func(p *Params) { p.Renew = p.Reach }, "renew"},
		{"reach too close to the lease", func(p *Params) { p.Reach = p.L - p.Renew }, "reach"},
		{"peer timeout beyond the round", func(p *Params) { p.PeerTimeout = 2 * p.Round }, "peer timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.mod(&p)
			err := p.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestContinues(t *testing.T) {
	p := DefaultParams(15 * time.Second) // reach 6.75 s, max rtt 1.5 s
	for _, tc := range []struct {
		prev, next float64
		want       bool
	}{
		{0, 3.75, true},  // on time (renew every 3.75 s)
		{0, 5.25, true},  // next + 1.5 = prev + 6.75: the last instant
		{0, 5.26, false}, // one late renewal breaks the chain
	} {
		if got := p.Continues(at(tc.prev), at(tc.next)); got != tc.want {
			t.Errorf("Continues(%v, %v) = %v, want %v", tc.prev, tc.next, got, tc.want)
		}
	}
	if p.Continues(time.Time{}, at(1)) {
		t.Error("a first grant continues nothing")
	}
}

// healthy is a holder that has reached a controller for an hour and was
// granted 2 s before now.
func healthy(host string, now time.Time, p Params) Holder {
	return Holder{Host: host, ReachSince: now.Add(-time.Hour), LastGrant: now.Add(-2 * time.Second), Reach: p.Reach}
}

func TestFencedAt(t *testing.T) {
	p := DefaultParams(15 * time.Second) // round and peer timeout 1.5 s
	const w, m = 10 * time.Second, 5 * time.Second
	g := at(0)
	base := g.Add(p.L + w + m) // 30 s after the grant
	hs := func(now time.Time, n int) []Holder {
		var out []Holder
		for i := range n {
			out = append(out, healthy(fmt.Sprintf("c%d", i), now, p))
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		now      time.Time
		nAtGrant int
		others   func(now time.Time) []Holder
		fenced   bool
		earliest time.Time // zero: none can be given
		need     int
	}{
		{name: "alone, just before G+L+W+m", now: base.Add(-time.Millisecond), nAtGrant: 1, others: func(time.Time) []Holder { return nil }, earliest: base},
		{name: "alone, at G+L+W+m", now: base, nAtGrant: 1, others: func(time.Time) []Holder { return nil }, fenced: true, earliest: base},
		{name: "five holders, all others reach", now: base, nAtGrant: 5, others: func(n time.Time) []Holder { return hs(n, 4) }, fenced: true, earliest: base, need: 2},
		{name: "five holders, two reach: enough", now: base, nAtGrant: 5, need: 2, fenced: true, earliest: base,
			others: func(n time.Time) []Holder {
				h := hs(n, 2)
				return append(h, Holder{Host: "x"}, Holder{Host: "y"})
			}},
		{name: "five holders, one reaches: the cut-off side may be keeping it", now: base.Add(time.Hour), nAtGrant: 5, need: 2,
			others: func(n time.Time) []Holder {
				return append(hs(n, 1), Holder{Host: "x"}, Holder{Host: "y"}, Holder{Host: "z"})
			}},
		{name: "reach restored 5 s ago: wait out W + round + timeout + m from then", now: base.Add(10 * time.Second), nAtGrant: 2, need: 1,
			others: func(n time.Time) []Holder {
				return []Holder{{Host: "a", ReachSince: n.Add(-5 * time.Second), LastGrant: n.Add(-time.Second), Reach: p.Reach}}
			},
			earliest: base.Add(10*time.Second - 5*time.Second + m + w + p.Round + p.PeerTimeout)},
		{name: "a holder whose last grant is older than reach does not count", now: base, nAtGrant: 2, need: 1,
			others: func(n time.Time) []Holder {
				return []Holder{{Host: "a", ReachSince: n.Add(-time.Hour), LastGrant: n.Add(-p.Reach + p.PeerTimeout - m - time.Millisecond), Reach: p.Reach}}
			}},
		{name: "holders joined since the grant: the host's rule counts fewer", now: base, nAtGrant: 3, need: 7,
			others: func(n time.Time) []Holder {
				return append(hs(n, 6), Holder{Host: "new1", ReachSince: n, LastGrant: n, Reach: p.Reach}, Holder{Host: "new2", ReachSince: n, LastGrant: n, Reach: p.Reach})
			},
			earliest: base.Add(m + w + p.Round + p.PeerTimeout)},
		{name: "a holder count that shrank since the grant needs fewer", now: base, nAtGrant: 3, need: 0, fenced: true, earliest: base,
			others: func(time.Time) []Holder { return []Holder{{Host: "cut"}} }},
		{name: "unknown holder count at grant: every other must reach", now: base, nAtGrant: 0, need: 3,
			others: func(n time.Time) []Holder { return hs(n, 3) }, fenced: true, earliest: base},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := FencedAt(FenceInput{Now: tc.now, Grant: g, Params: p, W: w, Margin: m, HoldersAtGrant: tc.nAtGrant, Others: tc.others(tc.now)})
			if d.Fenced != tc.fenced || !d.Earliest.Equal(tc.earliest) || d.Need != tc.need {
				t.Fatalf("FencedAt: fenced %v earliest %v need %d have %d (%s); want fenced %v earliest %v need %d",
					d.Fenced, d.Earliest, d.Need, d.Have, d.Why, tc.fenced, tc.earliest, tc.need)
			}
			if !d.Expired.Equal(g.Add(p.L)) {
				t.Fatalf("Expired = %v, want G + L", d.Expired)
			}
			if d.Why == "" {
				t.Fatal("no reason given")
			}
		})
	}
}

func TestPeerVerdict(t *testing.T) {
	g := at(100)
	l := 15 * time.Second
	a := func(host string, holder, reach bool) PeerAnswer {
		return PeerAnswer{Host: host, Holder: holder, Reach: reach, Grant: g}
	}
	for _, tc := range []struct {
		name    string
		n       int
		answers []PeerAnswer
		feed    bool
		why     string
	}{
		{"nobody answered: isolated", 5, nil, false, "isolated"},
		{"only non-holders answered: isolated", 5, []PeerAnswer{a("x", false, false)}, false, "isolated"},
		{"a majority of all others cannot reach: control plane down", 5, []PeerAnswer{a("b", true, false), a("c", true, false), a("d", true, false)}, true, "control plane is down"},
		{"half of the others is not a majority", 5, []PeerAnswer{a("b", true, false), a("c", true, false)}, false, "minority"},
		{"the peers that answered reach: this host is cut off", 5, []PeerAnswer{a("b", true, true), a("c", true, true), a("d", true, false)}, false, "the one cut off"},
		{"two computes, the other cannot reach either", 2, []PeerAnswer{a("b", true, false)}, true, "control plane is down"},
		{"one host answering twice counts once, reaching if it says so once", 5,
			[]PeerAnswer{a("b", true, false), a("b", true, true), a("c", true, false), a("d", true, false)}, false, "minority"},
		{"its own host is not a peer", 3, []PeerAnswer{a("self", true, false), a("b", true, false)}, false, "minority"},
		{"a ticket older than G − L is ignored", 3,
			[]PeerAnswer{{Host: "b", Holder: true, Grant: g.Add(-l - time.Second)}, {Host: "c", Holder: true, Grant: g.Add(-l - time.Second)}}, false, "isolated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := PeerVerdict("self", tc.n, g, l, tc.answers)
			if v.Feed != tc.feed || !strings.Contains(v.Why, tc.why) {
				t.Fatalf("PeerVerdict = %+v, want feed %v and a reason about %q", v, tc.feed, tc.why)
			}
		})
	}
}

// TestFencedAtNeverMeetsAFeedingVerdict is the theorem the two rules rest
// on, checked on random clusters: whenever FencedAt says a host is fenced
// at T, no peer round that could have kept it feeding past T − m − W can
// have found a control-plane outage, however the holders that did not
// reach a controller answered.
func TestFencedAtNeverMeetsAFeedingVerdict(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	p := DefaultParams(10 * time.Second)
	const w, m = 6 * time.Second, 2 * time.Second
	fenced := 0
	for i := range 20000 {
		n := 1 + r.IntN(12)
		nAtGrant := max(1, n+r.IntN(5)-2)
		g := at(0)
		now := g.Add(p.L + w + m + time.Duration(r.Int64N(int64(20*time.Second))))
		var others []Holder
		for j := range n - 1 {
			h := Holder{Host: fmt.Sprintf("h%d", j), Reach: p.Reach}
			if r.IntN(3) > 0 {
				h.ReachSince = now.Add(-time.Duration(r.Int64N(int64(40 * time.Second))))
				h.LastGrant = now.Add(-time.Duration(r.Int64N(int64(10 * time.Second))))
				if h.LastGrant.Before(h.ReachSince) {
					h.LastGrant = h.ReachSince
				}
			}
			others = append(others, h)
		}
		d := FencedAt(FenceInput{Now: now, Grant: g, Params: p, W: w, Margin: m, HoldersAtGrant: nAtGrant, Others: others})
		if !d.Fenced {
			continue
		}
		fenced++
		// Every round whose answers fall in [now−m−W−r−d, now−m+d]: a
		// holder reaching throughout answers "reach"; any other may say
		// it does not.
		lo, hi := now.Add(-m-w-p.Round-p.PeerTimeout), now.Add(-m+p.PeerTimeout)
		var answers []PeerAnswer
		for _, h := range others {
			throughout := !h.ReachSince.IsZero() && !h.ReachSince.After(lo) && !h.LastGrant.Add(h.Reach).Before(hi)
			answers = append(answers, PeerAnswer{Host: h.Host, Holder: true, Reach: throughout, Grant: g})
		}
		if v := PeerVerdict("self", nAtGrant, g, p.L, answers); v.Feed {
			t.Fatalf("case %d: FencedAt said fenced (%s) but a round in its window finds %s", i, d.Why, v.Why)
		}
	}
	if fenced < 1000 {
		t.Fatalf("only %d fenced cases: the generator does not exercise the rule", fenced)
	}
}
