package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ihaproject/iha/pkg/kdump"
)

// Transport is memberlist's transport interface; set Config.Transport only
// in tests and dev mode (see package memnet).
type Transport = memberlist.NodeAwareTransport

// Config configures a Mesh.
type Config struct {
	// NodeName is this node's unique name in the mesh (default: host name).
	NodeName string
	// BindAddr and BindPort are where gossip listens, UDP and TCP (default
	// 0.0.0.0:7946; port 0 picks a free port, see Mesh.Addr).
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what peers use to reach this node
	// (default: the bound address).
	AdvertiseAddr string
	AdvertisePort int
	// Join lists host:port of members to join; empty means this node starts
	// a mesh (a seed). Joining is retried forever with jittered backoff.
	Join []string
	// RejoinInterval is how often the configured Join addresses at which no
	// live member answers, and some dead members, are joined again so that
	// a healed partition merges (memberlist never merges partitions by
	// itself). Default 30 s; negative disables.
	RejoinInterval time.Duration
	// Label is a cluster label carried by every packet: meshes with different
	// labels never merge (two clouds on one network).
	Label string
	// KeyringFile enables encryption with the keys of this file (see
	// LoadKeyring). Keys, when set, is used instead of the file.
	KeyringFile string
	Keys        [][]byte
	// HostKey, on an agent, is its Nova host's key (identity.HostKey of
	// Meta.NovaHost): the agent sends the controllers a signed claim every
	// ClaimInterval and signs every message it originates.
	HostKey []byte
	// ClusterKey, on a controller, derives every member's key: claims and
	// messages that do not verify are dropped (identity.go), and this
	// controller signs its own messages.
	ClusterKey []byte
	// ClaimInterval is how often an agent re-sends its claim (default
	// 5 s); a claim older than ClaimTTL (6 intervals) no longer vouches for
	// a live member.
	ClaimInterval time.Duration
	// Profile tunes the failure detector (default DefaultProfile()).
	Profile Profile
	// Meta is advertised to every member.
	Meta Meta
	// LeaveTimeout bounds a graceful leave (default: see
	// defaultLeaveTimeout).
	LeaveTimeout time.Duration
	// Logger receives the mesh's logs and memberlist's (component=memberlist).
	Logger *slog.Logger
	// Transport replaces UDP/TCP sockets (tests and dev mode only).
	Transport Transport
}

// Mesh is this node's membership in the gossip mesh. Methods are safe for
// concurrent use. Never call a memberlist method while holding m.mu:
// memberlist calls our delegates with its own lock held and they take m.mu.
type Mesh struct {
	cfg       Config
	log       *slog.Logger
	ml        *memberlist.Memberlist
	keyring   *memberlist.Keyring
	bq        *memberlist.TransmitLimitedQueue
	self      string
	incarn    string // distinguishes this process's message ids from a previous run's
	seq       atomic.Uint64
	events    *eventQueue
	eventsCh  chan Event
	kdumpCh   chan kdump.Notice
	sendCh    chan func()
	logActs   chan func() // what the log bridge observed, run outside memberlist's locks
	numAlive  atomic.Int32
	done      chan struct{}
	joined    atomic.Bool
	ran       atomic.Bool
	stopOnce  sync.Once
	bg        sync.WaitGroup
	keyMu     sync.Mutex    // serialises keyring changes (memberlist's Keyring reads unlocked in AddKey)
	claimKick chan struct{} // an agent sends its claim now (a controller appeared)

	// answerer answers peers' questions (SetAnswerer); asks are the
	// questions of ours awaiting answers, by ID.
	answerer atomic.Pointer[func() []byte]
	askMu    sync.Mutex
	asks     map[string]chan PeerAnswer

	mu            sync.Mutex
	members       map[string]*Member
	seen          map[string]time.Time // message ids already handled
	leaveIntents  map[string]time.Time // node → when it announced a graceful leave
	confirmations map[string]int       // node → confirmations logged by our own suspicion timer
	lastJoinErr   error
	pinging       map[string]bool // suspects being pinged directly

	rejectLogged map[string]time.Time // "from/type" → last warning about a rejected message

	stats struct {
		badMessages, kdumpDropped, kdumpReceived, logActsDropped, rejected atomic.Uint64
	}
}

