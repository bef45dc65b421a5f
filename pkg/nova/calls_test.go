package nova

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func ptr[T any](v T) *T { return &v }

// TestCallsSendTheDocumentedRequests checks the HTTP form of every call
// (docs/rules.md §18) at microversion 2.93.
func TestCallsSendTheDocumentedRequests(t *testing.T) {
	since := time.Date(2026, 11, 21, 13, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		route     string // METHOD path answered by fixture/status
		answer    func(t *testing.T) func(w http.ResponseWriter, r *http.Request)
		call      func(ctx context.Context, c *Client) error
		wantQuery url.Values
		wantBody  string
	}{
		{
			name:      "list services filters by binary",
			route:     "GET /compute/v2.1/os-services",
			answer:    func(t *testing.T) func(http.ResponseWriter, *http.Request) { return fixture(t, "services.json", 200) },
			call:      func(ctx context.Context, c *Client) error { _, err := c.ListServices(ctx, "nova-compute"); return err },
			wantQuery: url.Values{"binary": {"nova-compute"}},
		},
		{
			name:   "list services on a host filters by host and binary",
			route:  "GET /compute/v2.1/os-services",
			answer: func(t *testing.T) func(http.ResponseWriter, *http.Request) { return fixture(t, "services.json", 200) },
			call: func(ctx context.Context, c *Client) error {
				_, err := c.ListServicesOnHost(ctx, "compute-1", "nova-compute")
				return err
			},
			wantQuery: url.Values{"binary": {"nova-compute"}, "host": {"compute-1"}},
		},
		{
			name:  "update service sends force-down, status and reason in one PUT",
			route: "PUT /compute/v2.1/os-services/e81d66a4-ddd3-4aba-8a84-171d1cb4d339",
			answer: func(t *testing.T) func(http.ResponseWriter, *http.Request) {
				return fixture(t, "service_update.json", 200)
			},
			call: func(ctx context.Context, c *Client) error {
				_, err := c.UpdateService(ctx, "e81d66a4-ddd3-4aba-8a84-171d1cb4d339", ServiceUpdate{
					ForcedDown: ptr(true), Status: ptr("disabled"), DisabledReason: ptr("instanceha evacuation: 2026-11-21T13:40:00")})
				return err
			},
			wantBody: `{"forced_down": true, "status": "disabled", "disabled_reason": "instanceha evacuation: 2026-11-21T13:40:00"}`,
		},
		{
			name:  "update service sends only the fields set",
			route: "PUT /compute/v2.1/os-services/e81d66a4-ddd3-4aba-8a84-171d1cb4d339",
			answer: func(t *testing.T) func(http.ResponseWriter, *http.Request) {
				return fixture(t, "service_update.json", 200)
			},
			call: func(ctx context.Context, c *Client) error {
				_, err := c.UpdateService(ctx, "e81d66a4-ddd3-4aba-8a84-171d1cb4d339", ServiceUpdate{ForcedDown: ptr(false)})
				return err
			},
			wantBody: `{"forced_down": false}`,
		},
		{
			name:  "list servers asks every project on one host",
			route: "GET /compute/v2.1/servers/detail",
			answer: func(t *testing.T) func(http.ResponseWriter, *http.Request) {
				return fixture(t, "servers_page2.json", 200)
			},
			call: func(ctx context.Context, c *Client) error {
				_, err := c.ListServers(ctx, "compute-1.example.com")
				return err
			},
			wantQuery: url.Values{"all_tenants": {"1"}, "host": {"compute-1.example.com"}},
		},
		{
			name:   "get server",
			route:  "GET /compute/v2.1/servers/9168b536-cd40-4630-b43f-b259807c6e87",
			answer: func(t *testing.T) func(http.ResponseWriter, *http.Request) { return fixture(t, "server.json", 200) },
			call: func(ctx context.Context, c *Client) error {
				_, err := c.GetServer(ctx, "9168b536-cd40-4630-b43f-b259807c6e87")
				return err
			},
		},
		{
			name:     "evacuate lets the scheduler choose",
			route:    "POST /compute/v2.1/servers/s1/action",
			answer:   func(t *testing.T) func(http.ResponseWriter, *http.Request) { return status(200, "", "req-ev") },
			call:     func(ctx context.Context, c *Client) error { return c.Evacuate(ctx, "s1", "") },
			wantBody: `{"evacuate": {}}`,
		},
		{
			name:     "evacuate to a target sends host only, never force or onSharedStorage",
			route:    "POST /compute/v2.1/servers/s1/action",
			answer:   func(t *testing.T) func(http.ResponseWriter, *http.Request) { return status(200, "", "req-ev") },
			call:     func(ctx context.Context, c *Client) error { return c.Evacuate(ctx, "s1", "compute-3") },
			wantBody: `{"evacuate": {"host": "compute-3"}}`,
		},
		{
			name:     "lock with a reason",
			route:    "POST /compute/v2.1/servers/s1/action",
			answer:   func(t *testing.T) func(http.ResponseWriter, *http.Request) { return status(202, "", "") },
			call:     func(ctx context.Context, c *Client) error { return c.Lock(ctx, "s1", "instanceha-evacuation") },
			wantBody: `{"lock": {"locked_reason": "instanceha-evacuation"}}`,
		},
		{
			name:     "lock without a reason",
			route:    "POST /compute/v2.1/servers/s1/action",
			answer:   func(t *testing.T) func(http.ResponseWriter, *http.Request) { return status(202, "", "") },
			call:     func(ctx context.Context, c *Client) error { return c.Lock(ctx, "s1", "") },
			wantBody: `{"lock": null}`,
		},
		{
			name:     "unlock",
			route:    "POST /compute/v2.1/servers/s1/action",
			answer:   func(t *testing.T) func(http.ResponseWriter, *http.Request) { return status(202, "", "") },
			call:     func(ctx context.Context, c *Client) error { return c.Unlock(ctx, "s1") },
			wantBody: `{"unlock": null}`,
		},
		{
			name:     "reset state",
			route:    "POST /compute/v2.1/servers/s1/action",
			answer:   func(t *testing.T) func(http.ResponseWriter, *http.Request) { return status(202, "", "") },
			call:     func(ctx context.Context, c *Client) error { return c.ResetState(ctx, "s1", "error") },
			wantBody: `{"os-resetState": {"state": "error"}}`,
		},
		{
			name:     "stop",
			route:    "POST /compute/v2.1/servers/s1/action",
			answer:   func(t *testing.T) func(http.ResponseWriter, *http.Request) { return status(202, "", "") },
			call:     func(ctx context.Context, c *Client) error { return c.Stop(ctx, "s1") },
			wantBody: `{"os-stop": null}`,
		},
		{
			name:   "migrations of a server use migration_type, changes-since and limit, never type",
			route:  "GET /compute/v2.1/os-migrations",
			answer: func(t *testing.T) func(http.ResponseWriter, *http.Request) { return fixture(t, "migrations.json", 200) },
			call: func(ctx context.Context, c *Client) error {
				_, err := c.ListMigrations(ctx, MigrationQuery{InstanceUUID: "u1", MigrationType: "evacuation", ChangesSince: since, Limit: 1000})
				return err
			},
			wantQuery: url.Values{"instance_uuid": {"u1"}, "migration_type": {"evacuation"}, "changes-since": {"2026-11-21T13:00:00Z"}, "limit": {"1000"}},
		},
		{
			name:   "migrations from a host",
			route:  "GET /compute/v2.1/os-migrations",
			answer: func(t *testing.T) func(http.ResponseWriter, *http.Request) { return fixture(t, "migrations.json", 200) },
			call: func(ctx context.Context, c *Client) error {
				_, err := c.ListMigrations(ctx, MigrationQuery{SourceCompute: "compute-1", MigrationType: "evacuation"})
				return err
			},
			wantQuery: url.Values{"source_compute": {"compute-1"}, "migration_type": {"evacuation"}},
		},
		{
			name:   "list aggregates",
			route:  "GET /compute/v2.1/os-aggregates",
			answer: func(t *testing.T) func(http.ResponseWriter, *http.Request) { return fixture(t, "aggregates.json", 200) },
			call:   func(ctx context.Context, c *Client) error { _, err := c.ListAggregates(ctx); return err },
		},
		{
			name:     "add host to aggregate",
			route:    "POST /compute/v2.1/os-aggregates/2/action",
			answer:   func(t *testing.T) func(http.ResponseWriter, *http.Request) { return fixture(t, "aggregates.json", 200) },
			call:     func(ctx context.Context, c *Client) error { return c.AddHostToAggregate(ctx, 2, "compute-4") },
			wantBody: `{"add_host": {"host": "compute-4"}}`,
		},
		{
			name:     "remove host from aggregate",
			route:    "POST /compute/v2.1/os-aggregates/2/action",
			answer:   func(t *testing.T) func(http.ResponseWriter, *http.Request) { return fixture(t, "aggregates.json", 200) },
			call:     func(ctx context.Context, c *Client) error { return c.RemoveHostFromAggregate(ctx, 2, "compute-4") },
			wantBody: `{"remove_host": {"host": "compute-4"}}`,
		},
		{
			name:  "list flavors asks public and private ones",
			route: "GET /compute/v2.1/flavors/detail",
			answer: func(t *testing.T) func(http.ResponseWriter, *http.Request) {
				return fixture(t, "flavors_embedded.json", 200)
			},
			call:      func(ctx context.Context, c *Client) error { _, err := c.ListFlavors(ctx); return err },
			wantQuery: url.Values{"is_public": {"None"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			f.handle(tt.route, tt.answer(t))
			c, _ := newTestClient(t, f.noAuthCloud(), Options{})
			if err := tt.call(ctxT(t), c); err != nil {
				t.Fatalf("call: %v", err)
			}
			method, path, _ := strings.Cut(tt.route, " ")
			var seen []recorded
			for _, r := range f.requests("/compute/v2.1/") {
				if r.Path != "/compute/v2.1/" {
					seen = append(seen, r)
				}
			}
			if len(seen) != 1 {
				t.Fatalf("want 1 API request, got %d: %+v", len(seen), seen)
			}
			r := seen[0]
			if r.Method != method || r.Path != path {
				t.Errorf("request %s %s, want %s %s", r.Method, r.Path, method, path)
			}
			q, _ := url.ParseQuery(r.Query)
			if tt.wantQuery == nil {
				tt.wantQuery = url.Values{}
			}
			if !reflect.DeepEqual(q, tt.wantQuery) {
				t.Errorf("query %v, want %v", q, tt.wantQuery)
			}
			if q.Has("type") {
				t.Errorf("query has type=: %v", q)
			}
			if !jsonEqual(t, r.Body, tt.wantBody) {
				t.Errorf("body %s, want %s", r.Body, tt.wantBody)
			}
			if got := r.Header.Get("OpenStack-API-Version"); got != "compute 2.93" {
				t.Errorf("OpenStack-API-Version %q, want compute 2.93", got)
			}
			if got := r.Header.Get("X-OpenStack-Nova-API-Version"); got != "2.93" {
				t.Errorf("X-OpenStack-Nova-API-Version %q, want 2.93", got)
			}
			if got := r.Header.Get("X-Auth-Token"); got != "admin:admin" {
				t.Errorf("X-Auth-Token %q, want the NoAuth token", got)
			}
			for _, bad := range []string{`"force"`, `"onSharedStorage"`} {
				if strings.Contains(r.Body, bad) {
					t.Errorf("body %s contains %q", r.Body, bad)
				}
			}
		})
	}
}

func TestListServicesParsesEveryField(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/os-services", fixture(t, "services.json", 200))
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	got, err := c.ListServices(ctxT(t), "nova-compute")
	if err != nil {
		t.Fatal(err)
	}
	want := []Service{
		{ID: "4c8e1a4c-5e5b-4d4e-9b73-3e0a7cc4fe35", Host: "compute-0", Binary: "nova-compute", Zone: "nova",
			Status: "enabled", State: "up", UpdatedAt: time.Date(2026, 11, 21, 13, 42, 2, 0, time.UTC)},
		{ID: "e81d66a4-ddd3-4aba-8a84-171d1cb4d339", Host: "compute-1.example.com", Binary: "nova-compute", Zone: "az-2",
			Status: "disabled", State: "down", ForcedDown: true, DisabledReason: "instanceha evacuation: 2026-11-21T13:40:00",
			UpdatedAt: time.Date(2026, 11, 21, 13, 40, 55, 123456000, time.UTC)},
		{ID: "7b3c2a1e-0f2d-4b8a-9a2c-5d6e7f8a9b0c", Host: "compute-2", Binary: "nova-compute", Zone: "nova",
			Status: "enabled", State: "down"},
		{ID: "00000000-0000-0000-0000-00000000cafe", Host: "compute-down-cell", Binary: "nova-compute", Zone: "nova",
			Status: "UNKNOWN"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("services:\n got %+v\nwant %+v", got, want)
	}
}

func TestUpdateServiceReturnsTheUpdatedService(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("PUT /compute/v2.1/os-services/e81d66a4-ddd3-4aba-8a84-171d1cb4d339", fixture(t, "service_update.json", 200))
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	got, err := c.UpdateService(ctxT(t), "e81d66a4-ddd3-4aba-8a84-171d1cb4d339", ServiceUpdate{ForcedDown: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	if !got.ForcedDown || got.Status != "disabled" || got.UpdatedAt != time.Date(2026, 11, 21, 13, 42, 5, 0, time.UTC) {
		t.Fatalf("service %+v", got)
	}
}

func TestGetServerParsesEmbeddedFlavorLockAndNullTaskState(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/servers/9168b536-cd40-4630-b43f-b259807c6e87", fixture(t, "server.json", 200))
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	got, err := c.GetServer(ctxT(t), "9168b536-cd40-4630-b43f-b259807c6e87")
	if err != nil {
		t.Fatal(err)
	}
	want := Server{
		ID: "9168b536-cd40-4630-b43f-b259807c6e87", Name: "web-1", Status: "ACTIVE", TaskState: "",
		Host: "compute-1.example.com", ImageID: "70a599e0-31e7-49b7-b260-868f441e862b",
		FlavorName:       "m1.tiny.evacuable",
		FlavorExtraSpecs: map[string]string{"hw:cpu_policy": "dedicated", "trait:CUSTOM_evacuable": "true"},
		FlavorSpecOrder:  []string{"hw:cpu_policy", "trait:CUSTOM_evacuable"},
		Metadata:         map[string]string{"My Server Name": "Apache1", "evacuable": "true"},
		Locked:           true, LockedReason: "instanceha-evacuation",
		Updated: time.Date(2026, 11, 21, 13, 0, 3, 0, time.UTC),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("server:\n got %+v\nwant %+v", got, want)
	}
}

// TestListServersFollowsNextLinksOnItsOwnEndpoint: Nova builds next links
// from its public URL (here unreachable); the client keeps only the query.
func TestListServersFollowsNextLinksOnItsOwnEndpoint(t *testing.T) {
	f := newFakeCloud(t)
	p1, p2 := fixture(t, "servers_page1.json", 200), fixture(t, "servers_page2.json", 200)
	f.handle("GET /compute/v2.1/servers/detail", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("marker") == "2ce4c5b3-2866-4972-93ce-77a2ea46a7f9" {
			p2(w, r)
			return
		}
		p1(w, r)
	})
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	got, err := c.ListServers(ctxT(t), "compute-1.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("want 3 servers over 2 pages, got %d: %+v", len(got), got)
	}
	bfv := got[1]
	if bfv.ImageID != "" || bfv.TaskState != "rebuild_spawning" || bfv.Status != "REBUILD" ||
		bfv.FlavorExtraSpecs["evacuable"] != "True" || bfv.Metadata["HA_Enabled"] != "True" {
		t.Errorf("boot-from-volume server parsed as %+v", bfv)
	}
	if want := time.Date(2026, 11, 21, 13, 1, 4, 0, time.UTC); !bfv.Updated.Equal(want) {
		t.Errorf("zone-less updated parsed as %v, want %v (UTC)", bfv.Updated, want)
	}
	if !got[2].Updated.IsZero() {
		t.Errorf("updated None parsed as %v, want zero", got[2].Updated)
	}
	reqs := f.requests("/compute/v2.1/servers/detail")
	if len(reqs) != 2 {
		t.Fatalf("want 2 page requests, got %d", len(reqs))
	}
	q, _ := url.ParseQuery(reqs[1].Query)
	if q.Get("marker") != "2ce4c5b3-2866-4972-93ce-77a2ea46a7f9" || q.Get("host") != "compute-1.example.com" || q.Get("all_tenants") != "1" {
		t.Errorf("second page query %v", q)
	}
}

func TestListServersStopsWhenANextLinkRepeats(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/servers/detail", status(200,
		`{"servers": [{"id": "a"}], "servers_links": [{"rel": "next", "href": "http://x/v2.1/servers/detail?marker=a"}]}`, ""))
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	got, err := c.ListServers(ctxT(t), "h")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(f.requests("/compute/v2.1/servers/detail")) != 2 {
		t.Fatalf("got %d servers after %d requests; want 1 after 2", len(got), len(f.requests("/compute/v2.1/servers/detail")))
	}
}

func TestListMigrationsParsesNewestFirst(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/os-migrations", fixture(t, "migrations.json", 200))
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	got, err := c.ListMigrations(ctxT(t), MigrationQuery{InstanceUUID: "9168b536-cd40-4630-b43f-b259807c6e87", MigrationType: "evacuation"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Migration{
		{ID: 12, UUID: "42341d4b-346a-40d0-83c6-5f4f6892b650", InstanceUUID: "9168b536-cd40-4630-b43f-b259807c6e87",
			SourceCompute: "compute-1.example.com", DestCompute: "compute-3", Status: "done", MigrationType: "evacuation",
			CreatedAt: time.Date(2026, 11, 21, 13, 41, 2, 0, time.UTC), UpdatedAt: time.Date(2026, 11, 21, 13, 41, 5, 0, time.UTC)},
		{ID: 7, UUID: "0aa1b2c3-346a-40d0-83c6-5f4f6892b650", InstanceUUID: "9168b536-cd40-4630-b43f-b259807c6e87",
			SourceCompute: "compute-1.example.com", DestCompute: "compute-2", Status: "error", MigrationType: "evacuation",
			CreatedAt: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("migrations:\n got %+v\nwant %+v", got, want)
	}
}

func TestListAggregatesParses(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/os-aggregates", fixture(t, "aggregates.json", 200))
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	got, err := c.ListAggregates(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []Aggregate{
		{ID: 1, Name: "ha-group", AvailabilityZone: "nova", Hosts: []string{"compute-0", "compute-1.example.com"},
			Metadata: map[string]string{"availability_zone": "nova", "evacuable": "true"}},
		{ID: 2, Name: "reserved", Hosts: []string{}, Metadata: map[string]string{}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("aggregates:\n got %+v\nwant %+v", got, want)
	}
}

func TestListFlavorsUsesEmbeddedExtraSpecs(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/flavors/detail", fixture(t, "flavors_embedded.json", 200))
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	got, err := c.ListFlavors(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []Flavor{
		{ID: "1", Name: "m1.tiny", ExtraSpecs: map[string]string{}},
		{ID: "7", Name: "m1.small.ha", ExtraSpecs: map[string]string{"evacuable": "true", "hw:mem_page_size": "2048"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("flavors:\n got %+v\nwant %+v", got, want)
	}
	if n := len(f.requests("/compute/v2.1/flavors/")); n != 1 {
		t.Errorf("want 1 request with embedded extra specs, got %d", n)
	}
}

func TestListImagesFollowsGlancePagesAndKeepsStringProperties(t *testing.T) {
	f := newFakeCloud(t)
	p1, p2 := fixture(t, "images_page1.json", 200), fixture(t, "images_page2.json", 200)
	f.handle("GET /image/v2/images", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("marker") != "" {
			p2(w, r)
			return
		}
		p1(w, r)
	})
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	got, err := c.ListImages(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []Image{
		{ID: "70a599e0-31e7-49b7-b260-868f441e862b", Name: "cirros-0.6.2", Tags: []string{"evacuable", "cirros"},
			Properties: map[string]string{"hw_disk_bus": "virtio", "evacuable": "true"}},
		{ID: "1bea47ed-f6a9-463b-b423-14b9cca9ad27", Name: "plain", Tags: []string{},
			Properties: map[string]string{"os_distro": "debian"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("images:\n got %+v\nwant %+v", got, want)
	}
	reqs := f.requests("/image/")
	if len(reqs) != 2 {
		t.Fatalf("want 2 Glance requests, got %d", len(reqs))
	}
	for _, r := range reqs {
		if r.Header.Get("OpenStack-API-Version") != "" || r.Header.Get("X-OpenStack-Nova-API-Version") != "" {
			t.Errorf("Glance request carries a compute microversion header: %v", r.Header)
		}
	}
}

func TestErrorsCarryStatusRequestIDAndNovasMessage(t *testing.T) {
	tests := []struct {
		name     string
		answer   http.HandlerFunc
		sentinel error
		status   int
		reqID    string
		message  string
	}{
		{"400 evacuate from a live host", status(400, `{"badRequest": {"code": 400, "message": "Compute service of compute-1 is still in use."}}`, "req-400"),
			ErrBadRequest, 400, "req-400", "Compute service of compute-1 is still in use."},
		{"401", status(401, `{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}`, "req-401"),
			ErrUnauthorized, 401, "req-401", "The request you have made requires authentication."},
		{"403 policy", status(403, `{"forbidden": {"code": 403, "message": "Policy doesn't allow os_compute_api:os-evacuate to be performed."}}`, "req-403"),
			ErrForbidden, 403, "req-403", "Policy doesn't allow os_compute_api:os-evacuate to be performed."},
		{"404 unknown target host", status(404, `{"itemNotFound": {"code": 404, "message": "Compute host compute-9 could not be found."}}`, "req-404"),
			ErrNotFound, 404, "req-404", "Compute host compute-9 could not be found."},
		{"409 server busy", status(409, `{"conflictingRequest": {"code": 409, "message": "Cannot 'evacuate' instance s1 while it is in task_state rebuilding"}}`, "req-409"),
			ErrConflict, 409, "req-409", "Cannot 'evacuate' instance s1 while it is in task_state rebuilding"},
		{"500 with an HTML body", status(500, "", "req-500"), ErrServer, 500, "req-500", "Internal Server Error"},
		{"503 from a proxy", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Compute-Request-Id", "req-compute-503")
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(503)
			_, _ = w.Write([]byte("<html><body><h1>503 Service Unavailable</h1>\nNo server is available.</body></html>"))
		}, ErrServer, 503, "req-compute-503", "503 Service Unavailable No server is available."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			f.handle("POST /compute/v2.1/servers/s1/action", tt.answer)
			c, _ := newTestClient(t, f.noAuthCloud(), Options{})
			err := c.Evacuate(ctxT(t), "s1", "")
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error %T %v is not an *APIError", err, err)
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("errors.Is(%v, %v) is false", err, tt.sentinel)
			}
			if errors.Is(err, ErrUnreachable) {
				t.Errorf("an HTTP answer counts as unreachable: %v", err)
			}
			if ae.StatusCode != tt.status || ae.RequestID != tt.reqID || ae.Message != tt.message {
				t.Errorf("got status %d request %q message %q; want %d %q %q", ae.StatusCode, ae.RequestID, ae.Message, tt.status, tt.reqID, tt.message)
			}
			if ae.Op != "evacuate server s1" {
				t.Errorf("op %q", ae.Op)
			}
		})
	}
}

func TestNoAnswerIsUnreachableWithStatusZero(t *testing.T) {
	f := newFakeCloud(t)
	cloud := f.noAuthCloud()
	c, _ := newTestClient(t, cloud, Options{})
	f.srv.Close()
	_, err := c.ListServices(ctxT(t), "nova-compute")
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 0 || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("want an unreachable *APIError, got %T %v", err, err)
	}
	if c.Microversion() != "" {
		t.Errorf("microversion %q negotiated with nobody", c.Microversion())
	}
}

func TestCallerDeadlineIsReportedAsSuch(t *testing.T) {
	f := newFakeCloud(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.handle("GET /compute/v2.1/os-aggregates", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctxT(t), 100*time.Millisecond)
	defer cancel()
	_, err := c.ListAggregates(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("want deadline exceeded and unreachable, got %v", err)
	}
}

func TestMalformedSuccessIsReported(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/os-services", status(200, `{"services": "nope"`, "req-bad"))
	c, _ := newTestClient(t, f.noAuthCloud(), Options{})
	_, err := c.ListServices(ctxT(t), "")
	var ae *APIError
	if !errors.As(err, &ae) || !errors.Is(err, ErrMalformed) || ae.RequestID != "req-bad" || ae.StatusCode != 200 {
		t.Fatalf("got %v", err)
	}
	if errors.Is(err, ErrUnreachable) {
		t.Fatal("malformed answer counted as unreachable")
	}
}
