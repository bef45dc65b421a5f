package ipmi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/ipmi/internal/simbmc"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger logs to t.Log and to the returned buffer, at debug level.
func testLogger(t testing.TB) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	h := slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("driver log:\n%s", buf.String())
		}
	})
	return slog.New(h), buf
}

// newSimFencer builds a driver for b with fast test back-off and counts
// the sessions it opens.
func newSimFencer(t testing.TB, _ *simbmc.BMC, h config.FenceHost, timeout time.Duration, logger *slog.Logger) (*Fencer, *atomic.Int32) {
	t.Helper()
	h.Timeout = timeout
	f, err := NewWithOptions(h, fence.Settings{}, logger, WithBackoff(50*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	dial := f.dial
	f.dial = func(ctx context.Context) (session, error) {
		dials.Add(1)
		return dial(ctx)
	}
	return f, &dials
}

func TestPowerOffKillsTheHostAndConfirmsOff(t *testing.T) {
	b := simbmc.Start(t, simbmc.Options{})
	host := b.HostPID()
	if !b.HostAlive() {
		t.Fatal("host process not running before the fence")
	}
	logger, logs := testLogger(t)
	f, _ := newSimFencer(t, b, b.FenceHost("compute-1.example.com"), simbmc.Scale(20*time.Second), logger)

	if st, err := f.PowerState(context.Background()); err != nil || st != fence.PowerOn {
		t.Fatalf("PowerState before fence = %v, %v; want on", st, err)
	}
	if err := f.PowerOff(context.Background()); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	if b.HostAlive() {
		t.Fatalf("PowerOff returned nil but host process %d still runs", host)
	}
	if n := b.SetPowerCalls(0); n != 1 {
		t.Errorf("BMC got %d power-off commands, want 1; calls: %q", n, b.Calls())
	}
	if st, err := f.PowerState(context.Background()); err != nil || st != fence.PowerOff {
		t.Fatalf("PowerState after fence = %v, %v; want off", st, err)
	}
	if !strings.Contains(logs.String(), "BMC confirms power off") {
		t.Errorf("no confirmation in the log")
	}
}

func TestPowerOffOfAHostAlreadyOffSucceedsAndLeavesItOff(t *testing.T) {
	b := simbmc.Start(t, simbmc.Options{Off: true})
	logger, logs := testLogger(t)
	f, dials := newSimFencer(t, b, b.FenceHost("compute-2"), simbmc.Scale(20*time.Second), logger)
	if err := f.PowerOff(context.Background()); err != nil {
		t.Fatalf("PowerOff of a host already off: %v", err)
	}
	// Power down is still sent (a safe no-op), power up never.
	if n := b.SetPowerCalls(0); n != 1 {
		t.Errorf("BMC got %d power-off commands for a host already off, want 1", n)
	}
	if n := b.SetPowerCalls(1); n != 0 || b.HostAlive() {
		t.Errorf("a host already off was powered on (%d power-on commands)", n)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("opened %d sessions, want 1", n)
	}
	if !strings.Contains(logs.String(), "already off") {
		t.Errorf("already-off not logged")
	}
}

func TestPowerOnStartsTheHost(t *testing.T) {
	b := simbmc.Start(t, simbmc.Options{Off: true})
	logger, _ := testLogger(t)
	f, _ := newSimFencer(t, b, b.FenceHost("compute-3"), simbmc.Scale(20*time.Second), logger)
	if err := f.PowerOn(context.Background()); err != nil {
		t.Fatalf("PowerOn: %v", err)
	}
	deadline := time.Now().Add(simbmc.Scale(5 * time.Second))
	for !b.HostAlive() {
		if time.Now().After(deadline) {
			t.Fatal("host process not started after PowerOn")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Power on again is accepted and starts no second host.
	pid := b.HostPID()
	if err := f.PowerOn(context.Background()); err != nil {
		t.Fatalf("second PowerOn: %v", err)
	}
	if b.HostPID() != pid || !b.HostAlive() {
		t.Errorf("second PowerOn replaced the host: pid %d -> %d", pid, b.HostPID())
	}
}

// fenceError asserts err is a *fence.Error for host and op wrapping want.
func fenceError(t *testing.T, err error, host, op string, want error) *fence.Error {
	t.Helper()
	var fe *fence.Error
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *fence.Error", err, err)
	}
	if fe.Host != host || fe.Driver != "ipmi" || fe.Op != op {
		t.Errorf("error names host %q driver %q op %q; want %q ipmi %q", fe.Host, fe.Driver, fe.Op, host, op)
	}
	if !errors.Is(err, want) {
		t.Errorf("error %q does not wrap %v", err, want)
	}
	if !strings.Contains(err.Error(), host) {
		t.Errorf("error %q does not name host %s", err, host)
	}
	return fe
}

func TestPowerOffFailsWithErrTimeoutWhenTheBMCNeverReportsOff(t *testing.T) {
	b := simbmc.Start(t, simbmc.Options{})
	b.SetStuck(t, true)
	logger, _ := testLogger(t)
	timeout := 2 * time.Second
	f, dials := newSimFencer(t, b, b.FenceHost("compute-stuck"), timeout, logger)

	start := time.Now()
	err := f.PowerOff(context.Background())
	elapsed := time.Since(start)
	fenceError(t, err, "compute-stuck", fence.OpPowerOff, fence.ErrTimeout)
	if errors.Is(err, fence.ErrUnreachable) || errors.Is(err, fence.ErrAuth) {
		t.Errorf("timeout error also claims another cause: %v", err)
	}
	t.Logf("error after %s: %v", elapsed, err)
	if elapsed < timeout || elapsed > timeout+simbmc.Scale(3*time.Second) {
		t.Errorf("PowerOff returned after %s; want about the %s timeout", elapsed, timeout)
	}
	if !b.HostAlive() {
		t.Error("stuck BMC killed the host; the test proves nothing")
	}
	// Power down is sent once; a BMC that accepted it is not asked again.
	if n := b.SetPowerCalls(0); n != 1 {
		t.Errorf("BMC got %d power-off commands, want 1", n)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("opened %d sessions; want 1 (no retry after an accepted power down)", n)
	}
}

func TestWrongCredentialsFailFastWithErrAuthAndOneAttempt(t *testing.T) {
	b := simbmc.Start(t, simbmc.Options{})
	tests := []struct {
		name  string
		login string
		pass  string
	}{
		{"wrong password", b.User, "not-the-password"},
		{"unknown user", "nobody", b.Password},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logger, _ := testLogger(t)
			h := b.FenceHost("compute-auth")
			h.Login, h.Passwd = tc.login, secret.New(tc.pass)
			f, dials := newSimFencer(t, b, h, simbmc.Scale(20*time.Second), logger)
			before := len(b.Calls())
			for _, op := range []struct {
				name string
				call func(context.Context) error
			}{
				{fence.OpPowerOff, f.PowerOff},
				{fence.OpPowerOn, f.PowerOn},
				{fence.OpPowerState, func(ctx context.Context) error { _, err := f.PowerState(ctx); return err }},
			} {
				dials.Store(0)
				start := time.Now()
				err := op.call(context.Background())
				elapsed := time.Since(start)
				fenceError(t, err, "compute-auth", op.name, fence.ErrAuth)
				t.Logf("%s: error after %s: %v", op.name, elapsed, err)
				if n := dials.Load(); n != 1 {
					t.Errorf("%s: made %d attempts, want exactly 1", op.name, n)
				}
				if limit := simbmc.Scale(time.Second); elapsed >= limit {
					t.Errorf("%s: refused credentials took %s, want well under %s", op.name, elapsed, limit)
				}
			}
			if calls := b.Calls(); !b.HostAlive() || len(calls) != before {
				t.Errorf("a refused session reached the chassis: %q", calls[before:])
			}
		})
	}
}

// closedPort returns a loopback UDP port with nothing listening.
func closedPort(t *testing.T) int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	return port
}

