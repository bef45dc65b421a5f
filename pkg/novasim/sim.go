package novasim

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"
)

// Options configure a Sim. The zero value gives Nova's defaults.
type Options struct {
	ReportInterval      time.Duration // Nova report_interval; default 10s
	ServiceDownTime     time.Duration // default 60s; if <= ReportInterval, 2.5×ReportInterval is used (Nova does)
	StartupDelay        time.Duration // a (re)started compute's first heartbeat comes after this; 0 = default 5s (Nova); negative = none
	EvacuationDelay     time.Duration // accepted evacuation → server rebuilt on dest, migration "done"; default 1s
	RestartCleanupDelay time.Duration // restarted source compute starts cleaning up its evacuations after this; default 0
	// RestartCleanupStep is the time between two evacuation migrations the
	// restarted source marks completed: real Nova saves them one at a time
	// (~0.3 s each on the lab), so forced_down=false can be refused after
	// the first one turned completed. Default 0: all at the same instant.
	RestartCleanupStep time.Duration

	// NoStartupDelay makes the startup delay zero, like a negative
	// StartupDelay (a zero StartupDelay means the 5s default).
	NoStartupDelay bool

	Username, Password, Project string // Keystone credentials accepted; defaults admin / secret / admin
	// An application credential that Keystone also accepts (by id, or by
	// name with the user). Defaults: "iha-appcred-id", "iha", "appcred-secret".
	AppCredentialID, AppCredentialName, AppCredentialSecret string

	Region   string        // default "regionOne"
	TokenTTL time.Duration // default 1h
	Logger   *slog.Logger  // default discards

	// Seed makes the scheduler's tie-breaking reproducible; 0 picks a random seed.
	Seed uint64

	// ClockOffset runs the simulated Nova's clock this far from the
	// machine's (negative: behind), as a controller without NTP would:
	// every time Nova stamps (updated_at, created_at, markers it reads)
	// and its own up/down rule use it; durations are unaffected.
	ClockOffset time.Duration

	clock func() time.Time // tests of this package inject a fake clock
}

