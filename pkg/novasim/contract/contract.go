package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Harness is the Nova under test and the hands that control its hosts.
type Harness interface {
	ComputeURL() string        // Nova's v2.1 endpoint, no trailing slash
	Token(t *testing.T) string // an admin token for X-Auth-Token
	Computes() []string        // at least 3 compute host names, all up and enabled
	// StopCompute freezes or kills host's nova-compute (its heartbeat stops,
	// its guests stay); StartCompute (re)starts it. Both return at once.
	StopCompute(t *testing.T, host string)
	StartCompute(t *testing.T, host string)
	WaitTimeout() time.Duration // how long any one state change may take
	ImageID() string            // an image servers can boot from
	FlavorID() string           // a flavor; the suite adds an extra spec to it
}

// Run checks every fact. Subtests of the evacuation scenario depend on
// each other and stop at the first failure.
func Run(t *testing.T, h Harness) {
	hosts := h.Computes()
	if len(hosts) < 3 {
		t.Fatalf("contract: the harness gave %d computes, need 3", len(hosts))
	}
	c := &client{h: h, base: strings.TrimRight(h.ComputeURL(), "/"), hc: &http.Client{Timeout: 60 * time.Second}}
	c.token = h.Token(t)
	a, b, z := hosts[0], hosts[1], hosts[2]

	t.Run("microversion above 2.93 is refused with 406", func(t *testing.T) {
		c.do(t, "GET", "/os-services", "2.94", nil).want(t, 406)
	})
	t.Run("answers carry request ids and echo the microversion", func(t *testing.T) {
		r := c.do(t, "GET", "/os-services?binary=nova-compute", "2.53", nil).want(t, 200)
		rid := r.header.Get("X-Openstack-Request-Id")
		if !strings.HasPrefix(rid, "req-") || r.header.Get("X-Compute-Request-Id") != rid {
			t.Fatalf("request ids %q / %q", rid, r.header.Get("X-Compute-Request-Id"))
		}
		if got := r.header.Get("OpenStack-API-Version"); got != "compute 2.53" {
			t.Fatalf("OpenStack-API-Version %q", got)
		}
		r = c.do(t, "GET", "/os-services?binary=nova-compute", "", nil, "X-OpenStack-Nova-API-Version", "2.60").want(t, 200)
		if got := r.header.Get("X-OpenStack-Nova-API-Version"); got != "2.60" {
			t.Fatalf("X-OpenStack-Nova-API-Version %q", got)
		}
	})
	t.Run("errors have Nova's body shape", func(t *testing.T) {
		r := c.do(t, "GET", "/servers/00000000-0000-4000-8000-000000000000", "2.93", nil).want(t, 404)
		e := obj(r.body["itemNotFound"])
		if e["code"] != float64(404) || e["message"] == nil {
			t.Fatalf("body %s", r.raw)
		}
	})
	t.Run("service id is a UUID at 2.53 and an integer below", func(t *testing.T) {
		if id, ok := c.service(t, a, "2.53")["id"].(string); !ok || len(id) != 36 {
			t.Fatalf("id at 2.53: %v", c.service(t, a, "2.53")["id"])
		}
		if _, ok := c.service(t, a, "2.52")["id"].(float64); !ok {
			t.Fatalf("id at 2.52: %v", c.service(t, a, "2.52")["id"])
		}
	})
	t.Run("updated_at advances and is whole seconds", func(t *testing.T) {
		u1 := c.updatedAt(t, a)
		c.waitFor(t, "updated_at of "+a+" to advance", func() (bool, string) {
			u := c.updatedAt(t, a)
			return u.After(u1), u.String()
		})
	})
	t.Run("os-migrations type is a 400 at 2.59 and ignored at 2.1", func(t *testing.T) {
		c.do(t, "GET", "/os-migrations?type=evacuation", "2.59", nil).want(t, 400)
		c.do(t, "GET", "/os-migrations?type=evacuation", "2.1", nil).want(t, 200)
		c.do(t, "GET", "/os-migrations?migration_type=evacuation&limit=1000", "2.59", nil).want(t, 200)
	})

	var plain string
	owner := t // servers used by later subtests are deleted when Run ends
	ok := t.Run("flavor extra specs are embedded at 2.47", func(t *testing.T) {
		c.do(t, "POST", "/flavors/"+h.FlavorID()+"/os-extra_specs", "2.1",
			map[string]any{"extra_specs": map[string]string{"iha:contract": "yes"}}).want(t, 200)
		plain = c.createServerOwned(t, owner, a)
		s := c.server(t, plain, "2.47")
		f := obj(s["flavor"])
		if obj(f["extra_specs"])["iha:contract"] != "yes" || f["original_name"] == nil || f["vcpus"] == nil || f["ram"] == nil {
			t.Fatalf("flavor at 2.47: %v", f)
		}
		if f := obj(c.server(t, plain, "2.46")["flavor"]); f["id"] == nil {
			t.Fatalf("flavor at 2.46: %v", f)
		}
	})
	if ok {
		t.Run("lock reason round-trips at 2.73", func(t *testing.T) {
			c.action(t, plain, "2.73", map[string]any{"lock": map[string]any{"locked_reason": "iha-contract"}}).want(t, 202)
			s := c.server(t, plain, "2.73")
			if s["locked"] != true || s["locked_reason"] != "iha-contract" {
				t.Fatalf("locked %v reason %v", s["locked"], s["locked_reason"])
			}
			c.action(t, plain, "2.73", map[string]any{"unlock": nil}).want(t, 202)
			s = c.server(t, plain, "2.73")
			if s["locked"] != false || s["locked_reason"] != nil {
				t.Fatalf("after unlock: locked %v reason %v", s["locked"], s["locked_reason"])
			}
		})
	}

	t.Run("a stopped compute goes down after service_down_time and up after a start", func(t *testing.T) {
		h.StopCompute(t, z)
		started := false
		t.Cleanup(func() {
			if !started {
				h.StartCompute(t, z)
			}
		})
		if st := c.service(t, z, "2.53"); st["state"] != "up" {
			t.Logf("%s is already %v right after the stop (short service_down_time?)", z, st["state"])
		}
		c.waitFor(t, z+" to be down", func() (bool, string) {
			st := c.service(t, z, "2.53")
			return st["state"] == "down", fmt.Sprint(st["state"], " ", st["updated_at"])
		})
		u := c.updatedAt(t, z)
		h.StartCompute(t, z)
		started = true
		c.waitFor(t, z+" to be up again", func() (bool, string) {
			st := c.service(t, z, "2.53")
			return st["state"] == "up" && c.updatedAt(t, z).After(u), fmt.Sprint(st["state"], " ", st["updated_at"])
		})
	})

	t.Run("evacuation", func(t *testing.T) { evacuation(t, c, h, a, b, z) })
}

