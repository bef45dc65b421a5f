package leader

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// Failover segments (Masakari parity). A host of a segment is recovered
// within its segment only: every evacuate names a target host of the
// segment (Nova runs the scheduler's checks on it at microversion ≥ 2.29;
// IHA never forces), chosen by the segment's recovery method:
//
//   - auto: the hosts of the segment that are up, enabled, not in
//     maintenance and not in recovery, servers spread over them in turn;
//   - reserved_host: the segment's reserved hosts in order; the first one
//     that is disabled (idle), up and not claimed is claimed (a Raft
//     command: two recoveries never hold the same one), enabled in Nova
//     (which clears its reserved state), optionally added to the failed
//     host's aggregates, and receives every server;
//   - auto_priority: auto, then reserved_host when auto has no target or
//     its evacuations failed; rh_priority: the reverse. A reserved_host
//     whose evacuations failed first tries the next reserved host.
//
// Hosts in no segment keep InstanceHA's behaviour.

// segmentCacheTTL bounds how old the merged segment view may be when it is
// not refreshed on purpose (admission refreshes it).
const segmentCacheTTL = 60 * time.Second

// segmentRefreshMin is the age under which even a refresh reuses the view.
const segmentRefreshMin = time.Second

// segmentCache is the reconciler's merged view of the segments file and
// the segment aggregates.
type segmentCache struct {
	mu       sync.Mutex
	view     segmentView
	at       time.Time
	set      bool
	reported string // problems last reported as an event
	warned   map[string]bool
}

// segmentView is one resolution of the segments.
type segmentView struct {
	segs config.Segments
	// named holds the short names of every host that some source puts in
	// a segment, valid or not: when the configuration is invalid these
	// hosts are not recovered at all (their instances must not leave a
	// segment we cannot read), the others keep InstanceHA's behaviour.
	named   map[string]bool
	problem string
}

// segments returns the merged view, refreshed when asked or when older
// than segmentCacheTTL. Problems are reported once as a
// SegmentConfigInvalid event; an unreadable aggregate list keeps the last
// view (or, before any, the file's segments).
func (r *Reconciler) segments(ctx context.Context, refresh bool) segmentView {
	c := &r.seg
	c.mu.Lock()
	defer c.mu.Unlock()
	age := r.now().Sub(c.at)
	if c.set && (age < segmentRefreshMin || !refresh && age < segmentCacheTTL) {
		return c.view // one resolution serves every candidate of a cycle
	}
	aggs, err := r.read.ListAggregates(ctx)
	if err != nil {
		if c.set {
			r.log.Warn("cannot list aggregates; keeping the last segment view", "err", err)
			return c.view
		}
		r.log.Warn("cannot list aggregates; segments from the segments file only", "err", err)
	}
	var from []config.AggregateSegment
	named := map[string]bool{}
	for _, a := range aggs {
		if _, ok := a.Metadata[config.AggregateSegmentKey]; !ok {
			continue
		}
		from = append(from, config.AggregateSegment{ID: a.ID, Name: a.Name, Hosts: a.Hosts, Metadata: a.Metadata})
		for _, h := range a.Hosts {
			named[config.ShortName(h)] = true
		}
	}
	if r.cfg.Segments.Empty() && len(from) == 0 {
		c.view, c.at, c.set = segmentView{}, r.now(), true
		return c.view
	}
	merged, problems, warnings := config.MergeSegments(r.cfg.Segments, from)
	if svcs, err := r.read.ListServices(ctx, "nova-compute"); err == nil {
		known := make([]string, len(svcs))
		for i, s := range svcs {
			known[i] = s.Host
		}
		problems = append(problems, config.CheckSegmentHosts(merged, known)...)
	}
	for _, s := range merged.Items {
		for _, h := range s.Hosts {
			named[config.ShortName(h)] = true
		}
	}
	v := segmentView{segs: merged, named: named}
	if len(problems) > 0 {
		v.problem = (&config.Problems{Items: problems}).Error()
		if c.reported != v.problem {
			c.reported = v.problem
			r.log.Error("failover segments are invalid: their hosts are not recovered until this is fixed", "problems", v.problem)
			r.event(ctx, "", "SegmentConfigInvalid", "failover segments are invalid; hosts named by a segment are not recovered until fixed:\n"+v.problem, true)
		}
	} else {
		c.reported = ""
	}
	if c.warned == nil {
		c.warned = map[string]bool{}
	}
	for _, w := range warnings {
		if !c.warned[w] {
			c.warned[w] = true
			r.log.Warn("failover segments", "warning", w)
		}
	}
	c.view, c.at, c.set = v, r.now(), true
	return v
}

