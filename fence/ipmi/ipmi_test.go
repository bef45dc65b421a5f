package ipmi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

func validHost() config.FenceHost {
	return config.FenceHost{Name: "compute-0.example.com", Agent: "ipmi", IPAddr: "192.0.2.10", IPPort: 623,
		Login: "admin", Passwd: secret.New("secret-pw")}
}

func TestNewValidatesTheEntry(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*config.FenceHost)
		wantKey string // text the error must hold; "" means valid
	}{
		{"valid entry", func(*config.FenceHost) {}, ""},
		{"agent left empty is ipmi", func(h *config.FenceHost) { h.Agent = "" }, ""},
		{"IPv6 literal", func(h *config.FenceHost) { h.IPAddr = "2001:db8::1" }, ""},
		{"port 1 and login of 16 bytes", func(h *config.FenceHost) { h.IPPort = 1; h.Login = "abcdefghijklmnop" }, ""},
		{"no host name", func(h *config.FenceHost) { h.Name = "" }, "host name"},
		{"other agent", func(h *config.FenceHost) { h.Agent = "redfish" }, "agent"},
		{"ipaddr missing", func(h *config.FenceHost) { h.IPAddr = "" }, "ipaddr"},
		{"ipaddr is a DNS name", func(h *config.FenceHost) { h.IPAddr = "bmc.example.com" }, "ipaddr"},
		{"ipaddr with zone", func(h *config.FenceHost) { h.IPAddr = "fe80::1%eth0" }, "ipaddr"},
		{"ipaddr with port", func(h *config.FenceHost) { h.IPAddr = "192.0.2.1:623" }, "ipaddr"},
		{"port 0", func(h *config.FenceHost) { h.IPPort = 0 }, "ipport"},
		{"port 65536", func(h *config.FenceHost) { h.IPPort = 65536 }, "ipport"},
		{"login empty", func(h *config.FenceHost) { h.Login = "" }, "login"},
		{"login with a space", func(h *config.FenceHost) { h.Login = "ad min" }, "login"},
		{"login longer than IPMI allows", func(h *config.FenceHost) { h.Login = strings.Repeat("a", 17) }, "login"},
		{"password missing", func(h *config.FenceHost) { h.Passwd = secret.Secret{} }, "passwd"},
		{"password longer than IPMI allows", func(h *config.FenceHost) { h.Passwd = secret.New(strings.Repeat("p", 21)) }, "passwd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := validHost()
			tc.edit(&h)
			f, err := New(h, fence.Settings{}, nil)
			if tc.wantKey == "" {
				if err != nil || f == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("New accepted an invalid entry")
			}
			var fe *fence.Error
			if !errors.As(err, &fe) || fe.Op != fence.OpConfig || fe.Driver != "ipmi" || !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v is not a configure *fence.Error wrapping ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tc.wantKey) {
				t.Errorf("error %q does not name %q", err, tc.wantKey)
			}
			if h.Name != "" && !strings.Contains(err.Error(), h.Name) {
				t.Errorf("error %q does not name the host", err)
			}
			if p := h.Passwd.Reveal(); p != "" && strings.Contains(err.Error(), p) {
				t.Errorf("error %q holds the password", err)
			}
		})
	}
}

func TestTimeoutComesFromTheEntryThenFencingTimeout(t *testing.T) {
	s := fence.Settings{}
	s.Timeout = 45 * time.Second
	tests := []struct {
		name     string
		entry    time.Duration
		settings time.Duration
		want     time.Duration
	}{
		{"entry timeout wins", 7 * time.Second, 45 * time.Second, 7 * time.Second},
		{"FENCING_TIMEOUT otherwise", 0, 45 * time.Second, 45 * time.Second},
		{"default when neither is set", 0, 0, DefaultTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := validHost()
			h.Timeout = tc.entry
			s := fence.Settings{Timeout: tc.settings}
			f, err := NewWithOptions(h, s, nil)
			if err != nil {
				t.Fatal(err)
			}
			if f.Timeout() != tc.want {
				t.Errorf("timeout %s, want %s", f.Timeout(), tc.want)
			}
		})
	}
}

