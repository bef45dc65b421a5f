package api

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Version is the path prefix of this version of the API. Fields may be
// added to the types below; none is renamed or removed within /v1.
const Version = "v1"

// Freshness says how current a node's answer is. Every read carries it:
// a follower answers from its replica, which may lag the leader.
type Freshness struct {
	Node         string    `json:"node"`                  // the node that answered
	Role         string    `json:"role"`                  // Leader, Follower, Candidate, Shutdown
	LeaderID     string    `json:"leader_id,omitempty"`   // empty: no leader known
	AppliedIndex uint64    `json:"applied_index"`         // last Raft entry applied to this replica
	LastContact  time.Time `json:"last_contact,omitzero"` // follower: last contact with the leader
	Consistent   bool      `json:"consistent"`            // answered by the leader after confirming its leadership
}

// Voter is one member of the Raft group.
type Voter struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Leader   bool   `json:"leader"`
	Suffrage string `json:"suffrage"`         // Voter, Nonvoter
	Health   string `json:"health,omitempty"` // "ok", "unknown" or why not
	APIAddr  string `json:"api_addr"`         // the leader's; empty for the others
}

// Mesh summarises the gossip mesh as this node sees it.
type Mesh struct {
	Wired       bool           `json:"wired"` // false until the gossip layer reports here
	Members     int            `json:"members"`
	States      map[string]int `json:"states,omitempty"` // alive, suspect, dead, left → count
	HealthScore int            `json:"health_score"`     // memberlist's Lifeguard awareness (0 is best)
	// ContestedHosts are hosts more than one member speaks for (an alarm);
	// UnverifiedMembers compute members whose claim is not believed;
	// MessagesRejected mesh messages dropped for not verifying.
	ContestedHosts    int    `json:"contested_hosts,omitempty"`
	UnverifiedMembers int    `json:"unverified_members,omitempty"`
	MessagesRejected  uint64 `json:"messages_rejected,omitempty"`
}

// Security says which protections the answering controller runs with.
// Warnings names, in a few words each, every one that is off: an insecure
// mode an operator chose (each is also logged at every start).
type Security struct {
	RaftTLS       bool     `json:"raft_tls"`       // mutual TLS between controllers (RAFT_TLS_*)
	APITLS        bool     `json:"api_tls"`        // the status API serves HTTPS (API_TLS_*)
	MeshEncrypted bool     `json:"mesh_encrypted"` // the gossip mesh is encrypted (GOSSIP_KEYRING)
	MeshIdentity  bool     `json:"mesh_identity"`  // members prove which host they speak for (CLUSTER_KEY)
	Warnings      []string `json:"warnings,omitempty"`
}

// ConfigSummary is the part of the configuration an operator needs at a
// glance. It never holds a credential.
type ConfigSummary struct {
	DetectionMode      string `json:"detection_mode"`
	QuickEvacuateLevel int    `json:"quick_evacuate_level"`
	PollSeconds        int    `json:"poll_seconds"`
	DeltaSeconds       int    `json:"delta_seconds"`
	ThresholdPercent   int    `json:"threshold_percent"`
	Workers            int    `json:"workers"`
	SmartEvacuation    bool   `json:"smart_evacuation"`
	ReservedHosts      bool   `json:"reserved_hosts"`
	LeaveDisabled      bool   `json:"leave_disabled"`
	DisabledInConfig   bool   `json:"disabled_in_config"`
	ShadowInConfig     bool   `json:"shadow_in_config,omitempty"`
}

