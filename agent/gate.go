package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ihaproject/iha/pkg/identity"
)

// GateConfig configures the nova-compute gate.
type GateConfig struct {
	// NovaHost is this compute's Nova host name.
	NovaHost string
	// Controllers are the status API base URLs to ask (http:// or https://,
	// see ParseController), in order: agent.yaml's controllers, never what
	// the mesh advertises.
	Controllers []string
	// HostKey (this host's key) checks the controllers' signature on an
	// answer: what makes an answer over http:// believable.
	HostKey []byte
	// TrustUnverified accepts, with a warning, an answer that can be
	// verified neither by TLS nor by signature (agent.yaml insecure: true).
	TrustUnverified bool
	// Timeout is how long to wait in total (default 10 min).
	Timeout time.Duration
	// Interval is the pause between rounds (default 2 s).
	Interval time.Duration
	// Client makes the requests (default: 5 s timeout per request, the
	// system roots for https). Its TLS configuration is what verifies an
	// https:// controller (agent.yaml api_ca).
	Client *http.Client
	// Out receives one line per change of what we wait for, a reminder
	// every 30 s, and a warning per controller whose answer cannot be
	// verified.
	Out io.Writer
	// Observe, when set, is told the result of every question asked:
	// allow, refuse, unverified or unreachable (GateResult).
	Observe func(addr, result string)
}

// GateResult classifies one question to a controller: "allow" and "refuse"
// are answers; "unverified" is a reply that cannot be trusted or read (a
// TLS verification failure, an answer neither TLS nor a signature vouches
// for, an HTTP status other than 200, a body that is not the gate's
// answer); "unreachable" is no reply. A cancelled question is "".
func GateResult(ans GateAnswer, err error) string {
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	var ne net.Error
	switch {
	case err == nil && ans.Allow:
		return "allow"
	case err == nil:
		return "refuse"
	case errors.Is(err, context.Canceled):
		return ""
	case errors.Is(err, errUnverified), errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &hne), errors.As(err, &cie):
		return "unverified"
	case errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.DeadlineExceeded):
		return "unreachable"
	default:
		return "unverified"
	}
}

// GateAnswer is the status API's answer to GET /v1/gate/<host>?nonce=N.
// Nonce and MAC are the controller's signature (identity.GateMAC) with this
// host's key over the other fields and the request's nonce.
type GateAnswer struct {
	Host   string `json:"host"`
	Allow  bool   `json:"allow"`
	Reason string `json:"reason"`
	Nonce  string `json:"nonce,omitempty"`
	MAC    string `json:"mac,omitempty"`
}

// errUnverified marks an answer the gate cannot verify: it counts as no
// answer.
var errUnverified = errors.New("the answer cannot be verified")

// GateTimeoutError is returned when the gate gives up.
type GateTimeoutError struct {
	Waited time.Duration
	// Answered is true when at least one controller answered (and refused);
	// false when none ever answered.
	Answered bool
	// Reason is the last refusal's reason.
	Reason string
}

func (e *GateTimeoutError) Error() string {
	if e.Answered {
		return fmt.Sprintf("gave up after %v: the IHA leader still says this host must wait: %s", e.Waited.Round(time.Second), e.Reason)
	}
	return fmt.Sprintf("gave up after %v: no IHA controller answered", e.Waited.Round(time.Second))
}

