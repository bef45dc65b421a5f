//go:build lab

package scenarios

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

const (
	evacFlavor  = "lab-evac" // extra spec evacuable=true
	plainFlavor = "lab-small"
	marker      = "instanceha evacuation" // leader.MarkerPrefix
	// defaultPoll is IHA's POLL, which the scenarios keep.
	defaultPoll = 45 * time.Second
)

// TestIHAOnRealNova brings up one lab (every compute's host runs an
// iha-agent and starts nova-compute behind `iha-agent gate`) and runs, in
// order: the novasim contract suite against it (no IHA running), then
// IHA's scenarios, each with a fresh cluster of three iha-leader processes
// (a Raft quorum) that join the agents' gossip mesh as controllers.
func TestIHAOnRealNova(t *testing.T) {
	l := newLab(t, 3)
	if got := len(l.computes()); got != 3 {
		t.Fatalf("the scenarios need 3 computes, the lab has %d", got)
	}
	l.ensureEvacFlavor()

	t.Run("6 contract suite passes against the real Nova", func(t *testing.T) {
		defer l.use(t)()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute*scale())
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-run", "TestContract/real-nova", "-v", "./pkg/novasim/")
		cmd.Dir = l.root
		cmd.Env = os.Environ()
		for k, v := range l.vars {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestContract/real-nova ") {
			t.Fatalf("contract suite against %s: %v\n%s", l.nova, err, out)
		}
		t.Logf("contract suite: %s", lastLines(string(out), 1))
		l.settle(t)
	})

	// Three power losses, one compute each; two in DETECTION_MODE both
	// (the default: the mesh and Nova), one in nova (InstanceHA's rule), so
	// that both figures are measured on the same lab.
	times := map[string][]time.Duration{}
	for i, run := range []struct{ how, mode string }{{"bmc", "both"}, {"kill", "both"}, {"bmc", "nova"}} {
		victim := l.computes()[i]
		t.Run(fmt.Sprintf("1+3 %s loses power (%s, detection %s): evacuated, fenced host re-enabled through the gate", victim, run.how, run.mode), func(t *testing.T) {
			defer l.use(t)()
			c := l.writeConfig(t, l.bin, map[string]string{"DETECTION_MODE": run.mode})
			c.start(t)
			defer c.stop(t)
			l.waitMesh(t, c, run.mode)
			d := l.powerLossRun(t, c, victim, run.how)
			mode := run.mode
			if m := os.Getenv("LAB_SCENARIO_DETECTION"); m != "" {
				mode = m
			}
			times[mode] = append(times[mode], d)
		})
	}
	for _, mode := range []string{"both", "nova"} {
		if d := times[mode]; len(d) > 0 {
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			t.Logf("DETECTION_MODE %s: failure -> last server ACTIVE: %v (p50 %v over %d runs)", mode, d, d[len(d)/2], len(d))
		}
	}

	t.Run("2 acting leader SIGKILLed at four points of one recovery: a follower resumes, every server evacuated exactly once, one power-off", func(t *testing.T) {
		defer l.use(t)()
		l.leaderKillRun(t)
	})

	t.Run("4 a compute frozen (SIGSTOP) past detection is fenced before evacuation and never runs again", func(t *testing.T) {
		defer l.use(t)()
		c := l.writeConfig(t, l.bin, nil)
		c.start(t)
		defer c.stop(t)
		l.waitMesh(t, c, "both")
		victim := l.computes()[2]
		evac := []string{l.createServer("s4-evac", evacFlavor, victim)}
		l.waitStatus(t, evac, "ACTIVE")
		defer l.deleteServers(evac)
		old := l.pid(victim + ".nova-compute")
		oldAgent := l.pid(victim + ".iha-agent")
		l.ctl("freeze", victim)
		thawed := false
		defer func() {
			if !thawed {
				l.ctl("thaw", victim)
			}
		}()
		t0 := time.Now()
		l.waitEvacuated(t, victim, evac, nil, 5*time.Minute)
		t.Logf("frozen -> evacuated in %v", time.Since(t0).Round(100*time.Millisecond))
		// The fence (BMC power off) killed the frozen processes: there is
		// nothing left to resume with the old guests.
		for _, p := range []int{old, oldAgent} {
			if p != 0 && running(p) {
				t.Fatalf("the frozen host's process %d still exists after the evacuation: not fenced", p)
			}
		}
		h, ok := c.hostOnLeader(victim)
		if !ok {
			t.Fatalf("no acting leader answers for %s", victim)
		}
		var fenced, evacuated time.Time
		for _, s := range h.Steps {
			if s.Step == "fence" && s.Outcome == "ok" && fenced.IsZero() {
				fenced = s.Finished
			}
			if s.Step == "evacuate" && evacuated.IsZero() {
				evacuated = s.Started
			}
		}
		if fenced.IsZero() || evacuated.IsZero() || evacuated.Before(fenced) {
			t.Fatalf("fence confirmed at %v, first evacuate started at %v: want the fence first (%+v)", fenced, evacuated, h.Steps)
		}
		if hist := l.bmcHistory(victim, t0); countOff(hist) != 1 {
			t.Errorf("BMC of %s: %d power-offs of a powered host, want 1: %+v", victim, countOff(hist), hist)
		}
		l.ctl("thaw", victim)
		thawed = true
		if running(old) {
			t.Fatalf("old nova-compute %d runs after the thaw", old)
		}
		l.waitReenabled(t, victim, 5*time.Minute)
		if s := l.server(evac[0]); s.Host == victim {
			t.Errorf("the evacuated server is back on %s: %+v", victim, s)
		}
		l.untouched(t, []string{victim}, t0)
	})

	t.Run("5 two of three computes fail at once with THRESHOLD 50: nothing evacuated, reason visible", func(t *testing.T) {
		defer l.use(t)()
		c := l.writeConfig(t, l.bin, nil)
		c.start(t)
		defer c.stop(t)
		l.waitMesh(t, c, "both")
		victims := l.computes()[:2]
		var ids []string
		for _, v := range victims {
			ids = append(ids, l.createServer("s5-"+v, evacFlavor, v))
		}
		l.waitStatus(t, ids, "ACTIVE")
		defer l.deleteServers(ids)
		t0 := time.Now()
		for _, v := range victims {
			if out, err := l.ipmi(v, "chassis", "power", "off"); err != nil {
				t.Fatalf("power off %s: %v %s", v, err, out)
			}
		}
		defer func() {
			for _, v := range victims {
				if out, err := l.ipmi(v, "chassis", "power", "on"); err != nil {
					t.Errorf("power on %s: %v %s", v, err, out)
				}
			}
			l.settle(t)
		}()
		var events string
		waitFor(t, "a ThresholdExceeded event", 4*time.Minute, func() (bool, string) {
			out, err := c.iha("events", "--limit", "100", "-o", "wide")
			events = out
			return err == nil && strings.Contains(out, "ThresholdExceeded"), lastLines(out, 3)
		})
		// One more poll (POLL, IHA's default 45 s): still nothing done.
		time.Sleep(defaultPoll + time.Second)
		hosts, _ := c.iha("hosts", "-o", "wide")
		t.Logf("iha hosts:\n%s\niha events:\n%s", hosts, grepLines(events, "Threshold"))
		for _, v := range victims {
			if line := grepLines(hosts, v); !strings.Contains(line, "THRESHOLD exceeded") {
				t.Errorf("iha hosts does not show the threshold for %s: %q", v, line)
			}
		}
		if m := append(l.evacuations(victims[0], t0), l.evacuations(victims[1], t0)...); len(m) > 0 {
			t.Errorf("evacuations despite the threshold: %v", m)
		}
		svcs := l.services()
		for _, v := range victims {
			if s := svcs[v]; s.ForcedDown || s.Status != "enabled" {
				t.Errorf("%s touched despite the threshold: %+v", v, s)
			}
			if out, _ := l.ipmi(v, "chassis", "power", "status"); !strings.Contains(out, "off") {
				t.Errorf("%s: %s", v, out)
			}
		}
		for _, id := range ids {
			if s := l.server(id); s.Host == "" || !contains(victims, s.Host) {
				t.Errorf("server %s moved: %+v", id, s)
			}
		}
		l.untouched(t, victims, t0)
	})

	t.Run("7 a second quorum in shadow mode watches the acting one through a power loss: its incident agrees, it never acts", func(t *testing.T) {
		defer l.use(t)()
		l.shadowRun(t)
	})
}

