package config

import (
	"crypto/tls"
	"encoding/json"
	"strconv"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/ihaproject/iha/pkg/secret"
)

// Config is the whole validated configuration of iha-leader: InstanceHA's
// four files and environment, plus IHA's own keys in the same `config:` map.
type Config struct {
	Settings Settings
	Cloud    Cloud
	Fencing  Fencing
	// UDPPort is the kdump listener port (env UDP_PORT, default 7410).
	UDPPort int
	// HeartbeatKeyFiles are the HMAC key files of InstanceHA's heartbeat
	// (env HEARTBEAT_HMAC_KEY_PATH, then HEARTBEAT_HMAC_KEY_PREVIOUS_PATH;
	// an unset one is ""). With CHECK_HEARTBEAT at least one holds a key.
	HeartbeatKeyFiles []string
	// Files records where each part came from, for messages and summaries.
	Files Files
	// Warnings are non-fatal findings (unknown keys, plain-HTTP Redfish…),
	// each naming the file and key.
	Warnings []string
}

// Files names the files a Config was read from.
type Files struct {
	Config, Clouds, Secure, Fencing string
	// Segments is the failover segments file (optional: missing means no
	// segments).
	Segments string
}

// Detection modes (DETECTION_MODE).
const (
	DetectNova   = "nova"
	DetectGossip = "gossip"
	DetectBoth   = "both"
)

