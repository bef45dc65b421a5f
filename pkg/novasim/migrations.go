package novasim

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// migration is one row of Nova's migrations table. Evacuations move
// accepted → pre-migrating (scheduled, at preAt) → done (rebuilt on the
// destination, at doneAt) → completed (when the source compute restarts),
// or → error when the scheduler finds no host. A source that restarts
// mid-evacuation marks the row completed too; the rebuild carries on and
// saves its own next status over it (pre-migrating, then done), as the
// destination's resource tracker does in real Nova.
type migration struct {
	id          int
	uuid        string
	instance    string
	source      string
	sourceNode  string
	dest        string
	status      string
	phase       string // the evacuation's own progress: accepted, pre-migrating, or "" once over
	mtype       string
	created     time.Time
	updated     time.Time
	flavorID    int
	requested   string // target host named in the request; "" = scheduler
	userID      string
	projectID   string
	preAt       time.Time
	doneAt      time.Time
	waitingDest bool // the destination compute is stopped: the rebuild waits for it
	// duplicate: accepted while an earlier evacuation of the same server was
	// in flight. Real Nova (lab FINDINGS.md 5) leaves it "accepted" for good
	// and the server ends in ERROR on the first one's destination.
	duplicate bool
}

func (m *migration) state() MigrationState {
	return MigrationState{ID: m.id, UUID: m.uuid, InstanceUUID: m.instance, SourceCompute: m.source,
		DestCompute: m.dest, Status: m.status, MigrationType: m.mtype, CreatedAt: trunc(m.created).UTC(),
		UpdatedAt: trunc(m.updated).UTC()}
}

// nextEvent is when m changes next; zero when it waits for something else.
func (m *migration) nextEvent() time.Time {
	switch {
	case m.waitingDest:
		return time.Time{}
	case m.phase == "accepted":
		return m.preAt
	case m.phase == "pre-migrating":
		return m.doneAt
	}
	return time.Time{}
}

// advanceLocked applies every timed event due at or before now, in time
// order: evacuation steps and restart cleanups. All simulated time flows
// through here, so state is a pure function of the clock and the calls.
func (s *Sim) advanceLocked(now time.Time) {
	for {
		var (
			at  time.Time
			mig *migration
			cl  *service
		)
		for _, m := range s.pending {
			if t := m.nextEvent(); !t.IsZero() && !t.After(now) && (at.IsZero() || t.Before(at)) {
				at, mig, cl = t, m, nil
			}
		}
		for _, sv := range s.cleanups {
			if t := sv.cleanupAt; !t.After(now) && (at.IsZero() || t.Before(at)) {
				at, mig, cl = t, nil, sv
			}
		}
		switch {
		case mig != nil:
			s.stepMigrationLocked(mig, at)
		case cl != nil:
			s.restartCleanupLocked(cl, at)
		default:
			return
		}
	}
}

func (s *Sim) stepMigrationLocked(m *migration, at time.Time) {
	srv := s.servers[m.instance]
	if srv == nil { // deleted meanwhile
		m.status, m.phase, m.updated = "error", "", at
		s.dropPendingLocked(m)
		return
	}
	switch m.phase {
	case "accepted":
		var dst *service
		if m.requested != "" {
			dst = s.computes[m.requested]
		} else {
			dst = s.pickHostLocked(at, m.source, "")
		}
		if dst == nil {
			// Conductor: NoValidHost → migration error, instance error with
			// task_state None, host unchanged (from Nova's conductor code;
			// to verify against real Nova).
			m.status, m.phase, m.updated = "error", "", at
			srv.taskState, srv.vmState, srv.updated = "", "error", at.UTC()
			srv.fault = &serverFault{code: 500, message: "No valid host was found. ", created: at.UTC()}
			s.dropPendingLocked(m)
			s.log.Info("novasim: evacuation failed: no valid host", "server_id", srv.id, "host", m.source)
			return
		}
		m.status, m.phase, m.dest, m.updated = "pre-migrating", "pre-migrating", dst.host, at
		if !dst.running {
			m.waitingDest = true
		}
	case "pre-migrating":
		dst := s.computes[m.dest]
		if dst == nil || !dst.running {
			m.waitingDest = true
			return
		}
		m.status, m.phase, m.updated = "done", "", at
		srv.host, srv.taskState, srv.updated = m.dest, "", at.UTC()
		if srv.vmState == "error" { // a rebuild makes an ERROR instance ACTIVE
			srv.vmState = "active"
			srv.fault = nil
		}
		dst.guests[srv.id] = struct{}{}
		s.dropPendingLocked(m)
		s.log.Info("novasim: evacuation done", "server_id", srv.id, "host", m.source, "dest", m.dest)
		for _, d := range s.migrations {
			if d.duplicate && d.instance == srv.id && d.status == "accepted" {
				// The second rebuild fails on the destination.
				srv.vmState = "error"
				srv.fault = &serverFault{code: 500, message: "Evacuated twice: the second rebuild failed", created: at.UTC()}
				s.log.Info("novasim: duplicate evacuation left the server in error", "server_id", srv.id, "host", m.dest)
				break
			}
		}
	}
}

