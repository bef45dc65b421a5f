package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/internal/testaddr"
	"github.com/ihaproject/iha/internal/testlog"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/novasim"
)

// meshLab is one real iha-leader with the gossip mesh on (fast profile)
// over loopback, its keys, a novasim with Nova's heartbeat every second,
// and real iha-agent processes. INSTANCEHA_DISABLED keeps the leader from
// acting: the tests read its verdicts (GET /v1/hosts), events and logs.
type meshLab struct {
	t        *testing.T
	sim      *novasim.Sim
	keys     meshKeys
	ctl      *controller
	gossip   string
	insecure bool
	agents   map[string]*controller
}

// newMeshLab starts the leader. insecure runs it with GOSSIP_INSECURE and
// no keyring; identity (CLUSTER_KEY) is on unless noIdentity.
func newMeshLab(t *testing.T, insecure, noIdentity bool, hosts ...string) *meshLab {
	return startMeshLab(t, insecure, noIdentity, false, hosts...)
}

// startMeshLab is newMeshLab; acting lets the leader act (no DISABLED,
// a nova-scheduler up): a failed host's recovery starts and, its BMC never
// answering, stays in fencing.
func startMeshLab(t *testing.T, insecure, noIdentity, acting bool, hosts ...string) *meshLab {
	t.Helper()
	leaderBin, _ := buildBinaries(t)
	sim, err := novasim.New(novasim.Options{Password: "change-me", NoStartupDelay: true, ReportInterval: time.Second, ServiceDownTime: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	// One server per compute and no tags required: a failed host is a
	// candidate, and DISABLED stops the leader just before it acts, so
	// that /v1/hosts shows the verdict table's row itself.
	img := sim.AddImage(novasim.Image{Name: "plain"})
	for _, h := range hosts {
		sim.AddCompute(h, "nova")
		sim.AddServer(novasim.ServerSpec{Name: "vm-on-" + h, Host: h, ImageID: img})
	}
	l := &meshLab{t: t, sim: sim, keys: newMeshKeys(t), gossip: testaddr.Loopback(t), insecure: insecure, agents: map[string]*controller{}}
	extra := map[string]string{"GOSSIP_BIND": l.gossip, "GOSSIP_PROFILE": "fast", "NOVA_REPORT_INTERVAL": "1", "DELTA": "10", "POLL": "15",
		"DETECTION_MODE": "both", "TAGGED_IMAGES": "false", "TAGGED_FLAVORS": "false", "TAGGED_AGGREGATES": "false", "GOSSIP_KEYRING": l.keys.keyring, "CLUSTER_KEY": l.keys.clusterKey}
	if insecure {
		extra["GOSSIP_INSECURE"] = "true"
		delete(extra, "GOSSIP_KEYRING")
	}
	if noIdentity {
		delete(extra, "CLUSTER_KEY")
	}
	l.ctl = &controller{name: "ctl-1", raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
	if acting {
		l.ctl.extraEnv = []string{"INSTANCEHA_DISABLED=False"}
		sim.AddScheduler("ctl-1")
	}
	l.ctl.writeConfig(t, sim, extra)
	if acting {
		// A BMC that never answers (a UDP socket nobody reads): a failed
		// host's recovery stays in fencing for minutes (the gate holds it)
		// and never powers anything off.
		bmc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = bmc.Close() })
		_, port, _ := net.SplitHostPort(bmc.LocalAddr().String())
		var f strings.Builder
		f.WriteString("FencingConfig:\n")
		for _, h := range hosts {
			fmt.Fprintf(&f, "  %s: {agent: ipmi, ipaddr: 127.0.0.1, ipport: %q, login: admin, passwd: attack-test-pw}\n", h, port)
		}
		writeFile(t, filepath.Join(l.ctl.confDir, "fencing.yaml"), []byte(f.String()))
	}
	if insecure || noIdentity { // the defaults beside config.yaml must not be found either
		for _, f := range []string{"gossip.keyring", "cluster.key"} {
			_ = os.Remove(filepath.Join(l.ctl.confDir, f))
		}
	}
	l.ctl.start(t, leaderBin)
	waitLeading(t, l.ctl)
	return l
}

// agent starts a real iha-agent process as node for Nova host host,
// proving it with hostKey (a file; "" for none).
func (l *meshLab) agent(node, host, hostKey string) *controller {
	t := l.t
	t.Helper()
	bin := buildAgent(t)
	var y strings.Builder
	fmt.Fprintf(&y, "node_name: %s\nnova_host: %s\nbind: 127.0.0.1:0\njoin: [%s]\nkdump_listen: \"off\"\nstate_dir: %s\ngossip: {GOSSIP_PROFILE: fast}\n",
		node, host, l.gossip, t.TempDir())
	if l.insecure {
		y.WriteString("insecure: true\n")
	} else {
		fmt.Fprintf(&y, "keyring: %s\n", l.keys.keyring)
	}
	if hostKey != "" {
		fmt.Fprintf(&y, "host_key: %s\n", hostKey)
	} else if !l.insecure {
		y.WriteString("insecure: true\n") // a keyring but no host key: proves nothing
	}
	path := filepath.Join(t.TempDir(), "agent.yaml")
	writeFile(t, path, []byte(y.String()))
	a := &controller{name: node, log: &lockedBuf{}}
	a.cmd = exec.Command(bin, "-config", path)
	a.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.exited = make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Signal(syscall.SIGCONT)
		a.stop(t)
		if t.Failed() {
			t.Logf("%s log:\n%s", node, lastLines(a.log.String(), 30))
		}
	})
	l.agents[node] = a
	waitFor(t, 30*time.Second, node+" to join", func() (bool, string) {
		return strings.Contains(a.log.String(), "iha-agent ready"), lastLines(a.log.String(), 2)
	}, a)
	return a
}

