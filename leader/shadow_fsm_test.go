package leader

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/pkg/nova"
)

func eventKinds(f *FSM, host string) []string {
	var out []string
	for _, e := range f.Events(0, host, 0) {
		out = append(out, e.Kind)
	}
	return out
}

func TestShadowSwitchIsAuditedAndWinsOverTheConfiguration(t *testing.T) {
	a := newApplier(t)
	if a.f.Settings().ShadowMode(true) != true || a.f.Settings().ShadowMode(false) != false {
		t.Fatal("without a runtime setting, SHADOW in config.yaml decides")
	}
	a.apply(CmdShadow, t0, ShadowCmd{On: false, By: "alice from 10.0.0.9", Reason: "InstanceHA stopped"})
	st := a.f.Settings()
	if st.ShadowMode(true) || !st.ShadowSet || st.ShadowBy != "alice from 10.0.0.9" {
		t.Fatalf("after shadow off: %+v", st)
	}
	a.apply(CmdShadow, t0, ShadowCmd{On: true, By: "bob"})
	if !a.f.Settings().ShadowMode(false) {
		t.Fatal("shadow on must win over SHADOW false")
	}
	evs := a.f.Events(0, "", 0)
	if len(evs) != 2 || evs[0].Kind != "ShadowOff" || !strings.Contains(evs[0].Message, "alice from 10.0.0.9") ||
		!strings.Contains(evs[0].Message, "InstanceHA stopped") || evs[1].Kind != "ShadowOn" {
		t.Fatalf("audit events: %+v", evs)
	}
}

func TestShadowDecisionsOpenAnIncidentOnceAndSayWhatWouldHappen(t *testing.T) {
	a := newApplier(t)
	fence := ShadowDecision{At: t0, Kind: ShadowFence, Verdict: "failed", Detail: "mesh: dead since 12:00:00", Level: 2,
		Reserved: "spare-1", Servers: []ShadowServer{{ID: "v1", Name: "web-1", Evacuate: true}, {ID: "v2", Name: "scratch", Why: "image and flavor not tagged evacuable"},
			{ID: "v3", Name: "db-1", Evacuate: true, Target: "c3"}}}
	if r := a.apply(CmdShadowDecide, t0, ShadowDecideCmd{Host: "c1", Decision: fence}); r != true {
		t.Fatalf("first fence decision: %v", r)
	}
	if r := a.apply(CmdShadowDecide, t0.Add(time.Second), ShadowDecideCmd{Host: "c1", Decision: fence}); r != false {
		t.Fatalf("a second fence decision in one incident must not be recorded: %v", r)
	}
	kinds := strings.Join(eventKinds(a.f, "c1"), ",")
	if kinds != "ShadowWouldFence,ShadowWouldEnableReserved,ShadowWouldEvacuate,ShadowWouldLeave,ShadowWouldEvacuate" {
		t.Fatalf("events: %s", kinds)
	}
	msgs := a.f.Events(0, "c1", 0)
	if !strings.Contains(msgs[0].Message, "would power it off") || !strings.Contains(msgs[2].Message, "web-1 (v1) to a host Nova's scheduler chooses") ||
		!strings.Contains(msgs[4].Message, "to c3") || !strings.Contains(msgs[3].Message, "not tagged") {
		t.Fatalf("messages: %+v", msgs)
	}
	skip := ShadowDecision{At: t0, Kind: ShadowSkip, Detail: "THRESHOLD exceeded"}
	if a.apply(CmdShadowDecide, t0, ShadowDecideCmd{Host: "c2", Decision: skip}) != true ||
		a.apply(CmdShadowDecide, t0, ShadowDecideCmd{Host: "c2", Decision: skip}) != false {
		t.Fatal("a skip is recorded once per reason")
	}
	if len(a.f.Incidents("", 0)) != 2 || a.f.OpenIncident("c1").ID != 1 || a.f.OpenIncident("c2").ID != 2 {
		t.Fatalf("incidents: %+v", a.f.Incidents("", 0))
	}
	if r := a.apply(CmdShadowClose, t0.Add(time.Minute), ShadowCloseCmd{Host: "c1", Reason: "host back: enabled and up"}); r != true {
		t.Fatalf("close: %v", r)
	}
	if a.f.OpenIncident("c1") != nil {
		t.Fatal("closed incident still open")
	}
	// A new failure of c1 is a new incident.
	a.apply(CmdShadowDecide, t0.Add(2*time.Minute), ShadowDecideCmd{Host: "c1", Decision: fence})
	if i := a.f.OpenIncident("c1"); i == nil || i.ID != 3 || !i.Opened.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("second incident of c1: %+v", i)
	}
}

