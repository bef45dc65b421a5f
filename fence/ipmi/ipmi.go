package ipmi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// Driver is the name of this agent in fencing.yaml and in errors.
const Driver = config.AgentIPMI

// Defaults of the driver; Options override them.
const (
	// DefaultPollInterval is how often PowerOff reads the chassis status
	// while it waits for the BMC to report off.
	DefaultPollInterval = 250 * time.Millisecond
	// DefaultTimeout applies when neither the entry nor FENCING_TIMEOUT
	// gives one (values built in code, not read from files).
	DefaultTimeout = 30 * time.Second
	// maxUserLen and maxPasswordLen are IPMI 2.0 limits (RAKP user name
	// 16 bytes, password 20 bytes).
	maxUserLen     = 16
	maxPasswordLen = 20
)

// DefaultBackoff is the wait before the second and the third attempt, as
// InstanceHA: three attempts in all.
var DefaultBackoff = []time.Duration{1 * time.Second, 2 * time.Second}

// ErrInvalidConfig: the fencing.yaml entry cannot be used by this driver.
// The error text names the key and never holds the password.
var ErrInvalidConfig = errors.New("invalid ipmi configuration")

// errNotConfirmed: power down was accepted but the BMC did not report off
// before the deadline. Internal: callers see fence.ErrTimeout.
var errNotConfirmed = errors.New("not confirmed off")

// errBudget is the cause of a call's context when its timeout passed.
var errBudget = errors.New("fencing timeout reached")

var loginRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// Option changes a default of the driver (tests, tuning).
type Option func(*Fencer)

// WithBackoff sets the waits between attempts: len(d)+1 attempts in all.
// No argument means a single attempt.
func WithBackoff(d ...time.Duration) Option {
	return func(f *Fencer) { f.backoff = append([]time.Duration(nil), d...) }
}

// WithPollInterval sets how often PowerOff reads the status while waiting
// for off. Values under 10 ms are raised to 10 ms.
func WithPollInterval(d time.Duration) Option {
	return func(f *Fencer) { f.poll = max(d, 10*time.Millisecond) }
}

// WithCipherSuite sets the RMCP+ cipher suite (default 3:
// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128, which every IPMI 2.0 BMC and
// ipmi_sim support).
func WithCipherSuite(id types.CipherSuiteID) Option {
	return func(f *Fencer) { f.cipher = id }
}

// Fencer fences one host through its BMC over IPMI lanplus. It holds no
// session between calls; its methods are safe for concurrent use.
type Fencer struct {
	name    string // the fencing.yaml key, named in errors and logs
	ip      netip.Addr
	port    int
	user    string
	pass    secret.Secret
	timeout time.Duration
	poll    time.Duration
	backoff []time.Duration
	cipher  types.CipherSuiteID
	log     *slog.Logger

	// dial opens an authenticated session. A field so that tests can count
	// or fake sessions; New sets it to dialIPMI.
	dial func(ctx context.Context) (session, error)
}

// session is what the driver needs from one open RMCP+ session.
type session interface {
	PowerIsOn(ctx context.Context) (bool, error)
	PowerDown(ctx context.Context) error
	PowerUp(ctx context.Context) error
	// Close ends the session at the BMC (best effort, bounded) and releases
	// the socket.
	Close()
}

// New validates a fencing.yaml `agent: ipmi` entry and returns its Fencer.
// It does not contact the BMC. Its signature is a fence.Constructor.
func New(host config.FenceHost, s fence.Settings, logger *slog.Logger) (fence.Fencer, error) {
	return NewWithOptions(host, s, logger)
}

