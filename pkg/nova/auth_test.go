package nova

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

func TestNewDoesNoNetworkIO(t *testing.T) {
	f := newFakeCloud(t)
	_, _ = newTestClient(t, f.keystoneCloud(), Options{})
	if n := len(f.requests("/")); n != 0 {
		t.Fatalf("New made %d requests", n)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	f := newFakeCloud(t)
	tests := []struct {
		name  string
		cloud config.Cloud
		opts  Options
	}{
		{"cap above 2.94", f.keystoneCloud(), Options{MaxMicroversion: "2.95"}},
		{"cap below 2.53", f.keystoneCloud(), Options{MaxMicroversion: "2.52"}},
		{"cap not a version", f.keystoneCloud(), Options{MaxMicroversion: "latest"}},
		{"no auth URL", config.Cloud{Name: "x"}, Options{}},
		{"NoAuth without compute URL", config.Cloud{NoAuth: &config.NoAuth{Token: secret.New(canary)}}, Options{}},
		{"auth URL with credentials and a bad scheme", config.Cloud{AuthURL: "ftp://admin:" + canary + "@keystone"}, Options{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cloud, tt.opts)
			if err == nil {
				c.Close()
				t.Fatal("New accepted it")
			}
			if strings.Contains(err.Error(), canary) {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestMicroversionNegotiation(t *testing.T) {
	tests := []struct {
		name        string
		serverMax   string
		serverMin   string
		capOpt      string
		versions    bool // answer with the unversioned {"versions": [...]} document
		want        string
		unsupported bool
	}{
		{name: "real Zed offers 2.93", serverMax: "2.93", want: "2.93"},
		{name: "newer Nova is capped at 2.94", serverMax: "2.96", want: "2.94"},
		{name: "exactly 2.94", serverMax: "2.94", want: "2.94"},
		{name: "operator cap below the server's", serverMax: "2.93", capOpt: "2.60", want: "2.60"},
		{name: "2.53 is enough", serverMax: "2.53", want: "2.53"},
		{name: "2.52 is refused", serverMax: "2.52", unsupported: true},
		{name: "no microversions at all is refused", serverMax: "", serverMin: "", unsupported: true},
		{name: "server minimum above the cap is refused", serverMax: "2.99", serverMin: "2.95", unsupported: true},
		{name: "unversioned root document", serverMax: "2.93", versions: true, want: "2.93"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			f.maxVersion = tt.serverMax
			f.minVersion = tt.serverMin
			if f.minVersion == "" && tt.serverMax != "" {
				f.minVersion = "2.1"
			}
			if tt.versions {
				f.handle("GET /compute/v2.1/", fixture(t, "versions.json", 300))
			}
			c, _ := newTestClient(t, f.noAuthCloud(), Options{MaxMicroversion: tt.capOpt})
			err := c.Ping(ctxT(t))
			if tt.unsupported {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("want ErrUnsupported, got %v", err)
				}
				var ae *APIError
				if !errors.As(err, &ae) {
					t.Fatalf("%T is not an *APIError", err)
				}
				if c.Microversion() != "" {
					t.Fatalf("microversion %q set after refusal", c.Microversion())
				}
				// Every call refuses too, without touching the API.
				_, err := c.ListServices(ctxT(t), "nova-compute")
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("call after refusal: %v", err)
				}
				if n := len(f.requests("/compute/v2.1/os-services")); n != 0 {
					t.Fatalf("%d service requests at an unsupported microversion", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Microversion(); got != tt.want {
				t.Fatalf("microversion %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPingRenegotiatesAfterAnUpgrade(t *testing.T) {
	f := newFakeCloud(t)
	f.maxVersion = "2.60"
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if c.Microversion() != "2.60" {
		t.Fatalf("microversion %q", c.Microversion())
	}
	f.mu.Lock()
	f.maxVersion = "2.93"
	f.mu.Unlock()
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if c.Microversion() != "2.93" {
		t.Fatalf("microversion %q after upgrade", c.Microversion())
	}
}

// TestOldNovaDegradesGracefully: each feature above 2.53 is replaced by what
// the older API offers.
func TestOldNovaDegradesGracefully(t *testing.T) {
	t.Run("lock below 2.73 sends no reason", func(t *testing.T) {
		f := newFakeCloud(t)
		f.maxVersion = "2.72"
		f.handle("POST /compute/v2.1/servers/s1/action", status(202, "", ""))
		c, _ := newTestClient(t, f.noAuthCloud(), Options{})
		if err := c.Lock(ctxT(t), "s1", "instanceha-evacuation"); err != nil {
			t.Fatal(err)
		}
		r := f.requests("/compute/v2.1/servers/s1/action")
		if len(r) != 1 || !jsonEqual(t, r[0].Body, `{"lock": null}`) {
			t.Fatalf("requests %+v", r)
		}
		if r[0].Header.Get("X-OpenStack-Nova-API-Version") != "2.72" {
			t.Fatalf("header %q", r[0].Header.Get("X-OpenStack-Nova-API-Version"))
		}
	})
	t.Run("flavors below 2.61 read extra specs per flavor and skip deleted ones", func(t *testing.T) {
		f := newFakeCloud(t)
		f.maxVersion = "2.60"
		f.handle("GET /compute/v2.1/flavors/detail", fixture(t, "flavors_plain.json", 200))
		f.handle("GET /compute/v2.1/flavors/1/os-extra_specs", status(200, `{"extra_specs": {}}`, ""))
		f.handle("GET /compute/v2.1/flavors/7/os-extra_specs", status(200, `{"extra_specs": {"evacuable": "true"}}`, ""))
		c, _ := newTestClient(t, f.noAuthCloud(), Options{})
		got, err := c.ListFlavors(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[1].ID != "7" || got[1].ExtraSpecs["evacuable"] != "true" || got[0].ExtraSpecs == nil {
			t.Fatalf("flavors %+v", got)
		}
		if n := len(f.requests("/compute/v2.1/flavors/")); n != 4 {
			t.Fatalf("want 1 listing + 3 extra-specs requests, got %d", n)
		}
	})
	t.Run("flavor extra specs failing fails the listing", func(t *testing.T) {
		f := newFakeCloud(t)
		f.maxVersion = "2.60"
		f.handle("GET /compute/v2.1/flavors/detail", fixture(t, "flavors_plain.json", 200))
		f.handle("GET /compute/v2.1/flavors/1/os-extra_specs", status(500, "", "req-x"))
		c, _ := newTestClient(t, f.noAuthCloud(), Options{})
		if _, err := c.ListFlavors(ctxT(t)); !errors.Is(err, ErrServer) {
			t.Fatalf("want ErrServer, got %v", err)
		}
	})
	t.Run("migrations below 2.59 are filtered and sorted here", func(t *testing.T) {
		f := newFakeCloud(t)
		f.maxVersion = "2.58"
		f.handle("GET /compute/v2.1/os-migrations", fixture(t, "migrations_old.json", 200))
		c, _ := newTestClient(t, f.noAuthCloud(), Options{})
		since := mustTime(t, "2026-11-21T13:00:00Z")
		got, err := c.ListMigrations(ctxT(t), MigrationQuery{InstanceUUID: "9168b536-cd40-4630-b43f-b259807c6e87",
			MigrationType: "evacuation", ChangesSince: since, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != 12 || got[0].UUID != "" {
			t.Fatalf("migrations %+v", got)
		}
		r := f.requests("/compute/v2.1/os-migrations")
		q, _ := url.ParseQuery(r[0].Query)
		if q.Has("limit") || q.Has("changes-since") || q.Has("type") || q.Get("migration_type") != "evacuation" {
			t.Fatalf("query %v", q)
		}
		got, err = c.ListMigrations(ctxT(t), MigrationQuery{SourceCompute: "compute-1.example.com", Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != 12 || got[1].ID != 9 {
			t.Fatalf("newest two: %+v", got)
		}
	})
	t.Run("servers below 2.47 give the flavor id", func(t *testing.T) {
		f := newFakeCloud(t)
		f.maxVersion = "2.53"
		f.handle("GET /compute/v2.1/servers/s1", status(200,
			`{"server": {"id": "s1", "flavor": {"id": "7", "links": []}, "image": {"id": "i1"}, "OS-EXT-STS:task_state": null}}`, ""))
		c, _ := newTestClient(t, f.noAuthCloud(), Options{})
		s, err := c.GetServer(ctxT(t), "s1")
		if err != nil {
			t.Fatal(err)
		}
		if s.FlavorID != "7" || s.FlavorExtraSpecs != nil || s.ImageID != "i1" {
			t.Fatalf("server %+v", s)
		}
	})
}

func TestMigrationsFollowPagesUntilTheLimit(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/os-migrations", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("marker") {
		case "":
			writeJSON(w, 200, `{"migrations": [{"id": 3, "status": "done"}, {"id": 2, "status": "done"}],
				"migrations_links": [{"rel": "next", "href": "http://elsewhere/v2.1/os-migrations?limit=2&marker=m2"}]}`)
		case "m2":
			writeJSON(w, 200, `{"migrations": [{"id": 1, "status": "error"}], "migrations_links": []}`)
		}
	})
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	all, err := c.ListMigrations(ctxT(t), MigrationQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 {
		t.Fatalf("all pages: %+v", all)
	}
	two, err := c.ListMigrations(ctxT(t), MigrationQuery{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(two) != 2 || len(f.requests("/compute/v2.1/os-migrations")) != 3 {
		t.Fatalf("limit 2 gave %d after %d requests", len(two), len(f.requests("/compute/v2.1/os-migrations")))
	}
}

func TestKeystoneAuthenticatesLazilyAndUsesTheCatalog(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/os-services", fixture(t, "services.json", 200))
	f.handle("GET /image/v2/images", fixture(t, "images_page2.json", 200))
	c, _ := newTestClient(t, f.keystoneCloud(), Options{UserAgent: "iha-test/1"})
	if _, err := c.ListServices(ctxT(t), "nova-compute"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListImages(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if f.authCalls != 1 {
		t.Fatalf("%d token requests, want 1", f.authCalls)
	}
	r := f.requests("/compute/v2.1/os-services")
	if len(r) != 1 || r[0].Header.Get("X-Auth-Token") != "tok-1" || !strings.HasPrefix(r[0].Header.Get("User-Agent"), "iha-test/1 ") {
		t.Fatalf("requests %+v", r)
	}
}

func TestKeystoneDownAtStartIsRetriedOnTheNextCall(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/os-aggregates", fixture(t, "aggregates.json", 200))
	// Keystone's address drops every connection until it "comes up", then
	// forwards to the fake.
	var up atomic.Bool
	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		f.srv.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(ks.Close)
	cloud := config.Cloud{Name: "late", AuthURL: ks.URL + "/identity/v3", RegionName: "RegionOne"}
	cloud = cloud.WithAuthOptions(gophercloud.AuthOptions{IdentityEndpoint: cloud.AuthURL, Username: "admin", Password: canary, DomainName: "Default", TenantName: "admin"})
	c, logs := newTestClient(t, cloud, Options{})

	_, err := c.ListAggregates(ctxT(t))
	var ae *APIError
	if !errors.As(err, &ae) || !errors.Is(err, ErrUnreachable) || !strings.Contains(ae.Op, "list aggregates") {
		t.Fatalf("want an unreachable list-aggregates error while Keystone is down, got %v", err)
	}
	checkNoCanary(t, err, logs.String())
	up.Store(true)
	if _, err := c.ListAggregates(ctxT(t)); err != nil {
		t.Fatalf("after Keystone came up: %v", err)
	}
	if f.authCalls != 1 {
		t.Fatalf("%d successful token requests, want 1", f.authCalls)
	}
}

func TestExpiredTokenIsRenewedOnceAndTheCallRetried(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/os-aggregates", fixture(t, "aggregates.json", 200))
	c, logs := newTestClient(t, f.keystoneCloud(), Options{})
	if _, err := c.ListAggregates(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	f.revoke()
	if _, err := c.ListAggregates(ctxT(t)); err != nil {
		t.Fatalf("after revocation: %v", err)
	}
	if f.authCalls != 2 {
		t.Fatalf("%d token requests, want 2", f.authCalls)
	}
	r := f.requests("/compute/v2.1/os-aggregates")
	if len(r) != 3 || r[1].Header.Get("X-Auth-Token") != "tok-1" || r[2].Header.Get("X-Auth-Token") != "tok-2" {
		t.Fatalf("want ok, 401, retried ok; got %d requests", len(r))
	}

	// Concurrent callers share one re-authentication.
	f.revoke()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.ListAggregates(ctxT(t))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent call after revocation: %v", err)
		}
	}
	if f.authCalls > 4 {
		t.Errorf("%d token requests for 8 concurrent callers", f.authCalls)
	}
	checkNoCanary(t, nil, logs.String())
}

func TestTokenRefusedAgainAfterRenewalIsUnauthorized(t *testing.T) {
	f := newFakeCloud(t)
	calls := 0
	f.handle("GET /compute/v2.1/os-aggregates", func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("X-Openstack-Request-Id", "req-always-401")
		writeJSON(w, 401, `{"error": {"code": 401, "message": "token not valid for this project", "title": "Unauthorized"}}`)
	})
	c, _ := newTestClient(t, f.keystoneCloud(), Options{})
	_, err := c.ListAggregates(ctxT(t))
	var ae *APIError
	if !errors.As(err, &ae) || !errors.Is(err, ErrUnauthorized) || ae.RequestID != "req-always-401" {
		t.Fatalf("got %v", err)
	}
	if calls != 2 {
		t.Fatalf("want the call retried exactly once, got %d calls", calls)
	}
}

func TestKeystoneRefusingRenewalIsReported(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		sentinel error
	}{
		{"password changed", 401, ErrUnauthorized},
		{"keystone broken", 500, ErrServer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			f.handle("GET /compute/v2.1/os-aggregates", fixture(t, "aggregates.json", 200))
			c, logs := newTestClient(t, f.keystoneCloud(), Options{})
			if _, err := c.ListAggregates(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			f.revoke()
			f.mu.Lock()
			f.authStatus = tt.status
			f.mu.Unlock()
			_, err := c.ListAggregates(ctxT(t))
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("want %v, got %v", tt.sentinel, err)
			}
			if !strings.Contains(err.Error(), "re-authentication failed") {
				t.Errorf("error does not say re-authentication failed: %v", err)
			}
			checkNoCanary(t, err, logs.String())
		})
	}
}

// TestCanaryPasswordNeverLeaks plants the password where a careless client
// would print it: Keystone echoing the request in its 401 body, Nova
// messages quoting credentials, an unreachable auth URL.
func TestCanaryPasswordNeverLeaks(t *testing.T) {
	t.Run("keystone echoes the request body in a 401", func(t *testing.T) {
		f := newFakeCloud(t)
		f.authStatus = 401
		c, logs := newTestClient(t, f.keystoneCloud(), Options{})
		err := c.Ping(ctxT(t))
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("want 401, got %v", err)
		}
		checkNoCanary(t, err, logs.String())
	})
	t.Run("nova quotes the credentials in a 400", func(t *testing.T) {
		f := newFakeCloud(t)
		f.handle("POST /compute/v2.1/servers/s1/action", status(400,
			`{"badRequest": {"code": 400, "message": "bad auth: password=`+canary+` {\"password\": \"`+canary+`\"} Authorization: Basic `+canary+` also `+canary+`"}}`, "req-x"))
		c, logs := newTestClient(t, f.keystoneCloud(), Options{})
		err := c.Evacuate(ctxT(t), "s1", "")
		if !errors.Is(err, ErrBadRequest) {
			t.Fatalf("want 400, got %v", err)
		}
		checkNoCanary(t, err, logs.String())
	})
	t.Run("auth URL with credentials unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		u := "http://admin:" + canary + "@" + addr + "/identity/v3"
		cloud := config.Cloud{Name: "x", AuthURL: u}.WithAuthOptions(gophercloud.AuthOptions{IdentityEndpoint: u, Username: "admin", Password: canary, DomainName: "Default"})
		c, logs := newTestClient(t, cloud, Options{})
		err = c.Ping(ctxT(t))
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("want unreachable, got %v", err)
		}
		checkNoCanary(t, err, logs.String())
	})
	t.Run("NoAuth token quoted by nova", func(t *testing.T) {
		f := newFakeCloud(t)
		f.handle("GET /compute/v2.1/os-aggregates", status(500, `{"computeFault": {"code": 500, "message": "token admin:admin rejected by middleware"}}`, ""))
		c, logs := newTestClient(t, f.noAuthCloud(), Options{})
		_, err := c.ListAggregates(ctxT(t))
		if strings.Contains(err.Error(), "admin:admin") || strings.Contains(logs.String(), "admin:admin") {
			t.Fatalf("NoAuth token leaked: %v", err)
		}
	})
}

func checkNoCanary(t *testing.T, err error, logs string) {
	t.Helper()
	if err != nil {
		for _, s := range []string{err.Error(), fmtAll(err)} {
			if strings.Contains(s, canary) {
				t.Errorf("error leaks the password: %s", s)
			}
		}
	}
	if strings.Contains(logs, canary) {
		t.Errorf("logs leak the password:\n%s", logs)
	}
}

func fmtErr(e error) string { return fmt.Sprintf("%v|%+v|%#v|%s|%q", e, e, e, e, e) }

// fmtAll renders err and everything it unwraps to, with %+v and %#v.
func fmtAll(err error) string {
	var b strings.Builder
	for e := err; e != nil; e = errors.Unwrap(e) {
		b.WriteString(fmtErr(e))
	}
	return b.String()
}

func TestLogsUseStableKeys(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("POST /compute/v2.1/servers/s1/action", status(409, `{"conflictingRequest": {"code": 409, "message": "busy"}}`, "req-k"))
	c, logs := newTestClient(t, f.noAuthCloud(), Options{})
	_ = c.Evacuate(context.Background(), "s1", "")
	out := logs.String()
	for _, want := range []string{`op="evacuate server s1"`, "status=409", "request_id=req-k", "err="} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
