package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/internal/testlog"
	"github.com/ihaproject/iha/pkg/lease"
	"github.com/ihaproject/iha/pkg/watchdog"
)

func wdScale(d time.Duration) time.Duration {
	if f, err := strconv.ParseFloat(os.Getenv("IHA_TEST_TIMEOUT_SCALE"), 64); err == nil && f > 0 {
		return time.Duration(float64(d) * f)
	}
	return d
}

// testParams are short timings that still satisfy lease.Params.Validate.
func testParams() lease.Params {
	f := func(ms int) time.Duration { return wdScale(time.Duration(ms) * time.Millisecond) }
	return lease.Params{L: f(3000), Renew: f(400), MaxRTT: f(500), Reach: f(1000), Round: f(300), PeerTimeout: f(200)}
}

// fakeLeader is the leader's lease endpoint as the agent sees it: it checks
// the host key, grants (or refuses, or hangs), and signs tickets.
type fakeLeader struct {
	mu      sync.Mutex
	hostKey []byte
	priv    ed25519.PrivateKey
	params  lease.Params
	mode    string // grant, refuse, hang
	holders int
	reqs    []lease.Request
	grants  []time.Time // when each grant was made
}

func newFakeLeader(t *testing.T, hostKey []byte) (*fakeLeader, string) {
	f := &fakeLeader{hostKey: hostKey, priv: lease.TicketKeyFrom([]byte("cluster")), params: testParams(), mode: "grant", holders: 5}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func (f *fakeLeader) set(mode string) { f.mu.Lock(); f.mode = mode; f.mu.Unlock() }

func (f *fakeLeader) lastGrant() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.grants) == 0 {
		return time.Time{}
	}
	return f.grants[len(f.grants)-1]
}

func (f *fakeLeader) requests() []lease.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]lease.Request(nil), f.reqs...)
}

func (f *fakeLeader) ticket(host string, at time.Time) *lease.Ticket {
	t := lease.SignTicket(f.priv, lease.Ticket{Host: host, Grant: at, Holders: f.holders, L: f.params.L})
	return &t
}

func (f *fakeLeader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req lease.Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Verify(f.hostKey) != nil {
		http.Error(w, `{"error":"bad"}`, http.StatusForbidden)
		return
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	mode := f.mode
	f.mu.Unlock()
	if mode == "hang" {
		<-r.Context().Done()
		return
	}
	now := time.Now()
	g := lease.Grant{Host: req.Host, Nonce: req.Nonce, Params: f.params}
	switch {
	case mode == "refuse":
		g.Reason = "the host is in recovery (phase fencing): no lease"
	case req.Release:
		g.Released = true
	default:
		f.mu.Lock()
		f.grants = append(f.grants, now)
		g.Granted, g.Ticket = true, f.ticket(req.Host, now)
		f.mu.Unlock()
		g.TicketKey = lease.EncodeTicketKey(f.priv.Public().(ed25519.PublicKey))
	}
	g.Sign(f.hostKey)
	_ = json.NewEncoder(w).Encode(g)
}

// fakePeers answers rounds from a script.
type fakePeers struct {
	mu     sync.Mutex
	answer func() []gossip.PeerAnswer
	rounds int
	mine   func() []byte
	slow   bool // every round lasts its whole timeout (a silent member)
}

func (p *fakePeers) AskPeers(ctx context.Context, _ gossip.Role, timeout time.Duration) ([]gossip.PeerAnswer, int) {
	p.mu.Lock()
	p.rounds++
	f, slow := p.answer, p.slow
	p.mu.Unlock()
	if f == nil || slow {
		select {
		case <-ctx.Done():
		case <-time.After(timeout):
		}
		if f == nil {
			return nil, 4
		}
	}
	return f(), 4
}

func (p *fakePeers) SetAnswerer(f func() []byte) { p.mu.Lock(); p.mine = f; p.mu.Unlock() }

func (p *fakePeers) set(f func() []gossip.PeerAnswer) { p.mu.Lock(); p.answer = f; p.mu.Unlock() }

// answersOf makes the peers' answers: n holders, reaching or not.
func answersOf(f *fakeLeader, n int, reach bool) func() []gossip.PeerAnswer {
	return func() []gossip.PeerAnswer {
		var out []gossip.PeerAnswer
		for i := range n {
			host := fmt.Sprintf("peer-%d", i)
			b, _ := json.Marshal(peerAnswer{Holder: true, Reach: reach, Ticket: f.ticket(host, time.Now().Add(-time.Second))})
			out = append(out, gossip.PeerAnswer{Node: host, Data: b})
		}
		return out
	}
}

type keeperRig struct {
	t       *testing.T
	leader  *fakeLeader
	peers   *fakePeers
	state   string
	hostKey []byte

	mu     sync.Mutex
	keeper *Keeper // the last one started
	devs   []*watchdog.Fake
	opened []bool // disarmOnError of each open
	w      time.Duration
}

func newKeeperRig(t *testing.T) *keeperRig {
	key := lease.Sum([]byte("k"), "compute-1")
	f, _ := newFakeLeader(t, key)
	return &keeperRig{t: t, leader: f, peers: &fakePeers{}, state: filepath.Join(t.TempDir(), "watchdog.json"), hostKey: key, w: wdScale(time.Second)}
}

func (r *keeperRig) opens() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.devs) }

