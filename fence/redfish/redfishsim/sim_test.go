package redfishsim_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/fencetest"
	"github.com/ihaproject/iha/fence/redfish/redfishsim"
)

func start(t *testing.T, o redfishsim.Options) *redfishsim.Server {
	t.Helper()
	s, err := redfishsim.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

type client struct {
	t    *testing.T
	base string
	hc   *http.Client
	user string
	pass string
}

func newClient(t *testing.T, s *redfishsim.Server) *client {
	return &client{t: t, base: s.URL(), hc: &http.Client{
		Timeout:       fencetest.Timeout(10 * time.Second),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, user: "admin", pass: "password"}
}

func (c *client) do(method, path, body string) (int, http.Header, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			c.t.Fatalf("%s %s: body is not JSON: %q", method, path, b)
		}
	}
	return resp.StatusCode, resp.Header, m
}

func TestEmulatorBehaviour(t *testing.T) {
	s := start(t, redfishsim.Options{Systems: []redfishsim.System{{UUID: "0b6a7c1e-0000-4000-8000-000000000001", Name: "node-1"}}})
	c := newClient(t, s)
	uuid := s.UUIDs()[0]
	sysPath := "/redfish/v1/Systems/" + uuid

	t.Run("service root needs no credentials", func(t *testing.T) {
		anon := *c
		anon.user = ""
		if code, _, m := anon.do("GET", "/redfish/v1/", ""); code != 200 || m["Systems"] == nil {
			t.Fatalf("root = %d %v", code, m)
		}
		if _, _, m := anon.do("GET", "/redfish/v1", ""); m["SessionService"] != nil {
			t.Fatal("root advertises a SessionService by default")
		}
	})
	t.Run("everything else needs basic auth", func(t *testing.T) {
		anon := *c
		anon.user = ""
		if code, _, _ := anon.do("GET", sysPath, ""); code != 401 {
			t.Fatalf("anonymous GET system = %d, want 401", code)
		}
		bad := *c
		bad.pass = "wrong"
		if code, _, _ := bad.do("GET", "/redfish/v1/Systems", ""); code != 401 {
			t.Fatalf("wrong password = %d, want 401", code)
		}
	})
	t.Run("no SessionService by default", func(t *testing.T) {
		if code, _, _ := c.do("POST", "/redfish/v1/SessionService/Sessions", `{"UserName":"admin","Password":"password"}`); code == 201 {
			t.Fatal("session login worked without SessionService")
		}
	})
	t.Run("collection lists systems by UUID", func(t *testing.T) {
		_, _, m := c.do("GET", "/redfish/v1/Systems", "")
		members := m["Members"].([]any)
		if len(members) != 1 || members[0].(map[string]any)["@odata.id"] != sysPath {
			t.Fatalf("members = %v", members)
		}
	})
	t.Run("a system name answers 307 to the UUID URL", func(t *testing.T) {
		code, h, _ := c.do("GET", "/redfish/v1/Systems/node-1", "")
		if code != 307 || h.Get("Location") != sysPath {
			t.Fatalf("GET by name = %d Location %q", code, h.Get("Location"))
		}
	})
	t.Run("reset to the current state is accepted and changes nothing", func(t *testing.T) {
		if code, _, _ := c.do("POST", sysPath+"/Actions/ComputerSystem.Reset", `{"ResetType":"On"}`); code != 204 {
			t.Fatalf("On when on = %d", code)
		}
		if s.PowerState(uuid) != fence.PowerOn {
			t.Fatal("state changed")
		}
	})
	t.Run("unknown reset type answers 501", func(t *testing.T) {
		if code, _, _ := c.do("POST", sysPath+"/Actions/ComputerSystem.Reset", `{"ResetType":"Explode"}`); code != 501 {
			t.Fatalf("unknown reset = %d", code)
		}
	})
	t.Run("ForceOff answers 204 and the state follows", func(t *testing.T) {
		if code, _, _ := c.do("POST", sysPath+"/Actions/ComputerSystem.Reset", `{"ResetType":"ForceOff"}`); code != 204 {
			t.Fatalf("ForceOff = %d", code)
		}
		if _, _, m := c.do("GET", sysPath, ""); m["PowerState"] != "Off" {
			t.Fatalf("PowerState = %v", m["PowerState"])
		}
	})
}

func TestDelayedTransitionAndCallback(t *testing.T) {
	s := start(t, redfishsim.Options{TransitionDelay: 300 * time.Millisecond})
	var mu sync.Mutex
	var seen []redfishsim.Transition
	s.OnTransition(func(tr redfishsim.Transition) { mu.Lock(); seen = append(seen, tr); mu.Unlock() })
	c := newClient(t, s)
	sysPath := "/redfish/v1/Systems/" + s.UUIDs()[0]
	start := time.Now()
	if code, _, _ := c.do("POST", sysPath+"/Actions/ComputerSystem.Reset", `{"ResetType":"ForceOff"}`); code != 204 {
		t.Fatalf("ForceOff = %d", code)
	}
	if _, _, m := c.do("GET", sysPath, ""); m["PowerState"] != "On" && time.Since(start) < 300*time.Millisecond {
		t.Fatalf("PowerState changed before the delay: %v", m["PowerState"])
	}
	if !fencetest.WaitFor(10*time.Second, func() bool { return s.PowerState("") == fence.PowerOff }) {
		t.Fatal("never powered off")
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatalf("transition took %v, less than the delay", time.Since(start))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0].From != fence.PowerOn || seen[0].To != fence.PowerOff || seen[0].Name != "System.Embedded.1" {
		t.Fatalf("transitions = %+v", seen)
	}
}

