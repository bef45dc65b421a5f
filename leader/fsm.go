package leader

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// maxEvents bounds the replicated event log.
const maxEvents = 2000

// maxSteps bounds the step history kept per host record.
const maxSteps = 500

// Errors returned (as Apply responses, not panics) for commands that are
// well formed but do not fit the current state. The leader treats them as
// "someone else got there first" and re-reads the state.
var (
	ErrNoRecord   = errors.New("no active recovery record for host")
	ErrStaleStep  = errors.New("step result does not match the pending intent")
	ErrStalePhase = errors.New("record is not in the expected phase")
)

// FSM is the replicated state machine. Apply, Snapshot and Restore are
// called by raft from one goroutine; the read methods may be called from any
// goroutine at any time and return copies.
type FSM struct {
	mu      sync.RWMutex
	st      fsmState
	applied uint64 // index of the last applied entry
}

// fsmState is everything that is replicated; it is what a snapshot holds.
type fsmState struct {
	Hosts    map[string]*HostRecord `json:"hosts"`
	Events   []Event                `json:"events"`
	EventSeq uint64                 `json:"event_seq"`
	Settings Settings               `json:"settings"`
	// Leader is the node that leads the current term and its API address.
	Leader LeaderAPICmd `json:"leader"`
	// Incidents are shadow mode's (shadow_fsm.go), oldest first.
	Incidents   []*Incident `json:"incidents,omitempty"`
	IncidentSeq uint64      `json:"incident_seq,omitempty"`
	// Leases are the watchdog leases, by host (lease_fsm.go).
	Leases map[string]*LeaseRecord `json:"leases,omitempty"`
}

// NewFSM returns an empty FSM.
func NewFSM() *FSM {
	return &FSM{st: emptyState()}
}

func emptyState() fsmState {
	return fsmState{Hosts: map[string]*HostRecord{}, Settings: Settings{Maintenance: map[string]string{}, Confirmed: map[string]Confirmed{}},
		Leases: map[string]*LeaseRecord{}}
}

// Apply implements raft.FSM. It panics on a command it cannot understand
// unless the command is flagged ignorable: a replica that silently skipped
// an entry would diverge from the others.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := DecodeCommand(l.Data)
	if err != nil {
		panic(fmt.Sprintf("leader fsm: entry %d: %v", l.Index, err))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = l.Index
	resp, err := f.st.apply(c, OpID{Term: l.Term, Index: l.Index})
	if err != nil {
		var u *unknownCommandError
		if errors.As(err, &u) && c.Ignorable {
			return nil
		}
		if errors.As(err, &u) || errors.Is(err, errMalformed) {
			panic(fmt.Sprintf("leader fsm: entry %d: %v", l.Index, err))
		}
		return err
	}
	return resp
}

// AppliedIndex is the index of the last entry applied to this replica.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

type unknownCommandError struct {
	t CommandType
	v int
}

func (e *unknownCommandError) Error() string {
	return fmt.Sprintf("unknown command %q version %d (is this node older than the leader?)", e.t, e.v)
}

var errMalformed = errors.New("malformed command body")

func decodeBody[T any](c Command) (T, error) {
	var v T
	if err := json.Unmarshal(c.Body, &v); err != nil {
		return v, fmt.Errorf("%w: %s: %v", errMalformed, c.Type, err)
	}
	return v, nil
}

