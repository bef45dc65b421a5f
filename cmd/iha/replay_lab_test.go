package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
)

// The decision log of a recovery on the real-Nova lab (lab scenario 7,
// deploy/lab/scenarios/shadow_test.go, copied out with LAB_SHADOW_RECORD;
// 2026-12-07, 21:20): the acting quorum's leader
// lab-leader-1, Nova 26 at its defaults (report_interval 10 s), three
// computes; lab-compute-1 powered off by its BMC at 21:20:44.8, its agent
// dead in the mesh at 47.980 (verdict wait: Nova's heartbeat of 21:20:38
// not yet overdue), judged failed at 50.000 when it was 12 s old, fenced,
// its two evacuable servers evacuated (its untagged one left), re-enabled.
// 12 poll cycles, 34 lines, 11 kB: kept whole. config.yaml is that
// leader's, as the scenario wrote it (its paths are the lab's temporary
// directory; the replay reads none of them).
const (
	labLog    = "testdata/replay-lab/decisions"
	labConfig = "testdata/replay-lab"
	labHost   = "lab-compute-1"
)

// replayJSON runs iha replay ARGS -o json and decodes what it printed.
func replayJSON(t *testing.T, want int, args ...string) *leader.ReplayResult {
	t.Helper()
	code, out, errOut := runCLI(t, append(append([]string{"replay"}, args...), "-o", "json")...)
	if code != want {
		t.Fatalf("iha replay %v: exit %d, want %d\n%s%s", args, code, want, out, errOut)
	}
	var res leader.ReplayResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("iha replay %v -o json: %v\n%s", args, err, out)
	}
	return &res
}

func replayRows(res *leader.ReplayResult, kind string) []leader.ReplayRow {
	var out []leader.ReplayRow
	for _, r := range res.Rows {
		if r.Host == labHost && r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

// TestCLIReplayOfALabRecording replays the lab's recording through `iha
// replay LOG --config DIR`: with the recording's config.yaml this build
// takes every recorded decision again, in the same poll cycle (0
// differences, exit 0); with THRESHOLD lowered to 30 % (one failed compute
// of three is 33.3 %) the fence and its plan are gone, a skip takes their
// place in the cycle of the recorded verdict, and the output says why
// (exit 1). The recording holds no secret of the lab.
func TestCLIReplayOfALabRecording(t *testing.T) {
	cliEnvWith(t, nil)
	orig := replayEnv
	t.Cleanup(func() { replayEnv = orig })
	replayEnv = func() config.Env { return config.MapEnv(nil) } // no IHA_<KEY> of the machine running the test

	b, err := os.ReadFile(filepath.Join(labLog, "decisions.log"))
	if err != nil {
		t.Fatal(err)
	}
	// The lab's BMC password, its Nova tokens, and key material of any kind.
	for _, s := range []string{"labpass", "admin:admin", "admin:iha-shadow", "passwd", "password", "BEGIN "} {
		if strings.Contains(string(b), s) {
			t.Fatalf("the recording holds %q", s)
		}
	}

	// As recorded: the configuration the log carries, then the node's
	// config.yaml through --config.
	for _, args := range [][]string{{labLog}, {labLog, "--config", labConfig}} {
		res := replayJSON(t, exitOK, args...)
		if res.Differences != 0 || len(res.Config) != 0 || len(res.Missing) != 0 || len(res.Notes) != 0 {
			t.Fatalf("iha replay %v: %d differences, config %+v, missing %v, notes %v", args, res.Differences, res.Config, res.Missing, res.Notes)
		}
		fence, plan, verdicts := replayRows(res, leader.ShadowFence), replayRows(res, "plan"), replayRows(res, "verdict")
		if len(fence) != 1 || fence[0].Recorded == nil || fence[0].Replayed == nil || fence[0].Recorded.Shadow || !fence[0].Replayed.Shadow ||
			fence[0].Replayed.Verdict != "failed" || !fence[0].Replayed.Cycle.Equal(fence[0].Recorded.Cycle) {
			t.Fatalf("iha replay %v: the recorded (acting) fence must be replayed (in shadow mode) in its cycle: %+v", args, fence)
		}
		if len(plan) != 1 || len(plan[0].Replayed.Servers) != 2 || strings.Join(plan[0].Replayed.Servers, ",") != strings.Join(plan[0].Recorded.Servers, ",") {
			t.Fatalf("iha replay %v: plan rows %+v", args, plan)
		}
		if len(verdicts) != 2 || verdicts[0].Replayed.Verdict != "wait" || verdicts[1].Replayed.Verdict != "failed" {
			t.Fatalf("iha replay %v: verdict rows %+v", args, verdicts)
		}
	}
	code, out, errOut := runCLI(t, "replay", labLog, "--config", labConfig)
	if code != exitOK || !strings.Contains(out, "no key differs from the recording") ||
		!strings.Contains(out, "5 recorded, 5 replayed: the same decisions at the same times") {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}

	// A candidate config.yaml: the recording's with THRESHOLD 30.
	cfg, err := os.ReadFile(filepath.Join(labConfig, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), `THRESHOLD: "50"`) {
		t.Fatalf("the recording's config.yaml does not set THRESHOLD 50:\n%s", cfg)
	}
	cand := t.TempDir()
	if err := os.WriteFile(filepath.Join(cand, "config.yaml"), []byte(strings.Replace(string(cfg), `THRESHOLD: "50"`, `THRESHOLD: "30"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	res := replayJSON(t, exitUnhealthy, labLog, "--config", cand)
	if len(res.Config) != 1 || res.Config[0].Key != "THRESHOLD" || res.Config[0].Recorded != "50" || res.Config[0].Replayed != "30" {
		t.Fatalf("config changes %+v: want THRESHOLD 50 → 30 alone", res.Config)
	}
	fence, plan, skip, verdicts := replayRows(res, leader.ShadowFence), replayRows(res, "plan"), replayRows(res, leader.ShadowSkip), replayRows(res, "verdict")
	if len(fence) != 1 || fence[0].Replayed != nil || fence[0].Differs != "only in the recording" || len(plan) != 1 || plan[0].Replayed != nil {
		t.Fatalf("with THRESHOLD 30 the fence and its plan must be gone: fence %+v, plan %+v", fence, plan)
	}
	if len(verdicts) != 2 || verdicts[1].Replayed == nil || verdicts[1].Replayed.Verdict != "failed" || verdicts[1].Differs != "" {
		t.Fatalf("the verdicts do not depend on THRESHOLD: %+v", verdicts)
	}
	if len(skip) != 1 || skip[0].Recorded != nil || skip[0].Differs != "only in the replay" || !skip[0].Replayed.Cycle.Equal(verdicts[1].Recorded.Cycle) ||
		!strings.Contains(skip[0].Why, "THRESHOLD exceeded: 33.3% of computes failed or in recovery > 30%") {
		t.Fatalf("with THRESHOLD 30 the replay must skip %s in the cycle of the recorded verdict and say why: %+v", labHost, skip)
	}
	code, out, errOut = runCLI(t, "replay", labLog, "--config", cand, "--diff", "-o", "wide")
	if code != exitUnhealthy || !strings.Contains(out, "THRESHOLD 50 → 30") || !strings.Contains(out, "only in the replay") ||
		!strings.Contains(out, "THRESHOLD exceeded: 33.3% of computes failed or in recovery > 30%; suspect a partition, not acting") {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}
}
