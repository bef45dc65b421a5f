package config

import (
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Failover segments (Masakari's concept): a group of computes whose
// instances are only ever moved to other hosts of the same group, with a
// recovery method and reserved (spare) hosts. They come from the segments
// file (SEGMENTS_CONFIG_PATH) and from Nova aggregates whose metadata names
// a segment (AggregateSegmentKey). A host in no segment keeps InstanceHA's
// behaviour.

// Recovery methods of a segment (Masakari's names and semantics).
const (
	MethodAuto         = "auto"          // evacuate to up, enabled hosts of the segment
	MethodReservedHost = "reserved_host" // enable a reserved host of the segment, evacuate to it
	MethodAutoPriority = "auto_priority" // auto; on failure reserved_host
	MethodRHPriority   = "rh_priority"   // reserved_host; on failure auto
)

// RecoveryMethods lists the accepted recovery_method values.
var RecoveryMethods = []string{MethodAuto, MethodReservedHost, MethodAutoPriority, MethodRHPriority}

// Metadata keys of a Nova aggregate that defines (or adds hosts to) a
// segment. Only AggregateSegmentKey is required; the hosts of the
// aggregate are the segment's hosts.
const (
	AggregateSegmentKey     = "iha_segment"                    // segment name
	AggregateMethodKey      = "iha_recovery_method"            // one of RecoveryMethods
	AggregateReservedKey    = "iha_reserved_hosts"             // comma-separated host names
	AggregateEnabledKey     = "iha_segment_enabled"            // bool, default true
	AggregateMaintenanceKey = "iha_recovered_host_maintenance" // bool, default RECOVERED_HOST_MAINTENANCE
)

// Segment is one failover segment.
// Its JSON form (`iha config check --json`) uses the segments file's keys.
type Segment struct {
	Name           string `json:"name"`
	RecoveryMethod string `json:"recovery_method"` // one of RecoveryMethods
	Enabled        bool   `json:"enabled"`
	// Hosts are the segment's computes, reserved hosts included, as
	// written (matched by short name).
	Hosts []string `json:"hosts"`
	// ReservedHosts are the spares, in the order they are tried.
	ReservedHosts []string `json:"reserved_hosts,omitempty"`
	// Maintenance, when set, overrides RECOVERED_HOST_MAINTENANCE for the
	// hosts of this segment.
	Maintenance *bool `json:"recovered_host_maintenance,omitempty"`
	// Source says where the segment was defined: "FILE:LINE" or
	// "aggregate NAME (id N)".
	Source string `json:"source"`
}

// Has reports whether host (short name compared) is a host of the segment.
func (s *Segment) Has(host string) bool { return containsShort(s.Hosts, host) }

// IsReserved reports whether host is one of the segment's reserved hosts.
func (s *Segment) IsReserved(host string) bool { return containsShort(s.ReservedHosts, host) }

func containsShort(list []string, host string) bool {
	want := ShortName(host)
	for _, h := range list {
		if ShortName(h) == want {
			return true
		}
	}
	return false
}

// Segments are the failover segments in force. The zero value is "no
// segments": every host keeps InstanceHA's behaviour.
type Segments struct {
	Items []Segment
}

// ForHost returns the segment of host, or nil.
func (s Segments) ForHost(host string) *Segment {
	for i := range s.Items {
		if s.Items[i].Has(host) {
			return &s.Items[i]
		}
	}
	return nil
}

// Named returns the segment called name, or nil.
func (s Segments) Named(name string) *Segment {
	for i := range s.Items {
		if s.Items[i].Name == name {
			return &s.Items[i]
		}
	}
	return nil
}

// Empty reports whether there is no segment.
func (s Segments) Empty() bool { return len(s.Items) == 0 }

// segmentFields are the keys of one segment in the segments file.
var segmentFields = []string{"recovery_method", "enabled", "hosts", "reserved_hosts", "recovered_host_maintenance"}

// ParseSegments reads a segments file:
//
//	segments:
//	  rack-a:
//	    recovery_method: reserved_host   # auto | reserved_host | auto_priority | rh_priority
//	    enabled: true                    # default true
//	    hosts: [compute-0, compute-1]
//	    reserved_hosts: [spare-0]        # tried in this order; members of the segment
//	    recovered_host_maintenance: true # default RECOVERED_HOST_MAINTENANCE
//
// It returns every problem at once; the Segments are only meaningful when
// there is none.
func ParseSegments(file string, data []byte) (Segments, []Problem) {
	c := &collector{}
	s := parseSegments(file, data, c)
	problems, _ := c.finish()
	return s, problems
}

func parseSegments(file string, data []byte, c *collector) Segments {
	var out Segments
	root, ok := parseYAML(file, data, c)
	if !ok || root == nil {
		return out
	}
	if root.Kind != yaml.MappingNode {
		c.add(Problem{File: file, Line: root.Line, Reason: "must be a map with a `segments:` key, not " + shown(root)})
		return out
	}
	var segs *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := resolve(root.Content[i]), resolve(root.Content[i+1])
		if k.Value == "segments" {
			segs = v
			continue
		}
		c.add(Problem{File: file, Line: k.Line, Key: k.Value, Reason: "unknown top-level key" + suggest(k.Value, []string{"segments"}), Allowed: "segments"})
	}
	if segs == nil || isNull(segs) {
		return out
	}
	if segs.Kind != yaml.MappingNode {
		c.add(Problem{File: file, Line: segs.Line, Key: "segments", Value: shown(segs), Reason: "is not a map of segment name to segment"})
		return out
	}
	seen := map[string]int{}
	var all []Segment // with problems too: overlaps are reported in the same pass
	for i := 0; i+1 < len(segs.Content); i += 2 {
		k, v := resolve(segs.Content[i]), resolve(segs.Content[i+1])
		name := strings.TrimSpace(k.Value)
		if k.Kind != yaml.ScalarNode || name == "" {
			c.add(Problem{File: file, Line: k.Line, Reason: "a segment name must be a non-empty string"})
			continue
		}
		if line, dup := seen[name]; dup {
			c.add(Problem{File: file, Line: k.Line, Host: "segment " + name, Reason: "is defined twice (first at line " + strconv.Itoa(line) + ")"})
			continue
		}
		seen[name] = k.Line
		seg, ok := parseSegment(file, name, k.Line, v, c)
		if ok {
			out.Items = append(out.Items, seg)
		}
		all = append(all, seg)
	}
	checkOverlaps(all, func(p Problem) { p.File = file; c.add(p) })
	return out
}

func parseSegment(file, name string, line int, v *yaml.Node, c *collector) (Segment, bool) {
	seg := Segment{Name: name, Enabled: true, Source: file + ":" + strconv.Itoa(line)}
	where := "segment " + name
	if v.Kind != yaml.MappingNode {
		c.add(Problem{File: file, Line: v.Line, Host: where, Value: shown(v), Reason: "is not a map of " + strings.Join(segmentFields, ", ")})
		return seg, false
	}
	before := len(c.problems)
	have := map[string]bool{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := resolve(v.Content[i]), resolve(v.Content[i+1])
		key := k.Value
		if have[key] {
			c.add(Problem{File: file, Line: k.Line, Host: where, Key: key, Reason: "is set twice"})
			continue
		}
		have[key] = true
		bad := func(reason, allowed string) {
			c.add(Problem{File: file, Line: val.Line, Host: where, Key: key, Value: shown(val), Reason: reason, Allowed: allowed})
		}
		switch key {
		case "recovery_method":
			m, ok := nodeString(val)
			if !ok || !validMethod(m) {
				bad("is not a recovery method", strings.Join(RecoveryMethods, ", "))
				continue
			}
			seg.RecoveryMethod = strings.ToLower(strings.TrimSpace(m))
		case "enabled":
			b, ok := nodeBool(val)
			if !ok {
				bad("is not a boolean", "true/false")
				continue
			}
			seg.Enabled = b
		case "recovered_host_maintenance":
			b, ok := nodeBool(val)
			if !ok {
				bad("is not a boolean", "true/false")
				continue
			}
			seg.Maintenance = &b
		case "hosts", "reserved_hosts":
			// Its problems are recorded; the good names still count, so
			// that the segment's other rules and the overlaps are checked
			// in the same pass.
			l, _ := hostList(file, where, key, val, c)
			if key == "hosts" {
				seg.Hosts = dedupeShort(l)
			} else {
				seg.ReservedHosts = dedupeShort(l)
			}
		default:
			c.add(Problem{File: file, Line: k.Line, Host: where, Key: key, Reason: "unknown field" + suggest(key, segmentFields), Allowed: strings.Join(segmentFields, ", ")})
		}
	}
	for _, p := range segmentRules(&seg, have["recovery_method"]) {
		p.File = file
		if p.Line == 0 {
			p.Line = line
		}
		c.add(p)
	}
	return seg, len(c.problems) == before
}

// hostNameRE is what a Nova host name may look like.
var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,253})$`)

// hostList reads a list of host names (a YAML list, or a comma-separated
// string): a number or a boolean is not a host name (`reserved_hosts: 5`
// is a mistake, not host "5"), and a host listed twice is reported. Every
// problem is added (ok is false when there was one); the names that are
// good are returned either way.
func hostList(file, where, key string, val *yaml.Node, c *collector) ([]string, bool) {
	bad := func(n *yaml.Node, reason string) {
		c.add(Problem{File: file, Line: n.Line, Host: where, Key: key, Value: shown(n), Reason: reason,
			Allowed: "a YAML list of host names, or a comma-separated string of them"})
	}
	var items []*yaml.Node
	switch val.Kind {
	case yaml.ScalarNode:
		if isNull(val) {
			return nil, true
		}
		items = []*yaml.Node{val}
	case yaml.SequenceNode:
		for _, e := range val.Content {
			items = append(items, resolve(e))
		}
	default:
		bad(val, "is not a list of host names")
		return nil, false
	}
	ok := true
	var out []string
	lines := map[string]int{}
	for _, n := range items {
		if n.Kind != yaml.ScalarNode || isNull(n) || (n.Tag != "" && n.Tag != "!!str") {
			bad(n, "is not a host name")
			ok = false
			continue
		}
		for _, h := range strings.Split(n.Value, ",") {
			if h = strings.TrimSpace(h); h == "" {
				continue
			}
			if !hostNameRE.MatchString(h) {
				bad(n, strconv.Quote(h)+" is not a host name")
				ok = false
				continue
			}
			if first, dup := lines[ShortName(h)]; dup {
				c.add(Problem{File: file, Line: n.Line, Host: where, Key: key, Value: strconv.Quote(h),
					Reason: "is listed twice (first at line " + strconv.Itoa(first) + ")"})
				ok = false
				continue
			}
			lines[ShortName(h)] = n.Line
			out = append(out, h)
		}
	}
	return out, ok
}

// segmentRules checks one segment as a whole and adds its reserved hosts to
// its hosts.
func segmentRules(seg *Segment, methodSet bool) []Problem {
	where := "segment " + seg.Name
	var out []Problem
	if !methodSet {
		out = append(out, Problem{Host: where, Key: "recovery_method", Reason: "is required", Allowed: strings.Join(RecoveryMethods, ", ")})
	}
	for _, r := range seg.ReservedHosts {
		if !containsShort(seg.Hosts, r) {
			seg.Hosts = append(seg.Hosts, r)
		}
	}
	if len(seg.Hosts) == 0 {
		out = append(out, Problem{Host: where, Key: "hosts", Reason: "is empty: a segment needs at least one host"})
	}
	if seg.RecoveryMethod == MethodReservedHost && len(seg.ReservedHosts) == 0 {
		out = append(out, Problem{Host: where, Key: "reserved_hosts", Reason: "is empty but recovery_method is reserved_host",
			Allowed: "at least one reserved host, or recovery_method auto, auto_priority or rh_priority"})
	}
	return out
}

func validMethod(m string) bool {
	m = strings.ToLower(strings.TrimSpace(m))
	for _, x := range RecoveryMethods {
		if m == x {
			return true
		}
	}
	return false
}

func dedupeShort(l []string) []string {
	var out []string
	for _, h := range l {
		if !containsShort(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// checkOverlaps reports every host that belongs to two segments, naming
// both segments.
func checkOverlaps(segs []Segment, add func(Problem)) {
	owner := map[string]int{}
	for i := range segs {
		for _, h := range segs[i].Hosts {
			sh := ShortName(h)
			if j, ok := owner[sh]; ok && j != i {
				add(Problem{Host: "host " + h, Reason: "is in two segments: " + segs[j].Name + " (" + segs[j].Source + ") and " +
					segs[i].Name + " (" + segs[i].Source + ")", Allowed: "a host belongs to at most one segment"})
				continue
			}
			owner[sh] = i
		}
	}
}

// AggregateSegment is what the segment rules need of a Nova aggregate.
type AggregateSegment struct {
	ID       int
	Name     string
	Hosts    []string
	Metadata map[string]string
}

// MergeSegments combines the segments file with the aggregates whose
// metadata carries AggregateSegmentKey. The file wins: a segment defined
// in the file takes its recovery method, enabled flag, reserved hosts and
// maintenance flag from the file; aggregates naming it only add hosts (and
// a warning says which of their attributes were ignored). Segments defined
// only by aggregates take their attributes from the aggregates, which must
// agree with each other. Every problem is returned at once; the result is
// meaningful only when there is none.
func MergeSegments(file Segments, aggs []AggregateSegment) (Segments, []Problem, []string) {
	out := Segments{Items: make([]Segment, 0, len(file.Items))}
	for _, s := range file.Items {
		s.Hosts = append([]string(nil), s.Hosts...)
		s.ReservedHosts = append([]string(nil), s.ReservedHosts...)
		out.Items = append(out.Items, s)
	}
	var problems []Problem
	var warnings []string
	fromFile := map[string]bool{}
	for _, s := range file.Items {
		fromFile[s.Name] = true
	}
	sorted := append([]AggregateSegment(nil), aggs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	methodSet := map[string]bool{}
	for _, a := range sorted {
		name := strings.TrimSpace(a.Metadata[AggregateSegmentKey])
		if _, ok := a.Metadata[AggregateSegmentKey]; !ok {
			continue
		}
		src := "aggregate " + a.Name + " (id " + strconv.Itoa(a.ID) + ")"
		where := func(key string) Problem {
			return Problem{File: src, Host: "segment " + name, Key: key}
		}
		if name == "" {
			p := where(AggregateSegmentKey)
			p.Host, p.Reason = "", "is empty: name the segment"
			problems = append(problems, p)
			continue
		}
		attrs, errs := aggregateAttrs(a.Metadata)
		for _, e := range errs {
			p := where(e.Key)
			p.Value, p.Reason, p.Allowed = e.Value, e.Reason, e.Allowed
			problems = append(problems, p)
		}
		if len(errs) > 0 {
			continue
		}
		seg := out.Named(name)
		if fromFile[name] {
			if diff := attrs.differs(seg); diff != "" {
				warnings = append(warnings, src+": segment "+name+" is defined in the segments file, which wins: "+diff+" ignored")
			}
			for _, h := range a.Hosts {
				if !seg.Has(h) {
					seg.Hosts = append(seg.Hosts, h)
				}
			}
			continue
		}
		if seg == nil {
			out.Items = append(out.Items, Segment{Name: name, Enabled: true, Source: src})
			seg = &out.Items[len(out.Items)-1]
		} else if diff := attrs.differs(seg); diff != "" {
			p := where("")
			p.Reason = "disagrees with " + seg.Source + " on " + diff
			problems = append(problems, p)
			continue
		}
		if attrs.methodSet {
			seg.RecoveryMethod = attrs.method
			methodSet[name] = true
		}
		if attrs.enabledSet {
			seg.Enabled = attrs.enabled
		}
		if attrs.maintenance != nil {
			seg.Maintenance = attrs.maintenance
		}
		for _, r := range attrs.reserved {
			if !seg.IsReserved(r) {
				seg.ReservedHosts = append(seg.ReservedHosts, r)
			}
		}
		for _, h := range a.Hosts {
			if !seg.Has(h) {
				seg.Hosts = append(seg.Hosts, h)
			}
		}
	}
	for i := range out.Items {
		s := &out.Items[i]
		if fromFile[s.Name] {
			for _, r := range s.ReservedHosts {
				if !s.Has(r) {
					s.Hosts = append(s.Hosts, r)
				}
			}
			continue
		}
		for _, p := range segmentRules(s, methodSet[s.Name]) {
			p.File = s.Source
			p.Key = aggregateKeyOf(p.Key)
			problems = append(problems, p)
		}
	}
	checkOverlaps(out.Items, func(p Problem) { p.File = "segments"; problems = append(problems, p) })
	return out, problems, warnings
}

func aggregateKeyOf(field string) string {
	switch field {
	case "recovery_method":
		return AggregateMethodKey
	case "reserved_hosts":
		return AggregateReservedKey
	case "hosts":
		return "hosts"
	}
	return field
}

type aggAttrs struct {
	method      string
	methodSet   bool
	enabled     bool
	enabledSet  bool
	maintenance *bool
	reserved    []string
}

// aggregateKeys are the iha_ metadata keys a segment aggregate may carry.
var aggregateKeys = []string{AggregateSegmentKey, AggregateMethodKey, AggregateReservedKey, AggregateEnabledKey, AggregateMaintenanceKey}

func aggregateAttrs(md map[string]string) (aggAttrs, []Problem) {
	var a aggAttrs
	var errs []Problem
	boolOf := func(key, v string) (bool, bool) {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "1", "yes", "on", "enabled":
			return true, true
		case "false", "0", "no", "off", "disabled":
			return false, true
		}
		errs = append(errs, Problem{Key: key, Value: strconv.Quote(v), Reason: "is not a boolean", Allowed: "true/false"})
		return false, false
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := md[k]
		switch k {
		case AggregateSegmentKey:
		case AggregateMethodKey:
			if !validMethod(v) {
				errs = append(errs, Problem{Key: k, Value: strconv.Quote(v), Reason: "is not a recovery method", Allowed: strings.Join(RecoveryMethods, ", ")})
				continue
			}
			a.method, a.methodSet = strings.ToLower(strings.TrimSpace(v)), true
		case AggregateEnabledKey:
			if b, ok := boolOf(k, v); ok {
				a.enabled, a.enabledSet = b, true
			}
		case AggregateMaintenanceKey:
			if b, ok := boolOf(k, v); ok {
				a.maintenance = &b
			}
		case AggregateReservedKey:
			for _, h := range strings.Split(v, ",") {
				if h = strings.TrimSpace(h); h != "" && !containsShort(a.reserved, h) {
					a.reserved = append(a.reserved, h)
				}
			}
		default:
			if strings.HasPrefix(k, "iha_") {
				errs = append(errs, Problem{Key: k, Reason: "unknown segment metadata key" + suggest(k, aggregateKeys), Allowed: strings.Join(aggregateKeys, ", ")})
			}
		}
	}
	return a, errs
}

// differs names the attributes of a that disagree with seg ("" if none).
func (a aggAttrs) differs(seg *Segment) string {
	var d []string
	if a.methodSet && a.method != seg.RecoveryMethod {
		d = append(d, AggregateMethodKey+"="+a.method+" (vs "+seg.RecoveryMethod+")")
	}
	if a.enabledSet && a.enabled != seg.Enabled {
		d = append(d, AggregateEnabledKey+"="+strconv.FormatBool(a.enabled))
	}
	if a.maintenance != nil && (seg.Maintenance == nil || *seg.Maintenance != *a.maintenance) {
		d = append(d, AggregateMaintenanceKey+"="+strconv.FormatBool(*a.maintenance))
	}
	for _, r := range a.reserved {
		if !seg.IsReserved(r) {
			d = append(d, AggregateReservedKey+" "+r)
		}
	}
	return strings.Join(d, ", ")
}

// CheckSegmentHosts reports every host of a segment that is not a
// nova-compute host Nova knows (known holds Nova's host names), naming the
// segment and the host.
func CheckSegmentHosts(s Segments, known []string) []Problem {
	var out []Problem
	for _, seg := range s.Items {
		for _, h := range seg.Hosts {
			if containsShort(known, h) {
				continue
			}
			what := "host"
			if seg.IsReserved(h) {
				what = "reserved host"
			}
			out = append(out, Problem{File: seg.Source, Host: "segment " + seg.Name, Key: what + " " + h,
				Reason: "is not a nova-compute host in Nova", Allowed: "host names of `openstack compute service list --service nova-compute`"})
		}
	}
	return out
}

// loadSegments reads the segments file; a missing file means no segments.
func loadSegments(path string, c *collector) Segments {
	if path == "" {
		return Segments{}
	}
	data, ok := readFile(path, false, "", c)
	if !ok || data == nil {
		return Segments{}
	}
	return parseSegments(path, data, c)
}
