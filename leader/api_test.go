package leader_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/metrics"
	"github.com/ihaproject/iha/pkg/nova"
	"github.com/ihaproject/iha/pkg/novasim"
	"github.com/ihaproject/iha/pkg/secret"
)

var updateGolden = flag.Bool("update-api", false, "rewrite leader/testdata/api/*.golden.json")

const (
	apiCanaryRW       = "CanaryApiWrite-1f9a"
	apiCanaryRO       = "CanaryApiRead-77c2"
	apiCanaryKeystone = "CanaryKeystone-30d1"
)

// apiCluster is a 3-voter Raft group over TCP on 127.0.0.1 (the sandbox
// cluster), each member serving the status API on its own port.
type apiCluster struct {
	*sandbox.Cluster
	t     *testing.T
	s     config.Settings
	mu    sync.Mutex
	addrs map[string]string // member id → API host:port
	apis  map[string]*leader.API
	stop  map[string]context.CancelFunc
	seen  bytes.Buffer // every answer body, for the canary check
}

func newAPICluster(t *testing.T) *apiCluster {
	t.Helper()
	s := config.Defaults()
	s.Poll = time.Hour // one poll per term: the planted records stay as planted
	s.Delta = 2 * time.Second
	s.NodeName = "api"
	s.Disabled = true // and no recovery starts on its own
	s.APIToken, s.APIReadToken = secret.New(apiCanaryRW), secret.New(apiCanaryRO)
	c, err := sandbox.NewCluster(sandbox.ClusterOptions{Options: sandbox.Options{Settings: s, DataDir: t.TempDir(),
		Sim: novasim.Options{ReportInterval: 200 * time.Millisecond, ServiceDownTime: 2 * time.Second, NoStartupDelay: true,
			Password: apiCanaryKeystone}}})
	if err != nil {
		t.Fatal(err)
	}
	ac := &apiCluster{Cluster: c, t: t, s: s, addrs: map[string]string{}, apis: map[string]*leader.API{}, stop: map[string]context.CancelFunc{}}
	t.Cleanup(func() {
		ac.mu.Lock()
		for _, stop := range ac.stop {
			stop()
		}
		for _, a := range ac.apis {
			a.Close()
		}
		ac.mu.Unlock()
		c.Close()
	})
	c.AddCompute("compute-1", "nova")
	c.AddCompute("compute-2", "nova")
	c.Sim.AddScheduler("ctl")
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Members() {
		ac.serve(m)
	}
	ac.waitPublished()
	return ac
}