// NewWithOptions is New with defaults changed by opts.
func NewWithOptions(host config.FenceHost, s fence.Settings, logger *slog.Logger, opts ...Option) (*Fencer, error) {
	name := host.Name
	if name == "" {
		name = host.IPAddr
	}
	bad := func(format string, a ...any) error {
		return &fence.Error{Host: name, Driver: Driver, Op: fence.OpConfig,
			Err: fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...)}
	}
	if host.Name == "" {
		return nil, bad("entry has no host name")
	}
	if host.Agent != "" && host.Agent != Driver {
		return nil, bad("agent is %q, not %q", host.Agent, Driver)
	}
	if host.IPAddr == "" {
		return nil, bad("ipaddr is missing")
	}
	ip, err := netip.ParseAddr(host.IPAddr)
	if err != nil || ip.Zone() != "" {
		return nil, bad("ipaddr %q is not an IP literal", host.IPAddr)
	}
	ip = ip.Unmap()
	if host.IPPort < 1 || host.IPPort > 65535 {
		return nil, bad("ipport %d is out of range 1-65535", host.IPPort)
	}
	if !loginRE.MatchString(host.Login) {
		return nil, bad("login must match %s", loginRE)
	}
	if len(host.Login) > maxUserLen {
		return nil, bad("login is %d bytes, IPMI allows %d", len(host.Login), maxUserLen)
	}
	if host.Passwd.IsZero() {
		return nil, bad("passwd is missing")
	}
	if n := len(host.Passwd.Reveal()); n > maxPasswordLen {
		return nil, bad("passwd is %d bytes, IPMI 2.0 allows %d", n, maxPasswordLen)
	}
	timeout := host.Timeout
	if timeout <= 0 {
		timeout = s.Timeout
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Fencer{
		name:    host.Name,
		ip:      ip,
		port:    host.IPPort,
		user:    host.Login,
		pass:    host.Passwd,
		timeout: timeout,
		poll:    DefaultPollInterval,
		backoff: DefaultBackoff,
		cipher:  types.CipherSuiteID3,
		log:     logger,
	}
	for _, o := range opts {
		o(f)
	}
	f.dial = f.dialIPMI
	return f, nil
}

// String describes the fencer without credentials.
//
// Fencer formats and logs itself (String, Format, LogValue, all on the
// value so that a copy is covered too) because fmt prints unexported fields
// raw: the redaction of the password's secret.Secret would not apply
// inside this struct.
func (f Fencer) String() string {
	return "ipmi fencer of " + f.name + " at " + f.Address() + " as " + f.user
}

// Format prints String for every verb, %d and %#v included.
func (f Fencer) Format(s fmt.State, _ rune) { _, _ = s.Write([]byte(f.String())) }

// LogValue is what slog prints for a Fencer.
func (f Fencer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("host", f.name), slog.String("bmc", f.Address()),
		slog.String("login", f.user), slog.Duration("timeout", f.timeout))
}

// Driver returns "ipmi".
func (f *Fencer) Driver() string { return Driver }

// Address says where the BMC is, without credentials: ipmi://ip:port.
func (f Fencer) Address() string {
	return "ipmi://" + netip.AddrPortFrom(f.ip, uint16(f.port)).String()
}

// Timeout is the bound of every call.
func (f *Fencer) Timeout() time.Duration { return f.timeout }

