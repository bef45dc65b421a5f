// Package sandbox runs IHA's leader in one process against novasim and
// simulated BMCs: the environment of the scenario tests, the benchmarks and
// dev mode. It owns nothing that production uses; production never imports
// it.
package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
	"github.com/ihaproject/iha/pkg/novasim"
)

// Options configure a Sandbox.
type Options struct {
	Sim      novasim.Options
	Settings config.Settings
	DataDir  string // Raft state; required
	Logger   *slog.Logger
	// Timing scales raft's timeouts (default 0.2: fast single-node elections).
	Timing float64
	// TrackInterval and InitialTrackDelay for smart evacuation (default 100 ms).
	TrackInterval time.Duration
	// WrapStore and WrapNova let tests put a kill switch or counters between
	// the reconciler and the world.
	WrapStore func(leader.Store) leader.Store
	WrapNova  func(leader.Nova) leader.Nova
	WrapFence func(fence.Lookup) fence.Lookup
	// BootDelay is how long a powered-on host takes to boot before its
	// nova-compute gate runs (default 0).
	BootDelay time.Duration
	// OnBoot, when set, is called when a powered-on host has booted, before
	// its nova-compute gate runs (dev mode starts the host's agent there).
	OnBoot func(host string)
	// NoGate models hosts without iha-agent's gate: a powered-on host's
	// nova-compute starts right after BootDelay, whatever the recovery.
	NoGate bool
	// Mesh, when set, is the gossip view the leader judges with, and its
	// kdump notices the leader's: a scripted *Mesh, or a real mesh.
	Mesh MeshSource
	// KdumpQuiet shortens R11.5's 60 s (how long a dumping host must be
	// silent before it is re-enabled).
	KdumpQuiet time.Duration
	// Kdump and Wake, without a Mesh, are the notices of a kdump listener
	// of the leader's own (CHECK_KDUMP with GOSSIP_BIND off) and its
	// wake-ups.
	Kdump *leader.KdumpLog
	Wake  <-chan struct{}
	// Resolver is the leader's reverse DNS for kdump source addresses
	// (default: the system's).
	Resolver leader.AddrResolver
	// Heartbeats are InstanceHA's compute heartbeats the leader received
	// (CHECK_HEARTBEAT).
	Heartbeats *leader.HeartbeatLog
	// Recorder, when set, writes the leader's decision log.
	Recorder *leader.Recorder
}

// Sandbox is novasim, one simulated BMC per compute, and a single-voter
// Raft leader whose state survives StopLeader/StartLeader.
type Sandbox struct {
	Sim  *novasim.Sim
	Nova *nova.Client
	opts Options

	mu   sync.Mutex
	bmcs map[string]*BMC

	obs observerProxy

	node   *leader.Node
	mon    *leader.Monitor
	cancel context.CancelFunc
	done   chan struct{}
}

// New starts novasim. Add computes with AddCompute, then StartLeader.
func New(opts Options) (*Sandbox, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timing == 0 {
		opts.Timing = 0.2
	}
	if opts.TrackInterval == 0 {
		opts.TrackInterval = 100 * time.Millisecond
	}
	sim, err := novasim.New(opts.Sim)
	if err != nil {
		return nil, err
	}
	cloud := config.Cloud{Name: "sandbox", AuthURL: sim.AuthURL(), RegionName: "regionOne",
		Endpoint: gophercloud.EndpointOpts{Region: "regionOne", Availability: gophercloud.AvailabilityPublic}}
	user, pass, project := opts.Sim.Username, opts.Sim.Password, opts.Sim.Project
	if user == "" {
		user = "admin"
	}
	if pass == "" {
		pass = "secret"
	}
	if project == "" {
		project = "admin"
	}
	cloud = cloud.WithAuthOptions(gophercloud.AuthOptions{IdentityEndpoint: sim.AuthURL(), Username: user, Password: pass,
		TenantName: project, DomainName: "Default", AllowReauth: true})
	timeout := opts.Settings.NovaAPITimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	nc, err := nova.New(cloud, nova.Options{Timeout: timeout, Logger: opts.Logger.With("component", "nova")})
	if err != nil {
		sim.Close()
		return nil, err
	}
	return &Sandbox{Sim: sim, Nova: nc, opts: opts, bmcs: map[string]*BMC{}}, nil
}

// AddCompute adds a heartbeating compute with a powered-on BMC.
func (s *Sandbox) AddCompute(host, zone string) string {
	id := s.Sim.AddCompute(host, zone)
	s.mu.Lock()
	s.bmcs[host] = &BMC{sim: s.Sim, host: host, on: true, boot: s.boot}
	s.mu.Unlock()
	return id
}