// rogue is a memberlist member of the test's own: it holds the mesh's
// keyring (stolen, or none on an insecure mesh) but no host key, and
// advertises that it is host's agent.
func (l *meshLab) rogue(node, host string) *gossip.Mesh {
	t := l.t
	t.Helper()
	cfg := gossip.Config{NodeName: node, BindAddr: "127.0.0.1", Join: []string{l.gossip}, Label: "iha", Profile: gossip.FastProfile(),
		Meta: gossip.Meta{Role: gossip.RoleCompute, NovaHost: host}, Logger: testlog.New(t, slog.LevelWarn)}
	if !l.insecure {
		cfg.KeyringFile = l.keys.keyring
	}
	m, err := gossip.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); m.Shutdown(); <-done })
	waitFor(t, 30*time.Second, node+" to join the leader's mesh", func() (bool, string) { return m.Joined(), "" })
	return m
}

// hosts is the leader's GET /v1/hosts by host.
func (l *meshLab) hosts() (map[string]api.HostSummary, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &api.Client{Addrs: []string{"http://" + l.ctl.apiAddr}, Token: processToken, HTTP: &http.Client{Timeout: 10 * time.Second}}
	hs, err := cl.Hosts(ctx, false)
	if err != nil {
		return nil, err
	}
	out := map[string]api.HostSummary{}
	for _, h := range hs.Hosts {
		out[h.Host] = h
	}
	return out, nil
}

// waitHost waits until the leader shows host with mesh state and verdict.
func (l *meshLab) waitHost(d time.Duration, host, mesh, verdict string) {
	l.t.Helper()
	waitFor(l.t, d, fmt.Sprintf("%s: mesh %s, verdict %s", host, mesh, verdict), func() (bool, string) {
		hs, err := l.hosts()
		if err != nil {
			return false, err.Error()
		}
		h := hs[host]
		return h.MeshState == mesh && h.Verdict == verdict, fmt.Sprintf("%+v", h)
	}, l.ctl)
}

// events is the leader's event log.
func (l *meshLab) events() []api.Event {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &api.Client{Addrs: []string{"http://" + l.ctl.apiAddr}, Token: processToken, HTTP: &http.Client{Timeout: 10 * time.Second}}
	evs, err := cl.Events(ctx, api.EventQuery{}, true)
	if err != nil {
		l.t.Fatal(err)
	}
	return evs.Events
}