// ErrJoin is wrapped by join failures.
var ErrJoin = errors.New("gossip: cannot join the mesh")

// defaultLeaveTimeout bounds a graceful leave: memberlist's Leave returns
// once its dead-about-myself broadcast has been sent its retransmit limit
// of times (4·⌈log10(n+1)⌉ sends, three per gossip round: 4 rounds at 100
// members, 6 at 1,000), so the wait is a number of gossip intervals. 5 s is
// 25 rounds of the default profile; a slower profile gets 20 rounds, up to
// 15 s so that the agent stops well within its unit's TimeoutStopSec (20 s).
// A leave that times out still went out to some members; the others see a
// death instead.
func defaultLeaveTimeout(p Profile) time.Duration {
	return min(max(5*time.Second, 20*p.GossipInterval), 15*time.Second)
}

// New creates the mesh node and starts gossiping (alone until Run joins).
func New(cfg Config) (*Mesh, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Profile == (Profile{}) {
		cfg.Profile = DefaultProfile()
	}
	if err := cfg.Profile.Validate(); err != nil {
		return nil, err
	}
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = 30 * time.Second
	}
	if cfg.LeaveTimeout == 0 {
		cfg.LeaveTimeout = defaultLeaveTimeout(cfg.Profile)
	}
	if cfg.ClaimInterval <= 0 {
		cfg.ClaimInterval = DefaultClaimInterval
	}
	meta, err := EncodeMeta(cfg.Meta)
	if err != nil {
		return nil, err
	}
	m := &Mesh{
		cfg:           cfg,
		log:           cfg.Logger,
		incarn:        strconv.FormatInt(time.Now().UnixNano(), 36),
		events:        newEventQueue(),
		eventsCh:      make(chan Event),
		kdumpCh:       make(chan kdump.Notice, 1024),
		sendCh:        make(chan func(), 256),
		logActs:       make(chan func(), 4096),
		done:          make(chan struct{}),
		members:       map[string]*Member{},
		seen:          map[string]time.Time{},
		leaveIntents:  map[string]time.Time{},
		confirmations: map[string]int{},
		pinging:       map[string]bool{},
		rejectLogged:  map[string]time.Time{},
		claimKick:     make(chan struct{}, 1),
		asks:          map[string]chan PeerAnswer{},
	}

	mc := memberlist.DefaultLANConfig()
	if cfg.NodeName != "" {
		mc.Name = cfg.NodeName
	}
	m.self = mc.Name
	if cfg.BindAddr != "" {
		mc.BindAddr = cfg.BindAddr
	}
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if cfg.Transport != nil {
		mc.Transport = cfg.Transport
	}
	mc.ProbeInterval = cfg.Profile.ProbeInterval
	mc.ProbeTimeout = cfg.Profile.ProbeTimeout
	mc.SuspicionMult = cfg.Profile.SuspicionMult
	mc.GossipInterval = cfg.Profile.GossipInterval
	mc.Label = cfg.Label
	// A dead name may come back from a new address (a reinstalled compute).
	mc.DeadNodeReclaimTime = 30 * time.Second
	// memberlist compresses every gossip packet with a new LZW writer (its
	// tables allocated per packet). Packets are packed to the UDP size before
	// compression, so it saves bytes on a LAN, never packets, and it cost
	// about a third of a big mesh's CPU with the garbage it makes (see
	// doc.go). Members still read compressed packets from older agents.
	mc.EnableCompression = false
	// Push/pull (a full-table exchange with one random member over TCP) is
	// the anti-entropy that carries a refutation or an alive message lost to
	// packet loss; memberlist's LAN default is every 30 s. Every ten probe
	// intervals instead (10 s, 5 s fast): the suspected member's refutation
	// then reaches its accusers within the suspicion timeout even at 20 %
	// loss. memberlist stretches it with the mesh's size (×6 at 1,000
	// members: 60 s), so a big mesh does not pay for it.
	mc.PushPullInterval = 10 * cfg.Profile.ProbeInterval

	keys := cfg.Keys
	if len(keys) == 0 && cfg.KeyringFile != "" {
		if keys, err = LoadKeyring(cfg.KeyringFile); err != nil {
			return nil, err
		}
	}
	if len(keys) > 0 {
		kr, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKeyring, err)
		}
		m.keyring = kr
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}

	d := &delegate{m: m, meta: meta}
	mc.Delegate = d
	mc.Events = d
	mc.Logger = log.New(&logBridge{m: m}, "", 0)
	// NumNodes must not call memberlist: GetBroadcasts holds the queue's lock
	// while asking, and memberlist may hold its node lock while logging,
	// whose bridge queues broadcasts.
	m.bq = &memberlist.TransmitLimitedQueue{RetransmitMult: mc.RetransmitMult, NumNodes: func() int {
		return max(1, int(m.numAlive.Load()))
	}}

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start %s: %w", m.self, err)
	}
	m.ml = ml
	go m.events.pump(m.eventsCh, m.done)
	m.bg.Add(2)
	go m.sender()
	go m.runLogActions()
	if len(cfg.HostKey) > 0 {
		m.bg.Add(1)
		go m.claimLoop()
	}
	m.log.Info("gossip mesh started", "node", m.self, "addr", m.Addr(), "encrypted", m.keyring != nil,
		"label", cfg.Label, "identity", m.identityMode(), "probe_interval", cfg.Profile.ProbeInterval, "suspicion_mult", cfg.Profile.SuspicionMult)
	return m, nil
}

