// Package meshview adapts this controller's membership in the gossip mesh
// to what the leader reads of it (leader.MeshView, leader.MeshReporter):
// iha-leader and its dev mode wire the same Adapter. It is a package of
// its own so that what imports the leader for its types (the iha CLI)
// does not link memberlist.
package meshview

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/kdump"
)

// Gossip is what Adapter reads of this controller's membership in the
// gossip mesh (*gossip.Mesh).
type Gossip interface {
	Name() string
	Members() []gossip.Member
	VerifiesIdentity() bool
	ClaimTTL() time.Duration
	HealthScore() int
	Stats() gossip.Stats
	Events() <-chan gossip.Event
	KdumpNotices() <-chan kdump.Notice
}

// Adapter is this controller's membership in the gossip mesh, adapted
// to what the leader needs: a snapshot of the compute agents
// (leader.MeshView), a wake-up on a death or a kdump notice, the kdump
// notices themselves, and whole-mesh figures for the status API
// (leader.MeshReporter). The production binary and dev mode wire the
// same adapter, to the reconciler and to the status API.
type Adapter struct {
	mesh  Gossip
	log   *slog.Logger
	wake  chan struct{}
	kdump *leader.KdumpLog
	// authenticated: the mesh is encrypted with a keyring, so a message
	// that decodes came from a holder of the key (memberlist drops the
	// rest); without one, anyone who reaches the gossip port can forge a
	// relayed kdump notice.
	authenticated bool

	mu         sync.Mutex
	dead       map[string]gossip.Event // node → its last Dead event (accusers, confirmations)
	warned     map[string]bool         // node@addr → warned that it is not believed
	unverified int                     // compute members not believed at the last snapshot
}

// New adapts mesh; authenticated says it is encrypted with a keyring (see
// Adapter). Run consumes its events.
func New(mesh Gossip, authenticated bool, log *slog.Logger) *Adapter {
	return &Adapter{mesh: mesh, log: log, wake: make(chan struct{}, 1), kdump: leader.NewKdumpLog(), dead: map[string]gossip.Event{},
		authenticated: authenticated, warned: map[string]bool{}}
}

// Run turns the mesh's events and kdump notices into wake-ups and
// evidence, until ctx ends or the mesh closes its channels.
func (n *Adapter) Run(ctx context.Context) {
	events, notices := n.mesh.Events(), n.mesh.KdumpNotices()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			n.onEvent(ev)
		case kn, ok := <-notices:
			if !ok {
				return
			}
			n.onKdump(kn)
		}
	}
}

func (n *Adapter) onEvent(ev gossip.Event) {
	if ev.Meta.Role != gossip.RoleCompute {
		return
	}
	host := novaHost(ev.Node, ev.Meta)
	switch ev.Kind {
	case gossip.KindDead:
		n.mu.Lock()
		n.dead[ev.Node] = ev
		n.mu.Unlock()
		n.log.Warn("mesh: compute agent dead", "host", host, "node", ev.Node, "accusers", ev.Accusers,
			"confirmations", ev.Confirmations, "reason", ev.Reason)
		n.poke()
	case gossip.KindAlive:
		n.mu.Lock()
		_, wasDead := n.dead[ev.Node]
		delete(n.dead, ev.Node)
		n.mu.Unlock()
		if ev.Refuted {
			n.log.Info("mesh: suspect compute agent refuted the suspicion", "host", host)
		}
		if wasDead {
			// A host coming back after it was lost: a recovery may be
			// waiting to power it on or re-enable it.
			n.log.Info("mesh: compute agent is back", "host", host, "node", ev.Node)
			n.poke()
		}
	case gossip.KindLeft:
		n.log.Info("mesh: compute agent left gracefully", "host", host, "node", ev.Node)
	case gossip.KindSuspect:
		n.log.Info("mesh: compute agent suspect", "host", host, "accuser", ev.Accuser)
	}
}

