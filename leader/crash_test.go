package leader_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
	"github.com/ihaproject/iha/pkg/novasim"
)

var errDead = errors.New("process killed")

// killSwitch models kill -9 of the leader process: after `limit` committed
// entries nothing more is committed, and, depending on the mode, the side
// effect that follows the last entry is either never made (effectsDie) or
// made with its result lost.
type killSwitch struct {
	mu         sync.Mutex
	applies    int
	limit      int // 0: never
	effectsDie bool
	dead       bool
}

func (k *killSwitch) beforeApply() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return errDead
	}
	if k.limit > 0 && k.applies >= k.limit {
		k.dead = true
		return errDead
	}
	return nil
}

func (k *killSwitch) afterApply() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.applies++
	if k.limit > 0 && k.applies >= k.limit && k.effectsDie {
		k.dead = true
	}
}

func (k *killSwitch) effect() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return errDead
	}
	return nil
}

func (k *killSwitch) isDead() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.dead
}

type killStore struct {
	leader.Store
	k *killSwitch
}

func (s killStore) Apply(ctx context.Context, t leader.CommandType, at time.Time, body any) (any, error) {
	if err := s.k.beforeApply(); err != nil {
		return nil, err
	}
	r, err := s.Store.Apply(ctx, t, at, body)
	if err == nil {
		s.k.afterApply()
	}
	return r, err
}

// killNova stops side effects on Nova once the process is dead, and checks
// that no evacuate is ever sent for a host whose BMC is not off.
type killNova struct {
	leader.Nova
	k        *killSwitch
	sb       *sandbox.Sandbox
	violated *[]string
	mu       *sync.Mutex
}

func (n killNova) UpdateService(ctx context.Context, id string, u nova.ServiceUpdate) (nova.Service, error) {
	if err := n.k.effect(); err != nil {
		return nova.Service{}, err
	}
	return n.Nova.UpdateService(ctx, id, u)
}

func (n killNova) Evacuate(ctx context.Context, id, target string) error {
	if err := n.k.effect(); err != nil {
		return err
	}
	if srv, ok := n.sb.Sim.Server(id); ok {
		if st, _ := n.sb.BMC(srv.Host).PowerState(ctx); st != fence.PowerOff {
			n.mu.Lock()
			*n.violated = append(*n.violated, fmt.Sprintf("evacuate %s from %s while its power is %s", id, srv.Host, st))
			n.mu.Unlock()
		}
	}
	return n.Nova.Evacuate(ctx, id, target)
}

func (n killNova) Lock(ctx context.Context, id, reason string) error {
	if err := n.k.effect(); err != nil {
		return err
	}
	return n.Nova.Lock(ctx, id, reason)
}

func (n killNova) ResetState(ctx context.Context, id, state string) error {
	if err := n.k.effect(); err != nil {
		return err
	}
	return n.Nova.ResetState(ctx, id, state)
}

type killFencer struct {
	fence.Fencer
	k *killSwitch
}

func (f killFencer) PowerOff(ctx context.Context) error {
	if err := f.k.effect(); err != nil {
		return err
	}
	return f.Fencer.PowerOff(ctx)
}

func (f killFencer) PowerOn(ctx context.Context) error {
	if err := f.k.effect(); err != nil {
		return err
	}
	return f.Fencer.PowerOn(ctx)
}

type crashRun struct {
	w        *world
	k        *killSwitch
	violated []string
	mu       sync.Mutex
}

