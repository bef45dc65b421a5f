package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/secret"
)

// fakeBackend is a hand-written Backend whose behaviour tests set.
type fakeBackend struct {
	mu        sync.Mutex
	node      string
	leaderAPI string
	self      bool
	events    []Event
	hosts     map[string]Host
	mutations []Mutation
	reads     int // consistent reads confirmed
	ready     error
}

func newFake(node string, self bool) *fakeBackend {
	return &fakeBackend{node: node, self: self, hosts: map[string]Host{"compute-1": {Host: "compute-1", Phase: "failed"}}}
}

func (f *fakeBackend) Freshness() Freshness {
	f.mu.Lock()
	defer f.mu.Unlock()
	role := "Follower"
	if f.self {
		role = "Leader"
	}
	return Freshness{Node: f.node, Role: role, AppliedIndex: 7}
}
func (f *fakeBackend) LeaderAPI() (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leaderAPI, f.self
}
func (f *fakeBackend) ConsistentRead(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.self {
		return ErrNotLeader
	}
	f.reads++
	return nil
}
func (f *fakeBackend) Cluster(context.Context) (Cluster, error) {
	return Cluster{RaftState: f.Freshness().Role}, nil
}
func (f *fakeBackend) Hosts(context.Context) ([]HostSummary, error) { return nil, nil }
func (f *fakeBackend) Host(_ context.Context, h string) (Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.hosts[h]; ok {
		return r, nil
	}
	return Host{}, ErrNotFound
}
func (f *fakeBackend) Events(q EventQuery) []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Event
	for _, e := range f.events {
		if e.Seq > q.Since && (q.Host == "" || q.Host == e.Host) {
			out = append(out, e)
		}
	}
	return out
}
func (f *fakeBackend) Gate(h string) Gate { return Gate{Host: h, Allow: true, Reason: "fake"} }
func (f *fakeBackend) Mutate(_ context.Context, m Mutation) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.self {
		return 0, ErrNotLeader
	}
	if m.Kind == MutRetry && m.Host == "compute-ok" {
		return 0, errors.Join(ErrConflict, errors.New("compute-ok is done, not failed"))
	}
	if m.Kind == MutRemoveVoter && m.Voter == "ctl-last" {
		return 0, errors.Join(ErrConflict, errors.New("ctl-last is the last voter"))
	}
	if m.Kind == MutRemoveVoter && m.Voter == "ctl-gone" {
		return 0, errors.Join(ErrNotFound, errors.New("no voter ctl-gone"))
	}
	f.mutations = append(f.mutations, m)
	return uint64(len(f.mutations)), nil
}
func (f *fakeBackend) Ready(context.Context) error { return f.ready }

func (f *fakeBackend) addEvent(e Event) {
	f.mu.Lock()
	f.events = append(f.events, e)
	f.mu.Unlock()
}

func (f *fakeBackend) muts() []Mutation {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Mutation(nil), f.mutations...)
}

const (
	canaryRW = "CanaryWriteT0ken-4411"
	canaryRO = "CanaryReadT0ken-7302"
)

func serve(t *testing.T, b Backend, cfg Config) string {
	t.Helper()
	cfg.Backend = b
	cfg.EventPoll = 20 * time.Millisecond
	srv := httptest.NewServer(NewServer(cfg))
	t.Cleanup(srv.Close)
	return srv.URL
}

func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(b), canaryRW) || strings.Contains(string(b), canaryRO) {
		t.Fatalf("%s %s answered with a token: %s", method, url, b)
	}
	return resp.StatusCode, string(b)
}

