// Command iha-agent runs on every compute: it keeps the host in IHA's
// gossip mesh, relays fence_kdump notices to the controllers, and, as
// `iha-agent gate` (ExecStartPre of nova-compute), holds nova-compute back
// until the leader says this host's recovery is finished.
//
// It holds no Nova or BMC credentials and must never import the packages
// that use them (see imports_test.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ihaproject/iha/agent"
	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the daemon failed, or the gate refused until its time ran out
	exitUsage   = 2
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "--version", "-version", "version":
			fmt.Fprintf(stdout, "iha-agent %s\n", version.String())
			return exitOK
		case "gate":
			return runGate(ctx, args[1:], stdout, stderr)
		}
	}
	return runDaemon(ctx, args, stderr)
}

// listFlag is a comma-separated, repeatable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// loadConfig reads the file (a missing default file is fine) and applies
// the flags that were set, the defaults and the environment.
func loadConfig(path string, explicit bool, set func(*agent.Config)) (agent.Config, error) {
	var cfg agent.Config
	c, err := agent.LoadFile(path)
	switch {
	case err == nil:
		cfg = c
	case errors.Is(err, os.ErrNotExist) && !explicit:
	default:
		return cfg, err
	}
	set(&cfg)
	host, _ := os.Hostname()
	cfg.Defaults(host)
	if err := cfg.ApplyEnv(os.Getenv); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func runDaemon(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("iha-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", agent.DefaultConfigFile, "configuration file (YAML)")
	nodeName := fs.String("node-name", "", "mesh node name (default: the Nova host name)")
	novaHost := fs.String("nova-host", "", "nova-compute's host name, as nova.conf [DEFAULT] host (default: short host name)")
	bind := fs.String("bind", "", "gossip address (default 0.0.0.0:7946)")
	advertise := fs.String("advertise", "", "gossip address peers use, when it differs from -bind")
	keyring := fs.String("keyring", "", "gossip keyring file (JSON array of base64 keys, primary first)")
	hostKey := fs.String("host-key", "", "this host's key file (iha-leader keygen host NOVA_HOST)")
	label := fs.String("label", "", "gossip cluster label")
	kdumpListen := fs.String("kdump-listen", "", `fence_kdump UDP address (default ":7410", env UDP_PORT sets the port; "off" disables)`)
	stateDir := fs.String("state-dir", "", "unused (kept so that older command lines still work)")
	profile := fs.String("gossip-profile", "", "failure detector profile: fast (the default) or lan; the controllers' GOSSIP_PROFILE")
	logLevel := fs.String("log-level", "", "debug, info, warn or error")
	metricsListen := fs.String("metrics-listen", "", `address of /metrics (default 127.0.0.1:7422; "off" serves nothing)`)
	var join, kdumpHosts listFlag
	fs.Var(&join, "join", "gossip addresses to join, host:port (comma-separated or repeated)")
	fs.Var(&kdumpHosts, "kdump-host", "IP=host mapping for kdump sources outside the mesh (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "iha-agent: unexpected argument %q (subcommands: gate, --version)\n", fs.Arg(0))
		return exitUsage
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := loadConfig(*configPath, explicit, func(c *agent.Config) {
		setIf(&c.NodeName, *nodeName)
		setIf(&c.NovaHost, *novaHost)
		setIf(&c.Bind, *bind)
		setIf(&c.Advertise, *advertise)
		setIf(&c.Keyring, *keyring)
		setIf(&c.HostKey, *hostKey)
		setIf(&c.Label, *label)
		setIf(&c.KdumpListen, *kdumpListen)
		setIf(&c.StateDir, *stateDir)
		setIf(&c.LogLevel, *logLevel)
		setIf(&c.MetricsListen, *metricsListen)
		if len(join) > 0 {
			c.Join = join
		}
		for _, kv := range kdumpHosts {
			ip, host, _ := strings.Cut(kv, "=")
			if c.KdumpHosts == nil {
				c.KdumpHosts = map[string]string{}
			}
			c.KdumpHosts[ip] = host
		}
		if *profile != "" {
			if c.Gossip == nil {
				c.Gossip = map[string]string{}
			}
			c.Gossip[gossip.KeyProfile] = *profile
		}
	})
	if err == nil {
		err = cfg.ValidateMesh()
	}
	if err != nil {
		fmt.Fprintf(stderr, "iha-agent: configuration: %v\n", err)
		return exitUsage
	}
	log := newLogger(stderr, cfg.LogLevel)

	// 1. Bind the sockets and create the mesh node.
	a, err := agent.New(cfg, agent.Options{Version: version.Version, Logger: log})
	if err != nil {
		log.Error("iha-agent cannot start", "err", err)
		return exitFailure
	}
	log.Info("iha-agent starting", "version", version.String(), "node", cfg.NodeName, "host", cfg.NovaHost,
		"gossip", a.Mesh().Addr(), "kdump", a.KdumpAddr(), "metrics", a.MetricsAddr(), "join", strings.Join(cfg.Join, ","))
	// 2. SIGHUP re-reads the keyring (rotation: add, use, remove).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if err := a.ReloadKeyring(); err != nil {
				log.Error("keyring reload failed", "err", err)
			}
		}
	}()
	// 3. Run until SIGTERM; Run leaves the mesh gracefully.
	if err := a.Run(ctx); err != nil {
		log.Error("iha-agent stopped with an error", "err", err)
		return exitFailure
	}
	return exitOK
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func runGate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("iha-agent gate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", agent.DefaultConfigFile, "configuration file (YAML)")
	novaHost := fs.String("nova-host", "", "this compute's Nova host name (default: from the config, else the short host name)")
	stateDir := fs.String("state-dir", "", "unused (kept so that older command lines still work)")
	timeout := fs.Duration("timeout", 0, "give up after this long (default 10m)")
	interval := fs.Duration("interval", 0, "pause between rounds of questions (default 2s)")
	onNoAnswer := fs.String("on-no-answer", "", `when no controller answered before the timeout: "start" (exit 0, default) or "fail" (exit 1)`)
	var controllers listFlag
	fs.Var(&controllers, "controllers", "status API URLs to ask besides agent.yaml's controllers (https://host:port or http://host:port, comma-separated)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := loadConfig(*configPath, explicit, func(c *agent.Config) {
		setIf(&c.NovaHost, *novaHost)
		setIf(&c.StateDir, *stateDir)
		setIf(&c.GateOnNoAnswer, *onNoAnswer)
		if *timeout > 0 {
			c.GateTimeout = *timeout
		}
		if *interval > 0 {
			c.GateInterval = *interval
		}
		c.Controllers = append(c.Controllers, controllers...)
		c.KdumpListen = "off" // the gate listens to nothing
	})
	if err != nil {
		fmt.Fprintf(stderr, "iha-agent gate: configuration: %v\n", err)
		return exitUsage
	}
	// The controllers to ask are agent.yaml's (and --controllers), never
	// what the mesh advertises: an answer must come from a controller this
	// host was configured to trust, verified by TLS (api_ca) or by the
	// controllers' signature (host_key).
	var urls []string
	for _, c := range cfg.Controllers {
		u, _ := agent.ParseController(c) // Validate checked them
		urls = append(urls, u)
	}
	client, err := cfg.GateClient()
	if err != nil {
		fmt.Fprintf(stderr, "iha-agent gate: configuration: %v\n", err)
		return exitUsage
	}
	var hostKey []byte
	if cfg.HostKey != "" {
		// An unreadable key must not keep nova-compute down by itself:
		// the gate goes on, and only https:// answers can be believed.
		if hostKey, err = identity.LoadKey(cfg.HostKey); err != nil {
			fmt.Fprintf(stderr, "iha-agent gate: WARNING: host_key: %v; answers over http:// cannot be verified\n", err)
		}
	}
	if cfg.Insecure {
		fmt.Fprintln(stderr, "iha-agent gate: WARNING: insecure: true: an answer that cannot be verified is believed")
	}
	// The answers are added up for the agent's /metrics (gate_stats_file).
	answers := map[string]uint64{}
	err = agent.Gate(ctx, agent.GateConfig{NovaHost: cfg.NovaHost, Controllers: urls, HostKey: hostKey, TrustUnverified: cfg.Insecure,
		Client: client, Timeout: cfg.GateTimeout, Interval: cfg.GateInterval, Out: stdout,
		Observe: func(_, result string) { answers[result]++ }})
	if cfg.GateStatsFile != "off" && len(answers) > 0 {
		if werr := agent.AddGateAnswers(cfg.GateStatsFile, answers); werr != nil && !errors.Is(werr, os.ErrNotExist) {
			fmt.Fprintf(stderr, "iha-agent gate: cannot record the answers for /metrics: %v\n", werr)
		}
	}
	var te *agent.GateTimeoutError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &te) && te.Answered:
		fmt.Fprintf(stderr, "iha-agent gate: %v.\nnova-compute is NOT started: starting it while IHA recovers this host could run its instances twice. "+
			"Check `iha hosts %s`; once the recovery is done, start nova-compute again.\n", err, cfg.NovaHost)
		return exitFailure
	case errors.As(err, &te) && cfg.GateOnNoAnswer == "start":
		fmt.Fprintf(stderr, "iha-agent gate: %v; starting nova-compute without the check (gate_on_no_answer: start).\n", err)
		return exitOK
	case errors.As(err, &te):
		fmt.Fprintf(stderr, "iha-agent gate: %v; nova-compute is NOT started (gate_on_no_answer: fail).\n", err)
		return exitFailure
	default:
		fmt.Fprintf(stderr, "iha-agent gate: interrupted: %v\n", err)
		return exitFailure
	}
}
