package config

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const (
	baseClouds = `clouds:
  overcloud:
    auth:
      auth_url: https://keystone.example.com:5000/v3
      username: admin
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: regionOne
    interface: internal
    identity_api_version: 3
  other:
    auth:
      auth_url: https://other.example.com:5000/v3
      username: admin
    region_name: regionTwo
`
	baseSecure = `clouds:
  overcloud:
    auth:
      password: secure-pass-1
`
	baseFencing = `FencingConfig:
  compute-0.example.com:
    agent: ipmi
    ipaddr: 127.0.0.1
    ipport: "6230"
    login: admin
    passwd: ipmi-pass-1
`
)

// testKeyring is a valid gossip keyring (one 32-byte key), testClusterKey
// a valid cluster key file.
const (
	testKeyring    = `["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]`
	testClusterKey = "Y2x1c3Rlci1rZXktb2YtdGhlLXRlc3RzLTAxMjM0NTY=\n"
)

// fixture writes the four files and the mesh's keys into a new directory;
// an entry of files replaces the base one, and a nil-like "-" removes it.
func fixture(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	all := map[string]string{
		"config.yaml":    "config: {}\n",
		"gossip.keyring": testKeyring,
		"cluster.key":    testClusterKey,
		"clouds.yaml":    baseClouds,
		"secure.yaml":    baseSecure,
		"fencing.yaml":   baseFencing,
	}
	for k, v := range files {
		all[k] = v
	}
	for name, content := range all {
		if content == "-" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// logBuffer is a concurrency-safe buffer for a slog handler.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// loadDir loads dir with env and returns the config, the problems (nil when
// none) and what was logged.
func loadDir(t *testing.T, dir string, env map[string]string) (*Config, *Problems, string) {
	t.Helper()
	var logs logBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg, err := LoadDir(dir, MapEnv(env), logger)
	t.Logf("log:\n%s", logs.String())
	if err != nil {
		var p *Problems
		if !errors.As(err, &p) {
			t.Fatalf("LoadDir error is %T, want *Problems: %v", err, err)
		}
		if cfg != nil {
			t.Fatalf("LoadDir returned a Config together with problems")
		}
		t.Logf("problems:\n%v", err)
		return nil, p, logs.String()
	}
	return cfg, nil, logs.String()
}

// mustLoad loads dir and fails the test on problems.
func mustLoad(t *testing.T, dir string, env map[string]string) *Config {
	t.Helper()
	cfg, p, _ := loadDir(t, dir, env)
	if p != nil {
		t.Fatalf("unexpected problems:\n%v", p)
	}
	return cfg
}

// mustFail loads dir and returns the problems, failing the test if none.
func mustFail(t *testing.T, dir string, env map[string]string) *Problems {
	t.Helper()
	_, p, _ := loadDir(t, dir, env)
	if p == nil {
		t.Fatalf("Load succeeded, want problems")
	}
	return p
}

func hasWarning(ws []string, sub ...string) bool {
	for _, w := range ws {
		ok := true
		for _, s := range sub {
			ok = ok && strings.Contains(w, s)
		}
		if ok {
			return true
		}
	}
	return false
}

func assertContainsAll(t *testing.T, text string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(text, s) {
			t.Errorf("missing %q in:\n%s", s, text)
		}
	}
}
