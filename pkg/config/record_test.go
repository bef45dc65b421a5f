package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/secret"
)

// TestSettingsRecordRoundTripsWithoutSecrets: the decision log's record of
// the configuration gives back the same settings (sub-second durations
// included), and never holds a token.
func TestSettingsRecordRoundTripsWithoutSecrets(t *testing.T) {
	const canary = "CanaryRecordToken-5e1a"
	s := Defaults()
	s.NodeName = "ctl-1"
	s.Poll = 200 * time.Millisecond
	s.Threshold = 25
	s.Shadow = true
	s.SkipServersWithName = []string{"scratch-*"}
	s.APIToken = secret.New(canary)
	s.APIReadToken = secret.New(canary + "-ro")
	s.Segments = Segments{Items: []Segment{{Name: "rack-a", RecoveryMethod: MethodAuto, Enabled: true, Hosts: []string{"c1", "c2"}, Source: "segments.yaml:2"}}}
	rec := s.Record()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), canary) || strings.Contains(string(b), "API_TOKEN") {
		t.Fatalf("the record holds a secret: %s", b)
	}
	var back SettingsRecord
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, err := back.Settings()
	if err != nil {
		t.Fatal(err)
	}
	want := s
	want.APIToken, want.APIReadToken = secret.Secret{}, secret.Secret{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip differs:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestSettingsRecordRefusesWhatThisBuildWouldNotRun(t *testing.T) {
	for name, keys := range map[string]string{
		"unknown key":   `{"NO_SUCH_KEY": 1}`,
		"wrong type":    `{"THRESHOLD": "half"}`,
		"bad duration":  `{"POLL": "soon"}`,
		"a secret item": `{"API_TOKEN": "x"}`,
	} {
		t.Run(name, func(t *testing.T) {
			var r SettingsRecord
			if err := json.Unmarshal([]byte(`{"keys": `+keys+`}`), &r); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Settings(); err == nil {
				t.Fatalf("record %s accepted", keys)
			}
		})
	}
}

// TestLoadSettingsDirReadsOnlyConfigYAML: `iha replay --config DIR` needs
// config.yaml alone (no credentials), and names the file of a problem.
func TestLoadSettingsDirReadsOnlyConfigYAML(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("config:\n  THRESHOLD: 20\n  SHADOW: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _, err := LoadSettingsDir(dir, MapEnv(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Threshold != 20 || !s.Shadow || s.Delta != Defaults().Delta {
		t.Fatalf("settings %+v", s)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("config:\n  THRESHOLD: 200\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = LoadSettingsDir(dir, MapEnv(nil), nil)
	if err == nil || !strings.Contains(err.Error(), "config.yaml") || !strings.Contains(err.Error(), "THRESHOLD") {
		t.Fatalf("THRESHOLD 200: %v", err)
	}
	if _, _, err := LoadSettingsDir(t.TempDir(), MapEnv(nil), nil); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing config.yaml: %v", err)
	}
}

func TestDecisionLogIsOffOrAnAbsoluteDirectory(t *testing.T) {
	cfg := mustLoad(t, fixture(t, map[string]string{"config.yaml": "config:\n  DECISION_LOG: /var/lib/iha/decisions\n"}), nil)
	if cfg.Settings.DecisionLog != "/var/lib/iha/decisions" {
		t.Fatalf("DECISION_LOG %q", cfg.Settings.DecisionLog)
	}
	p := mustFail(t, fixture(t, map[string]string{"config.yaml": "config:\n  DECISION_LOG: decisions\n"}), nil)
	if !strings.Contains(p.Error(), "DECISION_LOG") || !strings.Contains(p.Error(), "absolute") {
		t.Fatalf("relative DECISION_LOG: %v", p)
	}
}
