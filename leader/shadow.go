package leader

// Shadow mode on the leader: the reconciler judges, admits and plans every
// failure exactly as when it acts, then, where it would open a recovery
// record and start its workflow, records a shadow decision instead (with
// the time it would have acted), and never runs the workflow: no power
// change, no write to Nova (reads, power-state reads included, are
// allowed). Beside it, it watches what another agent (InstanceHA, or an
// acting IHA) does to the same hosts, from Nova: force-downs, InstanceHA's
// marker strings, evacuation migrations with their times, re-enables.
//
// The reconciler reaches this file through three calls: detect and skip
// (where a record would be opened) and shadowCycle (after each listing of
// the compute services). Everything here only reads Nova.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// shadowState is what one term's reconciler remembers in shadow mode.
// Touched only by the poll cycle's goroutine.
type shadowState struct {
	// prev is the last row of each compute service: what changed since is
	// what another agent did.
	prev map[string]nova.Service
	// before is the last row of a host before another agent acted on it:
	// IHA keeps judging that host on it, so that its own verdict (and its
	// time) does not depend on how fast the other agent was.
	before map[string]nova.Service
	// migs is the last class (running, done, failed) recorded of each
	// evacuation migration of the other agent.
	migs map[int]string
}

// shadowing reports whether this reconciler shadows: the runtime switch
// when an operator set it, else SHADOW.
func (r *Reconciler) shadowing() bool {
	return r.store.FSM().Settings().ShadowMode(r.cfg.Shadow)
}

func (r *Reconciler) decide(ctx context.Context, host string, d ShadowDecision) error {
	res, err := r.apply(ctx, CmdShadowDecide, ShadowDecideCmd{Host: host, Decision: d})
	if err == nil && res == true {
		r.log.Warn("shadow decision", "host", host, "decision", d.Kind, "verdict", d.Verdict, "detail", d.Detail, "servers", len(d.Servers))
	}
	return err
}

// shadowDetect is detect in shadow mode: the decision the workflow would
// have started with, at the time it would have started.
func (r *Reconciler) shadowDetect(ctx context.Context, s nova.Service, ev Evidence, adopted bool, phase Phase) error {
	now := r.now()
	inc := r.store.FSM().OpenIncident(s.Host)
	switch {
	case phase == PhaseReenabling:
		// The other agent's recovery finished (complete marker): IHA would
		// re-enable the host once its evacuations are done (R11.4).
		if inc == nil || inc.Decision(ShadowReenable) != nil {
			return nil
		}
		if !r.cfg.ForceEnable {
			// Not finished yet (its error says which evacuation runs): look
			// again soon; the shadow has nothing to decide before that.
			if finished := r.evacuationsFinished(ctx, s.Host) == nil; !finished {
				r.lookAt(now.Add(r.follow))
				return nil
			}
		}
		detail := "the complete marker is written and no evacuation from the host runs: IHA would unset force-down and enable the service once Nova reports it up (R11.4–R11.7)"
		if r.cfg.ForceEnable {
			detail = "the complete marker is written (FORCE_ENABLE: migrations not checked): IHA would unset force-down and enable the service once Nova reports it up"
		}
		return r.decide(ctx, s.Host, ShadowDecision{At: now, Kind: ShadowReenable, Detail: detail})
	case adopted:
		if inc != nil && (inc.Decision(ShadowFence) != nil || inc.Decision(ShadowResume) != nil) {
			return nil
		}
		detail := ev.Note
		if ev.DisabledReason != "" {
			detail = strings.TrimSpace(detail + " disabled_reason " + ev.DisabledReason)
		}
		if detail == "" {
			detail = "forced down and marked in Nova"
		}
		return r.decide(ctx, s.Host, ShadowDecision{At: now, Kind: ShadowResume, Detail: detail, Evidence: &ev})
	}
	if inc != nil && inc.Decision(ShadowFence) != nil {
		return nil // already decided: IHA's recovery would be under way
	}
	d := r.shadowPlan(ctx, s.Host)
	d.At, d.Kind, d.Verdict, d.Detail, d.Evidence, d.Level, d.Kdump = now, ShadowFence, ev.Verdict, ev.Note, &ev, r.cfg.QuickEvacuateLevel, ev.Verdict == string(VerdictKdump)
	if d.Detail == "" {
		d.Detail = describeEvidence(ev)
	}
	if b, ok := r.sh.before[s.Host]; ok {
		d.Detail += fmt.Sprintf(" (judged on the service as it was before the other agent acted: updated_at %s)", fmtTime(b.UpdatedAt))
	}
	return r.decide(ctx, s.Host, d)
}