// PowerOff powers the host off and returns nil once the BMC reports it off.
// A host already off gets power down too (harmless, and safe against an off
// read during a power cycle) and PowerOff succeeds. The whole call,
// attempts, back-off and confirmation included, is bounded by the timeout;
// an accepted power down that the BMC never confirms fails with
// fence.ErrTimeout. Safe to call again after any failure.
func (f *Fencer) PowerOff(ctx context.Context) error {
	start := time.Now()
	octx, cancel := context.WithTimeoutCause(ctx, f.timeout, errBudget)
	defer cancel()
	f.log.Info("fencing: powering off through IPMI", "host", f.name, "phase", "fencing",
		"bmc", f.Address(), "timeout", f.timeout)

	var accepted bool
	attempts, err := f.retry(octx, fence.OpPowerOff, func(ctx context.Context, s session) error {
		on, err := s.PowerIsOn(ctx)
		if err != nil {
			return err
		}
		if !on {
			// Power down anyway: an off read in the middle of a power cycle
			// (or a stale one) must not leave a host that comes back on.
			f.log.Info("fencing: BMC reports the host already off; sending power down anyway",
				"host", f.name, "phase", "fencing")
		}
		if err := s.PowerDown(ctx); err != nil {
			if _, refused := types.IsResponseError(err); !refused || on || isAuth(err) {
				return err
			}
			// The BMC answered and refused power down of a host it reports
			// off (some BMCs do): fenced, once the status says off again.
			f.log.Info("fencing: BMC refused power down of a host already off; confirming off",
				"host", f.name, "phase", "fencing", "err", scrub(err, f.pass))
		} else {
			accepted = true
			f.log.Info("fencing: BMC accepted power down; waiting for off", "host", f.name, "phase", "fencing")
		}
		return f.waitOff(ctx, s)
	})
	if err != nil {
		ferr := f.fail(ctx, fence.OpPowerOff, err, attempts, accepted)
		f.log.Error("fencing: power off failed", "host", f.name, "phase", "fencing",
			"elapsed", time.Since(start).Round(time.Millisecond), "err", ferr)
		return ferr
	}
	f.log.Info("fencing: BMC confirms power off", "host", f.name, "phase", "fencing",
		"elapsed", time.Since(start).Round(time.Millisecond), "attempts", attempts)
	return nil
}

// PowerOn asks the BMC to power the host on and returns once the request
// was accepted; it does not wait for the host to be up.
func (f *Fencer) PowerOn(ctx context.Context) error {
	octx, cancel := context.WithTimeoutCause(ctx, f.timeout, errBudget)
	defer cancel()
	attempts, err := f.retry(octx, fence.OpPowerOn, func(ctx context.Context, s session) error {
		return s.PowerUp(ctx)
	})
	if err != nil {
		ferr := f.fail(ctx, fence.OpPowerOn, err, attempts, false)
		f.log.Error("unfencing: power on failed", "host", f.name, "err", ferr)
		return ferr
	}
	f.log.Info("unfencing: BMC accepted power on", "host", f.name, "attempts", attempts)
	return nil
}

// PowerState reads the chassis power; it changes nothing.
func (f *Fencer) PowerState(ctx context.Context) (fence.PowerState, error) {
	octx, cancel := context.WithTimeoutCause(ctx, f.timeout, errBudget)
	defer cancel()
	var on bool
	attempts, err := f.retry(octx, fence.OpPowerState, func(ctx context.Context, s session) error {
		var err error
		on, err = s.PowerIsOn(ctx)
		return err
	})
	if err != nil {
		return fence.PowerUnknown, f.fail(ctx, fence.OpPowerState, err, attempts, false)
	}
	if on {
		return fence.PowerOn, nil
	}
	return fence.PowerOff, nil
}

// retry runs fn in a fresh session, up to len(f.backoff)+1 times, while the
// failures look transient (network, BMC silence, protocol errors). Refused
// credentials, errNotConfirmed and the end of ctx stop it at once. It
// returns how many attempts were made and the last error, unwrapped.
func (f *Fencer) retry(ctx context.Context, op string, fn func(context.Context, session) error) (int, error) {
	for attempt := 1; ; attempt++ {
		err := f.once(ctx, fn)
		if err == nil {
			return attempt, nil
		}
		if ctx.Err() != nil || isAuth(err) || errors.Is(err, errNotConfirmed) || attempt > len(f.backoff) {
			return attempt, err
		}
		wait := f.backoff[attempt-1]
		f.log.Warn("IPMI attempt failed; retrying", "host", f.name, "op", op,
			"attempt", attempt, "retry_in", wait, "err", scrub(err, f.pass))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return attempt, err
		case <-t.C:
		}
	}
}

