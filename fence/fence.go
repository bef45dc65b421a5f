package fence

import (
	"context"
	"errors"
	"fmt"
)

// PowerState is what a BMC reports about a host's chassis power.
type PowerState int

const (
	// PowerUnknown means the state could not be read or was not understood.
	PowerUnknown PowerState = iota
	PowerOn
	PowerOff
)

func (p PowerState) String() string {
	switch p {
	case PowerOn:
		return "on"
	case PowerOff:
		return "off"
	default:
		return "unknown"
	}
}

// Fencer controls the power of one compute host through its BMC.
//
// Contract for every driver:
//   - PowerOff returns nil only once the BMC has confirmed that the host is
//     off (or the driver is noop, which confirms nothing and says so in its
//     logs). A host that is already off is fenced: PowerOff succeeds without
//     error. PowerOff is idempotent and may be called again after a crash.
//   - PowerOn asks for power on and returns once the request was accepted.
//   - PowerState only reads; it never changes anything.
//   - Methods are safe for concurrent use on different hosts; calls for the
//     same host are made by one goroutine at a time.
//   - Errors are *Error values (errors.As) and never contain a credential.
//   - Every method honours ctx: cancellation aborts waits promptly.
type Fencer interface {
	PowerOff(ctx context.Context) error
	PowerOn(ctx context.Context) error
	PowerState(ctx context.Context) (PowerState, error)
	// Driver names the agent: "ipmi", "redfish", "bmh" or "noop".
	Driver() string
}

// Operations named in errors.
const (
	OpPowerOff   = "power off"
	OpPowerOn    = "power on"
	OpPowerState = "power status"
	OpConfig     = "configure"
)

// Sentinel causes, matched with errors.Is through *Error.
var (
	// ErrAuth: the BMC refused the credentials. Retrying will not help.
	ErrAuth = errors.New("authentication failed")
	// ErrTimeout: the BMC accepted power off but never reported off in time.
	ErrTimeout = errors.New("power state not confirmed before the timeout")
	// ErrUnreachable: the BMC could not be reached (network, TLS, 5xx).
	ErrUnreachable = errors.New("BMC unreachable")
	// ErrNoConfig: fencing.yaml has no entry for the host.
	ErrNoConfig = errors.New("no fencing configuration for host")
	// ErrUnknownAgent: fencing.yaml names an agent that does not exist.
	ErrUnknownAgent = errors.New("unknown fencing agent")
)

// Error is the error every driver returns: which host, which driver, which
// operation, and why.
type Error struct {
	Host   string
	Driver string
	Op     string
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("fence %s via %s: %s: %v", e.Host, e.Driver, e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Lookup finds the Fencer of a Nova host. Implementations match the short
// name (text before the first dot) of the host against fencing.yaml's keys,
// as InstanceHA does. It returns an *Error wrapping ErrNoConfig when no
// entry matches.
type Lookup interface {
	Fencer(host string) (Fencer, error)
}

// LookupFunc adapts a function to Lookup.
type LookupFunc func(host string) (Fencer, error)

// Fencer calls f.
func (f LookupFunc) Fencer(host string) (Fencer, error) { return f(host) }
