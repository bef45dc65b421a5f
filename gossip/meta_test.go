package gossip

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/identity"
)

func TestMetaRoundTripsAndRejectsGarbage(t *testing.T) {
	m := Meta{Role: RoleController, NovaHost: "ctl-1.example", IHAVersion: "1.2.3", APIAddr: "10.0.0.1:7421"}
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(b)
	m.Version = MetaVersion
	if err != nil || got != m {
		t.Fatalf("DecodeMeta(EncodeMeta(m)) = %+v, %v; want %+v", got, err, m)
	}
	// A later version appends fields: version 1 decoders skip them.
	future := append([]byte{2}, b[1:]...)
	future = append(future, 5, 'x', 'y', 'z', 'z', 'y')
	if got, err := DecodeMeta(future); err != nil || got.NovaHost != m.NovaHost || got.Version != 2 {
		t.Fatalf("a version-2 encoding with an extra field: %+v, %v", got, err)
	}
	bad := map[string][]byte{
		"empty":           nil,
		"version 0":       {0, 1, 0, 0, 0},
		"unknown role":    {1, 9, 0, 0, 0},
		"truncated field": {1, 1, 10, 'a'},
		"missing fields":  {1, 1, 0},
		"over 512 bytes":  append([]byte{1, 1}, make([]byte, 600)...),
	}
	for name, in := range bad {
		if _, err := DecodeMeta(in); !errors.Is(err, ErrMeta) {
			t.Errorf("%s: DecodeMeta = %v, want ErrMeta", name, err)
		}
	}
	if _, err := EncodeMeta(Meta{Role: "router"}); !errors.Is(err, ErrMeta) {
		t.Error("unknown role encoded")
	}
	if _, err := EncodeMeta(Meta{Role: RoleCompute, NovaHost: strings.Repeat("h", 256)}); !errors.Is(err, ErrMeta) {
		t.Error("256-byte host name encoded")
	}
}

