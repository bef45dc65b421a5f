package leader

import (
	"fmt"
	"time"

	"github.com/ihaproject/iha/pkg/nova"
)

// Mesh states of a compute's agent, as the leader's mesh view reports them.
const (
	MeshAlive   = "alive"
	MeshSuspect = "suspect"
	MeshDead    = "dead"
	MeshLeft    = "left"
	MeshUnknown = "" // never seen
)

// Verdict is the leader's judgement of one compute host.
type Verdict string

// Verdicts (DESIGN.md's table).
const (
	VerdictHealthy    Verdict = "healthy"
	VerdictNovaBroken Verdict = "nova-compute-broken" // agent alive, Nova down: no evacuation
	VerdictWait       Verdict = "wait"                // mesh lost it but Nova still hears it, or not decidable yet
	VerdictFailed     Verdict = "failed"
	VerdictInstanceHA Verdict = "instanceha-rule" // no agent to ask: InstanceHA's rule decided (failed)
	// VerdictKdump: failed, and writing a crash dump: not powered off.
	VerdictKdump Verdict = "kdump"
	// VerdictKdumpIgnored: a kdump notice for a host whose agent is alive
	// (spoofed, or a source address mapped to the wrong host): an event, no
	// action.
	VerdictKdumpIgnored Verdict = "kdump-ignored"
	// VerdictHeartbeatAlive: Nova says down, no agent to ask, but the host's
	// InstanceHA heartbeat (CHECK_HEARTBEAT) is fresh: nova-compute is
	// broken on a live host; an event (HostReachable), no evacuation.
	VerdictHeartbeatAlive Verdict = "heartbeat-alive"
)

// Failed reports whether v starts a recovery.
func (v Verdict) Failed() bool {
	return v == VerdictFailed || v == VerdictInstanceHA || v == VerdictKdump
}

// VerdictInput is everything a verdict depends on.
type VerdictInput struct {
	Mode      string       // nova | gossip | both
	Service   nova.Service // Nova's row, read before we touch it
	MeshState string
	// MeshSince is when this leader saw the mesh state begin, not before
	// the start of its term (a new leader gives a dead host its full
	// detection time again).
	MeshSince time.Time
	Now       time.Time
	Delta     time.Duration // InstanceHA's DELTA
	// NovaSkew is how much later than its face value a Nova time is read
	// (novaClock.skew: Nova's clock runs that far behind this leader's; 0
	// within the margin). Every comparison of updated_at with this
	// leader's clock (Now, MeshSince) goes through it.
	NovaSkew time.Duration
	// ReportInterval is Nova's report_interval; Margin absorbs updated_at's
	// truncation to whole seconds and scheduling delays.
	ReportInterval time.Duration
	Margin         time.Duration
	// Partition: the mesh-based mass-failure guard fired (CheckPartition):
	// a host the mesh declared dead also needs InstanceHA's DELTA rule.
	Partition bool
	// CheckKdump (CHECK_KDUMP) with Kdump, the host's last notice (zero At:
	// none), received within KdumpTimeout of Now.
	CheckKdump   bool
	Kdump        KdumpNotice
	KdumpTimeout time.Duration
	// CheckHeartbeat (CHECK_HEARTBEAT) with Heartbeat, when this controller
	// last received the host's HBV2 heartbeat (zero: never), fresh within
	// HeartbeatTimeout. HeartbeatGrace: the listener has not run for
	// HEARTBEAT_TIMEOUT yet (R13.4: no effect). HeartbeatCliff: the
	// heartbeats of many computes stopped at once (R13.6–R13.9).
	CheckHeartbeat   bool
	Heartbeat        time.Time
	HeartbeatTimeout time.Duration
	HeartbeatGrace   bool
	HeartbeatCliff   bool
}

// HeartbeatFresh reports whether the input carries a heartbeat within
// HEARTBEAT_TIMEOUT (R13.5).
func (in VerdictInput) HeartbeatFresh() bool {
	return in.CheckHeartbeat && !in.Heartbeat.IsZero() && in.Now.Sub(in.Heartbeat) <= in.HeartbeatTimeout
}