func (l *meshLab) metric(name string) string {
	l.t.Helper()
	resp, err := http.Get("http://" + l.ctl.apiAddr + "/metrics")
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" ")
		}
	}
	return ""
}

// hang freezes host's agent (SIGSTOP) and stops its nova-compute's
// heartbeat: a hung host.
func (l *meshLab) hang(node, host string) {
	if err := l.agents[node].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		l.t.Fatal(err)
	}
	l.sim.StopCompute(host)
}

// TestAttackImpostorCannotKeepAHungHostAlive is attack 5: a member of the
// test's own joins the mesh with the (stolen) keyring and advertises
// itself as compute-1's agent. When the real compute-1 hangs, the leader
// judges it failed on the mesh's word within seconds (the impostor is not
// believed, and the operator reads why in the leader's log); a second
// member that does hold compute-1's key (a copied key) makes compute-1
// contested: an event, a metric, `iha hosts`, and Nova's rule alone, never
// "the live one wins".
func TestAttackImpostorCannotKeepAHungHostAlive(t *testing.T) {
	l := newMeshLab(t, false, false, "compute-1", "compute-2")
	l.agent("compute-1", "compute-1", l.keys.hostKey(t, "compute-1"))
	l.agent("compute-2", "compute-2", l.keys.hostKey(t, "compute-2"))
	l.waitHost(30*time.Second, "compute-1", "alive", "healthy")
	l.rogue("rogue", "compute-1")
	waitFor(t, 60*time.Second, "the leader to say it does not believe the impostor", func() (bool, string) {
		_, _ = l.hosts() // a snapshot notices
		log := l.ctl.log.String()
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, `msg="mesh: member not believed"`) && strings.Contains(line, "node=rogue") {
				return true, ""
			}
		}
		return false, lastLines(log, 3)
	}, l.ctl)

	hung := time.Now()
	l.hang("compute-1", "compute-1")
	l.waitHost(40*time.Second, "compute-1", "dead", "failed")
	t.Logf("hung compute-1 judged failed %v after the hang, the impostor alive in the mesh", time.Since(hung).Round(100*time.Millisecond))

	// The twin: a second agent with compute-1's real key under another
	// node name, while compute-1 is back.
	_ = l.agents["compute-1"].cmd.Process.Signal(syscall.SIGCONT)
	l.sim.StartCompute("compute-1")
	l.waitHost(40*time.Second, "compute-1", "alive", "healthy")
	twin := l.agent("compute-1-twin", "compute-1", l.keys.hostKey(t, "compute-1"))
	l.waitHost(40*time.Second, "compute-1", "contested", "healthy")
	hs, _ := l.hosts()
	if r := hs["compute-1"].Reason; !strings.Contains(r, "compute-1-twin") || !strings.Contains(r, "Nova's rule") {
		t.Errorf("iha hosts' note on compute-1: %q", r)
	}
	if got := l.metric("iha_mesh_contested_hosts"); got != "1" {
		t.Errorf("iha_mesh_contested_hosts = %q, want 1", got)
	}
	waitFor(t, 40*time.Second, "a HostClaimedTwice event", func() (bool, string) {
		for _, e := range l.events() {
			if e.Kind == "HostClaimedTwice" && e.Host == "compute-1" && e.Warning && strings.Contains(e.Message, "compute-1-twin") {
				return true, ""
			}
		}
		return false, "none yet"
	}, l.ctl)
	// Judged by Nova alone: a hang of compute-1 now waits for DELTA.
	l.hang("compute-1", "compute-1")
	time.Sleep(6 * time.Second) // the mesh's detection and one report: what the mesh alone would need
	if hs, err := l.hosts(); err == nil && hs["compute-1"].Verdict == "failed" {
		t.Errorf("a contested host was judged failed on the mesh's word: %+v", hs["compute-1"])
	}
	l.waitHost(60*time.Second, "compute-1", "contested", "instanceha-rule")
	// The twin leaves: one claimant again.
	twin.stop(t)
	waitFor(t, 40*time.Second, "a HostClaimResolved event", func() (bool, string) {
		for _, e := range l.events() {
			if e.Kind == "HostClaimResolved" && e.Host == "compute-1" {
				return true, ""
			}
		}
		return false, "none yet"
	}, l.ctl)
}

