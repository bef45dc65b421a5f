package novasim

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func evacuate(host string) map[string]any {
	if host == "" {
		return map[string]any{"evacuate": map[string]any{}}
	}
	return map[string]any{"evacuate": map[string]any{"host": host}}
}

// The whole life of an evacuation on a fake clock: accepted, pre-migrating,
// done on the destination, forced_down false refused until the source
// restarts, then completed and the source's copy destroyed.
func TestEvacuationLifecycle(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: 10 * time.Second, EvacuationDelay: 2 * time.Second, NoStartupDelay: true,
		RestartCleanupDelay: 3 * time.Second}, true)
	srcID := e.AddCompute("src", "")
	e.AddCompute("dst", "")
	active := e.AddServer(ServerSpec{Host: "src"})
	shutoff := e.AddServer(ServerSpec{Host: "src", Status: "SHUTOFF"})
	errored := e.AddServer(ServerSpec{Host: "src", Status: "ERROR"})

	e.do(t, "POST", "/servers/"+active+"/action", "2.93", evacuate("")).want(t, 400)
	e.StopCompute("src")
	e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": true}).want(t, 200)
	for _, id := range []string{active, shutoff, errored} {
		a := e.do(t, "POST", "/servers/"+id+"/action", "2.93", evacuate("")).want(t, 200)
		if len(a.raw) != 0 {
			t.Fatalf("evacuate at 2.93 answered a body: %q", a.raw)
		}
	}
	migStatus := func() string {
		var st []string
		for _, m := range e.Migrations() {
			st = append(st, m.Status)
		}
		return strings.Join(st, ",")
	}
	srv, _ := e.Server(active)
	if got := migStatus(); got != "accepted,accepted,accepted" || srv.Status != "REBUILD" || srv.TaskState != "rebuilding" {
		t.Fatalf("after the call: migrations %s, server %s/%s", got, srv.Status, srv.TaskState)
	}
	e.clock.Advance(time.Second)
	if got := migStatus(); got != "pre-migrating,pre-migrating,pre-migrating" {
		t.Fatalf("after half the delay: %s", got)
	}
	e.clock.Advance(time.Second)
	if got := migStatus(); got != "done,done,done" {
		t.Fatalf("after the delay: %s", got)
	}
	for id, want := range map[string]string{active: "ACTIVE", shutoff: "SHUTOFF", errored: "ACTIVE"} {
		st, _ := e.Server(id)
		if st.Host != "dst" || st.Status != want || st.TaskState != "" {
			t.Errorf("server %s: host %s status %s task %q, want dst %s null", id, st.Host, st.Status, st.TaskState, want)
		}
	}
	if g := e.Guests("src"); len(g) != 3 {
		t.Fatalf("the stopped source lost its guests before a restart: %v", g)
	}
	a := e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": false}).want(t, 400)
	if msg := obj(a.body["badRequest"])["message"].(string); !strings.Contains(msg, "`done` evacuation migration records") {
		t.Fatalf("message %q", msg)
	}
	e.clock.Advance(time.Minute)
	if got := migStatus(); got != "done,done,done" {
		t.Fatalf("migrations completed without a restart: %s", got)
	}
	e.StartCompute("src")
	e.clock.Advance(2 * time.Second)
	if got := migStatus(); got != "done,done,done" {
		t.Fatalf("completed before RestartCleanupDelay: %s", got)
	}
	e.clock.Advance(time.Second)
	if got := migStatus(); got != "completed,completed,completed" {
		t.Fatalf("after the cleanup: %s", got)
	}
	if g := e.Guests("src"); len(g) != 0 {
		t.Fatalf("restart did not destroy evacuated guests: %v", g)
	}
	if g := e.Guests("dst"); len(g) != 3 {
		t.Fatalf("destination guests %v", g)
	}
	e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": false}).want(t, 200)
}

