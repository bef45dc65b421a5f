package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The defaults of docs/rules.md §2.3 and of IHA's keys,
// written independently of Defaults() so that a mistake in either shows.
func TestEveryKeyHasItsDocumentedDefault(t *testing.T) {
	want := map[string]string{
		"EVACUABLE_TAG": "evacuable", "DELTA": "30", "POLL": "45", "THRESHOLD": "50", "WORKERS": "4",
		"DELAY": "0", "LOGLEVEL": "INFO", "SMART_EVACUATION": "false", "ORCHESTRATED_RESTART": "false",
		"RESERVED_HOSTS": "false", "FORCE_RESERVED_HOST_EVACUATION": "false", "TAGGED_IMAGES": "true",
		"TAGGED_FLAVORS": "true", "TAGGED_AGGREGATES": "true", "LEAVE_DISABLED": "false",
		"FORCE_ENABLE": "false", "CHECK_KDUMP": "false", "KDUMP_TIMEOUT": "30", "CHECK_HEARTBEAT": "false",
		"HEARTBEAT_TIMEOUT": "120", "HEARTBEAT_CLIFF_THRESHOLD": "50", "HEARTBEAT_CLIFF_MAX_CYCLES": "3",
		"DISABLED": "false", "SSL_VERIFY": "true", "SSL_CA_BUNDLE": "", "SSL_CERT_PATH": "", "SSL_KEY_PATH": "",
		"FENCING_TIMEOUT": "30", "HASH_INTERVAL": "60", "METRICS_LOG_INTERVAL": "3600",
		"SKIP_SERVERS_WITH_NAME": "", "EVACUATION_MAX_THREADS": "32", "EVACUATION_RETRIES": "5",
		"EVACUATION_STAGGER": "0", "EVACUATION_TIMEOUT": "300", "MAX_HOSTS_PER_CYCLE": "10",
		"K8S_API_CHECK_INTERVAL": "15", "WATCHDOG_TIMEOUT": "",
		"NODE_NAME": "", "RAFT_ADDR": "127.0.0.1:7420", "RAFT_PEERS": "", "DATA_DIR": "/var/lib/iha",
		"API_ADDR": "127.0.0.1:7421", "DETECTION_MODE": "both", "QUICK_EVACUATE_LEVEL": "2",
		"NOVA_REPORT_INTERVAL": "10", "NOVA_API_TIMEOUT": "30", "EVACUATION_GRACE": "60",
		"API_TOKEN": "", "API_READ_TOKEN": "", "API_TLS_CERT": "", "API_TLS_KEY": "",
		"API_READ_TIMEOUT": "30", "API_IDLE_TIMEOUT": "120", "API_MAX_CONNECTIONS": "1024", "API_MAX_STREAMS": "64",
		"RAFT_JOIN": "", "RAFT_TLS_CERT": "", "RAFT_TLS_KEY": "", "RAFT_TLS_CA": "",
		"GOSSIP_BIND": "0.0.0.0:7946", "GOSSIP_ADVERTISE": "", "GOSSIP_JOIN": "", "GOSSIP_KEYRING": "",
		"GOSSIP_LABEL": "iha", "GOSSIP_INSECURE": "false", "CLUSTER_KEY": "", "GOSSIP_PROFILE": "fast", "GOSSIP_PROBE_INTERVAL": "", "GOSSIP_PROBE_TIMEOUT": "",
		"GOSSIP_SUSPICION_MULT": "0", "GOSSIP_GOSSIP_INTERVAL": "", "MESH_PARTITION_PERCENT": "30",
		"MESH_PARTITION_WINDOW": "60", "KDUMP_LISTEN": ":7410", "HEARTBEAT_LISTEN": ":7411",
		"HA_ENABLED_INSTANCE_KEY": "HA_Enabled", "EVACUATE_ALL_INSTANCES": "true", "IGNORE_INSTANCES_IN_ERROR_STATE": "false",
		"ADD_RESERVED_HOST_TO_AGGREGATE": "false", "RECOVERED_HOST_MAINTENANCE": "false",
		"SHADOW": "false", "DECISION_LOG": "off", "DECISION_LOG_MAX_MB": "16", "DECISION_LOG_FILES": "8",
		"WATCHDOG_LEASE": "15s", "WATCHDOG_MARGIN": "5s",
	}
	for _, content := range []string{"config: {}\n", "-", "", "config:\n"} {
		name := content
		if name == "-" {
			name = "missing file"
		}
		t.Run(name, func(t *testing.T) {
			dir := fixture(t, map[string]string{"config.yaml": content})
			cfg := mustLoad(t, dir, nil)
			if len(keyTable) != len(want) {
				t.Errorf("key table has %d keys, test knows %d", len(keyTable), len(want))
			}
			for i := range keyTable {
				k := &keyTable[i]
				w, ok := want[k.Name]
				if !ok {
					t.Errorf("%s: no documented default in this test", k.Name)
					continue
				}
				switch k.Name {
				case "NODE_NAME":
					h, _ := os.Hostname()
					w = ShortName(h)
				case "GOSSIP_KEYRING": // beside config.yaml
					w = filepath.Join(dir, DefaultKeyringName)
				case "CLUSTER_KEY":
					w = filepath.Join(dir, DefaultClusterKeyName)
				}
				if got := k.render(&cfg.Settings); got != w {
					t.Errorf("%s = %q, want %q", k.Name, got, w)
				}
			}
			if cfg.UDPPort != 7410 {
				t.Errorf("UDPPort = %d, want 7410", cfg.UDPPort)
			}
		})
	}
}

