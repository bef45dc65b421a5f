package nova

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	tokens3 "github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/ihaproject/iha/pkg/config"
)

// DefaultTimeout bounds one HTTP request when Options.Timeout is zero
// (NOVA_API_TIMEOUT's default).
const DefaultTimeout = 30 * time.Second

// maxBody bounds what is read of a successful answer (a listing of many
// thousands of servers fits comfortably).
const maxBody = 256 << 20

// maxPages stops a paging loop on a misbehaving server.
const maxPages = 10000

// Options tune a Client.
type Options struct {
	// Timeout bounds each HTTP request, Keystone's included
	// (Settings.NovaAPITimeout). Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxMicroversion caps negotiation. Empty means "2.94", which is also
	// the ceiling: from 2.95 Nova leaves evacuated servers stopped, so a
	// higher cap is refused. A cap below 2.53 is refused too.
	MaxMicroversion string
	// Logger receives one debug line per request and the negotiation
	// result. Nil discards.
	Logger *slog.Logger
	// UserAgent is prepended to gophercloud's User-Agent.
	UserAgent string
}

// Client talks to Nova and Glance. Create it with New; it authenticates and
// negotiates the microversion on first use. Safe for concurrent use.
type Client struct {
	cloud     config.Cloud
	log       *slog.Logger
	cap       microversion
	secrets   []string // scrubbed from every message, whatever their context
	transport *http.Transport
	provider  *gophercloud.ProviderClient

	// connectSem serialises authentication and negotiation; a channel so
	// that waiting honours the caller's context.
	connectSem chan struct{}

	mu       sync.RWMutex
	compute  *gophercloud.ServiceClient // nil until authenticated
	image    *gophercloud.ServiceClient // nil when there is no image endpoint
	imageErr error                      // why image is nil
	mv       microversion               // zero until negotiated
}

// New builds a Client for cloud. It does no network I/O: authentication
// and microversion negotiation happen on first use (or Ping), so that a
// leader started while Keystone or Nova is down keeps retrying.
func New(cloud config.Cloud, opts Options) (*Client, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	mvCap := mvCeiling
	if opts.MaxMicroversion != "" {
		m, err := parseMicroversion(opts.MaxMicroversion)
		if err != nil {
			return nil, fmt.Errorf("nova: MaxMicroversion: %w", err)
		}
		if mvCeiling.less(m) {
			return nil, fmt.Errorf("nova: MaxMicroversion %s is above %s (from 2.95 evacuated servers arrive stopped)", m, mvCeiling)
		}
		if m.less(mvMinimum) {
			return nil, fmt.Errorf("nova: MaxMicroversion %s is below %s (service UUIDs and PUT /os-services/{id} need it)", m, mvMinimum)
		}
		mvCap = m
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	var tlsConf = cloud.TLS
	if tlsConf != nil {
		tlsConf = tlsConf.Clone()
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   timeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   32, // evacuation workers call Nova in parallel
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}

	c := &Client{
		cloud:      cloud,
		log:        log,
		cap:        mvCap,
		transport:  tr,
		connectSem: make(chan struct{}, 1),
	}
	ao := cloud.AuthOptions()
	c.secrets = nonEmpty(ao.Password, ao.ApplicationCredentialSecret, ao.TokenID, ao.Passcode)

	var provider *gophercloud.ProviderClient
	if na := cloud.NoAuth; na != nil {
		c.secrets = append(c.secrets, nonEmpty(na.Token.Reveal())...)
		if err := c.checkURL("NoAuth.ComputeURL", na.ComputeURL); err != nil {
			return nil, err
		}
		provider = &gophercloud.ProviderClient{}
		provider.UseTokenLock()
		provider.SetToken(na.Token.Reveal())
	} else {
		authURL := ao.IdentityEndpoint
		if authURL == "" {
			authURL = cloud.AuthURL
		}
		if err := c.checkURL("AuthURL", authURL); err != nil {
			return nil, err
		}
		p, err := openstack.NewClient(authURL)
		if err != nil {
			return nil, fmt.Errorf("nova: AuthURL: %s", c.scrub(err.Error()))
		}
		provider = p
	}
	provider.HTTPClient = http.Client{Transport: tr, Timeout: timeout}
	if opts.UserAgent != "" {
		provider.UserAgent.Prepend(opts.UserAgent)
	}
	c.provider = provider

	if na := cloud.NoAuth; na != nil {
		// No Keystone: the endpoints are known now and never change.
		c.compute = &gophercloud.ServiceClient{ProviderClient: provider, Endpoint: slash(na.ComputeURL), Type: "compute"}
		if na.ImageURL != "" {
			if err := c.checkURL("NoAuth.ImageURL", na.ImageURL); err != nil {
				return nil, err
			}
			c.image = imageClient(provider, na.ImageURL)
		} else {
			c.imageErr = errors.New("no image endpoint configured (NoAuth.ImageURL is empty)")
		}
	}
	return c, nil
}

// Close releases idle connections. The Client stays usable.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// Ping authenticates if needed and reads Nova's version document again,
// renegotiating the microversion (Nova may have been upgraded). It is the
// leader's liveness probe of Nova.
func (c *Client) Ping(ctx context.Context) error {
	return c.connect(ctx, renegotiate)
}

// Microversion returns the negotiated compute microversion, "" before the
// first successful call.
func (c *Client) Microversion() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.mv.String()
}

