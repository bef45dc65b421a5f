package leader

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/lease"
)

func grant(a *applier, at time.Time, asks ...LeaseAsk) []LeaseOutcome {
	a.t.Helper()
	r := a.apply(CmdLeaseGrant, at, LeaseGrantCmd{Params: lease.DefaultParams(15 * time.Second), Asks: asks})
	out, ok := r.([]LeaseOutcome)
	if !ok {
		a.t.Fatalf("lease.grant: %v", r)
	}
	return out
}

func TestLeaseGrantsAreOrderedAndFrozenByARecovery(t *testing.T) {
	p := lease.DefaultParams(15 * time.Second)
	for _, tc := range []struct {
		name    string
		prepare func(a *applier)
		ask     LeaseAsk
		granted bool
		reason  string
	}{
		{name: "a first unarmed ask", ask: LeaseAsk{Host: "c1", Boot: "b1", Seq: 10}, granted: true},
		{name: "arming in the same boot", prepare: func(a *applier) { grant(a, t0, LeaseAsk{Host: "c1", Boot: "b1", Seq: 10}) },
			ask: LeaseAsk{Host: "c1", Boot: "b1", Seq: 11, Armed: true, W: 10 * time.Second}, granted: true},
		{name: "an older request of the boot is a replay", prepare: func(a *applier) { grant(a, t0, LeaseAsk{Host: "c1", Boot: "b1", Seq: 10}) },
			ask: LeaseAsk{Host: "c1", Boot: "b1", Seq: 10}, reason: "replay"},
		{name: "a new boot may not arm at once", prepare: func(a *applier) { grant(a, t0, LeaseAsk{Host: "c1", Boot: "b1", Seq: 10}) },
			ask: LeaseAsk{Host: "c1", Boot: "b2", Seq: 1, Armed: true, W: time.Second}, reason: "new boot"},
		{name: "a new boot unarmed", prepare: func(a *applier) {
			grant(a, t0, LeaseAsk{Host: "c1", Boot: "b1", Seq: 10, Armed: true, W: time.Second})
		}, ask: LeaseAsk{Host: "c1", Boot: "b2", Seq: 1}, granted: true},
		{name: "a host in recovery gets nothing", prepare: func(a *applier) {
			grant(a, t0, LeaseAsk{Host: "c1", Boot: "b1", Seq: 10})
			a.apply(CmdDetect, t0, DetectCmd{Host: "c1", ServiceID: "s1", Level: 2})
		}, ask: LeaseAsk{Host: "c1", Boot: "b1", Seq: 11}, reason: "in recovery"},
		{name: "a returning host is granted while re-enabled", prepare: func(a *applier) {
			a.apply(CmdDetect, t0, DetectCmd{Host: "c1", ServiceID: "s1", Level: 2, Phase: PhaseReenabling})
		}, ask: LeaseAsk{Host: "c1", Boot: "b9", Seq: 1}, granted: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newApplier(t)
			if tc.prepare != nil {
				tc.prepare(a)
			}
			before := a.f.Lease("c1")
			out := grant(a, t0.Add(time.Second), tc.ask)
			if out[0].Granted != tc.granted || !strings.Contains(out[0].Reason, tc.reason) {
				t.Fatalf("outcome %+v, want granted %v reason %q", out[0], tc.granted, tc.reason)
			}
			l := a.f.Lease("c1")
			if !tc.granted {
				if before == nil && l != nil || before != nil && l.Granted != before.Granted {
					t.Fatalf("a refusal changed the record: %+v → %+v", before, l)
				}
				return
			}
			if !l.Granted.Equal(t0.Add(time.Second)) || l.Seq != tc.ask.Seq || l.Armed != tc.ask.Armed || l.Params != p || out[0].Holders != 1 {
				t.Fatalf("record %+v, outcome %+v", l, out[0])
			}
		})
	}
}