func TestMissingConfigFileWarnsAndUsesDefaults(t *testing.T) {
	cfg := mustLoad(t, fixture(t, map[string]string{"config.yaml": "-"}), nil)
	if !hasWarning(cfg.Warnings, "config.yaml", "does not exist") {
		t.Errorf("no warning about the missing file: %q", cfg.Warnings)
	}
}

// One row per class of value; want is the parsed value rendered, or the
// problem text expected.
func TestConfigValues(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string // the line(s) under config:
		key     string
		want    string // rendered value when the load succeeds
		problem string // expected problem text when it fails
	}{
		{"int as YAML int", "DELTA: 60", "DELTA", "60", ""},
		{"int as numeric string", `DELTA: "60"`, "DELTA", "60", ""},
		{"int at the lower bound", "DELTA: 10\n  NOVA_REPORT_INTERVAL: 4", "DELTA", "10", ""}, // 10 ≥ 2×4+2: no warning
		{"int at the upper bound", "DELTA: 300", "DELTA", "300", ""},
		{"int below range", "DELTA: 5", "", "", "config.yaml:2: DELTA: 5 is out of range (allowed 10–300 seconds)"},
		{"int above range as string", `POLL: "601"`, "", "", `POLL: "601" is out of range (allowed 15–600 seconds)`},
		{"int wrong type", "THRESHOLD: fifty", "", "", `THRESHOLD: "fifty" is not an integer (allowed 0–100 percent)`},
		{"int as float", "WORKERS: 4.5", "", "", `WORKERS: 4.5 is not an integer`},
		{"int as list", "WORKERS: [4]", "", "", `WORKERS: a list is not an integer`},
		{"int without value", "WORKERS:", "", "", `WORKERS: has no value (allowed 1–100)`},
		{"bool YAML true", "SMART_EVACUATION: true", "SMART_EVACUATION", "true", ""},
		{"bool string yes", `SMART_EVACUATION: "yes"`, "SMART_EVACUATION", "true", ""},
		{"bool string Enabled", "SMART_EVACUATION: Enabled", "SMART_EVACUATION", "true", ""},
		{"bool string 1", `SMART_EVACUATION: "1"`, "SMART_EVACUATION", "true", ""},
		{"bool string off", "TAGGED_IMAGES: off", "TAGGED_IMAGES", "false", ""},
		{"bool string FALSE", `TAGGED_IMAGES: "FALSE"`, "TAGGED_IMAGES", "false", ""},
		{"bool string disabled", "TAGGED_IMAGES: disabled", "TAGGED_IMAGES", "false", ""},
		{"bool bad string", "CHECK_KDUMP: maybe", "", "", `CHECK_KDUMP: "maybe" is not a boolean`},
		{"bool YAML int is ambiguous", "CHECK_KDUMP: 1", "", "", `CHECK_KDUMP: 1 is not a boolean`},
		{"enum lower-case accepted", "LOGLEVEL: debug", "LOGLEVEL", "DEBUG", ""},
		{"enum bad", "LOGLEVEL: VERBOSE", "", "", `LOGLEVEL: "VERBOSE" is not one of the allowed values (allowed DEBUG, INFO, WARNING, ERROR, CRITICAL)`},
		{"detection mode upper-case", "DETECTION_MODE: Gossip", "DETECTION_MODE", "gossip", ""},
		{"detection mode bad", "DETECTION_MODE: ping", "", "", `DETECTION_MODE: "ping" is not one of the allowed values (allowed nova, gossip, both)`},
		{"list YAML", `SKIP_SERVERS_WITH_NAME: ["test-*", "tmp-?"]`, "SKIP_SERVERS_WITH_NAME", "test-*,tmp-?", ""},
		{"list comma string", `SKIP_SERVERS_WITH_NAME: "test-*, tmp-? ,"`, "SKIP_SERVERS_WITH_NAME", "test-*,tmp-?", ""},
		{"list of maps", "SKIP_SERVERS_WITH_NAME: [{a: b}]", "", "", `SKIP_SERVERS_WITH_NAME: a list is not a list of strings`},
		{"string", "EVACUABLE_TAG: ha", "EVACUABLE_TAG", "ha", ""},
		{"string empty", `EVACUABLE_TAG: ""`, "", "", `EVACUABLE_TAG: "" must not be empty`},
		{"string as map", "EVACUABLE_TAG: {a: b}", "", "", `EVACUABLE_TAG: a map must be a single value`},
		{"watchdog accepted and ignored", "WATCHDOG_TIMEOUT: 30", "DELTA", "30", ""},
		{"IHA level", "QUICK_EVACUATE_LEVEL: 3", "QUICK_EVACUATE_LEVEL", "3", ""},
		{"IHA level out of range", "QUICK_EVACUATE_LEVEL: 4", "", "", "QUICK_EVACUATE_LEVEL: 4 is out of range (allowed 1–3)"},
		{"IHA grace zero", "EVACUATION_GRACE: 0", "EVACUATION_GRACE", "0", ""},
		{"IHA report interval out of range", "NOVA_REPORT_INTERVAL: 0", "", "", "NOVA_REPORT_INTERVAL: 0 is out of range (allowed 1–300 seconds)"},
		{"IHA api timeout out of range", "NOVA_API_TIMEOUT: 301", "", "", "NOVA_API_TIMEOUT: 301 is out of range (allowed 1–300 seconds)"},
		{"raft addr", "RAFT_ADDR: 127.0.0.2:7420", "RAFT_ADDR", "127.0.0.2:7420", ""},
		{"gossip bind off", "GOSSIP_BIND: OFF\n  DETECTION_MODE: nova", "GOSSIP_BIND", "off", ""},
		{"gossip bind every address", `GOSSIP_BIND: ":7946"`, "GOSSIP_BIND", ":7946", ""},
		{"gossip bind without port", "GOSSIP_BIND: 127.0.0.1", "", "", `GOSSIP_BIND: "127.0.0.1" is not host:port (allowed host:port (empty host: every address), or off)`},
		{"gossip advertise needs a host", `GOSSIP_ADVERTISE: "0.0.0.0:7946"`, "", "", `GOSSIP_ADVERTISE: "0.0.0.0:7946" needs a host other peers can reach, not 0.0.0.0`},
		{"gossip join list", "GOSSIP_JOIN: [127.0.0.1:7946, 127.0.0.2:7946]", "GOSSIP_JOIN", "127.0.0.1:7946,127.0.0.2:7946", ""},
		{"gossip join bad entry", "GOSSIP_JOIN: [127.0.0.1:7946, controller-2]", "", "", `GOSSIP_JOIN: "controller-2" is not host:port (allowed host:port of a member)`},
		{"gossip duration go syntax", "GOSSIP_PROBE_INTERVAL: 500ms", "GOSSIP_PROBE_INTERVAL", "500ms", ""},
		{"gossip duration seconds", "GOSSIP_PROBE_INTERVAL: 2", "GOSSIP_PROBE_INTERVAL", "2s", ""},
		{"gossip duration fraction", `GOSSIP_GOSSIP_INTERVAL: "0.05"`, "GOSSIP_GOSSIP_INTERVAL", "50ms", ""},
		{"gossip duration out of range", "GOSSIP_PROBE_INTERVAL: 10ms", "", "", `GOSSIP_PROBE_INTERVAL: "10ms" is out of range (allowed a duration (500ms) or seconds (0.5), 100ms–1m0s)`},
		{"gossip duration garbage", "GOSSIP_PROBE_INTERVAL: soon", "", "", `GOSSIP_PROBE_INTERVAL: "soon" is not a duration`},
		{"gossip timeout not below interval", "GOSSIP_PROBE_TIMEOUT: 500ms", "", "", `GOSSIP_PROBE_TIMEOUT: 500ms must be shorter than GOSSIP_PROBE_INTERVAL (500ms)`},
		{"gossip timeout checked against the lan profile", "GOSSIP_PROFILE: lan\n  GOSSIP_PROBE_TIMEOUT: 1s", "", "", `GOSSIP_PROBE_TIMEOUT: 1s must be shorter than GOSSIP_PROBE_INTERVAL (1s)`},
		{"gossip profile lan", "GOSSIP_PROFILE: LAN", "GOSSIP_PROFILE", "lan", ""},
		{"gossip profile default is a name of the default", "GOSSIP_PROFILE: default", "GOSSIP_PROFILE", "default", ""},
		{"gossip timeout checked against the fast profile", "GOSSIP_PROFILE: fast\n  GOSSIP_PROBE_TIMEOUT: 600ms", "", "", `GOSSIP_PROBE_TIMEOUT: 600ms must be shorter than GOSSIP_PROBE_INTERVAL (500ms)`},
		{"gossip profile bad", "GOSSIP_PROFILE: wan", "", "", `GOSSIP_PROFILE: "wan" is not one of the allowed values (allowed fast, lan, default)`},
		{"gossip suspicion mult out of range", "GOSSIP_SUSPICION_MULT: 1", "", "", `GOSSIP_SUSPICION_MULT: 1 is out of range (allowed 2–20)`},
		{"gossip mode needs the mesh", "GOSSIP_BIND: \"off\"\n  DETECTION_MODE: gossip", "", "", `DETECTION_MODE: gossip needs the mesh, but GOSSIP_BIND is off`},
		{"partition percent", "MESH_PARTITION_PERCENT: 50", "MESH_PARTITION_PERCENT", "50", ""},
		{"partition window out of range", "MESH_PARTITION_WINDOW: 1", "", "", `MESH_PARTITION_WINDOW: 1 is out of range (allowed 5–600 seconds)`},
		{"kdump listen", `KDUMP_LISTEN: "127.0.0.1:17410"`, "KDUMP_LISTEN", "127.0.0.1:17410", ""},
		{"kdump listen off", "KDUMP_LISTEN: off", "KDUMP_LISTEN", "off", ""},
		{"raft addr ipv6", `RAFT_ADDR: "[::1]:7420"`, "RAFT_ADDR", "[::1]:7420", ""},
		{"raft addr without port", "RAFT_ADDR: 127.0.0.1", "", "", `RAFT_ADDR: "127.0.0.1" is not host:port`},
		{"raft addr port out of range", "RAFT_ADDR: 127.0.0.1:70000", "", "", `RAFT_ADDR: "127.0.0.1:70000" has a port out of range`},
		{"raft addr unspecified", "RAFT_ADDR: 0.0.0.0:7420", "", "", `RAFT_ADDR: "0.0.0.0:7420" needs a host other peers can reach`},
		{"api addr on IPv6 loopback", `API_ADDR: "[::1]:7421"`, "API_ADDR", "[::1]:7421", ""},
		{"raft peers list", "NODE_NAME: a\n  RAFT_PEERS: [a=127.0.0.1:7420, b=127.0.0.2:7420]", "RAFT_PEERS", "a=127.0.0.1:7420,b=127.0.0.2:7420", ""},
		{"raft peers string", `NODE_NAME: b
  RAFT_PEERS: "a=127.0.0.1:7420,b=127.0.0.2:7420"`, "RAFT_PEERS", "a=127.0.0.1:7420,b=127.0.0.2:7420", ""},
		{"raft peers without id", "RAFT_PEERS: [127.0.0.1:7420]", "", "", `RAFT_PEERS: "127.0.0.1:7420" is not id=host:port`},
		{"raft peers duplicate id", "RAFT_PEERS: [a=127.0.0.1:7420, a=127.0.0.2:7420]", "", "", `RAFT_PEERS: "a=127.0.0.2:7420" repeats the id "a"`},
		{"node name", "NODE_NAME: ctl-1", "NODE_NAME", "ctl-1", ""},
		{"node name with space", `NODE_NAME: "ctl 1"`, "", "", `NODE_NAME: "ctl 1" is not a valid node name`},
		{"duplicate key", "DELTA: 30\n  DELTA: 40", "", "", "config.yaml:3: DELTA: is set twice (first at line 2)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fixture(t, map[string]string{"config.yaml": "config:\n  " + tt.yaml + "\n"})
			cfg, p, _ := loadDir(t, dir, nil)
			if tt.problem != "" {
				if p == nil {
					t.Fatalf("loaded, want problem %q", tt.problem)
				}
				assertContainsAll(t, p.Error(), tt.problem)
				if len(p.Items) != 1 {
					t.Errorf("%d problems, want 1", len(p.Items))
				}
				return
			}
			if p != nil {
				t.Fatalf("unexpected problems:\n%v", p)
			}
			if got := keyIndex[tt.key].render(&cfg.Settings); got != tt.want {
				t.Errorf("%s = %q, want %q", tt.key, got, tt.want)
			}
			if len(cfg.Warnings) != 0 {
				t.Errorf("unexpected warnings: %q", cfg.Warnings)
			}
		})
	}
}

