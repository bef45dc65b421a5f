package main

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/internal/testlog"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/kdump"
	"github.com/ihaproject/iha/pkg/novasim"
)

// stubDNS answers reverse lookups from a map, for the listener and the
// leader alike (the machine's resolver knows none of these names).
type stubDNS map[string]string

func (d stubDNS) LookupAddr(_ context.Context, ip string) ([]string, error) {
	if n, ok := d[ip]; ok {
		return []string{n}, nil
	}
	return nil, &net.DNSError{Err: "no PTR record", Name: ip, IsNotFound: true}
}

// sendUDP sends b to addr from the loopback address src, as a crashing
// host's kdump kernel would.
func sendUDP(t *testing.T, src, addr string, b []byte) {
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

// TestKdumpListenerWithoutMeshHearsFQDNHostsAndSenderVariants is issue 16
// items 3, 5 and 6 through the listener iha-leader starts when CHECK_KDUMP
// is on and GOSSIP_BIND off (InstanceHA's own listener, reverse DNS):
//   - c1.example.com (Nova knows it by its FQDN) runs the real
//     fence_kdump_send; reverse DNS gives c1, cut at the first dot as
//     InstanceHA does, and the notice is still found for c1.example.com;
//   - c2 sends a 17-byte packet and c3 a version-2 one (sender variants:
//     InstanceHA reads the magic only);
//   - c4 sends nothing and is powered off after KDUMP_TIMEOUT.
//
// The three dumping hosts are recovered without a power-off.
func TestKdumpListenerWithoutMeshHearsFQDNHostsAndSenderVariants(t *testing.T) {
	if _, err := os.Stat(fenceKdumpSend); err != nil {
		t.Fatalf("%s missing: run scripts/install-test-deps.sh (package fence-agents): %v", fenceKdumpSend, err)
	}
	log := testlog.New(t, slog.LevelInfo)
	s := config.Defaults()
	s.NodeName = "ctl-1"
	s.DetectionMode = config.DetectNova
	s.GossipBind = config.Off
	s.Poll, s.Delta = 15*time.Second, 10*time.Second
	s.FencingTimeout, s.NovaAPITimeout, s.EvacuationGrace = 2*time.Second, 3*time.Second, 3*time.Second
	s.EvacuationTimeout = 20 * time.Second
	s.TaggedAggregates = false
	s.Threshold = 100
	s.CheckKdump, s.KdumpTimeout = true, 5*time.Second

	dns := stubDNS{"127.0.0.1": "c1.example.com.", "127.0.0.2": "c2.example.com.", "127.0.0.3": "c3"}
	kl, err := startKdumpListener("127.0.0.1:0", dns, log.With("component", "kdump"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kl.Close)
	listen := kl.conn.LocalAddr().String()

	sb, err := sandbox.New(sandbox.Options{Settings: s, DataDir: t.TempDir(), Logger: log, Kdump: kl.kdump, Wake: kl.wake, Resolver: dns,
		Sim: novasim.Options{ReportInterval: time.Second, ServiceDownTime: 3 * time.Second, NoStartupDelay: true,
			EvacuationDelay: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sb.Close)
	hosts := []string{"c1.example.com", "c2", "c3", "c4", "c5", "c6"}
	for _, h := range hosts {
		sb.AddCompute(h, "nova")
	}
	sb.Sim.AddScheduler("ctl")
	img := sb.Sim.AddImage(novasim.Image{Name: "tagged", Tags: []string{"evacuable"}})
	for _, h := range hosts[:4] {
		sb.Sim.AddServer(novasim.ServerSpec{Name: "vm-" + h, Host: h, ImageID: img})
	}
	if err := sb.StartLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the first poll ran; the next is 15 s away

	for _, h := range hosts[:4] {
		sb.Hang(h)
	}
	_, port, _ := net.SplitHostPort(listen)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, fenceKdumpSend, "-p", port, "-c", "0", "-i", "1", "127.0.0.1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	long := append(kdump.Encode(binary.LittleEndian), "c2.example\x00"...)
	v2 := []byte{0x40, 0x2a, 0x30, 0x1b, 2, 0, 0, 0}
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() { // the variants repeat, as fence_kdump_send does
		defer close(sent)
		for {
			sendUDP(t, "127.0.0.2", listen, long)
			sendUDP(t, "127.0.0.3", listen, v2)
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-sent })

	recorded := func(h string) bool {
		r := sb.FSM().Host(h)
		return r != nil && r.Fence != nil
	}
	deadline := time.Now().Add(3 * time.Minute)
	for !(recorded("c1.example.com") && recorded("c2") && recorded("c3") && recorded("c4")) {
		if time.Now().After(deadline) {
			t.Fatalf("not every failed host was recovered: receiver %+v, records %v %v %v %v", kl.recv.Stats(),
				sb.FSM().Host("c1.example.com"), sb.FSM().Host("c2"), sb.FSM().Host("c3"), sb.FSM().Host("c4"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, h := range hosts[:3] {
		rec := sb.FSM().Host(h)
		if !rec.Kdump || rec.Fence.Method != "kdump" {
			t.Errorf("%s was dumping but is recorded kdump %v, fence %+v (evidence %+v)", h, rec.Kdump, rec.Fence, rec.Evidence)
		}
		if _, reqs, _ := sb.BMC(h).Counts(); reqs != 0 {
			t.Errorf("%s was dumping but got %d power-off requests", h, reqs)
		}
	}
	if rec := sb.FSM().Host("c4"); rec.Kdump || rec.Fence.Method == "kdump" {
		t.Errorf("c4 sent nothing but is recorded as dumping: %+v", rec.Fence)
	}
	if off, _, _ := sb.BMC("c4").Counts(); off != 1 {
		t.Errorf("c4 powered off %d times, want 1", off)
	}
	if st := kl.recv.Stats(); st.Variant == 0 {
		t.Errorf("receiver stats %+v: the variants were not counted as such", st)
	}
	for _, e := range sb.FSM().Events(0, "", 0) {
		if e.Kind == leader.EventKdumpNoticeRejected {
			t.Errorf("a notice was rejected: %s", e.Message)
		}
	}
	t.Logf("receiver: %+v", kl.recv.Stats())
}
