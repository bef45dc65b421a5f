package agent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/pkg/kdump"
	"github.com/ihaproject/iha/pkg/lease"
)

// DefaultConfigFile is where iha-agent reads its configuration.
const DefaultConfigFile = "/etc/iha/agent.yaml"

// Config is the agent's configuration (agent.yaml; flags override it).
// It holds no Nova or BMC credential; the gossip keyring and the host key
// are file paths.
// Example /etc/iha/agent.yaml (every key optional):
//
//	nova_host: compute-12            # nova.conf [DEFAULT] host; default: short host name
//	bind: 192.0.2.12:7946
//	join: [192.0.2.1:7946, 192.0.2.2:7946, 192.0.2.3:7946]
//	keyring: /etc/iha/gossip.keyring # JSON array of base64 keys, primary first; SIGHUP reloads
//	host_key: /etc/iha/host.key      # iha-leader keygen host compute-12 (identity, gate answers, watchdog leases)
//	label: region-one                # default iha
//	kdump_listen: ":7410"            # env UDP_PORT sets the port
//	kdump_hosts: {192.0.2.40: compute-40}
//	controllers: [https://192.0.2.1:7421] # the only controllers the gate asks
//	api_ca: /etc/iha/api-ca.crt      # verifies https:// controllers (default: system roots)
//	gossip: {GOSSIP_PROFILE: fast}   # the controllers' profile: fast (default) or lan
//	gate_timeout: 10m
//	gate_on_no_answer: start
//	metrics_listen: 127.0.0.1:7422  # /metrics; "off" serves nothing
//	gate_stats_file: /run/iha-gate/answers.json
//	watchdog: {device: /dev/watchdog, timeout: 10s}  # self-fencing; off unless a device is set
type Config struct {
	// NodeName is the mesh node name (default: NovaHost).
	NodeName string `yaml:"node_name"`
	// NovaHost must equal nova.conf's [DEFAULT] host (default: the short
	// host name, which is Nova's default too).
	NovaHost string `yaml:"nova_host"`
	// Bind is the gossip listen address (default 0.0.0.0:7946).
	Bind string `yaml:"bind"`
	// Advertise is the address peers use, when it differs (NAT, 0.0.0.0).
	Advertise string `yaml:"advertise"`
	// Join lists controllers' (or any member's) gossip addresses.
	Join []string `yaml:"join"`
	// Keyring is the gossip keyring file (see gossip.LoadKeyring): the
	// controllers' GOSSIP_KEYRING. Required unless Insecure.
	Keyring string `yaml:"keyring"`
	// Label is the cloud's gossip label (default "iha", the controllers'
	// default GOSSIP_LABEL).
	Label string `yaml:"label"`
	// HostKey is the file of this host's key (`iha-leader keygen host
	// NOVA_HOST` on a controller): with it the agent proves to the
	// controllers that it speaks for NovaHost, signs what it says in the
	// mesh, and checks the gate's answers. Required unless Insecure.
	HostKey string `yaml:"host_key"`
	// Insecure lets the agent run on a lab mesh without a keyring
	// (unencrypted: anyone on the network can join, read and speak) and
	// without a host key (its host is then judged by Nova's rule alone). It
	// is warned about at every start.
	Insecure bool `yaml:"insecure"`
	// KdumpListen is the fence_kdump UDP address (default ":7410"; env
	// UDP_PORT replaces the port, as for InstanceHA). "off" disables it.
	KdumpListen string `yaml:"kdump_listen"`
	// KdumpHosts maps source IPs to Nova host names for kdump packets whose
	// source is not a mesh member's address.
	KdumpHosts map[string]string `yaml:"kdump_hosts"`
	// KdumpRelayInterval is the least time between notices for one source.
	KdumpRelayInterval time.Duration `yaml:"kdump_relay_interval"`
	// Controllers are the status API URLs the gate asks (scheme://host:port,
	// see ParseController): the only controllers it ever asks. An
	// https:// one is verified with APICA (or the system roots); the
	// answers of an http:// one must carry the controllers' signature,
	// which HostKey checks.
	Controllers []string `yaml:"controllers"`
	// APICA is a PEM file of the CA(s) that issue the controllers' API
	// certificates (API_TLS_CERT), for https:// controllers; empty: the
	// system roots.
	APICA string `yaml:"api_ca"`
	// StateDir was where the agent kept the controllers it learned from the
	// mesh for the gate; the gate no longer uses them. Accepted, unused.
	StateDir string `yaml:"state_dir"`
	// Gossip holds the failure-detector keys (GOSSIP_PROFILE,
	// GOSSIP_PROBE_INTERVAL, … see gossip.Profile), the same as the
	// controllers' config.yaml. Unset: gossip.DefaultProfile (fast).
	Gossip map[string]string `yaml:"gossip"`
	// GateTimeout and GateInterval tune `iha-agent gate` (10 min, 2 s).
	GateTimeout  time.Duration `yaml:"gate_timeout"`
	GateInterval time.Duration `yaml:"gate_interval"`
	// GateOnNoAnswer says what the gate does when no controller answered
	// before GateTimeout: "start" (default: exit 0, IHA being down must not
	// keep computes down) or "fail".
	GateOnNoAnswer string `yaml:"gate_on_no_answer"`
	// LogLevel: debug, info, warn, error.
	LogLevel string `yaml:"log_level"`
	// MetricsListen is where /metrics is served over HTTP (default
	// 127.0.0.1:7422, loopback only); "off" serves nothing.
	MetricsListen string `yaml:"metrics_listen"`
	// GateStatsFile is where `iha-agent gate` adds up the answers it got,
	// for /metrics (default /run/iha-gate/answers.json, the directory the
	// gate's drop-in creates for nova-compute's user); "off" keeps none.
	GateStatsFile string `yaml:"gate_stats_file"`
	// Watchdog is self-fencing with a lease (docs/operations.md, "Watchdog
	// self-fencing"); off unless a device is set.
	Watchdog WatchdogConfig `yaml:"watchdog"`
}

