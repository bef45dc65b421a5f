package leader

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ihaproject/iha/pkg/api"
	"github.com/ihaproject/iha/pkg/lease"
)

// LeaseKeys authenticates the lease protocol: the key of each Nova host
// (derived from the cluster key; nil when this controller cannot
// authenticate that host) and the controllers' ticket key.
type LeaseKeys interface {
	HostKey(host string) []byte
	TicketKey() ed25519.PrivateKey
}

// LeaseStore is what the lease service needs of the node.
type LeaseStore interface {
	Store
	IsLeader() bool
}

// LeasesConfig wires a Leases service.
type LeasesConfig struct {
	Store  LeaseStore
	Params lease.Params
	Keys   LeaseKeys
	// Batch is how long the service collects requests before it commits
	// them as one lease.grant entry (default 20 ms).
	Batch time.Duration
	// MaxSkew bounds |request's sent − now| (default lease.MaxSkew).
	MaxSkew time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
}

// Leases grants the watchdog leases of armed computes. Requests are
// authenticated with the host's key, then committed in batches: the
// lease.grant entry's time is the grant time of every request in it (each
// was sent before it), and only a committed grant is ever answered, so an
// agent never holds a lease the log does not show. Runs on every
// controller; only the leader's commits succeed (followers' API forwards).
type Leases struct {
	cfg  LeasesConfig
	log  *slog.Logger
	now  func() time.Time
	reqs chan *leaseCall

	mu          sync.Mutex
	lost        map[string]time.Time // hosts reported as lost, by the grant they had
	leaderSince time.Time
}

type leaseCall struct {
	ask  LeaseAsk
	done chan leaseResult
}

type leaseResult struct {
	out LeaseOutcome
	at  time.Time
	err error
}

// NewLeases builds the service; Run serves it.
func NewLeases(cfg LeasesConfig) (*Leases, error) {
	if err := cfg.Params.Validate(); err != nil {
		return nil, err
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 20 * time.Millisecond
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = lease.MaxSkew
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Leases{cfg: cfg, log: cfg.Logger, now: cfg.Now, reqs: make(chan *leaseCall, 1024), lost: map[string]time.Time{}}, nil
}

// Params are the timings this controller grants.
func (s *Leases) Params() lease.Params { return s.cfg.Params }

// Grant answers one agent's request: refused with an error (bad request,
// bad signature, no leader), or a signed Grant, granted or not.
func (s *Leases) Grant(ctx context.Context, req lease.Request) (lease.Grant, error) {
	if err := req.Check(); err != nil {
		return lease.Grant{}, err
	}
	if s.cfg.Keys == nil {
		return lease.Grant{}, fmt.Errorf("%w: this controller has no cluster key (CLUSTER_KEY) to check agents with", lease.ErrUnavailable)
	}
	key := s.cfg.Keys.HostKey(req.Host)
	if len(key) == 0 {
		return lease.Grant{}, fmt.Errorf("%w: no key for host %s", lease.ErrSignature, req.Host)
	}
	if err := req.Verify(key); err != nil {
		return lease.Grant{}, err
	}
	now := s.now()
	if d := now.Sub(req.Sent); d > s.cfg.MaxSkew || d < -s.cfg.MaxSkew {
		return lease.Grant{}, fmt.Errorf("%w: sent %s, %v off this controller's clock (more than %v: a replay, or a clock to fix)",
			lease.ErrBadRequest, req.Sent.UTC().Format(time.RFC3339), d.Round(time.Second), s.cfg.MaxSkew)
	}
	g := lease.Grant{Host: req.Host, Nonce: req.Nonce, Params: s.cfg.Params}
	// A host in recovery is refused without a commit (its agent keeps
	// asking; the FSM would refuse it anyway).
	if h := s.cfg.Store.FSM().Host(req.Host); h != nil && h.Phase.Active() && h.Phase != PhaseReenabling && !req.Release {
		g.Reason = fmt.Sprintf("the host is in recovery (phase %s): no lease", h.Phase)
		g.Sign(key)
		return g, nil
	}
	call := &leaseCall{ask: LeaseAsk{Host: req.Host, Boot: req.Boot, Seq: req.Seq, Armed: req.Armed, W: req.W, Release: req.Release, Ack: req.Ack},
		done: make(chan leaseResult, 1)}
	select {
	case s.reqs <- call:
	case <-ctx.Done():
		return lease.Grant{}, ctx.Err()
	}
	var res leaseResult
	select {
	case res = <-call.done:
	case <-ctx.Done():
		return lease.Grant{}, ctx.Err()
	}
	if res.err != nil {
		return lease.Grant{}, res.err
	}
	g.Granted, g.Released, g.Reason = res.out.Granted, res.out.Released, res.out.Reason
	if g.Granted {
		priv := s.cfg.Keys.TicketKey()
		t := lease.SignTicket(priv, lease.Ticket{Host: req.Host, Grant: res.at, Holders: res.out.Holders, L: s.cfg.Params.L})
		g.Ticket = &t
		g.TicketKey = lease.EncodeTicketKey(priv.Public().(ed25519.PublicKey))
	}
	g.Sign(key)
	return g, nil
}

// Run commits the requests in batches, and on the leader reports leases
// that run out, until ctx ends.
func (s *Leases) Run(ctx context.Context) {
	sweep := time.NewTicker(max(s.cfg.Params.Renew, 100*time.Millisecond))
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			s.drain(ctx.Err())
			return
		case <-sweep.C:
			s.sweep(ctx)
		case first := <-s.reqs:
			batch := []*leaseCall{first}
			timer := time.NewTimer(s.cfg.Batch)
		collect:
			for len(batch) < 512 {
				select {
				case c := <-s.reqs:
					batch = append(batch, c)
				case <-timer.C:
					break collect
				case <-ctx.Done():
					break collect
				}
			}
			timer.Stop()
			s.commit(ctx, batch)
		}
	}
}

