package leader

import (
	"fmt"
	"time"
)

// Phase is where a host's recovery stands. See DESIGN.md for the diagram.
type Phase string

// Phases of a host recovery record.
const (
	PhaseDetected   Phase = "detected"   // judged failed; gates passed; nothing done yet (or a fence attempt failed)
	PhaseFencing    Phase = "fencing"    // power-off intent committed
	PhaseFenced     Phase = "fenced"     // power off confirmed (or kdump, or level 1: none)
	PhaseDisabled   Phase = "disabled"   // service forced down and disabled with the marker
	PhaseEvacuating Phase = "evacuating" // servers planned; evacuations in progress
	PhaseEvacuated  Phase = "evacuated"  // every server handled; power on and complete marker follow
	PhaseReenabling Phase = "reenabling" // waiting for the host's nova-compute to return, then re-enable
	PhaseDone       Phase = "done"       // finished (re-enabled, or left disabled by LEAVE_DISABLED)
	PhaseFailed     Phase = "failed"     // needs an operator: see Reason
	PhaseSkipped    Phase = "skipped"    // judged failed but not recovered: see Reason
)

// Active reports whether a record in this phase is still being worked on by
// the leader (a host with an active record is never a new failure).
func (p Phase) Active() bool {
	switch p {
	case PhaseDetected, PhaseFencing, PhaseFenced, PhaseDisabled, PhaseEvacuating, PhaseEvacuated, PhaseReenabling:
		return true
	}
	return false
}

// OpID identifies a side effect: the Raft term and index of its intent
// entry. It is unique across the cluster's history.
type OpID struct {
	Term  uint64 `json:"term"`
	Index uint64 `json:"index"`
}

func (o OpID) String() string { return fmt.Sprintf("t%d.i%d", o.Term, o.Index) }

// IsZero reports whether o is unset.
func (o OpID) IsZero() bool { return o.Term == 0 && o.Index == 0 }

// Step kinds: the side effects a recovery performs.
const (
	StepFence      = "fence"       // power off through the BMC
	StepDisable    = "disable"     // force down + disable with the marker
	StepReserve    = "reserve"     // enable a reserved host
	StepEvacuate   = "evacuate"    // one server's evacuate call
	StepPowerOn    = "power-on"    // power the fenced host back on
	StepComplete   = "complete"    // write the "evacuation complete" marker
	StepMarkFailed = "mark-failed" // write the "evacuation FAILED" marker
	StepUnforce    = "unforce"     // forced_down false
	StepEnable     = "enable"      // status enabled
)

// Intent is a side effect whose intent is committed but whose result is not.
type Intent struct {
	OpID     OpID      `json:"op"`
	Step     string    `json:"step"`
	ServerID string    `json:"server_id,omitempty"`
	Target   string    `json:"target,omitempty"`
	At       time.Time `json:"at"`
}

