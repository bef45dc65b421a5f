package novasim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"time"
)

// flavor is a flavor row with its extra specs.
type flavor struct {
	id, name                          string
	intID                             int
	vcpus, ram, disk, ephemeral, swap int
	public                            bool
	extraSpecs                        map[string]string
}

type image struct {
	id, name   string
	tags       []string
	props      map[string]string
	visibility string
	hidden     bool
	created    time.Time
	seq        int
}

type aggregate struct {
	id       int
	uuid     string
	name     string
	az       string
	hosts    []string
	metadata map[string]string
	created  time.Time
	updated  time.Time
}

// ---- flavors ----

func (s *Sim) flavorJSON(f *flavor, mv int) map[string]any {
	self := s.ComputeURL() + "/flavors/" + f.id
	var swap any = ""
	if f.swap != 0 || mv >= 75 {
		swap = f.swap
	}
	m := map[string]any{
		"id": f.id, "name": f.name, "ram": f.ram, "disk": f.disk, "vcpus": f.vcpus, "swap": swap,
		"OS-FLV-EXT-DATA:ephemeral": f.ephemeral, "OS-FLV-DISABLED:disabled": false,
		"os-flavor-access:is_public": f.public, "rxtx_factor": 1.0,
		"links": []map[string]string{{"rel": "self", "href": self}, {"rel": "bookmark", "href": self}},
	}
	if mv >= 55 {
		m["description"] = nil
	}
	if mv >= 61 {
		m["extra_specs"] = copyMap(f.extraSpecs)
	}
	return m
}

// handleFlavorsList is GET /flavors and /flavors/detail. As for Nova's
// admins, no is_public shows public flavors only; is_public=None shows all.
func (s *Sim) handleFlavorsList(c *call) {
	q := c.r.URL.Query()
	var want *bool
	t, f := true, false
	switch v := q.Get("is_public"); v {
	case "":
		want = &t
	case "None", "none":
	default:
		b, ok := parseBoolValue(v)
		if !ok {
			novaError(c.w, 400, "Invalid is_public filter [%s]", v)
			return
		}
		if b {
			want = &t
		} else {
			want = &f
		}
	}
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			novaError(c.w, 400, "Invalid input for query parameters limit. Value: %s.", v)
			return
		}
		limit = min(n, 1000)
	}
	marker := q.Get("marker")
	s.mu.Lock()
	all := slices.Clone(s.flavorOrder)
	sort.Slice(all, func(i, j int) bool { return all[i].id < all[j].id }) // flavorid asc
	out := []map[string]any{}
	started := marker == ""
	last := ""
	for _, fl := range all {
		if !started {
			started = fl.id == marker
			continue
		}
		if want != nil && fl.public != *want {
			continue
		}
		if len(out) == limit {
			break
		}
		if c.param == "detail" {
			out = append(out, s.flavorJSON(fl, c.mv))
		} else {
			j := s.flavorJSON(fl, c.mv)
			m := map[string]any{"id": fl.id, "name": fl.name, "links": j["links"]}
			if c.mv >= 55 {
				m["description"] = nil
			}
			out = append(out, m)
		}
		last = fl.id
	}
	s.mu.Unlock()
	if !started {
		novaError(c.w, 400, "marker [%s] not found", marker)
		return
	}
	resp := map[string]any{"flavors": out}
	if len(out) == limit && limit > 0 {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("limit", strconv.Itoa(limit))
		nq.Set("marker", last)
		path := "/flavors"
		if c.param == "detail" {
			path += "/detail"
		}
		resp["flavors_links"] = []map[string]string{{"rel": "next", "href": s.ComputeURL() + path + "?" + nq.Encode()}}
	}
	writeJSON(c.w, 200, resp)
}

// handleFlavorGet is GET /flavors/{id}.
func (s *Sim) handleFlavorGet(c *call) {
	s.mu.Lock()
	fl, ok := s.flavors[c.param]
	var m map[string]any
	if ok {
		m = s.flavorJSON(fl, c.mv)
	}
	s.mu.Unlock()
	if !ok {
		novaError(c.w, 404, "Flavor %s could not be found.", c.param)
		return
	}
	writeJSON(c.w, 200, map[string]any{"flavor": m})
}

