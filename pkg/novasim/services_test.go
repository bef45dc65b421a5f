package novasim

import (
	"strings"
	"testing"
	"time"
)

func TestServiceDownTimeFollowsNova(t *testing.T) {
	tests := []struct {
		name         string
		ri, sdt, got time.Duration
	}{
		{"defaults are 10s and 60s", 0, 0, 60 * time.Second},
		{"down time above the interval is kept", 2 * time.Second, 6 * time.Second, 6 * time.Second},
		{"down time equal to the interval becomes 2.5 intervals", 10 * time.Second, 10 * time.Second, 25 * time.Second},
		{"down time below the interval becomes 2.5 intervals", 4 * time.Second, 1 * time.Second, 10 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{ReportInterval: tc.ri, ServiceDownTime: tc.sdt}
			o.setDefaults()
			if o.ServiceDownTime != tc.got {
				t.Fatalf("service_down_time %v, want %v", o.ServiceDownTime, tc.got)
			}
		})
	}
}

// The heartbeat is computed from the clock: reports every ReportInterval
// from the start, truncated to whole seconds, none while stopped, the
// first one StartupDelay after a restart.
func TestHeartbeatIsLazyAndTruncated(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: 10 * time.Second, ServiceDownTime: 60 * time.Second}, true)
	e.AddCompute("c1", "")
	sec := func(d time.Duration) time.Time { return t0.Truncate(time.Second).Add(d) }
	check := func(step string, wantUpdated time.Time, wantState string) {
		t.Helper()
		st, _ := e.Service("c1")
		if !st.UpdatedAt.Equal(wantUpdated) || st.State != wantState {
			t.Fatalf("%s: updated_at %v state %s, want %v %s", step, st.UpdatedAt, st.State, wantUpdated, wantState)
		}
		if st.UpdatedAt.Nanosecond() != 0 {
			t.Fatalf("%s: updated_at %v not whole seconds", step, st.UpdatedAt)
		}
	}
	check("first report at once", sec(0), "up")
	e.clock.Advance(9900 * time.Millisecond)
	check("no report before the interval", sec(0), "up")
	e.clock.Advance(100 * time.Millisecond)
	check("second report", sec(10*time.Second), "up")
	e.clock.Advance(25 * time.Second) // t0+35s
	check("reports keep coming", sec(30*time.Second), "up")

	e.StopCompute("c1")               // last report t0+30s → last_seen_up 10:00:30
	e.clock.Advance(50 * time.Second) // t0+85s
	check("no report while stopped", sec(30*time.Second), "up")
	// Down when now − 10:00:30 > 60s, i.e. after 10:01:30.000, which is
	// 0.3s earlier than 60s after the real report: truncation.
	e.clock.Advance(4700 * time.Millisecond) // 10:01:30.000
	check("still up at exactly service_down_time", sec(30*time.Second), "up")
	e.clock.Advance(time.Millisecond)
	check("down just after service_down_time", sec(30*time.Second), "down")

	e.StartCompute("c1") // default StartupDelay 5s
	e.clock.Advance(4 * time.Second)
	check("no report during the startup delay", sec(30*time.Second), "down")
	e.clock.Advance(time.Second) // first report at 10:01:35.001
	check("first report after the startup delay", sec(95*time.Second), "up")
}

func TestServiceListJSON(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: time.Second, NoStartupDelay: true}, true)
	id := e.AddCompute("c1", "az1")
	e.AddCompute("c2", "")
	e.AddScheduler("ctl")
	a := e.do(t, "GET", "/os-services?binary=nova-compute", "2.53", nil).want(t, 200)
	svcs := list(a.body["services"])
	if len(svcs) != 2 {
		t.Fatalf("%d services, want 2: %s", len(svcs), a.raw)
	}
	s0 := obj(svcs[0])
	for k, want := range map[string]any{"id": id, "host": "c1", "binary": "nova-compute", "zone": "az1",
		"status": "enabled", "state": "up", "forced_down": false, "disabled_reason": nil, "updated_at": "2026-11-02T10:00:00.000000"} {
		if s0[k] != want {
			t.Errorf("%s = %#v, want %#v", k, s0[k], want)
		}
	}
	a = e.do(t, "GET", "/os-services?host=ctl", "2.1", nil).want(t, 200)
	s0 = obj(list(a.body["services"])[0])
	if s0["binary"] != "nova-scheduler" || s0["id"] != float64(3) || s0["zone"] != "internal" {
		t.Fatalf("scheduler row at 2.1: %s", a.raw)
	}
	if _, ok := s0["forced_down"]; ok {
		t.Fatalf("forced_down shown below 2.11: %s", a.raw)
	}
}

