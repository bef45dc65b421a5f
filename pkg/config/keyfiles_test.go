package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMeshNeedsItsKeyringUnlessInsecure: the mesh is encrypted by default;
// its keyring defaults to gossip.keyring beside config.yaml; only
// GOSSIP_INSECURE (a warning) or GOSSIP_BIND off runs without one.
func TestMeshNeedsItsKeyringUnlessInsecure(t *testing.T) {
	// (The cluster key is there, beside config.yaml: fixture's default.)
	for _, tc := range []struct {
		name, config, keyring string
		problem               string // "" → loads
		warning               string
		encrypted             bool
	}{
		{name: "default keyring beside config.yaml", config: "config: {}\n", keyring: testKeyring, encrypted: true},
		{name: "default keyring missing", config: "config: {}\n", keyring: "-",
			problem: `GOSSIP_KEYRING: "DIR/gossip.keyring" does not exist (the default: gossip.keyring beside config.yaml): the mesh is encrypted by default`},
		{name: "named keyring missing", config: "config:\n  GOSSIP_KEYRING: /nonexistent/k\n", keyring: testKeyring,
			problem: `config.yaml:2: GOSSIP_KEYRING: "/nonexistent/k" does not exist: the mesh is encrypted by default`},
		{name: "keyring emptied", config: "config:\n  GOSSIP_KEYRING:\n", keyring: testKeyring,
			problem: `config.yaml:2: GOSSIP_KEYRING: is empty: the mesh is encrypted by default`},
		{name: "insecure without keyring", config: "config:\n  GOSSIP_INSECURE: true\n", keyring: "-", warning: "the gossip mesh is NOT encrypted"},
		{name: "insecure with a keyring stays encrypted", config: "config:\n  GOSSIP_INSECURE: true\n", keyring: testKeyring, encrypted: true},
		{name: "insecure does not excuse a named missing keyring", config: "config:\n  GOSSIP_INSECURE: true\n  GOSSIP_KEYRING: /nonexistent/k\n", keyring: "-",
			problem: `GOSSIP_KEYRING: "/nonexistent/k" does not exist`},
		{name: "no mesh, no keyring", config: "config:\n  GOSSIP_BIND: \"off\"\n  DETECTION_MODE: nova\n", keyring: "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := fixture(t, map[string]string{"config.yaml": tc.config, "gossip.keyring": tc.keyring})
			cfg, probs, _ := loadDir(t, dir, nil)
			if tc.problem != "" {
				want := strings.ReplaceAll(tc.problem, "DIR", dir)
				if probs == nil || !strings.Contains(probs.Error(), want) {
					t.Fatalf("problems %v, want one containing %q", probs, want)
				}
				return
			}
			if probs != nil {
				t.Fatalf("unexpected problems:\n%v", probs)
			}
			if got := cfg.Settings.GossipKeyring != ""; got != tc.encrypted {
				t.Errorf("GOSSIP_KEYRING = %q, want encrypted %v", cfg.Settings.GossipKeyring, tc.encrypted)
			}
			if tc.encrypted && cfg.Settings.GossipKeyring != filepath.Join(dir, DefaultKeyringName) {
				t.Errorf("GOSSIP_KEYRING = %q, want the default beside config.yaml", cfg.Settings.GossipKeyring)
			}
			if tc.warning != "" && !hasWarning(cfg.Warnings, tc.warning) {
				t.Errorf("warnings %q lack %q", cfg.Warnings, tc.warning)
			}
			if cfg.Settings.GossipLabel != DefaultGossipLabel {
				t.Errorf("GOSSIP_LABEL = %q, want %q by default", cfg.Settings.GossipLabel, DefaultGossipLabel)
			}
			// The defaults beside config.yaml are defaults: not listed as changes.
			for _, ch := range cfg.Settings.Changes() {
				if ch.Key == "GOSSIP_KEYRING" && tc.encrypted {
					t.Errorf("the default keyring is listed as a change: %+v", ch)
				}
			}
		})
	}
}

