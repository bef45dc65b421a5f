package novasim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// server is one instance row.
type server struct {
	id, name     string
	host         string // "" when never scheduled (NoValidHost at boot)
	az           string
	vmState      string
	taskState    string // "" = null
	tenantID     string
	userID       string
	imageID      string // "" = boot from volume
	flavor       flavorSnap
	metadata     map[string]string
	locked       bool
	lockedReason string
	created      time.Time
	updated      time.Time
	launched     time.Time
	fault        *serverFault
}

type serverFault struct {
	code    int
	message string
	created time.Time
}

// flavorSnap is the flavor copy an instance keeps (what 2.47 embeds).
type flavorSnap struct {
	id, name                          string
	intID                             int
	vcpus, ram, disk, ephemeral, swap int
	extraSpecs                        map[string]string
}

func vmStateForStatus(status string) (string, bool) {
	switch strings.ToUpper(status) {
	case "", "ACTIVE":
		return "active", true
	case "SHUTOFF":
		return "stopped", true
	case "ERROR":
		return "error", true
	case "PAUSED":
		return "paused", true
	case "SUSPENDED":
		return "suspended", true
	case "SHELVED":
		return "shelved", true
	case "SHELVED_OFFLOADED":
		return "shelved_offloaded", true
	case "RESCUE":
		return "rescued", true
	case "BUILD":
		return "building", true
	}
	return "", false
}

func isRebuilding(task string) bool {
	return task == "rebuilding" || task == "rebuild_block_device_mapping" || task == "rebuild_spawning"
}

// apiStatus is nova.api.openstack.common.status_from_state for the states
// the simulator produces.
func apiStatus(vm, task string) string {
	switch vm {
	case "active":
		switch {
		case isRebuilding(task):
			return "REBUILD"
		case task == "migrating":
			return "MIGRATING"
		}
		return "ACTIVE"
	case "stopped":
		if isRebuilding(task) {
			return "REBUILD"
		}
		return "SHUTOFF"
	case "error":
		if isRebuilding(task) {
			return "REBUILD"
		}
		return "ERROR"
	case "building":
		return "BUILD"
	case "paused":
		return "PAUSED"
	case "suspended":
		return "SUSPENDED"
	case "shelved":
		return "SHELVED"
	case "shelved_offloaded":
		return "SHELVED_OFFLOADED"
	case "rescued":
		return "RESCUE"
	}
	return "UNKNOWN"
}

func powerState(vm string) int {
	switch vm {
	case "active", "rescued":
		return 1
	case "paused":
		return 3
	case "stopped":
		return 4
	case "suspended":
		return 7
	}
	return 0
}

