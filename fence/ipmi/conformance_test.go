package ipmi

import (
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/fencetest"
	"github.com/ihaproject/iha/fence/ipmi/internal/simbmc"
	"github.com/ihaproject/iha/pkg/secret"
)

// simBackend lets the conformance suite drive an ipmi_sim's host directly.
type simBackend struct {
	t *testing.T
	b *simbmc.BMC
}

func (s simBackend) PowerStateOf() fence.PowerState {
	if s.b.HostAlive() {
		return fence.PowerOn
	}
	return fence.PowerOff
}

func (s simBackend) SetPower(p fence.PowerState) {
	if p == fence.PowerOn {
		s.b.PowerOnHost(s.t)
	} else {
		s.b.PowerOffHost(s.t)
	}
}

func (s simBackend) MakeSlow(d time.Duration) { s.b.SetSlow(s.t, d) }

func TestConformanceAgainstIPMISim(t *testing.T) {
	const canary = "CANARY-ipmi-k3Jw9"
	const badCanary = "CANARY-bad-Q81zd"
	fencetest.Conformance(t, func(t *testing.T) fencetest.Target {
		b := simbmc.Start(t, simbmc.Options{Password: canary})
		logger, logs := fencetest.Logger(t)
		h := b.FenceHost("compute-conf.example.com")
		h.Timeout = fencetest.Timeout(20 * time.Second)
		f, err := NewWithOptions(h, fence.Settings{}, logger, WithBackoff(50*time.Millisecond, 100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		bad := h
		bad.Passwd = secret.New(badCanary)
		fb, err := NewWithOptions(bad, fence.Settings{}, logger)
		if err != nil {
			t.Fatal(err)
		}
		return fencetest.Target{
			Fencer:  f,
			BadAuth: fb,
			Host:    h.Name,
			Driver:  "ipmi",
			Secrets: []string{canary, badCanary},
			Logs:    logs,
			Backend: simBackend{t: t, b: b},
		}
	})
}
