package kdump

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Wire constants of fence_kdump (fence-agents fence_kdump.h).
const (
	Magic       uint32 = 0x1B302A40
	Version     uint32 = 1
	PacketSize         = 8
	DefaultPort        = 7410
)

// Reasons a packet is dropped. Callers branch on them with errors.Is to keep
// per-reason counters.
var (
	// ErrShort: fewer than PacketSize bytes.
	ErrShort = errors.New("kdump: packet shorter than 8 bytes")
	// ErrMagic: the first word is not 0x1B302A40 in either byte order.
	ErrMagic = errors.New("kdump: wrong magic")
)

// Packet is what Decode read of a datagram.
type Packet struct {
	// Order is the byte order the magic was sent in.
	Order binary.ByteOrder
	// Version is the second word in that order (fence_kdump_send sends 1).
	// It is not checked: InstanceHA reads the magic and nothing else, and a
	// site's sender may be a variant.
	Version uint32
	// Extra counts the bytes after the first eight, ignored for the same
	// reason.
	Extra int
}

// Variant reports whether the packet is not exactly what fence-agents'
// fence_kdump_send sends (a longer packet, or another version).
func (p Packet) Variant() bool { return p.Version != Version || p.Extra > 0 }

// Decode reads one datagram as InstanceHA does (R12.1): at least 8 bytes
// whose first word is the magic in either byte order; the version and any
// further bytes are reported, not checked, so every fence_kdump_send
// variant is heard.
func Decode(b []byte) (Packet, error) {
	if len(b) < PacketSize {
		return Packet{}, ErrShort
	}
	for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		if o.Uint32(b[0:4]) == Magic {
			return Packet{Order: o, Version: o.Uint32(b[4:8]), Extra: len(b) - PacketSize}, nil
		}
	}
	return Packet{}, ErrMagic
}

// Encode returns the packet fence_kdump_send would send from a host with byte
// order o.
func Encode(o binary.ByteOrder) []byte {
	b := make([]byte, PacketSize)
	o.PutUint32(b[0:4], Magic)
	o.PutUint32(b[4:8], Version)
	return b
}

// NoticeVersion is the encoding version written by MarshalBinary.
const NoticeVersion = 1

// MaxNoticeSize bounds an encoded Notice so it fits in one gossip packet.
const MaxNoticeSize = 512

// Notice says that a host is sending fence_kdump packets: it crashed and its
// kdump kernel is writing a dump.
type Notice struct {
	// Host is the Nova host name the source address was mapped to.
	Host string `json:"host"`
	// SourceAddr is the IP address the packets came from.
	SourceAddr string `json:"addr"`
	// Relayer is the mesh node name of the agent that received the packets.
	Relayer string `json:"relayer"`
	// Seq numbers the relayer's notices; with Relayer it identifies a notice
	// so that copies arriving by several gossip paths are delivered once.
	Seq uint64 `json:"seq"`
	// First and Last are when the relayer received the first packet of this
	// dump and the latest one (the relayer's clock).
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Packets counts the packets received from this source so far.
	Packets uint64 `json:"packets"`
	// MappedBy says how the relayer tied SourceAddr to Host: "mesh" (the
	// address a member advertises), "map" (kdump_hosts) or "dns" (reverse
	// DNS). Absent from relayers older than this field.
	MappedBy string `json:"mapped_by,omitempty"`
}

// ErrNotice: an encoded Notice that cannot be decoded.
var ErrNotice = errors.New("kdump: bad notice")

type wireNotice struct {
	V int `json:"v"`
	Notice
}

// MarshalBinary encodes n as versioned JSON.
func (n Notice) MarshalBinary() ([]byte, error) {
	b, err := json.Marshal(wireNotice{V: NoticeVersion, Notice: n})
	if err != nil {
		return nil, err
	}
	if len(b) > MaxNoticeSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrNotice, len(b), MaxNoticeSize)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote. Unknown fields are
// ignored so that a later version can add some; a missing version, a version
// this code does not know, an empty host or relayer, or more than
// MaxNoticeSize bytes are errors.
func (n *Notice) UnmarshalBinary(b []byte) error {
	if len(b) > MaxNoticeSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrNotice, len(b), MaxNoticeSize)
	}
	var w wireNotice
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("%w: %w", ErrNotice, err)
	}
	if w.V != NoticeVersion {
		return fmt.Errorf("%w: version %d", ErrNotice, w.V)
	}
	if w.Host == "" || w.Relayer == "" {
		return fmt.Errorf("%w: host and relayer are required", ErrNotice)
	}
	*n = w.Notice
	return nil
}
