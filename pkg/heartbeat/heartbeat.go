package heartbeat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Wire constants (InstanceHA's HEARTBEAT_* constants).
const (
	Magic       uint32 = 0x48425632
	MACSize            = sha256.Size
	MinSize            = 4 + 8 + 1 + MACSize
	DefaultPort        = 7411
	// MaxAge and MaxAhead bound a packet's timestamp against the receiver's
	// clock (R13.2: now − ts within [−60 s, +120 s]).
	MaxAge   = 120 * time.Second
	MaxAhead = 60 * time.Second
	// MaxHostLen bounds the host name (InstanceHA's 64).
	MaxHostLen = 64
)

// Reasons a packet is rejected.
var (
	ErrShort     = errors.New("heartbeat: packet shorter than 45 bytes")
	ErrMagic     = errors.New("heartbeat: not an HBV2 packet")
	ErrNoKeys    = errors.New("heartbeat: no HMAC key loaded")
	ErrHMAC      = errors.New("heartbeat: HMAC verification failed")
	ErrTimestamp = errors.New("heartbeat: timestamp out of range")
	ErrHost      = errors.New("heartbeat: invalid host name")
)

var hostRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?$`)

// Beat is an accepted heartbeat.
type Beat struct {
	// Host is the sender's host name cut at its first dot; Name is it whole.
	Host, Name string
	// Sent is the sender's timestamp (its clock, whole seconds).
	Sent time.Time
}

// Parse checks one datagram received at now (the receiver's clock).
func Parse(b []byte, keys [][]byte, now time.Time) (Beat, error) {
	if len(b) < MinSize {
		return Beat{}, ErrShort
	}
	if binary.BigEndian.Uint32(b[:4]) != Magic {
		return Beat{}, ErrMagic
	}
	if len(keys) == 0 {
		return Beat{}, ErrNoKeys
	}
	signed, got := b[:len(b)-MACSize], b[len(b)-MACSize:]
	ok := false
	for _, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write(signed)
		if hmac.Equal(got, m.Sum(nil)) {
			ok = true
			break
		}
	}
	if !ok {
		return Beat{}, ErrHMAC
	}
	ts := binary.BigEndian.Uint64(b[4:12])
	if ts > math.MaxInt64 {
		return Beat{}, fmt.Errorf("%w: %d", ErrTimestamp, ts)
	}
	sent := time.Unix(int64(ts), 0)
	if d := now.Sub(sent); d < -MaxAhead || d > MaxAge {
		return Beat{}, fmt.Errorf("%w: %s off the receiver's clock", ErrTimestamp, d.Round(time.Second))
	}
	raw := b[12 : len(b)-MACSize]
	if !utf8.Valid(raw) {
		return Beat{}, fmt.Errorf("%w: not UTF-8", ErrHost)
	}
	name := strings.TrimSpace(strings.Trim(string(raw), "\x00"))
	if name == "" || len(name) > MaxHostLen || !hostRE.MatchString(name) {
		return Beat{}, fmt.Errorf("%w: %q", ErrHost, truncate(name, MaxHostLen))
	}
	short, _, _ := strings.Cut(name, ".")
	return Beat{Host: short, Name: name, Sent: sent}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Encode builds the packet a compute named host sends at sent, signed with
// key (what edpm-ansible's sender does; tests and simulators use it).
func Encode(host string, sent time.Time, key []byte) []byte {
	b := make([]byte, 12, 12+len(host)+MACSize)
	binary.BigEndian.PutUint32(b[:4], Magic)
	binary.BigEndian.PutUint64(b[4:12], uint64(sent.Unix()))
	b = append(b, host...)
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return m.Sum(b)
}

// ErrKey: a key file that cannot be used.
var ErrKey = errors.New("heartbeat: bad HMAC key file")

// LoadKeys reads the key files in order (current first, then previous). A
// path that is empty, missing or holds only whitespace is skipped, as
// InstanceHA skips it (the previous key is emptied once a rotation is over);
// a file that cannot be read otherwise, or that is not hex, is an error
// naming the file, never its content.
func LoadKeys(paths ...string) ([][]byte, error) {
	var keys [][]byte
	var errs []error
	for _, p := range paths {
		if p == "" {
			continue
		}
		raw, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %w", ErrKey, p, errors.Unwrap(err)))
			continue
		}
		s := strings.TrimSpace(string(raw))
		if s == "" {
			continue
		}
		k, err := hex.DecodeString(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: not a hex string", ErrKey, p))
			continue
		}
		keys = append(keys, k)
	}
	return keys, errors.Join(errs...)
}
