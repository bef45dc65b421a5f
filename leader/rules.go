package leader

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// InstanceHA's marker strings (behaviour R8.3), written into Nova's
// disabled_reason and server locks exactly as upstream writes them, so that
// runbooks, dashboards and a later InstanceHA or IHA read them the same way.
const (
	MarkerPrefix          = "instanceha evacuation"
	MarkerComplete        = "instanceha evacuation complete"
	MarkerFailed          = "instanceha evacuation FAILED"
	MarkerKdumpSuffix     = " (kdump)"
	MarkerRecoveredSuffix = " (recovered)"
	LockReason            = "instanceha-evacuation"
	ReservedReturnPrefix  = "instanceha-reserved"
	ReservedMarker        = "reserved"
)

// pyISOFormat is Python's datetime.now(timezone.utc).isoformat().
const pyISOFormat = "2006-01-02T15:04:05.000000+00:00"

// Marker formats "<prefix><suffix>: <ISO-8601 UTC>".
func Marker(prefix, suffix string, at time.Time) string {
	return prefix + suffix + ": " + at.UTC().Format(pyISOFormat)
}

// IsStale is R3.5: updated_at strictly earlier than now − DELTA. A missing
// updated_at is never stale.
func IsStale(s nova.Service, now time.Time, delta time.Duration) bool {
	return !s.UpdatedAt.IsZero() && s.UpdatedAt.Before(now.Add(-delta))
}

func disabled(s nova.Service) bool { return strings.Contains(s.Status, "disabled") }
func enabled(s nova.Service) bool  { return strings.Contains(s.Status, "enabled") }

// IsNewFailure is R3.6: not disabled, not forced down, and down or stale.
func IsNewFailure(s nova.Service, now time.Time, delta time.Duration) bool {
	if disabled(s) || s.ForcedDown {
		return false
	}
	return s.State == "down" || IsStale(s, now, delta)
}

// IsResumeCandidate is R3.7: forced down, down, disabled with an
// in-progress marker (plain, kdump or recovered form).
func IsResumeCandidate(s nova.Service) bool {
	r := s.DisabledReason
	return s.ForcedDown && s.State == "down" && disabled(s) &&
		strings.Contains(r, MarkerPrefix) && !strings.Contains(r, MarkerFailed) && !strings.Contains(r, MarkerComplete)
}

// IsReenableCandidate is R3.8: enabled and forced down, or disabled with the
// complete marker; and not a resume candidate.
func IsReenableCandidate(s nova.Service) bool {
	if IsResumeCandidate(s) {
		return false
	}
	return (enabled(s) && s.ForcedDown) || (disabled(s) && strings.Contains(s.DisabledReason, MarkerComplete))
}

// Categories is the result of categorising compute services (R3.6–R3.10).
type Categories struct {
	NewFailures []nova.Service
	Resume      []nova.Service
	Reenable    []nova.Service
}

// Categorize sorts services into InstanceHA's three categories. Services
// with missing attributes (down-cell records) fall in none (R3.10).
func Categorize(services []nova.Service, now time.Time, delta time.Duration) Categories {
	var c Categories
	for _, s := range services {
		switch {
		case IsNewFailure(s, now, delta):
			c.NewFailures = append(c.NewFailures, s)
		case IsResumeCandidate(s):
			c.Resume = append(c.Resume, s)
		case IsReenableCandidate(s):
			c.Reenable = append(c.Reenable, s)
		}
	}
	return c
}

// activeServices are the services neither disabled nor forced down (G4).
func activeServices(services []nova.Service) int {
	n := 0
	for _, s := range services {
		if !disabled(s) && !s.ForcedDown {
			n++
		}
	}
	return n
}

// AllServicesStale is G4: with at least three active services, every one of
// them a candidate means Nova (or our view of it) is broken, not the hosts.
func AllServicesStale(services []nova.Service, candidates int) bool {
	active := activeServices(services)
	return candidates > 0 && active >= 3 && candidates >= active
}

// ThresholdPercent is R5.2/R5.3: the share of computes down or forced down,
// together with the new candidates, among all computes (or, with tagged
// aggregates, among the hosts of tagged aggregates). evacuableHosts nil
// means no aggregate scoping.
func ThresholdPercent(services []nova.Service, candidates []nova.Service, evacuableHosts map[string]bool) float64 {
	inScope := func(h string) bool { return evacuableHosts == nil || evacuableHosts[h] }
	down := map[string]bool{}
	total := 0
	for _, s := range services {
		if !inScope(s.Host) {
			continue
		}
		total++
		if downInNova(s) {
			down[s.Host] = true
		}
	}
	for _, s := range candidates {
		if inScope(s.Host) {
			down[s.Host] = true
		}
	}
	if total == 0 {
		return 0
	}
	return float64(len(down)) * 100 / float64(total)
}

// downInNova is what THRESHOLD counts of Nova's own view: a service down or
// forced down.
func downInNova(s nova.Service) bool { return s.State == "down" || s.ForcedDown }

