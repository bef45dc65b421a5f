package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/leader"
)

// ClusterOptions configure a Cluster: the Options of the single-leader
// sandbox (their Wrap* functions apply to every member), plus per-member
// wrappers that see which member they wrap.
type ClusterOptions struct {
	Options
	// Voters is the size of the Raft group (default 3).
	Voters int
	// WrapStoreFor, WrapNovaFor and WrapFenceFor wrap one member's view of
	// the world after the shared wrappers (a test's kill switch per member).
	WrapStoreFor func(member string, st leader.Store) leader.Store
	WrapNovaFor  func(member string, nv leader.Nova) leader.Nova
	WrapFenceFor func(member string, fl fence.Lookup) fence.Lookup
}

// Cluster is novasim, one simulated BMC per compute, and a Raft group of
// voters talking real TCP on 127.0.0.1, each with its own data directory,
// leadership Monitor and Reconciler, all sharing the one novasim and the
// one set of BMCs. Members can be killed, stopped gracefully, partitioned
// away and restarted on the same data.
type Cluster struct {
	*Sandbox
	copts   ClusterOptions
	members []*Member
}

// NewCluster starts novasim and opens a listener per voter (ports chosen by
// the kernel on 127.0.0.1). Add computes with AddCompute, then Start.
func NewCluster(opts ClusterOptions) (*Cluster, error) {
	if opts.Voters <= 0 {
		opts.Voters = 3
	}
	if opts.DataDir == "" {
		return nil, errors.New("sandbox cluster: DataDir is required")
	}
	if opts.Timing == 0 {
		opts.Timing = 0.3
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.TrackInterval == 0 {
		opts.TrackInterval = 100 * time.Millisecond
	}
	sb, err := New(opts.Options)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Sandbox: sb, copts: opts}
	for i := 1; i <= opts.Voters; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("sandbox cluster: listen: %w", err)
		}
		id := fmt.Sprintf("ctl-%d", i)
		m := &Member{ID: id, Addr: ln.Addr().String(), dir: filepath.Join(opts.DataDir, id), c: c,
			layer: &netLayer{ln: ln, conns: map[net.Conn]struct{}{}}}
		c.members = append(c.members, m)
	}
	return c, nil
}

// AddCompute adds a heartbeating compute with a powered-on BMC whose host,
// once powered on again, waits for the cluster's gate before its
// nova-compute starts.
func (c *Cluster) AddCompute(host, zone string) string {
	id := c.Sim.AddCompute(host, zone)
	c.mu.Lock()
	c.bmcs[host] = &BMC{sim: c.Sim, host: host, on: true, boot: c.boot}
	c.mu.Unlock()
	return id
}

