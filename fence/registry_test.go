package fence_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// stub is a Fencer that remembers the entry it was built from.
type stub struct {
	host   config.FenceHost
	driver string
}

func (s *stub) PowerOff(context.Context) error                       { return nil }
func (s *stub) PowerOn(context.Context) error                        { return nil }
func (s *stub) PowerState(context.Context) (fence.PowerState, error) { return fence.PowerOn, nil }
func (s *stub) Driver() string                                       { return s.driver }

func stubDriver(name string) fence.Constructor {
	return func(h config.FenceHost, _ fence.Settings, _ *slog.Logger) (fence.Fencer, error) {
		if h.IPAddr == "bad" {
			return nil, errors.New("ipaddr is bad")
		}
		return &stub{host: h, driver: name}, nil
	}
}

const canary = "Canary-Pw-7f3e"

func fencing(hosts ...config.FenceHost) config.Fencing { return config.Fencing{Hosts: hosts} }

func TestRegistryLookup(t *testing.T) {
	f := fencing(
		config.FenceHost{Name: "compute-0.example.com", Agent: "redfish", IPAddr: "10.0.0.1", Passwd: secret.New(canary)},
		config.FenceHost{Name: "compute-1", Agent: "IPMI", IPAddr: "10.0.0.2", IPPort: 623},
		config.FenceHost{Name: "compute-1.other.net", Agent: "noop"}, // shadowed duplicate
		config.FenceHost{Name: "compute-2", Agent: "bmh", Host: "bmh-2", Namespace: "openstack"},
		config.FenceHost{Name: "compute-3", Agent: "carrier-pigeon"},
		config.FenceHost{Name: "compute-4", Agent: "redfish", IPAddr: "bad", Passwd: secret.New(canary)},
		config.FenceHost{Name: "compute-5", Address: "redfish+https://10.0.0.5:8443/redfish/v1/Systems/abc"},
		config.FenceHost{Name: "compute-6", Agent: "ipmi", Address: "redfish://10.0.0.6"},
	)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	r, err := fence.NewRegistry(f, fence.Settings{}, logger,
		fence.WithDriver("redfish", stubDriver("redfish")),
		fence.WithDriver("ipmi", stubDriver("ipmi")),
		fence.WithDriver("noop", stubDriver("noop")))
	if r == nil {
		t.Fatal("NewRegistry returned a nil registry")
	}
	if err == nil {
		t.Fatal("NewRegistry accepted bad entries")
	}
	for _, want := range []string{"agent bmh is not available in this build", `unknown fencing agent "carrier-pigeon"`,
		"ipaddr is bad", "scheme is for agent redfish"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("joined error %q lacks %q", err, want)
		}
	}

	tests := []struct {
		name       string
		host       string
		wantDriver string
		wantIP     string
		wantErr    error
		errText    string
	}{
		{"FQDN entry matches short Nova name", "compute-0", "redfish", "10.0.0.1", nil, ""},
		{"FQDN entry matches FQDN of another domain", "compute-0.elsewhere.org", "redfish", "10.0.0.1", nil, ""},
		{"short entry matches FQDN; agent is lower-cased", "compute-1.example.com", "ipmi", "10.0.0.2", nil, ""},
		{"first entry wins over a later duplicate", "compute-1", "ipmi", "10.0.0.2", nil, ""},
		{"bmh is not in this build", "compute-2", "", "", fence.ErrNotAvailable, "agent bmh is not available in this build"},
		{"unknown agent", "compute-3", "", "", fence.ErrUnknownAgent, "carrier-pigeon"},
		{"driver refused the entry", "compute-4", "", "", nil, "ipaddr is bad"},
		{"metal3 address fills the entry", "compute-5.example.com", "redfish", "10.0.0.5", nil, ""},
		{"address scheme disagrees with agent", "compute-6", "", "", fence.ErrBadAddress, "scheme is for agent redfish"},
		{"no entry", "compute-9", "", "", fence.ErrNoConfig, "no fencing configuration"},
		{"empty name", "", "", "", nil, "empty host name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc, err := r.Fencer(tt.host)
			if tt.wantDriver == "" {
				var fe *fence.Error
				if !errors.As(err, &fe) || fe.Op != fence.OpConfig {
					t.Fatalf("Fencer(%q) err = %v, want *fence.Error with op configure", tt.host, err)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.errText)
				}
				if strings.Contains(err.Error(), canary) {
					t.Fatalf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Fencer(%q): %v", tt.host, err)
			}
			s := fc.(*stub)
			if s.driver != tt.wantDriver || s.host.IPAddr != tt.wantIP {
				t.Fatalf("Fencer(%q) = %s at %s, want %s at %s", tt.host, s.driver, s.host.IPAddr, tt.wantDriver, tt.wantIP)
			}
		})
	}

	hosts := r.Hosts()
	if len(hosts) != len(f.Hosts) {
		t.Fatalf("Hosts() has %d entries, want %d", len(hosts), len(f.Hosts))
	}
	if hosts[1].Address != "10.0.0.2:623" || hosts[3].Err == nil || hosts[3].Fencer != nil || hosts[0].Err != nil {
		t.Fatalf("Hosts() = %+v", hosts)
	}
	if hosts[2].Fencer == nil || hosts[2].Fencer.Driver() != "noop" {
		t.Fatalf("Hosts() = %+v", hosts)
	}
	if !strings.Contains(logs.String(), "same short name") {
		t.Errorf("no warning about the duplicate short name in logs:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), canary) || strings.Contains(err.Error(), canary) {
		t.Fatal("the password reached the logs or the joined error")
	}
}

func TestRegistryAllValid(t *testing.T) {
	r, err := fence.NewRegistry(fencing(config.FenceHost{Name: "c1", Agent: "noop"}), fence.Settings{}, nil,
		fence.WithDriver("noop", stubDriver("noop")))
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	var l fence.Lookup = r
	if _, err := l.Fencer("c1.example.com"); err != nil {
		t.Fatal(err)
	}
}
