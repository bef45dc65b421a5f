// Package memnet is an in-memory network for memberlist meshes in tests and
// benchmarks: packets and streams between transports of one process, with
// configurable packet loss, isolation of a node (a frozen or cut-off host)
// and abrupt death (a crashed host), without sockets.
//
// It replaces memberlist's MockNetwork, whose unbuffered channels block a
// sender forever once the receiver has shut down (a crashed peer would hang
// its prober) and which cannot lose packets.
//
// It must never be used outside tests, benchmarks and dev mode.
package memnet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Network connects the transports it creates. Safe for concurrent use.
type Network struct {
	mu       sync.Mutex
	byAddr   map[string]*Transport
	byName   map[string]*Transport
	port     int
	loss     float64
	isolated map[string]bool
	rng      *rand.Rand

	sent, dropped atomic.Uint64
}

// New returns an empty network without loss.
func New() *Network {
	return &Network{
		byAddr:   map[string]*Transport{},
		byName:   map[string]*Transport{},
		isolated: map[string]bool{},
		port:     20000,
		rng:      rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
}

// NewTransport returns a transport for node name with a unique address
// 127.0.0.1:port (the address is only a label: nothing is bound).
func (n *Network) NewTransport(name string) *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.port++
	t := &Transport{
		net:      n,
		name:     name,
		addr:     "127.0.0.1:" + strconv.Itoa(n.port),
		packetCh: make(chan *memberlist.Packet, 4096),
		streamCh: make(chan net.Conn, 256),
	}
	n.byAddr[t.addr] = t
	n.byName[name] = t
	return t
}

// SetLoss makes every packet (not stream) lost with probability p (0–1).
func (n *Network) SetLoss(p float64) {
	n.mu.Lock()
	n.loss = p
	n.mu.Unlock()
}

// Isolate cuts (on=true) or restores every packet and stream to and from
// node name, as if its host froze or its network failed.
func (n *Network) Isolate(name string, on bool) {
	n.mu.Lock()
	n.isolated[name] = on
	n.mu.Unlock()
}

// Stats returns how many packets were sent and how many of those were lost.
func (n *Network) Stats() (sent, dropped uint64) { return n.sent.Load(), n.dropped.Load() }

func (n *Network) route(from *Transport, a memberlist.Address, packet bool) (*Transport, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var dst *Transport
	if a.Name != "" {
		dst = n.byName[a.Name]
	}
	if dst == nil {
		dst = n.byAddr[a.Addr]
	}
	if dst == nil || dst.closed.Load() || from.closed.Load() || n.isolated[from.name] || n.isolated[dst.name] {
		return nil, false
	}
	if packet && n.loss > 0 && n.rng.Float64() < n.loss {
		return nil, false
	}
	return dst, true
}

// Transport implements memberlist.NodeAwareTransport over a Network.
type Transport struct {
	net      *Network
	name     string
	addr     string
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	closed   atomic.Bool
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

type addr string

func (a addr) Network() string { return "memnet" }
func (a addr) String() string  { return string(a) }

// Addr is the transport's address, host:port.
func (t *Transport) Addr() string { return t.addr }

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *Transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	host, port, err := net.SplitHostPort(t.addr)
	if err != nil {
		return nil, 0, err
	}
	p, err := strconv.Atoi(port)
	return net.ParseIP(host), p, err
}

// WriteTo implements memberlist.Transport.
func (t *Transport) WriteTo(b []byte, a string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: a})
}

// WriteToAddress delivers a copy of b unless the packet is lost; like UDP it
// never reports loss.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	t.net.sent.Add(1)
	dst, ok := t.net.route(t, a, true)
	if !ok {
		t.net.dropped.Add(1)
		return now, nil
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: addr(t.addr), Timestamp: now}
	select {
	case dst.packetCh <- p:
	default: // a full socket buffer drops too
		t.net.dropped.Add(1)
	}
	return now, nil
}

// PacketCh implements memberlist.Transport.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport.
func (t *Transport) DialTimeout(a string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: a}, timeout)
}

// errUnreachable is what dialling a dead or isolated node returns.
var errUnreachable = errors.New("memnet: connection refused")

// DialAddressTimeout returns one end of an in-memory pipe whose other end the
// destination receives on its stream channel.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	dst, ok := t.net.route(t, a, false)
	if !ok {
		return nil, fmt.Errorf("dial %s: %w", a.String(), errUnreachable)
	}
	local, remote := net.Pipe()
	select {
	case dst.streamCh <- remote:
		return local, nil
	case <-time.After(timeout):
		_ = local.Close()
		_ = remote.Close()
		return nil, fmt.Errorf("dial %s: timeout", a.String())
	}
}

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown makes the transport unreachable; later packets to it are lost.
func (t *Transport) Shutdown() error {
	t.closed.Store(true)
	return nil
}