// Settings is the `config:` map of config.yaml. Field comments give the key;
// defaults and ranges are in Defaults() and in the key table of keys.go.
// Values built in code (tests, dev mode) are not range-checked: ranges apply
// to what operators write in files.
type Settings struct {
	// InstanceHA keys (docs/rules.md §2.3).
	EvacuableTag                string        // EVACUABLE_TAG
	Delta                       time.Duration // DELTA, seconds
	Poll                        time.Duration // POLL, seconds
	Threshold                   int           // THRESHOLD, percent
	Workers                     int           // WORKERS
	Delay                       time.Duration // DELAY, seconds
	LogLevel                    string        // LOGLEVEL: DEBUG INFO WARNING ERROR CRITICAL
	SmartEvacuation             bool          // SMART_EVACUATION
	OrchestratedRestart         bool          // ORCHESTRATED_RESTART
	ReservedHosts               bool          // RESERVED_HOSTS
	ForceReservedHostEvacuation bool          // FORCE_RESERVED_HOST_EVACUATION
	TaggedImages                bool          // TAGGED_IMAGES
	TaggedFlavors               bool          // TAGGED_FLAVORS
	TaggedAggregates            bool          // TAGGED_AGGREGATES
	LeaveDisabled               bool          // LEAVE_DISABLED
	ForceEnable                 bool          // FORCE_ENABLE
	CheckKdump                  bool          // CHECK_KDUMP
	KdumpTimeout                time.Duration // KDUMP_TIMEOUT, seconds
	CheckHeartbeat              bool          // CHECK_HEARTBEAT
	HeartbeatTimeout            time.Duration // HEARTBEAT_TIMEOUT, seconds
	HeartbeatCliffThreshold     int           // HEARTBEAT_CLIFF_THRESHOLD, percent
	HeartbeatCliffMaxCycles     int           // HEARTBEAT_CLIFF_MAX_CYCLES
	Disabled                    bool          // DISABLED (env INSTANCEHA_DISABLED=True forces it)
	SSLVerify                   bool          // SSL_VERIFY
	SSLCABundle                 string        // SSL_CA_BUNDLE
	SSLCertPath                 string        // SSL_CERT_PATH
	SSLKeyPath                  string        // SSL_KEY_PATH
	FencingTimeout              time.Duration // FENCING_TIMEOUT, seconds
	HashInterval                time.Duration // HASH_INTERVAL, seconds
	MetricsLogInterval          time.Duration // METRICS_LOG_INTERVAL, seconds (seed document)
	SkipServersWithName         []string      // SKIP_SERVERS_WITH_NAME, fnmatch globs
	EvacuationMaxThreads        int           // EVACUATION_MAX_THREADS
	EvacuationRetries           int           // EVACUATION_RETRIES
	EvacuationStagger           time.Duration // EVACUATION_STAGGER, seconds
	EvacuationTimeout           time.Duration // EVACUATION_TIMEOUT, seconds
	MaxHostsPerCycle            int           // MAX_HOSTS_PER_CYCLE
	K8sAPICheckInterval         time.Duration // K8S_API_CHECK_INTERVAL, seconds

	// IHA keys.
	NodeName           string        // NODE_NAME: this leader's Raft server id (default: short host name)
	RaftAddr           string        // RAFT_ADDR: host:port Raft listens on and advertises (default 127.0.0.1:7420)
	RaftPeers          []string      // RAFT_PEERS: "id=host:port" voters to bootstrap with (empty: this node alone)
	RaftJoin           []string      // RAFT_JOIN: status API addresses of members to join through (empty: bootstrap with RAFT_PEERS)
	RaftTLSCert        string        // RAFT_TLS_CERT: this controller's PEM certificate for mutual TLS between controllers
	RaftTLSKey         string        // RAFT_TLS_KEY: PEM private key of RAFT_TLS_CERT
	RaftTLSCA          string        // RAFT_TLS_CA: PEM CA of every controller's certificate
	DataDir            string        // DATA_DIR: Raft log, stable store and snapshots (default /var/lib/iha)
	APIAddr            string        // API_ADDR: status API listen address (default 127.0.0.1:7421)
	DetectionMode      string        // DETECTION_MODE: nova | gossip | both (default both)
	QuickEvacuateLevel int           // QUICK_EVACUATE_LEVEL: 1 force-down only, 2 power off then force-down (default), 3 power off and wait for Nova
	NovaReportInterval time.Duration // NOVA_REPORT_INTERVAL: Nova's report_interval, seconds (default 10)
	NovaAPITimeout     time.Duration // NOVA_API_TIMEOUT: per Nova request, seconds (default 30)
	EvacuationGrace    time.Duration // EVACUATION_GRACE: an accepted evacuation with no migration yet counts as in progress this long, seconds (default 60)
	APIToken           secret.Secret // API_TOKEN: read-write token of the status API (none: changes refused)
	APIReadToken       secret.Secret // API_READ_TOKEN: read-only token (none: reads need no token)
	APITLSCert         string        // API_TLS_CERT: PEM certificate of the status API (with API_TLS_KEY: HTTPS)
	APITLSKey          string        // API_TLS_KEY: PEM private key of API_TLS_CERT
	APIReadTimeout     time.Duration // API_READ_TIMEOUT: a whole request must arrive within it, seconds (default 30)
	APIIdleTimeout     time.Duration // API_IDLE_TIMEOUT: idle keep-alive connections are closed after it, seconds (default 120)
	APIMaxConnections  int           // API_MAX_CONNECTIONS: connections served at once (default 1024)
	APIMaxStreams      int           // API_MAX_STREAMS: event streams served at once (default 64)

	WatchdogLease  time.Duration // WATCHDOG_LEASE: L of an armed agent's lease (default 15 s)
	WatchdogMargin time.Duration // WATCHDOG_MARGIN: added to L + W before a watchdog fence counts (default 5 s)

	// Masakari parity (IHA keys).
	HAEnabledInstanceKey        string // HA_ENABLED_INSTANCE_KEY: server metadata key of the per-server opt-in (default HA_Enabled)
	EvacuateAllInstances        bool   // EVACUATE_ALL_INSTANCES: segment hosts also evacuate servers not opted in (default true)
	IgnoreInstancesInErrorState bool   // IGNORE_INSTANCES_IN_ERROR_STATE: segment hosts never evacuate ERROR servers (default false)
	AddReservedHostToAggregate  bool   // ADD_RESERVED_HOST_TO_AGGREGATE: add the reserved host to the failed host's aggregates (default false)
	RecoveredHostMaintenance    bool   // RECOVERED_HOST_MAINTENANCE: park recovered hosts in maintenance (default false)

	// Segments are the failover segments of the segments file
	// (SEGMENTS_CONFIG_PATH), not a `config:` key. Nova aggregates may add
	// more at run time (see MergeSegments).
	Segments Segments

	GossipBind           string        // GOSSIP_BIND: gossip listen host:port, or "off" (default 0.0.0.0:7946)
	GossipAdvertise      string        // GOSSIP_ADVERTISE: gossip address peers use (default: the bound one)
	GossipJoin           []string      // GOSSIP_JOIN: members to join
	GossipKeyring        string        // GOSSIP_KEYRING: keyring file (encryption; default gossip.keyring beside config.yaml)
	GossipLabel          string        // GOSSIP_LABEL: cluster label (default "iha")
	GossipInsecure       bool          // GOSSIP_INSECURE: the mesh may run without a keyring or cluster key (labs)
	ClusterKey           string        // CLUSTER_KEY: the controllers' key file (default cluster.key beside config.yaml)
	GossipProfile        string        // GOSSIP_PROFILE: fast | lan | default (= fast)
	GossipProbeInterval  time.Duration // GOSSIP_PROBE_INTERVAL (0: the profile's)
	GossipProbeTimeout   time.Duration // GOSSIP_PROBE_TIMEOUT (0: the profile's)
	GossipSuspicionMult  int           // GOSSIP_SUSPICION_MULT (0: the profile's)
	GossipGossipInterval time.Duration // GOSSIP_GOSSIP_INTERVAL (0: the profile's)
	MeshPartitionPercent int           // MESH_PARTITION_PERCENT (default 30)
	MeshPartitionWindow  time.Duration // MESH_PARTITION_WINDOW, seconds (default 60)
	KdumpListen          string        // KDUMP_LISTEN: kdump UDP listen host:port, or "off" (default ":"+UDP_PORT)
	HeartbeatListen      string        // HEARTBEAT_LISTEN: heartbeat UDP listen host:port (default ":"+HEARTBEAT_PORT)

	// configDir is the directory of the config.yaml these settings came
	// from: key files default to names beside it (keyfiles.go).
	configDir string

	Shadow           bool   // SHADOW: decide and record, never act (default false)
	DecisionLog      string // DECISION_LOG: directory of the decision log, or "off" (default off)
	DecisionLogMaxMB int    // DECISION_LOG_MAX_MB: size of one file before rotation (default 16)
	DecisionLogFiles int    // DECISION_LOG_FILES: files kept (default 8)
}