// Cluster is GET /v1/cluster.
type Cluster struct {
	Freshness   Freshness         `json:"freshness"`
	Version     string            `json:"version"`
	RaftState   string            `json:"raft_state"`
	Term        uint64            `json:"term"`
	CommitIndex uint64            `json:"commit_index"`
	Leader      string            `json:"leader,omitempty"`
	LeaderAPI   string            `json:"leader_api,omitempty"`
	Voters      []Voter           `json:"voters"`
	Mesh        Mesh              `json:"mesh"`
	Security    Security          `json:"security"`
	Paused      bool              `json:"paused"`
	PausedBy    string            `json:"paused_by,omitempty"`
	PauseReason string            `json:"pause_reason,omitempty"`
	Maintenance map[string]string `json:"maintenance,omitempty"` // host → reason
	Config      ConfigSummary     `json:"config"`
	NovaReady   *bool             `json:"nova_ready,omitempty"` // leader only: the last polls reached Nova
	LastPoll    time.Time         `json:"last_poll,omitzero"`   // leader only
	Hosts       PhaseCounts       `json:"hosts"`

	// Shadow: the leader decides and records but never acts (SHADOW, or
	// `iha shadow on`); ShadowBy and ShadowReason say who set it at run
	// time ("configuration" when config.yaml did).
	Shadow       bool   `json:"shadow,omitempty"`
	ShadowBy     string `json:"shadow_by,omitempty"`
	ShadowReason string `json:"shadow_reason,omitempty"`
}

// PhaseCounts counts recovery records: active ones and those by phase.
type PhaseCounts struct {
	Records int            `json:"records"`
	Active  int            `json:"active"`
	Failed  int            `json:"failed"`
	ByPhase map[string]int `json:"by_phase,omitempty"`
}

// HostSummary is one line of GET /v1/hosts.
type HostSummary struct {
	Host       string `json:"host"`
	MeshState  string `json:"mesh_state"`           // alive, suspect, dead, left, unknown, contested (more than one member speaks for it)
	NovaState  string `json:"nova_state,omitempty"` // up, down (as last seen)
	NovaStatus string `json:"nova_status,omitempty"`
	ForcedDown bool   `json:"forced_down,omitempty"`
	// Verdict: healthy, down (Nova says so, no verdict of ours yet),
	// recovering, failed, skipped, maintenance, unknown, or the verdict
	// table's row for a host it judged: nova-compute-broken, wait,
	// kdump-ignored (leader only; followers do not judge).
	Verdict     string    `json:"verdict"`
	Phase       string    `json:"phase,omitempty"` // recovery phase when a record exists
	Since       time.Time `json:"since,omitzero"`  // phase (or record) since
	Servers     int       `json:"servers,omitempty"`
	ServersDone int       `json:"servers_done,omitempty"`
	Maintenance string    `json:"maintenance,omitempty"` // reason, when in maintenance
	Reason      string    `json:"reason,omitempty"`

	// Shadow summarises the host's open shadow-mode incident: what IHA
	// would have done, and what the other agent did ("would fence; other
	// agent: forced its service down").
	Shadow string `json:"shadow,omitempty"`
}

// Hosts is GET /v1/hosts.
type Hosts struct {
	Freshness Freshness     `json:"freshness"`
	Hosts     []HostSummary `json:"hosts"`
}

// Evidence is what a verdict was based on.
type Evidence struct {
	Mode           string    `json:"mode"`
	Source         string    `json:"source"`
	NovaState      string    `json:"nova_state"`
	NovaUpdatedAt  time.Time `json:"nova_updated_at,omitzero"`
	Stale          bool      `json:"stale"`
	ForcedDown     bool      `json:"forced_down"`
	DisabledReason string    `json:"disabled_reason,omitempty"`
	Kdump          bool      `json:"kdump,omitempty"`
	Adopted        bool      `json:"adopted,omitempty"`
	Note           string    `json:"note,omitempty"`
	// Verdict is the verdict table's row; the mesh fields say what the
	// gossip mesh reported (state, since, accusers, confirmations; -1: the
	// death reached this controller by gossip); Partition is set when the
	// mass-failure guard held the verdict for Nova's rule; KdumpAt/From is
	// the last fence_kdump notice.
	Verdict       string    `json:"verdict,omitempty"`
	MeshState     string    `json:"mesh_state,omitempty"`
	MeshSince     time.Time `json:"mesh_since,omitzero"`
	Accusers      []string  `json:"accusers,omitempty"`
	Confirmations int       `json:"confirmations,omitempty"`
	Partition     string    `json:"partition,omitempty"`
	KdumpAt       time.Time `json:"kdump_at,omitzero"`
	KdumpFrom     string    `json:"kdump_from,omitempty"`
}