func TestObservationsAreRecordedOnceEach(t *testing.T) {
	a := newApplier(t)
	fd := Observed{At: t0, Seen: t0.Add(time.Second), Kind: ObservedForceDown, Before: "healthy: agent alive, nova up"}
	if a.apply(CmdShadowObserve, t0, ShadowObserveCmd{Host: "c1", Observed: fd}) != true ||
		a.apply(CmdShadowObserve, t0, ShadowObserveCmd{Host: "c1", Observed: fd}) != false {
		t.Fatal("an observation is recorded once")
	}
	m := Observed{At: t0, Kind: ObservedEvacuation, ServerID: "v1", To: "c2", MigrationID: 7, Status: "accepted"}
	a.apply(CmdShadowObserve, t0, ShadowObserveCmd{Host: "c1", Observed: m})
	m.Status = "done"
	if a.apply(CmdShadowObserve, t0, ShadowObserveCmd{Host: "c1", Observed: m}) != true {
		t.Fatal("a migration's new status is a new observation")
	}
	if got := len(a.f.OpenIncident("c1").Actor); got != 3 {
		t.Fatalf("%d observations", got)
	}
	if r := a.apply(CmdShadowObserve, t0, ShadowObserveCmd{Host: "c1", Observed: Observed{Kind: "teleport"}}); r == nil {
		t.Fatal("an unknown observation kind must be refused")
	}
	if e := a.f.Events(0, "c1", 0)[0]; e.Kind != "ObservedForceDown" || !e.Warning || !strings.Contains(e.Message, "IHA's verdict before it: healthy") {
		t.Fatalf("event %+v", e)
	}
}

