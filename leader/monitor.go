package leader

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// barrierTimeout bounds the Barrier at the start of a term (Consul: 2 min).
const barrierTimeout = 2 * time.Minute

// Monitor runs one Reconciler per leadership term, after Consul's
// monitorLeadership: it drains raft's notify channel, starts the leader
// loop on true, and on false cancels it and waits for it to stop before
// anything else, so two loops never run at once.
type Monitor struct {
	node *Node
	mk   func() *Reconciler
	log  *slog.Logger

	// APIAddr is this node's status API address, recorded in the FSM at the
	// start of each term so followers know where to forward. Set before Run.
	APIAddr string

	mu      sync.Mutex
	current *Reconciler
}

// NewMonitor returns a monitor that builds a fresh Reconciler with mk at the
// start of every term (nothing carries over from an earlier term: timers
// restart and state is re-read after the Barrier).
func NewMonitor(node *Node, mk func() *Reconciler, logger *slog.Logger) *Monitor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Monitor{node: node, mk: mk, log: logger}
}

// Current is the reconciler of the current term, nil on a follower.
func (m *Monitor) Current() *Reconciler {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current
}

// Run follows leadership until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	var stopTerm func() // cancels the running term and waits for it; nil when none runs
	stop := func() {
		if stopTerm == nil {
			return
		}
		stopTerm()
		stopTerm = nil
		m.mu.Lock()
		m.current = nil
		m.mu.Unlock()
		m.log.Warn("leadership lost: reconciler stopped")
	}
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case leader := <-m.node.Notify():
			if !leader {
				stop()
				continue
			}
			if stopTerm != nil {
				m.log.Warn("leadership notified twice; assuming it was lost and regained")
				stop()
			}
			stopTerm = m.startTerm(ctx)
		}
	}
}

// startTerm runs a leader loop and returns the function that ends it.
func (m *Monitor) startTerm(ctx context.Context) func() {
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.leaderLoop(lctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// leaderLoop makes the FSM current with a Barrier before the first decision
// of the term, then runs the reconciler.
func (m *Monitor) leaderLoop(ctx context.Context) {
	m.log.Info("became Raft leader: waiting for the barrier", "node", m.node.ID())
	for {
		err := m.node.Barrier(barrierTimeout)
		if err == nil {
			break
		}
		m.log.Error("barrier failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	// The term is established once this leader has also committed an entry
	// of its own (its API address): a node that cannot write (a full disk
	// still lets bolt store the Barrier in a free page, then fails the next
	// write and steps down) must not start a reconciler, which would read
	// Nova and release locks as if it led.
	for {
		_, err := m.node.Apply(ctx, CmdLeaderAPI, time.Now(), LeaderAPICmd{NodeID: m.node.ID(), APIAddr: m.APIAddr})
		if err == nil {
			break
		}
		m.log.Error("could not record this leader's API address; the term is not established: retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	r := m.mk()
	m.mu.Lock()
	m.current = r
	m.mu.Unlock()
	m.log.Info("leader established: state is current", "applied_index", m.node.FSM().AppliedIndex())
	_ = r.Run(ctx)
}