func (r *keeperRig) dev() *watchdog.Fake {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.devs) == 0 {
		return nil
	}
	return r.devs[len(r.devs)-1]
}

// start runs a keeper (one agent run) against the rig's leader at url.
func (r *keeperRig) start(url string) (stop func()) {
	r.t.Helper()
	k, err := NewKeeper(KeeperConfig{Host: "compute-1", Controllers: []string{url}, HostKey: r.hostKey, Peers: r.peers,
		StateFile: r.state, BootID: "boot-1", Logger: testlog.New(r.t, -4),
		Open: func(disarmOnError bool) (watchdog.Device, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			d := watchdog.NewFake(r.w, nil)
			r.devs, r.opened = append(r.devs, d), append(r.opened, disarmOnError)
			return d, nil
		}})
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.keeper = k
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = k.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	r.t.Cleanup(stop)
	return stop
}

func (r *keeperRig) url() string {
	srv := httptest.NewServer(r.leader)
	r.t.Cleanup(srv.Close)
	return srv.URL
}

func waitKeeper(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wdScale(d))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", wdScale(d), what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// armed waits until the keeper armed and told the leader.
func (r *keeperRig) armed() {
	r.t.Helper()
	waitKeeper(r.t, 10*time.Second, "an armed renewal", func() bool {
		for _, q := range r.leader.requests() {
			if q.Armed {
				return r.dev() != nil
			}
		}
		return false
	})
}

func TestKeeperArmsOnlyUnderALeaseAndFeedsWhileItRuns(t *testing.T) {
	t.Parallel()
	r := newKeeperRig(t)
	r.start(r.url())
	r.armed()
	reqs := r.leader.requests()
	if reqs[0].Armed || reqs[0].W != 0 || !reqs[0].Ack.IsZero() {
		t.Fatalf("first request %+v: must ask unarmed before it opens the device", reqs[0])
	}
	for _, q := range reqs {
		if q.Armed && q.W != r.w {
			t.Fatalf("armed request reports W %v, the device's is %v", q.W, r.w)
		}
	}
	if r.opened[0] != true {
		t.Fatal("a first arming must disarm a device it cannot use")
	}
	time.Sleep(2 * testParams().L) // several leases long
	if at, fired := r.dev().FiredAt(time.Now()); fired {
		t.Fatalf("fired at %v while the lease was renewed", at)
	}
	// Requests acknowledge the grants they accepted and are ordered.
	reqs = r.leader.requests()
	last := reqs[len(reqs)-1]
	if last.Ack.IsZero() || reqs[len(reqs)-2].Seq >= last.Seq {
		t.Fatalf("requests do not ack or are not ordered: %+v", reqs[len(reqs)-2:])
	}
}

// lastFeedWithin checks the keeper stopped feeding by the end of the lease
// of the last grant (grant + L on the leader's clock, the same clock here).
func lastFeedWithin(t *testing.T, d *watchdog.Fake, grant time.Time, l time.Duration) {
	t.Helper()
	if last := d.LastFeed(); last.After(grant.Add(l)) {
		t.Fatalf("fed at %v, %v after its lease ended (grant %v + L %v)", last, last.Sub(grant.Add(l)), grant, l)
	}
}

