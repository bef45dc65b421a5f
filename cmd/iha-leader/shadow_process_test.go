package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/redfish/redfishsim"
	"github.com/ihaproject/iha/internal/testaddr"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/novasim"
)

// countingBMC is the shadow's way to a BMC: a proxy that forwards to the
// real (simulated) BMC and counts every request that could change it.
type countingBMC struct {
	srv     *httptest.Server
	mu      sync.Mutex
	changes []string
	reads   int
}

func newCountingBMC(t *testing.T, target string) *countingBMC {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	c := &countingBMC{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			c.reads++
		} else {
			c.changes = append(c.changes, r.Method+" "+r.URL.Path)
		}
		c.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *countingBMC) counts() ([]string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.changes...), c.reads
}

func hostPort(t *testing.T, raw string) (string, string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname(), u.Port()
}

// novaWriteRoutes are novasim's routes that change the cloud.
var novaWriteRoutes = []string{novasim.RouteServiceUpdate, novasim.RouteEvacuate, novasim.RouteLock, novasim.RouteUnlock,
	novasim.RouteResetState, novasim.RouteStop, novasim.RouteStart, novasim.RouteServerCreate, novasim.RouteServerDelete,
	novasim.RouteAggregateAction}

// TestShadowQuorumBesideAnActingAgentNeverActs is the end-to-end proof of
// shadow mode with real processes: on one simulated cloud (novasim, one
// simulated Redfish BMC per compute), an acting agent (an iha-leader
// quorum of one: it writes InstanceHA's force-downs, marker strings and
// evacuations into Nova, and fences through the BMCs) recovers two hung
// computes, while a shadow quorum of three iha-leader processes with
// SHADOW on watches the same cloud through its own Keystone identity (an
// application credential) and its own way to each BMC (counting proxies).
// The shadow's leader is stopped mid-incident: its successor carries on.
//
// The shadow's configuration differs from the actor's in one rule (it
// evacuates untagged images too): c1 carries only tagged servers (the two
// sides agree), c2 one tagged and one untagged (they disagree on the
// servers). Asserted: `iha incidents` (the real CLI) lists both incidents
// with IHA's would-be decisions and the actor's actions observed in Nova,
// the agreement on c1 and the servers disagreement on c2; novasim's
// request log holds no write by the shadow's identity; its BMC proxies saw
// no request that could change a power state; each BMC's history holds
// exactly the actor's power-off and power-on.
func TestShadowQuorumBesideAnActingAgentNeverActs(t *testing.T) {
	leaderBin, cliBin := buildBinaries(t)
	sim, err := novasim.New(novasim.Options{Password: "change-me", NoStartupDelay: true, ReportInterval: time.Second,
		ServiceDownTime: 3 * time.Second, EvacuationDelay: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	hosts := []string{"c1", "c2", "c3", "c4", "c5"}
	for _, h := range hosts {
		sim.AddCompute(h, "nova")
	}
	sim.AddScheduler("controller-0")
	tagged := sim.AddImage(novasim.Image{Name: "cirros-evacuable", Tags: []string{"evacuable"}})
	plain := sim.AddImage(novasim.Image{Name: "debian-plain"})
	flavor := sim.AddFlavor(novasim.Flavor{Name: "m1.small"})
	servers := map[string]string{}
	for _, s := range []struct{ name, host, image string }{
		{"web-1", "c1", tagged}, {"web-2", "c1", tagged}, {"db-1", "c2", tagged}, {"scratch-1", "c2", plain}, {"app-1", "c3", tagged},
	} {
		servers[sim.AddServer(novasim.ServerSpec{Name: s.name, Host: s.host, ImageID: s.image, FlavorID: flavor, Status: "ACTIVE"})] = s.name
	}

	// One BMC per compute; powering a system off stops its nova-compute,
	// powering it on starts it again.
	bmcs := map[string]*redfishsim.Server{}
	proxies := map[string]*countingBMC{}
	var actorFencing, shadowFencing strings.Builder
	actorFencing.WriteString("FencingConfig:\n")
	shadowFencing.WriteString("FencingConfig:\n")
	for _, h := range hosts {
		b, err := redfishsim.Start(redfishsim.Options{Username: "root", Password: "bmc-secret", TransitionDelay: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		host := h
		b.OnTransition(func(tr redfishsim.Transition) {
			switch tr.To {
			case fence.PowerOff:
				sim.StopCompute(host)
			case fence.PowerOn:
				sim.StartCompute(host)
			}
		})
		bmcs[h], proxies[h] = b, newCountingBMC(t, b.URL())
		ph, pp := hostPort(t, proxies[h].srv.URL)
		fmt.Fprintf(&actorFencing, "  %s:\n    agent: redfish\n    ipaddr: %s\n    ipport: \"%d\"\n    login: root\n    passwd: bmc-secret\n    uuid: %s\n",
			h, b.Host(), b.Port(), b.UUIDs()[0])
		fmt.Fprintf(&shadowFencing, "  %s:\n    agent: redfish\n    ipaddr: %s\n    ipport: \"%s\"\n    login: root\n    passwd: bmc-secret\n    uuid: %s\n",
			h, ph, pp, b.UUIDs()[0])
	}

	common := map[string]string{"POLL": "15", "DELTA": "10", "NOVA_REPORT_INTERVAL": "1", "FENCING_TIMEOUT": "10",
		"EVACUATION_TIMEOUT": "60", "EVACUATION_GRACE": "5", "NOVA_API_TIMEOUT": "5", "TAGGED_FLAVORS": "false", "TAGGED_AGGREGATES": "false",
		"DETECTION_MODE": "nova", "LOGLEVEL": "INFO"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range common {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	// The actor: InstanceHA's stand-in, acting (INSTANCEHA_DISABLED=False).
	actor := &controller{name: "actor-1", raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
	actor.writeConfig(t, sim, with(map[string]string{"RAFT_PEERS": "actor-1=" + actor.raftAddr}))
	writeFile(t, filepath.Join(actor.confDir, "fencing.yaml"), []byte(actorFencing.String()))
	actor.extraEnv = []string{"INSTANCEHA_DISABLED=False"}

	// The shadow quorum: SHADOW on, TAGGED_IMAGES off, an application
	// credential, the BMCs through the counting proxies.
	shadow := make([]*controller, 3)
	var peers []string
	for i := range shadow {
		shadow[i] = &controller{name: fmt.Sprintf("shadow-%d", i+1), raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t)}
		peers = append(peers, shadow[i].name+"="+shadow[i].raftAddr)
	}
	decisionLogs := map[*controller]string{}
	for _, c := range shadow {
		decisionLogs[c] = filepath.Join(t.TempDir(), "decisions")
		c.writeConfig(t, sim, with(map[string]string{"RAFT_PEERS": strings.Join(peers, ","), "SHADOW": "true", "TAGGED_IMAGES": "false",
			"DECISION_LOG": decisionLogs[c]}))
		writeFile(t, filepath.Join(c.confDir, "clouds.yaml"), []byte(fmt.Sprintf(`clouds:
  overcloud:
    auth_type: v3applicationcredential
    auth:
      auth_url: %s
      application_credential_id: iha-appcred-id
    region_name: regionOne
    interface: internal
    identity_api_version: 3
`, sim.AuthURL())))
		writeFile(t, filepath.Join(c.confDir, "secure.yaml"), []byte("clouds:\n  overcloud:\n    auth:\n      application_credential_secret: appcred-secret\n"))
		writeFile(t, filepath.Join(c.confDir, "fencing.yaml"), []byte(shadowFencing.String()))
		c.extraEnv = []string{"INSTANCEHA_DISABLED=False"} // SHADOW alone must keep it from acting
	}

	client := func(c *controller) *api.Client {
		return &api.Client{Addrs: []string{"http://" + c.apiAddr}, Token: processToken, Actor: "process-test", HTTP: &http.Client{Timeout: 10 * time.Second}}
	}
	leaderOf := func(cs []*controller) (*controller, string) {
		for _, c := range cs {
			select {
			case <-c.exited:
				continue
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			cl, err := client(c).Cluster(ctx, false)
			cancel()
			if err != nil {
				continue
			}
			if cl.Leader == c.name && cl.NovaReady != nil && *cl.NovaReady {
				if !cl.Shadow {
					t.Fatalf("%s leads but is not in shadow mode", c.name)
				}
				return c, ""
			}
		}
		return nil, "no shadow controller leads with Nova ready"
	}
	incidents := func(c *controller) (map[string]api.Incident, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		incs, err := client(c).Incidents(ctx, api.IncidentQuery{}, true)
		if err != nil {
			return nil, err.Error()
		}
		m := map[string]api.Incident{}
		for _, i := range incs.Incidents {
			m[i.Host] = i
		}
		b, _ := json.Marshal(incs.Incidents)
		return m, string(b)
	}

	actor.start(t, leaderBin)
	for _, c := range shadow {
		c.start(t, leaderBin)
	}
	all := append([]*controller{actor}, shadow...)
	waitFor(t, 90*time.Second, "the actor leading with Nova ready", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cl, err := client(actor).Cluster(ctx, false)
		if err != nil {
			return false, err.Error()
		}
		return cl.Leader == actor.name && cl.NovaReady != nil && *cl.NovaReady && !cl.Shadow, fmt.Sprintf("%+v", cl.Config)
	}, all...)
	var first *controller
	waitFor(t, 90*time.Second, "a shadow leader with Nova ready", func() (bool, string) {
		var why string
		first, why = leaderOf(shadow)
		return first != nil, why
	}, all...)

	hungAt := time.Now()
	sim.StopCompute("c1")
	sim.StopCompute("c2")
	t.Logf("c1 and c2 hung at %s", hungAt.UTC().Format("15:04:05.000"))

	// The shadow decides on both; then its leader stops (a graceful
	// handover) while the actor is still at work.
	waitFor(t, 90*time.Second, "the shadow's decisions on c1 and c2", func() (bool, string) {
		m, detail := incidents(first)
		return m["c1"].IHAWhat != "" && !m["c1"].IHAAt.IsZero() && !m["c2"].IHAAt.IsZero(), detail
	}, all...)
	t.Logf("stopping the shadow leader %s mid-incident", first.name)
	_ = first.cmd.Process.Signal(syscall.SIGTERM)
	<-first.exited
	rest := []*controller{}
	for _, c := range shadow {
		if c != first {
			rest = append(rest, c)
		}
	}
	var second *controller
	waitFor(t, 60*time.Second, "a new shadow leader", func() (bool, string) {
		var why string
		second, why = leaderOf(rest)
		return second != nil, why
	}, append([]*controller{actor}, rest...)...)
	t.Logf("new shadow leader %s", second.name)

	// The actor recovers both hosts; the new shadow leader sees it in Nova
	// and closes both incidents once the hosts are back.
	var incs map[string]api.Incident
	waitFor(t, 150*time.Second, "both incidents closed, with the actor's evacuations observed", func() (bool, string) {
		m, detail := incidents(second)
		incs = m
		return len(m["c1"].ActorServers) == 2 && len(m["c2"].ActorServers) == 1 && !m["c1"].Closed.IsZero() && !m["c2"].Closed.IsZero(), detail
	}, append([]*controller{actor}, rest...)...)

	// What the CLI shows (real binary, JSON and the table).
	out, err := exec.Command(cliBin, "incidents", "--addr", second.apiAddr, "-o", "json").Output()
	if code := exitOf(err); code != 1 {
		t.Fatalf("iha incidents -o json: exit %d (want 1: one incident disagrees): %v\n%s", code, err, out)
	}
	var listed api.Incidents
	if err := json.Unmarshal(out, &listed); err != nil || !listed.Shadow || len(listed.Incidents) != 2 {
		t.Fatalf("iha incidents -o json: %v\n%s", err, out)
	}
	table, _ := exec.Command(cliBin, "incidents", "--addr", second.apiAddr, "-o", "wide").Output()
	t.Logf("iha incidents -o wide:\n%s", table)

	names := func(ids []string) string {
		var n []string
		for _, id := range ids {
			n = append(n, servers[id])
		}
		sort.Strings(n)
		return strings.Join(n, ",")
	}
	c1, c2 := incs["c1"], incs["c2"]
	if !c1.Agree || names(c1.IHAServers) != "web-1,web-2" || names(c1.ActorServers) != "web-1,web-2" {
		t.Errorf("c1: agree %v, IHA %s, actor %s, disagreements %+v", c1.Agree, names(c1.IHAServers), names(c1.ActorServers), c1.Disagreements)
	}
	if c2.Agree || names(c2.IHAServers) != "db-1,scratch-1" || names(c2.ActorServers) != "db-1" {
		t.Errorf("c2: agree %v, IHA %s, actor %s", c2.Agree, names(c2.IHAServers), names(c2.ActorServers))
	}
	kinds := map[string]bool{}
	for _, d := range c2.Disagreements {
		kinds[d.Kind] = true
	}
	if !kinds["servers"] {
		t.Errorf("c2's disagreements lack the servers: %+v", c2.Disagreements)
	}
	for _, i := range []api.Incident{c1, c2} {
		if i.LeadSeconds == nil || i.ActorAt.IsZero() || i.IHAAt.IsZero() {
			t.Errorf("%s: both sides' times are not there: IHA %s, actor %s", i.Host, i.IHAAt, i.ActorAt)
			continue
		}
		// Both poll every 15 s: the shadow decides within a poll of the
		// actor's verdict, whose first action in Nova follows its fence.
		if l := *i.LeadSeconds; l < -16 || l > 20 {
			t.Errorf("%s: lead %.1f s is beyond a poll interval", i.Host, l)
		}
		var seen []string
		for _, o := range i.Actor {
			seen = append(seen, o.Kind)
		}
		t.Logf("%s: IHA %s at %s; actor %s at %s (lead %+.1fs); observed %v", i.Host, i.IHAWhat, i.IHAAt.Format("15:04:05.000"),
			i.ActorWhat, i.ActorAt.Format("15:04:05.000"), *i.LeadSeconds, seen)
	}

	// The first shadow leader's decision log, replayed offline by this
	// build (the real CLI): the same decisions. With THRESHOLD 30 (2 of 5
	// computes is 40 %) both fences become skips. With the actor's tag rule
	// (TAGGED_IMAGES true) the replay needs the images, which a log
	// recorded without that rule does not hold: it says so.
	if code, res := replayed(t, cliBin, decisionLogs[first]); code != 0 || res["differences"].(float64) != 0 || len(res["recorded"].([]any)) < 4 {
		t.Errorf("iha replay of %s's log: exit %d, %v differences, %d decisions recorded, notes %v", first.name, code, res["differences"], len(res["recorded"].([]any)), res["notes"])
	}
	diffs := func(res map[string]any) []string {
		var out []string
		for _, r := range res["rows"].([]any) {
			row := r.(map[string]any)
			if d, _ := row["differs"].(string); d != "" {
				out = append(out, fmt.Sprintf("%s %s: %s", row["host"], row["kind"], d))
			}
		}
		sort.Strings(out)
		return out
	}
	code, res := replayed(t, cliBin, decisionLogs[first], "--set", "THRESHOLD=30")
	got := strings.Join(diffs(res), "; ")
	if code != 1 || !strings.Contains(got, "c1 fence: only in the recording") || !strings.Contains(got, "c2 fence: only in the recording") ||
		!strings.Contains(got, "c1 skip: only in the replay") || !strings.Contains(got, "c2 skip: only in the replay") {
		t.Errorf("iha replay --set THRESHOLD=30: exit %d, differences %s", code, got)
	}
	t.Logf("replayed with THRESHOLD 30: %s", got)
	_, res = replayed(t, cliBin, decisionLogs[first], "--set", "TAGGED_IMAGES=true")
	if m := fmt.Sprint(res["missing"]); !strings.Contains(m, "images") {
		t.Errorf("iha replay --set TAGGED_IMAGES=true over a log without the images: missing %s, differences %v", m, diffs(res))
	}

	// Nothing changed by the shadow: novasim's request log by identity, the
	// BMC proxies, and each BMC's own history.
	shadowID, actorID := novasim.AppCredIdentity("iha-appcred-id"), novasim.UserIdentity("admin")
	if n := sim.CallsBy(shadowID, novasim.RouteServicesList); n == 0 {
		t.Fatalf("the shadow's identity made no Nova read: the request log does not see it")
	}
	for _, r := range novaWriteRoutes {
		if n := sim.CallsBy(shadowID, r); n != 0 {
			t.Errorf("the shadow wrote to Nova: %d × %s", n, r)
		}
	}
	if sim.CallsBy(actorID, novasim.RouteEvacuate) != 3 || sim.CallsBy(actorID, novasim.RouteServiceUpdate) == 0 {
		t.Errorf("the actor's writes: %d evacuations (want 3), %d service updates", sim.CallsBy(actorID, novasim.RouteEvacuate), sim.CallsBy(actorID, novasim.RouteServiceUpdate))
	}
	for _, h := range hosts {
		changes, reads := proxies[h].counts()
		if len(changes) != 0 {
			t.Errorf("the shadow sent %s's BMC requests that change it: %v", h, changes)
		}
		var resets []string
		for _, r := range bmcs[h].Resets() {
			resets = append(resets, r.ResetType)
		}
		want := ""
		if h == "c1" || h == "c2" {
			want = "ForceOff,On"
		}
		if got := strings.Join(resets, ","); got != want {
			t.Errorf("%s's BMC resets %q, want %q (the actor's only)", h, got, want)
		}
		t.Logf("%s: shadow BMC reads %d, changes %d; BMC resets %v", h, reads, len(changes), resets)
	}
}

// replayed runs `iha replay` over a decision log directory.
func replayed(t *testing.T, cliBin, dir string, args ...string) (int, map[string]any) {
	t.Helper()
	out, err := exec.Command(cliBin, append([]string{"replay", dir, "-o", "json"}, args...)...).Output()
	var res map[string]any
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		t.Fatalf("iha replay %s %v: %v (%v)\n%s", dir, args, jerr, err, out)
	}
	return exitOf(err), res
}

// exitOf is a command's exit status (0 when err is nil).
func exitOf(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
