//go:build dev

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ihaproject/iha/agent"
	"github.com/ihaproject/iha/pkg/nova"
	"github.com/ihaproject/iha/pkg/version"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/drivers"
	"github.com/ihaproject/iha/fence/redfish/redfishsim"
	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/novasim"
	"github.com/ihaproject/iha/pkg/secret"
)

type devOptions struct {
	keep           bool
	stdout, stderr io.Writer
	// failAfter is when the demo fails a compute (default 4 s).
	failAfter time.Duration
	// password is the simulated Keystone password (default: random); tests
	// plant a canary here.
	password string
}

const devVictim = "compute-1"

// runDev is `make dev`: a simulated cloud, a leader, one failure, and a
// summary of where every instance went.
func runDev(ctx context.Context, o devOptions) int {
	if o.failAfter == 0 {
		o.failAfter = 4 * time.Second
	}
	if o.password == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		o.password = hex.EncodeToString(b)
	}
	log := slog.New(slog.NewTextHandler(o.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dir, err := os.MkdirTemp("", "iha-dev-")
	if err != nil {
		fmt.Fprintf(o.stderr, "iha-leader -dev: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	// Nova at its defaults (report_interval 10 s, service_down_time 60 s)
	// and IHA at its own (DELTA 30, POLL 45): Nova alone would take a
	// minute. One agent per compute in a gossip mesh on 127.0.0.1 (the
	// default profile, fast) and one missed Nova report make it seconds;
	// nothing waits for POLL.
	s := config.Defaults()
	s.NodeName = "dev-leader"
	s.DetectionMode = config.DetectBoth
	s.GossipBind = "127.0.0.1:0"
	// The mesh's keys, made for this run as an operator makes them once
	// (docs/operations.md): dev mode is encrypted, and every agent proves
	// its host, as in production.
	keys, err := newDevKeys(dir)
	if err != nil {
		fmt.Fprintf(o.stderr, "iha-leader -dev: %v\n", err)
		return 1
	}
	s.GossipKeyring = keys.keyring
	s.SmartEvacuation = true
	s.ReservedHosts = true
	s.TaggedAggregates = true
	s.FencingTimeout = 5 * time.Second
	s.EvacuationTimeout = 60 * time.Second
	s.EvacuationGrace = 10 * time.Second
	// Each compute has a simulated Redfish BMC on loopback; the leader fences
	// through the real Redfish driver over HTTP, and a BMC that powers its
	// system off stops that compute in the simulated Nova.
	var fencers fence.Lookup
	mcfg, err := meshConfig(s, "", keys.cluster, log.With("component", "gossip"))
	if err != nil {
		fmt.Fprintf(o.stderr, "iha-leader -dev: %v\n", err)
		return 1
	}
	mesh, err := startMesh(mcfg, s, log.With("component", "gossip"))
	if err != nil {
		fmt.Fprintf(o.stderr, "iha-leader -dev: gossip mesh: %v\n", err)
		return 1
	}
	defer mesh.Close()
	agents := newDevAgents(mesh.mesh.Addr(), dir, keys)
	defer agents.stopAll()
	sb, err := sandbox.New(sandbox.Options{Settings: s, DataDir: dir, Logger: log, BootDelay: 2 * time.Second,
		TrackInterval: 300 * time.Millisecond, WrapFence: func(fence.Lookup) fence.Lookup { return fencers },
		Mesh: mesh, OnBoot: agents.start,
		Sim: novasim.Options{ReportInterval: s.NovaReportInterval, ServiceDownTime: 60 * time.Second, NoStartupDelay: true,
			EvacuationDelay: 1500 * time.Millisecond, Password: o.password}})
	if err != nil {
		fmt.Fprintf(o.stderr, "iha-leader -dev: %v\n", err)
		return 1
	}
	defer sb.Close()
	servers := populate(sb)
	bmcs, reg, err := startBMCs(sb, s, log)
	for _, b := range bmcs {
		defer b.Close()
	}
	if err != nil {
		fmt.Fprintf(o.stderr, "iha-leader -dev: %v\n", err)
		return 1
	}
	fencers = reg
	for _, h := range sb.Hosts() {
		agents.start(h)
	}
	if err := agents.waitAlive(ctx, mesh, len(sb.Hosts())); err != nil {
		fmt.Fprintf(o.stderr, "iha-leader -dev: %v\n", err)
		return 1
	}

	fmt.Fprintf(o.stdout, `IHA dev mode
  a simulated Nova with %d computes and %d servers, one simulated Redfish BMC per compute,
  one iha-agent per compute in a gossip mesh (UDP on 127.0.0.1), and one iha-leader (a
  single-voter Raft group). In %s %s hangs: its agent and its nova-compute go silent.
  Nova alone would call it down after DELTA (%s); watch the leader judge it on the mesh's
  word in seconds, fence it, force it down, evacuate it, power it on and re-enable it.

`, len(sb.Hosts()), len(servers), o.failAfter, devVictim, s.Delta)

	if err := sb.StartLeader(ctx); err != nil {
		fmt.Fprintf(o.stderr, "iha-leader -dev: %v\n", err)
		return 1
	}
	if a := startDevAPI(sb.Node(), sb.Monitor(), s, mesh, o.stdout, log); a != nil {
		sb.SetObserver(a.Observer())
		defer a.Stop()
	}
	select {
	case <-ctx.Done():
		return 0
	case <-time.After(o.failAfter):
	}
	log.Warn("DEMO: " + devVictim + " hangs: its nova-compute stops reporting, its power stays on")
	failedAt := time.Now()
	sb.Hang(devVictim)
	agents.kill(devVictim)

	var allActive time.Duration
	deadline := time.After(2 * time.Minute)
	for {
		rec := sb.FSM().Host(devVictim)
		if allActive == 0 && rec != nil && evacuatedActive(sb, rec) {
			allActive = time.Since(failedAt)
		}
		if rec != nil && (rec.Phase == leader.PhaseDone || rec.Phase == leader.PhaseFailed) && allActive > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return 1
		case <-deadline:
			fmt.Fprintln(o.stdout, "the demo did not finish within 2 minutes; see the log above")
			summary(o.stdout, sb, servers, 0)
			return 1
		case <-time.After(200 * time.Millisecond):
		}
	}
	ok := summary(o.stdout, sb, servers, allActive)
	if rec := sb.FSM().Host(devVictim); rec != nil {
		fmt.Fprintf(o.stdout, "verdict %.1f s after the failure (DELTA %s): %s\n", rec.DetectedAt.Sub(failedAt).Seconds(), s.Delta, rec.Evidence.Note)
		if len(rec.Evidence.Accusers) > 0 {
			fmt.Fprintf(o.stdout, "reported by the mesh members: %s\n", strings.Join(rec.Evidence.Accusers, ", "))
		}
	}
	if o.keep {
		fmt.Fprintln(o.stdout, "\n-dev-keep: still running; Ctrl-C to stop")
		<-ctx.Done()
	}
	if !ok {
		return 1
	}
	return 0
}

// devBMCs are the simulated Redfish BMCs of the demo, by host.
var devBMCs = map[string]*redfishsim.Server{}

// startBMCs starts one Redfish BMC per compute and the registry that
// fences through them with the real Redfish driver.
func startBMCs(sb *sandbox.Sandbox, s config.Settings, log *slog.Logger) ([]*redfishsim.Server, fence.Lookup, error) {
	pwb := make([]byte, 9)
	_, _ = rand.Read(pwb)
	password := hex.EncodeToString(pwb)
	var out []*redfishsim.Server
	var f config.Fencing
	for _, host := range sb.Hosts() {
		b, err := redfishsim.Start(redfishsim.Options{Username: "root", Password: password, TransitionDelay: time.Second})
		if err != nil {
			return out, nil, err
		}
		out = append(out, b)
		devBMCs[host] = b
		h := host
		b.OnTransition(func(t redfishsim.Transition) {
			switch t.To {
			case fence.PowerOff:
				sb.Sim.StopCompute(h)
			case fence.PowerOn:
				sb.Boot(h)
			}
		})
		f.Hosts = append(f.Hosts, config.FenceHost{Name: host, Agent: config.AgentRedfish, IPAddr: b.Host(), IPPort: b.Port(),
			Login: "root", Passwd: secret.New(password), UUID: b.UUIDs()[0], Timeout: 10 * time.Second})
	}
	reg, err := drivers.Registry(f, s, log.With("component", "fence"))
	return out, reg, err
}

type devServer struct {
	id, name, host, why string
	move                bool // expected to be evacuated
}

// populate builds the simulated cloud.
func populate(sb *sandbox.Sandbox) []devServer {
	for i := 0; i < 6; i++ {
		sb.AddCompute(fmt.Sprintf("compute-%d", i), "nova")
	}
	sb.Sim.AddScheduler("controller-0")
	var hosts []string
	for i := 0; i < 6; i++ {
		hosts = append(hosts, fmt.Sprintf("compute-%d", i))
	}
	sb.Sim.AddAggregate(novasim.Aggregate{Name: "ha-cell", Hosts: hosts, Metadata: map[string]string{"evacuable": "true"}})
	// compute-5 is a spare: disabled, reserved for HA.
	reserve(sb, "compute-5")
	tagged := sb.Sim.AddImage(novasim.Image{Name: "cirros-evacuable", Tags: []string{"evacuable"}})
	plain := sb.Sim.AddImage(novasim.Image{Name: "debian-plain"})
	haFlavor := sb.Sim.AddFlavor(novasim.Flavor{Name: "m1.ha", ExtraSpecs: map[string]string{"evacuable": "true"}})
	small := sb.Sim.AddFlavor(novasim.Flavor{Name: "m1.small"})
	var out []devServer
	add := func(name, host, image, flavor, status, why string, move bool) {
		id := sb.Sim.AddServer(novasim.ServerSpec{Name: name, Host: host, ImageID: image, FlavorID: flavor, Status: status})
		out = append(out, devServer{id: id, name: name, host: host, why: why, move: move})
	}
	add("web-1", devVictim, tagged, small, "ACTIVE", "image tagged evacuable", true)
	add("web-2", devVictim, tagged, small, "ACTIVE", "image tagged evacuable", true)
	add("db-1", devVictim, plain, haFlavor, "ACTIVE", "flavor has evacuable=true", true)
	add("batch-1", devVictim, tagged, small, "SHUTOFF", "tagged, SHUTOFF: moves and stays off", true)
	add("scratch-1", devVictim, plain, small, "ACTIVE", "not tagged: stays", false)
	add("paused-1", devVictim, tagged, small, "PAUSED", "PAUSED: never evacuated", false)
	n := 0
	for i := 0; i < 14; i++ {
		host := []string{"compute-0", "compute-2", "compute-3", "compute-4"}[i%4]
		img := tagged
		if i%3 == 0 {
			img = plain
		}
		n++
		add(fmt.Sprintf("app-%d", n), host, img, small, "ACTIVE", "on a healthy host", false)
	}
	return out
}

func reserve(sb *sandbox.Sandbox, host string) {
	svc, _ := sb.Sim.Service(host)
	disabled := "disabled"
	reason := "reserved for instance HA"
	_, _ = sb.Nova.UpdateService(context.Background(), svc.ID, nova.ServiceUpdate{Status: &disabled, DisabledReason: &reason})
}

// evacuatedActive reports whether every server the record planned to move
// is on another host, not rebuilding, in its original status.
func evacuatedActive(sb *sandbox.Sandbox, rec *leader.HostRecord) bool {
	if !rec.Planned {
		return false
	}
	for _, s := range rec.Servers {
		if s.State == leader.ServerSkipped {
			continue
		}
		cur, ok := sb.Sim.Server(s.ID)
		if !ok || cur.Host == rec.Host || cur.TaskState != "" || cur.Status != s.OrigStatus {
			return false
		}
	}
	return true
}

// summary prints where every instance of the failed host went and the
// recovery's events; it reports whether the outcome is the expected one.
func summary(w io.Writer, sb *sandbox.Sandbox, servers []devServer, took time.Duration) bool {
	rec := sb.FSM().Host(devVictim)
	fmt.Fprintf(w, "\n=== %s: recovery %s", devVictim, phaseOf(rec))
	if took > 0 {
		fmt.Fprintf(w, " (failure → every evacuable server running elsewhere: %.1f s)", took.Seconds())
	}
	fmt.Fprintln(w, " ===")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tFROM\tNOW ON\tSTATUS\tWHY")
	ok := true
	for _, s := range servers {
		if s.host != devVictim {
			continue
		}
		cur, _ := sb.Sim.Server(s.id)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.name, s.host, cur.Host, cur.Status, s.why)
		if moved := cur.Host != devVictim; moved != s.move {
			ok = false
		}
	}
	tw.Flush()
	if rec != nil {
		fmt.Fprintf(w, "\nevents of %s:\n", devVictim)
		evs := sb.FSM().Events(0, devVictim, 0)
		sort.Slice(evs, func(i, j int) bool { return evs[i].Seq < evs[j].Seq })
		for _, e := range evs {
			fmt.Fprintf(w, "  %s  %-28s %s\n", e.At.Local().Format("15:04:05.000"), e.Kind, e.Message)
		}
		if b := devBMCs[devVictim]; b != nil {
			var resets []string
			for _, r := range b.Resets() {
				resets = append(resets, fmt.Sprintf("%s (HTTP %d)", r.ResetType, r.Status))
			}
			fmt.Fprintf(w, "\nRedfish BMC of %s (%s) received resets: %s\n", devVictim, b.URL(), strings.Join(resets, ", "))
		}
		if rec.ReservedHost != "" {
			fmt.Fprintf(w, "reserved host enabled for the recovery: %s\n", rec.ReservedHost)
		}
	}
	if ok && phaseOf(rec) == string(leader.PhaseDone) {
		fmt.Fprintln(w, "\nresult: every evacuable instance runs elsewhere, the rest stayed, the host is back in service.")
	} else {
		fmt.Fprintln(w, "\nresult: UNEXPECTED outcome, see above.")
		ok = false
	}
	return ok
}

func phaseOf(rec *leader.HostRecord) string {
	if rec == nil {
		return "not started"
	}
	return string(rec.Phase)
}

// devAgents runs one iha-agent per compute of the demo, in this process,
// over UDP on 127.0.0.1. A hang kills a host's agent; a boot starts it.
type devAgents struct {
	join, dir string
	keys      devKeys
	log       *slog.Logger
	mu        sync.Mutex
	running   map[string]*devAgent
	// addrs is each agent's gossip address: a restarted agent binds it
	// again, as a real compute's agent binds its fixed port (memberlist
	// refuses a dead member's name from a new address until it forgets it).
	addrs map[string]string
}

type devAgent struct {
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan struct{}
}

func newDevAgents(join, dir string, keys devKeys) *devAgents {
	// The agents' own logs are quiet: the leader's tell the story.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	return &devAgents{join: join, dir: dir, keys: keys, log: quiet, running: map[string]*devAgent{}, addrs: map[string]string{}}
}

func (d *devAgents) start(host string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running[host] != nil {
		return
	}
	hostKey, err := d.keys.hostKeyFile(host)
	if err != nil {
		return
	}
	bind := "127.0.0.1:0"
	if a, ok := d.addrs[host]; ok {
		bind = a
	}
	cfg := agent.Config{NovaHost: host, Bind: bind, Join: []string{d.join}, KdumpListen: "off", Keyring: d.keys.keyring,
		HostKey: hostKey, StateDir: filepath.Join(d.dir, "agent-"+host)}
	cfg.Defaults(host)
	a, err := agent.New(cfg, agent.Options{Version: version.Version, Logger: d.log})
	if err != nil && bind != "127.0.0.1:0" {
		cfg.Bind = "127.0.0.1:0" // the port was taken meanwhile
		a, err = agent.New(cfg, agent.Options{Version: version.Version, Logger: d.log})
	}
	if err != nil {
		return
	}
	d.addrs[host] = a.Mesh().Addr()
	ctx, cancel := context.WithCancel(context.Background())
	da := &devAgent{a: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(da.done)
		_ = a.Run(ctx)
	}()
	d.running[host] = da
}

// devKeys are dev mode's keys: a gossip keyring file, a cluster key, and
// each agent's host key file, derived from it as `iha-leader keygen host`
// does.
type devKeys struct {
	dir, keyring string
	cluster      []byte
}

func newDevKeys(dir string) (devKeys, error) {
	k := devKeys{dir: dir, keyring: filepath.Join(dir, "gossip.keyring")}
	gk, err := identity.NewKey()
	if err != nil {
		return k, err
	}
	if k.cluster, err = identity.NewKey(); err != nil {
		return k, err
	}
	return k, gossip.WriteKeyring(k.keyring, [][]byte{gk})
}

// hostKeyFile writes host's key and returns its path.
func (k devKeys) hostKeyFile(host string) (string, error) {
	path := filepath.Join(k.dir, host+".key")
	return path, os.WriteFile(path, []byte(identity.EncodeKey(identity.HostKey(k.cluster, host))), 0o600)
}

// kill silences host's agent without a leave message, as a hang does.
func (d *devAgents) kill(host string) {
	d.mu.Lock()
	da := d.running[host]
	delete(d.running, host)
	d.mu.Unlock()
	if da != nil {
		da.a.Mesh().Shutdown()
		da.cancel()
		<-da.done
	}
}

func (d *devAgents) stopAll() {
	d.mu.Lock()
	all := d.running
	d.running = map[string]*devAgent{}
	d.mu.Unlock()
	for _, da := range all {
		da.cancel()
		<-da.done
	}
}

// waitAlive waits until the controller sees n agents alive.
func (d *devAgents) waitAlive(ctx context.Context, m *meshNode, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		alive := 0
		for _, mm := range m.Snapshot() {
			if mm.State == leader.MeshAlive {
				alive++
			}
		}
		if alive >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("only %d of %d agents joined the mesh", alive, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// devAPIAddr is where dev mode serves the status API (tests use port 0);
// when it is taken, dev mode takes any free port.
var devAPIAddr = "127.0.0.1:7421"

// startDevAPI serves dev mode's status API with a fresh write token and
// the mesh the leader judges by, and prints its URL and a one-line hint.
// Dev mode works without it (nil).
func startDevAPI(node *leader.Node, mon *leader.Monitor, s config.Settings, mesh leader.MeshReporter, w io.Writer, log *slog.Logger) *statusAPI {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	s.APIToken = secret.New(tok)
	a, err := startAPI(node, mon, s, devAPIAddr, mesh, controllerKeys{}, nil, log)
	if err != nil {
		a, err = startAPI(node, mon, s, "127.0.0.1:0", mesh, controllerKeys{}, nil, log)
	}
	if err != nil {
		log.Warn("dev mode: status API not served", "err", err)
		return nil
	}
	fmt.Fprintf(w, "status API: %s   in another terminal: export IHA_ADDR=%s IHA_TOKEN=%s; iha status; iha events -f\n\n", a.URL, a.URL, tok)
	return a
}
