//go:build lab

package scenarios

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// benchMode is one detection setup `make lab-bench` measures: the leaders'
// config keys over writeConfig's (an empty value: the key's default) and
// the agents' gossip profile.
type benchMode struct {
	name         string
	keys         map[string]string
	agentProfile string
	about        string
}

var benchModes = []benchMode{
	{name: "both", keys: map[string]string{"DETECTION_MODE": "", "GOSSIP_PROFILE": ""}, agentProfile: "default",
		about: "IHA's defaults: DETECTION_MODE both, GOSSIP_PROFILE default (fast), DELTA 30, POLL 45"},
	// both-lan: memberlist's LAN profile, IHA's default until fast became
	// it (FINDINGS 8 and 9's `both` rows ran it): for comparison only.
	{name: "both-lan", keys: map[string]string{"DETECTION_MODE": "both", "GOSSIP_PROFILE": "lan"}, agentProfile: "lan",
		about: "both with GOSSIP_PROFILE lan (leaders and agents), the default before fast"},
	{name: "gossip", keys: map[string]string{"DETECTION_MODE": "gossip", "GOSSIP_PROFILE": "fast"}, agentProfile: "fast",
		about: "DETECTION_MODE gossip, GOSSIP_PROFILE fast"},
	{name: "nova", keys: map[string]string{"DETECTION_MODE": "nova", "DELTA": "10", "POLL": "15", "GOSSIP_PROFILE": ""}, agentProfile: "default",
		about: "DETECTION_MODE nova, DELTA 10, POLL 15 (InstanceHA's fastest), mesh wired"},
}

// benchTrial is one failure and what followed, as one JSON line.
type benchTrial struct {
	Mode    string  `json:"mode"`
	Trial   int     `json:"trial"`
	Failure string  `json:"failure"` // bmc (BMC power-off), kill (SIGKILL), stop (SIGSTOP)
	Host    string  `json:"host"`
	Servers int     `json:"servers"`
	Phase   float64 `json:"phase_s"` // failure this long after the host's heartbeat was first seen
	Load1   float64 `json:"load1"`   // 1-minute load average at the failure
	// Seconds from the failure (0: not reached).
	MeshDead  float64 `json:"failure_to_mesh_dead_s,omitempty"`
	Verdict   float64 `json:"failure_to_verdict_s"`
	Fenced    float64 `json:"failure_to_fence_confirmed_s"`
	AllActive float64 `json:"failure_to_all_active_s"`
	Reenabled float64 `json:"failure_to_reenabled_s"`
	// Derived spans.
	VerdictToFence  float64 `json:"verdict_to_fence_s"`
	FenceToActive   float64 `json:"fence_to_last_active_s"`
	VerdictRule     string  `json:"verdict,omitempty"`
	VerdictEvidence string  `json:"evidence,omitempty"`
	// Healthy hosts touched during the trial (BMC commands, evacuations,
	// forced down): must stay empty.
	FalseActions []string `json:"false_actions,omitempty"`
	Note         string   `json:"note,omitempty"`
	Error        string   `json:"error,omitempty"`
}

