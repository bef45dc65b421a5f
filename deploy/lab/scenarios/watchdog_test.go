//go:build lab && labchaos

package scenarios

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/wddouble"
)

// Issue 17's lab part: watchdog self-fencing on the real-Nova lab.
//
// The lab is a LAB_CHAOS=1 lab (5 computes, agents and leaders in network
// namespaces on a mesh network, net.sh) brought up with LAB_WATCHDOG=W: every
// host runs the watchdog device double (iha-wddouble, host process
// HOST.watchdog) and its agent is armed with it. When the double goes unfed
// for W it SIGKILLs the host's nova-compute and iha-agent, as the BMC's
// power-off does; it keeps counting while the host is frozen, and it dies
// with the host's power. A host reset by its watchdog stays off until the
// test boots it (ctl.sh start), once the scenario's checks are done.

// wdEvents is the double's record of host since t0
// ($LAB_DIR/iha/agents/HOST/watchdog.jsonl, every boot appended).
func (l *lab) wdEvents(host string, since time.Time) []wddouble.Event {
	f, err := os.Open(filepath.Join(l.dir, "iha", "agents", host, "watchdog.jsonl"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []wddouble.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e wddouble.Event
		if json.Unmarshal(sc.Bytes(), &e) == nil && !e.At.Before(since) {
			out = append(out, e)
		}
	}
	return out
}

// wdFired is the double's first "fired" event of host since t0.
func (l *lab) wdFired(host string, since time.Time) (wddouble.Event, bool) {
	for _, e := range l.wdEvents(host, since) {
		if e.Event == "fired" {
			return e, true
		}
	}
	return wddouble.Event{}, false
}

// hostProcs are the PIDs of host's recorded processes (nova-compute,
// iha-agent, watchdog), by name.
func (l *lab) hostProcs(host string) map[string]int {
	out := map[string]int{}
	for _, p := range []string{"nova-compute", "iha-agent", "watchdog"} {
		if pid := l.pid(host + "." + p); pid > 0 {
			out[p] = pid
		}
	}
	return out
}

// hostEvents is node j's replica of the events of host (oldest first).
func (c *ihaConfig) hostEvents(j int, host string) []chaosEvent {
	var evs chaosEvents
	if err := c.getLocal(j, "/v1/events?host="+host+"&limit=500", &evs); err != nil {
		return nil
	}
	sort.Slice(evs.Events, func(a, b int) bool { return evs.Events[a].At.Before(evs.Events[b].At) })
	return evs.Events
}

// firstEvent is the first event of kind since t0 in evs.
func firstEvent(evs []chaosEvent, kind string, since time.Time) (chaosEvent, bool) {
	for _, e := range evs {
		if e.Kind == kind && !e.At.Before(since) {
			return e, true
		}
	}
	return chaosEvent{}, false
}

// countEvents counts the events of kind since t0 in evs.
func countEvents(evs []chaosEvent, kind string, since time.Time) int {
	n := 0
	for _, e := range evs {
		if e.Kind == kind && !e.At.Before(since) {
			n++
		}
	}
	return n
}

// firstEvacuate is when the record's first evacuate step started.
func (h hostView) firstEvacuate() time.Time {
	var first time.Time
	for _, s := range h.Steps {
		if s.Step == "evacuate" && (first.IsZero() || s.Started.Before(first)) {
			first = s.Started
		}
	}
	return first
}

// firstMigration is the earliest created_at (Nova's whole seconds, UTC) of
// migs.
func firstMigration(migs []migration) time.Time {
	var first time.Time
	for _, m := range migs {
		if c, err := time.Parse("2006-01-02T15:04:05.999999", m.Created); err == nil && (first.IsZero() || c.Before(first)) {
			first = c
		}
	}
	return first
}

// wdSplit is where the time from a BMC's death to the last server ACTIVE
// went, in seconds after t0 (-1: not seen).
type wdSplit struct {
	judged, bmcFailed, leaseExpired, fired, fenced, firstEvacuate, allActive float64
}

func (s wdSplit) String() string {
	f := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("judged %s, BMC fence failed %s, lease expired %s, watchdog fired %s, fenced %s, first evacuate %s, all ACTIVE %s",
		f(s.judged), f(s.bmcFailed), f(s.leaseExpired), f(s.fired), f(s.fenced), f(s.firstEvacuate), f(s.allActive))
}

func since(t0, at time.Time) float64 {
	if at.IsZero() {
		return -1
	}
	return at.Sub(t0).Seconds()
}

// TestLabWatchdog is `make lab-watchdog` (issue 17): watchdog self-fencing
// on a LAB_CHAOS=1 lab of 5 computes at Nova's defaults, every agent armed
// with the device double (W 10 s), three leaders at WATCHDOG_LEASE 15 s and
// WATCHDOG_MARGIN 5 s (the shipped defaults) and FENCING_TIMEOUT 10 s
// (LAB_WD_FENCING_TIMEOUT). Scenarios (LAB_WATCHDOG_SCENARIOS, default
// a,b,c,d,e, run in the order c, a, e, b, d; LAB_WD_TRIALS repeats a):
//
//	a: a compute's BMC silent (ipmi_sim SIGSTOPped) and the compute hung
//	   (SIGSTOP): the BMC fence fails, the watchdog fences it, every server
//	   ACTIVE elsewhere, the compute's processes dead before the first
//	   evacuate;
//	b: a compute cut from everything (mesh and management network) with its
//	   BMC silent: its agent stops feeding, the double kills it, it is
//	   recovered, nothing of it runs after;
//	c: all three leaders SIGSTOPped for 3 × L: no double fires, every
//	   compute's processes alive, nothing fenced, forced down or evacuated;
//	d: as a, with the acting leader SIGKILLed during the watchdog wait: the
//	   next leader fences no earlier than the committed grant's G + L + W +
//	   margin and before its own start + L + W + margin (resumed, not
//	   started over), later than the deadline only while the other
//	   holders' unbroken reach is missing (it says so); one recovery, one
//	   evacuation per server;
//	e: a at FENCING_TIMEOUT 30 s, the default: the figure with the BMC's
//	   own timeout.
func TestLabWatchdog(t *testing.T) {
	const (
		lease  = 15 * time.Second
		w      = 10 * time.Second
		margin = 5 * time.Second
	)
	l := newLabEnv(t, 5, []string{"LAB_CHAOS=1", "LAB_WATCHDOG=10s"})
	if l.vars["LAB_CHAOS"] != "1" || l.vars["LAB_WATCHDOG"] != "10s" {
		t.Fatalf("%s/env: the lab was not brought up with LAB_CHAOS=1 LAB_WATCHDOG=10s (LAB_CHAOS=%q LAB_WATCHDOG=%q)",
			l.dir, l.vars["LAB_CHAOS"], l.vars["LAB_WATCHDOG"])
	}
	l.ensureEvacFlavor()
	hosts := l.computes()
	if len(hosts) != 5 {
		t.Fatalf("the watchdog scenarios need 5 computes, the lab has %d", len(hosts))
	}
	// LAB_KEEP_LOGS also keeps the agents' logs and the doubles' records
	// (the lab's directory goes with it).
	if keep := os.Getenv("LAB_KEEP_LOGS"); keep != "" {
		t.Cleanup(func() {
			dir := filepath.Join(keep, "agents")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Logf("LAB_KEEP_LOGS: %v", err)
				return
			}
			for _, h := range hosts {
				for src, dst := range map[string]string{
					filepath.Join(l.dir, "log", h+".iha-agent.log"):            h + ".iha-agent.log",
					filepath.Join(l.dir, "iha", "agents", h, "watchdog.jsonl"): h + ".watchdog.jsonl",
				} {
					if b, err := os.ReadFile(src); err == nil {
						_ = os.WriteFile(filepath.Join(dir, dst), b, 0o644)
					}
				}
			}
			t.Logf("agents' logs and the doubles' records kept in %s", dir)
		})
	}
	fencingTimeout := envOr("LAB_WD_FENCING_TIMEOUT", "10")
	want := map[string]bool{}
	for _, s := range strings.Split(envOr("LAB_WATCHDOG_SCENARIOS", "a,b,c,d,e"), ",") {
		want[strings.TrimSpace(s)] = true
	}
	var figures []string
	run := func(n, name string, f func(t *testing.T)) {
		if !want[n] {
			return
		}
		t.Run(n+" "+name, func(t *testing.T) {
			defer l.use(t)()
			l.settle(t)
			start := time.Now()
			f(t)
			t.Logf("scenario %s took %v", n, time.Since(start).Round(time.Second))
		})
	}
	// armed waits until the acting leader's replica shows every host in
	// hosts armed under a lease granted after after.
	armed := func(t *testing.T, c *ihaConfig, hosts []string, after time.Time) {
		t.Helper()
		start := time.Now()
		waitFor(t, fmt.Sprintf("%d agents armed under a lease granted since %s", len(hosts), after.Format("15:04:05.000")), 3*time.Minute, func() (bool, string) {
			var not []string
			for _, h := range hosts {
				r, ok := c.hostOnLeader(h)
				if !ok || r.Watchdog == nil || !r.Watchdog.Armed || !r.Watchdog.LastGrant.After(after) {
					not = append(not, h)
				}
			}
			return len(not) == 0, fmt.Sprintf("not armed: %v", not)
		})
		t.Logf("%d agents armed under a fresh lease %v after asked", len(hosts), time.Since(start).Round(100*time.Millisecond))
	}
	// cluster starts three leaders with IHA's defaults and the watchdog
	// keys, waits for the whole mesh and every agent armed.
	cluster := func(t *testing.T, ft string) *ihaConfig {
		keys := map[string]string{"WATCHDOG_LEASE": lease.String(), "WATCHDOG_MARGIN": margin.String(), "FENCING_TIMEOUT": ft}
		if lv := os.Getenv("LAB_CHAOS_LOGLEVEL"); lv != "" {
			keys["LOGLEVEL"] = lv
		}
		c := l.writeConfig(t, l.bin, keys)
		c.start(t)
		t.Cleanup(func() { c.stop(t) })
		l.waitMesh(t, c, "both")
		armed(t, c, hosts, time.Time{})
		return c
	}
	// dead fails t unless every process in procs is gone.
	dead := func(t *testing.T, host string, procs map[string]int, when string) {
		t.Helper()
		for name, pid := range procs {
			if running(pid) {
				t.Errorf("%s.%s (pid %d) still runs %s", host, name, pid, when)
			}
		}
	}
	// boot brings a host the watchdog reset back (its reboot), with its BMC
	// answering again, and waits until the leader re-enabled it and its
	// agent is armed again.
	boot := func(t *testing.T, c *ihaConfig, tl *timeline, h string) {
		l.ctl("bmc-mend", h)
		booted := time.Now()
		l.ctl("start", h)
		tl.add("%s booted again (ctl.sh start: watchdog, agent, gated nova-compute), BMC answering", h)
		l.waitReenabled(t, h, 6*time.Minute)
		tl.add("%s re-enabled", h)
		armed(t, c, []string{h}, booted)
		tl.add("%s's agent armed again", h)
	}
	// recovered asserts what a, b and d share once every server is ACTIVE
	// elsewhere: the watchdog fired and killed the host's processes, the
	// leader's BMC fence failed and it fenced through the watchdog no
	// earlier than G + L + W + margin, the processes were dead before the
	// first evacuate; it returns the record and the split.
	recovered := func(t *testing.T, c *ihaConfig, tl *timeline, h string, ids []string, procs map[string]int, t0, last time.Time) (hostView, wdSplit) {
		t.Helper()
		j := c.leader(t, time.Minute)
		rec, _ := c.hostOnLeader(h)
		evs := c.hostEvents(j, h)
		sp := wdSplit{judged: since(t0, rec.DetectedAt), allActive: since(t0, last), bmcFailed: -1, fired: -1, leaseExpired: -1, fenced: -1}
		tl.addAt(rec.DetectedAt, "%s judged failed (%s: %s)", h, rec.Evidence.Verdict, rec.Evidence.Note)
		fired, ok := l.wdFired(h, t0)
		if !ok {
			t.Errorf("%s's watchdog double never fired (record %+v)", h, l.wdEvents(h, t0))
		} else {
			sp.fired = since(t0, fired.At)
			tl.addAt(fired.LastFeed, "%s's watchdog fed for the last time", h)
			tl.addAt(fired.At, "%s's watchdog fired: nova-compute and iha-agent SIGKILLed (%.1f s after the last feed; kill error %q)", h, fired.At.Sub(fired.LastFeed).Seconds(), fired.Err)
			if fired.Err != "" {
				t.Errorf("the double's kill failed: %s", fired.Err)
			}
		}
		dead(t, h, map[string]int{"nova-compute": procs["nova-compute"], "iha-agent": procs["iha-agent"]}, "after the recovery")
		if e, ok := firstEvent(evs, "FencingStarted", t0); ok {
			tl.addAt(e.At, "%s: %s", e.Kind, e.Message)
		}
		if e, ok := firstEvent(evs, "FencingFailed", t0); ok {
			sp.bmcFailed = since(t0, e.At)
			tl.addAt(e.At, "%s: %s", e.Kind, e.Message)
		} else {
			t.Errorf("no FencingFailed event for %s: the BMC fence was not tried and failed (events %+v)", h, evs)
		}
		if e, ok := firstEvent(evs, "WatchdogFencePending", t0); !ok {
			t.Errorf("no WatchdogFencePending event for %s", h)
		} else {
			tl.addAt(e.At, "%s: %s", e.Kind, e.Message)
		}
		if e, ok := firstEvent(evs, "FencingSucceeded", t0); !ok || !strings.Contains(e.Message, "watchdog self-fence") {
			t.Errorf("FencingSucceeded of %s = %+v (found %v): want a watchdog self-fence", h, e, ok)
		} else {
			tl.addAt(e.At, "%s: %s", e.Kind, e.Message)
		}
		if rec.Fence == nil || rec.Fence.Method != "watchdog" {
			t.Errorf("%s's fence = %+v, want method watchdog", h, rec.Fence)
		} else {
			sp.fenced = since(t0, rec.Fence.At)
		}
		if wd := rec.Watchdog; wd == nil || wd.LastGrant.IsZero() {
			t.Errorf("%s's record has no watchdog lease: %+v", h, wd)
		} else {
			sp.leaseExpired = since(t0, wd.LeaseExpires)
			floor := wd.LastGrant.Add(lease + w + margin)
			tl.addAt(wd.LastGrant, "%s's last lease grant (G)", h)
			tl.addAt(wd.LeaseExpires, "%s's lease expired (G + L)", h)
			tl.addAt(floor, "G + L + W + margin (the committed fence deadline: %s)", wd.FenceDeadline.Format("15:04:05.000"))
			if rec.Fence != nil && rec.Fence.At.Before(floor) {
				t.Errorf("%s fenced at %s, before its last grant + L + W + margin (%s)", h, rec.Fence.At.Format(time.RFC3339Nano), floor.Format(time.RFC3339Nano))
			}
		}
		// The timeline: the double killed the host before anything was
		// evacuated (the leader's first evacuate step, to the millisecond;
		// Nova's first evacuation migration, to its whole second).
		firstEvac := rec.firstEvacuate()
		migs := l.evacuations(h, t0)
		firstMig := firstMigration(migs)
		sp.firstEvacuate = since(t0, firstEvac)
		tl.addAt(firstEvac, "the first evacuate step started")
		tl.addAt(firstMig, "the first evacuation migration created (Nova's created_at, whole seconds: %s)", firstMig.Format("15:04:05"))
		if ok {
			if firstEvac.IsZero() || !fired.At.Before(firstEvac) {
				t.Errorf("the watchdog fired at %s, not before the first evacuate step (%s)", fired.At.Format("15:04:05.000"), firstEvac.Format("15:04:05.000"))
			}
			if firstMig.IsZero() || fired.At.UTC().Truncate(time.Second).After(firstMig) {
				t.Errorf("the watchdog fired at %s, after the first evacuation migration was created (%s)", fired.At.UTC().Format("15:04:05.000"), firstMig.Format("15:04:05"))
			}
		}
		if n := len(l.bmcHistory(h, t0)); n != 0 {
			t.Errorf("%s's silent BMC carried out %d power command(s): %+v", h, n, l.bmcHistory(h, t0))
		}
		if n := countEvents(evs, "HostDown", t0); n != 1 {
			t.Errorf("%d HostDown events for %s, want one recovery", n, h)
		}
		l.oncePerServer(t, h, ids, t0)
		return rec, sp
	}

	run("c", "every leader stopped for 3 × L: the peers find the control plane down, no compute resets", func(t *testing.T) {
		c := cluster(t, fencingTimeout)
		tl := newTimeline()
		procs := map[string]map[string]int{}
		logFrom := map[string]int64{}
		for _, h := range hosts {
			procs[h] = l.hostProcs(h)
			logFrom[h] = l.logSize(h + ".iha-agent")
		}
		t0 := time.Now()
		nw := l.watchNova()
		stopped := false
		cont := func() {
			for _, n := range c.nodes {
				_ = n.proc().cmd.Process.Signal(syscall.SIGCONT)
			}
		}
		defer func() {
			if stopped {
				cont()
			}
		}()
		for _, n := range c.nodes {
			if err := n.proc().cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatalf("SIGSTOP %s: %v", n.name, err)
			}
		}
		stopped = true
		tl.add("all three leaders SIGSTOPped (load %.1f)", load1())
		time.Sleep(3 * lease)
		cont()
		stopped = false
		tl.add("all three leaders SIGCONTed after 3 × L")
		woke := time.Now()
		j := c.leader(t, 2*time.Minute)
		tl.add("%s leads", c.nodes[j].name)
		armed(t, c, hosts, woke)
		tl.add("every agent holds a fresh lease again")
		time.Sleep(45 * time.Second) // a poll of the woken leaders
		nw.end()
		tl.add("45 s later")
		for _, h := range hosts {
			if e, ok := l.wdFired(h, t0); ok {
				t.Errorf("%s's watchdog fired at %s with every leader stopped", h, e.At.Format("15:04:05.000"))
			}
			for name, pid := range procs[h] {
				if now := l.pid(h + "." + name); now != pid || !running(pid) {
					t.Errorf("%s.%s: pid %d before, %d now (running %v): the host was reset", h, name, pid, now, running(pid))
				}
			}
			agentLog := l.logSince(h+".iha-agent", logFrom[h])
			feedOn := grepLines(agentLog, "the control plane is down")
			if feedOn == "" {
				t.Errorf("%s's agent never logged that the control plane is down: its lease did not run out, or it was not asked (log:\n%s)", h, lastLines(agentLog, 20))
			} else {
				tl.add("%s's agent: %s", h, lastLines(feedOn, 1))
			}
			// A gap in the feeding shorter than W resets nothing; the
			// double's record and the pids above are the verdict.
			if line := grepLines(agentLog, "self-fencing: stopped feeding"); line != "" {
				tl.add("%s's agent stopped feeding for a while: %s", h, lastLines(line, 1))
			}
		}
		l.noAction(t, hosts, t0, nw)
		ev, _ := c.iha("events", "--limit", "40", "-o", "wide")
		t.Logf("timeline:\n%s\ncounts: %v\nevents:\n%s", tl, l.counts(t0), lastLines(ev, 25))
	})

	// hung is scenarios a and e: a hung compute (SIGSTOP) whose BMC is
	// silent, at FENCING_TIMEOUT ft.
	hung := func(t *testing.T, name, ft string, h string) {
		c := cluster(t, ft)
		ids := l.evacServers(t, "w"+name+"-"+h, h, 2)
		defer l.deleteServers(ids)
		procs := l.hostProcs(h)
		tl := newTimeline()
		load := load1()
		t0 := time.Now()
		l.ctl("bmc-cut", h)
		l.ctl("freeze", h)
		tl.add("%s's BMC silent (ipmi_sim SIGSTOPped) and %s frozen (SIGSTOP; its watchdog keeps counting); load %.1f", h, h, load)
		defer func() {
			_, _ = l.sh(time.Minute, "ctl.sh", "bmc-mend", h)
			_, _ = l.sh(time.Minute, "ctl.sh", "thaw", h)
		}()
		last := l.waitEvacuated(t, h, ids, nil, 5*time.Minute)
		tl.add("last server ACTIVE elsewhere (%v after the failure)", last.Sub(t0).Round(100*time.Millisecond))
		_, sp := recovered(t, c, tl, h, ids, procs, t0, last)
		figures = append(figures, fmt.Sprintf("%s (hung, BMC silent, FENCING_TIMEOUT %s s; load %.1f): %v", name, ft, load, sp))
		boot(t, c, tl, h)
		l.untouched(t, []string{h}, t0)
		t.Logf("timeline:\n%s\nsplit (s after the failure): %v\ncounts: %v", tl, sp, l.counts(t0))
	}
	// LAB_WD_TRIALS (default 1) runs a that many times, for the figure.
	trials := envInt(t, "LAB_WD_TRIALS", 1)
	run("a", "a hung compute whose BMC is silent: fenced by its watchdog, dead before the first evacuate, every server ACTIVE elsewhere", func(t *testing.T) {
		if trials == 1 {
			hung(t, "a", fencingTimeout, hosts[0])
			return
		}
		for i := 0; i < trials; i++ {
			t.Run(fmt.Sprintf("trial %d", i+1), func(t *testing.T) {
				defer l.use(t)()
				l.settle(t)
				hung(t, fmt.Sprintf("a#%d", i+1), fencingTimeout, hosts[i%2*4])
			})
		}
	})
	// e is a at the shipped FENCING_TIMEOUT (30 s): a silent BMC fails only
	// after it, past the watchdog's G + L + W + margin, so the BMC's timeout
	// decides the figure.
	run("e", "a at FENCING_TIMEOUT 30 s (the default): the silent BMC's timeout, not the watchdog, sets the time", func(t *testing.T) {
		hung(t, "e", "30", hosts[3])
	})

	run("b", "a compute cut from the controllers, its peers and Nova, BMC silent: its agent stops feeding, the watchdog kills it, it is recovered", func(t *testing.T) {
		c := cluster(t, fencingTimeout)
		h := hosts[1]
		ids := l.evacServers(t, "wb-"+h, h, 2)
		defer l.deleteServers(ids)
		procs := l.hostProcs(h)
		logFrom := l.logSize(h + ".iha-agent")
		tl := newTimeline()
		load := load1()
		t0 := time.Now()
		l.ctl("bmc-cut", h)
		l.ctl("cut", h, "all")
		tl.add("%s cut from the mesh (controllers, peers) and the management network (Nova), its BMC silent; load %.1f", h, load)
		mended := false
		defer func() {
			if !mended {
				_, _ = l.sh(time.Minute, "ctl.sh", "mend", h, "all")
			}
			_, _ = l.sh(time.Minute, "ctl.sh", "bmc-mend", h)
		}()
		last := l.waitEvacuated(t, h, ids, nil, 5*time.Minute)
		tl.add("last server ACTIVE elsewhere (%v after the cut)", last.Sub(t0).Round(100*time.Millisecond))
		_, sp := recovered(t, c, tl, h, ids, procs, t0, last)
		agentLog := l.logSince(h+".iha-agent", logFrom)
		if line := grepLines(agentLog, "self-fencing: stopped feeding"); line == "" {
			t.Errorf("%s's agent never said it stopped feeding (log:\n%s)", h, lastLines(agentLog, 20))
		} else {
			tl.add("%s's agent: %s", h, lastLines(line, 1))
		}
		// Nothing of it runs after: a minute later, its links mended, no
		// process of the host is alive (it stays off until booted).
		l.ctl("mend", h, "all")
		mended = true
		tl.add("%s's links mended (it is off)", h)
		time.Sleep(30 * time.Second)
		dead(t, h, procs, "30 s after its links were mended")
		if out, err := l.sh(time.Minute, "ctl.sh", "power", h); err != nil || strings.TrimSpace(out) != "power:0" {
			t.Errorf("ctl.sh power %s = %q (%v), want power:0: something of the reset host still runs", h, out, err)
		}
		if n := len(l.evacuations(h, t0)); n != len(ids) {
			t.Errorf("%d evacuations of %s's servers, want %d", n, h, len(ids))
		}
		figures = append(figures, fmt.Sprintf("b (cut off, BMC silent; load %.1f): %v", load, sp))
		boot(t, c, tl, h)
		l.untouched(t, []string{h}, t0)
		t.Logf("timeline:\n%s\nsplit (s after the cut): %v\ncounts: %v", tl, sp, l.counts(t0))
	})

	run("d", "the acting leader SIGKILLed during the watchdog wait: the next one fences at the committed grant's deadline, one recovery", func(t *testing.T) {
		c := cluster(t, fencingTimeout)
		h := hosts[2]
		ids := l.evacServers(t, "wd-"+h, h, 3)
		defer l.deleteServers(ids)
		procs := l.hostProcs(h)
		tl := newTimeline()
		load := load1()
		t0 := time.Now()
		l.ctl("bmc-cut", h)
		l.ctl("freeze", h)
		tl.add("%s's BMC silent and %s frozen; load %.1f", h, h, load)
		defer func() {
			_, _ = l.sh(time.Minute, "ctl.sh", "bmc-mend", h)
			_, _ = l.sh(time.Minute, "ctl.sh", "thaw", h)
		}()
		var wait hostView
		waitFor(t, "the watchdog wait of "+h+" committed", 3*time.Minute, func() (bool, string) {
			r, ok := c.hostOnLeader(h)
			if !ok {
				return false, "no leader"
			}
			wait = r
			return r.Watchdog != nil && !r.Watchdog.FenceDeadline.IsZero(), fmt.Sprintf("phase %q", r.Phase)
		})
		old := c.last
		deadline := wait.Watchdog.FenceDeadline
		grant := wait.Watchdog.LastGrant
		c.nodes[old].proc().kill(t)
		killed := time.Now()
		tl.add("the wait committed (deadline +%.1f s, last grant +%.1f s, BMC error %q); %s SIGKILLed at +%.1f s, %.1f s before the deadline",
			since(t0, deadline), since(t0, grant), wait.Watchdog.BMCError, c.nodes[old].name, since(t0, killed), deadline.Sub(killed).Seconds())
		if !killed.Before(deadline) {
			t.Errorf("the kill came %v after the deadline: the scenario did not kill during the wait", killed.Sub(deadline))
		}
		nj := c.leader(t, time.Minute)
		led := time.Now()
		tl.add("%s leads (+%.1f s)", c.nodes[nj].name, since(t0, led))
		c.startNode(t, old)
		tl.add("%s restarted on its data directory", c.nodes[old].name)
		last := l.waitEvacuated(t, h, ids, nil, 5*time.Minute)
		tl.add("last server ACTIVE elsewhere (%v after the failure)", last.Sub(t0).Round(100*time.Millisecond))
		rec, sp := recovered(t, c, tl, h, ids, procs, t0, last)
		if rec.Fence != nil {
			floor := grant.Add(lease + w + margin)
			if deadline.After(floor) {
				floor = deadline
			}
			// Resumed from the committed grant: at the deadline (or as soon
			// as the new leader leads, if that came later), not L + W +
			// margin after its own start.
			resume := floor
			if led.After(resume) {
				resume = led
			}
			tl.add("fenced by the new leader at +%.1f s: %.1f s after the committed deadline; a wait from its own start would end at +%.1f s",
				since(t0, rec.Fence.At), rec.Fence.At.Sub(floor).Seconds(), since(t0, led.Add(lease+w+margin)))
			if rec.Fence.At.Before(floor) {
				t.Errorf("fenced at %s, before the committed deadline %s", rec.Fence.At.Format("15:04:05.000"), floor.Format("15:04:05.000"))
			}
			if own := led.Add(lease + w + margin); !rec.Fence.At.Before(own) {
				t.Errorf("fenced at %s, not before the new leader's start + L + W + margin (%s): the wait was started over, not resumed from the committed grant",
					rec.Fence.At.Format("15:04:05.000"), own.Format("15:04:05.000"))
			}
			// Later than the deadline only for FencedAt's second condition:
			// the other holders must have reached a controller without a
			// break through the window before T (L·0.45 + … ≈ 18 s at the
			// defaults), and a leader change breaks the renewal chains of
			// the holders whose renewal fell in the election; the new
			// leader says so in its log.
			holders := grepLines(grepLines(c.nodes[nj].proc().logText(), `msg="waiting for the host's watchdog" component=reconciler host=`+h+" "), "reached a controller without a break")
			if holders != "" {
				tl.add("%s waited for the other holders' unbroken reach: %s", c.nodes[nj].name, lastLines(holders, 1))
			}
			if late := rec.Fence.At.Sub(resume); late > 5*time.Second && holders == "" {
				t.Errorf("fenced %v after the new leader could (%s), and not for the holders' quorum: the wait was not resumed from the committed grant", late, resume.Format("15:04:05.000"))
			}
			if !rec.Fence.At.After(killed) {
				t.Errorf("fenced at %s, before the kill at %s: not the new leader's fence", rec.Fence.At.Format("15:04:05.000"), killed.Format("15:04:05.000"))
			}
		}
		for jj := range c.nodes {
			if n := countEvents(c.hostEvents(jj, h), "FencingSucceeded", t0); n != 1 {
				t.Errorf("%s's replica: %d FencingSucceeded for %s, want 1", c.nodes[jj].name, n, h)
			}
		}
		figures = append(figures, fmt.Sprintf("d (hung, BMC silent, leader killed mid-wait; load %.1f): %v", load, sp))
		boot(t, c, tl, h)
		l.untouched(t, []string{h}, t0)
		t.Logf("timeline:\n%s\nsplit (s after the failure): %v\ncounts: %v", tl, sp, l.counts(t0))
	})

	t.Logf("watchdog figures (L %v, W %v, margin %v), seconds after the failure:\n%s",
		lease, w, margin, strings.Join(figures, "\n"))
}
