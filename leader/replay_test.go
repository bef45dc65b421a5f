package leader_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/sandbox"
	"github.com/ihaproject/iha/leader"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/novasim"
	"github.com/ihaproject/iha/pkg/secret"
)

// replayFixture, when set, is where TestReplayOfARecordedIncident copies
// its recording: cmd/iha's replay tests replay it (go test ./leader -run
// TestReplayOfARecordedIncident -replay-fixture ../cmd/iha/testdata/replay).
var replayFixture = flag.String("replay-fixture", "", "copy the shadow recording of TestReplayOfARecordedIncident into this directory")

// recordIncident runs the 4-compute world with a decision log, hangs c1,
// waits until the leader decided on it (and a few cycles more), stops the
// leader and returns the log's files.
func recordIncident(t *testing.T, s config.Settings) []string {
	t.Helper()
	dir := t.TempDir()
	rec, err := leader.OpenRecorder(leader.DecisionLogOptions{Dir: dir, Node: "sandbox", Build: "test"})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, s, func(o *sandbox.Options) { o.Recorder = rec })
	w.start()
	w.Hang("c1")
	waitFor(t, 30*time.Second, "the leader's decision on c1", func() bool {
		if s.Shadow {
			return fenceDecision(w.FSM(), "c1") != nil
		}
		return w.phase("c1") == leader.PhaseDone
	})
	settle()
	w.StopLeader()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := leader.LogFiles(dir)
	if err != nil || len(files) == 0 {
		t.Fatalf("log files %v: %v", files, err)
	}
	return files
}

