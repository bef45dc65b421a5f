package config

import (
	"errors"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// BMCAddress is a metal3-style BMC address, the optional `address` key of
// fencing.yaml (an IHA extension): ipmi://10.0.0.5:623,
// redfish+https://10.0.0.6/redfish/v1/Systems/System.Embedded.1. The scheme
// picks the agent; the host must be an IP literal, as InstanceHA requires
// for ipaddr.
type BMCAddress struct {
	Agent    string // AgentIPMI or AgentRedfish
	Host     string // IP literal, without brackets
	Port     int    // explicit, or the scheme's default
	TLS      bool   // redfish: https
	SystemID string // redfish: the ID of /redfish/v1/Systems/ID, "" when the path is empty
}

// Default BMC ports.
const (
	DefaultIPMIPort  = 623
	DefaultHTTPSPort = 443
	DefaultHTTPPort  = 80
)

// Address parse errors. They never quote the address, which may carry a
// password in its user info.
var (
	ErrAddressSyntax      = errors.New("is not a valid BMC address")
	ErrAddressScheme      = errors.New("has an unsupported scheme (allowed ipmi://, redfish://, redfish+http://, redfish+https://)")
	ErrAddressCredentials = errors.New("must not carry credentials (use login and passwd)")
	ErrAddressHost        = errors.New("must have an IP address as host (no host names)")
	ErrAddressPort        = errors.New("has a port out of range (allowed 1–65535)")
	ErrAddressPath        = errors.New("has a path other than /redfish/v1/Systems/ID")
)

var (
	systemsPathRE = regexp.MustCompile(`^/redfish/v1/Systems/([^/]+)/?$`)
	systemIDRE    = regexp.MustCompile(`^[A-Za-z0-9._:~-]{1,255}$`)
)

// ParseBMCAddress parses a metal3-style BMC address. A bare host[:port]
// is IPMI, as in metal3.
func ParseBMCAddress(s string) (BMCAddress, error) {
	var a BMCAddress
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return a, ErrAddressSyntax
		}
	}
	if s == "" {
		return a, ErrAddressSyntax
	}
	if !strings.Contains(s, "://") {
		s = "ipmi://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" {
		return a, ErrAddressSyntax
	}
	if u.User != nil {
		return a, ErrAddressCredentials
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return a, ErrAddressSyntax
	}
	switch strings.ToLower(u.Scheme) {
	case "ipmi":
		a.Agent, a.Port = AgentIPMI, DefaultIPMIPort
		if u.Path != "" && u.Path != "/" {
			return a, ErrAddressPath
		}
	case "redfish", "redfish+https":
		a.Agent, a.TLS, a.Port = AgentRedfish, true, DefaultHTTPSPort
	case "redfish+http":
		a.Agent, a.Port = AgentRedfish, DefaultHTTPPort
	default:
		return a, ErrAddressScheme
	}
	host := u.Hostname()
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return a, ErrAddressHost
	}
	// An IPv6 host must be bracketed, an IPv4 one must not be.
	if ip.Is6() != strings.HasPrefix(u.Host, "[") {
		return a, ErrAddressHost
	}
	a.Host = ip.String()
	if host != a.Host && !ip.Is6() {
		return a, ErrAddressHost // e.g. leading zeros
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return a, ErrAddressPort
		}
		a.Port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return a, ErrAddressPort
	}
	if a.Agent == AgentRedfish && u.Path != "" && u.Path != "/" {
		if u.RawPath != "" {
			return a, ErrAddressPath
		}
		m := systemsPathRE.FindStringSubmatch(u.Path)
		if m == nil || !systemIDRE.MatchString(m[1]) {
			return a, ErrAddressPath
		}
		a.SystemID = m[1]
	}
	return a, nil
}

// String formats the address in canonical form; ParseBMCAddress(a.String())
// gives a back.
func (a BMCAddress) String() string {
	scheme := "ipmi"
	if a.Agent == AgentRedfish {
		scheme = "redfish+http"
		if a.TLS {
			scheme = "redfish+https"
		}
	}
	s := scheme + "://" + net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
	if a.SystemID != "" {
		s += "/redfish/v1/Systems/" + a.SystemID
	}
	return s
}