func (o *Options) setDefaults() {
	if o.ReportInterval <= 0 {
		o.ReportInterval = 10 * time.Second
	}
	if o.ServiceDownTime <= 0 {
		o.ServiceDownTime = 60 * time.Second
	}
	if o.ServiceDownTime <= o.ReportInterval {
		// nova/servicegroup/api.py: "Report interval must be less than
		// service down time"; it then uses 2.5 × report_interval.
		o.ServiceDownTime = o.ReportInterval * 5 / 2
	}
	switch {
	case o.NoStartupDelay || o.StartupDelay < 0:
		o.StartupDelay = 0
	case o.StartupDelay == 0:
		o.StartupDelay = 5 * time.Second
	}
	if o.EvacuationDelay <= 0 {
		o.EvacuationDelay = time.Second
	}
	if o.RestartCleanupDelay < 0 {
		o.RestartCleanupDelay = 0
	}
	if o.RestartCleanupStep < 0 {
		o.RestartCleanupStep = 0
	}
	if o.Username == "" {
		o.Username = "admin"
	}
	if o.Password == "" {
		o.Password = "secret"
	}
	if o.Project == "" {
		o.Project = "admin"
	}
	if o.AppCredentialID == "" {
		o.AppCredentialID = "iha-appcred-id"
	}
	if o.AppCredentialName == "" {
		o.AppCredentialName = "iha"
	}
	if o.AppCredentialSecret == "" {
		o.AppCredentialSecret = "appcred-secret"
	}
	if o.Region == "" {
		o.Region = "regionOne"
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = time.Hour
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	if off, c := o.ClockOffset, o.clock; off != 0 {
		o.clock = func() time.Time { return c().Add(off) }
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Flavor is a flavor fixture.
type Flavor struct {
	ID         string // default: a new UUID
	Name       string
	VCPUs      int // default 1
	RAM        int // MiB, default 512
	Disk       int // GiB, default 1
	Ephemeral  int
	Swap       int
	Private    bool // not public: listed only with is_public=None/false
	ExtraSpecs map[string]string
}

// Image is a Glance image fixture.
type Image struct {
	ID         string // default: a new UUID
	Name       string
	Tags       []string
	Properties map[string]string // shown as top-level string fields
	Visibility string            // default "public"
	// Hidden is Glance's os_hidden: the image list leaves it out unless
	// asked for os_hidden=true; GET by id shows it.
	Hidden bool
}

// Aggregate is a host aggregate fixture.
type Aggregate struct {
	Name             string
	AvailabilityZone string
	Hosts            []string
	Metadata         map[string]string
}

// ServerSpec places a server directly on a host, bypassing the scheduler.
type ServerSpec struct {
	ID           string // default: a new UUID
	Name         string
	Host         string // required: a compute added with AddCompute
	Status       string // ACTIVE (default), SHUTOFF, ERROR, PAUSED, SUSPENDED, SHELVED_OFFLOADED
	TaskState    string // "" = null; evacuate ignores it (Zed checks vm_state only)
	FlavorID     string // must exist; "" uses an implicit m1.tiny-like flavor
	ImageID      string // "" = boot from volume
	Metadata     map[string]string
	Locked       bool
	LockedReason string
	TenantID     string // default: the admin project
	UserID       string // default: the admin user
}

// ServiceState is a snapshot of a service row as Nova would compute it now.
type ServiceState struct {
	ID             string // UUID
	IntID          int
	Host           string
	Binary         string
	Zone           string
	Status         string // enabled | disabled
	State          string // up | down
	ForcedDown     bool
	DisabledReason string
	UpdatedAt      time.Time // truncated to whole seconds
	LastSeenUp     time.Time // last heartbeat, truncated to whole seconds
	Running        bool      // the process heartbeats (not stopped)
}

// ServerState is a snapshot of a server.
type ServerState struct {
	ID           string
	Name         string
	Status       string // API status: ACTIVE, SHUTOFF, ERROR, REBUILD, …
	VMState      string
	TaskState    string // "" = null
	Host         string
	TenantID     string
	ImageID      string
	FlavorID     string
	Metadata     map[string]string
	Locked       bool
	LockedReason string
	Created      time.Time
	Updated      time.Time
}

// MigrationState is a snapshot of a migration row.
type MigrationState struct {
	ID            int
	UUID          string
	InstanceUUID  string
	SourceCompute string
	DestCompute   string
	Status        string
	MigrationType string
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Fault makes a route answer as configured instead of (or before) its
// normal behaviour.
type Fault struct {
	Status  int           // HTTP status to answer; 0 = answer normally after Latency
	Body    string        // body for Status; "" = a Nova-style error body
	Latency time.Duration // delay before answering
	Times   int           // how many calls it affects; 0 = forever
}

// Sim is a simulated Keystone v3, Nova (Zed) and Glance over real HTTP.
// All methods are safe for concurrent use.
type Sim struct {
	opts Options
	log  *slog.Logger
	ln   net.Listener
	srv  *http.Server
	base string

	now func() time.Time // the clock (time.Now outside this package's tests)

	userID    string
	projectID string

	mu          sync.Mutex
	rng         *rand.Rand
	tokens      map[string]tokenInfo
	callsBy     map[[2]string]int // (identity, route) → authenticated requests
	services    []*service        // by intID order
	computes    map[string]*service
	schedulers  map[string]*service
	nextSvcID   int
	servers     map[string]*server
	serverOrder []*server // creation order
	migrations  []*migration
	pending     []*migration // evacuations not yet done/error
	cleanups    []*service   // restarted computes with a pending cleanup
	nextMigID   int
	flavors     map[string]*flavor
	flavorOrder []*flavor
	images      map[string]*image
	imageOrder  []*image
	aggregates  []*aggregate
	nextAggID   int
	faults      map[string]*Fault
	calls       map[string]int
	serverCalls map[[2]string]int
}

// New starts a simulator listening on 127.0.0.1 on a free port.
func New(opts Options) (*Sim, error) {
	opts.setDefaults()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("novasim: listen: %w", err)
	}
	seed := opts.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	s := &Sim{
		opts:        opts,
		log:         opts.Logger,
		ln:          ln,
		base:        "http://" + ln.Addr().String(),
		now:         opts.clock,
		userID:      newHex(16),
		projectID:   newHex(16),
		rng:         rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		tokens:      map[string]tokenInfo{},
		callsBy:     map[[2]string]int{},
		computes:    map[string]*service{},
		schedulers:  map[string]*service{},
		servers:     map[string]*server{},
		flavors:     map[string]*flavor{},
		images:      map[string]*image{},
		faults:      map[string]*Fault{},
		calls:       map[string]int{},
		serverCalls: map[[2]string]int{},
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("novasim: serve", "err", err)
		}
	}()
	s.log.Info("novasim listening", "url", s.base)
	return s, nil
}

// Close stops the HTTP server and drops open connections.
func (s *Sim) Close() { _ = s.srv.Close() }

// URL is the base URL, e.g. http://127.0.0.1:40123.
func (s *Sim) URL() string { return s.base }

// AuthURL is the Keystone v3 endpoint.
func (s *Sim) AuthURL() string { return s.base + "/identity/v3" }

// ComputeURL is the Nova v2.1 endpoint (as in the catalog).
func (s *Sim) ComputeURL() string { return s.base + "/compute/v2.1" }

// ImageURL is the Glance endpoint (unversioned, as in the catalog).
func (s *Sim) ImageURL() string { return s.base + "/image" }

// ProjectID is the id of the admin project tokens are scoped to.
func (s *Sim) ProjectID() string { return s.projectID }

// ServiceDownTime is the effective service_down_time.
func (s *Sim) ServiceDownTime() time.Duration { return s.opts.ServiceDownTime }

// ---- fixtures ----

// AddCompute adds a nova-compute service on host in zone ("" = "nova") that
// heartbeats from now on (no StartupDelay), and returns its UUID. Adding an
// existing host returns the existing id.
func (s *Sim) AddCompute(host, zone string) string {
	if zone == "" {
		zone = "nova"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sv, ok := s.computes[host]; ok {
		return sv.uuid
	}
	now := s.now()
	sv := s.newServiceLocked(host, "nova-compute", zone, now)
	s.computes[host] = sv
	return sv.uuid
}

// AddScheduler adds a nova-scheduler service on host; it heartbeats.
func (s *Sim) AddScheduler(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.schedulers[host]; ok {
		return
	}
	s.schedulers[host] = s.newServiceLocked(host, "nova-scheduler", "internal", s.now())
}

func (s *Sim) newServiceLocked(host, binary, zone string, now time.Time) *service {
	s.nextSvcID++
	sv := &service{
		intID:     s.nextSvcID,
		uuid:      newUUID(),
		host:      host,
		binary:    binary,
		zone:      zone,
		createdAt: now.Unix(),
		running:   true,
		hbStart:   now.UnixNano(),
		guests:    map[string]struct{}{},
	}
	sv.prefix = sv.appendStatic(nil)
	s.services = append(s.services, sv)
	return sv
}

// AddFlavor adds a flavor and returns its id.
func (s *Sim) AddFlavor(f Flavor) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addFlavorLocked(f).id
}

func (s *Sim) addFlavorLocked(f Flavor) *flavor {
	if f.ID == "" {
		f.ID = newUUID()
	}
	if f.Name == "" {
		f.Name = "flavor-" + f.ID[:8]
	}
	if f.VCPUs == 0 {
		f.VCPUs = 1
	}
	if f.RAM == 0 {
		f.RAM = 512
	}
	if f.Disk == 0 && f.Ephemeral == 0 {
		f.Disk = 1
	}
	fl := &flavor{id: f.ID, intID: len(s.flavorOrder) + 1, name: f.Name, vcpus: f.VCPUs, ram: f.RAM, disk: f.Disk, ephemeral: f.Ephemeral,
		swap: f.Swap, public: !f.Private, extraSpecs: copyMap(f.ExtraSpecs)}
	if old, ok := s.flavors[fl.id]; ok {
		fl.intID = old.intID
		*old = *fl
		return old
	}
	s.flavors[fl.id] = fl
	s.flavorOrder = append(s.flavorOrder, fl)
	return fl
}

// AddImage adds a Glance image and returns its id.
func (s *Sim) AddImage(i Image) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i.ID == "" {
		i.ID = newUUID()
	}
	if i.Name == "" {
		i.Name = "image-" + i.ID[:8]
	}
	if i.Visibility == "" {
		i.Visibility = "public"
	}
	now := s.now().UTC()
	im := &image{id: i.ID, name: i.Name, tags: slices.Clone(i.Tags), props: copyMap(i.Properties),
		visibility: i.Visibility, hidden: i.Hidden, created: now, seq: len(s.imageOrder)}
	if im.tags == nil {
		im.tags = []string{}
	}
	if _, ok := s.images[im.id]; !ok {
		s.imageOrder = append(s.imageOrder, im)
	} else {
		for n, old := range s.imageOrder {
			if old.id == im.id {
				im.seq = old.seq
				s.imageOrder[n] = im
			}
		}
	}
	s.images[im.id] = im
	return im.id
}

// InFlightEvacuation is a fixture: an evacuation of a server that some
// earlier controller requested and that Nova is still working on (status
// pre-migrating, or any given), created at CreatedAt, that never progresses
// by itself. The server is left rebuilding, as Nova shows it.
type InFlightEvacuation struct {
	ServerID  string
	Status    string // default "pre-migrating"
	CreatedAt time.Time
}

// AddInFlightEvacuation adds the fixture's migration and returns its id.
func (s *Sim) AddInFlightEvacuation(e InFlightEvacuation) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	srv, ok := s.servers[e.ServerID]
	if !ok {
		panic("novasim: AddInFlightEvacuation of unknown server " + e.ServerID)
	}
	if e.Status == "" {
		e.Status = "pre-migrating"
	}
	s.nextMigID++
	m := &migration{id: s.nextMigID, uuid: newUUID(), instance: srv.id, source: srv.host, sourceNode: srv.host,
		status: e.Status, mtype: "evacuation", created: e.CreatedAt, updated: e.CreatedAt, flavorID: srv.flavor.intID,
		userID: s.userID, projectID: s.projectID}
	s.migrations = append(s.migrations, m)
	srv.taskState = "rebuilding"
	return m.id
}

