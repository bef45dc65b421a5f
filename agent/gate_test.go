package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the gate's writes and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestGate(t *testing.T) {
	// A leader that refuses the first two asks, then allows.
	var asks atomic.Int32
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/gate/compute-1" {
			http.NotFound(w, r)
			return
		}
		if asks.Add(1) <= 2 {
			fmt.Fprint(w, `{"host":"compute-1","allow":false,"reason":"evacuation of 3 servers in progress"}`)
			return
		}
		fmt.Fprint(w, `{"host":"compute-1","allow":true,"reason":"recovery done"}`)
	}))
	defer leader.Close()
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"host":"compute-1","allow":false,"reason":"fencing in progress"}`)
	}))
	defer refusing.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer broken.Close()
	down := "127.0.0.1:1" // nothing listens on port 1

	tests := []struct {
		name        string
		controllers []string
		timeout     time.Duration
		wantErr     func(error) bool
		wantOut     []string
	}{
		{"waits while the leader refuses, then allows", []string{leader.URL}, scale(10 * time.Second),
			func(err error) bool { return err == nil },
			[]string{"evacuation of 3 servers in progress", "may start nova-compute: recovery done"}},
		{"skips unreachable and broken controllers", []string{down, broken.URL, strings.TrimPrefix(leader.URL, "http://")}, scale(10 * time.Second),
			func(err error) bool { return err == nil }, []string{"may start nova-compute"}},
		{"gives up when the leader keeps refusing", []string{refusing.URL}, 300 * time.Millisecond,
			func(err error) bool {
				var te *GateTimeoutError
				return errors.As(err, &te) && te.Answered && te.Reason == "fencing in progress"
			}, []string{"fencing in progress"}},
		{"gives up when no controller answers", []string{down, broken.URL}, 300 * time.Millisecond,
			func(err error) bool {
				var te *GateTimeoutError
				return errors.As(err, &te) && !te.Answered
			}, []string{"no IHA controller answered", "HTTP 500"}},
		{"says so when it knows no controller", nil, 300 * time.Millisecond,
			func(err error) bool {
				var te *GateTimeoutError
				return errors.As(err, &te) && !te.Answered
			}, []string{"no IHA controller address known"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asks.Store(0)
			out := &syncBuffer{}
			err := Gate(context.Background(), GateConfig{NovaHost: "compute-1", Controllers: func() []string { return tt.controllers },
				Timeout: tt.timeout, Interval: 50 * time.Millisecond, Out: out})
			if !tt.wantErr(err) {
				t.Fatalf("Gate = %v\n%s", err, out)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestControllersFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if got, err := ReadControllers(dir); err != nil || got != nil {
		t.Fatalf("missing file: %v, %v", got, err)
	}
	if err := WriteControllers(dir, []string{"10.0.0.1:7421", "10.0.0.2:7421"}); err != nil {
		t.Fatal(err)
	}
	got, err := ReadControllers(dir)
	if err != nil || len(got) != 2 || got[1] != "10.0.0.2:7421" {
		t.Fatalf("ReadControllers = %v, %v", got, err)
	}
}
