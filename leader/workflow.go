package leader

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/pkg/nova"
)

// The workflow stage: one worker per open record (launchWorkers) drives
// its steps in order, fence → disable (force-down) → plan → evacuate
// (evacuate.go) → finish, committing each step's intent before its side
// effect and its result after, so a new leader resumes where the last one
// stopped and never repeats a side effect that completed.

// stepRetry is how soon a failed recovery step is tried again (POLL when
// shorter: retryIn).
const stepRetry = 5 * time.Second

// retryIn is how long after a failed recovery step (a fence attempt
// included) the next try starts.
func (r *Reconciler) retryIn() time.Duration { return min(r.cfg.Poll, stepRetry) }

// recoverHost drives one host's record until it waits for something, ends,
// or ctx is cancelled. Each pass reads the committed record and performs the
// next step, so it resumes correctly whatever the previous leader did.
func (r *Reconciler) recoverHost(ctx context.Context, host string) {
	for ctx.Err() == nil {
		rec := r.store.FSM().Host(host)
		if rec == nil || !rec.Phase.Active() || rec.Phase == PhaseReenabling {
			return
		}
		if r.paused() && (rec.Phase == PhaseDetected || rec.Phase == PhaseFencing && rec.Pending == nil) {
			return
		}
		var err error
		switch rec.Phase {
		case PhaseDetected, PhaseFencing:
			err = r.fenceStep(ctx, rec)
		case PhaseFenced:
			err = r.disableStep(ctx, rec)
		case PhaseDisabled:
			err = r.planStep(ctx, rec)
		case PhaseEvacuating:
			err = r.evacuateStep(ctx, rec)
		case PhaseEvacuated:
			err = r.finishStep(ctx, rec)
		}
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, errWait) {
				// A failed step (a BMC that did not answer, a Nova request
				// that timed out) is tried again within seconds, not at the
				// next poll: POLL 45 kept a host whose BMC came back
				// unfenced for most of a minute (lab chaos scenario 6).
				retry := r.retryIn()
				r.log.Error("recovery step failed; retrying", "host", host, "phase", rec.Phase, "err", err, "retry_in", retry)
				time.AfterFunc(retry, r.Poke)
			}
			return
		}
	}
}

// begin commits the intent of a step and returns its operation id.
func (r *Reconciler) begin(ctx context.Context, host, step, serverID, target string) (OpID, error) {
	resp, err := r.apply(ctx, CmdStepBegin, StepBeginCmd{Host: host, Step: step, ServerID: serverID, Target: target})
	if err != nil {
		return OpID{}, err
	}
	op, _ := resp.(OpID)
	r.mine.Store(op, true)
	return op, nil
}

// inheritedSettled reports whether an intent left by an earlier term can
// be resolved by looking at the world. A deposed leader may have sent its
// request just before it was cut off; it lands, or its client gives up,
// within NOVA_API_TIMEOUT. Until that much (plus a third) has passed since
// this term began, the world may not show it yet, and acting again would
// evacuate twice (real Nova accepts a second evacuate of a rebuilding
// server: deploy/lab/FINDINGS.md 5).
func (r *Reconciler) inheritedSettled(op OpID) bool {
	if _, ok := r.mine.Load(op); ok {
		return true
	}
	t := r.cfg.NovaAPITimeout
	if t <= 0 {
		t = 30 * time.Second
	}
	return r.now().Sub(r.termStart) >= t+t/3
}

func (r *Reconciler) end(ctx context.Context, e StepEndCmd) error {
	_, err := r.apply(ctx, CmdStepEnd, e)
	return err
}