// Boot starts a host that was powered on (by a simulated BMC of the
// caller's, in dev mode): see boot.
func (s *Sandbox) Boot(host string) { s.boot(host) }

// boot models a powered-on host: after BootDelay its nova-compute starts,
// held back by the agent's gate until the leader allows it (the
// nova-compute-wait of the Pacemaker design).
func (s *Sandbox) boot(host string) {
	go func() {
		time.Sleep(s.opts.BootDelay)
		if s.opts.OnBoot != nil {
			s.opts.OnBoot(host)
		}
		for !s.opts.NoGate {
			fsm := s.FSM()
			if fsm == nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			if ok, _ := leader.GateAllows(fsm.Host(host)); ok {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		s.Sim.StartCompute(host)
	}()
}

// BMC returns the simulated BMC of host.
func (s *Sandbox) BMC(host string) *BMC {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bmcs[host]
}

// Fencers is the fence.Lookup over the simulated BMCs.
func (s *Sandbox) Fencers() fence.Lookup {
	return fence.LookupFunc(func(host string) (fence.Fencer, error) {
		if b := s.BMC(host); b != nil {
			return b, nil
		}
		return nil, &fence.Error{Host: host, Driver: "sim", Op: fence.OpConfig, Err: fence.ErrNoConfig}
	})
}

// StartLeader opens (or reopens) the Raft node and starts the leadership
// monitor. It returns once the node is the leader.
func (s *Sandbox) StartLeader(ctx context.Context) error {
	_, trans := raft.NewInmemTransport(raft.ServerAddress("sandbox-leader"))
	node, err := leader.OpenNode(leader.NodeConfig{ID: "sandbox", DataDir: s.opts.DataDir, Transport: trans,
		Timing: s.opts.Timing, Logger: s.opts.Logger})
	if err != nil {
		return err
	}
	var store leader.Store = node
	if s.opts.WrapStore != nil {
		store = s.opts.WrapStore(store)
	}
	var nv leader.Nova = s.Nova
	if s.opts.WrapNova != nil {
		nv = s.opts.WrapNova(nv)
	}
	fl := s.Fencers()
	if s.opts.WrapFence != nil {
		fl = s.opts.WrapFence(fl)
	}
	kd, wake := meshKdump(s.opts.Mesh), meshWake(s.opts.Mesh)
	if s.opts.Mesh == nil {
		kd, wake = s.opts.Kdump, s.opts.Wake
	}
	var obs leader.Observer = &s.obs
	mesh := meshView(s.opts.Mesh)
	if rec := s.opts.Recorder; rec != nil {
		store, nv, obs, mesh = rec.Store(store), rec.Nova(nv), leader.Observers(obs, rec.Observer()), rec.Mesh(mesh)
	}
	mk := func() *leader.Reconciler {
		if s.opts.Recorder != nil {
			s.opts.Recorder.Term(s.opts.Settings, time.Now())
		}
		return leader.NewReconciler(leader.ReconcilerConfig{Settings: s.opts.Settings, Nova: nv, Fencers: fl, Store: store,
			Logger: s.opts.Logger, TrackInterval: s.opts.TrackInterval, InitialTrackDelay: s.opts.TrackInterval,
			RetryBackoff: 50 * time.Millisecond, Observer: obs, Mesh: mesh, Wake: wake,
			Kdump: kd, KdumpQuiet: s.opts.KdumpQuiet, Resolver: s.opts.Resolver,
			Heartbeats: s.opts.Heartbeats})
	}
	if m, ok := s.opts.Mesh.(*Mesh); ok {
		m.alive(s.Hosts())
	}
	mon := leader.NewMonitor(node, mk, s.opts.Logger)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = mon.Run(lctx)
	}()
	s.mu.Lock()
	s.node, s.mon, s.cancel, s.done = node, mon, cancel, done
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for !node.IsLeader() {
		if time.Now().After(deadline) {
			s.StopLeader()
			return fmt.Errorf("sandbox: node did not become leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// StopLeader stops the monitor and shuts the node down. With a kill switch
// in WrapStore/WrapNova this models a process that died: nothing it had not
// committed survives.
func (s *Sandbox) StopLeader() {
	s.mu.Lock()
	node, cancel, done := s.node, s.cancel, s.done
	s.node, s.cancel = nil, nil
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	_ = node.Shutdown()
}

// SetObserver makes every reconciler of this sandbox report to o (the
// status API started after the leader, in dev mode).
func (s *Sandbox) SetObserver(o leader.Observer) { s.obs.p.Store(&o) }

// observerProxy forwards to the observer set last, if any.
type observerProxy struct {
	p atomic.Pointer[leader.Observer]
}

func (o *observerProxy) PollCycle(took time.Duration, err error, n int) {
	if p := o.p.Load(); p != nil {
		(*p).PollCycle(took, err, n)
	}
}

func (o *observerProxy) Verdicts(v map[string]leader.Verdict, at time.Time) {
	if p := o.p.Load(); p != nil {
		(*p).Verdicts(v, at)
	}
}

// Judgements forwards to the observer set last when it wants evidence
// (leader.EvidenceObserver).
func (o *observerProxy) Judgements(ev map[string]leader.Evidence, at time.Time) {
	if p := o.p.Load(); p != nil {
		if eo, ok := (*p).(leader.EvidenceObserver); ok {
			eo.Judgements(ev, at)
		}
	}
}

func (o *observerProxy) ComputeServices(svcs []nova.Service, at time.Time) {
	if p := o.p.Load(); p != nil {
		(*p).ComputeServices(svcs, at)
	}
}

// Node is the running Raft node (nil when stopped).
func (s *Sandbox) Node() *leader.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node
}

// Monitor is the running leadership monitor (nil when stopped).
func (s *Sandbox) Monitor() *leader.Monitor {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mon
}

// FSM is the running node's state.
func (s *Sandbox) FSM() *leader.FSM {
	if n := s.Node(); n != nil {
		return n.FSM()
	}
	return nil
}

// Close stops everything.
func (s *Sandbox) Close() {
	s.StopLeader()
	s.Sim.Close()
}

// BMC is a simulated BMC: powering off stops the compute's nova-compute
// heartbeat in novasim (the host is dead), powering on restarts it.
type BMC struct {
	sim  *novasim.Sim
	host string

	boot func(host string) // starts the host after power on

	mu       sync.Mutex
	on       bool
	offCalls int // PowerOff calls that found the host on and turned it off
	offReqs  int // every PowerOff call
	onCalls  int
	// FailOff makes PowerOff fail (a dead BMC).
	failOff error
}

// Driver implements fence.Fencer.
func (b *BMC) Driver() string { return "sim" }

// PowerOff implements fence.Fencer.
func (b *BMC) PowerOff(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.offReqs++
	if b.failOff != nil {
		return &fence.Error{Host: b.host, Driver: "sim", Op: fence.OpPowerOff, Err: b.failOff}
	}
	if b.on {
		b.on = false
		b.offCalls++
		b.sim.StopCompute(b.host)
	}
	return nil
}

// PowerOn implements fence.Fencer.
func (b *BMC) PowerOn(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onCalls++
	if !b.on {
		b.on = true
		b.boot(b.host)
	}
	return nil
}

// PowerState implements fence.Fencer.
func (b *BMC) PowerState(ctx context.Context) (fence.PowerState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failOff != nil {
		return fence.PowerUnknown, &fence.Error{Host: b.host, Driver: "sim", Op: fence.OpPowerState, Err: b.failOff}
	}
	if b.on {
		return fence.PowerOn, nil
	}
	return fence.PowerOff, nil
}

// Counts returns (power-offs that turned the host off, all power-off calls, power-on calls).
func (b *BMC) Counts() (off, offRequests, on int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.offCalls, b.offReqs, b.onCalls
}

// SetFailOff makes the BMC fail (nil heals it).
func (b *BMC) SetFailOff(err error) {
	b.mu.Lock()
	b.failOff = err
	b.mu.Unlock()
}

// Hang stops the host's nova-compute while its power stays on: a kernel
// hang or a cut network, which fencing must resolve.
func (s *Sandbox) Hang(host string) { s.Sim.StopCompute(host) }

// Hosts lists the compute host names with a BMC, sorted.
func (s *Sandbox) Hosts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.bmcs))
	for h := range s.bmcs {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// MeshSource is a mesh the sandbox's leader judges with.
type MeshSource interface {
	leader.MeshView
	Wake() <-chan struct{}
	KdumpLog() *leader.KdumpLog
}

func meshView(m MeshSource) leader.MeshView {
	if m == nil {
		return nil
	}
	return m
}

func meshKdump(m MeshSource) *leader.KdumpLog {
	if m == nil {
		return nil
	}
	return m.KdumpLog()
}

func meshWake(m MeshSource) <-chan struct{} {
	if m == nil {
		return nil
	}
	return m.Wake()
}
