package novasim

import (
	"encoding/json"
	"net/http"
	"time"
)

// tokenInfo is what an issued token stands for.
type tokenInfo struct {
	expires time.Time
	scoped  bool
	who     string // the identity that authenticated (CallsBy)
}

// UserIdentity and AppCredIdentity name who authenticated, for CallsBy: a
// user by password (or a token of theirs), an application credential by
// its id.
func UserIdentity(name string) string  { return "user:" + name }
func AppCredIdentity(id string) string { return "appcred:" + id }

// checkToken reports whether tok is a live token.
func (s *Sim) checkToken(tok string) (tokenInfo, bool) {
	if tok == "" {
		return tokenInfo{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ti, ok := s.tokens[tok]
	if !ok || !s.now().Before(ti.expires) {
		return tokenInfo{}, false
	}
	return ti, true
}

type nameOrID struct {
	ID     string    `json:"id"`
	Name   string    `json:"name"`
	Domain *nameOrID `json:"domain"`
}

type authRequest struct {
	Auth struct {
		Identity struct {
			Methods  []string `json:"methods"`
			Password *struct {
				User struct {
					nameOrID
					Password string `json:"password"`
				} `json:"user"`
			} `json:"password"`
			AppCred *struct {
				ID     string    `json:"id"`
				Name   string    `json:"name"`
				Secret string    `json:"secret"`
				User   *nameOrID `json:"user"`
			} `json:"application_credential"`
			Token *struct {
				ID string `json:"id"`
			} `json:"token"`
		} `json:"identity"`
		Scope json.RawMessage `json:"scope"`
	} `json:"auth"`
}

// handleTokens is Keystone's POST /v3/auth/tokens for the password,
// application_credential and token methods.
func (s *Sim) handleTokens(c *call) {
	var req authRequest
	if err := json.Unmarshal(c.body, &req); err != nil {
		keystoneError(c.w, 400, "Bad Request", "Malformed request body.")
		return
	}
	id := req.Auth.Identity
	if len(id.Methods) != 1 {
		keystoneError(c.w, 401, "Unauthorized", "The request you have made requires authentication.")
		return
	}
	method := id.Methods[0]
	ok, scoped, who := false, false, ""
	switch method {
	case "password":
		if p := id.Password; p != nil {
			u := p.User
			ok = (u.Name == s.opts.Username || (u.ID != "" && u.ID == s.userID)) && p.User.Password == s.opts.Password
		}
		who = UserIdentity(s.opts.Username)
		scoped = s.projectScope(req.Auth.Scope)
		if len(req.Auth.Scope) > 0 && string(req.Auth.Scope) != "null" && !scoped {
			ok = false
		}
	case "application_credential":
		if a := id.AppCred; a != nil {
			byID := a.ID != "" && a.ID == s.opts.AppCredentialID
			byName := a.Name != "" && a.Name == s.opts.AppCredentialName && a.User != nil &&
				(a.User.Name == s.opts.Username || a.User.ID == s.userID)
			ok = (byID || byName) && a.Secret == s.opts.AppCredentialSecret
		}
		who = AppCredIdentity(s.opts.AppCredentialID)
		scoped = true // an application credential is bound to its project
	case "token":
		if t := id.Token; t != nil {
			var ti tokenInfo
			ti, ok = s.checkToken(t.ID)
			who = ti.who
		}
		scoped = s.projectScope(req.Auth.Scope)
	}
	if !ok {
		keystoneError(c.w, 401, "Unauthorized", "The request you have made requires authentication.")
		return
	}
	now := s.now().UTC()
	tok := "gAAAAA" + newHex(32)
	ti := tokenInfo{expires: now.Add(s.opts.TokenTTL), scoped: scoped, who: who}
	s.mu.Lock()
	s.tokens[tok] = ti
	s.mu.Unlock()

	domain := map[string]any{"id": "default", "name": "Default"}
	body := map[string]any{
		"methods":    []string{method},
		"user":       map[string]any{"id": s.userID, "name": s.opts.Username, "domain": domain, "password_expires_at": nil},
		"audit_ids":  []string{newHex(11)},
		"expires_at": ti.expires.Format("2006-01-02T15:04:05.000000Z"),
		"issued_at":  now.Format("2006-01-02T15:04:05.000000Z"),
	}
	if scoped {
		body["project"] = map[string]any{"id": s.projectID, "name": s.opts.Project, "domain": domain}
		body["is_domain"] = false
		body["roles"] = []map[string]string{{"id": "r-admin", "name": "admin"}, {"id": "r-member", "name": "member"}, {"id": "r-reader", "name": "reader"}}
		body["catalog"] = s.catalog()
	}
	c.w.Header().Set("X-Subject-Token", tok)
	writeJSON(c.w, http.StatusCreated, map[string]any{"token": body})
}

// projectScope reports whether scope names the admin project.
func (s *Sim) projectScope(raw json.RawMessage) bool {
	if len(raw) == 0 || string(raw) == "null" {
		return false
	}
	var sc struct {
		Project *nameOrID `json:"project"`
	}
	if json.Unmarshal(raw, &sc) != nil || sc.Project == nil {
		return false
	}
	return sc.Project.Name == s.opts.Project || sc.Project.ID == s.projectID
}

func (s *Sim) catalog() []map[string]any {
	entry := func(typ, name, url string) map[string]any {
		var eps []map[string]any
		for _, iface := range []string{"public", "internal", "admin"} {
			eps = append(eps, map[string]any{"id": newHex(16), "interface": iface, "region": s.opts.Region,
				"region_id": s.opts.Region, "url": url})
		}
		return map[string]any{"id": newHex(16), "type": typ, "name": name, "endpoints": eps}
	}
	return []map[string]any{
		entry("compute", "nova", s.ComputeURL()),
		entry("image", "glance", s.ImageURL()),
		entry("identity", "keystone", s.base+"/identity"),
	}
}

// handleIdentityVersion is GET /identity and /identity/v3.
func (s *Sim) handleIdentityVersion(c *call) {
	v := map[string]any{
		"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
		"links":       []map[string]string{{"rel": "self", "href": s.AuthURL() + "/"}},
		"media-types": []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}},
	}
	if c.r.URL.Path == "/identity" || c.r.URL.Path == "/identity/" {
		writeJSON(c.w, 300, map[string]any{"versions": map[string]any{"values": []any{v}}})
		return
	}
	writeJSON(c.w, 200, map[string]any{"version": v})
}

