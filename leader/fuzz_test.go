package leader

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/pkg/lease"
)

// fuzzIndex is the log index the fuzzed entries are applied at; the FSM's
// deliberate panics must name it.
const fuzzIndex = 4242

// seedFSM is a state where most commands find something to act on: a
// planned host with a pending fence intent and two servers.
func seedFSM(t testing.TB) *FSM {
	f := NewFSM()
	at := time.Unix(1700000000, 0)
	i := uint64(0)
	step := func(ct CommandType, body any) {
		i++
		data, err := EncodeCommand(ct, at, body)
		if err != nil {
			t.Fatal(err)
		}
		f.Apply(&raft.Log{Type: raft.LogCommand, Index: i, Term: 1, Data: data})
	}
	step(CmdDetect, DetectCmd{Host: "c1", ServiceID: "s1", Level: 2})
	step(CmdStepBegin, StepBeginCmd{Host: "c1", Step: StepFence})
	step(CmdDetect, DetectCmd{Host: "c2", ServiceID: "s2", Level: 2, Phase: PhaseDisabled})
	step(CmdPlan, PlanCmd{Host: "c2", Servers: []*ServerRecord{{ID: "v1", State: ServerPending}, {ID: "v2", State: ServerRequested}}})
	step(CmdStepBegin, StepBeginCmd{Host: "c2", Step: StepEvacuate, ServerID: "v1"})
	return f
}

