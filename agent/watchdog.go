package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/pkg/identity"
	"github.com/ihaproject/iha/pkg/lease"
	"github.com/ihaproject/iha/pkg/watchdog"
)

// WatchdogConfig is agent.yaml's `watchdog:` block. Without a device the
// agent never touches a watchdog (the default).
type WatchdogConfig struct {
	// Device is the watchdog device (/dev/watchdog, /dev/watchdog1…).
	Device string `yaml:"device"`
	// Timeout is W, set on the device when the agent arms it (whole
	// seconds; 0 keeps the driver's). The leader counts on the timeout the
	// device reports back.
	Timeout time.Duration `yaml:"timeout"`
	// AllowFIFO accepts a FIFO as the device: the device double of the
	// tests and the lab. Never in production (nothing would reset the
	// host); warned at every start.
	AllowFIFO bool `yaml:"allow_fifo"`
}

// Enabled reports whether the watchdog is configured.
func (w WatchdogConfig) Enabled() bool { return w.Device != "" }

// LoadHostKey reads a host key file: one line of base64, 32 bytes (blank
// lines and # comments ignored). Errors name the file, never the key.
func LoadHostKey(path string) ([]byte, error) {
	k, err := identity.LoadKey(path)
	if err != nil {
		return nil, fmt.Errorf("host_key %s: want %d bytes in base64 on one line: %w", path, identity.KeySize, err)
	}
	return k, nil
}

// Peers is the mesh as the watchdog keeper uses it.
type Peers interface {
	AskPeers(ctx context.Context, role gossip.Role, timeout time.Duration) ([]gossip.PeerAnswer, int)
	SetAnswerer(func() []byte)
}

// KeeperConfig wires a Keeper.
type KeeperConfig struct {
	Host string
	// Controllers are the status API base URLs (http:// or https://) the
	// lease is asked of, in order: agent.yaml's, never the mesh's.
	Controllers []string
	Client      *http.Client
	// HostKey signs the requests and checks the grants.
	HostKey []byte
	// Open opens and arms the device (watchdog.Open with the config).
	Open  func(disarmOnError bool) (watchdog.Device, error)
	Peers Peers
	// StateFile keeps the lease across agent restarts within a boot
	// (default: watchdog.json in the state directory).
	StateFile string
	// BootID identifies this boot (/proc/sys/kernel/random/boot_id).
	BootID string
	Logger *slog.Logger
}

// Keeper holds the host's watchdog lease and feeds the watchdog under it.
// It asks the leader for a lease (first unarmed; once granted, it opens
// the device and asks armed), renews it every Renew, and feeds the device
// only while the lease runs — counted on CLOCK_BOOTTIME from the moment it
// sent the request that was granted — or, once it ran out, while a peer
// round found the control plane down (lease.PeerVerdict). It answers
// peers' rounds with its ticket. On a clean stop it disarms only after the
// leader committed its release; a crash, or a stop without a release,
// leaves the watchdog counting, and a restart within W finds its state
// file and resumes.
type Keeper struct {
	cfg KeeperConfig
	log *slog.Logger

	mu          sync.Mutex
	dev         watchdog.Device
	w           time.Duration
	params      lease.Params
	leaseEnd    time.Duration // boot clock: the lease's end (0: none)
	lastSuccess time.Duration // boot clock: the last grant's arrival
	downUntil   time.Duration // boot clock: a peer round's authority to feed
	roundStart  time.Duration // boot clock: when the round whose verdict holds started
	ticket      *lease.Ticket
	ticketKey   ed25519.PublicKey
	releasing   bool
	stopped     bool // stopped feeding (self-fence), logged once
	verdict     string
	lastFeed    bool
	prefer      int
	warned      map[string]string
	renewNow    chan struct{}
	stats       KeeperStats
}

// KeeperStats are counters for /metrics.
type KeeperStats struct {
	Grants, Refusals, Failures, Feeds, FeedErrors uint64
	RoundsFeed, RoundsStop                        uint64
}

// KeeperStatus is the keeper now, for /metrics and logs.
type KeeperStatus struct {
	Armed     bool
	W         time.Duration
	Leased    bool          // the lease runs
	Remaining time.Duration // of the lease (≤ 0: ran out)
	Feeding   bool          // the last feed decision
	Verdict   string        // the last peer round's
	Stats     KeeperStats
}

