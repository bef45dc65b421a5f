package heartbeat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	keyCur  = []byte("0123456789abcdef0123456789abcdef")
	keyPrev = []byte("previous-key-previous-key-previo")
)

// TestParseAcceptsWhatInstanceHAAccepts is R13.1–R13.2, row by row.
func TestParseAcceptsWhatInstanceHAAccepts(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	keys := [][]byte{keyCur, keyPrev}
	good := Encode("compute-7.example.com", now, keyCur)
	withName := func(name string) []byte { return Encode(name, now, keyCur) }
	tests := []struct {
		name    string
		b       []byte
		keys    [][]byte
		want    string
		wantErr error
	}{
		{"current key, FQDN cut at the first dot", good, keys, "compute-7", nil},
		{"previous key (rotation)", Encode("compute-7", now, keyPrev), keys, "compute-7", nil},
		{"120 s old", Encode("c", now.Add(-120*time.Second), keyCur), keys, "c", nil},
		{"60 s ahead", Encode("c", now.Add(60*time.Second), keyCur), keys, "c", nil},
		{"NULs and blanks around the name", withName("\x00 c1 \x00"), keys, "c1", nil},
		{"64 characters", withName(strings.Repeat("a", 64)), keys, strings.Repeat("a", 64), nil},
		{"short", good[:MinSize-1], keys, "", ErrShort},
		{"HBV1", append([]byte("HBV1"), good[4:]...), keys, "", ErrMagic},
		{"magic in host byte order", func() []byte {
			b := bytes.Clone(good)
			binary.LittleEndian.PutUint32(b, Magic)
			return b
		}(), keys, "", ErrMagic},
		{"no key loaded", good, nil, "", ErrNoKeys},
		{"unknown key", Encode("c", now, []byte("someone else's key")), keys, "", ErrHMAC},
		{"tampered name", bytes.Replace(bytes.Clone(good), []byte("compute-7"), []byte("compute-8"), 1), keys, "", ErrHMAC},
		{"121 s old", Encode("c", now.Add(-121*time.Second), keyCur), keys, "", ErrTimestamp},
		{"61 s ahead", Encode("c", now.Add(61*time.Second), keyCur), keys, "", ErrTimestamp},
		{"65 characters", withName(strings.Repeat("a", 65)), keys, "", ErrHost},
		{"starts with a dash", withName("-c1"), keys, "", ErrHost},
		{"a space inside", withName("c 1"), keys, "", ErrHost},
		{"not UTF-8", withName("c\xff1"), keys, "", ErrHost},
		{"only NULs", withName("\x00\x00"), keys, "", ErrHost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.b, tt.keys, now)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Parse error = %v, want %v", err, tt.wantErr)
			}
			if got.Host != tt.want {
				t.Fatalf("Parse host = %q, want %q", got.Host, tt.want)
			}
		})
	}
}

func TestLoadKeysSkipsEmptyAndMissingFilesAndNamesBadOnes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cur := write("hmac-key", "  6b6579\n")
	empty := write("hmac-key-previous", "\n")
	keys, err := LoadKeys(cur, empty, filepath.Join(dir, "missing"), "")
	if err != nil || len(keys) != 1 || string(keys[0]) != "key" {
		t.Fatalf("LoadKeys = %q, %v", keys, err)
	}
	bad := write("bad", "not-hex-SECRETSECRET")
	_, err = LoadKeys(cur, bad)
	if !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("LoadKeys of a bad file: %v (must name the file, never the content)", err)
	}
}

func FuzzParse(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Add(Encode("compute-1", now, keyCur))
	f.Add(Encode("compute-1.example.com", now.Add(-time.Minute), keyPrev))
	f.Add([]byte("HBV2"))
	f.Add(bytes.Repeat([]byte{0xff}, MinSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		beat, err := Parse(b, [][]byte{keyCur, keyPrev}, now)
		if err != nil {
			if beat != (Beat{}) {
				t.Fatal("a beat returned with an error")
			}
			return
		}
		if len(b) < MinSize || binary.BigEndian.Uint32(b) != Magic {
			t.Fatalf("accepted % x", b)
		}
		if beat.Host == "" || strings.Contains(beat.Host, ".") || len(beat.Name) > MaxHostLen || !strings.HasPrefix(beat.Name, beat.Host) {
			t.Fatalf("accepted host %q (name %q)", beat.Host, beat.Name)
		}
		if d := now.Sub(beat.Sent); d < -MaxAhead || d > MaxAge {
			t.Fatalf("accepted a timestamp %s off", d)
		}
		// An accepted packet is one a key holder signed: re-signing what it
		// says gives the same bytes (modulo NULs and blanks around the name).
		if !bytes.Equal(Encode(string(b[12:len(b)-MACSize]), beat.Sent, keyCur), b) &&
			!bytes.Equal(Encode(string(b[12:len(b)-MACSize]), beat.Sent, keyPrev), b) {
			t.Fatalf("accepted % x, which no key signed", b)
		}
	})
}

// BenchmarkParse is the cost of one accepted heartbeat: the HMAC under the
// second of two keys (a rotation in progress), the worst case.
func BenchmarkParse(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	pkt := Encode("compute-123.example.com", now, keyPrev)
	keys := [][]byte{keyCur, keyPrev}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(pkt, keys, now); err != nil {
			b.Fatal(err)
		}
	}
}
