package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register("controllers", command{
		summary: "the Raft group's controllers, or take one out: iha controllers [--json] | iha controllers remove ID [--reason R]",
		run:     runControllers,
	})
}

func runControllers(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "remove" {
		return runControllersRemove(ctx, args[1:], stdout, stderr)
	}
	f := newAPIFlags("controllers", "iha controllers [--json] [--consistent] [--addr A,B]\n       iha controllers remove ID [--reason R] [--json] [--addr A,B]", stderr, true)
	pos, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "iha controllers: unexpected argument %q (to take one out: iha controllers remove ID)\n", pos[0])
		return exitUsage
	}
	c, err := f.client().Cluster(ctx, f.consistent)
	if err != nil {
		return fail(stderr, "controllers", err)
	}
	if f.json {
		printJSON(stdout, c.Voters)
	} else {
		printControllers(stdout, c, style{isTerminal(stdout)})
	}
	if c.Leader == "" {
		fmt.Fprintln(stderr, "iha controllers: the answering node knows no Raft leader")
		return exitUnreachable
	}
	for _, v := range c.Voters {
		if v.Health != "ok" && !strings.HasPrefix(v.Health, "unknown") {
			return exitUnhealthy
		}
	}
	return exitOK
}

func printControllers(w io.Writer, c api.Cluster, st style) {
	fmt.Fprintln(w, freshness(c.Freshness))
	voters := 0
	for _, v := range c.Voters {
		if v.Suffrage == "Voter" {
			voters++
		}
	}
	fmt.Fprintf(w, "%d voter(s), a majority is %d: %s\n", voters, voters/2+1, tolerance(voters))
	tw := table(w)
	fmt.Fprintln(tw, "ID\tRAFT ADDRESS\tROLE\tHEALTH\tAPI")
	for _, v := range c.Voters {
		role, health := voterRoleHealth(st, v)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.ID, v.Address, role, dash(health), dash(v.APIAddr))
	}
	tw.Flush()
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

func runControllersRemove(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newAPIFlags("controllers remove", "iha controllers remove ID [--reason R] [--json] [--addr A,B]", stderr, false)
	reason := f.fs.String("reason", "", "why (recorded in the audit event)")
	pos, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "iha controllers remove: want exactly one controller id (its NODE_NAME), got %d\n", len(pos))
		f.fs.Usage()
		return exitUsage
	}
	res, err := f.client().RemoveVoter(ctx, pos[0], *reason)
	if err != nil {
		return fail(stderr, "controllers remove", err)
	}
	if f.json {
		printJSON(stdout, res)
		return exitOK
	}
	fmt.Fprintf(stdout, "%s removed from the Raft group by the leader (%s) for %s; audit event %d\n", res.Voter, res.Freshness.Node, res.By, res.EventSeq)
	fmt.Fprintln(stdout, "stop iha-leader on it if it still runs, and take it out of the computes' agent.yaml (join:, controllers:)")
	return exitOK
}
