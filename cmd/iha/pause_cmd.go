package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register("pause", command{
		summary: "stop starting new recoveries (DISABLED at run time, replicated): iha pause [--reason R]",
		run:     runPause,
	})
}

func runPause(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runMutation(ctx, "pause", "iha pause [--reason R] [--json] [--addr A,B]", args, 0, stdout, stderr,
		func(pos []string, reason string) (api.MutationKind, string, string, bool) {
			return api.MutPause, "", reason, true
		})
}

// runMutation is what every changing command shares: flags, exactly
// nargs positional arguments, the call (forwarded to the leader by
// whichever node answers), and the printed outcome with its audit event.
func runMutation(ctx context.Context, name, usage string, args []string, nargs int, stdout, stderr io.Writer,
	build func(pos []string, reason string) (kind api.MutationKind, host, why string, ok bool)) int {
	f := newAPIFlags(name, usage, stderr, false)
	reason := f.fs.String("reason", "", "why (recorded in the audit event)")
	pos, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(pos) != nargs {
		fmt.Fprintf(stderr, "iha %s: want %d argument(s), got %d\n", name, nargs, len(pos))
		f.fs.Usage()
		return exitUsage
	}
	kind, host, why, ok := build(pos, *reason)
	if !ok {
		f.fs.Usage()
		return exitUsage
	}
	res, err := f.client().Mutate(ctx, kind, host, why)
	if err != nil {
		return fail(stderr, name, err)
	}
	if f.json {
		printJSON(stdout, res)
		return exitOK
	}
	target := ""
	if res.Host != "" {
		target = " " + res.Host
	}
	fmt.Fprintf(stdout, "%s%s: done by the leader (%s) for %s; audit event %d\n", res.Kind, target, res.Freshness.Node, res.By, res.EventSeq)
	return exitOK
}
