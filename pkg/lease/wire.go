package lease

import (
	"crypto/ed25519"
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/ihaproject/iha/pkg/identity"
)

// Path is the status API's lease endpoint: POST Path + host.
const Path = "/v1/lease/"

// MaxW bounds the watchdog timeout an agent may report.
const MaxW = 10 * time.Minute

// MaxSkew is how far a request's Sent may be from the leader's clock: an
// older request is a replay.
const MaxSkew = 2 * time.Minute

// Request is an agent's POST Path+host: renew my lease. Boot and Seq order
// an agent's requests (Seq is CLOCK_BOOTTIME when sent: it grows across
// agent restarts within a boot); a new boot may only ask unarmed, so an old
// boot's armed request can never re-arm a host. MAC is the host key's
// signature over every other field (RequestMAC).
type Request struct {
	Host  string    `json:"host"`
	Boot  string    `json:"boot"`
	Seq   int64     `json:"seq"`
	Sent  time.Time `json:"sent"`
	Armed bool      `json:"armed"`
	// W is the watchdog's timeout, as the device reports it, when armed.
	W time.Duration `json:"w,omitempty"`
	// Release asks to be disarmed (a clean stop): once it is granted, the
	// agent may close its watchdog with the magic character.
	Release bool `json:"release,omitempty"`
	// Ack is the grant time of the last ticket the agent accepted (one
	// that arrived within MaxRTT). The leader counts a holder as reaching
	// it only through acknowledged grants: a grant the agent dropped as
	// too slow must not make the leader believe the agent vouches "I
	// reach a controller" when it does not.
	Ack   time.Time `json:"ack,omitzero"`
	Nonce string    `json:"nonce"`
	MAC   string    `json:"mac"`
}

// Grant is the leader's answer. Granted: the lease (Params.L) runs from the
// moment the agent sent the request; Ticket proves it to peers. A refusal
// carries Reason. MAC is the host key's signature over the answer and the
// request's nonce.
type Grant struct {
	Host     string  `json:"host"`
	Granted  bool    `json:"granted"`
	Released bool    `json:"released,omitempty"`
	Reason   string  `json:"reason,omitempty"`
	Params   Params  `json:"params"`
	Ticket   *Ticket `json:"ticket,omitempty"`
	// TicketKey is the controllers' public key that signs tickets
	// (base64 ed25519): how agents check each other's tickets.
	TicketKey string `json:"ticket_key,omitempty"`
	Nonce     string `json:"nonce"`
	MAC       string `json:"mac"`
}

// Ticket is a signed statement of a grant: host was granted a lease of L at
// Grant (leader clock), when Holders agents held leases. Agents show it
// when a peer asks whether they reach a controller; nobody but the
// controllers can make one.
type Ticket struct {
	Host    string        `json:"host"`
	Grant   time.Time     `json:"grant"`
	Holders int           `json:"holders"`
	L       time.Duration `json:"l"`
	Sig     string        `json:"sig"`
}

// Errors of the wire format.
var (
	ErrBadRequest = errors.New("lease: bad request")
	ErrSignature  = errors.New("lease: signature does not verify")
	// ErrUnavailable: this controller cannot grant leases now (no cluster
	// key, or no leader).
	ErrUnavailable = errors.New("lease: not available")
)

var hostRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// Check validates a request's fields (not its MAC).
func (r Request) Check() error {
	switch {
	case !hostRE.MatchString(r.Host):
		return fmt.Errorf("%w: %q is not a host name", ErrBadRequest, r.Host)
	case r.Boot == "" || len(r.Boot) > 64:
		return fmt.Errorf("%w: boot id missing or longer than 64 bytes", ErrBadRequest)
	case r.Seq <= 0:
		return fmt.Errorf("%w: seq must be positive", ErrBadRequest)
	case r.Nonce == "" || len(r.Nonce) > 64:
		return fmt.Errorf("%w: nonce missing or longer than 64 bytes", ErrBadRequest)
	case r.Armed && (r.W <= 0 || r.W > MaxW):
		return fmt.Errorf("%w: an armed request needs W in (0, %v], got %v", ErrBadRequest, MaxW, r.W)
	case !r.Armed && r.W != 0:
		return fmt.Errorf("%w: W without armed", ErrBadRequest)
	case r.Sent.IsZero():
		return fmt.Errorf("%w: sent missing", ErrBadRequest)
	}
	return nil
}

