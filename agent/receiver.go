package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/pkg/kdump"
)

// AddrResolver is the reverse-DNS lookup the receiver needs;
// net.DefaultResolver satisfies it.
type AddrResolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	// Conn is the UDP socket to read (the caller binds it, e.g. ":7410").
	Conn net.PacketConn
	// Members returns the mesh members (gossip.Mesh.Members); a source
	// address equal to exactly one member's IP maps to that member's Nova
	// host name (or its node name when it advertises none).
	Members func() []gossip.Member
	// HostMap maps source IPs to Nova host names, checked after the mesh.
	HostMap map[string]string
	// Resolver does the reverse-DNS fallback (default net.DefaultResolver);
	// the name is cut at its first dot, as InstanceHA does.
	Resolver AddrResolver
	// Relay sends a notice to the controllers (gossip.Mesh.BroadcastKdump).
	Relay func(kdump.Notice) error
	// RelayInterval is the least time between two notices for one source
	// (default 5 s; fence_kdump_send repeats every 10 s).
	RelayInterval time.Duration
	// MaxPacketsPerSecond bounds the packets processed, all sources together
	// (default 200); the excess is dropped and counted as flood.
	MaxPacketsPerSecond int
	Logger              *slog.Logger
}

// ReceiverStats counts packets by outcome. Every packet read is counted in
// Received and in exactly one other counter.
type ReceiverStats struct {
	Received   uint64
	Relayed    uint64 // relayed as a notice
	Repeated   uint64 // valid, but the source was relayed less than RelayInterval ago
	Short      uint64
	BadMagic   uint64
	Flood      uint64 // over MaxPacketsPerSecond
	Unresolved uint64 // no host name for the source address
	RelayError uint64
	// Variant counts valid packets that are longer than 8 bytes or carry
	// another version than 1 (a fence_kdump_send variant). They are read
	// as InstanceHA reads them, by their magic alone, so each is also
	// counted in one of the counters above.
	Variant uint64
}

// Receiver reads fence_kdump packets and relays them.
type Receiver struct {
	cfg ReceiverConfig
	log *slog.Logger

	received, relayed, repeated, short, badMagic, flood, unresolved, relayErr, variant atomic.Uint64

	mu      sync.Mutex
	sources map[string]*source
	dns     map[string]dnsEntry
	tokens  float64
	refill  time.Time
}

type source struct {
	host        string
	first, last time.Time
	lastRelay   time.Time
	packets     uint64
}

type dnsEntry struct {
	host string
	at   time.Time
}

// NewReceiver checks cfg and returns a receiver; Run reads.
func NewReceiver(cfg ReceiverConfig) (*Receiver, error) {
	if cfg.Conn == nil || cfg.Relay == nil {
		return nil, errors.New("agent: kdump receiver needs a socket and a relay")
	}
	if cfg.Members == nil {
		cfg.Members = func() []gossip.Member { return nil }
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.RelayInterval <= 0 {
		cfg.RelayInterval = 5 * time.Second
	}
	if cfg.MaxPacketsPerSecond <= 0 {
		cfg.MaxPacketsPerSecond = 200
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Receiver{cfg: cfg, log: cfg.Logger, sources: map[string]*source{}, dns: map[string]dnsEntry{},
		tokens: float64(cfg.MaxPacketsPerSecond), refill: time.Now()}, nil
}

// Stats returns the counters.
func (r *Receiver) Stats() ReceiverStats {
	return ReceiverStats{Received: r.received.Load(), Relayed: r.relayed.Load(), Repeated: r.repeated.Load(),
		Short: r.short.Load(), BadMagic: r.badMagic.Load(), Flood: r.flood.Load(), Unresolved: r.unresolved.Load(),
		RelayError: r.relayErr.Load(), Variant: r.variant.Load()}
}

// Run reads packets until ctx ends, then closes the socket.
func (r *Receiver) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = r.cfg.Conn.Close() })
	defer stop()
	r.log.Info("kdump receiver listening", "addr", r.cfg.Conn.LocalAddr().String())
	buf := make([]byte, 4096)
	for {
		n, from, err := r.cfg.Conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("kdump receiver: %w", err)
			}
			r.log.Warn("kdump receiver: read failed", "err", err)
			continue
		}
		r.handle(ctx, buf[:n], from, time.Now())
	}
}