func TestKeeperSelfFencesWhenCutOffAndItsPeersReachTheLeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		peers func(*fakeLeader) func() []gossip.PeerAnswer
	}{
		{"the peers reach a controller", func(f *fakeLeader) func() []gossip.PeerAnswer { return answersOf(f, 3, true) }},
		{"no peer answers (isolated)", func(*fakeLeader) func() []gossip.PeerAnswer { return nil }},
		{"a minority of the holders cannot reach either", func(f *fakeLeader) func() []gossip.PeerAnswer { return answersOf(f, 2, false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newKeeperRig(t)
			r.peers.set(tc.peers(r.leader))
			r.start(r.url())
			r.armed()
			r.leader.set("hang") // cut off from the controllers
			p := testParams()
			g := r.leader.lastGrant()
			waitKeeper(t, 10*time.Second, "the watchdog to fire", func() bool { _, f := r.dev().FiredAt(time.Now()); return f })
			lastFeedWithin(t, r.dev(), g, p.L)
		})
	}
}

func TestKeeperFeedsOnThroughAControlPlaneOutage(t *testing.T) {
	t.Parallel()
	r := newKeeperRig(t)
	r.peers.set(answersOf(r.leader, 3, false)) // 3 of the 4 other holders cannot reach either
	r.start(r.url())
	r.armed()
	r.leader.set("hang")
	p := testParams()
	g := r.leader.lastGrant()
	time.Sleep(time.Until(g.Add(2 * p.L)))
	if at, fired := r.dev().FiredAt(time.Now()); fired {
		t.Fatalf("a control-plane outage reset the host at %v", at)
	}
	if !r.dev().LastFeed().After(g.Add(p.L)) {
		t.Fatal("not fed past the lease")
	}
	// The control plane returns: leased again, fed on.
	r.leader.set("grant")
	waitKeeper(t, 5*time.Second, "a new grant", func() bool { return r.leader.lastGrant().After(g) })
	// The outage ends but the peers now reach and this host cannot: it stops.
	r.peers.set(answersOf(r.leader, 3, true))
	r.leader.set("hang")
	g = r.leader.lastGrant()
	waitKeeper(t, 10*time.Second, "the watchdog to fire", func() bool { _, f := r.dev().FiredAt(time.Now()); return f })
	if last := r.dev().LastFeed(); last.After(g.Add(p.L + p.Round + p.PeerTimeout)) {
		t.Fatalf("fed %v after the lease and a round ended", last.Sub(g.Add(p.L)))
	}
}

// A round that lasts its whole PeerTimeout (a member that never answers)
// must not open a gap in the feeding: the next verdict is in before this
// one's extension runs out. (Rounds used to start Round after the previous
// one ended, so with slow rounds the keeper stopped feeding for a moment
// every round: "self-fencing" logged, iha_agent_watchdog_feeding 0.)
func TestKeeperFeedsWithoutAGapWhenRoundsLastTheirWholeTimeout(t *testing.T) {
	t.Parallel()
	r := newKeeperRig(t)
	r.peers.set(answersOf(r.leader, 3, false))
	r.peers.mu.Lock()
	r.peers.slow = true
	r.peers.mu.Unlock()
	r.start(r.url())
	r.armed()
	r.leader.set("hang")
	p := testParams()
	g := r.leader.lastGrant()
	r.mu.Lock()
	k := r.keeper
	r.mu.Unlock()
	for end := g.Add(3 * p.L); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if st := k.Status(); !st.Feeding {
			t.Fatalf("stopped feeding %v after the grant (lease %v): %s", time.Since(g).Round(time.Millisecond), p.L, st.Verdict)
		}
	}
	if st := k.Status(); st.Stats.RoundsFeed < 3 {
		t.Fatalf("only %d feed verdicts in 2 L past the lease", st.Stats.RoundsFeed)
	}
	if at, fired := r.dev().FiredAt(time.Now()); fired {
		t.Fatalf("reset at %v", at)
	}
}

func TestKeeperIsNotKeptAliveByARefusal(t *testing.T) {
	t.Parallel()
	r := newKeeperRig(t)
	r.peers.set(answersOf(r.leader, 3, true))
	r.start(r.url())
	r.armed()
	g := r.leader.lastGrant()
	r.leader.set("refuse") // judged failed: the leader grants no more
	waitKeeper(t, 10*time.Second, "the watchdog to fire", func() bool { _, f := r.dev().FiredAt(time.Now()); return f })
	lastFeedWithin(t, r.dev(), g, testParams().L)
}

