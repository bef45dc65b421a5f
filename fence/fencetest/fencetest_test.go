package fencetest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/fencetest"
)

// memBMC is an in-memory backend; fake is a driver for it. With a flaw set,
// the driver breaks one rule of the contract, and the suite must notice.
type memBMC struct {
	mu    sync.Mutex
	power fence.PowerState
	slow  time.Duration
}

func (m *memBMC) PowerStateOf() fence.PowerState { m.mu.Lock(); defer m.mu.Unlock(); return m.power }
func (m *memBMC) SetPower(p fence.PowerState)    { m.mu.Lock(); m.power = p; m.mu.Unlock() }
func (m *memBMC) MakeSlow(d time.Duration)       { m.mu.Lock(); m.slow = d; m.mu.Unlock() }

type fake struct {
	bmc     *memBMC
	badAuth bool
	flaw    string
}

const secret = "Suite-Canary-4411"

func (f *fake) wait(ctx context.Context) error {
	f.bmc.mu.Lock()
	d := f.bmc.slow
	f.bmc.mu.Unlock()
	if f.flaw == "ignores ctx" {
		time.Sleep(min(d, 6*time.Second))
		return nil
	}
	select {
	case <-time.After(d):
		return ctx.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fake) do(ctx context.Context, op string, act func()) error {
	if err := ctx.Err(); err != nil && f.flaw != "ignores ctx" {
		return &fence.Error{Host: "h1", Driver: "fake", Op: op, Err: err}
	}
	if err := f.wait(ctx); err != nil {
		return &fence.Error{Host: "h1", Driver: "fake", Op: op, Err: err}
	}
	if f.badAuth {
		msg := fence.ErrAuth
		if f.flaw == "leaks password" {
			return &fence.Error{Host: "h1", Driver: "fake", Op: op, Err: errors.Join(msg, errors.New("bad "+secret))}
		}
		return &fence.Error{Host: "h1", Driver: "fake", Op: op, Err: msg}
	}
	act()
	return nil
}

func (f *fake) PowerOff(ctx context.Context) error {
	return f.do(ctx, fence.OpPowerOff, func() {
		if f.flaw != "claims off" {
			f.bmc.SetPower(fence.PowerOff)
		}
	})
}
func (f *fake) PowerOn(ctx context.Context) error {
	return f.do(ctx, fence.OpPowerOn, func() { f.bmc.SetPower(fence.PowerOn) })
}
func (f *fake) PowerState(ctx context.Context) (fence.PowerState, error) {
	var p fence.PowerState
	err := f.do(ctx, fence.OpPowerState, func() {
		p = f.bmc.PowerStateOf()
		if f.flaw == "status writes" {
			f.bmc.SetPower(fence.PowerOff)
		}
	})
	return p, err
}
func (f *fake) Driver() string { return "fake" }

func target(flaw string) func(t *testing.T) fencetest.Target {
	return func(t *testing.T) fencetest.Target {
		bmc := &memBMC{power: fence.PowerOn}
		_, logs := fencetest.Logger(t)
		return fencetest.Target{
			Fencer: &fake{bmc: bmc, flaw: flaw}, BadAuth: &fake{bmc: bmc, badAuth: true, flaw: flaw},
			Host: "h1", Driver: "fake", Secrets: []string{secret}, Logs: logs, Backend: bmc,
		}
	}
}

func TestCorrectDriverPasses(t *testing.T) {
	fencetest.Conformance(t, target(""))
}

// TestFlawedDriversFail runs the suite against drivers that each break one
// rule, in a child process (a failing subtest would fail this test too), and
// checks that the suite fails with the expected complaint.
func TestFlawedDriversFail(t *testing.T) {
	if flaw := os.Getenv("FENCETEST_FLAW"); flaw != "" {
		fencetest.Conformance(t, target(flaw))
		return
	}
	tests := []struct{ flaw, complaint string }{
		{"claims off", "PowerOff returned nil but the backend says on"},
		{"status writes", "PowerState changed the backend"},
		{"ignores ctx", "no error, want context canceled"},
		{"leaks password", "reveals a secret"},
	}
	for _, tt := range tests {
		t.Run(tt.flaw, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run", "^TestFlawedDriversFail$", "-test.count=1")
			cmd.Env = append(os.Environ(), "FENCETEST_FLAW="+tt.flaw)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a driver that %s:\n%s", tt.flaw, out)
			}
			if !strings.Contains(string(out), tt.complaint) {
				t.Fatalf("the suite failed without saying %q:\n%s", tt.complaint, out)
			}
		})
	}
}