// Step is one side effect of a recovery.
type Step struct {
	Step     string    `json:"step"`
	Op       string    `json:"op"` // Raft term and index of its intent: t3.i120
	ServerID string    `json:"server_id,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"` // zero while pending
	Seconds  float64   `json:"seconds,omitempty"`
	Outcome  string    `json:"outcome"` // ok, failed, pending
	Detail   string    `json:"detail,omitempty"`
}

// Instance is one server (instance) of a failed host.
type Instance struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	From        string    `json:"from"`
	To          string    `json:"to,omitempty"`
	OrigStatus  string    `json:"orig_status,omitempty"`
	State       string    `json:"state"`
	MigrationID int       `json:"migration_id,omitempty"`
	Attempts    int       `json:"attempts"`
	Error       string    `json:"error,omitempty"`
	RequestedAt time.Time `json:"requested_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	Pending     string    `json:"pending,omitempty"` // step whose result is not committed yet
	// StartedAt is when the first evacuate was begun (Masakari's vmove
	// start_time); HAEnabled: the server opted in (segment hosts).
	StartedAt time.Time `json:"started_at,omitzero"`
	HAEnabled bool      `json:"ha_enabled,omitempty"`
}

// Fence is how a host was fenced.
type Fence struct {
	Method string    `json:"method"`
	State  string    `json:"state"`
	At     time.Time `json:"at"`
	Detail string    `json:"detail,omitempty"`
}

// Confirmation is an operator's confirm-fenced.
type Confirmation struct {
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// NovaService is a host's nova-compute service as the leader last listed
// it.
type NovaService struct {
	ID             string    `json:"id,omitempty"`
	Zone           string    `json:"zone,omitempty"`
	State          string    `json:"state"`  // up, down
	Status         string    `json:"status"` // enabled, disabled
	ForcedDown     bool      `json:"forced_down"`
	DisabledReason string    `json:"disabled_reason,omitempty"`
	UpdatedAt      time.Time `json:"updated_at,omitzero"` // the service's last heartbeat, as Nova reports it
	ListedAt       time.Time `json:"listed_at"`           // when the leader listed it
}

// MeshMember is what the gossip mesh says of a host's agent, as the
// answering node sees it now.
type MeshMember struct {
	State string    `json:"state"`          // alive, suspect, dead, left
	Since time.Time `json:"since,omitzero"` // when this node saw the state begin
	Node  string    `json:"node,omitempty"` // the agent's mesh node name
	Addr  string    `json:"addr,omitempty"` // its gossip address
	// Accusers reported it unreachable; Confirmations counted when it was
	// declared dead (-1: the verdict reached this node by gossip).
	Accusers      []string `json:"accusers,omitempty"`
	Confirmations int      `json:"confirmations,omitempty"`
}

// Host is GET /v1/hosts/{host}: everything known of one compute host. Any
// host that Nova (as the leader last listed it), the mesh, maintenance or a
// recovery record knows is answered; the recovery fields (Phase to Parked)
// are empty when the host has no recovery record (Phase "").
type Host struct {
	Freshness Freshness `json:"freshness"`
	Host      string    `json:"host"`
	// Verdict is the host's state in one word, as in HostSummary.
	Verdict string `json:"verdict,omitempty"`
	// Nova is the host's nova-compute service as the leader last listed it
	// (absent on a follower, which does not poll Nova, or when Nova does
	// not list the host).
	Nova *NovaService `json:"nova,omitempty"`
	// Mesh is the host's agent in the gossip mesh (absent: never seen, or
	// no mesh).
	Mesh *MeshMember `json:"mesh,omitempty"`
	// Judged is the leader's latest verdict on the host, with what it rested
	// on (leader only; hosts in recovery or maintenance are not judged), at
	// JudgedAt.
	Judged   *Evidence `json:"judged,omitempty"`
	JudgedAt time.Time `json:"judged_at,omitzero"`

	Phase      string    `json:"phase"`
	Active     bool      `json:"active"`
	PhaseSince time.Time `json:"phase_since,omitzero"`
	DetectedAt time.Time `json:"detected_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Zone       string    `json:"zone,omitempty"`
	ServiceID  string    `json:"service_id,omitempty"`
	Level      int       `json:"quick_evacuate_level,omitempty"`
	// Evidence is what the recovery's verdict rested on when it was opened.
	Evidence     Evidence      `json:"evidence,omitzero"`
	Fence        *Fence        `json:"fence,omitempty"`
	Confirmed    *Confirmation `json:"confirmed_fenced,omitempty"`
	Maintenance  string        `json:"maintenance,omitempty"`
	ReservedHost string        `json:"reserved_host,omitempty"`
	Pending      string        `json:"pending,omitempty"`
	Steps        []Step        `json:"steps"`
	Servers      []Instance    `json:"servers"`
	LastError    string        `json:"last_error,omitempty"`
	Reason       string        `json:"reason,omitempty"`
	Gate         Gate          `json:"gate"`
	// Failover segment of the host (empty: none, InstanceHA's behaviour),
	// its recovery_method, the method in use (auto or reserved_host), the
	// auto targets, whether it fell back, and whether the recovered host
	// was parked in maintenance.
	Segment        string   `json:"segment,omitempty"`
	RecoveryMethod string   `json:"recovery_method,omitempty"`
	Method         string   `json:"method,omitempty"`
	Targets        []string `json:"targets,omitempty"`
	FellBack       bool     `json:"fell_back,omitempty"`
	Parked         bool     `json:"parked,omitempty"`
	// Incident is the host's latest shadow-mode incident (absent: none).
	Incident *Incident `json:"incident,omitempty"`
	// Watchdog is the host's watchdog lease (absent: its agent never asked
	// for one).
	Watchdog *Watchdog `json:"watchdog,omitempty"`
}

