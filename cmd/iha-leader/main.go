// Command iha-leader runs on each controller: a voter of IHA's Raft group
// that, while it is the leader, judges compute hosts, fences, and
// evacuates. With -dev it runs a whole simulated cloud in one process.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ihaproject/iha/fence/drivers"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/nova"
	"github.com/ihaproject/iha/pkg/sdnotify"
	"github.com/ihaproject/iha/pkg/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: testable, and returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "keygen" {
		return runKeygen(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("iha-leader", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.Bool("dev", false, "run a simulated cloud (novasim, simulated BMCs, this leader) and fail one compute (the demo build only: make dev)")
	devKeep := fs.Bool("dev-keep", false, "with -dev: keep running after the demo instead of exiting")
	showVersion := fs.Bool("version", false, "print the version and exit")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	startFresh := fs.Bool("start-fresh", false, "start even though DATA_DIR/raft.db is empty (its Raft state is lost): the controller starts with no state")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "iha-leader", version.String())
		return 0
	}
	if *logFormat != "text" && *logFormat != "json" {
		fmt.Fprintf(stderr, "iha-leader: -log-format %q: allowed are text and json\n", *logFormat)
		return 2
	}
	if *dev {
		return runDev(ctx, devOptions{keep: *devKeep, stdout: stdout, stderr: stderr})
	}
	return runLeader(ctx, getenv, leaderOptions{logFormat: *logFormat, startFresh: *startFresh}, stderr)
}

// exitDataDir is the exit status when DATA_DIR's Raft state needs an
// operator (a corrupt or empty raft.db). The unit's
// RestartPreventExitStatus=3 keeps systemd from restarting it in a loop:
// restarting cannot fix the file. (1 is every other failure, which systemd
// retries every RestartSec; 2 a usage error.)
const exitDataDir = 3

