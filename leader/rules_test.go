package leader

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

const delta = 30 * time.Second

func svc(host, status, state string, forced bool, reason string, age time.Duration) nova.Service {
	s := nova.Service{ID: "id-" + host, Host: host, Binary: "nova-compute", Status: status, State: state, ForcedDown: forced, DisabledReason: reason}
	if age >= 0 {
		s.UpdatedAt = now.Add(-age)
	}
	return s
}

func TestCategorize(t *testing.T) {
	cases := []struct {
		name string
		s    nova.Service
		want string // new, resume, reenable, none
	}{
		{"R3.5 fresh and up is healthy", svc("h", "enabled", "up", false, "", 5*time.Second), "none"},
		{"R3.5 stale exactly at DELTA is not stale (strict)", svc("h", "enabled", "up", false, "", delta), "none"},
		{"R3.5 stale beyond DELTA is a new failure", svc("h", "enabled", "up", false, "", delta+time.Second), "new"},
		{"R3.5 missing updated_at is never stale", svc("h", "enabled", "up", false, "", -1), "none"},
		{"R3.6 state down is a new failure", svc("h", "enabled", "down", false, "", time.Second), "new"},
		{"R3.6 a disabled host is never a new failure", svc("h", "disabled", "down", false, "maintenance", time.Hour), "none"},
		{"R3.7 in-progress marker resumes", svc("h", "disabled", "down", true, "instanceha evacuation: 2026-01-01T00:00:00", time.Hour), "resume"},
		{"R3.7 kdump marker resumes", svc("h", "disabled", "down", true, "instanceha evacuation (kdump): x", time.Hour), "resume"},
		{"R3.7 recovered marker resumes", svc("h", "disabled", "down", true, "instanceha evacuation (recovered): x", time.Hour), "resume"},
		{"R3.7 marker but not forced down does not resume", svc("h", "disabled", "down", false, "instanceha evacuation: x", time.Hour), "none"},
		{"R3.8 complete marker re-enables", svc("h", "disabled", "down", true, "instanceha evacuation complete: x", time.Hour), "reenable"},
		{"R3.8 enabled and forced down re-enables", svc("h", "enabled", "down", true, "", time.Hour), "reenable"},
		{"R3.9 FAILED marker is left for a human", svc("h", "disabled", "down", true, "instanceha evacuation FAILED: x", time.Hour), "none"},
		{"R3.10 down-cell record with missing fields falls in no category", nova.Service{Host: "h", Status: "UNKNOWN"}, "none"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cat := Categorize([]nova.Service{c.s}, now, delta)
			got := "none"
			switch {
			case len(cat.NewFailures) == 1:
				got = "new"
			case len(cat.Resume) == 1:
				got = "resume"
			case len(cat.Reenable) == 1:
				got = "reenable"
			}
			if got != c.want {
				t.Fatalf("got %s, want %s", got, c.want)
			}
		})
	}
}

func TestAllServicesStaleBreaker(t *testing.T) {
	up := func(h string) nova.Service { return svc(h, "enabled", "up", false, "", 0) }
	three := []nova.Service{up("a"), up("b"), up("c")}
	if !AllServicesStale(three, 3) {
		t.Fatal("G4: every one of three active services failing trips the breaker")
	}
	if AllServicesStale(three, 2) {
		t.Fatal("G4: two of three must not trip")
	}
	if AllServicesStale(three[:2], 2) {
		t.Fatal("G4: fewer than three active services never trips")
	}
	withDisabled := append(three[:2:2], svc("d", "disabled", "down", false, "", 0), svc("e", "enabled", "down", true, "", 0))
	if AllServicesStale(withDisabled, 2) {
		t.Fatal("G4: disabled and forced-down services are not active")
	}
}

