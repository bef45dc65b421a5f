package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFencingAgents(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "k8s-ca.crt")
	if err := os.WriteFile(ca, []byte("ca"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "unreadable.crt")
	if err := os.WriteFile(unreadable, []byte("ca"), 0o000); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		entry   string // the host's map, indented 4 spaces
		problem string
		warning string
		check   func(t *testing.T, h FenceHost)
	}{
		{
			name:  "ipmi",
			entry: "agent: IPMI\n    ipaddr: 127.0.0.1\n    ipport: \"6230\"\n    login: admin\n    passwd: ipmi-pass-7\n    timeout: 45",
			check: func(t *testing.T, h FenceHost) {
				if h.Agent != AgentIPMI || h.IPAddr != "127.0.0.1" || h.IPPort != 6230 || h.Login != "admin" || h.Passwd.Reveal() != "ipmi-pass-7" || h.Timeout != 45*time.Second {
					t.Errorf("host = %+v", h)
				}
			},
		},
		{
			name:  "ipmi over IPv6",
			entry: "agent: ipmi\n    ipaddr: \"::1\"\n    ipport: 623\n    login: admin\n    passwd: ipmi-pass-7",
			check: func(t *testing.T, h FenceHost) {
				if h.IPAddr != "::1" {
					t.Errorf("IPAddr = %q", h.IPAddr)
				}
			},
		},
		{name: "ipmi missing ipport", entry: "agent: ipmi\n    ipaddr: 127.0.0.1\n    login: admin\n    passwd: ipmi-pass-7",
			problem: "compute-0: ipport: is missing (allowed required by agent ipmi)"},
		{name: "an empty address is not an address", entry: "agent: ipmi\n    address:\n    login: admin\n    passwd: ipmi-pass-7",
			problem: "fencing.yaml:4: compute-0: address: is empty (allowed a BMC address"},
		{name: "an empty quoted address, nor ipaddr", entry: "agent: redfish\n    address: \"\"\n    login: admin\n    passwd: ipmi-pass-7",
			problem: "fencing.yaml:4: compute-0: address: is empty"},
		{name: "without address, ipaddr is missing at the host's line", entry: "agent: ipmi\n    address:\n    login: admin\n    passwd: ipmi-pass-7",
			problem: "fencing.yaml:3: compute-0: ipaddr: is missing"},
		{name: "ipmi missing passwd", entry: "agent: ipmi\n    ipaddr: 127.0.0.1\n    ipport: 623\n    login: admin",
			problem: "compute-0: passwd: is missing"},
		{name: "ipaddr is a host name", entry: "agent: ipmi\n    ipaddr: bmc.example.com\n    ipport: 623\n    login: admin\n    passwd: x",
			problem: `compute-0: ipaddr: "bmc.example.com" is not an IP address (allowed an IPv4 or IPv6 literal, no host names)`},
		{name: "ipport out of range", entry: "agent: ipmi\n    ipaddr: 127.0.0.1\n    ipport: \"99999\"\n    login: admin\n    passwd: x",
			problem: `fencing.yaml:5: compute-0: ipport: "99999" is out of range (allowed 1–65535)`},
		{name: "ipport zero", entry: "agent: ipmi\n    ipaddr: 127.0.0.1\n    ipport: 0\n    login: admin\n    passwd: x",
			problem: `compute-0: ipport: 0 is out of range (allowed 1–65535)`},
		{name: "bad login", entry: "agent: ipmi\n    ipaddr: 127.0.0.1\n    ipport: 623\n    login: \"ad min\"\n    passwd: x",
			problem: `compute-0: login: "ad min" is not a valid login`},
		{name: "timeout out of range", entry: "agent: ipmi\n    ipaddr: 127.0.0.1\n    ipport: 623\n    login: admin\n    passwd: x\n    timeout: 4",
			problem: `compute-0: timeout: 4 is out of range (allowed 5–300 seconds)`},
		{
			name:    "redfish defaults, plain HTTP warned",
			entry:   "agent: redfish\n    ipaddr: 127.0.0.1\n    login: root\n    passwd: rf-pass-12",
			warning: "compute-0: redfish without tls: plain HTTP is used",
			check: func(t *testing.T, h FenceHost) {
				if h.IPPort != 443 || h.UUID != "System.Embedded.1" || h.TLS || h.Timeout != 0 {
					t.Errorf("host = %+v", h)
				}
			},
		},
		{
			name:  "redfish with tls and uuid",
			entry: "agent: redfish\n    ipaddr: 127.0.0.1\n    ipport: 8443\n    login: root\n    passwd: rf-pass-12\n    tls: \"true\"\n    uuid: \"1\"",
			check: func(t *testing.T, h FenceHost) {
				if h.IPPort != 8443 || h.UUID != "1" || !h.TLS {
					t.Errorf("host = %+v", h)
				}
			},
		},
		{name: "redfish bad tls", entry: "agent: redfish\n    ipaddr: 127.0.0.1\n    login: root\n    passwd: x\n    tls: sometimes",
			problem: `compute-0: tls: "sometimes" is not a boolean`},
		{
			name:  "redfish by address",
			entry: "agent: redfish\n    address: redfish+https://[fd00::5]:8443/redfish/v1/Systems/abc-1\n    login: root\n    passwd: rf-pass-12",
			check: func(t *testing.T, h FenceHost) {
				if h.IPAddr != "fd00::5" || h.IPPort != 8443 || !h.TLS || h.UUID != "abc-1" {
					t.Errorf("host = %+v", h)
				}
			},
		},
		{
			name:  "ipmi by address",
			entry: "agent: ipmi\n    address: ipmi://127.0.0.1:6231\n    login: admin\n    passwd: x",
			check: func(t *testing.T, h FenceHost) {
				if h.IPAddr != "127.0.0.1" || h.IPPort != 6231 {
					t.Errorf("host = %+v", h)
				}
			},
		},
		{name: "address of another agent", entry: "agent: ipmi\n    address: redfish://127.0.0.1\n    login: admin\n    passwd: x",
			problem: "compute-0: address: is a redfish address but the agent is ipmi"},
		{name: "address and ipaddr", entry: "agent: ipmi\n    address: ipmi://127.0.0.1\n    ipaddr: 127.0.0.1\n    login: admin\n    passwd: x",
			problem: "compute-0: ipaddr: is set together with address"},
		{name: "address with credentials", entry: "agent: redfish\n    address: redfish://root:addr-pass-5@127.0.0.1\n    login: root\n    passwd: x",
			problem: "compute-0: address: must not carry credentials"},
		{
			name:  "bmh",
			entry: "agent: bmh\n    token: bmh-token-1\n    host: compute-0\n    namespace: openstack\n    ca_file: " + ca,
			check: func(t *testing.T, h FenceHost) {
				if h.Token.Reveal() != "bmh-token-1" || h.Host != "compute-0" || h.Namespace != "openstack" || h.APIURL != DefaultBMHAPIURL || h.CAFile != ca {
					t.Errorf("host = %+v", h)
				}
			},
		},
		{name: "bmh missing token", entry: "agent: bmh\n    host: compute-0\n    namespace: openstack",
			problem: "compute-0: token: is missing"},
		{name: "bmh bad namespace", entry: "agent: bmh\n    token: t\n    host: compute-0\n    namespace: Open_Stack",
			problem: `compute-0: namespace: "Open_Stack" is not a namespace (allowed a DNS label, at most 63 characters)`},
		{name: "bmh namespace too long", entry: "agent: bmh\n    token: t\n    host: compute-0\n    namespace: " + strings.Repeat("a", 64),
			problem: "compute-0: namespace:"},
		{name: "bmh bad host", entry: "agent: bmh\n    token: t\n    host: -compute\n    namespace: openstack",
			problem: `compute-0: host: "-compute" is not a BareMetalHost name`},
		{name: "bmh missing CA file", entry: "agent: bmh\n    token: t\n    host: c\n    namespace: n\n    ca_file: " + ca + ".missing",
			problem: `compute-0: ca_file: "` + ca + `.missing" does not exist`},
		{name: "bmh unreadable CA file", entry: "agent: bmh\n    token: t\n    host: c\n    namespace: n\n    ca_file: " + unreadable,
			problem: `compute-0: ca_file: "` + unreadable + `" cannot be read`},
		{name: "bmh bad api_url", entry: "agent: bmh\n    token: t\n    host: c\n    namespace: n\n    api_url: kubernetes",
			problem: `compute-0: api_url: "kubernetes" is not an http or https URL`},
		{name: "noop warns", entry: "agent: noop", warning: "compute-0: agent noop never powers the host off"},
		{name: "unknown agent", entry: "agent: ilo\n    ipaddr: 127.0.0.1",
			problem: `compute-0: agent: "ilo" is not a fencing agent (allowed ipmi, redfish, bmh, noop)`},
		{name: "missing agent", entry: "ipaddr: 127.0.0.1",
			problem: "compute-0: agent: is missing (allowed ipmi, redfish, bmh, noop)"},
		{name: "unknown key warns", entry: "agent: ipmi\n    ipaddr: 127.0.0.1\n    ipport: 623\n    login: admin\n    passwd: ipmi-pass-7\n    password: x",
			warning: "compute-0: password: not a key of agent ipmi, ignored (did you mean passwd?)"},
		{name: "host is not a map", entry: "", problem: "compute-0: must be a map with an agent key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "bmh unreadable CA file" && os.Geteuid() == 0 {
				// root reads mode-000 files: make it unreadable as a directory instead.
				tt.entry = strings.Replace(tt.entry, unreadable, dir, 1)
				tt.problem = `compute-0: ca_file: "` + dir + `" is a directory`
			}
			y := "FencingConfig:\n  compute-0:\n    " + tt.entry + "\n"
			if tt.entry == "" {
				y = "FencingConfig:\n  compute-0: hunter2-not-a-map\n"
			}
			cfg, p, _ := loadDir(t, fixture(t, map[string]string{"fencing.yaml": y}), nil)
			if tt.problem != "" {
				if p == nil {
					t.Fatalf("loaded, want problem %q", tt.problem)
				}
				assertContainsAll(t, p.Error(), tt.problem)
				return
			}
			if p != nil {
				t.Fatal(p)
			}
			if tt.warning != "" && !hasWarning(cfg.Warnings, tt.warning) {
				t.Errorf("warnings %q lack %q", cfg.Warnings, tt.warning)
			}
			if tt.warning == "" && len(cfg.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", cfg.Warnings)
			}
			if tt.check != nil {
				h, ok := cfg.Fencing.Lookup("compute-0")
				if !ok {
					t.Fatal("compute-0 not found")
				}
				tt.check(t, h)
			}
		})
	}
}