func TestLeaseReachChainRunsOverAcknowledgedGrants(t *testing.T) {
	a := newApplier(t)
	p := lease.DefaultParams(15 * time.Second) // max rtt 1.5 s, reach 6.75 s
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	grant(a, at(0), LeaseAsk{Host: "c1", Boot: "b", Seq: 1}, LeaseAsk{Host: "c2", Boot: "b", Seq: 1})
	if l := a.f.Lease("c1"); !l.ReachSince.IsZero() || l.Holders != 2 {
		t.Fatalf("a grant nobody acknowledged yet: %+v", l)
	}
	grant(a, at(4), LeaseAsk{Host: "c1", Boot: "b", Seq: 2, Ack: at(0)})
	if l := a.f.Lease("c1"); !l.ReachSince.Equal(at(0).Add(p.MaxRTT)) || !l.Acked.Equal(at(0)) {
		t.Fatalf("first ack: %+v", l)
	}
	grant(a, at(8), LeaseAsk{Host: "c1", Boot: "b", Seq: 3, Ack: at(4)}) // 4 + 1.5 ≤ 0 + 6.75: continues
	if l := a.f.Lease("c1"); !l.ReachSince.Equal(at(0).Add(p.MaxRTT)) || !l.Acked.Equal(at(4)) {
		t.Fatalf("an on-time ack broke the chain: %+v", l)
	}
	// The agent dropped the grant of 8 s as too slow: it acks 4 s again, which
	// changes nothing; then it accepts 12 s, 8 s after the last ack: a gap.
	grant(a, at(12), LeaseAsk{Host: "c1", Boot: "b", Seq: 4, Ack: at(4)})
	grant(a, at(16), LeaseAsk{Host: "c1", Boot: "b", Seq: 5, Ack: at(12)})
	if l := a.f.Lease("c1"); !l.ReachSince.Equal(at(12).Add(p.MaxRTT)) || !l.Acked.Equal(at(12)) {
		t.Fatalf("a dropped grant kept the chain: %+v", l)
	}
	// An ack of a grant never made is ignored.
	grant(a, at(20), LeaseAsk{Host: "c1", Boot: "b", Seq: 6, Ack: at(13)})
	if l := a.f.Lease("c1"); !l.Acked.Equal(at(12)) {
		t.Fatalf("a forged ack counted: %+v", l)
	}
	// A release leaves the holders; re-arming rejoins them.
	out := grant(a, at(21), LeaseAsk{Host: "c2", Boot: "b", Seq: 2, Release: true})
	if !out[0].Released || a.f.Lease("c2").Holder() {
		t.Fatalf("release: %+v %+v", out[0], a.f.Lease("c2"))
	}
	if out := grant(a, at(22), LeaseAsk{Host: "c1", Boot: "b", Seq: 7}); out[0].Holders != 1 {
		t.Fatalf("holders after a release: %+v", out[0])
	}
	out = grant(a, at(23), LeaseAsk{Host: "c2", Boot: "b", Seq: 3})
	if !out[0].Granted || out[0].Holders != 2 || !a.f.Lease("c2").ReachSince.IsZero() {
		t.Fatalf("back after a release: %+v %+v", out[0], a.f.Lease("c2"))
	}
}

func TestWatchdogWaitAndLeasesSurviveASnapshot(t *testing.T) {
	a := newApplier(t)
	grant(a, t0, LeaseAsk{Host: "c1", Boot: "b", Seq: 1})
	grant(a, t0.Add(time.Second), LeaseAsk{Host: "c1", Boot: "b", Seq: 2, Armed: true, W: 10 * time.Second})
	a.apply(CmdDetect, t0.Add(5*time.Second), DetectCmd{Host: "c1", ServiceID: "s1", Level: 2})
	// The wait needs the record in detected (after a failed fence).
	op := a.begin("c1", StepFence, "")
	if r := a.apply(CmdWatchdogFence, t0, WatchdogWaitCmd{Host: "c1"}); !errors.Is(r.(error), ErrStalePhase) {
		t.Fatalf("a wait while fencing: %v", r)
	}
	a.apply(CmdStepEnd, t0.Add(6*time.Second), StepEndCmd{Host: "c1", Step: StepFence, OpID: op, Detail: "bmc unreachable"})
	dl := t0.Add(31 * time.Second)
	a.apply(CmdWatchdogFence, t0.Add(7*time.Second), WatchdogWaitCmd{Host: "c1", Grant: t0.Add(time.Second), W: 10 * time.Second, L: 15 * time.Second,
		Margin: 5 * time.Second, Deadline: dl, BMCError: "bmc unreachable"})
	h := a.f.Host("c1")
	if h.Watchdog == nil || !h.Watchdog.Deadline.Equal(dl) {
		t.Fatalf("watchdog wait: %+v", h.Watchdog)
	}
	ev := a.f.Events(0, "c1", 0)
	if last := ev[len(ev)-1]; last.Kind != "WatchdogFencePending" || !strings.Contains(last.Message, "BMC fence failed (bmc unreachable)") {
		t.Fatalf("event %+v", last)
	}
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if l := g.Lease("c1"); l == nil || !l.Armed || l.W != 10*time.Second || !l.Granted.Equal(t0.Add(time.Second)) {
		t.Fatalf("restored lease %+v", l)
	}
	if h := g.Host("c1"); h.Watchdog == nil || !h.Watchdog.Deadline.Equal(dl) {
		t.Fatalf("restored wait %+v", h.Watchdog)
	}
}
