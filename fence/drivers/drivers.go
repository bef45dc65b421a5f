package drivers

import (
	"log/slog"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/bmh"
	"github.com/ihaproject/iha/fence/ipmi"
	"github.com/ihaproject/iha/fence/noop"
	"github.com/ihaproject/iha/fence/redfish"
	"github.com/ihaproject/iha/pkg/config"
)

// All returns the constructors of this build by agent name.
func All() map[string]fence.Constructor {
	return map[string]fence.Constructor{
		config.AgentIPMI:    ipmi.New,
		config.AgentRedfish: redfish.New,
		config.AgentNoop:    noop.New,
		config.AgentBMH:     bmh.New,
	}
}

// Registry builds the fence.Registry of fencing.yaml with every driver of
// this build. Extra options (tests replacing a driver) apply last. See
// fence.NewRegistry for the meaning of a non-nil error.
func Registry(f config.Fencing, s config.Settings, logger *slog.Logger, extra ...fence.Option) (*fence.Registry, error) {
	var opts []fence.Option
	for agent, mk := range All() {
		opts = append(opts, fence.WithDriver(agent, mk))
	}
	return fence.NewRegistry(f, s, logger, append(opts, extra...)...)
}