// TestDeltaNotSafelyAboveReportInterval: InstanceHA's range still accepts
// DELTA 10, but at Nova's report_interval 10 it calls healthy hosts stale
// (issue 14, item 6): a warning names the risk and the figure.
func TestDeltaNotSafelyAboveReportInterval(t *testing.T) {
	cases := []struct {
		yaml string
		warn []string
	}{
		{"DELTA: 10", []string{"DELTA (10s) is not safely above Nova's report_interval", "never fences a host whose agent is alive", "DELTA 22s or more"}},
		{"DELTA: 10\n  DETECTION_MODE: nova\n  GOSSIP_BIND: \"off\"", []string{"healthy hosts get fenced and evacuated"}},
		{"DELTA: 22", nil},
		{"DELTA: 30\n  NOVA_REPORT_INTERVAL: 15", []string{"DELTA (30s)", "DELTA 32s or more"}},
	}
	for _, c := range cases {
		dir := fixture(t, map[string]string{"config.yaml": "config:\n  " + c.yaml + "\n"})
		cfg, p, _ := loadDir(t, dir, nil)
		if p != nil {
			t.Fatalf("%s: %v", c.yaml, p)
		}
		var got string
		for _, w := range cfg.Warnings {
			if strings.Contains(w, "safely above") {
				got = w
			}
		}
		if c.warn == nil && got != "" {
			t.Errorf("%s: unexpected warning %q", c.yaml, got)
		}
		for _, w := range c.warn {
			if !strings.Contains(got, w) {
				t.Errorf("%s: warning %q lacks %q", c.yaml, got, w)
			}
		}
	}
}