// fenceStep powers the host off and confirms it (QUICK_EVACUATE_LEVEL 2
// and 3), or records that the operator chose not to (level 1). A pending
// intent from a previous leader is resolved by reading the power state
// first: a host already off is fenced without a second power-off.
func (r *Reconciler) fenceStep(ctx context.Context, rec *HostRecord) error {
	host := rec.Host
	// The BMC failed and the agent was armed: its watchdog fences it
	// (watchdog_fence.go), unless an operator confirmed the host off.
	if _, confirmed := r.store.FSM().Settings().Confirmed[host]; rec.Watchdog != nil && !confirmed {
		return r.watchdogStep(ctx, rec)
	}
	var op OpID
	if rec.Pending != nil && rec.Pending.Step == StepFence {
		op = rec.Pending.OpID
		r.log.Info("resuming a fence whose result was not recorded", "host", host, "op", op)
	} else {
		if rec.FenceTries > 0 {
			// A failed attempt is tried again stepRetry (5 s; POLL when
			// shorter) after it ended, not a POLL later: each attempt
			// already spends its FENCING_TIMEOUT on the BMC's own retries,
			// and a BMC that answers again must not leave the host
			// unfenced for most of a minute (lab chaos scenario 6: 45 s
			// between attempts at POLL 45).
			last := rec.PhaseSince
			if wait := r.retryIn() - r.now().Sub(last); wait > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(wait):
				}
			}
		}
		var err error
		if op, err = r.begin(ctx, host, StepFence, "", ""); err != nil {
			return err
		}
	}
	res, ferr := r.fence1(ctx, rec, op)
	if ferr != nil {
		if err := r.end(ctx, StepEndCmd{Host: host, Step: StepFence, OpID: op, OK: false, Detail: ferr.Error()}); err != nil {
			return err
		}
		if r.watchdogAfterBMC(ctx, rec, ferr) {
			r.log.Error("fencing failed; the watchdog path takes over", "host", host, "op", op, "err", ferr)
			return nil // the next pass waits for the watchdog
		}
		// A failed step: recoverHost logs it and schedules the next try.
		return fmt.Errorf("fencing (op %s): %w", op, ferr)
	}
	r.log.Warn("host fenced", "host", host, "method", res.Method, "power", res.State, "op", op)
	return r.end(ctx, StepEndCmd{Host: host, Step: StepFence, OpID: op, OK: true, Fence: res,
		Detail: fmt.Sprintf("%s: power %s", res.Method, res.State)})
}

// fence1 performs the fence itself.
func (r *Reconciler) fence1(ctx context.Context, rec *HostRecord, op OpID) (*FenceResult, error) {
	now := r.now()
	if c, ok := r.store.FSM().Settings().Confirmed[rec.Host]; ok {
		return &FenceResult{Method: "operator", State: "off", At: now, Detail: fmt.Sprintf("confirmed by %s: %s", c.By, c.Reason)}, nil
	}
	if rec.Kdump {
		return &FenceResult{Method: "kdump", State: "dumping", At: now, Detail: "the host is writing a crash dump"}, nil
	}
	if rec.Level == 1 {
		r.log.Warn("QUICK_EVACUATE_LEVEL 1: not powering off; instances may run twice if the host is alive", "host", rec.Host)
		return &FenceResult{Method: "none", State: "unknown", At: now, Detail: "QUICK_EVACUATE_LEVEL 1: force-down without power-off"}, nil
	}
	if r.fence == nil {
		return nil, fmt.Errorf("no fencing configured")
	}
	f, err := r.fence.Fencer(rec.Host)
	if err != nil {
		return nil, err
	}
	// An earlier leader may have powered it off already: look first.
	if rec.Pending != nil || rec.FenceTries > 1 {
		if st, err := f.PowerState(ctx); err == nil && st == fence.PowerOff {
			return &FenceResult{Method: f.Driver(), State: "off", At: r.now(), Detail: "already off (op " + op.String() + ")"}, nil
		}
	}
	timeout := r.cfg.FencingTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	// The driver bounds each attempt by the host's timeout; this bounds the
	// whole call including its retries.
	fctx, cancel := context.WithTimeout(ctx, 4*timeout+10*time.Second)
	defer cancel()
	if err := f.PowerOff(fctx); err != nil {
		return nil, err
	}
	if f.Driver() == "noop" {
		return &FenceResult{Method: "noop", State: "unknown", At: r.now(), Detail: "noop agent: nothing was powered off; instances may get corrupted"}, nil
	}
	return &FenceResult{Method: f.Driver(), State: "off", At: r.now()}, nil
}