// evacuation is the scenario: b fails and z is disabled, so that (of the
// three) a is the only valid destination.
func evacuation(t *testing.T, c *client, h Harness, a, b, z string) {
	_ = a
	bID := c.service(t, b, "2.53")["id"].(string)
	zID := c.service(t, z, "2.53")["id"].(string)
	s1 := c.createServer(t, b)
	s2 := c.createServer(t, b)
	s3 := c.createServer(t, b)
	c.action(t, s2, "2.93", map[string]any{"os-stop": nil}).want(t, 202)
	c.waitFor(t, s2+" SHUTOFF", func() (bool, string) {
		st := c.server(t, s2, "2.93")["status"]
		return st == "SHUTOFF", fmt.Sprint(st)
	})

	stopped := false
	t.Cleanup(func() {
		c.do(t, "PUT", "/os-services/"+zID, "2.53", map[string]any{"status": "enabled"})
		if stopped {
			h.StartCompute(t, b)
		}
		c.do(t, "PUT", "/os-services/"+bID, "2.53", map[string]any{"forced_down": false})
	})
	failed := false
	evacuatedEarly := false // s3's evacuate was accepted by the task-state step
	step := func(name string, f func(t *testing.T)) {
		if failed {
			t.Run(name, func(t *testing.T) { t.Fatal("not run: an earlier step failed") })
			return
		}
		failed = !t.Run(name, f)
	}

	step("evacuate from a live host is 400 still in use", func(t *testing.T) {
		r := c.action(t, s1, "2.93", map[string]any{"evacuate": map[string]any{}}).want(t, 400)
		if !strings.Contains(c.message(r), "still in use") {
			t.Fatalf("message %q", c.message(r))
		}
	})
	h.StopCompute(t, b)
	stopped = true
	step("a task state does not block evacuate: a live source is still the only refusal (400)", func(t *testing.T) {
		// Right after the stop the service still looks up, so the API casts
		// the stop to the dead compute and the task state stays.
		c.action(t, s3, "2.93", map[string]any{"os-stop": nil}).want(t, 202)
		if ts := c.server(t, s3, "2.93")["OS-EXT-STS:task_state"]; ts != "powering-off" {
			t.Fatalf("task_state %v after os-stop on a stopped compute", ts)
		}
		// Zed checks vm_state only (task_state=None in check_instance_state):
		// never 409 here. While b still looks up the answer is the live-host
		// 400; if b is already down (a short service_down_time) it is 200,
		// which would start the evacuation early: only assert the 400 when
		// b was up both before and after the request.
		upBefore := c.service(t, b, "2.53")["state"] == "up"
		if !upBefore {
			t.Logf("%s already down: the live-host refusal cannot be checked", b)
			return
		}
		r := c.action(t, s3, "2.93", map[string]any{"evacuate": map[string]any{}})
		upAfter := c.service(t, b, "2.53")["state"] == "up"
		switch {
		case r.status == 400 && strings.Contains(c.message(r), "still in use"):
		case r.status == 200 && !upAfter:
			t.Logf("%s went down during the request: evacuate accepted (200)", b)
			evacuatedEarly = true
		default:
			t.Fatalf("evacuate of a server in task_state powering-off from a live source: HTTP %d %s", r.status, r.raw)
		}
	})
	step("forced_down makes the service down at once and bumps updated_at", func(t *testing.T) {
		u0 := c.updatedAt(t, b)
		// Let a second pass so that a bump cannot hide behind the last heartbeat.
		deadline := time.Now().Add(h.WaitTimeout())
		for !time.Now().UTC().Truncate(time.Second).After(u0) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if st := c.service(t, b, "2.53"); st["state"] != "up" {
			t.Logf("%s is already %v before the force-down", b, st["state"])
		}
		r := c.do(t, "PUT", "/os-services/"+bID, "2.53", map[string]any{"forced_down": true}).want(t, 200)
		if sv := obj(r.body["service"]); sv["state"] != "down" || sv["forced_down"] != true {
			t.Fatalf("PUT answered %s", r.raw)
		}
		if st := c.service(t, b, "2.53"); st["state"] != "down" {
			t.Fatalf("state %v right after the force-down", st["state"])
		}
		if u := c.updatedAt(t, b); !u.After(u0) {
			t.Fatalf("updated_at %v not bumped past %v", u, u0)
		}
	})
	step("evacuate to an unknown host is 404 and force is refused at 2.68", func(t *testing.T) {
		c.action(t, s1, "2.93", map[string]any{"evacuate": map[string]any{"host": "no-such-host.invalid"}}).want(t, 404)
		c.action(t, s1, "2.68", map[string]any{"evacuate": map[string]any{"force": true}}).want(t, 400)
	})
	step("disable with a reason", func(t *testing.T) {
		r := c.do(t, "PUT", "/os-services/"+zID, "2.53", map[string]any{"status": "disabled", "disabled_reason": "iha-contract"}).want(t, 200)
		if sv := obj(r.body["service"]); sv["status"] != "disabled" || sv["disabled_reason"] != "iha-contract" {
			t.Fatalf("%s", r.raw)
		}
		c.do(t, "PUT", "/os-services/"+zID, "2.53", map[string]any{"status": "enabled", "disabled_reason": "x"}).want(t, 400)
	})
	var mig map[string]any
	step("evacuate from a forced-down host is 200 with a migration, whatever the task state", func(t *testing.T) {
		if !evacuatedEarly {
			if ts := c.server(t, s3, "2.93")["OS-EXT-STS:task_state"]; ts != "powering-off" {
				t.Fatalf("%s task_state %v before its evacuation, want powering-off", s3, ts)
			}
		}
		for _, id := range []string{s1, s2, s3} {
			if id == s3 && evacuatedEarly {
				continue
			}
			r := c.action(t, id, "2.93", map[string]any{"evacuate": map[string]any{}}).want(t, 200)
			if len(bytes.TrimSpace(r.raw)) != 0 {
				t.Fatalf("body at 2.93: %q", r.raw)
			}
		}
		mig = c.migration(t, s1)
		if mig == nil {
			t.Fatal("no evacuation migration for " + s1)
		}
		if mig["source_compute"] != b || mig["migration_type"] != "evacuation" || mig["uuid"] == nil {
			t.Fatalf("migration %v", mig)
		}
	})
	step("evacuated ACTIVE stays ACTIVE and SHUTOFF stays SHUTOFF", func(t *testing.T) {
		for id, want := range map[string]string{s1: "ACTIVE", s2: "SHUTOFF", s3: "ACTIVE"} {
			c.waitFor(t, id+" rebuilt elsewhere", func() (bool, string) {
				s := c.server(t, id, "2.93")
				return s["OS-EXT-SRV-ATTR:host"] != b && s["OS-EXT-STS:task_state"] == nil,
					fmt.Sprint(s["status"], " ", s["OS-EXT-SRV-ATTR:host"], " ", s["OS-EXT-STS:task_state"])
			})
			if st := c.server(t, id, "2.93")["status"]; st != want {
				t.Errorf("%s is %v, want %s", id, st, want)
			}
		}
	})
	step("scheduler never picks a disabled or down host", func(t *testing.T) {
		for _, id := range []string{s1, s2, s3, c.createServer(t, "")} {
			if host := c.server(t, id, "2.93")["OS-EXT-SRV-ATTR:host"]; host == b || host == z || host == nil {
				t.Errorf("%s placed on %v (%s is forced down, %s disabled)", id, host, b, z)
			}
		}
	})
	step("the migration is done and stays done without a restart", func(t *testing.T) {
		c.waitFor(t, "migration done", func() (bool, string) {
			m := c.migration(t, s1)
			return m["status"] == "done", fmt.Sprint(m["status"])
		})
		time.Sleep(min(h.WaitTimeout()/10, 3*time.Second))
		if m := c.migration(t, s1); m["status"] != "done" {
			t.Fatalf("status %v before the source restarted", m["status"])
		}
	})
	step("forced_down false is 400 while done evacuation migrations remain", func(t *testing.T) {
		r := c.do(t, "PUT", "/os-services/"+bID, "2.53", map[string]any{"forced_down": false}).want(t, 400)
		if msg := strings.ToLower(c.message(r)); !strings.Contains(msg, "done") || !strings.Contains(msg, "evacuation") {
			t.Fatalf("message %q", c.message(r))
		}
	})
	h.StartCompute(t, b)
	stopped = false
	step("the restarted source completes its evacuation migrations one at a time", func(t *testing.T) {
		// Real Nova saves each migration completed in turn, so for a
		// moment some are completed and others still done; forced_down
		// false sent then is refused. The suite asserts the 400 only when
		// it saw the mixed state both before and after the request.
		ids := []string{s1, s2, s3}
		sawMixed := false
		c.waitFor(t, "every evacuation migration from "+b+" completed", func() (bool, string) {
			st := c.migrationStatuses(t, ids)
			done, completed := count(st, "done"), count(st, "completed")
			if done+completed != len(ids) {
				t.Fatalf("evacuation migrations from %s: %v, want done or completed", b, st)
			}
			if done > 0 && completed > 0 && !sawMixed {
				r := c.do(t, "PUT", "/os-services/"+bID, "2.53", map[string]any{"forced_down": false})
				after := c.migrationStatuses(t, ids)
				if count(after, "done") > 0 {
					sawMixed = true
					if r.status != 400 || !strings.Contains(strings.ToLower(c.message(r)), "done") {
						t.Fatalf("forced_down false while %v: HTTP %d %s, want the 400 naming done migrations", st, r.status, r.raw)
					}
				} else if r.status != 200 && r.status != 400 {
					t.Fatalf("forced_down false: HTTP %d %s", r.status, r.raw)
				}
			}
			return completed == len(ids), fmt.Sprint(st)
		})
		if !sawMixed {
			t.Logf("the completions were too quick to catch a mixed state (%s)", b)
		}
	})
	step("forced_down false succeeds once all are completed and the service comes up", func(t *testing.T) {
		c.do(t, "PUT", "/os-services/"+bID, "2.53", map[string]any{"forced_down": false}).want(t, 200)
		c.waitFor(t, b+" up", func() (bool, string) {
			st := c.service(t, b, "2.53")
			return st["state"] == "up", fmt.Sprint(st["state"])
		})
	})
}

