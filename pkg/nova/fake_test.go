package nova

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/ihaproject/iha/internal/testlog"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// canary is the password of every test cloud: no error or log line may
// ever contain it.
const canary = "CANARY-pw-7f3a9c"

// testTimeout scales with a slow machine: generous, never waited on when
// things work.
var testTimeout = 20 * time.Second

// recorded is one request the fake saw.
type recorded struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   string
}

// fakeCloud is an httptest Keystone (under /identity), Nova (under
// /compute/v2.1) and Glance (under /image) answering with the fixtures of
// testdata/nova, written from the Nova and Glance API references.
type fakeCloud struct {
	t   *testing.T
	srv *httptest.Server

	mu         sync.Mutex
	maxVersion string // the compute version document's "version"
	minVersion string
	token      string // the valid token; requests with another get 401
	tokenSeq   int
	authCalls  int
	authStatus int // when not zero, Keystone answers this instead of a token
	reqs       []recorded
	routes     map[string]http.HandlerFunc
}

func newFakeCloud(t *testing.T) *fakeCloud {
	t.Helper()
	f := &fakeCloud{t: t, maxVersion: "2.93", minVersion: "2.1", routes: map[string]http.HandlerFunc{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCloud) computeURL() string { return f.srv.URL + "/compute/v2.1" }
func (f *fakeCloud) imageURL() string   { return f.srv.URL + "/image" }

// handle sets the answer of "METHOD /path" (path without query).
func (f *fakeCloud) handle(route string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[route] = h
}

// requests returns what was seen on paths with the given prefix.
func (f *fakeCloud) requests(prefix string) []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []recorded
	for _, r := range f.reqs {
		if strings.HasPrefix(r.Path, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// revoke invalidates the current token, as a Keystone token expiry would.
func (f *fakeCloud) revoke() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token = "revoked"
}

func (f *fakeCloud) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: string(body)})
	f.mu.Unlock()

	if r.Method == "POST" && r.URL.Path == "/identity/v3/auth/tokens" {
		f.keystone(w, body)
		return
	}
	f.mu.Lock()
	valid := f.token != "" && r.Header.Get("X-Auth-Token") == f.token
	h := f.routes[r.Method+" "+r.URL.Path]
	maxV, minV := f.maxVersion, f.minVersion
	f.mu.Unlock()
	if !valid {
		w.Header().Set("X-Openstack-Request-Id", "req-unauth")
		writeJSON(w, 401, `{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}`)
		return
	}
	if h == nil && r.Method == "GET" && r.URL.Path == "/compute/v2.1/" {
		writeJSON(w, 200, fmt.Sprintf(`{"version": {"id": "v2.1", "links": [], "min_version": %q, "status": "CURRENT", "updated": "2013-07-23T11:33:21Z", "version": %q}}`, minV, maxV))
		return
	}
	if h == nil {
		w.Header().Set("X-Compute-Request-Id", "req-404")
		writeJSON(w, 404, `{"itemNotFound": {"code": 404, "message": "The resource could not be found."}}`)
		return
	}
	h(w, r)
}

func (f *fakeCloud) keystone(w http.ResponseWriter, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authCalls++
	if f.authStatus != 0 {
		w.Header().Set("X-Openstack-Request-Id", "req-keystone")
		// A hostile or buggy Keystone echoing the request must not leak it.
		writeJSON(w, f.authStatus, fmt.Sprintf(`{"error": {"code": %d, "message": "rejected %s", "title": "Unauthorized"}}`, f.authStatus, strings.ReplaceAll(string(body), `"`, `'`)))
		return
	}
	if !bytes.Contains(body, []byte(canary)) {
		writeJSON(w, 401, `{"error": {"code": 401, "message": "wrong password", "title": "Unauthorized"}}`)
		return
	}
	f.tokenSeq++
	f.token = fmt.Sprintf("tok-%d", f.tokenSeq)
	w.Header().Set("X-Subject-Token", f.token)
	catalog := fmt.Sprintf(`[
		{"type": "compute", "name": "nova", "id": "c1", "endpoints": [
			{"id": "e1", "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": %q},
			{"id": "e2", "interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": "http://127.0.0.1:1/unused"}]},
		{"type": "image", "name": "glance", "id": "i1", "endpoints": [
			{"id": "e3", "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": %q}]}]`,
		f.computeURL(), f.imageURL())
	writeJSON(w, 201, `{"token": {"methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z", "issued_at": "2026-11-21T00:00:00.000000Z", "user": {"id": "u1", "name": "admin", "domain": {"id": "default", "name": "Default"}}, "project": {"id": "p1", "name": "admin", "domain": {"id": "default", "name": "Default"}}, "catalog": `+catalog+`}}`)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// fixture answers with testdata/nova/<name> and a request id.
func fixture(t *testing.T, name string, status int) http.HandlerFunc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "nova", name))
	if err != nil {
		t.Fatal(err)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Openstack-Request-Id", "req-"+strings.TrimSuffix(name, ".json"))
		writeJSON(w, status, string(b))
	}
}

// status answers with a status, an optional Nova fault body and request id.
func status(code int, body, reqID string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if reqID != "" {
			w.Header().Set("X-Openstack-Request-Id", reqID)
		}
		if body == "" {
			w.WriteHeader(code)
			return
		}
		writeJSON(w, code, body)
	}
}

// logBuffer collects slog output at debug level for the canary checks.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	h := slog.NewTextHandler(io.MultiWriter(lb, testlog.Writer(t)), &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h), lb
}

// keystoneCloud describes the fake as a clouds.yaml entry would.
func (f *fakeCloud) keystoneCloud() config.Cloud {
	c := config.Cloud{Name: "test", AuthURL: f.srv.URL + "/identity/v3", RegionName: "RegionOne", Interface: "public"}
	return c.WithAuthOptions(gophercloud.AuthOptions{
		IdentityEndpoint: f.srv.URL + "/identity/v3",
		Username:         "admin",
		Password:         canary,
		DomainName:       "Default",
		TenantName:       "admin",
	})
}

// noAuthCloud describes the fake as a lab without Keystone.
func (f *fakeCloud) noAuthCloud() config.Cloud {
	f.mu.Lock()
	f.token = "admin:admin"
	f.mu.Unlock()
	return config.Cloud{Name: "lab", NoAuth: &config.NoAuth{
		ComputeURL: f.computeURL(), ImageURL: f.imageURL(), Token: secret.New("admin:admin"),
	}}
}

func newTestClient(t *testing.T, cloud config.Cloud, opts Options) (*Client, *logBuffer) {
	t.Helper()
	log, lb := testLogger(t)
	if opts.Logger == nil {
		opts.Logger = log
	}
	if opts.Timeout == 0 {
		opts.Timeout = testTimeout
	}
	c, err := New(cloud, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c, lb
}

// jsonEqual compares two JSON texts by value.
func jsonEqual(t *testing.T, got, want string) bool {
	t.Helper()
	if got == "" || want == "" {
		return got == want
	}
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("request body %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %q is not JSON: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	return bytes.Equal(gb, wb)
}
