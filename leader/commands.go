package leader

import (
	"encoding/json"
	"fmt"
	"time"
)

// CommandType names a replicated command. The string is what is stored in
// the log: never change one, add a new one.
type CommandType string

// Command types. Each has a body type below.
const (
	CmdDetect       CommandType = "host.detect"      // DetectCmd
	CmdStepBegin    CommandType = "step.begin"       // StepBeginCmd
	CmdStepEnd      CommandType = "step.end"         // StepEndCmd
	CmdPlan         CommandType = "host.plan"        // PlanCmd
	CmdServer       CommandType = "server.update"    // ServerCmd
	CmdPhase        CommandType = "host.phase"       // PhaseCmd
	CmdEvent        CommandType = "event"            // EventCmd
	CmdPause        CommandType = "settings.pause"   // PauseCmd
	CmdMaintenance  CommandType = "host.maintenance" // MaintenanceCmd
	CmdConfirmFence CommandType = "host.confirm"     // ConfirmCmd
	CmdForget       CommandType = "host.forget"      // ForgetCmd
	CmdRetry        CommandType = "host.retry"       // RetryCmd
	CmdLeaderAPI    CommandType = "cluster.leader"   // LeaderAPICmd
	CmdSegment      CommandType = "host.segment"     // SegmentCmd
	CmdPark         CommandType = "host.park"        // ParkCmd
	CmdTakeover     CommandType = "cluster.takeover" // TakeoverCmd
)

// ignorable are the commands an older replica may skip during a rolling
// upgrade (see Command.Ignorable): they only record what a newer leader
// needs to remember (the takeover), or shadow mode's records, which steer
// no recovery.
var ignorable = map[CommandType]bool{CmdTakeover: true, CmdShadowDecide: true, CmdShadowObserve: true, CmdShadowClose: true}

// commandVersion is the envelope version this build writes. Apply accepts
// versions up to it.
const commandVersion = 1

// Command is the envelope of every log entry: a type, a version, the time
// the leader decided it (the FSM's only clock), and the body.
type Command struct {
	Type    CommandType `json:"t"`
	Version int         `json:"v"`
	At      time.Time   `json:"at"`
	// Ignorable marks a command that an older FSM may skip during a
	// rolling upgrade instead of panicking on it.
	Ignorable bool            `json:"ign,omitempty"`
	Body      json.RawMessage `json:"b"`
}

// DetectCmd opens a recovery record for a host (no-op if one is active).
type DetectCmd struct {
	Host      string   `json:"host"`
	ServiceID string   `json:"service_id"`
	Zone      string   `json:"zone,omitempty"`
	Evidence  Evidence `json:"evidence"`
	Level     int      `json:"level"`
	Kdump     bool     `json:"kdump,omitempty"`
	Adopted   bool     `json:"adopted,omitempty"`
	// Phase to start in; empty means detected. Adopted hosts whose
	// evacuation InstanceHA finished start in reenabling.
	Phase Phase `json:"phase,omitempty"`
	// Reason explains a record opened as skipped.
	Reason string `json:"reason,omitempty"`
}

// StepBeginCmd records the intent of a side effect. The response of Apply
// is the OpID of this entry.
type StepBeginCmd struct {
	Host     string `json:"host"`
	Step     string `json:"step"`
	ServerID string `json:"server_id,omitempty"`
	// Target is the reserved host a StepReserve claims. The FSM refuses a
	// claim on a host that another active recovery holds.
	Target string `json:"target,omitempty"`
}

// StepEndCmd records the result of a side effect.
type StepEndCmd struct {
	Host     string       `json:"host"`
	Step     string       `json:"step"`
	ServerID string       `json:"server_id,omitempty"`
	OpID     OpID         `json:"op"`
	OK       bool         `json:"ok"`
	Detail   string       `json:"detail,omitempty"`
	Fence    *FenceResult `json:"fence,omitempty"`    // StepFence
	Reserved string       `json:"reserved,omitempty"` // StepReserve
	// Server fields for StepEvacuate.
	ServerState ServerState `json:"server_state,omitempty"`
	MigrationID int         `json:"migration_id,omitempty"`
	To          string      `json:"to,omitempty"`
}

// PlanCmd records the servers to evacuate.
type PlanCmd struct {
	Host    string          `json:"host"`
	Servers []*ServerRecord `json:"servers"`
}