func TestThreshold(t *testing.T) {
	var svcs []nova.Service
	for i := 0; i < 40; i++ {
		svcs = append(svcs, svc(fmt.Sprintf("h%d", i), "enabled", "up", false, "", 0))
	}
	cands := func(n int) []nova.Service { return svcs[:n] }
	if p := ThresholdPercent(svcs, cands(20), nil); ThresholdExceeded(p, 50) {
		t.Fatalf("R5.4: 20 of 40 at 50%% is allowed (strict >), got %.1f", p)
	}
	if p := ThresholdPercent(svcs, cands(21), nil); !ThresholdExceeded(p, 50) {
		t.Fatal("R5.4: 21 of 40 at 50% is blocked")
	}
	if ThresholdExceeded(100, 100) {
		t.Fatal("R5.4: THRESHOLD 100 never blocks")
	}
	if !ThresholdExceeded(2.5, 0) {
		t.Fatal("R5.4: THRESHOLD 0 blocks any failure")
	}
	// R5.5: hosts already forced down (in recovery) count.
	svcs[30].ForcedDown, svcs[31].State = true, "down"
	if p := ThresholdPercent(svcs, cands(1), nil); p != 7.5 {
		t.Fatalf("R5.2: forced-down and down hosts count with the candidates: got %.1f want 7.5", p)
	}
	// R5.3: scoped to tagged aggregates: 5 of 10 tagged at 40% → blocked.
	scope := map[string]bool{}
	for i := 0; i < 10; i++ {
		scope[fmt.Sprintf("h%d", i)] = true
	}
	if p := ThresholdPercent(svcs[:20], cands(5), scope); !ThresholdExceeded(p, 40) || p != 50 {
		t.Fatalf("R5.3: 5 of 10 tagged hosts is 50%%, got %.1f", p)
	}
	if p := ThresholdPercent(nil, nil, nil); p != 0 {
		t.Fatal("R5.3: empty denominator is 0%")
	}
}

func TestMeshFailing(t *testing.T) {
	heard := now.Add(-5 * time.Second) // Nova's last updated_at of every host
	var svcs []nova.Service
	for _, h := range []string{"alive", "suspect", "dead", "cutoff", "left", "unseen"} {
		s := svc(h, "enabled", "up", false, "", 0)
		s.UpdatedAt = heard
		svcs = append(svcs, s)
	}
	snap := MeshSnapshot{
		"alive":   {Host: "alive", State: MeshAlive},
		"suspect": {Host: "suspect", State: MeshSuspect, Since: now.Add(-2 * time.Second)},
		"dead":    {Host: "dead", State: MeshDead, Since: now.Add(-3 * time.Second)},
		// Nova heard it after the mesh lost it: cut off from the mesh only.
		"cutoff": {Host: "cutoff", State: MeshDead, Since: now.Add(-10 * time.Second)},
		"left":   {Host: "left", State: MeshLeft, Since: now.Add(-3 * time.Second)},
	}
	var got []string
	for _, s := range MeshFailing(snap, svcs, 0) {
		got = append(got, s.Host)
	}
	if want := []string{"suspect", "dead"}; !slices.Equal(got, want) {
		t.Fatalf("MeshFailing = %v, want %v", got, want)
	}
	// With them, one candidate of six is 50 %, not 16.7 %.
	cands := append([]nova.Service{svcs[0]}, MeshFailing(snap, svcs, 0)...)
	if p := ThresholdPercent(svcs, cands, nil); p != 50 {
		t.Fatalf("ThresholdPercent with the hosts the mesh is losing = %.1f, want 50", p)
	}
}

