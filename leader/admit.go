package leader

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ihaproject/iha/pkg/nova"
)

// The admit stage: the gates a failed host must pass before its recovery
// opens (docs/rules.md §4, G4–G11), in order, then one record per admitted
// host. A new gate is one entry in gates.

// admission is one cycle's pass through the gates: what detect found, the
// new failures still admitted, and the tag index the gates share.
type admission struct {
	detection
	now  time.Time
	kept []nova.Service // new failures still admitted
	ix   TagIndex       // read by G5 and G6 (the evacuable scope)
}

// skipped is a failed host a gate will not recover, and why: its record
// says so (PhaseSkipped) and the operator is told once per reason.
type skipped struct {
	svc    nova.Service
	reason string
}

// gate is one admission rule. It returns the new failures it keeps and
// those it skips; a host in neither is deferred to a later cycle (G8's
// rate limit, G11's kdump wait). halt ends this cycle's admission,
// resumed recoveries included: the gate has said why (event or log).
type gate struct {
	id, name string
	// newOnly gates judge new failures only, and run only while some are
	// kept: resumed recoveries (Nova's markers) bypass them (rules §4:
	// to_resume hosts bypass G3, G5, G7, G8 and are not counted in G6).
	newOnly bool
	pass    func(r *Reconciler, ctx context.Context, a *admission) (kept []nova.Service, skip []skipped, halt bool)
}

// gates are the admission rules in the order they run (G2 and G3 belong to
// the detect stage: a host in recovery is not judged, and CHECK_HEARTBEAT
// is an input of the verdict table).
var gates = []gate{
	{"G4", "all services stale", false, (*Reconciler).gateAllStale},
	{"G5", "evacuable", true, (*Reconciler).gateEvacuable},
	{"G6", "threshold", true, (*Reconciler).gateThreshold},
	{"G7", "aggregate limit", true, (*Reconciler).gateAggregateLimit},
	{"G8", "rate limit", true, (*Reconciler).gateRateLimit},
	{"G9", "disabled or paused", false, (*Reconciler).gatePaused},
	{"G10", "scheduler up", false, (*Reconciler).gateScheduler},
	{"G11", "kdump wait", true, (*Reconciler).gateKdumpWait},
}

// admit runs the gates on this cycle's failed hosts and opens a record for
// each admitted one and each recovery to resume.
func (r *Reconciler) admit(ctx context.Context, d detection, now time.Time) error {
	if len(d.cands)+len(d.resume) == 0 {
		r.stale = false // G4's episode ends when nothing looks failed
		return nil
	}
	a := &admission{detection: d, now: now, kept: d.cands}
	for _, g := range gates {
		if g.newOnly && len(a.kept) == 0 {
			continue
		}
		kept, skip, halt := g.pass(r, ctx, a)
		for _, s := range skip {
			r.skip(ctx, s.svc, s.reason, now)
		}
		a.kept = kept
		if halt || len(a.kept)+len(a.resume) == 0 {
			return nil
		}
	}
	for _, s := range a.kept {
		v := a.verdicts[s.Host]
		ev := r.evidence(s, now, v, a.why[s.Host])
		r.log.Warn("host judged failed", "host", s.Host, "verdict", v, "evidence", a.why[s.Host], "nova_state", s.State,
			"updated_at", s.UpdatedAt, "stale", ev.Stale, "mesh", ev.MeshState, "accusers", ev.Accusers)
		if err := r.detect(ctx, s, ev, false, ""); err != nil {
			return err
		}
	}
	for _, s := range a.resume {
		if r.shadowing() {
			// The other agent's recovery, watched: the shadow decides, it
			// does not resume anything (shadowDetect).
			r.log.Info("a recovery marked in Nova by the acting agent: shadow decision only", "host", s.Host, "disabled_reason", s.DisabledReason)
		} else {
			r.log.Warn("resuming a recovery marked in Nova", "host", s.Host, "disabled_reason", s.DisabledReason)
		}
		ev := Evidence{Source: "marker", NovaState: s.State, NovaUpdatedAt: s.UpdatedAt, ForcedDown: s.ForcedDown,
			DisabledReason: s.DisabledReason}
		if err := r.detect(ctx, s, ev, true, ""); err != nil {
			return err
		}
	}
	return nil
}

// gateAllStale is G4: when every active compute service looks failed, Nova
// or this leader's clock is broken, not the computes; nothing is admitted.
func (r *Reconciler) gateAllStale(ctx context.Context, a *admission) ([]nova.Service, []skipped, bool) {
	if AllServicesStale(a.svcs, len(a.cands)) {
		if !r.stale {
			r.stale = true
			msg := fmt.Sprintf("all %d active compute services look failed: suspect Nova or clock trouble, not acting", activeServices(a.svcs))
			r.log.Error(msg)
			r.event(ctx, "", "AllServicesStale", msg, true)
		}
		return a.kept, nil, true
	}
	r.stale = false
	for _, s := range a.kept {
		r.log.Info("failed host: applying the admission gates", "host", s.Host, "verdict", a.verdicts[s.Host], "evidence", a.why[s.Host])
	}
	return a.kept, nil, false
}