// ServerCmd updates one server's progress outside a step (tracking).
type ServerCmd struct {
	Host        string      `json:"host"`
	ServerID    string      `json:"server_id"`
	State       ServerState `json:"state"`
	MigrationID int         `json:"migration_id,omitempty"`
	To          string      `json:"to,omitempty"`
	Error       string      `json:"error,omitempty"`
	// TimeoutFrom: see ServerRecord.TimeoutFrom.
	TimeoutFrom time.Time `json:"timeout_from,omitzero"`
}

// PhaseCmd moves a record to a phase (e.g. evacuated, failed, skipped).
type PhaseCmd struct {
	Host   string `json:"host"`
	Phase  Phase  `json:"phase"`
	From   Phase  `json:"from,omitempty"` // if set, apply only when the record is in this phase
	Reason string `json:"reason,omitempty"`
}

// EventCmd appends an event.
type EventCmd struct {
	Host    string `json:"host,omitempty"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
	Warning bool   `json:"warning,omitempty"`
}

// PauseCmd sets DISABLED at run time.
type PauseCmd struct {
	Paused bool   `json:"paused"`
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
}

// MaintenanceCmd puts a host in or out of maintenance.
type MaintenanceCmd struct {
	Host   string `json:"host"`
	On     bool   `json:"on"`
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
}

// ConfirmCmd records an operator's confirmation that a host is off.
type ConfirmCmd struct {
	Host   string `json:"host"`
	By     string `json:"by"`
	Reason string `json:"reason"`
}

// ForgetCmd removes a finished record.
type ForgetCmd struct {
	Host string `json:"host"`
	By   string `json:"by"`
}

// TakeoverCmd records that IHA's startup reconciliation (R17.1) ran: the
// orphans InstanceHA left in Nova were adopted once, when IHA first took
// over. Later terms never adopt a forced-down host: IHA itself never leaves
// one enabled (force-down and the marker are one request), so such a host
// is an operator's.
type TakeoverCmd struct {
	Adopted []string `json:"adopted,omitempty"`
	// Skipped: the replicated state already had history (a cluster upgraded
	// from a version that re-ran the reconciliation every term): nothing
	// was adopted.
	Skipped bool `json:"skipped,omitempty"`
}

// EncodeCommand builds a log entry.
func EncodeCommand(t CommandType, at time.Time, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return json.Marshal(Command{Type: t, Version: commandVersion, At: at.UTC(), Ignorable: ignorable[t], Body: b})
}

// DecodeCommand parses a log entry's envelope.
func DecodeCommand(data []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("decode command: %w", err)
	}
	if c.Type == "" {
		return c, fmt.Errorf("decode command: no type")
	}
	if c.Version < 1 {
		return c, fmt.Errorf("decode command %s: bad version %d", c.Type, c.Version)
	}
	return c, nil
}

// RetryCmd sends a failed recovery back to work: to detected if the host
// was never fenced, otherwise its failed servers back to pending.
type RetryCmd struct {
	Host   string `json:"host"`
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"` // the operator's, for the event
}

// LeaderAPICmd records, at the start of a term, which node leads and where
// its status API listens, so followers can forward to it.
type LeaderAPICmd struct {
	NodeID  string `json:"node_id"`
	APIAddr string `json:"api_addr"`
}

// SegmentCmd records how a host of a failover segment is recovered: the
// segment, its recovery method, the method in use and, for auto, the
// target hosts. With ResetFailed (a fallback after failed evacuations) the
// failed servers go back to pending for the other method.
type SegmentCmd struct {
	Host           string   `json:"host"`
	Segment        string   `json:"segment"`
	RecoveryMethod string   `json:"recovery_method"`
	Method         string   `json:"method"`
	Targets        []string `json:"targets,omitempty"`
	FellBack       bool     `json:"fell_back,omitempty"`
	ResetFailed    bool     `json:"reset_failed,omitempty"`
	Reason         string   `json:"reason,omitempty"`
}

// ParkCmd puts a recovered host in maintenance instead of re-enabling it
// (RECOVERED_HOST_MAINTENANCE, Masakari's on_maintenance) and marks its
// record parked, so that `iha maintenance HOST off` lets re-enable run.
type ParkCmd struct {
	Host   string `json:"host"`
	Reason string `json:"reason"`
}