func TestShadowRecordsAreIgnorableAndTheSwitchIsNot(t *testing.T) {
	for ct, want := range map[CommandType]bool{CmdShadowDecide: true, CmdShadowObserve: true, CmdShadowClose: true, CmdShadow: false} {
		b, err := EncodeCommand(ct, t0, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		c, _ := DecodeCommand(b)
		if c.Ignorable != want {
			t.Errorf("%s ignorable %v, want %v", ct, c.Ignorable, want)
		}
	}
}

func TestSnapshotKeepsIncidentsAndTheShadowSwitch(t *testing.T) {
	a := newApplier(t)
	a.apply(CmdShadow, t0, ShadowCmd{On: true, By: "alice"})
	a.apply(CmdShadowDecide, t0, ShadowDecideCmd{Host: "c1", Decision: ShadowDecision{At: t0, Kind: ShadowFence,
		Evidence: &Evidence{Source: "gossip+nova", Accusers: []string{"c2"}}, Servers: []ShadowServer{{ID: "v1", Evacuate: true}}}})
	a.apply(CmdShadowObserve, t0, ShadowObserveCmd{Host: "c1", Observed: Observed{At: t0, Kind: ObservedMarker, Detail: "instanceha evacuation: x"}})
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !g.Settings().ShadowMode(false) || g.Settings().ShadowBy != "alice" {
		t.Fatalf("shadow switch lost: %+v", g.Settings())
	}
	want, _ := json.Marshal(a.f.Incidents("", 0))
	got, _ := json.Marshal(g.Incidents("", 0))
	if !bytes.Equal(want, got) {
		t.Fatalf("incidents differ after restore:\n%s\n%s", got, want)
	}
	// The next incident continues the numbering.
	b, _ := EncodeCommand(CmdShadowDecide, t0, ShadowDecideCmd{Host: "c9", Decision: ShadowDecision{At: t0, Kind: ShadowSkip, Detail: "x"}})
	g.Apply(&raft.Log{Index: 100, Term: 2, Type: raft.LogCommand, Data: b})
	if i := g.OpenIncident("c9"); i == nil || i.ID != 2 {
		t.Fatalf("incident after restore: %+v", i)
	}
}

// TestIncidentFindings is one row per kind of (dis)agreement an operator
// reads in `iha incidents`.
func TestIncidentFindings(t *testing.T) {
	fence := func(at time.Time, servers ...ShadowServer) ShadowDecision {
		return ShadowDecision{At: at, Kind: ShadowFence, Verdict: "failed", Detail: "mesh dead, heartbeat missed", Servers: servers}
	}
	ev := func(id, to, status string, at time.Time) Observed {
		return Observed{At: at, Kind: ObservedEvacuation, ServerID: id, To: to, MigrationID: 1, Status: status}
	}
	fd := Observed{At: t0.Add(30 * time.Second), Kind: ObservedForceDown}
	closed := t0.Add(time.Hour)
	cases := []struct {
		name     string
		inc      Incident
		kinds    []string
		lead     time.Duration
		hasLead  bool
		msgHas   string
		agreeIHA []string
	}{
		{"both acted on the same servers: agree, IHA 30 s first",
			Incident{Host: "c1", Closed: closed, IHA: []ShadowDecision{fence(t0, ShadowServer{ID: "v1", Evacuate: true}, ShadowServer{ID: "v2", Why: "SHUTDOWN"})},
				Actor: []Observed{fd, ev("v1", "c2", "done", t0.Add(40*time.Second))}},
			nil, 30 * time.Second, true, "", []string{"v1"}},
		{"IHA would have acted, the other agent did nothing",
			Incident{Host: "c1", Closed: closed, IHA: []ShadowDecision{fence(t0)}},
			[]string{DisagreeOnlyIHA}, 0, false, "the other agent did not act", nil},
		{"still open: said to be so far",
			Incident{Host: "c1", IHA: []ShadowDecision{fence(t0)}},
			[]string{DisagreeOnlyIHA}, 0, false, "so far", nil},
		{"the other agent acted where IHA saw a live host",
			Incident{Host: "c1", Closed: closed, Actor: []Observed{{At: t0, Kind: ObservedForceDown, Before: "nova-compute-broken: agent alive in the mesh"}}},
			[]string{DisagreeOnlyActor}, 0, false, "IHA would not have", nil},
		{"the other agent acted where IHA's THRESHOLD held",
			Incident{Host: "c1", Closed: closed, IHA: []ShadowDecision{{At: t0, Kind: ShadowSkip, Detail: "THRESHOLD exceeded: 50.0% > 25%"}}, Actor: []Observed{fd}},
			[]string{DisagreeOnlyActor}, 0, false, "recovered c1", nil},
		{"different servers",
			Incident{Host: "c1", Closed: closed, IHA: []ShadowDecision{fence(t0, ShadowServer{ID: "v1", Evacuate: true}, ShadowServer{ID: "v2", Why: "name matches SKIP_SERVERS_WITH_NAME"})},
				Actor: []Observed{fd, ev("v2", "c3", "done", t0.Add(time.Minute))}},
			[]string{DisagreeServers}, 30 * time.Second, true, "only IHA would evacuate v1; only the other agent evacuated v2 (IHA: name matches", nil},
		{"a different target than the reserved host IHA would force",
			Incident{Host: "c1", Closed: closed, IHA: []ShadowDecision{{At: t0, Kind: ShadowFence, Reserved: "spare", Servers: []ShadowServer{{ID: "v1", Evacuate: true, Target: "spare"}}}},
				Actor: []Observed{fd, ev("v1", "c2", "done", t0.Add(time.Minute))}},
			[]string{DisagreeTargets}, 30 * time.Second, true, "IHA would send it to spare, the other agent sent it to c2", nil},
		// Nova dates migrations in whole seconds (truncated); lab scenario
		// 7: the acting IHA forced the host down at 05.370 and Nova dated
		// its evacuations 05.000, which made the shadow (05.321) look late.
		{"an evacuation Nova dates in the second of the force-down came after it: the force-down is first",
			Incident{Host: "c1", Closed: closed, IHA: []ShadowDecision{fence(t0.Add(5321*time.Millisecond), ShadowServer{ID: "v1", Evacuate: true})},
				Actor: []Observed{{At: t0.Add(5370 * time.Millisecond), Kind: ObservedForceDown}, {At: t0.Add(5370 * time.Millisecond), Kind: ObservedMarker},
					ev("v1", "c2", "done", t0.Add(5*time.Second))}},
			nil, 49 * time.Millisecond, true, "", []string{"v1"}},
		{"an evacuation dated a second or more before the force-down is first",
			Incident{Host: "c1", Closed: closed, IHA: []ShadowDecision{fence(t0.Add(5321*time.Millisecond), ShadowServer{ID: "v1", Evacuate: true})},
				Actor: []Observed{{At: t0.Add(5370 * time.Millisecond), Kind: ObservedForceDown}, ev("v1", "c2", "done", t0.Add(4*time.Second))}},
			nil, -1321 * time.Millisecond, true, "", []string{"v1"}},
		{"a failed migration does not count as evacuated",
			Incident{Host: "c1", Closed: closed, IHA: []ShadowDecision{fence(t0, ShadowServer{ID: "v1", Evacuate: true})},
				Actor: []Observed{fd, ev("v1", "c2", "error", t0.Add(time.Minute))}},
			[]string{DisagreeServers}, 30 * time.Second, true, "only IHA would evacuate v1", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := c.inc.Findings()
			var kinds []string
			for _, d := range f.Disagreements {
				kinds = append(kinds, d.Kind)
			}
			if strings.Join(kinds, ",") != strings.Join(c.kinds, ",") || f.Agree() != (len(c.kinds) == 0) {
				t.Fatalf("disagreements %+v, want kinds %v", f.Disagreements, c.kinds)
			}
			if (f.Lead != nil) != c.hasLead || (f.Lead != nil && *f.Lead != c.lead) {
				t.Fatalf("lead %v, want %v", f.Lead, c.lead)
			}
			if c.msgHas != "" && !strings.Contains(f.Disagreements[0].Message+" "+f.Disagreements[0].IHA, c.msgHas) {
				t.Fatalf("message %q lacks %q", f.Disagreements[0].Message, c.msgHas)
			}
			if c.agreeIHA != nil && strings.Join(f.IHAServers, ",") != strings.Join(c.agreeIHA, ",") {
				t.Fatalf("IHA servers %v", f.IHAServers)
			}
		})
	}
}