// gateEvacuable is G5: a host outside IHA's scope (failover segment,
// TAGGED_AGGREGATES) or with no evacuable server is not recovered.
func (r *Reconciler) gateEvacuable(ctx context.Context, a *admission) ([]nova.Service, []skipped, bool) {
	a.ix = r.tagIndex(ctx, true)
	var kept []nova.Service
	var skip []skipped
	for _, s := range a.kept {
		seg, segWhy := r.segmentOf(ctx, s.Host, true)
		if segWhy != "" {
			skip = append(skip, skipped{s, segWhy})
			continue
		}
		if seg == nil && !a.ix.HostInScope(r.cfg, s.Host) {
			skip = append(skip, skipped{s, "host is not in an aggregate tagged " + r.cfg.EvacuableTag + " (TAGGED_AGGREGATES)"})
			continue
		}
		servers, err := r.serversOf(ctx, s.Host)
		if err != nil {
			r.log.Warn("cannot list servers of failed host; keeping it", "host", s.Host, "err", err)
			kept = append(kept, s)
			continue
		}
		if len(servers) == 0 {
			skip = append(skip, skipped{s, "no servers on the host: nothing to evacuate"})
			continue
		}
		if !anyPending(r.serverImages(ctx, a.ix, servers).selectFor(r.cfg, seg, s.Host, servers, false)) {
			skip = append(skip, skipped{s, "no evacuable server on the host (status, name or tags)"})
			continue
		}
		kept = append(kept, s)
	}
	return kept, skip, false
}

// gateThreshold is G6: when more than THRESHOLD percent of the computes
// are failed or in recovery (counting the hosts the mesh is losing), this
// looks like a partition, not failures: nothing is admitted this cycle.
func (r *Reconciler) gateThreshold(ctx context.Context, a *admission) ([]nova.Service, []skipped, bool) {
	var scope map[string]bool
	if r.cfg.TaggedAggregates {
		scope = a.ix.EvacuableHosts
	}
	counted := slices.Clone(a.kept)
	var lost []string // hosts only the mesh counts
	if r.mesh != nil && r.cfg.DetectionMode != "nova" {
		for _, s := range MeshFailing(r.snap, a.svcs, r.clock.skew()) {
			if !slices.ContainsFunc(a.kept, func(k nova.Service) bool { return k.Host == s.Host }) {
				counted, lost = append(counted, s), append(lost, s.Host)
			}
		}
		slices.Sort(lost)
	}
	pct := ThresholdPercent(a.svcs, counted, scope)
	if !ThresholdExceeded(pct, r.cfg.Threshold) {
		r.skips.Clear(episodeThreshold, "")
		return a.kept, nil, false
	}
	reason := fmt.Sprintf("THRESHOLD exceeded: %.1f%% of computes failed or in recovery > %d%%; suspect a partition, not acting",
		pct, r.cfg.Threshold)
	if len(lost) > 0 {
		reason = fmt.Sprintf("THRESHOLD exceeded: %.1f%% of computes failed, in recovery or being lost by the mesh (%s) > %d%%; suspect a partition, not acting",
			pct, strings.Join(lost, ", "), r.cfg.Threshold)
	}
	key := fmt.Sprintf("threshold:%d", len(a.kept))
	if r.skips.OnceFor(episodeThreshold, "", key) {
		r.event(ctx, "", "ThresholdExceeded", reason, true)
	}
	skip := make([]skipped, len(a.kept))
	for i, s := range a.kept {
		skip[i] = skipped{s, reason}
	}
	return nil, skip, true
}

// gateAggregateLimit is G7: with TAGGED_AGGREGATES, an aggregate whose
// failed and recovering hosts exceed its MaxFailuresKey admits no more.
// A failed aggregate listing admits every host (fail-open, as upstream).
func (r *Reconciler) gateAggregateLimit(ctx context.Context, a *admission) ([]nova.Service, []skipped, bool) {
	if !r.cfg.TaggedAggregates {
		return a.kept, nil, false
	}
	aggs, err := r.read.ListAggregates(ctx)
	if err != nil {
		return a.kept, nil, false
	}
	blocked := AggregateLimited(aggs, r.cfg.EvacuableTag, a.kept, a.inflight)
	var kept []nova.Service
	var skip []skipped
	for _, s := range a.kept {
		if agg, ok := blocked[s.Host]; ok {
			skip = append(skip, skipped{s, "aggregate " + agg + " exceeds " + MaxFailuresKey})
			continue
		}
		kept = append(kept, s)
	}
	return kept, skip, false
}

// gateRateLimit is G8: at most MAX_HOSTS_PER_CYCLE new recoveries open
// per cycle, in Nova's order; the rest wait for the next cycle.
func (r *Reconciler) gateRateLimit(ctx context.Context, a *admission) ([]nova.Service, []skipped, bool) {
	if n := r.cfg.MaxHostsPerCycle; n > 0 && len(a.kept) > n {
		r.event(ctx, "", "FencingRateLimited", fmt.Sprintf("%d failed hosts, %d admitted this cycle (MAX_HOSTS_PER_CYCLE), the rest next cycle", len(a.kept), n), true)
		return a.kept[:n], nil, false
	}
	return a.kept, nil, false
}