// Name is this node's name.
func (m *Mesh) Name() string { return m.self }

// Addr is this node's advertised gossip address, ip:port.
func (m *Mesh) Addr() string { return m.ml.LocalNode().Address() }

// Events delivers member changes in the order observed. The channel is
// closed when the mesh stops. Read it promptly: events queue up (to 65,536,
// then the oldest are dropped); Members is always exact.
func (m *Mesh) Events() <-chan Event { return m.eventsCh }

// KdumpNotices delivers kdump notices relayed by any member (each once). It
// is buffered; when full, notices are dropped and counted (Stats).
func (m *Mesh) KdumpNotices() <-chan kdump.Notice { return m.kdumpCh }

// Joined reports whether this node has joined at least one other member (a
// seed with no Join addresses counts as joined once Run starts).
func (m *Mesh) Joined() bool { return m.joined.Load() }

// HealthScore is Lifeguard's awareness score of this node: 0 is healthy,
// higher means this node is failing probes itself (overloaded or cut off)
// and its accusations deserve less trust.
func (m *Mesh) HealthScore() int { return m.ml.GetHealthScore() }

// LastJoinError is the most recent failure to join, nil after a success.
func (m *Mesh) LastJoinError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastJoinErr
}

// Stats are counters for metrics.
type Stats struct {
	EventsDropped, BadMessages, KdumpReceived, KdumpDropped uint64
	// Rejected counts messages dropped because they did not verify or
	// spoke for another member (identity.go).
	Rejected uint64
}

// Stats returns the counters.
func (m *Mesh) Stats() Stats {
	m.events.mu.Lock()
	dropped := m.events.dropped
	m.events.mu.Unlock()
	return Stats{EventsDropped: dropped, BadMessages: m.stats.badMessages.Load(),
		KdumpReceived: m.stats.kdumpReceived.Load(), KdumpDropped: m.stats.kdumpDropped.Load(), Rejected: m.stats.rejected.Load()}
}