func TestDurationsAreSeconds(t *testing.T) {
	cfg := mustLoad(t, fixture(t, map[string]string{"config.yaml": "config:\n  DELTA: 12\n  EVACUATION_GRACE: 7\n"}), nil)
	if cfg.Settings.Delta != 12*time.Second || cfg.Settings.EvacuationGrace != 7*time.Second {
		t.Errorf("Delta %v, EvacuationGrace %v", cfg.Settings.Delta, cfg.Settings.EvacuationGrace)
	}
}

func TestMalformedYAMLNamesFileAndLine(t *testing.T) {
	dir := fixture(t, map[string]string{"config.yaml": "config:\n  DELTA: 30\n  POLL: [45\n  WORKERS: 4\n"})
	p := mustFail(t, dir, nil)
	if len(p.Items) != 1 {
		t.Fatalf("want one problem, got %v", p)
	}
	it := p.Items[0]
	if filepath.Base(it.File) != "config.yaml" || it.Line == 0 || !strings.Contains(it.Reason, "malformed YAML") {
		t.Errorf("problem = %+v, want config.yaml, a line number and 'malformed YAML'", it)
	}
}

func TestConfigTopLevelShape(t *testing.T) {
	tests := []struct{ name, yaml, problem, warning string }{
		{"not a map", "- a\n- b\n", "must be a map with a `config:` key", ""},
		{"config is a list", "config: [1]\n", "config: a list is not a map", ""},
		{"no config key", "settings: {}\n", "", "no `config:` map"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, p, _ := loadDir(t, fixture(t, map[string]string{"config.yaml": tt.yaml}), nil)
			if tt.problem != "" {
				if p == nil {
					t.Fatal("loaded, want a problem")
				}
				assertContainsAll(t, p.Error(), tt.problem)
				return
			}
			if p != nil {
				t.Fatalf("problems: %v", p)
			}
			if !hasWarning(cfg.Warnings, tt.warning) {
				t.Errorf("warnings %q lack %q", cfg.Warnings, tt.warning)
			}
		})
	}
}

