package gossip

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testkit"
)

// BenchmarkAgentStall starves one real iha-agent process, a member of a mesh
// of n−1 in-process members and a controller over UDP/TCP on loopback, and
// counts what the controller (whose view the leader judges by) makes of it:
//
//  1. idle: a window with nothing done, the baseline of false suspicions;
//  2. duty cycles: SIGSTOP/SIGCONT at 50 % and 80 % stopped, periods
//     100 ms, 300 ms and 1 s (a compute whose CPU is starved by its
//     guests, or throttled by a quota), each for a window of several
//     suspicion timeouts: suspect and dead events about the agent, and
//     dead events about others (the starved agent as a false accuser);
//  3. whole stalls: SIGSTOP for X, then SIGCONT (a frozen host, a paused
//     VM), in stallLadder's ladder of X (tolerated_s, first_dead_s).
//
// The agent's socket keeps receiving while it is stopped (the kernel
// buffers the probes and the suspicion), so it refutes the moment it runs
// again: a stopped process is the optimistic model of a frozen host. The
// pessimistic one, every packet lost while frozen, is memnet's Isolate
// (BenchmarkStallIsolated, TestStallShorterThanToleranceIsNotDead);
// StallTolerance is its bound.
//
//	go test -run XXX -bench 'AgentStall/^n=(10|100)$/' -benchtime 1x -timeout 240m -v ./gossip/
//	IHA_BENCH_PROFILES=fast IHA_BENCH_TIMESCALE=4 IHA_BENCH_STALL_TRIALS=2 go test -run XXX -bench 'AgentStall/^n=1000$/' -benchtime 1x -timeout 180m -v ./gossip/
//
// (-v, or the ladder's lines beyond the tenth are cut; they are also
// printed as "progress:" lines while it runs.) IHA_BENCH_PROFILES selects
// the profiles (see benchProfiles), IHA_BENCH_STALL_PHASES the phases (a
// subset of "idle duty stall"). With IHA_BENCH_TIMESCALE=k every interval
// of the profile, every stall and every duty-cycle period is ×k, and the
// figures are divided by k: 99 in-process UDP members on the fast profile
// fell into a suspicion storm under load 20 at the real pace, and were
// clean at k = 2.
func BenchmarkAgentStall(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		for _, prof := range benchProfiles(b) {
			b.Run(fmt.Sprintf("n=%d/%s", n, prof), func(b *testing.B) {
				k := timeScale(b)
				base := profileNamed(b, prof)
				p := base.slowed(k)
				bin := buildAgent(b)
				raiseNofile(b, 2*n+256)
				servePprof()
				sinceStart = startCPU()
				c := startBenchClusterKeyed(b, n-1, p, nil)
				if err := c.tryConverge(n-1, scale(10*time.Minute)); err != nil {
					b.Fatal(err)
				}
				ag := c.startStallAgent(b, bin, p)
				c.waitConverged(n, scale(2*time.Minute))
				b.Logf("mesh of %d members (one a real iha-agent, pid %d) converged in %v; profile %s %+v (time scale %g); formula: min suspicion %v, expected detection %v, StallTolerance %v",
					n, ag.pid, time.Since(sinceStart.wall).Round(time.Second), prof, base, k,
					first(base.SuspicionTimeouts(n)), base.ExpectedDetection(n), base.StallTolerance(n))

				lo, _ := p.SuspicionTimeouts(n)
				phases := stallPhases(b)
				// 1. Idle.
				window := max(stretch(30*time.Second, k), 3*p.ExpectedDetection(n))
				if phases["idle"] {
					w := ag.window(c)
					idle := startCPU()
					time.Sleep(window)
					is, id, io := w.counts()
					b.ReportMetric(float64(is), "idle_suspects")
					b.ReportMetric(float64(id), "idle_dead")
					b.Logf("idle %v: the controller heard %d suspect and %d dead events about the agent, %d dead events about others; the members raised %d suspicions; %v",
						window.Round(time.Second), is, id, io, w.raised(), idle)
				}

				// 2. Duty cycles.
				var dutySusp, dutyDead, dutyOthers int
				for _, dc := range dutyCycles(phases) {
					period := stretch(dc.period, k)
					window := max(stretch(20*time.Second, k), 4*lo)
					ag.waitHealthy(b, c, p)
					w := ag.window(c)
					run := startCPU()
					frac := ag.dutyCycle(dc.stopped, period, window)
					s, d, o := w.counts()
					dutySusp, dutyDead, dutyOthers = dutySusp+s, dutyDead+d, dutyOthers+o
					b.Logf("duty cycle %.0f%% stopped (measured %.0f%%), period %v, for %v: the controller heard %d suspect and %d dead events about the agent, %d dead events about others; the members raised %d suspicions; %v",
						100*dc.stopped, 100*frac, dc.period, window.Round(time.Second), s, d, o, w.raised(), run)
				}
				if phases["duty"] {
					b.ReportMetric(float64(dutySusp), "duty_suspects")
					b.ReportMetric(float64(dutyDead), "duty_dead")
					b.ReportMetric(float64(dutyOthers), "duty_dead_others")
				}
				if !phases["stall"] {
					return
				}

				// 3. Whole stalls.
				ladder := stallLadder(b, c, ag.staller, p, n, k)
				b.Logf("stalls (SIGSTOP for X at a random phase; X ÷ time scale): %v (formula: StallTolerance %v, min suspicion %v)\n\t%s",
					ladder, base.StallTolerance(n), first(base.SuspicionTimeouts(n)), strings.Join(ladder.steps, "\n\t"))
				b.Logf("since the start: %v", sinceStart)
			})
		}
	}
}

