package novasim

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/aggregates"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/services"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
)

func TestFaults(t *testing.T) {
	e := newTestSim(t, Options{}, false)
	e.AddCompute("c1", "")
	t.Run("a counted fault answers its status, then normal answers resume", func(t *testing.T) {
		e.SetFault(RouteServicesList, Fault{Status: 503, Times: 2})
		e.do(t, "GET", "/os-services", "2.53", nil).want(t, 503)
		a := e.do(t, "GET", "/os-services", "2.53", nil).want(t, 503)
		if obj(a.body["serviceUnavailable"])["code"] != float64(503) {
			t.Fatalf("fault body %s", a.raw)
		}
		e.do(t, "GET", "/os-services", "2.53", nil).want(t, 200)
	})
	t.Run("a fault body is sent as given", func(t *testing.T) {
		e.SetFault(RouteEvacuate, Fault{Status: 500, Body: `{"computeFault":{"code":500,"message":"boom"}}`})
		a := e.do(t, "POST", "/servers/x/action", "2.93", evacuate("")).want(t, 500)
		if !strings.Contains(string(a.raw), "boom") {
			t.Fatalf("%s", a.raw)
		}
		e.do(t, "POST", "/servers/x/action", "2.93", evacuate("")).want(t, 500) // forever
		e.ClearFaults()
		e.do(t, "POST", "/servers/x/action", "2.93", evacuate("")).want(t, 404)
	})
	t.Run("latency delays a normal answer", func(t *testing.T) {
		e.SetFault(RouteServersList, Fault{Latency: 150 * time.Millisecond, Times: 1})
		start := time.Now()
		e.do(t, "GET", "/servers/detail", "2.93", nil).want(t, 200)
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("answered after %v", d)
		}
	})
	t.Run("faults do not leak across routes", func(t *testing.T) {
		e.SetFault(RouteMigrations, Fault{Status: 502})
		e.do(t, "GET", "/os-services", "2.53", nil).want(t, 200)
		e.ClearFaults()
	})
}

func TestCounters(t *testing.T) {
	e := newTestSim(t, Options{}, false)
	e.AddCompute("c1", "")
	a := e.AddServer(ServerSpec{Host: "c1"})
	b := e.AddServer(ServerSpec{Host: "c1"})
	e.ResetCounters()
	e.do(t, "POST", "/servers/"+a+"/action", "2.93", evacuate(""))
	e.do(t, "POST", "/servers/"+a+"/action", "2.93", evacuate(""))
	e.do(t, "POST", "/servers/"+b+"/action", "2.93", evacuate(""))
	e.do(t, "POST", "/servers/"+b+"/action", "2.93", map[string]any{"lock": nil})
	e.do(t, "GET", "/servers/"+b, "2.93", nil)
	e.do(t, "GET", "/os-services", "", nil)
	for _, c := range []struct {
		route, server string
		want          int
	}{
		{RouteEvacuate, "", 3}, {RouteEvacuate, a, 2}, {RouteEvacuate, b, 1}, {RouteLock, b, 1},
		{RouteServerGet, b, 1}, {RouteServicesList, "", 1}, {RouteLock, a, 0},
	} {
		got := e.Calls(c.route)
		if c.server != "" {
			got = e.ServerCalls(c.server, c.route)
		}
		if got != c.want {
			t.Errorf("%s %s: %d calls, want %d", c.route, c.server, got, c.want)
		}
	}
	e.ResetCounters()
	if e.Calls(RouteEvacuate) != 0 || e.ServerCalls(a, RouteEvacuate) != 0 {
		t.Fatal("ResetCounters left counts")
	}
}

