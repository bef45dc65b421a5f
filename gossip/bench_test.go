package gossip

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/gossip/memnet"
)

// Run with: go test -run XXX -bench . -benchtime 1x -timeout 60m ./gossip/
// Each benchmark runs a fixed number of trials whatever b.N is: the figures
// are latencies of real failure detection, not throughput.

// benchCluster is a mesh that can replace killed members to keep its size.
type benchCluster struct {
	b      testing.TB
	net    *memnet.Network
	udp    bool
	prof   Profile
	meshes map[string]*Mesh
	recs   map[string]*recorder
	next   int
	obs    *recorder
	ctl    *Mesh
}

func newBenchCluster(b testing.TB, n int, p Profile, udp bool) *benchCluster {
	c := &benchCluster{b: b, net: memnet.New(), udp: udp, prof: p, meshes: map[string]*Mesh{}, recs: map[string]*recorder{}}
	c.ctl = c.add(RoleController, nil)
	c.obs = c.recs[c.ctl.Name()]
	b.Cleanup(func() {
		for _, m := range c.meshes {
			m.Shutdown()
		}
	})
	addrs := []string{c.ctl.Addr()}
	for i := 1; i < n; i++ {
		// Join a random earlier member: all joining one seed at once is what
		// made 1000 members fail to converge in the reference measurement.
		m := c.add(RoleCompute, []string{addrs[rand.N(len(addrs))]})
		addrs = append(addrs, m.Addr())
		if i%50 == 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	c.waitConverged(n, 10*time.Minute)
	return c
}

func (c *benchCluster) add(role Role, join []string) *Mesh {
	name := fmt.Sprintf("n%04d", c.next)
	c.next++
	cfg := Config{NodeName: name, Join: join, Profile: c.prof, Meta: Meta{Role: role, NovaHost: name},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))}
	if c.udp {
		cfg.BindAddr = "127.0.0.1"
	} else {
		cfg.Transport = c.net.NewTransport(name)
	}
	m, err := New(cfg)
	if err != nil {
		c.b.Fatal(err)
	}
	go func() { _ = m.Run(context.Background()) }()
	// Read every member's events, as the agent does: an unread queue grows
	// with each member's view of the churn.
	c.recs[name] = record(m)
	c.meshes[name] = m
	return m
}

func (c *benchCluster) aliveAtController() int {
	n := 0
	for _, mem := range c.ctl.Members() {
		if mem.State == StateAlive {
			n++
		}
	}
	return n
}

func (c *benchCluster) waitConverged(n int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for c.aliveAtController() < n {
		if time.Now().After(deadline) {
			c.b.Fatalf("mesh of %d did not converge in %v: the controller sees %d alive", n, limit, c.aliveAtController())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
}

// killOne crashes a random compute, returns how long until the controller
// declared it dead, and adds a fresh member so the size stays the same.
func (c *benchCluster) killOne(n int) time.Duration {
	var names []string
	for name, m := range c.meshes {
		if m != c.ctl {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	victim := names[rand.N(len(names))]
	m := c.meshes[victim]
	delete(c.meshes, victim)
	killed := time.Now()
	m.Shutdown()
	limit := 3 * c.prof.WorstDetection(n)
	for {
		if e, ok := c.obs.find(KindDead, victim); ok {
			c.add(RoleCompute, []string{c.ctl.Addr()})
			c.waitConverged(n, 2*time.Minute)
			return e.At.Sub(killed)
		}
		if time.Since(killed) > limit {
			c.b.Fatalf("%s not declared dead within %v", victim, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1)*p + 0.5)
	return s[i]
}

func BenchmarkDetection(b *testing.B) {
	for _, tc := range []struct {
		n      int
		prof   string
		udp    bool
		trials int
	}{
		{10, "default", false, 8}, {10, "fast", false, 8},
		{100, "default", false, 5}, {100, "fast", false, 5},
		{100, "default", true, 4}, {100, "fast", true, 4},
		{1000, "default", false, 3}, {1000, "fast", false, 3},
	} {
		transport := "memnet"
		if tc.udp {
			transport = "udp"
		}
		b.Run(fmt.Sprintf("n=%d/%s/%s", tc.n, tc.prof, transport), func(b *testing.B) {
			if sel := os.Getenv("IHA_BENCH_MAX_N"); sel != "" {
				if max, _ := strconv.Atoi(sel); tc.n > max {
					b.Skipf("IHA_BENCH_MAX_N=%d", max)
				}
			}
			p := DefaultProfile()
			if tc.prof == "fast" {
				p = FastProfile()
			}
			var ru0 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			start := time.Now()
			c := newBenchCluster(b, tc.n, p, tc.udp)
			b.Logf("converged %d members in %v", tc.n, time.Since(start).Round(time.Millisecond))
			var lat []time.Duration
			for i := 0; i < tc.trials; i++ {
				lat = append(lat, c.killOne(tc.n))
			}
			b.ReportMetric(percentile(lat, 0.5).Seconds(), "p50_s")
			b.ReportMetric(percentile(lat, 0.99).Seconds(), "p99_s")
			b.ReportMetric(p.ExpectedDetection(tc.n).Seconds(), "formula_s")
			b.ReportMetric(float64(len(lat)), "trials")
			b.Logf("kill → dead at the controller, %d trials: %v (formula %v)", len(lat), lat, p.ExpectedDetection(tc.n))
			if tc.n >= 1000 {
				reportProcess(b, ru0, start, tc.n)
			}
		})
	}
}

// reportProcess reports the whole process's CPU and memory divided by the
// members it runs.
func reportProcess(b *testing.B, ru0 syscall.Rusage, start time.Time, n int) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano()+ru.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	wall := time.Since(start)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(cpu.Seconds()/wall.Seconds()/float64(n)*1000, "mcores/member")
	b.ReportMetric(float64(ms.HeapInuse)/float64(n)/1024, "heapKiB/member")
	b.ReportMetric(float64(ru.Maxrss)/1024, "maxRSS_MiB_process")
}

func BenchmarkFalseDeadUnderLoss(b *testing.B) {
	for _, loss := range []float64{0.10, 0.20} {
		for _, prof := range []string{"default", "fast"} {
			b.Run(fmt.Sprintf("loss=%.0f%%/%s", loss*100, prof), func(b *testing.B) {
				p := DefaultProfile()
				if prof == "fast" {
					p = FastProfile()
				}
				const n = 20
				c := newBenchCluster(b, n, p, false)
				var recs []*recorder
				for _, r := range c.recs {
					recs = append(recs, r)
				}
				base := 0
				for _, r := range recs {
					base += r.count(KindDead)
				}
				c.net.SetLoss(loss)
				window := 45 * time.Second
				time.Sleep(window)
				dead, suspect := -base, 0
				for _, r := range recs {
					dead += r.count(KindDead)
					suspect += r.count(KindSuspect)
				}
				sent, dropped := c.net.Stats()
				b.ReportMetric(float64(dead), "false_dead_events")
				b.ReportMetric(float64(c.obs.count(KindDead)), "false_dead_at_controller")
				b.ReportMetric(float64(suspect), "suspect_events")
				b.ReportMetric(100*float64(dropped)/float64(sent), "loss_%")
				b.Logf("%d members, %v window, %.0f%% loss: %d dead events across all members, %d suspect events", n, window, loss*100, dead, suspect)
			})
		}
	}
}
