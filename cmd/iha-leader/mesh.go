package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ihaproject/iha/agent"
	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/kdump"
	"github.com/ihaproject/iha/pkg/version"
)

// meshNode is this controller's membership in the gossip mesh, adapted to
// what the leader needs: a snapshot of the compute agents (leader.MeshView),
// a wake-up on a death or a kdump notice, the kdump notices themselves, and
// whole-mesh figures for the status API.
type meshNode struct {
	mesh  *gossip.Mesh
	log   *slog.Logger
	wake  chan struct{}
	kdump *leader.KdumpLog
	recv  *agent.Receiver
	conn  net.PacketConn
	// authenticated: the mesh is encrypted with a keyring, so a message
	// that decodes came from a holder of the key (memberlist drops the
	// rest); without one, anyone who reaches the gossip port can forge a
	// relayed kdump notice.
	authenticated bool

	mu         sync.Mutex
	dead       map[string]gossip.Event // node → its last Dead event (accusers, confirmations)
	warned     map[string]bool         // node@addr → warned that it is not believed
	unverified int                     // compute members not believed at the last snapshot

	stop context.CancelFunc
	done sync.WaitGroup
}

// meshConfig builds the gossip configuration of a controller from the
// settings. apiAddr is the status API's bound address, advertised so that
// agents (the nova-compute gate) find the controllers.
func meshConfig(s config.Settings, apiAddr string, clusterKey []byte, log *slog.Logger) (gossip.Config, error) {
	host, port, err := net.SplitHostPort(s.GossipBind)
	if err != nil {
		return gossip.Config{}, fmt.Errorf("GOSSIP_BIND %q: %w", s.GossipBind, err)
	}
	// config.Load refuses this too; settings built in code (dev mode,
	// tests) must choose as well.
	if s.GossipKeyring == "" && !s.GossipInsecure {
		return gossip.Config{}, fmt.Errorf("GOSSIP_KEYRING is not set: the mesh is encrypted by default (GOSSIP_INSECURE true runs it without, on a lab)")
	}
	if len(clusterKey) == 0 && !s.GossipInsecure {
		return gossip.Config{}, fmt.Errorf("CLUSTER_KEY is not set: the controllers check which host each member speaks for (GOSSIP_INSECURE true runs without, on a lab)")
	}
	p, _ := strconv.Atoi(port)
	cfg := gossip.Config{NodeName: s.NodeName, BindAddr: host, BindPort: p, Join: s.GossipJoin, Label: s.GossipLabel,
		KeyringFile: s.GossipKeyring, ClusterKey: clusterKey, Logger: log, Profile: meshProfile(s),
		Meta: gossip.Meta{Role: gossip.RoleController, IHAVersion: version.Version, APIAddr: apiAddr}}
	if err := cfg.Profile.Validate(); err != nil {
		return gossip.Config{}, err
	}
	if s.GossipAdvertise != "" {
		ah, ap, err := net.SplitHostPort(s.GossipAdvertise)
		if err != nil {
			return gossip.Config{}, fmt.Errorf("GOSSIP_ADVERTISE %q: %w", s.GossipAdvertise, err)
		}
		cfg.AdvertiseAddr = ah
		cfg.AdvertisePort, _ = strconv.Atoi(ap)
	}
	return cfg, nil
}

// meshProfile is the failure detector of GOSSIP_PROFILE and its overrides.
func meshProfile(s config.Settings) gossip.Profile {
	g := s.Gossip()
	return gossip.Profile{ProbeInterval: g.ProbeInterval, ProbeTimeout: g.ProbeTimeout, SuspicionMult: g.SuspicionMult, GossipInterval: g.GossipInterval}
}

// advertisedAPI is the API address agents can dial: the bound address, with
// an unspecified host replaced by the gossip advertise (or bind) host.
func advertisedAPI(bound string, s config.Settings) string {
	h, p, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
		return bound
	}
	for _, a := range []string{s.GossipAdvertise, s.GossipBind} {
		if gh, _, err := net.SplitHostPort(a); err == nil && gh != "" {
			if ip := net.ParseIP(gh); ip == nil || !ip.IsUnspecified() {
				return net.JoinHostPort(gh, p)
			}
		}
	}
	return bound
}

