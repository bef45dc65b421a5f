package ipmi

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/ipmi/internal/simbmc"
	"github.com/ihaproject/iha/pkg/config"
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
func newSimFencer(t testing.TB, b *simbmc.BMC, h config.FenceHost, timeout time.Duration, logger *slog.Logger) (*Fencer, *atomic.Int32) {
	t.Helper()
	h.Timeout = timeout
	f, err := NewWithOptions(h, config.Defaults(), logger, WithBackoff(50*time.Millisecond, 100*time.Millisecond))
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

func TestPowerOffOfAHostAlreadyOffSucceedsWithoutCommand(t *testing.T) {
	b := simbmc.Start(t, simbmc.Options{Off: true})
	logger, logs := testLogger(t)
	f, dials := newSimFencer(t, b, b.FenceHost("compute-2"), simbmc.Scale(20*time.Second), logger)
	if err := f.PowerOff(context.Background()); err != nil {
		t.Fatalf("PowerOff of a host already off: %v", err)
	}
	if n := b.SetPowerCalls(0); n != 0 {
		t.Errorf("BMC got %d power-off commands for a host already off, want 0", n)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("opened %d sessions, want 1", n)
	}
	if !strings.Contains(logs.String(), "already powered off") {
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
