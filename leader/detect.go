package leader

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// The detect stage, the first of a poll cycle (Cycle): which hosts failed,
// by the verdict table (verdict.go) over Nova's listing, this controller's
// mesh view, the kdump notices and InstanceHA's heartbeats. It decides
// nothing else: admit.go takes its candidates.

// detection is what the detect stage hands to the others: this cycle's
// listing and the hosts the verdict table failed.
type detection struct {
	svcs   []nova.Service // the compute services of this cycle
	byHost map[string]nova.Service
	cats   Categories
	// cands are the hosts judged failed and not in recovery (admission's
	// candidates), why and verdicts what each was judged on; resume are
	// the recoveries Nova's markers say were begun (R7: resumed, not
	// judged); inflight the hosts in recovery (G7 counts them).
	cands, resume []nova.Service
	why           map[string]string
	verdicts      map[string]Verdict
	inflight      []string
	// judged is every host's verdict this cycle and evidence what each
	// rested on (kept only for an EvidenceObserver): the observer sees
	// them when the cycle ends (reportVerdicts).
	judged   map[string]Verdict
	evidence map[string]Evidence
}

// reportVerdicts hands the cycle's verdicts (and evidence) to the observer
// once the cycle's decisions are made: the status API's metrics, and the
// decision log, which records them after the decisions they led to.
func (r *Reconciler) reportVerdicts(d detection, now time.Time) {
	r.obs.Verdicts(d.judged, now)
	if evObs, ok := r.obs.(EvidenceObserver); ok {
		evObs.Judgements(d.evidence, now)
	}
}

// detectFailures is the detect stage: it reads this cycle's inputs once
// (readInputs), judges every host that is neither in recovery nor in
// maintenance by the verdict table (judgeHosts), collects the recoveries
// Nova's markers say were begun, and lets go of a detected host that is
// healthy again before it was fenced (letGoHealthy).
func (r *Reconciler) detectFailures(ctx context.Context, svcs []nova.Service, now time.Time) detection {
	fsm := r.store.FSM()
	records := map[string]*HostRecord{}
	for _, h := range fsm.Hosts() {
		records[h.Host] = h
	}
	d := detection{svcs: svcs, byHost: make(map[string]nova.Service, len(svcs)), cats: Categorize(svcs, r.novaNow(now), r.cfg.Delta),
		why: map[string]string{}, verdicts: map[string]Verdict{}}
	for _, s := range svcs {
		d.byHost[s.Host] = s
	}
	for h, rec := range records {
		if rec.Phase.Active() {
			d.inflight = append(d.inflight, h)
		}
	}
	r.readInputs(ctx, svcs, now)
	r.judgeHosts(ctx, &d, records, fsm.Settings().Maintenance, now)
	for h := range r.kdumpWait {
		if _, failed := d.verdicts[h]; !failed {
			delete(r.kdumpWait, h) // healthy again, or in recovery
		}
	}
	for _, s := range d.cats.Resume {
		if rec := records[s.Host]; rec != nil && rec.Phase.Active() {
			continue
		}
		d.resume = append(d.resume, s)
	}
	r.letGoHealthy(ctx, records, d.byHost, now)
	return d
}

// readInputs takes this cycle's reading of the verdict table's inputs
// besides Nova's: the mesh snapshot with the partition guard, the kdump
// notices (vetted), and InstanceHA's heartbeats (CHECK_HEARTBEAT). One
// reading per cycle: the rules judge with it, and the decision log keeps it.
func (r *Reconciler) readInputs(ctx context.Context, svcs []nova.Service, now time.Time) {
	r.observeMesh(ctx, now)
	r.vetKdumpNotices(ctx, svcs, now)
	if r.cfg.CheckHeartbeat && r.heartbeats != nil {
		hosts := make([]string, len(svcs))
		for i, s := range svcs {
			hosts[i] = s.Host
		}
		r.hbStarted, r.hbLast = r.heartbeats.snapshot(hosts)
		if hbObs, ok := r.obs.(HeartbeatObserver); ok {
			hbObs.Heartbeats(r.hbStarted, r.hbLast, now)
		}
	}
	r.observeHeartbeats(ctx, svcs, now)
}