// TestActorActionsDateTheForceDownWithinNovasSecond: Nova keeps a
// service's updated_at in whole seconds, so a force-down it dates 21:05:42
// happened within that second; the marker written by the same change
// says when (lab scenario 7: the acting IHA forced the host down at
// 42.597, the shadow would have acted at 42.411, and the truncated time
// made the shadow look 0.4 s late instead of 0.2 s early).
func TestActorActionsDateTheForceDownWithinNovasSecond(t *testing.T) {
	sec := time.Date(2026, 12, 7, 21, 5, 42, 0, time.UTC)
	seen := sec.Add(4 * time.Second)
	prev := nova.Service{Host: "c1", Status: "enabled", State: "up", UpdatedAt: sec.Add(-12 * time.Second)}
	for _, c := range []struct {
		name   string
		reason string
		want   time.Time
	}{
		{"the marker of the same change, within Nova's second, dates it", "instanceha evacuation: 2026-12-07T21:05:42.597384+00:00", sec.Add(597384 * time.Microsecond)},
		{"a marker outside Nova's second (the writer's clock off) does not", "instanceha evacuation: 2026-12-07T21:05:47.100000+00:00", sec},
		{"a marker before Nova's second does not", "instanceha evacuation: 2026-12-07T21:05:41.900000+00:00", sec},
		{"a reason that is no marker does not", "maintenance by bob", sec},
	} {
		t.Run(c.name, func(t *testing.T) {
			cur := prev
			cur.ForcedDown, cur.Status, cur.State, cur.DisabledReason, cur.UpdatedAt = true, "disabled", "down", c.reason, sec
			var got time.Time
			for _, o := range actorActions(prev, true, cur, seen) {
				if o.Kind == ObservedForceDown {
					got = o.At
				}
			}
			if !got.Equal(c.want) {
				t.Fatalf("force-down dated %s, want %s", got.Format("15:04:05.000000"), c.want.Format("15:04:05.000000"))
			}
		})
	}
}
