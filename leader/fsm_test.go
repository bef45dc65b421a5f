package leader

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// applier feeds commands to an FSM as raft would, with increasing indexes.
type applier struct {
	t     *testing.T
	f     *FSM
	index uint64
	term  uint64
}

func newApplier(t *testing.T) *applier { return &applier{t: t, f: NewFSM(), term: 1} }

func (a *applier) apply(ct CommandType, at time.Time, body any) any {
	a.t.Helper()
	data, err := EncodeCommand(ct, at, body)
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	return a.f.Apply(&raft.Log{Index: a.index, Term: a.term, Type: raft.LogCommand, Data: data})
}

func (a *applier) begin(host, step, server string) OpID {
	a.t.Helper()
	r := a.apply(CmdStepBegin, t0, StepBeginCmd{Host: host, Step: step, ServerID: server})
	op, ok := r.(OpID)
	if !ok {
		a.t.Fatalf("begin %s %s: got %v", host, step, r)
	}
	return op
}

func TestFSMRecoveryWalksThePhases(t *testing.T) {
	a := newApplier(t)
	if r := a.apply(CmdDetect, t0, DetectCmd{Host: "c1", ServiceID: "s1", Level: 2}); r != true {
		t.Fatalf("detect: %v", r)
	}
	if r := a.apply(CmdDetect, t0, DetectCmd{Host: "c1"}); r != false {
		t.Fatalf("second detect of an active host must be a no-op, got %v", r)
	}
	op := a.begin("c1", StepFence, "")
	if h := a.f.Host("c1"); h.Phase != PhaseFencing || h.Pending == nil || h.Pending.OpID != op || h.FenceTries != 1 {
		t.Fatalf("after fence intent: %+v", h)
	}
	a.apply(CmdStepEnd, t0.Add(time.Second), StepEndCmd{Host: "c1", Step: StepFence, OpID: op, OK: true, Fence: &FenceResult{Method: "ipmi", State: "off"}})
	if h := a.f.Host("c1"); h.Phase != PhaseFenced || h.Pending != nil || h.Fence.Method != "ipmi" {
		t.Fatalf("after fence result: %+v", h)
	}
	op = a.begin("c1", StepDisable, "")
	a.apply(CmdStepEnd, t0, StepEndCmd{Host: "c1", Step: StepDisable, OpID: op, OK: true})
	a.apply(CmdPlan, t0, PlanCmd{Host: "c1", Servers: []*ServerRecord{{ID: "v1", State: ServerPending}, {ID: "v2", State: ServerSkipped}}})
	if h := a.f.Host("c1"); h.Phase != PhaseEvacuating || len(h.Servers) != 2 {
		t.Fatalf("after plan: %+v", h)
	}
	if r := a.apply(CmdPlan, t0, PlanCmd{Host: "c1"}); !errors.Is(r.(error), ErrStalePhase) {
		t.Fatalf("a second plan must be refused, got %v", r)
	}
	op = a.begin("c1", StepEvacuate, "v1")
	if s := a.f.Host("c1").Server("v1"); s.Attempts != 1 || s.Pending == nil {
		t.Fatalf("server intent: %+v", s)
	}
	a.apply(CmdStepEnd, t0, StepEndCmd{Host: "c1", Step: StepEvacuate, ServerID: "v1", OpID: op, OK: true, ServerState: ServerRequested, MigrationID: 7})
	a.apply(CmdServer, t0, ServerCmd{Host: "c1", ServerID: "v1", State: ServerDone, To: "c2"})
	a.apply(CmdPhase, t0, PhaseCmd{Host: "c1", Phase: PhaseEvacuated, From: PhaseEvacuating})
	op = a.begin("c1", StepComplete, "")
	a.apply(CmdStepEnd, t0, StepEndCmd{Host: "c1", Step: StepComplete, OpID: op, OK: true})
	if h := a.f.Host("c1"); h.Phase != PhaseReenabling || !h.Completed {
		t.Fatalf("after complete: %+v", h)
	}
	op = a.begin("c1", StepEnable, "")
	a.apply(CmdStepEnd, t0, StepEndCmd{Host: "c1", Step: StepEnable, OpID: op, OK: true})
	h := a.f.Host("c1")
	if h.Phase != PhaseDone || h.FinishedAt.IsZero() {
		t.Fatalf("after enable: %+v", h)
	}
	if s := h.Server("v1"); s.State != ServerDone || s.MigrationID != 7 || s.To != "c2" {
		t.Fatalf("server record: %+v", s)
	}
	if len(h.Steps) != 5 {
		t.Fatalf("want 5 step records, got %d", len(h.Steps))
	}
	// A finished host can fail again: a new record replaces the old.
	if r := a.apply(CmdDetect, t0, DetectCmd{Host: "c1"}); r != true {
		t.Fatal("a done host must be detectable again")
	}
}

