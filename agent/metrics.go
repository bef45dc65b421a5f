package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/pkg/metrics"
)

// gateStats is the gate's answers file: counts by result, added up over
// every `iha-agent gate` run since boot (/run is a tmpfs).
type gateStats struct {
	Updated time.Time         `json:"updated"`
	Answers map[string]uint64 `json:"answers"`
}

// AddGateAnswers adds counts to the answers file at path, replacing it
// atomically. The directory must exist (the gate's systemd drop-in creates
// /run/iha-gate for nova-compute's user): without it the error is
// os.ErrNotExist and nothing is kept. One gate runs at a time on a host (it
// is nova-compute's ExecStartPre), so read-add-write is safe.
func AddGateAnswers(path string, counts map[string]uint64) error {
	st := gateStats{Answers: map[string]uint64{}}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &st) // a corrupt file starts again from zero
		if st.Answers == nil {
			st.Answers = map[string]uint64{}
		}
	}
	for k, v := range counts {
		st.Answers[k] += v
	}
	st.Updated = time.Now().UTC()
	b, _ := json.Marshal(st)
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadGateAnswers reads the answers file; a missing file is no answers.
func ReadGateAnswers(path string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]uint64{}, nil
	}
	if err != nil {
		return nil, err
	}
	var st gateStats
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st.Answers, nil
}

// listenMetrics binds the metrics listener (nil when off).
func listenMetrics(cfg Config) (net.Listener, error) {
	if cfg.MetricsListen == "" || cfg.MetricsListen == "off" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("metrics listener (metrics_listen): %w", err)
	}
	return ln, nil
}

// MetricsAddr is the metrics listener's address, or "" when off.
func (a *Agent) MetricsAddr() string {
	if a.metricsLn == nil {
		return ""
	}
	return a.metricsLn.Addr().String()
}

// serveMetrics serves /metrics until ctx ends.
func (a *Agent) serveMetrics(ctx context.Context) {
	m := metrics.NewAgent(agentSource{a}, a.version)
	if err := metrics.ExportHashicorp(m.Registry()); err != nil {
		a.log.Warn("memberlist metrics not exported", "err", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	a.log.Info("metrics listening", "addr", a.metricsLn.Addr().String())
	if err := srv.Serve(a.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("metrics listener stopped", "err", err)
	}
}

// agentSource is the agent as metrics.AgentSource.
type agentSource struct{ a *Agent }

func (s agentSource) Joined() bool { return s.a.mesh.Joined() }

func (s agentSource) Mesh() metrics.MeshStats {
	st := map[string]int{}
	for _, m := range s.a.mesh.Members() {
		st[string(m.State)]++
	}
	return metrics.MeshStats{Wired: true, States: st, HealthScore: s.a.mesh.HealthScore()}
}

func (s agentSource) Controllers() int {
	n := 0
	for _, m := range s.a.mesh.Members() {
		if m.Meta.Role == gossip.RoleController && m.State == gossip.StateAlive {
			n++
		}
	}
	return n
}

func (s agentSource) Kdump() *metrics.KdumpStats {
	if s.a.recv == nil {
		return nil
	}
	r := s.a.recv.Stats()
	return &metrics.KdumpStats{Received: r.Received, Outcomes: map[string]uint64{
		"relayed": r.Relayed, "repeated": r.Repeated, "short": r.Short, "bad_magic": r.BadMagic,
		"flood": r.Flood, "unresolved": r.Unresolved, "relay_error": r.RelayError}}
}

func (s agentSource) Gate() map[string]uint64 {
	if s.a.cfg.GateStatsFile == "" || s.a.cfg.GateStatsFile == "off" {
		return nil
	}
	g, err := ReadGateAnswers(s.a.cfg.GateStatsFile)
	if err != nil {
		s.a.log.Warn("cannot read the gate's answers file", "err", err)
	}
	return g
}

// Watchdog implements metrics.WatchdogSource (nil: the watchdog is off).
func (s agentSource) Watchdog() *metrics.WatchdogStats {
	if s.a.keeper == nil {
		return nil
	}
	st := s.a.keeper.Status()
	return &metrics.WatchdogStats{Armed: st.Armed, Feeding: st.Feeding, W: st.W, Remaining: st.Remaining,
		Grants: st.Stats.Grants, Refusals: st.Stats.Refusals, Failures: st.Stats.Failures, FeedErrors: st.Stats.FeedErrors,
		RoundsFeed: st.Stats.RoundsFeed, RoundsStop: st.Stats.RoundsStop}
}
