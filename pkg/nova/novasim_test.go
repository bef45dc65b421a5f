package nova

// Integration tests against pkg/novasim: real HTTP, gophercloud's real
// Keystone v3 flow, the simulated Nova's semantics.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/novasim"
	"github.com/ihaproject/iha/pkg/secret"
)

func startSim(t *testing.T, opts novasim.Options) *novasim.Sim {
	t.Helper()
	if opts.Password == "" {
		opts.Password = canary
	}
	sim, err := novasim.New(opts)
	if err != nil {
		t.Fatalf("novasim: %v", err)
	}
	t.Cleanup(sim.Close)
	return sim
}

func simCloud(sim *novasim.Sim) config.Cloud {
	c := config.Cloud{Name: "sim", AuthURL: sim.AuthURL(), RegionName: "regionOne", Interface: "public"}
	return c.WithAuthOptions(gophercloud.AuthOptions{
		IdentityEndpoint: sim.AuthURL(),
		Username:         "admin",
		Password:         canary,
		DomainName:       "Default",
		TenantName:       "admin",
	})
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testkit.WaitForState(t, testTimeout, 20*time.Millisecond, what, cond)
}

func TestSimKeystoneFlowAndNegotiation(t *testing.T) {
	sim := startSim(t, novasim.Options{})
	sim.AddCompute("compute-0", "nova")
	c, logs := newTestClient(t, simCloud(sim), Options{})
	if c.Microversion() != "" {
		t.Fatal("negotiated before first use")
	}
	if n := sim.Calls(novasim.RouteTokens); n != 0 {
		t.Fatalf("New made %d token requests", n)
	}
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if c.Microversion() != "2.93" {
		t.Fatalf("microversion %q, want novasim's 2.93", c.Microversion())
	}
	svcs, err := c.ListServices(ctxT(t), "nova-compute")
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0].Host != "compute-0" || svcs[0].State != "up" || len(svcs[0].ID) != 36 || svcs[0].UpdatedAt.IsZero() {
		t.Fatalf("services %+v", svcs)
	}
	if n := sim.Calls(novasim.RouteTokens); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
	checkNoCanary(t, nil, logs.String())
}

func TestSimReauthenticatesAfterRevocation(t *testing.T) {
	sim := startSim(t, novasim.Options{})
	sim.AddCompute("compute-0", "nova")
	c, logs := newTestClient(t, simCloud(sim), Options{})
	if _, err := c.ListServices(ctxT(t), "nova-compute"); err != nil {
		t.Fatal(err)
	}
	sim.RevokeTokens()
	if _, err := c.ListServices(ctxT(t), "nova-compute"); err != nil {
		t.Fatalf("after RevokeTokens: %v", err)
	}
	if n := sim.Calls(novasim.RouteTokens); n != 2 {
		t.Fatalf("%d token requests, want 2", n)
	}
	if n := sim.Calls(novasim.RouteServicesList); n != 3 {
		t.Fatalf("%d service listings, want 3 (ok, 401, retry)", n)
	}
	if !strings.Contains(logs.String(), "re-authenticating") {
		t.Errorf("re-authentication not logged")
	}
	checkNoCanary(t, nil, logs.String())
}

func TestSimWrongPasswordIsUnauthorizedWithoutLeak(t *testing.T) {
	sim := startSim(t, novasim.Options{Password: "the-real-one"})
	c, logs := newTestClient(t, simCloud(sim), Options{})
	_, err := c.ListServices(ctxT(t), "nova-compute")
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("want 401, got %v", err)
	}
	checkNoCanary(t, err, logs.String())
}

