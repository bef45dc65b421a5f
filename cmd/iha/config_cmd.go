package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"

	"github.com/ihaproject/iha/pkg/config"
)

func init() {
	register("config", command{
		summary: "check the configuration files: iha config check [--dir D] [--json]",
		run:     runConfig,
	})
}

// configEnv is the environment `iha config` reads; tests replace it.
var configEnv = config.OSEnv

func runConfig(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: iha config check [--dir D] [--json]")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return 0
		}
		return 2
	}
	fs := flag.NewFlagSet("iha config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "read config.yaml, clouds.yaml, secure.yaml and fencing.yaml from `D` (the path environment variables still win)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: iha config check [--dir D] [--json]\n\nLoads the whole configuration as iha-leader would and prints a summary, or every problem.\nExit status: 0 valid, 1 problems, 2 usage.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "iha config check: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}

	// Warnings are printed in the summary; the logger would repeat them.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var cfg *config.Config
	var err error
	if *dir != "" {
		cfg, err = config.LoadDir(*dir, configEnv(), quiet)
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
	if *asJSON {
		return printCheckJSON(stdout, stderr, cfg, problems)
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

func printCheckJSON(stdout, stderr io.Writer, cfg *config.Config, problems *config.Problems) int {
	res := checkResult{OK: problems == nil, Warnings: []string{}}
	code := 0
	if problems != nil {
		code = 1
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
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		fmt.Fprintf(stderr, "iha config check: %v\n", err)
		return 1
	}
	return code
}