// Members returns every member this node knows, itself included, sorted by
// name, with dead and left members.
func (m *Mesh) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		c := *mem
		c.Accusers = slices.Clone(mem.Accusers)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Run joins the mesh (retrying forever with jittered backoff), re-joins
// periodically, expires stale suspicions, and leaves gracefully when ctx
// ends. It returns nil after a graceful leave, or the leave's error.
func (m *Mesh) Run(ctx context.Context) error {
	if !m.ran.CompareAndSwap(false, true) {
		return errors.New("gossip: Run called twice")
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		m.joinLoop(ctx)
	}()
	tick := time.NewTicker(m.cfg.Profile.ProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return m.Leave(m.cfg.LeaveTimeout)
		case <-m.done:
			return nil
		case <-tick.C:
			m.expireSuspicions()
			m.pingSuspects()
			m.pruneSeen()
		}
	}
}

func (m *Mesh) joinLoop(ctx context.Context) {
	if len(m.cfg.Join) == 0 {
		m.joined.Store(true)
		m.log.Info("gossip: no join addresses, starting the mesh as its first member", "node", m.self)
	} else {
		backoff := 500 * time.Millisecond
		for !m.tryJoin(m.cfg.Join, true) {
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-ctx.Done():
				return
			case <-m.done:
				return
			case <-time.After(wait):
			}
			backoff = min(2*backoff, 30*time.Second)
		}
	}
	if m.cfg.RejoinInterval < 0 {
		return
	}
	for {
		wait := m.cfg.RejoinInterval*3/4 + rand.N(m.cfg.RejoinInterval/2+1)
		select {
		case <-ctx.Done():
			return
		case <-m.done:
			return
		case <-time.After(wait):
		}
		if addrs := m.rejoinTargets(ctx); len(addrs) > 0 {
			m.tryJoin(addrs, false)
		}
	}
}

// rejoinTargets are the addresses a re-join round contacts: the configured
// join addresses at which no live member answers (a seed this node is cut
// off from, or one that was down when it joined), and up to three members
// it holds dead (one side of a healed partition).
//
// A join is a push/pull of the whole member table with each address.
// Re-joining every configured address every round, as this node did
// before, made each controller serve N/RejoinInterval full-table exchanges
// (33 a second at 1,000 computes, each ~100 KB both ways), six times what
// memberlist's own push/pull scaling allows at that size, and it was the
// largest cost of a 1,000-member benchmark mesh.
func (m *Mesh) rejoinTargets(ctx context.Context) []string {
	live := map[string]bool{}
	var addrs []string
	m.mu.Lock()
	for _, mem := range m.members {
		switch {
		case mem.State == StateAlive || mem.State == StateSuspect:
			live[mem.Addr] = true
		case mem.State == StateDead && len(addrs) < 3:
			addrs = append(addrs, mem.Addr)
		}
	}
	m.mu.Unlock()
	for _, a := range m.cfg.Join {
		if !joinAddrLive(ctx, a, live) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// joinAddrLive reports whether a configured join address (host:port, the
// host a name or an IP) is a live member's address. An address it cannot
// read or resolve counts as not live: re-joining it costs one attempt.
func joinAddrLive(ctx context.Context, addr string, live map[string]bool) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return live[net.JoinHostPort(ip.String(), port)]
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if live[net.JoinHostPort(ip, port)] {
			return true
		}
	}
	return false
}