func TestEvacuateAnswers(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: time.Second, EvacuationDelay: time.Second}, true)
	aID := e.AddCompute("a", "")
	e.AddCompute("b", "")
	cID := e.AddCompute("c", "")
	e.StopCompute("a")
	e.do(t, "PUT", "/os-services/"+aID, "2.53", map[string]any{"forced_down": true}).want(t, 200)
	busy := e.AddServer(ServerSpec{Host: "a", TaskState: "powering-off"})
	paused := e.AddServer(ServerSpec{Host: "a", Status: "PAUSED"})
	locked := e.AddServer(ServerSpec{Host: "a", Locked: true, LockedReason: "op"})
	plain := e.AddServer(ServerSpec{Host: "a"})
	live := e.AddServer(ServerSpec{Host: "b"})
	tests := []struct {
		name, server, mv string
		body             map[string]any
		status           int
		msg              string
	}{
		{"source still up is 400 still in use", live, "2.93", evacuate(""), 400, "Compute service of b is still in use."},
		{"unknown target is 404", plain, "2.93", evacuate("nowhere"), 404, "nowhere"},
		{"target equal to source is 400", plain, "2.93", evacuate("a"), 400, "same"},
		{"force is refused at 2.68", plain, "2.68", map[string]any{"evacuate": map[string]any{"force": true}}, 400, "force"},
		{"onSharedStorage is refused at 2.68", plain, "2.68", map[string]any{"evacuate": map[string]any{"onSharedStorage": true}}, 400, "onSharedStorage"},
		{"a task state is not checked: a server powering off is evacuated", busy, "2.93", evacuate(""), 200, ""},
		{"a paused server is 409", paused, "2.93", evacuate(""), 409, "vm_state"},
		{"unknown server is 404", "4f0e3a2c-0000-4000-8000-000000000000", "2.93", evacuate(""), 404, "could not be found"},
		{"an admin may evacuate a locked server", locked, "2.93", evacuate(""), 200, ""},
		{"force is accepted at 2.29", plain, "2.29", map[string]any{"evacuate": map[string]any{"host": "b", "force": false}}, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(t, "POST", "/servers/"+tc.server+"/action", tc.mv, tc.body).want(t, tc.status)
			if tc.msg != "" && !strings.Contains(string(a.raw), tc.msg) {
				t.Fatalf("body %s lacks %q", a.raw, tc.msg)
			}
		})
	}
	t.Run("a server being evacuated is accepted again with a second migration", func(t *testing.T) {
		before := len(e.Migrations())
		e.do(t, "POST", "/servers/"+plain+"/action", "2.93", evacuate("")).want(t, 200)
		if n := len(e.Migrations()); n != before+1 {
			t.Fatalf("migrations %d, want %d", n, before+1)
		}
	})
	t.Run("no valid host: accepted, then migration error and server error on its host", func(t *testing.T) {
		e.AddCompute("d", "")
		dID := e.AddCompute("d", "")
		e.StopCompute("d")
		e.do(t, "PUT", "/os-services/"+dID, "2.53", map[string]any{"forced_down": true}).want(t, 200)
		e.do(t, "PUT", "/os-services/"+cID, "2.53", map[string]any{"status": "disabled"}).want(t, 200)
		e.StopCompute("b")
		e.clock.Advance(time.Minute) // b is down now
		orphan := e.AddServer(ServerSpec{Host: "d"})
		e.do(t, "POST", "/servers/"+orphan+"/action", "2.93", evacuate("")).want(t, 200)
		e.clock.Advance(time.Second)
		st, _ := e.Server(orphan)
		if st.Host != "d" || st.TaskState != "" || st.Status != "ERROR" {
			t.Fatalf("server %+v", st)
		}
		ms := e.Migrations()
		if last := ms[len(ms)-1]; last.InstanceUUID != orphan || last.Status != "error" {
			t.Fatalf("migration %+v", last)
		}
	})
}

func TestSchedulerSkipsDisabledAndDownHosts(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: time.Second, EvacuationDelay: time.Second}, true)
	for _, h := range []string{"up1", "up2", "off", "dead", "forced"} {
		e.AddCompute(h, "")
	}
	st, _ := e.Service("off")
	e.do(t, "PUT", "/os-services/"+st.ID, "2.53", map[string]any{"status": "disabled", "disabled_reason": "maint"}).want(t, 200)
	st, _ = e.Service("forced")
	e.do(t, "PUT", "/os-services/"+st.ID, "2.53", map[string]any{"forced_down": true}).want(t, 200)
	e.StopCompute("dead")
	e.clock.Advance(61 * time.Second) // past service_down_time
	flavor := e.AddFlavor(Flavor{Name: "small"})
	img := e.AddImage(Image{Name: "cirros"})
	seen := map[string]int{}
	for i := 0; i < 40; i++ {
		a := e.do(t, "POST", "/servers", "2.93", map[string]any{"server": map[string]any{
			"name": "s", "flavorRef": flavor, "imageRef": img, "networks": "none"}}).want(t, 202)
		srv, _ := e.Server(obj(a.body["server"])["id"].(string))
		seen[srv.Host]++
	}
	if seen["up1"] != 20 || seen["up2"] != 20 {
		t.Fatalf("placement %v, want 20 on each of up1 and up2 (RAM weigher spreads)", seen)
	}
}