// ParseController checks one of agent.yaml's controllers: a status API
// base URL, http:// or https://, with a host and nothing after the port.
// It returns the URL without a trailing slash.
func ParseController(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	switch {
	case !strings.Contains(s, "://"):
		return "", fmt.Errorf("%q needs a scheme: https://host:port (checked with api_ca), or http://host:port (answers checked with host_key)", s)
	case err != nil:
		return "", fmt.Errorf("%q is not a URL: %w", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%q needs a scheme: https://host:port (checked with api_ca), or http://host:port (answers checked with host_key)", s)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("%q has no host", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.User != nil, u.Fragment != "":
		return "", fmt.Errorf("%q: want only scheme://host:port", s)
	}
	return u.Scheme + "://" + u.Host, nil
}

// Gate blocks until a controller allows NovaHost's nova-compute to start
// (nil), ctx ends (ctx's error), or Timeout passes (*GateTimeoutError).
// Any controller whose answer is verified decides; unreachable ones, and
// answers that cannot be verified (warned about, naming the controller),
// are skipped.
func Gate(ctx context.Context, cfg GateConfig) error {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 5 * time.Second}
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	start := time.Now()
	deadline := start.Add(cfg.Timeout)
	var last string
	var lastPrinted time.Time
	warned := map[string]string{}
	answered := false
	lastReason := ""
	say := func(msg string) {
		if msg != last || time.Since(lastPrinted) >= 30*time.Second {
			fmt.Fprintf(cfg.Out, "iha-agent gate: %s (waited %v of %v)\n", msg, time.Since(start).Round(time.Second), cfg.Timeout)
			last, lastPrinted = msg, time.Now()
		}
	}
	for {
		var errs []string
		decided := false
		for _, a := range cfg.Controllers {
			ans, warn, err := askGate(ctx, cfg, a)
			if r := GateResult(ans, err); cfg.Observe != nil && r != "" {
				cfg.Observe(a, r)
			}
			if warn != "" && warned[a] != warn {
				warned[a] = warn
				fmt.Fprintf(cfg.Out, "iha-agent gate: WARNING: %s\n", warn)
			}
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			answered, decided = true, true
			if ans.Allow {
				reason := ans.Reason
				if reason == "" {
					reason = "no unfinished recovery"
				}
				fmt.Fprintf(cfg.Out, "iha-agent gate: %s may start nova-compute: %s (controller %s)\n", cfg.NovaHost, reason, a)
				return nil
			}
			lastReason = ans.Reason
			say(fmt.Sprintf("waiting: the IHA leader says %s must not start nova-compute yet: %s", cfg.NovaHost, ans.Reason))
			break
		}
		if !decided {
			if len(cfg.Controllers) == 0 {
				say("waiting: no IHA controller configured (controllers: in agent.yaml, or --controllers)")
			} else {
				say("waiting: no IHA controller answered: " + strings.Join(errs, "; "))
			}
		}
		if time.Now().After(deadline) {
			return &GateTimeoutError{Waited: time.Since(start), Answered: answered, Reason: lastReason}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(cfg.Interval, time.Until(deadline)+time.Millisecond)):
		}
	}
}

// askGate asks one controller and verifies its answer: by TLS (an https://
// controller whose certificate the client verified) or by the
// controllers' signature with the host key. warn is set when an answer
// came but cannot be believed (it is then an error too, unless
// TrustUnverified).
func askGate(ctx context.Context, cfg GateConfig, base string) (ans GateAnswer, warn string, err error) {
	nb := make([]byte, 16)
	_, _ = rand.Read(nb)
	nonce := hex.EncodeToString(nb)
	u := strings.TrimSuffix(base, "/") + "/v1/gate/" + url.PathEscape(cfg.NovaHost) + "?nonce=" + nonce
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return ans, "", fmt.Errorf("%s: %w", base, err)
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return ans, "", fmt.Errorf("%s: %w", base, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusBadRequest && strings.Contains(string(body), "HTTPS server") {
			return ans, "", fmt.Errorf("%s: HTTP 400: it serves HTTPS (write https:// in controllers)", base)
		}
		return ans, "", fmt.Errorf("%s: HTTP %d", base, resp.StatusCode)
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return ans, "", fmt.Errorf("%s: bad answer: %w", base, err)
	}
	why := ""
	switch {
	case ans.Host != cfg.NovaHost:
		why = fmt.Sprintf("it answers for host %q", ans.Host)
	case ans.MAC != "" && len(cfg.HostKey) > 0:
		if ans.Nonce != nonce || !identity.CheckGate(cfg.HostKey, cfg.NovaHost, ans.Allow, ans.Reason, nonce, ans.MAC) {
			why = "its signature does not verify with this host's key (host_key made for another host or cluster key, or a forgery)"
		}
	case resp.TLS != nil:
		// The client verified the certificate (api_ca or the system roots).
	case len(cfg.HostKey) == 0:
		why = "it came over plain HTTP and this agent has no host_key to check the controllers' signature"
	default:
		why = "it came over plain HTTP without the controllers' signature (a controller without CLUSTER_KEY, or not a controller)"
	}
	if why == "" {
		return ans, "", nil
	}
	if cfg.TrustUnverified && ans.Host == cfg.NovaHost {
		return ans, fmt.Sprintf("believing an unverified answer from %s (insecure: true): %s", base, why), nil
	}
	msg := fmt.Sprintf("ignoring the answer of %s: %s; it counts as no answer", base, why)
	return GateAnswer{}, msg, fmt.Errorf("%s: %w: %s", base, errUnverified, why)
}
