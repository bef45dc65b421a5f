package nova

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
)

type serverWire struct {
	ID           wireString      `json:"id"`
	Name         wireString      `json:"name"`
	Status       wireString      `json:"status"`
	TaskState    wireString      `json:"OS-EXT-STS:task_state"`
	Host         wireString      `json:"OS-EXT-SRV-ATTR:host"`
	Image        json.RawMessage `json:"image"`
	Flavor       flavorRef       `json:"flavor"`
	Metadata     wireMap         `json:"metadata"`
	Locked       wireBool        `json:"locked"`
	LockedReason wireString      `json:"locked_reason"`
	Updated      wireTime        `json:"updated"`
}

// flavorRef is a server's flavor: {"id", "links"} below 2.47, the embedded
// flavor {"original_name", "extra_specs", …} from 2.47.
type flavorRef struct {
	ID           wireString `json:"id"`
	OriginalName wireString `json:"original_name"`
	ExtraSpecs   wireMap    `json:"extra_specs"`
	// specOrder is the extra specs' keys in the order Nova sent them.
	specOrder []string
}

func (f *flavorRef) UnmarshalJSON(b []byte) error {
	type plain flavorRef
	var p plain
	if json.Unmarshal(b, &p) != nil {
		*f = flavorRef{}
		return nil //nolint:nilerr // lenient by design: an odd flavor field must not fail the whole server list
	}
	*f = flavorRef(p)
	var raw struct {
		ExtraSpecs json.RawMessage `json:"extra_specs"`
	}
	if json.Unmarshal(b, &raw) == nil {
		f.specOrder = objectKeys(raw.ExtraSpecs)
	}
	return nil
}