func (c *Cluster) boot(host string) {
	go func() {
		time.Sleep(c.opts.BootDelay)
		for {
			if fsm := c.FSM(); fsm != nil {
				if ok, _ := leader.GateAllows(fsm.Host(host)); ok {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Sim.StartCompute(host)
	}()
}

// Members returns the voters, in id order.
func (c *Cluster) Members() []*Member { return append([]*Member(nil), c.members...) }

// Member returns the voter with id, or nil.
func (c *Cluster) Member(id string) *Member {
	for _, m := range c.members {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// Peers is the bootstrap voter set.
func (c *Cluster) Peers() []leader.Peer {
	out := make([]leader.Peer, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, leader.Peer{ID: m.ID, Addr: m.Addr})
	}
	return out
}

// Start starts every voter and returns once one of them leads.
func (c *Cluster) Start(ctx context.Context) error {
	if m, ok := c.opts.Mesh.(*Mesh); ok {
		m.alive(c.Hosts())
	}
	for _, m := range c.members {
		if err := m.Start(ctx); err != nil {
			c.StopAll()
			return err
		}
	}
	_, err := c.WaitLeader(ctx, 30*time.Second)
	return err
}

// Leader returns the running, connected member that is the Raft leader
// now, or nil.
func (c *Cluster) Leader() *Member {
	for _, m := range c.members {
		if n := m.Node(); n != nil && !m.Isolated() && n.IsLeader() {
			return m
		}
	}
	return nil
}

// WaitLeader polls until a running, connected member leads and has started
// its term's reconciler (its Barrier is done), or the timeout passes.
func (c *Cluster) WaitLeader(ctx context.Context, timeout time.Duration) (*Member, error) {
	deadline := time.Now().Add(timeout)
	for {
		if m := c.Leader(); m != nil {
			if mon := m.Monitor(); mon != nil && mon.Current() != nil {
				return m, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sandbox cluster: no leader within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// FSM is the replica the cluster's gate reads: the leader's, else the first
// running member's (nil when none runs).
func (c *Cluster) FSM() *leader.FSM {
	if m := c.Leader(); m != nil {
		if n := m.Node(); n != nil {
			return n.FSM()
		}
	}
	for _, m := range c.members {
		if n := m.Node(); n != nil {
			return n.FSM()
		}
	}
	return nil
}

// StopAll stops every member gracefully.
func (c *Cluster) StopAll() {
	for _, m := range c.members {
		m.Stop(true)
	}
}

// Close stops every member, closes their listeners and novasim.
func (c *Cluster) Close() {
	for _, m := range c.members {
		m.Stop(false)
		_ = m.layer.Close()
	}
	c.Sim.Close()
}

// Member is one voter of a Cluster.
type Member struct {
	ID   string
	Addr string
	dir  string
	c    *Cluster

	layer *netLayer

	mu     sync.Mutex
	node   *leader.Node
	mon    *leader.Monitor
	cancel context.CancelFunc
	done   chan struct{}
}

// DataDir is the member's Raft directory.
func (m *Member) DataDir() string { return m.dir }

// Start opens (or reopens) the member's Raft node on its data directory and
// starts its leadership monitor. It does not wait for a leader.
func (m *Member) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.node != nil {
		return fmt.Errorf("sandbox cluster: %s is running", m.ID)
	}
	if err := m.layer.reopen(m.Addr); err != nil {
		return err
	}
	opts := m.c.copts
	node, err := leader.OpenNode(leader.NodeConfig{ID: m.ID, DataDir: m.dir, Stream: m.layer, Peers: m.c.Peers(),
		Timing: opts.Timing, Logger: opts.Logger.With("node", m.ID)})
	if err != nil {
		return err
	}
	var store leader.Store = node
	if opts.WrapStore != nil {
		store = opts.WrapStore(store)
	}
	if opts.WrapStoreFor != nil {
		store = opts.WrapStoreFor(m.ID, store)
	}
	var nv leader.Nova = m.c.Nova
	if opts.WrapNova != nil {
		nv = opts.WrapNova(nv)
	}
	if opts.WrapNovaFor != nil {
		nv = opts.WrapNovaFor(m.ID, nv)
	}
	fl := m.c.Fencers()
	if opts.WrapFence != nil {
		fl = opts.WrapFence(fl)
	}
	if opts.WrapFenceFor != nil {
		fl = opts.WrapFenceFor(m.ID, fl)
	}
	log := opts.Logger.With("node", m.ID)
	mk := func() *leader.Reconciler {
		return leader.NewReconciler(leader.ReconcilerConfig{Settings: opts.Settings, Nova: nv, Fencers: fl, Store: store,
			Logger: log, TrackInterval: opts.TrackInterval, InitialTrackDelay: opts.TrackInterval,
			RetryBackoff: 50 * time.Millisecond, Mesh: meshView(opts.Mesh), Wake: meshWake(opts.Mesh),
			Kdump: meshKdump(opts.Mesh), KdumpQuiet: opts.KdumpQuiet})
	}
	mon := leader.NewMonitor(node, mk, log)
	mon.APIAddr = "api-" + m.ID
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = mon.Run(lctx)
	}()
	m.node, m.mon, m.cancel, m.done = node, mon, cancel, done
	return nil
}

// Stop stops the member. graceful: the reconciler stops, then the node
// hands leadership over and shuts down (a planned restart). Otherwise it
// dies like a killed process: its network is cut first, raft stops without
// a transfer, and only then is the reconciler cancelled (any effect it is
// in the middle of is the caller's to model).
func (m *Member) Stop(graceful bool) {
	m.mu.Lock()
	node, cancel, done := m.node, m.cancel, m.done
	m.node, m.mon, m.cancel, m.done = nil, nil, nil, nil
	m.mu.Unlock()
	if node == nil {
		return
	}
	if graceful {
		cancel()
		<-done
		_ = node.Shutdown()
		return
	}
	m.layer.isolate()
	_ = node.Close()
	cancel()
	<-done
	m.layer.heal()
}

// Isolate cuts the member off from the other voters, both ways: every open
// connection is closed and new ones are refused. It keeps running, and
// keeps reaching novasim and the BMCs (a partition between controllers).
func (m *Member) Isolate() { m.layer.isolate() }

// Heal reconnects an isolated member.
func (m *Member) Heal() { m.layer.heal() }

// Isolated reports whether the member is cut off.
func (m *Member) Isolated() bool { return m.layer.isolated() }

// Node is the member's running Raft node (nil when stopped).
func (m *Member) Node() *leader.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.node
}

// Monitor is the member's running leadership monitor (nil when stopped).
func (m *Member) Monitor() *leader.Monitor {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mon
}

// Running reports whether the member's node is open.
func (m *Member) Running() bool { return m.Node() != nil }

// netLayer is a plain-TCP raft.StreamLayer that can be partitioned away.
type netLayer struct {
	mu     sync.Mutex
	ln     net.Listener
	cut    bool
	closed bool
	conns  map[net.Conn]struct{}
}

// reopen listens again on addr after the node that used the layer closed
// it (raft's transport closes its stream layer on shutdown).
func (l *netLayer) reopen(addr string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		return nil
	}
	var err error
	for i := 0; i < 100; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			l.ln, l.closed = ln, false
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("sandbox cluster: listen again on %s: %w", addr, err)
}

func (l *netLayer) isolate() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for c := range l.conns {
		_ = c.(*trackedConn).Conn.Close() // not c.Close: it takes l.mu
	}
	clear(l.conns)
}

func (l *netLayer) heal() {
	l.mu.Lock()
	l.cut = false
	l.mu.Unlock()
}

func (l *netLayer) isolated() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut
}

// track registers c, or closes it when the layer is cut.
func (l *netLayer) track(c net.Conn) (net.Conn, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		_ = c.Close()
		return nil, false
	}
	tc := &trackedConn{Conn: c, l: l}
	l.conns[tc] = struct{}{}
	return tc, true
}

func (l *netLayer) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// errCut is what a dial from an isolated member returns.
var errCut = errors.New("sandbox cluster: member is partitioned away")

func (l *netLayer) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		ln := l.ln
		l.mu.Unlock()
		c, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		if tc, ok := l.track(c); ok {
			return tc, nil
		}
	}
}

func (l *netLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if l.isolated() {
		return nil, errCut
	}
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	tc, ok := l.track(c)
	if !ok {
		return nil, errCut
	}
	return tc, nil
}

func (l *netLayer) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	return l.ln.Close()
}

func (l *netLayer) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ln.Addr()
}

type trackedConn struct {
	net.Conn
	l *netLayer
}

func (c *trackedConn) Close() error {
	c.l.untrack(c)
	return c.Conn.Close()
}