// shadowSkip is skip in shadow mode.
func (r *Reconciler) shadowSkip(ctx context.Context, s nova.Service, reason string) {
	if err := r.decide(ctx, s.Host, ShadowDecision{At: r.now(), Kind: ShadowSkip, Detail: reason}); err != nil {
		r.log.Warn("could not record a shadow decision", "host", s.Host, "err", err)
	}
}

// shadowPlan is the plan step without its side effects: the failover
// segment's method and targets, the reserved host that would be enabled,
// and every server with its target or why it would stay. Nothing is
// claimed, enabled or committed.
func (r *Reconciler) shadowPlan(ctx context.Context, host string) ShadowDecision {
	var d ShadowDecision
	var notes []string
	seg, segWhy := r.segmentOf(ctx, host, false)
	rec := &HostRecord{Host: host}
	switch {
	case seg == nil && segWhy != "":
		notes = append(notes, "the recovery would fail: "+segWhy)
	case seg != nil:
		d.Segment = seg.Name
		svcs, err := r.read.ListServices(ctx, "nova-compute")
		if err != nil {
			notes = append(notes, "segment targets unknown: "+err.Error())
			break
		}
		maint := r.store.FSM().Settings().Maintenance
		for _, m := range methodOrder(seg.RecoveryMethod) {
			switch m {
			case config.MethodAuto:
				if t := autoTargets(seg, host, svcs, maint, r.activeHosts(host)); len(t) > 0 {
					d.Method, d.Targets = m, t
				}
			case config.MethodReservedHost:
				if el, _ := reservedEligible(seg, host, "", svcs, maint); len(el) > 0 {
					d.Method, d.Reserved, d.Targets = m, el[0].Host, []string{el[0].Host}
				}
			}
			if d.Method != "" {
				break
			}
		}
		if d.Method == "" {
			notes = append(notes, fmt.Sprintf("the recovery would fail: failover segment %s has no host to evacuate to", seg.Name))
		}
		rec.Segment, rec.Method, rec.Targets, rec.ReservedHost = seg.Name, d.Method, d.Targets, d.Reserved
	case r.cfg.ReservedHosts:
		cands, _, err := r.reservedCandidates(ctx, host)
		switch {
		case err != nil:
			notes = append(notes, "reserved hosts unknown: "+err.Error())
		case len(cands) > 0:
			d.Reserved = cands[0].Host
		}
	}
	servers, err := r.serversOf(ctx, host)
	if err != nil {
		notes = append(notes, "its servers could not be listed: "+err.Error())
	}
	ix := r.tagIndex(ctx, false)
	plan := ix.selectFor(r.cfg, seg, host, servers, false)
	rec.Servers = plan
	for _, p := range plan {
		sv := ShadowServer{ID: p.ID, Name: p.Name, Status: p.OrigStatus, Evacuate: p.State == ServerPending, Why: p.Error}
		switch {
		case !sv.Evacuate:
		case rec.Segment != "":
			if t, ok := segmentTarget(rec, p); ok && len(t) > 0 {
				sv.Target = t[0]
			}
		case r.cfg.ForceReservedHostEvacuation && d.Reserved != "":
			sv.Target = d.Reserved
		}
		d.Servers = append(d.Servers, sv)
	}
	if len(notes) > 0 {
		d.Detail = strings.Join(notes, "; ")
	}
	return d
}

