package leader

import (
	"time"

	"github.com/ihaproject/iha/pkg/config"
)

// Policy is every configuration key the leader's decisions read, and only
// those: the reconciler and the rule functions take it, never the whole
// config.Settings (which also holds credentials, listen addresses, TLS
// files and the fence drivers' keys). Each field is the key of the same
// name in config.Settings (its doc comment and docs/config-reference.md say
// what it means); PolicyOf copies them. A key the leader starts to read is
// added here, and TestPolicyIsSettingsByName checks the copy.
type Policy struct {
	// Detection (detect.go, verdict.go).
	DetectionMode           string
	Delta                   time.Duration
	Poll                    time.Duration
	NovaReportInterval      time.Duration
	NovaAPITimeout          time.Duration
	MeshPartitionPercent    int
	MeshPartitionWindow     time.Duration
	CheckKdump              bool
	KdumpTimeout            time.Duration
	CheckHeartbeat          bool
	HeartbeatTimeout        time.Duration
	HeartbeatCliffThreshold int
	HeartbeatCliffMaxCycles int
	// Admission (admit.go, tags.go, optin.go, segments.go).
	Threshold                   int
	MaxHostsPerCycle            int
	Disabled                    bool
	Shadow                      bool
	TaggedImages                bool
	TaggedFlavors               bool
	TaggedAggregates            bool
	EvacuableTag                string
	EvacuateAllInstances        bool
	HAEnabledInstanceKey        string
	IgnoreInstancesInErrorState bool
	SkipServersWithName         []string
	Segments                    config.Segments
	ReservedHosts               bool
	ForceReservedHostEvacuation bool
	AddReservedHostToAggregate  bool
	// The workflow (workflow.go, evacuate.go, watchdog_fence.go).
	QuickEvacuateLevel   int
	FencingTimeout       time.Duration
	WatchdogMargin       time.Duration
	Delay                time.Duration
	Workers              int
	SmartEvacuation      bool
	OrchestratedRestart  bool
	EvacuationTimeout    time.Duration
	EvacuationRetries    int
	EvacuationStagger    time.Duration
	EvacuationGrace      time.Duration
	EvacuationMaxThreads int
	// Re-enable (reenable.go).
	ForceEnable              bool
	LeaveDisabled            bool
	RecoveredHostMaintenance bool
	// Reporting.
	MetricsLogInterval time.Duration
}

// PolicyOf is the policy in s.
func PolicyOf(s config.Settings) Policy {
	return Policy{
		DetectionMode:               s.DetectionMode,
		Delta:                       s.Delta,
		Poll:                        s.Poll,
		NovaReportInterval:          s.NovaReportInterval,
		NovaAPITimeout:              s.NovaAPITimeout,
		MeshPartitionPercent:        s.MeshPartitionPercent,
		MeshPartitionWindow:         s.MeshPartitionWindow,
		CheckKdump:                  s.CheckKdump,
		KdumpTimeout:                s.KdumpTimeout,
		CheckHeartbeat:              s.CheckHeartbeat,
		HeartbeatTimeout:            s.HeartbeatTimeout,
		HeartbeatCliffThreshold:     s.HeartbeatCliffThreshold,
		HeartbeatCliffMaxCycles:     s.HeartbeatCliffMaxCycles,
		Threshold:                   s.Threshold,
		MaxHostsPerCycle:            s.MaxHostsPerCycle,
		Disabled:                    s.Disabled,
		Shadow:                      s.Shadow,
		TaggedImages:                s.TaggedImages,
		TaggedFlavors:               s.TaggedFlavors,
		TaggedAggregates:            s.TaggedAggregates,
		EvacuableTag:                s.EvacuableTag,
		EvacuateAllInstances:        s.EvacuateAllInstances,
		HAEnabledInstanceKey:        s.HAEnabledInstanceKey,
		IgnoreInstancesInErrorState: s.IgnoreInstancesInErrorState,
		SkipServersWithName:         s.SkipServersWithName,
		Segments:                    s.Segments,
		ReservedHosts:               s.ReservedHosts,
		ForceReservedHostEvacuation: s.ForceReservedHostEvacuation,
		AddReservedHostToAggregate:  s.AddReservedHostToAggregate,
		QuickEvacuateLevel:          s.QuickEvacuateLevel,
		FencingTimeout:              s.FencingTimeout,
		WatchdogMargin:              s.WatchdogMargin,
		Delay:                       s.Delay,
		Workers:                     s.Workers,
		SmartEvacuation:             s.SmartEvacuation,
		OrchestratedRestart:         s.OrchestratedRestart,
		EvacuationTimeout:           s.EvacuationTimeout,
		EvacuationRetries:           s.EvacuationRetries,
		EvacuationStagger:           s.EvacuationStagger,
		EvacuationGrace:             s.EvacuationGrace,
		EvacuationMaxThreads:        s.EvacuationMaxThreads,
		ForceEnable:                 s.ForceEnable,
		LeaveDisabled:               s.LeaveDisabled,
		RecoveredHostMaintenance:    s.RecoveredHostMaintenance,
		MetricsLogInterval:          s.MetricsLogInterval,
	}
}
