package leader

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Disagreement kinds of an incident (Findings).
const (
	DisagreeOnlyIHA   = "only-iha"   // IHA would have recovered the host; the other agent did not
	DisagreeOnlyActor = "only-actor" // the other agent recovered the host; IHA would not have
	DisagreeServers   = "servers"    // not the same servers
	DisagreeTargets   = "targets"    // a server sent elsewhere than IHA would have sent it
)

// Disagreement is one way the two sides of an incident differ, with the
// evidence of each side.
type Disagreement struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
	// IHA and Actor are each side's evidence.
	IHA   string `json:"iha,omitempty"`
	Actor string `json:"actor,omitempty"`
}

// Findings is an incident read side by side: when and what each side did
// (or would have done), and every disagreement.
type Findings struct {
	// IHAAt is when IHA would have acted (its fence or resume decision;
	// zero: it would not have), IHAWhat what.
	IHAAt   time.Time `json:"iha_at,omitzero"`
	IHAWhat string    `json:"iha_what"`
	// ActorAt is the other agent's first action seen in Nova (zero: none),
	// ActorWhat what.
	ActorAt   time.Time `json:"actor_at,omitzero"`
	ActorWhat string    `json:"actor_what"`
	// Lead is ActorAt − IHAAt when both acted: positive when IHA would have
	// been first.
	Lead *time.Duration `json:"lead_ns,omitempty"`
	// IHAServers would be evacuated by IHA; ActorServers were evacuated by
	// the other agent (server ids, sorted).
	IHAServers    []string       `json:"iha_servers"`
	ActorServers  []string       `json:"actor_servers"`
	Disagreements []Disagreement `json:"disagreements"`
}

// Agree reports whether the findings hold no disagreement.
func (f Findings) Agree() bool { return len(f.Disagreements) == 0 }

// actorActs are the observations that are a recovery by the other agent.
var actorActs = map[string]bool{ObservedForceDown: true, ObservedMarker: true, ObservedEvacuation: true, ObservedFailed: true}