// migrationStatuses is the status of the newest evacuation migration of
// each server ("" for none).
func (c *client) migrationStatuses(t *testing.T, ids []string) []string {
	t.Helper()
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i], _ = c.migration(t, id)["status"].(string)
	}
	return out
}

func count(l []string, v string) int {
	n := 0
	for _, s := range l {
		if s == v {
			n++
		}
	}
	return n
}

// ---- plumbing ----

type client struct {
	h     Harness
	base  string
	hc    *http.Client
	token string
}

type answer struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r answer) want(t *testing.T, status int) answer {
	t.Helper()
	if r.status != status {
		t.Fatalf("HTTP %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

// do sends one request; extra is header name/value pairs. A 401 gets one
// retry with a fresh token.
func (c *client) do(t *testing.T, method, path, mv string, body any, extra ...string) answer {
	t.Helper()
	for attempt := 0; ; attempt++ {
		var rd io.Reader
		if body != nil {
			b, err := json.Marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, c.base+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Auth-Token", c.token)
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if mv != "" {
			req.Header.Set("OpenStack-API-Version", "compute "+mv)
		}
		for i := 0; i+1 < len(extra); i += 2 {
			req.Header.Set(extra[i], extra[i+1])
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 401 && attempt == 0 {
			c.token = c.h.Token(t)
			continue
		}
		r := answer{status: resp.StatusCode, header: resp.Header, raw: raw}
		if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' {
			_ = json.Unmarshal(raw, &r.body)
		}
		return r
	}
}

func (c *client) message(r answer) string {
	for _, v := range r.body {
		if m, ok := obj(v)["message"].(string); ok {
			return m
		}
	}
	return string(r.raw)
}

func (c *client) action(t *testing.T, id, mv string, body any) answer {
	t.Helper()
	return c.do(t, "POST", "/servers/"+id+"/action", mv, body)
}

func (c *client) service(t *testing.T, host, mv string) map[string]any {
	t.Helper()
	r := c.do(t, "GET", "/os-services?binary=nova-compute&host="+host, mv, nil).want(t, 200)
	l := list(r.body["services"])
	if len(l) != 1 {
		t.Fatalf("%d nova-compute services on %s", len(l), host)
	}
	return obj(l[0])
}

// updatedAt returns host's updated_at, checked to be whole seconds. Real
// Nova answers null until the service's first report after it was created
// (seen in the lab right after the computes start: deploy/lab/FINDINGS.md
// 3), so a null is waited out.
func (c *client) updatedAt(t *testing.T, host string) time.Time {
	t.Helper()
	var raw string
	c.waitFor(t, "a first report of "+host+" (updated_at not null)", func() (bool, string) {
		raw, _ = c.service(t, host, "2.53")["updated_at"].(string)
		return raw != "", "null"
	})
	u, err := time.Parse("2006-01-02T15:04:05.999999", raw)
	if err != nil {
		t.Fatalf("updated_at %q: %v", raw, err)
	}
	if u.Nanosecond() != 0 {
		t.Fatalf("updated_at %q is not whole seconds", raw)
	}
	return u
}

func (c *client) server(t *testing.T, id, mv string) map[string]any {
	t.Helper()
	return obj(c.do(t, "GET", "/servers/"+id, mv, nil).want(t, 200).body["server"])
}

// migration is the newest evacuation migration of a server, or nil.
func (c *client) migration(t *testing.T, id string) map[string]any {
	t.Helper()
	r := c.do(t, "GET", "/os-migrations?migration_type=evacuation&instance_uuid="+id, "2.59", nil).want(t, 200)
	l := list(r.body["migrations"])
	if len(l) == 0 {
		return nil
	}
	return obj(l[0])
}

// createServer boots a server pinned to host ("" lets the scheduler
// choose), waits for ACTIVE and deletes it when the test ends.
func (c *client) createServer(t *testing.T, host string) string {
	t.Helper()
	return c.createServerOwned(t, t, host)
}

// createServerOwned is createServer with the deletion tied to owner.
func (c *client) createServerOwned(t, owner *testing.T, host string) string {
	t.Helper()
	s := map[string]any{"name": fmt.Sprintf("iha-contract-%d", time.Now().UnixNano()), "flavorRef": c.h.FlavorID(),
		"imageRef": c.h.ImageID(), "networks": "none"}
	if host != "" {
		s["availability_zone"] = "nova:" + host
	}
	r := c.do(t, "POST", "/servers", "2.93", map[string]any{"server": s}).want(t, 202)
	id, _ := obj(r.body["server"])["id"].(string)
	if id == "" {
		t.Fatalf("no server id in %s", r.raw)
	}
	owner.Cleanup(func() { c.do(owner, "DELETE", "/servers/"+id, "2.93", nil) })
	c.waitFor(t, "server "+id+" ACTIVE", func() (bool, string) {
		st := c.server(t, id, "2.93")["status"]
		if st == "ERROR" {
			t.Fatalf("server %s went to ERROR", id)
		}
		return st == "ACTIVE", fmt.Sprint(st)
	})
	return id
}

// waitFor polls cond until it holds or WaitTimeout passes.
func (c *client) waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(c.h.WaitTimeout())
	last := ""
	for {
		ok, seen := cond()
		if ok {
			return
		}
		last = seen
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last seen: %s)", c.h.WaitTimeout(), what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
func list(v any) []any         { l, _ := v.([]any); return l }