func TestFencingFileShape(t *testing.T) {
	tests := []struct{ name, yaml, problem, warning string }{
		{"missing file", "-", "fencing.yaml: does not exist", ""},
		{"no FencingConfig", "Fencing: {}\n", "has no `FencingConfig:` map", ""},
		{"empty FencingConfig", "FencingConfig: {}\n", "", "FencingConfig is empty"},
		{"FencingConfig is a list", "FencingConfig: [a]\n", "FencingConfig: is not a map", ""},
		{"malformed", "FencingConfig:\n  a: {agent: noop\n", "malformed YAML", ""},
		{"duplicate host", "FencingConfig:\n  a: {agent: noop}\n  a: {agent: noop}\n", "fencing.yaml:3: a: is listed twice (first at line 2)", ""},
		{"same short name warns", "FencingConfig:\n  a.x: {agent: noop}\n  a.y: {agent: noop}\n", "", "a.y: has the same short name as a.x, which comes first and wins"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, p, _ := loadDir(t, fixture(t, map[string]string{"fencing.yaml": tt.yaml}), nil)
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
			if !hasWarning(cfg.Warnings, tt.warning) {
				t.Errorf("warnings %q lack %q", cfg.Warnings, tt.warning)
			}
		})
	}
}

// InstanceHA's test_fencing_hostname_matching_combinations: every
// short/FQDN combination matches, different domains with the same short name
// match, and the first entry in file order wins.
func TestFencingLookupByShortName(t *testing.T) {
	f := Fencing{Hosts: []FenceHost{
		{Name: "compute-0.site-a.example.com", Agent: "first"},
		{Name: "compute-0", Agent: "second"},
		{Name: "compute-1", Agent: "c1"},
		{Name: "compute-2.example.com", Agent: "c2"},
	}}
	tests := []struct {
		host, want string
		found      bool
	}{
		{"compute-0", "first", true},                    // short → FQDN key
		{"compute-0.site-a.example.com", "first", true}, // FQDN → same FQDN key
		{"compute-0.site-b.example.com", "first", true}, // other domain, same short name
		{"compute-1", "c1", true},                       // short → short key
		{"compute-1.example.com", "c1", true},           // FQDN → short key
		{"compute-2", "c2", true},                       // short → FQDN key
		{"compute-2.other.org", "c2", true},             // FQDN → FQDN key, other domain
		{"compute-3", "", false},                        // absent
		{"compute", "", false},                          // prefix is not a match
		{"compute-00", "", false},                       // longer name is not a match
		{"", "", false},                                 // empty
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			h, ok := f.Lookup(tt.host)
			if ok != tt.found || h.Agent != tt.want {
				t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tt.host, h.Agent, ok, tt.want, tt.found)
			}
		})
	}
}