func (s *Leases) drain(err error) {
	for {
		select {
		case c := <-s.reqs:
			c.done <- leaseResult{err: err}
		default:
			return
		}
	}
}

func (s *Leases) commit(ctx context.Context, batch []*leaseCall) {
	cmd := LeaseGrantCmd{Params: s.cfg.Params, Asks: make([]LeaseAsk, len(batch))}
	for i, c := range batch {
		cmd.Asks[i] = c.ask
	}
	at := s.now()
	resp, err := s.cfg.Store.Apply(ctx, CmdLeaseGrant, at, cmd)
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
		err = fmt.Errorf("%w: %w", api.ErrNotLeader, err)
	}
	outs, ok := resp.([]LeaseOutcome)
	if err == nil && (!ok || len(outs) != len(batch)) {
		err = fmt.Errorf("lease.grant: unexpected answer %T", resp)
	}
	for i, c := range batch {
		if err != nil {
			c.done <- leaseResult{err: err}
			continue
		}
		c.done <- leaseResult{out: outs[i], at: at}
	}
	if err != nil {
		s.log.Debug("lease batch not committed", "requests", len(batch), "err", err)
	}
}

// sweep reports, once per episode, the holders whose lease ran out while
// this controller led (a new leader does not blame agents for the time
// nobody granted).
func (s *Leases) sweep(ctx context.Context) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cfg.Store.IsLeader() {
		s.leaderSince = time.Time{}
		return
	}
	if s.leaderSince.IsZero() {
		s.leaderSince = now
	}
	fsm := s.cfg.Store.FSM()
	for _, l := range fsm.Leases() {
		exp := l.Granted.Add(l.Params.L)
		if !l.Holder() || now.Before(exp) || exp.Before(s.leaderSince) {
			if g, ok := s.lost[l.Host]; ok && !g.Equal(l.Granted) {
				delete(s.lost, l.Host)
			}
			continue
		}
		if g, ok := s.lost[l.Host]; ok && g.Equal(l.Granted) {
			continue
		}
		s.lost[l.Host] = l.Granted
		msg := fmt.Sprintf("no lease renewal since %s: the lease ran out at %s", l.Granted.UTC().Format(time.RFC3339), exp.UTC().Format(time.RFC3339))
		if l.Armed {
			msg += fmt.Sprintf("; armed (W %v): the host resets unless its peers find the control plane down", l.W)
		}
		if h := fsm.Host(l.Host); h != nil && h.Phase.Active() {
			msg += fmt.Sprintf(" (in recovery, phase %s: no grant)", h.Phase)
		}
		if _, err := s.cfg.Store.Apply(ctx, CmdEvent, now, EventCmd{Host: l.Host, Kind: "LeaseLost", Message: msg, Warning: true}); err != nil {
			delete(s.lost, l.Host)
		}
	}
}
