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
//
// "No heartbeat since gossip lost it" means: one report interval plus the
// margin has passed since the mesh declared the host dead, and updated_at
// is not later than that moment (updated_at is whole seconds, so it is
// compared with the death time truncated to the second). Mode gossip fails
// a dead host at once; mode nova is InstanceHA's rule alone.
//
// With the partition guard on, a dead host is judged by InstanceHA's rule
// (the mesh may be what failed). A kdump notice within KDUMP_TIMEOUT is a
// witness of its own: with the mesh reporting the host dead and Nova not
// having heard it since, it is failed at once, without waiting for one
// more report (kdump: no power-off; a merely suspect agent is not enough,
// the packet is unauthenticated); with no agent to ask, Nova's DELTA rule
// must agree (as InstanceHA); with the agent alive it is ignored.
func Judge(in VerdictInput) (Verdict, string, time.Time) {
	s := in.Service
	novaDown := IsNewFailure(s, in.Now, in.Delta)
	if disabled(s) || s.ForcedDown {
		return VerdictHealthy, "disabled or forced down: not a new failure", time.Time{}
	}
	if in.KdumpRecent() {
		kd := fmt.Sprintf("kdump notice from %s at %s", in.Kdump.From, fmtTime(in.Kdump.At))
		switch {
		case in.Mode != "nova" && (in.MeshState == MeshAlive):
			return VerdictKdumpIgnored, kd + " but its agent answers in the mesh: not acted on while it does (a crash the mesh has not noticed yet, a spoofed packet, or an address mapped to the wrong host)", time.Time{}
		case in.Mode != "nova" && in.MeshState == MeshDead && !in.Partition && !heardSince(s, in.MeshSince):
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
		next := s.UpdatedAt.Add(in.Delta + time.Second)
		if !next.After(in.Now) {
			next = in.Now.Add(in.ReportInterval)
		}
		return VerdictWait, fmt.Sprintf("mesh: dead since %s, but the mesh lost many computes at once (partition guard): waiting for nova's DELTA rule (updated_at %s)",
			fmtTime(in.MeshSince), fmtTime(s.UpdatedAt)), next
	}
	if in.Mode == "nova" {
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
		decideAt := in.MeshSince.Add(in.ReportInterval + in.Margin)
		deadSec := in.MeshSince.Truncate(time.Second)
		if !s.UpdatedAt.IsZero() && s.UpdatedAt.After(deadSec) {
			return VerdictWait, fmt.Sprintf("mesh lost the host at %s but Nova heard it at %s: cut off from the mesh, not dead",
				fmtTime(in.MeshSince), fmtTime(s.UpdatedAt)), in.Now.Add(in.ReportInterval)
		}
		if in.Now.Before(decideAt) {
			return VerdictWait, fmt.Sprintf("mesh: dead since %s; waiting until %s for one more Nova report", fmtTime(in.MeshSince), fmtTime(decideAt)), decideAt
		}
		return VerdictFailed, fmt.Sprintf("mesh: dead since %s; nova heartbeat unchanged since %s (%s later)",
			fmtTime(in.MeshSince), fmtTime(s.UpdatedAt), in.Now.Sub(in.MeshSince).Round(100*time.Millisecond)), time.Time{}
	default: // left, never seen
		if novaDown {
			return VerdictInstanceHA, fmt.Sprintf("no agent (mesh %q): nova state %s, updated_at %s (DELTA %s)",
				in.MeshState, s.State, fmtTime(s.UpdatedAt), in.Delta), time.Time{}
		}
		return VerdictHealthy, "no agent; nova up", time.Time{}
	}
}

// heardSince reports whether Nova's updated_at (whole seconds) is later
// than t: the host heartbeated after t.
func heardSince(s nova.Service, t time.Time) bool {
	return !s.UpdatedAt.IsZero() && s.UpdatedAt.After(t.Truncate(time.Second))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("15:04:05.000")
}
