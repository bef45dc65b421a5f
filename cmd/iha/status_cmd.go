package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/pkg/api"
)

func init() { register(newStatusCmd) }

// statusFields are `iha status`'s fields for -c and -o value.
var statusFields = []field[api.Cluster]{
	{"leader", func(c api.Cluster) string { return c.Leader }},
	{"leader-api", func(c api.Cluster) string { return c.LeaderAPI }},
	{"term", func(c api.Cluster) string { return strconv.FormatUint(c.Term, 10) }},
	{"commit-index", func(c api.Cluster) string { return strconv.FormatUint(c.CommitIndex, 10) }},
	{"version", func(c api.Cluster) string { return c.Version }},
	{"answered-by", func(c api.Cluster) string { return c.Freshness.Node }},
	{"role", func(c api.Cluster) string { return c.Freshness.Role }},
	{"paused", func(c api.Cluster) string { return strconv.FormatBool(c.Paused) }},
	{"paused-by", func(c api.Cluster) string { return c.PausedBy }},
	{"pause-reason", func(c api.Cluster) string { return c.PauseReason }},
	{"detection-mode", func(c api.Cluster) string { return c.Config.DetectionMode }},
	{"quick-evacuate-level", func(c api.Cluster) string { return strconv.Itoa(c.Config.QuickEvacuateLevel) }},
	{"nova", func(c api.Cluster) string {
		switch {
		case c.NovaReady == nil:
			return "unknown"
		case *c.NovaReady:
			return "answering"
		}
		return "not-answering"
	}},
	{"last-poll", func(c api.Cluster) string { return whenOrEmpty(c.LastPoll) }},
	{"mesh-members", func(c api.Cluster) string { return strconv.Itoa(c.Mesh.Members) }},
	{"mesh-health-score", func(c api.Cluster) string { return strconv.Itoa(c.Mesh.HealthScore) }},
	{"records", func(c api.Cluster) string { return strconv.Itoa(c.Hosts.Records) }},
	{"active", func(c api.Cluster) string { return strconv.Itoa(c.Hosts.Active) }},
	{"failed", func(c api.Cluster) string { return strconv.Itoa(c.Hosts.Failed) }},
	{"maintenance", func(c api.Cluster) string { return strings.Join(sortedHosts(c.Maintenance), ",") }},
	{"voters", func(c api.Cluster) string {
		n := 0
		for _, v := range c.Voters {
			if v.Suffrage == "Voter" {
				n++
			}
		}
		return strconv.Itoa(n)
	}},
}

func newStatusCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "cluster health: leader, voters, pause, Nova, mesh, recovery counts",
		Long: `Shows the Raft leader and term, the voters and their health, whether recovery is running
or paused, whether the leader reaches Nova, the gossip mesh, and how many recoveries are in
progress or failed.

Exit status: 0 healthy; 1 a recovery failed, a voter is unhealthy or the leader does not reach
Nova; 2 usage; 3 no API reachable, or the answering node knows no Raft leader.`,
		Example: `  iha status
  iha status --consistent            # through the leader, not the answering node's replica
  iha status -o value -c leader      # the leader's node name alone
  iha status -o yaml`,
		Args: noArgs("status", ""),
	}
	af := addAPIFlags(cmd, e, true)
	o := addOutput(cmd, "field", fieldNames(statusFields), allFormats...)
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
			return exit(fail(e.stderr, "status", err))
		}
		healthy := c.Leader != "" && c.Hosts.Failed == 0
		for _, v := range c.Voters {
			healthy = healthy && (v.Health == "ok" || strings.HasPrefix(v.Health, "unknown"))
		}
		if c.NovaReady != nil && !*c.NovaReady {
			healthy = false
		}
		st := style{isTerminal(e.stdout)}
		info(e.stderr, "%s", freshness(c.Freshness))
		switch {
		case o.structured():
			o.printWhole(e.stdout, c)
		case o.format == outValue || len(o.columns) > 0:
			printFields(e.stdout, o, st, statusFields, c)
		default:
			printStatus(e.stdout, o, c, st)
		}
		if c.Leader == "" {
			fmt.Fprintln(e.stderr, "iha status: the answering node knows no Raft leader")
			return exit(exitUnreachable)
		}
		if !healthy {
			return exit(exitUnhealthy)
		}
		return nil
	}
	return cmd
}

// noArgs refuses positional arguments, with a hint at what was probably
// meant (ARG in it stands for the argument).
func noArgs(name, hint string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		if hint != "" {
			return usagef("unexpected argument %q (%s)", args[0], strings.ReplaceAll(hint, "ARG", args[0]))
		}
		return usagef("unexpected argument %q: iha %s takes none", args[0], name)
	}
}

