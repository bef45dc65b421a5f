package gossip

import (
	"errors"
	"fmt"
)

// Role says what a mesh member is.
type Role string

// Roles.
const (
	RoleCompute    Role = "compute"
	RoleController Role = "controller"
)

// MetaVersion is the encoding version EncodeMeta writes.
const MetaVersion uint8 = 1

// MaxMetaSize is memberlist's limit on node metadata.
const MaxMetaSize = 512

// Meta is the metadata every member advertises with its gossip.
type Meta struct {
	// Version is the encoding version; EncodeMeta always writes MetaVersion,
	// DecodeMeta reports what it read.
	Version uint8
	Role    Role
	// NovaHost is the host name of this node's nova-compute service (its
	// [DEFAULT] host), the name the leader matches with Nova.
	NovaHost string
	// IHAVersion is the build of iha-agent or iha-leader.
	IHAVersion string
	// APIAddr is a controller's status API address (host:port); empty on
	// computes.
	APIAddr string
}

// ErrMeta: metadata that cannot be encoded or decoded.
var ErrMeta = errors.New("gossip: bad node metadata")

var roleCodes = map[Role]byte{RoleCompute: 1, RoleController: 2}

// EncodeMeta writes m as: version byte, role byte, then NovaHost,
// IHAVersion and APIAddr each as a one-byte length and the bytes. A later
// version may append fields: decoders of version 1 ignore trailing bytes.
func EncodeMeta(m Meta) ([]byte, error) {
	code, ok := roleCodes[m.Role]
	if !ok {
		return nil, fmt.Errorf("%w: unknown role %q", ErrMeta, m.Role)
	}
	b := []byte{MetaVersion, code}
	for _, s := range []string{m.NovaHost, m.IHAVersion, m.APIAddr} {
		if len(s) > 255 {
			return nil, fmt.Errorf("%w: field of %d bytes, limit 255", ErrMeta, len(s))
		}
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMeta, len(b), MaxMetaSize)
	}
	return b, nil
}

// DecodeMeta reads what EncodeMeta wrote, from any version ≥ 1 (fields added
// by later versions are skipped). The bytes come from the network: every
// length is checked.
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) > MaxMetaSize {
		return Meta{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMeta, len(b), MaxMetaSize)
	}
	if len(b) < 2 {
		return Meta{}, fmt.Errorf("%w: %d bytes", ErrMeta, len(b))
	}
	m := Meta{Version: b[0]}
	if m.Version == 0 {
		return Meta{}, fmt.Errorf("%w: version 0", ErrMeta)
	}
	for r, c := range roleCodes {
		if c == b[1] {
			m.Role = r
		}
	}
	if m.Role == "" {
		return Meta{}, fmt.Errorf("%w: unknown role code %d", ErrMeta, b[1])
	}
	rest := b[2:]
	for _, dst := range []*string{&m.NovaHost, &m.IHAVersion, &m.APIAddr} {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return Meta{}, fmt.Errorf("%w: truncated", ErrMeta)
		}
		*dst = string(rest[1 : 1+int(rest[0])])
		rest = rest[1+int(rest[0]):]
	}
	return m, nil
}
