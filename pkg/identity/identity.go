// Package identity binds what a member of IHA's mesh says to who it is.
//
// Keys (docs/operations.md, "The mesh's keys"; the threat model is there
// too):
//   - the cluster key: 32 random bytes held by the controllers only
//     (CLUSTER_KEY). Everything below is derived from it.
//   - a host key per Nova host: HostKey(cluster, host), held by that host's
//     agent only (host_key: in agent.yaml). With it an agent proves that it
//     speaks for its host, signs what it says in the mesh, and checks the
//     controllers' answers to its nova-compute gate. It cannot derive any
//     other host's key, nor the cluster key.
//   - a controller key per controller, and the forwarding key: derived for
//     the controllers, which hold the cluster key anyway.
//
// MACs are HMAC-SHA256 over length-prefixed parts, the first naming what is
// signed (domain separation), so that a signature made for one purpose is
// never valid for another.
//
// What it must never do: log, print or wrap key material in an error. Key
// files are named in errors by path, keys in logs by KeyID.
package identity

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeySize is the size of every key, in bytes.
const KeySize = 32

// ErrKey: a key file that cannot be used. Errors name the file, never the
// key.
var ErrKey = errors.New("identity: bad key file")

// NewKey returns KeySize random bytes.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("identity: new key: %w", err)
	}
	return k, nil
}

// EncodeKey is a key file's content: the key in base64 and a newline.
func EncodeKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) + "\n" }

// LoadKey reads a key file (EncodeKey's format; blank lines and lines
// starting with # are ignored).
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
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not base64", ErrKey, path)
	}
	if len(k) != KeySize {
		return nil, fmt.Errorf("%w: %s: %d bytes, want %d", ErrKey, path, len(k), KeySize)
	}
	return k, nil
}

// derive is HMAC(parent, label) : a key only parent's holder can compute.
func derive(parent []byte, parts ...string) []byte { return Sum(parent, parts...) }

// HostKey is the key of Nova host host, derived from the cluster key.
func HostKey(cluster []byte, host string) []byte { return derive(cluster, "iha host key v1", host) }

// ControllerKey is the key of controller node (its NODE_NAME).
func ControllerKey(cluster []byte, node string) []byte {
	return derive(cluster, "iha controller key v1", node)
}

// ForwardKey signs what one controller's status API tells another's (the
// audit identity of a forwarded request).
func ForwardKey(cluster []byte) []byte { return derive(cluster, "iha api forward key v1") }

// KeyID names a key in logs without revealing it: 4 bytes of its SHA-256.
func KeyID(k []byte) string {
	s := sha256.Sum256(k)
	return hex.EncodeToString(s[:4])
}

// Sum is HMAC-SHA256 of parts under key, each part prefixed by its length
// (so that ("ab","c") and ("a","bc") differ).
func Sum(key []byte, parts ...string) []byte {
	h := hmac.New(sha256.New, key)
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.Write([]byte(p))
	}
	return h.Sum(nil)
}

// Check reports whether mac is Sum(key, parts...), in constant time.
func Check(key, mac []byte, parts ...string) bool {
	return len(key) > 0 && hmac.Equal(mac, Sum(key, parts...))
}

// GateMAC signs a controller's answer to host's nova-compute gate for the
// request that carried nonce; the agent checks it with its host key.
func GateMAC(hostKey []byte, host string, allow bool, reason, nonce string) string {
	return base64.StdEncoding.EncodeToString(Sum(hostKey, "iha gate answer v1", host, fmt.Sprint(allow), reason, nonce))
}

// CheckGate reports whether mac is GateMAC's for these fields.
func CheckGate(hostKey []byte, host string, allow bool, reason, nonce, mac string) bool {
	b, err := base64.StdEncoding.DecodeString(mac)
	return err == nil && Check(hostKey, b, "iha gate answer v1", host, fmt.Sprint(allow), reason, nonce)
}
