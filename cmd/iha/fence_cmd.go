package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/drivers"
	"github.com/ihaproject/iha/pkg/config"
)

func init() { register(newFenceCmd) }

// fenceEnv is the environment `iha fence` reads; tests replace it.
var fenceEnv = config.OSEnv

const fenceExit = `Exit status: 0 ok; 1 a host failed, or the configuration is invalid; 2 usage; 3 the BMC
could not be read (fence status).`

func newFenceCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fence",
		Short: "read BMC power states, check BMC credentials (never changes power)",
		Long: `Commands that read the computes' BMCs through the fencing drivers configured in
fencing.yaml, as iha-leader would reach them. They only ever read the power state.

` + fenceExit,
		Example: `  iha fence status compute-3 --dir /etc/iha
  iha fence test --all --dir /etc/iha`,
		RunE: groupRunE(e),
	}
	cmd.AddCommand(newFenceStatusCmd(e), newFenceTestCmd(e))
	return cmd
}

// fenceFlags are the flags common to both subcommands.
type fenceFlags struct {
	dir      string
	timeout  time.Duration
	parallel int
	all      bool
	verbose  bool
}

func addFenceFlags(cmd *cobra.Command, withTest bool) *fenceFlags {
	ff := &fenceFlags{}
	fs := cmd.Flags()
	fs.StringVar(&ff.dir, "dir", "", "read config.yaml and fencing.yaml (and the others) from `D`; the path environment variables still win")
	fs.DurationVar(&ff.timeout, "timeout", 60*time.Second, "give up on a host after `T` (retries included)")
	fs.BoolVarP(&ff.verbose, "verbose", "v", false, "log driver activity to stderr")
	if withTest {
		fs.BoolVar(&ff.all, "all", false, "test every host of fencing.yaml")
		fs.IntVar(&ff.parallel, "parallel", 8, "test at most `N` hosts at a time")
	}
	_ = cmd.MarkFlagDirname("dir")
	return ff
}

func (ff *fenceFlags) check(withTest bool) error {
	if ff.timeout <= 0 || (withTest && ff.parallel < 1) {
		return usagef("--timeout must be positive and --parallel at least 1")
	}
	return nil
}

var fenceColumns = []column[fenceResult]{
	{name: "HOST", get: func(r fenceResult) string { return r.Host }},
	{name: "AGENT", get: func(r fenceResult) string { return r.Agent }},
	{name: "ADDRESS", get: func(r fenceResult) string { return r.Address }},
	{name: "RESULT", get: func(r fenceResult) string { return r.Result }, paint: func(st style, v string) string {
		if v == "FAIL" {
			return st.bad(v)
		}
		return v
	}},
	{name: "POWER", get: func(r fenceResult) string { return r.Power }},
	{name: "LATENCY", get: func(r fenceResult) string {
		if r.LatencyMS <= 0 {
			return ""
		}
		return fmt.Sprintf("%.0fms", r.LatencyMS)
	}},
	{name: "ERROR", wide: true, get: func(r fenceResult) string { return r.Error }},
}

var fenceFields = []field[fenceResult]{
	{"host", func(r fenceResult) string { return r.Host }},
	{"agent", func(r fenceResult) string { return r.Agent }},
	{"address", func(r fenceResult) string { return r.Address }},
	{"ok", func(r fenceResult) string { return strconv.FormatBool(r.OK) }},
	{"result", func(r fenceResult) string { return r.Result }},
	{"power", func(r fenceResult) string { return r.Power }},
	{"latency-ms", func(r fenceResult) string { return fmt.Sprintf("%.0f", r.LatencyMS) }},
	{"error", func(r fenceResult) string { return r.Error }},
}

func newFenceStatusCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status HOST",
		Short: "read HOST's power state through its configured fencing driver; never changes it",
		Long: `Reads the power state of HOST's BMC through the driver fencing.yaml configures for it (the
entry is found as iha-leader finds it: the short name before the first dot). Never changes power.

` + fenceExit,
		Example: `  iha fence status compute-3 --dir /etc/iha
  iha fence status compute-3 -o value -c power`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one HOST")
			}
			return nil
		},
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	ff := addFenceFlags(cmd, false)
	o := addOutput(cmd, "field", fieldNames(fenceFields), outTable, outJSON, outYAML, outValue)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		if err := ff.check(false); err != nil {
			return err
		}
		return exit(fenceStatus(cmd.Context(), e, ff, o, args[0]))
	}
	return cmd
}

func newFenceTestCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "test (--all | HOST...)",
		Short: "check the BMC credentials and reachability of every (or the named) configured host",
		Long: `Reads the power state of every host of fencing.yaml (--all) or of the named ones,
concurrently, as iha-leader's fencing would reach them: wrong credentials, unreachable BMCs,
certificates and missing entries show up before a failure needs them. Never changes power.

` + fenceExit,
		Example: `  iha fence test --all --dir /etc/iha
  iha fence test compute-3 compute-4 --parallel 2
  iha fence test --all -o json | jq '.hosts[] | select(.ok | not)'`,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	ff := addFenceFlags(cmd, true)
	o := addOutput(cmd, "column", columnNames(fenceColumns), allFormats...)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		if err := ff.check(true); err != nil {
			return err
		}
		if ff.all == (len(args) > 0) {
			return usagef("give either --all or HOST names")
		}
		return exit(fenceTest(cmd.Context(), e, ff, o, args))
	}
	return cmd
}