// marker builds the disable reason for a host.
func (r *Reconciler) markerFor(rec *HostRecord, prefix string) string {
	suffix := ""
	switch {
	case rec.Kdump:
		suffix = MarkerKdumpSuffix
	case rec.Evidence.Source == "orphan" && prefix == MarkerPrefix:
		suffix = MarkerRecoveredSuffix
	}
	return Marker(prefix, suffix, r.now())
}

func ptr[T any](v T) *T { return &v }

// service reads the host's compute service.
func (r *Reconciler) service(ctx context.Context, host string) (nova.Service, error) {
	svcs, err := r.nova.ListServicesOnHost(ctx, host, "nova-compute")
	if err != nil {
		return nova.Service{}, err
	}
	for _, s := range svcs {
		if s.Host == host {
			return s, nil
		}
	}
	return nova.Service{}, fmt.Errorf("no nova-compute service on host %s", host)
}

// disableStep forces the service down and disables it with the marker in
// one request, so a crash can never leave "forced down but not disabled"
// (W8). Level 3 does not force down: it waits for Nova to see the host down.
func (r *Reconciler) disableStep(ctx context.Context, rec *HostRecord) error {
	host := rec.Host
	svc, err := r.service(ctx, host)
	if err != nil {
		return err
	}
	wantForced := rec.Level != 3
	done := disabled(svc) && strings.Contains(svc.DisabledReason, MarkerPrefix) &&
		!strings.Contains(svc.DisabledReason, MarkerComplete) && !strings.Contains(svc.DisabledReason, MarkerFailed) &&
		(svc.ForcedDown || !wantForced)
	var op OpID
	if rec.Pending != nil && rec.Pending.Step == StepDisable {
		op = rec.Pending.OpID
	} else if op, err = r.begin(ctx, host, StepDisable, "", ""); err != nil {
		return err
	}
	detail := "already disabled: " + svc.DisabledReason
	if !done {
		reason := r.markerFor(rec, MarkerPrefix)
		upd := nova.ServiceUpdate{Status: ptr("disabled"), DisabledReason: ptr(reason)}
		if wantForced {
			upd.ForcedDown = ptr(true)
		}
		if _, err := r.nova.UpdateService(ctx, svc.ID, upd); err != nil {
			_ = r.end(ctx, StepEndCmd{Host: host, Step: StepDisable, OpID: op, OK: false, Detail: err.Error()})
			return err
		}
		detail = fmt.Sprintf("forced_down=%v, disabled: %s", wantForced, reason)
		r.log.Warn("service forced down and disabled", "host", host, "reason", reason, "forced_down", wantForced)
	}
	if !wantForced {
		if err := r.waitNovaDown(ctx, host); err != nil {
			return err
		}
	}
	return r.end(ctx, StepEndCmd{Host: host, Step: StepDisable, OpID: op, OK: true, Detail: detail})
}

// waitNovaDown is level 3: wait until Nova itself reports the service down.
func (r *Reconciler) waitNovaDown(ctx context.Context, host string) error {
	for {
		svc, err := r.service(ctx, host)
		if err == nil && svc.State == "down" {
			return nil
		}
		r.log.Info("QUICK_EVACUATE_LEVEL 3: waiting for Nova to report the service down", "host", host)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.track):
		}
	}
}

