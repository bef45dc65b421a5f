package redfish

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/schemas"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// Authentication modes (Options.Auth).
const (
	// AuthBasic sends HTTP basic auth with every request (InstanceHA's way,
	// and the only one the common emulator supports).
	AuthBasic = "basic"
	// AuthSession logs in through the SessionService, uses the X-Auth-Token
	// and logs out after each operation.
	AuthSession = "session"
	// AuthAuto uses a session when the BMC offers a SessionService and
	// falls back to basic auth when it does not.
	AuthAuto = "auto"
)

// Options tune the driver. The zero value is InstanceHA's behaviour.
type Options struct {
	// Auth is AuthBasic (default), AuthSession or AuthAuto.
	Auth string
	// PollInterval is the wait between PowerState reads after ForceOff
	// (default 1 s, as InstanceHA).
	PollInterval time.Duration
	// Backoff are the waits before the second, third… attempt of a request
	// that failed with a 5xx or a network error (default 1 s, 2 s: three
	// attempts, as InstanceHA).
	Backoff []time.Duration
	// Sleep waits d or until ctx is done (default: a timer). Tests inject a
	// recorder to keep retries fast.
	Sleep func(ctx context.Context, d time.Duration) error
}

const systemsPath = "/redfish/v1/Systems/"

// Fencer is the Redfish driver of one host. Calls for one host are made one
// at a time (fence.Fencer's contract); the cache of the system URI is
// nevertheless guarded so that a status read may overlap.
type Fencer struct {
	name     string // fencing.yaml key
	endpoint string // scheme://host:port
	systemID string // configured id; "" or the default means discover
	login    string
	passwd   secret.Secret
	timeout  time.Duration
	hc       *http.Client
	opts     Options
	logger   *slog.Logger

	mu        sync.Mutex
	systemURI string // found system's @odata.id, cached after the first success
}

