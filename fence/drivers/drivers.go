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

// Settings picks out of IHA's configuration the few keys a driver reads.
// It is the one place where config.Settings becomes fence.Settings: a
// driver never sees the rest of the configuration.
func Settings(s config.Settings) fence.Settings {
	return fence.Settings{
		Timeout: s.FencingTimeout,
		TLS: fence.TLS{
			Insecure: !s.SSLVerify,
			CABundle: s.SSLCABundle,
			CertPath: s.SSLCertPath,
			KeyPath:  s.SSLKeyPath,
		},
	}
}

// Registry builds the fence.Registry of fencing.yaml with every driver of
// this build, each given Settings(s). Extra options (tests replacing a
// driver) apply last. See fence.NewRegistry for the meaning of a non-nil
// error.
func Registry(f config.Fencing, s config.Settings, logger *slog.Logger, extra ...fence.Option) (*fence.Registry, error) {
	var opts []fence.Option
	for agent, mk := range All() {
		opts = append(opts, fence.WithDriver(agent, mk))
	}
	return fence.NewRegistry(f, Settings(s), logger, append(opts, extra...)...)
}