func TestAddressAndDriver(t *testing.T) {
	h := validHost()
	h.IPAddr = "2001:db8::1"
	f, err := NewWithOptions(h, fence.Settings{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Address(); got != "ipmi://[2001:db8::1]:623" {
		t.Errorf("Address = %q", got)
	}
	if got := f.hostArg(); got != "[2001:db8::1]" {
		t.Errorf("hostArg = %q; go-ipmi joins host and port with a colon", got)
	}
	if f.Driver() != "ipmi" {
		t.Errorf("Driver = %q", f.Driver())
	}
	var _ fence.Addresser = f
}

func TestIsAuthSeparatesRefusalFromNetworkTrouble(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"wrong password (as go-ipmi flattens it)", errors.New("connect20 failed after try all cipher suite ids ([3]), errs: \ncmd: rakp1 failed with cipher suite id (3), err: validate rakp2 message failed, err: RAKP2 authentication code mismatch: RAKP authentication failed"), true},
		{"wrapped sentinel", fmt.Errorf("x: %w", client.ErrRAKPAuthentication), true},
		{"unknown user status", fmt.Errorf("x: %w", types.NewRmcpStatusError(types.RmcpStatusCodeUnauthorizedName)), true},
		{"unknown user text", errors.New("err: RMCP+ status 0x0d: Unauthorized name"), true},
		{"insufficient privilege", fmt.Errorf("x: %w", types.NewResponseError(types.CodeInsufficientPrivilege, "no")), true},
		{"no resources is transient", fmt.Errorf("x: %w", types.NewRmcpStatusError(types.RmcpStatusCodeNoResToCreateSess)), false},
		{"connection refused", errors.New("read udp 127.0.0.1:1->127.0.0.1:2: read: connection refused"), false},
		{"timeout", context.DeadlineExceeded, false},
		{"nil", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := isAuth(tc.err); got != tc.want {
				t.Errorf("isAuth(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestScrubRemovesThePasswordAndFlattens(t *testing.T) {
	pw := secret.New("hunter2")
	got := scrub(errors.New("bad\n  hunter2 here"), pw)
	if got != "bad [redacted] here" {
		t.Errorf("scrub = %q", got)
	}
	if long := scrub(errors.New(strings.Repeat("x", 5000)), pw); len(long) > 700 {
		t.Errorf("scrub kept %d bytes", len(long))
	}
}

// fakeBMC is a scripted BMC behind the session interface.
type fakeBMC struct {
	mu        sync.Mutex
	on        bool
	dialErrs  []error // returned by successive dials, then nil
	downErrs  []error // returned by successive PowerDown calls, then nil
	statusErr []error // returned by successive status reads, then nil
	stuck     bool    // PowerDown accepted, power stays on
	dials     int
	downs     int
	reads     int
	open      int // sessions not closed
}

func (b *fakeBMC) dial(ctx context.Context) (session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dials++
	if len(b.dialErrs) > 0 {
		err := b.dialErrs[0]
		b.dialErrs = b.dialErrs[1:]
		if err != nil {
			return nil, err
		}
	}
	b.open++
	return &fakeSession{b: b}, nil
}

type fakeSession struct{ b *fakeBMC }

func (s *fakeSession) PowerIsOn(ctx context.Context) (bool, error) {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reads++
	if len(b.statusErr) > 0 {
		err := b.statusErr[0]
		b.statusErr = b.statusErr[1:]
		if err != nil {
			return false, err
		}
	}
	return b.on, ctx.Err()
}

func (s *fakeSession) PowerDown(ctx context.Context) error {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.downs++
	if len(b.downErrs) > 0 {
		err := b.downErrs[0]
		b.downErrs = b.downErrs[1:]
		if err != nil {
			return err
		}
	}
	if !b.stuck {
		b.on = false
	}
	return nil
}

func (s *fakeSession) PowerUp(ctx context.Context) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.on = true
	return nil
}

func (s *fakeSession) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.open--
}

func fakeFencer(t *testing.T, b *fakeBMC, timeout time.Duration) *Fencer {
	t.Helper()
	h := validHost()
	h.Timeout = timeout
	f, err := NewWithOptions(h, fence.Settings{}, nil, WithBackoff(time.Millisecond, 2*time.Millisecond), WithPollInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	f.dial = b.dial
	return f
}

var (
	errNet            = errors.New("read udp: connection refused")
	errNotInThisState = fmt.Errorf("chassis control: %w", types.NewResponseError(0xd5, "not supported in present state"))
)

func TestPowerOffOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		bmc       *fakeBMC
		timeout   time.Duration
		want      error // nil or a sentinel
		wantDials int
		wantDowns int
	}{
		{"on host is powered off and confirmed", &fakeBMC{on: true}, time.Second, nil, 1, 1},
		{"off host still gets power down", &fakeBMC{on: false}, time.Second, nil, 1, 1},
		{"refused power down of an off host is fenced", &fakeBMC{on: false, downErrs: []error{errNotInThisState}}, time.Second, nil, 1, 1},
		{"refused power down of an on host is retried", &fakeBMC{on: true, downErrs: []error{errNotInThisState}}, time.Second, nil, 2, 2},
		{"network error then success", &fakeBMC{on: true, dialErrs: []error{errNet}}, time.Second, nil, 2, 1},
		{"power down error is retried in a new session", &fakeBMC{on: true, downErrs: []error{errNet}}, time.Second, nil, 2, 2},
		{"status errors while waiting are tolerated", &fakeBMC{on: true, statusErr: []error{nil, errNet, errNet}}, time.Second, nil, 3, 1},
		{"three network failures: unreachable", &fakeBMC{on: true, dialErrs: []error{errNet, errNet, errNet}}, time.Second, fence.ErrUnreachable, 3, 0},
		{"refused credentials: one attempt", &fakeBMC{on: true, dialErrs: []error{client.ErrRAKPAuthentication}}, time.Second, fence.ErrAuth, 1, 0},
		{"never off: timeout, one power down", &fakeBMC{on: true, stuck: true}, 200 * time.Millisecond, fence.ErrTimeout, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.bmc
			f := fakeFencer(t, b, tc.timeout)
			err := f.PowerOff(context.Background())
			if tc.want == nil && err != nil {
				t.Fatalf("PowerOff: %v", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("PowerOff = %v, want %v", err, tc.want)
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.dials != tc.wantDials || b.downs != tc.wantDowns {
				t.Errorf("dials %d downs %d, want %d and %d", b.dials, b.downs, tc.wantDials, tc.wantDowns)
			}
			if b.open != 0 {
				t.Errorf("%d sessions left open", b.open)
			}
			if tc.want == nil && b.on {
				t.Error("PowerOff succeeded but the host is on")
			}
		})
	}
}

func TestPowerStateAndPowerOnWithAFakeBMC(t *testing.T) {
	b := &fakeBMC{on: false}
	f := fakeFencer(t, b, time.Second)
	if st, err := f.PowerState(context.Background()); err != nil || st != fence.PowerOff {
		t.Fatalf("PowerState = %v, %v", st, err)
	}
	if err := f.PowerOn(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st, err := f.PowerState(context.Background()); err != nil || st != fence.PowerOn {
		t.Fatalf("PowerState after PowerOn = %v, %v", st, err)
	}
	if b.downs != 0 || b.open != 0 {
		t.Errorf("downs %d open %d", b.downs, b.open)
	}
}