// Defaults of the metrics keys.
const (
	DefaultMetricsListen = "127.0.0.1:7422"
	DefaultGateStatsFile = "/run/iha-gate/answers.json"
)

// Defaults fills unset fields; hostname is the machine's host name.
func (c *Config) Defaults(hostname string) {
	if c.NovaHost == "" {
		c.NovaHost, _, _ = strings.Cut(hostname, ".")
	}
	if c.NodeName == "" {
		c.NodeName = c.NovaHost
	}
	if c.Bind == "" {
		c.Bind = "0.0.0.0:7946"
	}
	if c.Label == "" {
		c.Label = DefaultLabel
	}
	if c.KdumpListen == "" {
		c.KdumpListen = ":" + strconv.Itoa(kdump.DefaultPort)
	}
	if c.KdumpRelayInterval == 0 {
		c.KdumpRelayInterval = 5 * time.Second
	}
	if c.GateTimeout == 0 {
		c.GateTimeout = 10 * time.Minute
	}
	if c.GateInterval == 0 {
		c.GateInterval = 2 * time.Second
	}
	if c.GateOnNoAnswer == "" {
		c.GateOnNoAnswer = "start"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.MetricsListen == "" {
		c.MetricsListen = DefaultMetricsListen
	}
	if c.GateStatsFile == "" {
		c.GateStatsFile = DefaultGateStatsFile
	}
}

// DefaultLabel is the gossip label of an agent that sets none: the
// controllers' default GOSSIP_LABEL.
const DefaultLabel = "iha"

// WarnInsecure is logged at every start of an agent with insecure: true
// and no keyring.
const WarnInsecure = "insecure: true: this agent's gossip is NOT encrypted (no keyring): anyone who reaches its gossip port can join the mesh, read it and speak in it; use it on a lab only"

// ValidateMesh checks what the daemon needs besides Validate: the mesh is
// encrypted unless Insecure (the gate, which never joins the mesh, does
// not need it).
func (c *Config) ValidateMesh() error {
	var errs []error
	if c.Keyring == "" && !c.Insecure {
		errs = append(errs, errors.New("keyring is not set: the mesh is encrypted by default; copy the controllers' gossip keyring "+
			"(GOSSIP_KEYRING) to this compute and set keyring: to its path (docs/operations.md, The mesh's keys), or set insecure: true on a lab"))
	}
	if c.HostKey == "" && !c.Insecure {
		errs = append(errs, fmt.Errorf("host_key is not set: the agent proves which host it speaks for; make its key on a controller "+
			"(iha-leader keygen host %s), copy it here and set host_key: to its path (docs/operations.md, The mesh's keys), or set insecure: true on a lab", c.NovaHost))
	}
	return errors.Join(errs...)
}

// WarnNoHostKey is logged at every start of an agent without a host key.
const WarnNoHostKey = "insecure: true and no host_key: this agent proves no identity; controllers that check identities judge its host by Nova's rule alone; use it on a lab only"

// ApplyEnv applies UDP_PORT to KdumpListen.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	p := getenv("UDP_PORT")
	if p == "" || c.KdumpListen == "off" {
		return nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("UDP_PORT %q: want 1–65535", p)
	}
	host, _, err := net.SplitHostPort(c.KdumpListen)
	if err != nil {
		return fmt.Errorf("kdump_listen %q: %w", c.KdumpListen, err)
	}
	c.KdumpListen = net.JoinHostPort(host, p)
	return nil
}