// New builds the Redfish fencer of one fencing.yaml entry (the
// fence.Constructor of agent redfish). It validates the entry and the TLS
// settings; it does not contact the BMC.
func New(host config.FenceHost, s fence.Settings, logger *slog.Logger) (fence.Fencer, error) {
	f, err := NewWithOptions(host, s, logger, Options{})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// NewWithOptions is New with tuning options.
func NewWithOptions(host config.FenceHost, s fence.Settings, logger *slog.Logger, o Options) (*Fencer, error) {
	cfgErr := func(format string, args ...any) error {
		return &fence.Error{Host: host.Name, Driver: config.AgentRedfish, Op: fence.OpConfig, Err: fmt.Errorf(format, args...)}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if host.Name == "" {
		return nil, cfgErr("entry has an empty host name")
	}
	h, err := fence.ApplyAddress(host)
	if err != nil {
		return nil, cfgErr("%w", err)
	}
	if err := fence.CheckBMCHost(h.IPAddr); err != nil {
		return nil, cfgErr("ipaddr: %w", err)
	}
	if h.Login == "" {
		return nil, cfgErr("login is required")
	}
	if h.Passwd.IsZero() {
		return nil, cfgErr("passwd is required")
	}
	port := h.IPPort
	if port == 0 {
		port = config.DefaultHTTPSPort // InstanceHA's default, whatever the scheme
	}
	if port < 1 || port > 65535 {
		return nil, cfgErr("ipport %d out of range 1-65535", port)
	}
	if h.UUID != "" {
		if err := fence.CheckSystemID(h.UUID); err != nil {
			return nil, cfgErr("uuid: %w", err)
		}
	}
	switch o.Auth {
	case "":
		o.Auth = AuthBasic
	case AuthBasic, AuthSession, AuthAuto:
	default:
		return nil, cfgErr("auth %q is not basic, session or auto", o.Auth)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Backoff == nil {
		o.Backoff = []time.Duration{time.Second, 2 * time.Second}
	}
	if o.Sleep == nil {
		o.Sleep = fence.Sleep
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = s.Timeout
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}

	scheme := "http"
	var tlsCfg *tls.Config
	if h.TLS {
		scheme = "https"
		tlsCfg, err = clientTLS(s.TLS, logger, h.Name)
		if err != nil {
			return nil, cfgErr("%w", err)
		}
	} else {
		logger.Warn("redfish over plain HTTP: the BMC password crosses the network in clear; set tls: true",
			"host", h.Name, "address", net.JoinHostPort(h.IPAddr, strconv.Itoa(port)))
	}
	tr := &http.Transport{
		Proxy:               nil, // a BMC network is never reached through a proxy
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: timeout,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     time.Minute,
	}
	return &Fencer{
		name:     h.Name,
		endpoint: scheme + "://" + net.JoinHostPort(h.IPAddr, strconv.Itoa(port)),
		systemID: h.UUID,
		login:    h.Login,
		passwd:   h.Passwd,
		timeout:  timeout,
		hc:       &http.Client{Transport: tr, Timeout: timeout},
		opts:     o,
		logger:   logger,
	}, nil
}

// clientTLS builds the TLS settings from SSL_VERIFY, SSL_CA_BUNDLE,
// SSL_CERT_PATH and SSL_KEY_PATH. As InstanceHA, a path is used only if the
// file exists (a warning says when it does not); a file that exists but
// cannot be used is an error.
func clientTLS(s fence.TLS, logger *slog.Logger, host string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.Insecure {
		cfg.InsecureSkipVerify = true
		logger.Warn("redfish TLS certificate verification is off (SSL_VERIFY false): the BMC is not authenticated", "host", host)
	}
	if p := s.CABundle; p != "" {
		pem, err := os.ReadFile(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			logger.Warn("SSL_CA_BUNDLE does not exist; using the system roots", "host", host, "path", p)
		case err != nil:
			return nil, fmt.Errorf("SSL_CA_BUNDLE: %w", err)
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("SSL_CA_BUNDLE %s holds no PEM certificate", p)
			}
			cfg.RootCAs = pool
		}
	}
	if s.CertPath != "" || s.KeyPath != "" {
		if s.CertPath == "" || s.KeyPath == "" {
			return nil, errors.New("SSL_CERT_PATH and SSL_KEY_PATH must be set together")
		}
		if exists(s.CertPath) && exists(s.KeyPath) {
			cert, err := tls.LoadX509KeyPair(s.CertPath, s.KeyPath)
			if err != nil {
				// The error names the files, not their content.
				return nil, fmt.Errorf("SSL_CERT_PATH/SSL_KEY_PATH: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		} else {
			logger.Warn("SSL_CERT_PATH or SSL_KEY_PATH does not exist; no client certificate", "host", host)
		}
	}
	return cfg, nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// Driver returns "redfish".
func (f *Fencer) Driver() string { return config.AgentRedfish }

// Address is the system URL (without credentials).
func (f *Fencer) Address() string {
	if f.discovers() {
		// The only system, else System.Embedded.1: see locate.
		return f.endpoint + systemsPath + "(auto)"
	}
	return f.endpoint + systemsPath + f.systemID
}

// discovers reports whether the system is found by listing Systems: no id
// or InstanceHA's default id was configured.
func (f *Fencer) discovers() bool {
	return f.systemID == "" || f.systemID == config.DefaultRedfishUUID
}

// String describes the fencer without credentials (what %v prints).
func (f *Fencer) String() string { return "redfish fencer for " + f.name + " at " + f.endpoint }

// GoString is what %#v prints: the same, so that no field (the password is
// a secret.Secret anyway) is dumped by a stray %#v or a panic.
func (f *Fencer) GoString() string { return f.String() }

// PowerOff sends ForceOff and polls PowerState until Off, for at most the
// host's timeout. ForceOff is sent even when the host reads Off: a stale
// read must not leave a running host unfenced, and ForceOff on an off host
// is harmless. A 400 or 409 answer with PowerState Off counts as fenced
// (iDRAC refuses ForceOff on a host already off).
func (f *Fencer) PowerOff(ctx context.Context) error {
	start := time.Now()
	f.logger.InfoContext(ctx, "redfish power off", "host", f.name, "phase", "fencing", "address", f.endpoint)
	var c *gofish.APIClient
	var sysURI string
	alreadyOff := false
	err := f.retry(ctx, fence.OpPowerOff, func(ctx context.Context) error {
		cl, sys, err := f.open(ctx)
		if err != nil {
			return err
		}
		_, err = sys.Reset(schemas.ForceOffResetType)
		if code := statusOf(err); code == http.StatusBadRequest || code == http.StatusConflict {
			// Already off? Ask, as InstanceHA does.
			cur, rerr := schemas.GetComputerSystem(cl, sys.ODataID)
			if rerr == nil && cur.PowerState == schemas.OffPowerState {
				f.logger.InfoContext(ctx, "redfish ForceOff refused because the host is already off: fenced",
					"host", f.name, "status", code)
				alreadyOff = true
				err = nil
			} else if rerr == nil {
				err = permanent(fmt.Errorf("ForceOff refused with HTTP %d while PowerState is %s", code, stateText(cur.PowerState)))
			}
		}
		if err != nil {
			f.close(cl)
			return step("reset ForceOff", err)
		}
		c, sysURI = cl, sys.ODataID
		return nil
	})
	if err != nil {
		return err
	}
	defer f.close(c)
	if !alreadyOff {
		if err := f.waitOff(ctx, c, sysURI); err != nil {
			return err
		}
	}
	f.logger.InfoContext(ctx, "redfish power off confirmed", "host", f.name, "phase", "fenced",
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// waitOff polls PowerState every PollInterval until Off, for at most the
// host's timeout. Read errors other than auth are tolerated while waiting.
func (f *Fencer) waitOff(ctx context.Context, c *gofish.APIClient, uri string) error {
	deadline := time.Now().Add(f.timeout)
	last := schemas.PowerState("")
	var lastErr error
	for {
		cur, err := schemas.GetComputerSystem(c.WithContext(ctx), uri)
		if err == nil {
			last, lastErr = cur.PowerState, nil
			if cur.PowerState == schemas.OffPowerState {
				return nil
			}
		} else {
			if ctx.Err() != nil {
				return f.fail(ctx, fence.OpPowerOff, lastErr)
			}
			if isAuth(err) {
				return f.fail(ctx, fence.OpPowerOff, step("read power state", err))
			}
			lastErr = step("read power state", err)
			f.logger.DebugContext(ctx, "redfish power state read failed while waiting for off", "host", f.name, "err", fence.Scrub(err.Error(), f.passwd))
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			msg := fmt.Sprintf("%v: still %s after %v", fence.ErrTimeout, stateText(last), f.timeout)
			if lastErr != nil {
				msg += "; last read: " + fence.Scrub(lastErr.Error(), f.passwd)
			}
			return &fence.Error{Host: f.name, Driver: config.AgentRedfish, Op: fence.OpPowerOff,
				Err: &fence.SanitizedError{Msg: msg, Is: fence.ErrTimeout}}
		}
		if err := f.opts.Sleep(ctx, min(f.opts.PollInterval, remaining)); err != nil {
			return f.fail(ctx, fence.OpPowerOff, nil)
		}
	}
}

// PowerOn sends On and returns once the BMC accepted it. A 400 or 409 with
// PowerState On counts as done; with PowerState Off it means the BMC is not
// ready yet (seen after ForceOff) and is retried.
func (f *Fencer) PowerOn(ctx context.Context) error {
	f.logger.InfoContext(ctx, "redfish power on", "host", f.name, "address", f.endpoint)
	return f.retry(ctx, fence.OpPowerOn, func(ctx context.Context) error {
		cl, sys, err := f.open(ctx)
		if err != nil {
			return err
		}
		defer f.close(cl)
		_, err = sys.Reset(schemas.OnResetType)
		if code := statusOf(err); code == http.StatusBadRequest || code == http.StatusConflict {
			cur, rerr := schemas.GetComputerSystem(cl, sys.ODataID)
			switch {
			case rerr != nil:
			case cur.PowerState == schemas.OnPowerState || cur.PowerState == schemas.PoweringOnPowerState:
				return nil
			default:
				return retryable(fmt.Errorf("reset On refused with HTTP %d while PowerState is %s (BMC not ready)", code, stateText(cur.PowerState)))
			}
		}
		return step("reset On", err)
	})
}

// PowerState reads the system's PowerState. PoweringOff counts as on: the
// host may still be writing.
func (f *Fencer) PowerState(ctx context.Context) (fence.PowerState, error) {
	var st schemas.PowerState
	err := f.retry(ctx, fence.OpPowerState, func(ctx context.Context) error {
		cl, sys, err := f.open(ctx)
		if err != nil {
			return err
		}
		f.close(cl)
		st = sys.PowerState
		return nil
	})
	if err != nil {
		return fence.PowerUnknown, err
	}
	return mapState(st), nil
}

func mapState(s schemas.PowerState) fence.PowerState {
	switch s {
	case schemas.OffPowerState:
		return fence.PowerOff
	case schemas.OnPowerState, schemas.PoweringOffPowerState, schemas.PoweringOnPowerState:
		return fence.PowerOn
	}
	return fence.PowerUnknown
}

func stateText(s schemas.PowerState) string {
	if s == "" {
		return "unknown"
	}
	return string(s)
}

// open connects, authenticates and reads the system. The caller closes the
// client with f.close.
func (f *Fencer) open(ctx context.Context) (*gofish.APIClient, *schemas.ComputerSystem, error) {
	c, err := f.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	sys, err := f.locate(c)
	if err != nil {
		f.close(c)
		return nil, nil, err
	}
	return c, sys, nil
}

func (f *Fencer) connect(ctx context.Context) (*gofish.APIClient, error) {
	cfg := gofish.ClientConfig{
		Endpoint:          f.endpoint,
		Username:          f.login,
		Password:          f.passwd.Reveal(),
		HTTPClient:        f.hc,
		BasicAuth:         f.opts.Auth == AuthBasic,
		ReuseConnections:  true,
		NoModifyTransport: true,
	}
	c, err := gofish.ConnectContext(ctx, cfg)
	if err == nil {
		return c, nil
	}
	if f.opts.Auth == AuthAuto && ctx.Err() == nil && !isAuth(err) && !isRetryable(err) {
		// No usable SessionService: the emulator's case. Basic auth it is.
		f.logger.DebugContext(ctx, "redfish session login unavailable; using basic auth", "host", f.name, "err", fence.Scrub(err.Error(), f.passwd))
		cfg.BasicAuth = true
		c, err = gofish.ConnectContext(ctx, cfg)
		if err == nil {
			return c, nil
		}
	}
	return nil, step("connect", err)
}

func (f *Fencer) close(c *gofish.APIClient) {
	if c != nil && f.opts.Auth != AuthBasic {
		c.Logout() // no-op without a session; deletes it otherwise
	}
}

// locate finds the system: the configured id, or when none (or InstanceHA's
// default) was configured, the only system of the BMC, else the default id.
func (f *Fencer) locate(c *gofish.APIClient) (*schemas.ComputerSystem, error) {
	f.mu.Lock()
	uri := f.systemURI
	f.mu.Unlock()
	if uri == "" && !f.discovers() {
		uri = systemsPath + url.PathEscape(f.systemID)
	}
	if uri != "" {
		sys, err := schemas.GetComputerSystem(c, uri)
		if err != nil {
			if statusOf(err) == http.StatusNotFound {
				f.setURI("")
				return nil, permanent(fmt.Errorf("system %s not found on the BMC: %w", f.systemID, err))
			}
			return nil, step("read system", err)
		}
		f.setURI(sys.ODataID)
		return sys, nil
	}
	systems, err := c.Service.Systems()
	if err != nil {
		return nil, step("list systems", firstFailure(err))
	}
	var pick *schemas.ComputerSystem
	ids := make([]string, 0, len(systems))
	for _, s := range systems {
		ids = append(ids, s.ID)
		if s.ID == config.DefaultRedfishUUID {
			pick = s
		}
	}
	if len(systems) == 1 {
		pick = systems[0]
	}
	if pick == nil {
		if len(ids) > 10 {
			ids = append(ids[:10], "…")
		}
		return nil, permanent(fmt.Errorf("the BMC has %d systems (%s) and none is %s: set uuid",
			len(systems), strings.Join(ids, ", "), config.DefaultRedfishUUID))
	}
	f.setURI(pick.ODataID)
	return pick, nil
}

func (f *Fencer) setURI(u string) {
	f.mu.Lock()
	f.systemURI = u
	f.mu.Unlock()
}

// retry runs attempt up to len(Backoff)+1 times while it fails with a
// retryable error (5xx, network), sleeping Backoff[i] in between. Auth
// errors and other refusals end at once.
func (f *Fencer) retry(ctx context.Context, op string, attempt func(context.Context) error) error {
	var last error
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return f.fail(ctx, op, last)
		}
		err := attempt(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return f.fail(ctx, op, err)
		}
		last = err
		if !isRetryable(err) || i >= len(f.opts.Backoff) {
			return f.fail(ctx, op, err)
		}
		f.logger.WarnContext(ctx, "redfish request failed; retrying", "host", f.name, "op", op,
			"attempt", i+1, "backoff", f.opts.Backoff[i], "err", fence.Scrub(err.Error(), f.passwd))
		if err := f.opts.Sleep(ctx, f.opts.Backoff[i]); err != nil {
			return f.fail(ctx, op, last)
		}
	}
}

// fail builds the *fence.Error of op: the context's error when ctx is done,
// else err classified under a fence sentinel, with any trace of the
// password removed from the text.
func (f *Fencer) fail(ctx context.Context, op string, err error) error {
	fe := &fence.Error{Host: f.name, Driver: config.AgentRedfish, Op: op}
	if cerr := ctx.Err(); cerr != nil {
		msg := cerr.Error()
		if err != nil {
			msg += " (last: " + fence.Scrub(err.Error(), f.passwd) + ")"
		}
		fe.Err = &fence.SanitizedError{Msg: msg, Is: cerr}
		return fe
	}
	sentinel := classify(err)
	msg := fence.Scrub(err.Error(), f.passwd)
	if sentinel != nil {
		msg = sentinel.Error() + ": " + msg
	}
	fe.Err = &fence.SanitizedError{Msg: msg, Is: sentinel}
	return fe
}