// planStep enables a reserved host if configured, then records which
// servers to evacuate.
func (r *Reconciler) planStep(ctx context.Context, rec *HostRecord) error {
	seg, segWhy := r.segmentOf(ctx, rec.Host, false)
	switch {
	case seg == nil && segWhy != "":
		return r.failHost(ctx, rec, segWhy)
	case seg != nil:
		// A host of a failover segment: its method picks the targets,
		// InstanceHA's reserved-host pool is not used.
		if err := r.planSegment(ctx, rec, seg); err != nil {
			return err
		}
		if rec = r.store.FSM().Host(rec.Host); rec == nil || rec.Phase != PhaseDisabled {
			return errWait
		}
	case r.cfg.ReservedHosts && rec.ReservedHost == "" && !stepTried(rec, StepReserve):
		r.reserveHost(ctx, rec)
	}
	servers, err := r.nova.ListServers(ctx, rec.Host)
	if err != nil {
		return err
	}
	ix := r.serverImages(ctx, r.tagIndex(ctx, false), servers)
	plan := ix.selectFor(r.cfg, seg, rec.Host, servers, rec.Adopted)
	if _, err := r.apply(ctx, CmdPlan, PlanCmd{Host: rec.Host, Servers: plan}); err != nil {
		return err
	}
	if r.cfg.Delay > 0 {
		r.log.Info("DELAY before evacuating", "host", rec.Host, "delay", r.cfg.Delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.cfg.Delay):
		}
	}
	return nil
}

func stepTried(rec *HostRecord, step string) bool {
	if rec.Pending != nil && rec.Pending.Step == step {
		return true
	}
	for _, s := range rec.Steps {
		if s.Step == step {
			return true
		}
	}
	return false
}

// reserveHost is §7: claim the first matching reserved host (the claim is
// a Raft command, so two recoveries never take the same one) and enable it.
func (r *Reconciler) reserveHost(ctx context.Context, rec *HostRecord) {
	cands, pool, err := r.reservedCandidates(ctx, rec.Host)
	if err != nil {
		r.log.Warn("cannot list services or aggregates for reserved hosts", "host", rec.Host, "err", err)
		return
	}
	for _, cand := range cands {
		op, err := r.begin(ctx, rec.Host, StepReserve, "", cand.Host)
		if err != nil {
			continue // held by another recovery
		}
		var uerr error
		for i := 0; i < 3; i++ {
			if _, uerr = r.nova.UpdateService(ctx, cand.ID, nova.ServiceUpdate{Status: ptr("enabled")}); uerr == nil {
				break
			}
			r.sleep(ctx, r.backoff*time.Duration(i+1))
		}
		if uerr != nil {
			r.log.Warn("cannot enable reserved host; evacuating without it", "host", rec.Host, "reserved", cand.Host, "err", uerr)
			_ = r.end(ctx, StepEndCmd{Host: rec.Host, Step: StepReserve, OpID: op, OK: false, Detail: uerr.Error()})
			continue
		}
		r.log.Info("reserved host enabled", "host", rec.Host, "reserved", cand.Host)
		_ = r.end(ctx, StepEndCmd{Host: rec.Host, Step: StepReserve, OpID: op, OK: true, Reserved: cand.Host, Detail: "enabled " + cand.Host})
		return
	}
	r.log.Info("no reserved host matches", "host", rec.Host, "pool", pool)
}

// reservedCandidates are the reserved hosts of InstanceHA's pool (R7.1)
// that match failed host (R7.2), in pool order, and the size of the pool.
// A failover segment's spare serves its own segment only.
func (r *Reconciler) reservedCandidates(ctx context.Context, host string) ([]nova.Service, int, error) {
	svcs, err := r.nova.ListServices(ctx, "nova-compute")
	if err != nil {
		return nil, 0, err
	}
	var failed nova.Service
	var pool []nova.Service
	for _, s := range svcs {
		if s.Host == host {
			failed = s
		}
		if disabled(s) && strings.Contains(s.DisabledReason, ReservedMarker) {
			pool = append(pool, s)
		}
	}
	var aggs []nova.Aggregate
	if r.cfg.TaggedAggregates {
		if aggs, err = r.nova.ListAggregates(ctx); err != nil {
			return nil, len(pool), err
		}
	}
	var out []nova.Service
	for _, cand := range pool {
		if r.inSegment(ctx, cand.Host) {
			continue
		}
		if reservedMatches(r.cfg.TaggedAggregates, r.cfg.EvacuableTag, aggs, failed, cand) {
			out = append(out, cand)
		}
	}
	return out, len(pool), nil
}