// CAPool is APICA's certificates (nil: the system roots).
func (c *Config) CAPool() (*x509.CertPool, error) {
	if c.APICA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.APICA)
	if err != nil {
		return nil, fmt.Errorf("api_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("api_ca %s: holds no PEM certificate", c.APICA)
	}
	return pool, nil
}

// GateClient is the HTTP client of the gate: https:// controllers are
// verified against APICA (or the system roots).
func (c *Config) GateClient() (*http.Client, error) {
	pool, err := c.CAPool()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}, nil
}

// Profile returns the gossip profile from the Gossip keys.
func (c *Config) Profile() (gossip.Profile, error) {
	return gossip.ProfileFromKeys(func(k string) (string, bool) { v, ok := c.Gossip[k]; return v, ok })
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.NovaHost == "" {
		errs = append(errs, errors.New("nova_host is empty"))
	}
	if _, _, err := net.SplitHostPort(c.Bind); err != nil {
		errs = append(errs, fmt.Errorf("bind %q: %w", c.Bind, err))
	}
	if c.KdumpListen != "off" {
		if _, _, err := net.SplitHostPort(c.KdumpListen); err != nil {
			errs = append(errs, fmt.Errorf("kdump_listen %q: %w", c.KdumpListen, err))
		}
	}
	for ip := range c.KdumpHosts {
		if net.ParseIP(ip) == nil {
			errs = append(errs, fmt.Errorf("kdump_hosts: %q is not an IP address", ip))
		}
	}
	if c.MetricsListen != "off" && c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics_listen %q: want host:port or off: %w", c.MetricsListen, err))
		}
	}
	for _, ctl := range c.Controllers {
		if _, err := ParseController(ctl); err != nil {
			errs = append(errs, fmt.Errorf("controllers: %w", err))
		}
	}
	if c.APICA != "" {
		if _, err := c.CAPool(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.GateOnNoAnswer != "start" && c.GateOnNoAnswer != "fail" {
		errs = append(errs, fmt.Errorf("gate_on_no_answer %q: want start or fail", c.GateOnNoAnswer))
	}
	if _, err := c.Profile(); err != nil {
		errs = append(errs, err)
	}
	if w := c.Watchdog; w.Enabled() {
		if !filepath.IsAbs(w.Device) {
			errs = append(errs, fmt.Errorf("watchdog.device %q: want an absolute path such as /dev/watchdog", w.Device))
		}
		if w.Timeout < 0 || w.Timeout > lease.MaxW || w.Timeout%time.Second != 0 {
			errs = append(errs, fmt.Errorf("watchdog.timeout %v: want whole seconds from 0 (the driver's own) to %v", w.Timeout, lease.MaxW))
		}
		if c.HostKey == "" {
			errs = append(errs, errors.New("watchdog: needs host_key (the leader grants leases only to an agent that proves its host)"))
		}
		if len(c.Controllers) == 0 {
			errs = append(errs, errors.New("watchdog: needs controllers (the lease is asked of the controllers listed in agent.yaml, never of the mesh's)"))
		}
	} else if w.Timeout != 0 || w.AllowFIFO {
		errs = append(errs, errors.New("watchdog: timeout or allow_fifo without a device"))
	}
	if c.HostKey != "" {
		if _, err := LoadHostKey(c.HostKey); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LoadFile reads a YAML configuration; unknown keys are errors (a typo must
// not silently change behaviour), inside gossip: too. Every bad gossip key
// and every bad kdump_hosts entry is reported at once, each with the file
// and line.
func LoadFile(path string) (Config, error) {
	var c Config
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if len(root.Content) == 0 {
		return c, nil // an empty file: every default
	}
	doc := root.Content[0]
	errs := checkMaps(path, doc)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}
	return c, errors.Join(errs...)
}

// gossipKeys are the keys the gossip: map may hold.
var gossipKeys = []string{gossip.KeyProfile, gossip.KeyProbeInterval, gossip.KeyProbeTimeout, gossip.KeySuspicionMult, gossip.KeyGossipInterval}

// checkMaps checks the free-form maps of agent.yaml (gossip:, kdump_hosts:)
// entry by entry, naming file and line.
func checkMaps(path string, doc *yaml.Node) []error {
	if doc.Kind != yaml.MappingNode {
		return nil // the struct decode says what is wrong
	}
	var errs []error
	at := func(n *yaml.Node, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", path, n.Line, fmt.Sprintf(format, a...)))
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		switch k.Value {
		case "gossip":
			if v.Kind != yaml.MappingNode {
				if v.Tag != "!!null" {
					at(v, "gossip: is not a map of %s", strings.Join(gossipKeys, ", "))
				}
				continue
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				gk, gv := v.Content[j], v.Content[j+1]
				if !slices.Contains(gossipKeys, gk.Value) {
					at(gk, "gossip: %s: unknown key (allowed %s)", gk.Value, strings.Join(gossipKeys, ", "))
					continue
				}
				if gv.Kind != yaml.ScalarNode {
					at(gv, "gossip: %s: is not a single value", gk.Value)
					continue
				}
				// The value on its own (the timeout against the interval
				// is Validate's: it needs both).
				_, err := gossip.ProfileFromKeys(func(key string) (string, bool) {
					if key == gk.Value {
						return gv.Value, true
					}
					return "", false
				})
				if err != nil && strings.HasPrefix(err.Error(), gk.Value) && !strings.Contains(err.Error(), "less than "+gossip.KeyProbeInterval) {
					at(gv, "gossip: %v", err)
				}
			}
		case "kdump_hosts":
			if v.Kind != yaml.MappingNode {
				if v.Tag != "!!null" {
					at(v, "kdump_hosts: is not a map of source IP to Nova host name")
				}
				continue
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				ip, host := v.Content[j], v.Content[j+1]
				if net.ParseIP(ip.Value) == nil {
					at(ip, "kdump_hosts: %q is not an IP address (allowed: an IPv4 or IPv6 address mapped to a Nova host name)", ip.Value)
				}
				if host.Kind != yaml.ScalarNode || !hostNameRE.MatchString(host.Value) {
					at(host, "kdump_hosts: %s: %q is not a host name", ip.Value, host.Value)
				}
			}
		}
	}
	return errs
}

// hostNameRE is what a Nova host name may look like.
var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,253})$`)
