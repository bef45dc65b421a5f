package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testkit"
)

func TestLoadKeyringRejectsBadFilesWithoutShowingKeys(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"not-json":   "hello",
		"empty":      "[]",
		"not-base64": `["%%%"]`,
		"short-key":  `["c2VjcmV0"]`, // "secret", 6 bytes
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeyring(p)
		if !errors.Is(err, ErrKeyring) {
			t.Errorf("%s: err = %v, want ErrKeyring", name, err)
		}
		if err != nil && (contains(err.Error(), "c2VjcmV0") || contains(err.Error(), "secret")) {
			t.Errorf("%s: error shows key material: %v", name, err)
		}
	}
	if _, err := LoadKeyring(filepath.Join(dir, "missing")); !errors.Is(err, ErrKeyring) {
		t.Errorf("missing file: %v", err)
	}
}

// TestKeyRotationAcrossARunningMesh follows LoadKeyring's procedure (add,
// use, remove) on three running members and checks that nobody is ever
// suspected or declared dead, that a node with only the new key can join at
// the end, and that a node with only the old key cannot.
func TestKeyRotationAcrossARunningMesh(t *testing.T) {
	oldKey := []byte("old-key-0123456789abcdefghijklmn")[:32]
	newKey := []byte("new-key-0123456789abcdefghijklmn")[:32]
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	start := func(name string, keys [][]byte, join []string) *Mesh {
		t.Helper()
		file := filepath.Join(dir, name+".keyring")
		if err := WriteKeyring(file, keys); err != nil {
			t.Fatal(err)
		}
		m, err := New(Config{NodeName: name, BindAddr: "127.0.0.1", KeyringFile: file, Join: join, Profile: FastProfile(),
			Meta: Meta{Role: RoleCompute}, Logger: testLogger(t, slog.LevelInfo)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Shutdown)
		go func() { _ = m.Run(ctx) }()
		return m
	}
	var mesh []*Mesh
	for i := 0; i < 3; i++ {
		var join []string
		if i > 0 {
			join = []string{mesh[0].Addr()}
		}
		mesh = append(mesh, start(fmt.Sprintf("k%d", i), [][]byte{oldKey}, join))
	}
	testkit.WaitFor(t, scale(10*time.Second), "three members", func() bool {
		for _, m := range mesh {
			if len(m.Members()) != 3 {
				return false
			}
		}
		return true
	})
	recs := []*recorder{record(mesh[0]), record(mesh[1]), record(mesh[2])}

	step := func(what string, keys [][]byte) {
		t.Helper()
		for _, m := range mesh {
			if err := WriteKeyring(m.cfg.KeyringFile, keys); err != nil {
				t.Fatal(err)
			}
			if err := m.ReloadKeyring(); err != nil {
				t.Fatalf("%s on %s: %v", what, m.Name(), err)
			}
		}
		// Let a few probe rounds run with the new keyring.
		time.Sleep(2 * time.Second)
	}
	step("add", [][]byte{oldKey, newKey})
	step("use", [][]byte{newKey, oldKey})
	step("remove", [][]byte{newKey})

	for i, r := range recs {
		if n := r.count(KindDead) + r.count(KindSuspect) + r.count(KindLeft); n > 0 {
			t.Errorf("k%d saw %d suspect/dead/left events during the rotation", i, n)
		}
	}
	for _, m := range mesh {
		if got := len(m.keyring.GetKeys()); got != 1 {
			t.Errorf("%s still has %d keys", m.Name(), got)
		}
	}
	late := start("late-new", [][]byte{newKey}, []string{mesh[1].Addr()})
	testkit.WaitFor(t, scale(10*time.Second), "a new-key node to join", late.Joined)
	stale := start("late-old", [][]byte{oldKey}, []string{mesh[1].Addr()})
	testkit.WaitFor(t, scale(10*time.Second), "the old-key node's join error", func() bool { return stale.LastJoinError() != nil })
	if stale.Joined() {
		t.Fatal("a node with the removed key joined")
	}
}
