package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register("events", command{
		summary: "the replicated event log, or follow it live: iha events [-f] [--host H] [--limit N] [--json]",
		run:     runEvents,
	})
}

func runEvents(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newAPIFlags("events", "iha events [-f] [--host H] [--since SEQ] [--limit N] [--json] [--addr A,B]", stderr, true)
	follow := f.fs.Bool("f", false, "follow: print new events as they happen, until interrupted")
	f.fs.BoolVar(follow, "follow", false, "same as -f")
	host := f.fs.String("host", "", "only the events of this host")
	since := f.fs.Uint64("since", 0, "only events after this sequence number")
	limit := f.fs.Int("limit", 50, "at most this many of the newest events (0: all that are kept)")
	pos, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "iha events: unexpected argument %q (for one host: --host %s)\n", pos[0], pos[0])
		return exitUsage
	}
	if *limit < 0 {
		fmt.Fprintln(stderr, "iha events: --limit must be 0 or more")
		return exitUsage
	}
	cl := f.client()
	evs, err := cl.Events(ctx, api.EventQuery{Since: *since, Host: *host, Limit: *limit}, f.consistent)
	if err != nil {
		return fail(stderr, "events", err)
	}
	st := style{isTerminal(stdout)}
	if f.json && !*follow {
		printJSON(stdout, evs)
		return exitOK
	}
	print := func(e api.Event) {
		if f.json {
			// One JSON object per line while following (JSON Lines).
			printJSONLine(stdout, e)
			return
		}
		printEvent(stdout, e, st)
	}
	if !f.json {
		fmt.Fprintln(stdout, freshness(evs.Freshness))
	}
	for _, e := range evs.Events {
		print(e)
	}
	if !*follow {
		return exitOK
	}
	next := evs.Next
	err = cl.Stream(ctx, next, *host, func(e api.Event) error {
		print(e)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		return fail(stderr, "events", err)
	}
	return exitOK
}

func printEvent(w io.Writer, e api.Event, st style) {
	kind := e.Kind
	if e.Warning {
		kind = st.warn(kind)
	}
	fmt.Fprintf(w, "%6d  %s  %-12s %-28s %s\n", e.Seq, when(e.At), dash(e.Host), kind, e.Message)
}

func printJSONLine(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}