func TestAggregateLimit(t *testing.T) {
	tagged := map[string]string{"evacuable": "true", MaxFailuresKey: "1"}
	aggs := []nova.Aggregate{
		{ID: 1, Name: "rack1", Hosts: []string{"a", "b", "c"}, Metadata: tagged},
		{ID: 2, Name: "untagged", Hosts: []string{"d", "e"}, Metadata: map[string]string{MaxFailuresKey: "0"}},
		{ID: 3, Name: "bad", Hosts: []string{"f"}, Metadata: map[string]string{"evacuable": "true", MaxFailuresKey: "x"}},
		{ID: 4, Name: "zero", Hosts: []string{"g"}, Metadata: map[string]string{"evacuable": "true", MaxFailuresKey: "0"}},
	}
	c := func(hs ...string) []nova.Service {
		var out []nova.Service
		for _, h := range hs {
			out = append(out, svc(h, "enabled", "down", false, "", 0))
		}
		return out
	}
	cases := []struct {
		name     string
		cands    []nova.Service
		inflight []string
		blocked  []string
	}{
		{"R5.8 within the limit passes", c("a"), nil, nil},
		{"R5.8 over the limit blocks all new candidates of the aggregate", c("a", "b"), nil, []string{"a", "b"}},
		{"R5.7 hosts in recovery count", c("a"), []string{"b"}, []string{"a"}},
		{"R5.7 this cycle's candidates are not double counted", c("a"), []string{"a"}, nil},
		{"R5.8 untagged aggregates are ignored", c("d", "e"), nil, nil},
		{"R5.6 a non-integer limit is ignored", c("f"), nil, nil},
		{"R5.8 max_failures 0 blocks any failure", c("g"), nil, []string{"g"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := AggregateLimited(aggs, "evacuable", tc.cands, tc.inflight)
			if len(got) != len(tc.blocked) {
				t.Fatalf("blocked %v, want %v", got, tc.blocked)
			}
			for _, h := range tc.blocked {
				if _, ok := got[h]; !ok {
					t.Fatalf("blocked %v, want %v", got, tc.blocked)
				}
			}
		})
	}
}

func TestSchedulerGate(t *testing.T) {
	down := []nova.Service{{Binary: "nova-scheduler", State: "down"}}
	if SchedulerUp(down, nil) {
		t.Fatal("G10: schedulers exist and none is up → closed")
	}
	if !SchedulerUp(nil, nil) || !SchedulerUp(down, errors.New("boom")) {
		t.Fatal("G10: empty list or query error → open")
	}
	if !SchedulerUp(append(down, nova.Service{State: "up"}), nil) {
		t.Fatal("G10: one up is enough")
	}
}

func TestTagMatching(t *testing.T) {
	cases := []struct {
		name string
		m    map[string]string
		want bool
	}{
		{"R6.1 exact key true", map[string]string{"evacuable": "True"}, true},
		{"R6.1 exact key false wins over composite keys", map[string]string{"evacuable": "false", "trait:CUSTOM_evacuable": "true"}, false},
		{"R6.1 composite key containing the tag", map[string]string{"trait:CUSTOM_evacuable": "true"}, true},
		{"R6.1 the substring match is case-sensitive", map[string]string{"trait:CUSTOM_EVACUABLE": "true"}, false},
		{"R6.1 yes and 1 are not true", map[string]string{"evacuable": "yes", "x_evacuable": "1"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := TagInMap(c.m, "evacuable"); got != c.want {
				t.Fatalf("got %v", got)
			}
		})
	}
	if !TagInList([]string{"non-evacuable"}, "evacuable") {
		t.Fatal("R6.2: list tags match by substring, no value check")
	}
	if TagInList([]string{"other"}, "evacuable") {
		t.Fatal("R6.2: no match")
	}
}

