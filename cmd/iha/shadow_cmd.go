package main

// Shadow mode: `iha shadow on|off` (a replicated, audited command) and
// `iha incidents` (each host failure with IHA's would-be decisions beside
// what the other agent did, and every disagreement).

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register(newShadowCmd)
	register(newIncidentsCmd)
}

func newShadowCmd(e *env) *cobra.Command {
	return newMutationCmd(e, mutation{
		use:      "shadow on|off",
		nargs:    1,
		argNames: "on or off",
		complete: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return []string{"on", "off"}, cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		short: "decide and record without acting (beside InstanceHA), or act again",
		long: `With on, the leader keeps judging, admitting and planning every failure as when it acts, and
records each decision as a shadow event (would fence, would evacuate each server to a target,
would re-enable) with the time it would have acted, but never powers a host off nor writes to
Nova. It also watches what another agent (InstanceHA) does to the same hosts in Nova, and keeps
both sides of each host failure as an incident: iha incidents. Recoveries already in progress go
on to their end. With off, IHA acts on the next failure: stop the other agent first.

The switch is replicated and wins over SHADOW in config.yaml; iha status shows it.`,
		example: `  iha shadow on --reason "trying IHA beside InstanceHA"
  iha incidents
  iha shadow off --reason "InstanceHA stopped on all controllers"`,
		build: func(args []string, _ string) (api.MutationKind, string, error) {
			switch args[0] {
			case "on":
				return api.MutShadowOn, "", nil
			case "off":
				return api.MutShadowOff, "", nil
			}
			return "", "", usagef("%q: want on or off", args[0])
		},
	})
}

// clockMs is a time of day to the tenth of a second, UTC ("" unset).
func clockMs(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("15:04:05.0")
}

func leadText(i api.Incident) string {
	if i.LeadSeconds == nil {
		return ""
	}
	return fmt.Sprintf("%+.1fs", *i.LeadSeconds)
}

func agreeText(i api.Incident) string {
	if i.Agree {
		return "yes"
	}
	return fmt.Sprintf("NO (%d)", len(i.Disagreements))
}

func stateText(i api.Incident) string {
	if i.Closed.IsZero() {
		return "open"
	}
	return "closed"
}

func findingsText(i api.Incident) string {
	var out []string
	for _, d := range i.Disagreements {
		out = append(out, d.Message)
	}
	return strings.Join(out, "; ")
}

// incidentColumns are `iha incidents`' columns; LEAD is how much earlier
// IHA would have acted than the other agent's first action in Nova.
var incidentColumns = []column[api.Incident]{
	{name: "ID", right: true, get: func(i api.Incident) string { return strconv.FormatUint(i.ID, 10) }},
	{name: "HOST", get: func(i api.Incident) string { return i.Host }},
	{name: "STATE", get: stateText},
	{name: "OPENED", wide: true, get: func(i api.Incident) string { return whenOrEmpty(i.Opened) }},
	{name: "CLOSED", wide: true, get: func(i api.Incident) string { return whenOrEmpty(i.Closed) }},
	{name: "IHA AT", get: func(i api.Incident) string { return clockMs(i.IHAAt) }},
	{name: "IHA", flex: true, get: func(i api.Incident) string { return i.IHAWhat }},
	{name: "AGENT AT", get: func(i api.Incident) string { return clockMs(i.ActorAt) }},
	{name: "AGENT", flex: true, get: func(i api.Incident) string { return i.ActorWhat }},
	{name: "LEAD", right: true, get: leadText},
	{name: "AGREE", get: agreeText, paint: func(st style, s string) string {
		if s == "yes" {
			return st.good(s)
		}
		return st.bad(s)
	}},
	{name: "IHA SERVERS", wide: true, get: func(i api.Incident) string { return strings.Join(i.IHAServers, ",") }},
	{name: "AGENT SERVERS", wide: true, get: func(i api.Incident) string { return strings.Join(i.ActorServers, ",") }},
	{name: "FINDINGS", wide: true, get: findingsText},
}