// stallPhases reads IHA_BENCH_STALL_PHASES, a space-separated subset of
// "idle duty stall" (default all three).
func stallPhases(b *testing.B) map[string]bool {
	v := strings.Fields(os.Getenv("IHA_BENCH_STALL_PHASES"))
	if len(v) == 0 {
		v = []string{"idle", "duty", "stall"}
	}
	out := map[string]bool{}
	for _, ph := range v {
		if ph != "idle" && ph != "duty" && ph != "stall" {
			b.Fatalf("IHA_BENCH_STALL_PHASES %q: want a subset of idle duty stall", ph)
		}
		out[ph] = true
	}
	return out
}

// duty is the share of every period the agent is stopped.
type duty struct {
	stopped float64
	period  time.Duration
}

// dutyCycles are the duty cycles BenchmarkAgentStall runs.
func dutyCycles(phases map[string]bool) []duty {
	if !phases["duty"] {
		return nil
	}
	return []duty{{0.5, 100 * time.Millisecond}, {0.5, 300 * time.Millisecond}, {0.5, time.Second},
		{0.8, 100 * time.Millisecond}, {0.8, 300 * time.Millisecond}, {0.8, time.Second}}
}

func first(a, _ time.Duration) time.Duration { return a }

// BenchmarkStallIsolated is BenchmarkAgentStall's whole stalls in the
// pessimistic model: an in-process member of a memnet mesh is cut off (every
// packet and stream to and from it lost) for X, then let back, in a ladder
// of X as there. It measures what StallTolerance promises.
//
//	go test -run XXX -bench 'StallIsolated/^n=(10|100)$/' -benchtime 1x -timeout 120m ./gossip/
func BenchmarkStallIsolated(b *testing.B) {
	for _, n := range []int{5, 10, 100} {
		for _, prof := range benchProfiles(b) {
			b.Run(fmt.Sprintf("n=%d/%s", n, prof), func(b *testing.B) {
				k := timeScale(b)
				base := profileNamed(b, prof)
				p := base.slowed(k)
				sinceStart = startCPU()
				c := newBenchCluster(b, n, p, false)
				const victim = "n0001" // the first compute
				s := staller{name: victim, stop: func() { c.net.Isolate(victim, true) }, cont: func() { c.net.Isolate(victim, false) }}
				ladder := stallLadder(b, c, s, p, n, k)
				b.Logf("stalls (cut off for X at a random phase; X ÷ time scale): %v (formula: StallTolerance %v, min suspicion %v)\n\t%s",
					ladder, base.StallTolerance(n), first(base.SuspicionTimeouts(n)), strings.Join(ladder.steps, "\n\t"))
				b.Logf("since the start: %v", sinceStart)
			})
		}
	}
}

