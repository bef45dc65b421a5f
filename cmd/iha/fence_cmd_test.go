package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/fencetest"
	"github.com/ihaproject/iha/fence/redfish/redfishsim"
	"github.com/ihaproject/iha/pkg/config"
)

const fenceCanary = "Fence-Cmd-Canary-31a9"

// fenceDir writes a configuration directory whose fencing.yaml is body and
// points iha at it through the environment.
func fenceDir(t *testing.T, fencingYAML string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"config.yaml":  "config:\n  FENCING_TIMEOUT: \"5\"\n",
		"clouds.yaml":  "clouds:\n  lab:\n    auth_type: noauth\n    auth:\n      endpoint: http://127.0.0.1:8774/v2.1\n    region_name: RegionOne\n",
		"secure.yaml":  "clouds:\n  lab:\n    auth:\n      token: admin:admin\n",
		"fencing.yaml": "FencingConfig:\n" + fencingYAML,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeMeshKeys(t, dir)
	old := fenceEnv
	fenceEnv = func() config.Env { return config.MapEnv(map[string]string{"OS_CLOUD": "lab"}) }
	t.Cleanup(func() { fenceEnv = old })
	return dir
}

func simBMC(t *testing.T, o redfishsim.Options) *redfishsim.Server {
	t.Helper()
	o.Username, o.Password = "root", fenceCanary
	s, err := redfishsim.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func redfishEntry(name string, s *redfishsim.Server, pass string) string {
	return fmt.Sprintf("  %s:\n    agent: redfish\n    ipaddr: %s\n    ipport: \"%d\"\n    login: root\n    passwd: %s\n",
		name, s.Host(), s.Port(), pass)
}

func runFenceCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(2*time.Minute))
	defer cancel()
	code := run(ctx, args, &out, &errOut)
	t.Logf("iha %s → %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func TestFenceStatusReadsAndNeverChanges(t *testing.T) {
	on := simBMC(t, redfishsim.Options{})
	off := simBMC(t, redfishsim.Options{Systems: []redfishsim.System{{Off: true}}})
	dir := fenceDir(t, redfishEntry("compute-0.example.com", on, fenceCanary)+redfishEntry("compute-1", off, fenceCanary)+
		redfishEntry("compute-2", on, "wrong-password"))

	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"on host, short Nova name", []string{"fence", "status", "compute-0", "--dir", dir}, 0, "compute-0.example.com: power on"},
		{"off host, FQDN", []string{"fence", "status", "--dir", dir, "compute-1.example.org"}, 0, "compute-1: power off"},
		{"json", []string{"fence", "status", "compute-1", "--dir", dir, "--json"}, 0, `"power_state": "off"`},
		{"wrong password: BMC refused", []string{"fence", "status", "compute-2", "--dir", dir}, 3, "authentication failed"},
		{"host not configured", []string{"fence", "status", "compute-9", "--dir", dir}, 1, "no fencing configuration"},
		{"no host", []string{"fence", "status", "--dir", dir}, 2, ""},
		{"two hosts", []string{"fence", "status", "a", "b", "--dir", dir}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runFenceCmd(t, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d", code, tt.wantCode)
			}
			if !strings.Contains(out, tt.want) {
				t.Fatalf("stdout lacks %q", tt.want)
			}
			fencetest.CheckNoSecret(t, []string{fenceCanary}, out, errOut)
		})
	}
	for _, s := range []*redfishsim.Server{on, off} {
		if n := len(s.Resets()); n != 0 {
			t.Fatalf("iha fence status sent %d reset(s)", n)
		}
	}
	if on.PowerState("") != fence.PowerOn || off.PowerState("") != fence.PowerOff {
		t.Fatal("power changed")
	}
}

