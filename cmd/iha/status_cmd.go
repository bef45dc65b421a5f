package main

// `iha status`, and what every status-API command shares: the flags
// (--addr, --json, --consistent, --timeout), IHA_ADDR and IHA_TOKEN, the
// client, exit codes, and the table style (colour only on a terminal).

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/ihaproject/iha/pkg/api"
)

func init() {
	register("status", command{
		summary: "cluster health: leader, voters, pause, recovery counts: iha status [--json] [--addr A,B]",
		run:     runStatus,
	})
}

// Exit codes of the status-API commands (see command in main.go).
const (
	exitOK          = 0
	exitUnhealthy   = 1 // the thing asked about is unhealthy or failed, or the API refused
	exitUsage       = 2
	exitUnreachable = 3 // no API answered, or none knows a leader
)

// defaultAddr is API_ADDR's default.
const defaultAddr = "127.0.0.1:7421"

// apiEnv reads the environment; tests replace it.
var apiEnv = os.Getenv

// isTerminal reports whether w is a terminal (colour only then); tests
// replace it.
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && apiEnv("NO_COLOR") == ""
}

// apiFlags are the flags every status-API command takes.
type apiFlags struct {
	fs         *flag.FlagSet
	addr       string
	json       bool
	consistent bool
	timeout    time.Duration
}

func newAPIFlags(name, usage string, stderr io.Writer, reads bool) *apiFlags {
	f := &apiFlags{fs: flag.NewFlagSet("iha "+name, flag.ContinueOnError)}
	f.fs.SetOutput(stderr)
	f.fs.StringVar(&f.addr, "addr", "", "status API `addresses`, comma-separated, tried in turn (default $IHA_ADDR, else "+defaultAddr+")")
	f.fs.BoolVar(&f.json, "json", false, "print the API's JSON answer")
	f.fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up on each address after this long")
	if reads {
		f.fs.BoolVar(&f.consistent, "consistent", false, "read through the Raft leader instead of the answering node's replica")
	}
	f.fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s\n\nIHA_TOKEN is sent as the API token; exit status: 0 ok, 1 unhealthy/failed/refused, 2 usage, 3 no API or no leader reachable.\n", usage)
		f.fs.PrintDefaults()
	}
	return f
}

