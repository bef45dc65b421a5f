package redfish_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/fencetest"
	"github.com/ihaproject/iha/fence/redfish"
	"github.com/ihaproject/iha/fence/redfish/redfishsim"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

const (
	canary    = "Redfish-Canary-5b2e91"
	badCanary = "Wrong-Canary-0c77d4"
	hostName  = "compute-3.example.com"
)

type simBackend struct{ s *redfishsim.Server }

func (b simBackend) PowerStateOf() fence.PowerState { return b.s.PowerState("") }
func (b simBackend) SetPower(p fence.PowerState)    { b.s.SetPowerState("", p) }
func (b simBackend) MakeSlow(d time.Duration)       { b.s.SetResponseDelay(d) }

func startSim(t *testing.T, o redfishsim.Options) *redfishsim.Server {
	t.Helper()
	o.Username, o.Password = "root", canary
	s, err := redfishsim.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func entry(s *redfishsim.Server, pass string) config.FenceHost {
	return config.FenceHost{Name: hostName, Agent: "redfish", IPAddr: s.Host(), IPPort: s.Port(),
		Login: "root", Passwd: secret.New(pass), UUID: config.DefaultRedfishUUID}
}

// sleeps records the back-off waits instead of sleeping through them.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (r *sleeps) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.d = append(r.d, d)
	r.mu.Unlock()
	return ctx.Err()
}

func (r *sleeps) got() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.d...)
}

// fastOpts polls quickly and records back-off waits without sleeping.
func fastOpts(rec *sleeps) redfish.Options {
	return redfish.Options{
		PollInterval: 20 * time.Millisecond,
		Sleep: func(ctx context.Context, d time.Duration) error {
			if d >= time.Second { // a back-off: record, do not wait
				return rec.sleep(ctx, d)
			}
			t := time.NewTimer(d) // a poll interval: really wait
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
}

func newFencer(t *testing.T, h config.FenceHost, s fence.Settings, o redfish.Options) (*redfish.Fencer, func() string) {
	t.Helper()
	logger, logs := fencetest.Logger(t)
	f, err := redfish.NewWithOptions(h, s, logger, o)
	if err != nil {
		t.Fatalf("NewWithOptions: %v", err)
	}
	return f, logs
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(60*time.Second))
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	fencetest.Conformance(t, func(t *testing.T) fencetest.Target {
		s := startSim(t, redfishsim.Options{TransitionDelay: 200 * time.Millisecond})
		logger, logs := fencetest.Logger(t)
		o := fastOpts(&sleeps{})
		f, err := redfish.NewWithOptions(entry(s, canary), fence.Settings{}, logger, o)
		if err != nil {
			t.Fatal(err)
		}
		bad, err := redfish.NewWithOptions(entry(s, badCanary), fence.Settings{}, logger, o)
		if err != nil {
			t.Fatal(err)
		}
		return fencetest.Target{Fencer: f, BadAuth: bad, Host: hostName, Driver: "redfish",
			Secrets: []string{canary, badCanary}, Logs: logs, Backend: simBackend{s}}
	})
}

func TestConformanceWithSessions(t *testing.T) {
	fencetest.Conformance(t, func(t *testing.T) fencetest.Target {
		s := startSim(t, redfishsim.Options{TransitionDelay: 100 * time.Millisecond, SessionService: true})
		logger, logs := fencetest.Logger(t)
		o := fastOpts(&sleeps{})
		o.Auth = redfish.AuthSession
		f, err := redfish.NewWithOptions(entry(s, canary), fence.Settings{}, logger, o)
		if err != nil {
			t.Fatal(err)
		}
		bad, err := redfish.NewWithOptions(entry(s, badCanary), fence.Settings{}, logger, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if n := s.ActiveSessions(); n != 0 {
				t.Errorf("%d sessions left open on the BMC", n)
			}
		})
		return fencetest.Target{Fencer: f, BadAuth: bad, Host: hostName, Driver: "redfish",
			Secrets: []string{canary, badCanary}, Logs: logs, Backend: simBackend{s}}
	})
}

