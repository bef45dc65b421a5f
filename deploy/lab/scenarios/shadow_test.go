//go:build lab

package scenarios

// Scenario 7: a second IHA quorum in shadow mode beside the acting one,
// on the lab's real Nova (issue 18): the way an operator tries IHA beside
// InstanceHA, with an acting IHA in InstanceHA's place.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/api"
)

// shadowProject is the Nova project in the shadow quorum's noauth token
// (admin:iha-shadow): nova-api logs it with each of its requests, so the
// scenario can tell them from the acting quorum's (admin:admin).
const shadowProject = "iha-shadow"

// shadowLagBound bounds how far the shadow's would-be fence may lie from
// the acting quorum's verdict on the same failure. Both quorums judge the
// same Nova row (asserted: the same updated_at) by the same rule,
// max(mesh dead, updated_at + report_interval + margin); they differ only
// by when each acting leader's own mesh member turned the agent dead
// (gossip spreads a death to every member within a few 100 ms gossip
// intervals) and by each leader's reaction (the wake-up, one listing of
// Nova's services: 0.1–1 s at the lab's load). Two seconds cover both
// with room; scaled by IHA_TEST_TIMEOUT_SCALE.
const shadowLagBound = 2 * time.Second

// shadowQuorum is a second quorum beside the lab's: three leaders named
// shadow-leader-j on free loopback ports, joining the lab's gossip mesh
// (the agents' claims reach them as they reach the lab's leaders; the
// agents' gate never asks them), with their own Nova token.
func (l *lab) shadowQuorum(t testing.TB) quorum {
	ports := freePorts(t, 12)
	q := quorum{token: "admin:" + shadowProject}
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	for j := range 3 {
		q.names = append(q.names, fmt.Sprintf("shadow-leader-%d", j+1))
		q.raft = append(q.raft, addr(ports[j]))
		q.api = append(q.api, addr(ports[3+j]))
		q.gossip = append(q.gossip, addr(ports[6+j]))
		q.kdump = append(q.kdump, addr(ports[9+j]))
	}
	q.join = append(append([]string{}, q.gossip...), l.addrs(t, "LAB_IHA_GOSSIP_ADDRS")...)
	return q
}

// freePorts returns n distinct loopback ports free for both TCP and UDP
// (gossip listens on both) at the time of the call.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for len(ports) < n {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, func() { tl.Close() })
		p := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue // taken for UDP: keep the TCP one held and try another
		}
		closers = append(closers, func() { ul.Close() })
		ports = append(ports, p)
	}
	return ports
}

// ihaSplit runs the CLI against the quorum's status APIs with stdout and
// stderr apart (iha writes data to stdout, information to stderr) and
// returns the exit status.
func (c *ihaConfig) ihaSplit(args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*scale())
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "iha"), args...)
	cmd.Env = c.env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		code = -1
		e.WriteString(err.Error())
	}
	return o.String(), e.String(), code
}

// incidentOf is the shadow's newest incident of host (iha incidents HOST
// -o json), or false when it has none yet.
func (c *ihaConfig) incidentOf(t testing.TB, host string) (api.Incident, bool) {
	out, errOut, code := c.ihaSplit("incidents", host, "-o", "json")
	if code != 0 && code != 1 {
		return api.Incident{}, false // 1: a disagreement, still an answer
	}
	var incs api.Incidents
	if err := json.Unmarshal([]byte(out), &incs); err != nil {
		t.Logf("iha incidents %s -o json: %v\n%s%s", host, err, out, errOut)
		return api.Incident{}, false
	}
	if !incs.Shadow {
		t.Fatalf("the shadow quorum says it does not shadow: %s", out)
	}
	if len(incs.Incidents) == 0 {
		return api.Incident{}, false
	}
	return incs.Incidents[0], true
}

// shadowSees waits until the shadow quorum's acting leader sees every
// compute's agent alive in the mesh and judges it healthy: from then on
// it watches the same failure as the acting quorum.
func (l *lab) shadowSees(t testing.TB, c *ihaConfig) {
	t.Helper()
	start := time.Now()
	waitFor(t, "the shadow's leader: every compute's agent alive and judged healthy", 2*time.Minute, func() (bool, string) {
		j := c.actingLeader()
		if j < 0 {
			return false, "no leader"
		}
		for _, h := range l.computes() {
			var hv api.Host
			if err := c.get(j, "/v1/hosts/"+h, &hv); err != nil {
				return false, err.Error()
			}
			if hv.Mesh == nil || hv.Mesh.State != "alive" || hv.Judged == nil || hv.Judged.Verdict != "healthy" {
				return false, fmt.Sprintf("%s: mesh %+v judged %+v", h, hv.Mesh, hv.Judged)
			}
		}
		return true, ""
	})
	t.Logf("shadow quorum: every compute alive and healthy on its leader after %v", time.Since(start).Round(10*time.Millisecond))
}