func TestFSMFenceFailureReturnsToDetected(t *testing.T) {
	a := newApplier(t)
	a.apply(CmdDetect, t0, DetectCmd{Host: "c1"})
	op := a.begin("c1", StepFence, "")
	a.apply(CmdStepEnd, t0, StepEndCmd{Host: "c1", Step: StepFence, OpID: op, OK: false, Detail: "BMC unreachable"})
	h := a.f.Host("c1")
	if h.Phase != PhaseDetected || h.LastError != "BMC unreachable" || h.FenceTries != 1 {
		t.Fatalf("%+v", h)
	}
}

func TestFSMStaleResultIsRefused(t *testing.T) {
	a := newApplier(t)
	a.apply(CmdDetect, t0, DetectCmd{Host: "c1"})
	op := a.begin("c1", StepFence, "")
	wrong := OpID{Term: op.Term, Index: op.Index + 100}
	r := a.apply(CmdStepEnd, t0, StepEndCmd{Host: "c1", Step: StepFence, OpID: wrong, OK: true})
	if err, _ := r.(error); !errors.Is(err, ErrStaleStep) {
		t.Fatalf("want ErrStaleStep, got %v", r)
	}
	if h := a.f.Host("c1"); h.Phase != PhaseFencing || h.Pending == nil {
		t.Fatalf("a stale result must not change the record: %+v", h)
	}
}

func TestFSMReservedHostIsClaimedOnce(t *testing.T) {
	a := newApplier(t)
	a.apply(CmdDetect, t0, DetectCmd{Host: "c1"})
	a.apply(CmdDetect, t0, DetectCmd{Host: "c2"})
	r := a.apply(CmdStepBegin, t0, StepBeginCmd{Host: "c1", Step: StepReserve, Target: "spare"})
	if _, ok := r.(OpID); !ok {
		t.Fatalf("first claim: %v", r)
	}
	r = a.apply(CmdStepBegin, t0, StepBeginCmd{Host: "c2", Step: StepReserve, Target: "spare"})
	if err, _ := r.(error); !errors.Is(err, ErrStalePhase) {
		t.Fatalf("second claim on the same spare must be refused, got %v", r)
	}
}

func TestFSMUnknownCommand(t *testing.T) {
	a := newApplier(t)
	mk := func(ign bool) []byte {
		b, _ := json.Marshal(Command{Type: "from.the.future", Version: 1, At: t0, Ignorable: ign, Body: json.RawMessage(`{}`)})
		return b
	}
	if r := a.f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: mk(true)}); r != nil {
		t.Fatalf("ignorable unknown command: %v", r)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("an unknown command that is not ignorable must panic")
		}
	}()
	a.f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: mk(false)})
}

