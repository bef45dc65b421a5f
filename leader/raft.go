package leader

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/ihaproject/iha/pkg/secret"
)

// Peer is one voter of the Raft group.
type Peer struct {
	ID   string
	Addr string
}

// NodeConfig configures a Raft node.
type NodeConfig struct {
	ID      string // server id (NODE_NAME)
	Addr    string // host:port to listen on and advertise (RAFT_ADDR)
	DataDir string // bolt store and snapshots live here
	// Peers is the voter set to bootstrap with when the data directory has
	// no Raft state. Empty means this node alone.
	Peers []Peer
	// NoBootstrap is set when the node joins an existing group (RAFT_JOIN):
	// with no Raft state it starts empty and waits to be added by the
	// leader (JoinCluster) instead of bootstrapping a group of its own.
	NoBootstrap bool
	// Transport replaces the TCP transport (tests use raft's in-memory one).
	Transport raft.Transport
	// Stream, when set (and Transport is not), carries raft over this
	// stream layer instead of listening on Addr: a listener opened before
	// the node (port 0 in tests), or a wrapped one. Addr is then ignored
	// and the layer's Addr is advertised.
	Stream raft.StreamLayer
	// TLS, when set, makes the transport mutual TLS (see LoadTLS): peers
	// without a certificate of the CA can neither send nor receive log
	// entries. Ignored when Transport or Stream is set (wrap the listener
	// with NewTLSStreamLayer yourself).
	TLS *tls.Config
	// JoinToken is the proof JoinHandler asks of a joining controller when
	// TLS is not set: the write token (API_TOKEN). With neither, joins are
	// refused.
	JoinToken secret.Secret
	// StartFresh lets the node start with an empty raft.db (removed first)
	// instead of refusing (see ErrDataDir): the operator's explicit choice
	// to give up this controller's Raft state.
	StartFresh bool
	// Timing scales raft's default timeouts (1 = raft defaults); tests may
	// use less than 1 for faster elections.
	Timing float64
	Logger *slog.Logger
}

// Node is one voter: raft, its bolt stores, the FSM, and the leadership
// notifications.
type Node struct {
	id        string
	raft      *raft.Raft
	fsm       *FSM
	store     *guardedStore
	transport raft.Transport
	notify    chan bool
	log       *slog.Logger
	tls       *tls.Config // nil: the join RPC asks for no client certificate
	joinToken secret.Secret
	logw      io.Closer // raft's log pipe; closing it ends its reader goroutine
	hadState  bool      // DataDir held Raft state when the node opened
}

// OpenNode opens (or creates) the node's state in DataDir and starts raft.
func OpenNode(cfg NodeConfig) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ID == "" {
		return nil, errors.New("raft: node id is empty (set NODE_NAME)")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("raft: data directory: %w", err)
	}
	bolt, err := openStore(cfg.DataDir, cfg.StartFresh, cfg.Logger)
	if err != nil {
		return nil, err
	}
	store := &guardedStore{b: bolt}
	logw := slogWriter(cfg.Logger.With("component", "raft"))
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, Output: logw})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, hl)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("raft: snapshot store: %w", err)
	}
	trans := cfg.Transport
	if trans == nil && cfg.Stream == nil {
		ln, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("raft: listen on %s (RAFT_ADDR): %w", cfg.Addr, err)
		}
		cfg.Stream = NewTCPStreamLayer(ln)
		if cfg.TLS != nil {
			cfg.Stream = NewTLSStreamLayer(ln, cfg.TLS)
		}
	}
	if trans == nil {
		// MaxRPCsInFlight 1 turns raft's pipelined replication off: a
		// pipeline whose peer stops answering (killed, partitioned) can
		// block its replication goroutine for good, and with it
		// raft.Shutdown (seen in the failover runs). Throughput is not a
		// goal here; one request at a time, each with its deadline, is.
		trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: cfg.Stream, MaxPool: 3,
			MaxRPCsInFlight: 1, Timeout: 10 * time.Second, Logger: hl})
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hl
	if cfg.Timing > 0 && cfg.Timing != 1 {
		scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) * cfg.Timing) }
		rc.HeartbeatTimeout = scale(rc.HeartbeatTimeout)
		rc.ElectionTimeout = scale(rc.ElectionTimeout)
		rc.LeaderLeaseTimeout = scale(rc.LeaderLeaseTimeout)
		rc.CommitTimeout = scale(rc.CommitTimeout)
	}
	// Raft blocks on NotifyCh; the monitor drains it promptly, and the
	// buffer absorbs flaps (Consul uses 10).
	notify := make(chan bool, 16)
	rc.NotifyCh = notify
	fsm := NewFSM()
	logs := raft.LogStore(store)
	if cache, err := raft.NewLogCache(512, store); err == nil {
		logs = cache
	}
	has, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		closeTransport(trans, cfg.Transport)
		store.Close()
		return nil, fmt.Errorf("raft: read state: %w", err)
	}
	if !has && !cfg.NoBootstrap {
		peers := cfg.Peers
		if len(peers) == 0 {
			peers = []Peer{{ID: cfg.ID, Addr: string(trans.LocalAddr())}}
		}
		var servers []raft.Server
		for _, p := range peers {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := raft.BootstrapCluster(rc, logs, store, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			closeTransport(trans, cfg.Transport)
			store.Close()
			return nil, fmt.Errorf("raft: bootstrap: %w", err)
		}
		cfg.Logger.Info("raft bootstrapped", "voters", len(servers))
	}
	r, err := raft.NewRaft(rc, fsm, logs, store, snaps, trans)
	if err != nil {
		closeTransport(trans, cfg.Transport)
		store.Close()
		return nil, fmt.Errorf("raft: start: %w", err)
	}
	return &Node{id: cfg.ID, raft: r, fsm: fsm, store: store, transport: trans, notify: notify, log: cfg.Logger, tls: cfg.TLS, logw: logw,
		hadState: has, joinToken: cfg.JoinToken}, nil
}