// loadFencing reads the configuration the way iha-leader does and returns
// what fencing needs. It is the one place that knows how config is loaded.
func loadFencing(dir string, logger *slog.Logger) (config.Fencing, config.Settings, error) {
	var cfg *config.Config
	var err error
	if dir != "" {
		cfg, err = config.LoadDir(dir, fenceEnv(), logger)
	} else {
		cfg, err = config.Load(fenceEnv(), logger)
	}
	if err != nil {
		return config.Fencing{}, config.Settings{}, err
	}
	return cfg.Fencing, cfg.Settings, nil
}

// fenceRegistry builds the registry; tests may replace it.
var fenceRegistry = func(f config.Fencing, s config.Settings, logger *slog.Logger) (*fence.Registry, error) {
	return drivers.Registry(f, s, logger)
}

func fenceSetup(name string, ff *fenceFlags, stderr io.Writer) (*fence.Registry, int) {
	level := slog.LevelError
	if ff.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	quiet := slog.New(slog.DiscardHandler) // `iha config check` reports config warnings
	f, s, err := loadFencing(ff.dir, quiet)
	if err != nil {
		fmt.Fprintf(stderr, "%s: configuration: %v\n(run `iha config check` for details)\n", name, err)
		return nil, 1
	}
	r, _ := fenceRegistry(f, s, logger) // bad entries answer with their own error
	return r, -1
}

// fenceResult is one host's line of output.
type fenceResult struct {
	Host      string  `json:"host"`
	Agent     string  `json:"agent"`
	Address   string  `json:"address"`
	OK        bool    `json:"ok"`
	Result    string  `json:"result"`
	Power     string  `json:"power_state"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
}

// probe reads the power state of one host: the only BMC operation `iha
// fence` performs.
func fenceProbe(ctx context.Context, hi fence.HostInfo, timeout time.Duration) fenceResult {
	res := fenceResult{Host: hi.Name, Agent: hi.Agent, Address: hi.Address, Power: fence.PowerUnknown.String()}
	if hi.Err != nil {
		res.Result, res.Error = "FAIL", hi.Err.Error()
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	st, err := hi.Fencer.PowerState(ctx)
	res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		res.Result, res.Error = "FAIL", err.Error()
		return res
	}
	res.OK, res.Result, res.Power = true, "ok", st.String()
	if hi.Agent == config.AgentNoop {
		res.Result = "ok (noop)"
	}
	return res
}

func fenceStatus(ctx context.Context, e *env, ff *fenceFlags, o *output, host string) int {
	const name = "iha fence status"
	r, code := fenceSetup(name, ff, e.stderr)
	if code >= 0 {
		return code
	}
	var hi fence.HostInfo
	fc, err := r.Fencer(host)
	if err != nil {
		hi = fence.HostInfo{Name: host, Err: err}
		var fe *fence.Error
		if errors.As(err, &fe) {
			hi.Agent = fe.Driver
		}
	} else {
		for _, h := range r.Hosts() {
			if h.Fencer == fc {
				hi = h
				break
			}
		}
	}
	res := fenceProbe(ctx, hi, ff.timeout)
	switch {
	case o.structured():
		o.printWhole(e.stdout, res)
	case o.format == outValue || len(o.columns) > 0:
		printFields(e.stdout, o, style{}, fenceFields, res)
	case res.OK:
		fmt.Fprintf(e.stdout, "%s: power %s (%s %s, %.0f ms)\n", res.Host, res.Power, res.Agent, res.Address, res.LatencyMS)
	default:
		fmt.Fprintf(e.stdout, "%s: %s\n", res.Host, res.Error)
	}
	switch {
	case res.OK:
		return 0
	case hi.Err != nil:
		return 1 // not configured, or configured wrongly
	default:
		return 3 // the BMC could not be read
	}
}

func fenceTest(ctx context.Context, e *env, ff *fenceFlags, o *output, pos []string) int {
	const name = "iha fence test"
	stdout := e.stdout
	r, code := fenceSetup(name, ff, e.stderr)
	if code >= 0 {
		return code
	}
	var targets []fence.HostInfo
	if ff.all {
		targets = r.Hosts()
	} else {
		all := r.Hosts()
		for _, h := range pos {
			hi := fence.HostInfo{Name: h}
			fc, err := r.Fencer(h)
			if err != nil {
				hi.Err = err
			}
			for _, c := range all {
				if err == nil && c.Fencer == fc {
					hi = c
				}
			}
			targets = append(targets, hi)
		}
	}

	results := make([]fenceResult, len(targets))
	sem := make(chan struct{}, ff.parallel)
	var wg sync.WaitGroup
	for i, hi := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = fenceResult{Host: hi.Name, Agent: hi.Agent, Address: hi.Address,
					Result: "FAIL", Power: fence.PowerUnknown.String(), Error: ctx.Err().Error()}
				return
			}
			defer func() { <-sem }()
			results[i] = fenceProbe(ctx, hi, ff.timeout)
		}()
	}
	wg.Wait()

	failed := 0
	for _, res := range results {
		if !res.OK {
			failed++
		}
	}
	switch {
	case o.structured():
		o.printWhole(stdout, struct {
			Hosts  []fenceResult `json:"hosts"`
			Failed int           `json:"failed"`
		}{results, failed})
	case o.format == outValue:
		newTable(o, style{}, fenceColumns).render(stdout, results)
	default:
		t := newTable(o, style{isTerminal(stdout)}, fenceColumns)
		t.render(stdout, results)
		if o.format == outTable {
			// Errors are long; they go under the table, one per failed host.
			for _, res := range results {
				if res.Error != "" {
					fmt.Fprintf(stdout, "%s: %s\n", res.Host, res.Error)
				}
			}
		}
		fmt.Fprintf(stdout, "%d host(s), %d failed\n", len(results), failed)
	}
	if failed > 0 {
		return 1
	}
	return 0
}
