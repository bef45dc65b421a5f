package leader

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// TestDataDirTroubleIsAnErrorNamingTheFileNeverAPanic: a raft.db damaged
// in any of these ways stops OpenNode with ErrDataDir and the file's path;
// an empty one is refused unless the operator starts fresh. (Without the
// checks, raft-boltdb's own open panics on the "data pages" and "half the
// file" cases: "invalid freelist page".)
func TestDataDirTroubleIsAnErrorNamingTheFileNeverAPanic(t *testing.T) {
	// A real store with some entries, written once and copied per case.
	src := newTestNodes(t, 1, nil)[0]
	if err := src.open(t, nil, false); err != nil {
		t.Fatal(err)
	}
	waitTestLeader(t, []*testNode{src})
	for i := 0; i < 50; i++ {
		apply(t, src.node, CmdPause, PauseCmd{Paused: i%2 == 0, By: strings.Repeat("x", 200)})
	}
	src.stop()
	orig, err := os.ReadFile(filepath.Join(src.dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	if len(orig) < 5*4096 {
		t.Fatalf("raft.db has only %d bytes", len(orig))
	}
	garbage := func(b []byte, off, n int) []byte {
		c := append([]byte(nil), b...)
		for i := off; i < off+n && i < len(c); i++ {
			c[i] = byte(i*7 + 13)
		}
		return c
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", []byte{}, "is empty (0 bytes)"},
		{"both meta pages", garbage(orig, 0, 2*4096), "raft.db"},
		{"data pages", garbage(orig, 2*4096, len(orig)-2*4096), "raft.db"},
		{"half the file", orig[:len(orig)/2], "raft.db"},
		{"one leaf page", garbage(orig, len(orig)-4096, 4096), "raft.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "raft.db"), tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			tn := &testNode{id: "n1", addr: src.addr, dir: dir}
			err := tn.open(t, nil, false)
			if err == nil {
				tn.stop()
				if tc.name == "one leaf page" { // may land in free space: then opening it is right
					return
				}
				t.Fatal("opened a damaged raft.db")
			}
			t.Logf("%s: %v", tc.name, err)
			if !errors.Is(err, ErrDataDir) || !strings.Contains(err.Error(), filepath.Join(dir, "raft.db")) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want ErrDataDir naming %s and %q", err, filepath.Join(dir, "raft.db"), tc.want)
			}
		})
	}

	t.Run("empty with start fresh", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "raft.db"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		tn := &testNode{id: "n1", addr: src.addr, dir: dir, startFresh: true}
		if err := tn.open(t, nil, false); err != nil {
			t.Fatalf("start fresh: %v", err)
		}
		defer tn.stop()
		if tn.node.HadState() {
			t.Error("a fresh start reports earlier state")
		}
	})

	t.Run("snapshots without raft.db", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "snapshots", "2-100-1700000000000"), 0o750); err != nil {
			t.Fatal(err)
		}
		tn := &testNode{id: "n1", addr: src.addr, dir: dir}
		err := tn.open(t, nil, false)
		if !errors.Is(err, ErrDataDir) || !strings.Contains(err.Error(), "holds snapshots") {
			t.Errorf("error %v: want ErrDataDir about snapshots", err)
		}
	})
}

// BenchmarkOpenStoreChecksEveryEntry is what the start-up check of raft.db
// costs: every page read once, every log entry decoded once. raft keeps
// about 10,240 entries after a snapshot (TrailingLogs); these are 1 KiB.
//
//	go test ./leader -run '^$' -bench OpenStoreChecksEveryEntry
func BenchmarkOpenStoreChecksEveryEntry(b *testing.B) {
	dir := b.TempDir()
	st, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		b.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 10240; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: make([]byte, 1024)})
	}
	if err := st.StoreLogs(logs); err != nil {
		b.Fatal(err)
	}
	_ = st.Close()
	info, _ := os.Stat(filepath.Join(dir, "raft.db"))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := openStore(dir, false, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		_ = s.Close()
	}
	b.ReportMetric(float64(info.Size())/(1<<20), "MiB")
}
