package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/pkg/api"
)

func init() { register(newHostCmd) }

var hostFields = []field[api.Host]{
	{"host", func(h api.Host) string { return h.Host }},
	{"verdict", func(h api.Host) string { return h.Verdict }},
	{"phase", func(h api.Host) string { return h.Phase }},
	{"phase-since", func(h api.Host) string { return whenOrEmpty(h.PhaseSince) }},
	{"reason", func(h api.Host) string { return h.Reason }},
	{"nova-state", func(h api.Host) string {
		if h.Nova == nil {
			return ""
		}
		return h.Nova.State
	}},
	{"nova-status", func(h api.Host) string {
		if h.Nova == nil {
			return ""
		}
		return h.Nova.Status
	}},
	{"forced-down", func(h api.Host) string {
		if h.Nova == nil {
			return ""
		}
		return strconv.FormatBool(h.Nova.ForcedDown)
	}},
	{"mesh", func(h api.Host) string {
		if h.Mesh == nil {
			return ""
		}
		return h.Mesh.State
	}},
	{"mesh-since", func(h api.Host) string {
		if h.Mesh == nil {
			return ""
		}
		return whenOrEmpty(h.Mesh.Since)
	}},
	{"judged", func(h api.Host) string {
		if h.Judged == nil {
			return ""
		}
		return h.Judged.Note
	}},
	{"zone", func(h api.Host) string { return h.Zone }},
	{"service-id", func(h api.Host) string { return h.ServiceID }},
	{"detected", func(h api.Host) string { return whenOrEmpty(h.DetectedAt) }},
	{"finished", func(h api.Host) string { return whenOrEmpty(h.FinishedAt) }},
	{"fence", func(h api.Host) string {
		if h.Fence == nil {
			return ""
		}
		return h.Fence.Method + " " + h.Fence.State
	}},
	{"last-error", func(h api.Host) string { return h.LastError }},
	{"maintenance", func(h api.Host) string { return h.Maintenance }},
	{"segment", func(h api.Host) string { return h.Segment }},
	{"reserved-host", func(h api.Host) string { return h.ReservedHost }},
	{"servers", func(h api.Host) string { return strconv.Itoa(len(h.Servers)) }},
	{"servers-done", func(h api.Host) string {
		n := 0
		for _, s := range h.Servers {
			if s.State == "done" {
				n++
			}
		}
		return strconv.Itoa(n)
	}},
	{"gate", func(h api.Host) string {
		if h.Gate.Allow {
			return "allow"
		}
		return "hold"
	}},
	{"watchdog", func(h api.Host) string {
		switch {
		case h.Watchdog == nil:
			return ""
		case h.Watchdog.Armed:
			return "armed"
		}
		return "unarmed"
	}},
	{"lease-expires", func(h api.Host) string {
		if h.Watchdog == nil {
			return ""
		}
		return whenOrEmpty(h.Watchdog.LeaseExpires)
	}},
}

func newHostCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "host HOST",
		Short: "one compute host: verdict, evidence, mesh and Nova state, recovery step by step",
		Long: `Shows everything known of one compute host: its verdict and what it rested on, its
nova-compute service as the leader last listed it, its agent in the gossip mesh, and, when it
has one, its recovery record (evidence, fencing, each step, each server, the nova-compute gate).
Any host that Nova, the mesh, maintenance or a recovery record knows is answered; Nova's view
and the verdict come from the leader (use --consistent when asking a follower).

With -w the view is redrawn each time an event of this host happens (the API's event stream,
no polling), until interrupted.

Exit status: 0 ok; 1 the host's recovery failed; 2 usage; 3 no API reachable.`,
		Example: `  iha host compute-3
  iha host compute-3 -w                      # follow a recovery as it happens
  iha host compute-3 -o wide                 # server ids, migrations, whole messages
  iha host compute-3 -o value -c phase       # the phase alone
  iha host compute-3 --consistent -o yaml`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("name exactly one host (iha hosts lists them)")
			}
			return nil
		},
		ValidArgsFunction: completeHosts,
	}
	af := addAPIFlags(cmd, e, true)
	o := addOutput(cmd, "field", fieldNames(hostFields), allFormats...)
	w := cmd.Flags().BoolP("watch", "w", false, "redraw on every event of this host until interrupted (events stream, no polling)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		cl, err := af.client()
		if err != nil {
			return err
		}
		st := style{isTerminal(e.stdout)}
		fresh := true
		draw := func(ctx context.Context, out io.Writer) (int, error) {
			h, err := cl.Host(ctx, args[0], af.consistent)
			if err != nil {
				return 0, err
			}
			if fresh {
				info(e.stderr, "%s", freshness(h.Freshness))
				fresh = false
			}
			switch {
			case o.structured():
				o.printWhole(out, h)
			case o.format == outValue || len(o.columns) > 0:
				printFields(out, o, st, hostFields, h)
			default:
				printHost(out, o, h, st)
			}
			if h.Phase == "failed" {
				return exitUnhealthy, nil
			}
			return exitOK, nil
		}
		if *w {
			return exit(watch(cmd.Context(), e, "host", cl, args[0], o, draw))
		}
		code, err := draw(cmd.Context(), e.stdout)
		if err != nil {
			return exit(fail(e.stderr, "host", err))
		}
		return exit(code)
	}
	return cmd
}

