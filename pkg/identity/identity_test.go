package identity

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostKeysAreDistinctAndOnlyTheClusterKeyMakesThem(t *testing.T) {
	cluster, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewKey()
	k1, k2 := HostKey(cluster, "compute-1"), HostKey(cluster, "compute-2")
	if len(k1) != KeySize || bytes.Equal(k1, k2) || bytes.Equal(k1, HostKey(other, "compute-1")) {
		t.Fatal("host keys are not distinct per host and per cluster key")
	}
	if !bytes.Equal(k1, HostKey(cluster, "compute-1")) {
		t.Fatal("a host key is not reproducible")
	}
	// A host key is not usable to derive its neighbour's.
	if bytes.Equal(HostKey(k1, "compute-2"), k2) {
		t.Fatal("a host key derives another host's")
	}
	if bytes.Equal(ControllerKey(cluster, "compute-1"), k1) || bytes.Equal(ForwardKey(cluster), k1) {
		t.Fatal("keys of different purposes coincide")
	}
}

func TestSumSeparatesPartsAndPurposes(t *testing.T) {
	k := []byte("k")
	if bytes.Equal(Sum(k, "ab", "c"), Sum(k, "a", "bc")) {
		t.Fatal("part boundaries are not signed")
	}
	mac := Sum(k, "x", "y")
	if !Check(k, mac, "x", "y") || Check(k, mac, "x", "z") || Check(nil, mac, "x", "y") || Check([]byte("other"), mac, "x", "y") {
		t.Fatal("Check")
	}
	hk := HostKey([]byte("cluster"), "h")
	m := GateMAC(hk, "h", true, "done", "n1")
	for _, tc := range []struct {
		host, reason, nonce string
		allow, want         bool
	}{
		{"h", "done", "n1", true, true},
		{"h", "done", "n1", false, false}, // a refusal turned into an allow
		{"h", "done", "n2", true, false},  // replayed for another request
		{"g", "done", "n1", true, false},  // another host's answer
		{"h", "other", "n1", true, false},
	} {
		if got := CheckGate(hk, tc.host, tc.allow, tc.reason, tc.nonce, m); got != tc.want {
			t.Errorf("CheckGate(%+v) = %v", tc, got)
		}
	}
	if CheckGate(hk, "h", true, "done", "n1", "not base64!") {
		t.Error("garbage MAC accepted")
	}
}

func TestLoadKeyNamesTheFileNeverTheKey(t *testing.T) {
	dir := t.TempDir()
	k, _ := NewKey()
	good := filepath.Join(dir, "good.key")
	if err := os.WriteFile(good, []byte("# cluster key\n"+EncodeKey(k)), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadKey(good); err != nil || !bytes.Equal(got, k) {
		t.Fatalf("LoadKey: %v", err)
	}
	secret := "c2VjcmV0LWJ1dC1zaG9ydA=="
	for name, body := range map[string]string{"short": secret + "\n", "two": EncodeKey(k) + EncodeKey(k), "junk": "%%%\n", "empty": ""} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKey(p)
		if err == nil || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file loaded")
	}
}
