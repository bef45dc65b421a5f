package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/pkg/config"
)

func init() { register(newConfigCmd) }

// configEnv is the environment `iha config` reads; tests replace it.
var configEnv = config.OSEnv

// groupRunE is the RunE of a command that only groups subcommands: alone
// it prints its help to stderr and exits 2; with an unknown subcommand it
// says so.
func groupRunE(e *env) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 1 && args[0] == "help" { // iha fence help, as the first CLI took it
			return cmd.Help()
		}
		if len(args) > 0 {
			msg := fmt.Sprintf("unknown subcommand %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += " (did you mean " + strings.Join(s, " or ") + "?)"
			}
			return usagef("%s", msg)
		}
		cmd.SetOut(e.stderr)
		_ = cmd.Help()
		return exitCode(exitUsage)
	}
}

func newConfigCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "check the configuration files",
		Long: `Commands on iha-leader's configuration files (config.yaml, clouds.yaml, secure.yaml,
fencing.yaml, segments.yaml), read as iha-leader reads them.`,
		Example: `  iha config check --dir /etc/iha`,
		RunE:    groupRunE(e),
	}
	cmd.AddCommand(newConfigCheckCmd(e))
	return cmd
}

var checkFields = []field[checkResult]{
	{"ok", func(r checkResult) string { return strconv.FormatBool(r.OK) }},
	{"problems", func(r checkResult) string { return strconv.Itoa(len(r.Problems)) }},
	{"warnings", func(r checkResult) string { return strconv.Itoa(len(r.Warnings)) }},
}

func newConfigCheckCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "load the whole configuration as iha-leader would, and print a summary or every problem",
		Long: `Loads config.yaml, clouds.yaml, secure.yaml, fencing.yaml and segments.yaml as iha-leader
does at start (same paths, same environment variables: INSTANCEHA_CONFIG_PATH,
CLOUDS_CONFIG_PATH, SECURE_CONFIG_PATH, FENCING_CONFIG_PATH, SEGMENTS_CONFIG_PATH, OS_CLOUD),
builds the fencing drivers (files, certificates, URLs; no BMC is contacted), and prints a summary
of what differs from the defaults, or every problem at once, each naming its file, key and what
is allowed. Secrets are never printed.

Exit status: 0 valid; 1 problems; 2 usage.`,
		Example: `  iha config check --dir /etc/iha
  INSTANCEHA_CONFIG_PATH=/tmp/config.yaml iha config check
  iha config check --dir /etc/iha -o json | jq .problems`,
		Args:              noArgs("config check", ""),
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	dir := cmd.Flags().String("dir", "", "read config.yaml, clouds.yaml, secure.yaml and fencing.yaml from `D` (the path environment variables still win)")
	_ = cmd.MarkFlagDirname("dir")
	o := addOutput(cmd, "field", fieldNames(checkFields), outTable, outJSON, outYAML, outValue)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		return exit(runConfigCheck(e, *dir, o))
	}
	return cmd
}

func runConfigCheck(e *env, dir string, o *output) int {
	stdout, stderr := e.stdout, e.stderr
	// Warnings are printed in the summary; the logger would repeat them.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var cfg *config.Config
	var err error
	if dir != "" {
		cfg, err = config.LoadDir(dir, configEnv(), quiet)
	} else {
		cfg, err = config.Load(configEnv(), quiet)
	}
	var problems *config.Problems
	if err != nil && !errors.As(err, &problems) {
		fmt.Fprintf(stderr, "iha config check: %v\n", err)
		return 1
	}
	// Build the fencing drivers as iha-leader does at start (files they
	// read, certificates, URLs), so that what the leader would refuse is
	// refused here too. No BMC is contacted.
	if problems == nil {
		if _, rerr := fenceRegistry(cfg.Fencing, cfg.Settings, quiet); rerr != nil {
			problems = &config.Problems{Items: []config.Problem{{File: cfg.Files.Fencing,
				Reason: "iha-leader would refuse to start: " + rerr.Error()}}, Warnings: cfg.Warnings}
		}
	}
	if o.format != outTable || len(o.columns) > 0 {
		res := newCheckResult(cfg, problems)
		if o.structured() {
			o.printWhole(stdout, res)
		} else {
			printFields(stdout, o, style{}, checkFields, res)
		}
		if problems != nil {
			return 1
		}
		return 0
	}
	if problems != nil {
		fmt.Fprintf(stdout, "configuration has %d problem(s):\n", len(problems.Items))
		for _, p := range problems.Items {
			fmt.Fprintf(stdout, "  %s\n", p)
		}
		printWarnings(stdout, problems.Warnings)
		return 1
	}
	printSummary(stdout, cfg)
	return 0
}

