package gossip

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ihaproject/iha/pkg/kdump"
)

// msgType names the mesh's own messages, carried inside memberlist user
// messages (broadcasts and direct sends).
type msgType string

const (
	// msgAccuse: From failed to probe Node (memberlist does not tell its
	// delegates about suspicions, so the accuser says it itself).
	msgAccuse msgType = "accuse"
	// msgRefute: Node was suspected by Accuser and answered.
	msgRefute msgType = "refute"
	// msgLeave: Node is about to leave gracefully.
	msgLeave msgType = "leave"
	// msgKdump: a kdump notice.
	msgKdump msgType = "kdump"
	// msgClaim: an agent's proof, sent to the controllers every
	// ClaimInterval, that node From at Addr speaks for Nova host Host.
	msgClaim msgType = "claim"
	// msgPeerAsk: From asks the members it sends it to a question (peers.go);
	// msgPeerAnswer: the answer, Ref naming the question's ID.
	msgPeerAsk    msgType = "ask"
	msgPeerAnswer msgType = "answer"
)

// envelopePrefix marks our messages; anything else is dropped.
const envelopePrefix = 'I'

// maxEnvelopeSize keeps a message inside one gossip packet.
const maxEnvelopeSize = 1024

// envelope is one of the mesh's own messages. From is the member that
// made it (relays pass it on unchanged). Members that hold a key sign what
// they originate: Host is the Nova host an agent speaks for (empty from a
// controller), Inc the sending process's incarnation, Seq its counter, and
// MAC covers every field (macParts). Controllers with the cluster key
// check it (identity.go).
type envelope struct {
	V       int           `json:"v"`
	Type    msgType       `json:"t"`
	ID      string        `json:"id"`
	From    string        `json:"from"`
	Node    string        `json:"node"`
	Accuser string        `json:"accuser,omitempty"`
	At      time.Time     `json:"at"`
	Notice  *kdump.Notice `json:"notice,omitempty"`
	Host    string        `json:"host,omitempty"`
	Inc     string        `json:"inc,omitempty"`
	Seq     uint64        `json:"seq,omitempty"`
	Addr    string        `json:"addr,omitempty"` // msgClaim: the claimant's gossip address
	MAC     []byte        `json:"mac,omitempty"`
	Ref     string        `json:"ref,omitempty"`
	Data    []byte        `json:"data,omitempty"`
}

// macParts are the fields a MAC covers, in order.
func (e envelope) macParts() []string {
	notice := ""
	if e.Notice != nil {
		b, _ := e.Notice.MarshalBinary()
		notice = hex.EncodeToString(b)
	}
	return []string{"iha mesh message v1", string(e.Type), e.ID, e.From, e.Node, e.Accuser,
		e.At.UTC().Format(time.RFC3339Nano), notice, e.Host, e.Inc, strconv.FormatUint(e.Seq, 10), e.Addr}
}

var errEnvelope = errors.New("gossip: bad message")

func (e envelope) encode() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	if len(b)+1 > maxEnvelopeSize {
		return nil, fmt.Errorf("%w: %d bytes", errEnvelope, len(b)+1)
	}
	return append([]byte{envelopePrefix}, b...), nil
}

// decodeEnvelope parses a message from the network; every field it relies
// on is checked.
func decodeEnvelope(b []byte) (envelope, error) {
	if len(b) < 2 || b[0] != envelopePrefix {
		return envelope{}, fmt.Errorf("%w: no prefix", errEnvelope)
	}
	if len(b) > maxEnvelopeSize {
		return envelope{}, fmt.Errorf("%w: %d bytes", errEnvelope, len(b))
	}
	var e envelope
	if err := json.Unmarshal(b[1:], &e); err != nil {
		return envelope{}, fmt.Errorf("%w: %w", errEnvelope, err)
	}
	if e.V != 1 || e.ID == "" || e.From == "" || e.Node == "" {
		return envelope{}, fmt.Errorf("%w: version, id, from and node are required", errEnvelope)
	}
	switch e.Type {
	case msgAccuse, msgRefute, msgLeave:
	case msgClaim:
		if e.Host == "" || e.Addr == "" || e.From != e.Node || len(e.MAC) == 0 {
			return envelope{}, fmt.Errorf("%w: a claim needs host, addr, a MAC, and node equal to from", errEnvelope)
		}
	case msgPeerAsk:
		if e.Node != e.From {
			return envelope{}, fmt.Errorf("%w: a question is asked by its sender", errEnvelope)
		}
	case msgPeerAnswer:
		if e.Ref == "" || len(e.Data) == 0 {
			return envelope{}, fmt.Errorf("%w: an answer needs ref and data", errEnvelope)
		}
	case msgKdump:
		if e.Notice == nil {
			return envelope{}, fmt.Errorf("%w: kdump without notice", errEnvelope)
		}
		// The relayer named in the notice is the member that sent it: a
		// member cannot put a notice in another member's mouth.
		if e.Notice.Relayer != e.From {
			return envelope{}, fmt.Errorf("%w: kdump notice relayed by %q sent by %q", errEnvelope, e.Notice.Relayer, e.From)
		}
		// Re-check the notice with its own decoder's rules.
		nb, err := e.Notice.MarshalBinary()
		if err != nil {
			return envelope{}, fmt.Errorf("%w: %w", errEnvelope, err)
		}
		if err := new(kdump.Notice).UnmarshalBinary(nb); err != nil {
			return envelope{}, fmt.Errorf("%w: %w", errEnvelope, err)
		}
	default:
		return envelope{}, fmt.Errorf("%w: unknown type %q", errEnvelope, e.Type)
	}
	return e, nil
}