func TestRealBMCOptions(t *testing.T) {
	tests := []struct {
		name string
		opts redfishsim.Options
		prep func(*redfishsim.Server)
		body string
		want int
	}{
		{"already off answers 409 like iDRAC", redfishsim.Options{AlreadyOffStatus: 409, Systems: []redfishsim.System{{Off: true}}}, nil, `{"ResetType":"ForceOff"}`, 409},
		{"already off answers 400", redfishsim.Options{AlreadyOffStatus: 400, Systems: []redfishsim.System{{Off: true}}}, nil, `{"ResetType":"ForceOff"}`, 400},
		{"already off accepted by default", redfishsim.Options{Systems: []redfishsim.System{{Off: true}}}, nil, `{"ResetType":"ForceOff"}`, 204},
		{"burst of 503", redfishsim.Options{}, func(s *redfishsim.Server) { s.FailNext(1, 503) }, `{"ResetType":"ForceOff"}`, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, tt.opts)
			if tt.prep != nil {
				tt.prep(s)
			}
			c := newClient(t, s)
			path := "/redfish/v1/Systems/" + s.UUIDs()[0] + "/Actions/ComputerSystem.Reset"
			code, _, m := c.do("POST", path, tt.body)
			if code != tt.want {
				t.Fatalf("status = %d, want %d", code, tt.want)
			}
			if code >= 400 && m["error"] == nil {
				t.Fatalf("error answer without a Redfish error body: %v", m)
			}
			if s.RequestCount("POST", path) != 1 || s.Requests() != 1 {
				t.Fatalf("counted %d/%d requests", s.RequestCount("POST", path), s.Requests())
			}
		})
	}
}

func TestSlowResponses(t *testing.T) {
	s := start(t, redfishsim.Options{ResponseDelay: 300 * time.Millisecond})
	c := newClient(t, s)
	begin := time.Now()
	c.do("GET", "/redfish/v1", "")
	if took := time.Since(begin); took < 300*time.Millisecond {
		t.Fatalf("answered in %v despite a 300ms delay", took)
	}
}

func TestSessions(t *testing.T) {
	s := start(t, redfishsim.Options{SessionService: true})
	c := newClient(t, s)
	c.user = ""
	code, h, _ := c.do("POST", "/redfish/v1/SessionService/Sessions", `{"UserName":"admin","Password":"password"}`)
	if code != 201 || h.Get("X-Auth-Token") == "" || h.Get("Location") == "" {
		t.Fatalf("session login = %d %v", code, h)
	}
	req, _ := http.NewRequest("GET", s.URL()+"/redfish/v1/Systems", nil)
	req.Header.Set("X-Auth-Token", h.Get("X-Auth-Token"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || s.ActiveSessions() != 1 {
		t.Fatalf("token GET = %d, sessions %d", resp.StatusCode, s.ActiveSessions())
	}
	if code, _, _ := c.do("POST", "/redfish/v1/SessionService/Sessions", `{"UserName":"admin","Password":"nope"}`); code != 401 {
		t.Fatalf("bad session login = %d", code)
	}
}

func TestMultipleSystems(t *testing.T) {
	s := start(t, redfishsim.Options{Systems: []redfishsim.System{{}, {Off: true}, {}}})
	ids := s.UUIDs()
	if len(ids) != 3 || s.PowerState(ids[1]) != fence.PowerOff || s.PowerState("System.Embedded.3") != fence.PowerOn {
		t.Fatalf("systems %v", ids)
	}
	s.SetPowerState(ids[0], fence.PowerOff)
	if s.PowerState(ids[0]) != fence.PowerOff || s.PowerState(ids[2]) != fence.PowerOn {
		t.Fatal("SetPowerState touched the wrong system")
	}
}

func TestTLS(t *testing.T) {
	ca, err := redfishsim.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := redfishsim.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, redfishsim.Options{TLS: ca})
	if !strings.HasPrefix(s.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL %s", s.URL())
	}
	get := func(pool *tls.Config) error {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pool}, Timeout: fencetest.Timeout(10 * time.Second)}
		resp, err := hc.Get(s.URL() + "/redfish/v1")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(&tls.Config{RootCAs: ca.Pool()}); err != nil {
		t.Fatalf("with the right CA: %v", err)
	}
	if err := get(&tls.Config{RootCAs: other.Pool()}); err == nil {
		t.Fatal("a client trusting another CA connected")
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	if _, err := redfishsim.Start(redfishsim.Options{Addr: "0.0.0.0:0"}); err == nil {
		t.Fatal("listened on 0.0.0.0")
	}
}
