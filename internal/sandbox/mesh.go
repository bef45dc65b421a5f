package sandbox

import (
	"slices"
	"sync"
	"time"

	"github.com/ihaproject/iha/leader"
)

// Mesh is a scripted gossip view for tests and dev mode: a test says what
// the mesh believes of each host, and the leader is woken as the real mesh
// would wake it on a death or a kdump notice.
type Mesh struct {
	mu      sync.Mutex
	members map[string]leader.MeshMember
	wake    chan struct{}
	kdump   *leader.KdumpLog
}

// NewMesh returns a mesh where every host of the sandbox is alive.
func NewMesh() *Mesh {
	return &Mesh{members: map[string]leader.MeshMember{}, wake: make(chan struct{}, 1), kdump: leader.NewKdumpLog()}
}

// Set records the mesh's state of host from now on and wakes the leader.
// Accusers, when given, are the members said to have reported it.
func (m *Mesh) Set(host, state string, accusers ...string) {
	m.mu.Lock()
	m.members[host] = leader.MeshMember{Host: host, Node: host, Addr: m.members[host].Addr, State: state, Since: time.Now(),
		Accusers: slices.Clone(accusers), Confirmations: len(accusers)}
	m.mu.Unlock()
	m.poke()
}

// Forget makes host one the mesh never saw.
func (m *Mesh) Forget(host string) {
	m.mu.Lock()
	delete(m.members, host)
	m.mu.Unlock()
	m.poke()
}

// alive marks hosts not yet scripted as alive since the zero time.
func (m *Mesh) alive(hosts []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range hosts {
		if _, ok := m.members[h]; !ok {
			m.members[h] = leader.MeshMember{Host: h, Node: h, State: leader.MeshAlive}
		}
	}
}

// Snapshot implements leader.MeshView.
func (m *Mesh) Snapshot() leader.MeshSnapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(leader.MeshSnapshot, len(m.members))
	for h, mem := range m.members {
		mem.Accusers = slices.Clone(mem.Accusers)
		out[h] = mem
	}
	return out
}

// Kdump records a fence_kdump notice for host, as an agent of an
// authenticated mesh would relay it after mapping the address with its
// kdump_hosts, and wakes the leader.
func (m *Mesh) Kdump(host, from string) {
	m.KdumpNotice(leader.KdumpNotice{Host: host, From: from, Via: leader.KdumpViaAgent, Relayer: "sandbox-agent",
		MappedBy: leader.KdumpMappedByMap})
}

// KdumpNotice records n (At defaults to now) and wakes the leader.
func (m *Mesh) KdumpNotice(n leader.KdumpNotice) {
	if n.At.IsZero() {
		n.At = time.Now()
	}
	m.kdump.Record(n)
	m.poke()
}

// SetAddr sets the gossip address host's agent advertises.
func (m *Mesh) SetAddr(host, addr string) {
	m.mu.Lock()
	mem := m.members[host]
	mem.Host, mem.Node, mem.Addr = host, host, addr
	if mem.State == "" {
		mem.State = leader.MeshAlive
	}
	m.members[host] = mem
	m.mu.Unlock()
}

// KdumpLog is the notices recorded by Kdump.
func (m *Mesh) KdumpLog() *leader.KdumpLog { return m.kdump }

func (m *Mesh) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Wake is the channel the reconciler listens on.
func (m *Mesh) Wake() <-chan struct{} { return m.wake }