// leaderOptions are the daemon's command-line choices.
type leaderOptions struct {
	logFormat  string
	startFresh bool
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	lvl := slog.LevelInfo
	switch strings.ToUpper(level) {
	case "DEBUG":
		lvl = slog.LevelDebug
	case "WARNING":
		lvl = slog.LevelWarn
	case "ERROR", "CRITICAL":
		lvl = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// runLeader is the production daemon, wired step by step.
func runLeader(ctx context.Context, getenv func(string) string, opt leaderOptions, stderr io.Writer) int {
	logFormat := opt.logFormat
	boot := newLogger(stderr, logFormat, "INFO")

	// 1. Configuration: InstanceHA's files and environment, all problems at once.
	cfg, err := config.Load(config.OSEnv(), boot)
	if err != nil {
		fmt.Fprintf(stderr, "iha-leader: configuration is not valid:\n%v\n", err)
		return 1
	}
	log := newLogger(stderr, logFormat, cfg.Settings.LogLevel)
	for _, w := range cfg.Warnings {
		log.Warn("configuration warning", "detail", w)
	}
	s := cfg.Settings
	log.Info("iha-leader starting", "version", version.String(), "node", s.NodeName, "raft_addr", s.RaftAddr,
		"data_dir", s.DataDir, "detection_mode", s.DetectionMode, "cloud", cfg.Cloud.String())

	// 1b. The cluster key (CLUSTER_KEY): it checks which host each mesh
	// member speaks for, signs the gate's answers and what this controller
	// forwards to the others.
	var clusterKey []byte
	if s.ClusterKey != "" {
		if clusterKey, err = identity.LoadKey(s.ClusterKey); err != nil {
			fmt.Fprintf(stderr, "iha-leader: CLUSTER_KEY: %v\n", err)
			return 1
		}
		log.Info("cluster key loaded", "file", s.ClusterKey, "key_id", identity.KeyID(clusterKey))
	}

	// 2. Nova: no network I/O here; the reconciler retries until Nova answers.
	nc, err := nova.New(cfg.Cloud, nova.Options{Timeout: s.NovaAPITimeout, Logger: log.With("component", "nova"), UserAgent: "iha-leader/" + version.Version})
	if err != nil {
		fmt.Fprintf(stderr, "iha-leader: nova client: %v\n", err)
		return 1
	}
	defer nc.Close()

	// 3. Fencing: one driver per fencing.yaml entry, validated now, not at
	// the first failure.
	fencers, err := drivers.Registry(cfg.Fencing, s, log.With("component", "fence"))
	if err != nil {
		fmt.Fprintf(stderr, "iha-leader: fencing: %v\n", err)
		return 1
	}

	// 4. Raft: this controller's vote and its replica of every recovery.
	peers, err := parsePeers(s.RaftPeers)
	if err != nil {
		fmt.Fprintf(stderr, "iha-leader: RAFT_PEERS: %v\n", err)
		return 1
	}
	// Mutual TLS between controllers when RAFT_TLS_* is set: all three or
	// none (config checks this too; LoadTLS refuses half a set by name).
	var raftTLS *tls.Config
	if s.RaftTLSCert != "" || s.RaftTLSKey != "" || s.RaftTLSCA != "" {
		if raftTLS, err = leader.LoadTLS(s.RaftTLSCert, s.RaftTLSKey, s.RaftTLSCA); err != nil {
			fmt.Fprintf(stderr, "iha-leader: %v\n", err)
			return 1
		}
		if s.APITLSCert == "" {
			log.Warn("joins through this controller will be refused: RAFT_TLS_* is set but the status API serves plain HTTP, "+
				"and a join must present its certificate over TLS (set API_TLS_CERT and API_TLS_KEY)", "api_addr", s.APIAddr)
		}
	} else {
		log.Warn(warnRaftPlain, "raft_addr", s.RaftAddr, "joins", joinProof(s))
	}
	// RAFT_JOIN: this controller is added to a running group by its
	// leader, and never bootstraps a group of its own.
	joining := len(s.RaftJoin) > 0
	if joining && len(peers) > 0 {
		log.Warn("RAFT_PEERS is ignored: RAFT_JOIN is set, so this controller joins the running group", "raft_join", strings.Join(s.RaftJoin, ","))
	}
	node, err := leader.OpenNode(leader.NodeConfig{ID: s.NodeName, Addr: s.RaftAddr, DataDir: s.DataDir, Peers: peers,
		NoBootstrap: joining, TLS: raftTLS, JoinToken: s.APIToken, StartFresh: opt.startFresh, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "iha-leader: %v\n", err)
		if errors.Is(err, leader.ErrDataDir) {
			fmt.Fprintf(stderr, "iha-leader: exit status %d: systemd does not restart on it (the file needs you, not a retry)\n", exitDataDir)
			return exitDataDir
		}
		return 1
	}
	log.Info("raft open", "node", s.NodeName, "raft_addr", node.Addr(), "tls", raftTLS != nil, "had_state", node.HadState(), "joining", joining && !node.HadState())

	// 4b. The gossip mesh: this controller joins it (GOSSIP_BIND) to see
	// every compute's agent, and with CHECK_KDUMP listens for fence_kdump
	// (KDUMP_LISTEN) besides the notices the agents relay. Every controller
	// is a member, so a new leader already knows what the mesh saw.
	var mesh *meshNode
	if s.MeshEnabled() {
		mcfg, err := meshConfig(s, advertisedAPI(s.APIAddr, s), clusterKey, log.With("component", "gossip"))
		if err == nil {
			mesh, err = startMesh(mcfg, s, log.With("component", "gossip"))
		}
		if err != nil {
			fmt.Fprintf(stderr, "iha-leader: gossip mesh: %v\n", err)
			_ = node.Close()
			return 1
		}
		g := s.Gossip()
		log.Info("gossip mesh joined as a controller", "bind", s.GossipBind, "join", strings.Join(s.GossipJoin, ","),
			"label", s.GossipLabel, "encrypted", s.GossipKeyring != "", "identities_checked", clusterKey != nil, "probe_interval", g.ProbeInterval,
			"suspicion_mult", g.SuspicionMult, "kdump_listen", kdumpListen(s))
	} else {
		log.Warn("no gossip mesh (GOSSIP_BIND off): every host is judged by InstanceHA's rule (DELTA)")
	}
	rcfg := leader.ReconcilerConfig{Settings: s, Nova: nc, Fencers: fencers, Store: node, Logger: log.With("component", "reconciler")}
	var meshRep leader.MeshReporter
	if mesh != nil {
		rcfg.Mesh, rcfg.Wake, rcfg.Kdump, meshRep = mesh, mesh.Wake(), mesh.KdumpLog(), mesh
	}
	// 4c. CHECK_KDUMP without a mesh: this controller's own fence_kdump
	// listener, as InstanceHA's (the source address mapped by reverse DNS).
	var kl *kdumpListener
	if mesh == nil && s.CheckKdump {
		if kl, err = startKdumpListener(s.KdumpListen, nil, log.With("component", "kdump")); err != nil {
			fmt.Fprintf(stderr, "iha-leader: %v\n", err)
			_ = node.Close()
			return 1
		}
		defer kl.Close()
		rcfg.Wake, rcfg.Kdump = kl.wake, kl.kdump
		log.Info("kdump listener without a mesh", "kdump_listen", kl.conn.LocalAddr().String())
	}
	// 4d. CHECK_HEARTBEAT: InstanceHA's heartbeat receiver. What this
	// controller accepts it forwards to the other controllers (same port),
	// so a new leader knows which hosts still send.
	if s.CheckHeartbeat {
		beats := leader.NewHeartbeatLog()
		hl, err := startHeartbeatListener(s.HeartbeatListen, cfg.HeartbeatKeyFiles, raftPeers(node), beats, log.With("component", "heartbeat"))
		if err != nil {
			fmt.Fprintf(stderr, "iha-leader: %v\n", err)
			_ = node.Close()
			return 1
		}
		defer hl.Close()
		rcfg.Heartbeats = beats
	}

	// 4c. The decision log (DECISION_LOG): what each term decided on and
	// decided, for `iha replay`. It wraps the reconciler's four seams.
	var rec *leader.Recorder
	if s.DecisionLog != config.Off {
		rec, err = leader.OpenRecorder(leader.DecisionLogOptions{Dir: s.DecisionLog, MaxBytes: int64(s.DecisionLogMaxMB) << 20,
			Files: s.DecisionLogFiles, Node: s.NodeName, Build: version.String(), Logger: log.With("component", "decision-log")})
		if err != nil {
			fmt.Fprintf(stderr, "iha-leader: DECISION_LOG: %v\n", err)
			_ = node.Close()
			return 1
		}
		defer func() {
			if err := rec.Close(); err != nil {
				log.Error("decision log close", "err", err)
			}
		}()
		rcfg.Nova, rcfg.Store, rcfg.Mesh = rec.Nova(rcfg.Nova), rec.Store(rcfg.Store), rec.Mesh(rcfg.Mesh)
		log.Info("decision log on", "dir", s.DecisionLog, "max_mb", s.DecisionLogMaxMB, "files", s.DecisionLogFiles)
	}
	if s.Shadow {
		log.Warn("SHADOW: this leader decides and records but never powers a host off nor writes to Nova; `iha shadow off` (or SHADOW false) to act")
	}

	// 5. The leader loop: one reconciler per term, after a Barrier. The
	// status API observes its poll cycles (metrics, /v1/hosts), so the API
	// is built before the loop starts.
	var observer leader.Observer
	mon := leader.NewMonitor(node, func() *leader.Reconciler {
		c := rcfg
		c.Observer = observer
		if rec != nil {
			rec.Term(s, time.Now())
			if observer != nil {
				c.Observer = leader.Observers(observer, rec.Observer())
			} else {
				c.Observer = rec.Observer()
			}
		}
		return leader.NewReconciler(c)
	}, log)
	// Followers forward to the address the leader records at each term.
	mon.APIAddr = s.APIAddr

	// 5b. Watchdog leases (CLUSTER_KEY): armed computes renew them at
	// POST /v1/lease/{host}; followers forward to the leader, which alone
	// commits grants. Without the key the endpoint answers 503 and an
	// armed agent never feeds its watchdog (it asks unarmed first).
	leaseCtx, stopLeases := context.WithCancel(context.Background())
	leasesDone := make(chan struct{})
	leases, err := startLeases(leaseCtx, leasesDone, node, s, clusterKey, log.With("component", "lease"))
	if err != nil {
		stopLeases()
		fmt.Fprintf(stderr, "iha-leader: %v\n", err)
		if mesh != nil {
			mesh.Close()
		}
		_ = node.Close()
		return 1
	}

	// 6. The status API: /v1 (reads, operator commands, events), /metrics,
	// /healthz, /readyz, the agents' gate and the Raft join. A node that
	// cannot serve it still votes and, when leader, recovers hosts.
	apiSrv, err := startAPI(node, mon, s, s.APIAddr, meshRep, controllerKeys{cluster: clusterKey, raftTLS: raftTLS}, leases, log)
	if err != nil {
		log.Error("status API not served", "addr", s.APIAddr, "err", err)
	} else {
		observer = apiSrv.Observer()
		log.Info("status API listening", "url", apiSrv.URL, "tls", s.APITLSCert != "", "write_token", !s.APIToken.IsZero(), "read_token", !s.APIReadToken.IsZero())
	}
	monCtx, stopMon := context.WithCancel(context.Background())
	monDone := make(chan struct{})
	go func() {
		defer close(monDone)
		_ = mon.Run(monCtx)
	}()

	// 6b. Join (RAFT_JOIN, first start only): ask the members listed to
	// add this controller as a voter, retried with backoff until one
	// accepts or the process stops. A node with Raft state is a member
	// already (or was removed on purpose: it must not add itself back).
	joinCtx, stopJoin := context.WithCancel(context.Background())
	joinDone := make(chan struct{})
	go func() {
		defer close(joinDone)
		if !joining || node.HadState() {
			return
		}
		if err := joinGroup(joinCtx, s, raftTLS, s.RaftAddr, log); err == nil {
			_, _ = sdnotify.Status("joined the Raft group; voting, API on " + s.APIAddr)
		}
	}()

	// 7. Tell systemd (Type=notify) that this controller is up: it votes
	// and serves; leadership and Nova come when they come.
	if _, err := sdnotify.Notify(sdnotify.Ready + "\nSTATUS=voting in the Raft group, API on " + s.APIAddr); err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}

	<-ctx.Done()
	log.Info("shutting down")
	_, _ = sdnotify.Notify(sdnotify.Stopping)
	// Shutdown order: stop serving, stop acting (the reconciler finishes its
	// current Raft command), then leave Raft, handing leadership over first.
	stopJoin()
	<-joinDone
	if apiSrv != nil {
		apiSrv.Stop()
	}
	stopMon()
	<-monDone
	stopLeases()
	<-leasesDone
	if mesh != nil {
		mesh.Close() // a graceful leave: the agents see "left", not "dead"
	}
	if err := node.Shutdown(); err != nil {
		log.Error("raft shutdown", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// joinGroup runs leader.JoinCluster through RAFT_JOIN. With Raft TLS the
// request presents this controller's certificate (the members check it
// against RAFT_TLS_CA), and trusts the members' status API certificates
// if they chain to RAFT_TLS_CA or to the system roots.
func joinGroup(ctx context.Context, s config.Settings, raftTLS *tls.Config, raftAddr string, log *slog.Logger) error {
	var cl *tls.Config
	if raftTLS != nil {
		cl = raftTLS.Clone()
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if pem, err := os.ReadFile(s.RaftTLSCA); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
		cl.RootCAs = pool
	}
	log.Info("joining the Raft group", "via", strings.Join(s.RaftJoin, ","), "node", s.NodeName, "raft_addr", raftAddr, "tls", cl != nil)
	err := leader.JoinCluster(ctx, leader.JoinOptions{Targets: s.RaftJoin, ID: s.NodeName, Addr: raftAddr, TLS: cl,
		Token: s.APIToken, Logger: log.With("component", "join")})
	if err != nil {
		log.Warn("not joined", "err", err)
	}
	return err
}

// warnRaftPlain is logged at every start without RAFT_TLS_*.
const warnRaftPlain = "raft without TLS (RAFT_TLS_* not set): anyone who reaches RAFT_ADDR can take part in Raft; set RAFT_TLS_CERT, RAFT_TLS_KEY and RAFT_TLS_CA"

// joinProof says what a joining controller must present to this one.
func joinProof(s config.Settings) string {
	switch {
	case s.RaftTLSCert != "":
		return "a certificate of RAFT_TLS_CA"
	case !s.APIToken.IsZero():
		return "the write token (API_TOKEN)"
	}
	return "refused (no RAFT_TLS_* and no API_TOKEN)"
}

func parsePeers(list []string) ([]leader.Peer, error) {
	var out []leader.Peer
	for _, p := range list {
		id, addr, ok := strings.Cut(p, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("%q: want id=host:port", p)
		}
		out = append(out, leader.Peer{ID: id, Addr: addr})
	}
	return out, nil
}