func TestPowerOffWaitsForTheDelayedTransition(t *testing.T) {
	const delay = 600 * time.Millisecond
	s := startSim(t, redfishsim.Options{TransitionDelay: delay})
	var offAt time.Time
	var mu sync.Mutex
	s.OnTransition(func(tr redfishsim.Transition) {
		mu.Lock()
		defer mu.Unlock()
		if tr.To == fence.PowerOff {
			offAt = time.Now()
		}
	})
	f, _ := newFencer(t, entry(s, canary), fence.Settings{}, fastOpts(&sleeps{}))
	start := time.Now()
	if err := f.PowerOff(ctxT(t)); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	returned := time.Now()
	mu.Lock()
	defer mu.Unlock()
	if offAt.IsZero() || returned.Before(offAt) {
		t.Fatalf("PowerOff returned at %v, before the host went off (%v)", returned.Sub(start), offAt.Sub(start))
	}
	if polls := s.RequestCount("GET", "/redfish/v1/Systems/"+s.UUIDs()[0]); polls < 3 {
		t.Fatalf("only %d system reads: PowerOff did not poll", polls)
	}
	if resets := s.Resets(); len(resets) != 1 || resets[0].ResetType != "ForceOff" {
		t.Fatalf("resets = %+v, want one ForceOff", resets)
	}
}

func TestOutcomeTable(t *testing.T) {
	tests := []struct {
		name      string
		opts      redfishsim.Options
		prep      func(*redfishsim.Server)
		pass      string
		wantErr   error // nil: PowerOff succeeds
		wantSleep []time.Duration
		wantRoots int // GETs of the service root = attempts; 0: not checked
		wantPower fence.PowerState
	}{
		{name: "already off, BMC accepts ForceOff (emulator)",
			opts: redfishsim.Options{Systems: []redfishsim.System{{Off: true}}}, pass: canary,
			wantPower: fence.PowerOff, wantRoots: 1},
		{name: "already off, BMC answers 409 (iDRAC)",
			opts: redfishsim.Options{AlreadyOffStatus: 409, Systems: []redfishsim.System{{Off: true}}}, pass: canary,
			wantPower: fence.PowerOff, wantRoots: 1},
		{name: "already off, BMC answers 400",
			opts: redfishsim.Options{AlreadyOffStatus: 400, Systems: []redfishsim.System{{Off: true}}}, pass: canary,
			wantPower: fence.PowerOff, wantRoots: 1},
		{name: "401 fails fast without retry",
			pass: "not-the-password", wantErr: fence.ErrAuth, wantRoots: 1, wantPower: fence.PowerOn},
		{name: "a burst of 503 is retried, then success",
			prep: func(s *redfishsim.Server) { s.FailNext(2, 503) }, pass: canary,
			wantSleep: []time.Duration{time.Second, 2 * time.Second}, wantRoots: 3, wantPower: fence.PowerOff},
		{name: "one 500 is retried once",
			prep: func(s *redfishsim.Server) { s.FailNext(1, 500) }, pass: canary,
			wantSleep: []time.Duration{time.Second}, wantRoots: 2, wantPower: fence.PowerOff},
		{name: "5xx every time gives up after 3 attempts",
			prep: func(s *redfishsim.Server) { s.FailNext(1000, 503) }, pass: canary, wantErr: fence.ErrUnreachable,
			wantSleep: []time.Duration{time.Second, 2 * time.Second}, wantRoots: 3, wantPower: fence.PowerOn},
		{name: "a 404 is not retried",
			prep: func(s *redfishsim.Server) { s.FailNext(1, 404) }, pass: canary, wantErr: errAny,
			wantRoots: 1, wantPower: fence.PowerOn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSim(t, tt.opts)
			if tt.prep != nil {
				tt.prep(s)
			}
			rec := &sleeps{}
			f, logs := newFencer(t, entry(s, tt.pass), fence.Settings{}, fastOpts(rec))
			err := f.PowerOff(ctxT(t))
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("PowerOff: %v", err)
			case tt.wantErr != nil && err == nil:
				t.Fatal("PowerOff succeeded")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("PowerOff err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				var fe *fence.Error
				if !errors.As(err, &fe) || fe.Host != hostName || fe.Driver != "redfish" || fe.Op != fence.OpPowerOff {
					t.Fatalf("err %v is not a *fence.Error for host/driver/op", err)
				}
				fencetest.CheckNoSecret(t, []string{canary, tt.pass}, err.Error(), fmt.Sprintf("%#v", err))
			}
			if got := rec.got(); fmt.Sprint(got) != fmt.Sprint(tt.wantSleep) {
				t.Fatalf("back-off waits = %v, want %v", got, tt.wantSleep)
			}
			if tt.wantRoots != 0 {
				if got := s.RequestCount("GET", "/redfish/v1"); got != tt.wantRoots {
					t.Fatalf("%d attempts (service root reads), want %d", got, tt.wantRoots)
				}
			}
			if got := s.PowerState(""); got != tt.wantPower {
				t.Fatalf("BMC power = %v, want %v", got, tt.wantPower)
			}
			fencetest.CheckNoSecret(t, []string{canary, tt.pass}, logs())
		})
	}
}

