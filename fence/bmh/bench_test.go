package bmh_test

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/bmh"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// BenchmarkFence measures the time from PowerOff to confirmed off against
// the real kube-apiserver, for one host and for fifty hosts fenced at once,
// with an operator that writes status.poweredOn 500 ms after it sees the
// request (the operator's own BMC work is not ours to measure). Reported:
// the wall time of one round and the overhead above the operator's delay.
func BenchmarkFence(b *testing.B) {
	c := cluster(b)
	tn := tenant(b, c)
	const delay = 500 * time.Millisecond
	op := c.StartOperator(tn.Namespace, delay)
	b.Cleanup(op.Stop)
	for _, n := range []int{1, 50} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			ctx := context.Background()
			fencers := make([]*bmh.Fencer, n)
			names := make([]string, n)
			for i := range fencers {
				names[i] = fmt.Sprintf("bench-%d-%d", n, hostSeq.Add(1))
				if err := c.CreateBMH(ctx, tn.Namespace, names[i], true); err != nil {
					b.Fatal(err)
				}
				h := config.FenceHost{Name: names[i], Agent: "bmh", Host: names[i], Namespace: tn.Namespace,
					Token: secret.New(tn.Token), APIURL: c.URL, CAFile: c.CAFile, Timeout: time.Minute}
				f, err := bmh.NewWithOptions(h, fence.Settings{}, slog.New(slog.DiscardHandler), bmh.Options{})
				if err != nil {
					b.Fatal(err)
				}
				fencers[i] = f
			}
			var rounds []time.Duration
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				for _, name := range names {
					if err := c.SetPower(ctx, tn.Namespace, name, true); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				start := time.Now()
				errs := make(chan error, n)
				for _, f := range fencers {
					go func() { errs <- f.PowerOff(ctx) }()
				}
				for range fencers {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				rounds = append(rounds, time.Since(start))
			}
			sort.Slice(rounds, func(i, j int) bool { return rounds[i] < rounds[j] })
			med := rounds[len(rounds)/2]
			b.ReportMetric(float64(med.Milliseconds()), "ms/round-median")
			b.ReportMetric(float64((med - delay).Milliseconds()), "ms-over-operator-delay")
		})
	}
}
