package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fakeSource is a hand-written Source whose fields tests set.
type fakeSource struct {
	mu      sync.Mutex
	raft    RaftStats
	records []Record
	events  []Event
	mesh    MeshStats
	paused  bool
}

func (f *fakeSource) Raft() RaftStats { f.mu.Lock(); defer f.mu.Unlock(); return f.raft }
func (f *fakeSource) Records() []Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Record(nil), f.records...)
}
func (f *fakeSource) EventsSince(seq uint64) []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Event
	for _, e := range f.events {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	return out
}
func (f *fakeSource) Mesh() MeshStats { return f.mesh }
func (f *fakeSource) Paused() bool    { return f.paused }

func (f *fakeSource) addEvents(evs ...Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, evs...)
}

// scrape fetches /metrics over the handler and parses it with Prometheus'
// own text-format parser: the promtool-equivalent check.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	body, _ := io.ReadAll(rec.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics does not parse as the Prometheus text format: %v\n%s", err, body)
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("metric %s missing", name)
	}
	for _, m := range f.Metric {
		match := true
		for k, v := range labels {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("metric %s%v missing", name, labels)
	return 0
}

func TestMetricsParseAndExposeStepHistograms(t *testing.T) {
	src := &fakeSource{
		raft: RaftStats{State: "Follower", Term: 3, CommitIndex: 40, AppliedIndex: 39, LastContact: 120 * time.Millisecond, LeaderKnown: true, Voters: 3},
		records: []Record{
			{Host: "compute-1", Phase: "done", DetectionSeconds: 6.5, Steps: []Step{{Step: "fence", OK: true, Seconds: 0.4}, {Step: "evacuate", OK: true, Seconds: 0.2}, {Step: "evacuate", OK: false, Seconds: 31}},
				Evacuations: []float64{12, 700}},
			{Host: "compute-2", Phase: "evacuating", Active: true, DetectionSeconds: -1, Steps: []Step{{Step: "fence", OK: false, Seconds: 5}}},
		},
		events: []Event{{Seq: 1, Host: "compute-1", Kind: "HostDown"}, {Seq: 2, Host: "compute-1", Kind: "FencingStarted"},
			{Seq: 3, Host: "compute-1", Kind: "FencingSucceeded"}, {Seq: 4, Kind: "ThresholdExceeded"}},
	}
	m := New(src, "test")
	m.ObservePoll(300*time.Millisecond, nil, 0)
	fams := scrape(t, m)

	cases := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"iha_recovery_step_duration_seconds", map[string]string{"step": "fence", "outcome": "ok"}, 1},
		{"iha_recovery_step_duration_seconds", map[string]string{"step": "fence", "outcome": "failed"}, 1},
		{"iha_recovery_step_duration_seconds", map[string]string{"step": "evacuate", "outcome": "ok"}, 1},
		{"iha_detection_latency_seconds", nil, 1}, // compute-2's is unknown
		{"instanceha_instance_evacuation_duration_seconds", map[string]string{"host": "compute-1"}, 2},
		{"instanceha_hosts_processing", nil, 1},
		{"iha_recovery_records", map[string]string{"phase": "done"}, 1},
		{"instanceha_host_down_total", map[string]string{"host": "compute-1"}, 1},
		{"instanceha_fencing_total", map[string]string{"host": "compute-1", "result": "succeeded"}, 1},
		{"instanceha_fencing_total", map[string]string{"host": "compute-1", "result": "started"}, 1},
		{"instanceha_threshold_exceeded_total", nil, 1},
		{"instanceha_poll_cycles_total", map[string]string{"result": "success"}, 1},
		{"iha_raft_state", map[string]string{"state": "Follower"}, 1},
		{"iha_raft_state", map[string]string{"state": "Leader"}, 0},
		{"iha_raft_term", nil, 3},
		{"iha_raft_applied_index", nil, 39},
		{"iha_raft_voters", nil, 3},
		{"iha_mesh_members", map[string]string{"state": "alive"}, 0},
		{"iha_mesh_wired", nil, 0},
		{"iha_build_info", map[string]string{"version": "test"}, 1},
	}
	for _, c := range cases {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The 700 s evacuation is above the last bucket: only +Inf counts it.
	h := fams["instanceha_instance_evacuation_duration_seconds"].Metric[0].Histogram
	for _, b := range h.Bucket {
		if b.GetUpperBound() == 600 && b.GetCumulativeCount() != 1 {
			t.Errorf("600 s bucket: %v, want 1 (the 12 s one)", b)
		}
	}
	if h.GetSampleCount() != 2 {
		t.Errorf("sample count %d", h.GetSampleCount())
	}
}