// NewKeeper checks the configuration; Run starts it.
func NewKeeper(cfg KeeperConfig) (*Keeper, error) {
	switch {
	case cfg.Host == "":
		return nil, errors.New("watchdog: no host")
	case len(cfg.HostKey) == 0:
		return nil, errors.New("watchdog: needs host_key: the leader grants leases only to an agent that proves its host")
	case len(cfg.Controllers) == 0:
		return nil, errors.New("watchdog: needs controllers: in agent.yaml (the lease is asked of configured controllers only, never of the mesh's)")
	case cfg.Open == nil || cfg.Peers == nil:
		return nil, errors.New("watchdog: no device or no mesh")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BootID == "" {
		b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err != nil {
			return nil, fmt.Errorf("watchdog: boot id: %w", err)
		}
		cfg.BootID = strings.TrimSpace(string(b))
	}
	return &Keeper{cfg: cfg, log: cfg.Logger.With("component", "watchdog"), warned: map[string]string{}, renewNow: make(chan struct{}, 1)}, nil
}

// bootClock is CLOCK_BOOTTIME: it counts across agent restarts and
// suspends, and never jumps.
func bootClock() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic("CLOCK_BOOTTIME: " + err.Error())
	}
	return time.Duration(ts.Nano())
}

// defaultRTT bounds a request before the first grant told us MaxRTT.
const defaultRTT = 2 * time.Second

// feedGuard is how close to the lease's end the keeper still feeds.
const feedGuard = 10 * time.Millisecond

// Run keeps the lease until ctx ends, then stops (see Keeper).
func (k *Keeper) Run(ctx context.Context) error {
	k.restore()
	k.cfg.Peers.SetAnswerer(k.answer)
	defer k.cfg.Peers.SetAnswerer(nil)
	lctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { k.feedLoop(lctx) })
	wg.Go(func() { k.roundLoop(lctx) })
	k.renewLoop(ctx)
	cancel()
	wg.Wait()
	k.stop()
	return nil
}

// Status reports the keeper now.
func (k *Keeper) Status() KeeperStatus {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := bootClock()
	return KeeperStatus{Armed: k.dev != nil, W: k.w, Leased: now < k.leaseEnd, Remaining: k.leaseEnd - now,
		Feeding: k.dev != nil && !k.stopped, Verdict: k.verdict, Stats: k.stats}
}

// ---- the lease ----

func (k *Keeper) renewLoop(ctx context.Context) {
	for ctx.Err() == nil {
		g, sent, recv, err := k.ask(ctx, false)
		wait := time.Second
		k.mu.Lock()
		switch {
		case err != nil:
			k.stats.Failures++
			if ctx.Err() == nil {
				k.warnOnce("renew", "cannot renew the watchdog lease", err.Error())
			}
			if k.params.Renew > 0 {
				wait = min(time.Second, k.params.Renew/4)
			}
		case !g.Granted:
			k.stats.Refusals++
			k.warnOnce("renew", "the leader refuses the watchdog lease", g.Reason)
			wait = max(g.Params.Renew, time.Second)
		default:
			k.granted(g, sent, recv)
			wait = max(g.Params.Renew-(bootClock()-sent), 0)
		}
		needArm := err == nil && g.Granted && k.dev == nil
		k.mu.Unlock()
		if needArm {
			if k.arm() {
				wait = 0 // tell the leader at once
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-k.renewNow:
		case <-time.After(wait):
		}
	}
}

// granted records a grant (k.mu held).
func (k *Keeper) granted(g lease.Grant, sent, recv time.Duration) {
	k.stats.Grants++
	first := k.ticket == nil
	k.params, k.leaseEnd, k.lastSuccess = g.Params, sent+g.Params.L, recv
	t := *g.Ticket
	k.ticket = &t
	k.ticketKey, _ = lease.ParseTicketKey(g.TicketKey)
	k.downUntil, k.verdict = 0, ""
	if k.stopped {
		k.log.Warn("the leader grants the lease again: feeding the watchdog again", "host", k.cfg.Host)
		k.stopped = false
	}
	if _, was := k.warned["renew"]; was || first {
		k.log.Info("watchdog lease granted", "host", k.cfg.Host, "lease", g.Params.L, "holders", t.Holders, "armed", k.dev != nil)
		delete(k.warned, "renew")
	}
	k.persist()
}

// arm opens the device once a first lease is held.
func (k *Keeper) arm() bool {
	dev, err := k.cfg.Open(true)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.warnOnce("arm", "cannot open the watchdog; not armed", err.Error())
		return false
	}
	delete(k.warned, "arm")
	k.dev, k.w = dev, dev.Timeout()
	k.log.Warn("watchdog armed: this host now resets if it cannot hold its lease", "device", dev.Name(), "w", k.w, "lease", k.params.L)
	k.persist()
	return true
}

