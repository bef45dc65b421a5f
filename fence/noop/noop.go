package noop

import (
	"context"
	"log/slog"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/pkg/config"
)

// Fencer is the noop driver of one host.
type Fencer struct {
	host   string
	logger *slog.Logger
}

// New builds the noop fencer of host. It accepts any entry: a noop entry
// needs nothing but its name.
func New(host config.FenceHost, _ fence.Settings, logger *slog.Logger) (fence.Fencer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if host.Name == "" {
		return nil, &fence.Error{Host: host.Name, Driver: config.AgentNoop, Op: fence.OpConfig, Err: errEmptyName}
	}
	return &Fencer{host: host.Name, logger: logger}, nil
}

var errEmptyName = errString("entry has an empty host name")

type errString string

func (e errString) Error() string { return string(e) }

// Driver returns "noop".
func (f *Fencer) Driver() string { return config.AgentNoop }

// Address describes the (absent) BMC.
func (f *Fencer) Address() string { return "none (noop)" }

// PowerOff does nothing and succeeds, with a warning: the host may still be
// running, and instances evacuated from it may be corrupted.
func (f *Fencer) PowerOff(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return f.err(fence.OpPowerOff, err)
	}
	f.logger.WarnContext(ctx, "noop fencing: host NOT powered off; instances evacuated from it may get corrupted if it is still running",
		"host", f.host, "phase", "fencing")
	return nil
}

// PowerOn does nothing and succeeds, with a warning.
func (f *Fencer) PowerOn(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return f.err(fence.OpPowerOn, err)
	}
	f.logger.WarnContext(ctx, "noop fencing: host NOT powered on (noop agent controls nothing)", "host", f.host)
	return nil
}

// PowerState always answers PowerUnknown: noop knows nothing about the host
// and must never claim it is off.
func (f *Fencer) PowerState(ctx context.Context) (fence.PowerState, error) {
	if err := ctx.Err(); err != nil {
		return fence.PowerUnknown, f.err(fence.OpPowerState, err)
	}
	f.logger.WarnContext(ctx, "noop fencing: power state unknown; instances may get corrupted if the host is still running", "host", f.host)
	return fence.PowerUnknown, nil
}

func (f *Fencer) err(op string, err error) error {
	return &fence.Error{Host: f.host, Driver: config.AgentNoop, Op: op, Err: err}
}