// TestAttackImpostorOnAnInsecureMeshIsAnAlarm: with GOSSIP_INSECURE and no
// CLUSTER_KEY (nothing can be proved), an impostor advertising compute-1
// makes compute-1 contested (the alarm), and the hung compute-1 is judged
// by Nova's rule, not kept alive; the insecure modes are warned about.
func TestAttackImpostorOnAnInsecureMeshIsAnAlarm(t *testing.T) {
	l := newMeshLab(t, true, true, "compute-1", "compute-2")
	log := l.ctl.log.String()
	for _, w := range []string{"GOSSIP_INSECURE: the gossip mesh is NOT encrypted", "GOSSIP_INSECURE: no CLUSTER_KEY"} {
		if !strings.Contains(log, w) {
			t.Errorf("no start warning %q:\n%s", w, lastLines(log, 20))
		}
	}
	l.agent("compute-1", "compute-1", "")
	l.agent("compute-2", "compute-2", "")
	l.waitHost(30*time.Second, "compute-1", "alive", "healthy")
	l.rogue("rogue", "compute-1")
	l.waitHost(30*time.Second, "compute-1", "contested", "healthy")
	l.hang("compute-1", "compute-1")
	l.waitHost(60*time.Second, "compute-1", "contested", "instanceha-rule")
	found := false
	for _, e := range l.events() {
		found = found || e.Kind == "HostClaimedTwice" && strings.Contains(e.Message, "rogue")
	}
	if !found {
		t.Error("no HostClaimedTwice event")
	}
}

