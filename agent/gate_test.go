package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/identity"
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

// signedGate answers GET /v1/gate/{host}?nonce=N as a controller with the
// cluster key does: answer(n) says what, signed with key (nil: unsigned).
func signedGate(key []byte, answer func(n int32) (bool, string)) (*httptest.Server, *atomic.Int32) {
	var asks atomic.Int32
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/gate/compute-1" {
			http.NotFound(w, r)
			return
		}
		allow, reason := answer(asks.Add(1))
		a := GateAnswer{Host: "compute-1", Allow: allow, Reason: reason}
		if key != nil {
			a.Nonce = r.URL.Query().Get("nonce")
			a.MAC = identity.GateMAC(key, a.Host, a.Allow, a.Reason, a.Nonce)
		}
		_ = json.NewEncoder(w).Encode(a)
	})), &asks
}

func TestGate(t *testing.T) {
	cluster := []byte("cluster-key-of-the-gate-tests!!!")
	hostKey := identity.HostKey(cluster, "compute-1")
	// A leader that refuses the first two asks, then allows.
	leader, asks := signedGate(hostKey, func(n int32) (bool, string) {
		if n <= 2 {
			return false, "evacuation of 3 servers in progress"
		}
		return true, "recovery done"
	})
	defer leader.Close()
	refusing, _ := signedGate(hostKey, func(int32) (bool, string) { return false, "fencing in progress" })
	defer refusing.Close()
	// An impostor: allows everything, unsigned or signed with another host's key.
	unsigned, _ := signedGate(nil, func(int32) (bool, string) { return true, "go ahead" })
	defer unsigned.Close()
	wrongKey, _ := signedGate(identity.HostKey(cluster, "compute-2"), func(int32) (bool, string) { return true, "go ahead" })
	defer wrongKey.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer broken.Close()
	// A TLS controller: its certificate verifies, so an unsigned answer is believed.
	tlsLeader := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"host":"compute-1","allow":true,"reason":"no recovery recorded"}`)
	}))
	tlsLeader.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is one of the cases
	tlsLeader.StartTLS()
	defer tlsLeader.Close()
	down := "http://127.0.0.1:1" // nothing listens on port 1

	tests := []struct {
		name        string
		controllers []string
		key         []byte
		trust       bool
		client      *http.Client
		timeout     time.Duration
		wantErr     func(error) bool
		wantOut     []string
	}{
		{"waits while the leader refuses, then allows", []string{leader.URL}, hostKey, false, nil, scale(10 * time.Second),
			func(err error) bool { return err == nil },
			[]string{"evacuation of 3 servers in progress", "may start nova-compute: recovery done"}},
		{"skips unreachable and broken controllers", []string{down, broken.URL, leader.URL}, hostKey, false, nil, scale(10 * time.Second),
			func(err error) bool { return err == nil }, []string{"may start nova-compute"}},
		{"an unsigned allow over http is no answer; the leader's refusal decides", []string{unsigned.URL, refusing.URL}, hostKey, false, nil, 300 * time.Millisecond,
			func(err error) bool {
				var te *GateTimeoutError
				return errors.As(err, &te) && te.Answered && te.Reason == "fencing in progress"
			}, []string{"WARNING: ignoring the answer of " + unsigned.URL + ": it came over plain HTTP without the controllers' signature", "fencing in progress"}},
		{"an allow signed with another host's key is no answer", []string{wrongKey.URL}, hostKey, false, nil, 300 * time.Millisecond,
			func(err error) bool {
				var te *GateTimeoutError
				return errors.As(err, &te) && !te.Answered
			}, []string{"WARNING: ignoring the answer of " + wrongKey.URL + ": its signature does not verify"}},
		{"without a host key nothing over http is believed", []string{leader.URL}, nil, false, nil, 300 * time.Millisecond,
			func(err error) bool {
				var te *GateTimeoutError
				return errors.As(err, &te) && !te.Answered
			}, []string{"no host_key to check"}},
		{"insecure: an unverified answer is believed, with a warning", []string{unsigned.URL}, nil, true, nil, scale(10 * time.Second),
			func(err error) bool { return err == nil }, []string{"believing an unverified answer from " + unsigned.URL}},
		{"https with the controllers' CA is believed unsigned", []string{tlsLeader.URL}, nil, false, tlsLeader.Client(), scale(10 * time.Second),
			func(err error) bool { return err == nil }, []string{"may start nova-compute: no recovery recorded"}},
		{"https with a certificate of another CA is no answer", []string{tlsLeader.URL}, hostKey, false, nil, 300 * time.Millisecond,
			func(err error) bool {
				var te *GateTimeoutError
				return errors.As(err, &te) && !te.Answered
			}, []string{"certificate"}},
		{"gives up when the leader keeps refusing", []string{refusing.URL}, hostKey, false, nil, 300 * time.Millisecond,
			func(err error) bool {
				var te *GateTimeoutError
				return errors.As(err, &te) && te.Answered && te.Reason == "fencing in progress"
			}, []string{"fencing in progress"}},
		{"gives up when no controller answers", []string{down, broken.URL}, hostKey, false, nil, 300 * time.Millisecond,
			func(err error) bool {
				var te *GateTimeoutError
				return errors.As(err, &te) && !te.Answered
			}, []string{"no IHA controller answered", "HTTP 500"}},
		{"says so when it knows no controller", nil, hostKey, false, nil, 300 * time.Millisecond,
			func(err error) bool {
				var te *GateTimeoutError
				return errors.As(err, &te) && !te.Answered
			}, []string{"no IHA controller configured"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asks.Store(0)
			out := &syncBuffer{}
			err := Gate(context.Background(), GateConfig{NovaHost: "compute-1", Controllers: tt.controllers, HostKey: tt.key,
				TrustUnverified: tt.trust, Client: tt.client, Timeout: tt.timeout, Interval: 50 * time.Millisecond, Out: out})
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

func TestParseController(t *testing.T) {
	for in, want := range map[string]string{"https://ctl-0:7421": "https://ctl-0:7421", "http://192.0.2.1:7421/": "http://192.0.2.1:7421",
		"https://[2001:db8::1]:7421": "https://[2001:db8::1]:7421"} {
		if got, err := ParseController(in); err != nil || got != want {
			t.Errorf("ParseController(%q) = %q, %v", in, got, err)
		}
	}
	for in, why := range map[string]string{"192.0.2.1:7421": "needs a scheme", "ctl-0:7421": "needs a scheme", "ftp://x:1": "needs a scheme",
		"https://x:1/v1": "want only", "https://u:p@x:1": "want only", "https://": "no host"} {
		if _, err := ParseController(in); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("ParseController(%q) = %v, want %q", in, err, why)
		}
	}
}
