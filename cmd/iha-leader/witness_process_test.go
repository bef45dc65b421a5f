package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence/redfish/redfishsim"
	"github.com/ihaproject/iha/internal/testaddr"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/heartbeat"
	"github.com/ihaproject/iha/pkg/kdump"
	"github.com/ihaproject/iha/pkg/novasim"
)

// kdumpCloud is one real iha-leader process that fences (DISABLED off)
// against novasim and one simulated Redfish BMC per compute.
type kdumpCloud struct {
	sim     *novasim.Sim
	bmcs    map[string]*redfishsim.Server
	servers map[string]string // name → id
	ctl     *controller
	client  *api.Client
}

// startKdumpCloud starts novasim with hosts (the first two carry a tagged
// server each), a BMC per host, and one controller with keys and env; it
// returns once the controller leads and has polled Nova.
func startKdumpCloud(t *testing.T, hosts []string, keys map[string]string, env ...string) *kdumpCloud {
	t.Helper()
	leaderBin, _ := buildBinaries(t)
	sim, err := novasim.New(novasim.Options{Password: "change-me", NoStartupDelay: true, ReportInterval: time.Second,
		ServiceDownTime: 3 * time.Second, EvacuationDelay: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	kc := &kdumpCloud{sim: sim, bmcs: map[string]*redfishsim.Server{}, servers: map[string]string{}}
	sim.AddScheduler("ctl")
	img := sim.AddImage(novasim.Image{Name: "tagged", Tags: []string{"evacuable"}})
	var fencing strings.Builder
	fencing.WriteString("FencingConfig:\n")
	for i, h := range hosts {
		sim.AddCompute(h, "nova")
		if i < 2 {
			kc.servers["vm-"+h] = sim.AddServer(novasim.ServerSpec{Name: "vm-" + h, Host: h, ImageID: img})
		}
		bmc, err := redfishsim.Start(redfishsim.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(bmc.Close)
		kc.bmcs[h] = bmc
		fmt.Fprintf(&fencing, "  %s:\n    agent: redfish\n    ipaddr: %s\n    ipport: \"%d\"\n    login: admin\n    passwd: password\n    uuid: %s\n    tls: \"false\"\n",
			h, bmc.Host(), bmc.Port(), bmc.UUIDs()[0])
	}
	base := map[string]string{"CHECK_KDUMP": "true", "KDUMP_TIMEOUT": "5", "DELTA": "10", "POLL": "15",
		"NOVA_REPORT_INTERVAL": "1", "TAGGED_AGGREGATES": "false", "FENCING_TIMEOUT": "5", "NOVA_API_TIMEOUT": "5",
		"EVACUATION_GRACE": "5", "THRESHOLD": "100"}
	for k, v := range keys {
		base[k] = v
	}
	c := &controller{name: "ctl-1", raftAddr: testaddr.Loopback(t), apiAddr: testaddr.Loopback(t), extraEnv: append([]string{"INSTANCEHA_DISABLED=False"}, env...)}
	c.writeConfig(t, sim, base)
	writeFile(t, filepath.Join(c.confDir, "fencing.yaml"), []byte(fencing.String()))
	c.start(t, leaderBin)
	kc.ctl = c
	kc.client = &api.Client{Addrs: []string{"http://" + c.apiAddr}, Token: processToken, Actor: "process-test"}
	waitFor(t, 60*time.Second, "the controller to lead and poll Nova", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cl, err := kc.client.Cluster(ctx, false)
		if err != nil {
			return false, err.Error()
		}
		return cl.Leader != "" && strings.Contains(c.log.String(), "poll cycle done") || cl.Leader != "" && strings.Contains(c.log.String(), "reconciler starting"),
			fmt.Sprintf("leader %q", cl.Leader)
	}, c)
	return kc
}

func (kc *kdumpCloud) host(t *testing.T, h string) (api.Host, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, err := kc.client.Host(ctx, h, false)
	if err != nil {
		return api.Host{}, false
	}
	return rec, true
}

func (kc *kdumpCloud) events(t *testing.T, h, kind string) []api.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs, err := kc.client.Events(ctx, api.EventQuery{Host: h}, false)
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	var out []api.Event
	for _, e := range evs.Events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// resets returns the reset types the BMC of h accepted.
func (kc *kdumpCloud) resets(h string) []string {
	var out []string
	for _, r := range kc.bmcs[h].Resets() {
		if r.Status/100 == 2 {
			out = append(out, r.ResetType)
		}
	}
	return out
}

// TestProcessKdumpListenerWithoutMesh is issue 16 item 5 with the real
// binary and the real fence_kdump_send: with CHECK_KDUMP on and GOSSIP_BIND
// off, iha-leader listens on KDUMP_LISTEN as InstanceHA does (reverse DNS:
// 127.0.0.1 is "localhost" in /etc/hosts, the Nova host name here), so the
// dumping host is recovered without a power-off.
func TestProcessKdumpListenerWithoutMesh(t *testing.T) {
	if _, err := os.Stat(fenceKdumpSend); err != nil {
		t.Fatalf("%s missing: run scripts/install-test-deps.sh (package fence-agents): %v", fenceKdumpSend, err)
	}
	if names, _ := net.DefaultResolver.LookupAddr(context.Background(), "127.0.0.1"); len(names) == 0 {
		t.Fatalf("127.0.0.1 has no reverse name on this machine (/etc/hosts lacks localhost)")
	}
	listen := testaddr.Loopback(t)
	kc := startKdumpCloud(t, []string{"localhost", "compute-2", "compute-3", "compute-4"},
		map[string]string{"GOSSIP_BIND": "off", "KDUMP_LISTEN": listen, "DETECTION_MODE": "nova"})
	if !strings.Contains(kc.ctl.log.String(), "kdump listener without a mesh") {
		t.Errorf("the log does not say the kdump listener started:\n%s", lastLines(kc.ctl.log.String(), 20))
	}
	_, port, _ := net.SplitHostPort(listen)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, fenceKdumpSend, "-p", port, "-c", "0", "-i", "1", "127.0.0.1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	kc.sim.StopCompute("localhost")
	kc.sim.StopCompute("compute-2") // no notice: powered off after KDUMP_TIMEOUT
	fenced := func(h string) func() (bool, string) {
		return func() (bool, string) {
			rec, ok := kc.host(t, h)
			return ok && rec.Fence != nil, fmt.Sprintf("%s phase %q", h, rec.Phase)
		}
	}
	waitFor(t, 90*time.Second, "localhost recovered", fenced("localhost"), kc.ctl)
	waitFor(t, 90*time.Second, "compute-2 fenced", fenced("compute-2"), kc.ctl)
	rec, _ := kc.host(t, "localhost")
	if rec.Fence.Method != "kdump" || !rec.Evidence.Kdump || rec.Evidence.KdumpFrom != "127.0.0.1" {
		t.Errorf("localhost: fence %+v, evidence %+v", rec.Fence, rec.Evidence)
	}
	if r := kc.resets("localhost"); len(r) != 0 {
		t.Errorf("the dumping host's BMC got resets %v", r)
	}
	if r := kc.resets("compute-2"); len(r) == 0 || r[0] != "ForceOff" {
		t.Errorf("compute-2 sent no notice; its BMC got %v, want a ForceOff", r)
	}
}

// rogueKdump sends a forged kdump notice naming host to a memberlist gossip
// port as a raw UDP user message, as a stranger on the network can: the
// envelope claims to come from member claimed, with a source address that
// is host's own.
func rogueKdump(t *testing.T, gossipAddr, host, claimed, addr string, seq int) {
	t.Helper()
	now := time.Now().UTC()
	env := map[string]any{"v": 1, "t": "kdump", "id": fmt.Sprintf("%s/rogue/%d", claimed, seq), "from": claimed, "node": host,
		"at": now, "notice": kdump.Notice{Host: host, SourceAddr: addr, Relayer: claimed, Seq: uint64(seq),
			First: now, Last: now, Packets: uint64(seq), MappedBy: leader.KdumpMappedByMesh}}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	const memberlistUserMsg = 8
	// The mesh's label is no secret (GOSSIP_LABEL, "iha" by default): a
	// stranger puts it on its packets, in memberlist's label header
	// (hasLabelMsg 244, the label's length, the label).
	const memberlistHasLabelMsg = 244
	label := config.DefaultGossipLabel
	pkt := append([]byte{memberlistHasLabelMsg, byte(len(label))}, label...)
	pkt = append(pkt, memberlistUserMsg, 'I')
	sendUDP(t, "127.0.0.1", gossipAddr, append(pkt, b...))
}

// TestProcessRogueKdumpOverGossipHoldsNoFenceBack is issue 15's attack 4
// against a real iha-leader with CHECK_KDUMP on and no GOSSIP_KEYRING (GOSSIP_INSECURE): a
// process of the test's own, no member of the mesh, sends raw UDP user
// messages to the leader's gossip port claiming compute-1 (hung, power on)
// is dumping. Before, the leader judged it "kdump", never powered it off and
// evacuated its servers: if compute-1 resumed they would run twice. Now each
// forged notice is a KdumpNoticeRejected event naming the reason, and
// compute-1 is powered off like any failed host before its server moves.
func TestProcessRogueKdumpOverGossipHoldsNoFenceBack(t *testing.T) {
	gossipAddr := testaddr.Loopback(t)
	kc := startKdumpCloud(t, []string{"compute-1", "compute-2", "compute-3", "compute-4"},
		map[string]string{"GOSSIP_BIND": gossipAddr, "KDUMP_LISTEN": "off", "DETECTION_MODE": "both",
			// The mesh is encrypted by default now; the attack is against the
			// insecure switch a lab may set (an encrypted mesh drops the
			// stranger's packets before IHA reads them).
			"GOSSIP_INSECURE": "true"})
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for seq := 1; ; seq++ {
			rogueKdump(t, gossipAddr, "compute-1", "compute-2", "127.0.0.1", seq)
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	kc.sim.StopCompute("compute-1")
	waitFor(t, 90*time.Second, "compute-1 fenced", func() (bool, string) {
		rec, ok := kc.host(t, "compute-1")
		return ok && rec.Fence != nil, fmt.Sprintf("phase %q", rec.Phase)
	}, kc.ctl)
	rec, _ := kc.host(t, "compute-1")
	if rec.Fence.Method == "kdump" || rec.Evidence.Kdump {
		t.Errorf("the forged notice held the power-off back: fence %+v, evidence %+v", rec.Fence, rec.Evidence)
	}
	if r := kc.resets("compute-1"); len(r) == 0 || r[0] != "ForceOff" {
		t.Errorf("compute-1's BMC got %v, want a ForceOff before anything else", r)
	}
	rej := kc.events(t, "compute-1", leader.EventKdumpNoticeRejected)
	if len(rej) == 0 || !strings.Contains(rej[0].Message, "without GOSSIP_KEYRING") || !strings.Contains(rej[0].Message, "relayed by compute-2") {
		t.Errorf("KdumpNoticeRejected events %+v, want one saying the mesh has no keyring", rej)
	}
	if len(rej) > 1 {
		t.Errorf("%d KdumpNoticeRejected events for one forged source, want 1 (one per source and reason)", len(rej))
	}
	waitFor(t, 60*time.Second, "compute-1's server running elsewhere, after the power-off", func() (bool, string) {
		srv, _ := kc.sim.Server(kc.servers["vm-compute-1"])
		return srv.Host != "compute-1" && srv.Status == "ACTIVE", fmt.Sprintf("%s on %s", srv.Status, srv.Host)
	}, kc.ctl)
	if !strings.Contains(kc.ctl.log.String(), "kdump notice rejected") {
		t.Errorf("the leader's log does not show the rejection")
	}
}

// TestProcessHeartbeatKeepsAHostWithoutAnAgentFromBeingFenced is issue 16
// item 4 with the real binary: CHECK_HEARTBEAT with InstanceHA's key file
// (HEARTBEAT_HMAC_KEY_PATH), no mesh. After the listener's grace period
// (HEARTBEAT_TIMEOUT), compute-1's nova-compute stops while a sender of the
// test's own keeps sending it HBV2 heartbeats over UDP: it is reachable
// (HostReachable) and not fenced. compute-2 stops and sends none: fenced.
func TestProcessHeartbeatKeepsAHostWithoutAnAgentFromBeingFenced(t *testing.T) {
	key := []byte("process-test-heartbeat-key-32byt")
	keyFile := filepath.Join(t.TempDir(), "hmac-key")
	writeKey(t, keyFile, key)
	listen := testaddr.Loopback(t)
	kc := startKdumpCloud(t, []string{"compute-1", "compute-2", "compute-3", "compute-4"},
		map[string]string{"GOSSIP_BIND": "off", "DETECTION_MODE": "nova", "CHECK_KDUMP": "false", "CHECK_HEARTBEAT": "true",
			"HEARTBEAT_TIMEOUT": "30", "HEARTBEAT_LISTEN": listen}, "HEARTBEAT_HMAC_KEY_PATH="+keyFile)
	started := time.Now()
	if !strings.Contains(kc.ctl.log.String(), "heartbeat listener started") {
		t.Fatalf("no heartbeat listener in the log:\n%s", lastLines(kc.ctl.log.String(), 20))
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // edpm's timer, every second instead of 30 s
		defer close(done)
		for {
			sendUDP(t, "127.0.0.1", listen, heartbeat.Encode("compute-1.localdomain", time.Now(), key))
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	// During the grace period heartbeats have no effect (R13.4): wait it out.
	if d := 31*time.Second - time.Since(started); d > 0 {
		time.Sleep(d)
	}
	kc.sim.StopCompute("compute-1")
	kc.sim.StopCompute("compute-2")
	waitFor(t, 90*time.Second, "compute-2 fenced", func() (bool, string) {
		rec, ok := kc.host(t, "compute-2")
		return ok && rec.Fence != nil, fmt.Sprintf("phase %q", rec.Phase)
	}, kc.ctl)
	waitFor(t, 30*time.Second, "a HostReachable event for compute-1", func() (bool, string) {
		return len(kc.events(t, "compute-1", leader.EventHostReachable)) > 0, ""
	}, kc.ctl)
	if rec, ok := kc.host(t, "compute-1"); ok && rec.Phase != "" {
		t.Errorf("compute-1 sends heartbeats but has a recovery in phase %s", rec.Phase)
	}
	if r := kc.resets("compute-1"); len(r) != 0 {
		t.Errorf("compute-1's BMC got %v while its heartbeat was fresh", r)
	}
	if r := kc.resets("compute-2"); len(r) == 0 || r[0] != "ForceOff" {
		t.Errorf("compute-2 sent no heartbeat; its BMC got %v, want a ForceOff", r)
	}
}