// onKdump records a notice relayed through the mesh, with what makes its
// channel untrustworthy, if anything: a mesh without a keyring (anyone can
// send the gossip port a forged one), or a relayer that is not a live
// member. Whether its address belongs to the host is the leader's check
// (leader.Reconciler). Our own relays come back here too: they were
// recorded as heard when they were heard, so they (and forgeries naming
// this controller) are skipped.
func (n *Adapter) onKdump(kn kdump.Notice) {
	if kn.Relayer == n.mesh.Name() {
		return
	}
	rec := leader.KdumpNotice{Host: kn.Host, From: kn.SourceAddr, Via: leader.KdumpViaAgent, Relayer: kn.Relayer,
		MappedBy: kn.MappedBy, At: time.Now()}
	switch {
	case !n.authenticated:
		rec.Untrusted = "relayed over a gossip mesh without GOSSIP_KEYRING: anyone who reaches the gossip port can forge it " +
			"(only this controller's own KDUMP_LISTEN is believed without a keyring)"
	case !n.liveMember(kn.Relayer):
		rec.Untrusted = "relayer " + kn.Relayer + " is not a live member of the mesh"
	}
	n.kdump.Record(rec)
	n.log.Warn("kdump notice", "host", kn.Host, "from", kn.SourceAddr, "relayer", kn.Relayer, "mapped_by", kn.MappedBy,
		"packets", kn.Packets, "untrusted", rec.Untrusted)
	n.poke()
}

// RecordListened records a notice this controller's own listener
// (KDUMP_LISTEN) heard: its source address is real.
func (n *Adapter) RecordListened(kn kdump.Notice) {
	n.kdump.Record(leader.KdumpNotice{Host: kn.Host, From: kn.SourceAddr, Via: leader.KdumpViaListener, MappedBy: kn.MappedBy, At: time.Now()})
	n.poke()
}

func (n *Adapter) liveMember(name string) bool {
	for _, m := range n.mesh.Members() {
		if m.Name == name {
			return m.State == gossip.StateAlive || m.State == gossip.StateSuspect
		}
	}
	return false
}

func (n *Adapter) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// novaHost is the Nova host name a compute member stands for.
func novaHost(node string, meta gossip.Meta) string {
	if meta.NovaHost != "" {
		return meta.NovaHost
	}
	return node
}

// contestWindow is how long a dead member's claim on its host still
// counts against another member claiming the same host: longer than any
// detection and verdict, so that a member joining after a host died
// cannot take its place unnoticed.
const contestWindow = 10 * time.Minute