// tryJoin joins addrs and reports whether at least one answered.
func (m *Mesh) tryJoin(addrs []string, first bool) bool {
	n, err := m.ml.Join(addrs)
	if n > 0 {
		m.mu.Lock()
		m.lastJoinErr = nil
		m.mu.Unlock()
		if !m.joined.Swap(true) {
			m.log.Info("gossip: joined the mesh", "node", m.self, "contacted", n, "members", m.ml.NumMembers())
		}
		m.kickClaim()
		return true
	}
	if err == nil {
		err = errors.New("no member answered")
	}
	err = fmt.Errorf("%w via %v: %w (%s)", ErrJoin, addrs, err, joinHint(m))
	m.mu.Lock()
	m.lastJoinErr = err
	m.mu.Unlock()
	if first {
		m.log.Warn("gossip: join failed, retrying", "node", m.self, "err", err)
	} else {
		m.log.Debug("gossip: re-join failed", "node", m.self, "err", err)
	}
	return false
}

// joinHint says what usually causes a failed join. memberlist's error on the
// joining side is often only an EOF because the peer drops what it cannot
// decrypt or whose label differs.
func joinHint(m *Mesh) string {
	enc := "encryption off"
	if m.keyring != nil {
		enc = "encryption on"
	}
	return fmt.Sprintf("check that the peers run, that UDP and TCP reach them both ways, and that this node's gossip key and label (%q, %s) match the mesh's: a peer silently drops packets it cannot decrypt", m.cfg.Label, enc)
}

// Leave announces a graceful leave, waits for it to spread (up to timeout),
// and stops the node. Peers then report it as left, not dead. Safe to call
// more than once.
func (m *Mesh) Leave(timeout time.Duration) error {
	var err error
	m.stopOnce.Do(func() {
		start := time.Now()
		env := m.newEnvelope(msgLeave, m.self)
		// Controllers hear first and directly, so that they never see the
		// memberlist dead message before the intent.
		m.sendToControllers(env, timeout/2)
		m.broadcast(env)
		for time.Since(start) < timeout/2 && m.bq.NumQueued() > 0 && m.ml.NumMembers() > 1 {
			time.Sleep(m.cfg.Profile.GossipInterval)
		}
		if e := m.ml.Leave(timeout - time.Since(start)); e != nil {
			err = fmt.Errorf("gossip: leave: %w", e)
		}
		m.stop()
		m.log.Info("gossip: left the mesh", "node", m.self, "took", time.Since(start).Round(time.Millisecond), "err", err)
	})
	return err
}

// Shutdown stops the node without leaving: peers will declare it dead, as
// after a crash. Use Leave for a normal stop.
func (m *Mesh) Shutdown() {
	m.stopOnce.Do(m.stop)
}

func (m *Mesh) stop() {
	_ = m.ml.Shutdown()
	close(m.done)
	m.bg.Wait()
}

// BroadcastKdump relays a kdump notice to every member: directly to the
// controllers (TCP) and by gossip to everyone. It sets n.Relayer and n.Seq.
func (m *Mesh) BroadcastKdump(n kdump.Notice) error {
	n.Relayer = m.self
	n.Seq = m.seq.Add(1)
	if _, err := n.MarshalBinary(); err != nil {
		return err
	}
	env := m.newEnvelope(msgKdump, n.Host)
	env.Notice = &n
	m.markSeen(env.ID)
	m.deliverKdump(n)
	m.broadcast(env)
	select {
	case m.sendCh <- func() { m.sendToControllers(env, 2*time.Second) }:
	default:
	}
	return nil
}

// sender runs queued direct sends outside memberlist's callbacks.
func (m *Mesh) sender() {
	defer m.bg.Done()
	for {
		select {
		case f := <-m.sendCh:
			f()
		case <-m.done:
			return
		}
	}
}

// tellControllers sends env to every live controller by UDP, best effort
// (suspicion is advisory: the leader acts on dead, and a lost refutation is
// made up for by pingSuspects and expireSuspicions).
func (m *Mesh) tellControllers(env envelope) {
	b, err := m.encode(env)
	if err != nil {
		return
	}
	for _, n := range m.controllerNodes() {
		if err := m.ml.SendBestEffort(n, b); err != nil {
			m.log.Debug("gossip: send to controller failed", "node", n.Name, "err", err)
		}
	}
}

