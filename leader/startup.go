package leader

import (
	"context"
	"errors"
)

// What a new term does once before its first poll (Run): the startup
// reconciliation (InstanceHA's orphans at IHA's first start, leftover
// evacuation locks). Every term starts after a Barrier: it never acts on
// state from before its leadership.

// startupReconcile is R17.1, once per cluster: when IHA first takes over,
// hosts forced down and down but not disabled, with no record of ours, are
// InstanceHA's orphans (it crashed between its force-down and its disable)
// and are adopted (upstream writes the "(recovered)" marker so that its
// resume rule picks them up; we open a record, and the disable step writes
// that marker). The takeover is committed, and later terms adopt nothing:
// IHA never leaves a host forced down and enabled (one request sets both),
// so such a host is an operator's, left alone with an event (W9) whatever
// the leader. Every term also releases evacuation locks left behind
// (releaseLeftoverLocks).
func (r *Reconciler) startupReconcile(ctx context.Context) error {
	// Whether this pass decides as a shadow, read once: `iha shadow off`
	// may commit while it runs, and a pass whose decisions were a shadow's
	// adopted nothing, so it must not record the takeover (Run runs the
	// takeover again once the term acts).
	shadow := r.shadowing()
	svcs, err := r.read.ListServices(ctx, "nova-compute")
	if err != nil {
		return err
	}
	fsm := r.store.FSM()
	if r.adoptOrphans == nil {
		// Decided once per term, before this term writes anything: a cluster
		// that acted and has no takeover recorded was upgraded from a
		// version that re-ran the reconciliation at every term. A history
		// of shadowing only is not acting: the other agent was, and the
		// first acting term takes over what it left.
		first := fsm.Settings().TakenOver.IsZero()
		fresh := first && !fsm.ActedBefore()
		r.adoptOrphans = &fresh
		r.recordTakeover = first
	}
	r.segments(ctx, true) // invalid failover segments are reported at the start of the term
	var adopted []string
	for _, s := range svcs {
		if !*r.adoptOrphans || !(s.ForcedDown && s.State == "down" && !disabled(s)) {
			continue
		}
		if rec := fsm.Host(s.Host); rec != nil && rec.Phase.Active() {
			continue
		}
		r.log.Warn("orphaned forced-down host found at IHA's first start: adopting its recovery", "host", s.Host)
		if err := r.detect(ctx, s, Evidence{Source: "orphan", NovaState: s.State, NovaUpdatedAt: s.UpdatedAt, ForcedDown: true,
			Note: "forced down but not disabled when IHA took over (R17.1)"}, true, ""); err != nil {
			return err
		}
		adopted = append(adopted, s.Host)
		_, _ = r.apply(ctx, CmdEvent, EventCmd{Host: s.Host, Kind: "OrphanedHostRecovered", Message: "forced down but not disabled: recovery adopted"})
	}
	// A shadow takes nothing over: the takeover is recorded by the first
	// acting pass (the orphans above are shadow decisions).
	if shadow != r.shadowing() {
		return errShadowChanged
	}
	if r.recordTakeover && !shadow {
		if _, err := r.apply(ctx, CmdTakeover, TakeoverCmd{Adopted: adopted, Skipped: !*r.adoptOrphans}); err != nil {
			return err
		}
		r.recordTakeover = false
	}
	r.releaseLeftoverLocks(ctx, svcs)
	return nil
}

// errShadowChanged ends a startup reconciliation during which shadow mode
// was turned on or off: Run runs it again, in the mode now in force.
var errShadowChanged = errors.New("shadow mode changed during the startup reconciliation")