// Snapshot implements leader.MeshView. What the leader believes of a host comes
// only from the members that speak for it:
//
//   - with identities checked (CLUSTER_KEY), a member speaks for the host
//     it proved (gossip.Claim), never for the one its metadata merely
//     advertises; a live or suspect member only with a claim made since it
//     last joined and younger than the claim TTL (a forged "alive" of a
//     hung host carries none); a dead or left one with the claim it had;
//   - without (GOSSIP_INSECURE), a member speaks for the host it
//     advertises.
//
// Two members speaking for one host (live, suspect, or dead within
// contestWindow) make it contested: its state is leader.MeshContested, which the
// verdict table judges by Nova's rule alone, until one of them leaves or
// is gone long enough. The live one never wins by being live.
func (n *Adapter) Snapshot() leader.MeshSnapshot {
	members := n.mesh.Members()
	verify := n.mesh.VerifiesIdentity()
	ttl := n.mesh.ClaimTTL()
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	byHost := map[string][]leader.MeshMember{}
	unverified := 0
	for _, m := range members {
		if m.Meta.Role != gossip.RoleCompute {
			continue
		}
		host := novaHost(m.Name, m.Meta)
		if verify {
			live := m.State == gossip.StateAlive || m.State == gossip.StateSuspect
			current := m.Claim.Host != "" && (!live || m.Claim.At.After(m.Joined) && now.Sub(m.Claim.At) <= ttl)
			if !current {
				unverified++
				n.noteUnverified(m, now, ttl)
				continue
			}
			host = m.Claim.Host
		}
		mm := leader.MeshMember{Host: host, Node: m.Name, Addr: m.Addr, State: string(m.State), Since: m.Since,
			Accusers: slices.Clone(m.Accusers), Confirmations: -1}
		if d, ok := n.dead[m.Name]; ok && m.State == gossip.StateDead {
			mm.Accusers, mm.Confirmations = slices.Clone(d.Accusers), d.Confirmations
		}
		byHost[host] = append(byHost[host], mm)
	}
	n.unverified = unverified
	out := make(leader.MeshSnapshot, len(byHost))
	for host, ms := range byHost {
		var claiming []leader.MeshMember
		for _, m := range ms {
			if m.State == leader.MeshAlive || m.State == leader.MeshSuspect || m.State == leader.MeshDead && now.Sub(m.Since) <= contestWindow {
				claiming = append(claiming, m)
			}
		}
		switch len(claiming) {
		case 0: // every member that spoke for it left (or died long ago): the latest
			slices.SortFunc(ms, func(a, b leader.MeshMember) int { return a.Since.Compare(b.Since) })
			out[host] = ms[len(ms)-1]
		case 1:
			out[host] = claiming[0]
		default:
			c := leader.MeshMember{Host: host, State: leader.MeshContested, Since: now, Confirmations: -1}
			for _, m := range claiming {
				c.Claimants = append(c.Claimants, m.Node+" ("+m.State+", "+m.Addr+")")
				if m.Since.Before(c.Since) {
					c.Since = m.Since
				}
			}
			slices.Sort(c.Claimants)
			out[host] = c
		}
	}
	return out
}

// noteUnverified warns, once per member and address, about a compute
// member whose host the leader does not believe for want of a current
// claim (a third of a claim TTL after it joined, two claim intervals: a
// member that just joined has not had time to prove anything). n.mu held.
func (n *Adapter) noteUnverified(m gossip.Member, now time.Time, ttl time.Duration) {
	if now.Sub(m.Joined) < ttl/3 || m.State == gossip.StateLeft {
		return
	}
	key := m.Name + "@" + m.Addr
	if n.warned[key] {
		return
	}
	n.warned[key] = true
	why := "it never proved which host it speaks for (no host_key, a wrong one, or another CLUSTER_KEY)"
	if m.Claim.Host != "" {
		why = "its claim for " + m.Claim.Host + " is not current (a member that stopped proving its host while the mesh says " + string(m.State) + ")"
	}
	n.log.Warn("mesh: member not believed", "node", m.Name, "addr", m.Addr, "advertised_host", m.Meta.NovaHost, "state", string(m.State),
		"reason", why, "effect", "what it says counts for no host; its host is judged by Nova's rule unless its own agent proves it")
}

// Summary implements leader.MeshReporter: every member, controllers too, and the
// identity figures of the last snapshot.
func (n *Adapter) Summary() leader.MeshSummary {
	members := n.mesh.Members()
	s := leader.MeshSummary{Wired: true, Members: len(members), States: map[string]int{}, HealthScore: n.mesh.HealthScore(),
		Rejected: n.mesh.Stats().Rejected}
	for _, m := range members {
		s.States[string(m.State)]++
	}
	for _, m := range n.Snapshot() {
		if m.State == leader.MeshContested {
			s.Contested++
		}
	}
	n.mu.Lock()
	s.Unverified = n.unverified
	n.mu.Unlock()
	return s
}

// KdumpLog is the notices this controller received.
func (n *Adapter) KdumpLog() *leader.KdumpLog { return n.kdump }

// Wake delivers when the reconciler should look at once.
func (n *Adapter) Wake() <-chan struct{} { return n.wake }

var (
	_ leader.MeshReporter = (*Adapter)(nil)
	_ Gossip              = (*gossip.Mesh)(nil)
)
