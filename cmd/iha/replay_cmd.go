package main

// `iha replay LOG [--config DIR]`: this build's verdict, admission and
// planning rules over a decision log, offline, and what they decide
// differently from what the log recorded.

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
)

func init() { register(newReplayCmd) }

// replayEnv is the environment `iha replay --config` reads (IHA_<KEY>
// overrides, as iha-leader); tests replace it.
var replayEnv = config.OSEnv

// decisionText is one side of a replay row: the decision in a few words.
func decisionText(d *leader.Decision) string {
	if d == nil {
		return ""
	}
	switch d.Kind {
	case "verdict":
		return d.Verdict
	case "plan":
		s := fmt.Sprintf("%d server(s)", len(d.Servers))
		if d.Reserved != "" {
			s += ", reserved host " + d.Reserved
		}
		if len(d.Targets) > 0 {
			s += " to " + strings.Join(d.Targets, ",")
		}
		return s
	}
	if d.Verdict != "" {
		return "verdict " + d.Verdict
	}
	return d.Detail
}

func rowSame(r leader.ReplayRow) string {
	if r.Differs == "" {
		return "same"
	}
	return r.Differs
}

// replayColumns are `iha replay`'s columns; -o wide adds the whole times,
// the servers and why a differing decision was taken.
var replayColumns = []column[leader.ReplayRow]{
	{name: "AT", get: func(r leader.ReplayRow) string { return clock(r.At) }},
	{name: "TIME", wide: true, get: func(r leader.ReplayRow) string { return whenOrEmpty(r.At) }},
	{name: "HOST", get: func(r leader.ReplayRow) string { return r.Host }},
	{name: "KIND", get: func(r leader.ReplayRow) string { return r.Kind }},
	{name: "DIFFERS", flex: true, min: len("only in the recording"), get: rowSame, paint: func(st style, s string) string {
		if s == "same" {
			return st.good(s)
		}
		return st.bad(s)
	}},
	{name: "RECORDED", flex: true, get: func(r leader.ReplayRow) string { return decisionText(r.Recorded) }},
	{name: "REPLAYED", flex: true, get: func(r leader.ReplayRow) string { return decisionText(r.Replayed) }},
	{name: "SERVERS", wide: true, get: func(r leader.ReplayRow) string {
		if r.Replayed != nil {
			return strings.Join(r.Replayed.Servers, ",")
		}
		if r.Recorded != nil {
			return strings.Join(r.Recorded.Servers, ",")
		}
		return ""
	}},
	{name: "WHY", wide: true, flex: true, get: func(r leader.ReplayRow) string { return r.Why }},
}

// logFilesOf expands the LOG arguments: a decision log directory (its
// files in the order written), or files named one by one.
func logFilesOf(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("decision log %s: %w", a, err)
		}
		if !st.IsDir() {
			files = append(files, a)
			continue
		}
		fs, err := leader.LogFiles(a)
		if err != nil {
			return nil, fmt.Errorf("decision log %s: %w", a, err)
		}
		if len(fs) == 0 {
			return nil, fmt.Errorf("decision log %s: no decisions.log nor decisions-*.log.gz in this directory (is it DECISION_LOG's?)", a)
		}
		files = append(files, fs...)
	}
	return files, nil
}

func newReplayCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replay LOG... [--config DIR] [--set KEY=VALUE]...",
		Short: "run this build's rules over a decision log offline; show what they decide otherwise",
		Long: `Reads a decision log (DECISION_LOG: a directory, or some of its files, oldest first) and runs
this build's reconciler over it offline, in shadow mode: the same verdict table, admission gates
(THRESHOLD, tags, segments, reserved hosts) and evacuation plans as iha-leader, fed with the
Nova service rows, mesh changes, kdump notices and Nova answers the log recorded, on the log's
clock. Nothing is contacted: no Nova, no BMC, no API.

It prints each decision (a verdict other than healthy, fence, skip, resume, plan, reenable)
with its time, beside the one the log recorded, and what differs: a decision only one side
took, another verdict, another cycle, other servers or targets, and the sentence the replayed
decision rests on (-o wide, WHY).

Without --config the replay runs with the configuration the log recorded in force; with
--config DIR it reads DIR/config.yaml (and DIR/segments.yaml when present) as iha-leader would.
--set KEY=VALUE changes one key over either, parsed and checked as in config.yaml. The keys
that differ from the recording are listed. A rule or key change can so be judged against past
incidents before it ships. --diff lists only the decisions that differ.

Exit status: 0 the replay decides as recorded; 1 it differs, or the log or the configuration
cannot be read; 2 usage.`,
		Example: `  iha replay /var/lib/iha/decisions
  iha replay /var/lib/iha/decisions --set THRESHOLD=20 --diff
  iha replay /var/lib/iha/decisions --config ./candidate     # a whole candidate config.yaml
  iha replay decisions-20260301T030000Z.log.gz -o wide
  iha replay /var/lib/iha/decisions -o json | jq '.rows[] | select(.differs)'`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("name a decision log: its directory (DECISION_LOG) or some of its files")
			}
			return nil
		},
	}
	o := addOutput(cmd, "column", columnNames(replayColumns), allFormats...)
	cfgDir := cmd.Flags().String("config", "", "replay with DIR/config.yaml (and segments.yaml) instead of the configuration recorded")
	sets := cmd.Flags().StringArray("set", nil, "KEY=VALUE: replay with this value of a config.yaml key (repeat for several)")
	onlyDiff := cmd.Flags().Bool("diff", false, "list only the decisions that differ (-o json and yaml always hold all)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		files, err := logFilesOf(args)
		if err != nil {
			fmt.Fprintf(e.stderr, "iha replay: %v\n", err)
			return exit(exitUnhealthy)
		}
		var opts leader.ReplayOptions
		for _, kv := range *sets {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return usagef("--set %q: want KEY=VALUE, such as THRESHOLD=20", kv)
			}
			if opts.Set == nil {
				opts.Set = map[string]string{}
			}
			opts.Set[strings.TrimSpace(k)] = v
		}
		if *cfgDir != "" {
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			s, _, err := config.LoadSettingsDir(*cfgDir, replayEnv(), quiet)
			if err != nil {
				fmt.Fprintf(e.stderr, "iha replay: --config %s: %v\n", *cfgDir, err)
				return exit(exitUnhealthy)
			}
			opts.Settings = &s
		}
		res, err := leader.Replay(cmd.Context(), files, opts)
		if err != nil {
			fmt.Fprintf(e.stderr, "iha replay: %v\n", err)
			return exit(exitUnhealthy)
		}
		st := style{isTerminal(e.stdout)}
		switch {
		case o.structured():
			o.printWhole(e.stdout, res)
		default:
			if o.format == outTable || o.format == outWide {
				printReplaySummary(e.stdout, res, *cfgDir, len(*sets) > 0, st)
			}
			rows := res.Rows
			if *onlyDiff {
				rows = nil
				for _, r := range res.Rows {
					if r.Differs != "" {
						rows = append(rows, r)
					}
				}
			}
			if len(rows) > 0 || o.format != outValue {
				if o.format == outTable || o.format == outWide {
					fmt.Fprintln(e.stdout)
				}
				t := newTable(o, st, replayColumns)
				t.render(e.stdout, rows)
				t.noteCut(e.stderr)
			}
		}
		if res.Differences > 0 {
			return exit(exitUnhealthy)
		}
		return nil
	}
	return cmd
}

// printReplaySummary writes what was replayed and the verdict of the
// comparison.
func printReplaySummary(w io.Writer, res *leader.ReplayResult, cfgDir string, set bool, st style) {
	names := make([]string, len(res.Files))
	for i, f := range res.Files {
		names[i] = filepath.Base(f)
	}
	wrap(w, "log", fmt.Sprintf("%d file(s): %s", len(res.Files), strings.Join(names, ", ")))
	wrap(w, "span", fmt.Sprintf("%s to %s, %d poll cycles, %d leadership term(s)", when(res.From), when(res.To), res.Cycles, res.Terms))
	from := "--set"
	if cfgDir != "" {
		from = cfgDir
	}
	switch {
	case cfgDir == "" && !set:
		wrap(w, "config", "as recorded")
	case len(res.Config) == 0:
		wrap(w, "config", from+": no key differs from the recording")
	default:
		var ch []string
		for _, c := range res.Config {
			ch = append(ch, fmt.Sprintf("%s %s → %s", c.Key, c.Recorded, c.Replayed))
		}
		wrap(w, "config", from+": "+strings.Join(ch, ", "))
	}
	verdict := st.good("the same decisions at the same times")
	if res.Differences > 0 {
		verdict = st.bad(strconv.Itoa(res.Differences) + " differ")
	}
	wrap(w, "decisions", fmt.Sprintf("%d recorded, %d replayed: %s", len(res.Recorded), len(res.Replayed), verdict))
	if len(res.Missing) > 0 {
		wrap(w, "missing", "the replayed rules read what the log does not hold (answered as a Nova failure): "+strings.Join(res.Missing, ", "))
	}
	for _, n := range res.Notes {
		wrap(w, "note", n)
	}
}