// apply is the pure transition function: state × command → state.
func (s *fsmState) apply(c Command, op OpID) (any, error) {
	if c.Version > commandVersion {
		return nil, &unknownCommandError{c.Type, c.Version}
	}
	switch c.Type {
	case CmdDetect:
		b, err := decodeBody[DetectCmd](c)
		if err != nil {
			return nil, err
		}
		return s.detect(c, b)
	case CmdStepBegin:
		b, err := decodeBody[StepBeginCmd](c)
		if err != nil {
			return nil, err
		}
		return s.stepBegin(c, b, op)
	case CmdStepEnd:
		b, err := decodeBody[StepEndCmd](c)
		if err != nil {
			return nil, err
		}
		return nil, s.stepEnd(c, b)
	case CmdPlan:
		b, err := decodeBody[PlanCmd](c)
		if err != nil {
			return nil, err
		}
		return nil, s.plan(c, b)
	case CmdServer:
		b, err := decodeBody[ServerCmd](c)
		if err != nil {
			return nil, err
		}
		return nil, s.server(c, b)
	case CmdPhase:
		b, err := decodeBody[PhaseCmd](c)
		if err != nil {
			return nil, err
		}
		return nil, s.phase(c, b)
	case CmdEvent:
		b, err := decodeBody[EventCmd](c)
		if err != nil {
			return nil, err
		}
		s.event(c, b.Host, b.Kind, b.Message, b.Warning)
		return nil, nil
	case CmdPause:
		b, err := decodeBody[PauseCmd](c)
		if err != nil {
			return nil, err
		}
		if b.Paused {
			s.Settings.Paused, s.Settings.PausedBy, s.Settings.PauseReason = true, b.By, b.Reason
			s.event(c, "", "Paused", fmt.Sprintf("recovery paused by %s: %s", b.By, b.Reason), true)
		} else {
			// A resume's reason is the event's, not a pause reason.
			s.Settings.Paused, s.Settings.PausedBy, s.Settings.PauseReason = false, b.By, ""
			msg := "recovery resumed by " + b.By
			if b.Reason != "" {
				msg += ": " + b.Reason
			}
			s.event(c, "", "Resumed", msg, false)
		}
		return nil, nil
	case CmdMaintenance:
		b, err := decodeBody[MaintenanceCmd](c)
		if err != nil {
			return nil, err
		}
		if b.On {
			s.Settings.Maintenance[b.Host] = b.Reason
			s.event(c, b.Host, "MaintenanceOn", fmt.Sprintf("maintenance on by %s: %s", b.By, b.Reason), false)
		} else {
			delete(s.Settings.Maintenance, b.Host)
			s.event(c, b.Host, "MaintenanceOff", "maintenance off by "+b.By, false)
		}
		return nil, nil
	case CmdConfirmFence:
		b, err := decodeBody[ConfirmCmd](c)
		if err != nil {
			return nil, err
		}
		s.Settings.Confirmed[b.Host] = Confirmed{By: b.By, Reason: b.Reason, At: c.At}
		s.event(c, b.Host, "FencingConfirmedByOperator", fmt.Sprintf("%s confirmed the host is powered off: %s", b.By, b.Reason), true)
		return nil, nil
	case CmdForget:
		b, err := decodeBody[ForgetCmd](c)
		if err != nil {
			return nil, err
		}
		h := s.Hosts[b.Host]
		if h == nil || h.Phase.Active() {
			return nil, ErrStalePhase
		}
		delete(s.Hosts, b.Host)
		delete(s.Settings.Confirmed, b.Host)
		s.event(c, b.Host, "RecordForgotten", "record forgotten by "+b.By, false)
		return nil, nil
	case CmdRetry:
		b, err := decodeBody[RetryCmd](c)
		if err != nil {
			return nil, err
		}
		return nil, s.retry(c, b)
	case CmdLeaderAPI:
		b, err := decodeBody[LeaderAPICmd](c)
		if err != nil {
			return nil, err
		}
		s.Leader = b
		return nil, nil
	case CmdSegment:
		b, err := decodeBody[SegmentCmd](c)
		if err != nil {
			return nil, err
		}
		return nil, s.segment(c, b)
	case CmdPark:
		b, err := decodeBody[ParkCmd](c)
		if err != nil {
			return nil, err
		}
		return nil, s.park(c, b)
	case CmdTakeover:
		b, err := decodeBody[TakeoverCmd](c)
		if err != nil {
			return nil, err
		}
		if !s.Settings.TakenOver.IsZero() {
			return nil, nil
		}
		s.Settings.TakenOver = c.At
		msg := "startup reconciliation: no orphaned host in Nova; from now on a host forced down by hand is left to the operator"
		switch {
		case b.Skipped:
			msg = "startup reconciliation recorded for a cluster with history: nothing adopted; a host forced down by hand is left to the operator"
		case len(b.Adopted) > 0:
			msg = fmt.Sprintf("startup reconciliation adopted %s (forced down but not disabled when IHA took over); "+
				"from now on a host forced down by hand is left to the operator", strings.Join(b.Adopted, ", "))
		}
		s.event(c, "", "StartupReconciled", msg, false)
		return nil, nil
	case CmdShadow:
		b, err := decodeBody[ShadowCmd](c)
		if err != nil {
			return nil, err
		}
		s.shadowSwitch(c, b)
		return nil, nil
	case CmdShadowDecide:
		b, err := decodeBody[ShadowDecideCmd](c)
		if err != nil {
			return nil, err
		}
		return s.shadowDecide(c, b)
	case CmdShadowObserve:
		b, err := decodeBody[ShadowObserveCmd](c)
		if err != nil {
			return nil, err
		}
		return s.shadowObserve(c, b)
	case CmdShadowClose:
		b, err := decodeBody[ShadowCloseCmd](c)
		if err != nil {
			return nil, err
		}
		return s.shadowClose(c, b)
	case CmdLeaseGrant:
		b, err := decodeBody[LeaseGrantCmd](c)
		if err != nil {
			return nil, err
		}
		return s.leaseGrant(c, b)
	case CmdWatchdogFence:
		b, err := decodeBody[WatchdogWaitCmd](c)
		if err != nil {
			return nil, err
		}
		return nil, s.watchdogWait(c, b)
	case CmdLeaseForget:
		b, err := decodeBody[LeaseForgetCmd](c)
		if err != nil {
			return nil, err
		}
		return nil, s.leaseForget(c, b)
	}
	return nil, &unknownCommandError{c.Type, c.Version}
}

