package leader

import (
	"fmt"
	"sort"
	"time"
)

// MeshMember is what the gossip mesh says of one compute's agent.
type MeshMember struct {
	Host  string // the Nova host name the agent advertises
	Node  string // its mesh node name
	Addr  string // its gossip address
	State string // MeshAlive, MeshSuspect, MeshDead, MeshLeft
	// Since is when this controller saw State begin (its own clock).
	Since time.Time
	// Accusers are the members that reported it unreachable, in the order
	// heard; Confirmations the independent suspicion confirmations counted
	// when it was declared dead (-1: the verdict came by gossip).
	Accusers      []string
	Confirmations int
	// Claimants, for a MeshContested host, are the members that speak for
	// it ("node (state, address)"), sorted.
	Claimants []string
}

// MeshContested is the state of a host that more than one mesh member
// speaks for: an alarm. The verdict table judges it by Nova's rule alone
// (as a host with no agent) until the claims are resolved.
const MeshContested = "contested"

// MeshSnapshot is the mesh's view of every compute agent it knows, by
// Nova host name. A host that is not in it was never seen by the mesh.
type MeshSnapshot map[string]MeshMember

// MeshView is what the leader needs from the gossip mesh; gossip.Mesh is
// adapted to it by meshview.Adapter (leader/meshview) and scripted in tests
// (internal/sandbox.Mesh).
type MeshView interface {
	Snapshot() MeshSnapshot
}

// Counts returns the members by state.
func (s MeshSnapshot) Counts() map[string]int {
	out := map[string]int{}
	for _, m := range s {
		out[m.State]++
	}
	return out
}

// Partition is the mesh-based mass-failure guard's finding.
type Partition struct {
	Suspected bool
	Lost      int      // computes declared dead within the window
	Total     int      // computes the mesh knows and that did not leave
	Hosts     []string // the lost ones, sorted
}

func (p Partition) String() string {
	return fmt.Sprintf("%d of %d computes lost by the mesh within the window", p.Lost, p.Total)
}

// CheckPartition applies the mass-failure guard: when the mesh lost more
// than percent of the computes it knows within window (and at least two),
// the likelier story is that this controller's own network is cut, not
// that those hosts died together. The verdict table then wants Nova's
// DELTA rule for them as well (and THRESHOLD still applies).
func CheckPartition(snap MeshSnapshot, now time.Time, window time.Duration, percent int) Partition {
	var p Partition
	for h, m := range snap {
		if m.State == MeshLeft {
			continue
		}
		p.Total++
		if m.State == MeshDead && now.Sub(m.Since) <= window {
			p.Lost++
			p.Hosts = append(p.Hosts, h)
		}
	}
	sort.Strings(p.Hosts)
	p.Suspected = p.Lost >= 2 && p.Lost*100 > percent*p.Total
	return p
}

// MeshSummary is the whole mesh as this controller sees it (controllers
// included), for the status API and metrics.
type MeshSummary struct {
	Wired       bool
	Members     int
	States      map[string]int // alive, suspect, dead, left → members
	HealthScore int            // memberlist's Lifeguard awareness: 0 is healthy
	// Contested is the number of hosts more than one member speaks for;
	// Unverified the compute members whose claims are not believed;
	// Rejected the mesh messages dropped for not verifying (a counter).
	Contested, Unverified int
	Rejected              uint64
}

// MeshReporter is the mesh as the status API reads it.
type MeshReporter interface {
	MeshView
	Summary() MeshSummary
}