func TestUnknownKeyIsAWarningWithASuggestion(t *testing.T) {
	dir := fixture(t, map[string]string{"config.yaml": "config:\n  DELTAA: 30\n  poll: 45\n  FROBNICATE: 1\n"})
	cfg, _, logs := loadDir(t, dir, nil)
	if cfg == nil {
		t.Fatal("unknown keys must not fail the load")
	}
	for _, w := range [][]string{
		{"config.yaml:2: DELTAA: unknown key", "did you mean DELTA?"},
		{"config.yaml:3: poll: unknown key", "did you mean POLL?"},
		{"config.yaml:4: FROBNICATE: unknown key, ignored"},
	} {
		if !hasWarning(cfg.Warnings, w...) {
			t.Errorf("no warning with %q in %q", w, cfg.Warnings)
		}
	}
	if hasWarning(cfg.Warnings, "FROBNICATE", "did you mean") {
		t.Errorf("suggestion for a key close to nothing: %q", cfg.Warnings)
	}
	assertContainsAll(t, logs, "DELTAA", "level=WARN")
}

func TestEveryProblemIsReportedAtOnce(t *testing.T) {
	dir := fixture(t, map[string]string{
		"config.yaml": "config:\n  DELTA: 5\n  POLL: x\n  LOGLEVEL: LOUD\n  CHECK_KDUMP: perhaps\n  SSL_CA_BUNDLE: /nonexistent/ca.pem\n",
		"clouds.yaml": "clouds:\n  overcloud:\n    auth:\n      auth_url: https://k:5000/v3\n      username: admin\n",
		"fencing.yaml": "FencingConfig:\n  compute-0:\n    agent: ipmi\n    ipaddr: not-an-ip\n    ipport: 99999\n" +
			"    login: admin\n    passwd: ipmi-pass-2\n  compute-1:\n    agent: magic\n",
	})
	if err := os.Remove(filepath.Join(dir, "secure.yaml")); err != nil {
		t.Fatal(err)
	}
	p := mustFail(t, dir, map[string]string{"UDP_PORT": "0"})
	text := p.Error()
	assertContainsAll(t, text,
		"DELTA: 5 is out of range",
		`POLL: "x" is not an integer`,
		`LOGLEVEL: "LOUD" is not one of the allowed values`,
		`CHECK_KDUMP: "perhaps" is not a boolean`,
		`SSL_CA_BUNDLE: "/nonexistent/ca.pem" does not exist`,
		`environment: UDP_PORT: "0" is out of range (allowed 1–65535)`,
		"overcloud: region_name: is missing",
		"overcloud: auth.password: is missing",
		`compute-0: ipaddr: "not-an-ip" is not an IP address`,
		"compute-0: ipport: 99999 is out of range (allowed 1–65535)",
		`compute-1: agent: "magic" is not a fencing agent (allowed ipmi, redfish, bmh, noop)`,
	)
	if n := strings.Count(text, "\n") + 1; n != len(p.Items) || n < 11 {
		t.Errorf("%d lines for %d problems", n, len(p.Items))
	}
}