// Findings compares the two sides of the incident. It is a pure function
// of the incident: while the incident is open a side may still act, and
// what is missing is said to be so far.
func (i *Incident) Findings() Findings {
	f := Findings{IHAServers: []string{}, ActorServers: []string{}, Disagreements: []Disagreement{}}
	soFar := ""
	if i.Open() {
		soFar = " (so far: the incident is open)"
	}
	var acted *ShadowDecision
	for k := range i.IHA {
		if d := &i.IHA[k]; d.Kind == ShadowFence || d.Kind == ShadowResume {
			acted = d
			break
		}
	}
	var lastSkip *ShadowDecision
	for k := range i.IHA {
		if i.IHA[k].Kind == ShadowSkip {
			lastSkip = &i.IHA[k]
		}
	}
	plan := map[string]ShadowServer{}
	if acted != nil {
		f.IHAAt = acted.At
		f.IHAWhat = "would " + acted.Kind
		if acted.Kind == ShadowFence {
			f.IHAWhat = "would fence and evacuate"
		}
		for _, s := range acted.Servers {
			if s.Evacuate {
				plan[s.ID] = s
				f.IHAServers = append(f.IHAServers, s.ID)
			}
		}
		sort.Strings(f.IHAServers)
	} else if lastSkip != nil {
		f.IHAWhat = "would not recover: " + lastSkip.Detail
	} else {
		f.IHAWhat = "no decision"
	}
	// Nova dates a migration in whole seconds (truncated): one created in
	// the second of a force-down or marker dated finer came after it (Nova
	// evacuates only from a host it holds down, and until the force-down
	// it held this one up), so it is not the first action.
	var held time.Time
	for _, o := range i.Actor {
		if (o.Kind == ObservedForceDown || o.Kind == ObservedMarker) && (held.IsZero() || o.At.Before(held)) {
			held = o.At
		}
	}
	actedAt := func(o *Observed) time.Time {
		if o.Kind == ObservedEvacuation && !held.IsZero() && !held.Before(o.At) && held.Before(o.At.Add(time.Second)) {
			return held
		}
		return o.At
	}
	var first *Observed
	evac := map[string]Observed{}
	for k := range i.Actor {
		o := &i.Actor[k]
		if !actorActs[o.Kind] {
			continue
		}
		if first == nil || actedAt(o).Before(actedAt(first)) ||
			actedAt(o).Equal(actedAt(first)) && first.Kind == ObservedEvacuation && o.Kind != ObservedEvacuation {
			first = o
		}
		if o.Kind == ObservedEvacuation && o.ServerID != "" && !finishedBad(o.Status) {
			evac[o.ServerID] = *o // the newest wins: the one that counts
		}
	}
	for id := range evac {
		f.ActorServers = append(f.ActorServers, id)
	}
	sort.Strings(f.ActorServers)
	if first != nil {
		f.ActorAt = first.At
		f.ActorWhat = describeObserved(*first)
	} else {
		f.ActorWhat = "no action seen in Nova"
	}
	switch {
	case acted != nil && first != nil:
		lead := f.ActorAt.Sub(f.IHAAt)
		f.Lead = &lead
	case acted != nil:
		f.Disagreements = append(f.Disagreements, Disagreement{Kind: DisagreeOnlyIHA,
			Message: fmt.Sprintf("IHA would have %s %s at %s; the other agent did not act%s", verbOf(acted.Kind), i.Host, stamp(acted.At), soFar),
			IHA:     acted.Detail})
	case first != nil:
		ev := "IHA did not judge the host failed"
		if b := firstBefore(i.Actor); b != "" {
			ev += ": its last verdict before the action was " + b
		}
		if lastSkip != nil {
			ev = "IHA would not have recovered it: " + lastSkip.Detail
		}
		f.Disagreements = append(f.Disagreements, Disagreement{Kind: DisagreeOnlyActor,
			Message: fmt.Sprintf("the other agent recovered %s (%s at %s); IHA would not have", i.Host, describeObserved(*first), stamp(first.At)),
			IHA:     ev, Actor: first.Detail})
	}
	if acted != nil && first != nil {
		var onlyIHA, onlyActor []string
		for _, id := range f.IHAServers {
			if _, ok := evac[id]; !ok {
				onlyIHA = append(onlyIHA, serverName(plan[id]))
			}
		}
		for _, id := range f.ActorServers {
			if _, ok := plan[id]; !ok {
				onlyActor = append(onlyActor, id+skippedWhy(acted, id))
			}
		}
		if len(onlyIHA)+len(onlyActor) > 0 {
			var parts []string
			if len(onlyIHA) > 0 {
				parts = append(parts, "only IHA would evacuate "+strings.Join(onlyIHA, ", ")+soFar)
			}
			if len(onlyActor) > 0 {
				parts = append(parts, "only the other agent evacuated "+strings.Join(onlyActor, ", "))
			}
			f.Disagreements = append(f.Disagreements, Disagreement{Kind: DisagreeServers, Message: "not the same servers: " + strings.Join(parts, "; "),
				IHA: "IHA's plan: " + strings.Join(f.IHAServers, ", "), Actor: "evacuation migrations from the host: " + strings.Join(f.ActorServers, ", ")})
		}
		for _, id := range f.IHAServers {
			s, o := plan[id], evac[id]
			if s.Target == "" || o.To == "" || o.To == s.Target {
				continue
			}
			f.Disagreements = append(f.Disagreements, Disagreement{Kind: DisagreeTargets,
				Message: fmt.Sprintf("%s: IHA would send it to %s, the other agent sent it to %s", serverName(s), s.Target, o.To),
				IHA:     targetWhy(acted), Actor: fmt.Sprintf("migration %d to %s (%s)", o.MigrationID, o.To, o.Status)})
		}
	}
	return f
}

func verbOf(kind string) string {
	if kind == ShadowResume {
		return "resumed the recovery of"
	}
	return "fenced and evacuated"
}

func stamp(t time.Time) string { return t.UTC().Format("15:04:05.000") }

func serverName(s ShadowServer) string {
	if s.Name != "" && s.Name != s.ID {
		return s.Name + " (" + s.ID + ")"
	}
	return s.ID
}

// skippedWhy says why IHA's plan left server id where the other agent
// moved it, when the plan has it.
func skippedWhy(d *ShadowDecision, id string) string {
	for _, s := range d.Servers {
		if s.ID == id && !s.Evacuate {
			return " (IHA: " + s.Why + ")"
		}
	}
	return " (not in IHA's plan)"
}

func targetWhy(d *ShadowDecision) string {
	switch {
	case d.Segment != "":
		return fmt.Sprintf("failover segment %s, method %s, targets %s", d.Segment, d.Method, strings.Join(d.Targets, ", "))
	case d.Reserved != "":
		return "reserved host " + d.Reserved + " with FORCE_RESERVED_HOST_EVACUATION"
	}
	return ""
}

func firstBefore(obs []Observed) string {
	for _, o := range obs {
		if o.Before != "" {
			return o.Before
		}
	}
	return ""
}

func describeObserved(o Observed) string {
	switch o.Kind {
	case ObservedEvacuation:
		return fmt.Sprintf("evacuated %s to %s", o.ServerID, dashIfEmpty(o.To))
	case ObservedMarker:
		return "marked it " + strings.SplitN(o.Detail, ":", 2)[0]
	case ObservedForceDown:
		return "forced its service down"
	case ObservedFailed:
		return "marked its recovery FAILED"
	}
	return o.Kind
}
