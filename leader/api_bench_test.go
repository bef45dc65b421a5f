package leader_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/metrics"
)

// benchAPI is a single-voter leader holding n finished recoveries, each
// with a fence step, behind the status API's handler.
func benchAPI(b *testing.B, n int) (*api.Server, *metrics.Metrics) {
	b.Helper()
	s := config.Defaults()
	s.Poll, s.Disabled, s.NodeName = time.Hour, true, "bench"
	sb, err := sandbox.New(sandbox.Options{Settings: s, DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sb.Close)
	if err := sb.StartLeader(context.Background()); err != nil {
		b.Fatal(err)
	}
	node := sb.Node()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		h := fmt.Sprintf("compute-%04d", i)
		at := t0.Add(time.Duration(i) * time.Second)
		must := func(r any, err error) any {
			if err != nil {
				b.Fatal(err)
			}
			return r
		}
		must(node.Apply(ctx, leader.CmdDetect, at, leader.DetectCmd{Host: h, Level: 2, Evidence: leader.Evidence{NovaState: "down", NovaUpdatedAt: at.Add(-8 * time.Second), Source: "nova"}}))
		op := must(node.Apply(ctx, leader.CmdStepBegin, at, leader.StepBeginCmd{Host: h, Step: leader.StepFence})).(leader.OpID)
		must(node.Apply(ctx, leader.CmdStepEnd, at.Add(time.Second), leader.StepEndCmd{Host: h, Step: leader.StepFence, OpID: op, OK: true, Fence: &leader.FenceResult{Method: "ipmi", State: "off"}}))
		must(node.Apply(ctx, leader.CmdPhase, at.Add(2*time.Second), leader.PhaseCmd{Host: h, Phase: leader.PhaseDone}))
	}
	a := leader.NewAPI(leader.APIConfig{Node: node, Monitor: sb.Monitor(), Settings: s, Version: "bench"})
	b.Cleanup(a.Close)
	m := metrics.New(a.MetricsSource(), "bench")
	return api.NewServer(api.Config{Backend: a, Metrics: m.Handler()}), m
}

// BenchmarkAPIWith1000Records measures the reads an operator and
// Prometheus make against a leader holding 1,000 recovery records.
func BenchmarkAPIWith1000Records(b *testing.B) {
	srv, _ := benchAPI(b, 1000)
	for _, path := range []string{"/v1/hosts", "/v1/hosts/compute-0500", "/v1/events?limit=100", "/v1/cluster", "/metrics"} {
		b.Run(path, func(b *testing.B) {
			var size int
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				srv.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
				if rec.Code != 200 {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size)/1024, "KiB/answer")
		})
	}
}