// HadState reports whether DataDir already held Raft state (a term, log
// entries or a snapshot) when the node opened: a restart rather than a
// first start. A controller that joins through RAFT_JOIN asks to join only
// when it had none; one with state is a member already, or was removed on
// purpose and must not add itself back.
func (n *Node) HadState() bool { return n.hadState }

// FSM returns the node's replica of the state.
func (n *Node) FSM() *FSM { return n.fsm }

// ID is the node's server id.
func (n *Node) ID() string { return n.id }

// IsLeader reports whether this node is the Raft leader right now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's address and id, empty if unknown.
func (n *Node) Leader() (addr, id string) {
	a, i := n.raft.LeaderWithID()
	return string(a), string(i)
}

// State is raft's state name (Leader, Follower, Candidate, Shutdown).
func (n *Node) State() string { return n.raft.State().String() }

// Stats returns raft's statistics.
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// Notify delivers every leadership transition, in order.
func (n *Node) Notify() <-chan bool { return n.notify }

// applyTimeout bounds one Apply; commit normally takes milliseconds.
const applyTimeout = 10 * time.Second

// Apply commits a command and returns the FSM's response. An error means the
// outcome is unknown only for raft.ErrLeadershipLost; callers treat any
// error as "stop and let the next reconcile re-read the state".
func (n *Node) Apply(ctx context.Context, t CommandType, at time.Time, body any) (any, error) {
	data, err := EncodeCommand(t, at, body)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f := n.raft.Apply(data, applyTimeout)
	// Wait for the outcome, or for ctx: a future that raft never answers
	// (seen when a node is closed with entries in flight) must not hold
	// the reconciler, and with it the Monitor and the node's shutdown.
	// Giving up on ctx leaves the outcome unknown, like ErrLeadershipLost.
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("raft apply %s: %w", t, err)
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("raft apply %s: outcome unknown: %w", t, ctx.Err())
	case <-time.After(2 * applyTimeout):
		// raft bounds only the enqueueing; a commit that never comes (a
		// stuck follower set, a shutdown race) must not wedge the leader.
		return nil, fmt.Errorf("raft apply %s: outcome unknown: %w", t, errApplyStuck)
	}
	if e, ok := f.Response().(error); ok {
		return nil, e
	}
	return f.Response(), nil
}

// errApplyStuck: raft accepted an entry but gave no outcome in time.
var errApplyStuck = errors.New("no commit and no error from raft in time")

// Barrier waits until every entry committed before it is applied locally.
func (n *Node) Barrier(timeout time.Duration) error {
	return n.raft.Barrier(timeout).Error()
}

// VerifyLeader confirms with a quorum that this node is still the leader.
func (n *Node) VerifyLeader() error { return n.raft.VerifyLeader().Error() }

// Shutdown stops the node. A leader of a multi-voter group first transfers
// leadership so the others do not wait for an election timeout.
func (n *Node) Shutdown() error {
	if n.IsLeader() {
		if cf := n.raft.GetConfiguration(); cf.Error() == nil && len(cf.Configuration().Servers) > 1 {
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("leadership transfer before shutdown failed", "err", err)
			}
		}
	}
	err := n.raft.Shutdown().Error()
	if c, ok := n.transport.(io.Closer); ok {
		_ = c.Close()
	}
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	_ = n.logw.Close()
	return err
}

// guardedStore is the bolt store behind a lock that Close takes. Raft's
// heartbeat fast path runs on the transport's connection goroutines and can
// still save the current term a moment after raft.Shutdown returned; on a
// closed bolt file that write fails and raft panics ("failed to save
// current term: database not open"), taking the process down on a clean
// stop. After Close, writes are dropped (the node is gone; a term it missed
// is learned again when it restarts, and votes and entries only ever go
// through raft's main loop, which has stopped) and reads fail.
type guardedStore struct {
	mu     sync.RWMutex
	closed bool
	b      *raftboltdb.BoltStore
}

