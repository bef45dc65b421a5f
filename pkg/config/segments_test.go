package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodSegments = `segments:
  rack-a:
    recovery_method: reserved_host
    hosts: [c1, c2]
    reserved_hosts: [spare1, spare2]
  rack-b:
    recovery_method: rh_priority
    enabled: false
    hosts: c3, c4
    recovered_host_maintenance: yes
`

func TestSegmentsFileIsReadNextToFencing(t *testing.T) {
	dir := fixture(t, map[string]string{"segments.yaml": goodSegments})
	cfg := mustLoad(t, dir, nil)
	if cfg.Files.Segments != filepath.Join(dir, "segments.yaml") {
		t.Errorf("segments file %q", cfg.Files.Segments)
	}
	segs := cfg.Settings.Segments
	if len(segs.Items) != 2 {
		t.Fatalf("segments %+v", segs)
	}
	a := segs.ForHost("c2.example.com")
	if a == nil || a.Name != "rack-a" || a.RecoveryMethod != MethodReservedHost || !a.Enabled {
		t.Fatalf("c2 is in %+v", a)
	}
	// Reserved hosts are members of their segment.
	if s := segs.ForHost("spare2"); s == nil || s.Name != "rack-a" || !s.IsReserved("spare2") || s.IsReserved("c1") {
		t.Errorf("spare2 is in %+v", s)
	}
	b := segs.Named("rack-b")
	if b == nil || b.Enabled || b.Maintenance == nil || !*b.Maintenance || strings.Join(b.Hosts, ",") != "c3,c4" {
		t.Errorf("rack-b %+v", b)
	}
	if segs.ForHost("c9") != nil {
		t.Error("a host in no segment has a segment")
	}
}

func TestSegmentsPathFromEnvironmentAndMissingFileMeansNone(t *testing.T) {
	dir := fixture(t, nil)
	cfg := mustLoad(t, dir, nil)
	if !cfg.Settings.Segments.Empty() {
		t.Errorf("no file, but segments %+v", cfg.Settings.Segments)
	}
	other := filepath.Join(t.TempDir(), "seg.yaml")
	writeFile(t, other, goodSegments)
	cfg = mustLoad(t, dir, map[string]string{EnvSegmentsPath: other})
	if cfg.Files.Segments != other || len(cfg.Settings.Segments.Items) != 2 {
		t.Errorf("SEGMENTS_CONFIG_PATH not used: %+v", cfg.Files)
	}
}

func TestSegmentsFileBadInputNamesFileSegmentHostAndAllowed(t *testing.T) {
	cases := []struct {
		name string
		file string
		want []string // every problem text must be present (all at once)
	}{
		{"host in two segments", `segments:
  a: {recovery_method: auto, hosts: [c1, c2]}
  b: {recovery_method: auto, hosts: [c3, c1.example.com]}
`, []string{"host c1.example.com", "is in two segments: a (", "and b (", "at most one segment"}},
		{"reserved host of one segment is a host of another", `segments:
  a: {recovery_method: auto, hosts: [c1, spare]}
  b: {recovery_method: reserved_host, hosts: [c3], reserved_hosts: [spare]}
`, []string{"host spare", "is in two segments: a"}},
		{"unknown recovery method", `segments:
  a: {recovery_method: magic, hosts: [c1]}
`, []string{"segment a: recovery_method: \"magic\" is not a recovery method", "auto, reserved_host, auto_priority, rh_priority"}},
		{"method missing", `segments:
  a: {hosts: [c1]}
`, []string{"segment a: recovery_method: is required"}},
		{"reserved_host without spares", `segments:
  a: {recovery_method: reserved_host, hosts: [c1]}
`, []string{"segment a: reserved_hosts: is empty but recovery_method is reserved_host"}},
		{"no hosts", `segments:
  a: {recovery_method: auto}
`, []string{"segment a: hosts: is empty"}},
		{"bad enabled and unknown field, both reported", `segments:
  a: {recovery_method: auto, hosts: [c1], enabled: maybe, reserved_host: [x]}
`, []string{"segment a: enabled: \"maybe\" is not a boolean", "segment a: reserved_host: unknown field (did you mean reserved_hosts?)"}},
		{"segments not a map", "segments: [a, b]\n", []string{"segments: a list is not a map of segment name to segment"}},
		{"unknown top-level key", "segment:\n  a: {}\n", []string{"segment: unknown top-level key (did you mean segments?)"}},
		{"malformed YAML", "segments:\n  a: [\n", []string{"malformed YAML"}},
		{"hosts not a list", `segments:
  a: {recovery_method: auto, hosts: {c1: 1}}
`, []string{"segment a: hosts: a map is not a list of host names"}},
		{"a number is not a host", `segments:
  a: {recovery_method: reserved_host, hosts: [c1], reserved_hosts: 5}
  b: {recovery_method: auto, hosts: [c2, 7, "c9"]}
`, []string{"segments.yaml:2: segment a: reserved_hosts: 5 is not a host name", "segments.yaml:3: segment b: hosts: 7 is not a host name"}},
		{"a host listed twice", `segments:
  a:
    recovery_method: auto
    hosts:
      - c1
      - c2
      - c1.example.com
`, []string{`segments.yaml:7: segment a: hosts: "c1.example.com" is listed twice (first at line 5)`}},
		{"every problem at once, overlaps too", `segments:
  a: {recovery_method: magic, hosts: [c1, c1]}
  b: {recovery_method: auto, hosts: [c1], enabled: maybe}
`, []string{`recovery_method: "magic" is not a recovery method`, `hosts: "c1" is listed twice`, `enabled: "maybe" is not a boolean`,
			"host c1", "is in two segments: a ("}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := fixture(t, map[string]string{"segments.yaml": tc.file})
			p := mustFail(t, dir, nil)
			text := p.Error()
			assertContainsAll(t, text, append([]string{filepath.Join(dir, "segments.yaml")}, tc.want...)...)
		})
	}
}

