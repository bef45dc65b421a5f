package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/lease"
	"github.com/ihaproject/iha/pkg/secret"
)

// Backend is what the server needs of the cluster. The leader package
// implements it over a Raft node; tests use fakes. Every method may be
// called from many goroutines at once. It is four narrower interfaces, one
// per kind of consumer: the probes and the forwarding logic (Replica), the
// read-only status endpoints (StatusReader), the agents' gate (GateReader)
// and the operator's commands (Mutator).
type Backend interface {
	Replica
	StatusReader
	GateReader
	Mutator
}

// Replica is where this node stands: what /healthz, /readyz, forwarding to
// the leader and consistent reads need.
type Replica interface {
	// Freshness describes this node's replica now. Cheap.
	Freshness() Freshness
	// LeaderAPI is the current leader's API address (host:port, "" when no
	// leader is known or it has not published its address yet) and whether
	// this node is that leader.
	LeaderAPI() (addr string, self bool)
	// ConsistentRead returns once this node has confirmed with a quorum
	// that it leads and its replica holds every committed entry.
	// ErrNotLeader on a follower.
	ConsistentRead(ctx context.Context) error
	// Ready returns nil when this node should receive traffic: a leader is
	// known and reachable, the replica is caught up, and on the leader Nova
	// answered recently. Otherwise the error says why.
	Ready(ctx context.Context) error
}

// StatusReader is what the read-only status endpoints show (`iha status`,
// `iha host`, `iha events`, the event stream).
type StatusReader interface {
	Cluster(ctx context.Context) (Cluster, error)
	Hosts(ctx context.Context) ([]HostSummary, error)
	// Host returns the full record of host, or ErrNotFound.
	Host(ctx context.Context, host string) (Host, error)
	Events(q EventQuery) []Event
}

// GateReader answers an agent's question at boot: may its nova-compute
// start (GET /v1/gate/{host}).
type GateReader interface {
	Gate(host string) Gate
}

// Mutator commits the operator's commands.
type Mutator interface {
	// Mutate commits an operator command through Raft and returns the seq
	// of the audit event it wrote (0 when it cannot tell). Leader only:
	// ErrNotLeader on a follower (the server forwards before calling it).
	// ErrConflict or ErrNotFound when the command does not fit the state.
	// Committing the same command twice is harmless (each is audited).
	Mutate(ctx context.Context, m Mutation) (uint64, error)
}

// Config configures a Server.
type Config struct {
	Backend Backend
	// Token is API_TOKEN (read-write), ReadToken API_READ_TOKEN (read-only).
	Token, ReadToken secret.Secret
	// Metrics is served at /metrics when set.
	Metrics http.Handler
	// Build is this node's build, served at /v1/version (Node and API are
	// filled in by the server).
	Build VersionInfo
	// Mount adds handlers that other packages own (e.g. Raft join) to the
	// mux before the server starts.
	Mount func(mux *http.ServeMux)
	// Lease grants an armed compute's watchdog lease (POST /v1/lease/{host},
	// forwarded to the leader by a follower). The request is authenticated
	// by its signature, not by a token. nil: the endpoint answers 503.
	Lease func(ctx context.Context, req lease.Request) (lease.Grant, error)
	// TLS is the server's TLS configuration; nil serves plain HTTP. When set,
	// forwarding to the leader uses https.
	TLS *tls.Config
	// Forward is the client used to forward to the leader (default: a
	// client with ForwardTimeout whose TLS trusts TLS.RootCAs).
	Forward *http.Client
	// ForwardTimeout bounds one forwarded request (default 15 s).
	ForwardTimeout time.Duration
	// GateKey, when set, returns a host's key (identity.HostKey of the
	// cluster key): the gate's answers to a request with a nonce are signed
	// with it.
	GateKey func(host string) []byte
	// ReadTimeout bounds reading a whole request (headers and body),
	// IdleTimeout an idle keep-alive connection (defaults 30 s and 120 s;
	// API_READ_TIMEOUT, API_IDLE_TIMEOUT). An event stream clears its read
	// deadline once it is accepted.
	ReadTimeout, IdleTimeout time.Duration
	// MaxConns caps the connections served at once (default 1024,
	// API_MAX_CONNECTIONS): beyond it a new connection is closed at once.
	// MaxStreams caps the event streams (default 64, API_MAX_STREAMS):
	// beyond it a new one is answered 503.
	MaxConns, MaxStreams int
	// A forwarded request's audit identity (X-IHA-By) is believed only
	// from an authenticated controller: one whose TLS client certificate
	// chains to ControllerCAs (RAFT_TLS_CA), or whose request carries a
	// proof made with ForwardKey (identity.ForwardKey of the cluster key).
	// Otherwise the leader records who the forwarding node is, not what it
	// claims. ForwardCert is this node's client certificate when it
	// forwards (its Raft certificate).
	ControllerCAs *x509.CertPool
	ForwardKey    []byte
	ForwardCert   *tls.Certificate
	// EventPoll is how often an event stream checks the replica (default
	// 200 ms); StreamKeepAlive the interval of keep-alive comments (15 s).
	EventPoll, StreamKeepAlive time.Duration
	Logger                     *slog.Logger
}

