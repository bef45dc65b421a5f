package leader

// The replicated part of shadow mode: the runtime switch (`iha shadow
// on|off`) and the incidents, each host's would-be decisions of IHA beside
// what another agent was seen doing to the same host in Nova. Like the
// rest of the FSM, it is a pure function of the log: no clock, no
// configuration; times travel inside the commands.

import (
	"fmt"
	"strings"
	"time"
)

// Command types of shadow mode. The decisions, observations and closes
// are ignorable: an older replica may skip them during a rolling upgrade
// (they steer no recovery); the switch is not (a replica that missed it
// could act as leader where the operator asked it to watch).
const (
	CmdShadow        CommandType = "settings.shadow" // ShadowCmd
	CmdShadowDecide  CommandType = "shadow.decide"   // ShadowDecideCmd
	CmdShadowObserve CommandType = "shadow.observe"  // ShadowObserveCmd
	CmdShadowClose   CommandType = "shadow.close"    // ShadowCloseCmd
)

// Kinds of IHA's would-be decisions.
const (
	ShadowFence    = "fence"    // would fence the host and recover it
	ShadowSkip     = "skip"     // would not recover it: Detail says why
	ShadowResume   = "resume"   // would resume a recovery marked in Nova (the other agent's)
	ShadowReenable = "reenable" // would re-enable the recovered host
)

// Kinds of what the other agent was seen doing, in Nova.
const (
	ObservedForceDown  = "force-down"    // forced_down set
	ObservedMarker     = "marker"        // InstanceHA's in-progress marker written
	ObservedEvacuation = "evacuation"    // an evacuation migration of a server from the host
	ObservedComplete   = "complete"      // the complete marker written
	ObservedFailed     = "failed"        // the FAILED marker written
	ObservedDisable    = "disable"       // disabled with a reason that is not InstanceHA's
	ObservedUnforce    = "unforce"       // forced_down unset
	ObservedEnable     = "enable"        // the service enabled again
	ObservedReserved   = "reserved-host" // a reserved host enabled while the host was recovered
)

// maxIncidents bounds the incidents kept (the oldest closed ones go first).
const maxIncidents = 500

// maxIncidentItems bounds each side of one incident.
const maxIncidentItems = 400

// ShadowServer is one server of a would-be evacuation plan.
type ShadowServer struct {
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Status string `json:"status,omitempty"`
	// Evacuate: the server would be evacuated (else Why says why not).
	Evacuate bool   `json:"evacuate"`
	Why      string `json:"why,omitempty"`
	// Target is the host it would be sent to; empty: Nova's scheduler
	// chooses (InstanceHA's default).
	Target string `json:"target,omitempty"`
}

// ShadowDecision is one decision IHA would have taken, at the time it
// would have acted.
type ShadowDecision struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Verdict string    `json:"verdict,omitempty"`
	// Detail is the sentence the decision rests on (the verdict's evidence,
	// the gate that stopped it).
	Detail   string    `json:"detail,omitempty"`
	Evidence *Evidence `json:"evidence,omitempty"`
	// How the host would be fenced (QUICK_EVACUATE_LEVEL; kdump: not
	// powered off).
	Level int  `json:"level,omitempty"`
	Kdump bool `json:"kdump,omitempty"`
	// Reserved is the reserved host IHA would enable; Segment, Method and
	// Targets the failover segment's plan.
	Reserved string         `json:"reserved,omitempty"`
	Segment  string         `json:"segment,omitempty"`
	Method   string         `json:"method,omitempty"`
	Targets  []string       `json:"targets,omitempty"`
	Servers  []ShadowServer `json:"servers,omitempty"`
}