func rowsOf(res *leader.ReplayResult, host, kind string) []leader.ReplayRow {
	var out []leader.ReplayRow
	for _, r := range res.Rows {
		if r.Host == host && r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

// TestReplayOfARecordedIncident records a failure in shadow mode, then
// replays the log offline: with the recording's configuration the replay
// takes the same decisions at the same times; with THRESHOLD lowered below
// the failure's share the fence becomes a skip, and the replay says why.
func TestReplayOfARecordedIncident(t *testing.T) {
	t.Parallel()
	s := fastSettings()
	s.Shadow = true
	files := recordIncident(t, s)
	if *replayFixture != "" {
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(*replayFixture, filepath.Base(f)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	res, err := leader.Replay(context.Background(), files, leader.ReplayOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replayed %d cycles from %s to %s, %d decisions recorded", res.Cycles, res.From.Format("15:04:05.000"), res.To.Format("15:04:05.000"), len(res.Recorded))
	if res.Differences != 0 || len(res.Config) != 0 || len(res.Missing) != 0 {
		for _, r := range res.Rows {
			if r.Differs != "" {
				t.Logf("%s %s %s: %s (%s)", r.At.Format("15:04:05.000"), r.Host, r.Kind, r.Differs, r.Why)
			}
		}
		t.Fatalf("replay with the recording's configuration: %d differences, config %v, missing %v, notes %v", res.Differences, res.Config, res.Missing, res.Notes)
	}
	fence := rowsOf(res, "c1", leader.ShadowFence)
	plan := rowsOf(res, "c1", "plan")
	if len(fence) != 1 || fence[0].Recorded == nil || fence[0].Replayed == nil || !fence[0].Replayed.Cycle.Equal(fence[0].Recorded.Cycle) {
		t.Fatalf("fence rows %+v", fence)
	}
	if len(plan) != 1 || len(plan[0].Replayed.Servers) != 4 {
		t.Fatalf("plan rows %+v", plan)
	}

	lower := s
	lower.Threshold = 20 // 1 of 4 computes is 25 %
	res, err = leader.Replay(context.Background(), files, leader.ReplayOptions{Settings: &lower})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Config) != 1 || res.Config[0].Key != "THRESHOLD" || res.Config[0].Recorded != "50" || res.Config[0].Replayed != "20" {
		t.Fatalf("config changes %+v", res.Config)
	}
	fence = rowsOf(res, "c1", leader.ShadowFence)
	skip := rowsOf(res, "c1", leader.ShadowSkip)
	if res.Differences == 0 || len(fence) != 1 || fence[0].Replayed != nil || fence[0].Differs != "only in the recording" {
		t.Fatalf("with THRESHOLD 20 the fence must be gone: %d differences, fence rows %+v", res.Differences, fence)
	}
	if len(skip) != 1 || skip[0].Recorded != nil || !strings.Contains(skip[0].Why, "THRESHOLD exceeded: 25.0% of computes") || !strings.Contains(skip[0].Why, "> 20%") ||
		!skip[0].Replayed.Cycle.Equal(fence[0].Recorded.Cycle) {
		t.Fatalf("with THRESHOLD 20 the replay must skip c1 at the recorded time and say why: %+v", skip)
	}
}

// TestReplayOfAnActingRecording: a log recorded while acting replays (in
// shadow mode) to the same verdicts and recovery decisions.
func TestReplayOfAnActingRecording(t *testing.T) {
	t.Parallel()
	files := recordIncident(t, fastSettings())
	res, err := leader.Replay(context.Background(), files, leader.ReplayOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Rows {
		t.Logf("%s %s %-8s differs=%q %s", r.At.Format("15:04:05.000"), r.Host, r.Kind, r.Differs, r.Why)
	}
	if res.Differences != 0 {
		t.Fatalf("%d differences replaying an acting recording (notes %v, missing %v)", res.Differences, res.Notes, res.Missing)
	}
	if f := rowsOf(res, "c1", leader.ShadowFence); len(f) != 1 || f[0].Replayed == nil || !f[0].Replayed.Shadow || f[0].Recorded.Shadow {
		t.Fatalf("fence rows %+v", f)
	}
}

// TestDecisionLogHoldsNoSecret plants canaries where secrets live (the
// API tokens, the cloud's password) and greps every file of a recording.
func TestDecisionLogHoldsNoSecret(t *testing.T) {
	t.Parallel()
	const canary = "CanaryDecisionLog-7f3c"
	s := fastSettings()
	s.Shadow = true
	s.APIToken, s.APIReadToken = secret.New(canary+"-rw"), secret.New(canary+"-ro")
	dir := t.TempDir()
	rec, err := leader.OpenRecorder(leader.DecisionLogOptions{Dir: dir, Node: "sandbox"})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, s, func(o *sandbox.Options) {
		o.Recorder = rec
		o.Sim.Password = canary
	})
	w.start()
	w.Hang("c1")
	waitFor(t, 30*time.Second, "the shadow decision", func() bool { return fenceDecision(w.FSM(), "c1") != nil })
	w.StopLeader()
	_ = rec.Close()
	files, _ := leader.LogFiles(dir)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), canary) {
			t.Fatalf("%s holds a secret", filepath.Base(f))
		}
		if !strings.Contains(string(b), `"THRESHOLD"`) {
			t.Fatalf("%s lacks the configuration in force", filepath.Base(f))
		}
	}
}

// TestReplayWithInstanceHAHeartbeats: with CHECK_HEARTBEAT the verdicts
// read InstanceHA's heartbeats, so the decision log keeps them (the
// listener's start and each host's last heartbeat). A recording where c3
// (no agent, nova-compute stopped, heartbeat going on) is reachable and
// c4 (no heartbeat) is failed replays to the same decisions; the same
// log without its heartbeat records does not (the replay would fence
// c3), which is what the records are for.
func TestReplayWithInstanceHAHeartbeats(t *testing.T) {
	t.Parallel()
	s := heartbeatSettings().Settings
	s.Shadow = true
	dir := t.TempDir()
	rec, err := leader.OpenRecorder(leader.DecisionLogOptions{Dir: dir, Node: "sandbox", Build: "test"})
	if err != nil {
		t.Fatal(err)
	}
	mesh := sandbox.NewMesh()
	beats := leader.NewHeartbeatLog()
	beats.Started(time.Now().Add(-time.Hour))
	w := newWorld(t, s, func(o *sandbox.Options) {
		o.Mesh, o.Heartbeats, o.Recorder = mesh, beats, rec
		o.Sim.ServiceDownTime = 30 * time.Second
	})
	w.Sim.AddServer(novasim.ServerSpec{Name: "vm-c3", Host: "c3", ImageID: w.image})
	w.Sim.AddServer(novasim.ServerSpec{Name: "vm-c4", Host: "c4", ImageID: w.image})
	startSenders(t, beats, 500*time.Millisecond, "c1", "c2", "c3")
	w.start()
	mesh.Forget("c3")
	mesh.Forget("c4")
	time.Sleep(500 * time.Millisecond)
	w.Hang("c3")
	w.Hang("c4")
	waitFor(t, 20*time.Second, "the shadow's decision on c4 and c3 reachable", func() bool {
		return fenceDecision(w.FSM(), "c4") != nil && len(w.events("c3", leader.EventHostReachable)) > 0
	})
	settle()
	w.StopLeader()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := leader.LogFiles(dir)
	if err != nil || len(files) == 0 {
		t.Fatalf("log files %v: %v", files, err)
	}
	res, err := leader.Replay(context.Background(), files, leader.ReplayOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Differences != 0 || len(res.Missing) != 0 {
		for _, r := range res.Rows {
			if r.Differs != "" {
				t.Logf("%s %s %s: %s (%s)", r.At.Format("15:04:05.000"), r.Host, r.Kind, r.Differs, r.Why)
			}
		}
		t.Fatalf("replay: %d differences, missing %v, notes %v", res.Differences, res.Missing, res.Notes)
	}
	if len(rowsOf(res, "c4", leader.ShadowFence)) != 1 || len(rowsOf(res, "c3", leader.ShadowFence)) != 0 {
		t.Fatalf("fence rows: c4 %+v, c3 %+v", rowsOf(res, "c4", leader.ShadowFence), rowsOf(res, "c3", leader.ShadowFence))
	}

	// The same log without its heartbeat records.
	stripped := filepath.Join(t.TempDir(), "stripped")
	if err := os.MkdirAll(stripped, 0o755); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".gz") {
			t.Fatalf("rotated (gzipped) file %s: not expected for this short recording", f)
		}
		var keep []string
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, `{"k":"hb"`) {
				keep = append(keep, line)
			}
		}
		if len(keep) == len(strings.Split(string(b), "\n")) {
			continue
		}
		p := filepath.Join(stripped, filepath.Base(f))
		if err := os.WriteFile(p, []byte(strings.Join(keep, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		t.Fatal("the recording has no heartbeat record")
	}
	res, err = leader.Replay(context.Background(), out, leader.ReplayOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Differences == 0 {
		t.Fatal("without its heartbeat records the replay took the same decisions: the test shows nothing")
	}
}