// objectKeys returns the keys of a JSON object in the order they appear,
// each once; nil for anything else.
func objectKeys(b []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var keys []string
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		k, ok := t.(string)
		if !ok {
			return nil
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return nil
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// imageID reads a server's image: "" (boot from volume), null, or an
// object with an id; a bare string id is accepted too.
func imageID(raw json.RawMessage) string {
	var obj struct {
		ID wireString `json:"id"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return string(obj.ID)
	}
	return rawToString(raw)
}

func (w serverWire) server() Server {
	return Server{
		ID:               string(w.ID),
		Name:             string(w.Name),
		Status:           string(w.Status),
		TaskState:        string(w.TaskState),
		Host:             string(w.Host),
		ImageID:          imageID(w.Image),
		FlavorID:         string(w.Flavor.ID),
		FlavorName:       string(w.Flavor.OriginalName),
		FlavorExtraSpecs: map[string]string(w.Flavor.ExtraSpecs),
		FlavorSpecOrder:  w.Flavor.specOrder,
		Metadata:         map[string]string(w.Metadata),
		Locked:           bool(w.Locked),
		LockedReason:     string(w.LockedReason),
		Updated:          w.Updated.time(),
	}
}

// ListServers lists the servers of every project on one host, all pages:
// GET /servers/detail?all_tenants=1&host=H. host "" lists every server.
func (c *Client) ListServers(ctx context.Context, host string) ([]Server, error) {
	op := "list servers on host " + host
	q := url.Values{"all_tenants": {"1"}}
	if host != "" {
		q.Set("host", host)
	}
	var res []Server
	seen := map[string]bool{}
	err := c.pages(ctx, op, []string{"servers", "detail"}, q, func(body []byte) (string, error) {
		var page struct {
			Servers []serverWire `json:"servers"`
			Links   []link       `json:"servers_links"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return "", err
		}
		for _, w := range page.Servers {
			s := w.server()
			if seen[s.ID] {
				continue // a server moving between pages is listed once
			}
			seen[s.ID] = true
			res = append(res, s)
		}
		return nextHref(page.Links), nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// GetServer reads one server: GET /servers/{id}.
func (c *Client) GetServer(ctx context.Context, id string) (Server, error) {
	var out struct {
		Server serverWire `json:"server"`
	}
	if _, err := c.computeCall(ctx, "get server "+id, "GET", []string{"servers", id}, nil, nil, nil, &out); err != nil {
		return Server{}, err
	}
	return out.Server.server(), nil
}

// actionOK are the statuses of a successful server action: evacuate answers
// 200, the others 202.
var actionOK = []int{200, 202, 204}

func (c *Client) action(ctx context.Context, op, id string, body any) error {
	// The answer is discarded unread: before 2.14 evacuate returned the
	// server's admin password in it.
	_, err := c.computeCall(ctx, op, "POST", []string{"servers", id, "action"}, nil, body, actionOK, nil)
	return err
}

// Evacuate asks Nova to rebuild a server of a down host elsewhere:
// POST /servers/{id}/action {"evacuate": {}} (the scheduler picks), or
// {"evacuate": {"host": T}}. It never sends force or onSharedStorage.
// Nova answers 400 when the source compute service is still up, 404 for an
// unknown target and 409 when the server is busy (non-null task_state).
func (c *Client) Evacuate(ctx context.Context, id, targetHost string) error {
	args := map[string]any{}
	if targetHost != "" {
		args["host"] = targetHost
	}
	op := "evacuate server " + id
	if targetHost != "" {
		op += " to " + targetHost
	}
	return c.action(ctx, op, id, map[string]any{"evacuate": args})
}

// Lock locks a server with a reason (the reason is sent from 2.73 only;
// below, the lock has none).
func (c *Client) Lock(ctx context.Context, id, reason string) error {
	_, mv, err := c.ready(ctx)
	if err != nil {
		return relabel(err, "lock server "+id)
	}
	var args any // {"lock": null}
	if reason != "" && mv.atLeast(mvLockedReason) {
		args = map[string]string{"locked_reason": reason}
	} else if reason != "" {
		c.log.Debug("lock reason dropped: needs microversion 2.73", "server_id", id, "microversion", mv.String())
	}
	return c.action(ctx, "lock server "+id, id, map[string]any{"lock": args})
}

// Unlock unlocks a server: {"unlock": null}.
func (c *Client) Unlock(ctx context.Context, id string) error {
	return c.action(ctx, "unlock server "+id, id, map[string]any{"unlock": nil})
}

// ResetState sets a server's state ("error" or "active") and clears its
// task state: {"os-resetState": {"state": S}}.
func (c *Client) ResetState(ctx context.Context, id, state string) error {
	return c.action(ctx, "reset state of server "+id+" to "+state, id,
		map[string]any{"os-resetState": map[string]string{"state": state}})
}

// Stop stops a server: {"os-stop": null}. Nova answers 409 when it is
// already stopped.
func (c *Client) Stop(ctx context.Context, id string) error {
	return c.action(ctx, "stop server "+id, id, map[string]any{"os-stop": nil})
}

// pages GETs a compute listing and follows its next links. page decodes one
// body, keeps what it wants and returns the next link ("" at the end).
func (c *Client) pages(ctx context.Context, op string, path []string, q url.Values, page func([]byte) (string, error)) error {
	sc, mv, err := c.ready(ctx)
	if err != nil {
		return relabel(err, op)
	}
	base := sc.ServiceURL(escapeAll(path)...)
	return c.follow(ctx, request{op: op, svc: sc, method: "GET", mv: mv}, base, q, page)
}

// follow runs r on base?q, then on each next link rebuilt on base, until
// there is none, a link repeats or maxPages is reached.
func (c *Client) follow(ctx context.Context, r request, base string, q url.Values, page func([]byte) (string, error)) error {
	r.url = base
	if len(q) > 0 {
		r.url += "?" + q.Encode()
	}
	seen := map[string]bool{}
	for n := 0; n < maxPages; n++ {
		seen[r.url] = true
		var body json.RawMessage
		a, err := c.do(ctx, r, &body)
		if err != nil {
			return err
		}
		next, err := page(body)
		if err != nil {
			return &APIError{Op: r.op, StatusCode: a.status, RequestID: a.requestID,
				Message: "malformed response: " + c.scrub(err.Error()), Err: ErrMalformed}
		}
		u, ok := pageURL(base, next)
		if !ok || seen[u] {
			return nil
		}
		r.url = u
	}
	c.log.Warn("nova paging stopped at the page limit", "op", r.op, "pages", maxPages)
	return nil
}
