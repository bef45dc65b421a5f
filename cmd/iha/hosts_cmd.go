package main

import (
	"context"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/pkg/api"
)

func init() { register(newHostsCmd) }

var hostColumns = []column[api.HostSummary]{
	{name: "HOST", get: func(h api.HostSummary) string { return h.Host }},
	{name: "MESH", get: func(h api.HostSummary) string { return h.MeshState }},
	{name: "NOVA", get: func(h api.HostSummary) string {
		nova := h.NovaState
		if nova == "" && (h.ForcedDown || h.NovaStatus == "disabled") {
			nova = "-"
		}
		if h.ForcedDown {
			nova += ",forced"
		}
		if h.NovaStatus == "disabled" {
			nova += ",disabled"
		}
		return nova
	}},
	{name: "VERDICT", get: func(h api.HostSummary) string { return h.Verdict }, paint: style.verdict},
	{name: "PHASE", get: func(h api.HostSummary) string { return h.Phase }, paint: style.phase},
	{name: "AGE", get: func(h api.HostSummary) string { return age(h.Since) }},
	{name: "SINCE", wide: true, get: func(h api.HostSummary) string { return whenOrEmpty(h.Since) }},
	{name: "SERVERS", get: func(h api.HostSummary) string {
		if h.Servers == 0 {
			return ""
		}
		return strconv.Itoa(h.ServersDone) + "/" + strconv.Itoa(h.Servers)
	}},
	{name: "NOTE", flex: true, get: func(h api.HostSummary) string {
		if h.Maintenance != "" {
			return h.Maintenance // the verdict says maintenance
		}
		return h.Reason
	}},
}

func newHostsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hosts",
		Short: "every compute with its mesh and Nova state, verdict and recovery phase",
		Long: `Lists every compute host the answering node knows: from Nova's last listing (the leader's),
the gossip mesh, maintenance and the recovery records. VERDICT is the host's state in one word:
healthy, down (Nova says so, no verdict of ours yet), recovering, recovered, failed, skipped,
maintenance, unknown, or the verdict table's row for a host the leader judged
(nova-compute-broken, wait, kdump-ignored). A follower does not poll Nova: ask the leader with
--consistent for Nova's view.

With -w the table is redrawn each time an event happens (the API's event stream, no polling),
until interrupted.

Exit status: 0 no host failed; 1 a host's recovery failed; 2 usage; 3 no API reachable.`,
		Example: `  iha hosts
  iha hosts -o wide
  iha hosts -w                          # redraw on every event
  iha hosts -o value -c host -c verdict # tab-separated, for scripts
  iha hosts --consistent -o json`,
		Args:              noArgs("hosts", "for one host: iha host ARG"),
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	af := addAPIFlags(cmd, e, true)
	o := addOutput(cmd, "column", columnNames(hostColumns), allFormats...)
	w := cmd.Flags().BoolP("watch", "w", false, "redraw on every event until interrupted (events stream, no polling)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
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
			hs, err := cl.Hosts(ctx, af.consistent)
			if err != nil {
				return 0, err
			}
			if fresh {
				info(e.stderr, "%s", freshness(hs.Freshness))
				fresh = false
			}
			code := exitOK
			for _, h := range hs.Hosts {
				if h.Verdict == "failed" {
					code = exitUnhealthy
				}
			}
			if o.structured() {
				o.printWhole(out, hs)
				return code, nil
			}
			if len(hs.Hosts) == 0 {
				info(e.stderr, "no hosts known: no recovery records, no host in maintenance or in the mesh, and this node has not polled Nova")
			}
			t := newTable(o, st, hostColumns)
			t.render(out, hs.Hosts)
			t.noteCut(e.stderr)
			return code, nil
		}
		if *w {
			return exit(watch(cmd.Context(), e, "hosts", cl, "", o, draw))
		}
		code, err := draw(cmd.Context(), e.stdout)
		if err != nil {
			return exit(fail(e.stderr, "hosts", err))
		}
		return exit(code)
	}
	return cmd
}