// commandSeeds are well-formed entries of every command type.
func commandSeeds(t testing.TB) [][]byte {
	at := time.Unix(1700000000, 0)
	var out [][]byte
	for _, c := range []struct {
		t CommandType
		b any
	}{
		{CmdDetect, DetectCmd{Host: "c3", ServiceID: "s3", Level: 2, Evidence: Evidence{Source: "nova", NovaState: "down"}}},
		{CmdStepBegin, StepBeginCmd{Host: "c2", Step: StepEvacuate, ServerID: "v2"}},
		{CmdStepBegin, StepBeginCmd{Host: "c2", Step: StepReserve, Target: "r1"}},
		{CmdStepEnd, StepEndCmd{Host: "c1", Step: StepFence, OpID: OpID{Term: 1, Index: 2}, OK: true, Fence: &FenceResult{Method: "ipmi", State: "off"}}},
		{CmdStepEnd, StepEndCmd{Host: "c2", Step: StepEvacuate, ServerID: "v1", OpID: OpID{Term: 1, Index: 5}, OK: true, ServerState: ServerRequested}},
		{CmdPlan, PlanCmd{Host: "c1", Servers: []*ServerRecord{{ID: "x", State: ServerPending}}}},
		{CmdServer, ServerCmd{Host: "c2", ServerID: "v2", State: ServerDone, To: "c4"}},
		{CmdPhase, PhaseCmd{Host: "c2", Phase: PhaseEvacuated, From: PhaseEvacuating}},
		{CmdEvent, EventCmd{Host: "c1", Kind: "HostDown", Message: "m"}},
		{CmdPause, PauseCmd{Paused: true, By: "op", Reason: "r"}},
		{CmdMaintenance, MaintenanceCmd{Host: "c1", On: true, By: "op"}},
		{CmdConfirmFence, ConfirmCmd{Host: "c1", By: "op", Reason: "unplugged"}},
		{CmdForget, ForgetCmd{Host: "c1", By: "op"}},
		{CmdRetry, RetryCmd{Host: "c1", By: "op"}},
		{CmdLeaderAPI, LeaderAPICmd{NodeID: "n1", APIAddr: "127.0.0.1:7421"}},
		{CmdSegment, SegmentCmd{Host: "c2", Segment: "s", RecoveryMethod: "rh_priority", Method: "auto", Targets: []string{"c3"}, FellBack: true, ResetFailed: true}},
		{CmdPark, ParkCmd{Host: "c2", Reason: "parked"}},
		{CmdTakeover, TakeoverCmd{Adopted: []string{"c1"}}},
		{CmdShadow, ShadowCmd{On: true, By: "op", Reason: "trying IHA"}},
		{CmdShadowDecide, ShadowDecideCmd{Host: "c5", Decision: ShadowDecision{Kind: ShadowFence, Servers: []ShadowServer{{ID: "v9", Evacuate: true, Target: "c6"}}}}},
		{CmdShadowObserve, ShadowObserveCmd{Host: "c5", Observed: Observed{Kind: ObservedEvacuation, ServerID: "v9", To: "c6", MigrationID: 3, Status: "done"}}},
		{CmdShadowClose, ShadowCloseCmd{Host: "c5", Reason: "back"}},
		{CmdLeaseGrant, LeaseGrantCmd{Params: lease.DefaultParams(15 * time.Second), Asks: []LeaseAsk{
			{Host: "c3", Boot: "b", Seq: 1}, {Host: "c1", Boot: "b", Seq: 2, Armed: true, W: time.Second}, {Host: "c4", Boot: "b", Seq: 3, Release: true}}}},
		{CmdWatchdogFence, WatchdogWaitCmd{Host: "c1", Grant: at, W: time.Second, L: 15 * time.Second, Margin: time.Second, Deadline: at.Add(time.Minute), BMCError: "e"}},
		{CmdLeaseForget, LeaseForgetCmd{Host: "c3", By: "op"}},
	} {
		data, err := EncodeCommand(c.t, at, c.b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	out = append(out,
		[]byte(`{"t":"host.future","v":1,"at":"2023-11-14T22:13:20Z","ign":true,"b":{}}`),
		[]byte(`{"t":"host.future","v":1,"at":"2023-11-14T22:13:20Z","b":{}}`),
		[]byte(`{"t":"host.detect","v":9,"at":"2023-11-14T22:13:20Z","b":{}}`),
		[]byte(`{"t":"host.plan","v":1,"at":"2023-11-14T22:13:20Z","b":{"host":"c1","servers":[null]}}`),
		[]byte(`{"t":"step.begin","v":1,"at":"2023-11-14T22:13:20Z","b":{"host":"c2","step":"evacuate","server_id":"nope"}}`),
		[]byte(`{"t":"host.detect","v":1,"at":"2023-11-14T22:13:20Z","b":[1,2]}`),
		[]byte(`not json`),
		[]byte(`{"t":"lease.grant","v":1,"at":"2023-11-14T22:13:20Z","b":{"params":{},"asks":[{"host":"c1","boot":"b","seq":1}]}}`),
		[]byte(`{"t":"lease.grant","v":1,"at":"2023-11-14T22:13:20Z","b":{"params":{"l":15000000000,"renew":3750000000,"max_rtt":1500000000,"reach":6750000000,"round":1500000000,"peer_timeout":1500000000},"asks":[{"host":""}]}}`),
	)
	return out
}

// FuzzApplyCommand decodes arbitrary log entries and applies them to a
// populated FSM. The FSM may panic only deliberately (an unknown command
// not flagged ignorable, a malformed body, an undecodable envelope), and
// then the panic names the entry's index; anything else (a nil pointer, an
// index out of range) is a bug that would take every replica down on the
// same entry. After any entry the FSM must still snapshot and restore.
func FuzzApplyCommand(f *testing.F) {
	for _, s := range commandSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, derr := DecodeCommand(data)
		fsm := seedFSM(t)
		func() {
			defer func() {
				r := recover()
				if r == nil {
					return
				}
				msg := fmt.Sprint(r)
				if !strings.HasPrefix(msg, fmt.Sprintf("leader fsm: entry %d: ", fuzzIndex)) {
					t.Fatalf("Apply panicked without naming the entry: %v", r)
				}
				if derr == nil && !strings.Contains(msg, "unknown command") && !strings.Contains(msg, "malformed") {
					t.Fatalf("Apply of a decodable entry panicked for another reason: %v", r)
				}
			}()
			fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: fuzzIndex, Term: 3, Data: data})
		}()
		snap, err := fsm.Snapshot()
		if err != nil {
			t.Fatalf("snapshot after the entry: %v", err)
		}
		sink := &memSink{}
		if err := snap.Persist(sink); err != nil {
			t.Fatalf("persist after the entry: %v", err)
		}
		if err := NewFSM().Restore(nopCloser{bytes.NewReader(sink.Bytes())}); err != nil {
			t.Fatalf("a snapshot written after the entry does not restore: %v", err)
		}
	})
}