func newCrashRun(t *testing.T, s config.Settings, limit int, effectsDie bool) *crashRun {
	cr := &crashRun{k: &killSwitch{limit: limit, effectsDie: effectsDie}}
	cr.w = newWorld(t, s, func(o *sandbox.Options) {
		o.Logger = nil // quiet: dozens of runs
		o.Sim.ReportInterval = 500 * time.Millisecond
		o.WrapStore = func(st leader.Store) leader.Store { return killStore{Store: st, k: cr.k} }
		o.WrapNova = func(nv leader.Nova) leader.Nova {
			return killNova{Nova: nv, k: cr.k, sb: cr.w.Sandbox, violated: &cr.violated, mu: &cr.mu}
		}
		o.WrapFence = func(l fence.Lookup) fence.Lookup {
			return fence.LookupFunc(func(h string) (fence.Fencer, error) {
				f, err := l.Fencer(h)
				if err != nil {
					return nil, err
				}
				return killFencer{Fencer: f, k: cr.k}, nil
			})
		}
	})
	return cr
}

// run fails c1, waits for the recovery to finish (restarting the leader
// once if the kill switch fired) and returns the number of entries
// committed before the kill.
func (cr *crashRun) run(t *testing.T) int {
	w := cr.w
	w.start()
	w.Hang("c1")
	deadline := time.Now().Add(scale(60 * time.Second))
	restarted := false
	for w.phase("c1") != leader.PhaseDone {
		if time.Now().After(deadline) {
			t.Fatalf("recovery did not finish; phase %q, killed %v", w.phase("c1"), cr.k.isDead())
		}
		if cr.k.isDead() && !restarted {
			restarted = true
			w.StopLeader()
			cr.k.mu.Lock()
			cr.k.limit, cr.k.dead = 0, false
			cr.k.mu.Unlock()
			w.start()
		}
		time.Sleep(20 * time.Millisecond)
	}
	cr.k.mu.Lock()
	defer cr.k.mu.Unlock()
	return cr.k.applies
}

func (cr *crashRun) check(t *testing.T) {
	t.Helper()
	w := cr.w
	off, reqs, _ := w.BMC("c1").Counts()
	if off != 1 || reqs != 1 {
		t.Errorf("c1: %d power-offs that turned it off, %d power-off calls; want exactly 1 and 1", off, reqs)
	}
	for _, name := range []string{"vm1", "vm2", "vm3", "off"} {
		if n := w.Sim.ServerCalls(w.servers[name], novasim.RouteEvacuate); n != 1 {
			t.Errorf("%s evacuated %d times, want exactly 1", name, n)
		}
		if srv, _ := w.Sim.Server(w.servers[name]); srv.Host == "c1" {
			t.Errorf("%s still on c1", name)
		}
	}
	if n := w.Sim.ServerCalls(w.servers["untagged"], novasim.RouteEvacuate); n != 0 {
		t.Errorf("untagged server evacuated %d times", n)
	}
	cr.mu.Lock()
	defer cr.mu.Unlock()
	for _, v := range cr.violated {
		t.Error(v)
	}
}

// TestCrashBetweenEverySteps kills the leader after each committed entry
// of a whole recovery (fence, disable, plan, each evacuation, power on,
// complete, unforce, enable), in both ways a process can die around a side
// effect, restarts it on the same Raft data, and checks that the host was
// fenced once and every server evacuated once, never before the fence.
func TestCrashBetweenEverySteps(t *testing.T) {
	for _, mode := range []string{"traditional", "smart"} {
		t.Run(mode, func(t *testing.T) {
			s := fastSettings()
			s.SmartEvacuation = mode == "smart"
			clean := newCrashRun(t, s, 0, false)
			total := clean.run(t)
			clean.check(t)
			if total < 10 {
				t.Fatalf("a recovery committed only %d entries", total)
			}
			t.Logf("%s: a clean recovery commits %d entries; killing after each", mode, total)
			for n := 1; n < total; n++ {
				for _, effectsDie := range []bool{true, false} {
					name := fmt.Sprintf("after-entry-%02d/effect-%s", n, map[bool]string{true: "never-made", false: "made-result-lost"}[effectsDie])
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						cr := newCrashRun(t, s, n, effectsDie)
						cr.run(t)
						cr.check(t)
					})
				}
			}
		})
	}
}