// ready returns the compute client and microversion, connecting first when
// needed.
func (c *Client) ready(ctx context.Context) (*gophercloud.ServiceClient, microversion, error) {
	c.mu.RLock()
	sc, mv := c.compute, c.mv
	c.mu.RUnlock()
	if sc != nil && !mv.isZero() {
		return sc, mv, nil
	}
	if err := c.connect(ctx, negotiate); err != nil {
		return nil, microversion{}, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.compute, c.mv, nil
}

// connectMode says how far connect goes.
type connectMode int

const (
	authOnly    connectMode = iota // a token and the catalog (Glance needs no more)
	negotiate                      // and a microversion, when there is none yet
	renegotiate                    // and a fresh read of the version document
)

// authenticated returns once there is a token (or NoAuth).
func (c *Client) authenticated(ctx context.Context) error {
	c.mu.RLock()
	sc := c.compute
	c.mu.RUnlock()
	if sc != nil {
		return nil
	}
	return c.connect(ctx, authOnly)
}

// connect authenticates once, then negotiates as mode says.
func (c *Client) connect(ctx context.Context, mode connectMode) error {
	select {
	case c.connectSem <- struct{}{}:
	case <-ctx.Done():
		return c.wrapErr("connect", ctx.Err())
	}
	defer func() { <-c.connectSem }()

	c.mu.RLock()
	sc, mv := c.compute, c.mv
	c.mu.RUnlock()
	if sc == nil {
		var err error
		if sc, err = c.authenticate(ctx); err != nil {
			return err
		}
	}
	if (mode == negotiate && mv.isZero()) || mode == renegotiate {
		nmv, err := c.negotiate(ctx, sc)
		if err != nil {
			return err
		}
		c.mu.Lock()
		old := c.mv
		c.mv = nmv
		c.mu.Unlock()
		if old != nmv {
			c.logNegotiated(old, nmv)
		}
	}
	return nil
}

// authenticate gets a Keystone token and the endpoints from its catalog.
func (c *Client) authenticate(ctx context.Context) (*gophercloud.ServiceClient, error) {
	ao := c.cloud.AuthOptions()
	if ao.IdentityEndpoint == "" {
		ao.IdentityEndpoint = c.cloud.AuthURL
	}
	// gophercloud refuses AllowReauth for an unscoped token pass-through.
	ao.AllowReauth = ao.TokenID == "" || ao.Scope != nil
	op := "authenticate at " + c.scrub(ao.IdentityEndpoint)
	start := time.Now()
	if err := openstack.Authenticate(ctx, c.provider, ao); err != nil {
		e := c.wrapErr(op, err)
		c.log.Warn("nova authentication failed", "op", op, "status", e.StatusCode, "request_id", e.RequestID, "err", e)
		return nil, e
	}
	if inner := c.provider.ReauthFunc; inner != nil {
		c.provider.ReauthFunc = func(ctx context.Context) error {
			c.log.Info("nova token refused, re-authenticating", "op", op)
			return inner(ctx)
		}
	}
	eo := c.cloud.Endpoint
	if eo.Region == "" {
		eo.Region = c.cloud.RegionName
	}
	if eo.Availability == "" && c.cloud.Interface != "" {
		eo.Availability = gophercloud.Availability(strings.TrimSuffix(c.cloud.Interface, "URL"))
	}
	computeURL, err := c.endpointURL("compute", eo)
	if err != nil {
		return nil, &APIError{Op: "find the compute endpoint in the catalog", Err: &cleanError{msg: c.scrub(err.Error()), cause: err}}
	}
	sc := &gophercloud.ServiceClient{ProviderClient: c.provider, Endpoint: slash(computeURL), Type: "compute"}
	var img *gophercloud.ServiceClient
	imageURL, ierr := c.endpointURL("image", eo)
	if ierr == nil {
		img = imageClient(c.provider, imageURL)
	}
	c.mu.Lock()
	c.compute, c.image, c.imageErr = sc, img, ierr
	c.mu.Unlock()
	c.log.Info("nova authenticated", "op", op, "compute", sc.Endpoint, "elapsed", time.Since(start))
	return sc, nil
}

// catalogResult is what Keystone v3 token results offer.
type catalogResult interface {
	ExtractServiceCatalog() (*tokens3.ServiceCatalog, error)
}

// endpointURL finds a service's URL in the token's catalog. Unlike
// gophercloud's EndpointLocator it does no version discovery: that would
// be an extra request per service at every authentication, and a Glance
// that is down at that moment would leave the client without an image
// endpoint for good. Keystone v2 catalogs go through gophercloud.
func (c *Client) endpointURL(serviceType string, eo gophercloud.EndpointOpts) (string, error) {
	eo.ApplyDefaults(serviceType)
	cr, ok := c.provider.GetAuthResult().(catalogResult)
	if !ok {
		var sc *gophercloud.ServiceClient
		var err error
		if serviceType == "image" {
			sc, err = openstack.NewImageV2(c.provider, eo)
		} else {
			sc, err = openstack.NewComputeV2(c.provider, eo)
		}
		if err != nil {
			return "", err
		}
		return sc.Endpoint, nil
	}
	cat, err := cr.ExtractServiceCatalog()
	if err != nil {
		return "", err
	}
	for _, e := range cat.Entries {
		if !slices.Contains(eo.Types(), e.Type) || (eo.Name != "" && e.Name != eo.Name) {
			continue
		}
		for _, ep := range e.Endpoints {
			if gophercloud.Availability(ep.Interface) != eo.Availability {
				continue
			}
			if eo.Region != "" && ep.Region != eo.Region && ep.RegionID != eo.Region {
				continue
			}
			return ep.URL, nil
		}
	}
	return "", fmt.Errorf("no %s endpoint with interface %s in region %q in the catalog", serviceType, eo.Availability, eo.Region)
}

// versionDoc is Nova's GET / (unversioned: "versions") or GET /v2.1
// ("version").
type versionDoc struct {
	Version  *versionEntry  `json:"version"`
	Versions []versionEntry `json:"versions"`
}

type versionEntry struct {
	ID         wireString `json:"id"`
	Status     wireString `json:"status"`
	Version    wireString `json:"version"`
	MinVersion wireString `json:"min_version"`
}

// negotiate reads the compute version document and picks
// min(server max, cap).
func (c *Client) negotiate(ctx context.Context, sc *gophercloud.ServiceClient) (microversion, error) {
	const op = "negotiate compute microversion"
	var doc versionDoc
	// The root must be read without a microversion header.
	st, err := c.do(ctx, request{op: op, svc: sc, method: "GET", url: sc.Endpoint, ok: []int{200, 300}}, &doc)
	if err != nil {
		return microversion{}, err
	}
	entry := doc.Version
	if entry == nil {
		for i := range doc.Versions {
			v := &doc.Versions[i]
			if v.ID == "v2.1" || (entry == nil && v.Status == "CURRENT") {
				entry = v
			}
		}
	}
	if entry == nil {
		return microversion{}, &APIError{Op: op, StatusCode: st.status, RequestID: st.requestID,
			Message: "the compute endpoint " + c.scrub(sc.Endpoint) + " returned no version document", Err: ErrMalformed}
	}
	srvMax := microversion{2, 0} // a v2.1 without "version" has no microversions
	if entry.Version != "" {
		if srvMax, err = parseMicroversion(string(entry.Version)); err != nil {
			return microversion{}, &APIError{Op: op, StatusCode: st.status, RequestID: st.requestID,
				Message: c.scrub(err.Error()), Err: ErrMalformed}
		}
	}
	chosen := srvMax
	if c.cap.less(chosen) {
		chosen = c.cap
	}
	if chosen.less(mvMinimum) {
		return microversion{}, &APIError{Op: op, StatusCode: st.status, RequestID: st.requestID, Err: ErrUnsupported,
			Message: fmt.Sprintf("Nova offers microversions up to %s; IHA needs at least %s (service UUIDs and PUT /os-services/{id})", srvMax, mvMinimum)}
	}
	if entry.MinVersion != "" {
		if srvMin, err := parseMicroversion(string(entry.MinVersion)); err == nil && chosen.less(srvMin) {
			return microversion{}, &APIError{Op: op, StatusCode: st.status, RequestID: st.requestID, Err: ErrUnsupported,
				Message: fmt.Sprintf("Nova's minimum microversion %s is above this client's cap %s", srvMin, c.cap)}
		}
	}
	return chosen, nil
}

func (c *Client) logNegotiated(old, mv microversion) {
	var degraded []string
	if mv.less(mvEmbeddedSpecs) {
		degraded = append(degraded, "servers without embedded flavor extra specs (<2.47)")
	}
	if mv.less(mvMigrationsPaging) {
		degraded = append(degraded, "os-migrations filtered client-side (<2.59)")
	}
	if mv.less(mvFlavorSpecs) {
		degraded = append(degraded, "flavor extra specs fetched per flavor (<2.61)")
	}
	if mv.less(mvLockedReason) {
		degraded = append(degraded, "locks without reason (<2.73)")
	}
	c.log.Info("nova microversion negotiated", "microversion", mv.String(), "previous", old.String(),
		"cap", c.cap.String(), "degraded", strings.Join(degraded, "; "))
}

// request is one HTTP call.
type request struct {
	op     string
	svc    *gophercloud.ServiceClient
	method string
	url    string
	body   any   // JSON-encoded when not nil
	ok     []int // accepted statuses; nil means 200
	mv     microversion
}

// answer is what callers may want of a successful response.
type answer struct {
	status    int
	requestID string
}

// do runs one request and decodes a successful JSON answer into out (when
// out is not nil and the body is not empty). Every failure is an *APIError.
func (c *Client) do(ctx context.Context, r request, out any) (answer, error) {
	ok := r.ok
	if ok == nil {
		ok = []int{200}
	}
	opts := &gophercloud.RequestOpts{
		JSONBody:         r.body,
		OkCodes:          ok,
		KeepResponseBody: true,
		MoreHeaders:      map[string]string{},
	}
	if !r.mv.isZero() {
		v := r.mv.String()
		opts.MoreHeaders["OpenStack-API-Version"] = "compute " + v
		opts.MoreHeaders["X-OpenStack-Nova-API-Version"] = v
	}
	start := time.Now()
	resp, err := r.svc.Request(ctx, r.method, r.url, opts)
	if err != nil {
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		e := c.wrapErr(r.op, err)
		c.log.Debug("nova call failed", "op", r.op, "method", r.method, "status", e.StatusCode,
			"request_id", e.RequestID, "elapsed", time.Since(start), "err", e)
		return answer{status: e.StatusCode, requestID: e.RequestID}, e
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, requestID: requestID(resp.Header)}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		e := c.wrapErr(r.op, err)
		e.RequestID = a.requestID
		return a, e
	}
	c.log.Debug("nova call", "op", r.op, "method", r.method, "status", a.status,
		"request_id", a.requestID, "elapsed", time.Since(start))
	if out == nil || len(bytes.TrimSpace(body)) == 0 {
		return a, nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return a, &APIError{Op: r.op, StatusCode: a.status, RequestID: a.requestID,
			Message: "malformed response: " + c.scrub(err.Error()), Err: ErrMalformed}
	}
	return a, nil
}

