package redfishsim

import (
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ihaproject/iha/fence"
)

// Options configure a simulated BMC. The zero value is a plain-HTTP BMC on
// 127.0.0.1 with one powered-on system, user admin/password, and power
// transitions that take effect at once.
type Options struct {
	// Addr is the listen address; default "127.0.0.1:0". Only loopback
	// addresses are accepted.
	Addr string
	// Username and Password are the BMC credentials (default admin/password).
	Username, Password string
	// Systems are the computer systems of this BMC (default: one, on).
	Systems []System
	// TransitionDelay is how long after an accepted reset PowerState
	// changes (the emulator takes 1–11 s).
	TransitionDelay time.Duration
	// SessionService enables /redfish/v1/SessionService and token auth.
	SessionService bool
	// AlreadyOffStatus is the answer to ForceOff or GracefulShutdown on a
	// system that is already off: 0 accepts it with 204 and changes nothing
	// (the emulator); 409 or 400 refuse it like iDRAC does.
	AlreadyOffStatus int
	// AlreadyOnStatus is the same for On and ForceOn on a system that is on.
	AlreadyOnStatus int
	// ResponseDelay delays every answer (a slow BMC).
	ResponseDelay time.Duration
	// TLS serves HTTPS with a certificate for the listen address issued by
	// this CA.
	TLS *CA
	// ClientCAs, with TLS, requires client certificates signed by them.
	ClientCAs *x509.CertPool
	// Logger receives one debug line per request; default discards.
	Logger *slog.Logger
}

// System is one computer system of the BMC.
type System struct {
	// UUID is the system id in URLs (default: a random UUID).
	UUID string
	// Name answers 307 to the UUID URL (default "System.Embedded.1" for the
	// first system, "System.Embedded.N" after).
	Name string
	// Off starts the system powered off.
	Off bool
}

// Transition is a completed power change of one system.
type Transition struct {
	UUID, Name string
	From, To   fence.PowerState
}

// Server is a running simulated BMC. Its methods are safe for concurrent use.
type Server struct {
	opts     Options
	ln       net.Listener
	srv      *http.Server
	url      string
	closing  chan struct{}
	closeOne sync.Once
	logger   *slog.Logger

	mu          sync.Mutex
	systems     []*system // in Systems order
	sessions    map[string]string
	requests    map[string]int // "METHOD path" → count
	total       int
	failLeft    int
	failStatus  int
	delay       time.Duration
	transDelay  time.Duration
	alreadyOff  int
	alreadyOn   int
	resets      []Reset
	onTransit   []func(Transition)
	sessionsOn  bool
	nextSession int
	refuseLeft  int
	refuseCode  int
}

// Reset is one accepted or refused ComputerSystem.Reset request.
type Reset struct {
	UUID      string
	ResetType string
	Status    int
}

type system struct {
	uuid, name string
	power      fence.PowerState
	gen        int // bumps on every scheduled transition, cancelling older ones
	timer      *time.Timer
	target     fence.PowerState // pending target; PowerUnknown when none
}

// resetTypes the simulator understands; anything else answers 501.
var resetTypes = []string{"On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart",
	"Nmi", "ForceOn", "PushPowerButton", "PowerCycle"}

