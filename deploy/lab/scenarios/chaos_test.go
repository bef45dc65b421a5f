//go:build lab && labchaos

package scenarios

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// timeline is what a chaos scenario prints: each event with its offset,
// in the order of their times.
type timeline struct {
	mu    sync.Mutex
	t0    time.Time
	lines []tlLine
}

type tlLine struct {
	off  time.Duration
	text string
}

func newTimeline() *timeline { return &timeline{t0: time.Now()} }

// add records an event that happens now.
func (tl *timeline) add(format string, args ...any) { tl.addAt(time.Now(), format, args...) }

// addAt records an event that happened at (read afterwards from a record).
func (tl *timeline) addAt(at time.Time, format string, args ...any) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.lines = append(tl.lines, tlLine{off: at.Sub(tl.t0), text: fmt.Sprintf(format, args...)})
}

func (tl *timeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	lines := append([]tlLine(nil), tl.lines...)
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].off < lines[j].off })
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = fmt.Sprintf("+%6.1fs %s", l.off.Seconds(), l.text)
	}
	return strings.Join(out, "\n")
}

// chaosCounts is what the BMC histories and Nova say happened to hosts
// since t0: power-offs of a powered host, every BMC power command, and
// evacuation migrations.
type chaosCounts struct {
	offs, commands, evacuations map[string]int
}

func (l *lab) counts(t0 time.Time) chaosCounts {
	c := chaosCounts{offs: map[string]int{}, commands: map[string]int{}, evacuations: map[string]int{}}
	for _, h := range l.computes() {
		hist := l.bmcHistory(h, t0)
		c.offs[h] = countOff(hist)
		c.commands[h] = len(hist)
		c.evacuations[h] = len(l.evacuations(h, t0))
	}
	return c
}

func (c chaosCounts) String() string {
	var parts []string
	for h := range c.commands {
		if c.commands[h]+c.evacuations[h] > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d power-off(s) of a powered host, %d BMC command(s), %d evacuation(s)", h, c.offs[h], c.commands[h], c.evacuations[h]))
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "no BMC command, no evacuation"
	}
	return strings.Join(parts, "; ")
}

// forcedWatch polls Nova every second until stop is closed and records
// every compute it saw forced down and every one it saw down.
type forcedWatch struct {
	mu     sync.Mutex
	forced map[string]bool
	down   map[string]int
	stop   chan struct{}
	done   chan struct{}
}

