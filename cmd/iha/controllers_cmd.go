package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/pkg/api"
)

func init() { register(newControllersCmd) }

var controllerColumns = []column[api.Voter]{
	{name: "ID", get: func(v api.Voter) string { return v.ID }},
	{name: "RAFT ADDRESS", get: func(v api.Voter) string { return v.Address }},
	{name: "ROLE", get: func(v api.Voter) string { r, _ := voterRoleHealth(style{}, v); return r }},
	{name: "HEALTH", flex: true, get: func(v api.Voter) string { return v.Health }, paint: paintHealth},
	{name: "API", get: func(v api.Voter) string { return v.APIAddr }},
	{name: "SUFFRAGE", wide: true, get: func(v api.Voter) string { return v.Suffrage }},
}

func newControllersCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "controllers",
		Short: "the Raft group's controllers and their health; remove one",
		Long: `Lists the controllers of the Raft group (iha-leader nodes): id (NODE_NAME), Raft address,
role, health as the leader sees it, and the leader's API address; stderr says how many failures
the group tolerates. A follower knows only its own health and the leader's: ask the leader with
--consistent for every voter's.

Exit status: 0 every voter healthy; 1 a voter is unhealthy; 2 usage; 3 no API reachable, or
the answering node knows no Raft leader.`,
		Example: `  iha controllers
  iha controllers --consistent -o wide
  iha controllers -o value -c id
  iha controllers remove ctl-2 --reason "decommissioned"`,
		Args:              noArgs("controllers", "to take one out: iha controllers remove ARG"),
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	af := addAPIFlags(cmd, e, true)
	o := addOutput(cmd, "column", columnNames(controllerColumns), allFormats...)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		cl, err := af.client()
		if err != nil {
			return err
		}
		c, err := cl.Cluster(cmd.Context(), af.consistent)
		if err != nil {
			return exit(fail(e.stderr, "controllers", err))
		}
		info(e.stderr, "%s", freshness(c.Freshness))
		if o.structured() {
			o.printWhole(e.stdout, c.Voters)
		} else {
			voters := 0
			for _, v := range c.Voters {
				if v.Suffrage == "Voter" {
					voters++
				}
			}
			info(e.stderr, "%d voter(s), a majority is %d: %s", voters, voters/2+1, tolerance(voters))
			t := newTable(o, style{isTerminal(e.stdout)}, controllerColumns)
			t.render(e.stdout, c.Voters)
			t.noteCut(e.stderr)
		}
		if c.Leader == "" {
			fmt.Fprintln(e.stderr, "iha controllers: the answering node knows no Raft leader")
			return exit(exitUnreachable)
		}
		for _, v := range c.Voters {
			if v.Health != "ok" && !strings.HasPrefix(v.Health, "unknown") {
				return exit(exitUnhealthy)
			}
		}
		return nil
	}
	cmd.AddCommand(newControllersRemoveCmd(e))
	return cmd
}

// tolerance says how many controllers may fail before recovery stops.
func tolerance(voters int) string {
	switch n := (voters - 1) / 2; {
	case voters <= 0:
		return "no voters known"
	case n == 0:
		return "recovery stops if any one of them fails"
	default:
		return fmt.Sprintf("recovery goes on with up to %d of them down", n)
	}
}

func newControllersRemoveCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove ID",
		Short: "take a controller out of the Raft group",
		Long: `Asks the leader to remove the controller ID (its NODE_NAME) from the Raft group; any node
forwards it. The removal is audited (a VoterRemoved event with who asked and why). The last voter
is never removed (409): stop iha-leader on it instead. Then take the controller out of the
computes' agent.yaml (join:, controllers:).

` + mutationExit,
		Example: `  iha controllers remove ctl-2 --reason "decommissioned"`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one controller id (its NODE_NAME), got %d", len(args))
			}
			return nil
		},
		ValidArgsFunction: completeControllers,
	}
	af := addAPIFlags(cmd, e, false)
	o := addOutput(cmd, "field", fieldNames(mutationFields), allFormats...)
	reason := cmd.Flags().String("reason", "", "why (recorded in the audit event, with who asked)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		cl, err := af.client()
		if err != nil {
			return err
		}
		res, err := cl.RemoveVoter(cmd.Context(), args[0], *reason)
		if err != nil {
			return exit(fail(e.stderr, "controllers remove", err))
		}
		if res.Kind == "" {
			res.Kind = string(api.MutRemoveVoter)
		}
		printMutation(e, o, res)
		return nil
	}
	return cmd
}

// completeControllers completes the controller ids from the API.
func completeControllers(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, err := completionClient(cmd)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := cl.Cluster(cmd.Context(), false)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ids := make([]string, 0, len(c.Voters))
	for _, v := range c.Voters {
		ids = append(ids, v.ID+"\t"+v.Address)
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}