// retry is the operator's "try again" for a failed record.
func (s *fsmState) retry(c Command, b RetryCmd) error {
	h := s.Hosts[b.Host]
	if h == nil || h.Phase != PhaseFailed {
		return fmt.Errorf("%w: %s is not failed", ErrStalePhase, b.Host)
	}
	h.Pending, h.Reason, h.LastError = nil, "", ""
	switch {
	case h.Fence == nil:
		s.setPhase(c, h, PhaseDetected)
	case !h.Planned:
		s.setPhase(c, h, PhaseDisabled)
	default:
		for _, sr := range h.Servers {
			if sr.State == ServerFailed {
				sr.State, sr.Attempts, sr.Error, sr.Pending = ServerPending, 0, "", nil
			}
		}
		s.setPhase(c, h, PhaseEvacuating)
	}
	h.FinishedAt = time.Time{}
	by := b.By
	if b.Reason != "" {
		by += " (" + b.Reason + ")"
	}
	s.event(c, b.Host, "RecoveryRetried", fmt.Sprintf("retry requested by %s: back to %s", by, h.Phase), false)
	return nil
}

func (s *fsmState) event(c Command, host, kind, msg string, warn bool) {
	s.EventSeq++
	s.Events = append(s.Events, Event{Seq: s.EventSeq, At: c.At, Host: host, Kind: kind, Message: msg, Warning: warn})
	if n := len(s.Events); n > maxEvents {
		s.Events = append(s.Events[:0:0], s.Events[n-maxEvents:]...)
	}
}

func (s *fsmState) setPhase(c Command, h *HostRecord, p Phase) {
	h.Phase, h.PhaseSince = p, c.At
	if !p.Active() {
		h.FinishedAt = c.At
	}
}

