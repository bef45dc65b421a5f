package novasim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Route names, used by SetFault, Calls and ServerCalls. The strings are
// stable: other packages' tests may spell them out.
const (
	RouteTokens           = "identity:tokens"            // POST /identity/v3/auth/tokens
	RouteVersions         = "versions"                   // GET version documents (identity, compute, image)
	RouteServicesList     = "compute:services-list"      // GET /os-services
	RouteServiceUpdate    = "compute:service-update"     // PUT /os-services/{id|action}
	RouteServersList      = "compute:servers-list"       // GET /servers, /servers/detail
	RouteServerGet        = "compute:server-get"         // GET /servers/{id}
	RouteServerCreate     = "compute:server-create"      // POST /servers
	RouteServerDelete     = "compute:server-delete"      // DELETE /servers/{id}
	RouteEvacuate         = "compute:evacuate"           // POST /servers/{id}/action {"evacuate"}
	RouteLock             = "compute:lock"               // … {"lock"}
	RouteUnlock           = "compute:unlock"             // … {"unlock"}
	RouteResetState       = "compute:reset-state"        // … {"os-resetState"}
	RouteStop             = "compute:stop"               // … {"os-stop"}
	RouteStart            = "compute:start"              // … {"os-start"}
	RouteServerAction     = "compute:server-action"      // any other server action (answered 404/400)
	RouteMigrations       = "compute:migrations"         // GET /os-migrations
	RouteAggregates       = "compute:aggregates"         // GET /os-aggregates[/{id}], POST /os-aggregates
	RouteAggregateAction  = "compute:aggregate-action"   // POST /os-aggregates/{id}/action
	RouteFlavors          = "compute:flavors"            // GET /flavors, /flavors/detail, /flavors/{id}
	RouteFlavorExtraSpecs = "compute:flavor-extra-specs" // GET|POST /flavors/{id}/os-extra_specs
	RouteImages           = "image:images"               // GET /image/v2/images[/{id}]
)

// Microversion range of Nova Zed.
const (
	minMicroversion = 1
	maxMicroversion = 93
)

type apiKind int

const (
	kindIdentity apiKind = iota
	kindCompute
	kindImage
	kindVersions
)

// call is one request on its way through the simulator.
type call struct {
	w      http.ResponseWriter
	r      *http.Request
	route  string
	kind   apiKind
	param  string // path parameter: service id/action, server id, flavor id, aggregate id, image id
	mv     int    // compute microversion minor (2.mv)
	body   []byte
	action map[string]json.RawMessage // server and aggregate actions
	token  tokenInfo
}

type handlerFunc func(*Sim, *call)

type match struct {
	route   string
	kind    apiKind
	param   string
	handler handlerFunc
	auth    bool
	action  bool // route comes from the body's action key
}

// ServeHTTP routes a request: request ids, microversion, body, counters,
// faults, authentication, then the handler.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := "req-" + newUUID()
	w.Header().Set("X-Openstack-Request-Id", rid)
	w.Header().Set("X-Compute-Request-Id", rid)

	m, status := s.match(r.Method, r.URL.Path)
	if m == nil {
		if status == http.StatusMethodNotAllowed {
			novaError(w, status, "The method specified is not allowed for this resource.")
		} else {
			novaError(w, http.StatusNotFound, "The resource could not be found.")
		}
		return
	}
	c := &call{w: w, r: r, route: m.route, kind: m.kind, param: m.param}
	if m.kind == kindCompute {
		mv, st, msg := parseMicroversion(r.Header)
		if st != 0 {
			novaError(w, st, "%s", msg)
			return
		}
		c.mv = mv
		v := "2." + strconv.Itoa(mv)
		w.Header().Set("Openstack-Api-Version", "compute "+v)
		w.Header().Set("X-Openstack-Nova-Api-Version", v)
		w.Header().Set("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")
	}
	if r.Body != nil {
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			novaError(w, 400, "cannot read body: %v", err)
			return
		}
		c.body = b
	}
	if m.action {
		if err := json.Unmarshal(c.body, &c.action); err != nil || len(c.action) != 1 {
			s.count(c.route, m.param)
			novaError(w, 400, "Malformed request body")
			return
		}
		for k := range c.action {
			c.route = serverActionRoute(k)
		}
	}
	s.count(c.route, serverIDFor(c))

	if f, ok := s.takeFault(c.route); ok {
		if f.Latency > 0 {
			t := time.NewTimer(f.Latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if f.Status != 0 {
			if f.Body != "" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(f.Status)
				_, _ = io.WriteString(w, f.Body)
			} else {
				novaError(w, f.Status, "novasim: injected fault on %s", c.route)
			}
			return
		}
	}
	if m.auth {
		tok, ok := s.checkToken(r.Header.Get("X-Auth-Token"))
		if !ok {
			w.Header().Set("Www-Authenticate", fmt.Sprintf("Keystone uri=%q", s.base+"/identity"))
			keystoneError(w, http.StatusUnauthorized, "Unauthorized", "The request you have made requires authentication.")
			return
		}
		c.token = tok
		s.mu.Lock()
		s.callsBy[[2]string{tok.who, c.route}]++
		s.mu.Unlock()
	}
	m.handler(s, c)
}

