package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/ihaproject/iha/agent"
	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/leader/meshview"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/kdump"
	"github.com/ihaproject/iha/pkg/version"
)

// meshNode is this controller's membership in the gossip mesh: the mesh
// itself, the leader's adapter of it (meshview.Adapter: the snapshot,
// the wake-ups, the kdump notices, the status API's figures) and, with
// CHECK_KDUMP, this controller's own fence_kdump listener. runLeader and
// dev mode both start it with startMesh.
type meshNode struct {
	*meshview.Adapter
	mesh *gossip.Mesh
	recv *agent.Receiver
	conn net.PacketConn

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
	n := &meshNode{mesh: m, Adapter: meshview.New(m, len(cfg.Keys) > 0 || cfg.KeyringFile != "", log)}
	if s.CheckKdump && s.KdumpListen != config.Off && s.KdumpListen != "" {
		// What this controller hears itself is recorded as heard (its
		// source address is real), then relayed to the other controllers.
		relay := func(kn kdump.Notice) error {
			n.RecordListened(kn)
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
		n.Run(ctx)
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