// serversOf lists the servers of a failed host. In shadow mode the other
// agent may have evacuated some of them already (it acted first, between
// two of IHA's polls): those count as still on the host, as they were when
// it failed, so that IHA's admission and plan are judged on the host as it
// failed and not on what the other agent left of it. They are found from
// the evacuation migrations out of the host since its incident opened, on
// their destination's listing (reads only, both recorded for a replay).
func (r *Reconciler) serversOf(ctx context.Context, host string) ([]nova.Server, error) {
	servers, err := r.read.ListServers(ctx, host)
	if err != nil || !r.shadowing() {
		return servers, err
	}
	inc := r.store.FSM().OpenIncident(host)
	if inc == nil || len(inc.Actor) == 0 {
		return servers, nil
	}
	since := inc.Opened.Add(-migrationSkew)
	migs, merr := r.read.ListMigrations(ctx, nova.MigrationQuery{SourceCompute: host, MigrationType: "evacuation", ChangesSince: since, Limit: 1000})
	if merr != nil {
		r.log.Debug("cannot list the other agent's evacuations", "host", host, "err", merr)
		return servers, nil
	}
	// A server the other agent is rebuilding elsewhere shows REBUILD: it
	// was evacuable by its status when the host failed (the other agent
	// evacuated it), so it is judged as ACTIVE, its tags as they are.
	asFailed := func(sv nova.Server) nova.Server {
		if strings.EqualFold(sv.Status, "REBUILD") {
			sv.Status = "ACTIVE"
		}
		return sv
	}
	migrated := map[string]bool{}
	for _, m := range migs {
		if !m.CreatedAt.Before(since) {
			migrated[m.InstanceUUID] = true
		}
	}
	have := map[string]bool{}
	for i, sv := range servers {
		have[sv.ID] = true
		if migrated[sv.ID] {
			servers[i] = asFailed(sv)
		}
	}
	dest := map[string][]nova.Server{}
	for _, m := range migs {
		if have[m.InstanceUUID] || m.DestCompute == "" || !migrated[m.InstanceUUID] {
			continue
		}
		list, ok := dest[m.DestCompute]
		if !ok {
			list, _ = r.read.ListServers(ctx, m.DestCompute)
			dest[m.DestCompute] = list
		}
		for _, sv := range list {
			if sv.ID == m.InstanceUUID {
				sv.Host = host
				servers, have[sv.ID] = append(servers, asFailed(sv)), true
			}
		}
	}
	return servers, nil
}