// AddAggregate adds a host aggregate and returns its id.
func (s *Sim) AddAggregate(a Aggregate) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	ag := s.newAggregateLocked(a.Name, a.AvailabilityZone)
	ag.hosts = slices.Clone(a.Hosts)
	for k, v := range a.Metadata {
		ag.metadata[k] = v
	}
	if a.AvailabilityZone != "" {
		ag.metadata["availability_zone"] = a.AvailabilityZone
	}
	return ag.id
}

func (s *Sim) newAggregateLocked(name, az string) *aggregate {
	s.nextAggID++
	now := trunc(s.now().UTC())
	ag := &aggregate{id: s.nextAggID, uuid: newUUID(), name: name, az: az, hosts: []string{},
		metadata: map[string]string{}, created: now}
	s.aggregates = append(s.aggregates, ag)
	return ag
}

// AddServer places a server directly on spec.Host and returns its id. It
// panics on a spec that names an unknown host or flavor: fixtures are code.
func (s *Sim) AddServer(spec ServerSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.computes[spec.Host]
	if !ok {
		panic(fmt.Sprintf("novasim: AddServer: unknown compute host %q", spec.Host))
	}
	var fl *flavor
	if spec.FlavorID == "" {
		fl = s.defaultFlavorLocked()
	} else if fl, ok = s.flavors[spec.FlavorID]; !ok {
		panic(fmt.Sprintf("novasim: AddServer: unknown flavor %q", spec.FlavorID))
	}
	vm, ok := vmStateForStatus(spec.Status)
	if !ok {
		panic(fmt.Sprintf("novasim: AddServer: unsupported status %q", spec.Status))
	}
	if spec.ID == "" {
		spec.ID = newUUID()
	}
	if spec.Name == "" {
		spec.Name = "server-" + spec.ID[:8]
	}
	now := s.now().UTC()
	srv := &server{
		id: spec.ID, name: spec.Name, host: spec.Host, vmState: vm, taskState: spec.TaskState,
		tenantID: orDefault(spec.TenantID, s.projectID), userID: orDefault(spec.UserID, s.userID),
		imageID: spec.ImageID, flavor: fl.snapshot(), metadata: copyMap(spec.Metadata),
		locked: spec.Locked, lockedReason: spec.LockedReason, created: now, updated: now, launched: now,
		az: sv.zone,
	}
	s.insertServerLocked(srv)
	sv.guests[srv.id] = struct{}{}
	return srv.id
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func (s *Sim) defaultFlavorLocked() *flavor {
	if fl, ok := s.flavors["novasim-default"]; ok {
		return fl
	}
	return s.addFlavorLocked(Flavor{ID: "novasim-default", Name: "m1.tiny", VCPUs: 1, RAM: 512, Disk: 1})
}

func (s *Sim) insertServerLocked(srv *server) {
	if old, ok := s.servers[srv.id]; ok {
		s.removeServerLocked(old)
	}
	s.servers[srv.id] = srv
	s.serverOrder = append(s.serverOrder, srv)
}

func (s *Sim) removeServerLocked(srv *server) {
	delete(s.servers, srv.id)
	if i := slices.Index(s.serverOrder, srv); i >= 0 {
		s.serverOrder = slices.Delete(s.serverOrder, i, i+1)
	}
}

// ---- controls ----

// StopCompute is a power loss or SIGSTOP of host's nova-compute: its
// heartbeat stops; its guests keep "running" in the simulated hypervisor.
// Unknown hosts are ignored.
func (s *Sim) StopCompute(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advanceLocked(now)
	if sv, ok := s.computes[host]; ok && sv.running {
		sv.stop(now, s.opts.ReportInterval)
		// A restart cleanup still under way dies with the process.
		if i := slices.Index(s.cleanups, sv); i >= 0 {
			s.cleanups = slices.Delete(s.cleanups, i, i+1)
		}
		sv.cleanupAt, sv.cleanupQueue, sv.cleanupStarted = time.Time{}, nil, false
		s.log.Info("novasim: compute stopped", "host", host)
	}
}

// StartCompute (re)starts host's nova-compute: its first heartbeat comes
// StartupDelay later; RestartCleanupDelay after the start it destroys the
// guests of instances evacuated away from it and turns its evacuation
// migrations in status accepted, pre-migrating or done "completed", one
// every RestartCleanupStep. Starting a running compute restarts it.
func (s *Sim) StartCompute(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advanceLocked(now)
	sv, ok := s.computes[host]
	if !ok {
		return
	}
	sv.start(now, s.opts.ReportInterval, s.opts.StartupDelay)
	sv.cleanupAt = now.Add(s.opts.RestartCleanupDelay)
	sv.cleanupQueue, sv.cleanupStarted = nil, false
	if !slices.Contains(s.cleanups, sv) {
		s.cleanups = append(s.cleanups, sv)
	}
	s.advanceLocked(now)
	s.log.Info("novasim: compute started", "host", host)
}

// SetFault installs a fault on route (one of the Route constants).
func (s *Sim) SetFault(route string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[route] = &f
}

// ClearFaults removes every fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[string]*Fault{}
}

