package kdump

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

func TestDecodeAcceptsBothByteOrdersAndDropsMalformed(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    binary.ByteOrder
		wantErr error
	}{
		{"x86-64 sender, little endian", []byte{0x40, 0x2a, 0x30, 0x1b, 0x01, 0, 0, 0}, binary.LittleEndian, nil},
		{"big-endian sender", []byte{0x1b, 0x30, 0x2a, 0x40, 0, 0, 0, 0x01}, binary.BigEndian, nil},
		{"empty", nil, nil, ErrShort},
		{"seven bytes", []byte{0x40, 0x2a, 0x30, 0x1b, 0x01, 0, 0}, nil, ErrShort},
		{"nine bytes", []byte{0x40, 0x2a, 0x30, 0x1b, 0x01, 0, 0, 0, 0}, nil, ErrLong},
		{"wrong magic", []byte{0x41, 0x2a, 0x30, 0x1b, 0x01, 0, 0, 0}, nil, ErrMagic},
		{"magic in one order, version in the other", []byte{0x40, 0x2a, 0x30, 0x1b, 0, 0, 0, 0x01}, nil, ErrVersion},
		{"version 2", []byte{0x40, 0x2a, 0x30, 0x1b, 0x02, 0, 0, 0}, nil, ErrVersion},
		{"version 0", []byte{0x40, 0x2a, 0x30, 0x1b, 0, 0, 0, 0}, nil, ErrVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode(% x) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("Decode(% x) order = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestEncodeRoundTripsThroughDecode(t *testing.T) {
	for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		got, err := Decode(Encode(o))
		if err != nil || got != o {
			t.Fatalf("Decode(Encode(%v)) = %v, %v", o, got, err)
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
		o, err := Decode(b)
		if err != nil {
			if o != nil {
				t.Fatal("order returned with an error")
			}
			return
		}
		if len(b) != PacketSize || o.Uint32(b) != Magic || o.Uint32(b[4:]) != Version {
			t.Fatalf("accepted % x", b)
		}
		if string(Encode(o)) != string(b) {
			t.Fatalf("accepted % x but it differs from Encode(%v)", b, o)
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