func TestTokensDecideWhoMayReadAndWhoMayChange(t *testing.T) {
	rw, ro := secret.New(canaryRW), secret.New(canaryRO)
	cases := []struct {
		name           string
		cfg            Config
		method, path   string
		token, body    string
		want           int
		wantMutations  int
		wantMessageHas string
	}{
		{"reads are open without API_READ_TOKEN", Config{Token: rw}, "GET", "/v1/hosts", "", "", 200, 0, ""},
		{"reads need a token once API_READ_TOKEN is set", Config{Token: rw, ReadToken: ro}, "GET", "/v1/hosts", "", "", 401, 0, "API_READ_TOKEN"},
		{"the read token reads", Config{Token: rw, ReadToken: ro}, "GET", "/v1/hosts", canaryRO, "", 200, 0, ""},
		{"the write token reads too", Config{Token: rw, ReadToken: ro}, "GET", "/v1/cluster", canaryRW, "", 200, 0, ""},
		{"a wrong token does not read", Config{Token: rw, ReadToken: ro}, "GET", "/v1/cluster", "guess", "", 401, 0, ""},
		{"a mutation without a token is 401", Config{Token: rw, ReadToken: ro}, "POST", "/v1/pause", "", "", 401, 0, "API_TOKEN"},
		{"a mutation with a wrong token is 401", Config{Token: rw}, "POST", "/v1/pause", "guess", "", 401, 0, ""},
		{"a mutation with the read-only token is 403", Config{Token: rw, ReadToken: ro}, "POST", "/v1/pause", canaryRO, "", 403, 0, "only read"},
		{"mutations are refused when API_TOKEN is not configured", Config{}, "POST", "/v1/resume", "anything", "", 403, 0, "not configured"},
		{"the write token pauses", Config{Token: rw, ReadToken: ro}, "POST", "/v1/pause", canaryRW, `{"reason":"storage maintenance"}`, 200, 1, `"kind": "pause"`},
		{"health needs no token", Config{Token: rw, ReadToken: ro}, "GET", "/healthz", "", "", 200, 0, "ok"},
		{"the agents' gate needs no token", Config{Token: rw, ReadToken: ro}, "GET", "/v1/gate/compute-1", "", "", 200, 0, `"allow": true`},
		{"the event stream needs a token like any read", Config{Token: rw, ReadToken: ro}, "GET", "/v1/events/stream", "", "", 401, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newFake("n1", true)
			url := serve(t, b, c.cfg)
			code, body := call(t, c.method, url+c.path, c.token, c.body)
			if code != c.want {
				t.Fatalf("%s %s: %d, want %d: %s", c.method, c.path, code, c.want, body)
			}
			if !strings.Contains(body, c.wantMessageHas) {
				t.Fatalf("answer lacks %q: %s", c.wantMessageHas, body)
			}
			if n := len(b.muts()); n != c.wantMutations {
				t.Fatalf("%d mutations reached the backend, want %d", n, c.wantMutations)
			}
		})
	}
}

func TestBadInputIsAnswered400NamingTheParameter(t *testing.T) {
	url := serve(t, newFake("n1", true), Config{Token: secret.New(canaryRW)})
	cases := []struct {
		name, method, path, body, param string
	}{
		{"limit is not a number", "GET", "/v1/events?limit=ten", "", "limit"},
		{"limit is zero", "GET", "/v1/events?limit=0", "", "limit"},
		{"since is negative", "GET", "/v1/events?since=-1", "", "since"},
		{"host filter is not a host name", "GET", "/v1/events?host=a%20b", "", "host"},
		{"consistent is not a boolean", "GET", "/v1/hosts?consistent=maybe", "", "consistent"},
		{"an unknown parameter", "GET", "/v1/cluster?verbose=1", "", "verbose"},
		{"a parameter given twice", "GET", "/v1/events?limit=1&limit=2", "", "limit"},
		{"a malformed query string", "GET", "/v1/events?limit=%zz", "", "query"},
		{"kind is not an event kind", "GET", "/v1/events?kind=Host%20Down", "", "kind"},
		{"one of the kinds is empty", "GET", "/v1/events?kind=HostDown,", "", "kind"},
		{"after is not a time", "GET", "/v1/events?after=yesterday", "", "after"},
		{"the stream's kind is checked too", "GET", "/v1/events/stream?kind=1x", "", "kind"},
		{"the version takes no parameter", "GET", "/v1/version?consistent=true", "", "consistent"},
		{"a path host that is not a host name", "GET", "/v1/hosts/..bad", "", "host"},
		{"confirm-fenced without a reason", "POST", "/v1/hosts/compute-1/confirm-fenced", `{}`, "reason"},
		{"maintenance without on", "POST", "/v1/hosts/compute-1/maintenance", `{"reason":"x"}`, "on"},
		{"a body that is not JSON", "POST", "/v1/pause", `reason=x`, "body"},
		{"a body with an unknown field", "POST", "/v1/pause", `{"reason":"x","force":true}`, "body"},
		{"a body with trailing data", "POST", "/v1/pause", `{"reason":"x"}{"reason":"y"}`, "body"},
		{"a body with trailing garbage", "POST", "/v1/hosts/compute-1/confirm-fenced", `{"reason":"powered off at the PDU"} and more`, "body"},
		{"a multi-line reason", "POST", "/v1/pause", `{"reason":"a\nb"}`, "reason"},
		{"a gate nonce too short", "GET", "/v1/gate/compute-1?nonce=abc", "", "nonce"},
		{"a gate nonce given twice", "GET", "/v1/gate/compute-1?nonce=0123456789abcdef&nonce=0123456789abcdef", "", "nonce"},
		{"an unknown gate parameter", "GET", "/v1/gate/compute-1?allow=true", "", "allow"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := call(t, c.method, url+c.path, canaryRW, c.body)
			if code != 400 || !strings.Contains(body, `"parameter": "`+c.param+`"`) {
				t.Fatalf("%d %s, want 400 naming %q", code, body, c.param)
			}
		})
	}
}

