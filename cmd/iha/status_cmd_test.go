package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/secret"
	"github.com/ihaproject/iha/pkg/version"
)

var updateCLI = flag.Bool("update-cli", false, "rewrite cmd/iha/testdata/cli/*.golden")

const (
	cliCanaryRW = "CanaryCliWrite-8d21"
	cliCanaryRO = "CanaryCliRead-41be"
)

// fixture is a Backend with one fixed cluster: a leader ctl-1, compute-9
// failed mid-recovery, compute-8 skipped, compute-3 in maintenance. The
// CLI's golden files are its rendering of these answers.
type fixture struct {
	mu        sync.Mutex
	noLeader  bool
	mutations []api.Mutation
	// phase9 replaces compute-9's phase (failed) when set; extra events
	// follow the fixed ones (watch tests change both).
	phase9 string
	extra  []api.Event
}

// move9 puts compute-9 in phase p and records the event that says so.
func (f *fixture) move9(p string, seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.phase9 = p
	f.extra = append(f.extra, api.Event{Seq: seq, At: fat(float64(seq)), Host: "compute-9", Kind: "RecoveryRetried", Message: "back to " + p})
}

// event records an event of host that changes nothing.
func (f *fixture) event(host string, seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.extra = append(f.extra, api.Event{Seq: seq, At: fat(float64(seq)), Host: host, Kind: "KdumpNoticeIgnored", Message: "nothing changes"})
}

func (f *fixture) phase9Or(p string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.phase9 != "" {
		return f.phase9
	}
	return p
}

var ft0 = time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)

func fat(s float64) time.Time { return ft0.Add(time.Duration(s * float64(time.Second))) }