// Server is the HTTP API over a Backend.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	streams atomic.Int32
	// byWarned rate-limits the warning about an unauthenticated X-IHA-By.
	byWarned atomic.Int64
}

// Headers of the API.
const (
	// HeaderActor names the operator (the CLI sends $USER@hostname); it is
	// recorded in audit events.
	HeaderActor = "X-IHA-Actor"
	// headerForwarded marks a request a follower forwarded to the leader,
	// so that it is never forwarded twice.
	headerForwarded = "X-IHA-Forwarded-By"
	// headerBy carries the audit "by" the first node computed;
	// headerByAt and headerByProof authenticate it (ForwardKey).
	headerBy      = "X-IHA-By"
	headerByAt    = "X-IHA-By-At"
	headerByProof = "X-IHA-By-Proof"
)

// NewServer builds the API's handler.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ForwardTimeout <= 0 {
		cfg.ForwardTimeout = 15 * time.Second
	}
	if cfg.EventPoll <= 0 {
		cfg.EventPoll = 200 * time.Millisecond
	}
	if cfg.StreamKeepAlive <= 0 {
		cfg.StreamKeepAlive = 15 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 1024
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 64
	}
	if cfg.Forward == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if cfg.TLS != nil {
			tr.TLSClientConfig = &tls.Config{RootCAs: cfg.TLS.RootCAs, MinVersion: tls.VersionTLS12}
			if cfg.ForwardCert != nil {
				tr.TLSClientConfig.Certificates = []tls.Certificate{*cfg.ForwardCert}
			}
		}
		cfg.Forward = &http.Client{Transport: tr, Timeout: cfg.ForwardTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Liveness: the process serves. It must never depend on work in
		// progress (upstream's probe killed it mid-evacuation).
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	m.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Metrics != nil {
		m.Handle("GET /metrics", s.cfg.Metrics)
	}
	m.HandleFunc("GET /v1/gate/{host}", s.gate)
	m.HandleFunc("GET /v1/cluster", s.read(s.cluster, "consistent"))
	m.HandleFunc("GET /v1/hosts", s.read(s.hosts, "consistent"))
	m.HandleFunc("GET /v1/hosts/{host}", s.read(s.host, "consistent"))
	m.HandleFunc("GET /v1/version", s.read(s.version))
	m.HandleFunc("GET /v1/events", s.read(s.events, "consistent", "since", "host", "limit", "kind", "after"))
	m.HandleFunc("GET /v1/events/stream", s.stream)
	m.HandleFunc("POST /v1/pause", s.mutation(MutPause))
	m.HandleFunc("POST /v1/resume", s.mutation(MutResume))
	m.HandleFunc("POST /v1/hosts/{host}/confirm-fenced", s.mutation(MutConfirmFenced))
	m.HandleFunc("POST /v1/hosts/{host}/maintenance", s.mutation(MutMaintenanceOn))
	m.HandleFunc("POST /v1/hosts/{host}/retry", s.mutation(MutRetry))
	m.HandleFunc("DELETE /v1/cluster/voters/{id}", s.mutation(MutRemoveVoter))
	m.HandleFunc("POST /v1/shadow", s.mutation(MutShadowOn))
	m.HandleFunc("GET /v1/incidents", s.read(s.incidents, "consistent", "host", "limit", "id", "open"))
	m.HandleFunc("POST "+lease.Path+"{host}", s.lease)
	m.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, ErrorBody{Error: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	if s.cfg.Mount != nil {
		s.cfg.Mount(m)
	}
}

// ListenAndServe serves on addr until ctx ends, then shuts down within
// grace. It returns once the listener is open (errors after that are
// logged), so callers know the address is taken.
func (s *Server) ListenAndServe(ctx context.Context, addr string) (net.Addr, <-chan struct{}, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("status API: listen on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is ListenAndServe on an open listener. The returned channel is
// closed when the server has stopped.
func (s *Server) Serve(ctx context.Context, ln net.Listener) (net.Addr, <-chan struct{}, error) {
	ln = &limitListener{Listener: ln, sem: make(chan struct{}, s.cfg.MaxConns), log: s.log}
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: min(10*time.Second, s.cfg.ReadTimeout),
		ReadTimeout: s.cfg.ReadTimeout, IdleTimeout: s.cfg.IdleTimeout,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("status API stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Event streams never end by themselves: Shutdown waits for idle
		// connections only, so close what is left after the grace.
		if err := hs.Shutdown(sctx); err != nil {
			_ = hs.Close()
		}
	}()
	return ln.Addr(), done, nil
}

// ---- authentication ----

type access int

const (
	accessRead access = iota
	accessWrite
)

// authorize answers false after writing 401/403 when the request may not
// do what it asks.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, need access) bool {
	tok, hasTok := bearer(r)
	rw := !s.cfg.Token.IsZero() && hasTok && equal(tok, s.cfg.Token.Reveal())
	ro := !s.cfg.ReadToken.IsZero() && hasTok && equal(tok, s.cfg.ReadToken.Reveal())
	switch need {
	case accessRead:
		if s.cfg.ReadToken.IsZero() || rw || ro {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="iha"`)
		writeError(w, http.StatusUnauthorized, ErrorBody{Error: "reading needs API_READ_TOKEN or API_TOKEN (Authorization: Bearer; iha reads IHA_TOKEN)"})
		return false
	default:
		if rw {
			return true
		}
		if s.cfg.Token.IsZero() {
			writeError(w, http.StatusForbidden, ErrorBody{Error: "changes are disabled: API_TOKEN is not configured on this node"})
			return false
		}
		if ro {
			writeError(w, http.StatusForbidden, ErrorBody{Error: "this token may only read: changes need API_TOKEN"})
			return false
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="iha"`)
		writeError(w, http.StatusUnauthorized, ErrorBody{Error: "changes need API_TOKEN (Authorization: Bearer; iha reads IHA_TOKEN)"})
		return false
	}
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// ---- reads ----

type readFunc func(ctx context.Context, r *http.Request, q queryArgs) (any, error)

// queryArgs are a read's validated query parameters.
type queryArgs struct {
	consistent bool
	since      uint64
	limit      int
	host       string
	kinds      []string
	after      time.Time
	id         uint64
	open       bool
}

// hostRE is what a compute host name may look like (Nova's host names,
// possibly fully qualified).
var hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,253})$`)

// kindRE is what an event kind looks like (HostDown, FencingSucceeded).
var kindRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{0,63}$`)