// countOff counts the BMC power-offs that found the host powered.
func countOff(h []bmcEvent) int {
	n := 0
	for _, e := range h {
		if (e.op == "off" || e.op == "reset") && e.was == "power:1" {
			n++
		}
	}
	return n
}

// waitMesh waits until the acting leader sees the mesh wired with every
// leader and every running agent alive, when the mode needs the mesh.
func (l *lab) waitMesh(t testing.TB, c *ihaConfig, mode string) {
	t.Helper()
	if m := os.Getenv("LAB_SCENARIO_DETECTION"); m != "" {
		mode = m
	}
	if mode == "nova" {
		return
	}
	want := len(c.nodes) + len(l.computes())
	start := time.Now()
	waitFor(t, "the gossip mesh (3 leaders + one agent per compute) alive on the acting leader", 2*time.Minute, func() (bool, string) {
		j := c.actingLeader()
		if j < 0 {
			return false, "no leader"
		}
		var cl clusterView
		if err := c.get(j, "/v1/cluster", &cl); err != nil {
			return false, err.Error()
		}
		return cl.Mesh.Wired && cl.Mesh.States["alive"] >= want, fmt.Sprintf("%+v", cl.Mesh)
	})
	t.Logf("mesh: %d members alive after %v", want, time.Since(start).Round(10*time.Millisecond))
}