func serverIDFor(c *call) string {
	switch c.route {
	case RouteServerGet, RouteServerDelete, RouteEvacuate, RouteLock, RouteUnlock, RouteResetState,
		RouteStop, RouteStart, RouteServerAction:
		return c.param
	}
	return ""
}

func serverActionRoute(action string) string {
	switch action {
	case "evacuate":
		return RouteEvacuate
	case "lock":
		return RouteLock
	case "unlock":
		return RouteUnlock
	case "os-resetState":
		return RouteResetState
	case "os-stop":
		return RouteStop
	case "os-start":
		return RouteStart
	}
	return RouteServerAction
}

func (s *Sim) count(route, serverID string) {
	s.mu.Lock()
	s.calls[route]++
	if serverID != "" {
		s.serverCalls[[2]string{serverID, route}]++
	}
	s.mu.Unlock()
}

func (s *Sim) takeFault(route string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.faults[route]
	if !ok {
		return Fault{}, false
	}
	out := *f
	if f.Times > 0 {
		f.Times--
		if f.Times == 0 {
			delete(s.faults, route)
		}
	}
	return out, true
}

// parseMicroversion reads OpenStack-API-Version (preferred) or
// X-OpenStack-Nova-API-Version. It returns the minor version or an HTTP
// status and message.
func parseMicroversion(h http.Header) (int, int, string) {
	raw := ""
	for _, v := range h.Values("Openstack-Api-Version") {
		for _, part := range strings.Split(v, ",") {
			f := strings.Fields(part)
			if len(f) == 2 && strings.EqualFold(f[0], "compute") {
				raw = f[1]
			}
		}
	}
	if raw == "" {
		raw = strings.TrimSpace(h.Get("X-Openstack-Nova-Api-Version"))
	}
	if raw == "" {
		return minMicroversion, 0, ""
	}
	if strings.EqualFold(raw, "latest") {
		return maxMicroversion, 0, ""
	}
	maj, min, ok := strings.Cut(raw, ".")
	ma, err1 := strconv.Atoi(maj)
	mi, err2 := strconv.Atoi(min)
	if !ok || err1 != nil || err2 != nil || ma < 0 || mi < 0 {
		return 0, http.StatusBadRequest, fmt.Sprintf("API Version String %s is of invalid format. Must be of format MajorNum.MinorNum.", raw)
	}
	if ma != 2 || mi < minMicroversion || mi > maxMicroversion {
		return 0, http.StatusNotAcceptable, fmt.Sprintf("Version %s is not supported by the API. Minimum is 2.%d and maximum is 2.%d.", raw, minMicroversion, maxMicroversion)
	}
	return mi, 0, ""
}