func TestFenceTestAll(t *testing.T) {
	good := simBMC(t, redfishsim.Options{})
	slow := simBMC(t, redfishsim.Options{ResponseDelay: 200 * time.Millisecond})
	body := redfishEntry("compute-0", good, fenceCanary) + redfishEntry("compute-1", slow, fenceCanary) +
		redfishEntry("compute-2", good, "not-it") + "  compute-3:\n    agent: noop\n"
	dir := fenceDir(t, body)

	t.Run("table, exit 1 because one host fails", func(t *testing.T) {
		code, out, errOut := runFenceCmd(t, "fence", "test", "--all", "--dir", dir, "--parallel", "2")
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		for _, want := range []string{"HOST", "LATENCY", "compute-0", "compute-3", "4 host(s), 1 failed"} {
			if !strings.Contains(out, want) {
				t.Fatalf("table lacks %q", want)
			}
		}
		lines := strings.Split(out, "\n")
		for _, l := range lines {
			if strings.HasPrefix(l, "compute-2:") && !strings.Contains(l, "authentication failed") {
				t.Fatalf("bad credentials not reported: %q", l)
			}
			if strings.HasPrefix(l, "compute-1 ") && (!strings.Contains(l, " ok ") || !strings.Contains(l, " on ")) {
				t.Fatalf("slow BMC not ok: %q", l)
			}
		}
		fencetest.CheckNoSecret(t, []string{fenceCanary, "not-it"}, out, errOut)
	})
	t.Run("json", func(t *testing.T) {
		code, out, _ := runFenceCmd(t, "fence", "test", "--all", "--dir", dir, "--json")
		if code != 1 {
			t.Fatalf("exit %d", code)
		}
		var got struct {
			Hosts []struct {
				Host, Result, Error string
				OK                  bool
				Power               string  `json:"power_state"`
				Latency             float64 `json:"latency_ms"`
			}
			Failed int
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Hosts) != 4 || got.Failed != 1 || !got.Hosts[0].OK || got.Hosts[2].OK || got.Hosts[1].Latency < 200 {
			t.Fatalf("json = %+v", got)
		}
	})
	t.Run("named hosts only, all good", func(t *testing.T) {
		code, out, _ := runFenceCmd(t, "fence", "test", "compute-0", "compute-1.example.com", "--dir", dir)
		if code != 0 || !strings.Contains(out, "2 host(s), 0 failed") {
			t.Fatalf("exit %d", code)
		}
	})
	t.Run("runs concurrently", func(t *testing.T) {
		var many string
		for i := 0; i < 8; i++ {
			many += redfishEntry(fmt.Sprintf("slow-%d", i), slow, fenceCanary)
		}
		d := fenceDir(t, many)
		start := time.Now()
		code, _, _ := runFenceCmd(t, "fence", "test", "--all", "--dir", d, "--parallel", "8")
		took := time.Since(start)
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		// Each host costs at least 2 slow requests (root, systems, system):
		// sequentially 8 × ≥ 0.6 s. In parallel it is one host's time.
		if took >= 8*600*time.Millisecond {
			t.Fatalf("8 slow hosts took %v: not concurrent", took)
		}
	})
	for _, s := range []*redfishsim.Server{good, slow} {
		if n := len(s.Resets()); n != 0 {
			t.Fatalf("iha fence test sent %d reset(s)", n)
		}
	}
}

func TestFenceUsage(t *testing.T) {
	for _, args := range [][]string{{"fence"}, {"fence", "reboot"}, {"fence", "test"}, {"fence", "test", "--all", "h"}, {"fence", "test", "--all", "--parallel", "0"}} {
		if code, _, _ := runFenceCmd(t, args...); code != 2 {
			t.Errorf("iha %v → %d, want 2", args, code)
		}
	}
}

func TestFenceBadConfig(t *testing.T) {
	dir := fenceDir(t, "  compute-0:\n    agent: teleport\n")
	code, _, errOut := runFenceCmd(t, "fence", "test", "--all", "--dir", dir)
	if code != 1 || !strings.Contains(errOut, "configuration") {
		t.Fatalf("exit %d", code)
	}
}

// TestConfigAndFenceGoldenOutput renders `iha config check`, `iha fence
// test` and `iha fence status` in their output formats, on a configuration
// of noop hosts (no network; -c leaves out the latency, which varies).
func TestConfigAndFenceGoldenOutput(t *testing.T) {
	dir := fenceDir(t, "  compute-0.example.com:\n    agent: noop\n  compute-1:\n    agent: noop\n")
	withEnv(t, map[string]string{"OS_CLOUD": "lab"})
	cliEnvWith(t, nil)
	cases := []struct {
		name    string
		args    []string
		formats []string
	}{
		{"config-check", []string{"config", "check", "--dir", dir}, []string{outTable, outJSON, outYAML, outValue}},
		{"fence-test", []string{"fence", "test", "--all", "--dir", dir, "-c", "host,agent,address,result,power"}, []string{outTable, outWide, outValue}},
		{"fence-status", []string{"fence", "status", "compute-1", "--dir", dir, "-c", "host", "-c", "agent", "-c", "result", "-c", "power"}, []string{outTable, outValue}},
	}
	for _, c := range cases {
		for _, form := range c.formats {
			t.Run(c.name+"/"+form, func(t *testing.T) {
				code, out, errOut := runFenceCmd(t, append(append([]string(nil), c.args...), "-o", form)...)
				if code != exitOK {
					t.Fatalf("exit %d\n%s%s", code, out, errOut)
				}
				goldenCLI(t, c.name+"."+form, strings.ReplaceAll(out, dir, "DIR"))
			})
		}
	}
}