// waitMeshErr is waitMesh() without failing the test.
func (l *lab) waitMeshErr(c *ihaConfig, mode string, d time.Duration) error {
	if m := os.Getenv("LAB_SCENARIO_DETECTION"); m != "" {
		mode = m
	}
	if mode == "nova" {
		return nil
	}
	want := len(c.nodes) + len(l.computes())
	last := ""
	_, err := l.pollUntil(d, func() bool {
		j := c.actingLeader()
		if j < 0 {
			last = "no leader"
			return false
		}
		var cl clusterView
		if err := c.get(j, "/v1/cluster", &cl); err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("%+v", cl.Mesh)
		return cl.Mesh.Wired && cl.Mesh.States["alive"] >= want
	})
	if err != nil {
		return fmt.Errorf("the mesh (%d members alive): %w (last: %s)", want, err, last)
	}
	return nil
}

// use makes the lab's helpers fail t (a subtest) until the returned
// function restores the previous one.
func (l *lab) use(t testing.TB) func() {
	prev := l.t
	l.t = t
	return func() { l.t = prev }
}

// powerLossRun is scenarios 1 and 3 on victim: it returns the time from the
// failure to the last evacuable server ACTIVE elsewhere.
func (l *lab) powerLossRun(t testing.TB, c *ihaConfig, victim, how string) time.Duration {
	tag := strings.TrimPrefix(victim, "lab-compute-")
	evac := []string{l.createServer("s1-evac-a-"+tag, evacFlavor, victim), l.createServer("s1-evac-b-"+tag, evacFlavor, victim)}
	off := l.createServer("s1-evac-off-"+tag, evacFlavor, victim)
	plain := l.createServer("s1-plain-"+tag, plainFlavor, victim)
	all := append(append([]string{}, evac...), off, plain)
	defer l.deleteServers(all)
	l.waitStatus(t, all, "ACTIVE")
	l.must("POST", "/servers/"+off+"/action", "2.93", map[string]any{"os-stop": nil}, nil)
	l.waitStatus(t, []string{off}, "SHUTOFF")
	oldPID := l.pid(victim + ".nova-compute")
	oldAgent := l.pid(victim + ".iha-agent")
	logFrom := l.logSize(victim + ".nova-compute")

	t0 := time.Now()
	switch how {
	case "bmc":
		if out, err := l.ipmi(victim, "chassis", "power", "off"); err != nil {
			t.Fatalf("power off: %v %s", err, out)
		}
	default:
		l.ctl("kill", victim)
	}
	sawMarker := false
	last := l.waitEvacuated(t, victim, evac, func() {
		if s := l.services()[victim]; s.ForcedDown && s.Status == "disabled" && strings.Contains(s.DisabledReason, marker) {
			sawMarker = true
		}
	}, 5*time.Minute)
	d := last.Sub(t0)
	t.Logf("%s (%s): failure -> last server ACTIVE in %v", victim, how, d.Round(100*time.Millisecond))
	waitFor(t, "the SHUTOFF server SHUTOFF elsewhere", 2*time.Minute, func() (bool, string) {
		s := l.server(off)
		return s.Host != victim && s.Host != "" && s.Status == "SHUTOFF" && s.Task == "", fmt.Sprintf("%+v", s)
	})
	if s := l.server(plain); s.Host != victim {
		t.Errorf("the untagged server moved: %+v", s)
	}
	if !sawMarker {
		if s := l.services()[victim]; s.ForcedDown && s.Status == "disabled" && strings.Contains(s.DisabledReason, marker) {
			sawMarker = true
		}
	}
	if !sawMarker {
		t.Errorf("never saw %s forced down and disabled with %q (now %+v)", victim, marker, l.services()[victim])
	}
	per := map[string]int{}
	for _, m := range l.evacuations(victim, t0) {
		per[m.Instance]++
	}
	for _, id := range append(append([]string{}, evac...), off) {
		if per[id] != 1 {
			t.Errorf("server %s: %d evacuation migrations, want 1", id, per[id])
		}
	}
	if per[plain] != 0 {
		t.Errorf("the untagged server was evacuated")
	}

	if h, ok := c.hostOnLeader(victim); ok {
		t.Logf("verdict evidence: mode %s, source %s", h.Evidence.Mode, h.Evidence.Source)
	}

	// 3: the leader powers the fenced host on at the end of the recovery
	// (ipmi_sim's power-on starts the host's iha-agent, and nova-compute
	// behind `iha-agent gate`, which asks the leaders), Nova completes the
	// migrations, the leader unsets forced_down and enables the service.
	start := time.Now()
	l.waitReenabled(t, victim, 5*time.Minute)
	if nw := l.pid(victim + ".nova-compute"); nw == 0 || nw == oldPID {
		t.Errorf("nova-compute of %s: pid %d after the recovery (was %d): not powered on", victim, nw, oldPID)
	}
	if nw := l.pid(victim + ".iha-agent"); nw == 0 || nw == oldAgent || !running(nw) {
		t.Errorf("iha-agent of %s: pid %d after the recovery (was %d): not started with the host", victim, nw, oldAgent)
	}
	gate := grepLines(l.logSince(victim+".nova-compute", logFrom), "gate")
	if !strings.Contains(gate, "ExecStartPre: iha-agent gate") || !strings.Contains(gate, "may start nova-compute") {
		t.Errorf("nova-compute of %s started without the gate letting it:\n%s", victim, gate)
	}
	t.Logf("the gate on %s:\n%s", victim, gate)
	t.Logf("%s re-enabled %v after the last server was ACTIVE", victim, time.Since(start).Round(100*time.Millisecond))
	l.untouched(t, []string{victim}, t0)
	return d
}