func (srv *server) state() ServerState {
	return ServerState{
		ID: srv.id, Name: srv.name, Status: apiStatus(srv.vmState, srv.taskState), VMState: srv.vmState,
		TaskState: srv.taskState, Host: srv.host, TenantID: srv.tenantID, ImageID: srv.imageID,
		FlavorID: srv.flavor.id, Metadata: copyMap(srv.metadata), Locked: srv.locked,
		LockedReason: srv.lockedReason, Created: srv.created, Updated: srv.updated,
	}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// serverJSONLocked renders a server as GET /servers/{id} shows it at mv.
func (s *Sim) serverJSONLocked(srv *server, mv int, now time.Time) map[string]any {
	self := s.ComputeURL() + "/" + srv.tenantID + "/servers/" + srv.id
	hostID := ""
	if srv.host != "" {
		h := sha256.Sum224([]byte(srv.tenantID + srv.host))
		hostID = hex.EncodeToString(h[:])
	}
	var img any = ""
	if srv.imageID != "" {
		img = map[string]any{"id": srv.imageID, "links": []map[string]string{{"rel": "bookmark", "href": s.base + "/compute/images/" + srv.imageID}}}
	}
	var fl any
	if mv >= 47 {
		fl = map[string]any{"original_name": srv.flavor.name, "vcpus": srv.flavor.vcpus, "ram": srv.flavor.ram,
			"disk": srv.flavor.disk, "ephemeral": srv.flavor.ephemeral, "swap": srv.flavor.swap,
			"extra_specs": copyMap(srv.flavor.extraSpecs)}
	} else {
		fl = map[string]any{"id": srv.flavor.id, "links": []map[string]string{{"rel": "bookmark", "href": s.base + "/compute/flavors/" + srv.flavor.id}}}
	}
	instanceName := "instance-" + srv.id[:8]
	m := map[string]any{
		"id": srv.id, "name": srv.name, "status": apiStatus(srv.vmState, srv.taskState),
		"tenant_id": srv.tenantID, "user_id": srv.userID, "metadata": copyMap(srv.metadata),
		"hostId": hostID, "image": img, "flavor": fl,
		"created": srv.created.UTC().Format(isoZ), "updated": srv.updated.UTC().Format(isoZ),
		"addresses": map[string]any{}, "accessIPv4": "", "accessIPv6": "",
		"links":             []map[string]string{{"rel": "self", "href": self}, {"rel": "bookmark", "href": self}},
		"OS-DCF:diskConfig": "MANUAL", "progress": 0, "config_drive": "", "key_name": nil,
		"OS-EXT-AZ:availability_zone":          srv.az,
		"OS-SRV-USG:launched_at":               srv.launched.UTC().Format(novaDBTime),
		"OS-SRV-USG:terminated_at":             nil,
		"OS-EXT-SRV-ATTR:host":                 nullable(srv.host),
		"OS-EXT-SRV-ATTR:hypervisor_hostname":  nullable(srv.host),
		"OS-EXT-SRV-ATTR:instance_name":        instanceName,
		"OS-EXT-STS:task_state":                nullable(srv.taskState),
		"OS-EXT-STS:vm_state":                  srv.vmState,
		"OS-EXT-STS:power_state":               powerState(srv.vmState),
		"os-extended-volumes:volumes_attached": []any{},
	}
	if mv >= 3 {
		m["OS-EXT-SRV-ATTR:reservation_id"] = "r-" + srv.id[:8]
		m["OS-EXT-SRV-ATTR:launch_index"] = 0
		m["OS-EXT-SRV-ATTR:hostname"] = srv.name
		m["OS-EXT-SRV-ATTR:kernel_id"] = ""
		m["OS-EXT-SRV-ATTR:ramdisk_id"] = ""
		m["OS-EXT-SRV-ATTR:root_device_name"] = "/dev/vda"
		m["OS-EXT-SRV-ATTR:user_data"] = nil
	}
	if mv >= 9 {
		m["locked"] = srv.locked
	}
	if mv >= 16 {
		m["host_status"] = s.hostStatusLocked(srv.host, now)
	}
	if mv >= 19 {
		m["description"] = nil
	}
	if mv >= 26 {
		m["tags"] = []string{}
	}
	if mv >= 63 {
		m["trusted_image_certificates"] = nil
	}
	if mv >= 71 {
		m["server_groups"] = []string{}
	}
	if mv >= 73 {
		m["locked_reason"] = nullable(srv.lockedReason)
	}
	if srv.fault != nil && (srv.vmState == "error" || srv.vmState == "deleted") {
		m["fault"] = map[string]any{"code": srv.fault.code, "message": srv.fault.message,
			"created": srv.fault.created.UTC().Format(isoZ)}
	}
	return m
}

// hostStatusLocked is Nova's host_status (2.16): UP, DOWN, MAINTENANCE or UNKNOWN.
func (s *Sim) hostStatusLocked(host string, now time.Time) string {
	if host == "" {
		return ""
	}
	sv, ok := s.computes[host]
	if !ok {
		return "UNKNOWN"
	}
	if !sv.isUp(now, s.opts.ReportInterval, s.opts.ServiceDownTime) {
		return "DOWN"
	}
	if sv.disabled {
		return "MAINTENANCE"
	}
	return "UP"
}

func serverNotFound(w http.ResponseWriter, id string) {
	novaError(w, 404, "Instance %s could not be found.", id)
}

// handleServersList is GET /servers and /servers/detail.
func (s *Sim) handleServersList(c *call) {
	q := c.r.URL.Query()
	allTenants := false
	if _, ok := q["all_tenants"]; ok {
		v := q.Get("all_tenants")
		b, valid := parseBoolValue(v)
		allTenants = v == "" || (valid && b)
		if !valid && v != "" {
			novaError(c.w, 400, "Invalid input for query parameters all_tenants.")
			return
		}
	}
	host, status, name := q.Get("host"), strings.ToUpper(q.Get("status")), q.Get("name")
	var nameRe *regexp.Regexp
	if name != "" {
		re, err := regexp.Compile(name)
		if err != nil {
			re = regexp.MustCompile(regexp.QuoteMeta(name))
		}
		nameRe = re
	}
	tenant := q.Get("tenant_id")
	if tenant == "" {
		tenant = q.Get("project_id")
	}
	limit := 1000
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			novaError(c.w, 400, "Invalid input for query parameters limit. Value: %s.", l)
			return
		}
		limit = min(n, 1000)
	}
	marker := q.Get("marker")
	detail := c.param == "detail"

	s.mu.Lock()
	now := s.now()
	s.advanceLocked(now)
	out := []map[string]any{}
	started := marker == ""
	lastID := ""
	for i := len(s.serverOrder) - 1; i >= 0; i-- { // created_at desc
		srv := s.serverOrder[i]
		if !started {
			started = srv.id == marker
			continue
		}
		if !allTenants && srv.tenantID != s.projectID {
			continue
		}
		if allTenants && tenant != "" && srv.tenantID != tenant {
			continue
		}
		if host != "" && srv.host != host {
			continue
		}
		if status != "" && apiStatus(srv.vmState, srv.taskState) != status {
			continue
		}
		if nameRe != nil && !nameRe.MatchString(srv.name) {
			continue
		}
		if len(out) == limit {
			break
		}
		if detail {
			out = append(out, s.serverJSONLocked(srv, c.mv, now))
		} else {
			self := s.ComputeURL() + "/" + srv.tenantID + "/servers/" + srv.id
			out = append(out, map[string]any{"id": srv.id, "name": srv.name,
				"links": []map[string]string{{"rel": "self", "href": self}, {"rel": "bookmark", "href": self}}})
		}
		lastID = srv.id
	}
	s.mu.Unlock()
	if !started {
		novaError(c.w, 400, "marker [%s] not found", marker)
		return
	}
	resp := map[string]any{"servers": out}
	if len(out) == limit && limit > 0 {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("limit", strconv.Itoa(limit))
		nq.Set("marker", lastID)
		path := "/servers"
		if detail {
			path += "/detail"
		}
		resp["servers_links"] = []map[string]string{{"rel": "next", "href": s.ComputeURL() + path + "?" + nq.Encode()}}
	}
	writeJSON(c.w, 200, resp)
}