func TestUnknownHostIs404WithAMessage(t *testing.T) {
	url := serve(t, newFake("n1", true), Config{})
	code, body := call(t, "GET", url+"/v1/hosts/compute-404", "", "")
	if code != 404 || !strings.Contains(body, `host \"compute-404\" is unknown to Nova`) {
		t.Fatalf("%d %s", code, body)
	}
	// A follower does not poll Nova: it says so, and where to ask.
	fol := serve(t, newFake("n2", false), Config{})
	code, body = call(t, "GET", fol+"/v1/hosts/compute-404", "", "")
	if code != 404 || !strings.Contains(body, "it does not poll Nova: ask the leader with --consistent") {
		t.Fatalf("follower: %d %s", code, body)
	}
	if code, _ := call(t, "GET", url+"/v1/nothing", "", ""); code != 404 {
		t.Fatalf("unknown endpoint: %d", code)
	}
}

func TestRetryOfAHostThatHasNotFailedIs409(t *testing.T) {
	url := serve(t, newFake("n1", true), Config{Token: secret.New(canaryRW)})
	if code, body := call(t, "POST", url+"/v1/hosts/compute-ok/retry", canaryRW, ""); code != 409 || !strings.Contains(body, "not failed") {
		t.Fatalf("%d %s", code, body)
	}
}

func TestFollowersForwardMutationsAndConsistentReadsToTheLeader(t *testing.T) {
	tok := secret.New(canaryRW)
	lead := newFake("leader", true)
	leadURL := serve(t, lead, Config{Token: tok})
	fol := newFake("follower", false)
	fol.leaderAPI = strings.TrimPrefix(leadURL, "http://")
	folURL := serve(t, fol, Config{Token: tok})

	code, body := call(t, "POST", folURL+"/v1/hosts/compute-1/maintenance", canaryRW, `{"on":true,"reason":"disk swap"}`)
	if code != 200 {
		t.Fatalf("forwarded mutation: %d %s", code, body)
	}
	m := lead.muts()
	if len(m) != 1 || m[0].Kind != MutMaintenanceOn || m[0].Reason != "disk swap" || !strings.Contains(m[0].By, "from 127.0.0.1") {
		t.Fatalf("leader got %+v", m)
	}
	if len(fol.muts()) != 0 {
		t.Fatal("the follower applied a mutation itself")
	}
	// A plain read is the follower's own; a consistent one is the leader's.
	_, body = call(t, "GET", folURL+"/v1/cluster", "", "")
	if !strings.Contains(body, `"node": "follower"`) || !strings.Contains(body, `"consistent": false`) {
		t.Fatalf("local read: %s", body)
	}
	_, body = call(t, "GET", folURL+"/v1/cluster?consistent=true", "", "")
	if !strings.Contains(body, `"node": "leader"`) || !strings.Contains(body, `"consistent": true`) {
		t.Fatalf("consistent read: %s", body)
	}
	if lead.reads != 1 {
		t.Fatalf("leader confirmed %d consistent reads, want 1", lead.reads)
	}
}

// deposedWhileAnswering confirms a consistent read as the leader, then
// loses its leadership (a graceful stop's transfer) while the answer is
// built.
type deposedWhileAnswering struct{ *fakeBackend }

func (d deposedWhileAnswering) Cluster(ctx context.Context) (Cluster, error) {
	c, err := d.fakeBackend.Cluster(ctx)
	d.mu.Lock()
	d.self = false
	d.mu.Unlock()
	return c, err
}