// reservedMatches is R7.2.
func reservedMatches(byAggregate bool, tag string, aggs []nova.Aggregate, failed, cand nova.Service) bool {
	if !byAggregate {
		return cand.Zone == failed.Zone
	}
	failedAggs := map[int]bool{}
	for _, a := range aggs {
		for _, h := range a.Hosts {
			if h == failed.Host {
				failedAggs[a.ID] = true
			}
		}
	}
	if len(failedAggs) == 0 {
		return false
	}
	inTagged, shares := false, false
	for _, a := range aggs {
		for _, h := range a.Hosts {
			if h != cand.Host {
				continue
			}
			if TagInMap(a.Metadata, tag) {
				inTagged = true
			}
			if failedAggs[a.ID] {
				shares = true
			}
		}
	}
	return inTagged && shares
}

func (r *Reconciler) sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// finishStep powers the host back on (unless it is dumping or was never
// powered off) and writes the complete marker (R11.1, R11.2).
func (r *Reconciler) finishStep(ctx context.Context, rec *HostRecord) error {
	host := rec.Host
	powerOn := !rec.PoweredOn && !rec.Kdump && rec.Fence != nil && rec.Fence.State == "off" && rec.Fence.Method != "operator"
	// A host that boots while its evacuations are still running would
	// clean them up half done; wait until Nova has finished them, whatever
	// brings it back: IHA's power-on, or the host itself once this step is
	// done and its agent's gate opens (a kdump kernel that wrote its dump,
	// a watchdog reset, a host an operator confirmed fenced, one level 1
	// never fenced). FORCE_ENABLE, the operator's "migrations are stuck, go
	// on", skips this as it skips the same check at re-enable.
	if !r.cfg.ForceEnable {
		if err := r.awaitEvacuations(ctx, rec); err != nil {
			return err
		}
	}
	if powerOn {
		op, err := r.begin(ctx, host, StepPowerOn, "", "")
		if err != nil {
			return err
		}
		var perr error
		if f, err := r.fence.Fencer(host); err != nil {
			perr = err
		} else {
			perr = f.PowerOn(ctx)
		}
		if perr != nil {
			_ = r.end(ctx, StepEndCmd{Host: host, Step: StepPowerOn, OpID: op, OK: false, Detail: perr.Error()})
			r.log.Error("power on after evacuation failed; retrying next cycle", "host", host, "err", perr)
			return errWait
		}
		if err := r.end(ctx, StepEndCmd{Host: host, Step: StepPowerOn, OpID: op, OK: true, Detail: "powered on"}); err != nil {
			return err
		}
	}
	r.unlockLeftovers(ctx, rec)
	svc, err := r.service(ctx, host)
	if err != nil {
		return err
	}
	op, err := r.begin(ctx, host, StepComplete, "", "")
	if err != nil {
		return err
	}
	reason := r.markerFor(rec, MarkerComplete)
	if _, err := r.nova.UpdateService(ctx, svc.ID, nova.ServiceUpdate{Status: ptr("disabled"), DisabledReason: ptr(reason)}); err != nil {
		// Upstream only logs this; the record still moves on.
		r.log.Warn("cannot write the complete marker", "host", host, "err", err)
	}
	if err := r.end(ctx, StepEndCmd{Host: host, Step: StepComplete, OpID: op, OK: true, Detail: reason}); err != nil {
		return err
	}
	r.log.Warn("host recovery complete", "host", host)
	if r.cfg.LeaveDisabled {
		_, err := r.apply(ctx, CmdPhase, PhaseCmd{Host: host, Phase: PhaseDone, From: PhaseReenabling, Reason: "left disabled (LEAVE_DISABLED)"})
		return err
	}
	return nil
}