// BenchmarkLabRecovery is `make lab-bench` (issue 14 item 5): on a lab of
// its own at Nova's defaults (report_interval 10 s, service_down_time
// 60 s, 4 computes, 3 iha-leaders, an agent per compute), for each
// detection mode (LAB_BENCH_MODES, default both,gossip,nova; both-lan is also known) it
// runs LAB_BENCH_TRIALS (default 8) failures of one compute carrying two
// evacuable servers, rotating the victim over the computes and the failure
// over LAB_BENCH_FAILURES (default bmc,kill,stop: BMC power-off, SIGKILL
// and SIGSTOP of the host's processes), each at a uniformly random phase
// of the victim's heartbeat cycle. The stopwatch is Nova's API, polled
// every 0.5 s, until every server of the victim is ACTIVE, task_state
// null, on another host; then until the host is re-enabled. The leader's
// record gives the verdict and the fence confirmation. It prints one JSON
// line per trial (prefix BENCH) and a table per mode: n, median, min and
// max of failure → all ACTIVE, failure → verdict, verdict → fence
// confirmed, fence → last ACTIVE, failure → re-enabled, with the load
// average. A trial that does not finish, or any healthy host fenced,
// evacuated or forced down, fails the benchmark (after the table).
//
//	go test -tags lab -run '^$' -bench LabRecovery -benchtime 1x -timeout 4h ./deploy/lab/scenarios/
func BenchmarkLabRecovery(b *testing.B) {
	trials := envInt(b, "LAB_BENCH_TRIALS", 8)
	failures := strings.Split(envOr("LAB_BENCH_FAILURES", "bmc,kill,stop"), ",")
	for _, f := range failures {
		if f != "bmc" && f != "kill" && f != "stop" {
			b.Fatalf("LAB_BENCH_FAILURES: %q is not one of bmc, kill, stop", f)
		}
	}
	var modes []benchMode
	for _, name := range strings.Split(envOr("LAB_BENCH_MODES", "both,gossip,nova"), ",") {
		found := false
		for _, m := range benchModes {
			if m.name == name {
				modes = append(modes, m)
				found = true
			}
		}
		if !found {
			b.Fatalf("LAB_BENCH_MODES: unknown mode %q (both, both-lan, gossip, nova)", name)
		}
	}
	start := time.Now()
	l := newLab(b, 4)
	l.ensureEvacFlavor()
	out := os.Stdout
	var all []benchTrial
	for _, m := range modes {
		all = append(all, l.benchMode(b, m, trials, failures)...)
	}
	printBench(out, modes, all, time.Since(start))
	for _, tr := range all {
		if tr.Error != "" || len(tr.FalseActions) > 0 {
			b.Errorf("%s trial %d (%s on %s): %s %v", tr.Mode, tr.Trial, tr.Failure, tr.Host, tr.Error, tr.FalseActions)
		}
	}
	for _, m := range modes {
		var xs []float64
		for _, tr := range all {
			if tr.Mode == m.name && tr.AllActive > 0 {
				xs = append(xs, tr.AllActive)
			}
		}
		if len(xs) > 0 {
			b.ReportMetric(median(xs), m.name+"-active-s")
		}
	}
}

// benchMode runs one mode's trials with a fresh cluster of three leaders.
func (l *lab) benchMode(b *testing.B, m benchMode, trials int, failures []string) []benchTrial {
	fmt.Printf("BENCH-MODE %s: %s\n", m.name, m.about)
	l.setAgentProfile(b, m.agentProfile)
	c := l.writeConfigAs(b, b.Name()+"-"+m.name, l.bin, m.keys)
	c.start(b)
	defer c.stop(b)
	mode := m.keys["DETECTION_MODE"]
	if mode == "" {
		mode = "both"
	}
	var out []benchTrial
	hosts := l.computes()
	for k := 0; k < trials; k++ {
		tr := benchTrial{Mode: m.name, Trial: k + 1, Failure: failures[k%len(failures)], Host: hosts[k%len(hosts)]}
		if err := l.settleErr(5 * time.Minute); err != nil {
			tr.Error = "before the trial: " + err.Error()
		} else if err := l.waitMeshErr(c, mode, 2*time.Minute); err != nil {
			tr.Error = "before the trial: " + err.Error()
		} else {
			l.benchTrial(b, c, &tr)
		}
		line, _ := json.Marshal(tr)
		fmt.Printf("BENCH %s\n", line)
		out = append(out, tr)
		if tr.Error != "" {
			fmt.Printf("BENCH-MODE %s: stopped after trial %d: %s\n", m.name, k+1, tr.Error)
			b.Logf("leaders' log tail:\n%s", lastLines(c.logText(), 60))
			break
		}
	}
	return out
}

