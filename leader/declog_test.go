package leader

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// synthCycles feeds n cycles of `hosts` healthy computes (one heartbeat a
// second) to a recorder, from t0, one second apart.
func synthCycles(r *Recorder, hosts, n int, from time.Time) {
	obs := r.Observer()
	for c := 0; c < n; c++ {
		at := from.Add(time.Duration(c) * time.Second)
		svcs := make([]nova.Service, hosts)
		for h := range svcs {
			svcs[h] = nova.Service{ID: fmt.Sprintf("id-%d", h), Host: fmt.Sprintf("compute-%04d", h), Binary: "nova-compute",
				Zone: "nova", Status: "enabled", State: "up", UpdatedAt: at.Add(-time.Duration(h%10) * time.Second).Truncate(time.Second)}
		}
		obs.ComputeServices(svcs, at)
		obs.Verdicts(map[string]Verdict{}, at)
	}
}

// TestDecisionLogRotatesAndEveryFileReplaysAlone: past DECISION_LOG_MAX_MB
// the file is rotated and compressed, the oldest beyond DECISION_LOG_FILES
// are removed, each file starts with its header, configuration and full
// state, and the files replay together (or the newest alone).
func TestDecisionLogRotatesAndEveryFileReplaysAlone(t *testing.T) {
	dir := t.TempDir()
	rec, err := OpenRecorder(DecisionLogOptions{Dir: dir, MaxBytes: 4 << 10, Files: 3, Node: "ctl-1"})
	if err != nil {
		t.Fatal(err)
	}
	s := config.Defaults()
	s.NodeName = "ctl-1"
	rec.Term(s, t0)
	synthCycles(rec, 20, 60, t0)
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := LogFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 || !strings.HasSuffix(files[0], ".log.gz") || filepath.Base(files[2]) != logFile {
		t.Fatalf("files %v: want 2 compressed rotated files and the current one", files)
	}
	var withCycles []string
	for _, f := range files {
		n := 0
		var kinds []string
		_, err := readLogFile(f, func(_ string, _ int, r logRecord) error {
			if n++; n <= 3 {
				kinds = append(kinds, r.Kind)
			}
			if r.Kind == recCycle && n <= 4 && len(r.Rows) != 20 {
				return fmt.Errorf("the first cycle of a file has %d rows, want all 20", len(r.Rows))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// The newest file may hold only its header and configuration: the
		// rotation happens when the next record comes.
		if k := strings.Join(kinds, ","); k != "hdr,cfg,cyc" && !(k == "hdr,cfg" && f == files[len(files)-1]) {
			t.Errorf("%s starts with %v", filepath.Base(f), kinds)
		}
		if len(kinds) == 3 {
			withCycles = append(withCycles, f)
		}
	}
	res, err := Replay(context.Background(), files, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Cycles == 0 || res.Cycles >= 60 || res.Differences != 0 || len(res.Replayed) != 0 {
		t.Fatalf("replayed %d cycles (the oldest files were pruned), %d differences, %d decisions", res.Cycles, res.Differences, len(res.Replayed))
	}
	alone, err := Replay(context.Background(), withCycles[len(withCycles)-1:], ReplayOptions{})
	if err != nil || alone.Cycles == 0 {
		t.Fatalf("the newest file alone: %v, %d cycles", err, alone.Cycles)
	}
}

// TestDecisionLogTornLineAndForeignFiles: a crash mid-write leaves a torn
// last line, which is reported and skipped; a file that is not a decision
// log is refused with its name.
func TestDecisionLogTornLineAndForeignFiles(t *testing.T) {
	dir := t.TempDir()
	rec, err := OpenRecorder(DecisionLogOptions{Dir: dir, Node: "ctl-1"})
	if err != nil {
		t.Fatal(err)
	}
	rec.Term(config.Defaults(), t0)
	synthCycles(rec, 3, 5, t0)
	_ = rec.Close()
	cur := filepath.Join(dir, logFile)
	f, err := os.OpenFile(cur, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"k":"cyc","t":"2026-11-21T12:00:09Z","u":[1`)
	_ = f.Close()
	res, err := Replay(context.Background(), []string{cur}, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Cycles != 5 || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "torn last line") {
		t.Fatalf("cycles %d, notes %v", res.Cycles, res.Notes)
	}
	other := filepath.Join(dir, "other.log")
	_ = os.WriteFile(other, []byte("{\"hello\": 1}\n"), 0o644)
	if _, err := Replay(context.Background(), []string{other}, ReplayOptions{}); err == nil || !strings.Contains(err.Error(), "other.log") {
		t.Fatalf("a foreign file: %v", err)
	}
}

// writeBenchLog writes cycles poll cycles of n computes (each reporting
// every 10 s at a phase of its own, the leader polling every 45 s) into a
// decision log in dir, and returns the file's size.
func writeBenchLog(tb testing.TB, dir string, n, cycles int) int64 {
	rec, err := OpenRecorder(DecisionLogOptions{Dir: dir, MaxBytes: 1 << 30, Node: "ctl-1"})
	if err != nil {
		tb.Fatal(err)
	}
	s := config.Defaults()
	s.TaggedAggregates = false
	rec.Term(s, t0)
	obs := rec.Observer()
	svcs := make([]nova.Service, n)
	for h := range svcs {
		svcs[h] = nova.Service{ID: fmt.Sprintf("id-%d", h), Host: fmt.Sprintf("compute-%04d", h), Binary: "nova-compute", Zone: "nova", Status: "enabled", State: "up"}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	phase := make([]time.Duration, len(svcs))
	for h := range phase {
		phase[h] = time.Duration(rng.Int64N(int64(10 * time.Second)))
	}
	for i := 0; i < cycles; i++ {
		at := t0.Add(time.Duration(i+1)*45*time.Second + time.Duration(rng.Int64N(int64(50*time.Millisecond))))
		for h := range svcs {
			since := at.Sub(t0) - phase[h] - time.Duration(rng.Int64N(int64(20*time.Millisecond)))
			last := since - since%(10*time.Second)
			svcs[h].UpdatedAt = t0.Add(phase[h] + last).Truncate(time.Second)
		}
		obs.ComputeServices(svcs, at)
	}
	if err := rec.Close(); err != nil {
		tb.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, logFile))
	if err != nil {
		tb.Fatal(err)
	}
	return st.Size()
}

// BenchmarkDecisionLogCycle measures what one poll cycle costs the leader
// and its disk, and the log's size per day at POLL 45 (1,920 cycles).
func BenchmarkDecisionLogCycle(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("computes=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			size := writeBenchLog(b, dir, n, b.N)
			b.ReportMetric(float64(size)/float64(b.N), "bytes/cycle")
			b.ReportMetric(float64(size)/float64(b.N)*86400/45/1e6, "MB/day")
			path := filepath.Join(dir, logFile)
			if err := gzipFile(path); err == nil {
				if gz, err := os.Stat(path + ".gz"); err == nil {
					b.ReportMetric(float64(gz.Size())/float64(b.N)*86400/45/1e6, "gz-MB/day")
				}
			}
		})
	}
}

// BenchmarkReplay measures iha replay's speed over a day of a 100-compute
// cloud at POLL 45 (1,920 cycles): records (log lines) and cycles per
// second of this build's reconciler replaying them.
func BenchmarkReplay(b *testing.B) {
	dir := b.TempDir()
	writeBenchLog(b, dir, 100, 1920)
	files, err := LogFiles(dir)
	if err != nil {
		b.Fatal(err)
	}
	lines := 0
	if _, err := readLog(files, func(string, int, logRecord) error { lines++; return nil }); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var res *ReplayResult
	for i := 0; i < b.N; i++ {
		if res, err = Replay(context.Background(), files, ReplayOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if res.Cycles != 1920 || res.Differences != 0 {
		b.Fatalf("replayed %d cycles, %d differences", res.Cycles, res.Differences)
	}
	secs := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(lines)/secs, "records/s")
	b.ReportMetric(float64(res.Cycles)/secs, "cycles/s")
}