// maxKinds bounds the kinds one query may name.
const maxKinds = 32

// parseQuery validates the query against the parameters an endpoint
// allows; the error names the parameter at fault.
func parseQuery(r *http.Request, allowed ...string) (queryArgs, *ErrorBody) {
	var q queryArgs
	vals, err := urlQuery(r)
	if err != nil {
		return q, &ErrorBody{Error: "malformed query string: " + err.Error(), Parameter: "query"}
	}
	for name, vs := range vals {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return q, &ErrorBody{Error: fmt.Sprintf("unknown parameter %q (allowed: %s)", name, strings.Join(allowed, ", ")), Parameter: name}
		}
		if len(vs) != 1 {
			return q, &ErrorBody{Error: "parameter given more than once", Parameter: name}
		}
		v := vs[0]
		switch name {
		case "consistent":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return q, &ErrorBody{Error: fmt.Sprintf("consistent=%q is not true or false", v), Parameter: name}
			}
			q.consistent = b
		case "since":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return q, &ErrorBody{Error: fmt.Sprintf("since=%q is not an event sequence number (a non-negative integer)", v), Parameter: name}
			}
			q.since = n
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 10000 {
				return q, &ErrorBody{Error: fmt.Sprintf("limit=%q is not an integer from 1 to 10000", v), Parameter: name}
			}
			q.limit = n
		case "host":
			if !hostRE.MatchString(v) {
				return q, &ErrorBody{Error: fmt.Sprintf("host=%q is not a host name", v), Parameter: name}
			}
			q.host = v
		case "kind":
			for _, k := range strings.Split(v, ",") {
				if !kindRE.MatchString(k) {
					return q, &ErrorBody{Error: fmt.Sprintf("kind=%q: %q is not an event kind (letters and digits, e.g. HostDown; several: comma-separated)", v, k), Parameter: name}
				}
				q.kinds = append(q.kinds, k)
			}
			if len(q.kinds) > maxKinds {
				return q, &ErrorBody{Error: fmt.Sprintf("kind names %d kinds, at most %d are allowed", len(q.kinds), maxKinds), Parameter: name}
			}
		case "id":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n == 0 {
				return q, &ErrorBody{Error: fmt.Sprintf("id=%q is not an incident number (a positive integer)", v), Parameter: name}
			}
			q.id = n
		case "open":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return q, &ErrorBody{Error: fmt.Sprintf("open=%q is not true or false", v), Parameter: name}
			}
			q.open = b
		case "after":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return q, &ErrorBody{Error: fmt.Sprintf("after=%q is not an RFC 3339 time (2006-01-02T15:04:05Z)", v), Parameter: name}
			}
			q.after = t
		}
	}
	return q, nil
}

