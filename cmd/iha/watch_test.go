package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence/fencetest"
	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/secret"
)

// countingAPI serves the fixture's API and counts what the CLI asks for:
// GETs per path, and the keep-alive comments written on event streams
// (the server's own clock: N of them mean the stream sat idle N periods).
type countingAPI struct {
	h          http.Handler
	mu         sync.Mutex
	gets       map[string]int
	keepAlives int
}

func (c *countingAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.gets[r.URL.Path]++
	c.mu.Unlock()
	c.h.ServeHTTP(&keepAliveCounter{ResponseWriter: w, c: c}, r)
}

func (c *countingAPI) count(path string) (gets, keepAlives int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets[path], c.keepAlives
}

type keepAliveCounter struct {
	http.ResponseWriter
	c *countingAPI
}

func (k *keepAliveCounter) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte(": keep-alive")) {
		k.c.mu.Lock()
		k.c.keepAlives++
		k.c.mu.Unlock()
	}
	return k.ResponseWriter.Write(b)
}

func (k *keepAliveCounter) Flush() { k.ResponseWriter.(http.Flusher).Flush() }

// syncBuf is a writer the CLI writes from its goroutine while the test
// reads it.
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

// waitFor polls cond until it holds, failing the test after a deadline
// that scales with IHA_TEST_TIMEOUT_SCALE.
func waitFor(t *testing.T, what string, cond func() bool, show func() string) {
	t.Helper()
	deadline := time.Now().Add(fencetest.Timeout(20 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s", what, show())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWatchRedrawsOnEventsWithoutPolling runs `iha hosts -w` and `iha host
// compute-9 -w` against a fixture whose compute-9 changes phase. The view
// is fetched once; while the event stream sits idle for many keep-alive
// periods nothing is fetched again (no timer); an event that changes
// nothing is fetched but not redrawn (hosts) or not even delivered (host:
// the stream is filtered by host); the event of the phase change brings
// exactly one fetch and a frame that shows the new phase.
func TestWatchRedrawsOnEventsWithoutPolling(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		path     string
		before   string
		after    string
		quietGet int // fetches after an event that changes nothing
	}{
		{"hosts -w", []string{"hosts", "-w"}, "/v1/hosts",
			"compute-9  dead     down,forced,disabled  FAILED       FAILED", "compute-9  dead     down,forced,disabled  recovering   evacuating", 2},
		{"host -w", []string{"host", "compute-9", "-w"}, "/v1/hosts/compute-9",
			"phase:      FAILED since", "phase:      evacuating since", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fixture{}
			srv := &countingAPI{gets: map[string]int{}, h: api.NewServer(api.Config{Backend: f,
				ReadToken: secret.New(cliCanaryRO), EventPoll: 10 * time.Millisecond, StreamKeepAlive: 20 * time.Millisecond})}
			hs := httptest.NewServer(srv)
			t.Cleanup(hs.Close)
			cliEnv(t, hs.URL, cliCanaryRO)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out, errOut := &syncBuf{}, &syncBuf{}
			exited := make(chan int, 1)
			go func() { exited <- run(ctx, c.args, out, errOut) }()
			show := func() string {
				g, k := srv.count(c.path)
				return "stdout:\n" + out.String() + "stderr:\n" + errOut.String() + "fetches " + strconv.Itoa(g) + ", keep-alives " + strconv.Itoa(k)
			}
			frames := func() int { return strings.Count(out.String(), c.before) + strings.Count(out.String(), c.after) }
			fetches := func() int { g, _ := srv.count(c.path); return g }
			idle := func(periods int) {
				_, k0 := srv.count(c.path)
				waitFor(t, "the stream to sit idle", func() bool { _, k := srv.count(c.path); return k >= k0+periods }, show)
			}

			waitFor(t, "the first frame", func() bool { return strings.Contains(out.String(), c.before) }, show)
			idle(25) // half a second of an idle stream: a timer would have fetched again
			if n := fetches(); n != 1 || frames() != 1 {
				t.Fatalf("%d fetches and %d frames with no event, want 1 and 1\n%s", n, frames(), show())
			}

			// An event that changes nothing: hosts -w fetches and finds
			// the same frame (not printed again); host -w is not told
			// (another host's event).
			f.event("compute-8", 20)
			idle(25)
			if n := fetches(); n != c.quietGet || frames() != 1 {
				t.Fatalf("after an event that changes nothing: %d fetches (want %d), %d frames (want 1)\n%s", n, c.quietGet, frames(), show())
			}

			f.move9("evacuating", 21)
			waitFor(t, "the redraw with the new phase", func() bool { return strings.Contains(out.String(), c.after) }, show)
			idle(25)
			if n := fetches(); n != c.quietGet+1 || frames() != 2 {
				t.Fatalf("after the phase change: %d fetches (want %d), %d frames (want 2)\n%s", n, c.quietGet+1, frames(), show())
			}
			if !strings.Contains(errOut.String(), "after event 21 RecoveryRetried of compute-9") {
				t.Errorf("stderr does not say which event caused the redraw\n%s", show())
			}
			cancel()
			select {
			case code := <-exited:
				if code != exitOK {
					t.Fatalf("interrupted watch exited %d\n%s", code, show())
				}
			case <-time.After(fencetest.Timeout(10 * time.Second)):
				t.Fatalf("watch did not end when interrupted\n%s", show())
			}
			t.Log(show())
		})
	}
}