// handleServerGet is GET /servers/{id}.
func (s *Sim) handleServerGet(c *call) {
	s.mu.Lock()
	now := s.now()
	s.advanceLocked(now)
	srv, ok := s.servers[c.param]
	var m map[string]any
	if ok {
		m = s.serverJSONLocked(srv, c.mv, now)
	}
	s.mu.Unlock()
	if !ok {
		serverNotFound(c.w, c.param)
		return
	}
	writeJSON(c.w, 200, map[string]any{"server": m})
}

// handleServerDelete is DELETE /servers/{id}: the row goes at once; the
// guest goes only if the compute runs (a dead compute keeps it).
func (s *Sim) handleServerDelete(c *call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advanceLocked(s.now())
	srv, ok := s.servers[c.param]
	if !ok {
		serverNotFound(c.w, c.param)
		return
	}
	if sv, ok := s.computes[srv.host]; ok && sv.running {
		delete(sv.guests, srv.id)
	}
	s.removeServerLocked(srv)
	c.w.WriteHeader(http.StatusNoContent)
}

type createRequest struct {
	Server *struct {
		Name             *string           `json:"name"`
		FlavorRef        json.RawMessage   `json:"flavorRef"`
		ImageRef         *string           `json:"imageRef"`
		Networks         json.RawMessage   `json:"networks"`
		Metadata         map[string]string `json:"metadata"`
		AvailabilityZone string            `json:"availability_zone"`
		BDMv2            []struct {
			BootIndex  json.RawMessage `json:"boot_index"`
			SourceType string          `json:"source_type"`
			UUID       string          `json:"uuid"`
		} `json:"block_device_mapping_v2"`
	} `json:"server"`
}