func TestServiceUpdate253(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: 10 * time.Second}, true)
	id := e.AddCompute("c1", "")
	e.clock.Advance(3500 * time.Millisecond) // updated_at stays 10:00:00 until the next report
	tests := []struct {
		name   string
		body   map[string]any
		status int
		check  func(t *testing.T, svc map[string]any)
	}{
		{"forced down is down at once and bumps updated_at", map[string]any{"forced_down": true}, 200, func(t *testing.T, svc map[string]any) {
			if svc["state"] != "down" || svc["forced_down"] != true || svc["updated_at"] != "2026-11-02T10:00:03.000000" {
				t.Fatalf("%v", svc)
			}
		}},
		{"disabled_reason without status is refused", map[string]any{"disabled_reason": "x"}, 400, nil},
		{"disabled_reason with status enabled is refused", map[string]any{"status": "enabled", "disabled_reason": "x"}, 400, nil},
		{"an empty update is refused", map[string]any{}, 400, nil},
		{"unknown fields are refused", map[string]any{"status": "disabled", "colour": "red"}, 400, nil},
		{"disable with reason and force down together", map[string]any{"status": "disabled", "disabled_reason": "iha:fenced", "forced_down": true}, 200, func(t *testing.T, svc map[string]any) {
			if svc["status"] != "disabled" || svc["disabled_reason"] != "iha:fenced" || svc["forced_down"] != true {
				t.Fatalf("%v", svc)
			}
		}},
		{"enable clears the reason", map[string]any{"status": "enabled"}, 200, func(t *testing.T, svc map[string]any) {
			if svc["status"] != "enabled" || svc["disabled_reason"] != nil {
				t.Fatalf("%v", svc)
			}
		}},
		{"unforce brings it back up", map[string]any{"forced_down": false}, 200, func(t *testing.T, svc map[string]any) {
			if svc["state"] != "up" || svc["forced_down"] != false {
				t.Fatalf("%v", svc)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(t, "PUT", "/os-services/"+id, "2.53", tc.body).want(t, tc.status)
			if tc.status >= 400 {
				if obj(a.body["badRequest"])["code"] != float64(400) {
					t.Fatalf("not a Nova error body: %s", a.raw)
				}
				return
			}
			tc.check(t, obj(a.body["service"]))
		})
	}
	t.Run("a non-uuid id at 2.53 is refused", func(t *testing.T) {
		e.do(t, "PUT", "/os-services/1", "2.53", map[string]any{"forced_down": true}).want(t, 400)
	})
	t.Run("legacy actions below 2.53", func(t *testing.T) {
		e.do(t, "PUT", "/os-services/force-down", "2.11", map[string]any{"host": "c1", "binary": "nova-compute", "forced_down": true}).want(t, 200)
		a := e.do(t, "PUT", "/os-services/disable-log-reason", "2.11", map[string]any{"host": "c1", "binary": "nova-compute", "disabled_reason": "r"}).want(t, 200)
		if obj(a.body["service"])["disabled_reason"] != "r" {
			t.Fatalf("%s", a.raw)
		}
		e.do(t, "PUT", "/os-services/enable", "2.11", map[string]any{"host": "c1", "binary": "nova-compute"}).want(t, 200)
		st, _ := e.Service("c1")
		if !st.ForcedDown || st.Status != "enabled" || st.DisabledReason != "" {
			t.Fatalf("%+v", st)
		}
		e.do(t, "PUT", "/os-services/force-down", "2.10", map[string]any{"host": "c1", "binary": "nova-compute", "forced_down": false}).want(t, 404)
	})
}

func TestMicroversionHeaders(t *testing.T) {
	e := newTestSim(t, Options{}, false)
	e.AddCompute("c1", "")
	tests := []struct {
		name, header, value string
		status              int
		echo                string
	}{
		{"no header is 2.1", "", "", 200, "2.1"},
		{"OpenStack-API-Version", "OpenStack-API-Version", "compute 2.60", 200, "2.60"},
		{"X-OpenStack-Nova-API-Version", "X-OpenStack-Nova-API-Version", "2.53", 200, "2.53"},
		{"latest is 2.93", "OpenStack-API-Version", "compute latest", 200, "2.93"},
		{"above 2.93 is 406", "OpenStack-API-Version", "compute 2.94", 406, ""},
		{"2.0 is 406", "X-OpenStack-Nova-API-Version", "2.0", 406, ""},
		{"garbage is 400", "OpenStack-API-Version", "compute two", 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := e.request(t, "GET", "/os-services")
			if tc.header != "" {
				req.Header.Set(tc.header, tc.value)
			}
			resp := e.send(t, req)
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.status)
			}
			if rid := resp.Header.Get("X-Openstack-Request-Id"); !strings.HasPrefix(rid, "req-") || resp.Header.Get("X-Compute-Request-Id") != rid {
				t.Fatalf("request ids %q %q", rid, resp.Header.Get("X-Compute-Request-Id"))
			}
			if tc.echo != "" && (resp.Header.Get("OpenStack-API-Version") != "compute "+tc.echo || resp.Header.Get("X-OpenStack-Nova-API-Version") != tc.echo) {
				t.Fatalf("echo %q %q, want %s", resp.Header.Get("OpenStack-API-Version"), resp.Header.Get("X-OpenStack-Nova-API-Version"), tc.echo)
			}
		})
	}
}
