package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/kdump"
)

// scale stretches deadlines on a slow or busy machine (testkit.ScaleEnv,
// default 2).
var scale = testkit.Scaler(2)

type relayed struct {
	mu      sync.Mutex
	notices []kdump.Notice
}

func (r *relayed) relay(n kdump.Notice) error {
	r.mu.Lock()
	r.notices = append(r.notices, n)
	r.mu.Unlock()
	return nil
}

func (r *relayed) hosts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, n := range r.notices {
		out = append(out, n.Host)
	}
	return out
}

type fakeResolver map[string]string

func (f fakeResolver) LookupAddr(_ context.Context, ip string) ([]string, error) {
	if n, ok := f[ip]; ok {
		return []string{n}, nil
	}
	return nil, errors.New("no PTR")
}

// startReceiver binds 127.0.0.1:0 and runs a receiver until the test ends.
func startReceiver(t *testing.T, cfg ReceiverConfig) (*Receiver, *relayed, string) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rel := &relayed{}
	cfg.Conn, cfg.Relay = conn, rel.relay
	r, err := NewReceiver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, rel, conn.LocalAddr().String()
}

// sendFrom sends b to addr from a socket bound to src (127.0.0.N), as a
// crashed host's kdump kernel would.
func sendFrom(t *testing.T, src, addr string, b []byte) {
	t.Helper()
	laddr, _ := net.ResolveUDPAddr("udp", src+":0")
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	c, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

func TestReceiverMapsSourcesMeshThenMapThenDNS(t *testing.T) {
	members := []gossip.Member{
		{Name: "agent-2", IP: "127.0.0.2", Meta: gossip.Meta{Role: gossip.RoleCompute, NovaHost: "compute-2"}, State: gossip.StateDead},
		{Name: "agent-3", IP: "127.0.0.3", Meta: gossip.Meta{Role: gossip.RoleCompute}},
		{Name: "twin-a", IP: "127.0.0.6", Meta: gossip.Meta{NovaHost: "a"}},
		{Name: "twin-b", IP: "127.0.0.6", Meta: gossip.Meta{NovaHost: "b"}},
	}
	r, rel, addr := startReceiver(t, ReceiverConfig{
		Members:  func() []gossip.Member { return members },
		HostMap:  map[string]string{"127.0.0.2": "not-this-one", "127.0.0.4": "compute-4", "127.0.0.6": "compute-6"},
		Resolver: fakeResolver{"127.0.0.5": "compute-5.example.org."},
	})
	pkt := kdump.Encode(binary.LittleEndian)
	for _, tc := range []struct{ src, want string }{
		{"127.0.0.2", "compute-2"}, // mesh member's Nova host, before the map
		{"127.0.0.3", "agent-3"},   // mesh member without a Nova host: its node name
		{"127.0.0.4", "compute-4"}, // the configured map
		{"127.0.0.5", "compute-5"}, // reverse DNS, short name
		{"127.0.0.6", "compute-6"}, // two members share the address: the map decides
	} {
		sendFrom(t, tc.src, addr, pkt)
		testkit.WaitFor(t, scale(2*time.Second), "a notice for "+tc.src, func() bool { return len(rel.hosts()) > 0 && rel.hosts()[len(rel.hosts())-1] == tc.want })
	}
	sendFrom(t, "127.0.0.7", addr, pkt) // no PTR, not in any map
	testkit.WaitFor(t, scale(2*time.Second), "the unresolved count", func() bool { return r.Stats().Unresolved == 1 })
	if got := len(rel.hosts()); got != 5 {
		t.Fatalf("relayed %d notices, want 5: %v", got, rel.hosts())
	}
}

func TestReceiverDropsAndCountsMalformedPackets(t *testing.T) {
	r, rel, addr := startReceiver(t, ReceiverConfig{HostMap: map[string]string{"127.0.0.1": "c1"}})
	good := kdump.Encode(binary.LittleEndian)
	for _, b := range [][]byte{
		good[:7],                             // short
		{0xde, 0xad, 0xbe, 0xef, 1, 0, 0, 0}, // wrong magic
	} {
		sendFrom(t, "127.0.0.1", addr, b)
	}
	testkit.WaitFor(t, scale(2*time.Second), "two drops", func() bool { return r.Stats().Received == 2 })
	s := r.Stats()
	if s.Short != 1 || s.BadMagic != 1 || s.Relayed != 0 {
		t.Fatalf("stats = %+v", s)
	}
	// Big-endian senders are accepted.
	sendFrom(t, "127.0.0.1", addr, kdump.Encode(binary.BigEndian))
	testkit.WaitFor(t, scale(2*time.Second), "the big-endian packet relayed", func() bool { return len(rel.hosts()) == 1 })
}

// TestReceiverRelaysFenceKdumpVariants is issue 16 item 6 at the receiver:
// InstanceHA reads the magic and ignores the rest, so a longer packet or
// another version from a sender variant is a notice too (counted as a
// variant), not a drop.
func TestReceiverRelaysFenceKdumpVariants(t *testing.T) {
	r, rel, addr := startReceiver(t, ReceiverConfig{RelayInterval: time.Millisecond,
		HostMap: map[string]string{"127.0.0.2": "c2", "127.0.0.3": "c3", "127.0.0.4": "c4"}})
	good := kdump.Encode(binary.LittleEndian)
	sendFrom(t, "127.0.0.2", addr, append(append([]byte{}, good...), "compute-2\x00"...)) // longer
	sendFrom(t, "127.0.0.3", addr, []byte{0x40, 0x2a, 0x30, 0x1b, 2, 0, 0, 0})            // version 2
	sendFrom(t, "127.0.0.4", addr, []byte{0x40, 0x2a, 0x30, 0x1b, 0, 0, 0, 1})            // version in the other order
	testkit.WaitFor(t, scale(2*time.Second), "three notices", func() bool { return len(rel.hosts()) == 3 })
	if s := r.Stats(); s.Relayed != 3 || s.Variant != 3 || s.Short+s.BadMagic != 0 {
		t.Fatalf("stats = %+v, want 3 variants relayed", s)
	}
}

func TestReceiverRelaysEachSourceOncePerIntervalAndSurvivesFloods(t *testing.T) {
	r, rel, addr := startReceiver(t, ReceiverConfig{
		HostMap:             map[string]string{"127.0.0.2": "c2", "127.0.0.3": "c3"},
		RelayInterval:       time.Hour,
		MaxPacketsPerSecond: 50,
	})
	pkt := kdump.Encode(binary.LittleEndian)
	sendFrom(t, "127.0.0.2", addr, pkt)
	testkit.WaitFor(t, scale(2*time.Second), "the first notice", func() bool { return len(rel.hosts()) == 1 })
	// A flood from one source: at most one more token bucket's worth is
	// processed, the rest is counted as flood; nothing is relayed twice.
	const flood = 2000
	laddr, _ := net.ResolveUDPAddr("udp", "127.0.0.2:0")
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	c, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < flood; i++ {
		_, _ = c.Write(pkt)
	}
	c.Close()
	// The kernel may drop part of the flood itself; wait until what arrived
	// has been counted and the count is stable.
	prev := uint64(0)
	testkit.WaitFor(t, scale(5*time.Second), "the flood to be counted", func() bool {
		s := r.Stats()
		stable := s.Received == prev
		prev = s.Received
		time.Sleep(200 * time.Millisecond)
		return stable && s.Flood > 0 && s.Repeated > 0
	})
	s := r.Stats()
	t.Logf("after a flood of %d: %+v", flood, s)
	if s.Relayed != 1 {
		t.Fatalf("relayed %d notices for one source within the interval", s.Relayed)
	}
	if s.Received != s.Relayed+s.Repeated+s.Flood {
		t.Fatalf("counters do not add up: %+v", s)
	}
	// Another source is still heard once the bucket refills.
	time.Sleep(100 * time.Millisecond)
	sendFrom(t, "127.0.0.3", addr, pkt)
	testkit.WaitFor(t, scale(2*time.Second), "the second source's notice", func() bool { return len(rel.hosts()) == 2 })
}

// TestReceiverAcceptsTheRealFenceKdumpSend runs fence-agents' sender.
func TestReceiverAcceptsTheRealFenceKdumpSend(t *testing.T) {
	const sender = "/usr/libexec/fence-agents/fence_kdump_send"
	if _, err := os.Stat(sender); err != nil {
		t.Fatalf("%s missing: run scripts/install-test-deps.sh (package fence-agents): %v", sender, err)
	}
	r, rel, addr := startReceiver(t, ReceiverConfig{HostMap: map[string]string{"127.0.0.1": "compute-crashed"}, RelayInterval: 500 * time.Millisecond})
	_, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), scale(20*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, sender, "-p", port, "-c", "2", "-i", "1", "-v", "127.0.0.1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fence_kdump_send: %v\n%s", err, out)
	}
	t.Logf("fence_kdump_send: %s", out)
	testkit.WaitFor(t, scale(3*time.Second), "two packets", func() bool { return r.Stats().Received == 2 })
	if s := r.Stats(); s.Relayed != 2 || s.BadMagic+s.Short+s.Variant != 0 {
		t.Fatalf("stats = %+v, want both packets relayed (1 s apart, interval 0.5 s)", s)
	}
	rel.mu.Lock()
	last := rel.notices[1]
	rel.mu.Unlock()
	if last.Host != "compute-crashed" || last.SourceAddr != "127.0.0.1" || last.Packets != 2 || !last.Last.After(last.First) {
		t.Fatalf("notice = %+v", last)
	}
}