// RevokeTokens makes every token issued so far answer 401.
func (s *Sim) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]tokenInfo{}
}

// Calls is how many requests reached route since the last ResetCounters
// (faulted and unauthorised ones included).
func (s *Sim) Calls(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[route]
}

// CallsBy is how many authenticated requests of identity (UserIdentity,
// AppCredIdentity) reached route since the last ResetCounters: the request
// log of one client among several on the same cloud.
func (s *Sim) CallsBy(identity, route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callsBy[[2]string{identity, route}]
}

// ServerCalls is how many requests for one server reached route.
func (s *Sim) ServerCalls(serverID, route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serverCalls[[2]string{serverID, route}]
}

// ResetCounters zeroes every call counter.
func (s *Sim) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
	s.serverCalls = map[[2]string]int{}
	s.callsBy = map[[2]string]int{}
}

// Server returns a snapshot of one server.
func (s *Sim) Server(id string) (ServerState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advanceLocked(s.now())
	srv, ok := s.servers[id]
	if !ok {
		return ServerState{}, false
	}
	return srv.state(), true
}

// ServersOn returns the servers whose host (in Nova's database) is host.
func (s *Sim) ServersOn(host string) []ServerState {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advanceLocked(s.now())
	var out []ServerState
	for _, srv := range s.serverOrder {
		if srv.host == host {
			out = append(out, srv.state())
		}
	}
	return out
}

// Guests returns the instance ids host's hypervisor still runs, sorted.
// After an evacuation this includes the evacuated instances until host's
// nova-compute restarts: the split brain that fencing prevents.
func (s *Sim) Guests(host string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advanceLocked(s.now())
	sv, ok := s.computes[host]
	if !ok {
		return nil
	}
	out := make([]string, 0, len(sv.guests))
	for id := range sv.guests {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Service returns a snapshot of host's nova-compute service.
func (s *Sim) Service(host string) (ServiceState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advanceLocked(now)
	sv, ok := s.computes[host]
	if !ok {
		return ServiceState{}, false
	}
	return s.serviceStateLocked(sv, now), true
}

// Migrations returns every migration, oldest first.
func (s *Sim) Migrations() []MigrationState {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advanceLocked(s.now())
	out := make([]MigrationState, 0, len(s.migrations))
	for _, m := range s.migrations {
		out = append(out, m.state())
	}
	return out
}