// TestSimEvacuation walks the calls of one recovery: evacuate refused from
// a live host (400 with the request id), force-down and disable in one PUT,
// lock, evacuate, follow the migration, unlock.
func TestSimEvacuation(t *testing.T) {
	sim := startSim(t, novasim.Options{ReportInterval: time.Second, ServiceDownTime: 3 * time.Second, EvacuationDelay: 200 * time.Millisecond})
	sim.AddCompute("compute-1", "nova")
	sim.AddCompute("compute-2", "nova")
	id := sim.AddServer(novasim.ServerSpec{Name: "web-1", Host: "compute-1"})
	c, logs := newTestClient(t, simCloud(sim), Options{})
	ctx := ctxT(t)

	err := c.Evacuate(ctx, id, "")
	var ae *APIError
	if !errors.As(err, &ae) || !errors.Is(err, ErrBadRequest) {
		t.Fatalf("evacuate from a live host: want 400, got %v", err)
	}
	if ae.RequestID == "" || !strings.Contains(ae.Message, "still in use") || ae.Op != "evacuate server "+id {
		t.Fatalf("400 error %+v", ae)
	}

	sim.StopCompute("compute-1")
	svcs, err := c.ListServicesOnHost(ctx, "compute-1", "nova-compute")
	if err != nil || len(svcs) != 1 {
		t.Fatalf("services on compute-1: %v %+v", err, svcs)
	}
	reason := "instanceha evacuation: " + time.Now().UTC().Format(time.RFC3339)
	upd, err := c.UpdateService(ctx, svcs[0].ID, ServiceUpdate{ForcedDown: ptr(true), Status: ptr("disabled"), DisabledReason: &reason})
	if err != nil {
		t.Fatal(err)
	}
	if !upd.ForcedDown || upd.Status != "disabled" || upd.DisabledReason != reason || upd.State != "down" {
		t.Fatalf("updated service %+v", upd)
	}

	if err := c.Lock(ctx, id, "instanceha-evacuation"); err != nil {
		t.Fatal(err)
	}
	srv, err := c.GetServer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !srv.Locked || srv.LockedReason != "instanceha-evacuation" || srv.Host != "compute-1" || srv.TaskState != "" {
		t.Fatalf("locked server %+v", srv)
	}
	if err := c.Evacuate(ctx, id, ""); err != nil {
		t.Fatalf("evacuate from a forced-down host: %v", err)
	}
	eventually(t, "server ACTIVE on compute-2", func() (bool, string) {
		s, err := c.GetServer(ctx, id)
		return err == nil && s.Host == "compute-2" && s.Status == "ACTIVE" && s.TaskState == "", fmt.Sprintf("%+v %v", s, err)
	})
	ms, err := c.ListMigrations(ctx, MigrationQuery{InstanceUUID: id, MigrationType: "evacuation", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Status != "done" || ms[0].SourceCompute != "compute-1" || ms[0].DestCompute != "compute-2" || ms[0].UUID == "" {
		t.Fatalf("migrations %+v", ms)
	}
	host, err := c.ListMigrations(ctx, MigrationQuery{SourceCompute: "compute-1", MigrationType: "evacuation", ChangesSince: time.Now().Add(-time.Hour)})
	if err != nil || len(host) != 1 {
		t.Fatalf("host migrations: %v %+v", err, host)
	}
	if err := c.Unlock(ctx, id); err != nil {
		t.Fatal(err)
	}
	onDest, err := c.ListServers(ctx, "compute-2")
	if err != nil || len(onDest) != 1 || onDest[0].ID != id || onDest[0].Locked {
		t.Fatalf("servers on compute-2: %v %+v", err, onDest)
	}
	checkNoCanary(t, nil, logs.String())
}

func TestSimEvacuateToUnknownHostIsNotFound(t *testing.T) {
	sim := startSim(t, novasim.Options{})
	sim.AddCompute("compute-1", "nova")
	id := sim.AddServer(novasim.ServerSpec{Host: "compute-1"})
	c, _ := newTestClient(t, simCloud(sim), Options{})
	err := c.Evacuate(ctxT(t), id, "compute-9")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("want 404, got %v", err)
	}
}

func TestSimResetStateAndStop(t *testing.T) {
	sim := startSim(t, novasim.Options{})
	sim.AddCompute("compute-1", "nova")
	id := sim.AddServer(novasim.ServerSpec{Host: "compute-1", TaskState: "rebuilding"})
	c, _ := newTestClient(t, simCloud(sim), Options{})
	ctx := ctxT(t)
	if err := c.ResetState(ctx, id, "active"); err != nil {
		t.Fatal(err)
	}
	s, err := c.GetServer(ctx, id)
	if err != nil || s.TaskState != "" || s.Status != "ACTIVE" {
		t.Fatalf("after reset: %v %+v", err, s)
	}
	if err := c.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "server SHUTOFF", func() (bool, string) {
		s, err := c.GetServer(ctx, id)
		return err == nil && s.Status == "SHUTOFF", fmt.Sprintf("%+v %v", s, err)
	})
	if err := c.Stop(ctx, id); !errors.Is(err, ErrConflict) {
		t.Fatalf("stopping a stopped server: want 409, got %v", err)
	}
}

func TestSimPagingOverAThousandServers(t *testing.T) {
	sim := startSim(t, novasim.Options{})
	sim.AddCompute("big", "nova")
	sim.AddCompute("other", "nova")
	const n = 1203
	for i := range n {
		sim.AddServer(novasim.ServerSpec{Name: fmt.Sprintf("vm-%d", i), Host: "big", TenantID: fmt.Sprintf("project-%d", i%7)})
	}
	sim.AddServer(novasim.ServerSpec{Name: "elsewhere", Host: "other"})
	c, _ := newTestClient(t, simCloud(sim), Options{})
	got, err := c.ListServers(ctxT(t), "big")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("got %d servers, want %d", len(got), n)
	}
	ids := map[string]bool{}
	for _, s := range got {
		if s.Host != "big" || ids[s.ID] {
			t.Fatalf("server %+v duplicated or on the wrong host", s)
		}
		ids[s.ID] = true
	}
	if calls := sim.Calls(novasim.RouteServersList); calls != 2 {
		t.Errorf("%d list calls for %d servers, want 2 pages", calls, n)
	}
}