// match maps method and path to a route. A nil match comes with 404 or 405.
func (s *Sim) match(method, path string) (*match, int) {
	seg := strings.Split(strings.Trim(path, "/"), "/")
	if len(seg) == 1 && seg[0] == "" {
		seg = nil
	}
	want := func(m string, mt *match) (*match, int) {
		if method != m && !(m == http.MethodGet && method == http.MethodHead) {
			return nil, http.StatusMethodNotAllowed
		}
		return mt, 0
	}
	if len(seg) == 0 {
		return nil, http.StatusNotFound
	}
	switch seg[0] {
	case "identity":
		switch {
		case len(seg) == 1 || (len(seg) == 2 && seg[1] == "v3"):
			return want(http.MethodGet, &match{route: RouteVersions, kind: kindVersions, handler: (*Sim).handleIdentityVersion})
		case len(seg) == 4 && seg[1] == "v3" && seg[2] == "auth" && seg[3] == "tokens":
			return want(http.MethodPost, &match{route: RouteTokens, kind: kindIdentity, handler: (*Sim).handleTokens})
		}
	case "image":
		switch {
		case len(seg) == 1 || (len(seg) == 2 && seg[1] == "versions"):
			return want(http.MethodGet, &match{route: RouteVersions, kind: kindVersions, handler: (*Sim).handleImageVersions})
		case len(seg) == 3 && seg[1] == "v2" && seg[2] == "images":
			return want(http.MethodGet, &match{route: RouteImages, kind: kindImage, auth: true, handler: (*Sim).handleImagesList})
		case len(seg) == 4 && seg[1] == "v2" && seg[2] == "images":
			return want(http.MethodGet, &match{route: RouteImages, kind: kindImage, auth: true, param: seg[3], handler: (*Sim).handleImageGet})
		}
	case "compute":
		if len(seg) == 1 {
			return want(http.MethodGet, &match{route: RouteVersions, kind: kindVersions, handler: (*Sim).handleComputeVersions})
		}
		if seg[1] != "v2.1" {
			return nil, http.StatusNotFound
		}
		rest := seg[2:]
		if len(rest) == 0 {
			return want(http.MethodGet, &match{route: RouteVersions, kind: kindVersions, handler: (*Sim).handleComputeVersion})
		}
		if rest[0] == s.projectID { // /v2.1/{project_id}/… works too
			rest = rest[1:]
		}
		return s.matchCompute(method, rest, want)
	}
	return nil, http.StatusNotFound
}

func (s *Sim) matchCompute(method string, rest []string, want func(string, *match) (*match, int)) (*match, int) {
	mk := func(route string, h handlerFunc) *match {
		return &match{route: route, kind: kindCompute, auth: true, handler: h}
	}
	if len(rest) == 0 {
		return nil, http.StatusNotFound
	}
	n := len(rest)
	switch rest[0] {
	case "os-services":
		if n == 1 {
			return want(http.MethodGet, mk(RouteServicesList, (*Sim).handleServicesList))
		}
		if n == 2 {
			m := mk(RouteServiceUpdate, (*Sim).handleServiceUpdate)
			m.param = rest[1]
			return want(http.MethodPut, m)
		}
	case "servers":
		switch {
		case n == 1 && method == http.MethodPost:
			return mk(RouteServerCreate, (*Sim).handleServerCreate), 0
		case n == 1:
			return want(http.MethodGet, mk(RouteServersList, (*Sim).handleServersList))
		case n == 2 && rest[1] == "detail":
			m := mk(RouteServersList, (*Sim).handleServersList)
			m.param = "detail"
			return want(http.MethodGet, m)
		case n == 2 && method == http.MethodDelete:
			m := mk(RouteServerDelete, (*Sim).handleServerDelete)
			m.param = rest[1]
			return m, 0
		case n == 2:
			m := mk(RouteServerGet, (*Sim).handleServerGet)
			m.param = rest[1]
			return want(http.MethodGet, m)
		case n == 3 && rest[2] == "action":
			m := mk(RouteServerAction, (*Sim).handleServerAction)
			m.param, m.action = rest[1], true
			return want(http.MethodPost, m)
		}
	case "os-migrations":
		if n == 1 {
			return want(http.MethodGet, mk(RouteMigrations, (*Sim).handleMigrations))
		}
	case "os-aggregates":
		switch {
		case n == 1 && method == http.MethodPost:
			return mk(RouteAggregates, (*Sim).handleAggregateCreate), 0
		case n == 1:
			return want(http.MethodGet, mk(RouteAggregates, (*Sim).handleAggregatesList))
		case n == 2:
			m := mk(RouteAggregates, (*Sim).handleAggregateGet)
			m.param = rest[1]
			return want(http.MethodGet, m)
		case n == 3 && rest[2] == "action":
			m := mk(RouteAggregateAction, (*Sim).handleAggregateAction)
			m.param = rest[1]
			return want(http.MethodPost, m)
		}
	case "flavors":
		switch {
		case n == 1 || (n == 2 && rest[1] == "detail"):
			m := mk(RouteFlavors, (*Sim).handleFlavorsList)
			if n == 2 {
				m.param = "detail"
			}
			return want(http.MethodGet, m)
		case n == 2:
			m := mk(RouteFlavors, (*Sim).handleFlavorGet)
			m.param = rest[1]
			return want(http.MethodGet, m)
		case n == 3 && rest[2] == "os-extra_specs":
			m := mk(RouteFlavorExtraSpecs, (*Sim).handleExtraSpecs)
			m.param = rest[1]
			if method == http.MethodPost {
				return m, 0
			}
			return want(http.MethodGet, m)
		}
	}
	return nil, http.StatusNotFound
}