func TestKeeperIgnoresAnswersItCannotVerify(t *testing.T) {
	t.Parallel()
	r := newKeeperRig(t)
	r.peers.set(answersOf(r.leader, 3, true))
	// A "controller" with another key grants everything.
	rogue, rogueURL := newFakeLeader(t, lease.Sum([]byte("k"), "another host"))
	_ = rogue
	r.start(rogueURL)
	time.Sleep(testParams().L)
	if r.dev() != nil {
		t.Fatal("armed on an answer signed with another key")
	}
}

func TestKeeperDisarmsOnlyAfterAReleaseAndResumesAfterACrash(t *testing.T) {
	t.Parallel()
	r := newKeeperRig(t)
	url := r.url()
	stop := r.start(url)
	r.armed()
	// A clean stop: the release is granted, then the magic close.
	stop()
	if d := r.dev(); !d.Disarmed() {
		t.Fatal("not disarmed after a granted release")
	}
	reqs := r.leader.requests()
	if last := reqs[len(reqs)-1]; !last.Release || !last.Armed {
		t.Fatalf("last request %+v is not an armed release", last)
	}
	if _, err := os.Stat(r.state); !os.IsNotExist(err) {
		t.Fatalf("state file left after a release: %v", err)
	}

	// Again, but the controllers are gone at the stop: no magic close, and
	// the state file stays for the next run.
	stop = r.start(url)
	waitKeeper(t, 10*time.Second, "armed again", func() bool { return r.opens() == 2 })
	r.armed()
	r.leader.set("hang")
	stop()
	first := r.dev()
	if first.Disarmed() || !first.Closed() {
		t.Fatal("disarmed without a release")
	}
	// The next run (systemd's restart within W) reopens the device at once,
	// without disarming on error, and feeds it while the old lease runs.
	r.leader.set("grant")
	r.start(url)
	waitKeeper(t, 5*time.Second, "the device reopened", func() bool { return r.opens() == 3 })
	r.mu.Lock()
	reopen := r.opened[2]
	r.mu.Unlock()
	if reopen {
		t.Fatal("a resumed device must not be disarmed on error")
	}
	waitKeeper(t, 5*time.Second, "feeding the reopened device", func() bool { return r.dev().Feeds() > 0 })
	time.Sleep(testParams().L)
	if _, fired := r.dev().FiredAt(time.Now()); fired {
		t.Fatal("the restarted agent let the watchdog fire")
	}
}

func TestKeeperAnswersItsPeers(t *testing.T) {
	t.Parallel()
	r := newKeeperRig(t)
	r.start(r.url())
	r.armed()
	r.peers.mu.Lock()
	mine := r.peers.mine
	r.peers.mu.Unlock()
	var a peerAnswer
	if err := json.Unmarshal(mine(), &a); err != nil || !a.Holder || !a.Reach || a.Ticket == nil || a.Ticket.Host != "compute-1" {
		t.Fatalf("answer %+v %v", a, err)
	}
	if err := a.Ticket.Verify(r.leader.priv.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	r.leader.set("hang")
	waitKeeper(t, 10*time.Second, "no longer reaching", func() bool {
		_ = json.Unmarshal(mine(), &a)
		return !a.Reach
	})
}

func TestWatchdogConfigIsCheckedAsAWhole(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "host.key")
	if err := os.WriteFile(keyFile, []byte("# compute-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := func() Config {
		c := Config{Controllers: []string{"http://192.0.2.1:7421"}, HostKey: keyFile, Watchdog: WatchdogConfig{Device: "/dev/watchdog", Timeout: 10 * time.Second}}
		c.Defaults("compute-1")
		return c
	}
	if err := func() error { c := base(); return c.Validate() }(); err != nil {
		t.Fatalf("a good configuration: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want []string
	}{
		{"no host key, no controllers", func(c *Config) { c.HostKey, c.Controllers = "", nil }, []string{"needs host_key", "needs controllers"}},
		{"a relative device and a fractional timeout", func(c *Config) { c.Watchdog.Device, c.Watchdog.Timeout = "watchdog", 1500*time.Millisecond },
			[]string{`watchdog.device "watchdog"`, "watchdog.timeout 1.5s"}},
		{"a timeout without a device", func(c *Config) { c.Watchdog.Device = "" }, []string{"without a device"}},
		{"a key of the wrong size", func(c *Config) { c.HostKey = short }, []string{"host_key " + short + ": want 32 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			err := c.Validate()
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("Validate = %v, want %q", err, w)
				}
			}
		})
	}
}
