package gossip

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/gossip/memnet"
	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/identity"
)

// logCapture keeps a mesh's log lines for assertions.
type logCapture struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func memberOf(m *Mesh, name string) Member {
	for _, mem := range m.Members() {
		if mem.Name == name {
			return mem
		}
	}
	return Member{}
}

// TestClaimsBindAMemberToItsHost: on a controller with the cluster key,
// only an agent holding its host's key gets a claim; a wrong key, no key,
// a claim of an earlier run and a leave announced for someone else are
// dropped and logged; a real leave still counts.
func TestClaimsBindAMemberToItsHost(t *testing.T) {
	cluster, _ := identity.NewKey()
	net := memnet.New()
	var ctlLog logCapture
	ctl, err := New(Config{NodeName: "ctl", Profile: FastProfile(), ClusterKey: cluster, ClaimInterval: 200 * time.Millisecond,
		Meta: Meta{Role: RoleController}, Transport: net.NewTransport("ctl"),
		Logger: slog.New(slog.NewTextHandler(&ctlLog, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	rec := record(ctl)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); ctl.Shutdown() })
	go func() { _ = ctl.Run(ctx) }()
	start := func(name, host string, key []byte) *Mesh {
		m, err := New(Config{NodeName: name, Join: []string{ctl.Addr()}, Profile: FastProfile(), HostKey: key,
			ClaimInterval: 200 * time.Millisecond, Meta: Meta{Role: RoleCompute, NovaHost: host},
			Transport: net.NewTransport(name), Logger: testLogger(t, slog.LevelInfo)})
		if err != nil {
			t.Fatal(err)
		}
		mctx, mcancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = m.Run(mctx) }()
		t.Cleanup(func() { mcancel(); m.Shutdown(); <-done })
		return m
	}
	good := start("good", "compute-1", identity.HostKey(cluster, "compute-1"))
	leaver := start("leaver", "compute-3", identity.HostKey(cluster, "compute-3"))
	start("wrongkey", "compute-9", identity.HostKey(cluster, "compute-2"))
	start("nokey", "compute-4", nil)
	rogue := start("rogue", "compute-5", nil) // holds the keyring (none here), not a host key

	testkit.WaitFor(t, scale(10*time.Second), "the good agents' claims", func() bool {
		return memberOf(ctl, "good").Claim.Host == "compute-1" && memberOf(ctl, "leaver").Claim.Host == "compute-3"
	})
	time.Sleep(time.Second) // five claim intervals: the others had their chances
	for _, n := range []string{"wrongkey", "nokey", "rogue"} {
		if c := memberOf(ctl, n).Claim; c.Host != "" {
			t.Errorf("%s got a claim for %s", n, c.Host)
		}
	}
	if log := ctlLog.String(); !strings.Contains(log, "message rejected") || !strings.Contains(log, "does not verify with host compute-9") {
		t.Errorf("the wrong key is not logged:\n%s", log)
	}

	// A claim of an earlier run (another incarnation, older) is refused.
	old := good.newEnvelope(msgClaim, "good")
	old.Addr, old.Inc, old.At = good.Addr(), "earlier-run", time.Now().Add(-time.Minute).UTC()
	b, _ := good.encode(old)
	before := ctl.Stats().Rejected
	ctl.handleMessage(b)
	if ctl.Stats().Rejected != before+1 || memberOf(ctl, "good").Claim.Inc == "earlier-run" {
		t.Error("a claim of an earlier run was accepted")
	}

	// Forged leaves of "good": from another member, unsigned in its name,
	// signed with another host's key. None counts.
	for _, forge := range []func() []byte{
		func() []byte { b, _ := rogue.encode(rogue.newEnvelope(msgLeave, "good")); return b },
		func() []byte {
			e := rogue.newEnvelope(msgLeave, "good")
			e.From = "good"
			b, _ := e.encode()
			return b
		},
		func() []byte {
			e := rogue.newEnvelope(msgLeave, "good")
			e.From, e.Host = "good", "compute-1"
			e.MAC = identity.Sum(identity.HostKey(cluster, "compute-5"), e.macParts()...)
			b, _ := e.encode()
			return b
		},
	} {
		ctl.handleMessage(forge())
	}
	if !strings.Contains(ctlLog.String(), "a member only announces its own") {
		t.Error("the leave announced by another member is not logged")
	}
	good.Shutdown() // dies without a word
	testkit.WaitFor(t, scale(15*time.Second), "good to be declared dead", func() bool { _, ok := rec.find(KindDead, "good"); return ok })
	if e, ok := rec.find(KindLeft, "good"); ok {
		t.Fatalf("a forged leave made a death count as a leave: %+v", e)
	}
	// A real leave, signed by the leaver's own key, still counts.
	_ = leaver.Leave(scale(5 * time.Second))
	testkit.WaitFor(t, scale(10*time.Second), "leaver to be left", func() bool { _, ok := rec.find(KindLeft, "leaver"); return ok })
	if _, ok := rec.find(KindDead, "leaver"); ok {
		t.Error("a signed graceful leave counted as a death")
	}
}

// BenchmarkControllerChecksAClaim is a controller's cost per claim: decode,
// verify the host key's MAC, record it. At 1,000 computes and the default
// 5 s interval a controller checks 200 claims a second.
//
//	go test ./gossip -run '^$' -bench ControllerChecksAClaim -benchmem
func BenchmarkControllerChecksAClaim(b *testing.B) {
	cluster, _ := identity.NewKey()
	net := memnet.New()
	ctl, err := New(Config{NodeName: "ctl", Profile: FastProfile(), ClusterKey: cluster, Meta: Meta{Role: RoleController},
		Transport: net.NewTransport("ctl")})
	if err != nil {
		b.Fatal(err)
	}
	defer ctl.Shutdown()
	agent, err := New(Config{NodeName: "c1", Profile: FastProfile(), HostKey: identity.HostKey(cluster, "compute-1"),
		Meta: Meta{Role: RoleCompute, NovaHost: "compute-1"}, Transport: net.NewTransport("c1")})
	if err != nil {
		b.Fatal(err)
	}
	defer agent.Shutdown()
	ctl.mu.Lock()
	ctl.members["c1"] = &Member{Name: "c1", Addr: agent.Addr(), State: StateAlive}
	ctl.mu.Unlock()
	msgs := make([][]byte, b.N)
	for i := range msgs {
		env := agent.newEnvelope(msgClaim, "c1")
		env.Addr = agent.Addr()
		msgs[i], _ = agent.encode(env)
	}
	b.ResetTimer()
	for _, m := range msgs {
		ctl.handleMessage(m)
	}
	b.StopTimer()
	b.ReportMetric(float64(len(msgs[0])), "bytes/claim")
	if c := memberOf(ctl, "c1").Claim; c.Host != "compute-1" {
		b.Fatalf("claim not recorded: %+v", c)
	}
}
