package leader

import (
	"sort"
	"strings"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// HAEnabled is Masakari's per-server opt-in test: the metadata key holds a
// true value as oslo's bool_from_string reads it (true, yes, on, 1, y, t;
// case-insensitive). An empty key opts nobody in.
func HAEnabled(md map[string]string, key string) bool {
	if key == "" {
		return false
	}
	v, ok := md[key]
	if !ok {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "yes", "on", "1", "y", "t":
		return true
	}
	return false
}

// selectFor plans a host's servers: InstanceHA's rule (SelectServers) for
// a host in no segment, the combined rule (SelectSegmentServers) for a host
// of a failover segment.
func (ix TagIndex) selectFor(s Policy, seg *config.Segment, host string, servers []nova.Server, resuming bool) []*ServerRecord {
	if seg == nil {
		return ix.SelectServers(s, host, servers, resuming)
	}
	return ix.SelectSegmentServers(s, host, servers, resuming)
}

// SelectSegmentServers is the rule for a host of a failover segment: a
// server is evacuated when its status is evacuated (R6.11) and its name is
// not skipped (R6.12), and
//
//   - it is not ERROR while IGNORE_INSTANCES_IN_ERROR_STATE is set, and
//   - it opted in (HA_ENABLED_INSTANCE_KEY true), or EVACUATE_ALL_INSTANCES
//     is set and InstanceHA's image/flavor tags let it go (R6.5, fail-open
//     when nothing is tagged).
//
// Opted-in servers come first in the plan (they are evacuated first); the
// others keep their order after them.
func (ix TagIndex) SelectSegmentServers(s Policy, host string, servers []nova.Server, resuming bool) []*ServerRecord {
	out := make([]*ServerRecord, 0, len(servers))
	for _, srv := range servers {
		r := &ServerRecord{ID: srv.ID, Name: srv.Name, OrigStatus: srv.Status, From: host, State: ServerPending,
			Priority: restartPriority(srv.Metadata), Group: strings.TrimSpace(srv.Metadata[RestartGroupKey]),
			HAEnabled: HAEnabled(srv.Metadata, s.HAEnabledInstanceKey)}
		switch {
		case !evacuableStatus(srv.Status, resuming):
			r.State, r.Error = ServerSkipped, "status "+srv.Status+" is not evacuated"
		case NameSkipped(srv.Name, s.SkipServersWithName):
			r.State, r.Error = ServerSkipped, "name matches SKIP_SERVERS_WITH_NAME"
		case s.IgnoreInstancesInErrorState && strings.EqualFold(srv.Status, "ERROR"):
			r.State, r.Error = ServerSkipped, "status ERROR and IGNORE_INSTANCES_IN_ERROR_STATE is true"
		case r.HAEnabled:
		case !s.EvacuateAllInstances:
			r.State, r.Error = ServerSkipped, "not opted in with "+s.HAEnabledInstanceKey+" and EVACUATE_ALL_INSTANCES is false"
		case !ix.ServerEvacuable(s, srv):
			r.State, r.Error = ServerSkipped, "not opted in with "+s.HAEnabledInstanceKey+", and image and flavor not tagged "+ix.Tag
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].HAEnabled && !out[j].HAEnabled })
	return out
}
