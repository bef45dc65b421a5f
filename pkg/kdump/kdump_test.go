package kdump

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// TestDecodeReadsOnlyTheMagicAsInstanceHADoes is issue 16 item 6: a packet
// is a notice when it has at least 8 bytes and starts with the magic in
// either byte order (R12.1); the version and anything appended are reported
// but never a reason to drop it.
func TestDecodeReadsOnlyTheMagicAsInstanceHADoes(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    Packet
		variant bool
		wantErr error
	}{
		{"x86-64 sender, little endian", []byte{0x40, 0x2a, 0x30, 0x1b, 0x01, 0, 0, 0}, Packet{binary.LittleEndian, 1, 0}, false, nil},
		{"big-endian sender", []byte{0x1b, 0x30, 0x2a, 0x40, 0, 0, 0, 0x01}, Packet{binary.BigEndian, 1, 0}, false, nil},
		{"nine bytes", []byte{0x40, 0x2a, 0x30, 0x1b, 0x01, 0, 0, 0, 0}, Packet{binary.LittleEndian, 1, 1}, true, nil},
		{"magic then a node name", append([]byte{0x40, 0x2a, 0x30, 0x1b, 0x01, 0, 0, 0}, "compute-7"...), Packet{binary.LittleEndian, 1, 9}, true, nil},
		{"version in the other byte order", []byte{0x40, 0x2a, 0x30, 0x1b, 0, 0, 0, 0x01}, Packet{binary.LittleEndian, 0x01000000, 0}, true, nil},
		{"version 2", []byte{0x40, 0x2a, 0x30, 0x1b, 0x02, 0, 0, 0}, Packet{binary.LittleEndian, 2, 0}, true, nil},
		{"version 0", []byte{0x40, 0x2a, 0x30, 0x1b, 0, 0, 0, 0}, Packet{binary.LittleEndian, 0, 0}, true, nil},
		{"empty", nil, Packet{}, false, ErrShort},
		{"seven bytes", []byte{0x40, 0x2a, 0x30, 0x1b, 0x01, 0, 0}, Packet{}, false, ErrShort},
		{"wrong magic", []byte{0x41, 0x2a, 0x30, 0x1b, 0x01, 0, 0, 0}, Packet{}, false, ErrMagic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode(% x) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("Decode(% x) = %+v, want %+v", tt.in, got, tt.want)
			}
			if err == nil && got.Variant() != tt.variant {
				t.Fatalf("Decode(% x).Variant() = %v, want %v", tt.in, got.Variant(), tt.variant)
			}
		})
	}
}

func TestEncodeRoundTripsThroughDecode(t *testing.T) {
	for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		got, err := Decode(Encode(o))
		if err != nil || got.Order != o || got.Variant() {
			t.Fatalf("Decode(Encode(%v)) = %+v, %v", o, got, err)
		}
	}
	if want := []byte{0x40, 0x2a, 0x30, 0x1b, 0x01, 0, 0, 0}; string(Encode(binary.LittleEndian)) != string(want) {
		t.Fatalf("little-endian packet = % x, want % x (what fence_kdump_send sends on x86-64)", Encode(binary.LittleEndian), want)
	}
}

func TestNoticeRoundTripAndRejects(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	n := Notice{Host: "compute-1", SourceAddr: "192.0.2.7", Relayer: "agent-2", Seq: 9, First: at, Last: at.Add(time.Second), Packets: 3}
	b, err := n.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Notice
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("round trip = %+v, want %+v", got, n)
	}
	bad := map[string]string{
		"not json":         "\x00\x01",
		"no version":       `{"host":"a","relayer":"b"}`,
		"future version":   `{"v":2,"host":"a","relayer":"b"}`,
		"no host":          `{"v":1,"relayer":"b"}`,
		"no relayer":       `{"v":1,"host":"a"}`,
		"wrong field type": `{"v":1,"host":7,"relayer":"b"}`,
	}
	for name, in := range bad {
		if err := new(Notice).UnmarshalBinary([]byte(in)); !errors.Is(err, ErrNotice) {
			t.Errorf("%s: UnmarshalBinary(%q) = %v, want ErrNotice", name, in, err)
		}
	}
	long := Notice{Host: string(make([]byte, MaxNoticeSize)), Relayer: "r"}
	if _, err := long.MarshalBinary(); !errors.Is(err, ErrNotice) {
		t.Errorf("oversized notice encoded: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(binary.LittleEndian))
	f.Add(Encode(binary.BigEndian))
	f.Add([]byte{})
	f.Add([]byte{0x40, 0x2a, 0x30, 0x1b, 0x02, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			if p != (Packet{}) {
				t.Fatal("packet returned with an error")
			}
			if len(b) >= PacketSize && (binary.LittleEndian.Uint32(b) == Magic || binary.BigEndian.Uint32(b) == Magic) {
				t.Fatalf("dropped % x, which starts with the magic", b)
			}
			return
		}
		if len(b) < PacketSize || p.Order.Uint32(b) != Magic || p.Order.Uint32(b[4:]) != p.Version || p.Extra != len(b)-PacketSize {
			t.Fatalf("accepted % x as %+v", b, p)
		}
		if !p.Variant() && string(Encode(p.Order)) != string(b) {
			t.Fatalf("% x is no variant but differs from Encode(%v)", b, p.Order)
		}
	})
}

func FuzzUnmarshalNotice(f *testing.F) {
	good, _ := Notice{Host: "c1", SourceAddr: "127.0.0.2", Relayer: "a", Seq: 1, Packets: 1}.MarshalBinary()
	f.Add(good)
	f.Add([]byte(`{"v":1,"host":"h","relayer":"r","first":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var n Notice
		if err := n.UnmarshalBinary(b); err != nil {
			return
		}
		if n.Host == "" || n.Relayer == "" {
			t.Fatalf("accepted a notice without host or relayer: %q", b)
		}
		again, err := n.MarshalBinary()
		if err != nil {
			// Re-encoding may grow (escaping); it must still decode if it fits.
			return
		}
		var m Notice
		if err := m.UnmarshalBinary(again); err != nil {
			t.Fatalf("re-encoded notice does not decode: %v", err)
		}
		if m.Host != n.Host || m.Relayer != n.Relayer || m.Seq != n.Seq || !m.Last.Equal(n.Last) {
			t.Fatalf("round trip changed %+v into %+v", n, m)
		}
	})
}