// untouched fails t if a compute other than victims was powered by its
// BMC, evacuated, or is forced down or disabled since t0: a failure must
// never spill onto healthy hosts.
func (l *lab) untouched(t testing.TB, victims []string, t0 time.Time) {
	t.Helper()
	svcs := l.services()
	for _, h := range l.computes() {
		if contains(victims, h) {
			continue
		}
		if hist := l.bmcHistory(h, t0); len(hist) > 0 {
			t.Errorf("healthy %s got BMC power commands: %+v", h, hist)
		}
		if m := l.evacuations(h, t0); len(m) > 0 {
			t.Errorf("healthy %s had servers evacuated: %+v", h, m)
		}
		if s := svcs[h]; s.ForcedDown || s.Status != "enabled" {
			t.Errorf("healthy %s is forced down or disabled: %+v", h, s)
		}
	}
}

// logSize is the current size of $LAB_DIR/log/NAME.log.
func (l *lab) logSize(name string) int64 {
	st, err := os.Stat(filepath.Join(l.dir, "log", name+".log"))
	if err != nil {
		return 0
	}
	return st.Size()
}

// logSince is $LAB_DIR/log/NAME.log from byte offset from.
func (l *lab) logSince(name string, from int64) string {
	b, _ := os.ReadFile(filepath.Join(l.dir, "log", name+".log"))
	if from > int64(len(b)) {
		from = 0
	}
	return string(b[from:])
}

