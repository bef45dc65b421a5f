package gossip

import (
	"sync"
	"time"
)

// Kind is what happened to a member.
type Kind uint8

// Event kinds.
const (
	// KindAlive: a member joined, rejoined after dead/left, or a suspicion
	// about it was refuted (Refuted is then true).
	KindAlive Kind = iota + 1
	// KindSuspect: a member was accused of not answering probes; one event
	// per distinct accuser (Accuser), so the count is the number of
	// independent confirmations this node has seen.
	KindSuspect
	// KindDead: the mesh declared the member failed (no graceful leave).
	KindDead
	// KindLeft: the member left gracefully.
	KindLeft
	// KindUpdated: the member's metadata changed.
	KindUpdated
)

func (k Kind) String() string {
	switch k {
	case KindAlive:
		return "alive"
	case KindSuspect:
		return "suspect"
	case KindDead:
		return "dead"
	case KindLeft:
		return "left"
	case KindUpdated:
		return "updated"
	}
	return "unknown"
}

// State is a member's state as this node sees it.
type State string

// Member states.
const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Event is one change of a member, as observed by this node.
type Event struct {
	Kind Kind
	Node string
	// Addr is the member's gossip address, ip:port; IP its host part.
	Addr string
	IP   string
	Meta Meta
	// At is when this node observed the change (its own clock).
	At time.Time
	// Accuser (KindSuspect) is the member that failed to probe Node.
	Accuser string
	// Accusers (KindDead) are the distinct members this node knew to have
	// accused Node before it was declared dead, in the order heard.
	Accusers []string
	// Confirmations (KindDead) is the number of independent suspicion
	// confirmations memberlist counted when this node's own suspicion timer
	// declared Node dead; -1 when the dead verdict reached this node by gossip
	// from another member.
	Confirmations int
	// Refuted (KindAlive) is true when Node was suspect and is alive again.
	Refuted bool
	// Reason says in words why the event was emitted.
	Reason string
}

// Member is one node of the mesh as this node sees it, including dead and
// left nodes (until they are forgotten after memberlist's reclaim times).
type Member struct {
	Name  string
	Addr  string // ip:port of gossip
	IP    string
	Meta  Meta
	State State
	// Since is when this node saw State begin.
	Since time.Time
	// Accusers of a suspect member, in the order heard.
	Accusers []string
	// Joined is when this node last saw the member join or come back.
	Joined time.Time
	// Claim is what this node verified of the member's identity
	// (controllers with Config.ClusterKey; zero elsewhere).
	Claim Claim
}

// maxQueuedEvents bounds the event queue when nobody reads Events(); beyond
// it the oldest events are dropped and counted (Members stays exact).
const maxQueuedEvents = 1 << 16

// eventQueue is an unbounded-up-to-a-limit FIFO: memberlist calls its
// delegates with its node lock held, so emitting must never block.
type eventQueue struct {
	mu      sync.Mutex
	items   []Event
	signal  chan struct{}
	dropped uint64
}

func newEventQueue() *eventQueue { return &eventQueue{signal: make(chan struct{}, 1)} }

func (q *eventQueue) push(e Event) {
	q.mu.Lock()
	if len(q.items) >= maxQueuedEvents {
		q.items = q.items[1:]
		q.dropped++
	}
	q.items = append(q.items, e)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *eventQueue) popAll() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items = nil
	return out
}

// pump delivers queued events to out in order until done is closed, then
// closes out.
func (q *eventQueue) pump(out chan<- Event, done <-chan struct{}) {
	defer close(out)
	for {
		select {
		case <-q.signal:
		case <-done:
			return
		}
		for _, e := range q.popAll() {
			select {
			case out <- e:
			case <-done:
				return
			}
		}
	}
}
