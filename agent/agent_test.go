package agent

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/kdump"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestAgentsRelayKdumpToTheController builds a small real-UDP mesh on
// loopback: a controller on 127.0.0.1, agent A on 127.0.0.2 and agent B on
// 127.0.0.3. B crashes (no leave); its kdump kernel sends the 8-byte packet
// from 127.0.0.3 to A's kdump port; the controller must receive a notice
// for B's Nova host, relayed by A, whose claim the controller verified.
func TestAgentsRelayKdumpToTheController(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	keyring := filepath.Join(t.TempDir(), "gossip.keyring")
	if err := gossip.WriteKeyring(keyring, [][]byte{key}); err != nil {
		t.Fatal(err)
	}
	cluster, _ := identity.NewKey()
	hostKey := func(host string) string {
		p := filepath.Join(t.TempDir(), host+".key")
		if err := os.WriteFile(p, []byte(identity.EncodeKey(identity.HostKey(cluster, host))), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctl, err := gossip.New(gossip.Config{NodeName: "ctl", BindAddr: "127.0.0.1", Profile: gossip.FastProfile(), Logger: quietLogger(),
		Keys: [][]byte{key}, Label: DefaultLabel, ClusterKey: cluster,
		Meta: gossip.Meta{Role: gossip.RoleController, NovaHost: "ctl", APIAddr: "127.0.0.1:7421"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ctlDone := make(chan struct{})
	go func() { defer close(ctlDone); _ = ctl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ctlDone })

	start := func(name, ip, nova string) (*Agent, context.CancelFunc, chan error) {
		cfg := Config{NodeName: name, NovaHost: nova, Bind: ip + ":0", Join: []string{ctl.Addr()}, KdumpListen: ip + ":0", Keyring: keyring,
			HostKey: hostKey(nova),
			Gossip:  map[string]string{gossip.KeyProfile: "fast"}}
		cfg.Defaults("unused")
		a, err := New(cfg, Options{Version: "test", Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		actx, acancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		done := make(chan struct{})
		go func() { defer close(done); errc <- a.Run(actx) }()
		t.Cleanup(func() { acancel(); a.Mesh().Shutdown(); <-done })
		return a, acancel, errc
	}
	a, stopA, errA := start("agent-a", "127.0.0.2", "compute-a")
	b, _, _ := start("agent-b", "127.0.0.3", "compute-b")
	testkit.WaitFor(t, scale(10*time.Second), "both agents joined", func() bool {
		return a.Mesh().Joined() && b.Mesh().Joined() && len(ctl.Members()) == 3 && len(a.Mesh().Members()) == 3
	})

	testkit.WaitFor(t, scale(5*time.Second), "both agents' claims at the controller", func() bool {
		ok := 0
		for _, m := range ctl.Members() {
			if m.Name == "agent-a" && m.Claim.Host == "compute-a" || m.Name == "agent-b" && m.Claim.Host == "compute-b" {
				ok++
			}
		}
		return ok == 2
	})

	b.Mesh().Shutdown() // B crashes
	sendFrom(t, "127.0.0.3", a.KdumpAddr(), kdump.Encode(binary.LittleEndian))
	select {
	case n := <-ctl.KdumpNotices():
		if n.Host != "compute-b" || n.SourceAddr != "127.0.0.3" || n.Relayer != "agent-a" {
			t.Fatalf("notice = %+v", n)
		}
	case <-time.After(scale(5 * time.Second)):
		t.Fatalf("no kdump notice at the controller; receiver stats %+v; members of a: %+v", a.Receiver().Stats(), a.Mesh().Members())
	}

	// A stops gracefully (SIGTERM in iha-agent): Run returns nil and the
	// controller sees it leave, not die.
	stopA()
	select {
	case err := <-errA:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(scale(10 * time.Second)):
		t.Fatal("agent did not stop")
	}
	testkit.WaitFor(t, scale(5*time.Second), "agent-a left at the controller", func() bool {
		for _, m := range ctl.Members() {
			if m.Name == "agent-a" {
				return m.State == gossip.StateLeft
			}
		}
		return false
	})
}

func TestConfigFileDefaultsAndEnv(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	body := "nova_host: compute-7\njoin: [10.0.0.1:7946]\nkdump_hosts: {192.0.2.7: compute-7}\ngossip: {GOSSIP_PROFILE: fast}\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	c.Defaults("host-x.example.org")
	if err := c.ApplyEnv(func(k string) string { return map[string]string{"UDP_PORT": "7500"}[k] }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "compute-7" || c.KdumpListen != ":7500" || c.GateTimeout != 10*time.Minute || c.GateOnNoAnswer != "start" {
		t.Fatalf("config = %+v", c)
	}
	if p, _ := c.Profile(); p != gossip.FastProfile() {
		t.Fatalf("profile = %+v", p)
	}
	var d Config
	d.Defaults("host-x.example.org")
	if d.NovaHost != "host-x" || d.KdumpListen != ":7410" {
		t.Fatalf("defaults = %+v", d)
	}
	if err := os.WriteFile(p, []byte("nova_hots: typo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(p); err == nil {
		t.Fatal("an unknown key was accepted")
	}
	bad := d
	bad.KdumpHosts = map[string]string{"not-an-ip": "x"}
	bad.GateOnNoAnswer = "maybe"
	if err := bad.Validate(); err == nil {
		t.Fatal("bad config validated")
	}
	if err := d.ApplyEnv(func(string) string { return "99999" }); err == nil {
		t.Fatal("UDP_PORT 99999 accepted")
	}
}

// TestAgentYAMLNamesEveryBadEntryWithItsLine: unknown keys inside gossip:,
// a bad gossip value and every bad kdump_hosts entry are reported at once,
// each with the file and line.
func TestAgentYAMLNamesEveryBadEntryWithItsLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	body := `nova_host: compute-7
gossip:
  GOSSIP_PROFILE: fast
  GOSSIP_PROBE_INTERVAL: soon
  GOSSIP_PROBE_INTERVALL: 1s
kdump_hosts:
  192.0.2.7: compute-7
  not-an-ip: compute-8
  192.0.2.9: "bad host!"
  10.0.0.300: compute-10
`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFile(p)
	if err == nil {
		t.Fatal("loaded")
	}
	for _, want := range []string{
		p + ":4: gossip: GOSSIP_PROBE_INTERVAL",
		p + ":5: gossip: GOSSIP_PROBE_INTERVALL: unknown key",
		p + `:8: kdump_hosts: "not-an-ip" is not an IP address`,
		p + `:9: kdump_hosts: 192.0.2.9: "bad host!" is not a host name`,
		p + `:10: kdump_hosts: "10.0.0.300" is not an IP address`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "192.0.2.7") {
		t.Errorf("a good entry is reported:\n%v", err)
	}
}
