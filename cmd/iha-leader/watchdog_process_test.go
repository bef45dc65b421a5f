package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/internal/testaddr"
	"github.com/ihaproject/iha/internal/wddouble"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/lease"
	"github.com/ihaproject/iha/pkg/novasim"
)

// The watchdog path with real processes: an iha-leader, three computes
// (each an iha-agent and a stand-in for its guests in one process group,
// the agent's watchdog a FIFO served by iha-wddouble, which SIGKILLs the
// group when it goes unfed for W), novasim for Nova, and a BMC for
// compute c1 that nothing answers. c1 hangs (its whole process group is
// SIGSTOPped, its nova-compute stops): the BMC fence fails, the watchdog
// resets c1, and the leader evacuates it without `iha confirm-fenced`,
// exactly once, no earlier than the last grant + L + W + margin and only
// after c1's processes are dead.

// e2eParams are the timings of a rig: WATCHDOG_LEASE, the agents'
// watchdog.timeout and WATCHDOG_MARGIN.
type e2eParams struct{ L, W, Margin time.Duration }

// e2eFast keeps the tests short.
var e2eFast = e2eParams{L: 3 * time.Second, W: 2 * time.Second, Margin: time.Second}

func buildWatchdogBinaries(t testing.TB) [3]string {
	t.Helper()
	dir := t.TempDir()
	var leaderBin, agentBin, wdBin string
	leaderBin, agentBin, wdBin = filepath.Join(dir, "iha-leader"), filepath.Join(dir, "iha-agent"), filepath.Join(dir, "iha-wddouble")
	for bin, pkg := range map[string]string{leaderBin: ".", agentBin: "../iha-agent", wdBin: "../../internal/wddouble/iha-wddouble"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute*slowFactor())
		out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return [3]string{leaderBin, agentBin, wdBin}
}

// compute is one simulated compute: its process group (iha-agent and a
// guest stand-in) and the watchdog double that guards it.
type compute struct {
	host      string
	metrics   string // the agent's /metrics URL
	agent     *exec.Cmd
	guest     *exec.Cmd
	wd        *exec.Cmd
	agentLog  *lockedBuf
	record    string
	agentDone chan struct{}
	guestDone chan struct{}
	wdDone    chan struct{}
	pgid      int
}

func startProc(t testing.TB, cmd *exec.Cmd) chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return done
}

func startCompute(t testing.TB, agentBin, wdBin, host, gossipJoin, apiAddr string, cluster []byte, keyring string, w time.Duration) *compute {
	t.Helper()
	dir := t.TempDir()
	metricsAddr := testaddr.Loopback(t)
	c := &compute{host: host, agentLog: &lockedBuf{}, record: filepath.Join(dir, "wd.jsonl"), metrics: "http://" + metricsAddr + "/metrics"}
	keyFile := filepath.Join(dir, "host.key")
	writeFile(t, keyFile, []byte(lease.EncodeKey(lease.HostKey(cluster, host))))
	fifo := filepath.Join(dir, "watchdog")
	cfg := fmt.Sprintf("nova_host: %s\nbind: %s\njoin: [%s]\nkdump_listen: \"off\"\nmetrics_listen: %s\ngate_stats_file: \"off\"\n"+
		"state_dir: %s\ncontrollers: [\"http://%s\"]\nhost_key: %s\nkeyring: %s\ngossip: {GOSSIP_PROFILE: fast}\n"+
		"watchdog: {device: %s, timeout: %s, allow_fifo: true}\n",
		host, testaddr.Loopback(t), gossipJoin, metricsAddr, filepath.Join(dir, "state"), apiAddr, keyFile, keyring, fifo, w)
	cfgFile := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfgFile, []byte(cfg))

	// The agent leads the compute's process group; the guest joins it.
	c.agent = exec.Command(agentBin, "-config", cfgFile)
	c.agent.Env = append(os.Environ(), "NOTIFY_SOCKET=")
	c.agent.Stdout, c.agent.Stderr = c.agentLog, c.agentLog
	c.agent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The double must serve the FIFO before the agent opens it; it is
	// told the group once the agent runs, so it starts second, with the
	// agent's pid (the group's id), and the agent arms only after its
	// first grant, seconds later.
	c.agentDone = startProc(t, c.agent)
	c.pgid = c.agent.Process.Pid
	c.guest = exec.Command("sleep", "600")
	c.guest.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: c.pgid}
	c.guestDone = startProc(t, c.guest)
	c.wd = exec.Command(wdBin, "-fifo", fifo, "-timeout", w.String(), "-pgid", fmt.Sprint(c.pgid), "-record", c.record)
	c.wdDone = startProc(t, c.wd)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s agent log:\n%s", host, lastLines(c.agentLog.String(), 60))
		}
	})
	return c
}

