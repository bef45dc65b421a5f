package gossip

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// ErrKeyring: a keyring file that cannot be used.
var ErrKeyring = errors.New("gossip: bad keyring")

// LoadKeyring reads a keyring file: a JSON array of base64 keys (16, 24 or
// 32 bytes: AES-128/192/256), the first being the primary key that encrypts
// what this node sends; every key is tried to decrypt what it receives. This
// is Consul's local.keyring format. The error never contains key material.
//
// Rotation across a running mesh (no restart, no member ever declared dead):
//  1. add: on every node, append the new key to the file and reload
//     (SIGHUP to iha-agent, Mesh.ReloadKeyring); nodes still send with the old key;
//  2. use: once every node has both, move the new key first in every file and reload;
//  3. remove: once every node uses the new key, delete the old key from every file and reload.
//
// A node that skipped step 1 cannot read traffic encrypted with the new key
// and will be declared dead by its peers after step 2: finish each step on
// every node before starting the next.
func LoadKeyring(path string) ([][]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyring, err)
	}
	var enc []string
	if err := json.Unmarshal(raw, &enc); err != nil {
		return nil, fmt.Errorf("%w: %s: want a JSON array of base64 keys", ErrKeyring, path)
	}
	if len(enc) == 0 {
		return nil, fmt.Errorf("%w: %s has no keys", ErrKeyring, path)
	}
	keys := make([][]byte, 0, len(enc))
	for i, e := range enc {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(e))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: key %d is not base64", ErrKeyring, path, i+1)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("%w: %s: key %d has %d bytes, want 16, 24 or 32", ErrKeyring, path, i+1, n)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// WriteKeyring writes keys (primary first) in LoadKeyring's format with mode
// 0600, replacing the file atomically.
func WriteKeyring(path string, keys [][]byte) error {
	enc := make([]string, len(keys))
	for i, k := range keys {
		enc[i] = base64.StdEncoding.EncodeToString(k)
	}
	b, _ := json.Marshal(enc)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	return nil
}

// SetKeys makes keys (primary first) this node's keyring, in the order that
// keeps a running mesh intact: add the missing keys, switch the primary,
// then remove the keys not listed. Encryption must have been on at start.
func (m *Mesh) SetKeys(keys [][]byte) error {
	if m.keyring == nil {
		return fmt.Errorf("%w: encryption is off on this node; restart it with a keyring to turn it on", ErrKeyring)
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w: no keys", ErrKeyring)
	}
	m.keyMu.Lock()
	defer m.keyMu.Unlock()
	for i, k := range keys {
		if err := m.keyring.AddKey(k); err != nil {
			return fmt.Errorf("%w: key %d: %w", ErrKeyring, i+1, err)
		}
	}
	if err := m.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("%w: %w", ErrKeyring, err)
	}
	for _, old := range m.keyring.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, old) }) {
			if err := m.keyring.RemoveKey(old); err != nil {
				return fmt.Errorf("%w: %w", ErrKeyring, err)
			}
		}
	}
	m.log.Info("gossip: keyring updated", "node", m.self, "keys", len(keys), "primary", keyID(keys[0]))
	return nil
}

// ReloadKeyring re-reads Config.KeyringFile and applies it with SetKeys
// (rotation steps, see LoadKeyring).
func (m *Mesh) ReloadKeyring() error {
	if m.cfg.KeyringFile == "" {
		return fmt.Errorf("%w: no keyring file configured", ErrKeyring)
	}
	keys, err := LoadKeyring(m.cfg.KeyringFile)
	if err != nil {
		return err
	}
	return m.SetKeys(keys)
}

// keyID names a key in logs without revealing it: the first 4 bytes of its
// SHA-256.
func keyID(k []byte) string {
	sum := sha256.Sum256(k)
	return hex.EncodeToString(sum[:4])
}