func TestUnreachableBMCFailsWithErrUnreachableAfterThreeAttempts(t *testing.T) {
	logger, _ := testLogger(t)
	h := config.FenceHost{Name: "compute-gone", Agent: "ipmi", IPAddr: "127.0.0.1", IPPort: closedPort(t),
		Login: "admin", Passwd: secret.New("pw")}
	f, dials := newSimFencer(t, nil, h, simbmc.Scale(20*time.Second), logger)
	for _, op := range []struct {
		name string
		call func(context.Context) error
	}{
		{fence.OpPowerOff, f.PowerOff},
		{fence.OpPowerOn, f.PowerOn},
		{fence.OpPowerState, func(ctx context.Context) error { _, err := f.PowerState(ctx); return err }},
	} {
		dials.Store(0)
		err := op.call(context.Background())
		fenceError(t, err, "compute-gone", op.name, fence.ErrUnreachable)
		if n := dials.Load(); n != 3 {
			t.Errorf("%s: made %d attempts, want 3", op.name, n)
		}
		t.Logf("%s: %v", op.name, err)
	}
}

// TestSilentBMCIsBoundedByTheTimeout: a BMC that swallows every packet.
func TestSilentBMCIsBoundedByTheTimeout(t *testing.T) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	logger, _ := testLogger(t)
	h := config.FenceHost{Name: "compute-silent", Agent: "ipmi", IPAddr: "127.0.0.1",
		IPPort: c.LocalAddr().(*net.UDPAddr).Port, Login: "admin", Passwd: secret.New("pw")}
	timeout := 2500 * time.Millisecond
	f, _ := newSimFencer(t, nil, h, timeout, logger)
	start := time.Now()
	err = f.PowerOff(context.Background())
	elapsed := time.Since(start)
	fenceError(t, err, "compute-silent", fence.OpPowerOff, fence.ErrUnreachable)
	t.Logf("error after %s: %v", elapsed, err)
	if elapsed < timeout-100*time.Millisecond || elapsed > timeout+simbmc.Scale(2*time.Second) {
		t.Errorf("PowerOff returned after %s; want about the %s timeout", elapsed, timeout)
	}
}

