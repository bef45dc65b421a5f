package gossip

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/gossip/memnet"
	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/internal/testlog"
)

// scale stretches deadlines on a slow or busy machine (testkit.ScaleEnv,
// default 2).
var scale = testkit.Scaler(2)

// testLogger logs to t until the test ends (memberlist's goroutines may
// still log after Shutdown returns).
func testLogger(t testing.TB, level slog.Level) *slog.Logger { return testlog.New(t, level) }

// recorder keeps every event of one mesh.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func record(m *Mesh) *recorder {
	r := &recorder{}
	go func() {
		for e := range m.Events() {
			r.mu.Lock()
			r.events = append(r.events, e)
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *recorder) find(kind Kind, node string) (Event, bool) {
	return r.findFunc(func(e Event) bool { return e.Kind == kind && e.Node == node })
}

func (r *recorder) findFunc(match func(Event) bool) (Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if match(e) {
			return e, true
		}
	}
	return Event{}, false
}

func (r *recorder) count(kind Kind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

type cluster struct {
	net    *memnet.Network
	meshes []*Mesh
	cancel []context.CancelFunc
	runErr []chan error
}

// startCluster starts n members on an in-memory network, node-0 a
// controller and the seed, the others computes joining it, and waits until
// every member sees all n alive.
func startCluster(t testing.TB, n int, p Profile, level slog.Level) *cluster {
	t.Helper()
	c := &cluster{net: memnet.New()}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("node-%d", i)
		meta := Meta{Role: RoleCompute, NovaHost: fmt.Sprintf("compute-%d", i), IHAVersion: "test"}
		var join []string
		if i == 0 {
			meta = Meta{Role: RoleController, NovaHost: "controller-0", IHAVersion: "test", APIAddr: "127.0.0.1:7421"}
		} else {
			join = []string{c.meshes[0].Addr()}
		}
		m, err := New(Config{NodeName: name, Join: join, Profile: p, Meta: meta,
			Transport: c.net.NewTransport(name), Logger: testLogger(t, level), RejoinInterval: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- m.Run(ctx) }()
		c.meshes = append(c.meshes, m)
		c.cancel = append(c.cancel, cancel)
		c.runErr = append(c.runErr, errc)
	}
	t.Cleanup(func() {
		for i, m := range c.meshes {
			c.cancel[i]()
			m.Shutdown()
		}
	})
	testkit.WaitFor(t, scale(time.Duration(n)*200*time.Millisecond+10*time.Second), "all members alive everywhere", func() bool {
		for _, m := range c.meshes {
			alive := 0
			for _, mem := range m.Members() {
				if mem.State == StateAlive {
					alive++
				}
			}
			if alive != n {
				return false
			}
		}
		return true
	})
	return c
}