// controllerNodes lists the live controllers other than this node.
func (m *Mesh) controllerNodes() []*memberlist.Node {
	var targets []*memberlist.Node
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mem := range m.members {
		if mem.Name != m.self && mem.Meta.Role == RoleController && (mem.State == StateAlive || mem.State == StateSuspect) {
			host, port, err := net.SplitHostPort(mem.Addr)
			if err != nil {
				continue
			}
			p, _ := strconv.Atoi(port)
			targets = append(targets, &memberlist.Node{Name: mem.Name, Addr: net.ParseIP(host), Port: uint16(p)})
		}
	}
	return targets
}

// runLogActions runs what the log bridge observed, in order.
func (m *Mesh) runLogActions() {
	defer m.bg.Done()
	for {
		select {
		case f := <-m.logActs:
			f()
		case <-m.done:
			return
		}
	}
}

func (m *Mesh) sendToControllers(env envelope, timeout time.Duration) {
	b, err := m.encode(env)
	if err != nil {
		return
	}
	targets := m.controllerNodes()
	var wg sync.WaitGroup
	for _, n := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.ml.SendReliable(n, b); err != nil {
				m.log.Debug("gossip: direct send failed", "node", n.Name, "err", err)
			}
		}()
	}
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(timeout):
	}
}

func (m *Mesh) broadcast(env envelope) {
	b, err := m.encode(env)
	if err != nil {
		m.log.Error("gossip: encode message", "err", err)
		return
	}
	m.bq.QueueBroadcast(rawBroadcast(b))
}

type rawBroadcast []byte

func (b rawBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b rawBroadcast) Message() []byte                       { return b }
func (b rawBroadcast) Finished()                             {}

func (m *Mesh) newEnvelope(t msgType, node string) envelope {
	seq := m.seq.Add(1)
	return envelope{V: 1, Type: t, ID: m.self + "/" + m.incarn + "/" + strconv.FormatUint(seq, 10),
		From: m.self, Node: node, At: time.Now().UTC(), Inc: m.incarn, Seq: seq}
}

func (m *Mesh) markSeen(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.seen[id]; dup {
		return false
	}
	m.seen[id] = time.Now()
	return true
}

func (m *Mesh) pruneSeen() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, at := range m.seen {
		if time.Since(at) > 10*time.Minute {
			delete(m.seen, id)
		}
	}
	for n, at := range m.leaveIntents {
		if time.Since(at) > 10*time.Minute {
			delete(m.leaveIntents, n)
		}
	}
}

// handleMessage is called by memberlist's packet handler (not under its
// node lock) for our own messages.
func (m *Mesh) handleMessage(b []byte) {
	env, err := decodeEnvelope(b)
	if err != nil {
		m.stats.badMessages.Add(1)
		m.log.Debug("gossip: dropped a bad message", "err", err)
		return
	}
	if env.From == m.self {
		return
	}
	// Checked before it is marked seen: a forgery must not make the real
	// message with the same id look like a duplicate.
	if err := m.check(env); err != nil {
		m.reject(env, err)
		return
	}
	if !m.markSeen(env.ID) {
		return
	}
	if env.Type == msgClaim {
		if m.VerifiesIdentity() {
			m.acceptClaim(env)
		}
		return
	}
	// Epidemic relay of leave intents and kdump notices: memberlist only
	// retransmits a broadcast from its origin; passing it on makes it reach
	// every member even when the origin dies right after sending.
	// Accusations and refutations go to controllers only (tellControllers)
	// and are not relayed: relaying them from every member multiplies
	// traffic exactly when members are starved and accusing each other.
	if env.Type == msgLeave || env.Type == msgKdump {
		m.bq.QueueBroadcast(rawBroadcast(slices.Clone(b)))
	}
	switch env.Type {
	case msgAccuse:
		m.markSuspect(env.Node, env.From)
	case msgRefute:
		m.clearSuspect(env.Node, "it answered again (refuted the suspicion of "+env.Accuser+")")
	case msgLeave:
		m.mu.Lock()
		m.leaveIntents[env.Node] = time.Now()
		mem := m.members[env.Node]
		late := mem != nil && mem.State == StateDead
		if late {
			mem.State, mem.Since = StateLeft, time.Now()
		}
		var ev Event
		if late {
			ev = m.eventFor(mem, KindLeft, "leave intent arrived after the dead verdict")
		}
		m.mu.Unlock()
		if late {
			m.events.push(ev)
		}
	case msgKdump:
		m.deliverKdump(*env.Notice)
	case msgPeerAsk:
		m.answerPeer(env)
	case msgPeerAnswer:
		m.deliverAnswer(env)
	}
}