// Sum is HMAC-SHA256 of parts under key, each part length-prefixed: the
// construction of the mesh's host keys (identity.Sum), with a first part
// naming what is signed.
func Sum(key []byte, parts ...string) []byte { return identity.Sum(key, parts...) }

func check(key []byte, mac string, parts ...string) bool {
	b, err := base64.StdEncoding.DecodeString(mac)
	return err == nil && len(key) > 0 && hmac.Equal(b, Sum(key, parts...))
}

func (r Request) parts() []string {
	return []string{"iha lease request v1", r.Host, r.Boot, strconv.FormatInt(r.Seq, 10), r.Sent.UTC().Format(time.RFC3339Nano),
		strconv.FormatBool(r.Armed), r.W.String(), strconv.FormatBool(r.Release), r.Ack.UTC().Format(time.RFC3339Nano), r.Nonce}
}

// Sign sets r.MAC with the host key.
func (r *Request) Sign(hostKey []byte) {
	r.MAC = base64.StdEncoding.EncodeToString(Sum(hostKey, r.parts()...))
}

// Verify checks r.MAC with the host key.
func (r Request) Verify(hostKey []byte) error {
	if !check(hostKey, r.MAC, r.parts()...) {
		return fmt.Errorf("%w: request of %s", ErrSignature, r.Host)
	}
	return nil
}

func (g Grant) parts() []string {
	t := ""
	if g.Ticket != nil {
		t = g.Ticket.Sig
	}
	return []string{"iha lease grant v1", g.Host, strconv.FormatBool(g.Granted), strconv.FormatBool(g.Released), g.Reason,
		g.Params.String(), t, g.TicketKey, g.Nonce}
}

// Sign sets g.MAC with the host key.
func (g *Grant) Sign(hostKey []byte) {
	g.MAC = base64.StdEncoding.EncodeToString(Sum(hostKey, g.parts()...))
}

// Verify checks that g answers the request that carried nonce for host,
// signed with the host key, and that a granted ticket is the controllers'
// (with the key the grant names, which the signature covers).
func (g Grant) Verify(hostKey []byte, host, nonce string) error {
	switch {
	case g.Host != host:
		return fmt.Errorf("%w: the answer is for host %q", ErrSignature, g.Host)
	case g.Nonce != nonce:
		return fmt.Errorf("%w: the answer is for another request", ErrSignature)
	case !check(hostKey, g.MAC, g.parts()...):
		return fmt.Errorf("%w: answer for %s (host_key made for another host or cluster key, or a forgery)", ErrSignature, host)
	}
	if !g.Granted {
		return nil
	}
	if err := g.Params.Validate(); err != nil {
		return err
	}
	pub, err := ParseTicketKey(g.TicketKey)
	if err != nil {
		return err
	}
	if g.Ticket == nil || g.Ticket.Host != host {
		return fmt.Errorf("%w: a grant without this host's ticket", ErrSignature)
	}
	return g.Ticket.Verify(pub)
}

func (t Ticket) parts() []byte {
	return Sum(nil, "iha lease ticket v1", t.Host, t.Grant.UTC().Format(time.RFC3339Nano), strconv.Itoa(t.Holders), t.L.String())
}

// SignTicket signs t with the controllers' ticket key.
func SignTicket(priv ed25519.PrivateKey, t Ticket) Ticket {
	t.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, t.parts()))
	return t
}

// Verify checks t's signature.
func (t Ticket) Verify(pub ed25519.PublicKey) error {
	sig, err := base64.StdEncoding.DecodeString(t.Sig)
	if err != nil || len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, t.parts(), sig) {
		return fmt.Errorf("%w: ticket of %s", ErrSignature, t.Host)
	}
	return nil
}

// TicketKeyFrom derives the controllers' ticket key from a secret they
// share (the cluster key): every controller signs with the same key, and
// agents learn only its public half.
func TicketKeyFrom(secret []byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(Sum(secret, "iha lease ticket key v1"))
}

// EncodeTicketKey is the public key as grants carry it.
func EncodeTicketKey(pub ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(pub) }

// ParseTicketKey reads EncodeTicketKey's form.
func ParseTicketKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: ticket key is not an ed25519 public key", ErrSignature)
	}
	return ed25519.PublicKey(b), nil
}