// computeCall runs one compute API call at the negotiated microversion,
// connecting first when needed.
func (c *Client) computeCall(ctx context.Context, op, method string, path []string, query url.Values, body any, ok []int, out any) (answer, error) {
	sc, mv, err := c.ready(ctx)
	if err != nil {
		return answer{}, relabel(err, op)
	}
	u := sc.ServiceURL(escapeAll(path)...)
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return c.do(ctx, request{op: op, svc: sc, method: method, url: u, body: body, ok: ok, mv: mv}, out)
}

// relabel names the call that could not connect: "list servers on host h:
// authenticate at …: HTTP 401" reads better than the bare connect error.
func relabel(err error, op string) error {
	var ae *APIError
	if errors.As(err, &ae) {
		cp := *ae
		cp.Op = op + ": " + ae.Op
		return &cp
	}
	return err
}

// pageURL rebuilds a "next" link on our own endpoint: Nova and Glance
// build links from their own idea of their public URL, which may not be
// reachable from here, so only the query (marker, limit, filters) is kept.
func pageURL(base, href string) (string, bool) {
	if href == "" {
		return "", false
	}
	h, err := url.Parse(href)
	if err != nil || h.RawQuery == "" {
		return "", false
	}
	b, err := url.Parse(base)
	if err != nil {
		return "", false
	}
	b.RawQuery = h.RawQuery
	return b.String(), true
}

func escapeAll(parts []string) []string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = url.PathEscape(p)
	}
	return out
}

func imageClient(p *gophercloud.ProviderClient, endpoint string) *gophercloud.ServiceClient {
	ep := slash(endpoint)
	sc := &gophercloud.ServiceClient{ProviderClient: p, Endpoint: ep, Type: "image"}
	if strings.HasSuffix(ep, "/v2/") {
		sc.ResourceBase = ep
	} else {
		sc.ResourceBase = ep + "v2/"
	}
	return sc
}

func slash(u string) string {
	if strings.HasSuffix(u, "/") {
		return u
	}
	return u + "/"
}

func (c *Client) checkURL(name, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("nova: %s %q is not an http(s) URL", name, c.scrub(raw))
	}
	return nil
}

func nonEmpty(vs ...string) []string {
	var out []string
	for _, v := range vs {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}
