package lease

import (
	"crypto/ed25519"

	"github.com/ihaproject/iha/pkg/identity"
)

// KeySize is the size of the cluster key and of every host key, in bytes:
// the mesh identity's keys (pkg/identity), which the leases share.
const KeySize = identity.KeySize

// EncodeKey is a key file's content (identity.LoadKey reads it).
func EncodeKey(k []byte) string { return identity.EncodeKey(k) }

// HostKey is the key of Nova host host, derived from the controllers'
// cluster key: what the host's agent holds as host_key, the same key that
// proves its mesh identity. An agent can derive neither another host's
// key nor the cluster key.
func HostKey(cluster []byte, host string) []byte { return identity.HostKey(cluster, host) }

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