// loadAvg is the 1-minute load average.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// novaTime parses a time as Nova's API writes it (UTC, no zone).
func novaTime(s string) time.Time {
	for _, layout := range []string{"2006-01-02T15:04:05.999999", time.RFC3339Nano} {
		if at, err := time.Parse(layout, s); err == nil {
			return at.UTC()
		}
	}
	return time.Time{}
}

// shadowRun is scenario 7 (see TestIHAOnRealNova).
func (l *lab) shadowRun(t *testing.T) {
	victim := l.computes()[0]
	logDir := func(_ int, dir string) map[string]string {
		return map[string]string{"DECISION_LOG": filepath.Join(dir, "decisions")}
	}
	actor := l.writeQuorum(t, t.Name()+"-actor", l.bin, l.labQuorum(t), nil, logDir)
	shadow := l.writeQuorum(t, t.Name()+"-shadow", l.bin, l.shadowQuorum(t), map[string]string{"SHADOW": "true"}, logDir)
	actor.start(t)
	defer actor.stop(t)
	l.waitMesh(t, actor, "both")
	shadow.start(t)
	defer shadow.stop(t)
	l.shadowSees(t, shadow)

	tag := strings.TrimPrefix(victim, "lab-compute-")
	evac := []string{l.createServer("s7-evac-a-"+tag, evacFlavor, victim), l.createServer("s7-evac-b-"+tag, evacFlavor, victim)}
	plain := l.createServer("s7-plain-"+tag, plainFlavor, victim)
	all := append(append([]string{}, evac...), plain)
	defer l.deleteServers(all)
	l.waitStatus(t, all, "ACTIVE")
	apiFrom := l.logSize("nova-api")
	load := loadAvg()

	t0 := time.Now()
	if out, err := l.ipmi(victim, "chassis", "power", "off"); err != nil {
		t.Fatalf("power off %s: %v %s", victim, err, out)
	}
	last := l.waitEvacuated(t, victim, evac, nil, 5*time.Minute)
	rec, ok := actor.hostOnLeader(victim)
	if !ok {
		t.Fatalf("no acting leader answers for %s", victim)
	}
	l.waitReenabled(t, victim, 5*time.Minute)
	reenabled := time.Now()
	if r, ok := actor.hostOnLeader(victim); ok {
		rec = r // the power-on step too
	}
	var inc api.Incident
	waitFor(t, "the shadow's incident of "+victim+" closed (the host back in service)", 3*time.Minute, func() (bool, string) {
		i, ok := shadow.incidentOf(t, victim)
		if !ok {
			return false, "no incident yet"
		}
		inc = i
		return !i.Closed.IsZero(), fmt.Sprintf("open: iha %q, agent %q, %d observations", i.IHAWhat, i.ActorWhat, len(i.Actor))
	})
	list, _, _ := shadow.ihaSplit("incidents", "-o", "wide")
	one, _, _ := shadow.ihaSplit("incidents", victim)
	t.Logf("the shadow's iha incidents -o wide:\n%s\niha incidents %s:\n%s", list, victim, one)

	// The shadow's would-be decision: one fence of the victim, judged failed
	// on the same Nova row as the actor, the evacuable servers and not the
	// untagged one.
	var fence *api.ShadowDecision
	for k := range inc.IHA {
		if d := &inc.IHA[k]; d.Kind == "fence" {
			if fence != nil {
				t.Errorf("two would-be fences in one incident: %+v", inc.IHA)
			}
			fence = d
		}
	}
	if fence == nil {
		t.Fatalf("the shadow's incident has no would-be fence: %+v", inc)
	}
	if fence.Verdict != "failed" || fence.Evidence == nil {
		t.Errorf("the would-be fence's verdict %q, evidence %+v: want failed, with evidence", fence.Verdict, fence.Evidence)
	}
	if fence.Evidence != nil && !fence.Evidence.NovaUpdatedAt.Equal(rec.Evidence.NovaUpdatedAt) {
		t.Errorf("the shadow judged Nova's updated_at %v, the actor %v: not the same witness", fence.Evidence.NovaUpdatedAt, rec.Evidence.NovaUpdatedAt)
	}
	plan := map[string]bool{}
	for _, s := range fence.Servers {
		plan[s.ID] = s.Evacuate
	}
	for _, id := range evac {
		if e, ok := plan[id]; !ok || !e {
			t.Errorf("the shadow's plan does not evacuate %s: %+v", id, fence.Servers)
		}
	}
	if e, ok := plan[plain]; !ok || e {
		t.Errorf("the shadow's plan: the untagged server %s must be listed and stay: %+v", plain, fence.Servers)
	}

	// The actor's actions as the shadow read them in Nova: force-down, the
	// marker (its disable), each evacuation migration with Nova's own id,
	// destination and creation time.
	migs := l.evacuations(victim, t0)
	byServer := map[string]migration{}
	for _, m := range migs {
		byServer[m.Instance] = m
	}
	kinds := map[string]int{}
	seenMig := map[string]bool{}
	var forceDown time.Time
	for _, o := range inc.Actor {
		kinds[o.Kind]++
		switch o.Kind {
		case "force-down":
			if forceDown.IsZero() {
				forceDown = o.At
			}
		case "evacuation":
			m, ok := byServer[o.ServerID]
			switch {
			case !ok:
				t.Errorf("the shadow observed an evacuation Nova does not list: %+v", o)
			case o.MigrationID != m.ID || o.To != m.Dest || !o.At.Equal(novaTime(m.Created)):
				t.Errorf("observed evacuation %+v; Nova: migration %d to %s created %s", o, m.ID, m.Dest, m.Created)
			default:
				seenMig[o.ServerID] = true
			}
		}
	}
	if kinds["force-down"] == 0 || kinds["marker"] == 0 {
		t.Errorf("the shadow did not observe the actor's force-down and marker (disable): %v", kinds)
	}
	for _, id := range evac {
		if !seenMig[id] {
			t.Errorf("the shadow did not observe the evacuation of %s (Nova: %+v)", id, byServer[id])
		}
	}
	sortedEvac := append([]string{}, evac...)
	sort.Strings(sortedEvac)
	if !inc.Agree || len(inc.Disagreements) > 0 || strings.Join(inc.IHAServers, ",") != strings.Join(sortedEvac, ",") ||
		strings.Join(inc.ActorServers, ",") != strings.Join(sortedEvac, ",") {
		t.Errorf("the incident does not agree: agree %v %+v, IHA servers %v, actor servers %v, want %v", inc.Agree, inc.Disagreements,
			inc.IHAServers, inc.ActorServers, sortedEvac)
	}

	// When: the shadow's would-be fence within shadowLagBound of the
	// actor's verdict.
	lag := inc.IHAAt.Sub(rec.DetectedAt)
	if bound := shadowLagBound * scale(); lag > bound || lag < -bound {
		t.Errorf("the shadow would have fenced at %s, %+.3fs from the actor's verdict at %s: beyond ±%v",
			inc.IHAAt.Format("15:04:05.000"), lag.Seconds(), rec.DetectedAt.Format("15:04:05.000"), bound)
	}
	// LEAD (the actor's first action in Nova − the shadow's would-be
	// fence): the actor acts after its verdict (it fences first), so the
	// shadow is never more than the bound behind it.
	lead := "-"
	if inc.LeadSeconds == nil {
		t.Errorf("the incident has no LEAD: %+v", inc)
	} else {
		lead = fmt.Sprintf("%+.3fs", *inc.LeadSeconds)
		if l := time.Duration(*inc.LeadSeconds * float64(time.Second)); l < -shadowLagBound*scale() {
			t.Errorf("LEAD %s: the shadow would have acted more than %v after the actor's first action", lead, shadowLagBound*scale())
		}
	}

	// No power change by the shadow: every BMC command since the failure
	// but ours falls within one of the actor's fence or power-on steps,
	// and the shadow's leaders never logged a power command.
	hist := l.bmcHistory(victim, t0.Add(-time.Second))
	steps := map[string][2]time.Time{}
	for _, s := range rec.Steps {
		if s.Step == "fence" || s.Step == "power-on" {
			w := steps[s.Step]
			if w[0].IsZero() || s.Started.Before(w[0]) {
				w[0] = s.Started
			}
			if s.Finished.After(w[1]) {
				w[1] = s.Finished
			}
			steps[s.Step] = w
		}
	}
	var bmcLines []string
	ons := 0
	for i, e := range hist {
		bmcLines = append(bmcLines, fmt.Sprintf("t%+.1fs %s (%s)", e.at.Sub(t0).Seconds(), e.op, e.was))
		if i == 0 && e.op == "off" && e.was == "power:1" {
			continue // the failure: ours
		}
		step := "fence"
		if e.op == "on" {
			step, ons = "power-on", ons+1
		}
		w := steps[step]
		if w[0].IsZero() || e.at.Before(w[0].Add(-time.Second)) || e.at.After(w[1].Add(time.Second)) {
			t.Errorf("BMC command %s at %s outside the actor's %s step %v–%v: not the actor's", e.op, e.at.Format("15:04:05.000"),
				step, w[0].Format("15:04:05.000"), w[1].Format("15:04:05.000"))
		}
	}
	if len(hist) == 0 || hist[0].op != "off" || hist[0].was != "power:1" || ons != 1 {
		t.Errorf("BMC history of %s: want our power-off, the actor's fence, one power-on: %v", victim, bmcLines)
	}
	for _, n := range shadow.nodes {
		if s := grepLines(n.proc().logText(), "fencing: power"); s != "" {
			t.Errorf("%s logged a power command:\n%s", n.name, s)
		}
	}
	if !strings.Contains(actor.logText(), "fencing: powering off through IPMI") {
		t.Errorf("the actor's logs lack its power-off: the check above cannot tell")
	}

	// No Nova write by the shadow: nova-api logs every request with the
	// caller's user and project (admin iha-shadow for the shadow).
	var reads, writes, actorWrites int
	var writeLines []string
	for _, line := range strings.Split(l.logSince("nova-api", apiFrom), "\n") {
		write := strings.Contains(line, `"POST `) || strings.Contains(line, `"PUT `) || strings.Contains(line, `"DELETE `) ||
			strings.Contains(line, `"PATCH `)
		switch {
		case strings.Contains(line, " admin "+shadowProject+" ") && write:
			writes++
			writeLines = append(writeLines, line)
		case strings.Contains(line, " admin "+shadowProject+" ") && strings.Contains(line, `"GET `):
			reads++
		case strings.Contains(line, " admin admin ") && strings.Contains(line, `"PUT /v2.1/os-services/`):
			actorWrites++
		}
	}
	if writes > 0 || reads == 0 || actorWrites == 0 {
		t.Errorf("nova-api's log since the failure: %d writes by the shadow (want 0), %d reads by it and %d service updates by the actor (want some of each, or the log cannot tell them apart):\n%s",
			writes, reads, actorWrites, strings.Join(writeLines, "\n"))
	}

	// The decision logs: no secret in them; `iha replay` (this build)
	// takes the recorded decisions again.
	actorLog := l.checkDecisionLogs(t, actor, victim)
	shadowLog := l.checkDecisionLogs(t, shadow, victim)
	l.replayRecording(t, actor, actorLog)
	l.replayRecording(t, shadow, shadowLog)

	at := func(x time.Time) string {
		if x.IsZero() {
			return "      -"
		}
		return fmt.Sprintf("%+7.1fs", x.Sub(t0).Seconds())
	}
	var fenced time.Time
	if rec.Fence != nil {
		fenced = rec.Fence.At
	}
	tl := []string{
		fmt.Sprintf("%s  BMC power off of %s (the failure), load %s", at(t0), victim, load),
		fmt.Sprintf("%s  actor's mesh: agent %s", at(rec.Evidence.MeshSince), rec.Evidence.MeshState),
		fmt.Sprintf("%s  actor's verdict %s (%s)", at(rec.DetectedAt), rec.Evidence.Verdict, rec.Evidence.Note),
		fmt.Sprintf("%s  shadow would fence and evacuate %d (lag %+.3fs after the actor's verdict; bound ±%v)", at(inc.IHAAt), len(inc.IHAServers), lag.Seconds(), shadowLagBound*scale()),
		fmt.Sprintf("%s  actor's fence confirmed", at(fenced)),
		fmt.Sprintf("%s  actor's force-down and marker, as the shadow dates them from Nova (LEAD %s)", at(forceDown), lead),
	}
	for _, m := range migs {
		tl = append(tl, fmt.Sprintf("%s  evacuation migration %d of %s to %s (%s)", at(novaTime(m.Created)), m.ID, m.Instance, m.Dest, m.Status))
	}
	tl = append(tl, fmt.Sprintf("%s  last server ACTIVE elsewhere", at(last)),
		fmt.Sprintf("%s  %s re-enabled", at(reenabled), victim),
		fmt.Sprintf("%s  shadow's incident %d closed: %s", at(inc.Closed), inc.ID, inc.CloseReason),
		fmt.Sprintf("BMC: %s", strings.Join(bmcLines, ", ")),
		fmt.Sprintf("nova-api since the failure: shadow %d reads, %d writes; actor %d service updates", reads, writes, actorWrites))
	t.Logf("timeline:\n%s", strings.Join(tl, "\n"))
	l.untouched(t, []string{victim}, t0)
}