var errStoreClosed = errors.New("raft store closed")

func (g *guardedStore) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	return g.b.Close()
}

func (g *guardedStore) FirstIndex() (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return 0, errStoreClosed
	}
	return g.b.FirstIndex()
}

func (g *guardedStore) LastIndex() (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return 0, errStoreClosed
	}
	return g.b.LastIndex()
}

func (g *guardedStore) GetLog(idx uint64, log *raft.Log) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return errStoreClosed
	}
	return g.b.GetLog(idx, log)
}

func (g *guardedStore) StoreLog(log *raft.Log) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return errStoreClosed
	}
	return g.b.StoreLog(log)
}

func (g *guardedStore) StoreLogs(logs []*raft.Log) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return errStoreClosed
	}
	return g.b.StoreLogs(logs)
}

func (g *guardedStore) DeleteRange(lo, hi uint64) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return errStoreClosed
	}
	return g.b.DeleteRange(lo, hi)
}

func (g *guardedStore) Set(k, v []byte) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil // dropped: see the type's comment
	}
	return g.b.Set(k, v)
}

func (g *guardedStore) Get(k []byte) ([]byte, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil, errStoreClosed
	}
	return g.b.Get(k)
}

func (g *guardedStore) SetUint64(k []byte, v uint64) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil // dropped: see the type's comment
	}
	return g.b.SetUint64(k, v)
}

func (g *guardedStore) GetUint64(k []byte) (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return 0, errStoreClosed
	}
	return g.b.GetUint64(k)
}

// closeTransport closes a transport OpenNode made (not one it was given).
func closeTransport(t, given raft.Transport) {
	if given != nil {
		return
	}
	if c, ok := t.(io.Closer); ok {
		_ = c.Close()
	}
}

// Close stops the node without handing leadership over: what a crash looks
// like to the other voters (they elect a leader after their election
// timeout). Use Shutdown for a planned stop.
func (n *Node) Close() error {
	err := n.raft.Shutdown().Error()
	if c, ok := n.transport.(io.Closer); ok {
		_ = c.Close()
	}
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	_ = n.logw.Close()
	return err
}

// slogWriter turns hclog's text lines into slog records. Closing it ends
// its goroutine (later writes fail, and hclog drops them).
func slogWriter(l *slog.Logger) io.WriteCloser {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			lvl := slog.LevelInfo
			switch {
			case strings.Contains(line, "[ERROR]"):
				lvl = slog.LevelError
			case strings.Contains(line, "[WARN]"):
				lvl = slog.LevelWarn
			case strings.Contains(line, "[DEBUG]"), strings.Contains(line, "[TRACE]"):
				lvl = slog.LevelDebug
			}
			if i := strings.Index(line, "]"); i > 0 && i+1 < len(line) && strings.Contains(line[:i+1], "[") {
				line = strings.TrimSpace(line[i+1:])
			}
			l.Log(context.Background(), lvl, line)
		}
	}()
	return pw
}

// ErrNotLeader is returned by ConsistentRead and Join on a node that is
// not the leader (it is raft's sentinel; errors.Is works with either).
var ErrNotLeader = raft.ErrNotLeader

// ConsistentRead makes a read of this node's FSM linearizable (rqlite's
// LINEARIZABLE level): it confirms with a quorum that this node still leads
// (VerifyLeader), notes the commit index, and waits until the local FSM
// has applied up to it. Only then is what the FSM says at least as new as
// every write acknowledged before the call. On a follower it returns an
// error wrapping ErrNotLeader at once: the caller forwards to the leader
// (FSM().LeaderInfo()).
func (n *Node) ConsistentRead(ctx context.Context) error {
	vf := n.raft.VerifyLeader()
	verr := make(chan error, 1)
	go func() { verr <- vf.Error() }()
	select {
	case <-ctx.Done():
		return fmt.Errorf("consistent read: %w", ctx.Err())
	case err := <-verr:
		if err != nil {
			return fmt.Errorf("consistent read: %w", err)
		}
	}
	commit := n.raft.CommitIndex()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for n.raft.AppliedIndex() < commit {
		select {
		case <-ctx.Done():
			return fmt.Errorf("consistent read: waiting for index %d (applied %d): %w", commit, n.raft.AppliedIndex(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Voters returns the current Raft configuration (voters and non-voters).
func (n *Node) Voters() ([]Peer, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	var out []Peer
	for _, s := range f.Configuration().Servers {
		out = append(out, Peer{ID: string(s.ID), Addr: string(s.Address)})
	}
	return out, nil
}

// Addr is the Raft address this node advertises.
func (n *Node) Addr() string { return string(n.transport.LocalAddr()) }
