package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// GateConfig configures the nova-compute gate.
type GateConfig struct {
	// NovaHost is this compute's Nova host name.
	NovaHost string
	// Controllers returns the status API addresses to ask (host:port or
	// http(s) URLs), in order; called before every round.
	Controllers func() []string
	// Timeout is how long to wait in total (default 10 min).
	Timeout time.Duration
	// Interval is the pause between rounds (default 2 s).
	Interval time.Duration
	// Client makes the requests (default: 5 s timeout per request).
	Client *http.Client
	// Out receives one line per change of what we wait for, and a reminder
	// every 30 s.
	Out io.Writer
	// Observe, when set, is told the result of every question asked:
	// allow, refuse, unverified or unreachable (GateResult).
	Observe func(addr, result string)
}

// GateResult classifies one question to a controller: "allow" and "refuse"
// are answers; "unverified" is a reply that cannot be trusted or read (a
// TLS verification failure, an HTTP status other than 200, a body that is
// not the gate's answer); "unreachable" is no reply. A cancelled question
// is "".
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
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &hne), errors.As(err, &cie):
		return "unverified"
	case errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.DeadlineExceeded):
		return "unreachable"
	default:
		return "unverified"
	}
}

// GateAnswer is the status API's answer to GET /v1/gate/<host>.
type GateAnswer struct {
	Host   string `json:"host"`
	Allow  bool   `json:"allow"`
	Reason string `json:"reason"`
}

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

// Gate blocks until a controller allows NovaHost's nova-compute to start
// (nil), ctx ends (ctx's error), or Timeout passes (*GateTimeoutError).
// Any controller answering decides; unreachable ones are skipped.
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
	answered := false
	lastReason := ""
	say := func(msg string) {
		if msg != last || time.Since(lastPrinted) >= 30*time.Second {
			fmt.Fprintf(cfg.Out, "iha-agent gate: %s (waited %v of %v)\n", msg, time.Since(start).Round(time.Second), cfg.Timeout)
			last, lastPrinted = msg, time.Now()
		}
	}
	for {
		addrs := cfg.Controllers()
		var errs []string
		decided := false
		for _, a := range addrs {
			ans, err := askGate(ctx, cfg.Client, a, cfg.NovaHost)
			if r := GateResult(ans, err); cfg.Observe != nil && r != "" {
				cfg.Observe(a, r)
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
			if len(addrs) == 0 {
				say("waiting: no IHA controller address known yet (none in the agent's controllers file or --controllers)")
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

func askGate(ctx context.Context, c *http.Client, addr, host string) (GateAnswer, error) {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := strings.TrimSuffix(base, "/") + "/v1/gate/" + url.PathEscape(host)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return GateAnswer{}, fmt.Errorf("%s: %w", addr, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return GateAnswer{}, fmt.Errorf("%s: %w", addr, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return GateAnswer{}, fmt.Errorf("%s: HTTP %d", addr, resp.StatusCode)
	}
	var a GateAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return GateAnswer{}, fmt.Errorf("%s: bad answer: %w", addr, err)
	}
	return a, nil
}

// ControllersFile is the file, in the agent's state directory, where the
// running agent lists the controllers' API addresses it learned from the
// mesh, for the gate (which runs before the mesh is joined).
const ControllersFile = "controllers.json"

type controllersFile struct {
	Updated     time.Time `json:"updated"`
	Controllers []string  `json:"controllers"`
}

// WriteControllers replaces dir/controllers.json atomically.
func WriteControllers(dir string, addrs []string) error {
	b, _ := json.Marshal(controllersFile{Updated: time.Now().UTC(), Controllers: addrs})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(dir, ControllersFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, ControllersFile))
}

// ReadControllers reads dir/controllers.json; a missing file is no
// addresses.
func ReadControllers(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, ControllersFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f controllersFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ControllersFile), err)
	}
	return f.Controllers, nil
}