// Watchdog is a host's watchdog lease as the replicated state holds it
// (docs/operations.md, "Watchdog self-fencing").
type Watchdog struct {
	// Armed: the agent's watchdog is open and fed only under the lease;
	// WSeconds is its timeout W.
	Armed    bool    `json:"armed"`
	WSeconds float64 `json:"w_seconds,omitempty"`
	// LeaseSeconds is L; LastGrant the last grant committed and
	// LeaseExpires LastGrant + L (the agent stops feeding by then unless
	// its peers find the control plane down).
	LeaseSeconds float64   `json:"lease_seconds"`
	LastGrant    time.Time `json:"last_grant,omitzero"`
	LeaseExpires time.Time `json:"lease_expires,omitzero"`
	// Holders is the count of lease holders told with the last grant.
	Holders int `json:"holders,omitempty"`
	// Released is when a clean stop of the agent disarmed it.
	Released time.Time `json:"released,omitzero"`
	// FenceDeadline is set once the BMC fence failed and the leader waits
	// for the watchdog (G + L + W + margin), with the BMC's error.
	WaitSince     time.Time `json:"wait_since,omitzero"`
	FenceDeadline time.Time `json:"fence_deadline,omitzero"`
	BMCError      string    `json:"bmc_error,omitempty"`
}

// Event is one line of the replicated event log.
type Event struct {
	Seq     uint64    `json:"seq"`
	At      time.Time `json:"at"`
	Host    string    `json:"host,omitempty"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
	Warning bool      `json:"warning,omitempty"`
}

// Events is GET /v1/events.
type Events struct {
	Freshness Freshness `json:"freshness"`
	Events    []Event   `json:"events"`
	// Next is the `since` to ask with next time (the last seq returned, or
	// the request's since when nothing is new).
	Next uint64 `json:"next"`
}

// EventQuery selects events: Seq > Since, of Host if set, of one of Kinds
// if set, at or after After if set, the Limit newest of those (0: all that
// are kept). A Backend honours Since, Host and Limit; the Server applies
// Kinds and After (Match) before the limit.
type EventQuery struct {
	Since uint64
	Host  string
	Limit int
	Kinds []string
	After time.Time
}

// Match reports whether e passes the query's Host, Kinds and After (Since
// and Limit are not per-event).
func (q EventQuery) Match(e Event) bool {
	if q.Host != "" && e.Host != q.Host {
		return false
	}
	if !q.After.IsZero() && e.At.Before(q.After) {
		return false
	}
	if len(q.Kinds) == 0 {
		return true
	}
	for _, k := range q.Kinds {
		if strings.EqualFold(k, e.Kind) {
			return true
		}
	}
	return false
}

// VersionInfo is GET /v1/version: the build of the node that answered.
type VersionInfo struct {
	Node      string `json:"node"`
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform,omitempty"` // GOOS/GOARCH
	API       string `json:"api"`                // the API version path: v1
}

