package main

// The operator's commands that change the cluster: pause, resume,
// confirm-fenced, maintenance, retry (and controllers remove, in
// controllers_cmd.go). Each is committed through Raft by the leader (any
// node forwards it) and audited in the event log with who asked and why.

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register(newPauseCmd)
	register(newResumeCmd)
	register(newConfirmCmd)
	register(newMaintenanceCmd)
	register(newRetryCmd)
}

const mutationExit = `Needs the write token (API_TOKEN) in IHA_TOKEN, IHA_TOKEN_FILE or --token-file.

Exit status: 0 done; 1 refused (no or read-only token, the command does not fit the state);
2 usage; 3 no API or no Raft leader reachable.`

var mutationFields = []field[api.MutationResult]{
	{"ok", func(r api.MutationResult) string { return strconv.FormatBool(r.OK) }},
	{"kind", func(r api.MutationResult) string { return r.Kind }},
	{"host", func(r api.MutationResult) string { return r.Host }},
	{"voter", func(r api.MutationResult) string { return r.Voter }},
	{"by", func(r api.MutationResult) string { return r.By }},
	{"answered-by", func(r api.MutationResult) string { return r.Freshness.Node }},
	{"event-seq", func(r api.MutationResult) string {
		if r.EventSeq == 0 {
			return ""
		}
		return strconv.FormatUint(r.EventSeq, 10)
	}},
}

// mutation describes one changing command; build turns its positional
// arguments and --reason into the call (or a usage error).
type mutation struct {
	use, short, long, example string
	nargs                     int
	argNames                  string
	complete                  cobra.CompletionFunc
	build                     func(args []string, reason string) (kind api.MutationKind, host string, err error)
}

func newMutationCmd(e *env, m mutation) *cobra.Command {
	name := m.use
	if i := indexSpace(name); i > 0 {
		name = name[:i]
	}
	cmd := &cobra.Command{
		Use:     m.use,
		Short:   m.short,
		Long:    m.long + "\n\n" + mutationExit,
		Example: m.example,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != m.nargs {
				if m.nargs == 0 {
					return usagef("unexpected argument %q: iha %s takes none", args[0], name)
				}
				return usagef("want %s, got %d argument(s)", m.argNames, len(args))
			}
			return nil
		},
		ValidArgsFunction: m.complete,
	}
	if m.complete == nil {
		cmd.ValidArgsFunction = cobra.NoFileCompletions
	}
	af := addAPIFlags(cmd, e, false)
	o := addOutput(cmd, "field", fieldNames(mutationFields), allFormats...)
	reason := cmd.Flags().String("reason", "", "why (recorded in the audit event, with who asked)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		kind, host, err := m.build(args, *reason)
		if err != nil {
			return err
		}
		cl, err := af.client()
		if err != nil {
			return err
		}
		res, err := cl.Mutate(cmd.Context(), kind, host, *reason)
		if err != nil {
			return exit(fail(e.stderr, name, err))
		}
		printMutation(e, o, res)
		return nil
	}
	return cmd
}

func indexSpace(s string) int {
	for i, r := range s {
		if r == ' ' {
			return i
		}
	}
	return -1
}

func printMutation(e *env, o *output, res api.MutationResult) {
	switch {
	case o.structured():
		o.printWhole(e.stdout, res)
	case o.format == outValue || len(o.columns) > 0:
		printFields(e.stdout, o, style{isTerminal(e.stdout)}, mutationFields, res)
	case res.Kind == string(api.MutRemoveVoter):
		fmt.Fprintf(e.stdout, "%s removed from the Raft group by the leader (%s) for %s; audit event %d\n", res.Voter, res.Freshness.Node, res.By, res.EventSeq)
		info(e.stderr, "stop iha-leader on it if it still runs, and take it out of the computes' agent.yaml (join:, controllers:)")
	default:
		target := ""
		if res.Host != "" {
			target = " " + res.Host
		}
		fmt.Fprintf(e.stdout, "%s%s: done by the leader (%s) for %s; audit event %d\n", res.Kind, target, res.Freshness.Node, res.By, res.EventSeq)
	}
}