func (s *fsmState) detect(c Command, b DetectCmd) (any, error) {
	if b.Host == "" {
		return nil, fmt.Errorf("%w: detect without host", errMalformed)
	}
	if h := s.Hosts[b.Host]; h != nil && h.Phase.Active() {
		return false, nil
	}
	p := b.Phase
	if p == "" {
		p = PhaseDetected
	}
	h := &HostRecord{Host: b.Host, ServiceID: b.ServiceID, Zone: b.Zone, Evidence: b.Evidence, Level: b.Level,
		Kdump: b.Kdump, Adopted: b.Adopted, DetectedAt: c.At, Reason: b.Reason}
	s.setPhase(c, h, p)
	s.Hosts[b.Host] = h
	if p == PhaseSkipped {
		s.event(c, b.Host, "HostSkipped", "host failed but is not recovered: "+b.Reason, true)
		return true, nil
	}
	msg := "host failed: " + describeEvidence(b.Evidence)
	if b.Adopted {
		msg = "recovery adopted from Nova's marker: " + describeEvidence(b.Evidence)
	}
	s.event(c, b.Host, "HostDown", msg, true)
	return true, nil
}

func describeEvidence(e Evidence) string {
	s := fmt.Sprintf("source %s, nova state %s", e.Source, e.NovaState)
	if !e.NovaUpdatedAt.IsZero() {
		s += ", updated_at " + e.NovaUpdatedAt.UTC().Format("2006-01-02T15:04:05Z")
	}
	if e.Stale {
		s += " (stale)"
	}
	if e.ForcedDown {
		s += ", forced down"
	}
	if e.Note != "" {
		s += ", " + e.Note
	}
	return s
}

func (s *fsmState) active(host string) (*HostRecord, error) {
	h := s.Hosts[host]
	if h == nil || !h.Phase.Active() {
		return nil, fmt.Errorf("%w: %s", ErrNoRecord, host)
	}
	return h, nil
}

func (s *fsmState) stepBegin(c Command, b StepBeginCmd, op OpID) (any, error) {
	h, err := s.active(b.Host)
	if err != nil {
		// mark-failed may also run on a record that another path failed.
		return nil, err
	}
	in := &Intent{OpID: op, Step: b.Step, ServerID: b.ServerID, Target: b.Target, At: c.At}
	if b.Step == StepReserve {
		for _, o := range s.Hosts {
			if o.Host != h.Host && o.Phase.Active() && (o.ReservedHost == b.Target || (o.Pending != nil && o.Pending.Step == StepReserve && o.Pending.Target == b.Target)) {
				return nil, fmt.Errorf("%w: reserved host %s is held by the recovery of %s", ErrStalePhase, b.Target, o.Host)
			}
		}
	}
	if b.ServerID != "" {
		sr := h.Server(b.ServerID)
		if sr == nil {
			return nil, fmt.Errorf("%w: server %s not planned on %s", ErrNoRecord, b.ServerID, b.Host)
		}
		sr.Pending = in
		if b.Step == StepEvacuate {
			sr.Attempts++
			if sr.StartedAt.IsZero() {
				sr.StartedAt = c.At
			}
		}
		return op, nil
	}
	h.Pending = in
	if b.Step == StepFence {
		h.FenceTries++
		s.setPhase(c, h, PhaseFencing)
		s.event(c, h.Host, "FencingStarted", fmt.Sprintf("fencing (attempt %d, op %s)", h.FenceTries, op), false)
	}
	return op, nil
}