// shadowCycle watches, on each listing of the compute services, what
// another agent did since the last one, records it in the hosts'
// incidents, closes the incidents of hosts back in service, and returns
// the rows IHA judges by: a host another agent acted on is judged on its
// row from before, until IHA has decided on it.
func (r *Reconciler) shadowCycle(ctx context.Context, svcs []nova.Service, now time.Time) []nova.Service {
	sh := &r.sh
	if sh.prev == nil {
		sh.prev, sh.before, sh.migs = map[string]nova.Service{}, map[string]nova.Service{}, map[int]string{}
	}
	fsm := r.store.FSM()
	out := make([]nova.Service, 0, len(svcs))
	var reservedEnabled []nova.Service
	for _, s := range svcs {
		prev, had := sh.prev[s.Host]
		sh.prev[s.Host] = s
		if rec := fsm.Host(s.Host); rec != nil && rec.Phase.Active() {
			out = append(out, s) // IHA's own recovery, begun before shadow mode
			continue
		}
		inc := fsm.OpenIncident(s.Host)
		obs := actorActions(prev, had, s, now)
		if had && prev.Status != s.Status && disabled(prev) && strings.Contains(prev.DisabledReason, ReservedMarker) && !disabled(s) {
			reservedEnabled = append(reservedEnabled, s)
		}
		for _, o := range obs {
			if inc == nil && !actorActs[o.Kind] {
				continue // an operator's change to a host nobody recovers
			}
			if actorActs[o.Kind] && had && untouched(prev) {
				v, why, _ := r.judge(prev, now)
				o.Before = string(v) + ": " + why
				if _, ok := sh.before[s.Host]; !ok {
					sh.before[s.Host] = prev
				}
			}
			r.observe(ctx, s.Host, o)
		}
		if inc = fsm.OpenIncident(s.Host); inc != nil {
			if working(s) {
				r.observeMigrations(ctx, inc, s.Host)
				r.lookAt(now.Add(r.track))
			}
			if backInService(s, inc) {
				// A whole recovery by the other agent can fit between two
				// listings (InstanceHA is quick, POLL is not), or before a
				// new term's first one: its evacuations stay in Nova's
				// migrations, read once more before the incident closes.
				if !working(s) {
					r.observeMigrations(ctx, inc, s.Host)
				}
				why := "host back in service: enabled, up and heartbeating since " + fmtTime(s.UpdatedAt)
				if disabled(s) {
					why = "host recovered and heartbeating again, left disabled with the complete marker"
				}
				if _, err := r.apply(ctx, CmdShadowClose, ShadowCloseCmd{Host: s.Host, Reason: why}); err != nil {
					r.log.Warn("could not close an incident", "host", s.Host, "err", err)
				}
				inc = nil
			}
		}
		b, masked := sh.before[s.Host]
		if masked && (inc == nil || inc.Decision(ShadowFence) != nil || inc.Decision(ShadowResume) != nil) {
			delete(sh.before, s.Host)
			masked = false
		}
		if masked {
			out = append(out, b)
			continue
		}
		out = append(out, s)
	}
	for _, rs := range reservedEnabled {
		for _, s := range svcs {
			if inc := fsm.OpenIncident(s.Host); inc != nil && working(s) {
				r.observe(ctx, s.Host, Observed{At: changedAt(sh.prev[rs.Host], rs, now), Seen: now, Kind: ObservedReserved, Detail: rs.Host})
			}
		}
	}
	return out
}

func (r *Reconciler) observe(ctx context.Context, host string, o Observed) {
	res, err := r.apply(ctx, CmdShadowObserve, ShadowObserveCmd{Host: host, Observed: o})
	if err != nil {
		r.log.Warn("could not record an observation", "host", host, "kind", o.Kind, "err", err)
		return
	}
	if res == true {
		r.log.Info("observed another agent's action", "host", host, "kind", o.Kind, "at", o.At, "detail", o.Detail, "server_id", o.ServerID)
	}
}

// observeMigrations records the evacuation migrations from host since the
// incident opened: when each was created, where to, and how it ended.
func (r *Reconciler) observeMigrations(ctx context.Context, inc *Incident, host string) {
	migs, err := r.read.ListMigrations(ctx, nova.MigrationQuery{SourceCompute: host, MigrationType: "evacuation",
		ChangesSince: inc.Opened.Add(-migrationSkew), Limit: 1000})
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			r.log.Debug("cannot list the other agent's evacuations", "host", host, "err", err)
		}
		return
	}
	for _, m := range migs {
		if m.CreatedAt.Before(inc.Opened.Add(-migrationSkew)) {
			continue
		}
		class := "running"
		switch {
		case m.Status == "done" || m.Status == "completed":
			class = "done"
		case finishedBad(m.Status):
			class = "failed"
		}
		if r.sh.migs[m.ID] == class {
			continue
		}
		r.sh.migs[m.ID] = class
		r.observe(ctx, host, Observed{At: m.CreatedAt, Seen: r.now(), Kind: ObservedEvacuation, ServerID: m.InstanceUUID,
			To: m.DestCompute, MigrationID: m.ID, Status: m.Status, Detail: class})
	}
}

