package config

import (
	"strconv"
	"strings"
	"time"

	"github.com/ihaproject/iha/pkg/secret"
)

// The key table: every key of config.yaml's `config:` map, in the order of
// the reference. It is the one place that says what a key is; parsing
// (settings.go), validation, `iha config check` and ReferenceMarkdown all
// read it. Defaults come from Defaults(), so they are written once.

// Origins of keys.
const (
	originInstanceHA = "InstanceHA"
	originIHA        = "IHA"
)

type kind int

const (
	kindInt        kind = iota // integer (count, percent), or seconds when dur is set
	kindBool                   // YAML bool or true/1/yes/on/enabled, false/0/no/off/disabled
	kindString                 // any scalar
	kindPath                   // a file that must exist and be readable when set
	kindList                   // YAML list or comma-separated string
	kindEnum                   // one of enum (case-insensitive)
	kindAddr                   // host:port
	kindPeers                  // list of id=host:port
	kindIgnored                // accepted and ignored (shipped upstream but unused)
	kindSecret                 // a token or password: never rendered, never shown in a problem
	kindDuration               // a Go duration ("500ms") or seconds ("0.5"); zero (unset) means "from the profile"
	kindListenAddr             // host:port to listen on, or "off"
)

type keySpec struct {
	Name     string
	Kind     kind
	Origin   string
	Min, Max int
	Unit     string // for ints: "seconds", "percent" or ""
	// DurMin and DurMax bound a kindDuration.
	DurMin, DurMax time.Duration
	Enum           []string
	Upper          bool // enum values are upper-case (else lower-case)
	Meaning        string
	// DocDefault replaces the rendering of the default in the reference
	// (for defaults computed at load time).
	DocDefault string

	// Exactly one accessor is set, matching Kind.
	intp  func(*Settings) *int
	durp  func(*Settings) *time.Duration
	boolp func(*Settings) *bool
	strp  func(*Settings) *string
	listp func(*Settings) *[]string
	secp  func(*Settings) *secret.Secret
}

func intKey(name, origin string, lo, hi int, unit, meaning string, p func(*Settings) *int) keySpec {
	return keySpec{Name: name, Kind: kindInt, Origin: origin, Min: lo, Max: hi, Unit: unit, Meaning: meaning, intp: p}
}

func secKey(name, origin string, lo, hi int, meaning string, p func(*Settings) *time.Duration) keySpec {
	return keySpec{Name: name, Kind: kindInt, Origin: origin, Min: lo, Max: hi, Unit: "seconds", Meaning: meaning, durp: p}
}

func durKey(name, origin string, lo, hi time.Duration, meaning, docDefault string, p func(*Settings) *time.Duration) keySpec {
	return keySpec{Name: name, Kind: kindDuration, Origin: origin, DurMin: lo, DurMax: hi, Meaning: meaning, DocDefault: docDefault, durp: p}
}

func boolKey(name, origin, meaning string, p func(*Settings) *bool) keySpec {
	return keySpec{Name: name, Kind: kindBool, Origin: origin, Meaning: meaning, boolp: p}
}

func strKey(name string, k kind, origin, meaning string, p func(*Settings) *string) keySpec {
	return keySpec{Name: name, Kind: k, Origin: origin, Meaning: meaning, strp: p}
}