// Gate is GET /v1/gate/{host}?nonce=N: may the compute's nova-compute
// start? With a nonce and the cluster key, Nonce and MAC sign the answer
// for that request with the host's key (identity.GateMAC), which the
// agent checks when it did not ask over verified TLS.
type Gate struct {
	Host   string `json:"host"`
	Allow  bool   `json:"allow"`
	Reason string `json:"reason"`
	Nonce  string `json:"nonce,omitempty"`
	MAC    string `json:"mac,omitempty"`
}

// MutationKind names an operator command.
type MutationKind string

// Operator commands.
const (
	MutPause          MutationKind = "pause"
	MutResume         MutationKind = "resume"
	MutConfirmFenced  MutationKind = "confirm-fenced"
	MutMaintenanceOn  MutationKind = "maintenance-on"
	MutMaintenanceOff MutationKind = "maintenance-off"
	MutRetry          MutationKind = "retry"
	// MutRemoveVoter takes a controller out of the Raft group (DELETE
	// /v1/cluster/voters/{id}); Mutation.Voter names it.
	MutRemoveVoter MutationKind = "remove-voter"
)

// Mutation is an operator command, validated by the server before the
// Backend sees it. By names who asked (recorded in the audit event).
type Mutation struct {
	Kind   MutationKind `json:"kind"`
	Host   string       `json:"host,omitempty"`
	Reason string       `json:"reason,omitempty"`
	By     string       `json:"by"`
	// Voter is the Raft server id (NODE_NAME) of MutRemoveVoter.
	Voter string `json:"voter,omitempty"`
}

// MutationRequest is the body of a mutation (all fields optional except
// where the endpoint says).
type MutationRequest struct {
	Reason string `json:"reason,omitempty"`
	On     *bool  `json:"on,omitempty"` // maintenance
}

// MutationResult is the answer to a mutation.
type MutationResult struct {
	OK        bool      `json:"ok"`
	Kind      string    `json:"kind"`
	Host      string    `json:"host,omitempty"`
	Voter     string    `json:"voter,omitempty"` // remove-voter
	By        string    `json:"by"`
	Freshness Freshness `json:"freshness"`
	// EventSeq is the audit event the command wrote (0 if none could be
	// found); `iha events --since` it to follow what happens next.
	EventSeq uint64 `json:"event_seq,omitempty"`
}

// ErrorBody is every error answer: a message, and the parameter at fault
// for a 400.
type ErrorBody struct {
	Error     string `json:"error"`
	Parameter string `json:"parameter,omitempty"`
	Leader    string `json:"leader,omitempty"` // API address of the leader, when known
}

// Errors a Backend returns; the server maps them to status codes.
var (
	// ErrNotFound: no such host record (404).
	ErrNotFound = errors.New("not found")
	// ErrNoLeader: no leader is known or reachable (503).
	ErrNoLeader = errors.New("no Raft leader")
	// ErrNotLeader: a leader-only call reached a follower (the server
	// forwards instead; 503 if it cannot).
	ErrNotLeader = errors.New("not the Raft leader")
	// ErrConflict: the command does not fit the state, e.g. retry of a host
	// that has not failed, or removing the last voter (409).
	ErrConflict = errors.New("conflict")
)

// StatusError is an error answer received by the Client.
type StatusError struct {
	Code      int
	Message   string
	Parameter string
	Addr      string
}

func (e *StatusError) Error() string {
	if e.Parameter != "" {
		return fmt.Sprintf("%s: %d: %s (parameter %s)", e.Addr, e.Code, e.Message, e.Parameter)
	}
	return fmt.Sprintf("%s: %d: %s", e.Addr, e.Code, e.Message)
}