// actorActions are the actions another agent took on a host between two
// rows of its service (the first row of a term: what it is in the middle
// of). Pure.
func actorActions(prev nova.Service, had bool, cur nova.Service, now time.Time) []Observed {
	var out []Observed
	add := func(kind, detail string, at time.Time) {
		out = append(out, Observed{At: at, Seen: now, Kind: kind, Detail: detail})
	}
	reason := cur.DisabledReason
	if !had {
		switch {
		case markerOf(reason) == ObservedMarker && disabled(cur):
			add(ObservedMarker, reason, markerTime(reason, now))
			if cur.ForcedDown {
				add(ObservedForceDown, "", markerTime(reason, now))
			}
		case markerOf(reason) == ObservedFailed && disabled(cur):
			add(ObservedFailed, reason, markerTime(reason, now))
		}
		return out
	}
	if !prev.ForcedDown && cur.ForcedDown {
		at := changedAt(prev, cur, now)
		// Nova keeps updated_at in whole seconds (truncated): a change it
		// dates T happened within [T, T+1s). The in-progress marker written
		// with the force-down (one PUT for IHA, two calls milliseconds
		// apart for InstanceHA) carries its writer's finer time: within
		// that second, it dates the force-down, which would otherwise look
		// up to a second earlier than it was (and IHA later than it).
		if markerOf(reason) == ObservedMarker && disabled(cur) && reason != prev.DisabledReason {
			if mt := markerTime(reason, time.Time{}); !mt.Before(at) && mt.Before(at.Add(time.Second)) {
				at = mt
			}
		}
		add(ObservedForceDown, "", at)
	}
	if disabled(cur) && (reason != prev.DisabledReason || !disabled(prev)) {
		switch k := markerOf(reason); k {
		case "":
			if !strings.Contains(reason, ReservedMarker) {
				add(ObservedDisable, reason, changedAt(prev, cur, now))
			}
		default:
			add(k, reason, markerTime(reason, now))
		}
	}
	if prev.ForcedDown && !cur.ForcedDown {
		add(ObservedUnforce, "", changedAt(prev, cur, now))
	}
	if disabled(prev) && !disabled(cur) && !strings.Contains(prev.DisabledReason, ReservedMarker) {
		add(ObservedEnable, "", changedAt(prev, cur, now))
	}
	return out
}

// markerOf classifies a disabled_reason by InstanceHA's marker strings
// (R8.3): ObservedMarker (in progress, kdump and recovered forms),
// ObservedComplete, ObservedFailed, or "" (not InstanceHA's).
func markerOf(reason string) string {
	switch {
	case strings.Contains(reason, MarkerFailed):
		return ObservedFailed
	case strings.Contains(reason, MarkerComplete):
		return ObservedComplete
	case strings.Contains(reason, MarkerPrefix):
		return ObservedMarker
	}
	return ""
}

// markerTime is the time written in a marker ("<prefix>: <ISO-8601>"), or
// def when it has none that parses.
func markerTime(reason string, def time.Time) time.Time {
	i := strings.LastIndex(reason, ": ")
	if i < 0 {
		return def
	}
	ts := strings.TrimSpace(reason[i+2:])
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, ts); err == nil {
			return t.UTC()
		}
	}
	return def
}

// changedAt is when an admin update of the service happened as Nova tells
// it: Nova bumps updated_at on every update, so a newer updated_at on a
// host that no longer heartbeats is the update's time; otherwise now.
func changedAt(prev, cur nova.Service, now time.Time) time.Time {
	if cur.UpdatedAt.After(prev.UpdatedAt) {
		return cur.UpdatedAt
	}
	return now
}

// untouched reports whether a row shows no recovery by anyone: not forced
// down, not carrying a marker.
func untouched(s nova.Service) bool {
	return !s.ForcedDown && markerOf(s.DisabledReason) == ""
}

// working reports whether a host is being recovered by another agent:
// forced down, or carrying its in-progress marker.
func working(s nova.Service) bool {
	return s.ForcedDown || markerOf(s.DisabledReason) == ObservedMarker
}

// backInService reports whether the host of an open incident is back:
// heartbeating since the incident opened (Nova heard it after), not
// forced down, and enabled (or left disabled with the complete marker).
func backInService(s nova.Service, inc *Incident) bool {
	if s.ForcedDown || s.State != "up" || !s.UpdatedAt.After(inc.Opened) {
		return false
	}
	return !disabled(s) || markerOf(s.DisabledReason) == ObservedComplete
}