// Start starts a simulated BMC. Stop it with Close (t.Cleanup(s.Close)).
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("redfishsim: listen address: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("redfishsim: listen address %s is not a loopback IP", host)
	}
	if opts.Username == "" {
		opts.Username = "admin"
	}
	if opts.Password == "" {
		opts.Password = "password"
	}
	if len(opts.Systems) == 0 {
		opts.Systems = []System{{}}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:       opts,
		closing:    make(chan struct{}),
		logger:     opts.Logger,
		sessions:   map[string]string{},
		requests:   map[string]int{},
		delay:      opts.ResponseDelay,
		transDelay: opts.TransitionDelay,
		alreadyOff: opts.AlreadyOffStatus,
		alreadyOn:  opts.AlreadyOnStatus,
		sessionsOn: opts.SessionService,
	}
	seen := map[string]bool{}
	for i, sp := range opts.Systems {
		sys := &system{uuid: sp.UUID, name: sp.Name, power: fence.PowerOn}
		if sys.uuid == "" {
			sys.uuid = newUUID()
		}
		if sys.name == "" {
			sys.name = "System.Embedded." + strconv.Itoa(i+1)
		}
		if sp.Off {
			sys.power = fence.PowerOff
		}
		if seen[sys.uuid] || seen[sys.name] {
			return nil, fmt.Errorf("redfishsim: duplicate system id or name %q/%q", sys.uuid, sys.name)
		}
		seen[sys.uuid], seen[sys.name] = true, true
		s.systems = append(s.systems, sys)
	}

	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("redfishsim: %w", err)
	}
	scheme := "http"
	if opts.TLS != nil {
		cert, err := opts.TLS.IssueServer(host, "localhost")
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("redfishsim: %w", err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if opts.ClientCAs != nil {
			cfg.ClientCAs = opts.ClientCAs
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		ln = tls.NewListener(ln, cfg)
		scheme = "https"
	}
	s.ln = ln
	s.url = scheme + "://" + ln.Addr().String()
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serve),
		ReadHeaderTimeout: 10 * time.Second,
		// TLS handshake failures (a client with the wrong CA) are expected
		// in tests; keep them out of stderr.
		ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server, its connections and pending transitions.
func (s *Server) Close() {
	s.closeOne.Do(func() {
		close(s.closing)
		_ = s.srv.Close()
		s.mu.Lock()
		for _, sys := range s.systems {
			if sys.timer != nil {
				sys.timer.Stop()
			}
		}
		s.mu.Unlock()
	})
}

// URL is the base URL, e.g. http://127.0.0.1:40123.
func (s *Server) URL() string { return s.url }

// Host is the listen IP.
func (s *Server) Host() string { return s.ln.Addr().(*net.TCPAddr).IP.String() }

// Port is the listen port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// UUIDs lists the system ids in order.
func (s *Server) UUIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.systems))
	for i, sys := range s.systems {
		out[i] = sys.uuid
	}
	return out
}

// PowerState is the power of a system, by UUID or name ("" for the first).
func (s *Server) PowerState(id string) fence.PowerState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sys := s.find(id); sys != nil {
		return sys.power
	}
	return fence.PowerUnknown
}

// SetPowerState sets a system's power at once, cancelling any pending
// transition. Transition callbacks run when the state changes.
func (s *Server) SetPowerState(id string, p fence.PowerState) {
	s.mu.Lock()
	sys := s.find(id)
	if sys == nil {
		s.mu.Unlock()
		return
	}
	sys.gen++
	if sys.timer != nil {
		sys.timer.Stop()
	}
	sys.target = fence.PowerUnknown
	from := sys.power
	sys.power = p
	cbs := append([]func(Transition){}, s.onTransit...)
	tr := Transition{UUID: sys.uuid, Name: sys.name, From: from, To: p}
	s.mu.Unlock()
	if from != p {
		for _, cb := range cbs {
			cb(tr)
		}
	}
}

// OnTransition adds a callback run after every power change of any system,
// outside the simulator's lock, in the goroutine that made the change.
func (s *Server) OnTransition(cb func(Transition)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onTransit = append(s.onTransit, cb)
}

// Requests is the number of requests received.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// RequestCount is the number of requests with this method and path.
func (s *Server) RequestCount(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[method+" "+path]
}

// Resets lists the reset requests received, in order.
func (s *Server) Resets() []Reset {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Reset(nil), s.resets...)
}

// ActiveSessions is the number of sessions not yet deleted.
func (s *Server) ActiveSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// FailNext makes the next n requests (any path) answer status, e.g. a burst
// of 503 from a BMC that is rebooting its web server.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLeft, s.failStatus = n, status
}