// handleServerCreate is POST /servers. The scheduler places the server
// among enabled, up computes (spreading), unless availability_zone is
// "zone:host", which an admin uses to pin the host (no filters run, as with
// Nova's forced hosts).
func (s *Sim) handleServerCreate(c *call) {
	var req createRequest
	if err := json.Unmarshal(c.body, &req); err != nil || req.Server == nil {
		novaError(c.w, 400, "Invalid input for field/attribute server.")
		return
	}
	r := req.Server
	if r.Name == nil || *r.Name == "" || len(*r.Name) > 255 {
		novaError(c.w, 400, "Invalid input for field/attribute name.")
		return
	}
	var flavorRef string
	if err := json.Unmarshal(r.FlavorRef, &flavorRef); err != nil {
		var n json.Number
		if err := json.Unmarshal(r.FlavorRef, &n); err != nil {
			novaError(c.w, 400, "Invalid input for field/attribute flavorRef.")
			return
		}
		flavorRef = n.String()
	}
	if i := strings.LastIndex(flavorRef, "/"); i >= 0 {
		flavorRef = flavorRef[i+1:]
	}
	if c.mv >= 37 {
		if len(r.Networks) == 0 {
			novaError(c.w, 400, "Invalid input for field/attribute server. Value: %s. 'networks' is a required property", c.body)
			return
		}
	}
	var nets string
	if len(r.Networks) > 0 && json.Unmarshal(r.Networks, &nets) == nil && nets != "none" && nets != "auto" {
		novaError(c.w, 400, "Invalid input for field/attribute networks.")
		return
	}
	bfv := false
	for _, b := range r.BDMv2 {
		if strings.TrimSpace(string(b.BootIndex)) == "0" || strings.Trim(string(b.BootIndex), `"`) == "0" {
			bfv = true
		}
	}
	imageRef := ""
	if r.ImageRef != nil {
		imageRef = *r.ImageRef
		if i := strings.LastIndex(imageRef, "/"); i >= 0 {
			imageRef = imageRef[i+1:]
		}
	}
	if imageRef == "" && !bfv {
		novaError(c.w, 400, "Missing imageRef attribute")
		return
	}
	zone, pinHost := r.AvailabilityZone, ""
	if z, h, ok := strings.Cut(zone, ":"); ok {
		zone = z
		pinHost, _, _ = strings.Cut(h, ":")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advanceLocked(now)
	fl, ok := s.flavors[flavorRef]
	if !ok {
		novaError(c.w, 400, "Flavor %s could not be found.", flavorRef)
		return
	}
	if imageRef != "" {
		if _, ok := s.images[imageRef]; !ok {
			novaError(c.w, 400, "Image %s could not be found.", imageRef)
			return
		}
	}
	if bfv {
		imageRef = ""
	}
	if zone != "" && !s.zoneExistsLocked(zone) {
		novaError(c.w, 400, "The requested availability zone is not available")
		return
	}
	nowUTC := now.UTC()
	srv := &server{
		id: newUUID(), name: *r.Name, vmState: "active", tenantID: s.projectID, userID: s.userID,
		imageID: imageRef, flavor: fl.snapshot(), metadata: copyMap(r.Metadata),
		created: nowUTC, updated: nowUTC, launched: nowUTC, az: zone,
	}
	var dest *service
	if pinHost != "" {
		dest = s.computes[pinHost] // forced host: no filters
	} else {
		dest = s.pickHostLocked(now, "", zone)
	}
	if dest == nil {
		srv.vmState = "error"
		srv.fault = &serverFault{code: 500, message: "No valid host was found. ", created: nowUTC}
	} else {
		srv.host = dest.host
		if srv.az == "" {
			srv.az = dest.zone
		}
		dest.guests[srv.id] = struct{}{}
	}
	s.insertServerLocked(srv)
	self := s.ComputeURL() + "/" + srv.tenantID + "/servers/" + srv.id
	c.w.Header().Set("Location", self)
	s.log.Info("novasim: server created", "server_id", srv.id, "host", srv.host)
	writeJSON(c.w, http.StatusAccepted, map[string]any{"server": map[string]any{
		"id": srv.id, "OS-DCF:diskConfig": "MANUAL", "adminPass": newHex(6),
		"links":           []map[string]string{{"rel": "self", "href": self}, {"rel": "bookmark", "href": self}},
		"security_groups": []map[string]string{{"name": "default"}},
	}})
}

func (s *Sim) zoneExistsLocked(zone string) bool {
	for _, sv := range s.computes {
		if sv.zone == zone {
			return true
		}
	}
	return false
}

// ramUsedLocked is the RAM of the instances placed on each compute.
func (s *Sim) ramUsedLocked() map[string]int {
	used := make(map[string]int, len(s.computes))
	for _, srv := range s.serverOrder {
		if srv.host != "" {
			used[srv.host] += srv.flavor.ram
		}
	}
	for _, m := range s.pending {
		if m.dest != "" { // claimed on the destination
			if srv, ok := s.servers[m.instance]; ok {
				used[m.dest] += srv.flavor.ram
			}
		}
	}
	return used
}

// pickHostLocked is the scheduler: ComputeFilter (enabled and up), the
// zone, then the RAM weigher (least used wins) with ties shuffled, as
// shuffle_best_same_weighed_hosts does. exclude is the evacuation source.
func (s *Sim) pickHostLocked(now time.Time, exclude, zone string) *service {
	used := s.ramUsedLocked()
	var best []*service
	bestUsed := 0
	for _, sv := range s.services {
		if sv.binary != "nova-compute" || sv.host == exclude || sv.disabled ||
			!sv.isUp(now, s.opts.ReportInterval, s.opts.ServiceDownTime) || (zone != "" && sv.zone != zone) {
			continue
		}
		u := used[sv.host]
		switch {
		case len(best) == 0 || u < bestUsed:
			best, bestUsed = append(best[:0], sv), u
		case u == bestUsed:
			best = append(best, sv)
		}
	}
	if len(best) == 0 {
		return nil
	}
	return best[s.rng.IntN(len(best))]
}

// handleServerAction is POST /servers/{id}/action.
func (s *Sim) handleServerAction(c *call) {
	var name string
	var arg json.RawMessage
	for k, v := range c.action {
		name, arg = k, v
	}
	switch name {
	case "evacuate":
		s.actionEvacuate(c, arg)
	case "lock":
		s.actionLock(c, arg)
	case "unlock":
		s.simpleAction(c, func(srv *server) (int, string) {
			srv.locked, srv.lockedReason = false, ""
			return 202, ""
		})
	case "os-resetState":
		var body struct {
			State string `json:"state"`
		}
		if json.Unmarshal(arg, &body) != nil || (body.State != "error" && body.State != "active") {
			novaError(c.w, 400, "Invalid input for field/attribute state. Value: %s. %s is not one of ['active', 'error']", arg, arg)
			return
		}
		s.simpleAction(c, func(srv *server) (int, string) {
			srv.vmState, srv.taskState = body.State, ""
			return 202, ""
		})
	case "os-stop":
		s.simpleAction(c, func(srv *server) (int, string) {
			return s.powerActionLocked(srv, "stop", "active", "powering-off", "stopped")
		})
	case "os-start":
		s.simpleAction(c, func(srv *server) (int, string) {
			return s.powerActionLocked(srv, "start", "stopped", "powering-on", "active")
		})
	default:
		novaError(c.w, 404, "There is no such action: %s", name)
	}
}

// powerActionLocked casts a stop or start to the server's compute: a
// running compute carries it out at once; a stopped one leaves the server
// in the task state (the message waits in its queue) until it restarts.
func (s *Sim) powerActionLocked(srv *server, verb, fromVM, task, toVM string) (int, string) {
	if srv.taskState != "" {
		return 409, "Cannot '" + verb + "' instance " + srv.id + " while it is in task_state " + srv.taskState
	}
	if srv.vmState != fromVM && !(verb == "stop" && srv.vmState == "error") {
		return 409, "Cannot '" + verb + "' instance " + srv.id + " while it is in vm_state " + srv.vmState
	}
	if sv, ok := s.computes[srv.host]; ok && sv.running {
		srv.vmState = toVM
	} else {
		srv.taskState = task
	}
	return 202, ""
}

// simpleAction looks the server up, applies f under the lock and answers.
func (s *Sim) simpleAction(c *call, f func(*server) (int, string)) {
	s.mu.Lock()
	now := s.now()
	s.advanceLocked(now)
	srv, ok := s.servers[c.param]
	if !ok {
		s.mu.Unlock()
		serverNotFound(c.w, c.param)
		return
	}
	st, msg := f(srv)
	if st < 300 {
		srv.updated = now.UTC()
	}
	s.mu.Unlock()
	if st >= 300 {
		novaError(c.w, st, "%s", msg)
		return
	}
	c.w.WriteHeader(st)
}

func (s *Sim) actionLock(c *call, arg json.RawMessage) {
	reason := ""
	if len(arg) > 0 && string(arg) != "null" {
		var body map[string]json.RawMessage
		if json.Unmarshal(arg, &body) != nil {
			novaError(c.w, 400, "Invalid input for field/attribute lock.")
			return
		}
		for k, v := range body {
			if k != "locked_reason" || c.mv < 73 {
				novaError(c.w, 400, "Invalid input for field/attribute lock. Value: %s. Additional properties are not allowed ('%s' was unexpected)", arg, k)
				return
			}
			if json.Unmarshal(v, &reason) != nil || len(reason) > 255 {
				novaError(c.w, 400, "Invalid input for field/attribute locked_reason.")
				return
			}
		}
	}
	s.simpleAction(c, func(srv *server) (int, string) {
		srv.locked, srv.lockedReason = true, reason
		return 202, ""
	})
}

// actionEvacuate is the evacuate action, with Nova's checks in Nova's order:
// body schema, target host known (404), target ≠ source (400), instance
// vm_state (409; the task state is not checked), source service down or
// forced down (400), then accepted.
func (s *Sim) actionEvacuate(c *call, arg json.RawMessage) {
	var body map[string]json.RawMessage
	if json.Unmarshal(arg, &body) != nil || body == nil {
		novaError(c.w, 400, "Invalid input for field/attribute evacuate. Value: %s. %s is not of type 'object'", arg, arg)
		return
	}
	allowed := map[string]bool{"host": true, "adminPass": true}
	switch {
	case c.mv < 14:
		allowed["onSharedStorage"] = true
	case c.mv < 68:
		if c.mv >= 29 {
			allowed["force"] = true
		}
	}
	for k := range body {
		if !allowed[k] {
			novaError(c.w, 400, "Invalid input for field/attribute evacuate. Value: %s. Additional properties are not allowed ('%s' was unexpected)", arg, k)
			return
		}
	}
	if c.mv < 14 {
		if _, ok := body["onSharedStorage"]; !ok {
			novaError(c.w, 400, "Invalid input for field/attribute evacuate. 'onSharedStorage' is a required property")
			return
		}
	}
	target := ""
	if raw, ok := body["host"]; ok {
		if json.Unmarshal(raw, &target) != nil || target == "" {
			novaError(c.w, 400, "Invalid input for field/attribute host. Value: %s.", raw)
			return
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advanceLocked(now)
	srv, ok := s.servers[c.param]
	if !ok {
		serverNotFound(c.w, c.param)
		return
	}
	var dst *service
	if target != "" {
		if dst, ok = s.computes[target]; !ok {
			novaError(c.w, 404, "Compute host %s not found.", target)
			return
		}
		if target == srv.host {
			novaError(c.w, 400, "The target host can't be the same one.")
			return
		}
	}
	// Zed: @check_instance_state(vm_state=[ACTIVE, STOPPED, ERROR],
	// task_state=None) checks no task state, and instance.save(
	// expected_task_state=None) expects none: any task state, rebuilding
	// included, is overwritten (lab FINDINGS.md 1).
	if srv.vmState != "active" && srv.vmState != "stopped" && srv.vmState != "error" {
		novaError(c.w, 409, "Cannot 'evacuate' instance %s while it is in vm_state %s", srv.id, srv.vmState)
		return
	}
	src, ok := s.computes[srv.host]
	if !ok {
		novaError(c.w, 404, "Compute host %s could not be found.", srv.host)
		return
	}
	if src.isUp(now, s.opts.ReportInterval, s.opts.ServiceDownTime) {
		novaError(c.w, 400, "Compute service of %s is still in use.", srv.host)
		return
	}
	if dst != nil && (dst.disabled || !dst.isUp(now, s.opts.ReportInterval, s.opts.ServiceDownTime)) {
		// Assumption: real Nova may accept this and fail in the scheduler.
		novaError(c.w, 400, "The requested target host %s is disabled or down.", target)
		return
	}
	s.nextMigID++
	m := &migration{
		id: s.nextMigID, uuid: newUUID(), instance: srv.id, source: srv.host, sourceNode: srv.host,
		status: "accepted", phase: "accepted", mtype: "evacuation", created: now, updated: now,
		flavorID: srv.flavor.intID, requested: target, userID: s.userID, projectID: s.projectID,
		preAt: now.Add(s.opts.EvacuationDelay / 2), doneAt: now.Add(s.opts.EvacuationDelay),
	}
	s.migrations = append(s.migrations, m)
	if slices.ContainsFunc(s.pending, func(p *migration) bool { return p.instance == srv.id }) {
		m.duplicate, m.phase = true, "" // never progresses (lab FINDINGS.md 5)
	} else {
		s.pending = append(s.pending, m)
	}
	srv.taskState = "rebuilding"
	srv.updated = now.UTC()
	s.log.Info("novasim: evacuation accepted", "server_id", srv.id, "host", srv.host, "target", target)
	if c.mv >= 29 {
		c.w.Header().Set("Content-Length", "0")
		c.w.WriteHeader(200)
		return
	}
	writeJSON(c.w, 200, map[string]any{"adminPass": newHex(6)})
}

// snapshot is the flavor copy a new instance keeps.
func (f *flavor) snapshot() flavorSnap {
	return flavorSnap{id: f.id, name: f.name, intID: f.intID, vcpus: f.vcpus, ram: f.ram, disk: f.disk,
		ephemeral: f.ephemeral, swap: f.swap, extraSpecs: copyMap(f.extraSpecs)}
}
