package leader

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/nova"
)

// cloud is n computes reporting every ri at their own phases to a Nova
// whose clock runs off from the leader's; listing(at) is what the leader
// reads at its time at.
type cloud struct {
	ri     time.Duration
	phases []time.Duration
	off    time.Duration // Nova's clock minus the leader's
}

func newCloud(n int, ri, off time.Duration, rng *rand.Rand) *cloud {
	c := &cloud{ri: ri, off: off}
	for range n {
		c.phases = append(c.phases, time.Duration(rng.Int64N(int64(ri))))
	}
	return c
}

func (c *cloud) listing(at time.Time) []nova.Service {
	var out []nova.Service
	for i, p := range c.phases {
		// The last report at or before at (leader's clock), stamped on
		// Nova's clock, whole seconds.
		last := at.Add(-((at.Sub(time.Unix(0, 0)) - p) % c.ri))
		out = append(out, nova.Service{Host: "c" + string(rune('1'+i)), State: "up", Status: "enabled",
			UpdatedAt: last.Add(c.off).Truncate(time.Second)})
	}
	return out
}

// The estimate is an upper bound on how far Nova's clock runs behind
// (readings never place a heartbeat before it happened) and, once settled
// by listings a spacing apart over a report interval, within a spacing and
// a second of it; within the margin nothing is corrected.
func TestNovaClockBoundsTheOffset(t *testing.T) {
	const ri, margin = 10 * time.Second, 2 * time.Second
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for _, off := range []time.Duration{0, -30 * time.Second, -5 * time.Second, 30 * time.Second, -1500 * time.Millisecond} {
		for trial := range 50 {
			cl := newCloud(1+trial%5, ri, off, rng)
			c := novaClock{interval: ri, margin: margin}
			at := t0.Add(time.Duration(rng.Int64N(int64(time.Hour))))
			// One poll: an upper bound already, maybe loose.
			c.observe(cl.listing(at), at)
			if l, _ := c.lag(); l < -off {
				t.Fatalf("offset %v, %d computes: first estimate %v is below the true lag %v", off, len(cl.phases), l, -off)
			}
			for !c.settled() {
				at = at.Add(c.spacing())
				c.observe(cl.listing(at), at)
			}
			l, _ := c.lag()
			if l < -off || l > -off+c.spacing()+time.Second {
				t.Fatalf("offset %v, %d computes: settled estimate %v, want within [%v, %v]", off, len(cl.phases), l, -off, -off+c.spacing()+time.Second)
			}
			sk := c.skew()
			switch {
			case off == 0 && sk != 0:
				t.Fatalf("clocks agree, %d computes: skew %v applied (lag %v)", len(cl.phases), sk, l)
			case -off > margin+c.spacing()+time.Second && sk != l, -off < -margin && sk != l:
				t.Fatalf("offset %v: skew %v, want the lag %v", off, sk, l)
			}
		}
	}
}

// A Nova whose clock steps back (NTP fixed it the wrong way, a VM resumed)
// must not leave the leader reading its times on the old offset: the first
// listing that the old offset cannot explain drops the older ones.
func TestNovaClockFollowsAStepBack(t *testing.T) {
	const ri = 10 * time.Second
	rng := rand.New(rand.NewPCG(3, 4))
	cl := newCloud(4, ri, 0, rng)
	c := novaClock{interval: ri, margin: 2 * time.Second}
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for range 20 {
		at = at.Add(time.Second)
		if c.observe(cl.listing(at), at) {
			t.Fatal("stepped with a steady clock")
		}
	}
	if c.skew() != 0 {
		t.Fatalf("skew %v with agreeing clocks", c.skew())
	}
	cl.off = -30 * time.Second
	at = at.Add(time.Second)
	if !c.observe(cl.listing(at), at) {
		t.Fatal("a 30 s step back went unnoticed")
	}
	if sk := c.skew(); sk < 30*time.Second {
		t.Fatalf("after the step: skew %v, want ≥ 30s", sk)
	}
	if !strings.Contains(c.describe(), "behind this leader's") {
		t.Errorf("describe: %s", c.describe())
	}
	// Stepping forward again needs no reset: newer listings are smaller.
	cl.off = 0
	for range 15 {
		at = at.Add(time.Second)
		c.observe(cl.listing(at), at)
	}
	if c.skew() != 0 {
		t.Fatalf("skew %v after the clock came back", c.skew())
	}
}

// Chaos scenario 8 as a verdict: Nova's clock 30 s behind, a host cut from
// the mesh only keeps reporting. Read on Nova's face value its heartbeat
// looks 30 s old and the host failed; read through the clock estimate it
// is heard after the mesh lost it and waits for Nova's own rule. A host
// that really died is still failed once its report is overdue.
func TestJudgeReadsNovaTimesThroughTheSkew(t *testing.T) {
	now := time.Date(2026, 12, 7, 16, 33, 13, 0, time.UTC)
	behind := 30 * time.Second
	in := VerdictInput{Mode: "both", Now: now, Delta: 30 * time.Second, ReportInterval: 10 * time.Second, Margin: 2 * time.Second,
		MeshState: MeshDead, MeshSince: now.Add(-2 * time.Second),
		// reported 1 s after the mesh lost it, stamped on Nova's clock
		Service: nova.Service{Host: "c5", Status: "enabled", State: "up", UpdatedAt: now.Add(-1 * time.Second).Add(-behind).Truncate(time.Second)}}
	if v, why, _ := Judge(in); v != VerdictFailed {
		t.Fatalf("without the skew the bug should show (failed), got %s: %s", v, why)
	}
	in.NovaSkew = behind + 400*time.Millisecond
	if v, why, _ := Judge(in); v != VerdictWait || !strings.Contains(why, "Nova heard it") {
		t.Fatalf("cut from the mesh only, Nova 30 s behind: %s: %s", v, why)
	}
	// Not stale for DELTA either (the healthy hosts were nova-compute-broken).
	in.MeshState = MeshAlive
	if v, why, _ := Judge(in); v != VerdictHealthy {
		t.Fatalf("alive, Nova 30 s behind: %s: %s", v, why)
	}
	// Really dead: last report 5 s before the mesh's verdict; failed once
	// report interval + margin have passed on the leader's clock.
	in.MeshState = MeshDead
	in.Service.UpdatedAt = now.Add(-7 * time.Second).Add(-behind).Truncate(time.Second)
	v, why, look := Judge(in)
	if v != VerdictWait || look.Sub(now) < 4*time.Second || look.Sub(now) > 6*time.Second {
		t.Fatalf("dead, report not overdue yet: %s (look in %v): %s", v, look.Sub(now), why)
	}
	in.Now = look
	if v, why, _ := Judge(in); v != VerdictFailed || !strings.Contains(why, "on Nova's clock") {
		t.Fatalf("dead, report overdue: %s: %s", v, why)
	}
}