func TestServerSelection(t *testing.T) {
	s := config.Defaults()
	s.SkipServersWithName = []string{"test-*", "db?", "[xy]z"}
	images := []nova.Image{{ID: "img-tagged", Tags: []string{"evacuable"}}, {ID: "img-plain"}}
	flavors := []nova.Flavor{{ID: "f-tagged", ExtraSpecs: map[string]string{"evacuable": "true"}}}
	ix := BuildTagIndex(PolicyOf(s), images, flavors, nil, nil)
	srv := func(name, status, image string, specs map[string]string) nova.Server {
		return nova.Server{ID: name, Name: name, Status: status, ImageID: image, FlavorExtraSpecs: specs}
	}
	tagged := map[string]string{"evacuable": "true"}
	cases := []struct {
		name     string
		s        nova.Server
		resuming bool
		want     ServerState
	}{
		{"R6.5 tagged image is evacuable", srv("a", "ACTIVE", "img-tagged", nil), false, ServerPending},
		{"R6.7 tagged flavor (embedded extra specs) is evacuable", srv("b", "ACTIVE", "img-plain", tagged), false, ServerPending},
		{"R6.5 neither image nor flavor tagged is skipped", srv("c", "ACTIVE", "img-plain", nil), false, ServerSkipped},
		{"R6.6 boot from volume never matches by image", srv("d", "ACTIVE", "", nil), false, ServerSkipped},
		{"R6.11 SHUTOFF is evacuated", srv("e", "SHUTOFF", "img-tagged", nil), false, ServerPending},
		{"R6.11 ERROR is evacuated", srv("f", "ERROR", "img-tagged", nil), false, ServerPending},
		{"R6.11 PAUSED is not", srv("g", "PAUSED", "img-tagged", nil), false, ServerSkipped},
		{"R6.11 REBUILD only when resuming", srv("h", "REBUILD", "img-tagged", nil), false, ServerSkipped},
		{"R6.11 REBUILD when resuming", srv("i", "REBUILD", "img-tagged", nil), true, ServerPending},
		{"R6.12 name glob * skips", srv("test-1", "ACTIVE", "img-tagged", nil), false, ServerSkipped},
		{"R6.12 name glob ? skips", srv("db1", "ACTIVE", "img-tagged", nil), false, ServerSkipped},
		{"R6.12 name glob [seq] skips", srv("yz", "ACTIVE", "img-tagged", nil), false, ServerSkipped},
		{"R6.12 no name is never skipped", nova.Server{ID: "n", Status: "ACTIVE", ImageID: "img-tagged"}, false, ServerPending},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ix.SelectServers(PolicyOf(s), "h", []nova.Server{c.s}, c.resuming)[0]
			if got.State != c.want {
				t.Fatalf("got %s (%s), want %s", got.State, got.Error, c.want)
			}
		})
	}
	// R6.5 (2): nothing tagged anywhere → evacuate all (fail-open).
	none := BuildTagIndex(PolicyOf(s), []nova.Image{{ID: "img-plain"}}, nil, nil, nil)
	if !none.ServerEvacuable(PolicyOf(s), srv("x", "ACTIVE", "img-plain", nil)) {
		t.Fatal("R6.5: no tagged resource → every server is evacuable")
	}
	// R6.5 (1): both filters off → evacuable.
	off := s
	off.TaggedImages, off.TaggedFlavors = false, false
	if !ix.ServerEvacuable(PolicyOf(off), srv("x", "ACTIVE", "img-plain", nil)) {
		t.Fatal("R6.5: filters off → evacuable")
	}
}

func TestAggregateScope(t *testing.T) {
	s := config.Defaults()
	aggs := []nova.Aggregate{{ID: 1, Hosts: []string{"a"}, Metadata: map[string]string{"evacuable": "true"}}, {ID: 2, Hosts: []string{"b"}}}
	ix := BuildTagIndex(PolicyOf(s), nil, nil, aggs, nil)
	if !ix.HostInScope(PolicyOf(s), "a") || ix.HostInScope(PolicyOf(s), "b") {
		t.Fatal("R6.9: only hosts of tagged aggregates are in scope")
	}
	empty := BuildTagIndex(PolicyOf(s), nil, nil, []nova.Aggregate{{ID: 2, Hosts: []string{"b"}}}, nil)
	if empty.HostInScope(PolicyOf(s), "b") {
		t.Fatal("R6.10: no tagged aggregate → fail-closed")
	}
	failed := BuildTagIndex(PolicyOf(s), nil, nil, nil, errors.New("boom"))
	if !failed.HostInScope(PolicyOf(s), "b") {
		t.Fatal("R6.10: aggregate list error → fail-open")
	}
	off := s
	off.TaggedAggregates = false
	if !empty.HostInScope(PolicyOf(off), "b") {
		t.Fatal("TAGGED_AGGREGATES false → every host in scope")
	}
}