// completeHosts completes host names from the API (`iha hosts`), quietly
// giving up when it cannot be reached in two seconds.
func completeHosts(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, err := completionClient(cmd)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	hs, err := cl.Hosts(cmd.Context(), false)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := make([]string, 0, len(hs.Hosts))
	for _, h := range hs.Hosts {
		names = append(names, h.Host+"\t"+h.Verdict)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completionClient is the API client of a shell completion: the command
// line's --addr and --token-file, a short timeout, no warning printed.
func completionClient(cmd *cobra.Command) (*api.Client, error) {
	af := &apiFlags{stderr: io.Discard, timeout: 2 * time.Second}
	if f := cmd.Flags().Lookup("addr"); f != nil {
		af.addr = f.Value.String()
	}
	if f := cmd.Flags().Lookup("token-file"); f != nil {
		af.tokenFile = f.Value.String()
	}
	return af.client()
}

func printHost(w io.Writer, o *output, h api.Host, st style) {
	where := []string{}
	if h.Zone != "" {
		where = append(where, "zone "+h.Zone)
	}
	if h.ServiceID != "" {
		where = append(where, "service "+h.ServiceID)
	}
	head := h.Host
	if len(where) > 0 {
		head += " (" + strings.Join(where, ", ") + ")"
	}
	wrap(w, "host", head)
	wrap(w, "verdict", st.verdict(dash(h.Verdict)))
	if n := h.Nova; n != nil {
		s := n.State + ", " + n.Status
		if n.ForcedDown {
			s += ", forced down"
		}
		if n.DisabledReason != "" {
			s += " (" + n.DisabledReason + ")"
		}
		s += "; last heartbeat " + when(n.UpdatedAt) + ", listed " + when(n.ListedAt)
		wrap(w, "nova", s)
	} else if h.Freshness.Role == "Leader" {
		wrap(w, "nova", "not in the leader's last listing of nova-compute services")
	} else {
		wrap(w, "nova", "not known here (followers do not poll Nova: ask the leader with --consistent)")
	}
	if m := h.Mesh; m != nil {
		s := m.State + " since " + when(m.Since)
		if m.Addr != "" {
			s += " at " + m.Addr
		}
		if len(m.Accusers) > 0 {
			s += "; reported by " + strings.Join(m.Accusers, ", ")
		}
		wrap(w, "mesh", s)
	} else {
		wrap(w, "mesh", "never seen (no agent in the mesh for this host)")
	}
	if j := h.Judged; j != nil {
		wrap(w, "judged", fmt.Sprintf("%s at %s: %s", dash(j.Verdict), when(h.JudgedAt), j.Note))
	}
	if h.Maintenance != "" {
		wrap(w, "maintenance", h.Maintenance)
	}
	if wd := h.Watchdog; wd != nil {
		s := "unarmed"
		if wd.Armed {
			s = fmt.Sprintf("armed, W %gs", wd.WSeconds)
		}
		s += fmt.Sprintf(", lease %gs, last grant %s, expires %s", wd.LeaseSeconds, when(wd.LastGrant), when(wd.LeaseExpires))
		if !wd.Released.IsZero() {
			s += ", released " + when(wd.Released)
		}
		if !wd.FenceDeadline.IsZero() {
			s += "; " + st.warn(fmt.Sprintf("BMC failed (%s): fenced by the watchdog at %s", wd.BMCError, when(wd.FenceDeadline)))
		}
		wrap(w, "watchdog", s)
	}
	if h.Phase == "" {
		wrap(w, "recovery", "no record: this host has not failed (or its record was forgotten)")
		gate(w, h, st)
		return
	}
	phase := st.phase(h.Phase) + " since " + when(h.PhaseSince)
	if h.Reason != "" {
		phase += ": " + h.Reason
	}
	wrap(w, "phase", phase)
	det := fmt.Sprintf("%s, quick-evacuate level %d", when(h.DetectedAt), h.Level)
	if !h.FinishedAt.IsZero() {
		det += ", finished " + when(h.FinishedAt)
	}
	wrap(w, "detected", det)
	e := h.Evidence
	ev := fmt.Sprintf("source %s (mode %s), nova %s, updated_at %s", e.Source, e.Mode, dash(e.NovaState), when(e.NovaUpdatedAt))
	for _, x := range []struct {
		on   bool
		text string
	}{{e.Stale, "stale"}, {e.ForcedDown, "forced down"}, {e.Kdump, "kdump notice"}, {e.Adopted, "adopted from a Nova marker"}} {
		if x.on {
			ev += ", " + x.text
		}
	}
	if e.Note != "" {
		ev += "; " + e.Note
	}
	wrap(w, "evidence", ev)
	if h.Fence != nil {
		f := fmt.Sprintf("%s, power %s at %s", h.Fence.Method, h.Fence.State, when(h.Fence.At))
		if h.Fence.Detail != "" {
			f += " (" + h.Fence.Detail + ")"
		}
		wrap(w, "fencing", f)
	} else {
		wrap(w, "fencing", "not fenced yet")
	}
	if h.Confirmed != nil {
		wrap(w, "confirmed", fmt.Sprintf("%s by %s at %s: %s", st.warn("powered off per operator"), h.Confirmed.By, when(h.Confirmed.At), h.Confirmed.Reason))
	}
	if h.ReservedHost != "" {
		wrap(w, "reserved", h.ReservedHost)
	}
	if h.Segment != "" {
		s := fmt.Sprintf("%s, recovery_method %s, method %s", h.Segment, h.RecoveryMethod, dash(h.Method))
		if len(h.Targets) > 0 {
			s += " to " + strings.Join(h.Targets, ", ")
		}
		if h.FellBack {
			s += " (fell back)"
		}
		if h.Parked {
			s += ", parked in maintenance"
		}
		wrap(w, "segment", s)
	}
	if h.LastError != "" {
		wrap(w, "last error", st.bad(h.LastError))
	}
	gate(w, h, st)

	names := map[string]string{}
	for _, s := range h.Servers {
		names[s.ID] = s.Name
	}
	fmt.Fprintf(w, "\nsteps (%d):\n", len(h.Steps))
	t := newTable(o, st, stepColumns(names, o.format == outWide))
	t.render(w, h.Steps)
	fmt.Fprintf(w, "\nservers (%d):\n", len(h.Servers))
	newTable(o, st, serverColumns).render(w, h.Servers)
}

func gate(w io.Writer, h api.Host, st style) {
	g := st.good("nova-compute may start")
	if !h.Gate.Allow {
		g = st.warn("nova-compute held back")
	}
	wrap(w, "gate", g+": "+h.Gate.Reason)
}

// clock is a time of day for the step and server tables (the date is in
// the host's "detected" line; -o wide shows whole timestamps).
func clock(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("15:04:05.000")
}

func stepColumns(names map[string]string, wide bool) []column[api.Step] {
	return []column[api.Step]{
		{name: "STEP", get: func(s api.Step) string { return s.Step }},
		{name: "OP", wide: true, get: func(s api.Step) string { return s.Op }},
		{name: "SERVER", get: func(s api.Step) string {
			if n := names[s.ServerID]; n != "" {
				return n
			}
			return s.ServerID
		}},
		{name: "SERVER ID", wide: true, get: func(s api.Step) string { return s.ServerID }},
		{name: "STARTED", get: func(s api.Step) string {
			if wide {
				return whenOrEmpty(s.Started)
			}
			return clock(s.Started)
		}},
		{name: "TOOK", get: func(s api.Step) string {
			if s.Finished.IsZero() {
				return ""
			}
			return strconv.FormatFloat(s.Seconds, 'f', 3, 64) + "s"
		}},
		{name: "OUTCOME", get: func(s api.Step) string { return s.Outcome }, paint: func(st style, v string) string {
			switch v {
			case "failed":
				return st.bad(v)
			case "pending":
				return st.warn(v)
			}
			return v
		}},
		{name: "DETAIL", flex: true, get: func(s api.Step) string { return s.Detail }},
	}
}

var serverColumns = []column[api.Instance]{
	{name: "ID", wide: true, get: func(s api.Instance) string { return s.ID }},
	{name: "SERVER", get: func(s api.Instance) string {
		if s.HAEnabled {
			return s.Name + " (HA)"
		}
		return s.Name
	}},
	{name: "FROM", wide: true, get: func(s api.Instance) string { return s.From }},
	{name: "TO", get: func(s api.Instance) string { return s.To }},
	{name: "STATE", get: func(s api.Instance) string {
		if s.Pending != "" {
			return s.State + " (" + s.Pending + " pending)"
		}
		return s.State
	}, paint: func(st style, v string) string {
		switch {
		case strings.HasPrefix(v, "failed"):
			return st.bad(v)
		case v == "done":
			return st.good(v)
		}
		return v
	}},
	{name: "MIGRATION", wide: true, get: func(s api.Instance) string {
		if s.MigrationID == 0 {
			return ""
		}
		return strconv.Itoa(s.MigrationID)
	}},
	{name: "ATTEMPTS", get: func(s api.Instance) string { return strconv.Itoa(s.Attempts) }},
	{name: "STARTED", wide: true, get: func(s api.Instance) string { return whenOrEmpty(firstTime(s.StartedAt, s.RequestedAt)) }},
	{name: "FINISHED", wide: true, get: func(s api.Instance) string { return whenOrEmpty(s.FinishedAt) }},
	{name: "TOOK", get: func(s api.Instance) string {
		start := firstTime(s.StartedAt, s.RequestedAt)
		if start.IsZero() || s.FinishedAt.IsZero() {
			return ""
		}
		return strconv.FormatFloat(s.FinishedAt.Sub(start).Seconds(), 'f', 1, 64) + "s"
	}},
	{name: "MESSAGE", flex: true, get: func(s api.Instance) string { return s.Error }},
}

func firstTime(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}