func TestFSMSettingsAndEvents(t *testing.T) {
	a := newApplier(t)
	a.apply(CmdPause, t0, PauseCmd{Paused: true, By: "ops", Reason: "storage work"})
	a.apply(CmdMaintenance, t0, MaintenanceCmd{Host: "c3", On: true, By: "ops"})
	a.apply(CmdConfirmFence, t0, ConfirmCmd{Host: "c4", By: "ops", Reason: "pulled the plug"})
	s := a.f.Settings()
	if !s.Paused || s.Maintenance["c3"] != "" || len(s.Maintenance) != 1 || s.Confirmed["c4"].By != "ops" {
		t.Fatalf("%+v", s)
	}
	ev := a.f.Events(0, "", 0)
	if len(ev) != 3 || ev[0].Kind != "Paused" || ev[2].Host != "c4" {
		t.Fatalf("%+v", ev)
	}
	if got := a.f.Events(ev[1].Seq, "", 0); len(got) != 1 {
		t.Fatalf("since: %+v", got)
	}
	// A resume's reason goes in its event; it is not a pause reason.
	a.apply(CmdPause, t0, PauseCmd{Paused: false, By: "ops", Reason: "storage work done"})
	if s := a.f.Settings(); s.Paused || s.PauseReason != "" {
		t.Fatalf("after resume: %+v", s)
	}
	if ev := a.f.Events(0, "", 1); ev[0].Kind != "Resumed" || ev[0].Message != "recovery resumed by ops: storage work done" {
		t.Fatalf("resume event %+v", ev)
	}
	for i := 0; i < maxEvents+10; i++ {
		a.apply(CmdEvent, t0, EventCmd{Kind: "X"})
	}
	if n := len(a.f.Events(0, "", 0)); n != maxEvents {
		t.Fatalf("event log must be bounded at %d, has %d", maxEvents, n)
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

func TestFSMSnapshotRestoreReplacesEverything(t *testing.T) {
	a := newApplier(t)
	a.apply(CmdDetect, t0, DetectCmd{Host: "c1"})
	op := a.begin("c1", StepFence, "")
	a.apply(CmdPause, t0, PauseCmd{Paused: true, By: "ops"})
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after the snapshot must not leak into it.
	a.apply(CmdDetect, t0, DetectCmd{Host: "c9"})
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	b := newApplier(t)
	b.apply(CmdDetect, t0, DetectCmd{Host: "other"})
	if err := b.f.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if b.f.Host("other") != nil || b.f.Host("c9") != nil {
		t.Fatal("restore must replace all state")
	}
	h := b.f.Host("c1")
	if h == nil || h.Pending == nil || h.Pending.OpID != op || !b.f.Settings().Paused {
		t.Fatalf("restored: %+v", h)
	}
	if err := b.f.Restore(io.NopCloser(bytes.NewBufferString(`{"version":2}`))); err == nil {
		t.Fatal("a snapshot of an unknown version must be refused")
	}
}

func TestFSMRetryFailedRecovery(t *testing.T) {
	a := newApplier(t)
	a.apply(CmdDetect, t0, DetectCmd{Host: "c1"})
	op := a.begin("c1", StepFence, "")
	a.apply(CmdStepEnd, t0, StepEndCmd{Host: "c1", Step: StepFence, OpID: op, OK: true, Fence: &FenceResult{Method: "ipmi", State: "off"}})
	op = a.begin("c1", StepDisable, "")
	a.apply(CmdStepEnd, t0, StepEndCmd{Host: "c1", Step: StepDisable, OpID: op, OK: true})
	a.apply(CmdPlan, t0, PlanCmd{Host: "c1", Servers: []*ServerRecord{{ID: "v1", State: ServerFailed, Attempts: 5, Error: "x"}, {ID: "v2", State: ServerDone}}})
	if r := a.apply(CmdRetry, t0, RetryCmd{Host: "c1", By: "ops"}); r == nil {
		t.Fatal("retry of a record that is not failed must be refused")
	}
	op = a.begin("c1", StepMarkFailed, "")
	a.apply(CmdStepEnd, t0, StepEndCmd{Host: "c1", Step: StepMarkFailed, OpID: op, OK: true, Detail: "1 of 2 failed"})
	if h := a.f.Host("c1"); h.Phase != PhaseFailed || h.Reason != "1 of 2 failed" {
		t.Fatalf("%+v", h)
	}
	if r := a.apply(CmdRetry, t0, RetryCmd{Host: "c1", By: "ops", Reason: "scheduler fixed"}); r != nil {
		t.Fatalf("retry: %v", r)
	}
	if ev := a.f.Events(0, "c1", 1); len(ev) != 1 || ev[0].Message != "retry requested by ops (scheduler fixed): back to evacuating" {
		t.Fatalf("retry event %+v: the operator's reason is lost", ev)
	}
	h := a.f.Host("c1")
	if h.Phase != PhaseEvacuating || h.Server("v1").State != ServerPending || h.Server("v1").Attempts != 0 || h.Server("v2").State != ServerDone {
		t.Fatalf("after retry: %+v %+v", h, h.Server("v1"))
	}
}

// TestTakeoverIsRecordedOnceAndIgnorableByOlderNodes: the startup
// reconciliation's takeover is recorded once (a second one changes
// nothing), and is flagged so that a node older than it skips it during a
// rolling upgrade instead of stopping.
func TestTakeoverIsRecordedOnceAndIgnorableByOlderNodes(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1700000000, 0).UTC()
	for i, at := range []time.Time{t0, t0.Add(time.Hour)} {
		data, err := EncodeCommand(CmdTakeover, at, TakeoverCmd{Adopted: []string{"c1"}})
		if err != nil {
			t.Fatal(err)
		}
		c, _ := DecodeCommand(data)
		if !c.Ignorable {
			t.Fatal("a takeover is not flagged ignorable")
		}
		f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Term: 1, Data: data})
	}
	if got := f.Settings().TakenOver; !got.Equal(t0) {
		t.Errorf("TakenOver = %v, want the first takeover's %v", got, t0)
	}
	if evs := f.Events(0, "", 0); len(evs) != 1 || evs[0].Kind != "StartupReconciled" || !strings.Contains(evs[0].Message, "adopted c1") {
		t.Errorf("events %+v", evs)
	}
}
