package api

import (
	"context"
	"time"
)

// Shadow mode's part of the API: the incidents (each host failure with
// IHA's would-be decisions beside what another agent did) and the switch.

// Operator commands of shadow mode (POST /v1/shadow {"on": bool}).
const (
	MutShadowOn  MutationKind = "shadow-on"
	MutShadowOff MutationKind = "shadow-off"
)

// ShadowServer is one server of a would-be evacuation plan.
type ShadowServer struct {
	ID       string `json:"id"`
	Name     string `json:"name,omitempty"`
	Status   string `json:"status,omitempty"`
	Evacuate bool   `json:"evacuate"`
	Why      string `json:"why,omitempty"`
	Target   string `json:"target,omitempty"` // empty: Nova's scheduler chooses
}

// ShadowDecision is a decision IHA would have taken, at the time it would
// have acted: fence, skip, resume or reenable.
type ShadowDecision struct {
	At       time.Time      `json:"at"`
	Kind     string         `json:"kind"`
	Verdict  string         `json:"verdict,omitempty"`
	Detail   string         `json:"detail,omitempty"`
	Evidence *Evidence      `json:"evidence,omitempty"`
	Level    int            `json:"quick_evacuate_level,omitempty"`
	Kdump    bool           `json:"kdump,omitempty"`
	Reserved string         `json:"reserved_host,omitempty"`
	Segment  string         `json:"segment,omitempty"`
	Method   string         `json:"method,omitempty"`
	Targets  []string       `json:"targets,omitempty"`
	Servers  []ShadowServer `json:"servers,omitempty"`
}

// Observed is an action of another agent on the host, as Nova shows it.
// At is when it acted as far as Nova tells (a marker's time, a migration's
// created_at), Seen when the leader saw it.
type Observed struct {
	At          time.Time `json:"at"`
	Seen        time.Time `json:"seen"`
	Kind        string    `json:"kind"`
	Detail      string    `json:"detail,omitempty"`
	ServerID    string    `json:"server_id,omitempty"`
	To          string    `json:"to,omitempty"`
	MigrationID int       `json:"migration_id,omitempty"`
	Status      string    `json:"status,omitempty"`
	// Before is IHA's verdict on the host just before the action.
	Before string `json:"before,omitempty"`
}

// Disagreement is one way the two sides of an incident differ.
type Disagreement struct {
	Kind    string `json:"kind"` // only-iha, only-actor, servers, targets
	Message string `json:"message"`
	IHA     string `json:"iha,omitempty"`   // IHA's evidence
	Actor   string `json:"actor,omitempty"` // the other agent's
}

// Incident is one host failure seen in shadow mode, both sides and their
// disagreements.
type Incident struct {
	ID          uint64    `json:"id"`
	Host        string    `json:"host"`
	Opened      time.Time `json:"opened"`
	Closed      time.Time `json:"closed,omitzero"`
	CloseReason string    `json:"close_reason,omitempty"`
	// IHAAt is when IHA would have acted (zero: it would not have), and
	// IHAWhat what; ActorAt and ActorWhat the other agent's first action
	// seen in Nova. LeadSeconds is ActorAt − IHAAt when both acted
	// (positive: IHA would have been first).
	IHAAt         time.Time        `json:"iha_at,omitzero"`
	IHAWhat       string           `json:"iha_what"`
	ActorAt       time.Time        `json:"actor_at,omitzero"`
	ActorWhat     string           `json:"actor_what"`
	LeadSeconds   *float64         `json:"lead_seconds,omitempty"`
	IHAServers    []string         `json:"iha_servers"`
	ActorServers  []string         `json:"actor_servers"`
	Agree         bool             `json:"agree"`
	Disagreements []Disagreement   `json:"disagreements"`
	IHA           []ShadowDecision `json:"iha"`
	Actor         []Observed       `json:"actor"`
}

// Incidents is GET /v1/incidents.
type Incidents struct {
	Freshness Freshness `json:"freshness"`
	// Shadow says whether the leader shadows now.
	Shadow    bool       `json:"shadow"`
	Incidents []Incident `json:"incidents"`
}

// IncidentQuery selects incidents: of Host if set, the one with ID if set,
// the Limit newest (0: all that are kept), OpenOnly the open ones.
type IncidentQuery struct {
	Host     string
	ID       uint64
	Limit    int
	OpenOnly bool
}

// IncidentBackend is a Backend that keeps shadow mode's incidents. The
// server answers /v1/incidents only when its Backend is one.
type IncidentBackend interface {
	Incidents(ctx context.Context, q IncidentQuery) ([]Incident, bool, error)
}