func printSummary(w io.Writer, cfg *config.Config) {
	fmt.Fprintln(w, "configuration OK")
	fmt.Fprintln(w, "files:")
	fmt.Fprintf(w, "  config   %s\n  clouds   %s\n  secure   %s\n  fencing  %s\n  segments %s\n", cfg.Files.Config, cfg.Files.Clouds, cfg.Files.Secure, cfg.Files.Fencing, orDash(cfg.Files.Segments))
	c := cfg.Cloud
	if c.NoAuth != nil {
		fmt.Fprintf(w, "cloud: %s (noauth) compute %s image %s region %s\n", c.Name, c.NoAuth.ComputeURL, orDash(c.NoAuth.ImageURL), c.RegionName)
	} else {
		fmt.Fprintf(w, "cloud: %s auth %s region %s interface %s\n", c.Name, c.AuthURL, c.RegionName, c.Interface)
	}
	fmt.Fprintf(w, "kdump UDP port: %d\n", cfg.UDPPort)
	changes := cfg.Settings.Changes()
	if len(changes) == 0 {
		fmt.Fprintln(w, "settings: all defaults")
	} else {
		fmt.Fprintln(w, "settings different from the defaults:")
		for _, ch := range changes {
			fmt.Fprintf(w, "  %s = %s (default %s)\n", ch.Key, orDash(ch.Value), orDash(ch.Default))
		}
	}
	byAgent := fencingByAgent(cfg.Fencing)
	fmt.Fprintf(w, "fencing: %d host(s)\n", len(cfg.Fencing.Hosts))
	for _, agent := range sortedKeys(byAgent) {
		fmt.Fprintf(w, "  %-8s %s\n", agent+":", strings.Join(byAgent[agent], ", "))
	}
	printSegments(w, cfg.Settings.Segments)
	printWarnings(w, cfg.Warnings)
}

// printSegments summarises the segments file: which hosts are grouped,
// how each group recovers, its spares. Aggregates may add segments at run
// time; the check does not ask Nova.
func printSegments(w io.Writer, segs config.Segments) {
	if segs.Empty() {
		fmt.Fprintln(w, "segments: none in the file (every host recovers by InstanceHA's rules; Nova aggregates tagged "+config.AggregateSegmentKey+" may add some)")
		return
	}
	fmt.Fprintf(w, "segments: %d in the file (Nova aggregates tagged %s may add more)\n", len(segs.Items), config.AggregateSegmentKey)
	for _, sg := range segs.Items {
		state := "enabled"
		if !sg.Enabled {
			state = "DISABLED (its hosts recover by InstanceHA's rules)"
		}
		fmt.Fprintf(w, "  %s: %s, %s; %d host(s): %s", sg.Name, sg.RecoveryMethod, state, len(sg.Hosts), strings.Join(sg.Hosts, ", "))
		if len(sg.ReservedHosts) > 0 {
			fmt.Fprintf(w, "; reserved: %s", strings.Join(sg.ReservedHosts, ", "))
		}
		if sg.Maintenance != nil {
			fmt.Fprintf(w, "; recovered_host_maintenance %t", *sg.Maintenance)
		}
		fmt.Fprintln(w)
	}
}

func printWarnings(w io.Writer, warnings []string) {
	if len(warnings) == 0 {
		return
	}
	fmt.Fprintf(w, "warnings (%d):\n", len(warnings))
	for _, x := range warnings {
		fmt.Fprintf(w, "  %s\n", x)
	}
}

func fencingByAgent(f config.Fencing) map[string][]string {
	out := map[string][]string{}
	for _, h := range f.Hosts {
		out[h.Agent] = append(out[h.Agent], h.Name)
	}
	return out
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// checkResult is the JSON form of `iha config check --json`.
type checkResult struct {
	OK       bool                `json:"ok"`
	Files    *config.Files       `json:"files,omitempty"`
	Cloud    *config.Cloud       `json:"cloud,omitempty"`
	UDPPort  int                 `json:"udp_port,omitempty"`
	Settings []config.Change     `json:"changed_settings,omitempty"`
	Fencing  map[string][]string `json:"fencing,omitempty"`
	Segments []config.Segment    `json:"segments,omitempty"`
	Problems []problemJSON       `json:"problems,omitempty"`
	Warnings []string            `json:"warnings"`
}

type problemJSON struct {
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Host    string `json:"host,omitempty"`
	Key     string `json:"key,omitempty"`
	Value   string `json:"value,omitempty"`
	Reason  string `json:"reason"`
	Allowed string `json:"allowed,omitempty"`
	Text    string `json:"text"`
}

func newCheckResult(cfg *config.Config, problems *config.Problems) checkResult {
	res := checkResult{OK: problems == nil, Warnings: []string{}}
	if problems != nil {
		for _, p := range problems.Items {
			res.Problems = append(res.Problems, problemJSON{p.File, p.Line, p.Host, p.Key, p.Value, p.Reason, p.Allowed, p.String()})
		}
		if problems.Warnings != nil {
			res.Warnings = problems.Warnings
		}
	} else {
		res.Files, res.Cloud, res.UDPPort = &cfg.Files, &cfg.Cloud, cfg.UDPPort
		res.Settings = cfg.Settings.Changes()
		res.Fencing = fencingByAgent(cfg.Fencing)
		res.Segments = cfg.Settings.Segments.Items
		if cfg.Warnings != nil {
			res.Warnings = cfg.Warnings
		}
	}
	return res
}