func sortedHosts(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for h := range m {
		names = append(names, h)
	}
	sort.Strings(names)
	return names
}

var voterColumns = []column[api.Voter]{
	{name: "VOTER", get: func(v api.Voter) string { return v.ID }},
	{name: "ADDRESS", get: func(v api.Voter) string { return v.Address }},
	{name: "ROLE", get: func(v api.Voter) string { r, _ := voterRoleHealth(style{}, v); return r }},
	{name: "HEALTH", flex: true, get: func(v api.Voter) string { return v.Health }, paint: paintHealth},
	{name: "API", wide: true, get: func(v api.Voter) string { return v.APIAddr }},
}

// securityLine is the answering controller's protections: its warnings
// when any is off, else what is on.
func securityLine(s api.Security, st style) string {
	if len(s.Warnings) > 0 {
		return st.bad("WARNING") + ": " + strings.Join(s.Warnings, "; ")
	}
	var on []string
	for _, p := range []struct {
		ok   bool
		name string
	}{{s.RaftTLS, "raft TLS"}, {s.APITLS, "API TLS"}, {s.MeshEncrypted, "mesh encrypted"}, {s.MeshIdentity, "member identities checked"}} {
		if p.ok {
			on = append(on, p.name)
		}
	}
	if len(on) == 0 {
		return "(not reported)"
	}
	return st.good("ok") + ": " + strings.Join(on, ", ")
}

func printStatus(w io.Writer, o *output, c api.Cluster, st style) {
	leader := st.bad("none known")
	if c.Leader != "" {
		leader = c.Leader
		if c.LeaderAPI != "" {
			leader += " (API " + c.LeaderAPI + ")"
		}
	}
	wrap(w, "leader", fmt.Sprintf("%s, term %d, commit index %d", leader, c.Term, c.CommitIndex))
	wrap(w, "version", c.Version)
	rec := st.good("running")
	if c.Paused {
		rec = st.bad("PAUSED") + fmt.Sprintf(" by %s: %s", dash(c.PausedBy), dash(c.PauseReason))
	}
	wrap(w, "recovery", fmt.Sprintf("%s; detection %s, quick-evacuate level %d, poll %ds, delta %ds, threshold %d%%", rec,
		c.Config.DetectionMode, c.Config.QuickEvacuateLevel, c.Config.PollSeconds, c.Config.DeltaSeconds, c.Config.ThresholdPercent))
	switch {
	case c.NovaReady == nil:
		wrap(w, "nova", "(known to the leader; ask it with --consistent)")
	case *c.NovaReady:
		wrap(w, "nova", fmt.Sprintf("%s, last poll %s", st.good("answering"), when(c.LastPoll)))
	default:
		wrap(w, "nova", fmt.Sprintf("%s, last good poll %s", st.bad("NOT ANSWERING"), when(c.LastPoll)))
	}
	if c.Mesh.Wired {
		mesh := fmt.Sprintf("%d members, health score %d", c.Mesh.Members, c.Mesh.HealthScore)
		if c.Mesh.ContestedHosts > 0 {
			mesh += ", " + st.bad(fmt.Sprintf("%d host(s) claimed by more than one member (iha hosts)", c.Mesh.ContestedHosts))
		}
		wrap(w, "mesh", mesh)
	} else {
		wrap(w, "mesh", "not reporting to the leader yet")
	}
	wrap(w, "security", securityLine(c.Security, st))
	hosts := fmt.Sprintf("%d recovery record(s): %d in progress, %d failed", c.Hosts.Records, c.Hosts.Active, c.Hosts.Failed)
	if c.Hosts.Failed > 0 {
		hosts = st.bad(hosts)
	}
	wrap(w, "hosts", hosts)
	if len(c.Maintenance) > 0 {
		wrap(w, "maintenance", strings.Join(sortedHosts(c.Maintenance), ", "))
	}
	fmt.Fprintln(w)
	newTable(o, st, voterColumns).render(w, c.Voters)
}

// voterRoleHealth renders a voter's role (leader, follower, and its
// suffrage when not a voter) and its health (in red when it is bad).
func voterRoleHealth(st style, v api.Voter) (role, health string) {
	role = "follower"
	if v.Leader {
		role = "leader"
	}
	if v.Suffrage != "Voter" {
		role += " (" + strings.ToLower(v.Suffrage) + ")"
	}
	return role, paintHealth(st, v.Health)
}

func paintHealth(st style, h string) string {
	if h != "ok" && h != "-" && !strings.HasPrefix(h, "unknown") {
		return st.bad(h)
	}
	return h
}