func (m *Mesh) deliverKdump(n kdump.Notice) {
	m.stats.kdumpReceived.Add(1)
	select {
	case m.kdumpCh <- n:
	default:
		m.stats.kdumpDropped.Add(1)
	}
}

// eventFor builds an event from a member; call with m.mu held.
func (m *Mesh) eventFor(mem *Member, k Kind, reason string) Event {
	return Event{Kind: k, Node: mem.Name, Addr: mem.Addr, IP: mem.IP, Meta: mem.Meta, At: time.Now(), Reason: reason, Confirmations: -1}
}

// markSuspect records that accuser failed to probe node.
func (m *Mesh) markSuspect(node, accuser string) {
	if node == m.self {
		return
	}
	m.mu.Lock()
	mem := m.members[node]
	if mem == nil || mem.State == StateDead || mem.State == StateLeft || slices.Contains(mem.Accusers, accuser) {
		m.mu.Unlock()
		return
	}
	mem.Accusers = append(mem.Accusers, accuser)
	if mem.State == StateAlive {
		mem.State, mem.Since = StateSuspect, time.Now()
	}
	ev := m.eventFor(mem, KindSuspect, accuser+" got no ack from it")
	ev.Accuser = accuser
	m.mu.Unlock()
	m.events.push(ev)
}

func (m *Mesh) clearSuspect(node, reason string) {
	m.mu.Lock()
	mem := m.members[node]
	if mem == nil || mem.State != StateSuspect {
		m.mu.Unlock()
		return
	}
	mem.State, mem.Since, mem.Accusers = StateAlive, time.Now(), nil
	ev := m.eventFor(mem, KindAlive, reason)
	ev.Refuted = true
	m.mu.Unlock()
	m.events.push(ev)
}

// expireSuspicions turns back to alive the suspects that memberlist has not
// declared dead within its maximum suspicion timeout: their suspicion was
// refuted without this node hearing the refutation.
func (m *Mesh) expireSuspicions() {
	n := m.ml.NumMembers()
	_, hi := m.cfg.Profile.SuspicionTimeouts(n)
	limit := hi + 3*m.cfg.Profile.ProbeInterval
	var expired []string
	m.mu.Lock()
	for name, mem := range m.members {
		if mem.State == StateSuspect && time.Since(mem.Since) > limit {
			expired = append(expired, name)
		}
	}
	m.mu.Unlock()
	for _, name := range expired {
		m.clearSuspect(name, "no dead verdict within the maximum suspicion timeout")
	}
}

// pingSuspects pings every suspect directly, once at a time per suspect: an
// ack proves it answers again, which the refutation (or an accusation that
// arrived after it) may not have told this node.
func (m *Mesh) pingSuspects() {
	type target struct {
		name string
		addr *net.UDPAddr
	}
	var targets []target
	m.mu.Lock()
	for name, mem := range m.members {
		if mem.State != StateSuspect || m.pinging[name] || time.Since(mem.Since) < m.cfg.Profile.ProbeInterval {
			continue
		}
		addr, err := net.ResolveUDPAddr("udp", mem.Addr)
		if err != nil {
			continue
		}
		m.pinging[name] = true
		targets = append(targets, target{name, addr})
	}
	m.mu.Unlock()
	for _, tg := range targets {
		go func() {
			_, err := m.ml.Ping(tg.name, tg.addr)
			m.mu.Lock()
			delete(m.pinging, tg.name)
			m.mu.Unlock()
			if err == nil {
				m.clearSuspect(tg.name, "it answered a direct ping from "+m.self)
			}
		}()
	}
}

