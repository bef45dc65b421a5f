package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/config"
)

const samples = "../../deploy/config"

// withEnv makes `iha config` see only env for the rest of the test.
func withEnv(t *testing.T, env map[string]string) {
	t.Helper()
	orig := configEnv
	t.Cleanup(func() { configEnv = orig })
	configEnv = func() config.Env { return config.MapEnv(env) }
}

func runIHA(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	t.Logf("iha %s → %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

// TestConfigCheckUsage: a mistake is exit 2 with a message on stderr that
// names the command and points at its help; asked for, help goes to
// stdout and exits 0.
func TestConfigCheckUsage(t *testing.T) {
	withEnv(t, nil)
	tests := []struct {
		args       []string
		code       int
		stderrHas  string
		helpStdout bool
	}{
		{[]string{"config"}, 2, "Usage:\n  iha config", false},
		{[]string{"config", "lint"}, 2, `iha config: unknown subcommand "lint"`, false},
		{[]string{"config", "check", "extra"}, 2, `iha config check: unexpected argument "extra"`, false},
		{[]string{"config", "check", "--bogus"}, 2, "iha config check: unknown flag: --bogus\nRun 'iha config check --help' for usage.", false},
		{[]string{"config", "check", "-o", "toml"}, 2, `-o "toml": want one of table, json, yaml, value`, false},
		{[]string{"config", "check", "--help"}, 0, "", true},
		{[]string{"config", "--help"}, 0, "", true},
		{[]string{"config", "help"}, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runIHA(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if tt.helpStdout {
				if stderr != "" || !strings.Contains(stdout, "Usage:\n  iha config") || !strings.Contains(stdout, "Examples:") {
					t.Errorf("asked-for help must go to stdout, with examples")
				}
				return
			}
			if stdout != "" || !strings.Contains(stderr, tt.stderrHas) {
				t.Errorf("a usage error goes to stderr and says %q", tt.stderrHas)
			}
		})
	}
}

func TestConfigCheckSamplesPass(t *testing.T) {
	withEnv(t, nil)
	code, stdout, _ := runIHA(t, "config", "check", "--dir", podSamples(t))
	if code != 0 {
		t.Fatalf("exit %d, want 0: the samples in deploy/config must be valid", code)
	}
	for _, want := range []string{
		"configuration OK",
		"cloud: overcloud auth https://keystone.example.com:5000/v3 region regionOne interface internal",
		"kdump UDP port: 7410",
		"settings: all defaults",
		"fencing: 5 host(s)",
		"bmh:     compute-3.example.com",
		"ipmi:    compute-0.example.com",
		"noop:    compute-4.example.com",
		"redfish: compute-1.example.com, compute-2.example.com",
		"agent noop never powers the host off",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	if strings.Contains(stdout, "change-me") || strings.Contains(stdout, "admin:admin") {
		t.Error("summary prints a secret")
	}
}

func TestConfigSampleListsEveryKeyWithItsDefault(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(samples, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range config.KeyNames() {
		if !regexp.MustCompile(`(?m)^  (# )?` + k + `:`).Match(data) {
			t.Errorf("deploy/config/config.yaml does not show %s", k)
		}
	}
	// "settings: all defaults" in TestConfigCheckSamplesPass checks the values.
}

func TestConfigCheckOtherCloudFromEnvironment(t *testing.T) {
	withEnv(t, map[string]string{"OS_CLOUD": "lab", "UDP_PORT": "7500"})
	code, stdout, _ := runIHA(t, "config", "check", "--dir", podSamples(t))
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"cloud: lab (noauth) compute http://127.0.0.1:8774/v2.1 image http://127.0.0.1:9292 region RegionOne", "kdump UDP port: 7500"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	if strings.Contains(stdout, "admin:admin") {
		t.Error("summary prints the noauth token")
	}
}

func TestConfigCheckNonDefaultSettings(t *testing.T) {
	dir := copySamples(t)
	writeFile(t, filepath.Join(dir, "config.yaml"), "config:\n  DELTA: 60\n  DETECTION_MODE: nova\n  FROBNICATE: 1\n")
	withEnv(t, nil)
	code, stdout, _ := runIHA(t, "config", "check", "--dir", dir)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"DELTA = 60 (default 30)", "DETECTION_MODE = nova (default both)", "FROBNICATE: unknown key"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
}

func TestConfigCheckSummarisesSegments(t *testing.T) {
	dir := copySamples(t)
	withEnv(t, nil)
	code, stdout, _ := runIHA(t, "config", "check", "--dir", dir)
	if code != 0 || !strings.Contains(stdout, "segments: none in the file") {
		t.Fatalf("without segments.yaml: exit %d, summary:\n%s", code, stdout)
	}
	writeFile(t, filepath.Join(dir, "segments.yaml"), `segments:
  rack-a:
    recovery_method: reserved_host
    hosts: [compute-0, compute-1, spare-0]
    reserved_hosts: [spare-0]
    recovered_host_maintenance: true
  rack-b:
    recovery_method: auto
    enabled: false
    hosts: [compute-2]
`)
	code, stdout, _ = runIHA(t, "config", "check", "--dir", dir)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
	for _, want := range []string{
		"  segments " + filepath.Join(dir, "segments.yaml"),
		"segments: 2 in the file",
		"rack-a: reserved_host, enabled; 3 host(s): compute-0, compute-1, spare-0; reserved: spare-0; recovered_host_maintenance true",
		"rack-b: auto, DISABLED",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = runIHA(t, "config", "check", "--dir", dir, "--json")
	var res struct {
		Segments []struct {
			Name          string   `json:"name"`
			Enabled       bool     `json:"enabled"`
			ReservedHosts []string `json:"reserved_hosts"`
		} `json:"segments"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); code != 0 || err != nil {
		t.Fatalf("--json: exit %d, %v", code, err)
	}
	if len(res.Segments) != 2 || res.Segments[0].Name != "rack-a" || !res.Segments[0].Enabled || len(res.Segments[0].ReservedHosts) != 1 || res.Segments[1].Enabled {
		t.Errorf("--json segments: %+v", res.Segments)
	}
}

func TestConfigCheckReportsEveryProblem(t *testing.T) {
	dir := copySamples(t)
	writeFile(t, filepath.Join(dir, "config.yaml"), "config:\n  DELTA: 5\n  LOGLEVEL: LOUD\n")
	writeFile(t, filepath.Join(dir, "fencing.yaml"), "FencingConfig:\n  c0: {agent: ipmi, ipaddr: 127.0.0.1, ipport: 99999, login: a, passwd: planted-secret-42}\n")
	withEnv(t, nil)
	code, stdout, _ := runIHA(t, "config", "check", "--dir", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"configuration has 3 problem(s):",
		"config.yaml:2: DELTA: 5 is out of range (allowed 10–300 seconds)",
		`config.yaml:3: LOGLEVEL: "LOUD" is not one of the allowed values`,
		"fencing.yaml:2: c0: ipport: 99999 is out of range (allowed 1–65535)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	code, stdout, _ = runIHA(t, "config", "check", "--dir", dir, "--json")
	if code != 1 {
		t.Fatalf("--json: exit %d, want 1", code)
	}
	var res struct {
		OK       bool
		Problems []struct{ File, Key, Reason, Text string }
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("--json output is not JSON: %v", err)
	}
	if res.OK || len(res.Problems) != 3 || res.Problems[0].Key != "DELTA" || res.Problems[0].Reason != "is out of range" {
		t.Errorf("JSON result = %+v", res)
	}
	if strings.Contains(stdout, "planted-secret-42") {
		t.Error("JSON prints a secret")
	}
}

func TestConfigCheckJSONSummary(t *testing.T) {
	withEnv(t, nil)
	code, stdout, _ := runIHA(t, "config", "check", "--dir", podSamples(t), "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var res struct {
		OK      bool
		Cloud   struct{ Name, AuthURL, RegionName string } `json:"cloud"`
		UDPPort int                                        `json:"udp_port"`
		Fencing map[string][]string
		Warning []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.UDPPort != 7410 || len(res.Fencing["redfish"]) != 2 || len(res.Warning) == 0 {
		t.Errorf("JSON = %+v", res)
	}
	if strings.Contains(stdout, "change-me") {
		t.Error("JSON prints a secret")
	}
}

func TestConfigCheckMissingDir(t *testing.T) {
	withEnv(t, nil)
	code, stdout, _ := runIHA(t, "config", "check", "--dir", filepath.Join(t.TempDir(), "nothing"))
	if code != 1 || !strings.Contains(stdout, "clouds.yaml: does not exist") || !strings.Contains(stdout, "fencing.yaml: does not exist") {
		t.Errorf("exit %d", code)
	}
}

// copySamples is podSamples: a copy of the samples as they run.
func copySamples(t *testing.T) string { return podSamples(t) }

// writeMeshKeys puts the mesh's keys beside config.yaml in dir, where the
// defaults look: the packages ship none (docs/operations.md, The mesh's
// keys); an operator makes them once.
func writeMeshKeys(t *testing.T, dir string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "gossip.keyring"), `["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]`)
	writeFile(t, filepath.Join(dir, "cluster.key"), "Y2x1c3Rlci1rZXktb2YtdGhlLXRlc3RzLTAxMjM0NTY=\n")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// podSamples copies deploy/config and gives the bmh entry the CA file a
// pod would have (the service account's), so that the samples are checked
// as they run: inside the control plane's pod.
func podSamples(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeMeshKeys(t, dir)
	for _, f := range []string{"config.yaml", "clouds.yaml", "secure.yaml", "fencing.yaml"} {
		data, err := os.ReadFile(filepath.Join(samples, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "fencing.yaml" {
			ca := filepath.Join(dir, "ca.crt")
			writeTestCA(t, ca)
			old := "    # ca_file: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
			if !bytes.Contains(data, []byte(old)) {
				t.Fatalf("fencing.yaml sample no longer has %q", old)
			}
			data = bytes.Replace(data, []byte(old), []byte("    ca_file: "+ca), 1)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeTestCA(t *testing.T, path string) { testkit.WriteCA(t, path, "test kubernetes CA") }

// TestConfigCheckRefusesWhatTheLeaderWould: outside a pod, the sample's
// bmh entry has no service account CA; iha-leader would refuse to start, so
// the check fails too, naming the file, the host, the driver and the key.
func TestConfigCheckRefusesWhatTheLeaderWould(t *testing.T) {
	withEnv(t, nil)
	if _, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"); err == nil {
		t.Fatal("this test expects to run outside a Kubernetes pod")
	}
	dir := t.TempDir()
	for _, f := range []string{"config.yaml", "clouds.yaml", "secure.yaml", "fencing.yaml"} {
		data, err := os.ReadFile(filepath.Join(samples, f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, f), string(data))
	}
	writeMeshKeys(t, dir)
	code, stdout, _ := runIHA(t, "config", "check", "--dir", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, stdout)
	}
	for _, want := range []string{"fencing.yaml: iha-leader would refuse to start", "compute-3.example.com via bmh", "ca_file"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "change-me") {
		t.Error("a token reached the output")
	}
}
