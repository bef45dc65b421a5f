package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The watchdog keys: L and the margin in range, CLUSTER_KEY a key file;
// every problem names the key and what is allowed, and a key never
// appears in one.
func TestWatchdogKeyProblems(t *testing.T) {
	const secret = "c2VjcmV0LWJ1dC10b28tc2hvcnQ=" // 20 bytes
	cases := []struct {
		name, yaml string
		files      map[string]string
		key, want  string
	}{
		{"a lease under a second", "config:\n  WATCHDOG_LEASE: 500ms\n", nil, "WATCHDOG_LEASE", "1s–10m0s"},
		{"a lease over ten minutes", "config:\n  WATCHDOG_LEASE: 11m\n", nil, "WATCHDOG_LEASE", "1s–10m0s"},
		{"a negative margin", "config:\n  WATCHDOG_MARGIN: -1s\n", nil, "WATCHDOG_MARGIN", "0s–5m0s"},
		{"a lease that is not a duration", "config:\n  WATCHDOG_LEASE: soon\n", nil, "WATCHDOG_LEASE", "a duration"},
		{"a cluster key that does not exist", "config:\n  CLUSTER_KEY: /nonexistent/cluster.key\n", nil, "CLUSTER_KEY", "/nonexistent/cluster.key"},
		{"a cluster key too short", "config:\n  CLUSTER_KEY: KEYFILE\n", map[string]string{"cluster.key": secret + "\n"}, "CLUSTER_KEY", "want 32"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			files := map[string]string{"config.yaml": c.yaml}
			for k, v := range c.files {
				files[k] = v
			}
			dir := fixture(t, files)
			if strings.Contains(c.yaml, "KEYFILE") {
				yaml := strings.ReplaceAll(c.yaml, "KEYFILE", filepath.Join(dir, "cluster.key"))
				if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(yaml), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, p, logs := loadDir(t, dir, nil)
			if p == nil {
				t.Fatal("no problem reported")
			}
			text := p.Error() + logs
			if !strings.Contains(text, c.key) || !strings.Contains(text, c.want) {
				t.Fatalf("want a problem with %s (%q), got:\n%s", c.key, c.want, text)
			}
			if strings.Contains(text, secret) {
				t.Fatalf("the key appears in the problem:\n%s", text)
			}
		})
	}
	cfg := mustLoad(t, fixture(t, map[string]string{"config.yaml": "config:\n  WATCHDOG_LEASE: 30s\n  WATCHDOG_MARGIN: 0\n"}), nil)
	if cfg.Settings.WatchdogLease != 30*time.Second || cfg.Settings.WatchdogMargin != 0 {
		t.Fatalf("settings %v %v", cfg.Settings.WatchdogLease, cfg.Settings.WatchdogMargin)
	}
}
