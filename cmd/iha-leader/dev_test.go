//go:build dev

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/api"
)

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

// TestDevModeServesTheAPIAndEventsFollowTheRecovery runs dev mode as
// `iha-leader -dev -dev-keep` does, finds the API URL in the hint it
// prints, and follows the live recovery of compute-1 through the event
// stream (what `iha events -f` reads), from HostDown to HostReenabled.
// The API shows the mesh dev mode's leader judges by: compute-1 dead in
// the mesh when it is declared down, the other computes alive, the mesh
// wired in /v1/cluster.
func TestDevModeServesTheAPIAndEventsFollowTheRecovery(t *testing.T) {
	const canary = "CanaryDevApiPassw0rd-1187"
	orig := devAPIAddr
	devAPIAddr = "127.0.0.1:0"
	t.Cleanup(func() { devAPIAddr = orig })

	var out, errOut syncBuf
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	exited := make(chan int, 1)
	go func() {
		exited <- runDev(ctx, devOptions{keep: true, stdout: &out, stderr: &errOut, failAfter: 2 * time.Second, password: canary})
	}()

	hint := regexp.MustCompile(`status API: (http://127\.0\.0\.1:\d+) .*IHA_TOKEN=([0-9a-f]+); iha status`)
	var url, token string
	for deadline := time.Now().Add(time.Minute); url == ""; {
		if m := hint.FindStringSubmatch(out.String()); m != nil {
			url, token = m[1], m[2]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no API hint in dev output:\n%s\n%s", out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cl := &api.Client{Addrs: []string{url}, Token: token, Actor: "dev-test"}
	var kinds []string
	var meshAtDown *api.MeshMember
	errDone := errors.New("reenabled")
	err := cl.Stream(ctx, 0, "compute-1", func(e api.Event) error {
		kinds = append(kinds, e.Kind)
		if e.Kind == "HostDown" {
			// Fenced next, then powered off: its agent does not come
			// back before the power-on.
			h, err := cl.Host(ctx, "compute-1", false)
			if err != nil {
				return err
			}
			meshAtDown = h.Mesh
		}
		if strings.Contains(e.Message, canary) {
			t.Errorf("event carries the password: %+v", e)
		}
		if e.Kind == "HostReenabled" {
			return errDone
		}
		return nil
	})
	if !errors.Is(err, errDone) {
		t.Fatalf("stream ended with %v after %v\n%s", err, kinds, errOut.String())
	}
	joined := strings.Join(kinds, " ")
	for _, want := range []string{"HostDown", "FencingSucceeded", "EvacuationStarted", "HostReenabled"} {
		if !strings.Contains(joined, want) {
			t.Errorf("followed events %v lack %s", kinds, want)
		}
	}
	if meshAtDown == nil || meshAtDown.State != "dead" {
		t.Errorf("compute-1's mesh view when it was declared down: %+v, want dead", meshAtDown)
	}
	hosts, err := cl.Hosts(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	alive := 0
	for _, hs := range hosts.Hosts {
		if hs.Host != "compute-1" && hs.MeshState == "alive" {
			alive++
		}
	}
	if alive < 5 {
		t.Errorf("dev mode's /v1/hosts shows %d other computes alive in the mesh, want 5: %+v", alive, hosts.Hosts)
	}
	if c, err := cl.Cluster(ctx, false); err != nil || !c.Mesh.Wired || c.Mesh.States["alive"] < 6 {
		t.Errorf("dev mode's /v1/cluster mesh: %+v %v", c.Mesh, err)
	}
	h, err := cl.Host(ctx, "compute-1", false)
	if err != nil || (h.Phase != "done" && h.Phase != "reenabling") || len(h.Steps) == 0 {
		t.Fatalf("host record after the recovery: %+v %v", h, err)
	}
	// A change needs the printed token; the audit event names the actor.
	res, err := cl.Mutate(ctx, api.MutPause, "", "dev test")
	if err != nil || res.EventSeq == 0 || !strings.Contains(res.By, "dev-test") {
		t.Fatalf("pause: %+v %v", res, err)
	}
	for _, path := range []string{"/metrics", "/readyz", "/v1/cluster", "/v1/hosts"} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Contains(string(b), canary) || strings.Contains(string(b), token) {
			t.Fatalf("%s: %d (or a secret in the answer)\n%s", path, resp.StatusCode, b)
		}
	}
	cancel()
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatal("dev mode did not stop")
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Fatal("the API still answers after dev mode stopped")
	}
	if strings.Contains(out.String()+errOut.String(), canary) {
		t.Fatal("the Keystone password appeared in dev mode's output")
	}
}

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