// segmentOf returns host's segment, and a reason not to recover it: the
// segment configuration is invalid and names the host, or the segment is
// disabled. (nil, "") is a host in no segment.
func (r *Reconciler) segmentOf(ctx context.Context, host string, refresh bool) (*config.Segment, string) {
	v := r.segments(ctx, refresh)
	if v.problem != "" && v.named[config.ShortName(host)] {
		return nil, "failover segment configuration is invalid (see the SegmentConfigInvalid event): " + firstLine(v.problem)
	}
	seg := v.segs.ForHost(host)
	if seg == nil {
		return nil, ""
	}
	if !seg.Enabled {
		return seg, fmt.Sprintf("failover segment %s is disabled (%s)", seg.Name, seg.Source)
	}
	return seg, ""
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " (and more)"
	}
	return s
}

// inSegment reports whether host belongs to a segment (InstanceHA's
// reserved-host pool must not take a segment's spare).
func (r *Reconciler) inSegment(ctx context.Context, host string) bool {
	v := r.segments(ctx, false)
	return v.named[config.ShortName(host)] || v.segs.ForHost(host) != nil
}

// methodOrder is the order in which a recovery method tries auto and
// reserved_host.
func methodOrder(m string) []string {
	switch m {
	case config.MethodReservedHost:
		return []string{config.MethodReservedHost}
	case config.MethodAutoPriority:
		return []string{config.MethodAuto, config.MethodReservedHost}
	case config.MethodRHPriority:
		return []string{config.MethodReservedHost, config.MethodAuto}
	}
	return []string{config.MethodAuto}
}

// autoTargets are the hosts of seg that may receive servers now: up,
// enabled, not forced down, not in maintenance, not in recovery, not the
// failed host. In segment order.
func autoTargets(seg *config.Segment, failed string, svcs []nova.Service, maint map[string]string, active map[string]bool) []string {
	by := map[string]nova.Service{}
	for _, s := range svcs {
		by[config.ShortName(s.Host)] = s
	}
	var out []string
	for _, h := range seg.Hosts {
		s, ok := by[config.ShortName(h)]
		if !ok || config.ShortName(h) == config.ShortName(failed) {
			continue
		}
		if _, m := maint[s.Host]; m || active[s.Host] {
			continue
		}
		if s.State == "up" && !s.ForcedDown && !disabled(s) {
			out = append(out, s.Host)
		}
	}
	return out
}

// activeHosts are the hosts with an active record, other than self.
func (r *Reconciler) activeHosts(self string) map[string]bool {
	out := map[string]bool{}
	for _, h := range r.store.FSM().Hosts() {
		if h.Phase.Active() && h.Host != self {
			out[h.Host] = true
		}
	}
	return out
}