// judgeHosts applies the verdict table to every host not in recovery (G2)
// nor in maintenance: a failed one becomes a candidate of the admit stage;
// one alive but not right (nova-compute broken, a kdump notice from a live
// agent, a fresh InstanceHA heartbeat) is reported once per episode; one
// to wait for sets the next look (no poll granularity).
func (r *Reconciler) judgeHosts(ctx context.Context, d *detection, records map[string]*HostRecord, maintenance map[string]string, now time.Time) {
	d.judged = make(map[string]Verdict, len(d.svcs))
	if _, ok := r.obs.(EvidenceObserver); ok {
		d.evidence = make(map[string]Evidence, len(d.svcs))
	}
	for _, s := range d.svcs {
		if rec := records[s.Host]; rec != nil && rec.Phase.Active() {
			continue // G2: already in recovery
		}
		if _, m := maintenance[s.Host]; m {
			continue // a host in maintenance is never a new failure
		}
		v, reason, look := r.judge(s, now)
		d.judged[s.Host] = v
		if d.evidence != nil {
			ev := r.evidence(s, now, v, reason)
			ev.Mode, ev.ForcedDown, ev.DisabledReason = r.cfg.DetectionMode, s.ForcedDown, s.DisabledReason
			d.evidence[s.Host] = ev
		}
		switch v {
		case VerdictFailed, VerdictInstanceHA, VerdictKdump:
			d.cands = append(d.cands, s)
			d.why[s.Host], d.verdicts[s.Host] = reason, v
		case VerdictKdumpIgnored:
			if r.skips.Once(episodeKdumpIgnored, s.Host) {
				r.log.Warn("kdump notice for a host whose agent is alive: not acted on while it is", "host", s.Host, "evidence", reason)
				r.event(ctx, s.Host, "KdumpNoticeIgnored", reason, true)
			}
			continue
		case VerdictNovaBroken:
			if r.skips.Once(episodeNovaBroken, s.Host) {
				r.log.Warn("nova-compute is down on a live host: not evacuating", "host", s.Host, "verdict", v, "evidence", reason)
				r.event(ctx, s.Host, "NovaComputeBroken", reason, true)
			}
			continue
		case VerdictHeartbeatAlive:
			if r.skips.Once(episodeHeartbeatAlive, s.Host) {
				r.log.Warn("reported down by Nova but its heartbeat is fresh: not fencing", "host", s.Host, "evidence", reason)
				r.event(ctx, s.Host, EventHostReachable, reason, true)
			}
			continue
		case VerdictWait:
			r.log.Info("not judged yet", "host", s.Host, "verdict", v, "evidence", reason)
			r.lookAt(look)
		}
		r.skips.Clear(episodeNovaBroken, s.Host)
		r.skips.Clear(episodeKdumpIgnored, s.Host)
		r.skips.Clear(episodeHeartbeatAlive, s.Host)
	}
}

// letGoHealthy drops the record of a host judged failed but not yet fenced
// that is healthy again: nothing was done to it. Healthy again means Nova
// says up and fresh and the judge no longer fails it: in both mode Nova
// says up for service_down_time after a dead host's last report, so Nova
// alone would drop a record whose fence failed fast (a dead BMC) while the
// mesh still says dead and Nova has not heard the host since, and the next
// cycle would open it again and start the fence (and a watchdog wait) over.
func (r *Reconciler) letGoHealthy(ctx context.Context, records map[string]*HostRecord, byHost map[string]nova.Service, now time.Time) {
	for _, rec := range records {
		if rec.Phase != PhaseDetected || rec.Pending != nil || rec.Adopted {
			continue
		}
		if s, ok := byHost[rec.Host]; ok && s.State == "up" && !IsStale(s, r.novaNow(now), r.cfg.Delta) && !s.ForcedDown && !disabled(s) {
			if v, reason, _ := r.judge(s, now); v == VerdictFailed || v == VerdictInstanceHA || v == VerdictKdump {
				r.log.Debug("Nova says up, but the host is still failed: recovery kept", "host", rec.Host, "verdict", v, "evidence", reason)
				continue
			}
			r.log.Info("host is healthy again before it was fenced: recovery dropped", "host", rec.Host)
			_, _ = r.apply(ctx, CmdPhase, PhaseCmd{Host: rec.Host, Phase: PhaseSkipped, From: PhaseDetected,
				Reason: "host reported up again before it was fenced"})
		}
	}
}

// reportInterval is Nova's report_interval as configured, 10 s (Nova's
// default) when unset.
func reportInterval(d time.Duration) time.Duration {
	if d <= 0 {
		return 10 * time.Second
	}
	return d
}

// novaNow is now on Nova's clock as far as this leader can tell: the time
// to compare Nova's updated_at with (DELTA's staleness).
func (r *Reconciler) novaNow(now time.Time) time.Time { return now.Add(-r.clock.skew()) }

// observeNovaClock feeds a listing of the compute services to the clock
// estimate, looks again soon while a skew past the margin is unsettled,
// and tells the operator once per episode when Nova's clock is off by more
// than the verdict margin.
func (r *Reconciler) observeNovaClock(ctx context.Context, svcs []nova.Service, readAt time.Time) {
	if r.clock.observe(svcs, readAt) {
		r.log.Warn("Nova's heartbeats are suddenly older than its clock allowed: its clock stepped back or it stopped recording heartbeats; the earlier listings are forgotten",
			"estimate", r.clock.describe())
	}
	skew := r.clock.skew()
	if skew != 0 && !r.clock.settled() {
		r.lookAt(readAt.Add(r.clock.spacing()))
		return
	}
	switch {
	case skew != 0 && !r.skewReported:
		r.skewReported = true
		msg := r.clock.describe()
		r.log.Warn("Nova's clock is off from this leader's", "detail", msg, "skew", skew)
		r.event(ctx, "", EventNovaClockSkew, msg, true)
	case skew == 0 && r.skewReported:
		r.skewReported = false
		msg := "Nova's clock agrees with this leader's again (within the verdict margin " + verdictMargin.String() + ")"
		r.log.Info(msg)
		r.event(ctx, "", EventNovaClockSkew, msg, false)
	}
}

