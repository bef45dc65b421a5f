package fence

import (
	"errors"
	"strings"
	"testing"

	"github.com/ihaproject/iha/pkg/config"
)

func TestApplyAddress(t *testing.T) {
	tests := []struct {
		name string
		in   config.FenceHost
		want config.FenceHost
		err  string
	}{
		{"no address leaves the entry alone",
			config.FenceHost{Name: "c1", Agent: "redfish", IPAddr: "10.0.0.5", IPPort: 443},
			config.FenceHost{Name: "c1", Agent: "redfish", IPAddr: "10.0.0.5", IPPort: 443}, ""},
		{"address fills agent, host, port, tls and uuid",
			config.FenceHost{Name: "c1", Address: "redfish+https://10.0.0.5:8443/redfish/v1/Systems/abc"},
			config.FenceHost{Name: "c1", Agent: "redfish", IPAddr: "10.0.0.5", IPPort: 8443, TLS: true, UUID: "abc",
				Address: "redfish+https://10.0.0.5:8443/redfish/v1/Systems/abc"}, ""},
		{"agent mismatch",
			config.FenceHost{Name: "c1", Agent: "ipmi", Address: "redfish://10.0.0.5"}, config.FenceHost{}, "scheme is for agent redfish"},
		{"ipaddr disagrees",
			config.FenceHost{Name: "c1", IPAddr: "10.0.0.6", Address: "ipmi://10.0.0.5"}, config.FenceHost{}, "disagrees with ipaddr"},
		{"default uuid gives way to the address system",
			config.FenceHost{Name: "c1", UUID: "System.Embedded.1", Address: "redfish+http://10.0.0.5/redfish/v1/Systems/y"},
			config.FenceHost{Name: "c1", Agent: "redfish", IPAddr: "10.0.0.5", IPPort: 80, UUID: "y",
				Address: "redfish+http://10.0.0.5/redfish/v1/Systems/y"}, ""},
		{"bad address", config.FenceHost{Name: "c1", Address: "redfish://user:pw@10.0.0.5"}, config.FenceHost{}, "credentials"},
		{"uuid disagrees",
			config.FenceHost{Name: "c1", UUID: "x", Address: "redfish://10.0.0.5/redfish/v1/Systems/y"}, config.FenceHost{}, "disagrees with uuid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ApplyAddress(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCheckBMCHost(t *testing.T) {
	tests := []struct {
		name string
		host string
		ok   bool
	}{
		{"IPv4 literal", "10.0.0.5", true},
		{"IPv6 literal", "fd00::5", true},
		{"loopback is allowed for dev mode and tests", "127.0.0.3", true},
		{"DNS name", "bmc-1.example.com", true},
		{"empty", "", false},
		{"unspecified v4", "0.0.0.0", false},
		{"unspecified v6", "::", false},
		{"link-local", "169.254.1.1", false},
		{"link-local v6", "fe80::1", false},
		{"multicast", "224.0.0.1", false},
		{"label ends with dash", "bmc-.example", false},
		{"space", "bmc 1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckBMCHost(tt.host)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckBMCHost(%q) = %v, want ok=%v", tt.host, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadAddress) {
				t.Fatalf("error %v does not wrap ErrBadAddress", err)
			}
		})
	}
}

func TestCheckSystemID(t *testing.T) {
	for id, ok := range map[string]bool{"System.Embedded.1": true, "4e1b9a0c-3a37-4cf4-9e16-2a4f3d3f0c11": true,
		"": false, "..": false, "a/b": false, "a b": false, "%2e": false, strings.Repeat("x", 256): false} {
		if err := CheckSystemID(id); (err == nil) != ok {
			t.Errorf("CheckSystemID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}
