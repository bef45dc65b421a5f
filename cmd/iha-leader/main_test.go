package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevModeRecoversAndNeverPrintsThePassword runs the demo as `make dev`
// does and checks its outcome, with a canary Keystone password that must
// not appear anywhere in what it prints.
func TestDevModeRecoversAndNeverPrintsThePassword(t *testing.T) {
	const canary = "CanaryDevPassw0rd-7731"
	var out, errOut syncBuf
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := runDev(ctx, devOptions{stdout: &out, stderr: &errOut, failAfter: time.Second, password: canary})
	t.Log(out.String())
	if code != 0 {
		t.Fatalf("dev mode exited %d\n%s", code, errOut.String())
	}
	for _, want := range []string{"recovery done", "web-1", "result: every evacuable instance runs elsewhere", "FencingSucceeded", "HostReenabled"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dev output lacks %q", want)
		}
	}
	if strings.Contains(out.String()+errOut.String(), canary) {
		t.Fatal("the Keystone password appeared in dev mode's output")
	}
}

func TestVersionAndUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-version"}, func(string) string { return "" }, &out, &errOut); code != 0 ||
		!strings.HasPrefix(out.String(), "iha-leader ") {
		t.Fatalf("-version: %d %q", code, out.String())
	}
	if code := run(context.Background(), []string{"-log-format", "xml"}, func(string) string { return "" }, &out, &errOut); code != 2 {
		t.Fatalf("bad flag value must exit 2, got %d", code)
	}
}

func TestParsePeers(t *testing.T) {
	p, err := parsePeers([]string{"a=127.0.0.1:1", "b=127.0.0.2:1"})
	if err != nil || len(p) != 2 || p[1].ID != "b" {
		t.Fatalf("%v %v", p, err)
	}
	if _, err := parsePeers([]string{"nohost"}); err == nil {
		t.Fatal("a peer without = must be refused")
	}
}
