package fence

import (
	"errors"
	"strings"
	"testing"

	"github.com/ihaproject/iha/pkg/config"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Address
		err  string // substring of the error; "" for success
	}{
		{"ipmi with port", "ipmi://10.0.0.5:6230", Address{Agent: "ipmi", Host: "10.0.0.5", Port: 6230}, ""},
		{"ipmi default port 623", "ipmi://10.0.0.5", Address{Agent: "ipmi", Host: "10.0.0.5", Port: 623}, ""},
		{"bare redfish means https on 443", "redfish://bmc-1.example.com/redfish/v1/Systems/1",
			Address{Agent: "redfish", Host: "bmc-1.example.com", Port: 443, TLS: true, SystemID: "1"}, ""},
		{"redfish+http defaults to port 80", "redfish+http://127.0.0.1", Address{Agent: "redfish", Host: "127.0.0.1", Port: 80}, ""},
		{"redfish+https with port and trailing slash", "redfish+https://[fd00::5]:8443/redfish/v1/Systems/System.Embedded.1/",
			Address{Agent: "redfish", Host: "fd00::5", Port: 8443, TLS: true, SystemID: "System.Embedded.1"}, ""},
		{"idrac variant", "idrac-redfish+http://10.1.1.1:8000/redfish/v1/", Address{Agent: "redfish", Host: "10.1.1.1", Port: 8000}, ""},
		{"scheme is case-insensitive", "IPMI://10.0.0.5", Address{Agent: "ipmi", Host: "10.0.0.5", Port: 623}, ""},
		{"empty", "", Address{}, "empty"},
		{"unknown scheme", "libvirt://10.0.0.5", Address{}, "unknown scheme"},
		{"no scheme", "10.0.0.5:623", Address{}, ""},
		{"credentials refused", "redfish://admin:hunter2@10.0.0.5", Address{}, "credentials in the URL"},
		{"ipmi path refused", "ipmi://10.0.0.5/x", Address{}, "no path"},
		{"redfish foreign path", "redfish://10.0.0.5/api/power", Address{}, "path must be"},
		{"port out of range", "ipmi://10.0.0.5:70000", Address{}, "out of range"},
		{"port zero", "ipmi://10.0.0.5:0", Address{}, "out of range"},
		{"unspecified host", "ipmi://0.0.0.0", Address{}, "unspecified"},
		{"link-local host", "redfish://169.254.1.1", Address{}, "link-local"},
		{"bad DNS name", "redfish://bad_host-.example", Address{}, "neither"},
		{"query refused", "redfish://10.0.0.5/redfish/v1/Systems/1?x=1", Address{}, "query"},
		{"nested system path refused", "redfish://10.0.0.5/redfish/v1/Systems/1/Bios", Address{}, "character not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAddress(tt.in)
			if tt.name == "no scheme" {
				if err == nil {
					t.Fatalf("ParseAddress(%q) = %+v, want an error", tt.in, got)
				}
				return
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrBadAddress) {
					t.Fatalf("ParseAddress(%q) err = %v, want ErrBadAddress containing %q", tt.in, err, tt.err)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAddress(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseAddress(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

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

// FuzzParseAddress checks that the parser never panics, that what it accepts
// is usable (agent known, port in range, host valid) and that it never
// echoes URL credentials back in an error.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"ipmi://10.0.0.5:623", "redfish://bmc/redfish/v1/Systems/1", "redfish+http://[::1]:8000/",
		"redfish+https://u:secretpw@h", "idrac-redfish://h:1/redfish/v1/Systems/%2e%2e", "ipmi://:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("error %v does not wrap ErrBadAddress", err)
			}
			if strings.Contains(s, "secretpw") && strings.Contains(err.Error(), "secretpw") {
				t.Fatalf("error echoes credentials: %v", err)
			}
			return
		}
		if a.Agent != config.AgentIPMI && a.Agent != config.AgentRedfish {
			t.Fatalf("accepted unknown agent %q", a.Agent)
		}
		if a.Port < 1 || a.Port > 65535 {
			t.Fatalf("accepted port %d", a.Port)
		}
		if err := CheckBMCHost(a.Host); err != nil {
			t.Fatalf("accepted host %q: %v", a.Host, err)
		}
		if a.SystemID != "" {
			if err := CheckSystemID(a.SystemID); err != nil {
				t.Fatalf("accepted system id %q: %v", a.SystemID, err)
			}
		}
	})
}