// benchTrial fails tr.Host at a random phase of its heartbeat and times the
// recovery; it fills tr and never aborts the benchmark.
func (l *lab) benchTrial(b *testing.B, c *ihaConfig, tr *benchTrial) {
	victim := tr.Host
	start := time.Now() // healthy until t0: any action before it is false
	tag := fmt.Sprintf("%s-%d", tr.Mode, tr.Trial)
	ids := []string{l.createServer("bench-"+tag+"-a", evacFlavor, victim), l.createServer("bench-"+tag+"-b", evacFlavor, victim)}
	tr.Servers = len(ids)
	defer l.deleteServers(ids)
	if err := l.waitActiveOn(ids, victim, 3*time.Minute); err != nil {
		tr.Error = err.Error()
		return
	}
	// A uniformly random phase of the heartbeat cycle: from the moment a
	// new updated_at of the victim shows, wait U(0, report_interval).
	ri, _ := strconv.Atoi(l.reportInterval())
	seen, err := l.nextHeartbeat(victim, time.Duration(ri+10)*time.Second)
	if err != nil {
		tr.Error = err.Error()
		return
	}
	wait := time.Duration(rand.Float64() * float64(time.Duration(ri)*time.Second))
	time.Sleep(time.Until(seen.Add(wait)))
	tr.Load1 = load1()
	t0 := time.Now()
	tr.Phase = t0.Sub(seen).Seconds()
	switch tr.Failure {
	case "bmc":
		if out, err := l.ipmi(victim, "chassis", "power", "off"); err != nil {
			tr.Error = fmt.Sprintf("power off: %v %s", err, out)
			return
		}
	case "kill":
		if out, err := l.sh(2*time.Minute, "ctl.sh", "kill", victim); err != nil {
			tr.Error = fmt.Sprintf("ctl.sh kill: %v %s", err, out)
			return
		}
	case "stop":
		if out, err := l.sh(2*time.Minute, "ctl.sh", "freeze", victim); err != nil {
			tr.Error = fmt.Sprintf("ctl.sh freeze: %v %s", err, out)
			return
		}
		// Harmless once the fence killed the frozen processes; needed if
		// the trial failed before.
		defer func() { _, _ = l.sh(time.Minute, "ctl.sh", "thaw", victim) }()
	}
	// The stopwatch: Nova every 0.5 s until every server is ACTIVE, task
	// state null, on another host; healthy hosts watched meanwhile.
	touched := map[string]bool{}
	watch := func() {
		for h, s := range l.servicesErr() {
			if h != victim && s.ForcedDown {
				touched[h+" forced down"] = true
			}
		}
	}
	active, err := l.stopwatch(ids, victim, 5*time.Minute, watch)
	if err != nil {
		tr.Error = err.Error()
	} else {
		tr.AllActive = active.Sub(t0).Seconds()
	}
	if tr.Error == "" {
		re, err := l.pollUntil(6*time.Minute, func() bool {
			watch()
			s, ok := l.servicesErr()[victim]
			return ok && s.State == "up" && s.Status == "enabled" && !s.ForcedDown
		})
		if err != nil {
			tr.Error = "waiting for " + victim + " re-enabled: " + err.Error()
		} else {
			tr.Reenabled = re.Sub(t0).Seconds()
		}
	}
	h, ok := c.hostOnLeader(victim)
	if ok && h.DetectedAt.After(start) && h.DetectedAt.Before(t0) {
		// Judged failed while still healthy: the recovery that followed is
		// not a detection of this failure (nova mode at DELTA 10 does it).
		touched[fmt.Sprintf("%s judged failed %.1fs before the failure (%s: %s)", victim,
			t0.Sub(h.DetectedAt).Seconds(), h.Evidence.Verdict, h.Evidence.Note)] = true
		// Its stopwatch timed that false recovery, not this failure's.
		tr.AllActive, tr.Reenabled = 0, 0
		tr.Note = "judged failed before the failure: figures dropped"
	}
	if ok && !h.DetectedAt.Before(t0) {
		tr.Verdict = h.DetectedAt.Sub(t0).Seconds()
		tr.VerdictRule = h.Evidence.Verdict
		tr.VerdictEvidence = h.Evidence.Note
		if !h.Evidence.MeshSince.IsZero() && h.Evidence.MeshSince.After(t0) {
			tr.MeshDead = h.Evidence.MeshSince.Sub(t0).Seconds()
		}
		if h.Fence != nil && !h.Fence.At.IsZero() {
			tr.Fenced = h.Fence.At.Sub(t0).Seconds()
			tr.VerdictToFence = h.Fence.At.Sub(h.DetectedAt).Seconds()
			if !active.IsZero() {
				tr.FenceToActive = active.Sub(h.Fence.At).Seconds()
			}
		}
	}
	for _, host := range l.computes() {
		for _, e := range l.bmcHistory(host, start) {
			if host != victim || e.at.Before(t0) {
				touched[fmt.Sprintf("%s BMC %s (%s) at %s", host, e.op, e.was, e.at.Format("15:04:05.000"))] = true
			}
		}
		if host == victim {
			continue
		}
		for _, mg := range l.evacuationsErr(host, start) {
			touched[fmt.Sprintf("%s evacuated %s", host, mg.Instance)] = true
		}
	}
	for k := range touched {
		tr.FalseActions = append(tr.FalseActions, k)
	}
	sort.Strings(tr.FalseActions)
}