func TestSimCatalogCalls(t *testing.T) {
	sim := startSim(t, novasim.Options{})
	sim.AddCompute("compute-1", "nova")
	sim.AddCompute("compute-2", "nova")
	sim.AddFlavor(novasim.Flavor{ID: "f-ha", Name: "ha", Private: true, ExtraSpecs: map[string]string{"evacuable": "true"}})
	sim.AddFlavor(novasim.Flavor{ID: "f-plain", Name: "plain"})
	for i := range 30 { // more than Glance's default page of 25
		sim.AddImage(novasim.Image{Name: fmt.Sprintf("img-%d", i), Tags: []string{"evacuable"}, Properties: map[string]string{"os_distro": "debian"}})
	}
	agg := sim.AddAggregate(novasim.Aggregate{Name: "ha", Hosts: []string{"compute-1"}, Metadata: map[string]string{"evacuable": "true"}})
	c, _ := newTestClient(t, simCloud(sim), Options{})
	ctx := ctxT(t)

	fl, err := c.ListFlavors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]Flavor{}
	for _, f := range fl {
		byID[f.ID] = f
	}
	if byID["f-ha"].ExtraSpecs["evacuable"] != "true" || byID["f-plain"].Name != "plain" {
		t.Fatalf("flavors %+v", fl)
	}
	imgs, err := c.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 30 || imgs[0].Tags[0] != "evacuable" || imgs[0].Properties["os_distro"] != "debian" {
		t.Fatalf("%d images, first %+v", len(imgs), imgs[0])
	}
	if err := c.AddHostToAggregate(ctx, agg, "compute-2"); err != nil {
		t.Fatal(err)
	}
	if err := c.AddHostToAggregate(ctx, agg, "compute-2"); !errors.Is(err, ErrConflict) {
		t.Fatalf("adding a member twice: want 409, got %v", err)
	}
	aggs, err := c.ListAggregates(ctx)
	if err != nil || len(aggs) != 1 || strings.Join(aggs[0].Hosts, ",") != "compute-1,compute-2" || aggs[0].Metadata["evacuable"] != "true" {
		t.Fatalf("aggregates %v %+v", err, aggs)
	}
	if err := c.RemoveHostFromAggregate(ctx, agg, "compute-2"); err != nil {
		t.Fatal(err)
	}
}

func TestSimOldMicroversionDegrades(t *testing.T) {
	sim := startSim(t, novasim.Options{ReportInterval: time.Second, ServiceDownTime: 3 * time.Second, EvacuationDelay: 100 * time.Millisecond})
	sim.AddCompute("compute-1", "nova")
	sim.AddCompute("compute-2", "nova")
	sim.AddFlavor(novasim.Flavor{ID: "f-ha", Name: "ha", ExtraSpecs: map[string]string{"evacuable": "true"}})
	id := sim.AddServer(novasim.ServerSpec{Host: "compute-1", FlavorID: "f-ha"})
	c, _ := newTestClient(t, simCloud(sim), Options{MaxMicroversion: "2.58"})
	ctx := ctxT(t)
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Microversion() != "2.58" {
		t.Fatalf("microversion %q", c.Microversion())
	}
	fl, err := c.ListFlavors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range fl {
		found = found || (f.ID == "f-ha" && f.ExtraSpecs["evacuable"] == "true")
	}
	if !found || sim.Calls(novasim.RouteFlavorExtraSpecs) == 0 {
		t.Fatalf("flavors below 2.61: %+v, %d extra-spec calls", fl, sim.Calls(novasim.RouteFlavorExtraSpecs))
	}
	if err := c.Lock(ctx, id, "instanceha-evacuation"); err != nil {
		t.Fatal(err)
	}
	s, err := c.GetServer(ctx, id)
	if err != nil || !s.Locked || s.LockedReason != "" || s.FlavorExtraSpecs["evacuable"] != "true" {
		t.Fatalf("server at 2.58: %v %+v", err, s)
	}
	sim.StopCompute("compute-1")
	svc, _ := c.ListServicesOnHost(ctx, "compute-1", "nova-compute")
	if _, err := c.UpdateService(ctx, svc[0].ID, ServiceUpdate{ForcedDown: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Evacuate(ctx, id, "compute-2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "evacuation migration done", func() (bool, string) {
		ms, err := c.ListMigrations(ctx, MigrationQuery{InstanceUUID: id, MigrationType: "evacuation", ChangesSince: time.Now().Add(-time.Minute), Limit: 10})
		return err == nil && len(ms) == 1 && ms[0].Status == "done", fmt.Sprintf("%+v %v", ms, err)
	})
}

func TestSimFaultsMapToSentinels(t *testing.T) {
	tests := []struct {
		name     string
		fault    novasim.Fault
		sentinel error
	}{
		{"server error", novasim.Fault{Status: 500, Times: 1}, ErrServer},
		{"forbidden", novasim.Fault{Status: 403, Times: 1}, ErrForbidden},
		{"slow beyond the timeout", novasim.Fault{Latency: 6 * time.Second, Times: 1}, ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := startSim(t, novasim.Options{})
			sim.AddCompute("compute-1", "nova")
			c, _ := newTestClient(t, simCloud(sim), Options{Timeout: 2 * time.Second})
			ctx := ctxT(t)
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			sim.SetFault(novasim.RouteAggregates, tt.fault)
			_, err := c.ListAggregates(ctx)
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("want %v, got %v", tt.sentinel, err)
			}
			if tt.sentinel != ErrUnreachable {
				var ae *APIError
				if !errors.As(err, &ae) || ae.RequestID == "" {
					t.Errorf("no request id in %v", err)
				}
			}
			if _, err := c.ListAggregates(ctx); err != nil {
				t.Fatalf("after the fault: %v", err)
			}
		})
	}
}