func (r *Receiver) allow(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	max := float64(r.cfg.MaxPacketsPerSecond)
	r.tokens = min(max, r.tokens+now.Sub(r.refill).Seconds()*max)
	r.refill = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}

func (r *Receiver) handle(ctx context.Context, b []byte, from net.Addr, now time.Time) {
	r.received.Add(1)
	if !r.allow(now) {
		if r.flood.Add(1)%1000 == 1 {
			r.log.Warn("kdump receiver: packet flood, dropping", "dropped", r.flood.Load())
		}
		return
	}
	pkt, err := kdump.Decode(b)
	if err != nil {
		if errors.Is(err, kdump.ErrShort) {
			r.short.Add(1)
		} else {
			r.badMagic.Add(1)
		}
		r.log.Debug("kdump receiver: dropped a malformed packet", "from", from.String(), "err", err)
		return
	}
	if pkt.Variant() {
		r.variant.Add(1)
	}
	ip := sourceIP(from)
	r.mu.Lock()
	src := r.sources[ip]
	if src != nil && now.Sub(src.lastRelay) < r.cfg.RelayInterval {
		src.last = now
		src.packets++
		r.mu.Unlock()
		r.repeated.Add(1)
		return
	}
	r.mu.Unlock()

	host, how := r.resolve(ctx, ip)
	if host == "" {
		r.unresolved.Add(1)
		r.log.Warn("kdump receiver: no host for the source address; not relayed", "addr", ip)
		return
	}
	r.mu.Lock()
	if src = r.sources[ip]; src == nil || src.host != host {
		src = &source{host: host, first: now}
		r.sources[ip] = src
		r.pruneLocked(now)
	}
	src.last, src.lastRelay = now, now
	src.packets++
	n := kdump.Notice{Host: host, SourceAddr: ip, First: src.first.UTC(), Last: now.UTC(), Packets: src.packets, MappedBy: how}
	r.mu.Unlock()
	if err := r.cfg.Relay(n); err != nil {
		r.relayErr.Add(1)
		r.log.Error("kdump receiver: relay failed", "host", host, "err", err)
		return
	}
	r.relayed.Add(1)
	r.log.Info("kdump: host is dumping, notice relayed", "host", host, "addr", ip, "mapped_by", how, "packets", n.Packets)
}

// pruneLocked forgets sources silent for 10 minutes once there are many.
func (r *Receiver) pruneLocked(now time.Time) {
	if len(r.sources) < 4096 {
		return
	}
	for ip, s := range r.sources {
		if now.Sub(s.last) > 10*time.Minute {
			delete(r.sources, ip)
		}
	}
}

func sourceIP(a net.Addr) string {
	if u, ok := a.(*net.UDPAddr); ok {
		if v4 := u.IP.To4(); v4 != nil {
			return v4.String()
		}
		return u.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// resolve maps a source IP to a Nova host: mesh member, configured map,
// reverse DNS. It says which one answered.
func (r *Receiver) resolve(ctx context.Context, ip string) (host, how string) {
	var match []gossip.Member
	for _, m := range r.cfg.Members() {
		if m.IP == ip {
			match = append(match, m)
		}
	}
	if len(match) == 1 {
		if match[0].Meta.NovaHost != "" {
			return match[0].Meta.NovaHost, "mesh"
		}
		return match[0].Name, "mesh"
	}
	if len(match) > 1 {
		r.log.Warn("kdump receiver: several mesh members share the source address; trying the host map", "addr", ip, "members", len(match))
	}
	if h, ok := r.cfg.HostMap[ip]; ok {
		return h, "map"
	}
	r.mu.Lock()
	e, ok := r.dns[ip]
	r.mu.Unlock()
	if ok && time.Since(e.at) < time.Minute {
		if e.host == "" {
			return "", ""
		}
		return e.host, "dns"
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	names, err := r.cfg.Resolver.LookupAddr(lctx, ip)
	var h string
	if err == nil && len(names) > 0 {
		h, _, _ = strings.Cut(strings.TrimSuffix(names[0], "."), ".")
	}
	r.mu.Lock()
	r.dns[ip] = dnsEntry{host: h, at: time.Now()}
	r.mu.Unlock()
	if h == "" {
		return "", ""
	}
	return h, "dns"
}
