package novasim

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Request headers and query values come from whatever client is under
// test: the parsers must never panic and must stay in range.
func FuzzParseMicroversion(f *testing.F) {
	for _, s := range []string{"compute 2.53", "compute latest", "volume 3.0, compute 2.93", "compute 2.94", "2.1", "compute 2.", "compute -2.-1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{}
		h.Set("OpenStack-API-Version", v)
		mv, status, _ := parseMicroversion(h)
		if status == 0 && (mv < minMicroversion || mv > maxMicroversion) {
			t.Fatalf("%q accepted as 2.%d", v, mv)
		}
	})
}

func FuzzParseISOTime(f *testing.F) {
	for _, s := range []string{"2026-11-02T10:00:00", "2026-11-02T10:00:00Z", "2026-11-02T10:00:00.123456+02:00", "2026-11-02", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) { _, _ = parseISOTime(v) })
}

// The Keystone password never reaches the simulator's logs or answers.
func TestPasswordNeverLogged(t *testing.T) {
	const canary = "canary-Zx81-pw"
	var logs bytes.Buffer
	var mu sync.Mutex
	e := newTestSim(t, Options{Password: canary, Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))}, false)
	e.AddCompute("c1", "")
	bad := `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"` + canary + `x"}}}}}`
	resp, err := http.Post(e.AuthURL()+"/auth/tokens", "application/json", strings.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	a := e.do(t, "GET", "/os-services", "2.53", nil)
	mu.Lock()
	defer mu.Unlock()
	for what, s := range map[string]string{"logs": logs.String(), "401 answer": body.String(), "answer": string(a.raw)} {
		if strings.Contains(s, canary) {
			t.Fatalf("password in %s", what)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Controls and API calls from many goroutines at once (run with -race).
func TestConcurrentUse(t *testing.T) {
	e := newTestSim(t, Options{ReportInterval: 100 * time.Millisecond, EvacuationDelay: 20 * time.Millisecond, NoStartupDelay: true}, false)
	hosts := []string{"a", "b", "c", "d"}
	for _, h := range hosts {
		e.AddCompute(h, "")
		for i := 0; i < 5; i++ {
			e.AddServer(ServerSpec{Host: h})
		}
	}
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Second)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				h := hosts[g]
				e.StopCompute(h)
				st, _ := e.Service(h)
				e.do(t, "PUT", "/os-services/"+st.ID, "2.53", map[string]any{"forced_down": true})
				for _, srv := range e.ServersOn(h) {
					e.do(t, "POST", "/servers/"+srv.ID+"/action", "2.93", evacuate(""))
				}
				e.do(t, "GET", "/os-services", "2.53", nil)
				e.do(t, "GET", "/servers/detail?all_tenants=1", "2.93", nil)
				e.do(t, "GET", "/os-migrations", "2.59", nil)
				e.StartCompute(h)
				e.do(t, "PUT", "/os-services/"+st.ID, "2.53", map[string]any{"forced_down": false})
				_ = e.Guests(h)
			}
		}()
	}
	wg.Wait()
	// Whatever happened, each server is on exactly one host in Nova's view.
	n := 0
	for _, h := range hosts {
		n += len(e.ServersOn(h))
	}
	if n != 20 {
		t.Fatalf("%d servers placed, want 20", n)
	}
}