func agg(id int, name string, hosts []string, md map[string]string) AggregateSegment {
	return AggregateSegment{ID: id, Name: name, Hosts: hosts, Metadata: md}
}

func TestMergeSegmentsFromAggregates(t *testing.T) {
	file, problems := ParseSegments("segments.yaml", []byte(goodSegments))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	aggs := []AggregateSegment{
		agg(1, "az1", []string{"c5", "c6"}, map[string]string{AggregateSegmentKey: "rack-c", AggregateMethodKey: "auto_priority",
			AggregateReservedKey: "spare9", AggregateMaintenanceKey: "true"}),
		agg(2, "az1-more", []string{"c7"}, map[string]string{AggregateSegmentKey: "rack-c"}),
		// Names a file segment with another method: the file wins, the
		// hosts are added, a warning says what was ignored.
		agg(3, "rack-a-agg", []string{"c8"}, map[string]string{AggregateSegmentKey: "rack-a", AggregateMethodKey: "auto"}),
		agg(4, "plain", []string{"c1", "c5"}, map[string]string{"evacuable": "true"}),
	}
	segs, problems, warnings := MergeSegments(file, aggs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	c := segs.ForHost("c7")
	if c == nil || c.Name != "rack-c" || c.RecoveryMethod != MethodAutoPriority || !c.IsReserved("spare9") || !c.Has("spare9") ||
		c.Maintenance == nil || !*c.Maintenance || !strings.Contains(c.Source, "aggregate az1 (id 1)") {
		t.Errorf("rack-c %+v", c)
	}
	if a := segs.ForHost("c8"); a == nil || a.Name != "rack-a" || a.RecoveryMethod != MethodReservedHost {
		t.Errorf("c8 %+v", a)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "rack-a-agg") || !strings.Contains(warnings[0], "file, which wins") {
		t.Errorf("warnings %q", warnings)
	}
	// The file's own segments are not changed by merging.
	if f := file.Named("rack-a"); f.Has("c8") {
		t.Error("MergeSegments changed its input")
	}
}

func TestMergeSegmentsBadAggregateMetadata(t *testing.T) {
	file, _ := ParseSegments("segments.yaml", []byte(goodSegments))
	cases := []struct {
		name string
		aggs []AggregateSegment
		want []string
	}{
		{"unknown method", []AggregateSegment{agg(7, "x", []string{"c9"}, map[string]string{AggregateSegmentKey: "s", AggregateMethodKey: "fast"})},
			[]string{"aggregate x (id 7): segment s: iha_recovery_method: \"fast\" is not a recovery method"}},
		{"method missing", []AggregateSegment{agg(7, "x", []string{"c9"}, map[string]string{AggregateSegmentKey: "s"})},
			[]string{"aggregate x (id 7): segment s: iha_recovery_method: is required"}},
		{"bad bool", []AggregateSegment{agg(7, "x", []string{"c9"}, map[string]string{AggregateSegmentKey: "s", AggregateMethodKey: "auto", AggregateEnabledKey: "si"})},
			[]string{"iha_segment_enabled: \"si\" is not a boolean"}},
		{"typo in a key", []AggregateSegment{agg(7, "x", []string{"c9"}, map[string]string{AggregateSegmentKey: "s", AggregateMethodKey: "auto", "iha_reserved_host": "a"})},
			[]string{"iha_reserved_host: unknown segment metadata key (did you mean iha_reserved_hosts?)"}},
		{"empty name", []AggregateSegment{agg(7, "x", []string{"c9"}, map[string]string{AggregateSegmentKey: " "})},
			[]string{"aggregate x (id 7): iha_segment: is empty"}},
		{"host of a file segment in an aggregate segment", []AggregateSegment{agg(7, "x", []string{"c1"}, map[string]string{AggregateSegmentKey: "s", AggregateMethodKey: "auto"})},
			[]string{"host c1", "is in two segments: rack-a (segments.yaml:2) and s (aggregate x (id 7))"}},
		{"two aggregates disagree", []AggregateSegment{
			agg(7, "x", []string{"c9"}, map[string]string{AggregateSegmentKey: "s", AggregateMethodKey: "auto"}),
			agg(8, "y", []string{"c10"}, map[string]string{AggregateSegmentKey: "s", AggregateMethodKey: "rh_priority"})},
			[]string{"aggregate y (id 8): segment s: disagrees with aggregate x (id 7) on iha_recovery_method=rh_priority"}},
		{"reserved_host without spares", []AggregateSegment{agg(7, "x", []string{"c9"}, map[string]string{AggregateSegmentKey: "s", AggregateMethodKey: "reserved_host"})},
			[]string{"segment s: iha_reserved_hosts: is empty but recovery_method is reserved_host"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, problems, _ := MergeSegments(file, tc.aggs)
			if len(problems) == 0 {
				t.Fatal("no problem reported")
			}
			text := (&Problems{Items: problems}).Error()
			assertContainsAll(t, text, tc.want...)
		})
	}
}

func TestCheckSegmentHostsNamesSegmentAndHost(t *testing.T) {
	segs, _ := ParseSegments("segments.yaml", []byte(goodSegments))
	problems := CheckSegmentHosts(segs, []string{"c1.example.com", "c2", "spare1", "c3", "c4"})
	text := (&Problems{Items: problems}).Error()
	if len(problems) != 1 {
		t.Fatalf("problems:\n%s", text)
	}
	assertContainsAll(t, text, "segment rack-a", "reserved host spare2", "is not a nova-compute host in Nova")
}

func FuzzParseSegments(f *testing.F) {
	f.Add([]byte(goodSegments))
	f.Add([]byte("segments:\n  a: {recovery_method: auto, hosts: [c1]}\n  b: {recovery_method: auto, hosts: [c1]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		segs, problems := ParseSegments("segments.yaml", data)
		if len(problems) > 0 {
			return
		}
		owner := map[string]string{}
		for _, s := range segs.Items {
			if !validMethod(s.RecoveryMethod) || len(s.Hosts) == 0 {
				t.Fatalf("segment %+v accepted", s)
			}
			if s.RecoveryMethod == MethodReservedHost && len(s.ReservedHosts) == 0 {
				t.Fatalf("reserved_host without spares accepted: %+v", s)
			}
			for _, r := range s.ReservedHosts {
				if !s.Has(r) {
					t.Fatalf("reserved host %s not a member of %s", r, s.Name)
				}
			}
			for _, h := range s.Hosts {
				if o, ok := owner[ShortName(h)]; ok && o != s.Name {
					t.Fatalf("host %s in %s and %s accepted", h, o, s.Name)
				}
				owner[ShortName(h)] = s.Name
			}
		}
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
