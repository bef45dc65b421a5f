package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ihaproject/iha/pkg/api"
)

// Incidents makes the fixture an api.IncidentBackend: compute-9 was
// recovered by the other agent as IHA would have done it (closed, agree);
// compute-8 is open: IHA skips it (THRESHOLD) where the other agent
// evacuated one server.
func (f *fixture) Incidents(_ context.Context, q api.IncidentQuery) ([]api.Incident, bool, error) {
	lead := 2.4
	all := []api.Incident{
		{ID: 1, Host: "compute-9", Opened: fat(0), Closed: fat(40), CloseReason: "the host is up and enabled again",
			IHAAt: fat(0.1), IHAWhat: "would fence and evacuate", ActorAt: fat(2.5), ActorWhat: "forced down, evacuated 2",
			LeadSeconds: &lead, IHAServers: []string{"srv-a", "srv-b"}, ActorServers: []string{"srv-a", "srv-b"}, Agree: true,
			Disagreements: []api.Disagreement{},
			IHA: []api.ShadowDecision{{At: fat(0.1), Kind: "fence", Verdict: "instanceha-rule", Detail: "nova state down, updated_at 02:59:53 (DELTA 30s)", Level: 2,
				Servers: []api.ShadowServer{{ID: "srv-a", Name: "web-1", Status: "ACTIVE", Evacuate: true, Target: "compute-2"},
					{ID: "srv-b", Name: "db-1", Status: "ACTIVE", Evacuate: true}}}},
			Actor: []api.Observed{
				{At: fat(2.5), Seen: fat(3), Kind: "force-down", Detail: "forced_down true", Before: "instanceha-rule"},
				{At: fat(2.6), Seen: fat(3), Kind: "marker", Detail: "disabled: instanceha evacuation: 2026-03-01T03:00:02"},
				{At: fat(3.1), Seen: fat(4), Kind: "evacuation", ServerID: "srv-a", To: "compute-2", MigrationID: 41, Status: "done"},
				{At: fat(3.2), Seen: fat(4), Kind: "evacuation", ServerID: "srv-b", To: "compute-3", MigrationID: 42, Status: "done"},
			}},
		{ID: 2, Host: "compute-8", Opened: fat(5), IHAAt: fat(5), IHAWhat: "would skip: THRESHOLD exceeded",
			ActorAt: fat(9), ActorWhat: "forced down, evacuated 1", IHAServers: []string{}, ActorServers: []string{"srv-c"},
			Disagreements: []api.Disagreement{{Kind: "only-actor", Message: "the other agent evacuated where IHA would not",
				IHA: "skip: THRESHOLD exceeded: 50.0% of computes failed or in recovery > 40%", Actor: "evacuated srv-c to compute-1 (migration 43)"}},
			IHA: []api.ShadowDecision{{At: fat(5), Kind: "skip", Verdict: "instanceha-rule", Detail: "THRESHOLD exceeded: 50.0% of computes failed or in recovery > 40%"}},
			Actor: []api.Observed{
				{At: fat(9), Seen: fat(9.5), Kind: "force-down", Detail: "forced_down true", Before: "instanceha-rule"},
				{At: fat(9.4), Seen: fat(10), Kind: "evacuation", ServerID: "srv-c", To: "compute-1", MigrationID: 43, Status: "accepted"},
			}},
	}
	var out []api.Incident
	for _, i := range all {
		if (q.Host == "" || q.Host == i.Host) && (q.ID == 0 || q.ID == i.ID) && (!q.OpenOnly || i.Closed.IsZero()) {
			out = append(out, i)
		}
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out, true, nil
}

// TestCLIGoldenShadowAndIncidents renders `iha shadow on|off` and `iha
// incidents` (the list, one incident, its fields) in every output format;
// the exit status says whether any incident shown disagrees.
func TestCLIGoldenShadowAndIncidents(t *testing.T) {
	f := &fixture{}
	url := serveFixture(t, f)
	runGolden(t, url, []goldenCase{
		{"shadow-on", cliCanaryRW, []string{"shadow", "on", "--reason", "trying IHA beside InstanceHA"}, exitOK, allFormats},
		{"shadow-off", cliCanaryRW, []string{"shadow", "off", "--reason", "InstanceHA stopped"}, exitOK, []string{outTable, outJSON}},
		{"incidents", cliCanaryRO, []string{"incidents"}, exitUnhealthy, allFormats},
		{"incidents-open", cliCanaryRO, []string{"incidents", "--open", "-c", "id", "-c", "host", "-c", "agree"}, exitUnhealthy, []string{outTable, outValue}},
		{"incident", cliCanaryRO, []string{"incidents", "1"}, exitOK, allFormats},
		{"incident-host", cliCanaryRO, []string{"incidents", "compute-8"}, exitUnhealthy, []string{outTable, outWide}},
		{"incident-fields", cliCanaryRO, []string{"incidents", "compute-8", "-c", "iha", "-c", "agent", "-c", "findings"}, exitUnhealthy, []string{outTable, outValue}},
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.mutations) != 5+1+2+1 { // shadow on in five forms and --json, off in two and --json
		t.Fatalf("%d mutations reached the leader, want 9", len(f.mutations))
	}
	if m := f.mutations[0]; m.Kind != api.MutShadowOn || m.Reason != "trying IHA beside InstanceHA" || m.By == "" {
		t.Fatalf("shadow on reached the leader as %+v", m)
	}
	if m := f.mutations[len(f.mutations)-1]; m.Kind != api.MutShadowOff || m.Reason != "InstanceHA stopped" {
		t.Fatalf("shadow off reached the leader as %+v", m)
	}

	for _, c := range []struct {
		name      string
		args      []string
		want      int
		stderrHas string
	}{
		{"shadow neither on nor off", []string{"shadow", "maybe"}, exitUsage, `"maybe": want on or off`},
		{"shadow without a token", []string{"shadow", "on"}, exitUnhealthy, "401"},
		{"an unknown incident", []string{"incidents", "99"}, exitUnhealthy, "no incident 99"},
		{"a host without incident", []string{"incidents", "compute-1"}, exitUnhealthy, "no incident of compute-1"},
		{"an unknown column", []string{"incidents", "-c", "colour"}, exitUsage, `no column "colour"`},
		{"two incidents named", []string{"incidents", "1", "2"}, exitUsage, "at most one"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := cliCanaryRO
			if c.args[0] == "shadow" {
				tok = ""
			}
			cliEnv(t, url, tok)
			code, out, errOut := runCLI(t, c.args...)
			if code != c.want || !strings.Contains(errOut, c.stderrHas) {
				t.Fatalf("exit %d (want %d), stderr lacks %q:\n%s%s", code, c.want, c.stderrHas, out, errOut)
			}
		})
	}
}

// TestCLIGoldenReplay replays the decision log that the leader's
// TestReplayOfARecordedIncident recorded in shadow mode (c1 hung among 4
// computes): with the recording's configuration every decision is the
// same (exit 0); with THRESHOLD lowered to 20 % the fence and its plan
// become a skip, and the output says why (exit 1).
func TestCLIGoldenReplay(t *testing.T) {
	runGolden(t, "", []goldenCase{
		{"replay", "", []string{"replay", "testdata/replay"}, exitOK, allFormats},
		{"replay-threshold", "", []string{"replay", "testdata/replay", "--set", "THRESHOLD=20"}, exitUnhealthy, allFormats},
		{"replay-diff", "", []string{"replay", "testdata/replay/decisions.log", "--set", "THRESHOLD=20", "--diff", "-c", "host", "-c", "kind", "-c", "differs", "-c", "why"}, exitUnhealthy, []string{outTable, outValue}},
	})

	empty := t.TempDir()
	cand := t.TempDir()
	if err := os.WriteFile(filepath.Join(cand, "config.yaml"), []byte("config:\n  THRESHOLD: 20\n  DELTA: 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		args      []string
		want      int
		stdoutHas string
		stderrHas string
	}{
		{"no log named", []string{"replay"}, exitUsage, "", "name a decision log"},
		{"a log that does not exist", []string{"replay", "testdata/nowhere"}, exitUnhealthy, "", "decision log testdata/nowhere"},
		{"a directory without a log", []string{"replay", empty}, exitUnhealthy, "", "no decisions.log nor decisions-*.log.gz"},
		{"an unknown key", []string{"replay", "testdata/replay", "--set", "THRESHOLDS=20"}, exitUnhealthy, "", "THRESHOLDS: is not a configuration key"},
		{"a value out of range", []string{"replay", "testdata/replay", "--set", "THRESHOLD=200"}, exitUnhealthy, "", "THRESHOLD: \"200\" is out of range"},
		{"a secret", []string{"replay", "testdata/replay", "--set", "API_TOKEN=x"}, exitUnhealthy, "", "API_TOKEN: is not a decision rule's key"},
		{"--set without =", []string{"replay", "testdata/replay", "--set", "THRESHOLD"}, exitUsage, "", "want KEY=VALUE"},
		{"a config dir without config.yaml", []string{"replay", "testdata/replay", "--config", empty}, exitUnhealthy, "", "config.yaml: does not exist"},
		{"a candidate config.yaml", []string{"replay", "testdata/replay", "--config", cand, "-o", "json"}, exitUnhealthy, `"replayed": "20"`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cliEnvWith(t, nil)
			code, out, errOut := runCLI(t, c.args...)
			if code != c.want || !strings.Contains(out, c.stdoutHas) || !strings.Contains(errOut, c.stderrHas) {
				t.Fatalf("exit %d (want %d), stdout lacks %q or stderr %q:\n%s%s", code, c.want, c.stdoutHas, c.stderrHas, out, errOut)
			}
		})
	}
}