func TestCancelAbortsPromptly(t *testing.T) {
	t.Run("while waiting for off", func(t *testing.T) {
		b := simbmc.Start(t, simbmc.Options{})
		b.SetStuck(t, true)
		logger, logs := testLogger(t)
		f, _ := newSimFencer(t, b, b.FenceHost("compute-c1"), 60*time.Second, logger)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- f.PowerOff(ctx) }()
		// Cancel once power down was accepted.
		deadline := time.Now().Add(simbmc.Scale(10 * time.Second))
		for !strings.Contains(logs.String(), "accepted power down") {
			if time.Now().After(deadline) {
				t.Fatal("power down never accepted")
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancelled := time.Now()
		cancel()
		checkAborted(t, done, cancelled, "compute-c1")
	})
	t.Run("during back-off", func(t *testing.T) {
		logger, logs := testLogger(t)
		h := config.FenceHost{Name: "compute-c2", Agent: "ipmi", IPAddr: "127.0.0.1", IPPort: closedPort(t),
			Login: "admin", Passwd: secret.New("pw"), Timeout: 60 * time.Second}
		f, err := NewWithOptions(h, fence.Settings{}, logger, WithBackoff(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- f.PowerOff(ctx) }()
		deadline := time.Now().Add(simbmc.Scale(10 * time.Second))
		for !strings.Contains(logs.String(), "retrying") {
			if time.Now().After(deadline) {
				t.Fatal("first attempt never failed")
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancelled := time.Now()
		cancel()
		checkAborted(t, done, cancelled, "compute-c2")
	})
}

func checkAborted(t *testing.T, done <-chan error, cancelled time.Time, host string) {
	t.Helper()
	select {
	case err := <-done:
		took := time.Since(cancelled)
		fenceError(t, err, host, fence.OpPowerOff, context.Canceled)
		if errors.Is(err, fence.ErrTimeout) || errors.Is(err, fence.ErrUnreachable) {
			t.Errorf("cancellation reported as a BMC fault: %v", err)
		}
		t.Logf("returned %s after cancel: %v", took, err)
		if limit := simbmc.Scale(time.Second); took > limit {
			t.Errorf("returned %s after cancel, want under %s", took, limit)
		}
	case <-time.After(simbmc.Scale(10 * time.Second)):
		t.Fatal("PowerOff did not return after cancel")
	}
}

// TestConcurrentFencesTakeAboutTheTimeOfOne fences ten slow BMCs (power cut
// 500 ms after the command, as real servers take a while) at once.
func TestConcurrentFencesTakeAboutTheTimeOfOne(t *testing.T) {
	const n = 10
	offDelay := 500 * time.Millisecond
	bmcs := simbmc.StartN(t, n+1, simbmc.Options{})
	logger, _ := testLogger(t)
	fencers := make([]*Fencer, len(bmcs))
	for i, b := range bmcs {
		b.SetOffDelay(t, offDelay)
		fencers[i], _ = newSimFencer(t, b, b.FenceHost("compute-"+string(rune('a'+i))), simbmc.Scale(30*time.Second), logger)
	}

	start := time.Now()
	if err := fencers[n].PowerOff(context.Background()); err != nil {
		t.Fatalf("single PowerOff: %v", err)
	}
	single := time.Since(start)

	start = time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fencers[i].PowerOff(context.Background())
		}()
	}
	wg.Wait()
	all := time.Since(start)
	for i, err := range errs {
		if err != nil {
			t.Errorf("host %d: %v", i, err)
		}
		if bmcs[i].HostAlive() {
			t.Errorf("host %d still runs after a successful fence", i)
		}
	}
	t.Logf("one fence %s, %d concurrent fences %s (sequential would be ~%s)", single, n, all, time.Duration(n)*single)
	if all > 3*single {
		t.Errorf("%d concurrent fences took %s, more than 3x one fence (%s)", n, all, single)
	}
}

func TestCanaryPasswordNeverInErrorsOrLogs(t *testing.T) {
	const canary = "CANARY-pw-7Hq2xZ"
	b := simbmc.Start(t, simbmc.Options{Password: canary})
	logger, logs := testLogger(t)
	var errs []error
	record := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	good := b.FenceHost("compute-canary")
	f, _ := newSimFencer(t, b, good, simbmc.Scale(20*time.Second), logger)
	record(f.PowerOff(context.Background()))
	record(f.PowerOn(context.Background()))

	// A BMC whose password is the canary followed by more: the sent
	// password is a prefix of the right one.
	wrong := good
	wrong.Passwd = secret.New(canary[:10])
	fw, _ := newSimFencer(t, b, wrong, simbmc.Scale(20*time.Second), logger)
	record(fw.PowerOff(context.Background()))

	unreach := good
	unreach.IPPort = closedPort(t)
	fu, _ := newSimFencer(t, nil, unreach, simbmc.Scale(20*time.Second), logger)
	record(fu.PowerOff(context.Background()))
	_, err := fu.PowerState(context.Background())
	record(err)

	b.SetStuck(t, true)
	ft, _ := newSimFencer(t, b, good, time.Second, logger)
	record(ft.PowerOff(context.Background()))

	// The config entry itself, printed every way a careless caller might.
	logger.Info("entry", "host", good, "fencer", f)
	logger.Info(fmt.Sprintf("%v %+v %#v %s %d %x", f, f, f, f, f, f))
	logger.Info(fmt.Sprintf("%v %+v %#v %d", *f, *f, *f, *f), "copy", *f)
	bad := good
	bad.IPAddr = "not-an-ip"
	_, err = New(bad, fence.Settings{}, logger)
	record(err)

	if len(errs) < 4 {
		t.Fatalf("expected at least 4 failures to inspect, got %d: %v", len(errs), errs)
	}
	for _, err := range errs {
		for e := err; e != nil; e = errors.Unwrap(e) {
			if strings.Contains(e.Error(), canary) || strings.Contains(e.Error(), canary[:10]) {
				t.Errorf("error leaks the password: %q", e)
			}
		}
	}
	if l := logs.String(); strings.Contains(l, canary) || strings.Contains(l, canary[:10]) {
		t.Errorf("log leaks the password:\n%s", l)
	}
}

// TestIpmitoolAgreesWithTheDriver cross-checks with the reference client
// (what InstanceHA runs): after our PowerOff, ipmitool sees the chassis off.
func TestIpmitoolAgreesWithTheDriver(t *testing.T) {
	if _, err := exec.LookPath("ipmitool"); err != nil {
		t.Fatalf("ipmitool not installed (scripts/install-test-deps.sh): %v", err)
	}
	b := simbmc.Start(t, simbmc.Options{})
	ipmitool := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), simbmc.Scale(20*time.Second))
		defer cancel()
		// -E: the password travels in the environment, as InstanceHA does.
		cmd := exec.CommandContext(ctx, "ipmitool", "-I", "lanplus", "-C", "3", "-H", simbmc.IP,
			"-p", strconv.Itoa(b.Port), "-U", b.User, "-E", "power", "status")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "IPMITOOL_PASSWORD=" + b.Password}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ipmitool: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := ipmitool(); got != "Chassis Power is on" {
		t.Fatalf("ipmitool before fence: %q", got)
	}
	logger, _ := testLogger(t)
	f, _ := newSimFencer(t, b, b.FenceHost("compute-x"), simbmc.Scale(20*time.Second), logger)
	if err := f.PowerOff(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := ipmitool(); got != "Chassis Power is off" {
		t.Fatalf("ipmitool after fence: %q", got)
	}
}
