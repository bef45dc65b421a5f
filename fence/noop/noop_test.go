package noop_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/fencetest"
	"github.com/ihaproject/iha/fence/noop"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

const canary = "Noop-Canary-9d1c"

func TestConformance(t *testing.T) {
	fencetest.Conformance(t, func(t *testing.T) fencetest.Target {
		logger, logs := fencetest.Logger(t)
		f, err := noop.New(config.FenceHost{Name: "compute-7", Agent: "noop", Passwd: secret.New(canary)},
			fence.Settings{}, logger)
		if err != nil {
			t.Fatal(err)
		}
		return fencetest.Target{Fencer: f, Host: "compute-7", Driver: "noop", Secrets: []string{canary}, Logs: logs}
	})
}

func TestEveryUseWarnsAndNothingClaimsOff(t *testing.T) {
	logger, logs := fencetest.Logger(t)
	f, err := noop.New(config.FenceHost{Name: "compute-7", Agent: "noop"}, fence.Settings{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := f.PowerState(ctx)
	if err != nil || st != fence.PowerUnknown {
		t.Fatalf("PowerState = %v, %v; noop must answer unknown", st, err)
	}
	out := logs()
	if n := strings.Count(out, "level=WARN"); n != 3 {
		t.Fatalf("%d warnings for 3 uses:\n%s", n, out)
	}
	if !strings.Contains(out, "corrupted") || !strings.Contains(out, "host=compute-7") {
		t.Fatalf("warning does not say instances may be corrupted for the host:\n%s", out)
	}
}

func TestEmptyNameRefused(t *testing.T) {
	if _, err := noop.New(config.FenceHost{Agent: "noop"}, fence.Settings{}, nil); err == nil {
		t.Fatal("noop.New accepted an entry with no name")
	}
}