// handleExtraSpecs is GET and POST /flavors/{id}/os-extra_specs.
func (s *Sim) handleExtraSpecs(c *call) {
	var add map[string]string
	if c.r.Method == http.MethodPost {
		var body struct {
			ExtraSpecs map[string]string `json:"extra_specs"`
		}
		if err := json.Unmarshal(c.body, &body); err != nil || len(body.ExtraSpecs) == 0 {
			novaError(c.w, 400, "Invalid input for field/attribute extra_specs.")
			return
		}
		add = body.ExtraSpecs
	}
	s.mu.Lock()
	fl, ok := s.flavors[c.param]
	if !ok {
		s.mu.Unlock()
		novaError(c.w, 404, "Flavor %s could not be found.", c.param)
		return
	}
	for k, v := range add {
		fl.extraSpecs[k] = v
	}
	out := copyMap(fl.extraSpecs)
	s.mu.Unlock()
	if add != nil {
		out = add
	}
	writeJSON(c.w, 200, map[string]any{"extra_specs": out})
}

// ---- images (Glance v2) ----

func (s *Sim) imageJSON(im *image) map[string]any {
	ts := im.created.Format(isoZ)
	m := map[string]any{
		"id": im.id, "name": im.name, "status": "active", "visibility": im.visibility, "protected": false,
		"os_hidden": im.hidden, "tags": slices.Clone(im.tags), "container_format": "bare", "disk_format": "qcow2",
		"min_disk": 0, "min_ram": 0, "size": 1024, "virtual_size": nil, "checksum": nil,
		"os_hash_algo": nil, "os_hash_value": nil, "owner": s.projectID, "created_at": ts, "updated_at": ts,
		"self": "/v2/images/" + im.id, "file": "/v2/images/" + im.id + "/file", "schema": "/v2/schemas/image",
	}
	for k, v := range im.props {
		if _, taken := m[k]; !taken {
			m[k] = v
		}
	}
	return m
}

// handleImagesList is Glance's GET /v2/images (newest first, paged with
// `next`, filters tag (all must match), name, visibility).
func (s *Sim) handleImagesList(c *call) {
	q := c.r.URL.Query()
	limit := 25
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			glanceError(c.w, 400, "limit param must be an integer")
			return
		}
		limit = min(n, 1000)
	}
	marker, tags, name, vis := q.Get("marker"), q["tag"], q.Get("name"), q.Get("visibility")
	s.mu.Lock()
	all := slices.Clone(s.imageOrder)
	s.mu.Unlock()
	sort.SliceStable(all, func(i, j int) bool { return all[i].seq > all[j].seq }) // created_at desc
	out := []map[string]any{}
	started := marker == ""
	last := ""
	more := false
	for _, im := range all {
		if !started {
			started = im.id == marker
			continue
		}
		if name != "" && im.name != name {
			continue
		}
		if vis != "" && vis != "all" && im.visibility != vis {
			continue
		}
		if !containsAll(im.tags, tags) {
			continue
		}
		if im.hidden != (q.Get("os_hidden") == "true") {
			continue // Glance lists hidden images only when asked, and then only them
		}
		if len(out) == limit {
			more = true
			break
		}
		out = append(out, s.imageJSON(im))
		last = im.id
	}
	if !started {
		glanceError(c.w, 400, "marker could not be found")
		return
	}
	resp := map[string]any{"images": out, "first": "/v2/images", "schema": "/v2/schemas/images"}
	if more {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("limit", strconv.Itoa(limit))
		nq.Set("marker", last)
		resp["next"] = "/v2/images?" + nq.Encode()
	}
	writeJSON(c.w, 200, resp)
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// handleImageGet is Glance's GET /v2/images/{id}.
func (s *Sim) handleImageGet(c *call) {
	s.mu.Lock()
	im, ok := s.images[c.param]
	s.mu.Unlock()
	if !ok {
		glanceError(c.w, 404, "No image found with ID "+c.param)
		return
	}
	writeJSON(c.w, 200, s.imageJSON(im))
}

// ---- aggregates ----

func (s *Sim) aggregateJSON(ag *aggregate, mv int) map[string]any {
	m := map[string]any{
		"id": ag.id, "name": ag.name, "availability_zone": nullable(ag.az), "hosts": slices.Clone(ag.hosts),
		"metadata": copyMap(ag.metadata), "created_at": ag.created.Format(novaDBTime), "updated_at": nil,
		"deleted_at": nil, "deleted": false,
	}
	if !ag.updated.IsZero() {
		m["updated_at"] = ag.updated.Format(novaDBTime)
	}
	if mv >= 41 {
		m["uuid"] = ag.uuid
	}
	return m
}

