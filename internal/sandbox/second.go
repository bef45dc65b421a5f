package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// Second is a second, independent IHA leader (a quorum of one) on the same
// simulated cloud as the sandbox's own: the shadow beside an acting
// quorum. Its Nova client and its BMC access count every call that would
// change something, so a test can assert that it changed nothing.
type Second struct {
	Node  *leader.Node
	Mon   *leader.Monitor
	Nova  *Counting
	Fence *CountingFence

	cancel context.CancelFunc
	done   chan struct{}
}

// SecondOptions configure a second leader.
type SecondOptions struct {
	Settings config.Settings
	DataDir  string
	Logger   *slog.Logger
	// Observer receives the reconciler's listings (a recorder, an API).
	Observer leader.Observer
	// Recorder, when set, writes the second leader's decision log.
	Recorder *leader.Recorder
}

// StartSecond starts a second leader against the sandbox's Nova and BMCs
// and returns once it leads.
func (s *Sandbox) StartSecond(ctx context.Context, o SecondOptions) (*Second, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress("second-" + o.Settings.NodeName))
	node, err := leader.OpenNode(leader.NodeConfig{ID: o.Settings.NodeName, DataDir: o.DataDir, Transport: trans,
		Timing: s.opts.Timing, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	sec := &Second{Node: node, Nova: &Counting{Nova: s.Nova}, Fence: &CountingFence{lookup: s.Fencers()}}
	var nv leader.Nova = sec.Nova
	var store leader.Store = node
	obs := o.Observer
	if rec := o.Recorder; rec != nil {
		nv, store = rec.Nova(nv), rec.Store(store)
		if obs == nil {
			obs = rec.Observer()
		} else {
			obs = leader.Observers(obs, rec.Observer())
		}
	}
	mk := func() *leader.Reconciler {
		if o.Recorder != nil {
			o.Recorder.Term(o.Settings, time.Now())
		}
		return leader.NewReconciler(leader.ReconcilerConfig{Settings: o.Settings, Nova: nv, Fencers: sec.Fence, Store: store,
			Logger: o.Logger, TrackInterval: s.opts.TrackInterval, InitialTrackDelay: s.opts.TrackInterval,
			RetryBackoff: 50 * time.Millisecond, Observer: obs})
	}
	sec.Mon = leader.NewMonitor(node, mk, o.Logger)
	lctx, cancel := context.WithCancel(ctx)
	sec.cancel, sec.done = cancel, make(chan struct{})
	go func() {
		defer close(sec.done)
		_ = sec.Mon.Run(lctx)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !node.IsLeader() {
		if time.Now().After(deadline) {
			sec.Stop()
			return nil, fmt.Errorf("sandbox: the second leader did not become leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return sec, nil
}

// Stop stops the second leader.
func (s *Second) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	_ = s.Node.Shutdown()
	s.cancel = nil
}

// Counting is a leader.Nova that counts the calls that change something
// (and passes everything on).
type Counting struct {
	leader.Nova
	mu     sync.Mutex
	writes map[string]int
}

func (c *Counting) count(m string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writes == nil {
		c.writes = map[string]int{}
	}
	c.writes[m]++
}

// Writes returns the calls that change something, by method.
func (c *Counting) Writes() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.writes))
	for k, v := range c.writes {
		out[k] = v
	}
	return out
}

// UpdateService implements leader.Nova.
func (c *Counting) UpdateService(ctx context.Context, id string, u nova.ServiceUpdate) (nova.Service, error) {
	c.count("UpdateService")
	return c.Nova.UpdateService(ctx, id, u)
}

// Evacuate implements leader.Nova.
func (c *Counting) Evacuate(ctx context.Context, id, target string) error {
	c.count("Evacuate")
	return c.Nova.Evacuate(ctx, id, target)
}

// Lock implements leader.Nova.
func (c *Counting) Lock(ctx context.Context, id, reason string) error {
	c.count("Lock")
	return c.Nova.Lock(ctx, id, reason)
}

// Unlock implements leader.Nova.
func (c *Counting) Unlock(ctx context.Context, id string) error {
	c.count("Unlock")
	return c.Nova.Unlock(ctx, id)
}

// ResetState implements leader.Nova.
func (c *Counting) ResetState(ctx context.Context, id, state string) error {
	c.count("ResetState")
	return c.Nova.ResetState(ctx, id, state)
}

// Stop implements leader.Nova.
func (c *Counting) Stop(ctx context.Context, id string) error {
	c.count("Stop")
	return c.Nova.Stop(ctx, id)
}

// AddHostToAggregate is the optional write the leader looks for
// (ADD_RESERVED_HOST_TO_AGGREGATE).
func (c *Counting) AddHostToAggregate(ctx context.Context, aggregateID int, host string) error {
	c.count("AddHostToAggregate")
	if a, ok := c.Nova.(interface {
		AddHostToAggregate(context.Context, int, string) error
	}); ok {
		return a.AddHostToAggregate(ctx, aggregateID, host)
	}
	return fmt.Errorf("sandbox: this Nova cannot add hosts to aggregates")
}

// CountingFence is a fence.Lookup whose fencers count power changes and
// power-state reads.
type CountingFence struct {
	lookup fence.Lookup
	mu     sync.Mutex
	calls  map[string]int
}

// Fencer implements fence.Lookup.
func (c *CountingFence) Fencer(host string) (fence.Fencer, error) {
	f, err := c.lookup.Fencer(host)
	if err != nil {
		return nil, err
	}
	return &countingFencer{Fencer: f, host: host, c: c}, nil
}

func (c *CountingFence) count(op, host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[op+" "+host]++
}

// PowerChanges lists the power-off and power-on calls ("power off c1"),
// sorted, one entry per call.
func (c *CountingFence) PowerChanges() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k, n := range c.calls {
		if strings.HasPrefix(k, fence.OpPowerState) {
			continue
		}
		for i := 0; i < n; i++ {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

type countingFencer struct {
	fence.Fencer
	host string
	c    *CountingFence
}

func (f *countingFencer) PowerOff(ctx context.Context) error {
	f.c.count(fence.OpPowerOff, f.host)
	return f.Fencer.PowerOff(ctx)
}

func (f *countingFencer) PowerOn(ctx context.Context) error {
	f.c.count(fence.OpPowerOn, f.host)
	return f.Fencer.PowerOn(ctx)
}

func (f *countingFencer) PowerState(ctx context.Context) (fence.PowerState, error) {
	f.c.count(fence.OpPowerState, f.host)
	return f.Fencer.PowerState(ctx)
}