// incidentFields are one incident's fields (iha incidents ID -c, -o value).
var incidentFields = []field[api.Incident]{
	{"id", func(i api.Incident) string { return strconv.FormatUint(i.ID, 10) }},
	{"host", func(i api.Incident) string { return i.Host }},
	{"state", stateText},
	{"opened", func(i api.Incident) string { return whenOrEmpty(i.Opened) }},
	{"closed", func(i api.Incident) string { return whenOrEmpty(i.Closed) }},
	{"iha-at", func(i api.Incident) string { return whenOrEmpty(i.IHAAt) }},
	{"iha", func(i api.Incident) string { return i.IHAWhat }},
	{"agent-at", func(i api.Incident) string { return whenOrEmpty(i.ActorAt) }},
	{"agent", func(i api.Incident) string { return i.ActorWhat }},
	{"lead", leadText},
	{"agree", func(i api.Incident) string { return strconv.FormatBool(i.Agree) }},
	{"iha-servers", func(i api.Incident) string { return strings.Join(i.IHAServers, ",") }},
	{"agent-servers", func(i api.Incident) string { return strings.Join(i.ActorServers, ",") }},
	{"findings", findingsText},
}

func newIncidentsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "incidents [ID|HOST]",
		Short: "shadow mode's host failures: what IHA would have done, and what the other agent did",
		Long: `Lists the incidents of shadow mode (iha shadow on, or SHADOW in config.yaml): each host failure,
from the first decision of either side until the host is back in service, with when IHA would
have acted and what (fence, the servers it would evacuate and where), when the other agent
(InstanceHA) acted as Nova shows it (force-down, its marker strings, each evacuation migration
with its time and destination), how much earlier IHA would have been (LEAD), and every
disagreement: one acted where the other would not, different servers, different targets, each
with the evidence of both sides. Times are UTC.

With an incident number, or a host name, shows that incident (the host's newest) in full: both
sides step by step. -o json and -o yaml print everything.

Exit status: 0 no disagreement among the incidents shown; 1 at least one; 2 usage; 3 no API
reachable.`,
		Example: `  iha incidents
  iha incidents --open -o wide
  iha incidents 12
  iha incidents compute-3 -o json | jq .incidents[0].disagreements`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("name at most one incident number or host")
			}
			return nil
		},
		ValidArgsFunction: completeHosts,
	}
	af := addAPIFlags(cmd, e, true)
	names := columnNames(incidentColumns)
	for _, f := range incidentFields {
		if !contains(names, f.name) {
			names = append(names, f.name)
		}
	}
	o := addOutput(cmd, "column", names, allFormats...)
	open := cmd.Flags().Bool("open", false, "only the incidents still open")
	limit := cmd.Flags().Int("limit", 50, "at most this many of the newest incidents (0: all that are kept)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		if *limit < 0 {
			return usagef("--limit must be 0 or more")
		}
		q := api.IncidentQuery{Limit: *limit, OpenOnly: *open}
		single := len(args) == 1
		if single {
			if id, err := strconv.ParseUint(args[0], 10, 64); err == nil {
				q.ID = id
			} else {
				q.Host, q.Limit = args[0], 1
			}
		}
		cl, err := af.client()
		if err != nil {
			return err
		}
		incs, err := cl.Incidents(cmd.Context(), q, af.consistent)
		if err != nil {
			return exit(fail(e.stderr, "incidents", err))
		}
		info(e.stderr, "%s", freshness(incs.Freshness))
		if !incs.Shadow {
			info(e.stderr, "(the leader acts: it is not in shadow mode; these incidents are from when it was)")
		}
		st := style{isTerminal(e.stdout)}
		switch {
		case o.structured():
			o.printWhole(e.stdout, incs)
		case single && len(incs.Incidents) == 0:
			fmt.Fprintf(e.stderr, "iha incidents: no incident of %s\n", args[0])
			return exit(exitUnhealthy)
		case single && (o.format == outValue || len(o.columns) > 0):
			printFields(e.stdout, o, st, incidentFields, incs.Incidents[0])
		case single:
			printIncident(e.stdout, o, incs.Incidents[0], st)
		default:
			if len(o.columns) > 0 {
				for _, c := range o.columns {
					if !contains(columnNames(incidentColumns), c) {
						return usagef("no column %q in the list (it is a field of one incident: iha incidents ID -c %s)", c, c)
					}
				}
			}
			t := newTable(o, st, incidentColumns)
			t.render(e.stdout, incs.Incidents)
			t.noteCut(e.stderr)
		}
		for _, i := range incs.Incidents {
			if !i.Agree {
				return exit(exitUnhealthy)
			}
		}
		return nil
	}
	return cmd
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// timelineRow is one step of either side of an incident.
type timelineRow struct {
	at     time.Time
	side   string
	what   string
	detail string
}

