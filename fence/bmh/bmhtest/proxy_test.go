package bmhtest

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echo serves lines back on a loopback port until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func TestSlowProxyHoldsAnswersUntilTheDelayIsLifted(t *testing.T) {
	p, err := NewSlowProxy(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func(msg string) (string, time.Duration) {
		start := time.Now()
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return line, time.Since(start)
	}
	if got, took := roundTrip("fast"); got != "fast\n" || took > 5*time.Second {
		t.Fatalf("undelayed round trip = %q in %v", got, took)
	}
	p.SetDelay(300 * time.Millisecond)
	if got, took := roundTrip("slow"); got != "slow\n" || took < 300*time.Millisecond {
		t.Fatalf("delayed round trip = %q in %v, want at least 300ms", got, took)
	}
	// A long delay lifted while an answer waits lets it through at once.
	p.SetDelay(time.Hour)
	time.AfterFunc(200*time.Millisecond, func() { p.SetDelay(0) })
	if got, took := roundTrip("held"); got != "held\n" || took > 10*time.Second {
		t.Fatalf("held round trip = %q in %v", got, took)
	}
}

func TestSlowProxyCloseCutsConnections(t *testing.T) {
	p, err := NewSlowProxy(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.SetDelay(time.Hour)
	if _, err := c.Write([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a held answer")
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 8)); err == nil {
		t.Fatal("read after Close succeeded")
	}
}
