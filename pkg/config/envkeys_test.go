package config

import (
	"strings"
	"testing"
)

// A container sets its per-pod keys through IHA_<KEY> over a config.yaml
// shared by every controller.
func TestEnvKeysOverrideTheFile(t *testing.T) {
	dir := fixture(t, map[string]string{"config.yaml": `config:
  NODE_NAME: from-file
  RAFT_ADDR: "10.0.0.1:7420"
  RAFT_PEERS: "iha-0=iha-0.iha:7420,iha-1=iha-1.iha:7420"
  DELTA: 40
`})
	cfg, p, _ := loadDir(t, dir, map[string]string{
		"IHA_NODE_NAME":     "iha-1",
		"IHA_RAFT_ADDR":     "iha-1.iha.openstack.svc:7420",
		"IHA_API_TOKEN":     "env-token-Xy7-0123456",
		"IHA_DELTA":         "", // empty: ignored, the file's value stays
		"IHA_TOKEN":         "cli-token",
		"IHA_NO_SUCH":       "x", // names no key: not read
		"IHA_POLL":          "60",
		"IHA_TAGGED_IMAGES": "false",
	})
	if p != nil {
		t.Fatalf("problems: %v", p)
	}
	s := cfg.Settings
	if s.NodeName != "iha-1" || s.RaftAddr != "iha-1.iha.openstack.svc:7420" {
		t.Errorf("NODE_NAME %q RAFT_ADDR %q: the environment did not win", s.NodeName, s.RaftAddr)
	}
	if s.APIToken.Reveal() != "env-token-Xy7-0123456" {
		t.Errorf("API_TOKEN not taken from IHA_API_TOKEN")
	}
	if s.Delta.Seconds() != 40 || s.Poll.Seconds() != 60 || s.TaggedImages {
		t.Errorf("DELTA %v POLL %v TAGGED_IMAGES %v, want 40s (file), 60s and false (environment)", s.Delta, s.Poll, s.TaggedImages)
	}
}

func TestEnvKeysWithoutConfigFile(t *testing.T) {
	dir := fixture(t, map[string]string{"config.yaml": "-"})
	cfg, p, _ := loadDir(t, dir, map[string]string{"IHA_NODE_NAME": "iha-2", "IHA_API_ADDR": "0.0.0.0:7421"})
	if p != nil {
		t.Fatalf("problems: %v", p)
	}
	if cfg.Settings.NodeName != "iha-2" || cfg.Settings.APIAddr != "0.0.0.0:7421" {
		t.Errorf("NODE_NAME %q API_ADDR %q", cfg.Settings.NodeName, cfg.Settings.APIAddr)
	}
}

// A bad value names the variable, is checked like the file's, and a secret
// is never shown; every problem is reported at once with the file's.
func TestEnvKeyProblemsNameTheVariable(t *testing.T) {
	dir := fixture(t, map[string]string{"config.yaml": "config:\n  POLL: 5\n"})
	_, p, logs := loadDir(t, dir, map[string]string{
		"IHA_RAFT_ADDR":      "no-port",
		"IHA_DELTA":          "9000",
		"IHA_NODE_NAME":      "bad name!",
		"IHA_API_TOKEN":      "tok-canary-Qm2-012345",
		"IHA_API_READ_TOKEN": "tok-canary-Qm2-012345",
	})
	if p == nil {
		t.Fatal("no problems")
	}
	text := p.Error()
	for _, want := range []string{"environment IHA_RAFT_ADDR: RAFT_ADDR", `environment IHA_DELTA: DELTA: "9000" is out of range`,
		"environment IHA_NODE_NAME: NODE_NAME", "config.yaml:2: POLL", "API_READ_TOKEN: must differ"} {
		if !strings.Contains(text, want) {
			t.Errorf("problems lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "tok-canary-Qm2-012345") || strings.Contains(logs, "tok-canary-Qm2-012345") {
		t.Error("a token from the environment leaked into problems or logs")
	}
}