// Defaults returns InstanceHA's defaults plus IHA's.
func Defaults() Settings {
	return Settings{
		EvacuableTag:            "evacuable",
		Delta:                   30 * time.Second,
		Poll:                    45 * time.Second,
		Threshold:               50,
		Workers:                 4,
		LogLevel:                "INFO",
		TaggedImages:            true,
		TaggedFlavors:           true,
		TaggedAggregates:        true,
		KdumpTimeout:            30 * time.Second,
		HeartbeatTimeout:        120 * time.Second,
		HeartbeatCliffThreshold: 50,
		HeartbeatCliffMaxCycles: 3,
		SSLVerify:               true,
		FencingTimeout:          30 * time.Second,
		HashInterval:            60 * time.Second,
		MetricsLogInterval:      3600 * time.Second,
		EvacuationMaxThreads:    32,
		EvacuationRetries:       5,
		EvacuationTimeout:       300 * time.Second,
		MaxHostsPerCycle:        10,
		K8sAPICheckInterval:     15 * time.Second,

		RaftAddr:           "127.0.0.1:7420",
		DataDir:            "/var/lib/iha",
		APIAddr:            "127.0.0.1:7421",
		DetectionMode:      DetectBoth,
		QuickEvacuateLevel: 2,
		NovaReportInterval: 10 * time.Second,
		NovaAPITimeout:     30 * time.Second,
		EvacuationGrace:    60 * time.Second,
		APIReadTimeout:     30 * time.Second,
		APIIdleTimeout:     120 * time.Second,
		APIMaxConnections:  1024,
		APIMaxStreams:      64,
		WatchdogLease:      15 * time.Second,
		WatchdogMargin:     5 * time.Second,

		GossipBind:           "0.0.0.0:7946",
		GossipLabel:          DefaultGossipLabel,
		KdumpListen:          ":" + strconv.Itoa(DefaultUDPPort),
		HeartbeatListen:      ":" + strconv.Itoa(DefaultHeartbeatPort),
		GossipProfile:        GossipProfileFast,
		MeshPartitionPercent: 30,
		MeshPartitionWindow:  60 * time.Second,

		HAEnabledInstanceKey: "HA_Enabled",
		EvacuateAllInstances: true,

		DecisionLog:      Off,
		DecisionLogMaxMB: 16,
		DecisionLogFiles: 8,
	}
}