// serve starts member m's status API on a kernel-chosen port.
func (ac *apiCluster) serve(m *sandbox.Member) {
	ac.t.Helper()
	a := leader.NewAPI(leader.APIConfig{Node: m.Node(), Monitor: m.Monitor(), Settings: ac.s, Version: "test"})
	met := metrics.New(a.MetricsSource(), "test")
	srv := api.NewServer(api.Config{Backend: a, Token: secret.New(apiCanaryRW), ReadToken: secret.New(apiCanaryRO),
		Metrics: met.Handler(), EventPoll: 20 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ac.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if _, _, err := srv.Serve(ctx, ln); err != nil {
		ac.t.Fatal(err)
	}
	ac.mu.Lock()
	ac.addrs[m.ID], ac.apis[m.ID], ac.stop[m.ID] = ln.Addr().String(), a, cancel
	ac.mu.Unlock()
}

// waitPublished makes the current leader's FSM record the API address this
// test serves it on. The sandbox's monitors record a placeholder address
// ("api-<id>") because they start before the API listens; production sets
// Monitor.APIAddr from API_ADDR before Run.
func (ac *apiCluster) waitPublished() *sandbox.Member {
	ac.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		m, err := ac.WaitLeader(ctx, 30*time.Second)
		if err != nil {
			ac.t.Fatal(err)
		}
		n := m.Node()
		ac.mu.Lock()
		addr := ac.addrs[m.ID]
		ac.mu.Unlock()
		if n != nil && n.FSM().LeaderInfo().APIAddr == addr {
			// Followers forward with their replica's copy: wait for it.
			for _, o := range ac.Members() {
				if on := o.Node(); on != nil && o != m {
					waitApplied(ac.t, on, n.FSM().AppliedIndex())
				}
			}
			return m
		}
		if n != nil {
			_, _ = n.Apply(ctx, leader.CmdLeaderAPI, time.Now(), leader.LeaderAPICmd{NodeID: m.ID, APIAddr: addr})
		}
		select {
		case <-ctx.Done():
			ac.t.Fatal("leader API address never published")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (ac *apiCluster) addr(id string) string {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return ac.addrs[id]
}

func (ac *apiCluster) follower() *sandbox.Member {
	for _, m := range ac.Members() {
		if n := m.Node(); n != nil && !n.IsLeader() {
			return m
		}
	}
	ac.t.Fatal("no follower")
	return nil
}

// get fetches path from member id's API.
func (ac *apiCluster) get(id, path, token string) (int, []byte) {
	return ac.call(id, "GET", path, token, "")
}

func (ac *apiCluster) call(id, method, path, token, body string) (int, []byte) {
	ac.t.Helper()
	req, _ := http.NewRequest(method, "http://"+ac.addr(id)+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set(api.HeaderActor, "alice@ops")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ac.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	ac.mu.Lock()
	ac.seen.Write(b)
	ac.mu.Unlock()
	return resp.StatusCode, b
}

// t0 is the planted recovery's clock: fixed, so the golden files are.
var t0 = time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)

// plant commits a whole recovery of compute-9 that ended failed, with its
// steps and servers, and a skipped compute-8, at fixed times.
func (ac *apiCluster) plant(m *sandbox.Member) {
	ac.t.Helper()
	n := m.Node()
	ctx := context.Background()
	// The leader's startup reconciliation commits its takeover once; the
	// planted entries come after it, so their indexes are the same each run.
	deadline := time.Now().Add(30 * time.Second)
	for n.FSM().Settings().TakenOver.IsZero() {
		if time.Now().After(deadline) {
			ac.t.Fatal("the leader never recorded its startup reconciliation")
		}
		time.Sleep(10 * time.Millisecond)
	}
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	apply := func(ts float64, ct leader.CommandType, body any) any {
		ac.t.Helper()
		r, err := n.Apply(ctx, ct, at(ts), body)
		if err != nil {
			ac.t.Fatalf("%s: %v", ct, err)
		}
		return r
	}
	apply(0, leader.CmdDetect, leader.DetectCmd{Host: "compute-9", ServiceID: "svc-9", Zone: "nova", Level: 2,
		Evidence: leader.Evidence{Mode: "both", NovaState: "down", NovaUpdatedAt: at(-7), Stale: false, Source: "gossip", Note: "gossip dead since 02:59:55"}})
	op := apply(0.1, leader.CmdStepBegin, leader.StepBeginCmd{Host: "compute-9", Step: leader.StepFence}).(leader.OpID)
	apply(1.3, leader.CmdStepEnd, leader.StepEndCmd{Host: "compute-9", Step: leader.StepFence, OpID: op, OK: true, Detail: "ipmi: power off confirmed",
		Fence: &leader.FenceResult{Method: "ipmi", State: "off", At: at(1.3)}})
	op = apply(1.4, leader.CmdStepBegin, leader.StepBeginCmd{Host: "compute-9", Step: leader.StepDisable}).(leader.OpID)
	apply(1.6, leader.CmdStepEnd, leader.StepEndCmd{Host: "compute-9", Step: leader.StepDisable, OpID: op, OK: true, Detail: "forced down and disabled"})
	apply(1.7, leader.CmdPlan, leader.PlanCmd{Host: "compute-9", Servers: []*leader.ServerRecord{
		{ID: "srv-a", Name: "web-1", OrigStatus: "ACTIVE", From: "compute-9", State: leader.ServerPending},
		{ID: "srv-b", Name: "db-1", OrigStatus: "ACTIVE", From: "compute-9", State: leader.ServerPending},
		{ID: "srv-c", Name: "paused-1", OrigStatus: "PAUSED", From: "compute-9", State: leader.ServerSkipped, Error: "PAUSED servers are not evacuated"}}})
	op = apply(1.8, leader.CmdStepBegin, leader.StepBeginCmd{Host: "compute-9", Step: leader.StepEvacuate, ServerID: "srv-a"}).(leader.OpID)
	apply(2.0, leader.CmdStepEnd, leader.StepEndCmd{Host: "compute-9", Step: leader.StepEvacuate, ServerID: "srv-a", OpID: op, OK: true,
		ServerState: leader.ServerRequested, MigrationID: 41, To: "compute-2"})
	apply(3.5, leader.CmdServer, leader.ServerCmd{Host: "compute-9", ServerID: "srv-a", State: leader.ServerDone, To: "compute-2"})
	op = apply(1.9, leader.CmdStepBegin, leader.StepBeginCmd{Host: "compute-9", Step: leader.StepEvacuate, ServerID: "srv-b"}).(leader.OpID)
	apply(2.2, leader.CmdStepEnd, leader.StepEndCmd{Host: "compute-9", Step: leader.StepEvacuate, ServerID: "srv-b", OpID: op, OK: false,
		ServerState: leader.ServerFailed, Detail: "nova: 409 Conflict: no valid host"})
	apply(4, leader.CmdPhase, leader.PhaseCmd{Host: "compute-9", Phase: leader.PhaseFailed, Reason: "1 server could not be evacuated"})
	apply(5, leader.CmdDetect, leader.DetectCmd{Host: "compute-8", ServiceID: "svc-8", Level: 2, Phase: leader.PhaseSkipped,
		Reason: "THRESHOLD exceeded", Evidence: leader.Evidence{Mode: "both", NovaState: "down", Source: "nova", Stale: true}})
}

// golden compares got (indented JSON) with testdata/api/name.golden.json.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	var v any
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", name, err, got)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	norm := buf.Bytes()
	path := filepath.Join("testdata", "api", name+".golden.json")
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, norm, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./leader -run TestAPI -update-api)", err)
	}
	if !bytes.Equal(norm, want) {
		t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", name, path, norm, want)
	}
}

// volatile replaces the values that change from run to run (ports, node
// ids, indexes, clocks) with their type, keeping the shape.
func volatile(b []byte, keys ...string) []byte {
	var v any
	_ = json.Unmarshal(b, &v)
	var walk func(any)
	walk = func(x any) {
		switch t := x.(type) {
		case map[string]any:
			for k, val := range t {
				for _, vk := range keys {
					if k == vk {
						switch val.(type) {
						case string:
							t[k] = "<string>"
						case float64:
							t[k] = "<number>"
						case bool:
							t[k] = "<bool>"
						}
					}
				}
				walk(t[k])
			}
		case []any:
			for _, e := range t {
				walk(e)
			}
		}
	}
	walk(v)
	out, _ := json.Marshal(v)
	return out
}

func TestAPIEndpointShapesOverRealHTTP(t *testing.T) {
	ac := newAPICluster(t)
	lead := ac.waitPublished()
	ac.plant(lead)
	fol := ac.follower()
	waitApplied(t, fol.Node(), lead.Node().FSM().AppliedIndex())

	fresh := []string{"node", "leader_id", "applied_index", "last_contact", "role"}
	cases := []struct {
		name, path string
		volatile   []string
	}{
		{"cluster", "/v1/cluster", append(fresh, "raft_state", "term", "commit_index", "leader", "leader_api", "id", "address", "api_addr", "leader", "health", "last_poll", "nova_ready")},
		{"hosts", "/v1/hosts", fresh},
		{"host-compute-9", "/v1/hosts/compute-9", fresh},
		{"events-compute-9", "/v1/events?host=compute-9", fresh},
		{"events-limit-2", "/v1/events?limit=2", append(fresh, "seq", "next")},
		{"gate-compute-9", "/v1/gate/compute-9", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Every endpoint answers the same shape from a follower.
			for _, m := range []*sandbox.Member{lead, fol} {
				code, body := ac.get(m.ID, c.path, apiCanaryRO)
				if code != 200 {
					t.Fatalf("%s on %s: %d %s", c.path, m.ID, code, body)
				}
				// The leader's answer and a follower's differ in freshness
				// (last contact) and in what the leader knows of Nova.
				name := c.name + "-" + map[bool]string{true: "leader", false: "follower"}[m == lead]
				golden(t, name, volatile(body, c.volatile...))
			}
		})
	}
	code, body := ac.get(fol.ID, "/v1/hosts/compute-404", apiCanaryRO)
	if code != 404 || !strings.Contains(string(body), "compute-404") {
		t.Fatalf("unknown host: %d %s", code, body)
	}
	code, body = ac.get(fol.ID, "/v1/events?since=x", apiCanaryRO)
	if code != 400 || !strings.Contains(string(body), `"parameter": "since"`) {
		t.Fatalf("malformed since: %d %s", code, body)
	}
	ac.checkCanaries()
}