// MeshFailing returns the services of the hosts whose agent the gossip mesh
// suspects or has declared dead, and that Nova has not heard from since nor
// counts down yet: failures on their way to a verdict that only the mesh
// sees. THRESHOLD counts them with the candidates. The mesh declares hosts that fail together dead seconds
// apart (each is probed at its own moment, each suspicion times out on its
// own), so without them the first of two computes that lose power at once
// is judged alone, found under the threshold, and fenced before the second
// is seen (lab FINDINGS 6). A host that left gracefully, or that Nova heard
// after the mesh lost it (cut off from the mesh, not dead; Nova's times
// read skew later, see novaClock), is not counted.
func MeshFailing(snap MeshSnapshot, services []nova.Service, skew time.Duration) []nova.Service {
	var out []nova.Service
	for _, s := range services {
		m, ok := snap[s.Host]
		if !ok || (m.State != MeshSuspect && m.State != MeshDead) || heardSince(s, m.Since, skew) || downInNova(s) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// ThresholdExceeded is R5.4: strict greater-than.
func ThresholdExceeded(percent float64, threshold int) bool { return percent > float64(threshold) }

// MaxFailuresKey is the per-aggregate limit's metadata key (R5.6).
const MaxFailuresKey = "instanceha:max_failures"

// AggregateLimited is R5.6–R5.8: for each tagged aggregate with
// instanceha:max_failures, if the new candidates in it plus the hosts
// already in recovery in it exceed the limit, all its new candidates are
// blocked. It returns blocked host → aggregate name.
func AggregateLimited(aggs []nova.Aggregate, tag string, candidates []nova.Service, inflight []string) map[string]string {
	blocked := map[string]string{}
	cand := map[string]bool{}
	for _, c := range candidates {
		cand[c.Host] = true
	}
	inflightShort := map[string]bool{}
	for _, h := range inflight {
		if !cand[h] {
			inflightShort[config.ShortName(h)] = true
		}
	}
	for _, a := range aggs {
		if !TagInMap(a.Metadata, tag) {
			continue
		}
		raw, ok := a.Metadata[MaxFailuresKey]
		if !ok {
			continue
		}
		limit, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil || limit < 0 {
			continue
		}
		impacted := 0
		var mine []string
		for _, h := range a.Hosts {
			if cand[h] {
				impacted++
				mine = append(mine, h)
			}
			if inflightShort[config.ShortName(h)] {
				impacted++
			}
		}
		if impacted > limit {
			for _, h := range mine {
				if _, ok := blocked[h]; !ok {
					blocked[h] = a.Name
				}
			}
		}
	}
	return blocked
}

// SchedulerUp is G10: fail-open on a query error or an empty list,
// fail-closed when schedulers exist and none is up.
func SchedulerUp(schedulers []nova.Service, err error) bool {
	if err != nil || len(schedulers) == 0 {
		return true
	}
	for _, s := range schedulers {
		if s.State == "up" {
			return true
		}
	}
	return false
}

// EvacuableStatuses is R6.11 (REBUILD only when resuming, PR #638).
func evacuableStatus(status string, resuming bool) bool {
	switch status {
	case "ACTIVE", "ERROR", "SHUTOFF":
		return true
	case "REBUILD":
		return resuming
	}
	return false
}

// fnmatch compiles Python fnmatch globs (*, ?, [seq], [!seq]).
func fnmatch(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			j := strings.IndexByte(pattern[i+1:], ']')
			if j < 0 {
				b.WriteString(`\[`)
				continue
			}
			set := pattern[i+1 : i+1+j]
			if set == "" {
				b.WriteString(`\[`)
				continue
			}
			if set[0] == '!' {
				set = "^" + set[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(set, `\`, `\\`) + "]")
			i += j + 1
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile("(?s)" + b.String())
	if err != nil {
		return regexp.MustCompile(`^\b$`) // matches nothing
	}
	return re
}

// NameSkipped is R6.12. Servers without a name are never skipped.
func NameSkipped(name string, globs []string) bool {
	if name == "" {
		return false
	}
	for _, g := range globs {
		if fnmatch(g).MatchString(name) {
			return true
		}
	}
	return false
}

// RestartPriority and RestartGroup are the orchestrated-restart metadata
// keys (R10.10).
const (
	RestartPriorityKey = "instanceha:restart_priority"
	RestartGroupKey    = "instanceha:restart_group"
)

// restartPriority is R10.10: default 500, clamped 1–1000, invalid → 500.
func restartPriority(md map[string]string) int {
	v, ok := md[RestartPriorityKey]
	if !ok {
		return 500
	}
	p, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 500
	}
	return min(max(p, 1), 1000)
}

// phases groups servers into orchestrated phases (R10.10): each group is a
// phase whose priority is the max of its members, each ungrouped server its
// own phase; phases sorted by priority, highest first (stable by name).
func phases(servers []*ServerRecord) [][]*ServerRecord {
	type ph struct {
		key  string
		prio int
		srv  []*ServerRecord
	}
	byGroup := map[string]*ph{}
	var list []*ph
	for _, s := range servers {
		if s.Group != "" {
			p := byGroup[s.Group]
			if p == nil {
				p = &ph{key: "g:" + s.Group}
				byGroup[s.Group] = p
				list = append(list, p)
			}
			p.srv = append(p.srv, s)
			p.prio = max(p.prio, s.Priority)
			continue
		}
		list = append(list, &ph{key: "s:" + s.Name + s.ID, prio: s.Priority, srv: []*ServerRecord{s}})
	}
	sort.SliceStable(list, func(i, j int) bool {
		if list[i].prio != list[j].prio {
			return list[i].prio > list[j].prio
		}
		return list[i].key < list[j].key
	})
	out := make([][]*ServerRecord, len(list))
	for i, p := range list {
		out[i] = p.srv
	}
	return out
}
