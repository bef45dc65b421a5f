package leader

import (
	"context"
	"fmt"
	"time"

	"github.com/ihaproject/iha/pkg/lease"
)

// The fence step's watchdog path. FENCING order per host: the BMC; when it
// fails and the host's agent was armed under a lease, its watchdog; else
// the operator's confirm-fenced. This file is the whole of the watchdog
// path: the fence step (workflow.go) calls watchdogAfterBMC when the BMC
// failed and watchdogStep once the path is chosen; both read only the
// replicated lease records, this leader's clock and WATCHDOG_MARGIN.

// watchdogRecheck is how often the leader looks again while the holders'
// quorum of lease.FencedAt is missing (no time can be given).
const watchdogRecheck = 2 * time.Second

// watchdogDecision applies lease.FencedAt to host's lease record and every
// other holder's. ok is false when the host's agent was not armed at its
// last grant (no watchdog path).
func watchdogDecision(fsm *FSM, host string, margin time.Duration, now time.Time) (lease.FenceDecision, *LeaseRecord, bool) {
	var l *LeaseRecord
	var others []lease.Holder
	for _, x := range fsm.Leases() {
		if x.Host == host {
			l = x
			continue
		}
		if x.Holder() {
			others = append(others, lease.Holder{Host: x.Host, ReachSince: x.ReachSince, LastGrant: x.Acked, Reach: x.Params.Reach})
		}
	}
	if l == nil || !l.Armed || !l.Holder() || l.Granted.IsZero() {
		return lease.FenceDecision{}, l, false
	}
	return lease.FencedAt(lease.FenceInput{Now: now, Grant: l.Granted, Params: l.Params, W: l.W, Margin: margin,
		HoldersAtGrant: l.Holders, Others: others}), l, true
}

// watchdogMargin is the larger of this leader's WATCHDOG_MARGIN and the one
// the wait was chosen with (a leader never shortens another's wait).
func (r *Reconciler) watchdogMargin(rec *HostRecord) time.Duration {
	m := r.cfg.WatchdogMargin
	if rec.Watchdog != nil && rec.Watchdog.Margin > m {
		m = rec.Watchdog.Margin
	}
	return m
}

// watchdogAfterBMC is called when the BMC fence of rec failed (its failure
// already recorded). If the host's agent was armed, it commits the
// watchdog path (WatchdogFencePending, with the deadline the last grant
// gives) and reports true: the fence step then waits for the watchdog
// instead of the BMC.
func (r *Reconciler) watchdogAfterBMC(ctx context.Context, rec *HostRecord, bmcErr error) bool {
	if rec.Kdump || rec.Level == 1 {
		return false
	}
	now := r.now()
	d, l, ok := watchdogDecision(r.store.FSM(), rec.Host, r.watchdogMargin(rec), now)
	if !ok {
		if l != nil {
			r.log.Warn("BMC fence failed and the host's agent is not armed: waiting for the BMC or an operator (iha confirm-fenced)", "host", rec.Host)
		}
		return false
	}
	deadline := d.Earliest
	if deadline.IsZero() {
		deadline = l.Granted.Add(l.Params.L + l.W + r.watchdogMargin(rec))
	}
	r.log.Warn("BMC fence failed; the host's agent was armed: fencing by its watchdog", "host", rec.Host, "bmc_error", bmcErr,
		"last_grant", l.Granted, "lease", l.Params.L, "w", l.W, "margin", r.watchdogMargin(rec), "deadline", deadline)
	_, err := r.apply(ctx, CmdWatchdogFence, WatchdogWaitCmd{Host: rec.Host, Grant: l.Granted, W: l.W, L: l.Params.L,
		Margin: r.watchdogMargin(rec), Deadline: deadline, BMCError: bmcErr.Error()})
	if err != nil {
		r.log.Error("could not record the watchdog path", "host", rec.Host, "err", err)
		return false
	}
	return true
}

// watchdogStep is the fence step of a host on the watchdog path: once
// lease.FencedAt says its watchdog has reset it, it records the fence
// ("watchdog self-fence (lease expired at …, W …)") and the recovery goes
// on as after a BMC power-off. Until then it frees its worker and has the
// reconciler look again at the earliest time (a new leader computes the
// same time from the same committed grant).
func (r *Reconciler) watchdogStep(ctx context.Context, rec *HostRecord) error {
	now := r.now()
	margin := r.watchdogMargin(rec)
	d, l, ok := watchdogDecision(r.store.FSM(), rec.Host, margin, now)
	if !ok {
		r.log.Error("the host's lease record no longer shows it armed: waiting for an operator (iha confirm-fenced)", "host", rec.Host)
		return errParked
	}
	// Never earlier than the deadline committed with the wait, nor than
	// the one the grant now on record gives (the FSM refuses grants to a
	// host in recovery, so both rest on the same grant; this holds even
	// if they did not).
	floor := rec.Watchdog.Deadline
	if g := l.Granted.Add(l.Params.L + l.W + margin); g.After(floor) {
		floor = g
	}
	if d.Fenced && now.Before(floor) {
		d.Fenced, d.Earliest = false, floor
		d.Why = "the committed deadline " + floor.UTC().Format(time.RFC3339Nano) + " has not passed"
	}
	if !d.Fenced {
		next := d.Earliest
		if next.IsZero() || next.Sub(now) > watchdogRecheck && d.Have < d.Need {
			next = now.Add(watchdogRecheck)
		}
		r.log.Info("waiting for the host's watchdog", "host", rec.Host, "until", next, "why", d.Why)
		time.AfterFunc(max(next.Sub(now), 10*time.Millisecond), r.Poke)
		return errParked
	}
	var op OpID
	if rec.Pending != nil && rec.Pending.Step == StepFence {
		op = rec.Pending.OpID
	} else {
		var err error
		if op, err = r.begin(ctx, rec.Host, StepFence, "", ""); err != nil {
			return err
		}
	}
	detail := fmt.Sprintf("watchdog self-fence (lease expired at %s, W %v)", d.Expired.UTC().Format(time.RFC3339Nano), rec.Watchdog.W)
	r.log.Warn("host fenced by its watchdog", "host", rec.Host, "why", d.Why, "op", op)
	return r.end(ctx, StepEndCmd{Host: rec.Host, Step: StepFence, OpID: op, OK: true, Detail: detail,
		Fence: &FenceResult{Method: "watchdog", State: "reset", At: r.now(), Detail: d.Why}})
}
