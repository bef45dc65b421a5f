package api

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/secret"
)

// logBuf collects a server's log for assertions.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// listen serves cfg with the real listener (limits and timeouts) on
// loopback and returns its address.
func listen(t *testing.T, b Backend, cfg Config) string {
	t.Helper()
	cfg.Backend = b
	cfg.EventPoll = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	addr, done, err := NewServer(cfg).ListenAndServe(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
	return addr.String()
}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

// TestConnectionsStreamsAndSlowClientsAreBounded: a client that sends
// half a request is cut off after ReadTimeout; an idle keep-alive after
// IdleTimeout; connections beyond MaxConns are closed at once (logged);
// event streams beyond MaxStreams are answered 503 — and a stream itself
// outlives ReadTimeout.
func TestConnectionsStreamsAndSlowClientsAreBounded(t *testing.T) {
	var log logBuf
	addr := listen(t, newFake("n1", true), Config{ReadTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond,
		MaxConns: 6, MaxStreams: 2, Logger: slog.New(slog.NewTextHandler(&log, nil))})

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_, _ = slow.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")) // and nothing more
	if !closedWithin(slow, scaledLimit(5*time.Second)) {
		t.Error("a client that never finishes its request is not cut off")
	}

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_, _ = idle.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz on a kept-alive connection: %v", err)
	}
	resp.Body.Close()
	if !closedWithin(idle, scaledLimit(5*time.Second)) {
		t.Error("an idle keep-alive connection is not closed")
	}

	// Two streams are served; a third is refused; each outlives ReadTimeout.
	var streams []*http.Response
	for i := 0; i < 3; i++ {
		resp, err := http.Get("http://" + addr + "/v1/events/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		streams = append(streams, resp)
	}
	if streams[0].StatusCode != 200 || streams[1].StatusCode != 200 || streams[2].StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("streams answered %d, %d, %d; want 200, 200, 503", streams[0].StatusCode, streams[1].StatusCode, streams[2].StatusCode)
	}
	b, _ := io.ReadAll(streams[2].Body)
	if !strings.Contains(string(b), "API_MAX_STREAMS 2") {
		t.Errorf("the refusal does not say why: %s", b)
	}
	time.Sleep(600 * time.Millisecond) // twice ReadTimeout
	line := make([]byte, 64)
	if _, err := streams[0].Body.Read(line); err != nil {
		t.Errorf("a stream was cut after ReadTimeout: %v", err)
	}

	// Connections: 2 streams hold 2 of 6; 4 more fill the cap; the 7th is closed at once.
	var held []net.Conn
	for i := 0; i < 4; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond) // the server accepted them
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if !closedWithin(extra, scaledLimit(2*time.Second)) {
		t.Error("a connection beyond MaxConns is served")
	}
	if !strings.Contains(log.String(), "API_MAX_CONNECTIONS reached") {
		t.Errorf("the refused connection is not logged:\n%s", log.String())
	}
	// Slots come back: the held ones are idle-closed, then a request works.
	for _, c := range held {
		_ = c.Close()
	}
	deadline := time.Now().Add(scaledLimit(5 * time.Second))
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection served after the held ones closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scaledLimit(d time.Duration) time.Duration { return 3 * d }

// TestForwardedAuditIdentityOnlyFromAController: a follower that holds the
// forwarding key keeps its client's identity in the leader's audit; a
// client with the write token cannot name someone else by sending the
// headers itself (logged), nor with a proof of another key.
func TestForwardedAuditIdentityOnlyFromAController(t *testing.T) {
	tok := secret.New(canaryRW)
	key := []byte("forward-key-of-these-controllers")
	var log logBuf
	lead := newFake("leader", true)
	leadURL := serve(t, lead, Config{Token: tok, ForwardKey: key, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	fol := newFake("follower", false)
	fol.leaderAPI = strings.TrimPrefix(leadURL, "http://")
	folURL := serve(t, fol, Config{Token: tok, ForwardKey: key})

	c := &Client{Addrs: []string{folURL}, Token: canaryRW, Actor: "alice@ops"}
	if _, err := c.Mutate(context.Background(), MutPause, "", "via the follower"); err != nil {
		t.Fatal(err)
	}
	if m := lead.muts(); len(m) != 1 || m[0].By != "alice@ops from 127.0.0.1" {
		t.Fatalf("the follower's forward: %+v", m)
	}

	forge := func(proof string) string {
		req, _ := http.NewRequest(http.MethodPost, leadURL+"/v1/pause", strings.NewReader(`{"reason":"x"}`))
		req.Header.Set("Authorization", "Bearer "+canaryRW)
		req.Header.Set(HeaderActor, "mallory")
		req.Header.Set(headerForwarded, "ctl-2")
		req.Header.Set(headerBy, "admin@ops from 10.0.0.1")
		if proof != "" {
			req.Header.Set(headerByAt, strings.TrimSpace(strings.Split(proof, "|")[0]))
			req.Header.Set(headerByProof, strings.Split(proof, "|")[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		m := lead.muts()
		return m[len(m)-1].By
	}
	now := time.Now().Unix()
	for name, proof := range map[string]string{
		"no proof":          "",
		"a garbage proof":   "0|AAAA",
		"another key's one": itoa(now) + "|" + b64(mustSum([]byte("some other key"), forwardParts("admin@ops from 10.0.0.1", "POST", "/v1/pause", now, []byte(`{"reason":"x"}`))...)),
	} {
		by := forge(proof)
		if strings.Contains(by, "admin@ops") || !strings.HasPrefix(by, "mallory from 127.0.0.1 (forwarded by ctl-2") {
			t.Errorf("%s: the audit says %q", name, by)
		}
	}
	if !strings.Contains(log.String(), "X-IHA-By) from a client that is not an authenticated controller is ignored") {
		t.Errorf("the forged identity is not logged:\n%s", log.String())
	}
}

func itoa(n int64) string                      { return strconv.FormatInt(n, 10) }
func b64(b []byte) string                      { return base64.StdEncoding.EncodeToString(b) }
func mustSum(k []byte, parts ...string) []byte { return identity.Sum(k, parts...) }
