package lease

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeySize is the size of the cluster key and of every host key, in bytes.
const KeySize = 32

// ErrKey: a key file that cannot be used. Errors name the file, never the
// key.
var ErrKey = errors.New("bad key file")

// LoadKey reads a key file: one line of base64 holding KeySize bytes
// (blank lines and lines starting with # are ignored). The cluster key
// (CLUSTER_KEY) and the agents' host_key share the format.
func LoadKey(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		return nil, fmt.Errorf("%w: %s: want one line of base64 (%d found)", ErrKey, path, len(lines))
	}
	k, err := base64.StdEncoding.DecodeString(lines[0])
	if err != nil || len(k) != KeySize {
		return nil, fmt.Errorf("%w: %s: want %d bytes in base64", ErrKey, path, KeySize)
	}
	return k, nil
}

// EncodeKey is a key file's content.
func EncodeKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) + "\n" }

// HostKey is the key of Nova host host, derived from the controllers'
// cluster key: what the host's agent holds as host_key. An agent can
// derive neither another host's key nor the cluster key.
func HostKey(cluster []byte, host string) []byte { return Sum(cluster, "iha host key v1", host) }

// ClusterKeys are the lease protocol's keys on a controller: every host
// key and the ticket key, derived from the cluster key.
type ClusterKeys struct {
	cluster []byte
	ticket  ed25519.PrivateKey
}

// NewClusterKeys derives the keys from the cluster key.
func NewClusterKeys(cluster []byte) ClusterKeys {
	return ClusterKeys{cluster: cluster, ticket: TicketKeyFrom(cluster)}
}

// HostKey is host's key.
func (k ClusterKeys) HostKey(host string) []byte { return HostKey(k.cluster, host) }

// TicketKey is the controllers' ticket key.
func (k ClusterKeys) TicketKey() ed25519.PrivateKey { return k.ticket }