// Observed is one action of another agent on the host, as Nova shows it.
type Observed struct {
	// At is when the other agent acted as far as Nova tells: the time in
	// its marker, a migration's created_at, the service's updated_at after
	// an admin update; Seen is when this leader saw it.
	At   time.Time `json:"at"`
	Seen time.Time `json:"seen"`
	Kind string    `json:"kind"`
	// Detail: the disabled_reason, or the migration and its status.
	Detail      string `json:"detail,omitempty"`
	ServerID    string `json:"server_id,omitempty"`
	To          string `json:"to,omitempty"`
	MigrationID int    `json:"migration_id,omitempty"`
	Status      string `json:"status,omitempty"`
	// Before is IHA's last verdict on the host before the action, with its
	// evidence (for an action IHA would not have taken).
	Before string `json:"before,omitempty"`
}

// Incident is one host's failure as seen from shadow mode: IHA's
// would-be decisions and the other agent's actions, from the first of
// either until the host is back in service.
type Incident struct {
	ID          uint64           `json:"id"`
	Host        string           `json:"host"`
	Opened      time.Time        `json:"opened"`
	Closed      time.Time        `json:"closed,omitzero"`
	CloseReason string           `json:"close_reason,omitempty"`
	IHA         []ShadowDecision `json:"iha"`
	Actor       []Observed       `json:"actor"`
}

// Open reports whether the incident is still open.
func (i *Incident) Open() bool { return i.Closed.IsZero() }

// Decision returns the incident's first decision of kind, or nil.
func (i *Incident) Decision(kind string) *ShadowDecision {
	for k := range i.IHA {
		if i.IHA[k].Kind == kind {
			return &i.IHA[k]
		}
	}
	return nil
}

// Seen reports whether the incident holds an observation equal to o (the
// same action: kind, detail, server, migration and status).
func (i *Incident) Seen(o Observed) bool {
	for _, x := range i.Actor {
		if x.Kind == o.Kind && x.Detail == o.Detail && x.ServerID == o.ServerID && x.MigrationID == o.MigrationID && x.Status == o.Status {
			return true
		}
	}
	return false
}

func (i *Incident) clone() *Incident {
	c := *i
	c.IHA = make([]ShadowDecision, len(i.IHA))
	for k, d := range i.IHA {
		d.Servers = append([]ShadowServer(nil), d.Servers...)
		d.Targets = append([]string(nil), d.Targets...)
		if d.Evidence != nil {
			e := *d.Evidence
			e.Accusers = append([]string(nil), e.Accusers...)
			d.Evidence = &e
		}
		c.IHA[k] = d
	}
	c.Actor = append([]Observed(nil), i.Actor...)
	return &c
}

// ShadowCmd switches shadow mode at run time (`iha shadow on|off`).
type ShadowCmd struct {
	On     bool   `json:"on"`
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
}

// ShadowDecideCmd records a would-be decision on Host.
type ShadowDecideCmd struct {
	Host     string         `json:"host"`
	Decision ShadowDecision `json:"decision"`
}

// ShadowObserveCmd records an action of the other agent on Host.
type ShadowObserveCmd struct {
	Host     string   `json:"host"`
	Observed Observed `json:"observed"`
}

// ShadowCloseCmd closes Host's open incident.
type ShadowCloseCmd struct {
	Host   string `json:"host"`
	Reason string `json:"reason"`
}

// ShadowMode is whether the leader shadows: the runtime setting when an
// operator set one, else config (SHADOW in config.yaml).
func (s Settings) ShadowMode(config bool) bool {
	if s.ShadowSet {
		return s.Shadow
	}
	return config
}

func (s *fsmState) shadowSwitch(c Command, b ShadowCmd) {
	s.Settings.ShadowSet, s.Settings.Shadow, s.Settings.ShadowBy, s.Settings.ShadowReason = true, b.On, b.By, b.Reason
	active := 0
	for _, h := range s.Hosts {
		if h.Phase.Active() {
			active++
		}
	}
	if b.On {
		msg := fmt.Sprintf("shadow mode on by %s: new failures are judged, admitted and planned, and recorded as shadow decisions; nothing is fenced or written to Nova", b.By)
		if active > 0 {
			msg += fmt.Sprintf("; the %d recoveries in progress go on to their end", active)
		}
		if b.Reason != "" {
			msg += ": " + b.Reason
		}
		s.event(c, "", "ShadowOn", msg, true)
		return
	}
	msg := "shadow mode off by " + b.By + ": IHA acts on the next failure"
	if b.Reason != "" {
		msg += ": " + b.Reason
	}
	s.event(c, "", "ShadowOff", msg, true)
}

