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
	// ErrLong: more than PacketSize bytes; fence_kdump_send never sends more.
	ErrLong = errors.New("kdump: packet longer than 8 bytes")
	// ErrMagic: the first word is not 0x1B302A40 in either byte order.
	ErrMagic = errors.New("kdump: wrong magic")
	// ErrVersion: the magic is right but the version is not 1.
	ErrVersion = errors.New("kdump: unsupported version")
)

// Decode checks one datagram and returns the byte order it was sent in.
func Decode(b []byte) (binary.ByteOrder, error) {
	switch {
	case len(b) < PacketSize:
		return nil, ErrShort
	case len(b) > PacketSize:
		return nil, ErrLong
	}
	for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		if o.Uint32(b[0:4]) != Magic {
			continue
		}
		if v := o.Uint32(b[4:8]); v != Version {
			return nil, fmt.Errorf("%w %d", ErrVersion, v)
		}
		return o, nil
	}
	return nil, ErrMagic
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
