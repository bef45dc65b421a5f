package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/sdnotify"
	"github.com/ihaproject/iha/pkg/watchdog"
)

// Agent is the running compute agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	mesh    *gossip.Mesh
	recv    *Receiver
	version string
	// metricsLn serves /metrics (nil when metrics_listen is off).
	metricsLn net.Listener
	// keeper holds the watchdog lease (nil when the watchdog is off).
	keeper *Keeper
}

// Options are what main passes besides the configuration.
type Options struct {
	Version string
	Logger  *slog.Logger
	// Transport replaces gossip sockets (tests only).
	Transport gossip.Transport
	// WatchdogOpen replaces opening the watchdog device, BootID the boot
	// id, LeaseClient the lease's HTTP client (tests only).
	WatchdogOpen func(disarmOnError bool) (watchdog.Device, error)
	BootID       string
	LeaseClient  *http.Client
}

// New binds the gossip and kdump sockets and returns the agent; Run starts it.
func New(cfg Config, opt Options) (*Agent, error) {
	if err := errors.Join(cfg.Validate(), cfg.ValidateMesh()); err != nil {
		return nil, err
	}
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Keyring == "" {
		log.Warn(WarnInsecure)
	}
	var hostKey []byte
	if cfg.HostKey != "" {
		k, err := identity.LoadKey(cfg.HostKey)
		if err != nil {
			return nil, fmt.Errorf("host_key: %w", err)
		}
		hostKey = k
	} else {
		log.Warn(WarnNoHostKey)
	}
	profile, _ := cfg.Profile()
	bindHost, bindPort, _ := net.SplitHostPort(cfg.Bind)
	port, _ := strconv.Atoi(bindPort)
	gc := gossip.Config{
		NodeName: cfg.NodeName, BindAddr: bindHost, BindPort: port, Join: cfg.Join, Label: cfg.Label,
		KeyringFile: cfg.Keyring, HostKey: hostKey, Profile: profile, Logger: log, Transport: opt.Transport,
		Meta: gossip.Meta{Role: gossip.RoleCompute, NovaHost: cfg.NovaHost, IHAVersion: opt.Version},
	}
	if cfg.Advertise != "" {
		h, p, err := net.SplitHostPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("advertise %q: %w", cfg.Advertise, err)
		}
		gc.AdvertiseAddr = h
		gc.AdvertisePort, _ = strconv.Atoi(p)
	}
	mesh, err := gossip.New(gc)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log, mesh: mesh, version: opt.Version}
	if cfg.KdumpListen != "off" {
		conn, err := net.ListenPacket("udp", cfg.KdumpListen)
		if err != nil {
			mesh.Shutdown()
			return nil, fmt.Errorf("kdump listener: %w", err)
		}
		a.recv, err = NewReceiver(ReceiverConfig{Conn: conn, Members: mesh.Members, HostMap: cfg.KdumpHosts,
			Relay: mesh.BroadcastKdump, RelayInterval: cfg.KdumpRelayInterval, Logger: log})
		if err != nil {
			_ = conn.Close()
			mesh.Shutdown()
			return nil, err
		}
	}
	if cfg.Watchdog.Enabled() {
		if a.keeper, err = newKeeper(cfg, opt, mesh, log); err != nil {
			if a.recv != nil {
				_ = a.recv.cfg.Conn.Close()
			}
			mesh.Shutdown()
			return nil, err
		}
	}
	// A metrics port that is taken costs the metrics, never the agent: a
	// compute must stay in the mesh.
	if a.metricsLn, err = listenMetrics(cfg); err != nil {
		log.Warn("no /metrics on this agent", "err", err)
	}
	return a, nil
}

// Mesh is the agent's mesh membership.
func (a *Agent) Mesh() *gossip.Mesh { return a.mesh }

// Receiver is the kdump receiver (nil when disabled).
func (a *Agent) Receiver() *Receiver { return a.recv }

// KdumpAddr is the kdump socket's address, or "" when disabled.
func (a *Agent) KdumpAddr() string {
	if a.recv == nil {
		return ""
	}
	return a.recv.cfg.Conn.LocalAddr().String()
}