// StepRecord is one finished (or abandoned) step, for the operator's view.
type StepRecord struct {
	Step     string    `json:"step"`
	OpID     OpID      `json:"op"`
	ServerID string    `json:"server_id,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	OK       bool      `json:"ok"`
	Detail   string    `json:"detail,omitempty"`
}

// Evidence is what the verdict was based on.
type Evidence struct {
	Mode           string    `json:"mode"`                      // detection mode in force
	NovaState      string    `json:"nova_state"`                // up/down as Nova said
	NovaUpdatedAt  time.Time `json:"nova_updated_at,omitempty"` // last updated_at seen
	Stale          bool      `json:"stale"`                     // updated_at older than DELTA
	ForcedDown     bool      `json:"forced_down"`
	DisabledReason string    `json:"disabled_reason,omitempty"`
	Source         string    `json:"source"` // "nova", "gossip+nova", "kdump", "marker" (adopted from a Nova marker), "orphan"
	Note           string    `json:"note,omitempty"`
	// Verdict is the verdict table's row (failed, instanceha-rule, kdump).
	Verdict string `json:"verdict,omitempty"`
	// What the gossip mesh said: the agent's state and since when (this
	// leader's clock), who reported it, and the suspicion confirmations
	// (-1: the dead verdict reached the leader by gossip).
	MeshState     string    `json:"mesh_state,omitempty"`
	MeshSince     time.Time `json:"mesh_since,omitempty"`
	Accusers      []string  `json:"accusers,omitempty"`
	Confirmations int       `json:"confirmations,omitempty"`
	// Partition is set when the mass-failure guard made this host wait for
	// Nova's DELTA rule: "3 of 6 computes lost by the mesh within the window".
	Partition string `json:"partition,omitempty"`
	// The last fence_kdump notice: when this leader received it and from
	// which address.
	KdumpAt   time.Time `json:"kdump_at,omitempty"`
	KdumpFrom string    `json:"kdump_from,omitempty"`
	// NovaClockSkew is how much later than its face value the verdict read
	// Nova's times (novaclock.go; 0 within the margin).
	NovaClockSkew time.Duration `json:"nova_clock_skew,omitempty"`
}

// FenceResult records how the host was fenced.
type FenceResult struct {
	Method string    `json:"method"` // ipmi, redfish, bmh, noop, kdump, operator, watchdog, none (level 1)
	State  string    `json:"state"`  // power state confirmed: off, unknown, reset (watchdog)
	At     time.Time `json:"at"`
	Detail string    `json:"detail,omitempty"`
}

// ServerState is a server's evacuation progress.
type ServerState string

// Server states.
const (
	ServerPending   ServerState = "pending"   // to be evacuated
	ServerRequested ServerState = "requested" // evacuate accepted by Nova
	ServerDone      ServerState = "done"      // rebuilt elsewhere (migration done/completed), or accepted in traditional mode
	ServerFailed    ServerState = "failed"    // gave up: see Error
	ServerSkipped   ServerState = "skipped"   // not evacuable: see Error
)

// ServerRecord is one server of a failed host.
type ServerRecord struct {
	ID          string      `json:"id"`
	Name        string      `json:"name"`
	OrigStatus  string      `json:"orig_status"`
	From        string      `json:"from"`
	To          string      `json:"to,omitempty"`
	State       ServerState `json:"state"`
	MigrationID int         `json:"migration_id,omitempty"`
	Attempts    int         `json:"attempts"`
	Error       string      `json:"error,omitempty"`
	Priority    int         `json:"priority,omitempty"`
	Group       string      `json:"group,omitempty"`
	RequestedAt time.Time   `json:"requested_at,omitempty"`
	FinishedAt  time.Time   `json:"finished_at,omitempty"`
	Pending     *Intent     `json:"pending,omitempty"`
	// StartedAt is when the first evacuate of this server was begun
	// (Masakari's vmove start_time); RequestedAt is when one was accepted.
	StartedAt time.Time `json:"started_at,omitempty"`
	// HAEnabled is set when the server opted in with the
	// HA_ENABLED_INSTANCE_KEY metadata (segment hosts only).
	HAEnabled bool `json:"ha_enabled,omitempty"`
	// TimeoutFrom, when set, is the created_at (Nova's clock) of an
	// evacuation found in progress when a recovery was resumed: its
	// EVACUATION_TIMEOUT counts from there (R10.5), not from this term, so
	// neither a restart nor a failover extends it.
	TimeoutFrom time.Time `json:"timeout_from,omitzero"`
}

// HostRecord is the replicated recovery record of one compute host.
type HostRecord struct {
	Host         string          `json:"host"`
	ServiceID    string          `json:"service_id"`
	Zone         string          `json:"zone,omitempty"`
	Phase        Phase           `json:"phase"`
	PhaseSince   time.Time       `json:"phase_since"`
	DetectedAt   time.Time       `json:"detected_at"`
	Evidence     Evidence        `json:"evidence"`
	Level        int             `json:"quick_evacuate_level"`
	Kdump        bool            `json:"kdump,omitempty"`
	Adopted      bool            `json:"adopted,omitempty"` // created from a Nova marker, not our own verdict
	Fence        *FenceResult    `json:"fence,omitempty"`
	ReservedHost string          `json:"reserved_host,omitempty"`
	Servers      []*ServerRecord `json:"servers,omitempty"`
	Planned      bool            `json:"planned,omitempty"`
	PoweredOn    bool            `json:"powered_on,omitempty"`
	Completed    bool            `json:"completed,omitempty"` // complete marker written
	Unforced     bool            `json:"unforced,omitempty"`
	FenceTries   int             `json:"fence_tries,omitempty"`
	EvacRounds   int             `json:"evac_rounds,omitempty"`
	Pending      *Intent         `json:"pending,omitempty"`
	Steps        []StepRecord    `json:"steps,omitempty"`
	LastError    string          `json:"last_error,omitempty"`
	Reason       string          `json:"reason,omitempty"`
	FinishedAt   time.Time       `json:"finished_at,omitempty"`
	// Failover segment (Masakari parity): the host's segment, its
	// configured recovery method, the method in use (auto or
	// reserved_host), the auto targets (hosts of the segment that were up
	// and enabled when planned), whether the method fell back to the other
	// one, and whether the recovered host was parked in maintenance.
	Segment        string   `json:"segment,omitempty"`
	RecoveryMethod string   `json:"recovery_method,omitempty"`
	Method         string   `json:"method,omitempty"`
	Targets        []string `json:"targets,omitempty"`
	FellBack       bool     `json:"fell_back,omitempty"`
	Parked         bool     `json:"parked,omitempty"`
	// Watchdog is set when the BMC fence failed while the host's agent was
	// armed: the leader waits for the host's watchdog (lease_fsm.go).
	Watchdog *WatchdogWait `json:"watchdog,omitempty"`
}

// Server returns the record of server id, or nil.
func (h *HostRecord) Server(id string) *ServerRecord {
	for _, s := range h.Servers {
		if s.ID == id {
			return s
		}
	}
	return nil
}

// clone returns a deep copy, so readers never share memory with the FSM.
func (h *HostRecord) clone() *HostRecord {
	c := *h
	if h.Fence != nil {
		f := *h.Fence
		c.Fence = &f
	}
	if h.Pending != nil {
		p := *h.Pending
		c.Pending = &p
	}
	if h.Watchdog != nil {
		w := *h.Watchdog
		c.Watchdog = &w
	}
	c.Servers = make([]*ServerRecord, len(h.Servers))
	for i, s := range h.Servers {
		sc := *s
		if s.Pending != nil {
			p := *s.Pending
			sc.Pending = &p
		}
		c.Servers[i] = &sc
	}
	c.Steps = append([]StepRecord(nil), h.Steps...)
	c.Targets = append([]string(nil), h.Targets...)
	return &c
}

// Event is one line of the replicated event log.
type Event struct {
	Seq     uint64    `json:"seq"`
	At      time.Time `json:"at"`
	Host    string    `json:"host,omitempty"`
	Kind    string    `json:"kind"` // InstanceHA's event reasons where they exist: HostDown, FencingSucceeded, …
	Message string    `json:"message"`
	Warning bool      `json:"warning,omitempty"`
}

// Settings are the runtime settings operators change through the leader.
type Settings struct {
	Paused      bool                 `json:"paused"` // DISABLED at run time
	PausedBy    string               `json:"paused_by,omitempty"`
	PauseReason string               `json:"pause_reason,omitempty"`
	Maintenance map[string]string    `json:"maintenance,omitempty"`      // host → reason
	Confirmed   map[string]Confirmed `json:"confirmed_fenced,omitempty"` // host → operator override
	// TakenOver is when the startup reconciliation adopted InstanceHA's
	// orphans (once per cluster; TakeoverCmd).
	TakenOver time.Time `json:"taken_over,omitzero"`
	// ShadowSet: an operator switched shadow mode at run time (`iha shadow
	// on|off`); Shadow then wins over SHADOW in config.yaml (ShadowMode).
	ShadowSet    bool   `json:"shadow_set,omitempty"`
	Shadow       bool   `json:"shadow,omitempty"`
	ShadowBy     string `json:"shadow_by,omitempty"`
	ShadowReason string `json:"shadow_reason,omitempty"`
}

// Confirmed is an operator's statement that a host is powered off.
type Confirmed struct {
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// GateAllows is the answer to a compute's nova-compute gate: nova-compute
// may start unless the host's recovery is still fencing, disabling or
// evacuating (a nova-compute that starts mid-evacuation would destroy
// guests that are half rebuilt elsewhere). The reason is for the agent to
// print.
func GateAllows(rec *HostRecord) (bool, string) {
	if rec == nil {
		return true, "no recovery recorded for this host"
	}
	switch rec.Phase {
	case PhaseDetected, PhaseFencing, PhaseFenced, PhaseDisabled, PhaseEvacuating:
		return false, fmt.Sprintf("recovery in phase %s since %s", rec.Phase, rec.PhaseSince.UTC().Format(time.RFC3339))
	case PhaseEvacuated:
		return false, "evacuation finished; recovery is writing its last markers"
	case PhaseFailed:
		return false, "recovery failed and needs an operator: " + rec.Reason
	}
	return true, "recovery " + string(rec.Phase)
}