func newPauseCmd(e *env) *cobra.Command {
	return newMutationCmd(e, mutation{
		use:   "pause",
		short: "stop starting new recoveries (DISABLED at run time, replicated)",
		long: `Stops the leader from starting new recoveries, on every controller and across leader changes
(InstanceHA's DISABLED, set at run time). Recoveries in progress go on. iha resume undoes it.`,
		example: `  iha pause --reason "network maintenance in rack 4"
  iha status -o value -c paused`,
		build: func(_ []string, _ string) (api.MutationKind, string, error) { return api.MutPause, "", nil },
	})
}

func newResumeCmd(e *env) *cobra.Command {
	return newMutationCmd(e, mutation{
		use:   "resume",
		short: "start recovering failed hosts again after iha pause",
		long: `Lets the leader start new recoveries again after iha pause. (DISABLED set in config.yaml is not
undone by it: that is the configuration's.)`,
		example: `  iha resume --reason "network maintenance done"`,
		build:   func(_ []string, _ string) (api.MutationKind, string, error) { return api.MutResume, "", nil },
	})
}

func newConfirmCmd(e *env) *cobra.Command {
	return newMutationCmd(e, mutation{
		use:      "confirm-fenced HOST",
		nargs:    1,
		argNames: "exactly one HOST",
		complete: completeHosts,
		short:    "state that a host is powered off when its BMC cannot",
		long: `Tells the leader that HOST is powered off when fencing cannot confirm it (the BMC is
unreachable, or the host has no BMC): its recovery goes on to evacuation. Evacuating a host that
still runs corrupts its servers' disks: check the power yourself first. --reason is required.`,
		example: `  iha confirm-fenced compute-3 --reason "power cords pulled, checked on site by bob"`,
		build: func(args []string, reason string) (api.MutationKind, string, error) {
			if reason == "" {
				return "", "", usagef("--reason is required: say how you know the host is off (evacuating a host that still runs corrupts disks)")
			}
			return api.MutConfirmFenced, args[0], nil
		},
	})
}

func newMaintenanceCmd(e *env) *cobra.Command {
	return newMutationCmd(e, mutation{
		use:      "maintenance HOST on|off",
		nargs:    2,
		argNames: "HOST and on or off",
		complete: func(cmd *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 1 {
				return []string{"on", "off"}, cobra.ShellCompDirectiveNoFileComp
			}
			return completeHosts(cmd, args, s)
		},
		short: "keep a host out of recovery, or bring it back",
		long: `With on, HOST is never taken for a new failure (a planned reboot, a repair). With off, it is
watched again; a host parked by RECOVERED_HOST_MAINTENANCE after its recovery is re-enabled in Nova.`,
		example: `  iha maintenance compute-3 on --reason "disk swap"
  iha maintenance compute-3 off`,
		build: func(args []string, _ string) (api.MutationKind, string, error) {
			switch args[1] {
			case "on":
				return api.MutMaintenanceOn, args[0], nil
			case "off":
				return api.MutMaintenanceOff, args[0], nil
			}
			return "", "", usagef("%q: want on or off", args[1])
		},
	})
}

func newRetryCmd(e *env) *cobra.Command {
	return newMutationCmd(e, mutation{
		use:      "retry HOST",
		nargs:    1,
		argNames: "exactly one HOST",
		complete: completeHosts,
		short:    "send a failed recovery back to work",
		long: `Sends HOST's failed recovery back to the step that failed (fencing, disabling, or the
servers that could not be evacuated), once you have fixed the cause (iha host HOST says it).`,
		example: `  iha retry compute-3 --reason "scheduler fixed"
  iha host compute-3 -w`,
		build: func(args []string, _ string) (api.MutationKind, string, error) { return api.MutRetry, args[0], nil },
	})
}