// setAgentProfile rewrites every agent's agent.yaml with the gossip
// profile and restarts the agents (only the agents) when it changes.
func (l *lab) setAgentProfile(t testing.TB, profile string) {
	if l.agentProfile == profile {
		return
	}
	for _, h := range l.computes() {
		if err := os.Remove(filepath.Join(l.dir, "iha", "agents", h, "agent.yaml")); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if out, err := l.shEnv([]string{"LAB_AGENT_GOSSIP_PROFILE=" + profile}, 2*time.Minute, "ctl.sh", "restart", h, "iha-agent"); err != nil {
			t.Fatalf("restart the agent of %s with profile %s: %v\n%s", h, profile, err, out)
		}
	}
	l.recordPIDs()
	l.agentProfile = profile
}

// nextHeartbeat waits until host's updated_at changes and returns when the
// new value was first seen.
func (l *lab) nextHeartbeat(host string, d time.Duration) (time.Time, error) {
	first := ""
	var seen time.Time
	_, err := l.pollEvery(200*time.Millisecond, d, func() bool {
		var body struct {
			Services []struct {
				Host      string  `json:"host"`
				UpdatedAt *string `json:"updated_at"`
			}
		}
		a, err := l.call("GET", l.nova+"/os-services?binary=nova-compute&host="+host, "2.53", nil)
		if err != nil || a.status != 200 || json.Unmarshal(a.raw, &body) != nil || len(body.Services) != 1 || body.Services[0].UpdatedAt == nil {
			return false
		}
		u := *body.Services[0].UpdatedAt
		if first == "" {
			first = u
			return false
		}
		if u != first {
			seen = time.Now()
			return true
		}
		return false
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("no new heartbeat of %s: %w", host, err)
	}
	return seen, nil
}

// stopwatch polls Nova every 0.5 s until every server in ids is ACTIVE,
// task state null, on a host other than victim, and returns when the last
// one was first seen so.
func (l *lab) stopwatch(ids []string, victim string, d time.Duration, each func()) (time.Time, error) {
	seen := map[string]time.Time{}
	state := ""
	_, err := l.pollUntil(d, func() bool {
		if each != nil {
			each()
		}
		var st []string
		for _, id := range ids {
			if _, ok := seen[id]; ok {
				continue
			}
			s, err := l.serverErr(id)
			if err == nil && s.Status == "ACTIVE" && s.Host != victim && s.Host != "" && s.Task == "" {
				seen[id] = time.Now()
			} else {
				st = append(st, fmt.Sprintf("%s %s@%s/%s %v", s.Name, s.Status, s.Host, s.Task, err))
			}
		}
		state = strings.Join(st, ", ")
		return len(seen) == len(ids)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("servers of %s not ACTIVE elsewhere: %w (last: %s)", victim, err, state)
	}
	var last time.Time
	for _, at := range seen {
		if at.After(last) {
			last = at
		}
	}
	return last, nil
}

// waitActiveOn waits until every server in ids is ACTIVE on host.
func (l *lab) waitActiveOn(ids []string, host string, d time.Duration) error {
	_, err := l.pollUntil(d, func() bool {
		for _, id := range ids {
			s, err := l.serverErr(id)
			if err != nil || s.Status != "ACTIVE" || s.Task != "" || s.Host != host {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("servers not ACTIVE on %s: %w", host, err)
	}
	return nil
}

// pollUntil polls cond every 0.5 s for d (scaled): it returns when cond
// first held.
func (l *lab) pollUntil(d time.Duration, cond func() bool) (time.Time, error) {
	return l.pollEvery(500*time.Millisecond, d, cond)
}

func (l *lab) pollEvery(every, d time.Duration, cond func() bool) (time.Time, error) {
	deadline := time.Now().Add(d * scale())
	for {
		if cond() {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("timed out after %v", d*scale())
		}
		time.Sleep(every)
	}
}

func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envInt(t testing.TB, k string, def int) int {
	v := os.Getenv(k)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", k, v)
	}
	return n
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// printBench prints the per-mode table (and per mode and failure).
func printBench(out *os.File, modes []benchMode, all []benchTrial, took time.Duration) {
	var loads []float64
	for _, tr := range all {
		if tr.Load1 > 0 {
			loads = append(loads, tr.Load1)
		}
	}
	fmt.Fprintf(out, "\nlab-bench: %d trials in %v; Nova report_interval 10 s, service_down_time 60 s; 4 computes, 2 evacuable servers per failure\n",
		len(all), took.Round(time.Second))
	if len(loads) > 0 {
		sort.Float64s(loads)
		fmt.Fprintf(out, "load average (1 min) at the failures: median %.1f, min %.1f, max %.1f\n", median(loads), loads[0], loads[len(loads)-1])
	}
	cols := []struct {
		name string
		get  func(benchTrial) float64
	}{
		{"failure→all ACTIVE", func(t benchTrial) float64 { return t.AllActive }},
		{"failure→verdict", func(t benchTrial) float64 { return t.Verdict }},
		{"verdict→fence confirmed", func(t benchTrial) float64 { return t.VerdictToFence }},
		{"fence→last ACTIVE", func(t benchTrial) float64 { return t.FenceToActive }},
		{"failure→re-enabled", func(t benchTrial) float64 { return t.Reenabled }},
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "mode\tfailures\tn")
	for _, c := range cols {
		fmt.Fprintf(tw, "\t%s med (min–max) s", c.name)
	}
	fmt.Fprintln(tw, "\tfalse actions")
	row := func(name, fails string, trs []benchTrial) {
		fmt.Fprintf(tw, "%s\t%s\t%d", name, fails, len(trs))
		for _, c := range cols {
			var xs []float64
			for _, t := range trs {
				if v := c.get(t); v > 0 {
					xs = append(xs, v)
				}
			}
			if len(xs) == 0 {
				fmt.Fprint(tw, "\t–")
				continue
			}
			sort.Float64s(xs)
			fmt.Fprintf(tw, "\t%.1f (%.1f–%.1f)", median(xs), xs[0], xs[len(xs)-1])
		}
		n := 0
		for _, t := range trs {
			n += len(t.FalseActions)
		}
		fmt.Fprintf(tw, "\t%d\n", n)
	}
	for _, m := range modes {
		var trs []benchTrial
		byFail := map[string][]benchTrial{}
		for _, t := range all {
			if t.Mode == m.name {
				trs = append(trs, t)
				byFail[t.Failure] = append(byFail[t.Failure], t)
			}
		}
		if len(trs) == 0 {
			continue
		}
		row(m.name, "all", trs)
		for _, f := range []string{"bmc", "kill", "stop"} {
			if len(byFail[f]) > 0 {
				row("", f, byFail[f])
			}
		}
	}
	tw.Flush()
}
