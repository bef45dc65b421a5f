package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register("hosts", command{
		summary: "every compute with its mesh and Nova state, verdict and recovery phase: iha hosts [--json]",
		run:     runHosts,
	})
}

func runHosts(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newAPIFlags("hosts", "iha hosts [--json] [--consistent] [--addr A,B]", stderr, true)
	pos, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "iha hosts: unexpected argument %q (for one host: iha host %s)\n", pos[0], pos[0])
		return exitUsage
	}
	hs, err := f.client().Hosts(ctx, f.consistent)
	if err != nil {
		return fail(stderr, "hosts", err)
	}
	failed := false
	for _, h := range hs.Hosts {
		failed = failed || h.Verdict == "failed"
	}
	if f.json {
		printJSON(stdout, hs)
	} else {
		printHosts(stdout, hs, style{isTerminal(stdout)})
	}
	if failed {
		return exitUnhealthy
	}
	return exitOK
}

func printHosts(w io.Writer, hs api.Hosts, st style) {
	fmt.Fprintln(w, freshness(hs.Freshness))
	if len(hs.Hosts) == 0 {
		fmt.Fprintln(w, "no hosts known: no recovery records, no host in maintenance, and this node has not polled Nova")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "HOST\tMESH\tNOVA\tVERDICT\tPHASE\tSINCE\tSERVERS\tNOTE")
	for _, h := range hs.Hosts {
		nova := dash(h.NovaState)
		if h.ForcedDown {
			nova += ",forced-down"
		}
		if h.NovaStatus == "disabled" {
			nova += ",disabled"
		}
		servers := "-"
		if h.Servers > 0 {
			servers = strconv.Itoa(h.ServersDone) + "/" + strconv.Itoa(h.Servers)
		}
		note := h.Reason
		if h.Maintenance != "" {
			note = "maintenance: " + h.Maintenance
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, h.MeshState, nova, st.verdict(h.Verdict), st.phase(h.Phase),
			when(h.Since), servers, dash(note))
	}
	tw.Flush()
}
