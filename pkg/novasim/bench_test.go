package novasim

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// BenchmarkServicesList1000 is the server time of GET
// /os-services?binary=nova-compute with 1,000 computes (handler only, no
// network): the leader's poll.
func BenchmarkServicesList1000(b *testing.B) {
	s, err := New(Options{ReportInterval: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 1000; i++ {
		s.AddCompute(fmt.Sprintf("compute-%04d", i), "nova")
	}
	tok := s.issueTokenForBench()
	req := httptest.NewRequest(http.MethodGet, "/compute/v2.1/os-services?binary=nova-compute", nil)
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("OpenStack-API-Version", "compute 2.53")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != 200 || w.Body.Len() < 1000*150 {
		b.Fatalf("HTTP %d, %d bytes", w.Code, w.Body.Len())
	}
	size := w.Body.Len()
	d := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		clear(d.h)
		s.ServeHTTP(d, req)
	}
	// CPU time per call, which a loaded machine stretches far less than ns/op.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	if d.code != 200 || d.n != size {
		b.Fatalf("HTTP %d, %d bytes", d.code, d.n)
	}
	b.ReportMetric(float64(size), "bytes/answer")
}

// BenchmarkServicesList1000HTTP is the same call over loopback HTTP.
func BenchmarkServicesList1000HTTP(b *testing.B) {
	s, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 1000; i++ {
		s.AddCompute(fmt.Sprintf("compute-%04d", i), "nova")
	}
	tok := s.issueTokenForBench()
	req, _ := http.NewRequest(http.MethodGet, s.ComputeURL()+"/os-services?binary=nova-compute", nil)
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("OpenStack-API-Version", "compute 2.53")
	b.ReportAllocs()
	for b.Loop() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 32<<10)
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				break
			}
		}
		resp.Body.Close()
	}
}

// cpuTime is the process's user+system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func (s *Sim) issueTokenForBench() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := "bench-" + newHex(8)
	s.tokens[tok] = tokenInfo{expires: s.now().Add(time.Hour), scoped: true}
	return tok
}

// discardWriter is a ResponseWriter that keeps only the status and size,
// so that the benchmark measures the simulator and not a recorder.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (d *discardWriter) Header() http.Header { return d.h }
func (d *discardWriter) WriteHeader(c int)   { d.code = c }
func (d *discardWriter) Write(p []byte) (int, error) {
	d.n = len(p)
	return len(p), nil
}
