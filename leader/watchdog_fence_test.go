package leader

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/lease"
)

// A leader whose WATCHDOG_MARGIN is smaller than the one the wait was
// committed with, or whose clock says the grant's arithmetic is met, still
// never records the fence before the committed deadline; once it passes,
// the fence is recorded once, by the watchdog.
func TestWatchdogStepNeverShortensTheCommittedWait(t *testing.T) {
	st := newLeaseMemStore()
	ctx := context.Background()
	apply := func(ct CommandType, at time.Time, body any) any {
		t.Helper()
		r, err := st.Apply(ctx, ct, at, body)
		if err != nil {
			t.Fatalf("%s: %v", ct, err)
		}
		return r
	}
	g := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	p := lease.DefaultParams(15 * time.Second)
	apply(CmdLeaseGrant, g, LeaseGrantCmd{Params: p, Asks: []LeaseAsk{{Host: "c1", Boot: "b", Seq: 1, Armed: true, W: 10 * time.Second}}})
	apply(CmdDetect, g.Add(2*time.Second), DetectCmd{Host: "c1", ServiceID: "s1", Level: 2})
	op := apply(CmdStepBegin, g.Add(2*time.Second), StepBeginCmd{Host: "c1", Step: StepFence}).(OpID)
	apply(CmdStepEnd, g.Add(3*time.Second), StepEndCmd{Host: "c1", Step: StepFence, OpID: op, Detail: "BMC unreachable"})
	// An earlier leader chose a margin of 60 s: deadline G + 15 + 10 + 60.
	deadline := g.Add(85 * time.Second)
	apply(CmdWatchdogFence, g.Add(3*time.Second), WatchdogWaitCmd{Host: "c1", Grant: g, W: 10 * time.Second, L: p.L,
		Margin: time.Minute, Deadline: deadline, BMCError: "BMC unreachable"})

	now := g
	s := config.Defaults()
	s.WatchdogMargin = 0 // this leader's own margin: none
	r := NewReconciler(ReconcilerConfig{Settings: s, Store: st, Now: func() time.Time { return now }})
	for _, at := range []time.Duration{25 * time.Second, 30 * time.Second, 84 * time.Second, 85*time.Second - time.Millisecond} {
		now = g.Add(at)
		if err := r.watchdogStep(ctx, st.FSM().Host("c1")); !errors.Is(err, errParked) {
			t.Fatalf("at G + %v: %v, want a parked wait", at, err)
		}
		if h := st.FSM().Host("c1"); h.Fence != nil || h.Phase != PhaseDetected {
			t.Fatalf("at G + %v (deadline G + 85s): fenced %+v, phase %s", at, h.Fence, h.Phase)
		}
	}
	now = deadline
	if err := r.watchdogStep(ctx, st.FSM().Host("c1")); err != nil {
		t.Fatalf("at the deadline: %v", err)
	}
	h := st.FSM().Host("c1")
	if h.Fence == nil || h.Fence.Method != "watchdog" || h.Phase != PhaseFenced || h.Fence.At.Before(deadline) {
		t.Fatalf("after the deadline: fence %+v, phase %s", h.Fence, h.Phase)
	}
}