func (s *Sim) computeVersionDoc() map[string]any {
	return map[string]any{
		"id": "v2.1", "status": "CURRENT", "version": "2.93", "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
		"links": []map[string]string{
			{"rel": "self", "href": s.ComputeURL() + "/"},
			{"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
		},
		"media-types": []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}},
	}
}

// handleComputeVersions is GET /compute/.
func (s *Sim) handleComputeVersions(c *call) {
	v20 := map[string]any{"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
		"updated": "2011-01-21T11:33:21Z", "links": []map[string]string{{"rel": "self", "href": s.base + "/compute/v2/"}}}
	writeJSON(c.w, 200, map[string]any{"versions": []any{v20, s.computeVersionDoc()}})
}

// handleComputeVersion is GET /compute/v2.1/.
func (s *Sim) handleComputeVersion(c *call) {
	writeJSON(c.w, 200, map[string]any{"version": s.computeVersionDoc()})
}

// handleImageVersions is GET /image/ (Glance answers 300 Multiple Choices).
func (s *Sim) handleImageVersions(c *call) {
	var vs []map[string]any
	for _, v := range []string{"2.16", "2.15", "2.9"} {
		st := "SUPPORTED"
		if v == "2.16" {
			st = "CURRENT"
		}
		vs = append(vs, map[string]any{"id": "v" + v, "status": st,
			"links": []map[string]string{{"rel": "self", "href": s.ImageURL() + "/v2/"}}})
	}
	writeJSON(c.w, 300, map[string]any{"versions": vs})
}
