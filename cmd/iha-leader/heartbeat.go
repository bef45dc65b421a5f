package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/heartbeat"
)

// forwardPrefix marks a heartbeat one controller forwards to the others.
// It is not a credential: the packet inside carries the sender's HMAC and
// is checked as if it came from the compute; a forwarded packet is never
// forwarded again.
var forwardPrefix = []byte("IHAF")

// heartbeatListener is CHECK_HEARTBEAT: InstanceHA's heartbeat receiver
// (HBV2, behaviour §13). What it accepts goes to the leader's HeartbeatLog
// and, once, to the other controllers, because the computes send to one
// address and any controller may be the leader.
type heartbeatListener struct {
	log   *slog.Logger
	beats *leader.HeartbeatLog
	conn  net.PacketConn
	files []string
	peers func(port string) []string
	port  string // the bound port
	keys  atomic.Pointer[[][]byte]
	stamp string // the key files' sizes and times when last read

	accepted, forwarded, replayed atomic.Uint64
	rejMu                         sync.Mutex
	rejected                      map[string]uint64 // reason → count (InstanceHA's instanceha_heartbeat_rejected_total)

	stop context.CancelFunc
	done chan struct{}
}

// heartbeatReload is how often the key files are checked for a change (a
// rotation rewrites them; InstanceHA needs a restart for that). Tests
// shorten it.
var heartbeatReload = 10 * time.Second

// startHeartbeatListener binds addr and starts reading. peers returns the
// other controllers' heartbeat addresses (host:port) given this one's port.
func startHeartbeatListener(addr string, files []string, peers func(port string) []string, beats *leader.HeartbeatLog, log *slog.Logger) (*heartbeatListener, error) {
	h := &heartbeatListener{log: log, beats: beats, files: files, peers: peers, rejected: map[string]uint64{}, done: make(chan struct{})}
	if err := h.reload(true); err != nil {
		return nil, err
	}
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("HEARTBEAT_LISTEN %s: %w", addr, err)
	}
	h.conn = conn
	if u, ok := conn.(*net.UDPConn); ok {
		// A thousand computes whose timers fire together must not overflow
		// the default socket buffer (InstanceHA kept 342 of a 1,000-packet
		// burst on a 2-core machine: W15).
		_ = u.SetReadBuffer(4 << 20)
	}
	_, h.port, _ = net.SplitHostPort(conn.LocalAddr().String())
	beats.Started(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() {
		defer close(h.done)
		h.run(ctx)
	}()
	log.Info("heartbeat listener started", "addr", conn.LocalAddr().String(), "keys", len(*h.keys.Load()))
	return h, nil
}

// Close stops the listener.
func (h *heartbeatListener) Close() {
	h.stop()
	_ = h.conn.Close()
	<-h.done
}

// reload reads the key files when they changed. At start an unusable set
// is an error (config.Load has checked it already); later a bad rewrite
// keeps the keys in use and says so.
func (h *heartbeatListener) reload(first bool) error {
	var stamp bytes.Buffer
	for _, f := range h.files {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&stamp, "%s %d %d;", f, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	if !first && stamp.String() == h.stamp {
		return nil
	}
	keys, err := heartbeat.LoadKeys(h.files...)
	if err == nil && len(keys) == 0 {
		err = errors.New("heartbeat: no HMAC key in HEARTBEAT_HMAC_KEY_PATH or HEARTBEAT_HMAC_KEY_PREVIOUS_PATH")
	}
	if err != nil {
		if first {
			return err
		}
		h.log.Error("heartbeat keys not reloaded: keeping the keys in use", "err", err)
		h.stamp = stamp.String()
		return nil
	}
	h.keys.Store(&keys)
	if !first {
		h.log.Warn("heartbeat HMAC keys reloaded", "keys", len(keys))
	}
	h.stamp = stamp.String()
	return nil
}

func (h *heartbeatListener) run(ctx context.Context) {
	buf := make([]byte, 4096)
	lastReload := time.Now()
	for ctx.Err() == nil {
		if time.Since(lastReload) >= heartbeatReload {
			_ = h.reload(false)
			lastReload = time.Now()
		}
		_ = h.conn.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := h.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			h.log.Warn("heartbeat listener: read failed", "err", err)
			continue
		}
		h.handle(buf[:n], from, time.Now())
	}
}

func (h *heartbeatListener) handle(b []byte, from net.Addr, now time.Time) {
	forwarded := bytes.HasPrefix(b, forwardPrefix)
	if forwarded {
		b = b[len(forwardPrefix):]
	}
	beat, err := heartbeat.Parse(b, *h.keys.Load(), now)
	if err != nil {
		if errors.Is(err, heartbeat.ErrMagic) {
			return // not a heartbeat at all: InstanceHA ignores it silently
		}
		h.reject(err, from)
		return
	}
	if err := h.beats.Record(beat.Host, beat.Sent, now); err != nil {
		h.replayed.Add(1) // the same heartbeat forwarded by another controller, or a replay
		return
	}
	h.accepted.Add(1)
	h.log.Debug("heartbeat received", "host", beat.Host, "from", from.String(), "forwarded", forwarded)
	if forwarded {
		return
	}
	fwd := append(append(make([]byte, 0, len(forwardPrefix)+len(b)), forwardPrefix...), b...)
	for _, p := range h.peers(h.port) {
		ua, err := net.ResolveUDPAddr("udp", p)
		if err != nil {
			continue
		}
		if _, err := h.conn.WriteTo(fwd, ua); err == nil {
			h.forwarded.Add(1)
		}
	}
}

// reject counts a rejected heartbeat by InstanceHA's reasons and logs it,
// at most once a minute per reason.
func (h *heartbeatListener) reject(err error, from net.Addr) {
	reason := "invalid"
	switch {
	case errors.Is(err, heartbeat.ErrHMAC), errors.Is(err, heartbeat.ErrNoKeys):
		reason = "hmac_failed"
	case errors.Is(err, heartbeat.ErrTimestamp):
		reason = "timestamp_invalid"
	}
	h.rejMu.Lock()
	h.rejected[reason]++
	n := h.rejected[reason]
	h.rejMu.Unlock()
	if n == 1 || n%100 == 0 {
		h.log.Warn("heartbeat rejected", "reason", reason, "from", from.String(), "err", err, "count", n)
	}
}

// Rejected returns the rejections by reason.
func (h *heartbeatListener) Rejected() map[string]uint64 {
	h.rejMu.Lock()
	defer h.rejMu.Unlock()
	out := make(map[string]uint64, len(h.rejected))
	for k, v := range h.rejected {
		out[k] = v
	}
	return out
}

// raftPeers returns the heartbeat addresses of the other controllers: the
// host of each other voter's Raft address with this controller's heartbeat
// port (every controller listens on the same port).
func raftPeers(node *leader.Node) func(port string) []string {
	return func(port string) []string {
		voters, err := node.Voters()
		if err != nil {
			return nil
		}
		var out []string
		for _, v := range voters {
			if v.ID == node.ID() {
				continue
			}
			if host, _, err := net.SplitHostPort(v.Addr); err == nil {
				out = append(out, net.JoinHostPort(host, port))
			}
		}
		return out
	}
}