// waitEvacuated polls until every server in ids is ACTIVE on a host other
// than victim; it returns when the last one was first seen so.
func (l *lab) waitEvacuated(t testing.TB, victim string, ids []string, each func(), d time.Duration) time.Time {
	t.Helper()
	seen := map[string]time.Time{}
	waitFor(t, "the evacuable servers ACTIVE elsewhere", d, func() (bool, string) {
		if each != nil {
			each()
		}
		var state []string
		for _, id := range ids {
			if _, ok := seen[id]; ok {
				continue
			}
			s := l.server(id)
			if s.Status == "ACTIVE" && s.Host != victim && s.Host != "" && s.Task == "" {
				seen[id] = time.Now()
			} else {
				state = append(state, fmt.Sprintf("%s %s@%s/%s", s.Name, s.Status, s.Host, s.Task))
			}
		}
		return len(seen) == len(ids), strings.Join(state, ", ")
	})
	var last time.Time
	for _, at := range seen {
		if at.After(last) {
			last = at
		}
	}
	return last
}

// waitReenabled waits until host is up, enabled, not forced down and has
// no disabled reason.
func (l *lab) waitReenabled(t testing.TB, host string, d time.Duration) {
	t.Helper()
	waitFor(t, host+" re-enabled by the leader", d, func() (bool, string) {
		s := l.services()[host]
		return s.State == "up" && s.Status == "enabled" && !s.ForcedDown, fmt.Sprintf("%+v", s)
	})
}

func (l *lab) waitStatus(t testing.TB, ids []string, want string) {
	t.Helper()
	waitFor(t, "servers "+want, 3*time.Minute, func() (bool, string) {
		for _, id := range ids {
			s := l.server(id)
			if s.Status == "ERROR" {
				t.Fatalf("server %s went to ERROR", id)
			}
			if s.Status != want || s.Task != "" {
				return false, fmt.Sprintf("%+v", s)
			}
		}
		return true, ""
	})
}

func (l *lab) deleteServers(ids []string) {
	for _, id := range ids {
		_, _ = l.call("DELETE", l.nova+"/servers/"+id, "2.93", nil)
	}
}

// settleErr is settle() without failing the test.
func (l *lab) settleErr(d time.Duration) error {
	last := ""
	_, err := l.pollUntil(d, func() bool {
		svcs := l.servicesErr()
		for _, h := range l.computes() {
			if s, ok := svcs[h]; !ok || s.State != "up" || s.Status != "enabled" || s.ForcedDown {
				last = fmt.Sprintf("%s %+v", h, s)
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("every compute up and enabled: %w (last: %s)", err, last)
	}
	return nil
}

// settle waits until every compute is up, enabled and not forced down:
// the state every scenario starts from.
func (l *lab) settle(t testing.TB) {
	t.Helper()
	waitFor(t, "every compute up and enabled", 5*time.Minute, func() (bool, string) {
		for _, h := range l.computes() {
			if s := l.services()[h]; s.State != "up" || s.Status != "enabled" || s.ForcedDown {
				return false, fmt.Sprintf("%+v", s)
			}
		}
		return true, ""
	})
}

// ensureEvacFlavor creates the flavor that marks servers evacuable.
func (l *lab) ensureEvacFlavor() {
	a, err := l.call("GET", l.nova+"/flavors/"+evacFlavor, "2.1", nil)
	if err != nil {
		l.t.Fatal(err)
	}
	if a.status == 404 {
		l.must("POST", "/flavors", "2.1", map[string]any{"flavor": map[string]any{"name": evacFlavor, "id": evacFlavor,
			"ram": 64, "vcpus": 1, "disk": 1}}, nil)
	}
	l.must("POST", "/flavors/"+evacFlavor+"/os-extra_specs", "2.1",
		map[string]any{"extra_specs": map[string]string{"evacuable": "true"}}, nil)
}

func (l *lab) pid(name string) int {
	b, err := os.ReadFile(filepath.Join(l.dir, "pids", name+".pid"))
	if err != nil {
		return 0
	}
	var pid int
	_, _ = fmt.Sscan(strings.TrimSpace(string(b)), &pid)
	return pid
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