func (f *fixture) Freshness() api.Freshness {
	return api.Freshness{Node: "ctl-2", Role: "Follower", LeaderID: "ctl-1", AppliedIndex: 120, LastContact: fat(30)}
}
func (f *fixture) LeaderAPI() (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return "", !f.noLeader // this node leads unless told it knows none
}
func (f *fixture) ConsistentRead(context.Context) error { return nil }
func (f *fixture) Cluster(context.Context) (api.Cluster, error) {
	ready := true
	leader := "ctl-1"
	f.mu.Lock()
	if f.noLeader {
		leader = ""
	}
	f.mu.Unlock()
	return api.Cluster{Version: "1.0.0", RaftState: "Follower", Term: 4, CommitIndex: 120, Leader: leader, LeaderAPI: "10.0.0.1:7421",
		Voters: []api.Voter{{ID: "ctl-1", Address: "10.0.0.1:7420", Leader: true, Suffrage: "Voter", Health: "ok", APIAddr: "10.0.0.1:7421"},
			{ID: "ctl-2", Address: "10.0.0.2:7420", Suffrage: "Voter", Health: "ok"},
			{ID: "ctl-3", Address: "10.0.0.3:7420", Suffrage: "Voter", Health: "unknown (ask the leader)"}},
		Mesh: api.Mesh{States: map[string]int{}}, Maintenance: map[string]string{"compute-3": "disk swap"},
		Security:  api.Security{APITLS: true, MeshEncrypted: true, MeshIdentity: true, Warnings: []string{"raft without TLS (RAFT_TLS_*)"}},
		Config:    api.ConfigSummary{DetectionMode: "both", QuickEvacuateLevel: 2, PollSeconds: 45, DeltaSeconds: 30, ThresholdPercent: 50, Workers: 4},
		NovaReady: &ready, LastPoll: fat(29),
		Hosts: api.PhaseCounts{Records: 2, Active: 0, Failed: 1, ByPhase: map[string]int{"failed": 1, "skipped": 1}}}, nil
}
func (f *fixture) Hosts(context.Context) ([]api.HostSummary, error) {
	hs := []api.HostSummary{
		{Host: "compute-1", MeshState: "alive", NovaState: "up", NovaStatus: "enabled", Verdict: "healthy"},
		{Host: "compute-3", MeshState: "alive", NovaState: "up", NovaStatus: "disabled", Verdict: "maintenance", Maintenance: "disk swap"},
		{Host: "compute-8", MeshState: "unknown", NovaState: "down", Verdict: "skipped", Phase: "skipped", Since: fat(5), Reason: "THRESHOLD exceeded"},
		{Host: "compute-9", MeshState: "dead", NovaState: "down", ForcedDown: true, NovaStatus: "disabled", Verdict: "failed", Phase: "failed",
			Since: fat(4), Servers: 2, ServersDone: 1, Reason: "1 server could not be evacuated"},
	}
	if p := f.phase9Or("failed"); p != "failed" {
		hs[3].Phase, hs[3].Verdict = p, "recovering"
	}
	return hs, nil
}
func (f *fixture) Host(_ context.Context, h string) (api.Host, error) {
	switch h {
	case "compute-1": // healthy: no record, but Nova, the mesh and the leader's verdict know it
		return api.Host{Host: "compute-1", Verdict: "healthy", Zone: "nova", ServiceID: "svc-1",
			Nova: &api.NovaService{ID: "svc-1", Zone: "nova", State: "up", Status: "enabled", UpdatedAt: fat(28), ListedAt: fat(29)},
			Mesh: &api.MeshMember{State: "alive", Since: fat(-3600), Node: "compute-1", Addr: "10.0.1.1:7946"},
			Judged: &api.Evidence{Mode: "both", Source: "nova", Verdict: "healthy", NovaState: "up", NovaUpdatedAt: fat(28),
				MeshState: "alive", MeshSince: fat(-3600), Note: "agent alive, nova up"},
			JudgedAt: fat(29), Steps: []api.Step{}, Servers: []api.Instance{},
			Gate: api.Gate{Host: "compute-1", Allow: true, Reason: "no recovery recorded for this host"}}, nil
	case "compute-7": // its BMC is dead; its agent was armed: the leader waits for the watchdog
		return api.Host{Host: "compute-7", Verdict: "recovering", Phase: "detected", PhaseSince: fat(2), DetectedAt: fat(0), Zone: "nova",
			ServiceID: "svc-7", Level: 2, LastError: "sim: power-off compute-7: BMC unreachable",
			Evidence: api.Evidence{Mode: "both", Source: "gossip+nova", NovaState: "up", NovaUpdatedAt: fat(-9), Note: "mesh: dead since 02:59:59"},
			Steps:    []api.Step{{Step: "fence", Op: "t2.i20", Started: fat(0.1), Finished: fat(2), Seconds: 1.9, Outcome: "failed", Detail: "sim: power-off compute-7: BMC unreachable"}},
			Servers:  []api.Instance{},
			Watchdog: &api.Watchdog{Armed: true, WSeconds: 10, LeaseSeconds: 15, LastGrant: fat(-2), LeaseExpires: fat(13), Holders: 9,
				WaitSince: fat(2), FenceDeadline: fat(28), BMCError: "sim: power-off compute-7: BMC unreachable"},
			Gate: api.Gate{Host: "compute-7", Allow: false, Reason: "recovery in phase detected since 2026-03-01T03:00:02Z"}}, nil
	case "compute-9":
	default:
		return api.Host{}, api.ErrNotFound
	}
	return api.Host{Host: "compute-9", Verdict: "failed", Phase: f.phase9Or("failed"),
		Nova: &api.NovaService{ID: "svc-9", Zone: "nova", State: "down", Status: "disabled", ForcedDown: true,
			DisabledReason: "instanceha evacuation FAILED: 2026-03-01T03:00:04", UpdatedAt: fat(-7), ListedAt: fat(29)},
		Mesh: &api.MeshMember{State: "dead", Since: fat(-5), Node: "compute-9", Addr: "10.0.1.9:7946", Accusers: []string{"compute-2", "compute-5"}, Confirmations: 2}, PhaseSince: fat(4), DetectedAt: fat(0), FinishedAt: fat(4), Zone: "nova",
		ServiceID: "svc-9", Level: 2, Reason: "1 server could not be evacuated", LastError: "nova: 409 Conflict: no valid host",
		Evidence: api.Evidence{Mode: "both", Source: "gossip", NovaState: "down", NovaUpdatedAt: fat(-7), Note: "gossip dead since 02:59:55"},
		Fence:    &api.Fence{Method: "ipmi", State: "off", At: fat(1.3), Detail: "ipmi: power off confirmed"},
		Steps: []api.Step{
			{Step: "fence", Op: "t2.i7", Started: fat(0.1), Finished: fat(1.3), Seconds: 1.2, Outcome: "ok", Detail: "ipmi: power off confirmed"},
			{Step: "disable", Op: "t2.i9", Started: fat(1.4), Finished: fat(1.6), Seconds: 0.2, Outcome: "ok", Detail: "forced down and disabled"},
			{Step: "evacuate", Op: "t2.i12", ServerID: "srv-a", Started: fat(1.8), Finished: fat(2), Seconds: 0.2, Outcome: "ok"},
			{Step: "evacuate", Op: "t2.i15", ServerID: "srv-b", Started: fat(1.9), Finished: fat(2.2), Seconds: 0.3, Outcome: "failed", Detail: "nova: 409 Conflict: no valid host"},
		},
		Servers: []api.Instance{
			{ID: "srv-a", Name: "web-1", From: "compute-9", To: "compute-2", OrigStatus: "ACTIVE", State: "done", MigrationID: 41, Attempts: 1, StartedAt: fat(1.8), RequestedAt: fat(2), FinishedAt: fat(3.5), HAEnabled: true},
			{ID: "srv-b", Name: "db-1", From: "compute-9", OrigStatus: "ACTIVE", State: "failed", Attempts: 1, Error: "nova: 409 Conflict: no valid host", StartedAt: fat(1.9), FinishedAt: fat(2.2)},
		},
		Segment: "rack-a", RecoveryMethod: "auto_priority", Method: "auto", Targets: []string{"compute-2", "compute-3"},
		Gate: api.Gate{Host: "compute-9", Allow: false, Reason: "recovery failed and needs an operator: 1 server could not be evacuated"}}, nil
}
func (f *fixture) Events(q api.EventQuery) []api.Event {
	all := []api.Event{
		{Seq: 11, At: fat(0), Host: "compute-9", Kind: "HostDown", Message: "host failed: source gossip, nova state down", Warning: true},
		{Seq: 12, At: fat(0.1), Host: "compute-9", Kind: "FencingStarted", Message: "fencing (attempt 1, op t2.i7)"},
		{Seq: 13, At: fat(1.3), Host: "compute-9", Kind: "FencingSucceeded", Message: "fenced: ipmi: power off confirmed"},
		{Seq: 14, At: fat(5), Host: "compute-8", Kind: "HostSkipped", Message: "host failed but is not recovered: THRESHOLD exceeded", Warning: true},
	}
	f.mu.Lock()
	all = append(all, f.extra...)
	f.mu.Unlock()
	var out []api.Event
	for _, e := range all {
		if e.Seq > q.Since && (q.Host == "" || q.Host == e.Host) {
			out = append(out, e)
		}
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out
}
func (f *fixture) Gate(h string) api.Gate { return api.Gate{Host: h, Allow: true} }
func (f *fixture) Mutate(_ context.Context, m api.Mutation) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.Kind == api.MutRetry && m.Host != "compute-9" {
		return 0, api.ErrNotFound
	}
	f.mutations = append(f.mutations, m)
	return 15, nil
}
func (f *fixture) Ready(context.Context) error { return nil }