// gatePaused is G9: DISABLED, or `iha pause`, opens nothing.
func (r *Reconciler) gatePaused(_ context.Context, a *admission) ([]nova.Service, []skipped, bool) {
	if r.paused() {
		r.log.Warn("DISABLED is true (or recovery is paused), not evacuating", "failed_hosts", len(a.kept), "to_resume", len(a.resume))
		return a.kept, nil, true
	}
	return a.kept, nil, false
}

// gateScheduler is G10: with no nova-scheduler up, nothing could place the
// evacuated servers; nothing opens.
func (r *Reconciler) gateScheduler(ctx context.Context, a *admission) ([]nova.Service, []skipped, bool) {
	scheds, err := r.read.ListServices(ctx, "nova-scheduler")
	if !SchedulerUp(scheds, err) {
		r.event(ctx, "", "SchedulerDown", "no nova-scheduler is up: not starting recoveries", true)
		return a.kept, nil, true
	}
	return a.kept, nil, false
}

// gateKdumpWait is G11 (CHECK_KDUMP): a failed host without a kdump notice
// waits up to KDUMP_TIMEOUT for one before it is powered off
// (kdumpWaitOver); a host that sent one opens at once.
func (r *Reconciler) gateKdumpWait(_ context.Context, a *admission) ([]nova.Service, []skipped, bool) {
	if !r.cfg.CheckKdump {
		return a.kept, nil, false
	}
	var kept []nova.Service
	for _, s := range a.kept {
		if a.verdicts[s.Host] == VerdictKdump || r.kdumpWaitOver(s.Host, a.now) {
			kept = append(kept, s)
		}
	}
	return kept, nil, false
}

// kdumpWaitOver is R12.3 (b–d): a failed host with no kdump notice is given
// KDUMP_TIMEOUT from the first time it was judged failed for one to arrive
// before it is powered off, so a dump in progress is not cut. Unlike
// InstanceHA the wait ends at its deadline, not at the next poll, and a
// notice ends it at once (the mesh wakes the reconciler).
func (r *Reconciler) kdumpWaitOver(host string, now time.Time) bool {
	start, ok := r.kdumpWait[host]
	if !ok {
		start = now
		r.kdumpWait[host] = now
	}
	timeout := r.cfg.KdumpTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	deadline := start.Add(timeout)
	if !now.Before(deadline) {
		r.log.Info("no kdump notice within KDUMP_TIMEOUT: fencing", "host", host, "waited", now.Sub(start).Round(time.Millisecond))
		return true
	}
	if !ok {
		r.log.Info("waiting for a kdump notice before powering off (CHECK_KDUMP)", "host", host, "until", deadline.UTC().Format(time.RFC3339))
	}
	r.lookAt(deadline)
	return false
}

func (r *Reconciler) detect(ctx context.Context, s nova.Service, ev Evidence, adopted bool, phase Phase) error {
	ev.Mode = r.cfg.DetectionMode
	// A recovery adopted from a (kdump) marker is one InstanceHA (or an
	// earlier leader) started because the host was dumping: it is not
	// powered off now, possibly mid-dump, nor powered on at the end (R11.1).
	kd := ev.Verdict == string(VerdictKdump) || adopted && strings.Contains(ev.DisabledReason, MarkerKdumpSuffix)
	if r.shadowing() {
		return r.shadowDetect(ctx, s, ev, adopted, phase) // a decision instead of a recovery (shadow.go)
	}
	_, err := r.apply(ctx, CmdDetect, DetectCmd{Host: s.Host, ServiceID: s.ID, Zone: s.Zone, Evidence: ev,
		Level: r.cfg.QuickEvacuateLevel, Adopted: adopted, Phase: phase, Kdump: kd})
	return err
}

// skip records that a failed host is not recovered, once per reason.
func (r *Reconciler) skip(ctx context.Context, s nova.Service, reason string, now time.Time) {
	if r.shadowing() {
		r.shadowSkip(ctx, s, reason)
		return
	}
	if rec := r.store.FSM().Host(s.Host); rec != nil && rec.Phase == PhaseSkipped && rec.Reason == reason {
		return
	}
	r.log.Warn("failed host not recovered", "host", s.Host, "reason", reason)
	_, err := r.apply(ctx, CmdDetect, DetectCmd{Host: s.Host, ServiceID: s.ID, Zone: s.Zone, Phase: PhaseSkipped, Reason: reason,
		Level: r.cfg.QuickEvacuateLevel,
		Evidence: Evidence{Mode: r.cfg.DetectionMode, Source: "nova", NovaState: s.State, NovaUpdatedAt: s.UpdatedAt,
			Stale: IsStale(s, r.novaNow(now), r.cfg.Delta), NovaClockSkew: r.clock.skew()}})
	if err != nil {
		r.log.Warn("could not record skipped host", "host", s.Host, "err", err)
	}
}