// staller stops and continues one member of a benchCluster.
type staller struct {
	name       string
	stop, cont func()
}

// ladderResult is what stallLadder found.
type ladderResult struct {
	trials               int
	tolerated, firstDead time.Duration // on the real clock (÷ time scale)
	steps                []string
}

func (l ladderResult) String() string {
	return fmt.Sprintf("%d trials per X: largest X never declared dead %v, first X declared dead %v", l.trials, l.tolerated, l.firstDead)
}

// stallLadder stalls s for each X of a ladder in half probe intervals from
// one probe interval below StallTolerance, IHA_BENCH_STALL_TRIALS times each
// (default 3), until two steps in a row declared it dead every time (or X
// passes twice the minimum suspicion timeout), and reports tolerated_s (the
// largest X below the first that was ever declared dead) and first_dead_s.
// A dead verdict that comes after a trial's watch counts for its step.
func stallLadder(b *testing.B, c *benchCluster, s staller, p Profile, n int, k float64) ladderResult {
	trials := 3
	if v := os.Getenv("IHA_BENCH_STALL_TRIALS"); v != "" {
		t, err := strconv.Atoi(v)
		if err != nil || t < 1 {
			b.Fatalf("IHA_BENCH_STALL_TRIALS %q: want a positive integer", v)
		}
		trials = t
	}
	lo, _ := p.SuspicionTimeouts(n)
	step := p.ProbeInterval / 2
	res := ladderResult{trials: trials}
	var tolerated, firstDead time.Duration
	allDead := 0
	for x := max(step, p.StallTolerance(n)-p.ProbeInterval); allDead < 2 && x <= 2*lo; x += step {
		s.waitHealthy(b, c, p)
		w := s.window(c)
		susp, others := 0, 0
		var took []string
		for range trials {
			r := s.stall(b, c, p, n, x)
			if r.dead {
				took = append(took, fmt.Sprintf("%.1fs", r.deadAfter.Seconds()/k))
			}
			if r.suspected {
				susp++
			}
			others += r.others
		}
		s.waitHealthy(b, c, p)
		_, dead, _ := w.counts()
		dead = max(dead, len(took))
		if od := w.othersDead(); len(od) > 0 {
			fmt.Fprintln(os.Stderr, "progress: others declared dead at the controller:", strings.Join(od, "; "))
		}
		res.steps = append(res.steps, fmt.Sprintf("X=%.2fs: %d/%d dead %v, %d suspected, %d dead events about others",
			x.Seconds()/k, dead, trials, took, susp, others))
		fmt.Fprintln(os.Stderr, "progress:", res.steps[len(res.steps)-1])
		switch {
		case dead == 0 && firstDead == 0:
			tolerated = x
		case dead > 0 && firstDead == 0:
			firstDead = x
		}
		if dead >= trials {
			allDead++
		} else {
			allDead = 0
		}
	}
	res.tolerated, res.firstDead = time.Duration(float64(tolerated)/k), time.Duration(float64(firstDead)/k)
	b.ReportMetric(res.tolerated.Seconds(), "tolerated_s")
	b.ReportMetric(res.firstDead.Seconds(), "first_dead_s")
	b.ReportMetric(p.StallTolerance(n).Seconds()/k, "formula_tolerance_s")
	b.ReportMetric(float64(trials), "trials_per_X")
	return res
}

// stallAgent is a real iha-agent process in a benchCluster.
type stallAgent struct {
	staller
	pid  int
	proc *os.Process
}

const stallAgentName = "agent-under-test"