// Run runs the agent until ctx ends, then leaves the mesh gracefully.
func (a *Agent) Run(ctx context.Context) error {
	// 1. The kdump receiver: a crash may come before the mesh is joined.
	var wg sync.WaitGroup
	rctx, stopRecv := context.WithCancel(context.Background())
	if a.recv != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.recv.Run(rctx); err != nil {
				a.log.Error("kdump receiver stopped", "err", err)
			}
		}()
	}
	// 1a. The watchdog lease: asked of the controllers over HTTP, it needs
	// no mesh (only its peer rounds do). It stops on ctx, releasing the
	// lease before it disarms, alongside the mesh's graceful leave.
	if a.keeper != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = a.keeper.Run(ctx)
		}()
	}
	// 1b. /metrics, loopback by default; it stops with the receiver.
	if a.metricsLn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.serveMetrics(rctx)
		}()
	}
	// 2. Membership: follow events (logged at debug).
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.followEvents()
	}()
	// 3. Tell systemd once joined.
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.notifyWhenJoined(ctx)
	}()
	// 4. The mesh itself; it returns after a graceful leave once ctx ends.
	err := a.mesh.Run(ctx)
	// 5. Shutdown, in order: systemd first, then the receiver (the mesh is
	// gone, nothing could be relayed), then wait for the helpers.
	_, _ = sdnotify.Notify(sdnotify.Stopping)
	stopRecv()
	wg.Wait()
	a.log.Info("iha-agent stopped", "node", a.mesh.Name())
	return err
}

// READY=1 is sent at once: the sockets are bound and the kdump receiver
// runs, and the join goes on in the background for as long as it takes. A
// compute must never wait for the controllers to boot (nor be restarted in
// a loop by systemd while they are away); STATUS= says whether it joined.
func (a *Agent) notifyWhenJoined(ctx context.Context) {
	if _, err := sdnotify.Notify(sdnotify.Ready + "\nSTATUS=joining the IHA mesh as " + a.mesh.Name() + " through " + strings.Join(a.cfg.Join, ",")); err != nil {
		a.log.Warn("sd_notify failed", "err", err)
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !a.mesh.Joined() {
				continue
			}
			sent, err := sdnotify.Status("joined the IHA mesh as " + a.mesh.Name() + " (nova host " + a.cfg.NovaHost + ")")
			if err != nil {
				a.log.Warn("sd_notify failed", "err", err)
			}
			a.log.Info("iha-agent ready", "node", a.mesh.Name(), "host", a.cfg.NovaHost, "sd_notify", sent)
			return
		}
	}
}

// followEvents logs member changes. (The gate asks only the controllers
// of agent.yaml: what the mesh advertises is never where it looks.)
func (a *Agent) followEvents() {
	for ev := range a.mesh.Events() {
		a.log.Debug("mesh event", "kind", ev.Kind.String(), "node", ev.Node, "host", ev.Meta.NovaHost, "reason", ev.Reason)
	}
}

// ReloadKeyring re-reads the gossip keyring file (SIGHUP).
func (a *Agent) ReloadKeyring() error { return a.mesh.ReloadKeyring() }

// Keeper is the watchdog keeper (nil when the watchdog is off).
func (a *Agent) Keeper() *Keeper { return a.keeper }

// newKeeper builds the watchdog keeper from agent.yaml.
func newKeeper(cfg Config, opt Options, mesh *gossip.Mesh, log *slog.Logger) (*Keeper, error) {
	key, err := LoadHostKey(cfg.HostKey)
	if err != nil {
		return nil, err
	}
	open := opt.WatchdogOpen
	if open == nil {
		w := cfg.Watchdog
		open = func(disarmOnError bool) (watchdog.Device, error) {
			return watchdog.Open(w.Device, w.Timeout, watchdog.Options{AllowFIFO: w.AllowFIFO, DisarmOnError: disarmOnError})
		}
	}
	if cfg.Watchdog.AllowFIFO {
		log.Warn("watchdog.allow_fifo is set: a FIFO may stand for the watchdog (the tests' and the lab's device double); "+
			"in production nothing would reset this host", "device", cfg.Watchdog.Device)
	}
	return NewKeeper(KeeperConfig{Host: cfg.NovaHost, Controllers: cfg.Controllers, Client: opt.LeaseClient, HostKey: key,
		Open: open, Peers: mesh, StateFile: filepath.Join(cfg.StateDir, "watchdog.json"), BootID: opt.BootID, Logger: log})
}
