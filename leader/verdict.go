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

// MeshView is what the leader needs from the gossip mesh: the state of the
// agent that runs on a Nova host, and since when this node has seen it so.
// gossip.Mesh is adapted to it where the binary is wired.
type MeshView interface {
	HostState(novaHost string) (state string, since time.Time)
}

// Verdict is the leader's judgement of one compute host.
type Verdict string

// Verdicts (DESIGN.md's table).
const (
	VerdictHealthy    Verdict = "healthy"
	VerdictNovaBroken Verdict = "nova-compute-broken" // agent alive, Nova down: no evacuation
	VerdictWait       Verdict = "wait"                // mesh lost it but Nova still hears it, or not decidable yet
	VerdictFailed     Verdict = "failed"
	VerdictInstanceHA Verdict = "instanceha-rule" // no agent to ask: InstanceHA's rule decided (failed)
)

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
func Judge(in VerdictInput) (Verdict, string, time.Time) {
	s := in.Service
	novaDown := IsNewFailure(s, in.Now, in.Delta)
	if disabled(s) || s.ForcedDown {
		return VerdictHealthy, "disabled or forced down: not a new failure", time.Time{}
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

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("15:04:05.000")
}