// startStallAgent starts the agent on profile p, joined to the controller,
// and waits until the controller sees it alive. It is continued (SIGCONT)
// before it is stopped at the end, whatever state a failed benchmark left
// it in.
func (c *benchCluster) startStallAgent(b testing.TB, bin string, p Profile) *stallAgent {
	dir := b.TempDir()
	// insecure: the stall cluster is unencrypted (its figures predate the
	// encrypted default; BenchmarkAgentCost measures what encryption
	// costs), labelled "iha" as every agent's mesh.
	cfg := fmt.Sprintf("node_name: %s\nnova_host: %s\nbind: 127.0.0.1:%d\njoin: [%q]\nkdump_listen: \"off\"\nstate_dir: %q\nlog_level: error\ninsecure: true\n"+
		"gossip: {GOSSIP_PROBE_INTERVAL: %q, GOSSIP_PROBE_TIMEOUT: %q, GOSSIP_SUSPICION_MULT: \"%d\", GOSSIP_GOSSIP_INTERVAL: %q}\n",
		stallAgentName, stallAgentName, freePort(b), c.ctl.Addr(), dir, p.ProbeInterval.String(), p.ProbeTimeout.String(), p.SuspicionMult, p.GossipInterval.String())
	file := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	proc := startAgentProc(b, bin, "-config", file)
	// Registered after startAgentProc's cleanup, so it runs before it.
	b.Cleanup(func() { _ = proc.Signal(syscall.SIGCONT) })
	a := &stallAgent{pid: proc.Pid, proc: proc}
	a.staller = staller{name: stallAgentName, stop: func() { a.signal(b, syscall.SIGSTOP) }, cont: func() { a.signal(b, syscall.SIGCONT) }}
	testkit.WaitFor(b, scale(2*time.Minute), "the controller to see the agent alive", func() bool { return memberState(c.ctl, a.name) == StateAlive })
	return a
}

// memberState is m's view of node ("" when unknown).
func memberState(m *Mesh, node string) State {
	for _, mem := range m.Members() {
		if mem.Name == node {
			return mem.State
		}
	}
	return ""
}

// waitHealthy waits until the controller has seen the member alive, not
// suspect, for two probe intervals in a row.
func (s staller) waitHealthy(b testing.TB, c *benchCluster, p Profile) {
	var since time.Time
	testkit.WaitFor(b, scale(5*time.Minute), s.name+" alive at the controller again", func() bool {
		if memberState(c.ctl, s.name) != StateAlive {
			since = time.Time{}
			return false
		}
		if since.IsZero() {
			since = time.Now()
		}
		return time.Since(since) >= 2*p.ProbeInterval
	})
}

// eventWindow counts the controller's events from a start time on.
type eventWindow struct {
	c     *benchCluster
	node  string
	from  time.Time
	susp0 int
}

func (s staller) window(c *benchCluster) eventWindow {
	_, n := c.falseEverywhere(nil)
	return eventWindow{c: c, node: s.name, from: time.Now(), susp0: n}
}

// raised is how many suspicions the in-process members raised (about
// anyone) since the window opened; the controller hears of each through an
// accusation the accuser sends it.
func (w eventWindow) raised() int {
	_, now := w.c.falseEverywhere(nil)
	return now - w.susp0
}

// othersDead describes the dead events about other members since the
// window opened: who, accused by whom, and why.
func (w eventWindow) othersDead() []string {
	w.c.obs.mu.Lock()
	defer w.c.obs.mu.Unlock()
	var out []string
	for _, e := range w.c.obs.events {
		if !e.At.Before(w.from) && e.Kind == KindDead && e.Node != w.node {
			out = append(out, fmt.Sprintf("%s +%.1fs accusers %v confirmations %d (%s)", e.Node, e.At.Sub(w.from).Seconds(), e.Accusers, e.Confirmations, e.Reason))
		}
	}
	return out
}

// counts returns the suspect and dead events about the member, and the dead
// events about any other member, since the window opened.
func (w eventWindow) counts() (suspects, dead, othersDead int) {
	w.c.obs.mu.Lock()
	defer w.c.obs.mu.Unlock()
	for _, e := range w.c.obs.events {
		if e.At.Before(w.from) {
			continue
		}
		switch {
		case e.Node == w.node && e.Kind == KindSuspect:
			suspects++
		case e.Node == w.node && e.Kind == KindDead:
			dead++
		case e.Kind == KindDead:
			othersDead++
		}
	}
	return suspects, dead, othersDead
}