func TestKeystone(t *testing.T) {
	e := newTestSim(t, Options{Password: "canary-pw"}, false)
	post := func(body string) *http.Response {
		resp, err := http.Post(e.AuthURL()+"/auth/tokens", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	pw := func(user, pass string) string {
		return `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"` + user + `","domain":{"id":"default"},"password":"` + pass + `"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}`
	}
	tests := []struct {
		name, body string
		status     int
	}{
		{"password auth", pw("admin", "canary-pw"), 201},
		{"wrong password", pw("admin", "nope"), 401},
		{"wrong user", pw("bob", "canary-pw"), 401},
		{"application credential by id", `{"auth":{"identity":{"methods":["application_credential"],"application_credential":{"id":"iha-appcred-id","secret":"appcred-secret"}}}}`, 201},
		{"application credential by name", `{"auth":{"identity":{"methods":["application_credential"],"application_credential":{"name":"iha","user":{"name":"admin","domain":{"id":"default"}},"secret":"appcred-secret"}}}}`, 201},
		{"application credential wrong secret", `{"auth":{"identity":{"methods":["application_credential"],"application_credential":{"id":"iha-appcred-id","secret":"x"}}}}`, 401},
		{"another project", `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"canary-pw"}}},"scope":{"project":{"name":"demo","domain":{"id":"default"}}}}}`, 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	t.Run("calls without a valid token are 401", func(t *testing.T) {
		req := e.request(t, "GET", "/os-services")
		req.Header.Del("X-Auth-Token")
		if resp := e.send(t, req); resp.StatusCode != 401 {
			t.Fatalf("no token: HTTP %d", resp.StatusCode)
		}
		req.Header.Set("X-Auth-Token", "forged")
		if resp := e.send(t, req); resp.StatusCode != 401 {
			t.Fatalf("forged token: HTTP %d", resp.StatusCode)
		}
	})
	t.Run("revoked tokens are 401 and a new login works", func(t *testing.T) {
		e.do(t, "GET", "/os-services", "", nil).want(t, 200)
		e.RevokeTokens()
		e.do(t, "GET", "/os-services", "", nil).want(t, 401)
		e.token = e.login(t)
		e.do(t, "GET", "/os-services", "", nil).want(t, 200)
	})
	t.Run("version documents need no token", func(t *testing.T) {
		for _, u := range []string{e.URL() + "/compute/", e.ComputeURL() + "/", e.AuthURL()} {
			resp, err := http.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s: HTTP %d", u, resp.StatusCode)
			}
		}
	})
}

func TestMigrationsQuery(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: time.Second, EvacuationDelay: time.Second}, true)
	e.AddCompute("a", "")
	e.AddCompute("b", "")
	e.StopCompute("a")
	e.clock.Advance(time.Minute)
	ids := []string{e.AddServer(ServerSpec{Host: "a"}), e.AddServer(ServerSpec{Host: "a"}), e.AddServer(ServerSpec{Host: "a"})}
	for _, id := range ids {
		e.do(t, "POST", "/servers/"+id+"/action", "2.93", evacuate("")).want(t, 200)
		e.clock.Advance(2 * time.Second)
	}
	count := func(path, mv string) int {
		t.Helper()
		return len(list(e.do(t, "GET", path, mv, nil).want(t, 200).body["migrations"]))
	}
	t.Run("type is a 400 at 2.59 and ignored at 2.1", func(t *testing.T) {
		e.do(t, "GET", "/os-migrations?type=evacuation", "2.59", nil).want(t, 400)
		if n := count("/os-migrations?type=evacuation", "2.1"); n != 3 {
			t.Fatalf("%d rows", n)
		}
	})
	t.Run("filters", func(t *testing.T) {
		for q, want := range map[string]int{
			"instance_uuid=" + ids[1]: 1, "source_compute=a": 3, "source_compute=b": 0,
			"migration_type=evacuation": 3, "migration_type=live-migration": 0,
			"changes-since=2026-11-02T10:01:02": 2, "changes-since=2026-11-02T10:01:04Z": 1,
		} {
			if n := count("/os-migrations?"+q, "2.59"); n != want {
				t.Errorf("%s: %d rows, want %d", q, n, want)
			}
		}
	})
	t.Run("fields at 2.59, newest first, paged with limit and marker", func(t *testing.T) {
		a := e.do(t, "GET", "/os-migrations?limit=2", "2.59", nil).want(t, 200)
		rows := list(a.body["migrations"])
		first := obj(rows[0])
		if first["instance_uuid"] != ids[2] || first["migration_type"] != "evacuation" || first["status"] != "done" ||
			first["dest_compute"] != "b" || first["uuid"] == nil || len(list(a.body["migrations_links"])) != 1 {
			t.Fatalf("%s", a.raw)
		}
		rest := list(e.do(t, "GET", "/os-migrations?limit=2&marker="+obj(rows[1])["uuid"].(string), "2.59", nil).want(t, 200).body["migrations"])
		if len(rest) != 1 || obj(rest[0])["instance_uuid"] != ids[0] {
			t.Fatalf("second page %v", rest)
		}
		e.do(t, "GET", "/os-migrations?marker=nope", "2.59", nil).want(t, 400)
		a = e.do(t, "GET", "/os-migrations", "2.23", nil).want(t, 200)
		if _, ok := obj(list(a.body["migrations"])[0])["uuid"]; ok {
			t.Fatalf("uuid below 2.59: %s", a.raw)
		}
	})
}

// evacuateOpts is the evacuate body for ≥ 2.68: gophercloud's EvacuateOpts
// always sends onSharedStorage, which Nova refuses from 2.14 on.
type evacuateOpts struct{ host string }

func (o evacuateOpts) ToEvacuateMap() (map[string]any, error) {
	m := map[string]any{}
	if o.host != "" {
		m["host"] = o.host
	}
	return map[string]any{"evacuate": m}, nil
}

// The simulator works with the real gophercloud client IHA uses.
func TestGophercloud(t *testing.T) {
	s, err := New(Options{ReportInterval: time.Second, EvacuationDelay: 50 * time.Millisecond, NoStartupDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.AddCompute("a", "")
	s.AddCompute("b", "")
	fl := s.AddFlavor(Flavor{Name: "f", ExtraSpecs: map[string]string{"evacuable": "true"}})
	for i := 0; i < 30; i++ {
		s.AddImage(Image{Tags: []string{"evacuable"}, Properties: map[string]string{"os_distro": "cirros"}})
	}
	id := s.AddServer(ServerSpec{Host: "a", FlavorID: fl})
	s.AddAggregate(Aggregate{Name: "ha", Hosts: []string{"a", "b"}, Metadata: map[string]string{"evacuable": "true"}})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prov, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: s.AuthURL(), Username: "admin", Password: "secret", DomainName: "Default", TenantName: "admin", AllowReauth: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	nova, err := openstack.NewComputeV2(prov, gophercloud.EndpointOpts{Region: "regionOne", Availability: gophercloud.AvailabilityInternal})
	if err != nil {
		t.Fatal(err)
	}
	nova.Microversion = "2.93"
	glance, err := openstack.NewImageV2(prov, gophercloud.EndpointOpts{Region: "regionOne"})
	if err != nil {
		t.Fatal(err)
	}

	pages, err := services.List(nova, services.ListOpts{Binary: "nova-compute"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := services.ExtractServices(pages)
	if err != nil || len(svcs) != 2 || svcs[0].State != "up" || svcs[0].UpdatedAt.IsZero() {
		t.Fatalf("services %+v %v", svcs, err)
	}
	s.StopCompute("a")
	if _, err := services.Update(ctx, nova, svcs[0].ID, services.UpdateOpts{ForcedDown: true, Status: services.ServiceDisabled, DisabledReason: "iha"}).Extract(); err != nil {
		t.Fatal(err)
	}
	resp, err := nova.Post(ctx, nova.ServiceURL("servers", id, "action"), evacuateOpts{}.mustMap(), nil, &gophercloud.RequestOpts{OkCodes: []int{200}})
	if err != nil {
		t.Fatalf("evacuate: %v", err)
	}
	resp.Body.Close()

	s.RevokeTokens() // gophercloud re-authenticates on 401
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv, err := servers.Get(ctx, nova, id).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if srv.Host == "b" && srv.Status == "ACTIVE" {
			if srv.Flavor["extra_specs"].(map[string]any)["evacuable"] != "true" {
				t.Fatalf("flavor %v", srv.Flavor)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server still %s on %s", srv.Status, srv.Host)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.Calls(RouteTokens) < 2 {
		t.Fatal("no re-authentication after revocation")
	}

	allPages, err := servers.List(nova, servers.ListOpts{AllTenants: true, Host: "b"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if all, _ := servers.ExtractServers(allPages); len(all) != 1 {
		t.Fatalf("%d servers on b", len(all))
	}
	fp, err := flavors.ListDetail(nova, flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fls, _ := flavors.ExtractFlavors(fp)
	if len(fls) != 1 {
		t.Fatalf("flavors %v", fls)
	}
	specs, err := flavors.ListExtraSpecs(ctx, nova, fls[0].ID).Extract()
	if err != nil || specs["evacuable"] != "true" {
		t.Fatalf("extra specs %v %v", specs, err)
	}
	ap, err := aggregates.List(nova).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ags, _ := aggregates.ExtractAggregates(ap); len(ags) != 1 || len(ags[0].Hosts) != 2 {
		t.Fatalf("aggregates %+v", ags)
	}
	ip, err := images.List(glance, images.ListOpts{Tags: []string{"evacuable"}}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := images.ExtractImages(ip)
	if err != nil || len(imgs) != 30 || imgs[0].Properties["os_distro"] != "cirros" {
		t.Fatalf("%d images (paged by 25): %v", len(imgs), err)
	}
}

func (o evacuateOpts) mustMap() map[string]any { m, _ := o.ToEvacuateMap(); return m }