func TestServerFieldsByMicroversion(t *testing.T) {
	e := newTestSim(t, Options{}, false)
	e.AddCompute("c1", "")
	fl := e.AddFlavor(Flavor{Name: "tagged", VCPUs: 2, RAM: 1024, Disk: 5, ExtraSpecs: map[string]string{"evacuable": "true"}})
	id := e.AddServer(ServerSpec{Host: "c1", FlavorID: fl, Metadata: map[string]string{"evacuable": "true"}})
	a := e.do(t, "GET", "/servers/"+id, "2.47", nil).want(t, 200)
	s := obj(a.body["server"])
	f := obj(s["flavor"])
	if f["original_name"] != "tagged" || f["vcpus"] != float64(2) || obj(f["extra_specs"])["evacuable"] != "true" {
		t.Fatalf("embedded flavor at 2.47: %v", f)
	}
	if s["image"] != "" || s["OS-EXT-STS:task_state"] != nil || s["OS-EXT-SRV-ATTR:host"] != "c1" || s["locked"] != false {
		t.Fatalf("server at 2.47: %s", a.raw)
	}
	if _, ok := s["locked_reason"]; ok {
		t.Fatal("locked_reason shown below 2.73")
	}
	a = e.do(t, "GET", "/servers/"+id, "2.46", nil).want(t, 200)
	if obj(obj(a.body["server"])["flavor"])["id"] != fl {
		t.Fatalf("flavor at 2.46: %s", a.raw)
	}
	e.do(t, "POST", "/servers/"+id+"/action", "2.73", map[string]any{"lock": map[string]any{"locked_reason": "iha-evacuation"}}).want(t, 202)
	a = e.do(t, "GET", "/servers/detail?all_tenants=1&host=c1", "2.73", nil).want(t, 200)
	s = obj(list(a.body["servers"])[0])
	if s["locked"] != true || s["locked_reason"] != "iha-evacuation" {
		t.Fatalf("lock round trip: locked %v reason %v", s["locked"], s["locked_reason"])
	}
	e.do(t, "POST", "/servers/"+id+"/action", "2.72", map[string]any{"lock": map[string]any{"locked_reason": "x"}}).want(t, 400)
	e.do(t, "POST", "/servers/"+id+"/action", "2.73", map[string]any{"unlock": nil}).want(t, 202)
	a = e.do(t, "GET", "/servers/"+id, "2.73", nil).want(t, 200)
	if s := obj(a.body["server"]); s["locked"] != false || s["locked_reason"] != nil {
		t.Fatalf("after unlock: %v %v", s["locked"], s["locked_reason"])
	}
	a = e.do(t, "GET", "/servers/detail?all_tenants=1&host=other", "2.73", nil).want(t, 200)
	if n := len(list(a.body["servers"])); n != 0 {
		t.Fatalf("host filter returned %d servers", n)
	}
}

func TestPowerActionsAndResetState(t *testing.T) {
	e := newTestSim(t, Options{NoStartupDelay: true}, true)
	e.AddCompute("c1", "")
	id := e.AddServer(ServerSpec{Host: "c1"})
	path := "/servers/" + id + "/action"
	e.do(t, "POST", path, "2.93", map[string]any{"os-start": nil}).want(t, 409)
	e.do(t, "POST", path, "2.93", map[string]any{"os-stop": nil}).want(t, 202)
	if st, _ := e.Server(id); st.Status != "SHUTOFF" {
		t.Fatalf("after stop: %+v", st)
	}
	e.StopCompute("c1")
	e.do(t, "POST", path, "2.93", map[string]any{"os-start": nil}).want(t, 202)
	if st, _ := e.Server(id); st.Status != "SHUTOFF" || st.TaskState != "powering-on" {
		t.Fatalf("start on a stopped compute: %+v", st)
	}
	e.do(t, "POST", path, "2.93", map[string]any{"os-resetState": map[string]any{"state": "bogus"}}).want(t, 400)
	e.do(t, "POST", path, "2.93", map[string]any{"os-resetState": map[string]any{"state": "error"}}).want(t, 202)
	if st, _ := e.Server(id); st.Status != "ERROR" || st.TaskState != "" {
		t.Fatalf("after reset to error: %+v", st)
	}
	e.do(t, "POST", path, "2.93", map[string]any{"os-resetState": map[string]any{"state": "active"}}).want(t, 202)
	if st, _ := e.Server(id); st.Status != "ACTIVE" || st.TaskState != "" {
		t.Fatalf("after reset to active: %+v", st)
	}
	e.do(t, "POST", path, "2.93", map[string]any{"reboot": map[string]any{"type": "HARD"}}).want(t, 404)
	e.do(t, "DELETE", "/servers/"+id, "2.93", nil).want(t, 204)
	e.do(t, "GET", "/servers/"+id, "2.93", nil).want(t, 404)
	if g := e.Guests("c1"); !slices.Contains(g, id) {
		t.Fatalf("a stopped compute lost the guest of a deleted server: %v", g)
	}
}