// incident returns host's open incident, opening one at c.At if open.
func (s *fsmState) incident(c Command, host string, open bool) *Incident {
	for k := len(s.Incidents) - 1; k >= 0; k-- {
		if i := s.Incidents[k]; i.Host == host && i.Open() {
			return i
		}
	}
	if !open {
		return nil
	}
	s.IncidentSeq++
	i := &Incident{ID: s.IncidentSeq, Host: host, Opened: c.At, IHA: []ShadowDecision{}, Actor: []Observed{}}
	s.Incidents = append(s.Incidents, i)
	if len(s.Incidents) > maxIncidents {
		// Drop the oldest closed incident (or the oldest one).
		drop := 0
		for k, x := range s.Incidents {
			if !x.Open() {
				drop = k
				break
			}
		}
		s.Incidents = append(s.Incidents[:drop:drop], s.Incidents[drop+1:]...)
	}
	return i
}

// shadowDecide records a decision; a second fence, resume or re-enable in
// one incident, or a skip repeating the last one, is not recorded (false).
func (s *fsmState) shadowDecide(c Command, b ShadowDecideCmd) (any, error) {
	if b.Host == "" {
		return nil, fmt.Errorf("%w: shadow decision without host", errMalformed)
	}
	switch b.Decision.Kind {
	case ShadowFence, ShadowSkip, ShadowResume, ShadowReenable:
	default:
		// A kind of a newer build: answered, not applied (the command is
		// well formed; an older replica must not stop on it).
		return nil, fmt.Errorf("shadow decision of unknown kind %q", b.Decision.Kind)
	}
	d := b.Decision
	i := s.incident(c, b.Host, false)
	if i != nil {
		switch d.Kind {
		case ShadowFence, ShadowResume, ShadowReenable:
			if i.Decision(d.Kind) != nil {
				return false, nil
			}
		case ShadowSkip:
			for k := len(i.IHA) - 1; k >= 0; k-- {
				if i.IHA[k].Kind == ShadowSkip {
					if i.IHA[k].Detail == d.Detail {
						return false, nil
					}
					break
				}
			}
		}
	}
	if i == nil {
		i = s.incident(c, b.Host, true)
	}
	if len(i.IHA) >= maxIncidentItems {
		return false, nil
	}
	i.IHA = append(i.IHA, d)
	h := b.Host
	switch d.Kind {
	case ShadowFence:
		how := "power it off, force its service down"
		switch {
		case d.Kdump:
			how = "leave it to its crash dump (kdump: no power-off), force its service down"
		case d.Level == 1:
			how = "force its service down without a power-off (QUICK_EVACUATE_LEVEL 1)"
		}
		s.event(c, h, "ShadowWouldFence", fmt.Sprintf("shadow: would %s and evacuate it (verdict %s): %s", how, d.Verdict, d.Detail), true)
		if d.Reserved != "" {
			s.event(c, h, "ShadowWouldEnableReserved", "shadow: would enable reserved host "+d.Reserved, false)
		}
		if d.Segment != "" {
			s.event(c, h, "ShadowWouldUseSegment", fmt.Sprintf("shadow: failover segment %s, method %s, targets %s", d.Segment, d.Method, strings.Join(d.Targets, ", ")), false)
		}
		for _, sv := range d.Servers {
			name := sv.Name
			if name == "" {
				name = sv.ID
			}
			if sv.Evacuate {
				to := "a host Nova's scheduler chooses"
				if sv.Target != "" {
					to = sv.Target
				}
				s.event(c, h, "ShadowWouldEvacuate", fmt.Sprintf("shadow: would evacuate %s (%s) to %s", name, sv.ID, to), false)
			} else {
				s.event(c, h, "ShadowWouldLeave", fmt.Sprintf("shadow: would leave %s (%s): %s", name, sv.ID, sv.Why), false)
			}
		}
	case ShadowSkip:
		s.event(c, h, "ShadowWouldSkip", "shadow: would not recover the failed host: "+d.Detail, true)
	case ShadowResume:
		s.event(c, h, "ShadowWouldResume", "shadow: would resume the recovery marked in Nova: "+d.Detail, true)
	case ShadowReenable:
		s.event(c, h, "ShadowWouldReenable", "shadow: would re-enable the host: "+d.Detail, false)
	}
	return true, nil
}