// startMesh joins the mesh as a controller (GOSSIP_BIND not off) and, with
// CHECK_KDUMP, listens for fence_kdump packets itself (KDUMP_LISTEN). The
// join is retried in the background forever.
func startMesh(cfg gossip.Config, s config.Settings, log *slog.Logger) (*meshNode, error) {
	m, err := gossip.New(cfg)
	if err != nil {
		return nil, err
	}
	n := &meshNode{mesh: m, log: log, wake: make(chan struct{}, 1), kdump: leader.NewKdumpLog(), dead: map[string]gossip.Event{},
		authenticated: len(cfg.Keys) > 0 || cfg.KeyringFile != "", warned: map[string]bool{}}
	if s.CheckKdump && s.KdumpListen != config.Off && s.KdumpListen != "" {
		// What this controller hears itself is recorded as heard (its
		// source address is real), then relayed to the other controllers.
		relay := func(kn kdump.Notice) error {
			n.recordListened(kn)
			return m.BroadcastKdump(kn)
		}
		recv, conn, err := listenKdump(s.KdumpListen, m.Members, nil, relay, log.With("component", "kdump"))
		if err != nil {
			m.Shutdown()
			return nil, err
		}
		n.recv, n.conn = recv, conn
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	n.done.Add(2)
	go func() {
		defer n.done.Done()
		if err := m.Run(ctx); err != nil {
			log.Warn("gossip: leave", "err", err)
		}
	}()
	go func() {
		defer n.done.Done()
		n.consume(ctx)
	}()
	if n.recv != nil {
		n.done.Add(1)
		go func() {
			defer n.done.Done()
			_ = n.recv.Run(ctx)
		}()
	}
	return n, nil
}

// consume turns the mesh's events and kdump notices into wake-ups and
// evidence.
func (n *meshNode) consume(ctx context.Context) {
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

func (n *meshNode) onEvent(ev gossip.Event) {
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
func (n *meshNode) onKdump(kn kdump.Notice) {
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

// recordListened records a notice this controller's own listener heard.
func (n *meshNode) recordListened(kn kdump.Notice) {
	n.kdump.Record(leader.KdumpNotice{Host: kn.Host, From: kn.SourceAddr, Via: leader.KdumpViaListener, MappedBy: kn.MappedBy, At: time.Now()})
	n.poke()
}

func (n *meshNode) liveMember(name string) bool {
	for _, m := range n.mesh.Members() {
		if m.Name == name {
			return m.State == gossip.StateAlive || m.State == gossip.StateSuspect
		}
	}
	return false
}

func (n *meshNode) poke() {
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

// Snapshot implements leader.MeshView. What the leader believes of a host
// comes only from the members that speak for it:
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
// contestWindow) make it contested: its state is MeshContested, which the
// verdict table judges by Nova's rule alone, until one of them leaves or
// is gone long enough. The live one never wins by being live.
func (n *meshNode) Snapshot() leader.MeshSnapshot {
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
func (n *meshNode) noteUnverified(m gossip.Member, now time.Time, ttl time.Duration) {
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

// Summary implements leader.MeshReporter: every member, controllers too,
// and the identity figures of the last snapshot.
func (n *meshNode) Summary() leader.MeshSummary {
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
func (n *meshNode) KdumpLog() *leader.KdumpLog { return n.kdump }

// Wake delivers when the reconciler should look at once.
func (n *meshNode) Wake() <-chan struct{} { return n.wake }

// Close leaves the mesh gracefully (the agents see "left", not "dead") and
// stops the kdump listener.
func (n *meshNode) Close() {
	n.stop()
	if n.conn != nil {
		_ = n.conn.Close()
	}
	n.done.Wait()
}

// kdumpListen says where this controller listens for fence_kdump packets.
func kdumpListen(s config.Settings) string {
	if !s.CheckKdump {
		return "off (CHECK_KDUMP false)"
	}
	return s.KdumpListen
}

// listenKdump opens KDUMP_LISTEN and a receiver that maps each packet's
// source address to a host (the members' addresses when members is set,
// then reverse DNS, as InstanceHA) and hands the notice to relay.
func listenKdump(addr string, members func() []gossip.Member, resolver agent.AddrResolver, relay func(kdump.Notice) error, log *slog.Logger) (*agent.Receiver, net.PacketConn, error) {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("KDUMP_LISTEN %s: %w", addr, err)
	}
	recv, err := agent.NewReceiver(agent.ReceiverConfig{Conn: conn, Members: members, Resolver: resolver, Relay: relay, Logger: log})
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return recv, conn, nil
}

// kdumpListener is CHECK_KDUMP with GOSSIP_BIND off: InstanceHA's own
// listener. A packet's source address is mapped to a host by reverse DNS
// (cut at the first dot); the notice is recorded as heard and wakes the
// reconciler.
type kdumpListener struct {
	kdump *leader.KdumpLog
	wake  chan struct{}
	recv  *agent.Receiver
	conn  net.PacketConn
	stop  context.CancelFunc
	done  chan struct{}
}

func startKdumpListener(addr string, resolver agent.AddrResolver, log *slog.Logger) (*kdumpListener, error) {
	k := &kdumpListener{kdump: leader.NewKdumpLog(), wake: make(chan struct{}, 1), done: make(chan struct{})}
	relay := func(kn kdump.Notice) error {
		k.kdump.Record(leader.KdumpNotice{Host: kn.Host, From: kn.SourceAddr, Via: leader.KdumpViaListener, MappedBy: kn.MappedBy, At: time.Now()})
		select {
		case k.wake <- struct{}{}:
		default:
		}
		return nil
	}
	var err error
	if k.recv, k.conn, err = listenKdump(addr, nil, resolver, relay, log); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	k.stop = cancel
	go func() {
		defer close(k.done)
		_ = k.recv.Run(ctx)
	}()
	return k, nil
}

// Close stops the listener.
func (k *kdumpListener) Close() {
	k.stop()
	<-k.done
}