func TestCreateServerValidation(t *testing.T) {
	e := newTestSim(t, Options{}, false)
	e.AddCompute("c1", "")
	fl := e.AddFlavor(Flavor{Name: "f"})
	img := e.AddImage(Image{Name: "i"})
	base := func(mut func(m map[string]any)) map[string]any {
		m := map[string]any{"name": "s", "flavorRef": fl, "imageRef": img, "networks": "none"}
		mut(m)
		return map[string]any{"server": m}
	}
	tests := []struct {
		name   string
		mv     string
		body   map[string]any
		status int
		host   string
	}{
		{"pinned by availability zone", "2.93", base(func(m map[string]any) { m["availability_zone"] = "nova:c1" }), 202, "c1"},
		{"networks required at 2.37", "2.37", base(func(m map[string]any) { delete(m, "networks") }), 400, ""},
		{"networks optional at 2.36", "2.36", base(func(m map[string]any) { delete(m, "networks") }), 202, "c1"},
		{"unknown flavor", "2.93", base(func(m map[string]any) { m["flavorRef"] = "nope" }), 400, ""},
		{"unknown image", "2.93", base(func(m map[string]any) { m["imageRef"] = "nope" }), 400, ""},
		{"boot from volume has no image", "2.93", base(func(m map[string]any) {
			m["imageRef"] = ""
			m["block_device_mapping_v2"] = []any{map[string]any{"boot_index": 0, "source_type": "image", "uuid": img, "destination_type": "volume", "volume_size": 1}}
		}), 202, "c1"},
		{"unknown pinned host gives an ERROR server", "2.93", base(func(m map[string]any) { m["availability_zone"] = "nova:ghost" }), 202, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(t, "POST", "/servers", tc.mv, tc.body).want(t, tc.status)
			if tc.status != 202 {
				return
			}
			st, ok := e.Server(obj(a.body["server"])["id"].(string))
			if !ok || st.Host != tc.host {
				t.Fatalf("server %+v", st)
			}
			if tc.host == "" && st.Status != "ERROR" {
				t.Fatalf("status %s, want ERROR", st.Status)
			}
		})
	}
}

// Real Nova's restart cleanup (_destroy_evacuated_instances) takes the
// evacuations in status accepted, pre-migrating and done, and saves each
// completed in turn: forced_down false is refused while one is still done.
func TestRestartCleanupCompletesOneAtATime(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: 10 * time.Second, EvacuationDelay: 2 * time.Second, NoStartupDelay: true,
		RestartCleanupDelay: time.Second, RestartCleanupStep: time.Second}, true)
	srcID := e.AddCompute("src", "")
	e.AddCompute("dst", "")
	ids := []string{e.AddServer(ServerSpec{Host: "src"}), e.AddServer(ServerSpec{Host: "src"}), e.AddServer(ServerSpec{Host: "src", Status: "SHUTOFF"})}
	e.StopCompute("src")
	e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": true}).want(t, 200)
	for _, id := range ids {
		e.do(t, "POST", "/servers/"+id+"/action", "2.93", evacuate("")).want(t, 200)
	}
	e.clock.Advance(2 * time.Second)
	statuses := func() string {
		var st []string
		for _, m := range e.Migrations() {
			st = append(st, m.Status)
		}
		return strings.Join(st, ",")
	}
	if got := statuses(); got != "done,done,done" {
		t.Fatalf("before the restart: %s", got)
	}
	e.StartCompute("src")
	for i, want := range []string{"completed,done,done", "completed,completed,done"} {
		e.clock.Advance(time.Second)
		if got := statuses(); got != want {
			t.Fatalf("step %d: %s, want %s", i+1, got, want)
		}
		e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": false}).want(t, 400)
	}
	e.clock.Advance(time.Second)
	if got := statuses(); got != "completed,completed,completed" {
		t.Fatalf("after the last step: %s", got)
	}
	e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": false}).want(t, 200)
}

