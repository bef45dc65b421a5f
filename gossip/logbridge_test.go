package gossip

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRelevelSaysWhetherAnOperatorMustAct: the ordinary traces of a peer
// that stopped answering are not errors (the mesh reports the peer itself);
// a member back under a new address is a warning that explains itself;
// anything else keeps memberlist's level.
func TestRelevelSaysWhetherAnOperatorMustAct(t *testing.T) {
	cases := []struct {
		in     slog.Level
		line   string
		want   slog.Level
		suffix string
	}{
		{slog.LevelError, "Failed fallback TCP ping: timeout 1s: read tcp 127.0.0.1:1->127.0.0.1:2: i/o timeout", slog.LevelDebug, ""},
		{slog.LevelError, "Failed to send UDP ping: write udp: connection refused", slog.LevelInfo, ""},
		{slog.LevelError, "Push/Pull with compute-3 failed: dial tcp: i/o timeout", slog.LevelInfo, ""},
		{slog.LevelWarn, "Refuting a suspect message (from: compute-2)", slog.LevelInfo, "it is alive)"},
		{slog.LevelError, "Conflicting address for compute-1. Mine: 127.0.0.1:7001 Theirs: 127.0.0.1:7002 Old state: 0", slog.LevelWarn, "declared dead)"},
		{slog.LevelError, "Decrypt packet failed: no installed keys could decrypt the message from=127.0.0.1:9", slog.LevelError, ""},
		{slog.LevelWarn, "Was able to connect to compute-2 over TCP but UDP probes failed, network may be misconfigured", slog.LevelWarn, ""},
	}
	for _, c := range cases {
		got, msg := relevel(c.in, c.line)
		if got != c.want || !strings.HasPrefix(msg, c.line) || !strings.HasSuffix(msg, c.suffix) {
			t.Errorf("%q at %s: got %s %q, want %s …%q", c.line, c.in, got, msg, c.want, c.suffix)
		}
	}
}

// TestMemberlistStillLogsWhatTheBridgeReads fails when a memberlist upgrade
// changes a line the log bridge parses (suspicions, confirmations,
// refutations) or relevels: the mesh would lose events silently.
func TestMemberlistStillLogsWhatTheBridgeReads(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/hashicorp/memberlist").Output()
	if err != nil {
		t.Fatalf("go list memberlist: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	var src strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	// The format strings as memberlist writes them.
	for _, want := range []string{
		`"[INFO] memberlist: Suspect %s has failed, no acks received"`,
		`"[INFO] memberlist: Marking %s as failed, suspect timeout reached (%d peer confirmations)"`,
		`"[WARN] memberlist: Refuting a suspect message (from: %s)"`,
	} {
		if !strings.Contains(src.String(), want) {
			t.Errorf("memberlist (%s) no longer logs %s: the bridge's regexps must follow", dir, want)
		}
	}
	for _, r := range relevels {
		if !regexp.MustCompile(regexp.QuoteMeta("memberlist: " + r.prefix)).MatchString(src.String()) {
			t.Errorf("memberlist no longer logs a line starting %q: drop or fix its relevel", r.prefix)
		}
	}
}