func TestConsistentReadOfALeaderDeposedMidAnswerIs503(t *testing.T) {
	b := deposedWhileAnswering{newFake("n1", true)}
	url := serve(t, b, Config{})
	code, body := call(t, "GET", url+"/v1/cluster?consistent=true", "", "")
	if code != 503 || !strings.Contains(body, "leadership is changing") {
		t.Fatalf("consistent read answered by a node no longer leading: %d %s", code, body)
	}
	if b.reads != 1 {
		t.Fatalf("%d consistent reads confirmed, want 1", b.reads)
	}
	// A plain read says what this node knows, leader or not.
	code, body = call(t, "GET", url+"/v1/cluster", "", "")
	if code != 200 || !strings.Contains(body, `"consistent": false`) {
		t.Fatalf("plain read: %d %s", code, body)
	}
}

func TestNoLeaderIs503AndTheClientSaysSo(t *testing.T) {
	fol := newFake("follower", false) // knows no leader
	url := serve(t, fol, Config{Token: secret.New(canaryRW)})
	code, body := call(t, "POST", url+"/v1/pause", canaryRW, "")
	if code != 503 || !strings.Contains(body, "no Raft leader") {
		t.Fatalf("%d %s", code, body)
	}
	c := &Client{Addrs: []string{url}, Token: canaryRW}
	_, err := c.Mutate(context.Background(), MutPause, "", "x")
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 503 || !strings.Contains(err.Error(), "no Raft leader") {
		t.Fatalf("client error: %v", err)
	}
	// A leader that is gone: the follower says it cannot reach it.
	fol.leaderAPI = "127.0.0.1:1"
	code, body = call(t, "GET", url+"/v1/hosts?consistent=true", "", "")
	if code != 503 || !strings.Contains(body, "unreachable") {
		t.Fatalf("%d %s", code, body)
	}
}

func TestClientTriesEachAddressInTurn(t *testing.T) {
	url := serve(t, newFake("n2", true), Config{})
	c := &Client{Addrs: []string{"127.0.0.1:1", url}}
	cl, err := c.Cluster(context.Background(), false)
	if err != nil || cl.Freshness.Node != "n2" {
		t.Fatalf("%+v %v", cl, err)
	}
	c = &Client{Addrs: []string{"127.0.0.1:1"}}
	if _, err := c.Cluster(context.Background(), false); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("want ErrUnreachable, got %v", err)
	}
}

