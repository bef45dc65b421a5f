package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/novasim"
	"github.com/ihaproject/iha/pkg/secret"
)

// watchBuf is a concurrency-safe writer that cancels when it has seen want.
type watchBuf struct {
	mu     sync.Mutex
	b      bytes.Buffer
	want   string
	cancel context.CancelFunc
}

func (w *watchBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.b.Write(p)
	if strings.Contains(w.b.String(), w.want) {
		w.cancel()
	}
	return n, err
}

func (w *watchBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestEventsFollowALiveRecovery runs the single-voter sandbox with dev
// mode's settings, serves its status API, fails a compute, and runs
// `iha events -f --host compute-1` until the host is re-enabled. (The
// 3-voter cluster is covered by leader/api_test.go; dev mode itself by
// cmd/iha-leader's API test.)
func TestEventsFollowALiveRecovery(t *testing.T) {
	const canary = "CanaryCliKeystone-6620"
	s := config.Defaults()
	s.NodeName = "cli-test"
	s.Poll = time.Second
	s.Delta = 3 * time.Second
	s.FencingTimeout = 5 * time.Second
	s.EvacuationTimeout = 60 * time.Second
	s.EvacuationGrace = 10 * time.Second
	s.TaggedImages, s.TaggedFlavors, s.TaggedAggregates = false, false, false
	sb, err := sandbox.New(sandbox.Options{Settings: s, DataDir: t.TempDir(), TrackInterval: 200 * time.Millisecond,
		Sim: novasim.Options{ReportInterval: time.Second, ServiceDownTime: 4 * time.Second, NoStartupDelay: true,
			EvacuationDelay: 300 * time.Millisecond, Password: canary}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sb.Close)
	for _, h := range []string{"compute-0", "compute-1", "compute-2"} {
		sb.AddCompute(h, "nova")
	}
	sb.Sim.AddScheduler("ctl")
	sb.Sim.AddServer(novasim.ServerSpec{Name: "web-1", Host: "compute-1"})
	if err := sb.StartLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	backend := leader.NewAPI(leader.APIConfig{Node: sb.Node(), Monitor: sb.Monitor(), Settings: s, Version: "test"})
	t.Cleanup(backend.Close)
	sb.SetObserver(backend) // the reconciler's listings and verdicts reach the API, as in iha-leader
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	_, done, err := api.NewServer(api.Config{Backend: backend, Token: secret.New(cliCanaryRW), EventPoll: 50 * time.Millisecond}).Serve(sctx, ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(); <-done })
	cliEnv(t, ln.Addr().String(), cliCanaryRW)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := &watchBuf{want: "HostReenabled", cancel: cancel}
	var errOut bytes.Buffer
	exited := make(chan int, 1)
	go func() { exited <- run(ctx, []string{"events", "-f", "--host", "compute-1"}, out, &errOut) }()
	time.Sleep(200 * time.Millisecond)
	sb.Hang("compute-1")
	var code int
	select {
	case code = <-exited:
	case <-time.After(3 * time.Minute):
		t.Fatalf("iha events -f did not end\n%s", out.String())
	}
	t.Log(out.String())
	if code != exitOK || ctx.Err() == nil || !strings.Contains(out.String(), "HostReenabled") {
		t.Fatalf("exit %d, ctx %v, stderr %s", code, ctx.Err(), errOut.String())
	}
	for _, want := range []string{"HostDown", "FencingSucceeded", "EvacuationStarted", "RecoveryCompleted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("followed output lacks %s", want)
		}
	}
	if strings.Contains(out.String()+errOut.String(), canary) {
		t.Fatal("the Keystone password appeared in the CLI output")
	}
	// The record, as `iha host` shows it, and `iha status` on a healthy
	// single-voter cluster.
	if code, o, e := runCLI(t, "host", "compute-1"); code != exitOK || !strings.Contains(o, "fence ") || !strings.Contains(o, "web-1") {
		t.Fatalf("iha host: %d\n%s%s", code, o, e)
	}
	// A host that never failed: the leader's verdict and its evidence,
	// from the real reconciler's last cycle.
	waitFor(t, "the reconciler's verdict on compute-0", func() bool {
		_, o, _ := runCLI(t, "host", "compute-0", "-o", "value", "-c", "judged")
		return strings.TrimSpace(o) != ""
	}, func() string { _, o, e := runCLI(t, "host", "compute-0"); return o + e })
	if code, o, e := runCLI(t, "host", "compute-0"); code != exitOK || !strings.Contains(o, "verdict:    healthy") ||
		!strings.Contains(o, "nova:       up, enabled") || !strings.Contains(o, "judged:     healthy at") || !strings.Contains(o, "recovery:   no record") {
		t.Fatalf("iha host compute-0: %d\n%s%s", code, o, e)
	}
	if code, o, e := runCLI(t, "status", "--consistent"); code != exitOK || !strings.Contains(e, "consistent read") || !strings.Contains(o, "leader:") {
		t.Fatalf("iha status: %d\n%s%s", code, o, e)
	}
}