func TestSimNoAuthLab(t *testing.T) {
	sim := startSim(t, novasim.Options{})
	sim.AddCompute("compute-1", "nova")
	// novasim has no noauth middleware: a Keystone token stands in for the
	// lab's fixed token, which is what NoAuth sends.
	kc, _ := newTestClient(t, simCloud(sim), Options{})
	if err := kc.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	tok := kc.provider.Token()
	c, _ := newTestClient(t, config.Cloud{Name: "lab", NoAuth: &config.NoAuth{
		ComputeURL: sim.ComputeURL(), ImageURL: sim.ImageURL(), Token: secret.New(tok)}}, Options{})
	if _, err := c.ListServices(ctxT(t), "nova-compute"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListImages(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := sim.Calls(novasim.RouteTokens); n != 1 {
		t.Fatalf("NoAuth client asked Keystone: %d token calls", n)
	}
}

// TestSimHiddenImageIsLookedUpByID: Glance's list leaves a hidden image out;
// GetImage reads it by id, tags and all, and says it is hidden. An unknown
// id is ErrNotFound.
func TestSimHiddenImageIsLookedUpByID(t *testing.T) {
	sim := startSim(t, novasim.Options{})
	shown := sim.AddImage(novasim.Image{Name: "shown"})
	hidden := sim.AddImage(novasim.Image{Name: "hidden", Tags: []string{"evacuable"}, Hidden: true})
	c, _ := newTestClient(t, simCloud(sim), Options{})
	ctx := ctxT(t)
	imgs, err := c.ListImages(ctx)
	if err != nil || len(imgs) != 1 || imgs[0].ID != shown {
		t.Fatalf("list = %+v, %v; want only the shown image", imgs, err)
	}
	im, err := c.GetImage(ctx, hidden)
	if err != nil || im.ID != hidden || !im.Hidden || len(im.Tags) != 1 || im.Tags[0] != "evacuable" {
		t.Fatalf("GetImage = %+v, %v", im, err)
	}
	if _, err := c.GetImage(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetImage of an unknown id: %v, want ErrNotFound", err)
	}
}

// TestServerKeepsTheOrderOfFlavorExtraSpecs: InstanceHA decides on the first
// extra-spec key carrying the tag, in the order Nova sends them.
func TestServerKeepsTheOrderOfFlavorExtraSpecs(t *testing.T) {
	var w serverWire
	body := `{"id":"s","flavor":{"original_name":"f","extra_specs":{"z:evacuable":"true","a:evacuable":"false","z:evacuable":"x"}}}`
	if err := json.Unmarshal([]byte(body), &w); err != nil {
		t.Fatal(err)
	}
	srv := w.server()
	if got := strings.Join(srv.FlavorSpecOrder, ","); got != "z:evacuable,a:evacuable" {
		t.Fatalf("order = %q", got)
	}
	if err := json.Unmarshal([]byte(`{"id":"s","flavor":{"extra_specs":[1]}}`), &w); err != nil || w.server().FlavorSpecOrder != nil {
		t.Fatalf("odd extra_specs: order %v, err %v", w.server().FlavorSpecOrder, err)
	}
}