func TestCountersAreMonotonicAcrossScrapesAndCountEachEventOnce(t *testing.T) {
	src := &fakeSource{raft: RaftStats{State: "Leader"}}
	m := New(src, "test")
	src.addEvents(Event{Seq: 1, Host: "c1", Kind: "HostDown"})
	_ = scrape(t, m)
	_ = scrape(t, m) // no new events: nothing counted twice
	src.addEvents(Event{Seq: 2, Host: "c1", Kind: "HostDown"}, Event{Seq: 3, Host: "c1", Kind: "ProcessingFailed"})
	fams := scrape(t, m)
	if got := value(t, fams, "instanceha_host_down_total", map[string]string{"host": "c1"}); got != 2 {
		t.Fatalf("host_down_total = %v, want 2", got)
	}
	if got := value(t, fams, "instanceha_processing_failed_total", map[string]string{"host": "c1"}); got != 1 {
		t.Fatalf("processing_failed_total = %v, want 1", got)
	}
	if got := value(t, fams, "iha_events_total", map[string]string{"kind": "HostDown"}); got != 2 {
		t.Fatalf("events_total{HostDown} = %v", got)
	}
}

func TestPollFailuresAreExposed(t *testing.T) {
	m := New(&fakeSource{}, "test")
	m.ObservePoll(time.Second, io.EOF, 3)
	fams := scrape(t, m)
	if got := value(t, fams, "instanceha_poll_consecutive_failures", nil); got != 3 {
		t.Fatalf("consecutive failures = %v", got)
	}
	if got := value(t, fams, "instanceha_poll_cycles_total", map[string]string{"result": "error"}); got != 1 {
		t.Fatalf("poll cycles error = %v", got)
	}
}

func TestVerdictsAndPhaseAgeAreExposed(t *testing.T) {
	since := time.Unix(1_700_000_000, 500_000_000)
	src := &fakeSource{records: []Record{
		{Host: "compute-1", Phase: "fencing", Active: true, PhaseSince: since, DetectionSeconds: -1},
		{Host: "compute-2", Phase: "done", Active: false, PhaseSince: since, DetectionSeconds: -1},
	}}
	m := New(src, "test")
	m.ObserveVerdicts(map[string]int{"healthy": 4, "nova-compute-broken": 1})
	fams := scrape(t, m)
	if got := value(t, fams, "iha_hosts_by_verdict", map[string]string{"verdict": "nova-compute-broken"}); got != 1 {
		t.Errorf("nova-compute-broken = %v, want 1", got)
	}
	if got := value(t, fams, "iha_recovery_phase_since_timestamp_seconds", map[string]string{"host": "compute-1", "phase": "fencing"}); got != 1_700_000_000.5 {
		t.Errorf("phase since = %v", got)
	}
	if n := len(fams["iha_recovery_phase_since_timestamp_seconds"].GetMetric()); n != 1 {
		t.Errorf("phase-since series = %d, want 1 (finished records are not in recovery)", n)
	}
	// The next cycle judges nobody broken: the series stays, at 0.
	m.ObserveVerdicts(map[string]int{"healthy": 5})
	if got := value(t, scrape(t, m), "iha_hosts_by_verdict", map[string]string{"verdict": "nova-compute-broken"}); got != 0 {
		t.Errorf("nova-compute-broken after recovery = %v, want 0", got)
	}
}