func urlQuery(r *http.Request) (url.Values, error) {
	return url.ParseQuery(r.URL.RawQuery)
}

func (s *Server) read(fn readFunc, allowed ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.authorize(w, r, accessRead) {
			return
		}
		q, bad := parseQuery(r, allowed...)
		if bad != nil {
			writeError(w, http.StatusBadRequest, *bad)
			return
		}
		if h := r.PathValue("host"); h != "" && !hostRE.MatchString(h) {
			writeError(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf("%q is not a host name", h), Parameter: "host"})
			return
		}
		if q.consistent {
			if s.forwardIfFollower(w, r) {
				return
			}
			if err := s.cfg.Backend.ConsistentRead(r.Context()); err != nil {
				if errors.Is(err, ErrNotLeader) {
					// Leadership moved between the check and the read.
					s.writeNoLeader(w, "leadership is changing; retry")
					return
				}
				s.writeErr(w, err)
				return
			}
		}
		v, err := fn(r.Context(), r, q)
		if err != nil {
			s.writeErr(w, err)
			return
		}
		if q.consistent && s.cfg.Backend.Freshness().Role != "Leader" {
			// Leadership moved while the answer was built (a graceful
			// stop's transfer): a consistent answer comes from the leader
			// of the moment, or not at all.
			s.writeNoLeader(w, "leadership is changing; retry")
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Server) fresh(q queryArgs) Freshness {
	f := s.cfg.Backend.Freshness()
	f.Consistent = q.consistent
	return f
}

func (s *Server) cluster(ctx context.Context, _ *http.Request, q queryArgs) (any, error) {
	c, err := s.cfg.Backend.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	c.Freshness = s.fresh(q)
	return c, nil
}

func (s *Server) hosts(ctx context.Context, _ *http.Request, q queryArgs) (any, error) {
	hs, err := s.cfg.Backend.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	if hs == nil {
		hs = []HostSummary{}
	}
	return Hosts{Freshness: s.fresh(q), Hosts: hs}, nil
}

func (s *Server) host(ctx context.Context, r *http.Request, q queryArgs) (any, error) {
	name := r.PathValue("host")
	h, err := s.cfg.Backend.Host(ctx, name)
	if errors.Is(err, ErrNotFound) {
		where := "Nova (as the leader last listed it), the gossip mesh, maintenance and the recovery records"
		if _, self := s.cfg.Backend.LeaderAPI(); !self {
			where = "this follower's mesh view, maintenance and the recovery records (it does not poll Nova: ask the leader with --consistent)"
		}
		return nil, fmt.Errorf("%w: host %q is unknown to %s; `iha hosts` lists the known hosts", ErrNotFound, name, where)
	}
	if err != nil {
		return nil, err
	}
	h.Freshness = s.fresh(q)
	return h, nil
}