// verdictMargin absorbs updated_at's whole-second truncation and the
// report's delays when judging that a host missed a report.
const verdictMargin = config.NovaHeartbeatMargin

// verdictInput gathers what the verdict table needs of one service: Nova's
// row, this cycle's mesh snapshot and the host's last kdump notice.
func (r *Reconciler) verdictInput(s nova.Service, now time.Time) VerdictInput {
	in := VerdictInput{Mode: r.cfg.DetectionMode, Service: s, Now: now, Delta: r.cfg.Delta,
		ReportInterval: r.cfg.NovaReportInterval, Margin: verdictMargin, NovaSkew: r.clock.skew(),
		CheckKdump: r.cfg.CheckKdump, KdumpTimeout: r.cfg.KdumpTimeout}
	if r.mesh != nil {
		if m, ok := r.snap[s.Host]; ok {
			// Since is this controller's own observation (every controller
			// is a mesh member), so it holds across a change of leader: the
			// rule compares it with Nova's updated_at, and waits for a
			// missed report measured from updated_at, not from this term.
			in.MeshState, in.MeshSince = m.State, m.Since
			in.Partition = r.part.Suspected && slices.Contains(r.part.Hosts, s.Host)
		}
	}
	if n, ok := r.kdumpOK[s.Host]; ok {
		in.Kdump = n
	}
	if in.ReportInterval <= 0 {
		in.ReportInterval = 10 * time.Second
	}
	if in.KdumpTimeout <= 0 {
		in.KdumpTimeout = 30 * time.Second
	}
	if r.cfg.CheckHeartbeat {
		in.CheckHeartbeat, in.HeartbeatTimeout = true, r.cfg.HeartbeatTimeout
		in.HeartbeatGrace = r.heartbeatGrace(now)
		in.Heartbeat = r.hbLast[s.Host]
		in.HeartbeatCliff = !r.hbCliff.since.IsZero() && !r.hbCliff.expired
	}
	return in
}

// judge applies the verdict table to one service.
func (r *Reconciler) judge(s nova.Service, now time.Time) (Verdict, string, time.Time) {
	return Judge(r.verdictInput(s, now))
}

// evidence records what the verdict of s rested on.
func (r *Reconciler) evidence(s nova.Service, now time.Time, v Verdict, why string) Evidence {
	in := r.verdictInput(s, now)
	ev := Evidence{Source: "nova", Verdict: string(v), NovaState: s.State, NovaUpdatedAt: s.UpdatedAt,
		Stale: IsStale(s, r.novaNow(now), r.cfg.Delta), Note: why, NovaClockSkew: in.NovaSkew}
	if m, ok := r.snap[s.Host]; ok {
		ev.MeshState, ev.MeshSince, ev.Accusers, ev.Confirmations = m.State, m.Since, m.Accusers, m.Confirmations
		if m.State == MeshDead {
			ev.Source = "gossip+nova"
		}
	}
	if in.Partition {
		ev.Partition = r.part.String()
	}
	if !in.Kdump.At.IsZero() {
		ev.KdumpAt, ev.KdumpFrom = in.Kdump.At, in.Kdump.From
	}
	if v == VerdictKdump {
		ev.Source = "kdump+" + ev.Source
	}
	return ev
}

// observeMesh takes this cycle's mesh snapshot and runs the mass-failure
// guard, telling the operator once per episode.
func (r *Reconciler) observeMesh(ctx context.Context, now time.Time) {
	if r.mesh == nil {
		return
	}
	r.snap = r.mesh.Snapshot()
	pct, win := r.cfg.MeshPartitionPercent, r.cfg.MeshPartitionWindow
	if pct <= 0 {
		pct = 30
	}
	if win <= 0 {
		win = 60 * time.Second
	}
	r.part = CheckPartition(r.snap, now, win, pct)
	switch {
	case r.part.Suspected && !r.partLogged:
		r.partLogged = true
		msg := fmt.Sprintf("the mesh lost %s (> %d%%): suspecting this controller's network; those hosts need Nova's DELTA rule too: %v",
			r.part, pct, r.part.Hosts)
		r.log.Error(msg)
		r.event(ctx, "", "MeshPartitionSuspected", msg, true)
	case !r.part.Suspected && r.partLogged:
		r.partLogged = false
		r.log.Info("mesh partition guard cleared", "lost", r.part.Lost, "total", r.part.Total)
	}
	r.observeClaims(ctx)
}