// parse parses flags wherever they are among the arguments (`iha host H
// --json` as well as `iha host --json H`) and returns the positional ones.
// ok is false after a usage error (code says which exit).
func (f *apiFlags) parse(args []string) (pos []string, code int, ok bool) {
	for {
		if err := f.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
		}
		rest := f.fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (f *apiFlags) client() *api.Client {
	raw := f.addr
	if raw == "" {
		raw = apiEnv("IHA_ADDR")
	}
	if raw == "" {
		raw = defaultAddr
	}
	var addrs []string
	for _, a := range strings.Split(raw, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	c := &api.Client{Addrs: addrs, Token: apiEnv("IHA_TOKEN"), Actor: actor()}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	c.HTTP = &http.Client{Transport: tr, Timeout: f.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c
}

// actor names the operator in audit events: user@host.
func actor() string {
	name := apiEnv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	if name == "" {
		name = "unknown"
	}
	return name + "@" + host
}

// fail prints err for an operator and returns the exit code it deserves.
// A token never reaches err (the client does not put it in errors).
func fail(stderr io.Writer, cmd string, err error) int {
	var se *api.StatusError
	switch {
	case errors.As(err, &se):
		msg := se.Message
		if se.Parameter != "" {
			msg += " (parameter " + se.Parameter + ")"
		}
		fmt.Fprintf(stderr, "iha %s: %s answered %d: %s\n", cmd, se.Addr, se.Code, msg)
		switch se.Code {
		case http.StatusBadRequest:
			return exitUsage
		case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
			fmt.Fprintln(stderr, "no Raft leader is reachable: the controllers may be electing one, or have lost their quorum; try again, or another --addr")
			return exitUnreachable
		case http.StatusUnauthorized:
			fmt.Fprintln(stderr, "set IHA_TOKEN to the API token (API_TOKEN for changes, API_READ_TOKEN for reads)")
		}
		return exitUnhealthy
	case errors.Is(err, api.ErrUnreachable):
		fmt.Fprintf(stderr, "iha %s: cannot reach the IHA API: %v\n(set --addr or IHA_ADDR to the API_ADDR of one or more iha-leader nodes)\n", cmd, err)
		return exitUnreachable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(stderr, "iha %s: %v\n", cmd, err)
		return exitUnreachable
	}
	fmt.Fprintf(stderr, "iha %s: %v\n", cmd, err)
	return exitUnhealthy
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// style colours text on a terminal only.
type style struct{ on bool }

func (s style) paint(code, text string) string {
	if !s.on || text == "" {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

func (s style) bad(t string) string  { return s.paint("31;1", t) }
func (s style) warn(t string) string { return s.paint("33", t) }
func (s style) good(t string) string { return s.paint("32", t) }
func (s style) dim(t string) string  { return s.paint("2", t) }

// phase colours a recovery phase so that its meaning shows at a glance.
func (s style) phase(p string) string {
	switch p {
	case "failed":
		return s.bad(strings.ToUpper(p))
	case "skipped":
		return s.warn(p)
	case "done":
		return s.good(p)
	case "":
		return s.dim("-")
	}
	return s.warn(p)
}

func (s style) verdict(v string) string {
	switch v {
	case "healthy", "recovered":
		return s.good(v)
	case "failed":
		return s.bad(strings.ToUpper(v))
	case "unknown":
		return s.dim(v)
	}
	return s.warn(v)
}

// when formats a time for tables: UTC, to the millisecond, "-" if unset.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// freshness says who answered and how current the answer is.
func freshness(f api.Freshness) string {
	s := fmt.Sprintf("answered by %s (%s), applied index %d", f.Node, f.Role, f.AppliedIndex)
	if f.Consistent {
		s += ", consistent read through the leader"
	} else if f.Role != "Leader" {
		s += ", from its replica"
		if !f.LastContact.IsZero() {
			s += ", last contact with the leader " + when(f.LastContact)
		}
	}
	return s
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newAPIFlags("status", "iha status [--json] [--consistent] [--addr A,B]", stderr, true)
	pos, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "iha status: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	c, err := f.client().Cluster(ctx, f.consistent)
	if err != nil {
		return fail(stderr, "status", err)
	}
	healthy := c.Leader != "" && c.Hosts.Failed == 0
	for _, v := range c.Voters {
		healthy = healthy && (v.Health == "ok" || strings.HasPrefix(v.Health, "unknown"))
	}
	if c.NovaReady != nil && !*c.NovaReady {
		healthy = false
	}
	if f.json {
		printJSON(stdout, c)
	} else {
		printStatus(stdout, c, style{isTerminal(stdout)})
	}
	if c.Leader == "" {
		fmt.Fprintln(stderr, "iha status: the answering node knows no Raft leader")
		return exitUnreachable
	}
	if !healthy {
		return exitUnhealthy
	}
	return exitOK
}

func printStatus(w io.Writer, c api.Cluster, st style) {
	leader := st.bad("none known")
	if c.Leader != "" {
		leader = c.Leader
		if c.LeaderAPI != "" {
			leader += " (API " + c.LeaderAPI + ")"
		}
	}
	fmt.Fprintf(w, "leader:    %s, term %d, commit index %d\n", leader, c.Term, c.CommitIndex)
	fmt.Fprintf(w, "answer:    %s\n", freshness(c.Freshness))
	fmt.Fprintf(w, "version:   %s\n", c.Version)
	rec := st.good("running")
	if c.Paused {
		rec = st.bad("PAUSED") + fmt.Sprintf(" by %s: %s", dash(c.PausedBy), dash(c.PauseReason))
	}
	fmt.Fprintf(w, "recovery:  %s; detection %s, quick-evacuate level %d, poll %ds, delta %ds, threshold %d%%\n", rec,
		c.Config.DetectionMode, c.Config.QuickEvacuateLevel, c.Config.PollSeconds, c.Config.DeltaSeconds, c.Config.ThresholdPercent)
	switch {
	case c.NovaReady == nil:
		fmt.Fprintln(w, "nova:      (known to the leader; ask it with --consistent)")
	case *c.NovaReady:
		fmt.Fprintf(w, "nova:      %s, last poll %s\n", st.good("answering"), when(c.LastPoll))
	default:
		fmt.Fprintf(w, "nova:      %s, last good poll %s\n", st.bad("NOT ANSWERING"), when(c.LastPoll))
	}
	if c.Mesh.Wired {
		fmt.Fprintf(w, "mesh:      %d members, health score %d\n", c.Mesh.Members, c.Mesh.HealthScore)
	} else {
		fmt.Fprintln(w, "mesh:      not reporting to the leader yet")
	}
	hosts := fmt.Sprintf("%d recovery record(s): %d in progress, %d failed", c.Hosts.Records, c.Hosts.Active, c.Hosts.Failed)
	if c.Hosts.Failed > 0 {
		hosts = st.bad(hosts)
	}
	fmt.Fprintf(w, "hosts:     %s\n", hosts)
	if len(c.Maintenance) > 0 {
		names := make([]string, 0, len(c.Maintenance))
		for h := range c.Maintenance {
			names = append(names, h)
		}
		sort.Strings(names)
		fmt.Fprintf(w, "maintenance: %s\n", strings.Join(names, ", "))
	}
	fmt.Fprintln(w)
	tw := table(w)
	fmt.Fprintln(tw, "VOTER\tADDRESS\tROLE\tHEALTH")
	for _, v := range c.Voters {
		role, health := voterRoleHealth(st, v)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.ID, v.Address, role, health)
	}
	tw.Flush()
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
	health = v.Health
	if health != "ok" && !strings.HasPrefix(health, "unknown") {
		health = st.bad(health)
	}
	return role, health
}