var timelineColumns = []column[timelineRow]{
	{name: "AT", get: func(r timelineRow) string { return clockMs(r.at) }},
	{name: "SIDE", get: func(r timelineRow) string { return r.side }},
	{name: "WHAT", get: func(r timelineRow) string { return r.what }},
	{name: "DETAIL", flex: true, get: func(r timelineRow) string { return r.detail }},
}

func printIncident(w io.Writer, o *output, i api.Incident, st style) {
	head := fmt.Sprintf("%d on %s, opened %s", i.ID, i.Host, when(i.Opened))
	if i.Closed.IsZero() {
		head += ", open"
	} else {
		head += ", closed " + when(i.Closed) + ": " + i.CloseReason
	}
	wrap(w, "incident", head)
	iha := i.IHAWhat
	if !i.IHAAt.IsZero() {
		iha += " at " + when(i.IHAAt)
	}
	wrap(w, "iha", iha)
	agent := i.ActorWhat
	if !i.ActorAt.IsZero() {
		agent += " at " + when(i.ActorAt)
	}
	wrap(w, "agent", agent)
	if i.LeadSeconds != nil {
		l := *i.LeadSeconds
		switch {
		case l > 0:
			wrap(w, "lead", fmt.Sprintf("IHA would have acted %.1f s before the other agent's first action in Nova", l))
		case l < 0:
			wrap(w, "lead", fmt.Sprintf("IHA would have acted %.1f s after the other agent's first action in Nova", -l))
		default:
			wrap(w, "lead", "both at the same time")
		}
	}
	if len(i.IHAServers)+len(i.ActorServers) > 0 {
		wrap(w, "servers", fmt.Sprintf("IHA would evacuate %d, the other agent evacuated %d", len(i.IHAServers), len(i.ActorServers)))
	}
	if i.Agree {
		wrap(w, "agree", st.good("yes"))
	} else {
		wrap(w, "agree", st.bad(fmt.Sprintf("NO, %d disagreement(s)", len(i.Disagreements))))
		for _, d := range i.Disagreements {
			wrap(w, "  "+d.Kind, d.Message)
			if d.IHA != "" {
				wrap(w, "    iha", d.IHA)
			}
			if d.Actor != "" {
				wrap(w, "    agent", d.Actor)
			}
		}
	}
	var rows []timelineRow
	for _, d := range i.IHA {
		detail := d.Detail
		if d.Verdict != "" {
			detail = "verdict " + d.Verdict + ": " + detail
		}
		rows = append(rows, timelineRow{d.At, "iha", "would " + d.Kind, detail})
		if d.Reserved != "" {
			rows = append(rows, timelineRow{d.At, "iha", "would enable", "reserved host " + d.Reserved})
		}
		for _, s := range d.Servers {
			name := s.Name
			if name == "" {
				name = s.ID
			}
			if s.Evacuate {
				to := "the scheduler's choice"
				if s.Target != "" {
					to = s.Target
				}
				rows = append(rows, timelineRow{d.At, "iha", "would evacuate", fmt.Sprintf("%s (%s) to %s", name, s.ID, to)})
			} else {
				rows = append(rows, timelineRow{d.At, "iha", "would leave", fmt.Sprintf("%s (%s): %s", name, s.ID, s.Why)})
			}
		}
	}
	for _, a := range i.Actor {
		detail := a.Detail
		if a.Kind == "evacuation" {
			detail = fmt.Sprintf("%s to %s, migration %d %s", a.ServerID, dash(a.To), a.MigrationID, a.Status)
		}
		if a.Before != "" {
			detail = strings.TrimSpace(detail + " (IHA's verdict then: " + a.Before + ")")
		}
		rows = append(rows, timelineRow{a.At, "agent", a.Kind, detail})
	}
	sort.SliceStable(rows, func(a, b int) bool { return rows[a].at.Before(rows[b].at) })
	fmt.Fprintf(w, "\ntimeline (%d):\n", len(rows))
	newTable(&output{format: o.format, noHeaders: o.noHeaders}, st, timelineColumns).render(w, rows)
}
