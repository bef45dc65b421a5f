package fence

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/ihaproject/iha/pkg/config"
)

// Errors of address and host checks.
var (
	// ErrBadAddress: a BMC address or host that cannot be used.
	ErrBadAddress = errors.New("invalid BMC address")
)

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

// ApplyAddress returns h with its metal3-style Address (if any), parsed by
// config.ParseBMCAddress, folded into IPAddr, IPPort, TLS and UUID, and Agent
// filled from the scheme when empty. config.Load already does this for
// files; the registry does it again for entries built in code. An address
// whose scheme names another agent than h.Agent, or that disagrees with an
// ipaddr also given, is an error.
func ApplyAddress(h config.FenceHost) (config.FenceHost, error) {
	if h.Address == "" {
		return h, nil
	}
	a, err := config.ParseBMCAddress(h.Address)
	if err != nil {
		return h, fmt.Errorf("%w: address %w", ErrBadAddress, err)
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
		if h.UUID != "" && h.UUID != config.DefaultRedfishUUID && h.UUID != a.SystemID {
			return h, fmt.Errorf("%w: address system %s disagrees with uuid %s", ErrBadAddress, a.SystemID, h.UUID)
		}
		h.UUID = a.SystemID
	}
	return h, nil
}
