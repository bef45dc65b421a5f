package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/secret"
)

// lastVoterFixture refuses to remove ctl-1 as the leader does for the
// last voter, and knows no ctl-9.
type lastVoterFixture struct{ *fixture }

func (f lastVoterFixture) Mutate(ctx context.Context, m api.Mutation) (uint64, error) {
	switch {
	case m.Kind == api.MutRemoveVoter && m.Voter == "ctl-1":
		return 0, fmt.Errorf("%w: ctl-1 is the last voter: stop iha-leader on it instead", api.ErrConflict)
	case m.Kind == api.MutRemoveVoter && m.Voter == "ctl-9":
		return 0, fmt.Errorf(`%w: no controller "ctl-9" in the Raft group`, api.ErrNotFound)
	}
	return f.fixture.Mutate(ctx, m)
}

func TestControllersGoldenOutput(t *testing.T) {
	f := &fixture{}
	url := serveFixture(t, f)
	cases := []goldenCase{
		{"controllers", cliCanaryRO, []string{"controllers"}, exitOK, allFormats},
		{"controllers-remove", cliCanaryRW, []string{"controllers", "remove", "ctl-3", "--reason", "decommissioned"}, exitOK, allFormats},
	}
	runGolden(t, url, cases)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.mutations) != 6 {
		t.Fatalf("%d mutations reached the leader, want 6 (remove, five forms and --json)", len(f.mutations))
	}
	if m := f.mutations[0]; m.Kind != api.MutRemoveVoter || m.Voter != "ctl-3" || m.Reason != "decommissioned" || !strings.Contains(m.By, " from 127.0.0.1") {
		t.Fatalf("remove reached the leader as %+v", m)
	}
}

func TestControllersRemoveExitCodes(t *testing.T) {
	url := serveFixture(t, &fixture{})
	refusing := httptest.NewServer(api.NewServer(api.Config{Backend: lastVoterFixture{&fixture{}}, Token: secret.New(cliCanaryRW)}))
	t.Cleanup(refusing.Close)
	cases := []struct {
		name      string
		addr      string
		token     string
		args      []string
		want      int
		stderrHas string
	}{
		{"no id", url, cliCanaryRW, []string{"controllers", "remove"}, exitUsage, "exactly one controller id"},
		{"two ids", url, cliCanaryRW, []string{"controllers", "remove", "a", "b"}, exitUsage, "exactly one controller id"},
		{"an argument to the list", url, cliCanaryRO, []string{"controllers", "ctl-1"}, exitUsage, "iha controllers remove ctl-1"},
		{"the read-only token", url, cliCanaryRO, []string{"controllers", "remove", "ctl-3"}, exitUnhealthy, "403"},
		{"no token", url, "", []string{"controllers", "remove", "ctl-3"}, exitUnhealthy, "401"},
		{"an id that is not a node name", url, cliCanaryRW, []string{"controllers", "remove", "..x"}, exitUsage, "parameter id"},
		{"the last voter is refused, saying why", refusing.URL, cliCanaryRW, []string{"controllers", "remove", "ctl-1"}, exitUnhealthy, "409: conflict: ctl-1 is the last voter"},
		{"an unknown controller", refusing.URL, cliCanaryRW, []string{"controllers", "remove", "ctl-9"}, exitUnhealthy, "404"},
		{"nothing listening", "127.0.0.1:1", cliCanaryRW, []string{"controllers", "remove", "ctl-3"}, exitUnreachable, "cannot reach the IHA API"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cliEnv(t, c.addr, c.token)
			code, out, errOut := runCLI(t, c.args...)
			if code != c.want || !strings.Contains(errOut, c.stderrHas) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)\n%s", code, c.want, errOut, c.stderrHas, out)
			}
		})
	}
}