// Cloud is the OpenStack connection for OS_CLOUD, merged from clouds.yaml
// and secure.yaml. It holds credentials, so it never prints them: use
// AuthOptions only to authenticate.
type Cloud struct {
	Name       string // the OS_CLOUD entry used
	AuthURL    string
	RegionName string
	Interface  string // public, internal or admin
	Endpoint   gophercloud.EndpointOpts
	TLS        *tls.Config
	// NoAuth is set for clouds.yaml entries with `auth_type: noauth` (an IHA
	// extension for labs without Keystone): requests go straight to these
	// endpoints with this token.
	NoAuth *NoAuth

	auth gophercloud.AuthOptions // has the password or application credential secret
}

// NoAuth describes a Nova (and Glance) without Keystone.
type NoAuth struct {
	ComputeURL string        // e.g. http://127.0.0.1:8774/v2.1
	ImageURL   string        // e.g. http://127.0.0.1:9292
	Token      secret.Secret // sent as X-Auth-Token, e.g. "admin:admin"
}

// AuthOptions returns the Keystone options, password included. Call it
// only to authenticate; never log the result.
func (c Cloud) AuthOptions() gophercloud.AuthOptions { return c.auth }

// WithAuthOptions returns a copy of c with the given Keystone options (for
// tests and dev mode).
func (c Cloud) WithAuthOptions(o gophercloud.AuthOptions) Cloud { c.auth = o; return c }

// String describes the cloud without credentials.
func (c Cloud) String() string {
	return "cloud " + c.Name + " at " + c.AuthURL + " region " + c.RegionName
}

// Fencing is fencing.yaml's `FencingConfig:` map.
type Fencing struct {
	// Hosts in file order; each key is a host name as written (short or FQDN).
	Hosts []FenceHost
}

// Fencing agents.
const (
	AgentIPMI    = "ipmi"
	AgentRedfish = "redfish"
	AgentBMH     = "bmh"
	AgentNoop    = "noop"
)

// FenceHost is one entry of FencingConfig.
type FenceHost struct {
	Name      string        // the key in fencing.yaml
	Agent     string        // ipmi | redfish | bmh | noop (lower-cased)
	IPAddr    string        // ipmi, redfish
	IPPort    int           // ipmi (required), redfish (default 443)
	Login     string        // ipmi, redfish
	Passwd    secret.Secret // ipmi, redfish
	UUID      string        // redfish: system id (default System.Embedded.1)
	TLS       bool          // redfish: https (default false, as InstanceHA)
	Timeout   time.Duration // per-host override of FENCING_TIMEOUT (0: use FENCING_TIMEOUT)
	Token     secret.Secret // bmh: bearer token
	Host      string        // bmh: BareMetalHost name
	Namespace string        // bmh
	APIURL    string        // bmh: Kubernetes API URL (IHA; default https://kubernetes.default.svc)
	CAFile    string        // bmh: CA bundle (IHA; default the service-account ca.crt)
	// Address is an optional metal3-style BMC address (ipmi://h:p,
	// redfish+https://h:p/redfish/v1/Systems/ID) that can replace
	// ipaddr/ipport/tls/uuid (IHA extension).
	Address string
}

// ShortName is the text before the first dot.
func ShortName(host string) string {
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			return host[:i]
		}
	}
	return host
}

// Lookup returns the entry whose short name equals the short name of host,
// first match in file order, as InstanceHA does.
func (f Fencing) Lookup(host string) (FenceHost, bool) {
	want := ShortName(host)
	for _, h := range f.Hosts {
		if ShortName(h.Name) == want {
			return h, true
		}
	}
	return FenceHost{}, false
}

// GoString describes the cloud without credentials, so that %#v of a Config
// cannot print the password held in the unexported auth options.
func (c Cloud) GoString() string { return "config.Cloud{" + c.String() + "}" }

// MarshalJSON describes the cloud without credentials or TLS key material.
func (c Cloud) MarshalJSON() ([]byte, error) {
	type noAuth struct {
		ComputeURL string        `json:"compute_url"`
		ImageURL   string        `json:"image_url,omitempty"`
		Token      secret.Secret `json:"token"`
	}
	v := struct {
		Name       string  `json:"name"`
		AuthURL    string  `json:"auth_url"`
		RegionName string  `json:"region_name"`
		Interface  string  `json:"interface"`
		NoAuth     *noAuth `json:"noauth,omitempty"`
	}{Name: c.Name, AuthURL: c.AuthURL, RegionName: c.RegionName, Interface: c.Interface}
	if c.NoAuth != nil {
		v.NoAuth = &noAuth{c.NoAuth.ComputeURL, c.NoAuth.ImageURL, c.NoAuth.Token}
	}
	return json.Marshal(v)
}