func (f *Fencer) once(ctx context.Context, fn func(context.Context, session) error) error {
	s, err := f.dial(ctx)
	if err != nil {
		return err
	}
	defer release(ctx, s)
	return fn(ctx, s)
}

// release closes s. Closing asks the BMC to end the session (bounded by
// closeTimeout) so that its few session slots stay free. When the caller
// cancelled, it must not wait for that, so it happens in the background;
// when only our own timeout passed, the BMC is answering and the call
// closes what it opened before returning.
func release(ctx context.Context, s session) {
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errBudget) {
		go s.Close()
		return
	}
	s.Close()
}

// waitOff reads the status now and then every poll interval until the BMC
// reports off. Read errors are tolerated (a BMC busy powering down may drop
// a packet); after one, the next read uses a new session. At the end of
// ctx it returns errNotConfirmed, or ctx's error if the caller gave up.
func (f *Fencer) waitOff(ctx context.Context, s session) error {
	cur := s
	defer func() {
		if cur != nil && cur != s {
			release(ctx, cur)
		}
	}()
	tick := time.NewTicker(f.poll)
	defer tick.Stop()
	var lastErr error
	reads := 0
	for {
		if cur == nil {
			cur, lastErr = f.dial(ctx)
			if lastErr != nil {
				cur = nil
			}
		}
		if cur != nil {
			reads++
			on, err := cur.PowerIsOn(ctx)
			switch {
			case err == nil && !on:
				return nil
			case err != nil:
				lastErr = err
				f.log.Debug("fencing: status read failed while waiting for off", "host", f.name,
					"phase", "fencing", "err", scrub(err, f.pass))
				if cur != s {
					release(ctx, cur)
				}
				cur = nil
			default:
				lastErr = nil
			}
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("%w after %d status reads (last read: %v)", errNotConfirmed, reads, scrub(lastErr, f.pass))
			}
			return fmt.Errorf("%w: BMC still reports power on after %d status reads", errNotConfirmed, reads)
		case <-tick.C:
		}
	}
}

// fail turns the last error of a call into the *fence.Error callers see.
// parent is the caller's context: its end is reported as such, not as a
// BMC fault.
func (f *Fencer) fail(parent context.Context, op string, err error, attempts int, accepted bool) error {
	e := &fence.Error{Host: f.name, Driver: Driver, Op: op}
	switch {
	case parent.Err() != nil:
		state := "before power down was sent"
		if accepted {
			state = "after power down was accepted, before off was confirmed"
		}
		if op != fence.OpPowerOff {
			state = "before the BMC answered"
		}
		e.Err = fmt.Errorf("aborted %s: %w", state, context.Cause(parent))
	case isAuth(err):
		e.Err = fmt.Errorf("%w: BMC %s refused user %q: %v", fence.ErrAuth, f.Address(), f.user, scrub(err, f.pass))
	case errors.Is(err, errNotConfirmed):
		e.Err = fmt.Errorf("%w (%s): %v", fence.ErrTimeout, f.timeout, scrub(err, f.pass))
	case accepted:
		// The deadline hit while power down was in flight or being
		// confirmed: the host may or may not be off.
		e.Err = fmt.Errorf("%w (%s): power down accepted, off not confirmed: %v", fence.ErrTimeout, f.timeout, scrub(err, f.pass))
	default:
		e.Err = fmt.Errorf("%w: BMC %s, %d attempt(s) within %s: %v", fence.ErrUnreachable, f.Address(), attempts, f.timeout, scrub(err, f.pass))
	}
	return e
}

// hostArg is the BMC address as go-ipmi wants it: it joins host and port
// with ":", so an IPv6 literal needs its brackets.
func (f *Fencer) hostArg() string {
	if f.ip.Is6() {
		return "[" + f.ip.String() + "]"
	}
	return f.ip.String()
}

var _ fence.Fencer = (*Fencer)(nil)