func (s *Sim) dropPendingLocked(m *migration) {
	if i := slices.Index(s.pending, m); i >= 0 {
		s.pending = slices.Delete(s.pending, i, i+1)
	}
}

// restartCleanupLocked is one step of nova-compute's init_host after a
// restart. _destroy_evacuated_instances (nova/compute/manager.py) queries
// once the evacuations from this host in status accepted, pre-migrating or
// done, destroys their local guests, then saves each migration
// "completed" in turn: one per RestartCleanupStep here. The last step also
// handles what init_host does next (queued power casts, rebuilds waiting
// for this compute as their destination).
func (s *Sim) restartCleanupLocked(sv *service, at time.Time) {
	if !sv.cleanupStarted {
		sv.cleanupStarted = true
		sv.cleanupQueue = nil
		// Nova keys what it found by instance ({mig.instance_uuid: mig}):
		// of two evacuations of one server only the newest is completed.
		newest := map[string]int{}
		for _, m := range s.migrations {
			if m.mtype == "evacuation" && m.source == sv.host &&
				(m.status == "accepted" || m.status == "pre-migrating" || m.status == "done") {
				if i, ok := newest[m.instance]; ok {
					sv.cleanupQueue[i] = m
					continue
				}
				newest[m.instance] = len(sv.cleanupQueue)
				sv.cleanupQueue = append(sv.cleanupQueue, m)
				delete(sv.guests, m.instance)
			}
		}
	}
	if len(sv.cleanupQueue) > 0 {
		m := sv.cleanupQueue[0]
		sv.cleanupQueue = sv.cleanupQueue[1:]
		if _, ok := s.servers[m.instance]; ok { // Nova skips deleted instances
			m.status, m.updated = "completed", at
			s.log.Info("novasim: evacuation migration completed by the restarted source", "server_id", m.instance, "host", sv.host)
		}
		if len(sv.cleanupQueue) > 0 {
			sv.cleanupAt = at.Add(s.opts.RestartCleanupStep)
			return
		}
	}
	if i := slices.Index(s.cleanups, sv); i >= 0 {
		s.cleanups = slices.Delete(s.cleanups, i, i+1)
	}
	sv.cleanupAt, sv.cleanupStarted = time.Time{}, false
	for id := range sv.guests {
		if srv, ok := s.servers[id]; !ok || srv.host != sv.host {
			delete(sv.guests, id)
		}
	}
	// Casts that waited in the queue are handled now.
	for _, srv := range s.serverOrder {
		if srv.host != sv.host {
			continue
		}
		switch srv.taskState {
		case "powering-off":
			srv.vmState, srv.taskState, srv.updated = "stopped", "", at.UTC()
		case "powering-on":
			srv.vmState, srv.taskState, srv.updated = "active", "", at.UTC()
		}
	}
	// Rebuilds waiting for this compute as their destination resume.
	for _, m := range s.pending {
		if m.waitingDest && m.dest == sv.host {
			m.waitingDest = false
			m.doneAt = at.Add(s.opts.EvacuationDelay / 2)
		}
	}
	s.log.Info("novasim: compute cleaned up after restart", "host", sv.host)
}

// migrationParams259 are the query parameters os-migrations accepts at
// 2.59+ (the schema forbids others, e.g. ?type= → 400).
func migrationParamAllowed(k string, mv int) bool {
	switch k {
	case "hidden", "host", "instance_uuid", "source_compute", "status", "migration_type", "changes-since", "limit", "marker", "cell_name":
		return true
	case "changes-before":
		return mv >= 66
	case "user_id", "project_id":
		return mv >= 80
	}
	return false
}