// noAgentWitness reports whether InstanceHA's rule is what judges the host:
// DETECTION_MODE nova, no agent in the mesh (left or never seen), a dead
// agent under the mesh partition guard, or a dead agent whose host Nova
// heard after the mesh lost it (the mesh's word on it is void).
func (in VerdictInput) noAgentWitness() bool {
	return in.Mode == "nova" || in.MeshState == MeshLeft || in.MeshState == MeshUnknown ||
		in.MeshState == MeshDead && (in.Partition || heardSince(in.Service, in.MeshSince, in.NovaSkew))
}

// KdumpRecent reports whether the input carries a kdump notice within
// KDUMP_TIMEOUT.
func (in VerdictInput) KdumpRecent() bool {
	return in.CheckKdump && !in.Kdump.At.IsZero() && in.Now.Sub(in.Kdump.At) <= in.KdumpTimeout
}

// Judge applies DESIGN.md's verdict table. It returns the verdict, a
// sentence with the evidence, and, for VerdictWait, when to look again.
//
//	gossip            | Nova                               | verdict
//	alive             | up                                 | healthy
//	alive             | down or stale                      | nova-compute broken on a live host: no evacuation
//	dead              | heartbeat still advancing          | wait (cut off from the mesh, not from Nova)
//	dead              | no heartbeat since gossip lost it  | failed
//	left, never seen  | down or stale                      | InstanceHA's rule
//	left, never seen  | down or stale, HBV2 heartbeat fresh | heartbeat-alive (CHECK_HEARTBEAT): not fenced
//
// "No heartbeat since gossip lost it" is Nova's second witness: the host
// missed a report it should have sent. It holds as soon as Nova's
// updated_at is older than one report interval plus the margin (see
// MissedReport) and is not later than the mesh's verdict (updated_at is
// whole seconds, so it is compared with the death time truncated to the
// second). The leader does not wait one more full report interval after the
// mesh's verdict: when the host died long enough after its last report, it
// is failed the moment the mesh declares it dead. A host Nova heard after
// the mesh lost it is cut off from the mesh, not dead: from then on only
// InstanceHA's DELTA rule can fail it (the mesh's word on it is void).
// Mode gossip fails a dead host at once; mode nova is InstanceHA's rule
// alone, except that a host whose agent is alive in the mesh (when the mesh
// is wired) is never failed: nova-compute is broken on a live host.
//
// With CHECK_HEARTBEAT, wherever InstanceHA's rule judges (mode nova, no
// agent, the partition guard), a heartbeat within HEARTBEAT_TIMEOUT makes
// the host heartbeat-alive (not fenced), and a heartbeat cliff makes it
// wait; during the listener's grace period heartbeats have no effect. A
// host with an agent is judged by the mesh, whatever its heartbeat.
//
// With the partition guard on, a dead host is judged by InstanceHA's rule
// (the mesh may be what failed). A kdump notice within KDUMP_TIMEOUT is a
// witness of its own: with the mesh reporting the host dead and Nova not
// having heard it since, it is failed at once, without waiting for a missed
// report (kdump: no power-off; a merely suspect agent is not enough, the
// packet is unauthenticated); with no agent to ask, Nova's DELTA rule must
// agree (as InstanceHA); with the agent alive it is ignored.
func Judge(in VerdictInput) (Verdict, string, time.Time) {
	s := in.Service
	novaDown := IsNewFailure(s, in.Now.Add(-in.NovaSkew), in.Delta)
	if disabled(s) || s.ForcedDown {
		return VerdictHealthy, "disabled or forced down: not a new failure", time.Time{}
	}
	// CHECK_HEARTBEAT (R13.4–R13.9, before kdump as in InstanceHA's gate
	// chain): where InstanceHA's rule judges, a fresh heartbeat is a second
	// witness that the host lives.
	if in.CheckHeartbeat && !in.HeartbeatGrace && novaDown && in.noAgentWitness() {
		switch {
		case in.HeartbeatFresh():
			return VerdictHeartbeatAlive, fmt.Sprintf("nova: state %s, updated_at %s, but its heartbeat came at %s (HEARTBEAT_TIMEOUT %s): "+
				"reported down by Nova but reachable; not fenced", s.State, fmtTime(s.UpdatedAt), fmtTime(in.Heartbeat), in.HeartbeatTimeout), time.Time{}
		case in.HeartbeatCliff:
			return VerdictWait, fmt.Sprintf("nova: state %s; its heartbeat stopped (last %s) together with many others' (heartbeat cliff): waiting",
				s.State, fmtTime(in.Heartbeat)), in.Now.Add(in.ReportInterval)
		}
	}
	if in.KdumpRecent() {
		kd := fmt.Sprintf("kdump notice from %s at %s", in.Kdump.From, fmtTime(in.Kdump.At))
		switch {
		case in.Mode != "nova" && (in.MeshState == MeshAlive):
			return VerdictKdumpIgnored, kd + " but its agent answers in the mesh: not acted on while it does (a crash the mesh has not noticed yet, a spoofed packet, or an address mapped to the wrong host)", time.Time{}
		case in.Mode != "nova" && in.MeshState == MeshDead && !in.Partition && !heardSince(s, in.MeshSince, in.NovaSkew):
			return VerdictKdump, fmt.Sprintf("%s; mesh: dead since %s; nova heartbeat not heard since (updated_at %s)",
				kd, fmtTime(in.MeshSince), fmtTime(s.UpdatedAt)), time.Time{}
		case novaDown:
			return VerdictKdump, fmt.Sprintf("%s; nova: state %s, updated_at %s (DELTA %s)", kd, s.State, fmtTime(s.UpdatedAt), in.Delta), time.Time{}
		}
		// Not yet confirmed by a second witness: the table below decides,
		// and the next look comes with Nova's rule.
	}
	if in.MeshState == MeshDead && in.Partition && in.Mode != "nova" {
		if novaDown {
			return VerdictInstanceHA, fmt.Sprintf("mesh: dead since %s, but the mesh lost many computes at once (partition guard): nova agrees, state %s, updated_at %s (DELTA %s)",
				fmtTime(in.MeshSince), s.State, fmtTime(s.UpdatedAt), in.Delta), time.Time{}
		}
		next := s.UpdatedAt.Add(in.NovaSkew + in.Delta + time.Second)
		if !next.After(in.Now) {
			next = in.Now.Add(in.ReportInterval)
		}
		return VerdictWait, fmt.Sprintf("mesh: dead since %s, but the mesh lost many computes at once (partition guard): waiting for nova's DELTA rule (updated_at %s)",
			fmtTime(in.MeshSince), fmtTime(s.UpdatedAt)), next
	}
	if in.Mode == "nova" {
		if novaDown && (in.MeshState == MeshAlive || in.MeshState == MeshSuspect) {
			return VerdictNovaBroken, fmt.Sprintf("nova: state %s, updated_at %s (DELTA %s), but its agent is %s in the mesh: nova-compute is broken or late on a live host, not fenced (DETECTION_MODE nova with the mesh wired)",
				s.State, fmtTime(s.UpdatedAt), in.Delta, in.MeshState), time.Time{}
		}
		if novaDown {
			return VerdictInstanceHA, fmt.Sprintf("nova: state %s, updated_at %s (DELTA %s)", s.State, fmtTime(s.UpdatedAt), in.Delta), time.Time{}
		}
		return VerdictHealthy, "nova: up", time.Time{}
	}
	switch in.MeshState {
	case MeshAlive, MeshSuspect:
		if novaDown {
			return VerdictNovaBroken, fmt.Sprintf("agent %s in the mesh but nova state %s, updated_at %s: nova-compute is broken on a live host",
				in.MeshState, s.State, fmtTime(s.UpdatedAt)), time.Time{}
		}
		return VerdictHealthy, "agent " + in.MeshState + ", nova up", time.Time{}
	case MeshDead:
		if in.Mode == "gossip" {
			return VerdictFailed, "mesh: dead since " + fmtTime(in.MeshSince) + " (DETECTION_MODE gossip)", time.Time{}
		}
		if heardSince(s, in.MeshSince, in.NovaSkew) {
			// Cut off from the mesh, not from Nova: the mesh's verdict on
			// this host is void; only Nova's own rule can fail it now.
			if novaDown {
				return VerdictInstanceHA, fmt.Sprintf("mesh lost the host at %s but Nova heard it after that (updated_at %s%s), then not for DELTA: nova state %s (DELTA %s)",
					fmtTime(in.MeshSince), fmtTime(s.UpdatedAt), skewNote(in.NovaSkew), s.State, in.Delta), time.Time{}
			}
			next := s.UpdatedAt.Add(in.NovaSkew + in.Delta + time.Second)
			if !next.After(in.Now) {
				next = in.Now.Add(in.ReportInterval)
			}
			return VerdictWait, fmt.Sprintf("mesh lost the host at %s but Nova heard it at %s%s: cut off from the mesh, not dead; Nova's DELTA rule (%s) judges it from now on",
				fmtTime(in.MeshSince), fmtTime(s.UpdatedAt), skewNote(in.NovaSkew), in.Delta), next
		}
		heard := s.UpdatedAt
		if !heard.IsZero() {
			heard = heard.Add(in.NovaSkew) // on this leader's clock
		}
		due := MissedReport(heard, in.MeshSince, in.ReportInterval, in.Margin)
		if in.Now.Before(due) {
			return VerdictWait, fmt.Sprintf("mesh: dead since %s; nova heartbeat at %s%s, its next report is due by %s (report interval %s + margin %s): waiting until then",
				fmtTime(in.MeshSince), fmtTime(s.UpdatedAt), skewNote(in.NovaSkew), fmtTime(due), in.ReportInterval, in.Margin), due
		}
		return VerdictFailed, fmt.Sprintf("mesh: dead since %s; nova heartbeat missed: none since %s%s, %s ago (report interval %s + margin %s)",
			fmtTime(in.MeshSince), fmtTime(s.UpdatedAt), skewNote(in.NovaSkew), in.Now.Sub(heard).Round(100*time.Millisecond), in.ReportInterval, in.Margin), time.Time{}
	default: // left, never seen
		if novaDown {
			return VerdictInstanceHA, fmt.Sprintf("no agent (mesh %q): nova state %s, updated_at %s (DELTA %s)",
				in.MeshState, s.State, fmtTime(s.UpdatedAt), in.Delta), time.Time{}
		}
		return VerdictHealthy, "no agent; nova up", time.Time{}
	}
}

// MissedReport is when a host whose last heartbeat Nova stamped updated
// (whole seconds) has missed a report it should have sent: one report
// interval plus margin later. The margin covers updated_at's truncation to
// the second, the report loop's and the conductor's delays (leader/DESIGN.md
// has the measured figures). A service that never reported (zero updated)
// is given the same time from the mesh's verdict.
func MissedReport(updated, meshSince time.Time, interval, margin time.Duration) time.Time {
	if updated.IsZero() {
		return meshSince.Add(interval + margin)
	}
	return updated.Add(interval + margin)
}

// heardSince reports whether Nova's updated_at (whole seconds), read skew
// later, is later than t (this leader's clock): the host heartbeated
// after t.
func heardSince(s nova.Service, t time.Time, skew time.Duration) bool {
	return !s.UpdatedAt.IsZero() && s.UpdatedAt.After(t.Add(-skew).Truncate(time.Second))
}

// skewNote says, in evidence, that Nova's times were read later.
func skewNote(skew time.Duration) string {
	if skew == 0 {
		return ""
	}
	return fmt.Sprintf(" on Nova's clock (read %s later: Nova's clock is off from this leader's)", skew.Round(100*time.Millisecond))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("15:04:05.000")
}
