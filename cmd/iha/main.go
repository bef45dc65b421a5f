// Command iha is the operator CLI of IHA: cluster status, hosts and their
// recovery, events, configuration and fencing checks.
//
// It is built on cobra (github.com/spf13/cobra), the framework of kubectl,
// gh, helm and etcdctl: operators already know its conventions (`iha help
// X`, `--help` everywhere, POSIX flags, `completion bash|zsh|fish`), and it
// generates the shell completions and the man pages from the same command
// tree that runs, so they cannot drift from the commands. (kong was the
// other candidate: tidier struct-tag definitions, but completion and man
// pages need third-party add-ons, and fewer operators have met it.)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ihaproject/iha/pkg/version"
)

// Exit codes of every command: scripts rely on them.
const (
	exitOK          = 0
	exitUnhealthy   = 1 // the thing asked about is unhealthy or failed, or the API refused
	exitUsage       = 2
	exitUnreachable = 3 // no API answered, or none knows a leader (a BMC, for iha fence)
)

// exitHelp is the part of every command's help that says what its exit
// status means.
const exitHelp = `Exit status: 0 ok, 1 unhealthy, failed or refused, 2 usage error,
3 no API (or no Raft leader) reachable.`

// env is one invocation of iha: its context and output streams. Every
// command is built afresh for each invocation (tests run many in one
// process).
type env struct {
	ctx            context.Context
	stdout, stderr io.Writer
}

// commandCtors build the subcommands; the init functions of the *_cmd.go
// files add to it, one file per command group.
var commandCtors []func(e *env) *cobra.Command

func register(ctor func(e *env) *cobra.Command) { commandCtors = append(commandCtors, ctor) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// exitCode is returned by a command that has printed what it had to say
// and only sets the exit status.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// exit turns a command's status into its RunE result.
func exit(code int) error {
	if code == exitOK {
		return nil
	}
	return exitCode(code)
}

// usageError is a mistake in the command line: printed with a pointer to
// the command's help, exit 2.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "iha COMMAND",
		Short: "operate IHA, instance high availability for OpenStack",
		Long: `iha talks to the status API of the iha-leader controllers: the cluster's health, every
compute host with its mesh and Nova state, verdict and recovery, the replicated event log, and the
operator's commands (pause, resume, maintenance, confirm-fenced, retry). It also checks a
configuration and the BMCs' credentials without changing anything.

Where the API is and how to authenticate:

    --addr A,B        API_ADDR of one or more iha-leader nodes, tried in turn
    IHA_ADDR          the same, when --addr is not given (default ` + defaultAddr + `)
    IHA_TOKEN         the API token (API_READ_TOKEN for reads, API_TOKEN for changes)
    IHA_TOKEN_FILE    a file holding the token (mode 0600); --token-file wins over both

Output: -o table (default, at most 100 columns), wide, json, yaml or value (no headers,
tab-separated, for scripts); -c NAME picks columns or fields; --no-headers drops the header
row. Informational lines (which node answered, how fresh its answer is) go to stderr.

` + exitHelp,
		Example: `  iha status
  iha hosts -o wide
  iha host compute-3 -w
  iha events --host compute-3 --since 30m
  IHA_TOKEN_FILE=~/.iha-token iha maintenance compute-3 on --reason "disk swap"`,
		Version:           version.String(),
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += " (did you mean " + strings.Join(s, " or ") + "?)"
			}
			return usagef("%s", msg)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			// `iha` alone: the help, as a usage error (scripts that call
			// iha without a command get 2, as they always did).
			cmd.SetOut(e.stderr)
			_ = cmd.Help()
			return exitCode(exitUsage)
		},
	}
	root.SuggestionsMinimumDistance = 2
	// A function, not cobra's templates: text/template's calls of methods
	// by name keep the linker from dropping unused methods (the binary
	// doubles in size).
	root.SetUsageFunc(usage)
	root.SetContext(e.ctx)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err.Error()} })
	for _, ctor := range commandCtors {
		root.AddCommand(ctor(e))
	}
	// Every command's flags are POSIX (--addr, -o); help goes to stdout.
	var all func(c *cobra.Command)
	all = func(c *cobra.Command) {
		c.Flags().SortFlags = false
		c.SuggestionsMinimumDistance = 2
		for _, sub := range c.Commands() {
			all(sub)
		}
	}
	all(root)
	return root
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr}
	root := newRoot(e)
	root.SetArgs(legacyFlags(root, args, stderr))
	cmd, err := root.ExecuteC()
	var code exitCode
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &ue):
	default:
		// cobra's own: an unknown command, a wrong number of arguments.
	}
	path := "iha"
	if cmd != nil {
		path = cmd.CommandPath()
	}
	fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", path, err, path)
	return exitUsage
}

// legacyFlags rewrites the single-dash long flags of the CLI before cobra
// (-json, -addr=A, -limit 5: Go's flag package took them) to the double-dash
// form, with a notice, so that scripts written for it keep working. Only
// names of long flags of the command named are rewritten; -f, -o, -c (one
// letter) and clusters of them are left to pflag.
func legacyFlags(root *cobra.Command, args []string, stderr io.Writer) []string {
	cmd, _, err := root.Find(args)
	if err != nil || cmd == nil {
		return args
	}
	out := make([]string, 0, len(args))
	warned := false
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if len(name) > 1 && lookupLong(cmd, name) != nil {
				if !warned {
					fmt.Fprintf(stderr, "iha: %s is read as -%s: single-dash long flags are deprecated\n", a, a)
					warned = true
				}
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}

func lookupLong(cmd *cobra.Command, name string) *pflag.Flag {
	if f := cmd.Flags().Lookup(name); f != nil {
		return f
	}
	return cmd.InheritedFlags().Lookup(name)
}

// usage is cobra's default usage text with the flag descriptions wrapped
// to fit 100 columns, as tables do.
func usage(c *cobra.Command) error {
	var b strings.Builder
	b.WriteString("Usage:")
	if c.Runnable() {
		fmt.Fprintf(&b, "\n  %s", c.UseLine())
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(&b, "\n  %s [command]", c.CommandPath())
	}
	if c.HasExample() {
		fmt.Fprintf(&b, "\n\nExamples:\n%s", c.Example)
	}
	if c.HasAvailableSubCommands() {
		b.WriteString("\n\nAvailable Commands:")
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() || sub.Name() == "help" {
				fmt.Fprintf(&b, "\n  %-*s %s", sub.NamePadding(), sub.Name(), sub.Short)
			}
		}
	}
	if c.HasAvailableLocalFlags() {
		fmt.Fprintf(&b, "\n\nFlags:\n%s", strings.TrimRight(c.LocalFlags().FlagUsagesWrapped(maxTableWidth), " \n"))
	}
	if c.HasAvailableInheritedFlags() {
		fmt.Fprintf(&b, "\n\nGlobal Flags:\n%s", strings.TrimRight(c.InheritedFlags().FlagUsagesWrapped(maxTableWidth), " \n"))
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(&b, "\n\nUse \"%s [command] --help\" for more information about a command.", c.CommandPath())
	}
	b.WriteString("\n")
	_, err := io.WriteString(c.OutOrStderr(), b.String())
	return err
}