// observedKinds maps an observation to its event kind.
var observedKinds = map[string]string{
	ObservedForceDown: "ObservedForceDown", ObservedMarker: "ObservedMarker", ObservedEvacuation: "ObservedEvacuation",
	ObservedComplete: "ObservedComplete", ObservedFailed: "ObservedFailed", ObservedDisable: "ObservedDisable",
	ObservedUnforce: "ObservedUnforce", ObservedEnable: "ObservedEnable", ObservedReserved: "ObservedReservedHost",
}

// shadowObserve records an action of the other agent (false: already
// recorded in the open incident).
func (s *fsmState) shadowObserve(c Command, b ShadowObserveCmd) (any, error) {
	if b.Host == "" {
		return nil, fmt.Errorf("%w: observation without host", errMalformed)
	}
	kind, ok := observedKinds[b.Observed.Kind]
	if !ok {
		return nil, fmt.Errorf("observation of unknown kind %q", b.Observed.Kind)
	}
	i := s.incident(c, b.Host, false)
	if i != nil && i.Seen(b.Observed) {
		return false, nil
	}
	if i == nil {
		i = s.incident(c, b.Host, true)
	}
	if len(i.Actor) >= maxIncidentItems {
		return false, nil
	}
	o := b.Observed
	i.Actor = append(i.Actor, o)
	msg := "observed: " + o.Kind
	switch {
	case o.Kind == ObservedEvacuation:
		msg = fmt.Sprintf("observed: evacuation of %s to %s (migration %d, %s, created %s)", o.ServerID, dashIfEmpty(o.To), o.MigrationID, o.Status, o.At.UTC().Format(time.RFC3339))
	case o.Detail != "":
		msg += ": " + o.Detail
	}
	if o.Before != "" {
		msg += "; IHA's verdict before it: " + o.Before
	}
	s.event(c, b.Host, kind, msg, o.Kind == ObservedForceDown || o.Kind == ObservedFailed)
	return true, nil
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (s *fsmState) shadowClose(c Command, b ShadowCloseCmd) (any, error) {
	i := s.incident(c, b.Host, false)
	if i == nil {
		return false, nil
	}
	i.Closed, i.CloseReason = c.At, b.Reason
	s.event(c, b.Host, "IncidentClosed", fmt.Sprintf("incident %d closed: %s", i.ID, b.Reason), false)
	return true, nil
}

// Incidents returns copies of the incidents of host (all hosts if empty),
// oldest first, at most limit of the newest (0: all).
func (f *FSM) Incidents(host string, limit int) []*Incident {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*Incident
	for _, i := range f.st.Incidents {
		if host == "" || i.Host == host {
			out = append(out, i.clone())
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// OpenIncident returns a copy of host's open incident, or nil.
func (f *FSM) OpenIncident(host string) *Incident {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for k := len(f.st.Incidents) - 1; k >= 0; k-- {
		if i := f.st.Incidents[k]; i.Host == host && i.Open() {
			return i.clone()
		}
	}
	return nil
}
