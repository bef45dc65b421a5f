package sandbox

import (
	"sync"
	"time"

	"github.com/ihaproject/iha/leader"
)

// Mesh is a scripted gossip view for tests and dev mode: a test says what
// the mesh believes of each host, and the leader is woken as the real mesh
// would wake it on a death.
type Mesh struct {
	mu     sync.Mutex
	states map[string]meshState
	wake   chan struct{}
}

type meshState struct {
	state string
	since time.Time
}

// NewMesh returns a mesh where every host is alive.
func NewMesh() *Mesh { return &Mesh{states: map[string]meshState{}, wake: make(chan struct{}, 1)} }

// Set records the mesh's state of host from now on and wakes the leader.
func (m *Mesh) Set(host, state string) {
	m.mu.Lock()
	m.states[host] = meshState{state: state, since: time.Now()}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// HostState implements leader.MeshView. Hosts never Set are alive.
func (m *Mesh) HostState(host string) (string, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.states[host]; ok {
		return s.state, s.since
	}
	return leader.MeshAlive, time.Time{}
}

// Wake is the channel the reconciler listens on.
func (m *Mesh) Wake() <-chan struct{} { return m.wake }