func TestParseBMCAddress(t *testing.T) {
	tests := []struct {
		in   string
		want BMCAddress
		err  error
	}{
		{"ipmi://10.0.0.5", BMCAddress{Agent: AgentIPMI, Host: "10.0.0.5", Port: 623}, nil},
		{"ipmi://10.0.0.5:6230", BMCAddress{Agent: AgentIPMI, Host: "10.0.0.5", Port: 6230}, nil},
		{"10.0.0.5:6230", BMCAddress{Agent: AgentIPMI, Host: "10.0.0.5", Port: 6230}, nil},
		{"ipmi://[fd00::1]:623", BMCAddress{Agent: AgentIPMI, Host: "fd00::1", Port: 623}, nil},
		{"redfish://10.0.0.6", BMCAddress{Agent: AgentRedfish, Host: "10.0.0.6", Port: 443, TLS: true}, nil},
		{"redfish+http://10.0.0.6:8000/redfish/v1/Systems/1", BMCAddress{Agent: AgentRedfish, Host: "10.0.0.6", Port: 8000, SystemID: "1"}, nil},
		{"redfish+https://10.0.0.6/redfish/v1/Systems/System.Embedded.1/", BMCAddress{Agent: AgentRedfish, Host: "10.0.0.6", Port: 443, TLS: true, SystemID: "System.Embedded.1"}, nil},
		{"REDFISH+HTTP://10.0.0.6", BMCAddress{Agent: AgentRedfish, Host: "10.0.0.6", Port: 80}, nil},
		{"idrac://10.0.0.6", BMCAddress{}, ErrAddressScheme},
		{"ipmi://bmc.example.com", BMCAddress{}, ErrAddressHost},
		{"ipmi://fd00::1", BMCAddress{}, ErrAddressHost},
		{"ipmi://[10.0.0.1]", BMCAddress{}, ErrAddressSyntax},
		{"ipmi://[fe80::1%25eth0]", BMCAddress{}, ErrAddressHost},
		{"ipmi://10.0.0.5:0", BMCAddress{}, ErrAddressPort},
		{"ipmi://10.0.0.5:65536", BMCAddress{}, ErrAddressPort},
		{"ipmi://10.0.0.5:", BMCAddress{}, ErrAddressPort},
		{"ipmi://10.0.0.5/x", BMCAddress{}, ErrAddressPath},
		{"redfish://10.0.0.6/redfish/v1/Managers/1", BMCAddress{}, ErrAddressPath},
		{"redfish://10.0.0.6/redfish/v1/Systems/", BMCAddress{}, ErrAddressPath},
		{"redfish://10.0.0.6/redfish/v1/Systems/a%2Fb", BMCAddress{}, ErrAddressPath},
		{"redfish://u:p@10.0.0.6", BMCAddress{}, ErrAddressCredentials},
		{"redfish://10.0.0.6?x=1", BMCAddress{}, ErrAddressSyntax},
		{"ipmi://10.0.0.5 ", BMCAddress{}, ErrAddressSyntax},
		{"", BMCAddress{}, ErrAddressSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBMCAddress(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error = %v, want %v", err, tt.err)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if err == nil {
				again, err := ParseBMCAddress(got.String())
				if err != nil || again != got {
					t.Errorf("round trip of %q: %+v, %v", got.String(), again, err)
				}
			}
		})
	}
}