func (s *fsmState) stepEnd(c Command, b StepEndCmd) error {
	h, err := s.active(b.Host)
	if err != nil {
		return err
	}
	var in *Intent
	var sr *ServerRecord
	if b.ServerID != "" {
		if sr = h.Server(b.ServerID); sr == nil {
			return fmt.Errorf("%w: server %s", ErrNoRecord, b.ServerID)
		}
		in = sr.Pending
	} else {
		in = h.Pending
	}
	if in == nil || in.OpID != b.OpID || in.Step != b.Step {
		return fmt.Errorf("%w: %s %s op %s", ErrStaleStep, b.Host, b.Step, b.OpID)
	}
	if sr != nil {
		sr.Pending = nil
	} else {
		h.Pending = nil
	}
	h.Steps = append(h.Steps, StepRecord{Step: b.Step, OpID: b.OpID, ServerID: b.ServerID, Started: in.At, Finished: c.At, OK: b.OK, Detail: b.Detail})
	if n := len(h.Steps); n > maxSteps {
		h.Steps = append(h.Steps[:0:0], h.Steps[n-maxSteps:]...)
	}
	if !b.OK {
		h.LastError = b.Detail
	}
	switch b.Step {
	case StepFence:
		if b.OK {
			h.Fence = b.Fence
			s.setPhase(c, h, PhaseFenced)
			s.event(c, h.Host, "FencingSucceeded", "fenced: "+b.Detail, false)
			if b.Fence != nil && b.Fence.Method == "watchdog" {
				s.event(c, h.Host, "WatchdogSelfFenceAssumed", "the host's watchdog reset it: "+b.Fence.Detail, true)
			}
		} else {
			s.setPhase(c, h, PhaseDetected)
			s.event(c, h.Host, "FencingFailed", "fencing failed: "+b.Detail, true)
		}
	case StepDisable:
		if b.OK {
			s.setPhase(c, h, PhaseDisabled)
			s.event(c, h.Host, "ServiceDisabled", b.Detail, false)
		}
	case StepReserve:
		if b.OK {
			h.ReservedHost = b.Reserved
			s.event(c, h.Host, "ReservedHostEnabled", "reserved host "+b.Reserved+" enabled", false)
		}
	case StepEvacuate:
		if b.OK {
			sr.State, sr.MigrationID, sr.RequestedAt = b.ServerState, b.MigrationID, c.At
			if b.To != "" {
				sr.To = b.To
			}
			if sr.State == ServerDone {
				sr.FinishedAt = c.At
			}
			sr.Error = ""
		} else {
			sr.Error = b.Detail
			if b.ServerState == ServerFailed {
				sr.State, sr.FinishedAt = ServerFailed, c.At
				s.event(c, h.Host, "InstanceEvacuationFailed", fmt.Sprintf("server %s (%s): %s", sr.ID, sr.Name, b.Detail), true)
			}
		}
	case StepPowerOn:
		if b.OK {
			h.PoweredOn = true
		}
	case StepComplete:
		if b.OK {
			h.Completed = true
			s.setPhase(c, h, PhaseReenabling)
			s.event(c, h.Host, "RecoveryCompleted", b.Detail, false)
		}
	case StepMarkFailed:
		h.Reason = b.Detail
		s.setPhase(c, h, PhaseFailed)
		s.event(c, h.Host, "ProcessingFailed", "recovery failed: "+b.Detail, true)
	case StepUnforce:
		if b.OK {
			h.Unforced = true
		}
	case StepEnable:
		if b.OK {
			s.setPhase(c, h, PhaseDone)
			delete(s.Settings.Confirmed, h.Host)
			s.event(c, h.Host, "HostReenabled", b.Detail, false)
		}
	}
	return nil
}

func (s *fsmState) plan(c Command, b PlanCmd) error {
	h, err := s.active(b.Host)
	if err != nil {
		return err
	}
	if h.Planned {
		return fmt.Errorf("%w: %s already planned", ErrStalePhase, b.Host)
	}
	for _, sr := range b.Servers {
		if sr == nil {
			return fmt.Errorf("%w: plan of %s has a null server", errMalformed, b.Host)
		}
	}
	h.Servers, h.Planned = b.Servers, true
	h.EvacRounds++
	s.setPhase(c, h, PhaseEvacuating)
	var n, skipped int
	for _, sr := range b.Servers {
		if sr.State == ServerSkipped {
			skipped++
		} else {
			n++
		}
	}
	s.event(c, h.Host, "EvacuationStarted", fmt.Sprintf("%d servers to evacuate, %d not evacuable", n, skipped), false)
	return nil
}

