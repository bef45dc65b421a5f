package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register("host", command{
		summary: "one host's recovery step by step: evidence, steps, servers, fencing: iha host HOST [--json]",
		run:     runHost,
	})
}

func runHost(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newAPIFlags("host", "iha host HOST [--json] [--consistent] [--addr A,B]", stderr, true)
	pos, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "iha host: name exactly one host")
		f.fs.Usage()
		return exitUsage
	}
	h, err := f.client().Host(ctx, pos[0], f.consistent)
	if err != nil {
		return fail(stderr, "host", err)
	}
	if f.json {
		printJSON(stdout, h)
	} else {
		printHost(stdout, h, style{isTerminal(stdout)})
	}
	if h.Phase == "failed" {
		return exitUnhealthy
	}
	return exitOK
}

func printHost(w io.Writer, h api.Host, st style) {
	fmt.Fprintf(w, "host:      %s (zone %s, service %s)\n", h.Host, dash(h.Zone), dash(h.ServiceID))
	fmt.Fprintf(w, "phase:     %s since %s", st.phase(h.Phase), when(h.PhaseSince))
	if h.Reason != "" {
		fmt.Fprintf(w, ": %s", h.Reason)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "detected:  %s, quick-evacuate level %d", when(h.DetectedAt), h.Level)
	if !h.FinishedAt.IsZero() {
		fmt.Fprintf(w, ", finished %s", when(h.FinishedAt))
	}
	fmt.Fprintln(w)
	e := h.Evidence
	fmt.Fprintf(w, "evidence:  source %s (mode %s), nova %s, updated_at %s", e.Source, e.Mode, dash(e.NovaState), when(e.NovaUpdatedAt))
	for _, x := range []struct {
		on   bool
		text string
	}{{e.Stale, "stale"}, {e.ForcedDown, "forced down"}, {e.Kdump, "kdump notice"}, {e.Adopted, "adopted from a Nova marker"}} {
		if x.on {
			fmt.Fprintf(w, ", %s", x.text)
		}
	}
	if e.Note != "" {
		fmt.Fprintf(w, "; %s", e.Note)
	}
	fmt.Fprintln(w)
	switch {
	case h.Fence != nil:
		fmt.Fprintf(w, "fencing:   %s, power %s at %s", h.Fence.Method, h.Fence.State, when(h.Fence.At))
		if h.Fence.Detail != "" {
			fmt.Fprintf(w, " (%s)", h.Fence.Detail)
		}
		fmt.Fprintln(w)
	default:
		fmt.Fprintln(w, "fencing:   not fenced yet")
	}
	if h.Confirmed != nil {
		fmt.Fprintf(w, "confirmed: %s by %s at %s: %s\n", st.warn("powered off per operator"), h.Confirmed.By, when(h.Confirmed.At), h.Confirmed.Reason)
	}
	if h.Maintenance != "" {
		fmt.Fprintf(w, "maintenance: %s\n", h.Maintenance)
	}
	if h.ReservedHost != "" {
		fmt.Fprintf(w, "reserved:  %s\n", h.ReservedHost)
	}
	if h.Segment != "" {
		fmt.Fprintf(w, "segment:   %s, recovery_method %s, method %s", h.Segment, h.RecoveryMethod, dash(h.Method))
		if len(h.Targets) > 0 {
			fmt.Fprintf(w, " to %s", strings.Join(h.Targets, ", "))
		}
		if h.FellBack {
			fmt.Fprint(w, " (fell back)")
		}
		if h.Parked {
			fmt.Fprint(w, ", parked in maintenance")
		}
		fmt.Fprintln(w)
	}
	if h.LastError != "" {
		fmt.Fprintf(w, "last error: %s\n", st.bad(h.LastError))
	}
	gate := st.good("nova-compute may start")
	if !h.Gate.Allow {
		gate = st.warn("nova-compute held back")
	}
	fmt.Fprintf(w, "gate:      %s: %s\n", gate, h.Gate.Reason)

	fmt.Fprintf(w, "\nsteps (%d):\n", len(h.Steps))
	tw := table(w)
	fmt.Fprintln(tw, "STEP\tOP\tSERVER\tSTARTED\tTOOK\tOUTCOME\tDETAIL")
	for _, s := range h.Steps {
		took := "-"
		if !s.Finished.IsZero() {
			took = strconv.FormatFloat(s.Seconds, 'f', 3, 64) + "s"
		}
		out := s.Outcome
		switch out {
		case "failed":
			out = st.bad(out)
		case "pending":
			out = st.warn(out)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Step, s.Op, dash(s.ServerID), when(s.Started), took, out, dash(s.Detail))
	}
	tw.Flush()

	fmt.Fprintf(w, "\nservers (%d):\n", len(h.Servers))
	tw = table(w)
	fmt.Fprintln(tw, "SERVER\tNAME\tFROM\tTO\tSTATE\tMIGRATION\tATTEMPTS\tSTARTED\tFINISHED\tMESSAGE")
	for _, s := range h.Servers {
		state := s.State
		switch state {
		case "failed":
			state = st.bad(state)
		case "done":
			state = st.good(state)
		}
		if s.Pending != "" {
			state += " (" + s.Pending + " pending)"
		}
		mig := "-"
		if s.MigrationID != 0 {
			mig = strconv.Itoa(s.MigrationID)
		}
		name := s.Name
		if s.HAEnabled {
			name += " (HA)"
		}
		started := s.StartedAt
		if started.IsZero() {
			started = s.RequestedAt
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, name, s.From, dash(s.To), state, mig, s.Attempts,
			when(started), when(s.FinishedAt), dash(s.Error))
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%s\n", freshness(h.Freshness))
}
