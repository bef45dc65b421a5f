package novasim

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// service is one row of Nova's services table. Its heartbeat is not a
// goroutine: while running, the process reports at hbStart + k×ReportInterval
// (k ≥ 0), and every read computes the latest report from the clock.
// Times are Unix nanoseconds or seconds: the list of 1,000 computes reads
// them on every poll.
type service struct {
	intID          int
	uuid           string
	host           string
	binary         string
	zone           string
	disabled       bool
	disabledReason string
	forcedDown     bool

	running      bool
	hbStart      int64 // ns: first report of the current run (may lie in the future after a restart)
	lastHB       int64 // ns: last report of earlier runs; 0 = never
	adminUpdated int64 // s: last admin update of the row; 0 = never
	createdAt    int64 // s

	cleanupAt time.Time // next step of a pending restart cleanup; zero = none
	// cleanupQueue holds the evacuations the restart cleanup found when it
	// started (real Nova queries them once) and has not yet completed.
	cleanupQueue   []*migration
	cleanupStarted bool
	guests         map[string]struct{} // instances the hypervisor holds (computes only)

	prefix []byte // `"binary":…,"host":…,"zone":…,` for the list fast path
	// updated_at as last formatted: it changes once per report interval,
	// so the list rarely formats a time.
	updSec int64
	updFmt []byte
}

func floorSec(ns int64) int64 {
	if ns >= 0 {
		return ns / 1e9
	}
	return (ns - 1e9 + 1) / 1e9
}

func secTime(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

// lastHeartbeat is the time (ns) of the latest report at or before now; 0 = none.
func (sv *service) lastHeartbeat(now, ri int64) int64 {
	if sv.running && now >= sv.hbStart {
		return sv.hbStart + (now-sv.hbStart)/ri*ri
	}
	return sv.lastHB
}

func (sv *service) stop(now time.Time, ri time.Duration) {
	sv.lastHB = sv.lastHeartbeat(now.UnixNano(), int64(ri))
	sv.running = false
}

func (sv *service) start(now time.Time, ri, delay time.Duration) {
	if sv.running {
		sv.stop(now, ri)
	}
	sv.running = true
	sv.hbStart = now.Add(delay).UnixNano()
}

// lastSeenUpSec is Nova's last_seen_up column: the last report in whole
// seconds; 0 = never.
func (sv *service) lastSeenUpSec(now, ri int64) int64 {
	hb := sv.lastHeartbeat(now, ri)
	if hb == 0 {
		return 0
	}
	return floorSec(hb)
}

// updatedAtSec is Nova's updated_at column: bumped by every report and by
// every admin update of the row, whole seconds.
func (sv *service) updatedAtSec(now, ri int64) int64 {
	return max(sv.lastSeenUpSec(now, ri), sv.adminUpdated)
}

// isUpNs is nova.servicegroup.drivers.db.DbDriver.is_up.
func (sv *service) isUpNs(now, ri, downTime int64) bool {
	if sv.forcedDown {
		return false
	}
	last := sv.lastSeenUpSec(now, ri)
	if last == 0 {
		last = sv.createdAt
	}
	elapsed := now - last*1e9
	if elapsed < 0 {
		elapsed = -elapsed
	}
	return elapsed <= downTime
}

func (sv *service) isUp(now time.Time, ri, downTime time.Duration) bool {
	return sv.isUpNs(now.UnixNano(), int64(ri), int64(downTime))
}

func (sv *service) lastSeenUp(now time.Time, ri time.Duration) time.Time {
	return secTime(sv.lastSeenUpSec(now.UnixNano(), int64(ri)))
}

func (sv *service) updatedAt(now time.Time, ri time.Duration) time.Time {
	return secTime(sv.updatedAtSec(now.UnixNano(), int64(ri)))
}

func (sv *service) status() string {
	if sv.disabled {
		return "disabled"
	}
	return "enabled"
}

// appendStatic renders the fields that never change.
func (sv *service) appendStatic(b []byte) []byte {
	b = append(b, `{"binary":`...)
	b = appendJSONString(b, sv.binary)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, sv.host)
	b = append(b, `,"zone":`...)
	b = appendJSONString(b, sv.zone)
	return b
}

