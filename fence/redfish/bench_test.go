package redfish_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/redfish"
	"github.com/ihaproject/iha/fence/redfish/redfishsim"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// benchFleet starts n simulated BMCs with a 1 s power transition (the
// emulator takes 1–11 s) and one fencer for each.
func benchFleet(b *testing.B, n int, poll time.Duration) ([]*redfishsim.Server, []*redfish.Fencer) {
	b.Helper()
	sims := make([]*redfishsim.Server, n)
	fencers := make([]*redfish.Fencer, n)
	for i := range sims {
		s, err := redfishsim.Start(redfishsim.Options{Username: "root", Password: canary, TransitionDelay: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(s.Close)
		h := config.FenceHost{Name: fmt.Sprintf("compute-%d", i), Agent: "redfish", IPAddr: s.Host(), IPPort: s.Port(),
			Login: "root", Passwd: secret.New(canary), UUID: config.DefaultRedfishUUID}
		f, err := redfish.NewWithOptions(h, fence.Settings{}, nil, redfish.Options{PollInterval: poll})
		if err != nil {
			b.Fatal(err)
		}
		sims[i], fencers[i] = s, f
	}
	return sims, fencers
}

// fenceAll powers every host on, then fences all of them at once and
// returns each host's time from call to confirmed off.
func fenceAll(b *testing.B, sims []*redfishsim.Server, fencers []*redfish.Fencer) []time.Duration {
	for _, s := range sims {
		s.SetPowerState("", fence.PowerOn)
	}
	took := make([]time.Duration, len(fencers))
	var wg sync.WaitGroup
	for i, f := range fencers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			if err := f.PowerOff(ctx); err != nil {
				b.Error(err)
			}
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	return took
}

// BenchmarkFence fences 1 and 50 hosts concurrently, each behind its own
// simulated BMC whose power transition takes 1 s, with the default 1 s
// poll (InstanceHA's) and a 100 ms poll. Figures: wall time of the batch,
// median and worst time to confirmed off per host, and the overhead above
// the 1 s the BMC itself needs.
func BenchmarkFence(b *testing.B) {
	for _, n := range []int{1, 50} {
		for _, poll := range []time.Duration{time.Second, 100 * time.Millisecond} {
			b.Run(fmt.Sprintf("hosts=%d/poll=%v", n, poll), func(b *testing.B) {
				sims, fencers := benchFleet(b, n, poll)
				var all []time.Duration
				var wall time.Duration
				requests := 0
				before := 0
				for _, s := range sims {
					before += s.Requests()
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					start := time.Now()
					all = append(all, fenceAll(b, sims, fencers)...)
					wall += time.Since(start)
				}
				b.StopTimer()
				for _, s := range sims {
					requests += s.Requests()
				}
				sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
				med, worst := all[len(all)/2], all[len(all)-1]
				b.ReportMetric(float64(wall.Milliseconds())/float64(b.N), "ms/batch")
				b.ReportMetric(float64(med.Milliseconds()), "ms-median/host")
				b.ReportMetric(float64(worst.Milliseconds()), "ms-max/host")
				b.ReportMetric(float64(med.Milliseconds()-1000), "ms-overhead-median")
				b.ReportMetric(float64(requests-before)/float64(len(all)), "requests/fence")
			})
		}
	}
}
