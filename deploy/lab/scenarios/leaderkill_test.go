//go:build lab

package scenarios

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// killServers is how many servers scenario 2 evacuates: with
// EVACUATION_STAGGER 2 s between calls, the evacuations last long enough to
// kill the leader after the first one and again half-way through.
const killServers = 6

// recoveryStage orders what the acting leader has committed for one host;
// the acting leader is SIGKILLed once at each of stages 1–4.
func recoveryStage(h hostView) int {
	r := h.requested()
	switch {
	case h.Phase == "" || h.Phase == "detected":
		return 0
	case h.Phase == "fencing" && h.Fence == nil:
		return 1 // the fence intent is committed, the power-off not confirmed
	case h.Fence == nil:
		return 0
	case r == 0 && (h.Phase == "fenced" || h.Phase == "disabled" || h.Phase == "evacuating"):
		return 2 // the power-off is confirmed, no evacuate accepted yet
	case r >= 1 && r < killServers/2:
		return 3 // the first evacuate is accepted
	case r >= killServers/2 && r < killServers:
		return 4 // half the evacuations are accepted
	}
	return 5
}

var stageNames = []string{"", "after the fence intent is committed", "after the power-off is confirmed",
	"after the first evacuate is accepted", "half-way through the evacuations"}

// leaderKillRun is scenario 2: a hung compute (SIGSTOP: only the fence
// stops it) is recovered while the acting leader is SIGKILLed at four
// points; after each kill a follower must take over (the killed node is
// restarted on its data directory once a new leader is elected, so the
// next kill still leaves a quorum). Every server is evacuated exactly
// once, the BMC powers the host off once, the recovery finishes and every
// node's replica catches up.
func (l *lab) leaderKillRun(t testing.TB) {
	c := l.writeConfig(t, l.bin, map[string]string{"EVACUATION_STAGGER": "2"})
	c.start(t)
	defer c.stop(t)
	l.waitMesh(t, c, "both")
	victim := l.computes()[1]
	var evac []string
	for i := 0; i < killServers; i++ {
		evac = append(evac, l.createServer(fmt.Sprintf("s2-evac-%d", i), evacFlavor, victim))
	}
	l.waitStatus(t, evac, "ACTIVE")
	defer l.deleteServers(evac)

	t0 := time.Now()
	l.ctl("freeze", victim)
	defer l.ctl("thaw", victim) // harmless once the fence killed the frozen processes

	cur := 1
	var hit, missed []string
	var failovers, resumes []time.Duration
	deadline := time.Now().Add(5 * time.Minute * scale())
	for cur <= 4 {
		if time.Now().After(deadline) {
			t.Fatalf("recovery of %s did not reach stage %d (%s) in time\n%s", victim, cur, stageNames[cur], lastLines(c.logText(), 40))
		}
		h, ok := c.hostOnLeader(victim)
		if !ok {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		st := recoveryStage(h)
		if st < cur {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for ; cur < st && cur <= 4; cur++ {
			missed = append(missed, stageNames[cur])
		}
		if st > 4 {
			break
		}
		// Kill the acting leader now: stage st is committed on it.
		j := c.last
		killed := c.nodes[j]
		steps := len(h.Steps)
		at := time.Now()
		killed.proc().kill(t)
		hit = append(hit, fmt.Sprintf("%s (%s, phase %s, %d/%d evacuate accepted)", stageNames[st], killed.name, h.Phase, h.requested(), killServers))
		cur = st + 1
		// A follower takes over.
		nj := c.leader(t, time.Minute)
		if nj == j {
			t.Fatalf("%s leads again while killed", killed.name)
		}
		failovers = append(failovers, time.Since(at))
		// The killed node comes back on its data directory and catches up.
		c.startNode(t, j)
		// The recovery resumes: the new leader commits a step of its own.
		resumed := false
		waitFor(t, "the new leader resuming the recovery of "+victim, 2*time.Minute, func() (bool, string) {
			h2, ok := c.hostOnLeader(victim)
			if !ok {
				return false, "no leader"
			}
			for _, s := range h2.Steps {
				if s.Started.After(at) {
					resumed = true
					resumes = append(resumes, s.Started.Sub(at))
					return true, ""
				}
			}
			return recoveryStage(h2) == 5 || len(h2.Steps) > steps+2, fmt.Sprintf("phase %s, %d steps", h2.Phase, len(h2.Steps))
		})
		if !resumed {
			t.Logf("no step started after the kill at %s was seen (the record moved on)", stageNames[st])
		}
	}
	t.Logf("acting leader SIGKILLed %d times: %s", len(hit), strings.Join(hit, "; "))
	t.Logf("kill -> a follower leads: %v; kill -> the new leader's first step: %v", round(failovers), round(resumes))
	if len(missed) > 0 {
		t.Logf("points passed between two polls (no kill there): %s", strings.Join(missed, "; "))
	}
	if len(hit) < 3 {
		t.Errorf("the acting leader was killed at %d of the 4 points: this run does not test the middle of the recovery", len(hit))
	}

	last := l.waitEvacuated(t, victim, evac, nil, 5*time.Minute)
	t.Logf("freeze -> last server ACTIVE across %d leader kills: %v", len(hit), last.Sub(t0).Round(100*time.Millisecond))
	per := map[string]int{}
	migs := l.evacuations(victim, t0)
	for _, m := range migs {
		per[m.Instance]++
	}
	for _, id := range evac {
		if per[id] != 1 {
			t.Errorf("server %s has %d evacuation migrations from %s, want exactly 1 (%v)", id, per[id], victim, migs)
		}
	}
	l.waitReenabled(t, victim, 5*time.Minute)
	hist := l.bmcHistory(victim, t0)
	if n := countOff(hist); n != 1 {
		t.Errorf("BMC of %s powered off %d times from power on, want exactly 1: %+v", victim, n, hist)
	}
	ons := 0
	for _, e := range hist {
		if e.op != "off" && e.was == "power:0" {
			ons++
		}
	}
	if ons != 1 {
		t.Errorf("BMC of %s powered on %d times, want once, at the end: %+v", victim, ons, hist)
	}
	offs := 0
	for _, e := range hist {
		if e.op == "off" {
			offs++
		}
	}
	t.Logf("BMC of %s: %d power-off commands (the fence repeated by a new leader finds it off), %d power-on", victim, offs, ons)

	// Every node, the restarted ones too, holds the finished record.
	waitFor(t, "every leader's replica showing the recovery of "+victim+" done", 2*time.Minute, func() (bool, string) {
		var seen []string
		ok := true
		for j := range c.nodes {
			var h hostView
			if err := c.get(j, "/v1/hosts/"+victim, &h); err != nil {
				return false, err.Error()
			}
			seen = append(seen, c.nodes[j].name+":"+h.Phase)
			ok = ok && h.Phase == "done"
		}
		return ok, strings.Join(seen, " ")
	})
	l.untouched(t, []string{victim}, t0)
	t.Logf("leaders' recovery steps:\n%s", grepLines(c.logText(), "component=reconciler"))
}

func round(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}
