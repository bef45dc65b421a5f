package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestVersionAndUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-version"}, func(string) string { return "" }, &out, &errOut); code != 0 ||
		!strings.HasPrefix(out.String(), "iha-leader ") {
		t.Fatalf("-version: %d %q", code, out.String())
	}
	if code := run(context.Background(), []string{"-log-format", "xml"}, func(string) string { return "" }, &out, &errOut); code != 2 {
		t.Fatalf("bad flag value must exit 2, got %d", code)
	}
}

func TestParsePeers(t *testing.T) {
	p, err := parsePeers([]string{"a=127.0.0.1:1", "b=127.0.0.2:1"})
	if err != nil || len(p) != 2 || p[1].ID != "b" {
		t.Fatalf("%v %v", p, err)
	}
	if _, err := parsePeers([]string{"nohost"}); err == nil {
		t.Fatal("a peer without = must be refused")
	}
}

// TestProductionBuildHasNoSimulators: iha-leader as `make build` builds it
// links no simulator (novasim, the Redfish simulator, the sandbox: the demo
// lives behind the build tag dev, which `make dev` sets), and its -dev flag
// says how to run the demo instead of running one.
func TestProductionBuildHasNoSimulators(t *testing.T) {
	sims := []string{"github.com/ihaproject/iha/pkg/novasim", "github.com/ihaproject/iha/fence/redfish/redfishsim", "github.com/ihaproject/iha/internal/sandbox"}
	deps := func(tags ...string) string {
		args := append([]string{"list"}, tags...)
		out, err := exec.Command("go", append(args, "-deps", ".")...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		return string(out)
	}
	prod, dev := deps(), deps("-tags", "dev")
	for _, p := range sims {
		if strings.Contains(prod, p+"\n") {
			t.Errorf("the production iha-leader links %s", p)
		}
		if !strings.Contains(dev, p+"\n") {
			t.Errorf("the dev build does not link %s: this test no longer sees what it checks", p)
		}
	}
	leaderBin, _ := buildBinaries(t)
	cmd := exec.Command(leaderBin, "-dev")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("iha-leader -dev (production build): %v, want exit status 2\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "make dev") {
		t.Errorf("iha-leader -dev (production build) does not say how to run the demo: %q", stderr.String())
	}
}