// FuzzRestoreSnapshot feeds arbitrary bytes to snapshot restore: it must
// never panic, and what it accepts must be usable (readable, and encodable
// again to a snapshot that restores to the same state).
func FuzzRestoreSnapshot(f *testing.F) {
	fsm := seedFSM(f)
	snap, err := fsm.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		f.Fatal(err)
	}
	f.Add(sink.Bytes())
	f.Add([]byte(`{"version":1,"state":{}}`))
	f.Add([]byte(`{"version":1,"state":{"hosts":{"c1":null}}}`))
	f.Add([]byte(`{"version":1,"state":{"hosts":{"c1":{"host":"c2"}}}}`))
	f.Add([]byte(`{"version":1,"state":{"hosts":{"c1":{"host":"c1","servers":[null]}}}}`))
	f.Add([]byte(`{"version":2,"state":{}}`))
	f.Add([]byte(`{"version":1,"state":{"settings":{"maintenance":null,"confirmed_fenced":{"c1":{}}}}}`))
	f.Add([]byte(`{"version":1,"state":{"leases":{"c1":null}}}`))
	f.Add([]byte(`{"version":1,"state":{"leases":{"c1":{"host":"c2"}}}}`))
	f.Add([]byte(`{"version":1,"state":{"leases":{"c1":{"host":"c1","armed":true}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeSnapshot(bytes.NewReader(data))
		if err != nil {
			return
		}
		f := &FSM{st: st}
		_ = f.Hosts()
		_ = f.Settings()
		_ = f.Events(0, "", 10)
		_ = f.Leases()
		for _, h := range f.Hosts() {
			_, _ = GateAllows(h)
			_ = f.Host(h.Host)
		}
		snap, err := f.Snapshot()
		if err != nil {
			t.Fatalf("snapshot of a restored state: %v", err)
		}
		sink := &memSink{}
		if err := snap.Persist(sink); err != nil {
			t.Fatalf("persist of a restored state: %v", err)
		}
		again, err := decodeSnapshot(bytes.NewReader(sink.Bytes()))
		if err != nil {
			t.Fatalf("a restored state does not restore again: %v", err)
		}
		g := &FSM{st: again}
		if a, b := len(g.Hosts()), len(f.Hosts()); a != b {
			t.Fatalf("restore → snapshot → restore: %d hosts, was %d", a, b)
		}
		if a, b := len(g.Events(0, "", 0)), len(f.Events(0, "", 0)); a != b {
			t.Fatalf("restore → snapshot → restore: %d events, was %d", a, b)
		}
		for _, h := range f.Hosts() {
			x, _ := json.Marshal(h)
			y, _ := json.Marshal(g.Host(h.Host))
			if !bytes.Equal(x, y) {
				t.Fatalf("restore → snapshot → restore changed %s:\n%s\n%s", h.Host, x, y)
			}
		}
		x, _ := json.Marshal(f.Leases())
		y, _ := json.Marshal(g.Leases())
		if !bytes.Equal(x, y) {
			t.Fatalf("restore → snapshot → restore changed the leases:\n%s\n%s", x, y)
		}
		x, _ = json.Marshal(f.Settings())
		y, _ = json.Marshal(g.Settings())
		if !bytes.Equal(x, y) {
			t.Fatalf("restore → snapshot → restore changed the settings:\n%s\n%s", x, y)
		}
	})
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