func (s *fsmState) server(c Command, b ServerCmd) error {
	h, err := s.active(b.Host)
	if err != nil {
		return err
	}
	sr := h.Server(b.ServerID)
	if sr == nil {
		return fmt.Errorf("%w: server %s", ErrNoRecord, b.ServerID)
	}
	sr.State = b.State
	if b.MigrationID != 0 {
		sr.MigrationID = b.MigrationID
	}
	if b.To != "" {
		sr.To = b.To
	}
	if !b.TimeoutFrom.IsZero() {
		sr.TimeoutFrom = b.TimeoutFrom
	}
	sr.Error = b.Error
	switch b.State {
	case ServerDone:
		sr.FinishedAt = c.At
		s.event(c, h.Host, "InstanceEvacuationSucceeded", fmt.Sprintf("server %s (%s) now on %s", sr.ID, sr.Name, sr.To), false)
	case ServerFailed:
		sr.FinishedAt = c.At
		s.event(c, h.Host, "InstanceEvacuationFailed", fmt.Sprintf("server %s (%s): %s", sr.ID, sr.Name, b.Error), true)
	}
	return nil
}

func (s *fsmState) phase(c Command, b PhaseCmd) error {
	h := s.Hosts[b.Host]
	if h == nil {
		return fmt.Errorf("%w: %s", ErrNoRecord, b.Host)
	}
	if b.From != "" && h.Phase != b.From {
		return fmt.Errorf("%w: %s is %s, not %s", ErrStalePhase, b.Host, h.Phase, b.From)
	}
	s.setPhase(c, h, b.Phase)
	if b.Phase == PhaseDone {
		delete(s.Settings.Confirmed, h.Host)
	}
	if b.Reason != "" {
		h.Reason = b.Reason
	}
	kind := map[Phase]string{PhaseEvacuated: "EvacuationSucceeded", PhaseFailed: "ProcessingFailed",
		PhaseSkipped: "HostSkipped", PhaseDone: "RecoveryFinished", PhaseDetected: "RecoveryRetried"}[b.Phase]
	if kind == "" {
		kind = "PhaseChanged"
	}
	s.event(c, h.Host, kind, fmt.Sprintf("%s: %s", b.Phase, b.Reason), b.Phase == PhaseFailed || b.Phase == PhaseSkipped)
	return nil
}

// Host returns a copy of the record of host, or nil.
func (f *FSM) Host(host string) *HostRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if h := f.st.Hosts[host]; h != nil {
		return h.clone()
	}
	return nil
}