func (s *Server) events(_ context.Context, _ *http.Request, q queryArgs) (any, error) {
	eq := EventQuery{Since: q.since, Host: q.host, Limit: q.limit, Kinds: q.kinds, After: q.after}
	evs := s.eventsOf(eq)
	if evs == nil {
		evs = []Event{}
	}
	next := q.since
	if n := len(evs); n > 0 {
		next = evs[n-1].Seq
	}
	return Events{Freshness: s.fresh(q), Events: evs, Next: next}, nil
}

// eventsOf asks the Backend for q's events and applies what a Backend does
// not: Kinds and After, before the limit (the newest of the matching
// events, not the matching ones among the newest).
func (s *Server) eventsOf(q EventQuery) []Event {
	if len(q.Kinds) == 0 && q.After.IsZero() {
		return s.cfg.Backend.Events(q)
	}
	all := s.cfg.Backend.Events(EventQuery{Since: q.Since, Host: q.Host})
	out := all[:0:0]
	for _, e := range all {
		if q.Match(e) {
			out = append(out, e)
		}
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out
}

func (s *Server) incidents(ctx context.Context, _ *http.Request, q queryArgs) (any, error) {
	ib, ok := s.cfg.Backend.(IncidentBackend)
	if !ok {
		return nil, fmt.Errorf("%w: this node keeps no incidents (an iha-leader older than shadow mode)", ErrNotFound)
	}
	incs, shadow, err := ib.Incidents(ctx, IncidentQuery{Host: q.host, ID: q.id, Limit: q.limit, OpenOnly: q.open})
	if err != nil {
		return nil, err
	}
	if incs == nil {
		incs = []Incident{}
	}
	if q.id != 0 && len(incs) == 0 {
		return nil, fmt.Errorf("%w: no incident %d (`iha incidents` lists them)", ErrNotFound, q.id)
	}
	return Incidents{Freshness: s.fresh(q), Shadow: shadow, Incidents: incs}, nil
}

func (s *Server) version(_ context.Context, _ *http.Request, _ queryArgs) (any, error) {
	v := s.cfg.Build
	v.Node, v.API = s.cfg.Backend.Freshness().Node, Version
	if v.Version == "" {
		v.Version = "unknown"
	}
	return v, nil
}

// nonceRE is what a gate request's nonce may be.
var nonceRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,128}$`)

func (s *Server) gate(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	if !hostRE.MatchString(host) {
		writeError(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf("%q is not a host name", host), Parameter: "host"})
		return
	}
	q, err := urlQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, ErrorBody{Error: "malformed query string: " + err.Error(), Parameter: "query"})
		return
	}
	for name := range q {
		if name != "nonce" {
			writeError(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf("unknown parameter %q (allowed: nonce)", name), Parameter: name})
			return
		}
	}
	nonce := q.Get("nonce")
	if _, given := q["nonce"]; given && (len(q["nonce"]) != 1 || !nonceRE.MatchString(nonce)) {
		writeError(w, http.StatusBadRequest, ErrorBody{Error: "nonce must be 16–128 of A-Z a-z 0-9 _ -, once", Parameter: "nonce"})
		return
	}
	g := s.cfg.Backend.Gate(host)
	if nonce != "" && s.cfg.GateKey != nil {
		g.Nonce, g.MAC = nonce, identity.GateMAC(s.cfg.GateKey(host), g.Host, g.Allow, g.Reason, nonce)
	}
	writeJSON(w, http.StatusOK, g)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.cfg.Backend.Ready(r.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", err)
		return
	}
	fmt.Fprintln(w, "ready")
}

// ---- event stream ----

// stream serves server-sent events: every event with seq > since (or the
// Last-Event-ID the client reconnects with), of host and of one of kind
// (comma-separated) when given, then each new one as it is applied to this
// node's replica. Each message is `id: <seq>`,
// `event: event` and one line of JSON (an Event).
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r, accessRead) {
		return
	}
	q, bad := parseQuery(r, "since", "host", "kind")
	if bad != nil {
		writeError(w, http.StatusBadRequest, *bad)
		return
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, ErrorBody{Error: "Last-Event-ID is not an event sequence number", Parameter: "Last-Event-ID"})
			return
		}
		q.since = n
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, ErrorBody{Error: "streaming is not supported by this connection"})
		return
	}
	if n := s.streams.Add(1); int(n) > s.cfg.MaxStreams {
		s.streams.Add(-1)
		w.Header().Set("Retry-After", "30")
		writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: fmt.Sprintf("too many event streams on this node (API_MAX_STREAMS %d); retry later or ask another controller", s.cfg.MaxStreams)})
		return
	}
	defer s.streams.Add(-1)
	// The request is read: a stream lives longer than API_READ_TIMEOUT
	// (its keep-alives find a client that went away).
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, ": iha event stream from %s\n\n", s.cfg.Backend.Freshness().Node)
	fl.Flush()
	poll := time.NewTicker(s.cfg.EventPoll)
	defer poll.Stop()
	keep := time.NewTicker(s.cfg.StreamKeepAlive)
	defer keep.Stop()
	since := q.since
	for {
		for _, e := range s.cfg.Backend.Events(EventQuery{Since: since, Host: q.host}) {
			since = e.Seq
			if len(q.kinds) > 0 && !(EventQuery{Kinds: q.kinds}).Match(e) {
				continue
			}
			b, _ := json.Marshal(e)
			if _, err := fmt.Fprintf(w, "id: %d\nevent: event\ndata: %s\n\n", e.Seq, b); err != nil {
				return
			}
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case <-poll.C:
		}
	}
}

// ---- mutations ----

// maxLeaseBody bounds a lease request.
const maxLeaseBody = 4 << 10

// lease serves an agent's lease request: no token (agents hold none), the
// host key's signature instead, checked by cfg.Lease. Followers forward to
// the leader, which alone commits grants.
func (s *Server) lease(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	if !hostRE.MatchString(host) {
		writeError(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf("%q is not a host name", host), Parameter: "host"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxLeaseBody+1))
	if err != nil || len(body) > maxLeaseBody {
		writeError(w, http.StatusBadRequest, ErrorBody{Error: "a lease request is one JSON object of at most 4 KiB", Parameter: "body"})
		return
	}
	var req lease.Request
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		writeError(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf("body is not a lease request: %v", err), Parameter: "body"})
		return
	}
	if req.Host != host {
		writeError(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf("the request is for host %q, the path names %q", req.Host, host), Parameter: "host"})
		return
	}
	if s.cfg.Lease == nil {
		writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: "this controller serves no watchdog leases"})
		return
	}
	if s.forwardIfFollower(w, r, body) {
		return
	}
	g, err := s.cfg.Lease(r.Context(), req)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, g)
	case errors.Is(err, lease.ErrBadRequest):
		writeError(w, http.StatusBadRequest, ErrorBody{Error: err.Error(), Parameter: "body"})
	case errors.Is(err, lease.ErrSignature):
		s.log.Warn("lease request refused: its signature does not verify", "host", host, "from", r.RemoteAddr)
		writeError(w, http.StatusForbidden, ErrorBody{Error: err.Error()})
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader):
		s.writeNoLeader(w, err.Error())
	case errors.Is(err, lease.ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: err.Error()})
	default:
		s.writeErr(w, err)
	}
}

// maxBody bounds a mutation's body.
const maxBody = 64 << 10

// maxReason bounds an operator's reason.
const maxReason = 500

func (s *Server) mutation(kind MutationKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.authorize(w, r, accessWrite) {
			return
		}
		if _, bad := parseQuery(r); bad != nil {
			writeError(w, http.StatusBadRequest, *bad)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, ErrorBody{Error: "reading the body: " + err.Error(), Parameter: "body"})
			return
		}
		if len(body) > maxBody {
			writeError(w, http.StatusRequestEntityTooLarge, ErrorBody{Error: "body larger than 64 KiB", Parameter: "body"})
			return
		}
		var req MutationRequest
		if len(bytes.TrimSpace(body)) > 0 {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				writeError(w, http.StatusBadRequest, ErrorBody{Error: "body is not a JSON object with reason/on: " + err.Error(), Parameter: "body"})
				return
			}
			// One object, nothing after it: a body means exactly one thing.
			if err := dec.Decode(new(json.RawMessage)); err != io.EOF {
				writeError(w, http.StatusBadRequest, ErrorBody{Error: "body has data after its JSON object", Parameter: "body"})
				return
			}
		}
		m := Mutation{Kind: kind, Host: r.PathValue("host"), Voter: r.PathValue("id"), Reason: strings.TrimSpace(req.Reason)}
		if m.Host != "" && !hostRE.MatchString(m.Host) {
			writeError(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf("%q is not a host name", m.Host), Parameter: "host"})
			return
		}
		if kind == MutRemoveVoter && !hostRE.MatchString(m.Voter) {
			writeError(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf("%q is not a controller id (NODE_NAME)", m.Voter), Parameter: "id"})
			return
		}

		if len(m.Reason) > maxReason || strings.ContainsAny(m.Reason, "\x00\r\n") {
			writeError(w, http.StatusBadRequest, ErrorBody{Error: "reason must be one line of at most 500 bytes", Parameter: "reason"})
			return
		}
		switch kind {
		case MutConfirmFenced:
			if m.Reason == "" {
				writeError(w, http.StatusBadRequest, ErrorBody{Error: "confirm-fenced needs a reason: say how you know the host is powered off", Parameter: "reason"})
				return
			}
		case MutMaintenanceOn:
			if req.On == nil {
				writeError(w, http.StatusBadRequest, ErrorBody{Error: `maintenance needs "on": true or false`, Parameter: "on"})
				return
			}
			if !*req.On {
				m.Kind = MutMaintenanceOff
			}
		case MutShadowOn:
			if req.On == nil {
				writeError(w, http.StatusBadRequest, ErrorBody{Error: `shadow needs "on": true or false`, Parameter: "on"})
				return
			}
			if !*req.On {
				m.Kind = MutShadowOff
			}
		}
		if s.forwardIfFollower(w, r, body) {
			return
		}
		m.By = s.by(r, body)
		seq, err := s.cfg.Backend.Mutate(r.Context(), m)
		if err != nil {
			if errors.Is(err, ErrNotLeader) {
				s.writeNoLeader(w, "leadership moved while the command was sent; retry")
				return
			}
			s.writeErr(w, err)
			return
		}
		s.log.Info("operator command", "kind", string(m.Kind), "host", m.Host, "voter", m.Voter, "by", m.By)
		writeJSON(w, http.StatusOK, MutationResult{OK: true, Kind: string(m.Kind), Host: m.Host, Voter: m.Voter, By: m.By,
			Freshness: s.cfg.Backend.Freshness(), EventSeq: seq})
	}
}

var actorRE = regexp.MustCompile(`[^A-Za-z0-9@._+:/-]`)

// by is who asked, for the audit event: the actor the client names and the
// address it came from. A request forwarded by an authenticated controller
// (fromController) keeps what the first node saw; any other X-IHA-By is
// ignored (and warned about): the write token does not let its holder
// name someone else.
func (s *Server) by(r *http.Request, body []byte) string {
	fwd := r.Header.Get(headerForwarded)
	if b := r.Header.Get(headerBy); b != "" {
		if fwd != "" && s.fromController(r, b, body) {
			return b
		}
		if last := s.byWarned.Load(); time.Since(time.Unix(0, last)) > time.Minute && s.byWarned.CompareAndSwap(last, time.Now().UnixNano()) {
			s.log.Warn("an audit identity (X-IHA-By) from a client that is not an authenticated controller is ignored", "from", r.RemoteAddr, "claimed", actorRE.ReplaceAllString(b, ""))
		}
	}
	actor := actorRE.ReplaceAllString(r.Header.Get(HeaderActor), "")
	if len(actor) > 64 {
		actor = actor[:64]
	}
	if actor == "" {
		actor = "api"
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if fwd != "" {
		return actor + " from " + host + " (forwarded by " + actorRE.ReplaceAllString(fwd, "") + "; the client's address is not verified)"
	}
	return actor + " from " + host
}

// maxForwardAge bounds how old a forwarded request's proof may be.
const maxForwardAge = time.Minute

// fromController reports whether r was sent by an authenticated
// controller: a TLS client certificate of ControllerCAs, or a fresh proof
// with ForwardKey over the claimed identity and the request.
func (s *Server) fromController(r *http.Request, by string, body []byte) bool {
	if s.cfg.ControllerCAs != nil && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		inter := x509.NewCertPool()
		for _, c := range r.TLS.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := r.TLS.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: s.cfg.ControllerCAs, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
			return true
		}
	}
	if len(s.cfg.ForwardKey) == 0 {
		return false
	}
	at, err := strconv.ParseInt(r.Header.Get(headerByAt), 10, 64)
	if err != nil || time.Since(time.Unix(at, 0)).Abs() > maxForwardAge {
		return false
	}
	mac, err := base64.StdEncoding.DecodeString(r.Header.Get(headerByProof))
	return err == nil && identity.Check(s.cfg.ForwardKey, mac, forwardParts(by, r.Method, r.URL.RequestURI(), at, body)...)
}

// forwardParts are what a forwarding proof covers.
func forwardParts(by, method, uri string, at int64, body []byte) []string {
	sum := sha256.Sum256(body)
	return []string{"iha forwarded request v1", by, method, uri, strconv.FormatInt(at, 10), hex.EncodeToString(sum[:])}
}

// ---- forwarding ----

// forwardIfFollower forwards r to the leader when this node does not lead,
// writes the leader's answer (or why it could not), and reports whether it
// did. body replaces r.Body when the caller has read it.
func (s *Server) forwardIfFollower(w http.ResponseWriter, r *http.Request, body ...[]byte) bool {
	addr, self := s.cfg.Backend.LeaderAPI()
	if self {
		return false
	}
	if r.Header.Get(headerForwarded) != "" {
		s.writeNoLeader(w, "forwarded to a node that no longer leads; leadership is changing, retry")
		return true
	}
	if addr == "" {
		s.writeNoLeader(w, "this node knows no Raft leader")
		return true
	}
	scheme := "http"
	if s.cfg.TLS != nil {
		scheme = "https"
	}
	var rd io.Reader
	if len(body) > 0 {
		rd = bytes.NewReader(body[0])
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ForwardTimeout)
	defer cancel()
	u := scheme + "://" + addr + r.URL.Path
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	fr, err := http.NewRequestWithContext(ctx, r.Method, u, rd)
	if err != nil {
		s.writeErr(w, err)
		return true
	}
	for _, h := range []string{"Authorization", "Content-Type", "Accept"} {
		if v := r.Header.Get(h); v != "" {
			fr.Header.Set(h, v)
		}
	}
	fr.Header.Set(headerForwarded, s.cfg.Backend.Freshness().Node)
	if a := r.Header.Get(HeaderActor); a != "" {
		fr.Header.Set(HeaderActor, a)
	}
	if r.Method != http.MethodGet {
		var b []byte
		if len(body) > 0 {
			b = body[0]
		}
		by := s.by(r, b)
		fr.Header.Set(headerBy, by)
		if len(s.cfg.ForwardKey) > 0 {
			at := time.Now().Unix()
			fr.Header.Set(headerByAt, strconv.FormatInt(at, 10))
			fr.Header.Set(headerByProof, base64.StdEncoding.EncodeToString(identity.Sum(s.cfg.ForwardKey,
				forwardParts(by, fr.Method, fr.URL.RequestURI(), at, b)...)))
		}
	}
	resp, err := s.cfg.Forward.Do(fr)
	if err != nil {
		// The error names the leader's address, never a header.
		writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: fmt.Sprintf("the leader's API at %s is unreachable from this node: %v", addr, unwrapURLError(err)), Leader: addr})
		return true
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Header().Set("X-IHA-Answered-By", "leader "+addr)
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<20))
	return true
}

func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// ---- answers ----

func (s *Server) writeNoLeader(w http.ResponseWriter, why string) {
	addr, _ := s.cfg.Backend.LeaderAPI()
	writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: "no Raft leader available: " + why, Leader: addr})
}

func (s *Server) writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, ErrNoLeader), errors.Is(err, ErrNotLeader):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	if code == http.StatusInternalServerError {
		s.log.Error("status API request failed", "err", err)
	}
	writeError(w, code, ErrorBody{Error: err.Error()})
}

func writeError(w http.ResponseWriter, code int, b ErrorBody) {
	writeJSON(w, code, b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// limitListener caps the connections served at once: beyond the cap a
// new connection is closed as soon as it is accepted (and counted, with a
// warning a minute at most), so that a flood of idle connections cannot
// take every file descriptor or starve the agents' gate.
type limitListener struct {
	net.Listener
	sem     chan struct{}
	log     *slog.Logger
	refused atomic.Uint64
	warned  atomic.Int64
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			n := l.refused.Add(1)
			if last := l.warned.Load(); time.Since(time.Unix(0, last)) > time.Minute && l.warned.CompareAndSwap(last, time.Now().UnixNano()) {
				l.log.Warn("status API: connection refused: API_MAX_CONNECTIONS reached", "max", cap(l.sem), "from", c.RemoteAddr().String(), "refused_total", n)
			}
			_ = c.Close()
		}
	}
}

// limitConn gives its slot back once, when closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
