package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/version"
)

func init() { register(newVersionCmd) }

// versions is `iha version`'s answer: this binary's build and, when an API
// answered, the answering node's.
type versions struct {
	Client version.Info     `json:"client"`
	Server *api.VersionInfo `json:"server,omitempty"`
	Error  string           `json:"server_error,omitempty"`
}

var versionFields = []field[versions]{
	{"client-version", func(v versions) string { return v.Client.Version }},
	{"client-revision", func(v versions) string { return v.Client.Revision }},
	{"client-go", func(v versions) string { return v.Client.GoVersion }},
	{"server-node", func(v versions) string { return serverField(v, func(s *api.VersionInfo) string { return s.Node }) }},
	{"server-version", func(v versions) string { return serverField(v, func(s *api.VersionInfo) string { return s.Version }) }},
	{"server-revision", func(v versions) string { return serverField(v, func(s *api.VersionInfo) string { return s.Revision }) }},
	{"server-go", func(v versions) string { return serverField(v, func(s *api.VersionInfo) string { return s.GoVersion }) }},
}

func serverField(v versions, f func(*api.VersionInfo) string) string {
	if v.Server == nil {
		return ""
	}
	return f(v.Server)
}

func newVersionCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "this iha's version and, when an API answers, the server's",
		Long: `Prints this iha's version, VCS revision and Go version, and those of the iha-leader whose
API answers (the first of --addr or IHA_ADDR that does). --client skips the server. (iha
--version prints the client's version alone.)

Exit status: 0 (also when no API answers: the server part is then left out, and stderr says
why); 2 usage.`,
		Example: `  iha version
  iha version --client
  iha version -o value -c server-version`,
		Args:              noArgs("version", ""),
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	af := addAPIFlags(cmd, e, false)
	clientOnly := cmd.Flags().Bool("client", false, "the client's version only; do not ask the API")
	o := addOutput(cmd, "field", fieldNames(versionFields), outTable, outJSON, outYAML, outValue)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := o.check(cmd); err != nil {
			return err
		}
		v := versions{Client: version.Get()}
		if !*clientOnly {
			cl, err := af.client()
			if err != nil {
				return err
			}
			if sv, err := cl.Version(cmd.Context()); err != nil {
				v.Error = err.Error()
				info(e.stderr, "iha version: no server version: %v", err)
			} else {
				v.Server = &sv
			}
		}
		switch {
		case o.structured():
			o.printWhole(e.stdout, v)
		case o.format == outValue || len(o.columns) > 0:
			printFields(e.stdout, o, style{}, versionFields, v)
		default:
			c := v.Client
			fmt.Fprintf(e.stdout, "client: iha %s (revision %s, %s, %s)\n", c.Version, shortRev(c.Revision), c.GoVersion, c.Platform)
			if s := v.Server; s != nil {
				fmt.Fprintf(e.stdout, "server: iha-leader %s on %s (revision %s, %s, %s, API %s)\n", s.Version, s.Node, shortRev(s.Revision), s.GoVersion, dash(s.Platform), s.API)
			}
		}
		return nil
	}
	return cmd
}

// shortRev is a revision as git abbreviates it (12 digits; -o wide and
// json show it whole).
func shortRev(r string) string {
	dirty := strings.HasSuffix(r, "-dirty")
	r = strings.TrimSuffix(r, "-dirty")
	if len(r) > 12 {
		r = r[:12]
	}
	if dirty {
		r += "-dirty"
	}
	return dash(r)
}