// spoofLeave sends, from a UDP socket of the test's own that is no member,
// a memberlist user message carrying IHA's leave intent for node, as the
// attacker of issue 15 did (label header, no encryption).
func spoofLeave(t *testing.T, to, from, node string) {
	t.Helper()
	env, _ := json.Marshal(map[string]any{"v": 1, "t": "leave", "id": "spoof/" + node + "/1", "from": from, "node": node,
		"at": time.Now().UTC()})
	pkt := append([]byte{244, 3, 'i', 'h', 'a', 8, 'I'}, env...) // label "iha", userMsg, IHA's prefix
	c, err := net.Dial("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		if _, err := c.Write(pkt); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAttackSpoofedLeaveDoesNotHideAFailure is attack 6: a non-member
// sends the leader a leave intent for compute-1 over raw UDP; later
// compute-1 really dies. It is judged failed as a death (fast), never as
// a graceful leave. On the default mesh the packet is not even decrypted;
// on an unencrypted one (GOSSIP_INSECURE) it is rejected because it is
// not signed by compute-1's key, and the leader logs both.
func TestAttackSpoofedLeaveDoesNotHideAFailure(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		t.Run(fmt.Sprintf("insecure=%v", insecure), func(t *testing.T) {
			l := newMeshLab(t, insecure, false, "compute-1", "compute-2")
			l.agent("compute-1", "compute-1", l.keys.hostKey(t, "compute-1"))
			l.agent("compute-2", "compute-2", l.keys.hostKey(t, "compute-2"))
			l.waitHost(30*time.Second, "compute-1", "alive", "healthy")
			waitFor(t, 20*time.Second, "the leader to hold compute-1's proved claim", func() (bool, string) {
				for _, line := range strings.Split(l.ctl.log.String(), "\n") {
					if strings.Contains(line, "member proved which host it speaks for") && strings.Contains(line, "node=compute-1 ") {
						return true, ""
					}
				}
				return false, lastLines(l.ctl.log.String(), 3)
			}, l.ctl)
			spoofLeave(t, l.gossip, "compute-1", "compute-1")
			spoofLeave(t, l.gossip, "rogue", "compute-1")
			want := []string{"Decrypt packet failed"}
			if insecure {
				want = []string{`msg="gossip: message rejected"`, "type=leave", "from=compute-1", "about=compute-1", "unsigned"}
			}
			waitFor(t, 20*time.Second, "the leader to log the refused packet", func() (bool, string) {
				for _, line := range strings.Split(l.ctl.log.String(), "\n") {
					ok := true
					for _, w := range want {
						ok = ok && strings.Contains(line, w)
					}
					if ok {
						return true, line
					}
				}
				return false, lastLines(l.ctl.log.String(), 3)
			}, l.ctl)
			if insecure {
				waitFor(t, 20*time.Second, "the leader to log the leave announced by another member", func() (bool, string) {
					return strings.Contains(l.ctl.log.String(), "a member only announces its own"), lastLines(l.ctl.log.String(), 3)
				}, l.ctl)
			}
			died := time.Now()
			_ = l.agents["compute-1"].cmd.Process.Kill()
			l.sim.StopCompute("compute-1")
			l.waitHost(30*time.Second, "compute-1", "dead", "failed")
			t.Logf("compute-1 judged failed %v after its death", time.Since(died).Round(100*time.Millisecond))
			if strings.Contains(l.ctl.log.String(), "compute agent left gracefully") {
				t.Error("the spoofed leave made the death count as a graceful leave")
			}
		})
	}
}

// gateOf is what GET /v1/gate/host answers on the leader.
func (l *meshLab) gateOf(host string) api.Gate {
	l.t.Helper()
	resp, err := http.Get("http://" + l.ctl.apiAddr + "/v1/gate/" + host)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	var g api.Gate
	_ = json.NewDecoder(resp.Body).Decode(&g)
	return g
}

// TestAttackMeshAdvertisedControllerIsNeverAsked is attack 2: a member of
// the test's own joins the mesh with the (stolen) keyring as a
// "controller" advertising an API that allows everything. compute-1 died
// and its recovery is under way; when it boots, its gate asks only the
// controllers of its agent.yaml: the real leader's refusal keeps
// nova-compute down and the impostor's API is never asked. Listed by
// mistake in agent.yaml, its unsigned allow is no answer, and the gate says
// so naming it.
func TestAttackMeshAdvertisedControllerIsNeverAsked(t *testing.T) {
	l := startMeshLab(t, false, false, true, "compute-1", "compute-2")
	l.agent("compute-1", "compute-1", l.keys.hostKey(t, "compute-1"))
	l.agent("compute-2", "compute-2", l.keys.hostKey(t, "compute-2"))
	l.waitHost(30*time.Second, "compute-1", "alive", "healthy")
	var asked atomic.Int32
	impostorAPI := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		fmt.Fprint(w, `{"host":"compute-1","allow":true,"reason":"all clear"}`)
	}))
	t.Cleanup(impostorAPI.Close)
	m, err := gossip.New(gossip.Config{NodeName: "ctl-impostor", BindAddr: "127.0.0.1", Join: []string{l.gossip}, Label: "iha",
		KeyringFile: l.keys.keyring, Profile: gossip.FastProfile(), Logger: testlog.New(t, slog.LevelWarn),
		Meta: gossip.Meta{Role: gossip.RoleController, APIAddr: strings.TrimPrefix(impostorAPI.URL, "http://")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); m.Shutdown(); <-done })

	_ = l.agents["compute-1"].cmd.Process.Kill()
	l.sim.StopCompute("compute-1")
	waitFor(t, 60*time.Second, "the leader to hold compute-1's gate", func() (bool, string) {
		g := l.gateOf("compute-1")
		return !g.Allow && strings.Contains(g.Reason, "recovery"), fmt.Sprintf("%+v", g)
	}, l.ctl)

	gate := func(controllers ...string) (int, string) {
		y := fmt.Sprintf("nova_host: compute-1\nhost_key: %s\ncontrollers: [%s]\ngate_timeout: 3s\ngate_interval: 500ms\n",
			l.keys.hostKey(t, "compute-1"), strings.Join(controllers, ", "))
		path := filepath.Join(t.TempDir(), "agent.yaml")
		writeFile(t, path, []byte(y))
		return runOnce(t, time.Minute, nil, buildAgent(t), "gate", "-config", path)
	}
	code, out := gate("http://" + l.ctl.apiAddr)
	t.Logf("iha-agent gate → %d\n%s", code, out)
	if code != 1 || !strings.Contains(out, "must not start nova-compute yet: recovery") || !strings.Contains(out, "nova-compute is NOT started") {
		t.Errorf("the gate of compute-1: exit %d, want 1 with the leader's refusal", code)
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the impostor's API was asked %d times", n)
	}
	code, out = gate(impostorAPI.URL, "http://"+l.ctl.apiAddr)
	t.Logf("iha-agent gate (impostor listed first) → %d\n%s", code, out)
	if code != 1 || !strings.Contains(out, "WARNING: ignoring the answer of "+impostorAPI.URL) || !strings.Contains(out, "nova-compute is NOT started") {
		t.Errorf("with the impostor listed: exit %d, want 1 with a warning naming it", code)
	}
}