// planSegment decides how a host of seg is recovered and records it
// (SegmentCmd). It fails the host when no method of the segment has a
// target: its servers are never sent outside the segment.
func (r *Reconciler) planSegment(ctx context.Context, rec *HostRecord, seg *config.Segment) error {
	if rec.Segment != "" && rec.Method != "" {
		return nil // decided before a failover
	}
	svcs, err := r.read.ListServices(ctx, "nova-compute")
	if err != nil {
		return err
	}
	var why []string
	for i, m := range methodOrder(seg.RecoveryMethod) {
		cmd := SegmentCmd{Host: rec.Host, Segment: seg.Name, RecoveryMethod: seg.RecoveryMethod, Method: m, FellBack: i > 0}
		switch m {
		case config.MethodAuto:
			cmd.Targets = autoTargets(seg, rec.Host, svcs, r.store.FSM().Settings().Maintenance, r.activeHosts(rec.Host))
			if len(cmd.Targets) == 0 {
				why = append(why, "auto: no host of the segment is up, enabled and free")
				continue
			}
			cmd.Reason = "evacuating to " + strings.Join(cmd.Targets, ", ")
		case config.MethodReservedHost:
			host, no := r.claimReserved(ctx, rec, seg, svcs)
			if host == "" {
				why = append(why, "reserved_host: "+no)
				continue
			}
			cmd.Reason = "evacuating to reserved host " + host
		}
		if len(why) > 0 {
			cmd.Reason += " (" + strings.Join(why, "; ") + ")"
		}
		_, err := r.apply(ctx, CmdSegment, cmd)
		return err
	}
	reason := fmt.Sprintf("failover segment %s (recovery_method %s): no host to evacuate to within the segment: %s",
		seg.Name, seg.RecoveryMethod, strings.Join(why, "; "))
	if _, err := r.apply(ctx, CmdSegment, SegmentCmd{Host: rec.Host, Segment: seg.Name, RecoveryMethod: seg.RecoveryMethod, Reason: reason}); err != nil {
		return err
	}
	return r.failHost(ctx, rec, reason)
}

// claimReserved tries the reserved hosts of seg in order and returns the
// one it claimed and enabled, or "" and why none.
func (r *Reconciler) claimReserved(ctx context.Context, rec *HostRecord, seg *config.Segment, svcs []nova.Service) (string, string) {
	if len(seg.ReservedHosts) == 0 {
		return "", "the segment has no reserved host"
	}
	eligible, why := reservedEligible(seg, rec.Host, rec.ReservedHost, svcs, r.store.FSM().Settings().Maintenance)
	for _, s := range eligible {
		name := s.Host
		op, err := r.begin(ctx, rec.Host, StepReserve, "", s.Host)
		if err != nil {
			why = append(why, name+": "+err.Error())
			continue
		}
		var uerr error
		for i := 0; i < 3; i++ {
			if _, uerr = r.nova.UpdateService(ctx, s.ID, nova.ServiceUpdate{Status: ptr("enabled")}); uerr == nil {
				break
			}
			r.sleep(ctx, r.backoff*time.Duration(i+1))
		}
		if uerr != nil {
			r.log.Warn("cannot enable reserved host; trying the next one", "host", rec.Host, "reserved", s.Host, "err", uerr)
			_ = r.end(ctx, StepEndCmd{Host: rec.Host, Step: StepReserve, OpID: op, OK: false, Detail: "enable " + s.Host + ": " + uerr.Error()})
			why = append(why, name+" could not be enabled")
			continue
		}
		detail := "enabled " + s.Host + " (reserved host of segment " + seg.Name + ")"
		if r.cfg.AddReservedHostToAggregate {
			detail += r.addToAggregates(ctx, rec.Host, s.Host)
		}
		r.log.Info("reserved host enabled", "host", rec.Host, "reserved", s.Host, "segment", seg.Name)
		if err := r.end(ctx, StepEndCmd{Host: rec.Host, Step: StepReserve, OpID: op, OK: true, Reserved: s.Host, Detail: detail}); err != nil {
			return "", err.Error()
		}
		return s.Host, ""
	}
	if len(why) == 0 {
		return "", "no reserved host is free"
	}
	return "", strings.Join(why, ", ")
}