// TestMeshNeedsTheClusterKeyUnlessInsecure: CLUSTER_KEY defaults to
// cluster.key beside config.yaml and is required with the mesh on, unless
// GOSSIP_INSECURE; a file that is not a key is named with why.
func TestMeshNeedsTheClusterKeyUnlessInsecure(t *testing.T) {
	for _, tc := range []struct {
		name, config, key string
		problem, warning  string
		want              string // "DIR" → the default path, "" → none
	}{
		{name: "default beside config.yaml", config: "config: {}\n", key: testClusterKey, want: "DIR"},
		{name: "default missing", config: "config: {}\n", key: "-",
			problem: `CLUSTER_KEY: "DIR/cluster.key" does not exist (the default: cluster.key beside config.yaml): the controllers check which host each mesh member speaks for`},
		{name: "not a key", config: "config: {}\n", key: "hello\n", problem: `CLUSTER_KEY: "DIR/cluster.key" is not a key file: DIR/cluster.key: not base64`},
		{name: "insecure without", config: "config:\n  GOSSIP_INSECURE: true\n", key: "-", warning: "no CLUSTER_KEY"},
		{name: "no mesh, no key", config: "config:\n  GOSSIP_BIND: \"off\"\n  DETECTION_MODE: nova\n", key: "-"},
		{name: "no mesh, the key is used", config: "config:\n  GOSSIP_BIND: \"off\"\n  DETECTION_MODE: nova\n", key: testClusterKey, want: "DIR"},
		{name: "named and missing, even without the mesh", config: "config:\n  GOSSIP_BIND: \"off\"\n  DETECTION_MODE: nova\n  CLUSTER_KEY: /nonexistent/k\n", key: "-",
			problem: `config.yaml:4: CLUSTER_KEY: "/nonexistent/k" does not exist`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := fixture(t, map[string]string{"config.yaml": tc.config, "cluster.key": tc.key})
			cfg, probs, _ := loadDir(t, dir, nil)
			if tc.problem != "" {
				want := strings.ReplaceAll(tc.problem, "DIR", dir)
				if probs == nil || !strings.Contains(probs.Error(), want) {
					t.Fatalf("problems %v, want one containing %q", probs, want)
				}
				return
			}
			if probs != nil {
				t.Fatalf("unexpected problems:\n%v", probs)
			}
			if want := strings.ReplaceAll(tc.want, "DIR", filepath.Join(dir, DefaultClusterKeyName)); cfg.Settings.ClusterKey != want {
				t.Errorf("CLUSTER_KEY = %q, want %q", cfg.Settings.ClusterKey, want)
			}
			if tc.warning != "" && !hasWarning(cfg.Warnings, tc.warning) {
				t.Errorf("warnings %q lack %q", cfg.Warnings, tc.warning)
			}
		})
	}
}

// TestFilesHoldingSecretsMustNotBeReadableByOthers: a secret file any user
// may read is a warning naming the file, its mode and what it holds.
func TestFilesHoldingSecretsMustNotBeReadableByOthers(t *testing.T) {
	dir := fixture(t, map[string]string{"config.yaml": "config:\n  API_TOKEN: a-long-enough-write-token\n"})
	for _, f := range []string{"secure.yaml", "gossip.keyring", "config.yaml"} {
		if err := os.Chmod(filepath.Join(dir, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "fencing.yaml"), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg := mustLoad(t, dir, nil)
	for _, w := range []string{"secure.yaml: mode 0644: every user of this host can read it, and it holds the cloud's password",
		"gossip.keyring: mode 0644", "the gossip keyring", "config.yaml: mode 0644", "API_TOKEN or API_READ_TOKEN"} {
		if !hasWarning(cfg.Warnings, w) {
			t.Errorf("warnings %q lack %q", cfg.Warnings, w)
		}
	}
	if hasWarning(cfg.Warnings, "fencing.yaml: mode") || hasWarning(cfg.Warnings, "a-long-enough-write-token") {
		t.Errorf("warnings %q: fencing.yaml is 0640, and no warning shows a secret", cfg.Warnings)
	}
}

// TestPlainHTTPKeystoneWarns: an auth_url over plain HTTP beyond this host
// is a warning (loopback is not: it never crosses the network).
func TestPlainHTTPKeystoneWarns(t *testing.T) {
	for url, warns := range map[string]bool{"http://keystone.example.com:5000/v3": true, "http://127.0.0.1:5000/v3": false, "https://keystone.example.com:5000/v3": false} {
		cfg := mustLoad(t, fixture(t, map[string]string{"clouds.yaml": strings.Replace(baseClouds, "https://keystone.example.com:5000/v3", url, 1)}), nil)
		if got := hasWarning(cfg.Warnings, "is plain HTTP: the credentials and tokens cross the network in clear"); got != warns {
			t.Errorf("%s: warned %v, want %v (%q)", url, got, warns, cfg.Warnings)
		}
	}
}