func TestInstanceHADisabledEnv(t *testing.T) {
	tests := []struct {
		env, file string
		want      bool
	}{
		{"True", "false", true},
		{"true", "false", false}, // only the exact string counts, as upstream
		{"1", "false", false},
		{"", "true", true},
		{"False", "true", true}, // the variable can force, never clear
		{"unset", "false", false},
	}
	for _, tt := range tests {
		t.Run(tt.env+"/"+tt.file, func(t *testing.T) {
			env := map[string]string{"INSTANCEHA_DISABLED": tt.env}
			if tt.env == "unset" {
				env = nil
			}
			cfg := mustLoad(t, fixture(t, map[string]string{"config.yaml": "config:\n  DISABLED: " + tt.file + "\n"}), env)
			if cfg.Settings.Disabled != tt.want {
				t.Errorf("Disabled = %v, want %v", cfg.Settings.Disabled, tt.want)
			}
		})
	}
}

func TestUDPPortEnv(t *testing.T) {
	tests := []struct {
		value   string
		want    int
		problem string
	}{
		{"unset", 7410, ""},
		{"7500", 7500, ""},
		{"1", 1, ""},
		{"65535", 65535, ""},
		{"0", 0, `UDP_PORT: "0" is out of range`},
		{"65536", 0, `UDP_PORT: "65536" is out of range`},
		{"kdump", 0, `UDP_PORT: "kdump" is not an integer`},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			env := map[string]string{"UDP_PORT": tt.value}
			if tt.value == "unset" {
				env = nil
			}
			cfg, p, _ := loadDir(t, fixture(t, nil), env)
			if tt.problem != "" {
				if p == nil {
					t.Fatal("loaded, want a problem")
				}
				assertContainsAll(t, p.Error(), tt.problem)
				return
			}
			if p != nil {
				t.Fatal(p)
			}
			if cfg.UDPPort != tt.want {
				t.Errorf("UDPPort = %d, want %d", cfg.UDPPort, tt.want)
			}
		})
	}
}

