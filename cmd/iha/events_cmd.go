package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/pkg/api"
)

func init() { register(newEventsCmd) }

// eventColumns are the columns of `iha events`; wide shows whole
// timestamps (table: the time of day with the month and day, UTC).
func eventColumns(wide bool) []column[api.Event] {
	timeWidth := len("Jan 02 15:04:05")
	if wide {
		timeWidth = len("2006-01-02 15:04:05.000Z")
	}
	return []column[api.Event]{
		{name: "SEQ", right: true, min: 4, smin: 6, get: func(e api.Event) string { return strconv.FormatUint(e.Seq, 10) }},
		{name: "TIME", smin: timeWidth, get: func(e api.Event) string {
			if wide {
				return whenOrEmpty(e.At)
			}
			if e.At.IsZero() {
				return ""
			}
			return e.At.UTC().Format("Jan 02 15:04:05")
		}},
		{name: "HOST", min: 10, smin: 12, get: func(e api.Event) string { return e.Host }},
		{name: "KIND", min: 16, smin: 27, get: func(e api.Event) string { return e.Kind }},
		{name: "MESSAGE", flex: true, get: func(e api.Event) string { return e.Message }},
		{name: "WARNING", wide: true, get: func(e api.Event) string {
			if e.Warning {
				return "warning"
			}
			return ""
		}},
	}
}

func newEventsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "the replicated event log, filtered by host, kind and time, or followed live",
		Long: `Prints the newest events of the replicated event log (every controller keeps the last
2000): each verdict that acts, each step of each recovery, each operator command with who gave
it. Times are UTC. --host, --kind and --since narrow it down; -f follows it, printing each new
event as it is committed, until interrupted (with -o json, one JSON object per line).

--since takes a duration (30s, 10m, 2h, 3d: events that recent), a time (2026-03-01T03:00:00Z,
or 2026-03-01 for the whole day on), or an event sequence number (events after it).

Exit status: 0 ok; 2 usage; 3 no API reachable.`,
		Example: `  iha events
  iha events --host compute-3 --since 30m
  iha events --kind HostDown --kind ProcessingFailed --since 1d
  iha events -f --host compute-3
  iha events -f -o json | jq .message
  iha events --since 120 --limit 0      # every event after seq 120`,
		Args:              noArgs("events", "for one host: --host ARG"),
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	af := addAPIFlags(cmd, e, true)
	wideCols := eventColumns(true)
	o := addOutput(cmd, "column", columnNames(wideCols), allFormats...)
	fs := cmd.Flags()
	follow := fs.BoolP("follow", "f", false, "follow: print new events as they happen, until interrupted")
	host := fs.String("host", "", "only the events of this host")
	kinds := fs.StringSlice("kind", nil, "only events of this kind (HostDown, FencingSucceeded, ...); repeat or separate with commas")
	since := fs.String("since", "", "only events after this: a duration (10m), a time (RFC 3339, or a date), or a sequence number")
	limit := fs.Int("limit", 50, "at most this many of the newest matching events (0: all that are kept)")
	_ = cmd.RegisterFlagCompletionFunc("host", completeHosts)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		if *limit < 0 {
			return usagef("--limit must be 0 or more")
		}
		q := api.EventQuery{Host: *host, Limit: *limit}
		for _, k := range *kinds {
			if k = strings.TrimSpace(k); k != "" {
				if !kindRE.MatchString(k) {
					return usagef("--kind %q is not an event kind (letters and digits: HostDown, FencingSucceeded, ...)", k)
				}
				q.Kinds = append(q.Kinds, k)
			}
		}
		var err error
		if q.Since, q.After, err = parseSince(*since, now()); err != nil {
			return err
		}
		cl, err := af.client()
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		evs, err := cl.Events(ctx, q, af.consistent)
		local := false
		if isOldServer(err) {
			// An iha-leader older than this iha filters by seq and host
			// only: the kinds and the time are applied here.
			info(e.stderr, "(the API predates --kind and time filters: filtering here)")
			local = true
			evs, err = cl.Events(ctx, api.EventQuery{Since: q.Since, Host: q.Host}, af.consistent)
			if err == nil {
				evs.Events = filterEvents(evs.Events, q)
			}
		}
		if err != nil {
			return exit(fail(e.stderr, "events", err))
		}
		info(e.stderr, "%s", freshness(evs.Freshness))
		if o.structured() && !*follow {
			o.printWhole(e.stdout, evs)
			return nil
		}
		st := style{isTerminal(e.stdout)}
		t := newTable(o, st, eventColumns(o.format == outWide))
		print := func(ev api.Event) {
			switch o.format {
			case outJSON: // one JSON object per line while following (JSON Lines)
				printJSONLine(e.stdout, ev)
			case outYAML:
				fmt.Fprintln(e.stdout, "---")
				printYAML(e.stdout, ev)
			default:
				t.writeRow(e.stdout, ev)
			}
		}
		if !*follow {
			t.render(e.stdout, evs.Events)
			t.noteCut(e.stderr)
			return nil
		}
		t.stream(evs.Events)
		if !o.structured() {
			t.writeHeader(e.stdout)
		}
		for _, ev := range evs.Events {
			print(ev)
		}
		sq := api.EventQuery{Since: evs.Next, Host: q.Host, Kinds: q.Kinds}
		if local {
			sq.Kinds = nil
		}
		fn := func(ev api.Event) error {
			if (api.EventQuery{Kinds: q.Kinds}).Match(ev) {
				print(ev)
			}
			return nil
		}
		err = cl.StreamQuery(ctx, sq, fn)
		if isOldServer(err) && len(sq.Kinds) > 0 {
			sq.Kinds = nil
			err = cl.StreamQuery(ctx, sq, fn)
		}
		if err != nil && ctx.Err() == nil {
			return exit(fail(e.stderr, "events", err))
		}
		return nil
	}
	return cmd
}

// kindRE is what an event kind looks like (as the API checks it).
var kindRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{0,63}$`)

// isOldServer reports whether err is an API that does not know the kind or
// after parameters (an iha-leader older than this iha refuses them as
// unknown).
func isOldServer(err error) bool {
	var se *api.StatusError
	return errors.As(err, &se) && se.Code == 400 && (se.Parameter == "kind" || se.Parameter == "after") &&
		strings.HasPrefix(se.Message, "unknown parameter")
}

func filterEvents(evs []api.Event, q api.EventQuery) []api.Event {
	out := evs[:0:0]
	for _, e := range evs {
		if q.Match(e) {
			out = append(out, e)
		}
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out
}

// parseSince reads --since: a sequence number, a duration before now
// (with d for days), or a time.
func parseSince(s string, now time.Time) (seq uint64, after time.Time, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, time.Time{}, nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return n, time.Time{}, nil
	}
	if strings.HasSuffix(s, "d") {
		if n, err := strconv.ParseFloat(strings.TrimSuffix(s, "d"), 64); err == nil && n > 0 {
			return 0, now.Add(-time.Duration(n * 24 * float64(time.Hour))), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return 0, time.Time{}, usagef("--since %s: a duration must be positive (10m: the last ten minutes)", s)
		}
		return 0, now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return 0, t, nil
		}
	}
	return 0, time.Time{}, usagef("--since %q: want a duration (10m, 2h, 3d), a time (2026-03-01T03:00:00Z, 2026-03-01) or an event sequence number", s)
}
