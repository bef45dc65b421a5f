// Package testlog sends slog output to a test's log. Goroutines may outlive
// the test that started them by a moment (memberlist's probes after
// Shutdown, a reconciler finishing a step); t.Log after the test has
// completed panics, so what they write after the test's cleanups is dropped.
package testlog

import (
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

type writer struct {
	t    testing.TB
	mu   *sync.Mutex
	done *bool
}

func (w writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !*w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Writer forwards each write to t.Log, one line per write without its
// trailing newline, until t's cleanups run; later writes are dropped.
func Writer(t testing.TB) io.Writer {
	w := writer{t: t, mu: &sync.Mutex{}, done: new(bool)}
	t.Cleanup(func() {
		w.mu.Lock()
		*w.done = true
		w.mu.Unlock()
	})
	return w
}

// New is a text logger at level that writes to Writer(t).
func New(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer(t), &slog.HandlerOptions{Level: level}))
}