// TestGateWithATLSAPI: a leader whose status API serves TLS answers the
// gate of an agent configured with https:// and the CA (attack 3's setup,
// which used to fail silently); the mistakes are named: a controller
// without a scheme is a configuration error, http:// to the TLS listener
// and a CA that does not match are warnings naming the controller.
func TestGateWithATLSAPI(t *testing.T) {
	leaderBin, _ := buildBinaries(t)
	sim := newSim(t, "compute-1")
	ca := newPKI(t, "iha-api")
	cert, key := ca.issue(t, "ctl-1")
	c := &controller{name: "ctl-1", raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
	c.writeConfig(t, sim, map[string]string{"API_TLS_CERT": cert, "API_TLS_KEY": key})
	c.start(t, leaderBin)
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(ca.caFile)
	pool.AppendCertsFromPEM(pem)
	waitFor(t, 60*time.Second, "the TLS API to know a leader", func() (bool, string) {
		cl := &api.Client{Addrs: []string{"https://" + c.apiAddr}, HTTP: &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := cl.Cluster(ctx, false)
		if err != nil {
			return false, err.Error()
		}
		return got.Leader != "", got.Leader
	}, c)
	other := newPKI(t, "someone-else")
	gate := func(controller, caFile string, onNoAnswer string) (int, string) {
		y := fmt.Sprintf("nova_host: compute-1\ncontrollers: [%s]\ngate_timeout: 2s\ngate_interval: 500ms\ngate_on_no_answer: %s\n", controller, onNoAnswer)
		if caFile != "" {
			y += "api_ca: " + caFile + "\n"
		}
		path := filepath.Join(t.TempDir(), "agent.yaml")
		writeFile(t, path, []byte(y))
		return runOnce(t, time.Minute, nil, buildAgent(t), "gate", "-config", path)
	}
	for _, tc := range []struct {
		name, controller, ca, onNoAnswer string
		code                             int
		want                             []string
	}{
		{"https with the CA", "https://" + c.apiAddr, ca.caFile, "fail", 0, []string{"compute-1 may start nova-compute", "https://" + c.apiAddr}},
		{"no scheme", c.apiAddr, ca.caFile, "fail", 2, []string{"needs a scheme"}},
		{"http to the TLS listener", "http://" + c.apiAddr, ca.caFile, "fail", 1, []string{"http://" + c.apiAddr + ": HTTP 400: it serves HTTPS (write https://", "nova-compute is NOT started"}},
		{"a CA that does not match", "https://" + c.apiAddr, other.caFile, "fail", 1, []string{"https://" + c.apiAddr, "certificate", "nova-compute is NOT started"}},
	} {
		code, out := gate(tc.controller, tc.ca, tc.onNoAnswer)
		t.Logf("%s → %d\n%s", tc.name, code, out)
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d", tc.name, code, tc.code)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q", tc.name, w)
			}
		}
	}
}