// ask sends one request (a renewal, or a release) to the controllers in
// turn, starting with the last that answered, and returns the first
// verified answer with when it was sent and received (boot clock).
func (k *Keeper) ask(ctx context.Context, release bool) (lease.Grant, time.Duration, time.Duration, error) {
	k.mu.Lock()
	armed, w, rtt, prefer := k.dev != nil, k.w, k.params.MaxRTT, k.prefer
	var ack time.Time
	if k.ticket != nil {
		ack = k.ticket.Grant
	}
	k.mu.Unlock()
	if rtt <= 0 {
		rtt = defaultRTT
	}
	nb := make([]byte, 12)
	_, _ = rand.Read(nb)
	req := lease.Request{Host: k.cfg.Host, Boot: k.cfg.BootID, Seq: int64(bootClock()), Sent: time.Now().UTC(),
		Armed: armed, Release: release, Ack: ack, Nonce: hex.EncodeToString(nb)}
	if armed {
		req.W = w
	}
	req.Sign(k.cfg.HostKey)
	body, _ := json.Marshal(req)
	var errs []string
	n := len(k.cfg.Controllers)
	for i := range n {
		idx := (prefer + i) % n
		base := k.cfg.Controllers[idx]
		sent := bootClock()
		g, err := k.post(ctx, base, body, rtt)
		recv := bootClock()
		if err == nil {
			err = g.Verify(k.cfg.HostKey, k.cfg.Host, req.Nonce)
			if err != nil {
				k.mu.Lock()
				k.warnOnce("verify "+base, "ignoring a lease answer that does not verify", base+": "+err.Error())
				k.mu.Unlock()
			}
		}
		if err == nil && g.Granted && recv-sent > g.Params.MaxRTT {
			err = fmt.Errorf("the grant took %v, more than %v: ignored", (recv - sent).Round(time.Millisecond), g.Params.MaxRTT)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", base, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		k.mu.Lock()
		k.prefer = idx
		k.mu.Unlock()
		return g, sent, recv, nil
	}
	return lease.Grant{}, 0, 0, errors.New(strings.Join(errs, "; "))
}

func (k *Keeper) post(ctx context.Context, base string, body []byte, rtt time.Duration) (lease.Grant, error) {
	var g lease.Grant
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := strings.TrimSuffix(base, "/") + lease.Path + url.PathEscape(k.cfg.Host)
	rctx, cancel := context.WithTimeout(ctx, rtt)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return g, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.cfg.Client.Do(req)
	if err != nil {
		return g, errors.Unwrap(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return g, fmt.Errorf("HTTP %d: %s", resp.StatusCode, e.Error)
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return g, fmt.Errorf("bad answer: %w", err)
	}
	return g, nil
}

// warnOnce logs a warning when what is said about key changes (k.mu held).
func (k *Keeper) warnOnce(key, msg, detail string) {
	if k.warned[key] == detail {
		return
	}
	k.warned[key] = detail
	k.log.Warn(msg, "host", k.cfg.Host, "detail", detail)
}

// ---- feeding ----

// feeding reports whether the device may be fed now (k.mu held).
func (k *Keeper) feeding(now time.Duration) bool {
	return now+feedGuard < k.leaseEnd || now+feedGuard < k.downUntil
}

func (k *Keeper) feedLoop(ctx context.Context) {
	for {
		k.mu.Lock()
		every := 200 * time.Millisecond
		if k.w > 0 {
			every = min(k.w/5, 500*time.Millisecond)
		}
		if k.dev != nil {
			if k.feeding(bootClock()) {
				if k.stopped {
					// A peer round found the control plane down after
					// the lease ran out: feeding again.
					k.stopped = false
					k.log.Warn("feeding the watchdog again: the peers find the control plane down", "host", k.cfg.Host, "why", k.verdict)
				}
				if err := k.dev.Feed(); err != nil {
					k.stats.FeedErrors++
					k.warnOnce("feed", "cannot feed the watchdog", err.Error())
				} else {
					k.stats.Feeds++
					delete(k.warned, "feed")
				}
			} else if !k.stopped {
				k.stopped = true
				why := k.verdict
				if why == "" {
					why = "the lease ran out"
				}
				k.log.Error("self-fencing: stopped feeding the watchdog; this host resets within W", "host", k.cfg.Host,
					"w", k.w, "why", why)
			}
		}
		k.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// ---- peers ----

// peerAnswer is what an agent answers to "do you reach a controller?".
type peerAnswer struct {
	Holder bool          `json:"holder"`
	Reach  bool          `json:"reach"`
	Ticket *lease.Ticket `json:"ticket,omitempty"`
}

// answer is this agent's answer (called by the mesh).
func (k *Keeper) answer() []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	a := peerAnswer{}
	if k.ticket != nil && !k.releasing {
		a.Holder, a.Ticket = true, k.ticket
		a.Reach = bootClock()-k.lastSuccess <= k.params.Reach
	}
	b, _ := json.Marshal(a)
	return b
}

func (k *Keeper) roundLoop(ctx context.Context) {
	// Rounds start every Round/2 and may overlap (at most two at once):
	// the next verdict is then in by start + Round/2 + PeerTimeout (+ the
	// time to count it), before this one's extension (start + Round +
	// PeerTimeout) runs out, even when a silent member makes every round
	// last its whole PeerTimeout. Rounds started one after the other left
	// a gap of a few milliseconds every round when Round equals
	// PeerTimeout (the defaults), or more under load: the keeper stopped
	// feeding for a moment every round of an outage. Each verdict still
	// extends feeding only to its own start + Round + PeerTimeout
	// (lease.FencedAt's window), so asking more often changes nothing it
	// proves; a verdict older than the one applied is dropped.
	var wg sync.WaitGroup
	defer wg.Wait()
	var inflight atomic.Int32
	for ctx.Err() == nil {
		k.mu.Lock()
		// The first round starts one round before the lease's end, so that
		// its verdict is in when the lease runs out: no gap in the feeding
		// through a control-plane outage.
		p, armed, held := k.params, k.dev != nil, k.ticket != nil
		expired := bootClock() >= k.leaseEnd-p.Round-p.PeerTimeout
		k.mu.Unlock()
		every := p.Round
		if every <= 0 {
			every = 500 * time.Millisecond
		}
		if armed && expired && held {
			if inflight.Load() < 2 {
				inflight.Add(1)
				wg.Go(func() {
					defer inflight.Add(-1)
					k.round(ctx, p)
				})
			}
			every = max(every/2, time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// round asks the peers once and applies lease.PeerVerdict.
func (k *Keeper) round(ctx context.Context, p lease.Params) {
	start := bootClock()
	answers, asked := k.cfg.Peers.AskPeers(ctx, gossip.RoleCompute, p.PeerTimeout)
	k.mu.Lock()
	defer k.mu.Unlock()
	if ctx.Err() != nil || k.ticket == nil || start < k.roundStart {
		return // stopped, released, or a round started later has spoken
	}
	k.roundStart = start
	var counted []lease.PeerAnswer
	for _, a := range answers {
		var pa peerAnswer
		if json.Unmarshal(a.Data, &pa) != nil || !pa.Holder || pa.Ticket == nil || pa.Ticket.Verify(k.ticketKey) != nil {
			continue
		}
		counted = append(counted, lease.PeerAnswer{Host: pa.Ticket.Host, Holder: true, Reach: pa.Reach, Grant: pa.Ticket.Grant})
	}
	v := lease.PeerVerdict(k.cfg.Host, k.ticket.Holders, k.ticket.Grant, p.L, counted)
	why := fmt.Sprintf("%s (%d of %d members answered)", v.Why, len(answers), asked)
	if v.Feed {
		k.stats.RoundsFeed++
		k.downUntil = start + p.Round + p.PeerTimeout
	} else {
		k.stats.RoundsStop++
		k.downUntil = 0
	}
	if k.verdict == "" || v.Feed != k.lastFeed {
		if v.Feed {
			k.log.Warn("watchdog lease ran out, but the control plane is down: feeding on", "host", k.cfg.Host, "why", why)
		} else {
			k.log.Error("watchdog lease ran out and the peers say this host is cut off: not feeding", "host", k.cfg.Host, "why", why)
		}
	}
	k.verdict, k.lastFeed = why, v.Feed
	k.persist()
}

// ---- state across restarts ----

// keeperState is the state file: what a restarted agent needs to resume
// feeding a watchdog the previous run armed, within the same boot.
type keeperState struct {
	Boot        string        `json:"boot"`
	Armed       bool          `json:"armed"`
	W           time.Duration `json:"w,omitempty"`
	Params      lease.Params  `json:"params"`
	LeaseEnd    time.Duration `json:"lease_end"` // CLOCK_BOOTTIME
	LastSuccess time.Duration `json:"last_success"`
	DownUntil   time.Duration `json:"down_until,omitempty"`
	Ticket      *lease.Ticket `json:"ticket,omitempty"`
	TicketKey   string        `json:"ticket_key,omitempty"`
}

// persist writes the state file (k.mu held).
func (k *Keeper) persist() {
	st := keeperState{Boot: k.cfg.BootID, Armed: k.dev != nil, W: k.w, Params: k.params, LeaseEnd: k.leaseEnd,
		LastSuccess: k.lastSuccess, DownUntil: k.downUntil, Ticket: k.ticket}
	if k.ticketKey != nil {
		st.TicketKey = lease.EncodeTicketKey(k.ticketKey)
	}
	b, _ := json.Marshal(st)
	if err := os.MkdirAll(filepath.Dir(k.cfg.StateFile), 0o755); err == nil {
		tmp := k.cfg.StateFile + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, k.cfg.StateFile)
		}
		if err == nil {
			delete(k.warned, "persist")
			return
		}
		k.warnOnce("persist", "cannot write the watchdog state file: a restart would not resume feeding", err.Error())
	}
}

// restore resumes a watchdog that an earlier run of this boot armed: it is
// reopened at once (a restart within W keeps the host up) and fed while
// the lease it held runs.
func (k *Keeper) restore() {
	b, err := os.ReadFile(k.cfg.StateFile)
	if err != nil {
		return
	}
	var st keeperState
	if json.Unmarshal(b, &st) != nil || st.Boot != k.cfg.BootID {
		_ = os.Remove(k.cfg.StateFile)
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.params, k.leaseEnd, k.lastSuccess, k.downUntil, k.ticket = st.Params, st.LeaseEnd, st.LastSuccess, st.DownUntil, st.Ticket
	k.ticketKey, _ = lease.ParseTicketKey(st.TicketKey)
	if !st.Armed {
		return
	}
	dev, err := k.cfg.Open(false)
	if err != nil {
		k.log.Error("cannot reopen the watchdog an earlier run armed: it resets the host when its countdown ends", "err", err)
		return
	}
	k.dev, k.w = dev, dev.Timeout()
	left := k.leaseEnd - bootClock()
	k.log.Warn("resuming the watchdog an earlier run armed", "device", dev.Name(), "w", k.w, "lease_left", left.Round(time.Millisecond))
}

// ---- stopping ----

// releaseTimeout bounds the release on a clean stop (within systemd's
// TimeoutStopSec).
const releaseTimeout = 5 * time.Second

// stop ends the keeper: disarm only once the leader committed the release
// of a lease that still runs; otherwise leave the countdown running.
func (k *Keeper) stop() {
	k.mu.Lock()
	dev := k.dev
	leased := bootClock() < k.leaseEnd
	if dev == nil {
		k.mu.Unlock()
		return
	}
	if !leased {
		k.mu.Unlock()
		k.log.Error("stopping without a lease (self-fencing, or the control plane is down): the watchdog stays armed; "+
			"this host resets unless iha-agent starts again and is granted a lease", "w", k.w)
		_ = dev.Close()
		return
	}
	// From now on this agent no longer vouches as a holder: if the release
	// commits but its answer is lost, no peer counts it.
	k.releasing = true
	k.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	g, _, _, err := k.ask(ctx, true)
	if err == nil && g.Released {
		if derr := dev.Disarm(); derr != nil {
			k.log.Error("the lease is released but the magic close failed: the watchdog may reset this host", "err", derr)
			return
		}
		_ = os.Remove(k.cfg.StateFile)
		k.log.Info("watchdog disarmed: the leader released this host's lease")
		return
	}
	why := ""
	if err != nil {
		why = err.Error()
	} else {
		why = "not released: " + g.Reason
	}
	k.log.Error("could not release the watchdog lease: the watchdog stays armed; this host resets W after the last feed "+
		"unless iha-agent starts again", "w", k.w, "why", why)
	_ = dev.Close()
}
