package fence

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/ihaproject/iha/pkg/config"
)

// Constructor builds the Fencer of one fencing.yaml entry. It validates the
// entry and returns an error naming what is wrong (never a credential). It
// must not contact the BMC: building a registry is offline.
//
// s holds the few global settings a driver reads (see Settings), never the
// whole configuration.
type Constructor func(host config.FenceHost, s Settings, logger *slog.Logger) (Fencer, error)

// Addresser is implemented by drivers that can describe where their BMC is
// (for `iha fence test`), without credentials.
type Addresser interface {
	Address() string
}

// ErrNotAvailable: fencing.yaml names a known agent whose driver is not
// compiled into this build (a build that leaves a driver out of fence/drivers).
var ErrNotAvailable = errors.New("not available in this build")

// knownAgents are the agents fencing.yaml may name.
var knownAgents = map[string]bool{
	config.AgentIPMI:    true,
	config.AgentRedfish: true,
	config.AgentBMH:     true,
	config.AgentNoop:    true,
}

// Option configures NewRegistry.
type Option func(*registryOptions)

type registryOptions struct {
	drivers map[string]Constructor
}

// WithDriver makes agent available through c. A later WithDriver for the
// same agent replaces an earlier one. Use fence/drivers to get every driver
// of this build at once.
func WithDriver(agent string, c Constructor) Option {
	return func(o *registryOptions) { o.drivers[strings.ToLower(agent)] = c }
}

// Registry holds one Fencer per fencing.yaml entry and finds them by Nova
// host name. It implements Lookup. It is immutable once built and safe for
// concurrent use.
type Registry struct {
	entries []entry // file order: the first short-name match wins
}

type entry struct {
	host   config.FenceHost // after ApplyAddress; holds secrets, never print
	fencer Fencer
	err    error // *Error with Op OpConfig when the entry is unusable
}

// HostInfo describes one configured host for reports, without credentials.
type HostInfo struct {
	Name    string // the key in fencing.yaml
	Agent   string
	Address string // where the BMC is, e.g. http://10.0.0.5:443/redfish/v1/Systems/X
	Err     error  // the configuration error, nil when the host has a Fencer
	// Fencer is this entry's own Fencer (nil when Err is set), also for an
	// entry shadowed by an earlier one with the same short name.
	Fencer Fencer
}

// NewRegistry validates every fencing.yaml entry and builds its Fencer with
// the constructor registered for its agent.
//
// The returned Registry is never nil. When some entries are unusable, err
// joins one *Error per bad entry (Op OpConfig); the registry still serves the
// good entries, and Fencer returns the configuration error for the bad ones,
// so that `iha fence test` can report every host. A daemon that wants a
// fully valid configuration treats err != nil as fatal.
func NewRegistry(f config.Fencing, s Settings, logger *slog.Logger, opts ...Option) (*Registry, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o := registryOptions{drivers: map[string]Constructor{}}
	for _, opt := range opts {
		opt(&o)
	}
	r := &Registry{}
	var errs []error
	seen := map[string]string{}
	for _, h := range f.Hosts {
		e := build(h, s, logger, o.drivers)
		if e.err != nil {
			errs = append(errs, e.err)
		}
		short := config.ShortName(h.Name)
		if first, dup := seen[short]; dup {
			// InstanceHA uses the first match; say so, since the second entry
			// is dead configuration and probably a mistake.
			logger.Warn("fencing.yaml has two entries with the same short name; the first is used",
				"host", h.Name, "first", first)
		} else {
			seen[short] = h.Name
		}
		r.entries = append(r.entries, e)
	}
	return r, errors.Join(errs...)
}

func build(h config.FenceHost, s Settings, logger *slog.Logger, drivers map[string]Constructor) entry {
	h.Agent = strings.ToLower(strings.TrimSpace(h.Agent))
	fail := func(err error) entry {
		driver := h.Agent
		if driver == "" {
			driver = "none"
		}
		return entry{host: h, err: &Error{Host: h.Name, Driver: driver, Op: OpConfig, Err: err}}
	}
	if h.Name == "" {
		return fail(errors.New("entry has an empty host name"))
	}
	h2, err := ApplyAddress(h)
	if err != nil {
		return fail(err)
	}
	h = h2
	if h.Agent == "" {
		return fail(fmt.Errorf("%w: no agent (want ipmi, redfish, bmh or noop)", ErrUnknownAgent))
	}
	if !knownAgents[h.Agent] {
		return fail(fmt.Errorf("%w %q (want ipmi, redfish, bmh or noop)", ErrUnknownAgent, h.Agent))
	}
	mk, ok := drivers[h.Agent]
	if !ok {
		return fail(fmt.Errorf("agent %s is %w", h.Agent, ErrNotAvailable))
	}
	// Drivers add "host" to their own log lines (they are also built
	// directly), so the logger is passed as is.
	fencer, err := mk(h, s, logger)
	if err != nil {
		var fe *Error
		if errors.As(err, &fe) {
			return entry{host: h, err: err}
		}
		return fail(err)
	}
	if fencer == nil {
		return fail(errors.New("driver returned no fencer"))
	}
	return entry{host: h, fencer: fencer}
}

// Fencer returns the Fencer of a Nova host, matched by short name against
// fencing.yaml's keys, first entry in file order. It returns an *Error
// wrapping ErrNoConfig when no entry matches, or the entry's configuration
// error when the entry is unusable.
func (r *Registry) Fencer(host string) (Fencer, error) {
	if host == "" {
		return nil, &Error{Host: host, Driver: "none", Op: OpConfig, Err: errors.New("empty host name")}
	}
	want := config.ShortName(host)
	for _, e := range r.entries {
		if config.ShortName(e.host.Name) == want {
			if e.err != nil {
				return nil, e.err
			}
			return e.fencer, nil
		}
	}
	return nil, &Error{Host: host, Driver: "none", Op: OpConfig, Err: ErrNoConfig}
}

// Hosts lists every entry in file order, shadowed duplicates included.
func (r *Registry) Hosts() []HostInfo {
	out := make([]HostInfo, 0, len(r.entries))
	for _, e := range r.entries {
		hi := HostInfo{Name: e.host.Name, Agent: e.host.Agent, Err: e.err, Fencer: e.fencer}
		if a, ok := e.fencer.(Addresser); ok {
			hi.Address = a.Address()
		} else {
			hi.Address = describe(e.host)
		}
		out = append(out, hi)
	}
	return out
}

// describe is the fallback address of an entry whose driver has none.
func describe(h config.FenceHost) string {
	switch h.Agent {
	case config.AgentBMH:
		if h.Namespace != "" || h.Host != "" {
			return "bmh " + h.Namespace + "/" + h.Host
		}
		return ""
	case config.AgentNoop:
		return "-"
	}
	if h.IPAddr == "" {
		return ""
	}
	if h.IPPort == 0 {
		return h.IPAddr
	}
	return net.JoinHostPort(h.IPAddr, strconv.Itoa(h.IPPort))
}

var _ Lookup = (*Registry)(nil)