// failHost writes the FAILED marker and parks the record for an operator.
func (r *Reconciler) failHost(ctx context.Context, rec *HostRecord, why string) error {
	op, err := r.begin(ctx, rec.Host, StepMarkFailed, "", "")
	if err != nil {
		return err
	}
	detail := why
	if svc, err := r.service(ctx, rec.Host); err == nil {
		reason := Marker(MarkerFailed, "", r.now())
		if _, err := r.nova.UpdateService(ctx, svc.ID, nova.ServiceUpdate{Status: ptr("disabled"), DisabledReason: ptr(reason)}); err != nil {
			detail += " (could not write the FAILED marker: " + err.Error() + ")"
		}
	}
	r.log.Error("host recovery failed; an operator must act", "host", rec.Host, "reason", why)
	if err := r.end(ctx, StepEndCmd{Host: rec.Host, Step: StepMarkFailed, OpID: op, OK: true, Detail: detail}); err != nil {
		return err
	}
	// The host waits for an operator; its servers must not wait locked.
	if cur := r.store.FSM().Host(rec.Host); cur != nil {
		r.unlockLeftovers(ctx, cur)
	}
	return nil
}

// finishedStatuses are migration statuses that no longer block re-enable.
var finishedStatuses = map[string]bool{"completed": true, "done": true, "error": true, "failed": true, "cancelled": true}

// migrationWindow is R10.7/R11.4's changes-since window.
func (r *Reconciler) migrationWindow() time.Duration {
	return max(5*time.Minute, (r.cfg.EvacuationTimeout + 120*time.Second).Truncate(time.Minute))
}

// awaitEvacuations returns once no evacuation migration from the host is
// running, looking every FollowInterval (then every TrackInterval), so the
// host is powered on seconds after its last rebuild, not a POLL later.
// After EVACUATION_TIMEOUT in this phase it tells the operator once and
// returns errWait: the poll cycles keep looking.
func (r *Reconciler) awaitEvacuations(ctx context.Context, rec *HostRecord) error {
	since := maxTime(rec.PhaseSince, r.termStart)
	for {
		err := r.evacuationsFinished(ctx, rec.Host)
		if !errors.Is(err, errWait) {
			return err
		}
		if r.now().Sub(since) > r.cfg.EvacuationTimeout {
			if r.reportedOnce.Once(episodePowerOnWait, rec.Host) {
				r.event(ctx, rec.Host, "PowerOnWaiting", fmt.Sprintf("an evacuation from this host has run for more than EVACUATION_TIMEOUT %s (is its destination down?); "+
					"the host stays off (a host that boots by itself: its nova-compute held by the gate) until it finishes, or until an operator sets FORCE_ENABLE", r.cfg.EvacuationTimeout), true)
			}
			return errWait
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.followFor(since)):
		}
	}
}

// evacuationsFinished returns errWait while an evacuation migration from
// host is neither done/completed nor failed (R11.4).
func (r *Reconciler) evacuationsFinished(ctx context.Context, host string) error {
	migs, err := r.nova.ListMigrations(ctx, nova.MigrationQuery{SourceCompute: host, MigrationType: "evacuation",
		ChangesSince: r.now().Add(-r.migrationWindow()), Limit: 1000})
	if err != nil {
		return err
	}
	for _, m := range migs {
		if !finishedStatuses[m.Status] {
			r.log.Debug("waiting: evacuation still in progress", "host", host, "migration", m.ID, "status", m.Status)
			return errWait
		}
	}
	return nil
}