func FuzzDecodeMeta(f *testing.F) {
	for _, m := range []Meta{{Role: RoleCompute, NovaHost: "compute-1", IHAVersion: "dev"}, {Role: RoleController, APIAddr: "[::1]:7421"}} {
		b, _ := EncodeMeta(m)
		f.Add(b)
	}
	f.Add([]byte{1, 2, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		if m.Role != RoleCompute && m.Role != RoleController {
			t.Fatalf("decoded role %q", m.Role)
		}
		again, err := EncodeMeta(m)
		if err != nil {
			t.Fatalf("decoded meta does not encode: %v", err)
		}
		m2, err := DecodeMeta(again)
		m2.Version = m.Version
		if err != nil || m2 != m {
			t.Fatalf("round trip changed %+v into %+v (%v)", m, m2, err)
		}
	})
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, e := range []envelope{
		{V: 1, Type: msgAccuse, ID: "a/1/1", From: "a", Node: "b"},
		{V: 1, Type: msgLeave, ID: "a/1/2", From: "a", Node: "a"},
		{V: 1, Type: msgPeerAsk, ID: "a/1/3", From: "a", Node: "a"},
		{V: 1, Type: msgPeerAnswer, ID: "b/1/1", From: "b", Node: "a", Ref: "a/1/3", Data: []byte(`{"holder":true}`)},
	} {
		b, _ := e.encode()
		f.Add(b)
	}
	f.Add([]byte(`I{"v":1,"t":"kdump","id":"x","from":"a","node":"h","notice":{"host":"h","relayer":"a"}}`))
	f.Add([]byte(`I{"v":1,"t":"claim","id":"c/1/1","from":"c","node":"c","host":"compute-1","inc":"i","seq":3,"addr":"127.0.0.1:7946","mac":"AAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEnvelope(b)
		if err != nil {
			return
		}
		if e.From == "" || e.Node == "" || e.ID == "" || (e.Type == msgKdump && e.Notice == nil) ||
			(e.Type == msgPeerAnswer && (e.Ref == "" || len(e.Data) == 0)) || (e.Type == msgPeerAsk && e.Node != e.From) {
			t.Fatalf("accepted an incomplete message %+v", e)
		}
		if e.Type == msgKdump && e.Notice.Relayer != e.From {
			t.Fatalf("accepted a kdump notice relayed by %q from %q", e.Notice.Relayer, e.From)
		}
		if e.Type == msgClaim && (e.Host == "" || e.Addr == "" || e.From != e.Node || len(e.MAC) == 0) {
			t.Fatalf("accepted an incomplete claim %+v", e)
		}
		// What a controller computes of any accepted message: its MAC's
		// input, and the check with a key (never verifies a forgery).
		if identity.Check(identity.HostKey([]byte("k"), e.Host), e.MAC, e.macParts()...) && len(e.MAC) > 0 {
			t.Fatalf("a fuzzed MAC verified: %+v", e)
		}
	})
}

func TestProfileFormulaMatchesMemberlist(t *testing.T) {
	p := LANProfile()
	for _, tc := range []struct {
		n        int
		lo, hi   time.Duration
		expected time.Duration
	}{
		{10, 4 * time.Second, 24 * time.Second, 6580 * time.Millisecond},
		{100, 8 * time.Second, 48 * time.Second, 10580 * time.Millisecond},
		{1000, 12 * time.Second, 72 * time.Second, 14580 * time.Millisecond},
		{3, 4 * time.Second, 24 * time.Second, 6580 * time.Millisecond}, // scale floors at 1
	} {
		lo, hi := p.SuspicionTimeouts(tc.n)
		if lo != tc.lo || hi != tc.hi || p.ExpectedDetection(tc.n) != tc.expected {
			t.Errorf("N=%d: min %v max %v expected %v; want %v %v %v", tc.n, lo, hi, p.ExpectedDetection(tc.n), tc.lo, tc.hi, tc.expected)
		}
	}
}

// The tolerated stalls that gossip/doc.go, leader/DESIGN.md and the config
// reference state; TestStallShorterThanToleranceIsNotDead proves the
// default's at 5 members, BenchmarkAgentStall measures them all.
func TestStallToleranceIsMinSuspicionLessTwoProbes(t *testing.T) {
	for _, tc := range []struct {
		p    Profile
		n    int
		want time.Duration
	}{
		{FastProfile(), 5, time.Second}, {FastProfile(), 10, time.Second}, {FastProfile(), 100, 3 * time.Second}, {FastProfile(), 1000, 5 * time.Second},
		{LANProfile(), 10, 2 * time.Second}, {LANProfile(), 100, 6 * time.Second}, {LANProfile(), 1000, 10 * time.Second},
		{Profile{ProbeInterval: time.Second, SuspicionMult: 2}, 3, 0}, // never negative
	} {
		if got := tc.p.StallTolerance(tc.n); got != tc.want {
			t.Errorf("%+v at N=%d: StallTolerance %v, want %v", tc.p, tc.n, got, tc.want)
		}
	}
}

func TestProfileFromKeys(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keys    map[string]string
		want    Profile
		wantErr string
	}{
		{"nothing set is the default, fast", nil, FastProfile(), ""},
		{"default is the default", map[string]string{KeyProfile: "default"}, FastProfile(), ""},
		{"fast base", map[string]string{KeyProfile: "fast"}, FastProfile(), ""},
		{"lan base", map[string]string{KeyProfile: " LAN "}, LANProfile(), ""},
		{"seconds and durations", map[string]string{KeyProbeInterval: "2", KeyProbeTimeout: "750ms", KeySuspicionMult: "5", KeyGossipInterval: "0.3"},
			Profile{2 * time.Second, 750 * time.Millisecond, 5, 300 * time.Millisecond}, ""},
		{"timeout not below interval", map[string]string{KeyProbeTimeout: "500ms"}, Profile{}, KeyProbeTimeout},
		{"timeout not below the lan interval", map[string]string{KeyProfile: "lan", KeyProbeTimeout: "1s"}, Profile{}, KeyProbeTimeout},
		{"interval too small", map[string]string{KeyProbeInterval: "10ms"}, Profile{}, KeyProbeInterval},
		{"mult not a number", map[string]string{KeySuspicionMult: "four"}, Profile{}, KeySuspicionMult},
		{"unknown base", map[string]string{KeyProfile: "wan"}, Profile{}, KeyProfile},
		{"garbage duration", map[string]string{KeyGossipInterval: "soon"}, Profile{}, KeyGossipInterval},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ProfileFromKeys(func(k string) (string, bool) { v, ok := tc.keys[k]; return v, ok })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