// handleAggregatesList is GET /os-aggregates.
func (s *Sim) handleAggregatesList(c *call) {
	s.mu.Lock()
	out := make([]map[string]any, 0, len(s.aggregates))
	for _, ag := range s.aggregates {
		out = append(out, s.aggregateJSON(ag, c.mv))
	}
	s.mu.Unlock()
	writeJSON(c.w, 200, map[string]any{"aggregates": out})
}

func (s *Sim) aggregateLocked(id string) *aggregate {
	n, err := strconv.Atoi(id)
	if err != nil {
		return nil
	}
	for _, ag := range s.aggregates {
		if ag.id == n {
			return ag
		}
	}
	return nil
}

// handleAggregateGet is GET /os-aggregates/{id}.
func (s *Sim) handleAggregateGet(c *call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ag := s.aggregateLocked(c.param)
	if ag == nil {
		novaError(c.w, 404, "Aggregate %s could not be found.", c.param)
		return
	}
	writeJSON(c.w, 200, map[string]any{"aggregate": s.aggregateJSON(ag, c.mv)})
}

// handleAggregateCreate is POST /os-aggregates.
func (s *Sim) handleAggregateCreate(c *call) {
	var body struct {
		Aggregate *struct {
			Name string  `json:"name"`
			AZ   *string `json:"availability_zone"`
		} `json:"aggregate"`
	}
	if err := json.Unmarshal(c.body, &body); err != nil || body.Aggregate == nil || body.Aggregate.Name == "" {
		novaError(c.w, 400, "Invalid input for field/attribute aggregate.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ag := range s.aggregates {
		if ag.name == body.Aggregate.Name {
			novaError(c.w, 409, "Aggregate %s already exists.", ag.name)
			return
		}
	}
	az := ""
	if body.Aggregate.AZ != nil {
		az = *body.Aggregate.AZ
	}
	ag := s.newAggregateLocked(body.Aggregate.Name, az)
	if az != "" {
		ag.metadata["availability_zone"] = az
	}
	m := s.aggregateJSON(ag, c.mv)
	delete(m, "hosts")
	delete(m, "metadata")
	writeJSON(c.w, 200, map[string]any{"aggregate": m})
}

// handleAggregateAction is POST /os-aggregates/{id}/action: add_host,
// remove_host, set_metadata.
func (s *Sim) handleAggregateAction(c *call) {
	var body map[string]json.RawMessage
	if err := json.Unmarshal(c.body, &body); err != nil || len(body) != 1 {
		novaError(c.w, 400, "Malformed request body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ag := s.aggregateLocked(c.param)
	if ag == nil {
		novaError(c.w, 404, "Aggregate %s could not be found.", c.param)
		return
	}
	now := trunc(s.now().UTC())
	for action, raw := range body {
		switch action {
		case "add_host", "remove_host":
			var a struct {
				Host string `json:"host"`
			}
			if json.Unmarshal(raw, &a) != nil || a.Host == "" {
				novaError(c.w, 400, "Invalid input for field/attribute %s.", action)
				return
			}
			if _, ok := s.computes[a.Host]; !ok {
				novaError(c.w, 404, "Compute host %s could not be found.", a.Host)
				return
			}
			i := slices.Index(ag.hosts, a.Host)
			if action == "add_host" {
				if i >= 0 {
					novaError(c.w, 409, "Aggregate %d already has host %s.", ag.id, a.Host)
					return
				}
				ag.hosts = append(ag.hosts, a.Host)
			} else {
				if i < 0 {
					novaError(c.w, 404, "Cannot remove host %s in aggregate %d: not found", a.Host, ag.id)
					return
				}
				ag.hosts = slices.Delete(ag.hosts, i, i+1)
			}
		case "set_metadata":
			var a struct {
				Metadata map[string]*string `json:"metadata"`
			}
			if json.Unmarshal(raw, &a) != nil || a.Metadata == nil {
				novaError(c.w, 400, "Invalid input for field/attribute set_metadata.")
				return
			}
			for k, v := range a.Metadata {
				if v == nil {
					delete(ag.metadata, k)
				} else {
					ag.metadata[k] = *v
				}
			}
		default:
			novaError(c.w, 400, "Invalid input for field/attribute %s. Unsupported action.", action)
			return
		}
	}
	ag.updated = now
	writeJSON(c.w, 200, map[string]any{"aggregate": s.aggregateJSON(ag, c.mv)})
}