// reservedEligible are the reserved hosts of seg that could take failed's
// servers now, in the segment's order: in Nova, not failed itself nor the
// one it holds already, idle (disabled), up and not forced down, not in
// maintenance. why says what ruled out each of the others.
func reservedEligible(seg *config.Segment, failed, holding string, svcs []nova.Service, maint map[string]string) ([]nova.Service, []string) {
	by := map[string]nova.Service{}
	for _, s := range svcs {
		by[config.ShortName(s.Host)] = s
	}
	var out []nova.Service
	var why []string
	for _, name := range seg.ReservedHosts {
		s, ok := by[config.ShortName(name)]
		switch {
		case !ok:
			why = append(why, name+" is not in Nova")
			continue
		case config.ShortName(name) == config.ShortName(failed), s.Host == holding:
			continue
		case !disabled(s):
			why = append(why, name+" is enabled already (in use)")
			continue
		case s.State != "up" || s.ForcedDown:
			why = append(why, name+" is down")
			continue
		}
		if _, m := maint[s.Host]; m {
			why = append(why, name+" is in maintenance")
			continue
		}
		out = append(out, s)
	}
	return out, why
}

// aggregateAdder is the part of Nova that ADD_RESERVED_HOST_TO_AGGREGATE
// needs (pkg/nova's *Client has it).
type aggregateAdder interface {
	AddHostToAggregate(ctx context.Context, aggregateID int, host string) error
}

// addToAggregates adds spare to every aggregate of failed that it is not
// in yet (Masakari's add_reserved_host_to_aggregate) and says what it did.
func (r *Reconciler) addToAggregates(ctx context.Context, failed, spare string) string {
	ad, ok := r.novaRaw.(aggregateAdder)
	if !ok {
		return "; ADD_RESERVED_HOST_TO_AGGREGATE: this Nova client cannot add hosts to aggregates"
	}
	aggs, err := r.read.ListAggregates(ctx)
	if err != nil {
		return "; could not list aggregates: " + err.Error()
	}
	var added []string
	for _, a := range aggs {
		hasFailed, hasSpare := false, false
		for _, h := range a.Hosts {
			hasFailed = hasFailed || h == failed
			hasSpare = hasSpare || h == spare
		}
		if !hasFailed || hasSpare {
			continue
		}
		if err := ad.AddHostToAggregate(ctx, a.ID, spare); err != nil && !errors.Is(err, nova.ErrConflict) {
			r.log.Warn("cannot add reserved host to aggregate", "host", failed, "reserved", spare, "aggregate", a.Name, "err", err)
			continue
		}
		added = append(added, a.Name)
	}
	if len(added) == 0 {
		return ""
	}
	sort.Strings(added)
	return "; added to aggregates " + strings.Join(added, ", ")
}

// segmentTarget is the target of one server's evacuate for a host of a
// segment: the reserved host, or the auto targets in turn (spread by the
// server's place in the plan, moved on by each new attempt). ok is false
// when the record has no target: the caller must not evacuate.
func segmentTarget(rec *HostRecord, s *ServerRecord) (targets []string, ok bool) {
	switch rec.Method {
	case config.MethodReservedHost:
		if rec.ReservedHost == "" {
			return nil, false
		}
		return []string{rec.ReservedHost}, true
	case config.MethodAuto:
		n := len(rec.Targets)
		if n == 0 {
			return nil, false
		}
		idx := 0
		for _, o := range rec.Servers {
			if o.ID == s.ID {
				break
			}
			if o.State != ServerSkipped {
				idx++
			}
		}
		start := (idx + max(s.Attempts-1, 0)) % n
		out := make([]string, 0, n)
		for i := 0; i < n; i++ {
			out = append(out, rec.Targets[(start+i)%n])
		}
		return out, true
	}
	return nil, false
}

// evacuateInSegment issues one server's evacuate to the segment's targets,
// the next target when Nova refuses one, never without a target.
func (r *Reconciler) evacuateInSegment(ctx context.Context, rec *HostRecord, s *ServerRecord) (string, error) {
	targets, ok := segmentTarget(rec, s)
	if !ok {
		return "", &nova.APIError{Op: "evacuate server " + s.ID, Err: fmt.Errorf("failover segment %s: no target host recorded for method %q", rec.Segment, rec.Method)}
	}
	var err error
	for _, t := range targets {
		if err = r.nova.Evacuate(ctx, s.ID, t); err == nil {
			return t, nil
		}
		r.log.Warn("evacuate to a host of the segment refused", "host", rec.Host, "server_id", s.ID, "target", t, "segment", rec.Segment, "err", err)
		if ctx.Err() != nil {
			break
		}
	}
	return "", err
}