func TestReservedHostMatching(t *testing.T) {
	failed := nova.Service{Host: "f", Zone: "az1"}
	spare := nova.Service{Host: "r", Zone: "az1"}
	other := nova.Service{Host: "r2", Zone: "az2"}
	if !reservedMatches(false, "evacuable", nil, failed, spare) || reservedMatches(false, "evacuable", nil, failed, other) {
		t.Fatal("R7.2 zone mode: same zone matches, other zone does not")
	}
	aggs := []nova.Aggregate{
		{ID: 1, Hosts: []string{"f", "r"}},
		{ID: 2, Hosts: []string{"r"}, Metadata: map[string]string{"evacuable": "true"}},
		{ID: 3, Hosts: []string{"r2"}, Metadata: map[string]string{"evacuable": "true"}},
	}
	if !reservedMatches(true, "evacuable", aggs, failed, spare) {
		t.Fatal("R7.2 aggregate mode: in a tagged aggregate and shares one with the failed host")
	}
	if reservedMatches(true, "evacuable", aggs, failed, nova.Service{Host: "r2"}) {
		t.Fatal("R7.2 aggregate mode: sharing no aggregate does not match")
	}
	if reservedMatches(true, "evacuable", aggs, nova.Service{Host: "lonely"}, spare) {
		t.Fatal("R7.2 aggregate mode: a failed host in no aggregate gets no spare")
	}
}

func TestOrchestratedPhases(t *testing.T) {
	md := func(p, g string) map[string]string {
		m := map[string]string{}
		if p != "" {
			m[RestartPriorityKey] = p
		}
		if g != "" {
			m[RestartGroupKey] = g
		}
		return m
	}
	if restartPriority(md("", "")) != 500 || restartPriority(md("abc", "")) != 500 ||
		restartPriority(md("5000", "")) != 1000 || restartPriority(md("0", "")) != 1 {
		t.Fatal("R10.10: default 500, invalid 500, clamped 1–1000")
	}
	s := config.Defaults()
	ix := BuildTagIndex(PolicyOf(s), nil, nil, nil, nil)
	plan := ix.SelectServers(PolicyOf(s), "h", []nova.Server{
		{ID: "web1", Name: "web1", Status: "ACTIVE", Metadata: md("100", "web")},
		{ID: "db", Name: "db", Status: "ACTIVE", Metadata: md("900", "")},
		{ID: "web2", Name: "web2", Status: "ACTIVE", Metadata: md("300", "web")},
		{ID: "misc", Name: "misc", Status: "ACTIVE"},
	}, false)
	ph := phases(plan)
	if len(ph) != 3 || ph[0][0].ID != "db" || ph[1][0].ID != "misc" || len(ph[2]) != 2 {
		t.Fatalf("R10.10: phases by priority (group = max of members): %v", ph)
	}
}

func TestMarkerFormat(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600000, time.UTC)
	if got := Marker(MarkerPrefix, MarkerKdumpSuffix, at); got != "instanceha evacuation (kdump): 2026-01-02T03:04:05.000600+00:00" {
		t.Fatalf("R8.3: %q", got)
	}
}

func TestFnmatch(t *testing.T) {
	cases := []struct {
		pat, name string
		want      bool
	}{{"*", "a/b", true}, {"a?c", "abc", true}, {"[!a]x", "bx", true}, {"[!a]x", "ax", false}, {"a.b", "axb", false}, {"[", "[", true}}
	for _, c := range cases {
		if got := NameSkipped(c.name, []string{c.pat}); got != c.want {
			t.Errorf("fnmatch(%q, %q) = %v, want %v", c.pat, c.name, got, c.want)
		}
	}
}

// The poll loop retries a failed cycle after 2 s, doubling, never later
// than POLL (InstanceHA's R3.4 would wait 90 s, 180 s, 300 s at POLL 45).
func TestRetryAfterAFailedPoll(t *testing.T) {
	for _, c := range []struct {
		poll time.Duration
		n    int
		want time.Duration
	}{
		{45 * time.Second, 1, 2 * time.Second}, {45 * time.Second, 2, 4 * time.Second}, {45 * time.Second, 3, 8 * time.Second},
		{45 * time.Second, 5, 32 * time.Second}, {45 * time.Second, 6, 45 * time.Second}, {45 * time.Second, 1000, 45 * time.Second},
		{time.Second, 1, time.Second}, {time.Second, 4, time.Second}, {200 * time.Millisecond, 2, 200 * time.Millisecond},
	} {
		if got := retryAfter(c.poll, c.n); got != c.want {
			t.Errorf("POLL %v, failure %d: retry after %v, want %v", c.poll, c.n, got, c.want)
		}
	}
}