// appendServiceJSON renders the service as os-services shows it at
// microversion mv. Call with s.mu held (it caches into sv).
func (s *Sim) appendServiceJSON(b []byte, sv *service, now time.Time, mv int) []byte {
	b = append(b, sv.prefix...)
	b = append(b, `,"id":`...)
	if mv >= 53 {
		b = append(b, '"')
		b = append(b, sv.uuid...)
		b = append(b, '"')
	} else {
		b = strconv.AppendInt(b, int64(sv.intID), 10)
	}
	if sv.disabled {
		b = append(b, `,"status":"disabled"`...)
	} else {
		b = append(b, `,"status":"enabled"`...)
	}
	nowNs, ri := now.UnixNano(), int64(s.opts.ReportInterval)
	if sv.isUpNs(nowNs, ri, int64(s.opts.ServiceDownTime)) {
		b = append(b, `,"state":"up"`...)
	} else {
		b = append(b, `,"state":"down"`...)
	}
	b = append(b, `,"updated_at":`...)
	if sec := sv.updatedAtSec(nowNs, ri); sec == 0 {
		b = append(b, "null"...)
	} else {
		if sv.updFmt == nil || sec != sv.updSec {
			sv.updSec = sec
			sv.updFmt = secTime(sec).AppendFormat(append(sv.updFmt[:0], '"'), novaDBTime)
			sv.updFmt = append(sv.updFmt, '"')
		}
		b = append(b, sv.updFmt...)
	}
	b = append(b, `,"disabled_reason":`...)
	if sv.disabledReason == "" {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, sv.disabledReason)
	}
	if mv >= 11 {
		if sv.forcedDown {
			b = append(b, `,"forced_down":true`...)
		} else {
			b = append(b, `,"forced_down":false`...)
		}
	}
	return append(b, '}')
}

func (s *Sim) serviceStateLocked(sv *service, now time.Time) ServiceState {
	st := ServiceState{
		ID: sv.uuid, IntID: sv.intID, Host: sv.host, Binary: sv.binary, Zone: sv.zone,
		Status: sv.status(), State: "down", ForcedDown: sv.forcedDown, DisabledReason: sv.disabledReason,
		UpdatedAt: sv.updatedAt(now, s.opts.ReportInterval), LastSeenUp: sv.lastSeenUp(now, s.opts.ReportInterval),
		Running: sv.running,
	}
	if sv.isUp(now, s.opts.ReportInterval, s.opts.ServiceDownTime) {
		st.State = "up"
	}
	return st
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// handleServicesList is GET /os-services[?binary=][&host=].
func (s *Sim) handleServicesList(c *call) {
	q := c.r.URL.Query()
	binary, host := q.Get("binary"), q.Get("host")
	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], `{"services":[`...)
	s.mu.Lock()
	now := s.now()
	first := true
	for _, sv := range s.services {
		if (binary != "" && sv.binary != binary) || (host != "" && sv.host != host) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = s.appendServiceJSON(b, sv, now, c.mv)
	}
	s.mu.Unlock()
	b = append(b, "]}"...)
	writeRaw(c.w, http.StatusOK, b)
	*bp = b
	bufPool.Put(bp)
}

// doneEvacuationsFromLocked reports whether "done" evacuation migrations
// still name host as their source.
func (s *Sim) doneEvacuationsFromLocked(host string) bool {
	for _, m := range s.migrations {
		if m.mtype == "evacuation" && m.status == "done" && m.source == host {
			return true
		}
	}
	return false
}

// errDoneMigrations is the message Nova gives when forced_down is unset
// too early (docs/real-peers.md: "`done` evacuation migration records remain
// associated with the host").
const errDoneMigrations = "Unable to unset forced_down on the compute service of %s: `done` evacuation migration records remain associated with the host. Restart its nova-compute service so that it cleans up the evacuated instances."

// handleServiceUpdate is PUT /os-services/{id}: at ≥ 2.53 {id} is the
// service UUID; below it is the action enable, disable,
// disable-log-reason or force-down (2.11) with host and binary in the body.
func (s *Sim) handleServiceUpdate(c *call) {
	if c.mv >= 53 {
		s.serviceUpdate253(c)
		return
	}
	s.serviceUpdateLegacy(c)
}