func waitApplied(t *testing.T, n *leader.Node, idx uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n.FSM().AppliedIndex() < idx {
		if time.Now().After(deadline) {
			t.Fatalf("replica stuck at %d < %d", n.FSM().AppliedIndex(), idx)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (ac *apiCluster) checkCanaries() {
	ac.t.Helper()
	ac.mu.Lock()
	defer ac.mu.Unlock()
	for _, c := range []string{apiCanaryRW, apiCanaryRO, apiCanaryKeystone} {
		if bytes.Contains(ac.seen.Bytes(), []byte(c)) {
			ac.t.Fatalf("a secret (%s…) appeared in an API answer", c[:10])
		}
	}
}

func TestAPIMutationsNeedTheWriteTokenAndAreAudited(t *testing.T) {
	ac := newAPICluster(t)
	lead := ac.waitPublished()
	ac.plant(lead)
	fol := ac.follower()

	cases := []struct {
		name, path, token, body string
		want                    int
	}{
		{"no token", "/v1/pause", "", `{"reason":"x"}`, 401},
		{"read-only token", "/v1/pause", apiCanaryRO, `{"reason":"x"}`, 403},
		{"read-only token on retry", "/v1/hosts/compute-9/retry", apiCanaryRO, ``, 403},
		{"retry of a skipped host", "/v1/hosts/compute-8/retry", apiCanaryRW, ``, 409},
		{"retry of an unknown host", "/v1/hosts/compute-404/retry", apiCanaryRW, ``, 404},
	}
	for _, c := range cases {
		for _, id := range []string{lead.ID, fol.ID} {
			if code, body := ac.call(id, "POST", c.path, c.token, c.body); code != c.want {
				t.Errorf("%s on %s: %d, want %d: %s", c.name, id, code, c.want, body)
			}
		}
	}
	if ev := lead.Node().FSM().Events(0, "", 0); len(ev) != 0 && ev[len(ev)-1].Kind == "Paused" {
		t.Fatal("a refused pause was applied")
	}

	// Accepted, through the follower (forwarded to the leader): each writes
	// its audit event naming who asked.
	accepted := []struct {
		path, body, kind, host string
	}{
		{"/v1/pause", `{"reason":"network work"}`, "Paused", ""},
		{"/v1/resume", ``, "Resumed", ""},
		{"/v1/hosts/compute-1/maintenance", `{"on":true,"reason":"disk swap"}`, "MaintenanceOn", "compute-1"},
		{"/v1/hosts/compute-1/maintenance", `{"on":false}`, "MaintenanceOff", "compute-1"},
		{"/v1/hosts/compute-9/confirm-fenced", `{"reason":"pulled the power cord"}`, "FencingConfirmedByOperator", "compute-9"},
		{"/v1/hosts/compute-9/retry", ``, "RecoveryRetried", "compute-9"},
	}
	for _, c := range accepted {
		code, body := ac.call(fol.ID, "POST", c.path, apiCanaryRW, c.body)
		if code != 200 {
			t.Fatalf("%s: %d %s", c.path, code, body)
		}
		var res api.MutationResult
		if err := json.Unmarshal(body, &res); err != nil || !res.OK || res.EventSeq == 0 || res.Freshness.Role != "Leader" {
			t.Fatalf("%s: %+v %v", c.path, res, err)
		}
		var found bool
		for _, e := range lead.Node().FSM().Events(res.EventSeq-1, "", 1) {
			found = e.Seq == res.EventSeq && e.Kind == c.kind && e.Host == c.host && strings.Contains(e.Message, "alice@ops from 127.0.0.1")
			if !found {
				t.Errorf("%s: audit event %+v", c.path, e)
			}
		}
		if !found {
			t.Errorf("%s: no audit event %d", c.path, res.EventSeq)
		}
	}
	// The follower's replica shows the last one (eventually: it answers
	// from its replica), the consistent read at once.
	code, body := ac.get(fol.ID, "/v1/hosts/compute-9?consistent=true", apiCanaryRO)
	if code != 200 || !strings.Contains(string(body), `"confirmed_fenced"`) || !strings.Contains(string(body), `"consistent": true`) {
		t.Fatalf("consistent read after confirm-fenced: %d %s", code, body)
	}
	ac.checkCanaries()
}

// TestAPIHostAnswersEveryHostNovaKnows: `GET /v1/hosts/{host}` answers a
// host with no recovery record from what the leader's reconciler last saw
// (its Nova listing and its verdict with the evidence, handed over as the
// Observer), a follower says where to ask instead of inventing it, and a
// consistent read through the follower reaches the leader's answer.
func TestAPIHostAnswersEveryHostNovaKnows(t *testing.T) {
	ac := newAPICluster(t)
	lead := ac.waitPublished()
	fol := ac.follower()
	ac.mu.Lock()
	la := ac.apis[lead.ID]
	ac.mu.Unlock()
	listed := t0.Add(29 * time.Second)
	la.ComputeServices([]nova.Service{
		{ID: "svc-1", Host: "compute-1", Zone: "nova", Status: "enabled", State: "up", UpdatedAt: t0.Add(28 * time.Second)},
		{ID: "svc-2", Host: "compute-2", Zone: "nova", Status: "enabled", State: "up", UpdatedAt: t0.Add(20 * time.Second)},
	}, listed)
	la.Verdicts(map[string]leader.Verdict{"compute-1": leader.VerdictHealthy, "compute-2": leader.VerdictNovaBroken}, listed)
	la.Judgements(map[string]leader.Evidence{
		"compute-1": {Mode: "both", Source: "nova", Verdict: "healthy", NovaState: "up", NovaUpdatedAt: t0.Add(28 * time.Second), Note: "agent alive, nova up"},
		"compute-2": {Mode: "both", Source: "nova", Verdict: "nova-compute-broken", NovaState: "up", Stale: true, Note: "agent alive in the mesh but nova state up, updated_at …: nova-compute is broken on a live host"},
	}, listed)

	var h api.Host
	code, body := ac.get(lead.ID, "/v1/hosts/compute-1", apiCanaryRO)
	if err := json.Unmarshal(body, &h); code != 200 || err != nil {
		t.Fatalf("leader, healthy host: %d %s", code, body)
	}
	if h.Verdict != "healthy" || h.Phase != "" || h.Nova == nil || h.Nova.State != "up" || !h.Nova.ListedAt.Equal(listed) ||
		h.Judged == nil || h.Judged.Note != "agent alive, nova up" || !h.Gate.Allow || h.Zone != "nova" || h.ServiceID != "svc-1" {
		t.Fatalf("leader, healthy host: %s", body)
	}
	if strings.Contains(string(body), `"evidence"`) || strings.Contains(string(body), `"detected_at"`) {
		t.Fatalf("a host without a record shows a zero record: %s", body)
	}
	code, body = ac.get(lead.ID, "/v1/hosts/compute-2", apiCanaryRO)
	if err := json.Unmarshal(body, &h); code != 200 || err != nil || h.Verdict != "nova-compute-broken" || h.Judged == nil || !h.Judged.Stale {
		t.Fatalf("leader, nova-compute broken: %d %s", code, body)
	}
	code, body = ac.get(lead.ID, "/v1/hosts/compute-404", apiCanaryRO)
	if code != 404 || !strings.Contains(string(body), "unknown to Nova (as the leader last listed it)") {
		t.Fatalf("leader, unknown host: %d %s", code, body)
	}
	// A follower polls no Nova and has no mesh here: it does not know
	// compute-1, and says where to ask.
	code, body = ac.get(fol.ID, "/v1/hosts/compute-1", apiCanaryRO)
	if code != 404 || !strings.Contains(string(body), "ask the leader with --consistent") {
		t.Fatalf("follower: %d %s", code, body)
	}
	code, body = ac.get(fol.ID, "/v1/hosts/compute-1?consistent=true", apiCanaryRO)
	if err := json.Unmarshal(body, &h); code != 200 || err != nil || h.Verdict != "healthy" || h.Freshness.Node != lead.ID {
		t.Fatalf("follower, consistent: %d %s", code, body)
	}
	ac.checkCanaries()
}

func TestAPIFollowerReadsSayHowFreshTheyAre(t *testing.T) {
	ac := newAPICluster(t)
	lead := ac.waitPublished()
	fol := ac.follower()
	code, body := ac.get(fol.ID, "/v1/cluster", apiCanaryRO)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var c api.Cluster
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	f := c.Freshness
	if f.Node != fol.ID || f.Role != "Follower" || f.LeaderID != lead.ID || f.AppliedIndex == 0 || f.LastContact.IsZero() || f.Consistent {
		t.Fatalf("follower freshness %+v", f)
	}
	if len(c.Voters) != 3 || c.Leader != lead.ID || c.LeaderAPI != ac.addr(lead.ID) {
		t.Fatalf("cluster %+v", c)
	}
	code, body = ac.get(fol.ID, "/v1/cluster?consistent=true", apiCanaryRO)
	if err := json.Unmarshal(body, &c); code != 200 || err != nil || c.Freshness.Node != lead.ID || !c.Freshness.Consistent {
		t.Fatalf("consistent read: %d %+v", code, c.Freshness)
	}
	if code, body := ac.get(fol.ID, "/readyz", ""); code != 200 {
		t.Fatalf("follower readyz: %d %s", code, body)
	}
	if code, body := ac.get(lead.ID, "/readyz", ""); code != 200 {
		t.Fatalf("leader readyz: %d %s", code, body)
	}
}

// Consistent reads through the client, while the leader is stopped and a
// new one takes over: every answer is either a consistent read from the
// leader of the moment or a clear "no leader" 503; after the election, they
// succeed again.
func TestAPIConsistentReadsDuringALeaderChange(t *testing.T) {
	ac := newAPICluster(t)
	lead := ac.waitPublished()
	var addrs []string
	for _, m := range ac.Members() {
		addrs = append(addrs, ac.addr(m.ID))
	}
	cl := &api.Client{Addrs: addrs, Token: apiCanaryRO}
	ctx := context.Background()
	if _, err := cl.Cluster(ctx, true); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var mu sync.Mutex
	var ok, unavailable int
	var bad []string
	go func() {
		defer close(done)
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			c, err := cl.Cluster(ctx, true)
			mu.Lock()
			var se *api.StatusError
			switch {
			case err == nil && c.Freshness.Consistent && c.Freshness.Role == "Leader":
				ok++
				if c.Freshness.Node != lead.ID {
					mu.Unlock()
					return // the new leader answered
				}
			case errors.As(err, &se) && se.Code == 503, errors.Is(err, api.ErrUnreachable):
				unavailable++
			case err != nil:
				bad = append(bad, err.Error())
			default:
				bad = append(bad, fmt.Sprintf("200 with freshness %+v", c.Freshness))
			}
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	lead.Stop(true)
	// The new leader records its own placeholder address; publish the real one.
	ac.waitPublished()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("answers that were neither consistent nor 503: %v", bad)
	}
	c, err := cl.Cluster(ctx, true)
	if err != nil || c.Freshness.Node == lead.ID {
		t.Fatalf("after the change: %+v %v", c.Freshness, err)
	}
	t.Logf("%d consistent answers, %d unavailable during the change", ok, unavailable)
}

func TestAPIMetricsParseAndExposeStepHistograms(t *testing.T) {
	ac := newAPICluster(t)
	lead := ac.waitPublished()
	ac.plant(lead)
	fol := ac.follower()
	waitApplied(t, fol.Node(), lead.Node().FSM().AppliedIndex())
	for _, id := range []string{lead.ID, fol.ID} {
		code, body := ac.get(id, "/metrics", "")
		if code != 200 {
			t.Fatalf("%d", code)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("/metrics of %s does not parse: %v", id, err)
		}
		step := fams["iha_recovery_step_duration_seconds"]
		if step == nil {
			t.Fatalf("no step histogram on %s", id)
		}
		var fence uint64
		for _, m := range step.Metric {
			for _, l := range m.Label {
				if l.GetName() == "step" && l.GetValue() == "fence" {
					fence += m.Histogram.GetSampleCount()
				}
			}
		}
		if fence != 1 {
			t.Errorf("%s: fence steps %d, want 1", id, fence)
		}
		for _, name := range []string{"instanceha_host_down_total", "instanceha_fencing_total", "iha_raft_term", "iha_mesh_members",
			"iha_detection_latency_seconds", "instanceha_instance_evacuation_duration_seconds", "instanceha_hosts_processing"} {
			if fams[name] == nil {
				t.Errorf("%s: %s missing", id, name)
			}
		}
	}
	ac.checkCanaries()
}
