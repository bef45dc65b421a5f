package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/drivers"
	"github.com/ihaproject/iha/pkg/config"
)

func init() {
	register("fence", command{
		summary: "read BMC power state or check BMC credentials: iha fence status HOST | iha fence test --all",
		run:     runFence,
	})
}

// fenceEnv is the environment `iha fence` reads; tests replace it.
var fenceEnv = config.OSEnv

const fenceUsage = `usage:
  iha fence status HOST [--dir D] [--json] [--timeout T]
      read HOST's power state through its configured fencing driver; never changes it
  iha fence test (--all | HOST...) [--dir D] [--json] [--parallel N] [--timeout T]
      check the BMC credentials and reachability of every (or the named) configured host,
      concurrently, by reading the power state; never changes it

exit status: 0 ok, 1 a host failed or the configuration is invalid, 2 usage, 3 BMC unreachable (status)`

func runFence(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, fenceUsage)
		return 2
	}
	switch args[0] {
	case "status":
		return fenceStatus(ctx, args[1:], stdout, stderr)
	case "test":
		return fenceTest(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, fenceUsage)
		return 0
	}
	fmt.Fprintf(stderr, "iha fence: unknown subcommand %q\n%s\n", args[0], fenceUsage)
	return 2
}

// fenceFlags are the flags common to both subcommands.
type fenceFlags struct {
	dir      string
	asJSON   bool
	timeout  time.Duration
	parallel int
	all      bool
	verbose  bool
}

func parseFenceFlags(name string, args []string, stderr io.Writer, withTest bool) (*fenceFlags, []string, int) {
	ff := &fenceFlags{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&ff.dir, "dir", "", "read config.yaml and fencing.yaml (and the others) from `D`; the path environment variables still win")
	fs.BoolVar(&ff.asJSON, "json", false, "print the result as JSON")
	fs.DurationVar(&ff.timeout, "timeout", 60*time.Second, "give up on a host after `T` (retries included)")
	fs.BoolVar(&ff.verbose, "v", false, "log driver activity to stderr")
	if withTest {
		fs.BoolVar(&ff.all, "all", false, "test every host of fencing.yaml")
		fs.IntVar(&ff.parallel, "parallel", 8, "test at most `N` hosts at a time")
	}
	fs.Usage = func() { fmt.Fprintln(stderr, fenceUsage); fs.PrintDefaults() }
	// Accept flags after positional arguments too (iha fence status HOST --json).
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, 0
			}
			return nil, nil, 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if ff.timeout <= 0 || (withTest && ff.parallel < 1) {
		fmt.Fprintf(stderr, "%s: --timeout must be positive and --parallel at least 1\n", name)
		return nil, nil, 2
	}
	return ff, pos, -1
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

func fenceStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "iha fence status"
	ff, pos, code := parseFenceFlags(name, args, stderr, false)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "%s: want exactly one HOST\n%s\n", name, fenceUsage)
		return 2
	}
	r, code := fenceSetup(name, ff, stderr)
	if code >= 0 {
		return code
	}
	host := pos[0]
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
	if ff.asJSON {
		if err := fenceWriteJSON(stdout, res); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 1
		}
	} else if res.OK {
		fmt.Fprintf(stdout, "%s: power %s (%s %s, %.0f ms)\n", res.Host, res.Power, res.Agent, res.Address, res.LatencyMS)
	} else {
		fmt.Fprintf(stdout, "%s: %s\n", res.Host, res.Error)
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

func fenceTest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "iha fence test"
	ff, pos, code := parseFenceFlags(name, args, stderr, true)
	if code >= 0 {
		return code
	}
	if ff.all == (len(pos) > 0) {
		fmt.Fprintf(stderr, "%s: give either --all or HOST names\n%s\n", name, fenceUsage)
		return 2
	}
	r, code := fenceSetup(name, ff, stderr)
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
	if ff.asJSON {
		out := struct {
			Hosts  []fenceResult `json:"hosts"`
			Failed int           `json:"failed"`
		}{results, failed}
		if err := fenceWriteJSON(stdout, out); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 1
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tAGENT\tADDRESS\tRESULT\tPOWER\tLATENCY")
		for _, res := range results {
			latency := "-"
			if res.LatencyMS > 0 {
				latency = fmt.Sprintf("%.0fms", res.LatencyMS)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", res.Host, res.Agent, res.Address, res.Result, res.Power, latency)
		}
		_ = tw.Flush()
		// Errors are long; they go under the table, one per failed host.
		for _, res := range results {
			if res.Error != "" {
				fmt.Fprintf(stdout, "%s: %s\n", res.Host, res.Error)
			}
		}
		fmt.Fprintf(stdout, "%d host(s), %d failed\n", len(results), failed)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func fenceWriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