// keyMaterial matches a key in a key file: base64, 16 characters or more.
var keyMaterial = regexp.MustCompile(`[A-Za-z0-9+/_-]{16,}={0,2}`)

// checkDecisionLogs returns the directory of the decision log that holds
// c's decision on host (the node that led then), after checking that no
// node's log holds a secret: the BMC password, the gossip keyring, the
// cluster key or a Nova token.
func (l *lab) checkDecisionLogs(t testing.TB, c *ihaConfig, host string) string {
	t.Helper()
	secrets := []string{bmcPassword(), "admin:admin", "admin:" + shadowProject}
	for _, k := range []string{"LAB_IHA_KEYRING", "LAB_IHA_CLUSTER_KEY"} {
		b, err := os.ReadFile(l.keyFile(t, k))
		if err != nil {
			t.Fatal(err)
		}
		// The keys themselves (the keyring is a JSON list of them).
		keys := keyMaterial.FindAllString(string(b), -1)
		if len(keys) == 0 {
			t.Fatalf("%s: no key found in %s", k, l.keyFile(t, k))
		}
		secrets = append(secrets, keys...)
	}
	found := ""
	for _, n := range c.nodes {
		dir := filepath.Join(n.dir, "decisions")
		files, _ := filepath.Glob(filepath.Join(dir, "decisions*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range secrets {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("%s holds a secret (%d bytes of one of the lab's)", f, len(s))
				}
			}
			if strings.HasSuffix(f, ".log") && bytes.Contains(b, []byte(`"kind":"fence"`)) && bytes.Contains(b, []byte(`"host":"`+host+`"`)) {
				found = dir
			}
		}
	}
	if found == "" {
		t.Fatalf("no node's decision log holds the fence decision on %s", host)
	}
	return found
}

