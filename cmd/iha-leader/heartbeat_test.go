package main

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testlog"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/heartbeat"
)

func writeKey(t *testing.T, path string, key []byte) {
	t.Helper()
	// Write then rename, as a secret mount or an operator's tooling does:
	// the listener never reads half a key.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestHeartbeatListenerAcceptsHBV2RotatesKeysAndForwards is issue 16 item 4
// at the wire, over UDP on loopback: InstanceHA's HBV2 packets signed with
// the current or the previous key are accepted (FQDNs stored by short name);
// a wrong key, an old timestamp and a replay are not; what a controller
// accepts reaches the other controller once; a rewritten key file is picked
// up without a restart (InstanceHA restarts its pod for a rotation).
func TestHeartbeatListenerAcceptsHBV2RotatesKeysAndForwards(t *testing.T) {
	old := heartbeatReload
	heartbeatReload = 100 * time.Millisecond
	t.Cleanup(func() { heartbeatReload = old })
	log := testlog.New(t, slog.LevelInfo)
	dir := t.TempDir()
	cur, prev := filepath.Join(dir, "hmac-key"), filepath.Join(dir, "hmac-key-previous")
	k1, k0, k2, rogue := []byte("key-one-key-one-key-one-key-one!"), []byte("key-zero"), []byte("key-two"), []byte("not ours")
	writeKey(t, cur, k1)
	writeKey(t, prev, k0)

	beatsA, beatsB := leader.NewHeartbeatLog(), leader.NewHeartbeatLog()
	var addrA atomic.Value // b's peer, known once a listens
	addrA.Store("")
	b, err := startHeartbeatListener("127.0.0.1:0", []string{cur, prev}, func(string) []string { return []string{addrA.Load().(string)} }, beatsB, log.With("ctl", "b"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	addrB := b.conn.LocalAddr().String()
	a, err := startHeartbeatListener("127.0.0.1:0", []string{cur, prev}, func(string) []string { return []string{addrB} }, beatsA, log.With("ctl", "a"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	addrA.Store(a.conn.LocalAddr().String())

	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second * slowFactor())
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (a: accepted %d forwarded %d replayed %d rejected %v)", what,
					a.accepted.Load(), a.forwarded.Load(), a.replayed.Load(), a.Rejected())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	heard := func(l *leader.HeartbeatLog, host string) bool { _, ok := l.Last(host); return ok }

	to := a.conn.LocalAddr().String()
	now := time.Now()
	first := heartbeat.Encode("compute-1.example.com", now, k1)
	sendUDP(t, "127.0.0.5", to, first)
	wait("compute-1 at both controllers", func() bool { return heard(beatsA, "compute-1") && heard(beatsB, "compute-1.example.com") })
	sendUDP(t, "127.0.0.6", to, heartbeat.Encode("compute-2", now, k0)) // the previous key
	wait("compute-2 (previous key)", func() bool { return heard(beatsA, "compute-2") })

	sendUDP(t, "127.0.0.7", to, heartbeat.Encode("compute-3", now, rogue))
	sendUDP(t, "127.0.0.7", to, heartbeat.Encode("compute-4", now.Add(-3*time.Minute), k1))
	sendUDP(t, "127.0.0.7", to, first) // a replay of a captured packet
	wait("the three bad packets counted", func() bool {
		r := a.Rejected()
		return r["hmac_failed"] == 1 && r["timestamp_invalid"] == 1 && a.replayed.Load() >= 1
	})
	if heard(beatsA, "compute-3") || heard(beatsA, "compute-4") {
		t.Error("a heartbeat with a wrong key or an old timestamp was recorded")
	}
	if n := b.forwarded.Load(); n != 0 {
		t.Errorf("b forwarded %d packets it only received forwarded", n)
	}
	if n := a.forwarded.Load(); n != 2 {
		t.Errorf("a forwarded %d packets, want 2 (one per accepted heartbeat)", n)
	}

	// Rotation: previous ← current, current ← new. No restart.
	writeKey(t, prev, k1)
	writeKey(t, cur, k2)
	wait("compute-5 under the new key", func() bool {
		sendUDP(t, "127.0.0.8", to, heartbeat.Encode("compute-5", time.Now(), k2))
		time.Sleep(50 * time.Millisecond)
		return heard(beatsA, "compute-5")
	})
	sendUDP(t, "127.0.0.8", to, heartbeat.Encode("compute-6", time.Now(), k1)) // now the previous key
	wait("compute-6 under the previous key", func() bool { return heard(beatsA, "compute-6") })
	rej := a.Rejected()["hmac_failed"]
	sendUDP(t, "127.0.0.8", to, heartbeat.Encode("compute-7", time.Now(), k0)) // retired
	wait("the retired key refused", func() bool { return a.Rejected()["hmac_failed"] == rej+1 })
}

// BenchmarkHeartbeatListenerBurst sends one heartbeat from each of 1,000
// computes as fast as loopback takes them (timers that fire together) and
// reports how many the listener accepted (InstanceHA's own burst test kept
// 342 of 1,000 on this kind of machine: W15).
func BenchmarkHeartbeatListenerBurst(b *testing.B) {
	key := []byte("burst-key-burst-key-burst-key-32")
	file := filepath.Join(b.TempDir(), "hmac-key")
	if err := os.WriteFile(file, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		b.Fatal(err)
	}
	const hosts = 1000
	var total, kept float64
	for b.Loop() {
		beats := leader.NewHeartbeatLog()
		l, err := startHeartbeatListener("127.0.0.1:0", []string{file}, func(string) []string { return nil }, beats, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		raddr, _ := net.ResolveUDPAddr("udp", l.conn.LocalAddr().String())
		c, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		for i := range hosts {
			_, _ = c.Write(heartbeat.Encode(fmt.Sprintf("compute-%d", i), now, key))
		}
		_ = c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for l.accepted.Load() < hosts && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		total += hosts
		kept += float64(l.accepted.Load())
		l.Close()
	}
	b.ReportMetric(kept/total*hosts, "accepted/1000")
}