// cliEnv points the CLI at url with token, and stops its clock a minute
// after the fixture's first event (ages in tables).
func cliEnv(t *testing.T, url, token string) {
	t.Helper()
	cliEnvWith(t, map[string]string{"IHA_ADDR": url, "IHA_TOKEN": token})
}

// cliEnvWith makes the CLI see env (and USER=alice) as its environment.
func cliEnvWith(t *testing.T, env map[string]string) {
	t.Helper()
	orig, origTerm, origNow := apiEnv, isTerminal, now
	t.Cleanup(func() { apiEnv, isTerminal, now = orig, origTerm, origNow })
	isTerminal = func(io.Writer) bool { return false }
	now = func() time.Time { return fat(60) }
	apiEnv = func(k string) string {
		if k == "USER" {
			return "alice"
		}
		return env[k]
	}
}

func serveFixture(t *testing.T, f *fixture) string {
	t.Helper()
	srv := httptest.NewServer(api.NewServer(api.Config{Backend: f, Token: secret.New(cliCanaryRW), ReadToken: secret.New(cliCanaryRO),
		Build: api.VersionInfo{Version: "v1.0.0", Revision: "0123456789abcdef0123456789abcdef01234567", GoVersion: "go1.26.0", Platform: "linux/amd64"}}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	for _, c := range []string{cliCanaryRW, cliCanaryRO} {
		if strings.Contains(out.String()+errOut.String(), c) {
			t.Fatalf("iha %v printed a token", args)
		}
	}
	return code, out.String(), errOut.String()
}

// goldenCLI compares got with testdata/cli/name.golden. The "by" of a
// mutation names the test machine; it is masked.
func goldenCLI(t *testing.T, name, got string) {
	t.Helper()
	host, _ := os.Hostname()
	got = strings.ReplaceAll(got, "@"+host, "@HOST")
	// iha version: the client is the test binary.
	bi := version.Get()
	for _, x := range []struct{ v, mask string }{{bi.GoVersion, "GOVERSION"}, {bi.Platform, "GOOS/GOARCH"}} {
		got = strings.ReplaceAll(got, x.v, x.mask)
	}
	for _, u := range []string{"alice", "root"} {
		got = strings.ReplaceAll(got, u+"@HOST", "USER@HOST")
	}
	path := filepath.Join("testdata", "cli", name+".golden")
	if *updateCLI {
		_ = os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/iha -update-cli)", err)
	}
	if got != string(want) {
		t.Errorf("iha output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// goldenCase is one command line of the golden tests, run in each output
// format it offers.
type goldenCase struct {
	name     string
	token    string
	args     []string
	wantCode int
	formats  []string
}

// TestCLIGoldenOutputOfEveryCommand renders every API command in every
// output format (-o table, wide, json, yaml, value) against one fixed
// cluster, compares with testdata/cli/NAME.FORMAT.golden, checks that
// --json is -o json, and that what is informational (who answered) went
// to stderr, never stdout.
func TestCLIGoldenOutputOfEveryCommand(t *testing.T) {
	f := &fixture{}
	url := serveFixture(t, f)
	cases := []goldenCase{
		{"status", cliCanaryRO, []string{"status"}, exitUnhealthy, allFormats}, // a failed recovery makes the cluster unhealthy
		{"hosts", cliCanaryRO, []string{"hosts"}, exitUnhealthy, allFormats},
		{"host", cliCanaryRO, []string{"host", "compute-9"}, exitUnhealthy, allFormats},
		{"host-healthy", cliCanaryRO, []string{"host", "compute-1"}, exitOK, allFormats},
		{"host-watchdog", cliCanaryRO, []string{"host", "compute-7"}, exitOK, []string{outTable, outJSON, outValue}},
		{"events", cliCanaryRO, []string{"events"}, exitOK, allFormats},
		{"events-host", cliCanaryRO, []string{"events", "--host", "compute-9", "--limit", "2"}, exitOK, allFormats},
		{"events-kind-since", cliCanaryRO, []string{"events", "--kind", "HostDown,HostSkipped", "--since", "2026-03-01T03:00:00.050Z"}, exitOK, allFormats},
		{"pause", cliCanaryRW, []string{"pause", "--reason", "network work"}, exitOK, allFormats},
		{"resume", cliCanaryRW, []string{"resume", "--reason", "network work done"}, exitOK, allFormats},
		{"confirm-fenced", cliCanaryRW, []string{"confirm-fenced", "compute-9", "--reason", "power cord pulled"}, exitOK, allFormats},
		{"maintenance", cliCanaryRW, []string{"maintenance", "compute-3", "on", "--reason", "disk swap"}, exitOK, allFormats},
		{"retry", cliCanaryRW, []string{"retry", "compute-9", "--reason", "scheduler fixed"}, exitOK, allFormats},
		{"version", cliCanaryRO, []string{"version"}, exitOK, []string{outTable, outJSON, outYAML, outValue}},
		// Columns and fields, headers.
		{"hosts-columns", cliCanaryRO, []string{"hosts", "-c", "host", "--column", "verdict,phase"}, exitUnhealthy, []string{outTable, outValue}},
		{"hosts-no-headers", cliCanaryRO, []string{"hosts", "--no-headers"}, exitUnhealthy, []string{outTable, outWide}},
		{"status-fields", cliCanaryRO, []string{"status", "-c", "leader", "-c", "failed"}, exitUnhealthy, []string{outTable, outValue}},
		{"host-fields", cliCanaryRO, []string{"host", "compute-9", "-c", "phase", "-c", "nova-state", "-c", "mesh"}, exitUnhealthy, []string{outTable, outValue}},
	}
	runGolden(t, url, cases)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.mutations) != 5*6 { // five commands, five forms each and the --json alias
		t.Fatalf("%d mutations reached the leader, want 30", len(f.mutations))
	}
	if m := f.mutations[12]; m.Kind != api.MutConfirmFenced || m.Reason != "power cord pulled" || !strings.Contains(m.By, " from 127.0.0.1") {
		t.Fatalf("confirm-fenced reached the leader as %+v", m)
	}
	if m := f.mutations[6]; m.Kind != api.MutResume || m.Reason != "network work done" {
		t.Fatalf("resume reached the leader as %+v: its --reason is lost", m)
	}
}

func runGolden(t *testing.T, url string, cases []goldenCase) {
	t.Helper()
	for _, c := range cases {
		for _, form := range c.formats {
			t.Run(c.name+"/"+form, func(t *testing.T) {
				cliEnv(t, url, c.token)
				args := append(append([]string(nil), c.args...), "-o", form)
				code, out, errOut := runCLI(t, args...)
				if code != c.wantCode {
					t.Fatalf("exit %d, want %d\n%s%s", code, c.wantCode, out, errOut)
				}
				goldenCLI(t, c.name+"."+form, out)
				if strings.Contains(out, "answered by") {
					t.Errorf("stdout holds the informational \"answered by\" line:\n%s", out)
				}
				if form == outJSON {
					// --json is kept as -o json.
					alias := append(append([]string(nil), c.args...), "--json")
					if code, out2, errOut := runCLI(t, alias...); code != c.wantCode || out2 != out {
						t.Fatalf("--json differs from -o json (exit %d)\n%s%s", code, out2, errOut)
					}
				}
				if form == outTable || form == outWide {
					for _, l := range strings.Split(out, "\n") {
						if form == outTable && runeLen(l) > maxTableWidth {
							t.Errorf("a -o table line is %d columns wide (max %d):\n%s", runeLen(l), maxTableWidth, l)
						}
					}
				}
			})
		}
	}
}

func TestCLIExitCodesScriptsCanRelyOn(t *testing.T) {
	url := serveFixture(t, &fixture{})
	noLeader := serveFixture(t, &fixture{noLeader: true})
	cases := []struct {
		name      string
		addr      string
		token     string
		args      []string
		want      int
		stderrHas string
	}{
		{"usage: unknown flag", url, "", []string{"hosts", "--bogus"}, exitUsage, "bogus"},
		{"usage: host without a name", url, "", []string{"host"}, exitUsage, "exactly one host"},
		{"usage: maintenance neither on nor off", url, cliCanaryRW, []string{"maintenance", "c1", "maybe"}, exitUsage, "on or off"},
		{"usage: confirm-fenced without a reason", url, cliCanaryRW, []string{"confirm-fenced", "c1"}, exitUsage, "--reason is required"},
		{"a bad host name is a 400 naming the parameter", url, cliCanaryRO, []string{"host", "..x"}, exitUsage, "parameter host"},
		{"an unknown host is a 404 with a message", url, cliCanaryRO, []string{"host", "compute-404"}, exitUnhealthy, `host "compute-404" is unknown to`},
		{"reads without a token once API_READ_TOKEN is set", url, "", []string{"hosts"}, exitUnhealthy, "set IHA_TOKEN"},
		{"a change with the read-only token", url, cliCanaryRO, []string{"pause"}, exitUnhealthy, "403"},
		{"a change without a token", url, "", []string{"resume"}, exitUnhealthy, "401"},
		{"nothing listening", "127.0.0.1:1", cliCanaryRO, []string{"status"}, exitUnreachable, "cannot reach the IHA API"},
		{"API reachable but no leader: a change", noLeader, cliCanaryRW, []string{"pause"}, exitUnreachable, "no Raft leader is reachable"},
		{"API reachable but no leader: status", noLeader, cliCanaryRO, []string{"status"}, exitUnreachable, "knows no Raft leader"},
		{"the second address answers", "127.0.0.1:1," + url, cliCanaryRO, []string{"events"}, exitOK, ""},
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

func TestCLIAddrFlagWinsOverTheEnvironment(t *testing.T) {
	url := serveFixture(t, &fixture{})
	cliEnv(t, "127.0.0.1:1", cliCanaryRO)
	if code, _, errOut := runCLI(t, "events", "--addr", url); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