// replayRecording runs `iha replay` (this build) on a decision log c
// recorded: with the recording's node configuration (--config, its
// config.yaml) every decision is taken again at the same time (exit 0);
// with THRESHOLD below the failure's share (one of three computes) the
// fence becomes a skip and the output says why (exit 1). The recording
// (and the node's config.yaml) is copied to $LAB_SHADOW_RECORD/<quorum>/
// when that is set: cmd/iha's testdata/replay-lab comes from there.
func (l *lab) replayRecording(t testing.TB, c *ihaConfig, dir string) {
	t.Helper()
	node := filepath.Dir(dir)
	run := func(args ...string) (string, int) {
		cmd := exec.Command(filepath.Join(c.bin, "iha"), append([]string{"replay", dir}, args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return string(out), 0
		case errors.As(err, &ee):
			return string(out), ee.ExitCode()
		}
		t.Fatalf("iha replay: %v", err)
		return "", -1
	}
	out, code := run("--config", node)
	t.Logf("iha replay %s --config %s (exit %d):\n%s", dir, node, code, out)
	if code != 0 || !strings.Contains(out, "the same decisions at the same times") {
		wide, _ := run("--config", node, "-o", "wide", "--diff")
		t.Errorf("replay with the recording's configuration: exit %d, want 0 (the same decisions):\n%s", code, wide)
	}
	out, code = run("--config", node, "--set", "THRESHOLD=30", "--diff", "-o", "wide")
	t.Logf("iha replay --set THRESHOLD=30 --diff -o wide (exit %d):\n%s", code, out)
	if code != 1 || !strings.Contains(out, "THRESHOLD 50 → 30") || !strings.Contains(out, "THRESHOLD exceeded: 33.3% of computes") {
		t.Errorf("replay with THRESHOLD 30: exit %d, want 1 with the change and its reason", code)
	}
	if dst := os.Getenv("LAB_SHADOW_RECORD"); dst != "" {
		to := filepath.Join(dst, filepath.Base(c.dir))
		if err := os.MkdirAll(to, 0o755); err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "decisions*"))
		for _, f := range append(files, filepath.Join(node, "config.yaml")) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(to, filepath.Base(f)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("recording copied to %s", to)
	}
}
