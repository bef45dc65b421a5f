package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrUnreachable means no address given to the Client answered at all
// (connection refused, timeout, TLS failure). The CLI exits 3 on it.
var ErrUnreachable = errors.New("no IHA API reachable")

// Client talks to the status API of one or more iha-leader nodes, trying
// each address in turn until one answers.
type Client struct {
	// Addrs are host:port or http(s)://host:port, tried in order.
	Addrs []string
	// Token is sent as a bearer token when set. It is never put in an error.
	Token string
	// Actor names the operator in audit events (e.g. "alice@ops-1").
	Actor string
	// HTTP is the client (default: 10 s timeout, no redirects). Streams
	// use it without its timeout.
	HTTP *http.Client
	// TLS is used for https addresses when HTTP is nil.
	TLS *tls.Config
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = c.TLS
	c.HTTP = &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c.HTTP
}

func baseURL(addr string) string {
	addr = strings.TrimRight(strings.TrimSpace(addr), "/")
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return addr
	}
	return "http://" + addr
}

// retryable reports whether another node may answer better: it could not
// be reached, or it knows no leader (503).
func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusServiceUnavailable || se.Code == http.StatusBadGateway || se.Code == http.StatusGatewayTimeout
	}
	return errors.Is(err, ErrUnreachable)
}

// do sends the request to each address in turn and decodes a 200 answer
// into out.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any, out any) error {
	if len(c.Addrs) == 0 {
		return fmt.Errorf("%w: no address (use --addr or IHA_ADDR)", ErrUnreachable)
	}
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		payload = b
	}
	var errs []error
	for _, a := range c.Addrs {
		err := c.once(ctx, a, method, path, query, payload, out)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, err)
		if !retryable(err) {
			return err
		}
	}
	// Prefer a node's own answer (e.g. "no leader") over a refused
	// connection: it says more.
	for _, e := range errs {
		var se *StatusError
		if errors.As(e, &se) {
			return e
		}
	}
	return errors.Join(errs...)
}

func (c *Client) newRequest(ctx context.Context, addr, method, path string, query url.Values, payload []byte) (*http.Request, error) {
	u := baseURL(addr) + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("%w: address %q: %v", ErrUnreachable, addr, err)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if c.Actor != "" {
		req.Header.Set(HeaderActor, c.Actor)
	}
	return req, nil
}

func (c *Client) once(ctx context.Context, addr, method, path string, query url.Values, payload []byte, out any) error {
	req, err := c.newRequest(ctx, addr, method, path, query, payload)
	if err != nil {
		return err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, baseURL(addr), unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%w: %s: reading the answer: %v", ErrUnreachable, baseURL(addr), err)
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(baseURL(addr), resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: answer is not the expected JSON: %w", baseURL(addr), err)
	}
	return nil
}

func statusError(addr string, code int, b []byte) *StatusError {
	var eb ErrorBody
	if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
		eb.Error = strings.TrimSpace(string(b))
		if len(eb.Error) > 300 {
			eb.Error = eb.Error[:300]
		}
		if eb.Error == "" {
			eb.Error = http.StatusText(code)
		}
	}
	return &StatusError{Code: code, Message: eb.Error, Parameter: eb.Parameter, Addr: addr}
}

func consistentQuery(consistent bool) url.Values {
	if !consistent {
		return nil
	}
	return url.Values{"consistent": {"true"}}
}

// Cluster is GET /v1/cluster.
func (c *Client) Cluster(ctx context.Context, consistent bool) (Cluster, error) {
	var v Cluster
	return v, c.do(ctx, http.MethodGet, "/v1/cluster", consistentQuery(consistent), nil, &v)
}

// Hosts is GET /v1/hosts.
func (c *Client) Hosts(ctx context.Context, consistent bool) (Hosts, error) {
	var v Hosts
	return v, c.do(ctx, http.MethodGet, "/v1/hosts", consistentQuery(consistent), nil, &v)
}

// Host is GET /v1/hosts/{host}.
func (c *Client) Host(ctx context.Context, host string, consistent bool) (Host, error) {
	var v Host
	return v, c.do(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(host), consistentQuery(consistent), nil, &v)
}

