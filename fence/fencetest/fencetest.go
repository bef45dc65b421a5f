package fencetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
)

// Backend is the BMC behind a Target, driven by the suite directly (not
// through the driver under test).
type Backend interface {
	// PowerStateOf reads the host's power as the backend knows it.
	PowerStateOf() fence.PowerState
	// SetPower sets the host's power at once, with no transition delay.
	SetPower(fence.PowerState)
	// MakeSlow delays every answer of the BMC by d; 0 restores normal
	// speed. The suite uses it to check that cancelling ctx cuts a wait.
	MakeSlow(d time.Duration)
}

// Target is one driver instance under test and the hooks to its backend.
// mk builds a fresh one for every subtest and registers its own cleanup
// (stopping simulators by PID, closing servers) with t.Cleanup.
type Target struct {
	// Fencer is configured with a canary password (listed in Secrets).
	Fencer fence.Fencer
	// BadAuth is a Fencer for the same BMC with a wrong password, itself a
	// canary listed in Secrets. Nil for drivers without credentials (noop).
	BadAuth fence.Fencer
	// Host is the fencing.yaml name the fencers were built for; Driver the
	// agent name they must report.
	Host, Driver string
	// Secrets are every password or token the fencers were given. None may
	// appear in an error, a log line or a formatted Fencer.
	Secrets []string
	// Logs returns everything the fencers logged so far (see Logger).
	Logs func() string
	// Backend is nil for drivers that control nothing (noop): the suite then
	// checks only what such a driver promises.
	Backend Backend
}

// Scale is the factor applied to the suite's deadlines: the environment
// variable IHA_TEST_TIMEOUT_SCALE (a positive number), else 1. Deadlines are
// already generous; raise it on a very slow machine, never to pass a
// failing test.
func Scale() float64 {
	if v, err := strconv.ParseFloat(os.Getenv("IHA_TEST_TIMEOUT_SCALE"), 64); err == nil && v > 0 {
		return v
	}
	return 1
}

// Timeout scales d by Scale.
func Timeout(d time.Duration) time.Duration { return time.Duration(float64(d) * Scale()) }

// Logger returns a logger that records every line (for canary checks) and
// also writes it to t.Log, and a function that returns what was recorded.
func Logger(t testing.TB) (*slog.Logger, func() string) {
	w := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), w.String
}

type logBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	t    testing.TB
	done bool
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	// t.Log panics once the test has ended; a driver goroutine may still log.
	if !l.done {
		func() {
			defer func() {
				if recover() != nil {
					l.done = true
				}
			}()
			l.t.Log(strings.TrimRight(string(p), "\n"))
		}()
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// WaitFor polls cond every 10 ms until it is true or the scaled timeout
// passes; it reports whether cond became true.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(Timeout(timeout))
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Conformance runs the shared contract of fence.Fencer against the targets
// that mk builds.
func Conformance(t *testing.T, mk func(t *testing.T) Target) {
	t.Run("Driver names the agent", func(t *testing.T) {
		tg := mk(t)
		if got := tg.Fencer.Driver(); got != tg.Driver {
			t.Fatalf("Driver() = %q, want %q", got, tg.Driver)
		}
	})
	t.Run("power off confirms the host is off", func(t *testing.T) {
		tg := mk(t)
		ctx := testContext(t)
		if tg.Backend == nil {
			if err := tg.Fencer.PowerOff(ctx); err != nil {
				t.Fatalf("PowerOff: %v", err)
			}
			checkSecrets(t, tg)
			return
		}
		tg.Backend.SetPower(fence.PowerOn)
		if err := tg.Fencer.PowerOff(ctx); err != nil {
			t.Fatalf("PowerOff: %v", err)
		}
		// PowerOff returns only once off is confirmed: no waiting here.
		if got := tg.Backend.PowerStateOf(); got != fence.PowerOff {
			t.Fatalf("PowerOff returned nil but the backend says %v", got)
		}
		if got, err := tg.Fencer.PowerState(ctx); err != nil || got != fence.PowerOff {
			t.Fatalf("PowerState after PowerOff = %v, %v; want off", got, err)
		}
		checkSecrets(t, tg)
	})
	t.Run("power off of a host already off succeeds", func(t *testing.T) {
		tg := mk(t)
		if tg.Backend == nil {
			if err := tg.Fencer.PowerOff(testContext(t)); err != nil {
				t.Fatalf("PowerOff: %v", err)
			}
			return
		}
		tg.Backend.SetPower(fence.PowerOff)
		for i := 0; i < 2; i++ { // idempotent: a second call after a crash
			if err := tg.Fencer.PowerOff(testContext(t)); err != nil {
				t.Fatalf("PowerOff #%d of a host already off: %v", i+1, err)
			}
		}
		if got := tg.Backend.PowerStateOf(); got != fence.PowerOff {
			t.Fatalf("backend says %v", got)
		}
	})
	t.Run("power state only reads", func(t *testing.T) {
		tg := mk(t)
		if tg.Backend == nil {
			if _, err := tg.Fencer.PowerState(testContext(t)); err != nil {
				t.Fatalf("PowerState: %v", err)
			}
			return
		}
		for _, want := range []fence.PowerState{fence.PowerOn, fence.PowerOff, fence.PowerOn} {
			tg.Backend.SetPower(want)
			got, err := tg.Fencer.PowerState(testContext(t))
			if err != nil || got != want {
				t.Fatalf("PowerState = %v, %v; want %v", got, err, want)
			}
			if b := tg.Backend.PowerStateOf(); b != want {
				t.Fatalf("PowerState changed the backend from %v to %v", want, b)
			}
		}
	})
	t.Run("power on is accepted and the host comes on", func(t *testing.T) {
		tg := mk(t)
		if tg.Backend == nil {
			if err := tg.Fencer.PowerOn(testContext(t)); err != nil {
				t.Fatalf("PowerOn: %v", err)
			}
			return
		}
		tg.Backend.SetPower(fence.PowerOff)
		if err := tg.Fencer.PowerOn(testContext(t)); err != nil {
			t.Fatalf("PowerOn: %v", err)
		}
		if !WaitFor(30*time.Second, func() bool { return tg.Backend.PowerStateOf() == fence.PowerOn }) {
			t.Fatalf("host still %v after PowerOn", tg.Backend.PowerStateOf())
		}
	})
	t.Run("a cancelled context is refused", func(t *testing.T) {
		tg := mk(t)
		if tg.Backend != nil {
			tg.Backend.SetPower(fence.PowerOn)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for _, c := range calls(tg.Fencer) {
			err := c.run(ctx)
			checkError(t, tg, err, c.op, context.Canceled)
		}
		if tg.Backend != nil {
			if got := tg.Backend.PowerStateOf(); got != fence.PowerOn {
				t.Fatalf("a call with a cancelled context changed power to %v", got)
			}
		}
	})
	t.Run("cancelling the context aborts a slow call promptly", func(t *testing.T) {
		tg := mk(t)
		if tg.Backend == nil {
			return // nothing to be slow; the cancelled-context case covers noop
		}
		tg.Backend.SetPower(fence.PowerOn)
		tg.Backend.MakeSlow(Timeout(time.Minute))
		t.Cleanup(func() { tg.Backend.MakeSlow(0) })
		for _, c := range calls(tg.Fencer) {
			ctx, cancel := context.WithCancel(context.Background())
			timer := time.AfterFunc(200*time.Millisecond, cancel)
			start := time.Now()
			err := c.run(ctx)
			took := time.Since(start)
			timer.Stop()
			cancel()
			checkError(t, tg, err, c.op, context.Canceled)
			if took > Timeout(5*time.Second) {
				t.Fatalf("%s took %v after its context was cancelled at 200ms", c.op, took)
			}
		}
	})
	t.Run("wrong credentials give an auth error naming host, driver and operation", func(t *testing.T) {
		tg := mk(t)
		if tg.BadAuth == nil {
			return // the driver has no credentials
		}
		if tg.Backend != nil {
			tg.Backend.SetPower(fence.PowerOn)
		}
		for _, c := range calls(tg.BadAuth) {
			ctx, cancel := context.WithTimeout(context.Background(), Timeout(60*time.Second))
			err := c.run(ctx)
			cancel()
			checkError(t, tg, err, c.op, fence.ErrAuth)
		}
		if tg.Backend != nil {
			if got := tg.Backend.PowerStateOf(); got != fence.PowerOn {
				t.Fatalf("a refused call changed power to %v", got)
			}
		}
		checkSecrets(t, tg)
	})
}

type call struct {
	op  string
	run func(context.Context) error
}

func calls(f fence.Fencer) []call {
	return []call{
		{fence.OpPowerState, func(ctx context.Context) error { _, err := f.PowerState(ctx); return err }},
		{fence.OpPowerOff, f.PowerOff},
		{fence.OpPowerOn, f.PowerOn},
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout(60*time.Second))
	t.Cleanup(cancel)
	return ctx
}

// checkError checks err is a *fence.Error naming the target's host and
// driver, the operation op, wrapping want, with no secret in its text.
func checkError(t *testing.T, tg Target, err error, op string, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", op, want)
	}
	var fe *fence.Error
	if !errors.As(err, &fe) {
		t.Fatalf("%s: error %v (%T) is not a *fence.Error", op, err, err)
	}
	if fe.Host != tg.Host || fe.Driver != tg.Driver || fe.Op != op {
		t.Fatalf("%s: error names host %q driver %q op %q; want %q %q %q",
			op, fe.Host, fe.Driver, fe.Op, tg.Host, tg.Driver, op)
	}
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v does not wrap %v", op, err, want)
	}
	for _, s := range tg.Secrets {
		if s != "" && (strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), s)) {
			t.Fatalf("%s: error reveals a secret: %v", op, err)
		}
	}
}

// checkSecrets fails when a secret appears in the logs or in a formatted
// Fencer (what a panic or a %v in a log line would print).
func checkSecrets(t *testing.T, tg Target) {
	t.Helper()
	if len(tg.Secrets) == 0 {
		t.Fatal("the target plants no canary secret")
	}
	var logs string
	if tg.Logs != nil {
		logs = tg.Logs()
	}
	printed := fmt.Sprintf("%v %+v %#v %v %+v %#v", tg.Fencer, tg.Fencer, tg.Fencer, tg.BadAuth, tg.BadAuth, tg.BadAuth)
	for _, s := range tg.Secrets {
		if s == "" {
			continue
		}
		if strings.Contains(logs, s) {
			t.Fatal("a secret appears in the logs")
		}
		if strings.Contains(printed, s) {
			t.Fatal("a secret appears in a formatted Fencer")
		}
	}
}

// CheckNoSecret fails t when any of secrets appears in any of texts. Driver
// tests use it on captured logs, errors and panics outside the suite.
func CheckNoSecret(t testing.TB, secrets []string, texts ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for i, txt := range texts {
			if strings.Contains(txt, s) {
				t.Fatalf("text #%d reveals a secret", i)
			}
		}
	}
}