// memberFromNode updates the table from a memberlist node; m.mu held.
func (m *Mesh) memberFromNode(n *memberlist.Node) *Member {
	mem := m.members[n.Name]
	if mem == nil {
		mem = &Member{Name: n.Name}
		m.members[n.Name] = mem
	}
	mem.Addr = n.Address()
	mem.IP = n.Addr.String()
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		m.stats.badMessages.Add(1)
		m.log.Warn("gossip: member with unreadable metadata", "node", n.Name, "err", err)
	}
	mem.Meta = meta
	return mem
}

// delegate receives memberlist's callbacks. Event callbacks run with
// memberlist's node lock held: they only touch m.mu and the event queue.
type delegate struct {
	m    *Mesh
	meta []byte
}

func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

func (d *delegate) NotifyMsg(b []byte) {
	if len(b) > 0 {
		d.m.handleMessage(b)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.m.bq.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(bool) []byte        { return nil }
func (d *delegate) MergeRemoteState([]byte, bool) {}

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	m := d.m
	m.mu.Lock()
	prev := m.members[n.Name]
	prevAddr := ""
	if prev != nil {
		prevAddr = prev.Addr
	}
	mem := m.memberFromNode(n)
	if mem.State != StateAlive && mem.State != StateSuspect {
		m.numAlive.Add(1)
	}
	mem.State, mem.Since, mem.Accusers = StateAlive, time.Now(), nil
	// A (re)joined member vouches for its host only with a claim made
	// after it came back; one at another address is another identity.
	mem.Joined = mem.Since
	if prevAddr != "" && prevAddr != mem.Addr {
		mem.Claim = Claim{}
	}
	if mem.Meta.Role == RoleController && n.Name != m.self {
		m.kickClaim()
	}
	delete(m.leaveIntents, n.Name)
	ev := m.eventFor(mem, KindAlive, "joined")
	m.mu.Unlock()
	if n.Name != m.self {
		m.events.push(ev)
	}
}

func (d *delegate) NotifyLeave(n *memberlist.Node) {
	// memberlist passes a Node whose State field is never updated (its
	// nodeState shadows it), so dead and left are told apart by the leave
	// intent the leaving node sends before memberlist's own leave.
	m := d.m
	m.mu.Lock()
	mem := m.memberFromNode(n)
	if mem.State == StateAlive || mem.State == StateSuspect {
		m.numAlive.Add(-1)
	}
	_, intent := m.leaveIntents[n.Name]
	accusers := mem.Accusers
	mem.Since, mem.Accusers = time.Now(), nil
	var ev Event
	if intent {
		mem.State = StateLeft
		ev = m.eventFor(mem, KindLeft, "left gracefully")
	} else {
		mem.State = StateDead
		ev = m.eventFor(mem, KindDead, "declared failed by the mesh")
		ev.Accusers = accusers
		if c, ok := m.confirmations[n.Name]; ok {
			ev.Confirmations = c
			ev.Reason = "this node's suspicion timer expired with " + strconv.Itoa(c) + " confirmations"
		}
	}
	delete(m.confirmations, n.Name)
	m.mu.Unlock()
	if n.Name != m.self {
		m.events.push(ev)
	}
}

func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	m := d.m
	m.mu.Lock()
	mem := m.memberFromNode(n)
	ev := m.eventFor(mem, KindUpdated, "metadata changed")
	m.mu.Unlock()
	if n.Name != m.self {
		m.events.push(ev)
	}
}
