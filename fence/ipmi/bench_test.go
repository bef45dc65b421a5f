package ipmi

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/ipmi/internal/simbmc"
)

func benchFencer(b *testing.B, bmc *simbmc.BMC, name string) *Fencer {
	b.Helper()
	h := bmc.FenceHost(name)
	h.Timeout = simbmc.Scale(30 * time.Second)
	f, err := NewWithOptions(h, fence.Settings{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkPowerOffOneHost: from PowerOff to the BMC's confirmation of
// off, one host on ipmi_sim (session setup, status, power down, status,
// close session).
func BenchmarkPowerOffOneHost(b *testing.B) {
	bmc := simbmc.Start(b, simbmc.Options{})
	f := benchFencer(b, bmc, "compute-bench")
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		bmc.PowerOnHost(b)
		b.StartTimer()
		start := time.Now()
		if err := f.PowerOff(context.Background()); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		if bmc.HostAlive() {
			b.Fatal("host alive after PowerOff")
		}
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/fence")
}

// BenchmarkPowerOffFiftyHostsConcurrently fences fifty hosts, each behind
// its own ipmi_sim, at once: the figure is the time until the last BMC
// confirmed off, with the median and slowest single fence.
func BenchmarkPowerOffFiftyHostsConcurrently(b *testing.B) {
	const n = 50
	bmcs := simbmc.StartN(b, n, simbmc.Options{})
	fencers := make([]*Fencer, n)
	for i, bmc := range bmcs {
		fencers[i] = benchFencer(b, bmc, fmt.Sprintf("compute-%02d", i))
	}
	var all []time.Duration
	var wall time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var wg sync.WaitGroup
		for _, bmc := range bmcs {
			wg.Add(1)
			go func() { defer wg.Done(); bmc.PowerOnHost(b) }()
		}
		wg.Wait()
		b.StartTimer()
		start := time.Now()
		took := make([]time.Duration, n)
		errs := make([]error, n)
		for j, f := range fencers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := time.Now()
				errs[j] = f.PowerOff(context.Background())
				took[j] = time.Since(s)
			}()
		}
		wg.Wait()
		wall += time.Since(start)
		for j, err := range errs {
			if err != nil {
				b.Fatalf("host %d: %v", j, err)
			}
			if bmcs[j].HostAlive() {
				b.Fatalf("host %d alive after PowerOff", j)
			}
		}
		all = append(all, took...)
	}
	slices.Sort(all)
	b.ReportMetric(float64(wall.Microseconds())/1000/float64(b.N), "ms/50-hosts")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms/host")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "max-ms/host")
}