// RefuseNextResets makes the next n ComputerSystem.Reset requests answer
// status whatever the power state, like a BMC busy after a previous reset.
func (s *Server) RefuseNextResets(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseLeft, s.refuseCode = n, status
}

// SetResponseDelay delays every answer by d from now on.
func (s *Server) SetResponseDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetTransitionDelay changes the delay of later resets.
func (s *Server) SetTransitionDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.transDelay = d
}

// SetAlreadyOffStatus changes Options.AlreadyOffStatus.
func (s *Server) SetAlreadyOffStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alreadyOff = code
}

// find returns a system by UUID or name; "" is the first. Caller holds mu.
func (s *Server) find(id string) *system {
	if id == "" {
		return s.systems[0]
	}
	for _, sys := range s.systems {
		if sys.uuid == id || sys.name == id {
			return sys
		}
	}
	return nil
}

const (
	rootPath     = "/redfish/v1"
	systemsPath  = "/redfish/v1/Systems"
	sessionSvc   = "/redfish/v1/SessionService"
	sessionsPath = "/redfish/v1/SessionService/Sessions"
)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	s.mu.Lock()
	s.total++
	s.requests[r.Method+" "+path]++
	delay := s.delay
	fail := 0
	if s.failLeft > 0 {
		s.failLeft--
		fail = s.failStatus
	}
	s.mu.Unlock()
	s.logger.Debug("redfishsim request", "method", r.Method, "path", path)

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.closing:
			t.Stop()
			return
		}
	}
	if fail != 0 {
		writeError(w, fail, "Base.1.0.InternalError", "simulated failure")
		return
	}

	switch {
	case path == rootPath:
		s.serviceRoot(w, r)
		return
	case path == sessionsPath && r.Method == http.MethodPost && s.sessionsEnabled():
		s.createSession(w, r)
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="redfishsim"`)
		writeError(w, http.StatusUnauthorized, "Base.1.0.InsufficientPrivilege", "authentication required")
		return
	}
	switch {
	case path == systemsPath && r.Method == http.MethodGet:
		s.systemsCollection(w)
	case strings.HasPrefix(path, systemsPath+"/"):
		s.systemPath(w, r, strings.TrimPrefix(path, systemsPath+"/"))
	case path == sessionSvc && r.Method == http.MethodGet && s.sessionsEnabled():
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": sessionSvc, "@odata.type": "#SessionService.v1_1_0.SessionService",
			"Id": "SessionService", "Name": "Session Service", "ServiceEnabled": true,
			"Sessions": map[string]string{"@odata.id": sessionsPath},
		})
	case strings.HasPrefix(path, sessionsPath+"/") && r.Method == http.MethodDelete && s.sessionsEnabled():
		s.deleteSession(w, strings.TrimPrefix(path, sessionsPath+"/"))
	default:
		writeError(w, http.StatusNotFound, "Base.1.0.ResourceMissingAtURI", "no resource at "+path)
	}
}

func (s *Server) sessionsEnabled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessionsOn
}

func (s *Server) authorized(r *http.Request) bool {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, t := range s.sessions {
			if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
				return true
			}
		}
		return false
	}
	u, p, ok := r.BasicAuth()
	return ok && s.credentialsOK(u, p)
}

func (s *Server) credentialsOK(u, p string) bool {
	uok := subtle.ConstantTimeCompare([]byte(u), []byte(s.opts.Username)) == 1
	pok := subtle.ConstantTimeCompare([]byte(p), []byte(s.opts.Password)) == 1
	return uok && pok
}

func (s *Server) serviceRoot(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, "Base.1.0.ActionNotSupported", "method not allowed")
		return
	}
	root := map[string]any{
		"@odata.id":      rootPath,
		"@odata.type":    "#ServiceRoot.v1_5_0.ServiceRoot",
		"Id":             "RootService",
		"Name":           "Redfish Service",
		"RedfishVersion": "1.5.0",
		"UUID":           "92384634-2938-2342-8820-489239905423",
		"Systems":        map[string]string{"@odata.id": systemsPath},
	}
	if s.sessionsEnabled() {
		root["SessionService"] = map[string]string{"@odata.id": sessionSvc}
		root["Links"] = map[string]any{"Sessions": map[string]string{"@odata.id": sessionsPath}}
	}
	writeJSON(w, http.StatusOK, root)
}

func (s *Server) systemsCollection(w http.ResponseWriter) {
	s.mu.Lock()
	members := make([]map[string]string, len(s.systems))
	for i, sys := range s.systems {
		members[i] = map[string]string{"@odata.id": systemsPath + "/" + sys.uuid}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id":           systemsPath,
		"@odata.type":         "#ComputerSystemCollection.ComputerSystemCollection",
		"Name":                "Computer System Collection",
		"Members@odata.count": len(members),
		"Members":             members,
	})
}

// systemPath serves /redfish/v1/Systems/{id}[/rest].
func (s *Server) systemPath(w http.ResponseWriter, r *http.Request, tail string) {
	id, rest, _ := strings.Cut(tail, "/")
	s.mu.Lock()
	sys := s.find(id)
	var uuid string
	if sys != nil {
		uuid = sys.uuid
	}
	s.mu.Unlock()
	if sys == nil {
		writeError(w, http.StatusNotFound, "Base.1.0.ResourceMissingAtURI", "no system "+id)
		return
	}
	if id != uuid {
		// The emulator's ids are UUIDs; a name answers with the UUID URL.
		loc := systemsPath + "/" + uuid
		if rest != "" {
			loc += "/" + rest
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	switch {
	case rest == "" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.systemJSON(sys))
	case rest == "Actions/ComputerSystem.Reset" && r.Method == http.MethodPost:
		s.reset(w, r, sys)
	default:
		writeError(w, http.StatusNotFound, "Base.1.0.ResourceMissingAtURI", "no resource")
	}
}

func (s *Server) systemJSON(sys *system) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]any{
		"@odata.id":   systemsPath + "/" + sys.uuid,
		"@odata.type": "#ComputerSystem.v1_1_0.ComputerSystem",
		"Id":          sys.uuid,
		"Name":        sys.name,
		"UUID":        sys.uuid,
		"PowerState":  powerString(sys.power),
		"Actions": map[string]any{
			"#ComputerSystem.Reset": map[string]any{
				"target":                            systemsPath + "/" + sys.uuid + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": resetTypes,
			},
		},
	}
}

func powerString(p fence.PowerState) string {
	switch p {
	case fence.PowerOn:
		return "On"
	case fence.PowerOff:
		return "Off"
	}
	return "Unknown"
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request, sys *system) {
	var body struct{ ResetType string }
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Base.1.0.MalformedJSON", "body is not JSON")
		return
	}
	s.mu.Lock()
	refuse := 0
	if s.refuseLeft > 0 {
		s.refuseLeft--
		refuse = s.refuseCode
	}
	s.mu.Unlock()
	status, msg := refuse, "the BMC is busy"
	if refuse == 0 {
		status, msg = s.applyReset(sys, body.ResetType)
	}
	s.mu.Lock()
	s.resets = append(s.resets, Reset{UUID: sys.uuid, ResetType: body.ResetType, Status: status})
	s.mu.Unlock()
	if status != http.StatusNoContent {
		writeError(w, status, "Base.1.0.ActionNotSupported", msg)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// applyReset decides the answer to a reset and schedules the transition.
func (s *Server) applyReset(sys *system, resetType string) (int, string) {
	s.mu.Lock()
	var target fence.PowerState
	restart := false
	switch resetType {
	case "On", "ForceOn":
		target = fence.PowerOn
	case "ForceOff", "GracefulShutdown":
		target = fence.PowerOff
	case "PushPowerButton":
		target = fence.PowerOn
		if sys.power == fence.PowerOn {
			target = fence.PowerOff
		}
	case "ForceRestart", "GracefulRestart", "PowerCycle":
		target, restart = fence.PowerOn, sys.power == fence.PowerOn
	case "Nmi":
		s.mu.Unlock()
		return http.StatusNoContent, ""
	default:
		s.mu.Unlock()
		return http.StatusNotImplemented, "reset type not supported"
	}
	if !restart && sys.power == target && (sys.target == fence.PowerUnknown || sys.target == target) {
		code := s.alreadyOn
		if target == fence.PowerOff {
			code = s.alreadyOff
		}
		s.mu.Unlock()
		if code != 0 {
			return code, "system is already " + powerString(target)
		}
		return http.StatusNoContent, "" // the emulator accepts and changes nothing
	}
	if sys.target == target && !restart {
		s.mu.Unlock()
		return http.StatusNoContent, "" // already on its way
	}
	sys.gen++
	gen := sys.gen
	if sys.timer != nil {
		sys.timer.Stop()
	}
	sys.target = target
	delay := s.transDelay
	if restart {
		sys.target = fence.PowerOff
	}
	first := sys.target
	s.mu.Unlock()

	var step func(to fence.PowerState, then fence.PowerState)
	step = func(to, then fence.PowerState) {
		s.mu.Lock()
		if sys.gen != gen {
			s.mu.Unlock()
			return
		}
		from := sys.power
		sys.power = to
		sys.target = fence.PowerUnknown
		next := false
		if then != fence.PowerUnknown && then != to {
			sys.target = then
			next = true
		}
		cbs := append([]func(Transition){}, s.onTransit...)
		s.mu.Unlock()
		if from != to {
			for _, cb := range cbs {
				cb(Transition{UUID: sys.uuid, Name: sys.name, From: from, To: to})
			}
		}
		if next {
			s.schedule(sys, gen, delay, func() { step(then, fence.PowerUnknown) })
		}
	}
	then := fence.PowerUnknown
	if restart {
		then = fence.PowerOn
	}
	s.schedule(sys, gen, delay, func() { step(first, then) })
	return http.StatusNoContent, ""
}

// schedule runs f after d (at once, synchronously, when d is 0).
func (s *Server) schedule(sys *system, gen int, d time.Duration, f func()) {
	if d <= 0 {
		f()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sys.gen != gen {
		return
	}
	select {
	case <-s.closing:
		return
	default:
	}
	sys.timer = time.AfterFunc(d, f)
}

func (s *Server) createSession(w http.ResponseWriter, r *http.Request) {
	var body struct{ UserName, Password string }
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Base.1.0.MalformedJSON", "body is not JSON")
		return
	}
	if !s.credentialsOK(body.UserName, body.Password) {
		writeError(w, http.StatusUnauthorized, "Base.1.0.NoValidSession", "invalid credentials")
		return
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	s.mu.Lock()
	s.nextSession++
	id := strconv.Itoa(s.nextSession)
	s.sessions[id] = hex.EncodeToString(tok)
	token := s.sessions[id]
	s.mu.Unlock()
	loc := sessionsPath + "/" + id
	w.Header().Set("X-Auth-Token", token)
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusCreated, map[string]any{
		"@odata.id": loc, "@odata.type": "#Session.v1_0_0.Session", "Id": id, "Name": "User Session",
		"UserName": body.UserName,
	})
}

func (s *Server) deleteSession(w http.ResponseWriter, id string) {
	s.mu.Lock()
	_, ok := s.sessions[id]
	delete(s.sessions, id)
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Base.1.0.ResourceMissingAtURI", "no session")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"code": code, "message": msg,
		"@Message.ExtendedInfo": []map[string]string{{"MessageId": code, "Message": msg}},
	}})
}

func newUUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("redfishsim: no randomness"))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