var keyTable = []keySpec{
	// InstanceHA keys, docs/rules.md §2.3.
	strKey("EVACUABLE_TAG", kindString, originInstanceHA, "tag / metadata key that marks images, flavors and aggregates as evacuable", func(s *Settings) *string { return &s.EvacuableTag }),
	secKey("DELTA", originInstanceHA, 10, 300, "a nova-compute whose `updated_at` is older than this is stale", func(s *Settings) *time.Duration { return &s.Delta }),
	secKey("POLL", originInstanceHA, 15, 600, "time between two polls of Nova's services", func(s *Settings) *time.Duration { return &s.Poll }),
	intKey("THRESHOLD", originInstanceHA, 0, 100, "percent", "no evacuation when more than this share of the computes fail at once: down or forced down in Nova, judged failed now, or (DETECTION_MODE gossip/both) suspected or lost by the mesh with no Nova report since", func(s *Settings) *int { return &s.Threshold }),
	intKey("WORKERS", originInstanceHA, 1, 100, "", "hosts recovered concurrently", func(s *Settings) *int { return &s.Workers }),
	secKey("DELAY", originInstanceHA, 0, 300, "wait after fencing and disabling, before evacuating", func(s *Settings) *time.Duration { return &s.Delay }),
	{Name: "LOGLEVEL", Kind: kindEnum, Origin: originInstanceHA, Enum: []string{"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, Upper: true, Meaning: "log verbosity", strp: func(s *Settings) *string { return &s.LogLevel }},
	boolKey("SMART_EVACUATION", originInstanceHA, "track every evacuation until it completes", func(s *Settings) *bool { return &s.SmartEvacuation }),
	boolKey("ORCHESTRATED_RESTART", originInstanceHA, "evacuate in priority phases (implies tracking)", func(s *Settings) *bool { return &s.OrchestratedRestart }),
	boolKey("RESERVED_HOSTS", originInstanceHA, "enable a spare host (disabled with \"reserved\" in its reason) to replace a failed one", func(s *Settings) *bool { return &s.ReservedHosts }),
	boolKey("FORCE_RESERVED_HOST_EVACUATION", originInstanceHA, "evacuate onto the reserved host that was enabled", func(s *Settings) *bool { return &s.ForceReservedHostEvacuation }),
	boolKey("TAGGED_IMAGES", originInstanceHA, "only evacuate servers whose image carries EVACUABLE_TAG", func(s *Settings) *bool { return &s.TaggedImages }),
	boolKey("TAGGED_FLAVORS", originInstanceHA, "only evacuate servers whose flavor carries EVACUABLE_TAG", func(s *Settings) *bool { return &s.TaggedFlavors }),
	boolKey("TAGGED_AGGREGATES", originInstanceHA, "only recover hosts in aggregates that carry EVACUABLE_TAG", func(s *Settings) *bool { return &s.TaggedAggregates }),
	boolKey("LEAVE_DISABLED", originInstanceHA, "never re-enable an evacuated host", func(s *Settings) *bool { return &s.LeaveDisabled }),
	boolKey("FORCE_ENABLE", originInstanceHA, "re-enable a host without waiting for its migrations to finish", func(s *Settings) *bool { return &s.ForceEnable }),
	boolKey("CHECK_KDUMP", originInstanceHA, "listen for fence_kdump notices and let a dumping host finish", func(s *Settings) *bool { return &s.CheckKdump }),
	secKey("KDUMP_TIMEOUT", originInstanceHA, 5, 300, "how long to wait for a kdump notice", func(s *Settings) *time.Duration { return &s.KdumpTimeout }),
	boolKey("CHECK_HEARTBEAT", originInstanceHA, "listen (HEARTBEAT_LISTEN) for InstanceHA's HMAC-signed compute heartbeats (HBV2): a host Nova reports down whose heartbeat is fresh within HEARTBEAT_TIMEOUT is not fenced (event `HostReachable`). Needs HEARTBEAT_HMAC_KEY_PATH", func(s *Settings) *bool { return &s.CheckHeartbeat }),
	secKey("HEARTBEAT_TIMEOUT", originInstanceHA, 30, 600, "heartbeat freshness, and the grace period after the listener starts during which heartbeats have no effect", func(s *Settings) *time.Duration { return &s.HeartbeatTimeout }),
	intKey("HEARTBEAT_CLIFF_THRESHOLD", originInstanceHA, 10, 100, "percent", "a cliff (the network, not the hosts) is when this share of the active computes heard within two HEARTBEAT_TIMEOUTs (at least 3) went silent within the last one: hosts judged by InstanceHA's rule then wait", func(s *Settings) *int { return &s.HeartbeatCliffThreshold }),
	intKey("HEARTBEAT_CLIFF_MAX_CYCLES", originInstanceHA, 1, 20, "", "a cliff lasting this many POLL intervals is taken as genuine failures (event `HeartbeatCliffExpired`)", func(s *Settings) *int { return &s.HeartbeatCliffMaxCycles }),
	boolKey("DISABLED", originInstanceHA, "detect and report, but neither fence nor evacuate (re-enable still runs)", func(s *Settings) *bool { return &s.Disabled }),
	boolKey("SSL_VERIFY", originInstanceHA, "verify BMC certificates", func(s *Settings) *bool { return &s.SSLVerify }),
	strKey("SSL_CA_BUNDLE", kindPath, originInstanceHA, "CA bundle for BMC HTTPS (must exist when set)", func(s *Settings) *string { return &s.SSLCABundle }),
	strKey("SSL_CERT_PATH", kindPath, originInstanceHA, "client certificate for BMC HTTPS, with SSL_KEY_PATH (must exist when set)", func(s *Settings) *string { return &s.SSLCertPath }),
	strKey("SSL_KEY_PATH", kindPath, originInstanceHA, "client key for BMC HTTPS, with SSL_CERT_PATH (must exist when set)", func(s *Settings) *string { return &s.SSLKeyPath }),
	secKey("FENCING_TIMEOUT", originInstanceHA, 5, 120, "per fencing request, and the wait for power off", func(s *Settings) *time.Duration { return &s.FencingTimeout }),
	secKey("HASH_INTERVAL", originInstanceHA, 30, 300, "refresh period of the liveness hash", func(s *Settings) *time.Duration { return &s.HashInterval }),
	secKey("METRICS_LOG_INTERVAL", originInstanceHA, 300, 86400, "period of the metrics summary in the log", func(s *Settings) *time.Duration { return &s.MetricsLogInterval }),
	{Name: "SKIP_SERVERS_WITH_NAME", Kind: kindList, Origin: originInstanceHA, Meaning: "servers whose name matches one of these fnmatch globs are not evacuated", DocDefault: "(empty)", listp: func(s *Settings) *[]string { return &s.SkipServersWithName }},
	intKey("EVACUATION_MAX_THREADS", originInstanceHA, 1, 512, "", "evacuations in flight in total (divided among WORKERS)", func(s *Settings) *int { return &s.EvacuationMaxThreads }),
	intKey("EVACUATION_RETRIES", originInstanceHA, 1, 20, "", "evacuate attempts per server", func(s *Settings) *int { return &s.EvacuationRetries }),
	secKey("EVACUATION_STAGGER", originInstanceHA, 0, 60, "pause between two evacuate requests", func(s *Settings) *time.Duration { return &s.EvacuationStagger }),
	secKey("EVACUATION_TIMEOUT", originInstanceHA, 60, 3600, "how long one server's evacuation is tracked", func(s *Settings) *time.Duration { return &s.EvacuationTimeout }),
	intKey("MAX_HOSTS_PER_CYCLE", originInstanceHA, 1, 200, "", "hosts fenced per poll cycle at most", func(s *Settings) *int { return &s.MaxHostsPerCycle }),
	secKey("K8S_API_CHECK_INTERVAL", originInstanceHA, 5, 120, "period of the Kubernetes API reachability probe", func(s *Settings) *time.Duration { return &s.K8sAPICheckInterval }),
	{Name: "WATCHDOG_TIMEOUT", Kind: kindIgnored, Origin: originInstanceHA, Meaning: "shipped in InstanceHA's sample but unused there: accepted and ignored", DocDefault: "–"},

	// IHA keys.
	{Name: "NODE_NAME", Kind: kindString, Origin: originIHA, Meaning: "this leader's Raft server id", DocDefault: "short host name", strp: func(s *Settings) *string { return &s.NodeName }},
	strKey("RAFT_ADDR", kindAddr, originIHA, "host:port Raft listens on and advertises to its peers", func(s *Settings) *string { return &s.RaftAddr }),
	{Name: "RAFT_PEERS", Kind: kindPeers, Origin: originIHA, Meaning: "`id=host:port` voters to bootstrap the Raft group with (list or comma-separated); empty: this node alone", DocDefault: "(empty)", listp: func(s *Settings) *[]string { return &s.RaftPeers }},
	{Name: "RAFT_JOIN", Kind: kindList, Origin: originIHA, Meaning: "status API addresses (`host:port` or URLs) of running members to join through (list or comma-separated); any member will do, followers redirect to the leader. Set on a controller added to a running group: it never bootstraps", DocDefault: "(empty: bootstrap with RAFT_PEERS)", listp: func(s *Settings) *[]string { return &s.RaftJoin }},
	strKey("RAFT_TLS_CERT", kindPath, originIHA, "PEM certificate of this controller for mutual TLS between controllers (Raft and join); must name RAFT_ADDR's host; with RAFT_TLS_KEY and RAFT_TLS_CA", func(s *Settings) *string { return &s.RaftTLSCert }),
	strKey("RAFT_TLS_KEY", kindPath, originIHA, "PEM private key of RAFT_TLS_CERT", func(s *Settings) *string { return &s.RaftTLSKey }),
	strKey("RAFT_TLS_CA", kindPath, originIHA, "PEM CA that signs every controller's RAFT_TLS_CERT; peers without a certificate of it can neither join nor receive log entries", func(s *Settings) *string { return &s.RaftTLSCA }),
	strKey("DATA_DIR", kindString, originIHA, "directory of the Raft log, stable store and snapshots", func(s *Settings) *string { return &s.DataDir }),
	strKey("API_ADDR", kindAddr, originIHA, "listen address of the status API (`:port` listens on every address)", func(s *Settings) *string { return &s.APIAddr }),
	{Name: "DETECTION_MODE", Kind: kindEnum, Origin: originIHA, Enum: []string{DetectNova, DetectGossip, DetectBoth}, Meaning: "witnesses a failure verdict needs: `nova` (InstanceHA's rule; with the mesh wired a host whose agent is alive is never failed), `gossip` (the mesh's dead verdict alone), or `both` (the mesh's dead verdict and one missed Nova report: `updated_at` older than NOVA_REPORT_INTERVAL + 2 s and not later than the mesh's verdict)", strp: func(s *Settings) *string { return &s.DetectionMode }},
	intKey("QUICK_EVACUATE_LEVEL", originIHA, 1, 3, "", "1 force-down without power-off; 2 power off, then force-down; 3 power off and wait for Nova", func(s *Settings) *int { return &s.QuickEvacuateLevel }),
	secKey("NOVA_REPORT_INTERVAL", originIHA, 1, 300, "Nova's `report_interval`: how often a live nova-compute heartbeats; `both` mode's missed-report rule and the DELTA warning (below 2 × this + 2 s) use it", func(s *Settings) *time.Duration { return &s.NovaReportInterval }),
	secKey("NOVA_API_TIMEOUT", originIHA, 1, 300, "timeout of one Nova API request", func(s *Settings) *time.Duration { return &s.NovaAPITimeout }),
	secKey("EVACUATION_GRACE", originIHA, 0, 3600, "an accepted evacuation with no migration record yet counts as in progress this long", func(s *Settings) *time.Duration { return &s.EvacuationGrace }),
	{Name: "API_TOKEN", Kind: kindSecret, Origin: originIHA, Meaning: "read-write token of the status API (`Authorization: Bearer`); without it every change (pause, confirm-fenced, …) is refused. Without RAFT_TLS_* it is also the proof a joining controller must present (RAFT_JOIN); with neither, joins are refused", DocDefault: "(none: changes disabled)", secp: func(s *Settings) *secret.Secret { return &s.APIToken }},
	{Name: "API_READ_TOKEN", Kind: kindSecret, Origin: originIHA, Meaning: "read-only token of the status API; when set, reads need it or API_TOKEN (health, metrics and the agents' gate stay open)", DocDefault: "(none: reads open)", secp: func(s *Settings) *secret.Secret { return &s.APIReadToken }},
	strKey("API_TLS_CERT", kindPath, originIHA, "PEM certificate (chain) of the status API; with API_TLS_KEY the API serves HTTPS", func(s *Settings) *string { return &s.APITLSCert }),
	strKey("API_TLS_KEY", kindPath, originIHA, "PEM private key of API_TLS_CERT", func(s *Settings) *string { return &s.APITLSKey }),
	secKey("API_READ_TIMEOUT", originIHA, 1, 300, "a client must send its whole request (headers and body) within this time", func(s *Settings) *time.Duration { return &s.APIReadTimeout }),
	secKey("API_IDLE_TIMEOUT", originIHA, 1, 3600, "an idle keep-alive connection to the status API is closed after this time", func(s *Settings) *time.Duration { return &s.APIIdleTimeout }),
	intKey("API_MAX_CONNECTIONS", originIHA, 16, 65536, "", "connections the status API serves at once; beyond it new ones are closed at once (and counted in the log)", func(s *Settings) *int { return &s.APIMaxConnections }),
	intKey("API_MAX_STREAMS", originIHA, 1, 4096, "", "event streams (`iha events -f`) served at once; beyond it a new one is answered 503", func(s *Settings) *int { return &s.APIMaxStreams }),
	strKey("HA_ENABLED_INSTANCE_KEY", kindString, originIHA, "server metadata key that opts a server of a failover segment in to recovery (Masakari's `ha_enabled_instance_metadata_key`; value true/yes/1/on)", func(s *Settings) *string { return &s.HAEnabledInstanceKey }),
	boolKey("EVACUATE_ALL_INSTANCES", originIHA, "in a failover segment, also evacuate servers that are not opted in (after the opted-in ones), subject to InstanceHA's tags (Masakari's `evacuate_all_instances`)", func(s *Settings) *bool { return &s.EvacuateAllInstances }),
	boolKey("IGNORE_INSTANCES_IN_ERROR_STATE", originIHA, "in a failover segment, never evacuate servers in ERROR (Masakari's `ignore_instances_in_error_state`)", func(s *Settings) *bool { return &s.IgnoreInstancesInErrorState }),
	boolKey("ADD_RESERVED_HOST_TO_AGGREGATE", originIHA, "add a segment's reserved host to every aggregate of the failed host before evacuating to it (Masakari's `add_reserved_host_to_aggregate`)", func(s *Settings) *bool { return &s.AddReservedHostToAggregate }),
	boolKey("RECOVERED_HOST_MAINTENANCE", originIHA, "park a recovered host in maintenance, disabled, instead of re-enabling it; `iha maintenance HOST off` returns it (a segment's `recovered_host_maintenance` overrides this)", func(s *Settings) *bool { return &s.RecoveredHostMaintenance }),

	// Watchdog self-fencing (the agents' `watchdog:`; docs/operations.md).
	durKey("WATCHDOG_LEASE", originIHA, time.Second, 10*time.Minute, "L: the lease the leader grants an armed agent, which feeds its watchdog only while it holds one (renewed every L/4); a host whose BMC fence fails is fenced by its watchdog L + W + WATCHDOG_MARGIN after its last grant", "15s", func(s *Settings) *time.Duration { return &s.WatchdogLease }),
	durKey("WATCHDOG_MARGIN", originIHA, 0, 5*time.Minute, "added to L + W before a host whose BMC fence failed is taken as reset by its watchdog: the controllers' clock skew, the watchdog's own inaccuracy and the agent's scheduling delay", "5s", func(s *Settings) *time.Duration { return &s.WatchdogMargin }),

	// The gossip mesh (the leader joins it as a controller).
	strKey("GOSSIP_BIND", kindListenAddr, originIHA, "host:port the leader's gossip listens on (UDP and TCP), or `off`: no mesh, every host is judged by InstanceHA's rule", func(s *Settings) *string { return &s.GossipBind }),
	{Name: "GOSSIP_ADVERTISE", Kind: kindAddr, Origin: originIHA, Meaning: "host:port the agents and other controllers reach this leader's gossip at, when it differs from GOSSIP_BIND (0.0.0.0, NAT)", DocDefault: "(the bound address)", strp: func(s *Settings) *string { return &s.GossipAdvertise }},
	{Name: "GOSSIP_JOIN", Kind: kindList, Origin: originIHA, Meaning: "gossip addresses (`host:port`) of members to join: the other controllers and/or some agents; retried forever with back-off, and re-joined every 30 s while no live member answers there, so a healed partition merges", DocDefault: "(empty: wait for agents to join)", listp: func(s *Settings) *[]string { return &s.GossipJoin }},
	{Name: "GOSSIP_KEYRING", Kind: kindPath, Origin: originIHA, Meaning: "keyring file of the mesh's encryption keys (JSON array of base64 keys, primary first; the agents' `keyring`; `iha-leader keygen gossip` makes one). Required while the mesh is on, unless GOSSIP_INSECURE", DocDefault: "`gossip.keyring` beside config.yaml", strp: func(s *Settings) *string { return &s.GossipKeyring }},
	{Name: "GOSSIP_LABEL", Kind: kindString, Origin: originIHA, Meaning: "cluster label carried by every gossip packet: meshes with different labels never merge (the agents' `label`)", strp: func(s *Settings) *string { return &s.GossipLabel }},
	{Name: "CLUSTER_KEY", Kind: kindPath, Origin: originIHA, Meaning: "the controllers' secret (`iha-leader keygen cluster`): each compute's host key is derived from it (`iha-leader keygen host HOST`), so that a mesh member speaks only for its own host; it also signs the gate's answers, what controllers forward to each other and the watchdog leases' tickets. Required while the mesh is on, unless GOSSIP_INSECURE; never copy it to a compute", DocDefault: "`cluster.key` beside config.yaml", strp: func(s *Settings) *string { return &s.ClusterKey }},
	boolKey("GOSSIP_INSECURE", originIHA, "labs only: let the mesh run without GOSSIP_KEYRING (unencrypted: anyone on the network can join it, read it and speak in it) and without CLUSTER_KEY (members' claims unchecked); warned at every start and in `iha status`", func(s *Settings) *bool { return &s.GossipInsecure }),
	{Name: "GOSSIP_PROFILE", Kind: kindEnum, Origin: originIHA, Enum: []string{GossipProfileFast, GossipProfileLAN, GossipProfileDefault}, Meaning: "failure-detector base, the same on the agents (their `gossip:`): `fast` (500 ms probes: a crashed host is declared dead ≈ 3.3 s after the crash at 10 members, 5.3 s at 100, 7.3 s at 1,000; a host frozen whole for less than 1 s, 3 s, 5 s, or an agent stopped alone for less than 2 s, 4 s, 6 s, is never declared dead) or `lan` (memberlist's LAN profile, 1 s probes: twice each, beyond `both` mode's targets above about 15 computes); `default` names IHA's default, `fast` (docs/benchmarks.md)", strp: func(s *Settings) *string { return &s.GossipProfile }},
	durKey("GOSSIP_PROBE_INTERVAL", originIHA, 100*time.Millisecond, time.Minute, "time between two probes of a member", "from GOSSIP_PROFILE (fast 500ms, lan 1s)", func(s *Settings) *time.Duration { return &s.GossipProbeInterval }),
	durKey("GOSSIP_PROBE_TIMEOUT", originIHA, time.Millisecond, time.Minute, "wait for a probe's ack; must be shorter than the probe interval", "from GOSSIP_PROFILE (fast 200ms, lan 500ms; at most half the probe interval when only that is set)", func(s *Settings) *time.Duration { return &s.GossipProbeTimeout }),
	{Name: "GOSSIP_SUSPICION_MULT", Kind: kindInt, Origin: originIHA, Min: 2, Max: 20, Meaning: "minimum suspicion timeout = this × max(1, log10(members)) × probe interval: a crash is declared dead about 2.6 probe intervals plus this timeout after it, a host frozen whole for less than this timeout minus two probe intervals, or an agent stopped alone for less than this timeout, is never declared dead", DocDefault: "from GOSSIP_PROFILE (4)", intp: func(s *Settings) *int { return &s.GossipSuspicionMult }},
	durKey("GOSSIP_GOSSIP_INTERVAL", originIHA, 10*time.Millisecond, 10*time.Second, "time between two gossip rounds", "from GOSSIP_PROFILE (fast 100ms, lan 200ms)", func(s *Settings) *time.Duration { return &s.GossipGossipInterval }),
	intKey("MESH_PARTITION_PERCENT", originIHA, 1, 100, "percent", "when more than this share of the mesh's computes is lost within MESH_PARTITION_WINDOW, suspect the leader's own network: those hosts need Nova's DELTA rule as well", func(s *Settings) *int { return &s.MeshPartitionPercent }),
	secKey("MESH_PARTITION_WINDOW", originIHA, 5, 600, "the window of MESH_PARTITION_PERCENT", func(s *Settings) *time.Duration { return &s.MeshPartitionWindow }),
	{Name: "HEARTBEAT_LISTEN", Kind: kindListenAddr, Origin: originIHA, Meaning: "with CHECK_HEARTBEAT, where the leader listens for InstanceHA's heartbeats (UDP); each controller forwards what it accepts to the other controllers' port, so the sender may target any of them (or a VIP)", DocDefault: "`:7411` (the port of HEARTBEAT_PORT when set)", strp: func(s *Settings) *string { return &s.HeartbeatListen }},
	{Name: "KDUMP_LISTEN", Kind: kindListenAddr, Origin: originIHA, Meaning: "with CHECK_KDUMP, where the leader listens for fence_kdump packets (UDP), or `off` (notices then come only through the agents)", DocDefault: "`:7410` (the port of UDP_PORT when set)", strp: func(s *Settings) *string { return &s.KdumpListen }},

	// Shadow mode and the decision log.
	boolKey("SHADOW", originIHA, "shadow mode: judge, admit and plan every failure as when acting and record each decision as a shadow event, watch what another agent (InstanceHA) does to the same hosts, and never power a host off nor write to Nova; `iha shadow on|off` overrides it at run time, replicated", func(s *Settings) *bool { return &s.Shadow }),
	{Name: "DECISION_LOG", Kind: kindString, Origin: originIHA, Meaning: "directory where the leader appends what it decided on (Nova's service rows, mesh changes, kdump notices, the answers the rules read, the configuration in force, its decisions), rotated, without secrets, for `iha replay`; `off`: none", DocDefault: "off", strp: func(s *Settings) *string { return &s.DecisionLog }},
	intKey("DECISION_LOG_MAX_MB", originIHA, 1, 1024, "", "size of one decision log file (MiB) before it is rotated and compressed", func(s *Settings) *int { return &s.DecisionLogMaxMB }),
	intKey("DECISION_LOG_FILES", originIHA, 2, 1000, "", "decision log files kept (the oldest are removed)", func(s *Settings) *int { return &s.DecisionLogFiles }),
}

// Gossip profiles (GOSSIP_PROFILE). Their knobs are gossip.FastProfile's
// and gossip.LANProfile's; "default" is IHA's default, gossip.DefaultProfile
// (TestGossipProfilesMatchTheMesh in cmd/iha-leader keeps them in step).
const (
	GossipProfileFast    = "fast"
	GossipProfileLAN     = "lan"
	GossipProfileDefault = "default" // the default profile, whichever it is: fast
)

// GossipKnobs are the effective failure-detector settings.
type GossipKnobs struct {
	ProbeInterval, ProbeTimeout, GossipInterval time.Duration
	SuspicionMult                               int
}

// GossipBase returns the knobs of a profile.
func GossipBase(profile string) GossipKnobs {
	if profile == GossipProfileLAN {
		return GossipKnobs{ProbeInterval: time.Second, ProbeTimeout: 500 * time.Millisecond, GossipInterval: 200 * time.Millisecond, SuspicionMult: 4}
	}
	return GossipKnobs{ProbeInterval: 500 * time.Millisecond, ProbeTimeout: 200 * time.Millisecond, GossipInterval: 100 * time.Millisecond, SuspicionMult: 4}
}

// Gossip returns the effective knobs: GOSSIP_PROFILE's, overridden by the
// keys that are set.
func (s Settings) Gossip() GossipKnobs {
	g := GossipBase(s.GossipProfile)
	if s.GossipProbeInterval > 0 {
		g.ProbeInterval = s.GossipProbeInterval
	}
	if s.GossipProbeTimeout > 0 {
		g.ProbeTimeout = s.GossipProbeTimeout
	} else if g.ProbeTimeout >= g.ProbeInterval {
		g.ProbeTimeout = g.ProbeInterval / 2 // a shorter interval alone stays valid
	}
	if s.GossipGossipInterval > 0 {
		g.GossipInterval = s.GossipGossipInterval
	}
	if s.GossipSuspicionMult > 0 {
		g.SuspicionMult = s.GossipSuspicionMult
	}
	return g
}

// Off disables a listener (GOSSIP_BIND, KDUMP_LISTEN).
const Off = "off"

// MeshEnabled reports whether the leader joins the gossip mesh.
func (s Settings) MeshEnabled() bool { return s.GossipBind != "" && s.GossipBind != Off }

// keyIndex maps a key name to its entry in keyTable.
var keyIndex = func() map[string]*keySpec {
	m := make(map[string]*keySpec, len(keyTable))
	for i := range keyTable {
		m[keyTable[i].Name] = &keyTable[i]
	}
	return m
}()

// KeyNames returns every config.yaml key, in reference order.
func KeyNames() []string {
	names := make([]string, len(keyTable))
	for i, k := range keyTable {
		names[i] = k.Name
	}
	return names
}

// render gives the value of k in s as it would be written in config.yaml.
func (k *keySpec) render(s *Settings) string {
	switch {
	case k.intp != nil:
		return strconv.Itoa(*k.intp(s))
	case k.durp != nil && k.Kind == kindDuration:
		if *k.durp(s) == 0 {
			return ""
		}
		return k.durp(s).String()
	case k.durp != nil:
		return strconv.FormatInt(int64(*k.durp(s)/time.Second), 10)
	case k.boolp != nil:
		return strconv.FormatBool(*k.boolp(s))
	case k.strp != nil:
		return *k.strp(s)
	case k.listp != nil:
		return strings.Join(*k.listp(s), ",")
	case k.secp != nil:
		if k.secp(s).IsZero() {
			return ""
		}
		return secret.Redacted
	}
	return ""
}

// allowed describes the accepted values of k.
func (k *keySpec) allowed() string {
	switch k.Kind {
	case kindInt:
		r := strconv.Itoa(k.Min) + "–" + strconv.Itoa(k.Max)
		if k.Unit != "" {
			r += " " + k.Unit
		}
		return r
	case kindBool:
		return "true/false, yes/no, on/off, 1/0, enabled/disabled"
	case kindEnum:
		return strings.Join(k.Enum, ", ")
	case kindAddr:
		return "host:port, port 1–65535"
	case kindPeers:
		return "id=host:port, ..."
	case kindPath:
		return "path of a readable file"
	case kindList:
		return "a YAML list or a comma-separated string"
	case kindSecret:
		return "a string of at least " + strconv.Itoa(MinTokenLength) + " characters (kept secret)"
	case kindDuration:
		return "a duration (500ms) or seconds (0.5), " + k.DurMin.String() + "–" + k.DurMax.String()
	case kindListenAddr:
		return "host:port (empty host: every address), or off"
	}
	return ""
}

// typeName names k's type for the reference.
func (k *keySpec) typeName() string {
	switch k.Kind {
	case kindInt:
		if k.Unit == "seconds" {
			return "int (s)"
		}
		if k.Unit == "percent" {
			return "int (%)"
		}
		return "int"
	case kindBool:
		return "bool"
	case kindString:
		return "string"
	case kindPath:
		return "path"
	case kindList:
		return "list"
	case kindEnum:
		return "enum"
	case kindAddr:
		return "host:port"
	case kindPeers:
		return "list of id=host:port"
	case kindSecret:
		return "secret"
	case kindDuration:
		return "duration"
	case kindListenAddr:
		return "host:port or off"
	}
	return "any"
}

// Change is a setting whose value differs from its default.
type Change struct {
	Key, Value, Default string
}

// Changes lists the config.yaml keys of s whose value differs from the
// default, in reference order (for `iha config check`). NODE_NAME's default
// is the short host name.
func (s Settings) Changes() []Change {
	def := defaultsFor(s)
	if h, err := hostname(); err == nil {
		def.NodeName = ShortName(h)
	}
	var out []Change
	for i := range keyTable {
		k := &keyTable[i]
		if k.Kind == kindIgnored {
			continue
		}
		if v, d := k.render(&s), k.render(&def); v != d {
			out = append(out, Change{Key: k.Name, Value: v, Default: d})
		}
	}
	return out
}
