package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/lease"
	"github.com/ihaproject/iha/pkg/metrics"
	"github.com/ihaproject/iha/pkg/version"
)

// statusAPI is the running status API of this node: /v1, /metrics,
// /healthz, /readyz, the agents' /v1/gate/{host} and the Raft join.
type statusAPI struct {
	Addr    net.Addr
	URL     string
	Backend *leader.API
	Metrics *metrics.Metrics
	done    <-chan struct{}
	cancel  context.CancelFunc
}

// Stop stops serving (open event streams are closed) and releases the
// adapter.
func (s *statusAPI) Stop() {
	s.cancel()
	<-s.done
	s.Backend.Close()
}

// controllerKeys are what proves this controller to the others: the
// cluster key (signs the gate's answers and forwarded requests) and the
// Raft TLS configuration (its certificate, and the CA that checks theirs).
type controllerKeys struct {
	cluster []byte
	raftTLS *tls.Config
}

// startAPI serves the status API of node on addr (API_ADDR) with the
// tokens, TLS and limits of s.
func startAPI(node *leader.Node, mon *leader.Monitor, s config.Settings, addr string, mesh leader.MeshReporter, keys controllerKeys, leases *leader.Leases, log *slog.Logger) (*statusAPI, error) {
	tlsCfg, err := apiTLS(s)
	if err != nil {
		return nil, err
	}
	backend := leader.NewAPI(leader.APIConfig{Node: node, Monitor: mon, Settings: s, Version: version.String(),
		Logger: log.With("component", "api"), Mesh: mesh, Security: securityOf(s)})
	met := metrics.New(backend.MetricsSource(), version.Version)
	bi := version.Get()
	// Raft's and memberlist's own metrics (go-metrics) on the same /metrics.
	if err := metrics.ExportHashicorp(met.Registry()); err != nil {
		log.Warn("raft and memberlist metrics not exported", "err", err)
	}
	var grant func(context.Context, lease.Request) (lease.Grant, error)
	if leases != nil {
		grant = leases.Grant
	}
	cfg := api.Config{Backend: backend, Token: s.APIToken, ReadToken: s.APIReadToken, Lease: grant,
		Metrics: met.Handler(), TLS: tlsCfg, Logger: log.With("component", "api"),
		Build:       api.VersionInfo{Version: bi.Version, Revision: bi.Revision, GoVersion: bi.GoVersion, Platform: bi.Platform},
		ReadTimeout: s.APIReadTimeout, IdleTimeout: s.APIIdleTimeout, MaxConns: s.APIMaxConnections, MaxStreams: s.APIMaxStreams}
	if len(keys.cluster) > 0 {
		cfg.GateKey = func(host string) []byte { return identity.HostKey(keys.cluster, host) }
		cfg.ForwardKey = identity.ForwardKey(keys.cluster)
	}
	if keys.raftTLS != nil {
		cfg.ControllerCAs = keys.raftTLS.ClientCAs
		if len(keys.raftTLS.Certificates) > 0 {
			cfg.ForwardCert = &keys.raftTLS.Certificates[0]
		}
	}
	cfg.Mount = func(mux *http.ServeMux) { mux.Handle("POST "+leader.JoinPath, node.JoinHandler()) }
	srv := api.NewServer(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	bound, done, err := srv.ListenAndServe(ctx, addr)
	if err != nil {
		cancel()
		backend.Close()
		return nil, err
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	return &statusAPI{Addr: bound, URL: scheme + "://" + bound.String(), Backend: backend, Metrics: met, done: done, cancel: cancel}, nil
}

// Observer is what the reconciler reports each poll cycle to: the status
// API (/v1/hosts, readiness) and the metrics (poll cycles, verdicts).
func (s *statusAPI) Observer() leader.Observer { return apiObserver{s.Backend, s.Metrics} }

type apiObserver struct {
	*leader.API
	met *metrics.Metrics
}

func (o apiObserver) PollCycle(took time.Duration, err error, consecutiveFailures int) {
	o.API.PollCycle(took, err, consecutiveFailures)
	o.met.ObservePoll(took, err, consecutiveFailures)
}

func (o apiObserver) Verdicts(v map[string]leader.Verdict, at time.Time) {
	o.API.Verdicts(v, at)
	counts := map[string]int{}
	for _, x := range v {
		counts[string(x)]++
	}
	o.met.ObserveVerdicts(counts)
}

// apiTLS is the API's TLS configuration from API_TLS_CERT/API_TLS_KEY (nil:
// plain HTTP). Forwarding to the leader trusts the system roots, the
// certificates of API_TLS_CERT's file (its chain) and RAFT_TLS_CA, so
// controllers whose certificates share an issuer included in that file, or
// are issued by the Raft CA, trust each other.
func apiTLS(s config.Settings) (*tls.Config, error) {
	if s.APITLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(s.APITLSCert, s.APITLSKey)
	if err != nil {
		return nil, fmt.Errorf("status API TLS: load %s / %s: %w", s.APITLSCert, s.APITLSKey, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if pem, err := os.ReadFile(s.APITLSCert); err == nil {
		pool.AppendCertsFromPEM(pem)
	}
	// Controllers whose API certificates are issued by the Raft CA (a
	// common choice: one CA for the controllers) trust each other's.
	if s.RaftTLSCA != "" {
		if pem, err := os.ReadFile(s.RaftTLSCA); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12,
		// The Raft join handler verifies a client certificate against
		// RAFT_TLS_CA itself (leader/join.go); the listener only asks for
		// one. Verifying here against this pool (system roots) would admit
		// any publicly issued certificate and refuse the cluster's own.
		ClientAuth: tls.RequestClientCert}, nil
}

// startLeases serves the watchdog leases when the cluster key (CLUSTER_KEY,
// loaded at step 1b) is set (nil otherwise: the endpoint answers 503);
// done closes when ctx ends and the service has answered every request it
// took.
func startLeases(ctx context.Context, done chan struct{}, node *leader.Node, s config.Settings, key []byte, log *slog.Logger) (*leader.Leases, error) {
	if len(key) == 0 {
		close(done)
		log.Info("no CLUSTER_KEY: this controller grants no watchdog leases (agents with watchdog: stay unarmed)")
		return nil, nil
	}
	p := lease.DefaultParams(s.WatchdogLease)
	svc, err := leader.NewLeases(leader.LeasesConfig{Store: node, Params: p, Keys: lease.NewClusterKeys(key), Logger: log})
	if err != nil {
		close(done)
		return nil, fmt.Errorf("WATCHDOG_LEASE: %w", err)
	}
	go func() {
		defer close(done)
		svc.Run(ctx)
	}()
	log.Info("watchdog leases served", "lease", p.L, "renew", p.Renew, "margin", s.WatchdogMargin)
	return svc, nil
}
