package fence

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/ihaproject/iha/pkg/config"
)

// Address is a parsed metal3-style BMC address such as
// "ipmi://10.0.0.5:623" or
// "redfish+https://10.0.0.5/redfish/v1/Systems/System.Embedded.1".
type Address struct {
	Agent    string // config.AgentIPMI or config.AgentRedfish
	Host     string // IP literal or DNS name, without brackets
	Port     int    // explicit port, or the scheme's default
	TLS      bool   // redfish: https
	SystemID string // redfish: the last element of /redfish/v1/Systems/<id>; "" to discover
}

// Errors of the address parser.
var (
	// ErrBadAddress: a BMC address or host that cannot be used.
	ErrBadAddress = errors.New("invalid BMC address")
)

// redfishSchemes maps the metal3 scheme spellings we accept to "use TLS".
// metal3 treats a bare "redfish://" as https.
var redfishSchemes = map[string]bool{
	"redfish":             true,
	"redfish+https":       true,
	"redfish+http":        false,
	"idrac-redfish":       true,
	"idrac-redfish+https": true,
	"idrac-redfish+http":  false,
}

const systemsPrefix = "/redfish/v1/Systems/"

// ParseAddress parses a metal3-style BMC address. It accepts ipmi:// and the
// redfish schemes (redfish, redfish+http, redfish+https and their idrac-
// variants). A Redfish path, when present, must be /redfish/v1/Systems/<id>.
// Credentials inside the URL are refused: they belong in login/passwd, where
// they are redacted.
func ParseAddress(s string) (Address, error) {
	if s == "" {
		return Address{}, fmt.Errorf("%w: empty", ErrBadAddress)
	}
	if len(s) > 2048 {
		return Address{}, fmt.Errorf("%w: longer than 2048 bytes", ErrBadAddress)
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Error quotes the input; it has no credentials we accept, but
		// keep the message short and free of the raw text anyway.
		return Address{}, fmt.Errorf("%w: not a URL", ErrBadAddress)
	}
	if u.User != nil {
		return Address{}, fmt.Errorf("%w: credentials in the URL are not allowed; use login and passwd", ErrBadAddress)
	}
	if u.Opaque != "" || u.Host == "" {
		return Address{}, fmt.Errorf("%w: %q has no host (want scheme://host[:port])", ErrBadAddress, u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Address{}, fmt.Errorf("%w: query and fragment are not allowed", ErrBadAddress)
	}
	var a Address
	scheme := strings.ToLower(u.Scheme)
	useTLS, isRedfish := redfishSchemes[scheme]
	switch {
	case scheme == "ipmi":
		a.Agent = config.AgentIPMI
		a.Port = 623
		if u.Path != "" && u.Path != "/" {
			return Address{}, fmt.Errorf("%w: ipmi address takes no path", ErrBadAddress)
		}
	case isRedfish:
		a.Agent = config.AgentRedfish
		a.TLS = useTLS
		a.Port = 80
		if a.TLS {
			a.Port = 443
		}
		id, err := systemID(u.Path)
		if err != nil {
			return Address{}, err
		}
		a.SystemID = id
	default:
		return Address{}, fmt.Errorf("%w: unknown scheme %q (want ipmi, redfish, redfish+http or redfish+https)", ErrBadAddress, u.Scheme)
	}
	a.Host = u.Hostname()
	if err := CheckBMCHost(a.Host); err != nil {
		return Address{}, err
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Address{}, fmt.Errorf("%w: port %q out of range 1-65535", ErrBadAddress, p)
		}
		a.Port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return Address{}, fmt.Errorf("%w: empty port", ErrBadAddress)
	}
	return a, nil
}

func systemID(path string) (string, error) {
	if path == "" || path == "/" || path == "/redfish/v1" || path == "/redfish/v1/" {
		return "", nil
	}
	if !strings.HasPrefix(path, systemsPrefix) {
		return "", fmt.Errorf("%w: redfish path must be %s<id>", ErrBadAddress, systemsPrefix)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(path, systemsPrefix), "/")
	if err := checkSystemID(id); err != nil {
		return "", err
	}
	return id, nil
}

// CheckSystemID reports whether id can be used as a Redfish system id in a
// URL path: non-empty, at most 255 bytes, one path element of printable ASCII.
func CheckSystemID(id string) error { return checkSystemID(id) }

func checkSystemID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty system id", ErrBadAddress)
	}
	if len(id) > 255 {
		return fmt.Errorf("%w: system id longer than 255 bytes", ErrBadAddress)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '%' || c == '\\' {
			return fmt.Errorf("%w: system id has a character not allowed in a path element", ErrBadAddress)
		}
	}
	if id == "." || id == ".." {
		return fmt.Errorf("%w: system id %q", ErrBadAddress, id)
	}
	return nil
}

// CheckBMCHost reports whether h can be a BMC host: an IP literal or a DNS
// name. Like InstanceHA it refuses the unspecified address (0.0.0.0, ::),
// link-local and multicast addresses. Unlike InstanceHA it accepts loopback:
// dev mode and the tests run simulated BMCs on 127.0.0.0/8, and a loopback
// BMC cannot be reached by accident from a real deployment's config.
func CheckBMCHost(h string) error {
	if h == "" {
		return fmt.Errorf("%w: empty host", ErrBadAddress)
	}
	if ip := net.ParseIP(h); ip != nil {
		switch {
		case ip.IsUnspecified():
			return fmt.Errorf("%w: unspecified address %s", ErrBadAddress, h)
		case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
			return fmt.Errorf("%w: link-local address %s", ErrBadAddress, h)
		case ip.IsMulticast():
			return fmt.Errorf("%w: multicast address %s", ErrBadAddress, h)
		}
		return nil
	}
	if !validDNSName(h) {
		return fmt.Errorf("%w: %q is neither an IP address nor a DNS name", ErrBadAddress, h)
	}
	return nil
}

func validDNSName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// ApplyAddress returns h with its Address (if any) folded into IPAddr,
// IPPort, TLS and UUID, and Agent filled from the scheme when empty. An
// address whose scheme names another agent than h.Agent, or that disagrees
// with an ipaddr also given, is an error.
func ApplyAddress(h config.FenceHost) (config.FenceHost, error) {
	if h.Address == "" {
		return h, nil
	}
	a, err := ParseAddress(h.Address)
	if err != nil {
		return h, err
	}
	agent := strings.ToLower(h.Agent)
	if agent == "" {
		h.Agent = a.Agent
	} else if agent != a.Agent {
		return h, fmt.Errorf("%w: address scheme is for agent %s but agent is %s", ErrBadAddress, a.Agent, agent)
	}
	if h.IPAddr != "" && h.IPAddr != a.Host {
		return h, fmt.Errorf("%w: address host %s disagrees with ipaddr %s", ErrBadAddress, a.Host, h.IPAddr)
	}
	h.IPAddr = a.Host
	h.IPPort = a.Port
	h.TLS = a.TLS
	if a.SystemID != "" {
		if h.UUID != "" && h.UUID != a.SystemID {
			return h, fmt.Errorf("%w: address system %s disagrees with uuid %s", ErrBadAddress, a.SystemID, h.UUID)
		}
		h.UUID = a.SystemID
	}
	return h, nil
}