func TestEventStreamDeliversNewEventsInOrder(t *testing.T) {
	b := newFake("n1", true)
	b.addEvent(Event{Seq: 1, Kind: "HostDown", Host: "compute-1"})
	b.addEvent(Event{Seq: 2, Kind: "HostDown", Host: "compute-2"})
	url := serve(t, b, Config{})
	c := &Client{Addrs: []string{url}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []uint64
	go func() {
		time.Sleep(100 * time.Millisecond)
		b.addEvent(Event{Seq: 3, Kind: "FencingStarted", Host: "compute-1"})
		b.addEvent(Event{Seq: 4, Kind: "FencingStarted", Host: "compute-2"})
		b.addEvent(Event{Seq: 5, Kind: "FencingSucceeded", Host: "compute-1"})
	}()
	done := errors.New("done")
	err := c.Stream(ctx, 0, "compute-1", func(e Event) error {
		got = append(got, e.Seq)
		if e.Seq == 5 {
			return done
		}
		return nil
	})
	if !errors.Is(err, done) {
		t.Fatalf("stream ended with %v after %v", err, got)
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 3 || got[2] != 5 {
		t.Fatalf("got %v, want compute-1's events 1 3 5", got)
	}
}

func TestReadyzAndHealthz(t *testing.T) {
	b := newFake("n1", true)
	b.ready = errors.New("leader has not reached Nova in its last polls")
	url := serve(t, b, Config{})
	if code, body := call(t, "GET", url+"/readyz", "", ""); code != 503 || !strings.Contains(body, "Nova") {
		t.Fatalf("%d %s", code, body)
	}
	if code, _ := call(t, "GET", url+"/healthz", "", ""); code != 200 {
		t.Fatalf("healthz must not depend on readiness: %d", code)
	}
}

// TestEventsFilteredByKindAndTimeBeforeTheLimit: kind and after select
// among all kept events, then the limit takes the newest of those (not the
// matching ones among the newest), through the Client as over raw HTTP.
func TestEventsFilteredByKindAndTimeBeforeTheLimit(t *testing.T) {
	b := newFake("n1", true)
	t0 := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	for i, k := range []string{"HostDown", "FencingStarted", "HostDown", "HostDown", "FencingSucceeded", "Paused", "Resumed"} {
		b.addEvent(Event{Seq: uint64(i + 1), At: t0.Add(time.Duration(i) * time.Minute), Host: "compute-1", Kind: k})
	}
	url := serve(t, b, Config{})
	c := &Client{Addrs: []string{url}}
	cases := []struct {
		name string
		q    EventQuery
		want []uint64
	}{
		{"one kind, limit 2: the two newest of that kind", EventQuery{Kinds: []string{"HostDown"}, Limit: 2}, []uint64{3, 4}},
		{"two kinds, any case", EventQuery{Kinds: []string{"hostdown", "Paused"}}, []uint64{1, 3, 4, 6}},
		{"after a time", EventQuery{After: t0.Add(3 * time.Minute)}, []uint64{4, 5, 6, 7}},
		{"after a time, of a kind, after a seq", EventQuery{Since: 4, After: t0.Add(2 * time.Minute), Kinds: []string{"HostDown", "Resumed"}}, []uint64{7}},
		{"nothing matches", EventQuery{Kinds: []string{"HostSkipped"}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := c.Events(context.Background(), tc.q, false)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, e := range evs.Events {
				got = append(got, e.Seq)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	if code, body := call(t, "GET", url+"/v1/events?kind=Paused,Resumed&after=2026-03-01T03:05:30Z", "", ""); code != 200 ||
		strings.Contains(body, `"Paused"`) || !strings.Contains(body, `"Resumed"`) {
		t.Fatalf("%d %s", code, body)
	}
}

func TestEventStreamFilteredByKind(t *testing.T) {
	b := newFake("n1", true)
	b.addEvent(Event{Seq: 1, Kind: "HostDown", Host: "compute-1"})
	b.addEvent(Event{Seq: 2, Kind: "FencingStarted", Host: "compute-1"})
	b.addEvent(Event{Seq: 3, Kind: "FencingSucceeded", Host: "compute-1"})
	url := serve(t, b, Config{})
	c := &Client{Addrs: []string{url}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []uint64
	done := errors.New("done")
	err := c.StreamQuery(ctx, EventQuery{Kinds: []string{"HostDown", "FencingSucceeded"}}, func(e Event) error {
		got = append(got, e.Seq)
		if e.Seq == 3 {
			return done
		}
		return nil
	})
	if !errors.Is(err, done) || fmt.Sprint(got) != "[1 3]" {
		t.Fatalf("stream: %v, got %v, want [1 3]", err, got)
	}
}

func TestVersionNamesTheAnsweringNodesBuild(t *testing.T) {
	build := VersionInfo{Version: "v1.2.0", Revision: "0123456789abcdef", GoVersion: "go1.26.0", Platform: "linux/amd64"}
	url := serve(t, newFake("ctl-2", false), Config{Build: build, ReadToken: secret.New(canaryRO)})
	if code, _ := call(t, "GET", url+"/v1/version", "", ""); code != 401 {
		t.Fatalf("version without the read token: %d, want 401 like every read", code)
	}
	c := &Client{Addrs: []string{url}, Token: canaryRO}
	v, err := c.Version(context.Background())
	want := build
	want.Node, want.API = "ctl-2", "v1"
	if err != nil || v != want {
		t.Fatalf("version %+v, %v; want %+v", v, err, want)
	}
}

// TestGateAnswerIsSignedForItsNonce: with a gate key, an answer to a
// request with a nonce carries the host key's signature over the answer
// and that nonce; without a nonce (an older agent) it is unsigned.
func TestGateAnswerIsSignedForItsNonce(t *testing.T) {
	key := identity.HostKey([]byte("cluster"), "compute-1")
	url := serve(t, newFake("n1", true), Config{GateKey: func(h string) []byte { return identity.HostKey([]byte("cluster"), h) }})
	_, body := call(t, "GET", url+"/v1/gate/compute-1?nonce=0123456789abcdef0123", "", "")
	var g Gate
	if err := json.Unmarshal([]byte(body), &g); err != nil {
		t.Fatal(err)
	}
	if g.Nonce != "0123456789abcdef0123" || !identity.CheckGate(key, "compute-1", g.Allow, g.Reason, g.Nonce, g.MAC) {
		t.Fatalf("answer %+v does not verify", g)
	}
	_, body = call(t, "GET", url+"/v1/gate/compute-1", "", "")
	if strings.Contains(body, "mac") {
		t.Errorf("an answer without a nonce is signed: %s", body)
	}
}