// A source that restarts while its evacuation is still accepted (the
// destination has not claimed it yet) marks the migration completed too
// (lab FINDINGS.md 4); the rebuild then goes on and saves pre-migrating and
// done over it, so a done migration is left whose source already cleaned up.
func TestRestartMidEvacuationCompletesThenTheRebuildOverwrites(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: 10 * time.Second, EvacuationDelay: 4 * time.Second, NoStartupDelay: true}, true)
	srcID := e.AddCompute("src", "")
	e.AddCompute("dst", "")
	id := e.AddServer(ServerSpec{Host: "src"})
	e.StopCompute("src")
	e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": true}).want(t, 200)
	e.do(t, "POST", "/servers/"+id+"/action", "2.93", evacuate("")).want(t, 200)
	status := func() string { ms := e.Migrations(); return ms[len(ms)-1].Status }
	if got := status(); got != "accepted" {
		t.Fatalf("after the call: %s", got)
	}
	e.StartCompute("src")
	if got := status(); got != "completed" {
		t.Fatalf("after the restart: %s, want completed", got)
	}
	if g := e.Guests("src"); len(g) != 0 {
		t.Fatalf("the restarted source kept the evacuating guest: %v", g)
	}
	e.clock.Advance(2 * time.Second)
	if got := status(); got != "pre-migrating" {
		t.Fatalf("after the claim: %s, want pre-migrating", got)
	}
	e.clock.Advance(2 * time.Second)
	srv, _ := e.Server(id)
	if got := status(); got != "done" || srv.Host != "dst" || srv.TaskState != "" {
		t.Fatalf("after the rebuild: migration %s, server on %s task %q", got, srv.Host, srv.TaskState)
	}
	// The source cleaned up before the rebuild finished: the done row stays
	// until its next restart, and so does the refusal.
	e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": false}).want(t, 400)
	e.StartCompute("src")
	if got := status(); got != "completed" {
		t.Fatalf("after a second restart: %s", got)
	}
	e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": false}).want(t, 200)
}

// Evacuating a server whose evacuation is in flight is accepted (Zed
// checks no task state): the second migration stays accepted, the server
// lands on the first one's destination and then goes to ERROR, and a
// restart of the source completes only the newest of the two, so the done
// one keeps forced_down false refused (lab FINDINGS.md 5).
func TestDuplicateEvacuation(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: 10 * time.Second, EvacuationDelay: 2 * time.Second, NoStartupDelay: true}, true)
	srcID := e.AddCompute("src", "")
	e.AddCompute("dst", "")
	id := e.AddServer(ServerSpec{Host: "src"})
	e.StopCompute("src")
	e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": true}).want(t, 200)
	e.do(t, "POST", "/servers/"+id+"/action", "2.93", evacuate("")).want(t, 200)
	e.do(t, "POST", "/servers/"+id+"/action", "2.93", evacuate("")).want(t, 200)
	statuses := func() string {
		var st []string
		for _, m := range e.Migrations() {
			st = append(st, m.Status)
		}
		return strings.Join(st, ",")
	}
	e.clock.Advance(3 * time.Second)
	srv, _ := e.Server(id)
	if got := statuses(); got != "done,accepted" || srv.Host != "dst" || srv.Status != "ERROR" || srv.TaskState != "" {
		t.Fatalf("migrations %s, server on %s %s task %q; want done,accepted and ERROR on dst", got, srv.Host, srv.Status, srv.TaskState)
	}
	e.clock.Advance(30 * time.Minute)
	if got := statuses(); got != "done,accepted" {
		t.Fatalf("30 minutes later: %s", got)
	}
	e.StartCompute("src")
	if got := statuses(); got != "done,completed" {
		t.Fatalf("after the source restarted: %s, want done,completed", got)
	}
	e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": false}).want(t, 400)
	e.StartCompute("src")
	if got := statuses(); got != "completed,completed" {
		t.Fatalf("after a second restart: %s", got)
	}
	e.do(t, "PUT", "/os-services/"+srcID, "2.53", map[string]any{"forced_down": false}).want(t, 200)
}
