package testlog

import (
	"log/slog"
	"strings"
	"testing"
)

// recordingTB captures what reaches t.Log.
type recordingTB struct {
	testing.TB
	lines    []string
	cleanups []func()
}

func (r *recordingTB) Log(args ...any)  { r.lines = append(r.lines, args[0].(string)) }
func (r *recordingTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func TestWritesReachTheTestUntilItsCleanupsRun(t *testing.T) {
	r := &recordingTB{TB: t}
	log := New(r, slog.LevelInfo)
	log.Info("during the test", "k", "v")
	log.Debug("below the level")
	for _, f := range r.cleanups {
		f()
	}
	log.Info("after the test") // would panic on a real, completed test
	if len(r.lines) != 1 || !strings.Contains(r.lines[0], `msg="during the test" k=v`) || strings.HasSuffix(r.lines[0], "\n") {
		t.Fatalf("lines logged: %q", r.lines)
	}
}