// segmentFallback is called when a segment host's evacuations failed: the
// next reserved host, or the other method of auto_priority/rh_priority.
// It returns true when the failed servers were sent back to pending.
func (r *Reconciler) segmentFallback(ctx context.Context, rec *HostRecord) bool {
	if rec.Segment == "" {
		return false
	}
	seg := r.segments(ctx, false).segs.Named(rec.Segment)
	if seg == nil {
		return false
	}
	svcs, err := r.read.ListServices(ctx, "nova-compute")
	if err != nil {
		return false
	}
	try := func(m string, fellBack bool, failedWhat string) bool {
		cmd := SegmentCmd{Host: rec.Host, Segment: seg.Name, RecoveryMethod: seg.RecoveryMethod, Method: m, FellBack: fellBack, ResetFailed: true}
		switch m {
		case config.MethodReservedHost:
			host, _ := r.claimReserved(ctx, rec, seg, svcs)
			if host == "" {
				return false
			}
			cmd.Reason = failedWhat + " failed; evacuating to reserved host " + host
		case config.MethodAuto:
			cmd.Targets = autoTargets(seg, rec.Host, svcs, r.store.FSM().Settings().Maintenance, r.activeHosts(rec.Host))
			if len(cmd.Targets) == 0 {
				return false
			}
			cmd.Reason = failedWhat + " failed; evacuating to " + strings.Join(cmd.Targets, ", ")
		}
		_, err := r.apply(ctx, CmdSegment, cmd)
		return err == nil
	}
	what := "evacuation (" + rec.Method + ")"
	if rec.Method == config.MethodReservedHost {
		what = "evacuation to reserved host " + rec.ReservedHost
		if try(config.MethodReservedHost, rec.FellBack, what) {
			return true
		}
	}
	if rec.FellBack {
		return false
	}
	switch {
	case seg.RecoveryMethod == config.MethodAutoPriority && rec.Method == config.MethodAuto:
		return try(config.MethodReservedHost, true, what)
	case seg.RecoveryMethod == config.MethodRHPriority && rec.Method == config.MethodReservedHost:
		return try(config.MethodAuto, true, what)
	}
	return false
}

// parkRecovered is the maintenance branch of re-enable: a recovered host
// whose segment (or RECOVERED_HOST_MAINTENANCE) asks for it is put in
// maintenance and left disabled, like Masakari's on_maintenance. It
// returns true while the host must not be re-enabled. Once an operator
// turns maintenance off (`iha maintenance HOST off`), re-enable runs.
func (r *Reconciler) parkRecovered(ctx context.Context, rec *HostRecord) (bool, error) {
	_, inMaint := r.store.FSM().Settings().Maintenance[rec.Host]
	if rec.Parked {
		return inMaint, nil
	}
	park := r.cfg.RecoveredHostMaintenance
	what := "RECOVERED_HOST_MAINTENANCE"
	if seg, _ := r.segmentOf(ctx, rec.Host, false); seg != nil && seg.Maintenance != nil {
		park, what = *seg.Maintenance, "recovered_host_maintenance of segment "+seg.Name
	}
	if !park {
		return false, nil
	}
	reason := "recovered; parked in maintenance (" + what + "): `iha maintenance " + rec.Host + " off` re-enables it"
	r.log.Warn("recovered host parked in maintenance, left disabled", "host", rec.Host, "why", what)
	if _, err := r.apply(ctx, CmdPark, ParkCmd{Host: rec.Host, Reason: reason}); err != nil {
		return true, err
	}
	return true, nil
}