// Hosts returns copies of every record, sorted by host name.
func (f *FSM) Hosts() []*HostRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*HostRecord, 0, len(f.st.Hosts))
	for _, h := range f.st.Hosts {
		out = append(out, h.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// Events returns events with Seq > since, for host if not empty, at most
// limit (0: all), oldest first.
func (f *FSM) Events(since uint64, host string, limit int) []Event {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []Event
	for _, e := range f.st.Events {
		if e.Seq > since && (host == "" || e.Host == host) {
			out = append(out, e)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// actingKinds are the events only an acting recovery writes (a shadow
// writes its Shadow* and Observed* events instead; events such as
// NovaComputeBroken are written in either mode).
var actingKinds = map[string]bool{"HostDown": true, "FencingStarted": true, "FencingSucceeded": true, "FencingFailed": true,
	"FencingConfirmedByOperator": true, "ServiceDisabled": true, "EvacuationStarted": true, "InstanceEvacuationSucceeded": true,
	"InstanceEvacuationFailed": true, "HostReenabled": true, "RecoveryCompleted": true, "HostSkipped": true,
	"ProcessingFailed": true, "OrphanedHostRecovered": true}

// ActedBefore reports whether this cluster has recovered (or begun to
// recover) a host: a record, or an event only an acting recovery writes.
// A cluster that only shadowed has not: its first acting term takes over
// the orphans the other agent left (R17.1).
func (f *FSM) ActedBefore() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if len(f.st.Hosts) > 0 {
		return true
	}
	for _, e := range f.st.Events {
		if actingKinds[e.Kind] {
			return true
		}
	}
	return false
}

// LeaderInfo is the node that leads the current term and its API address
// (as it recorded itself after its Barrier).
func (f *FSM) LeaderInfo() LeaderAPICmd {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Leader
}

// Settings returns a copy of the runtime settings.
func (f *FSM) Settings() Settings {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Settings.clone()
}

func (s Settings) clone() Settings {
	s.Maintenance = maps.Clone(s.Maintenance)
	s.Confirmed = maps.Clone(s.Confirmed)
	return s
}

// Snapshot implements raft.FSM: a deep copy now, the encoding in Persist.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	cp := fsmState{Hosts: make(map[string]*HostRecord, len(f.st.Hosts)), Events: append([]Event(nil), f.st.Events...),
		EventSeq: f.st.EventSeq, Settings: f.st.Settings.clone(), Leader: f.st.Leader, IncidentSeq: f.st.IncidentSeq,
		Leases: make(map[string]*LeaseRecord, len(f.st.Leases))}
	for k, h := range f.st.Hosts {
		cp.Hosts[k] = h.clone()
	}
	for _, i := range f.st.Incidents {
		cp.Incidents = append(cp.Incidents, i.clone())
	}
	for k, l := range f.st.Leases {
		cp.Leases[k] = l.clone()
	}
	return &snapshot{st: cp}, nil
}

// Restore implements raft.FSM: it replaces everything.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := decodeSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
	return nil
}

func decodeSnapshot(r io.Reader) (fsmState, error) {
	st := emptyState()
	var wire struct {
		Version int      `json:"version"`
		State   fsmState `json:"state"`
	}
	if err := json.NewDecoder(r).Decode(&wire); err != nil {
		return st, fmt.Errorf("restore snapshot: %w", err)
	}
	if wire.Version != 1 {
		return st, fmt.Errorf("restore snapshot: unsupported version %d", wire.Version)
	}
	if wire.State.Hosts != nil {
		st.Hosts = wire.State.Hosts
	}
	for k, h := range st.Hosts {
		if h == nil || h.Host != k {
			return emptyState(), fmt.Errorf("restore snapshot: record %q is inconsistent", k)
		}
		for _, s := range h.Servers {
			if s == nil {
				return emptyState(), fmt.Errorf("restore snapshot: record %q has a null server", k)
			}
		}
	}
	st.Events, st.EventSeq = wire.State.Events, wire.State.EventSeq
	if wire.State.Settings.Maintenance != nil {
		st.Settings.Maintenance = wire.State.Settings.Maintenance
	}
	if wire.State.Settings.Confirmed != nil {
		st.Settings.Confirmed = wire.State.Settings.Confirmed
	}
	st.Settings.Paused, st.Settings.PausedBy, st.Settings.PauseReason = wire.State.Settings.Paused, wire.State.Settings.PausedBy, wire.State.Settings.PauseReason
	ws := wire.State.Settings
	st.Settings.ShadowSet, st.Settings.Shadow, st.Settings.ShadowBy, st.Settings.ShadowReason = ws.ShadowSet, ws.Shadow, ws.ShadowBy, ws.ShadowReason
	st.Leader = wire.State.Leader
	for _, i := range wire.State.Incidents {
		if i == nil || i.Host == "" {
			return emptyState(), fmt.Errorf("restore snapshot: an incident without a host")
		}
	}
	st.Incidents, st.IncidentSeq = wire.State.Incidents, wire.State.IncidentSeq
	for k, l := range wire.State.Leases {
		if l == nil || l.Host != k {
			return emptyState(), fmt.Errorf("restore snapshot: lease %q is inconsistent", k)
		}
		st.Leases[k] = l
	}
	return st, nil
}

type snapshot struct{ st fsmState }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	err := json.NewEncoder(sink).Encode(struct {
		Version int      `json:"version"`
		State   fsmState `json:"state"`
	}{1, s.st})
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