func TestEnvironmentOverridesPaths(t *testing.T) {
	dir := fixture(t, nil)
	other := fixture(t, map[string]string{
		"config.yaml":  "config:\n  DELTA: 99\n",
		"clouds.yaml":  strings.ReplaceAll(baseClouds, "regionOne", "regionX"),
		"secure.yaml":  strings.ReplaceAll(baseSecure, "secure-pass-1", "other-pass"),
		"fencing.yaml": strings.ReplaceAll(baseFencing, "compute-0", "compute-9"),
	})
	env := map[string]string{
		"INSTANCEHA_CONFIG_PATH": filepath.Join(other, "config.yaml"),
		"CLOUDS_CONFIG_PATH":     filepath.Join(other, "clouds.yaml"),
		"SECURE_CONFIG_PATH":     filepath.Join(other, "secure.yaml"),
		"FENCING_CONFIG_PATH":    filepath.Join(other, "fencing.yaml"),
	}
	for _, name := range []string{"LoadDir", "Load"} {
		t.Run(name, func(t *testing.T) {
			var cfg *Config
			var err error
			if name == "LoadDir" {
				cfg, err = LoadDir(dir, MapEnv(env), nil)
			} else {
				cfg, err = Load(MapEnv(env), nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Files{Config: env["INSTANCEHA_CONFIG_PATH"], Clouds: env["CLOUDS_CONFIG_PATH"], Secure: env["SECURE_CONFIG_PATH"], Fencing: env["FENCING_CONFIG_PATH"]}
			want.Segments = cfg.Files.Segments // optional file; its path is tested in segments_test.go
			if cfg.Files != want {
				t.Errorf("Files = %+v, want %+v", cfg.Files, want)
			}
			if cfg.Settings.Delta != 99*time.Second || cfg.Cloud.RegionName != "regionX" || cfg.Cloud.AuthOptions().Password != "other-pass" {
				t.Errorf("read the wrong files: delta %v region %s", cfg.Settings.Delta, cfg.Cloud.RegionName)
			}
			if _, ok := cfg.Fencing.Lookup("compute-9"); !ok {
				t.Error("fencing.yaml not read from FENCING_CONFIG_PATH")
			}
		})
	}
	t.Run("LoadDir without env reads dir", func(t *testing.T) {
		cfg, err := LoadDir(dir, MapEnv(nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Files.Config != filepath.Join(dir, "config.yaml") || cfg.Cloud.RegionName != "regionOne" {
			t.Errorf("Files = %+v", cfg.Files)
		}
	})
	t.Run("Load defaults", func(t *testing.T) {
		cfg, err := Load(MapEnv(nil), nil)
		if err == nil { // a machine with InstanceHA's files in place
			want := Files{DefaultConfigPath, DefaultCloudsPath, DefaultSecurePath, DefaultFencingPath, DefaultSegmentsPath}
			if cfg.Files != want {
				t.Errorf("Files = %+v, want %+v", cfg.Files, want)
			}
			return
		}
		assertContainsAll(t, err.Error(), DefaultCloudsPath, DefaultFencingPath)
	})
}

func TestCrossChecks(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "hmac-key")
	if err := os.WriteFile(key, []byte("00112233445566778899aabbccddeeff\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badKey := filepath.Join(dir, "bad-key")
	if err := os.WriteFile(badKey, []byte("zz-secret-zz"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyEnv := map[string]string{EnvHeartbeatKey: key}
	tests := []struct {
		name, yaml, problem, warning string
		env                          map[string]string
	}{
		{"heartbeat timeout shorter than delta", "CHECK_HEARTBEAT: true\n  HEARTBEAT_TIMEOUT: 30\n  DELTA: 60", "", "HEARTBEAT_TIMEOUT (30s) is shorter than DELTA (60s)", keyEnv},
		{"heartbeat with its key", "CHECK_HEARTBEAT: true", "", "", keyEnv},
		{"heartbeat with the previous key only (mid-rotation)", "CHECK_HEARTBEAT: true", "", "", map[string]string{EnvHeartbeatKey: key + ".gone", EnvHeartbeatKeyPrevious: key}},
		{"heartbeat without a key is refused, not silently useless", "CHECK_HEARTBEAT: true", "HEARTBEAT_HMAC_KEY_PATH: names no file holding a key", "", nil},
		{"heartbeat key that is not hex names the file, never the content", "CHECK_HEARTBEAT: true", "HEARTBEAT_HMAC_KEY_PATH: heartbeat: bad HMAC key file: " + badKey + ": not a hex string", "", map[string]string{EnvHeartbeatKey: badKey}},
		{"heartbeat with its listener off", "CHECK_HEARTBEAT: true\n  HEARTBEAT_LISTEN: \"off\"", "HEARTBEAT_LISTEN: \"off\" is off while CHECK_HEARTBEAT is true", "", keyEnv},
		{"kdump with neither a mesh nor a listener", "CHECK_KDUMP: true\n  GOSSIP_BIND: \"off\"\n  KDUMP_LISTEN: \"off\"", "KDUMP_LISTEN: \"off\" and GOSSIP_BIND is off too", "", nil},
		{"kdump without a mesh listens itself", "CHECK_KDUMP: true\n  GOSSIP_BIND: \"off\"\n  DETECTION_MODE: nova", "", "", nil},
		{"heartbeat off: no warning", "HEARTBEAT_TIMEOUT: 30\n  DELTA: 60", "", "", nil},
		{"CA bundle exists", "SSL_CA_BUNDLE: " + ca, "", "", nil},
		{"CA bundle missing", "SSL_CA_BUNDLE: " + ca + ".missing", `SSL_CA_BUNDLE: "` + ca + `.missing" does not exist`, "", nil},
		{"CA bundle is a directory", "SSL_CA_BUNDLE: " + dir, "is a directory", "", nil},
		{"cert without key", "SSL_CERT_PATH: " + ca, "SSL_CERT_PATH: and SSL_KEY_PATH must be set together", "", nil},
		{"raft tls without its CA", "RAFT_TLS_CERT: " + ca + "\n  RAFT_TLS_KEY: " + ca, "RAFT_TLS_CERT: RAFT_TLS_KEY and RAFT_TLS_CA must be set together", "", nil},
		{"key missing", "SSL_CERT_PATH: " + ca + "\n  SSL_KEY_PATH: " + ca + ".key", `SSL_KEY_PATH: "` + ca + `.key" does not exist`, "", nil},
		{"SSL_VERIFY off warns", "SSL_VERIFY: false", "", "SSL_VERIFY is false", nil},
		{"node not among peers", "NODE_NAME: c\n  RAFT_PEERS: a=127.0.0.1:1,b=127.0.0.1:2", "", "RAFT_PEERS does not list NODE_NAME", nil},
		{"plain-HTTP API on every address warns", `API_ADDR: ":7421"`, "", "API_ADDR :7421 serves the status API over plain HTTP beyond this host", nil},
		{"plain-HTTP API on a routable address warns", `API_ADDR: "192.0.2.10:7421"`, "", "over plain HTTP beyond this host", nil},
		{"plain-HTTP API on loopback: no warning", `API_ADDR: "127.0.0.1:7421"`, "", "", nil},
		{"API limits", "API_MAX_STREAMS: 0", `API_MAX_STREAMS: 0 is out of range (allowed 1–4096)`, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, p, _ := loadDir(t, fixture(t, map[string]string{"config.yaml": "config:\n  " + tt.yaml + "\n"}), tt.env)
			if tt.problem != "" {
				if p == nil {
					t.Fatal("loaded, want a problem")
				}
				assertContainsAll(t, p.Error(), tt.problem)
				return
			}
			if p != nil {
				t.Fatal(p)
			}
			if tt.warning == "" && len(cfg.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", cfg.Warnings)
			}
			if tt.warning != "" && !hasWarning(cfg.Warnings, tt.warning) {
				t.Errorf("warnings %q lack %q", cfg.Warnings, tt.warning)
			}
		})
	}
}

func TestNodeNameDefaultsToShortHostName(t *testing.T) {
	orig := hostname
	t.Cleanup(func() { hostname = orig })
	hostname = func() (string, error) { return "ctl-2.example.com", nil }
	cfg := mustLoad(t, fixture(t, nil), nil)
	if cfg.Settings.NodeName != "ctl-2" {
		t.Errorf("NodeName = %q, want ctl-2", cfg.Settings.NodeName)
	}
	cfg = mustLoad(t, fixture(t, map[string]string{"config.yaml": "config:\n  NODE_NAME:\n"}), nil)
	if cfg.Settings.NodeName != "ctl-2" {
		t.Errorf("NODE_NAME without value: NodeName = %q, want the host name", cfg.Settings.NodeName)
	}
}

func TestKeyTableCoversEverySettingsField(t *testing.T) {
	// Every Settings field is set by exactly one key: a field added to
	// Settings without a key would never be read from config.yaml.
	var s Settings
	seen := map[uintptr]string{}
	base := reflect.ValueOf(&s).Pointer()
	for i := range keyTable {
		k := &keyTable[i]
		var p uintptr
		switch {
		case k.intp != nil:
			p = reflect.ValueOf(k.intp(&s)).Pointer()
		case k.durp != nil:
			p = reflect.ValueOf(k.durp(&s)).Pointer()
		case k.boolp != nil:
			p = reflect.ValueOf(k.boolp(&s)).Pointer()
		case k.strp != nil:
			p = reflect.ValueOf(k.strp(&s)).Pointer()
		case k.listp != nil:
			p = reflect.ValueOf(k.listp(&s)).Pointer()
		case k.secp != nil:
			p = reflect.ValueOf(k.secp(&s)).Pointer()
		default:
			continue
		}
		if other, dup := seen[p-base]; dup {
			t.Errorf("%s and %s set the same field", k.Name, other)
		}
		seen[p-base] = k.Name
	}
	// Segments comes from the segments file, configDir from where the file
	// is: neither is a `config:` key.
	if n := reflect.TypeOf(s).NumField() - 2; n != len(seen) {
		t.Errorf("Settings has %d fields, the key table sets %d", n, len(seen))
	}
}