// dutyCycle stops the agent for the fraction stopped of every period, for
// window, and returns the fraction it was really stopped (sleeps overshoot
// on a loaded machine). Each period is drawn from ±20 % around period:
// memberlist's probers tick at fixed intervals, and a strictly periodic
// stop would keep one phase against them for the whole window (the same
// cycle then measured 0 or 11 suspicions in ten periods from run to run).
// The agent runs when it returns.
func (a *stallAgent) dutyCycle(stopped float64, period, window time.Duration) float64 {
	start := time.Now()
	var total time.Duration
	for time.Since(start) < window {
		per := time.Duration(float64(period) * (0.8 + 0.4*rand.Float64()))
		off := time.Duration(stopped * float64(per))
		t0 := time.Now()
		a.stop()
		time.Sleep(off)
		a.cont()
		total += time.Since(t0)
		time.Sleep(per - off)
	}
	return total.Seconds() / time.Since(start).Seconds()
}

func (a *stallAgent) signal(b testing.TB, s syscall.Signal) {
	if err := a.proc.Signal(s); err != nil {
		b.Fatalf("signal %v to the agent: %v", s, err)
	}
}

// stallResult is one whole stall's outcome at the controller.
type stallResult struct {
	dead, suspected bool
	deadAfter       time.Duration // from the stop to the dead event
	stopped         time.Duration // from the stop to the continue, as it happened
	others          int           // dead events about other members
}

// stall waits until the member is healthy, then a random part of a probe
// interval (the stall's phase against the probers), stops it for x and
// continues it, and watches the controller until a dead verdict about it or
// until its refutation must have reached everyone: the last accuser's timer
// (min suspicion after its failed probe, in a mesh of n) plus four probe
// intervals after it runs again, with it alive at the controller by then.
func (s staller) stall(b testing.TB, c *benchCluster, p Profile, n int, x time.Duration) stallResult {
	s.waitHealthy(b, c, p)
	time.Sleep(rand.N(p.ProbeInterval))
	w := s.window(c)
	s.stop()
	time.Sleep(x)
	s.cont()
	resumed := time.Now()
	lo, _ := p.SuspicionTimeouts(n)
	r := stallResult{stopped: resumed.Sub(w.from)}
	for {
		if e, ok := c.obs.findFunc(func(e Event) bool { return e.Kind == KindDead && e.Node == s.name && !e.At.Before(w.from) }); ok {
			r.dead, r.deadAfter = true, e.At.Sub(w.from)
			break
		}
		if time.Since(resumed) > lo+4*p.ProbeInterval && memberState(c.ctl, s.name) == StateAlive {
			break
		}
		if time.Since(resumed) > scale(2*time.Minute) {
			b.Fatalf("%s, stopped for %v, is %s at the controller %v after it resumed", s.name, x, memberState(c.ctl, s.name), time.Since(resumed))
		}
		time.Sleep(20 * time.Millisecond)
	}
	susp, _, o := w.counts()
	r.suspected, r.others = susp > 0, o
	return r
}

// benchProfiles are the profiles a benchmark runs: IHA_BENCH_PROFILES, a
// space-separated list of names profileNamed accepts, default "lan fast".
func benchProfiles(b *testing.B) []string {
	v := strings.Fields(os.Getenv("IHA_BENCH_PROFILES"))
	if len(v) == 0 {
		return []string{"lan", "fast"}
	}
	for _, name := range v {
		profileNamed(b, name) // fails on a bad name before any mesh starts
	}
	return v
}

// profileNamed returns a named profile ("lan", "fast", "default") or one
// written as its knobs, "pi=250ms,pt=100ms,sm=8,gi=100ms" (unset knobs are
// fast's).
func profileNamed(b testing.TB, name string) Profile {
	switch name {
	case "lan":
		return LANProfile()
	case "fast":
		return FastProfile()
	case "default":
		return DefaultProfile()
	}
	keys := map[string]string{"pi": KeyProbeInterval, "pt": KeyProbeTimeout, "sm": KeySuspicionMult, "gi": KeyGossipInterval}
	set := map[string]string{KeyProfile: "fast"}
	for _, kv := range strings.Split(name, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if key := keys[k]; ok && key != "" {
			set[key] = v
			continue
		}
		b.Fatalf("profile %q: want lan, fast, default or knobs like pi=250ms,pt=100ms,sm=8,gi=100ms", name)
	}
	p, err := ProfileFromKeys(func(k string) (string, bool) { v, ok := set[k]; return v, ok })
	if err != nil {
		b.Fatalf("profile %q: %v", name, err)
	}
	return p
}