var errAny = errors.New("any error")

func TestRefusedResets(t *testing.T) {
	tests := []struct {
		name      string
		off       bool
		alreadyOn int
		refuse    int
		op        string
		wantOK    bool
		wantSleep int
		wantPower fence.PowerState
	}{
		{name: "ForceOff refused with 409 while on: failure, no retry", refuse: 409, op: "off", wantPower: fence.PowerOn},
		{name: "ForceOff refused with 400 while on: failure, no retry", refuse: 400, op: "off", wantPower: fence.PowerOn},
		{name: "On refused with 409 while off: BMC not ready, retried", off: true, refuse: 409, op: "on", wantOK: true, wantSleep: 1, wantPower: fence.PowerOn},
		{name: "On refused because already on: done", alreadyOn: 409, op: "on", wantOK: true, wantPower: fence.PowerOn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSim(t, redfishsim.Options{AlreadyOnStatus: tt.alreadyOn, Systems: []redfishsim.System{{Off: tt.off}}})
			if tt.refuse != 0 {
				s.RefuseNextResets(1, tt.refuse)
			}
			rec := &sleeps{}
			f, _ := newFencer(t, entry(s, canary), fence.Settings{}, fastOpts(rec))
			var err error
			if tt.op == "off" {
				err = f.PowerOff(ctxT(t))
			} else {
				err = f.PowerOn(ctxT(t))
			}
			if tt.wantOK != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.wantOK)
			}
			if n := len(rec.got()); n != tt.wantSleep {
				t.Fatalf("%d back-off waits, want %d", n, tt.wantSleep)
			}
			if got := s.PowerState(""); got != tt.wantPower {
				t.Fatalf("power %v, want %v", got, tt.wantPower)
			}
		})
	}
}

