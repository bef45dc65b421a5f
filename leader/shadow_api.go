package leader

import (
	"context"
	"fmt"

	"github.com/ihaproject/iha/pkg/api"
)

// The status API's view of shadow mode: the incidents, read from this
// node's replica.

var _ api.IncidentBackend = (*API)(nil)

// Incidents implements api.IncidentBackend. It also says whether the
// cluster shadows now.
func (a *API) Incidents(_ context.Context, q api.IncidentQuery) ([]api.Incident, bool, error) {
	var out []api.Incident
	for _, i := range a.node.fsm.Incidents(q.Host, 0) {
		if (q.ID != 0 && i.ID != q.ID) || (q.OpenOnly && !i.Open()) {
			continue
		}
		out = append(out, toAPIIncident(i))
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out, a.shadowing(), nil
}

// shadowing is the cluster's shadow mode as this replica knows it.
func (a *API) shadowing() bool {
	return a.node.fsm.Settings().ShadowMode(a.cfg.Settings.Shadow)
}

// latestIncident is host's newest incident in the API's form, or nil.
func (a *API) latestIncident(host string) *api.Incident {
	incs := a.node.fsm.Incidents(host, 1)
	if len(incs) == 0 {
		return nil
	}
	i := toAPIIncident(incs[0])
	return &i
}

func toAPIIncident(i *Incident) api.Incident {
	f := i.Findings()
	out := api.Incident{ID: i.ID, Host: i.Host, Opened: i.Opened.UTC(), Closed: i.Closed.UTC(), CloseReason: i.CloseReason,
		IHAAt: f.IHAAt.UTC(), IHAWhat: f.IHAWhat, ActorAt: f.ActorAt.UTC(), ActorWhat: f.ActorWhat,
		IHAServers: f.IHAServers, ActorServers: f.ActorServers, Agree: f.Agree(),
		Disagreements: make([]api.Disagreement, len(f.Disagreements)), IHA: make([]api.ShadowDecision, len(i.IHA)),
		Actor: make([]api.Observed, len(i.Actor))}
	if f.Lead != nil {
		s := f.Lead.Seconds()
		out.LeadSeconds = &s
	}
	for k, d := range f.Disagreements {
		out.Disagreements[k] = api.Disagreement{Kind: d.Kind, Message: d.Message, IHA: d.IHA, Actor: d.Actor}
	}
	for k, d := range i.IHA {
		sd := api.ShadowDecision{At: d.At.UTC(), Kind: d.Kind, Verdict: d.Verdict, Detail: d.Detail, Level: d.Level, Kdump: d.Kdump,
			Reserved: d.Reserved, Segment: d.Segment, Method: d.Method, Targets: d.Targets}
		if d.Evidence != nil {
			e := toAPIEvidence(*d.Evidence, d.Kdump, false)
			sd.Evidence = &e
		}
		for _, s := range d.Servers {
			sd.Servers = append(sd.Servers, api.ShadowServer{ID: s.ID, Name: s.Name, Status: s.Status, Evacuate: s.Evacuate, Why: s.Why, Target: s.Target})
		}
		out.IHA[k] = sd
	}
	for k, o := range i.Actor {
		out.Actor[k] = api.Observed{At: o.At.UTC(), Seen: o.Seen.UTC(), Kind: o.Kind, Detail: o.Detail, ServerID: o.ServerID, To: o.To,
			MigrationID: o.MigrationID, Status: o.Status, Before: o.Before}
	}
	return out
}

// Shadow implements metrics.ShadowSource.
func (m metricsSource) Shadow() bool { return m.a.shadowing() }

// OpenIncidents implements metrics.ShadowSource.
func (m metricsSource) OpenIncidents() int {
	n := 0
	for _, i := range m.a.node.fsm.Incidents("", 0) {
		if i.Open() {
			n++
		}
	}
	return n
}

// shadowSummary is an open incident in a few words, for the host list.
func shadowSummary(i *Incident) string {
	f := i.Findings()
	s := fmt.Sprintf("incident %d: IHA %s; other agent: %s", i.ID, f.IHAWhat, f.ActorWhat)
	if !f.Agree() {
		s += fmt.Sprintf(" (%d disagreement(s))", len(f.Disagreements))
	}
	return s
}
