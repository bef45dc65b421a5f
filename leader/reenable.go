package leader

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ihaproject/iha/pkg/nova"
)

// The re-enable stage, the last of a poll cycle (Cycle): a recovered host
// that is back (its agent in the mesh, Nova hearing it) gets force-down
// unset and is enabled again as soon as Nova allows, unless LEAVE_DISABLED
// or the host's failover segment says otherwise.

// reenable handles hosts whose recovery finished and whose nova-compute may
// be back (R11.3–R11.7). Hosts with InstanceHA's complete marker and no
// record of ours are adopted so the operator sees them.
func (r *Reconciler) reenable(ctx context.Context, byHost map[string]nova.Service, cats Categories, now time.Time) {
	fsm := r.store.FSM()
	for _, s := range cats.Reenable {
		if rec := fsm.Host(s.Host); rec != nil && rec.Phase.Active() {
			continue
		}
		if !strings.Contains(s.DisabledReason, MarkerComplete) {
			// Enabled but forced down, with no record of ours: an operator
			// did that (W9). Leave it alone, say so once.
			if r.skips.Once(episodeForcedByOther, s.Host) {
				r.event(ctx, s.Host, "ForcedDownByOther", "service is forced down but enabled and IHA did not do it: left alone", true)
			}
			continue
		}
		if r.cfg.LeaveDisabled {
			continue
		}
		if err := r.detect(ctx, s, Evidence{Source: "marker", NovaState: s.State, ForcedDown: s.ForcedDown,
			DisabledReason: s.DisabledReason, Note: "evacuation finished before IHA took over"}, true, PhaseReenabling); err != nil {
			return
		}
	}
	for _, rec := range fsm.Hosts() {
		if rec.Phase != PhaseReenabling {
			continue
		}
		svc, ok := byHost[rec.Host]
		if !ok {
			continue
		}
		err := r.reenableHost(ctx, rec, svc, now)
		switch {
		case err == nil, errors.Is(err, errParked):
		case errors.Is(err, errWait):
			r.followRestore(rec, now)
		default:
			r.log.Warn("re-enable failed; retrying", "host", rec.Host, "err", err)
			r.followRestore(rec, now)
		}
	}
}

// agentStartWindow is how long after a restoring host's agent came back
// nova-compute is expected to start (libvirt, the gate, init_host).
const agentStartWindow = 5 * time.Minute

// restoreWindow bounds how long a restoring host without an agent is looked
// at every report interval rather than every POLL.
const restoreWindow = 15 * time.Minute

// followRestore schedules the next look at a host waiting to be re-enabled.
// Its agent back in the mesh means the host has booted and nova-compute is
// starting behind the gate: Nova allows the re-enable within seconds, so
// look every FollowInterval. An agent the mesh still calls dead or suspect
// means it is still off or booting: its return wakes the leader. A host
// with no agent is looked at every report interval for a while.
func (r *Reconciler) followRestore(rec *HostRecord, now time.Time) {
	m, known := r.snap[rec.Host]
	switch {
	case known && m.State == MeshAlive && now.Sub(m.Since) < agentStartWindow:
		r.lookAt(now.Add(r.follow))
	case known && m.State == MeshAlive:
		// Back for minutes and still not re-enabled (Nova keeps it forced
		// down, see noteUnforceRefused): no need to ask every second.
		r.lookAt(now.Add(min(r.cfg.Poll, max(r.cfg.NovaReportInterval, r.follow))))
	case known && m.State != MeshLeft:
	case now.Sub(maxTime(rec.PhaseSince, r.termStart)) < restoreWindow:
		r.lookAt(now.Add(min(r.cfg.Poll, max(r.cfg.NovaReportInterval, r.follow))))
	}
}