func TestPowerOffTimesOut(t *testing.T) {
	s := startSim(t, redfishsim.Options{TransitionDelay: time.Hour})
	h := entry(s, canary)
	h.Timeout = 300 * time.Millisecond
	f, _ := newFencer(t, h, fence.Settings{}, fastOpts(&sleeps{}))
	start := time.Now()
	err := f.PowerOff(ctxT(t))
	if !errors.Is(err, fence.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took > fencetest.Timeout(10*time.Second) {
		t.Fatalf("timed out after %v for a 300ms timeout", took)
	}
	if !strings.Contains(err.Error(), "still On") {
		t.Fatalf("error does not say the host is still on: %v", err)
	}
}

func TestSystemSelection(t *testing.T) {
	const (
		u1 = "11111111-1111-4111-8111-111111111111"
		u2 = "22222222-2222-4222-8222-222222222222"
	)
	tests := []struct {
		name     string
		systems  []redfishsim.System
		uuid     string
		wantOff  string // UUID that must end off; "" when an error is expected
		errMatch string
	}{
		{"default uuid and a single system: that system", []redfishsim.System{{UUID: u1, Name: "node-1"}}, config.DefaultRedfishUUID, u1, ""},
		{"no uuid and a single system: that system", []redfishsim.System{{UUID: u1}}, "", u1, ""},
		{"several systems, one is System.Embedded.1", []redfishsim.System{{UUID: "System.Embedded.1", Name: "a"}, {UUID: u2}}, "", "System.Embedded.1", ""},
		{"several systems and no uuid: clear error", []redfishsim.System{{UUID: u1, Name: "x"}, {UUID: u2, Name: "y"}}, "", "", "has 2 systems"},
		{"explicit UUID among several", []redfishsim.System{{UUID: u1}, {UUID: u2}}, u2, u2, ""},
		{"a name answers 307 to the UUID URL", []redfishsim.System{{UUID: u1, Name: "x"}, {UUID: u2, Name: "node-2"}}, "node-2", u2, ""},
		{"unknown system", []redfishsim.System{{UUID: u1}}, "nope", "", "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSim(t, redfishsim.Options{Systems: tt.systems})
			h := entry(s, canary)
			h.UUID = tt.uuid
			f, _ := newFencer(t, h, fence.Settings{}, fastOpts(&sleeps{}))
			err := f.PowerOff(ctxT(t))
			if tt.wantOff == "" {
				if err == nil || !strings.Contains(err.Error(), tt.errMatch) {
					t.Fatalf("err = %v, want %q", err, tt.errMatch)
				}
				for _, id := range s.UUIDs() {
					if s.PowerState(id) != fence.PowerOn {
						t.Fatalf("system %s was powered off despite the error", id)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("PowerOff: %v", err)
			}
			for _, id := range s.UUIDs() {
				want := fence.PowerOn
				if id == tt.wantOff {
					want = fence.PowerOff
				}
				if got := s.PowerState(id); got != want {
					t.Fatalf("system %s is %v, want %v", id, got, want)
				}
			}
		})
	}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTLS(t *testing.T) {
	ca, err := redfishsim.NewCA("BMC CA")
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := redfishsim.NewCA("someone else")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	goodBundle := writeFile(t, dir, "good.pem", ca.CertPEM())
	wrongBundle := writeFile(t, dir, "wrong.pem", otherCA.CertPEM())
	clientCert, clientKey, err := ca.IssueClient("iha-leader")
	if err != nil {
		t.Fatal(err)
	}
	certPath := writeFile(t, dir, "client.pem", clientCert)
	keyPath := writeFile(t, dir, "client.key", clientKey)

	tests := []struct {
		name      string
		mtls      bool
		settings  func(*fence.TLS)
		wantErr   error
		wantSleep int
	}{
		{"test CA bundle verifies the BMC", false, func(s *fence.TLS) { s.CABundle = goodBundle }, nil, 0},
		{"a wrong CA fails without retry", false, func(s *fence.TLS) { s.CABundle = wrongBundle }, fence.ErrUnreachable, 0},
		{"system roots do not trust the test CA", false, func(s *fence.TLS) {}, fence.ErrUnreachable, 0},
		{"SSL_VERIFY false skips verification", false, func(s *fence.TLS) { s.Insecure = true; s.CABundle = wrongBundle }, nil, 0},
		{"client certificate from SSL_CERT_PATH/SSL_KEY_PATH", true, func(s *fence.TLS) {
			s.CABundle, s.CertPath, s.KeyPath = goodBundle, certPath, keyPath
		}, nil, 0},
		{"BMC requiring a client certificate refuses none", true, func(s *fence.TLS) { s.CABundle = goodBundle }, errAny, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := redfishsim.Options{TLS: ca}
			if tt.mtls {
				o.ClientCAs = ca.Pool()
			}
			s := startSim(t, o)
			st := fence.Settings{}
			tt.settings(&st.TLS)
			h := entry(s, canary)
			h.TLS = true
			rec := &sleeps{}
			f, logs := newFencer(t, h, st, fastOpts(rec))
			if !strings.HasPrefix(f.Address(), "https://") {
				t.Fatalf("Address %s is not https", f.Address())
			}
			err := f.PowerOff(ctxT(t))
			switch {
			case tt.wantErr == nil:
				if err != nil {
					t.Fatalf("PowerOff: %v", err)
				}
				if s.PowerState("") != fence.PowerOff {
					t.Fatal("not off")
				}
			case err == nil:
				t.Fatal("PowerOff succeeded")
			case tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantSleep >= 0 && len(rec.got()) != tt.wantSleep {
				t.Fatalf("back-off waits %v", rec.got())
			}
			if st.TLS.Insecure && !strings.Contains(logs(), "verification is off") {
				t.Fatal("no warning that verification is off")
			}
		})
	}
}

func TestAuthModes(t *testing.T) {
	tests := []struct {
		name     string
		sessions bool
		auth     string
		ok       bool
	}{
		{"basic against the emulator", false, redfish.AuthBasic, true},
		{"session with a SessionService", true, redfish.AuthSession, true},
		{"session without a SessionService fails", false, redfish.AuthSession, false},
		{"auto falls back to basic without a SessionService", false, redfish.AuthAuto, true},
		{"auto uses the SessionService", true, redfish.AuthAuto, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSim(t, redfishsim.Options{SessionService: tt.sessions})
			o := fastOpts(&sleeps{})
			o.Auth = tt.auth
			f, _ := newFencer(t, entry(s, canary), fence.Settings{}, o)
			st, err := f.PowerState(ctxT(t))
			if tt.ok != (err == nil) {
				t.Fatalf("PowerState = %v, %v; want ok=%v", st, err, tt.ok)
			}
			if tt.ok && st != fence.PowerOn {
				t.Fatalf("PowerState = %v", st)
			}
			if tt.sessions {
				if s.RequestCount("POST", "/redfish/v1/SessionService/Sessions") != 1 {
					t.Fatal("no session was created")
				}
				if s.ActiveSessions() != 0 {
					t.Fatal("the session was not deleted")
				}
			}
		})
	}
}

// TestPasswordNeverLeaks plants the password in a BMC error body, the worst
// case: the error must still not carry it.
func TestPasswordNeverLeaks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redfish/v1" || r.URL.Path == "/redfish/v1/" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"@odata.id":"/redfish/v1","Systems":{"@odata.id":"/redfish/v1/Systems"}}`)
			return
		}
		_, p, _ := r.BasicAuth()
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"code":"x","message":"bad password %s for you"}}`, p)
	}))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	host, port, _ := strings.Cut(addr, ":")
	p, _ := strconv.Atoi(port)
	h := config.FenceHost{Name: hostName, Agent: "redfish", IPAddr: host, IPPort: p, Login: "root", Passwd: secret.New(canary)}
	f, logs := newFencer(t, h, fence.Settings{}, fastOpts(&sleeps{}))
	var texts []string
	func() {
		defer func() {
			if r := recover(); r != nil {
				texts = append(texts, fmt.Sprint(r))
			}
		}()
		_, err := f.PowerState(ctxT(t))
		if !errors.Is(err, fence.ErrAuth) {
			t.Errorf("err = %v, want ErrAuth", err)
		}
		texts = append(texts, err.Error(), fmt.Sprintf("%+v %#v", err, err))
		err = f.PowerOff(ctxT(t))
		texts = append(texts, err.Error())
		panic(fmt.Sprintf("%v %+v %#v", f, f, f)) // what a crash would print
	}()
	texts = append(texts, logs())
	fencetest.CheckNoSecret(t, []string{canary}, texts...)
	if !strings.Contains(texts[0], "[redacted]") {
		t.Fatalf("the echoed password was not scrubbed visibly: %s", texts[0])
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	notPEM := writeFile(t, dir, "bad.pem", []byte("not a certificate"))
	good := config.FenceHost{Name: "c1", Agent: "redfish", IPAddr: "10.0.0.5", Login: "root", Passwd: secret.New(canary)}
	tests := []struct {
		name    string
		mod     func(*config.FenceHost, *fence.Settings, *redfish.Options)
		wantErr string
	}{
		{"valid entry", func(*config.FenceHost, *fence.Settings, *redfish.Options) {}, ""},
		{"empty name", func(h *config.FenceHost, _ *fence.Settings, _ *redfish.Options) { h.Name = "" }, "empty host name"},
		{"no ipaddr", func(h *config.FenceHost, _ *fence.Settings, _ *redfish.Options) { h.IPAddr = "" }, "empty host"},
		{"link-local ipaddr", func(h *config.FenceHost, _ *fence.Settings, _ *redfish.Options) { h.IPAddr = "169.254.0.9" }, "link-local"},
		{"garbage ipaddr", func(h *config.FenceHost, _ *fence.Settings, _ *redfish.Options) { h.IPAddr = "10.0.0.5/24" }, "neither"},
		{"no login", func(h *config.FenceHost, _ *fence.Settings, _ *redfish.Options) { h.Login = "" }, "login is required"},
		{"no passwd", func(h *config.FenceHost, _ *fence.Settings, _ *redfish.Options) { h.Passwd = secret.Secret{} }, "passwd is required"},
		{"port out of range", func(h *config.FenceHost, _ *fence.Settings, _ *redfish.Options) { h.IPPort = 70000 }, "out of range"},
		{"uuid with a slash", func(h *config.FenceHost, _ *fence.Settings, _ *redfish.Options) { h.UUID = "a/../b" }, "uuid"},
		{"unknown auth mode", func(_ *config.FenceHost, _ *fence.Settings, o *redfish.Options) { o.Auth = "kerberos" }, "auth"},
		{"CA bundle without a certificate", func(h *config.FenceHost, s *fence.Settings, _ *redfish.Options) {
			h.TLS = true
			s.TLS.CABundle = notPEM
		}, "no PEM certificate"},
		{"missing CA bundle is ignored as InstanceHA", func(h *config.FenceHost, s *fence.Settings, _ *redfish.Options) {
			h.TLS = true
			s.TLS.CABundle = filepath.Join(dir, "absent.pem")
		}, ""},
		{"client cert without key", func(h *config.FenceHost, s *fence.Settings, _ *redfish.Options) {
			h.TLS = true
			s.TLS.CertPath = notPEM
		}, "set together"},
		{"unusable client cert", func(h *config.FenceHost, s *fence.Settings, _ *redfish.Options) {
			h.TLS = true
			s.TLS.CertPath, s.TLS.KeyPath = notPEM, notPEM
		}, "SSL_CERT_PATH"},
		{"address of another agent", func(h *config.FenceHost, _ *fence.Settings, _ *redfish.Options) { h.Address = "ipmi://10.0.0.5" }, "agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, s, o := good, fence.Settings{}, redfish.Options{}
			tt.mod(&h, &s, &o)
			_, err := redfish.NewWithOptions(h, s, nil, o)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewWithOptions: %v", err)
				}
				return
			}
			var fe *fence.Error
			if err == nil || !errors.As(err, &fe) || fe.Op != fence.OpConfig || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want a configure *fence.Error containing %q", err, tt.wantErr)
			}
			fencetest.CheckNoSecret(t, []string{canary}, err.Error())
		})
	}
}

func TestPlainHTTPWarns(t *testing.T) {
	s := startSim(t, redfishsim.Options{})
	_, logs := newFencer(t, entry(s, canary), fence.Settings{}, redfish.Options{})
	if !strings.Contains(logs(), "plain HTTP") || !strings.Contains(logs(), "level=WARN") {
		t.Fatalf("no plain-HTTP warning:\n%s", logs())
	}
}

func TestAddressFromMetal3URL(t *testing.T) {
	s := startSim(t, redfishsim.Options{Systems: []redfishsim.System{{UUID: "abc"}, {UUID: "def"}}})
	h := config.FenceHost{Name: hostName, Login: "root", Passwd: secret.New(canary),
		Address: fmt.Sprintf("redfish+http://%s:%d/redfish/v1/Systems/def", s.Host(), s.Port())}
	f, _ := newFencer(t, h, fence.Settings{}, fastOpts(&sleeps{}))
	if err := f.PowerOff(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if s.PowerState("def") != fence.PowerOff || s.PowerState("abc") != fence.PowerOn {
		t.Fatal("the address's system was not the one fenced")
	}
}