func (l *lab) watchNova() *forcedWatch {
	w := &forcedWatch{forced: map[string]bool{}, down: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			for h, s := range l.servicesErr() {
				w.mu.Lock()
				if s.ForcedDown {
					w.forced[h] = true
				}
				if s.State != "up" {
					w.down[h]++
				}
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return w
}

func (w *forcedWatch) end() {
	close(w.stop)
	<-w.done
}

// verdictWatch polls the acting leader's /v1/hosts every 2 s and records
// each host's verdicts.
func (c *ihaConfig) watchVerdicts(stop chan struct{}) (func() map[string][]string, func()) {
	var mu sync.Mutex
	seen := map[string][]string{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if j := c.actingLeader(); j >= 0 {
				var hs struct {
					Hosts []struct {
						Host    string `json:"host"`
						Verdict string `json:"verdict"`
					} `json:"hosts"`
				}
				if c.get(j, "/v1/hosts", &hs) == nil {
					mu.Lock()
					for _, h := range hs.Hosts {
						v := seen[h.Host]
						if len(v) == 0 || v[len(v)-1] != h.Verdict {
							seen[h.Host] = append(v, h.Verdict)
						}
					}
					mu.Unlock()
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	get := func() map[string][]string {
		mu.Lock()
		defer mu.Unlock()
		out := map[string][]string{}
		for k, v := range seen {
			out[k] = append([]string(nil), v...)
		}
		return out
	}
	return get, func() { <-done }
}

// chaosEvent is one event of GET /v1/events.
type chaosEvent struct {
	At      time.Time `json:"at"`
	Host    string    `json:"host"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
	Warning bool      `json:"warning"`
}

// chaosEvents is GET /v1/events.
type chaosEvents struct {
	Events []chaosEvent `json:"events"`
}

// consecutiveRE reads a failed poll cycle's count from the leader's log.
var consecutiveRE = regexp.MustCompile(`consecutive_failures=(\d+)`)

// skewRE reads the estimate out of a NovaClockSkew message ("Nova's clock
// runs about 30.4s behind this leader's …").
var skewRE = regexp.MustCompile(`runs about (\S+) behind`)

// skew is the first NovaClockSkew warning and the offset it estimates.
func (e chaosEvents) skew() (*chaosEvent, time.Duration) {
	for i, ev := range e.Events {
		if ev.Kind != "NovaClockSkew" || !ev.Warning {
			continue
		}
		var d time.Duration
		if m := skewRE.FindStringSubmatch(ev.Message); m != nil {
			d, _ = time.ParseDuration(m[1])
		}
		return &e.Events[i], d
	}
	return nil, 0
}

// readyz is node j's GET /readyz: the status code (0: no answer) and body.
func (c *ihaConfig) readyz(j int) (int, string) {
	resp, err := c.hc.Get("http://" + c.nodes[j].api + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// noAction fails t if any host in hosts was powered, evacuated or forced
// down since t0.
func (l *lab) noAction(t testing.TB, hosts []string, t0 time.Time, w *forcedWatch) {
	t.Helper()
	cn := l.counts(t0)
	for _, h := range hosts {
		if cn.commands[h] > 0 || cn.evacuations[h] > 0 {
			t.Errorf("%s: %d BMC command(s), %d evacuation(s) since %s: want none", h, cn.commands[h], cn.evacuations[h], t0.Format("15:04:05"))
		}
		if w != nil {
			w.mu.Lock()
			if w.forced[h] {
				t.Errorf("%s was forced down", h)
			}
			w.mu.Unlock()
		}
	}
}

// evacServers boots n evacuable servers on host and waits until ACTIVE.
func (l *lab) evacServers(t testing.TB, prefix, host string, n int) []string {
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, l.createServer(fmt.Sprintf("%s-%d", prefix, i), evacFlavor, host))
	}
	l.waitStatus(t, ids, "ACTIVE")
	return ids
}

// oncePerServer fails t unless each server has exactly one evacuation
// migration from host since t0.
func (l *lab) oncePerServer(t testing.TB, host string, ids []string, t0 time.Time) {
	t.Helper()
	per := map[string]int{}
	migs := l.evacuations(host, t0)
	for _, m := range migs {
		per[m.Instance]++
	}
	for _, id := range ids {
		if per[id] != 1 {
			t.Errorf("server %s: %d evacuation migrations from %s, want exactly 1 (%+v)", id, per[id], host, migs)
		}
	}
}

// waitRecord polls the acting leader's record of host until cond holds.
func (c *ihaConfig) waitRecord(t testing.TB, host string, d time.Duration, what string, cond func(hostView) bool) hostView {
	t.Helper()
	var h hostView
	waitFor(t, what, d, func() (bool, string) {
		var ok bool
		h, ok = c.hostOnLeader(host)
		if !ok {
			return false, "no leader"
		}
		return cond(h), fmt.Sprintf("phase %q, %d requested", h.Phase, h.requested())
	})
	return h
}

// TestLabChaos is `make lab-chaos` (issue 22): faults on a LAB_CHAOS=1 lab
// (5 computes, Nova's defaults; agents and leaders each in a network
// namespace on the mesh network, net.sh) with three leaders and IHA's
// defaults, each scenario asserting from the BMC histories, Nova's
// migrations and the leaders' replicas. LAB_CHAOS_SCENARIOS (e.g. 1,2,5)
// runs a subset; LAB_CHAOS_KILL_RUNS (default 3) sets scenario 7's runs.
func TestLabChaos(t *testing.T) {
	l := newLabEnv(t, 5, []string{"LAB_CHAOS=1"})
	if l.vars["LAB_CHAOS"] != "1" {
		t.Fatalf("%s/env: the lab was not brought up with LAB_CHAOS=1 (the mesh network)", l.dir)
	}
	l.ensureEvacFlavor()
	hosts := l.computes()
	if len(hosts) != 5 {
		t.Fatalf("the chaos scenarios need 5 computes, the lab has %d", len(hosts))
	}
	want := map[string]bool{}
	for _, s := range strings.Split(envOr("LAB_CHAOS_SCENARIOS", "1,2,3,4,5,6,7,8"), ",") {
		want[strings.TrimSpace(s)] = true
	}
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
	// cluster starts three leaders with IHA's defaults plus keys and waits
	// for the whole mesh (3 leaders + 5 agents).
	// LAB_CHAOS_LOGLEVEL (e.g. DEBUG) sets the leaders' LOGLEVEL: a
	// debug log times every poll cycle.
	cluster := func(t *testing.T, keys map[string]string) *ihaConfig {
		if lv := os.Getenv("LAB_CHAOS_LOGLEVEL"); lv != "" {
			k := map[string]string{"LOGLEVEL": lv}
			for key, v := range keys {
				k[key] = v
			}
			keys = k
		}
		c := l.writeConfig(t, l.bin, keys)
		c.start(t)
		t.Cleanup(func() { c.stop(t) })
		l.waitMesh(t, c, "both")
		return c
	}
	// window keeps the fault for d while watching; it returns the verdicts
	// the acting leader showed per host.
	window := func(c *ihaConfig, d time.Duration) map[string][]string {
		stop := make(chan struct{})
		get, wait := c.watchVerdicts(stop)
		time.Sleep(d)
		close(stop)
		wait()
		return get()
	}

	run("1", "a compute cut from the mesh only is never fenced; from Nova only, judged nova-compute-broken; from both, recovered once", func(t *testing.T) {
		c := cluster(t, nil)
		h := hosts[0]
		tl := newTimeline()
		t0 := time.Now()
		w := l.watchNova()
		l.ctl("cut", h, "mesh")
		tl.add("%s cut from the mesh", h)
		v := window(c, 90*time.Second)
		l.ctl("mend", h, "mesh")
		tl.add("%s mended; verdicts seen: %v", h, v[h])
		l.waitMesh(t, c, "both")
		tl.add("mesh whole again")
		w.end()
		l.noAction(t, hosts, t0, w)

		t1 := time.Now()
		w = l.watchNova()
		l.ctl("cut", h, "mgmt")
		tl.add("%s cut from Nova (management network)", h)
		v = window(c, 100*time.Second)
		w.mu.Lock()
		downs := w.down[h]
		w.mu.Unlock()
		l.ctl("mend", h, "mgmt")
		tl.add("%s mended; Nova said down in %d polls; verdicts seen: %v", h, downs, v[h])
		if downs == 0 {
			t.Errorf("%s never showed down in Nova behind a 100 s management cut: the scenario did not test what it says", h)
		}
		if !contains(v[h], "nova-compute-broken") {
			t.Errorf("the acting leader never judged %s nova-compute-broken (verdicts %v)", h, v[h])
		}
		l.settle(t)
		tl.add("%s up in Nova again", h)
		w.end()
		l.noAction(t, hosts, t1, w)

		ids := l.evacServers(t, "c1-"+h, h, 2)
		defer l.deleteServers(ids)
		t2 := time.Now()
		l.ctl("cut", h, "all")
		tl.add("%s cut from the mesh and from Nova", h)
		mended := false
		defer func() {
			if !mended {
				l.ctl("mend", h, "all")
			}
		}()
		waitFor(t, "the BMC of "+h+" powering it off", 5*time.Minute, func() (bool, string) {
			return countOff(l.bmcHistory(h, t2)) > 0, "no power-off yet"
		})
		tl.add("%s powered off by its BMC", h)
		l.ctl("mend", h, "all")
		mended = true
		tl.add("%s's links mended (it is off)", h)
		last := l.waitEvacuated(t, h, ids, nil, 5*time.Minute)
		tl.add("last server ACTIVE elsewhere (%v after the cut)", last.Sub(t2).Round(100*time.Millisecond))
		l.waitReenabled(t, h, 6*time.Minute)
		tl.add("%s re-enabled", h)
		if n := countOff(l.bmcHistory(h, t2)); n != 1 {
			t.Errorf("%s: %d power-offs, want 1: %+v", h, n, l.bmcHistory(h, t2))
		}
		l.oncePerServer(t, h, ids, t2)
		l.untouched(t, []string{h}, t0)
		t.Logf("timeline:\n%s\ncounts since the start: %v", tl, l.counts(t0))
	})

	run("2", "a rack (two computes of five) cut from the mesh: the partition guard holds them to Nova's rule, nothing done", func(t *testing.T) {
		c := cluster(t, nil)
		rack := hosts[:2]
		tl := newTimeline()
		t0 := time.Now()
		w := l.watchNova()
		for _, h := range rack {
			l.ctl("cut", h, "mesh")
		}
		tl.add("%v cut from the mesh", rack)
		defer func() {
			for _, h := range rack {
				_, _ = l.sh(time.Minute, "ctl.sh", "mend", h, "mesh")
			}
		}()
		v := window(c, 120*time.Second)
		for _, h := range rack {
			l.ctl("mend", h, "mesh")
		}
		tl.add("mended; verdicts seen: %s %v, %s %v", rack[0], v[rack[0]], rack[1], v[rack[1]])
		l.waitMesh(t, c, "both")
		w.end()
		l.noAction(t, hosts, t0, w)
		ev, _ := c.iha("events", "--limit", "50", "-o", "wide")
		t.Logf("timeline:\n%s\ncounts: %v\nevents:\n%s", tl, l.counts(t0), lastLines(ev, 15))
	})

	run("5", "RabbitMQ down: computes down in Nova but alive in the mesh, nothing fenced", func(t *testing.T) {
		c := cluster(t, nil)
		tl := newTimeline()
		t0 := time.Now()
		w := l.watchNova()
		l.ctl("pause", "rabbitmq")
		tl.add("RabbitMQ paused (SIGSTOP)")
		resumed := false
		defer func() {
			if !resumed {
				_, _ = l.sh(time.Minute, "ctl.sh", "resume", "rabbitmq")
			}
		}()
		// 75 s: every compute's last report is then more than Nova's 60 s old.
		v := window(c, 75*time.Second)
		l.ctl("resume", "rabbitmq")
		resumed = true
		tl.add("RabbitMQ resumed; verdicts seen: %v", v)
		window(c, 60*time.Second)
		w.mu.Lock()
		downs := len(w.down)
		w.mu.Unlock()
		tl.add("%d of %d computes were seen down in Nova", downs, len(hosts))
		if downs == 0 {
			t.Errorf("no compute showed down in Nova during the RabbitMQ outage: the scenario did not test what it says")
		}
		l.settle(t)
		tl.add("every compute up again")
		w.end()
		l.noAction(t, hosts, t0, w)
		t.Logf("timeline:\n%s\ncounts: %v", tl, l.counts(t0))
	})

	run("6", "a BMC that stops answering after the power-off: no evacuation until the power-off is confirmed", func(t *testing.T) {
		c := cluster(t, nil)
		h := hosts[1]
		ids := l.evacServers(t, "c6-"+h, h, 2)
		defer l.deleteServers(ids)
		tl := newTimeline()
		t0 := time.Now()
		l.ctl("bmc-hang", h)
		l.ctl("freeze", h)
		tl.add("%s frozen (SIGSTOP); its BMC will hang after the next power-off", h)
		mended := false
		defer func() {
			if !mended {
				_, _ = l.sh(time.Minute, "ctl.sh", "bmc-mend", h)
			}
			_, _ = l.sh(time.Minute, "ctl.sh", "thaw", h)
		}()
		waitFor(t, "the BMC of "+h+" to take the power-off and hang", 5*time.Minute, func() (bool, string) {
			for _, e := range l.bmcHistory(h, t0) {
				if e.op == "hang" {
					return true, ""
				}
			}
			return false, "no power-off yet"
		})
		tl.add("the BMC powered %s off and stopped answering", h)
		time.Sleep(90 * time.Second)
		rec, _ := c.hostOnLeader(h)
		tl.add("90 s later: phase %q, fence %+v, evacuations %d", rec.Phase, rec.Fence, len(l.evacuations(h, t0)))
		if n := len(l.evacuations(h, t0)); n > 0 {
			t.Errorf("%d evacuations while the power-off was unconfirmed", n)
		}
		for _, id := range ids {
			if s := l.server(id); s.Host != h {
				t.Errorf("server %s left %s while its power-off was unconfirmed: %+v", id, h, s)
			}
		}
		mend := time.Now()
		l.ctl("bmc-mend", h)
		mended = true
		tl.add("BMC answers again")
		last := l.waitEvacuated(t, h, ids, nil, 5*time.Minute)
		tl.add("last server ACTIVE elsewhere (%v after the BMC answered again)", last.Sub(mend).Round(100*time.Millisecond))
		for _, m := range l.evacuations(h, t0) {
			if c, err := time.Parse("2006-01-02T15:04:05.999999", m.Created); err == nil && c.Before(mend.UTC().Truncate(time.Second)) {
				t.Errorf("evacuation %d created at %s, before the BMC answered again (%s)", m.ID, m.Created, mend.UTC().Format("15:04:05"))
			}
		}
		l.waitReenabled(t, h, 6*time.Minute)
		tl.add("%s re-enabled", h)
		if n := countOff(l.bmcHistory(h, t0)); n != 1 {
			t.Errorf("%s: %d power-offs of a powered host, want 1: %+v", h, n, l.bmcHistory(h, t0))
		}
		l.oncePerServer(t, h, ids, t0)
		l.untouched(t, []string{h}, t0)
		t.Logf("timeline:\n%s\ncounts: %v", tl, l.counts(t0))
	})

	run("4", "Nova's API down for 60 s mid-recovery: no leader exits, every one ready after, the recovery finishes once", func(t *testing.T) {
		c := cluster(t, nil)
		h := hosts[3]
		ids := l.evacServers(t, "c4-"+h, h, 2)
		defer l.deleteServers(ids)
		tl := newTimeline()
		t0 := time.Now()
		if out, err := l.ipmi(h, "chassis", "power", "off"); err != nil {
			t.Fatalf("power off %s: %v %s", h, err, out)
		}
		tl.add("%s powered off through its BMC", h)
		c.waitRecord(t, h, 5*time.Minute, "the power-off of "+h+" confirmed", func(r hostView) bool { return r.Fence != nil })
		l.ctl("pause", "nova-api")
		tl.add("fence confirmed; nova-api paused (SIGSTOP)")
		resumed := false
		defer func() {
			if !resumed {
				_, _ = l.sh(time.Minute, "ctl.sh", "resume", "nova-api")
			}
		}()
		// /readyz of every leader, every second, until the recovery ends.
		var rmu sync.Mutex
		notReady := map[string]int{}
		stopReady := make(chan struct{})
		readyDone := make(chan struct{})
		go func() {
			defer close(readyDone)
			for {
				for j, n := range c.nodes {
					if code, body := c.readyz(j); code == 503 {
						rmu.Lock()
						if notReady[n.name] == 0 {
							tl.add("%s not ready: %s", n.name, body)
						}
						notReady[n.name]++
						rmu.Unlock()
					}
				}
				select {
				case <-stopReady:
					return
				case <-time.After(time.Second):
				}
			}
		}()
		time.Sleep(60 * time.Second)
		l.ctl("resume", "nova-api")
		resumed = true
		tl.add("nova-api resumed")
		last := l.waitEvacuated(t, h, ids, nil, 5*time.Minute)
		tl.add("last server ACTIVE elsewhere (%v after the failure)", last.Sub(t0).Round(100*time.Millisecond))
		l.waitReenabled(t, h, 6*time.Minute)
		tl.add("%s re-enabled", h)
		close(stopReady)
		<-readyDone
		// The acting leader turns not ready after 3 failed poll cycles in a
		// row, or once its failed cycles span NOVA_API_TIMEOUT. Both need a
		// failed cycle: at POLL 45 s the one poll inside this outage starts
		// about 45 s after the fence's cycle and hangs until nova-api
		// resumes, within NOVA_API_TIMEOUT (30 s), so it succeeds (FINDINGS
		// 10: no failed cycle on the lab). What is asserted is what the
		// product promises: a leader that logged its third failed cycle in
		// a row answered /readyz 503 until it reached Nova again.
		tl.add("not-ready answers (seconds) per leader: %v", notReady)
		failedPolls := 0
		for _, n := range c.nodes {
			for _, line := range strings.Split(grepLines(n.proc().logText(), `msg="poll cycle failed"`), "\n") {
				if line == "" {
					continue
				}
				tl.add("%s: %s", n.name, line)
				if m := consecutiveRE.FindStringSubmatch(line); m != nil {
					if k, _ := strconv.Atoi(m[1]); k >= 3 && notReady[n.name] == 0 {
						t.Errorf("%s logged %d failed poll cycles in a row but never answered /readyz 503", n.name, k)
					}
				}
				failedPolls++
			}
			if evs := grepLines(n.proc().logText(), `msg="evacuate refused"`); evs != "" {
				tl.add("%s:\n%s", n.name, evs)
			}
		}
		tl.add("%d failed poll cycle(s) logged during the outage", failedPolls)
		for j, n := range c.nodes {
			select {
			case <-n.proc().done:
				t.Errorf("%s exited during the Nova outage:\n%s", n.name, lastLines(n.proc().logText(), 20))
			default:
			}
			waitFor(t, n.name+" ready again", 2*time.Minute, func() (bool, string) {
				code, body := c.readyz(j)
				return code == 200, fmt.Sprintf("%d %s", code, body)
			})
		}
		tl.add("every leader ready")
		if n := countOff(l.bmcHistory(h, t0)); n != 1 {
			t.Errorf("%s: %d power-offs of a powered host, want 1", h, n)
		}
		l.oncePerServer(t, h, ids, t0)
		l.untouched(t, []string{h}, t0)
		t.Logf("timeline:\n%s\ncounts: %v", tl, l.counts(t0))
	})

	run("3", "controllers split 2/1 with the acting leader alone, mid-recovery: the majority finishes, one power-off, one evacuation per server", func(t *testing.T) {
		c := cluster(t, map[string]string{"EVACUATION_STAGGER": "2"})
		h := hosts[2]
		ids := l.evacServers(t, "c3-"+h, h, 4)
		defer l.deleteServers(ids)
		tl := newTimeline()
		t0 := time.Now()
		if out, err := l.ipmi(h, "chassis", "power", "off"); err != nil {
			t.Fatalf("power off %s: %v %s", h, err, out)
		}
		tl.add("%s powered off through its BMC", h)
		rec := c.waitRecord(t, h, 5*time.Minute, "the first evacuate of "+h+" accepted", func(r hostView) bool { return r.requested() >= 1 })
		old := c.last
		minority := c.nodes[old].name
		l.ctl("cut", minority, "mesh")
		cut := time.Now()
		tl.add("acting leader %s cut from the other controllers and the agents (it still reaches Nova and the BMCs); %d of %d evacuations accepted", minority, rec.requested(), len(ids))
		mended := false
		defer func() {
			if !mended {
				_, _ = l.sh(time.Minute, "ctl.sh", "mend", minority, "mesh")
			}
		}()
		var nj int
		waitFor(t, "a leader on the majority side", 2*time.Minute, func() (bool, string) {
			nj = -1
			for j := range c.nodes {
				var cl clusterView
				if j != old && c.get(j, "/v1/cluster", &cl) == nil && cl.RaftState == "Leader" {
					nj = j
				}
			}
			return nj >= 0, "none"
		})
		c.last = nj
		tl.add("%s leads the majority (%v after the cut)", c.nodes[nj].name, time.Since(cut).Round(100*time.Millisecond))
		last := l.waitEvacuated(t, h, ids, nil, 5*time.Minute)
		tl.add("last server ACTIVE elsewhere")
		l.waitReenabled(t, h, 6*time.Minute)
		tl.add("%s re-enabled by the majority", h)
		var mcl clusterView
		_ = c.getLocal(old, "/v1/cluster", &mcl)
		tl.add("the minority %s sees itself as %s (term %d)", minority, mcl.RaftState, mcl.Term)
		l.ctl("mend", minority, "mesh")
		mended = true
		tl.add("partition mended")
		if n := countOff(l.bmcHistory(h, t0)); n != 1 {
			t.Errorf("%s: %d power-offs of a powered host, want 1: %+v", h, n, l.bmcHistory(h, t0))
		}
		l.oncePerServer(t, h, ids, t0)
		l.untouched(t, []string{h}, t0)
		waitFor(t, "every replica showing the recovery of "+h+" done", 3*time.Minute, func() (bool, string) {
			var seen []string
			ok := true
			for j := range c.nodes {
				var r hostView
				if err := c.getLocal(j, "/v1/hosts/"+h, &r); err != nil {
					return false, err.Error()
				}
				seen = append(seen, c.nodes[j].name+":"+r.Phase)
				ok = ok && r.Phase == "done"
			}
			return ok, strings.Join(seen, " ")
		})
		steps := grepLines(c.nodes[old].proc().logText(), "component=reconciler")
		t.Logf("timeline:\n%s\nlast ACTIVE %v after the failure; counts: %v\nthe minority's reconciler lines:\n%s",
			tl, last.Sub(t0).Round(100*time.Millisecond), l.counts(t0), lastLines(steps, 30))
	})

	run("7", "acting leader SIGKILLed at a random moment of recoveries: one power-off per failed host, one evacuation per server", func(t *testing.T) {
		c := cluster(t, nil)
		runs := envInt(t, "LAB_CHAOS_KILL_RUNS", 3)
		tl := newTimeline()
		t0 := time.Now()
		for i := 0; i < runs; i++ {
			h := hosts[(2*i)%len(hosts)]
			ids := l.evacServers(t, fmt.Sprintf("c7-%d-%s", i, h), h, 2)
			l.settle(t)
			ti := time.Now()
			if out, err := l.ipmi(h, "chassis", "power", "off"); err != nil {
				t.Fatalf("power off %s: %v %s", h, err, out)
			}
			delay := time.Duration(rand.Float64() * float64(25*time.Second))
			time.Sleep(delay)
			j := c.leader(t, time.Minute)
			rec, _ := c.hostOnLeader(h)
			c.nodes[j].proc().kill(t)
			tl.add("run %d: %s powered off; %v later %s SIGKILLed (record phase %q, %d requested)", i+1, h, delay.Round(100*time.Millisecond), c.nodes[j].name, rec.Phase, rec.requested())
			nj := c.leader(t, time.Minute)
			tl.add("run %d: %s leads", i+1, c.nodes[nj].name)
			c.startNode(t, j)
			last := l.waitEvacuated(t, h, ids, nil, 5*time.Minute)
			l.waitReenabled(t, h, 6*time.Minute)
			tl.add("run %d: last server ACTIVE %v after the failure; %s re-enabled", i+1, last.Sub(ti).Round(100*time.Millisecond), h)
			if n := countOff(l.bmcHistory(h, ti)); n != 1 {
				t.Errorf("run %d: %s: %d power-offs of a powered host, want 1: %+v", i+1, h, n, l.bmcHistory(h, ti))
			}
			l.oncePerServer(t, h, ids, ti)
			l.untouched(t, []string{h}, ti)
			l.deleteServers(ids)
		}
		// Counted per run above: a deleted server's migrations are no longer listed.
		t.Logf("timeline (%d runs since %s):\n%s", runs, t0.Format("15:04:05"), tl)
	})

	run("8", "Nova's clock 30 s behind the controllers': no false verdict on healthy hosts, nor on one cut from the mesh only; the skew detected and reported", func(t *testing.T) {
		tl := newTimeline()
		l.ctl("nova-clock", "-30s")
		tl.add("nova-api, nova-conductor and nova-scheduler restarted 30 s behind")
		defer func() {
			if out, err := l.sh(3*time.Minute, "ctl.sh", "nova-clock", "real"); err != nil {
				t.Errorf("nova-clock real: %v %s", err, out)
			}
		}()
		l.settle(t)
		started := time.Now()
		c := cluster(t, nil)
		tl.add("three leaders up, the whole mesh seen (%v)", time.Since(started).Round(100*time.Millisecond))
		t0 := time.Now()
		w := l.watchNova()
		healthy := window(c, 60*time.Second)
		tl.add("60 s with every host healthy: verdicts seen %v", healthy)
		// The skew is detected and reported: a NovaClockSkew event (a
		// warning, cluster-wide) on the acting leader's replica, estimating
		// Nova about 30 s behind.
		j := c.leader(t, time.Minute)
		var evs chaosEvents
		if err := c.getLocal(j, "/v1/events?kind=NovaClockSkew", &evs); err != nil {
			t.Errorf("the acting leader %s's events: %v", c.nodes[j].name, err)
		}
		skewEv, est := evs.skew()
		if skewEv == nil {
			t.Errorf("no NovaClockSkew warning on the acting leader %s's replica after 60 s with Nova 30 s behind (events: %+v)", c.nodes[j].name, evs.Events)
		} else {
			tl.add("NovaClockSkew on %s's replica at %v after the leaders started (host %q, warning %v): %s",
				c.nodes[j].name, skewEv.At.Sub(started).Round(100*time.Millisecond), skewEv.Host, skewEv.Warning, skewEv.Message)
			if skewEv.Host != "" {
				t.Errorf("NovaClockSkew names host %q: want a cluster-wide event", skewEv.Host)
			}
			// The estimate is an upper bound: the offset plus updated_at's
			// truncation (< 1 s) plus how long ago the freshest report came.
			if est < 29*time.Second || est > 35*time.Second {
				t.Errorf("NovaClockSkew estimates Nova %v behind, want about 30 s: %q", est, skewEv.Message)
			}
		}
		h := hosts[4]
		ids := l.evacServers(t, "c8-"+h, h, 1) // something to lose if it were judged failed
		defer l.deleteServers(ids)
		l.ctl("cut", h, "mesh")
		tl.add("%s cut from the mesh only (Nova still hears it)", h)
		defer func() { _, _ = l.sh(time.Minute, "ctl.sh", "mend", h, "mesh") }()
		v := window(c, 90*time.Second)
		l.ctl("mend", h, "mesh")
		tl.add("%s mended; verdicts seen during the cut: %v", h, v)
		w.end()
		ev, _ := c.iha("events", "--limit", "50", "-o", "wide")
		t.Logf("timeline:\n%s\ncounts: %v\nevents:\n%s", tl, l.counts(t0), lastLines(ev, 20))
		l.noAction(t, hosts, t0, w)
		// A verdict of failure is false here even if a gate (the all-stale
		// breaker, nothing to evacuate) kept it from acting.
		for _, kind := range []string{"HostDown", "HostSkipped", "FencingStarted", "EvacuationStarted"} {
			if line := grepLines(ev, " "+kind+" "); line != "" {
				t.Errorf("a healthy host judged failed under the skew (%s):\n%s", kind, line)
			}
		}
		// Nor judged broken or failed, in either window: every host was
		// healthy (the cut one heard by Nova all along).
		for _, seen := range []map[string][]string{healthy, v} {
			for host, vs := range seen {
				for _, verdict := range vs {
					switch verdict {
					case "failed", "instanceha-rule", "nova-compute-broken", "kdump":
						t.Errorf("%s judged %q under the skew (verdicts %v)", host, verdict, vs)
					}
				}
			}
		}
	})
	if os.Getenv("LAB_CHAOS_SCENARIOS") != "" {
		t.Logf("ran scenarios %s only (LAB_CHAOS_SCENARIOS)", os.Getenv("LAB_CHAOS_SCENARIOS"))
	}
}