// Events is GET /v1/events.
func (c *Client) Events(ctx context.Context, q EventQuery, consistent bool) (Events, error) {
	v := url.Values{}
	if q.Since > 0 {
		v.Set("since", strconv.FormatUint(q.Since, 10))
	}
	if q.Host != "" {
		v.Set("host", q.Host)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if len(q.Kinds) > 0 {
		v.Set("kind", strings.Join(q.Kinds, ","))
	}
	if !q.After.IsZero() {
		v.Set("after", q.After.UTC().Format(time.RFC3339Nano))
	}
	if consistent {
		v.Set("consistent", "true")
	}
	var out Events
	return out, c.do(ctx, http.MethodGet, "/v1/events", v, nil, &out)
}

// Incidents is GET /v1/incidents.
func (c *Client) Incidents(ctx context.Context, q IncidentQuery, consistent bool) (Incidents, error) {
	v := url.Values{}
	if q.Host != "" {
		v.Set("host", q.Host)
	}
	if q.ID != 0 {
		v.Set("id", strconv.FormatUint(q.ID, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.OpenOnly {
		v.Set("open", "true")
	}
	if consistent {
		v.Set("consistent", "true")
	}
	var out Incidents
	return out, c.do(ctx, http.MethodGet, "/v1/incidents", v, nil, &out)
}

// Version is GET /v1/version: the answering node's build.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var v VersionInfo
	return v, c.do(ctx, http.MethodGet, "/v1/version", nil, nil, &v)
}

// Mutate sends an operator command: kind selects the endpoint.
func (c *Client) Mutate(ctx context.Context, kind MutationKind, host, reason string) (MutationResult, error) {
	var path string
	req := MutationRequest{Reason: reason}
	esc := url.PathEscape(host)
	switch kind {
	case MutPause:
		path = "/v1/pause"
	case MutResume:
		path = "/v1/resume"
	case MutConfirmFenced:
		path = "/v1/hosts/" + esc + "/confirm-fenced"
	case MutMaintenanceOn, MutMaintenanceOff:
		on := kind == MutMaintenanceOn
		req.On = &on
		path = "/v1/hosts/" + esc + "/maintenance"
	case MutRetry:
		path = "/v1/hosts/" + esc + "/retry"
	case MutRemoveVoter:
		return c.RemoveVoter(ctx, host, reason)
	case MutShadowOn, MutShadowOff:
		on := kind == MutShadowOn
		req.On = &on
		path = "/v1/shadow"
	default:
		return MutationResult{}, fmt.Errorf("unknown command %q", kind)
	}
	var out MutationResult
	return out, c.do(ctx, http.MethodPost, path, nil, req, &out)
}

// RemoveVoter is DELETE /v1/cluster/voters/{id}: the leader takes the
// controller id out of the Raft group (any node forwards to the leader).
// The last voter is never removed (409).
func (c *Client) RemoveVoter(ctx context.Context, id, reason string) (MutationResult, error) {
	var out MutationResult
	return out, c.do(ctx, http.MethodDelete, "/v1/cluster/voters/"+url.PathEscape(id), nil, MutationRequest{Reason: reason}, &out)
}

// Stream follows GET /v1/events/stream from the first address that
// answers, calling fn for each event with seq > since (of host if set). It
// reconnects (to the next address, then round again) with Last-Event-ID
// when a stream breaks, and returns when ctx ends (nil), fn fails, or no
// address answers any more.
func (c *Client) Stream(ctx context.Context, since uint64, host string, fn func(Event) error) error {
	return c.StreamQuery(ctx, EventQuery{Since: since, Host: host}, fn)
}

// StreamQuery is Stream for the events q selects: Since, Host and Kinds
// (Limit and After do not apply to a stream).
func (c *Client) StreamQuery(ctx context.Context, q EventQuery, fn func(Event) error) error {
	since := q.Since
	if len(c.Addrs) == 0 {
		return fmt.Errorf("%w: no address (use --addr or IHA_ADDR)", ErrUnreachable)
	}
	hc := *c.http()
	hc.Timeout = 0
	misses := 0
	for i := 0; ; i++ {
		addr := c.Addrs[i%len(c.Addrs)]
		got, err := c.streamOnce(ctx, &hc, addr, &since, q, fn)
		if ctx.Err() != nil {
			return nil //nolint:nilerr // the caller ended the stream: a normal end, not an error
		}
		var fnErr *callbackError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		var se *StatusError
		if errors.As(err, &se) && !retryable(err) {
			return err
		}
		if got {
			misses = 0
		} else if misses++; misses >= 2*len(c.Addrs) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// streamOnce reads one stream until it breaks; got reports whether the
// server answered with a stream at all.
func (c *Client) streamOnce(ctx context.Context, hc *http.Client, addr string, since *uint64, eq EventQuery, fn func(Event) error) (got bool, err error) {
	q := url.Values{}
	if eq.Host != "" {
		q.Set("host", eq.Host)
	}
	if len(eq.Kinds) > 0 {
		q.Set("kind", strings.Join(eq.Kinds, ","))
	}
	req, err := c.newRequest(ctx, addr, http.MethodGet, "/v1/events/stream", q, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", strconv.FormatUint(*since, 10))
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("%w: %s: %v", ErrUnreachable, baseURL(addr), unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return false, statusError(baseURL(addr), resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if len(data) > 0 {
				var e Event
				if err := json.Unmarshal(data, &e); err == nil && e.Seq > *since {
					if err := fn(e); err != nil {
						return true, &callbackError{err}
					}
					*since = e.Seq
				}
				data = data[:0]
			}
		case bytes.HasPrefix(line, []byte("data:")):
			data = append(data, bytes.TrimSpace(line[5:])...)
		}
	}
	if err := sc.Err(); err != nil {
		return true, fmt.Errorf("%w: %s: stream broke: %v", ErrUnreachable, baseURL(addr), err)
	}
	return true, fmt.Errorf("%w: %s: stream ended", ErrUnreachable, baseURL(addr))
}