func (s *Sim) serviceUpdate253(c *call) {
	id := c.param
	if !isUUIDLike(id) {
		novaError(c.w, 400, "Invalid uuid %s", id)
		return
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(c.body, &body); err != nil || body == nil {
		novaError(c.w, 400, "Invalid input for update: body must be a JSON object")
		return
	}
	var (
		status, reason       string
		hasStatus, hasReason bool
		forced, hasForced    bool
	)
	for k, raw := range body {
		switch k {
		case "status":
			if json.Unmarshal(raw, &status) != nil || (status != "enabled" && status != "disabled") {
				novaError(c.w, 400, "Invalid input for field/attribute status. Value: %s. %s is not one of ['enabled', 'disabled']", raw, raw)
				return
			}
			hasStatus = true
		case "disabled_reason":
			if json.Unmarshal(raw, &reason) != nil || len(reason) < 1 || len(reason) > 255 {
				novaError(c.w, 400, "Invalid input for field/attribute disabled_reason. Value: %s.", raw)
				return
			}
			hasReason = true
		case "forced_down":
			var v any
			_ = json.Unmarshal(raw, &v)
			var ok bool
			if forced, ok = parseBoolValue(v); !ok {
				novaError(c.w, 400, "Invalid input for field/attribute forced_down. Value: %s. %s is not of type 'boolean', 'string'", raw, raw)
				return
			}
			hasForced = true
		default:
			novaError(c.w, 400, "Invalid input for field/attribute service. Value: %s. Additional properties are not allowed ('%s' was unexpected)", c.body, k)
			return
		}
	}
	s.mu.Lock()
	now := s.now()
	s.advanceLocked(now)
	var sv *service
	for _, x := range s.services {
		if x.uuid == id {
			sv = x
			break
		}
	}
	if sv == nil {
		s.mu.Unlock()
		novaError(c.w, 404, "Service %s could not be found.", id)
		return
	}
	if sv.binary != "nova-compute" {
		s.mu.Unlock()
		novaError(c.w, 400, "Updating a %s service is not supported. Only nova-compute services can be updated.", sv.binary)
		return
	}
	if hasReason && (!hasStatus || status != "disabled") {
		s.mu.Unlock()
		novaError(c.w, 400, "Specifying 'disabled_reason' with status other than 'disabled' is not supported.")
		return
	}
	if !hasStatus && !hasForced {
		s.mu.Unlock()
		novaError(c.w, 400, "No updates were requested. Fields 'status' or 'forced_down' should be specified.")
		return
	}
	if hasForced && !forced && s.doneEvacuationsFromLocked(sv.host) {
		s.mu.Unlock()
		novaError(c.w, 400, errDoneMigrations, sv.host)
		return
	}
	changed := false
	if hasStatus {
		if status == "disabled" {
			changed = changed || !sv.disabled || sv.disabledReason != reason
			sv.disabled, sv.disabledReason = true, reason
		} else {
			changed = changed || sv.disabled || sv.disabledReason != ""
			sv.disabled, sv.disabledReason = false, ""
		}
	}
	if hasForced {
		changed = changed || sv.forcedDown != forced
		sv.forcedDown = forced
	}
	if changed {
		sv.adminUpdated = now.Unix()
	}
	b := append([]byte(`{"service":`), s.appendServiceJSON(nil, sv, now, c.mv)...)
	s.mu.Unlock()
	s.log.Info("novasim: service updated", "host", sv.host, "status", status, "forced_down", forced)
	writeRaw(c.w, 200, append(b, '}'))
}

func (s *Sim) serviceUpdateLegacy(c *call) {
	action := c.param
	switch action {
	case "enable", "disable", "disable-log-reason":
	case "force-down":
		if c.mv < 11 {
			novaError(c.w, 404, "Unknown action")
			return
		}
	default:
		novaError(c.w, 404, "Unknown action")
		return
	}
	var body struct {
		Host           *string `json:"host"`
		Binary         *string `json:"binary"`
		DisabledReason *string `json:"disabled_reason"`
		ForcedDown     any     `json:"forced_down"`
	}
	if err := json.Unmarshal(c.body, &body); err != nil || body.Host == nil || body.Binary == nil {
		novaError(c.w, 400, "Invalid input for field/attribute service: 'host' and 'binary' are required")
		return
	}
	var forced bool
	switch action {
	case "disable-log-reason":
		if body.DisabledReason == nil || *body.DisabledReason == "" || len(*body.DisabledReason) > 255 {
			novaError(c.w, 400, "Missing disabled reason field")
			return
		}
	case "force-down":
		var ok bool
		if forced, ok = parseBoolValue(body.ForcedDown); !ok {
			novaError(c.w, 400, "Invalid input for field/attribute forced_down.")
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advanceLocked(now)
	var sv *service
	for _, x := range s.services {
		if x.host == *body.Host && x.binary == *body.Binary {
			sv = x
			break
		}
	}
	if sv == nil {
		novaError(c.w, 404, "Service %s on host %s could not be found.", *body.Binary, *body.Host)
		return
	}
	out := map[string]any{"host": sv.host, "binary": sv.binary}
	changed := false
	switch action {
	case "enable":
		changed = sv.disabled || sv.disabledReason != ""
		sv.disabled, sv.disabledReason = false, ""
		out["status"] = "enabled"
	case "disable":
		changed = !sv.disabled
		sv.disabled = true
		out["status"] = "disabled"
	case "disable-log-reason":
		changed = !sv.disabled || sv.disabledReason != *body.DisabledReason
		sv.disabled, sv.disabledReason = true, *body.DisabledReason
		out["status"] = "disabled"
		out["disabled_reason"] = sv.disabledReason
	case "force-down":
		if !forced && s.doneEvacuationsFromLocked(sv.host) {
			novaError(c.w, 400, errDoneMigrations, sv.host)
			return
		}
		changed = sv.forcedDown != forced
		sv.forcedDown = forced
		out["forced_down"] = forced
	}
	if changed {
		sv.adminUpdated = now.Unix()
	}
	writeJSON(c.w, 200, map[string]any{"service": out})
}