func (r *Reconciler) reenableHost(ctx context.Context, rec *HostRecord, svc nova.Service, now time.Time) error {
	host := rec.Host
	if r.cfg.LeaveDisabled && disabled(svc) {
		_, err := r.apply(ctx, CmdPhase, PhaseCmd{Host: host, Phase: PhaseDone, From: PhaseReenabling, Reason: "left disabled (LEAVE_DISABLED)"})
		return err
	}
	if !r.cfg.ForceEnable {
		if err := r.evacuationsFinished(ctx, host); err != nil {
			return err
		}
	}
	// R11.5, even with FORCE_ENABLE: a host that was dumping stays out until
	// it has sent no kdump notice for a while (the dump is written).
	if rec.Kdump || strings.Contains(svc.DisabledReason, "kdump") {
		if n, ok, _ := r.kdumpFor(ctx, host, now, r.kdumpQuiet); ok {
			r.log.Info("waiting: the host sent a kdump notice recently", "host", host, "last_notice", n.At, "quiet_for", r.kdumpQuiet)
			r.lookAt(n.At.Add(r.kdumpQuiet))
			return errParked
		}
	}
	if svc.ForcedDown {
		op, err := r.begin(ctx, host, StepUnforce, "", "")
		if err != nil {
			return err
		}
		if _, err := r.nova.UpdateService(ctx, svc.ID, nova.ServiceUpdate{ForcedDown: ptr(false)}); err != nil {
			if errors.Is(err, nova.ErrBadRequest) {
				r.noteUnforceRefused(ctx, rec, svc, now)
			}
			_ = r.end(ctx, StepEndCmd{Host: host, Step: StepUnforce, OpID: op, OK: false, Detail: err.Error()})
			return errWait
		}
		delete(r.unforceRefused, host)
		if err := r.end(ctx, StepEndCmd{Host: host, Step: StepUnforce, OpID: op, OK: true, Detail: "forced_down unset"}); err != nil {
			return err
		}
		r.log.Info("force-down unset; enabling once the service reports up", "host", host)
		// The cycle's snapshot is from before the change (R11.7 waits for
		// the next poll); read the service again and go on at once.
		if svc, err = r.service(ctx, host); err != nil {
			return err
		}
		if svc.ForcedDown {
			return errWait
		}
	}
	if disabled(svc) {
		if parked, err := r.parkRecovered(ctx, rec); parked || err != nil {
			if err != nil {
				return err
			}
			return errParked // in maintenance: left disabled until `iha maintenance HOST off`
		}
		if svc.State != "up" {
			return errWait
		}
		op, err := r.begin(ctx, host, StepEnable, "", "")
		if err != nil {
			return err
		}
		var uerr error
		for i := 0; i < 3; i++ {
			if _, uerr = r.nova.UpdateService(ctx, svc.ID, nova.ServiceUpdate{Status: ptr("enabled")}); uerr == nil {
				break
			}
			r.sleep(ctx, r.backoff*time.Duration(i+1))
		}
		if uerr != nil {
			_ = r.end(ctx, StepEndCmd{Host: host, Step: StepEnable, OpID: op, OK: false, Detail: uerr.Error()})
			return uerr
		}
		r.log.Warn("host re-enabled", "host", host)
		return r.end(ctx, StepEndCmd{Host: host, Step: StepEnable, OpID: op, OK: true, Detail: "service enabled"})
	}
	// Enabled and not forced down: someone already re-enabled it.
	_, err := r.apply(ctx, CmdPhase, PhaseCmd{Host: host, Phase: PhaseDone, From: PhaseReenabling, Reason: "service already enabled"})
	return err
}

// EventStuckForcedDown says Nova keeps a host forced down although its
// nova-compute runs: it started before the host's evacuations were done.
const EventStuckForcedDown = "StuckForcedDown"

// unforceRefusal is what the reconciler remembers of a host whose
// forced_down=false Nova refuses.
type unforceRefusal struct {
	episode      time.Time // the record's PhaseSince: a new phase is a new episode
	firstUpdated time.Time // the service's updated_at at the first refusal
	advancedAt   time.Time // when a refusal first saw a newer updated_at
	told         bool      // the operator was told (once per episode)
}

// noteUnforceRefused tells the operator, once per episode, about a host Nova
// will not un-force by itself. Nova refuses forced_down=false while an
// evacuation migration from the host is `done`, and only the host's
// nova-compute, when it starts, turns them `completed`. Normally it starts
// after the evacuations (the agent's gate holds it back), and the refusal
// lasts until its first heartbeat. But a nova-compute started while the
// rebuilds were still running (a host without the gate, powered on by an
// operator or a power-restore policy) completed the migrations too early,
// and the rebuilds then wrote `done` over them (lab FINDINGS.md 4): the
// heartbeat advances, the refusal stays, until nova-compute restarts once
// more. Only a person (or their tooling) can do that; IHA holds no
// credentials on the host. Counted from the first advance of updated_at
// after a refusal, for DELTA: a restart under way completes its migrations
// within seconds.
func (r *Reconciler) noteUnforceRefused(ctx context.Context, rec *HostRecord, svc nova.Service, now time.Time) {
	host := rec.Host
	w := r.unforceRefused[host]
	if w == nil || !w.episode.Equal(rec.PhaseSince) {
		r.log.Info("not all the migrations are complete yet: Nova keeps the host forced down until its nova-compute restarts; retrying every poll",
			"host", host)
		r.unforceRefused[host] = &unforceRefusal{episode: rec.PhaseSince, firstUpdated: svc.UpdatedAt}
		return
	}
	if w.advancedAt.IsZero() {
		if svc.UpdatedAt.After(w.firstUpdated) {
			w.advancedAt = now
		}
		return
	}
	if now.Sub(w.advancedAt) < r.cfg.Delta || w.told {
		return
	}
	w.told = true
	msg := fmt.Sprintf("Nova refuses to unset forced_down: evacuation migrations from %s are still `done` although its nova-compute "+
		"has been reporting since %s. It started before the evacuations finished (a host powered on without iha-agent's gate), "+
		"so it did not complete them. Restart nova-compute on %s once; IHA then re-enables the host.",
		host, w.advancedAt.UTC().Format(time.RFC3339), host)
	r.log.Error("host stays forced down until its nova-compute restarts", "host", host, "heartbeat", svc.UpdatedAt, "reporting_since", w.advancedAt)
	r.event(ctx, host, EventStuckForcedDown, msg, true)
}
