package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/agent"
	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/internal/testlog"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/novasim"
)

const fenceKdumpSend = "/usr/libexec/fence-agents/fence_kdump_send"

// meshKeys are a test mesh's key files, made as an operator makes them.
type meshKeys struct {
	dir        string
	keyring    string // gossip keyring (GOSSIP_KEYRING, agents' keyring:)
	clusterKey string // CLUSTER_KEY's file
	cluster    []byte
}

func newMeshKeys(t *testing.T) meshKeys {
	t.Helper()
	dir := t.TempDir()
	k := meshKeys{dir: dir, keyring: filepath.Join(dir, "gossip.keyring"), clusterKey: filepath.Join(dir, "cluster.key")}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := gossip.WriteKeyring(k.keyring, [][]byte{key}); err != nil {
		t.Fatal(err)
	}
	var err error
	if k.cluster, err = identity.NewKey(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.clusterKey, []byte(identity.EncodeKey(k.cluster)), 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// hostKey writes host's key file (iha-leader keygen host) and returns its
// path.
func (k meshKeys) hostKey(t *testing.T, host string) string {
	t.Helper()
	p := filepath.Join(k.dir, host+".key")
	if err := os.WriteFile(p, []byte(identity.EncodeKey(identity.HostKey(k.cluster, host))), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testAgent is one compute's iha-agent, in this process, on loopback.
type testAgent struct {
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func startTestAgent(t *testing.T, keys meshKeys, host, join string, kdumpHosts map[string]string, log *slog.Logger) *testAgent {
	t.Helper()
	cfg := agent.Config{NovaHost: host, Bind: "127.0.0.1:0", Join: []string{join}, KdumpListen: "off", StateDir: t.TempDir(), Keyring: keys.keyring,
		HostKey:    keys.hostKey(t, host),
		KdumpHosts: kdumpHosts, KdumpRelayInterval: 500 * time.Millisecond, Gossip: map[string]string{gossip.KeyProfile: "fast"}}
	if kdumpHosts != nil {
		cfg.KdumpListen = "127.0.0.1:0"
	}
	cfg.Defaults(host)
	a, err := agent.New(cfg, agent.Options{Version: "test", Logger: log.With("agent", host)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{a: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ta.done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(ta.leave)
	return ta
}

// leave stops the agent gracefully (a leave message: "left").
func (ta *testAgent) leave() {
	ta.once.Do(func() {
		ta.cancel()
		<-ta.done
	})
}

// kill stops the agent without a word, as a power loss does.
func (ta *testAgent) kill() { ta.a.Mesh().Shutdown() }

// TestLeaderJudgesTheRealMeshOverLoopback wires iha-leader's mesh adapter
// (the code runLeader uses) to a sandboxed leader, novasim and four real
// agents over UDP/TCP on 127.0.0.1 with the fast profile:
//   - c1 loses power (agent killed, nova-compute silent): judged failed
//     within the formula's worst detection time plus one Nova report,
//     long before DELTA and POLL, and fenced once;
//   - c4's agent leaves gracefully while its nova-compute runs: untouched;
//   - c3 crashes into kdump: the real fence_kdump_send reaches c2's agent,
//     which relays the notice to the controller over the encrypted mesh
//     (GOSSIP_KEYRING: without it a relayed notice is not believed); c3 is
//     recovered without a power-off;
//   - /v1/cluster's mesh figures come from the same adapter.
func TestLeaderJudgesTheRealMeshOverLoopback(t *testing.T) {
	if _, err := os.Stat(fenceKdumpSend); err != nil {
		t.Fatalf("%s missing: run scripts/install-test-deps.sh (package fence-agents): %v", fenceKdumpSend, err)
	}
	log := testlog.New(t, slog.LevelInfo)
	s := config.Defaults()
	s.NodeName = "ctl-1"
	s.DetectionMode = config.DetectBoth
	s.Poll, s.Delta = 15*time.Second, 30*time.Second
	s.NovaReportInterval = time.Second
	s.FencingTimeout, s.NovaAPITimeout, s.EvacuationGrace = 2*time.Second, 3*time.Second, 3*time.Second
	s.EvacuationTimeout = 20 * time.Second
	s.TaggedAggregates = false
	s.CheckKdump, s.KdumpTimeout, s.KdumpListen = true, 5*time.Second, config.Off
	s.GossipBind, s.GossipProfile = "127.0.0.1:0", config.GossipProfileFast
	s.MeshPartitionPercent = 60
	keys := newMeshKeys(t)
	s.GossipKeyring, s.ClusterKey = keys.keyring, keys.clusterKey

	mcfg, err := meshConfig(s, "127.0.0.1:7421", keys.cluster, log.With("component", "gossip"))
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := startMesh(mcfg, s, log.With("component", "gossip"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mesh.Close)
	ctlAddr := mesh.mesh.Addr()

	sb, err := sandbox.New(sandbox.Options{Settings: s, DataDir: t.TempDir(), Logger: log, Mesh: mesh,
		Sim: novasim.Options{ReportInterval: time.Second, ServiceDownTime: 30 * time.Second, NoStartupDelay: true,
			EvacuationDelay: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sb.Close)
	for i := 1; i <= 4; i++ {
		sb.AddCompute(fmt.Sprintf("c%d", i), "nova")
	}
	sb.Sim.AddScheduler("ctl")
	img := sb.Sim.AddImage(novasim.Image{Name: "tagged", Tags: []string{"evacuable"}})
	vms := map[string]string{}
	for _, v := range []struct{ name, host string }{{"vm1", "c1"}, {"vm2", "c1"}, {"vm3", "c3"}, {"vm4", "c4"}} {
		vms[v.name] = sb.Sim.AddServer(novasim.ServerSpec{Name: v.name, Host: v.host, ImageID: img})
	}

	agents := map[string]*testAgent{}
	for i := 1; i <= 4; i++ {
		h := fmt.Sprintf("c%d", i)
		var kh map[string]string
		if h == "c2" {
			kh = map[string]string{"127.0.0.1": "c3"} // c2 hears c3's kdump kernel
		}
		agents[h] = startTestAgent(t, keys, h, ctlAddr, kh, log)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		snap := mesh.Snapshot()
		alive := 0
		for _, m := range snap {
			if m.State == leader.MeshAlive {
				alive++
			}
		}
		if alive == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the controller sees %d of 4 agents alive: %+v", alive, snap)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := sb.StartLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	phase := func(h string) leader.Phase {
		if r := sb.FSM().Host(h); r != nil {
			return r.Phase
		}
		return ""
	}
	waitFor := func(d time.Duration, what string, cond func() bool) {
		t.Helper()
		end := time.Now().Add(3 * d)
		for !cond() {
			if time.Now().After(end) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond) // the first poll ran; the next is 15 s away

	// c4 leaves gracefully; c1 loses power.
	agents["c4"].leave()
	killed := time.Now()
	sb.Hang("c1")
	agents["c1"].kill()
	waitFor(30*time.Second, "c1 judged failed", func() bool { return phase("c1") != "" })
	took := time.Since(killed)
	p := gossip.FastProfile()
	rec := sb.FSM().Host("c1")
	t.Logf("kill → dead at the controller %s, → leader verdict %s (fast profile, 6 members: formula expects dead at %s, worst %s; then one Nova report %s + margin, then KDUMP_TIMEOUT %s for a notice)",
		rec.Evidence.MeshSince.Sub(killed), took, p.ExpectedDetection(6), p.WorstDetection(6), s.NovaReportInterval, s.KdumpTimeout)
	if limit := p.WorstDetection(6) + s.NovaReportInterval + 3*time.Second + s.KdumpTimeout; took > limit {
		t.Errorf("verdict after %s, beyond the formula's worst detection plus one report and the kdump wait (%s)", took, limit)
	}
	if rec.Evidence.MeshState != leader.MeshDead || rec.Evidence.Source != "gossip+nova" {
		t.Errorf("c1 evidence %+v", rec.Evidence)
	}
	waitFor(30*time.Second, "c1 evacuated", func() bool {
		srv, _ := sb.Sim.Server(vms["vm1"])
		srv2, _ := sb.Sim.Server(vms["vm2"])
		return srv.Host != "c1" && srv2.Host != "c1" && srv.Status == "ACTIVE" && srv2.Status == "ACTIVE"
	})
	if off, _, _ := sb.BMC("c1").Counts(); off != 1 {
		t.Errorf("c1 powered off %d times, want 1", off)
	}

	// c3 crashes into kdump: its kdump kernel tells c2's agent.
	sb.Hang("c3")
	agents["c3"].kill()
	_, port, _ := net.SplitHostPort(agents["c2"].a.KdumpAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fenceKdumpSend, "-p", port, "-c", "0", "-i", "1", "127.0.0.1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(30*time.Second, "c3 recovered as dumping", func() bool {
		r := sb.FSM().Host("c3")
		return r != nil && r.Fence != nil
	})
	rec3 := sb.FSM().Host("c3")
	if !rec3.Kdump || rec3.Fence.Method != "kdump" || rec3.Evidence.KdumpFrom != "127.0.0.1" {
		t.Errorf("c3: kdump %v, fence %+v, evidence %+v", rec3.Kdump, rec3.Fence, rec3.Evidence)
	}
	if _, reqs, _ := sb.BMC("c3").Counts(); reqs != 0 {
		t.Errorf("c3 was dumping but got %d power-off requests", reqs)
	}
	for _, h := range []string{"c2", "c4"} {
		if _, reqs, _ := sb.BMC(h).Counts(); reqs != 0 || phase(h) != "" {
			t.Errorf("%s must not be touched: phase %q, %d power-off requests", h, phase(h), reqs)
		}
	}
	sum := mesh.Summary()
	if !sum.Wired || sum.Members != 5 || sum.States["left"] != 1 || sum.States["dead"] != 2 {
		t.Errorf("mesh summary %+v, want 5 members: 2 alive, 1 left, 2 dead", sum)
	}
	if got := advertisedAPI("0.0.0.0:7421", config.Settings{GossipBind: "192.0.2.7:7946"}); got != "192.0.2.7:7421" {
		t.Errorf("advertisedAPI = %q", got)
	}
}