// parseISOTime parses what oslo's parse_isotime accepts in practice; a
// time without zone is UTC.
func parseISOTime(v string) (time.Time, bool) {
	for _, l := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.Parse(l, v); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// handleMigrations is GET /os-migrations.
func (s *Sim) handleMigrations(c *call) {
	q := c.r.URL.Query()
	if c.mv >= 59 {
		for k := range q {
			if !migrationParamAllowed(k, c.mv) {
				novaError(c.w, 400, "Invalid input for query parameters %s. Value: %s. Additional properties are not allowed ('%s' was unexpected)", k, q.Get(k), k)
				return
			}
		}
	}
	var since, before time.Time
	limit := 1000
	marker := ""
	if c.mv >= 59 {
		if v := q.Get("changes-since"); v != "" {
			t, ok := parseISOTime(v)
			if !ok {
				novaError(c.w, 400, "Invalid input for query parameters changes-since. Value: %s. '%s' is not a 'date-time'", v, v)
				return
			}
			since = t
		}
		if v := q.Get("changes-before"); v != "" && c.mv >= 66 {
			t, ok := parseISOTime(v)
			if !ok {
				novaError(c.w, 400, "Invalid input for query parameters changes-before. Value: %s. '%s' is not a 'date-time'", v, v)
				return
			}
			before = t
		}
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				novaError(c.w, 400, "Invalid input for query parameters limit. Value: %s.", v)
				return
			}
			limit = min(n, 1000)
		}
		marker = q.Get("marker")
	}
	inst, src, status, mtype, host := q.Get("instance_uuid"), q.Get("source_compute"), q.Get("status"), q.Get("migration_type"), q.Get("host")

	s.mu.Lock()
	now := s.now()
	s.advanceLocked(now)
	rows := make([]*migration, 0, len(s.migrations))
	for _, m := range s.migrations {
		if (inst != "" && m.instance != inst) || (src != "" && m.source != src) || (status != "" && m.status != status) ||
			(mtype != "" && m.mtype != mtype) || (host != "" && m.source != host && m.dest != host) {
			continue
		}
		if !since.IsZero() && trunc(m.updated).Before(since) {
			continue
		}
		if !before.IsZero() && trunc(m.updated).After(before) {
			continue
		}
		rows = append(rows, m)
	}
	if c.mv >= 59 { // created_at desc, id desc
		slices.SortStableFunc(rows, func(a, b *migration) int {
			if !a.created.Equal(b.created) {
				return b.created.Compare(a.created)
			}
			return b.id - a.id
		})
	}
	if marker != "" {
		i := slices.IndexFunc(rows, func(m *migration) bool { return m.uuid == marker })
		if i < 0 {
			found := slices.ContainsFunc(s.migrations, func(m *migration) bool { return m.uuid == marker })
			if !found {
				s.mu.Unlock()
				novaError(c.w, 400, "Marker %s could not be found.", marker)
				return
			}
			rows = nil
		} else {
			rows = rows[i+1:]
		}
	}
	full := len(rows) >= limit
	if len(rows) > limit {
		rows = rows[:limit]
	}
	out := make([]map[string]any, 0, len(rows))
	for _, m := range rows {
		out = append(out, s.migrationJSON(m, c.mv))
	}
	s.mu.Unlock()
	resp := map[string]any{"migrations": out}
	if c.mv >= 59 && full && len(rows) > 0 {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("limit", strconv.Itoa(limit))
		nq.Set("marker", rows[len(rows)-1].uuid)
		resp["migrations_links"] = []map[string]string{{"rel": "next", "href": s.ComputeURL() + "/os-migrations?" + nq.Encode()}}
	}
	writeJSON(c.w, http.StatusOK, resp)
}

func (s *Sim) migrationJSON(m *migration, mv int) map[string]any {
	out := map[string]any{
		"id": m.id, "instance_uuid": m.instance, "status": m.status,
		"source_compute": m.source, "source_node": m.sourceNode,
		"dest_compute": nullable(m.dest), "dest_node": nullable(m.dest), "dest_host": nil,
		"old_instance_type_id": m.flavorID, "new_instance_type_id": m.flavorID,
		"created_at": trunc(m.created).UTC().Format(novaDBTime), "updated_at": trunc(m.updated).UTC().Format(novaDBTime),
	}
	if m.dest != "" {
		out["dest_host"] = "127.0.0.1"
	}
	if mv >= 23 {
		out["migration_type"] = m.mtype
	}
	if mv >= 59 {
		out["uuid"] = m.uuid
	}
	if mv >= 80 {
		out["user_id"] = m.userID
		out["project_id"] = m.projectID
	}
	return out
}