func (c *compute) events(t testing.TB) []wddouble.Event {
	t.Helper()
	f, err := os.Open(c.record)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []wddouble.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e wddouble.Event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

func (c *compute) event(t testing.TB, kind string) (wddouble.Event, bool) {
	for _, e := range c.events(t) {
		if e.Event == kind {
			return e, true
		}
	}
	return wddouble.Event{}, false
}

// metric reads one sample of the agent's /metrics ("name" or
// "name{label=\"value\"}" as exposed), false when absent.
func (c *compute) metric(name string) (float64, bool) {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(c.metrics)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f, true
			}
		}
	}
	return 0, false
}

func exited(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// e2eRig is the leader, the computes and their servers.
type e2eRig struct {
	p                           e2eParams
	agentBin, wdBin, gossipAddr string
	cluster                     []byte
	keyring                     string // the mesh's keyring file
	sim                         *novasim.Sim
	ctl                         *controller
	computes                    map[string]*compute
	servers                     map[string]string
	cl                          *api.Client
}

func (r *e2eRig) host(h string) (api.Host, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.cl.Host(ctx, h, false)
}

func newE2ERig(t testing.TB, p e2eParams, bins [3]string) *e2eRig {
	t.Helper()
	leaderBin, agentBin, wdBin := bins[0], bins[1], bins[2]
	sim, err := novasim.New(novasim.Options{Password: "change-me", NoStartupDelay: true, ReportInterval: time.Second,
		ServiceDownTime: 3 * time.Second, EvacuationDelay: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	hosts := []string{"c1", "c2", "c3"}
	for _, h := range hosts {
		sim.AddCompute(h, "nova")
	}
	sim.AddScheduler("ctl")
	img := sim.AddImage(novasim.Image{Name: "tagged", Tags: []string{"evacuable"}})
	servers := map[string]string{}
	for i := 1; i <= 3; i++ {
		servers[fmt.Sprintf("vm%d", i)] = sim.AddServer(novasim.ServerSpec{Name: fmt.Sprintf("vm%d", i), Host: "c1", ImageID: img})
	}

	cluster := make([]byte, lease.KeySize)
	_, _ = rand.Read(cluster)
	ctl := &controller{name: "ctl-1", raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
	gossipAddr := testaddr.Loopback(t)
	deadBMC := testaddr.Loopback(t) // nothing listens there
	keyFile := filepath.Join(t.TempDir(), "cluster.key")
	writeFile(t, keyFile, []byte(lease.EncodeKey(cluster)))
	// The mesh is encrypted by default: one keyring for the controller and
	// the agents.
	keyring := filepath.Join(t.TempDir(), "gossip.keyring")
	gk := make([]byte, 32)
	_, _ = rand.Read(gk)
	if err := gossip.WriteKeyring(keyring, [][]byte{gk}); err != nil {
		t.Fatal(err)
	}
	ctl.writeConfig(t, sim, map[string]string{"RAFT_PEERS": ctl.name + "=" + ctl.raftAddr, "GOSSIP_BIND": gossipAddr,
		"GOSSIP_PROFILE": "fast", "DETECTION_MODE": "gossip", "TAGGED_AGGREGATES": "false", "FENCING_TIMEOUT": "5",
		"NOVA_REPORT_INTERVAL": "1", "CLUSTER_KEY": keyFile, "GOSSIP_KEYRING": keyring,
		"WATCHDOG_LEASE": p.L.String(), "WATCHDOG_MARGIN": p.Margin.String()})
	// fencing.yaml: every BMC is dead (nothing listens at its address).
	host, port, _ := strings.Cut(deadBMC, ":")
	var fencing strings.Builder
	fencing.WriteString("FencingConfig:\n")
	for _, h := range hosts {
		fmt.Fprintf(&fencing, "  %s:\n    agent: redfish\n    ipaddr: %s\n    ipport: %q\n    login: root\n    passwd: bmc-secret-e2e\n", h, host, port)
	}
	writeFile(t, filepath.Join(ctl.confDir, "fencing.yaml"), []byte(fencing.String()))
	ctl.extraEnv = []string{"INSTANCEHA_DISABLED=False"} // this one acts
	ctl.start(t, leaderBin)

	computes := map[string]*compute{}
	for _, h := range hosts {
		computes[h] = startCompute(t, agentBin, wdBin, h, gossipAddr, ctl.apiAddr, cluster, keyring, p.W)
	}
	cl := &api.Client{Addrs: []string{"http://" + ctl.apiAddr}, Token: processToken, Actor: "watchdog-e2e", HTTP: &http.Client{Timeout: 10 * time.Second}}
	r := &e2eRig{p: p, sim: sim, ctl: ctl, computes: computes, servers: servers, cl: cl, agentBin: agentBin, wdBin: wdBin, gossipAddr: gossipAddr, cluster: cluster, keyring: keyring}
	waitFor(t, 60*time.Second, "every compute armed under a lease", func() (bool, string) {
		for _, h := range hosts {
			v, err := r.host(h)
			if err != nil {
				return false, err.Error()
			}
			if v.Watchdog == nil || !v.Watchdog.Armed {
				return false, h + " not armed"
			}
			if _, ok := computes[h].event(t, "armed"); !ok {
				return false, h + "'s double not armed"
			}
		}
		return true, ""
	}, ctl)
	return r
}

// deadBMCTimeline is the dead-BMC scenario's timeline, from the hang.
type deadBMCTimeline struct {
	Judged, BMCFailed, WatchdogFired, Fenced, FirstEvacuate, AllActive time.Duration
	GrantToFenced                                                      time.Duration
}

// hangC1 runs the dead-BMC scenario on a fresh rig: c1 hangs, its BMC is
// dead; it asserts the recovery and returns the timeline.
func (r *e2eRig) hangC1(t testing.TB) deadBMCTimeline {
	t.Helper()
	sim, ctl, computes, servers, cl := r.sim, r.ctl, r.computes, r.servers, r.cl
	hostView := r.host
	e2eLease, e2eW, e2eMargin := r.p.L, r.p.W, r.p.Margin

	// c1 hangs: every process of it stops, its nova-compute too.
	c1 := computes["c1"]
	if err := syscall.Kill(-c1.pgid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	hangAt := time.Now()
	sim.StopCompute("c1")

	var fired wddouble.Event
	waitFor(t, 90*time.Second, "every server of c1 ACTIVE elsewhere", func() (bool, string) {
		if e, ok := c1.event(t, "fired"); ok && fired.At.IsZero() {
			fired = e
		}
		for name, id := range servers {
			s, _ := sim.Server(id)
			if s.Host == "c1" || s.Status != "ACTIVE" {
				return false, fmt.Sprintf("%s on %s, %s", name, s.Host, s.Status)
			}
		}
		return true, ""
	}, ctl)
	allActive := time.Now()

	if fired.At.IsZero() {
		e, ok := c1.event(t, "fired")
		if !ok {
			t.Fatalf("c1's watchdog never fired: %+v", c1.events(t))
		}
		fired = e
	}
	if !exited(c1.agentDone) || !exited(c1.guestDone) {
		t.Fatalf("c1's processes still run after its watchdog fired (agent exited %v, guest exited %v)", exited(c1.agentDone), exited(c1.guestDone))
	}
	v, err := hostView("c1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Fence == nil || v.Fence.Method != "watchdog" {
		t.Fatalf("c1's fence: %+v", v.Fence)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	evs, err := cl.Events(ctx, api.EventQuery{Host: "c1", Limit: 1000}, false)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	at := map[string][]time.Time{}
	for _, e := range evs.Events {
		at[e.Kind] = append(at[e.Kind], e.At)
	}
	for _, k := range []string{"FencingFailed", "WatchdogFencePending", "FencingSucceeded", "WatchdogSelfFenceAssumed", "EvacuationStarted"} {
		if len(at[k]) == 0 {
			t.Fatalf("no %s event for c1: %v", k, at)
		}
	}
	if n := len(at["FencingSucceeded"]); n != 1 {
		t.Errorf("c1 fenced %d times", n)
	}
	for _, k := range []string{"FencingConfirmedByOperator"} {
		if len(at[k]) != 0 {
			t.Errorf("%s: an operator was needed", k)
		}
	}
	grant := v.Watchdog.LastGrant
	fencedAt, evacAt := at["FencingSucceeded"][0], at["EvacuationStarted"][0]
	if floor := grant.Add(e2eLease + e2eW + e2eMargin); fencedAt.Before(floor) {
		t.Errorf("fenced at %s, before the last grant %s + L + W + margin = %s", fencedAt, grant, floor)
	}
	if !fired.At.Before(evacAt) {
		t.Errorf("c1's watchdog fired at %s, after the first evacuation began at %s", fired.At, evacAt)
	}
	for name, id := range servers {
		if n := sim.ServerCalls(id, novasim.RouteEvacuate); n != 1 {
			t.Errorf("%s evacuated %d times, want 1", name, n)
		}
	}
	// The others are untouched and still armed.
	for _, h := range []string{"c2", "c3"} {
		if _, ok := computes[h].event(t, "fired"); ok || exited(computes[h].agentDone) {
			t.Errorf("healthy compute %s was reset", h)
		}
	}
	d := func(ts []time.Time) time.Duration {
		if len(ts) == 0 {
			return -1
		}
		return ts[0].Sub(hangAt)
	}
	return deadBMCTimeline{Judged: d(at["HostDown"]), BMCFailed: d(at["FencingFailed"]), WatchdogFired: fired.At.Sub(hangAt),
		Fenced: fencedAt.Sub(hangAt), FirstEvacuate: evacAt.Sub(hangAt), AllActive: allActive.Sub(hangAt), GrantToFenced: fencedAt.Sub(grant)}
}

func TestWatchdogRecoversADeadBMCHostWithRealProcesses(t *testing.T) {
	r := newE2ERig(t, e2eFast, buildWatchdogBinaries(t))
	tl := r.hangC1(t)
	t.Logf("L %v, W %v, margin %v; from the hang: judged %v, BMC failed %v, watchdog fired %v, fenced %v (%v after the last grant), first evacuate %v, all ACTIVE %v",
		r.p.L, r.p.W, r.p.Margin, tl.Judged, tl.BMCFailed, tl.WatchdogFired, tl.Fenced, tl.GrantToFenced, tl.FirstEvacuate, tl.AllActive)
}

// BenchmarkWatchdogDeadBMCToAllActive measures failure → every server
// ACTIVE elsewhere for a compute whose BMC is dead, with real processes on
// loopback. Timings from the environment (defaults: the shipped L 15s,
// W 10s, margin 5s):
//
//	IHA_WD_L=15s IHA_WD_W=10s IHA_WD_MARGIN=5s go test -run '^$' \
//	    -bench BenchmarkWatchdogDeadBMCToAllActive -benchtime 1x ./cmd/iha-leader/
func BenchmarkWatchdogDeadBMCToAllActive(b *testing.B) {
	p := e2eParams{L: 15 * time.Second, W: 10 * time.Second, Margin: 5 * time.Second}
	for env, dst := range map[string]*time.Duration{"IHA_WD_L": &p.L, "IHA_WD_W": &p.W, "IHA_WD_MARGIN": &p.Margin} {
		if v := os.Getenv(env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				b.Fatalf("%s: %v", env, err)
			}
			*dst = d
		}
	}
	bins := buildWatchdogBinaries(b)
	var sum deadBMCTimeline
	for range b.N {
		b.StopTimer()
		r := newE2ERig(b, p, bins)
		b.StartTimer()
		tl := r.hangC1(b)
		sum.Judged += tl.Judged
		sum.BMCFailed += tl.BMCFailed
		sum.Fenced += tl.Fenced
		sum.GrantToFenced += tl.GrantToFenced
		sum.AllActive += tl.AllActive
		b.Logf("L %v, W %v, margin %v; from the hang: judged %v, BMC failed %v, watchdog fired %v, fenced %v (%v after the last grant), first evacuate %v, all ACTIVE %v",
			p.L, p.W, p.Margin, tl.Judged, tl.BMCFailed, tl.WatchdogFired, tl.Fenced, tl.GrantToFenced, tl.FirstEvacuate, tl.AllActive)
	}
	n := float64(b.N)
	b.ReportMetric(sum.Judged.Seconds()/n, "s-judged")
	b.ReportMetric(sum.BMCFailed.Seconds()/n, "s-bmc-failed")
	b.ReportMetric(sum.Fenced.Seconds()/n, "s-fenced")
	b.ReportMetric(sum.GrantToFenced.Seconds()/n, "s-grant-to-fenced")
	b.ReportMetric(sum.AllActive.Seconds()/n, "s-all-active")
}

// A control-plane outage never resets a compute: the only controller is
// killed for 3 × L, and every armed agent feeds on (its peers cannot reach
// a controller either). Before it, a clean stop disarms (the lease is
// released first) and a crash does not: the crashed agent's watchdog
// resets its compute within W.
func TestWatchdogSurvivesAControlPlaneOutageAndTellsAStopFromACrash(t *testing.T) {
	r := newE2ERig(t, e2eFast, buildWatchdogBinaries(t))
	c2, c3 := r.computes["c2"], r.computes["c3"]

	// c3's agent stops cleanly: released, then disarmed with the magic close.
	if err := c3.agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "c3 disarmed and released", func() (bool, string) {
		v, err := r.host("c3")
		if err != nil {
			return false, err.Error()
		}
		_, disarmed := c3.event(t, "disarmed")
		return disarmed && v.Watchdog != nil && !v.Watchdog.Released.IsZero() && !v.Watchdog.Armed, fmt.Sprintf("%+v", v.Watchdog)
	}, r.ctl)
	// c2's agent crashes: the watchdog keeps counting and resets c2.
	crashAt := time.Now()
	if err := c2.agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "c2's watchdog fired after the crash", func() (bool, string) {
		_, ok := c2.event(t, "fired")
		return ok && exited(c2.guestDone), fmt.Sprintf("%+v", c2.events(t))
	}, r.ctl)
	if e, _ := c2.event(t, "unexpected-close"); e.At.IsZero() {
		t.Error("the crash closed the device without the double noticing")
	}
	f, _ := c2.event(t, "fired")
	t.Logf("c2: agent SIGKILLed → compute reset by its watchdog in %v (W %v)", f.At.Sub(crashAt).Round(time.Millisecond), r.p.W)
	if _, ok := c3.event(t, "fired"); ok || exited(c3.guestDone) {
		t.Fatal("c3 was reset after a clean stop")
	}

	// Restart c2 and c3 as new computes would not fit this rig: the outage
	// is judged by c1, whose peers are c2 (dead, silent) and c3 (released:
	// not a holder). So start two more armed computes first.
	for _, h := range []string{"c4", "c5"} {
		r.sim.AddCompute(h, "nova")
		r.computes[h] = startCompute(t, r.agentBin, r.wdBin, h, r.gossipAddr, r.ctl.apiAddr, r.cluster, r.keyring, r.p.W)
	}
	waitFor(t, 60*time.Second, "c4 and c5 armed", func() (bool, string) {
		for _, h := range []string{"c4", "c5"} {
			v, err := r.host(h)
			if err != nil || v.Watchdog == nil || !v.Watchdog.Armed {
				return false, h
			}
		}
		return true, ""
	}, r.ctl)

	// The outage: the controller is killed and stays away for 3 × L.
	outageAt := time.Now()
	_ = r.ctl.cmd.Process.Signal(syscall.SIGKILL)
	<-r.ctl.exited
	deadline := outageAt.Add(3 * r.p.L)
	for time.Now().Before(deadline) {
		for _, h := range []string{"c1", "c4", "c5"} {
			if e, ok := r.computes[h].event(t, "fired"); ok {
				t.Fatalf("%s was reset %v into a control-plane outage", h, e.At.Sub(outageAt))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, h := range []string{"c1", "c4", "c5"} {
		c := r.computes[h]
		if exited(c.agentDone) || exited(c.guestDone) {
			t.Fatalf("%s's processes died during the outage", h)
		}
		if !strings.Contains(c.agentLog.String(), "the control plane is down: feeding on") {
			t.Errorf("%s's agent never said it fed on through the outage:\n%s", h, lastLines(c.agentLog.String(), 20))
		}
		// What an on-call sees on the compute: armed, feeding, the lease
		// run out, and the peer rounds that kept it feeding.
		armed, _ := c.metric("iha_agent_watchdog_armed")
		feeding, _ := c.metric("iha_agent_watchdog_feeding")
		left, _ := c.metric("iha_agent_watchdog_lease_remaining_seconds")
		rounds, _ := c.metric(`iha_agent_watchdog_peer_rounds_total{verdict="feed"}`)
		if armed != 1 || feeding != 1 || left >= 0 || rounds == 0 {
			t.Errorf("%s's /metrics: armed %v, feeding %v, lease remaining %v s, feed rounds %v", h, armed, feeding, left, rounds)
		}
	}
}
