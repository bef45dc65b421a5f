package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ihaproject/iha/pkg/secret"
)

// parseSettings reads config.yaml's `config:` map over def. Every problem
// goes to c; the returned Settings is only meaningful when c has none.
func parseSettings(file string, data []byte, def Settings, c *collector) Settings {
	s, _ := parseSettingsEnv(file, data, def, nil, c)
	return s
}

// parseSettingsEnv is parseSettings with the IHA_<KEY> environment
// variables of env applied over the file (see applyEnvKeys). data nil means
// the file does not exist. It also returns every key the file or the
// environment set (with its line in the file; 0 from the environment).
func parseSettingsEnv(file string, data []byte, def Settings, env Env, c *collector) (Settings, map[string]int) {
	s, seen := parseSettingsFile(file, data, def, c)
	set := seen
	if set == nil {
		set = map[string]int{}
	}
	if applyEnvKeys(env, set, &s, c) || seen != nil {
		crossCheck(file, set, &s, c)
	}
	return s, set
}

// EnvKeyPrefix prefixes the environment variables that override config.yaml's
// keys: IHA_RAFT_ADDR overrides RAFT_ADDR. A container sets per-pod values
// (NODE_NAME, RAFT_ADDR from the pod's identity) and secrets (API_TOKEN from
// a secret.Secret) this way, over a config.yaml shared by every controller.
const EnvKeyPrefix = "IHA_"

// applyEnvKeys applies IHA_<KEY> for every key of the table that env sets
// (empty values are ignored), parsed and checked exactly as in the file; a
// problem names the variable. It marks each applied key in seen and reports
// whether it applied any. Variables naming no key are not read at all (IHA_
// is also the prefix of the CLI's and the tests' variables).
func applyEnvKeys(env Env, seen map[string]int, s *Settings, c *collector) bool {
	if env == nil {
		return false
	}
	applied := false
	for i := range keyTable {
		k := &keyTable[i]
		name := EnvKeyPrefix + k.Name
		v, ok := env(name)
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		k.apply("environment "+name, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}, s, c)
		if seen != nil {
			seen[k.Name] = 0
		}
		applied = true
	}
	return applied
}

// parseSettingsFile reads the file's keys over def and returns the line of
// each key it saw (nil when the file has no usable `config:` map).
func parseSettingsFile(file string, data []byte, def Settings, c *collector) (Settings, map[string]int) {
	s := def
	if data == nil {
		return s, nil
	}
	root, ok := parseYAML(file, data, c)
	if !ok {
		return s, nil
	}
	if root == nil {
		c.warn(file + ": file is empty: every setting has its default")
		return s, nil
	}
	if root.Kind != yaml.MappingNode {
		c.add(Problem{File: file, Line: root.Line, Reason: "must be a map with a `config:` key, not " + shown(root)})
		return s, nil
	}
	var cfg *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := resolve(root.Content[i]), resolve(root.Content[i+1])
		if k.Value == "config" {
			cfg = v
			continue
		}
		c.warn(file + ": " + k.Value + ": unknown top-level key, ignored (settings go under `config:`)")
	}
	if cfg == nil {
		c.warn(file + ": no `config:` map: every setting has its default")
		return s, nil
	}
	if isNull(cfg) {
		return s, nil
	}
	if cfg.Kind != yaml.MappingNode {
		c.add(Problem{File: file, Line: cfg.Line, Key: "config", Value: shown(cfg), Reason: "is not a map"})
		return s, nil
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(cfg.Content); i += 2 {
		k, v := resolve(cfg.Content[i]), resolve(cfg.Content[i+1])
		name := k.Value
		if line, dup := seen[name]; dup {
			c.add(Problem{File: file, Line: k.Line, Key: name, Reason: "is set twice (first at line " + strconv.Itoa(line) + ")"})
			continue
		}
		seen[name] = k.Line
		spec := keyIndex[name]
		if spec == nil {
			c.warn(file + ":" + strconv.Itoa(k.Line) + ": " + name + ": unknown key, ignored" + suggest(name, KeyNames()))
			continue
		}
		spec.apply(file, v, &s, c)
	}
	return s, seen
}

var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// apply parses v as the value of k into s, or records a problem.
func (k *keySpec) apply(file string, v *yaml.Node, s *Settings, c *collector) {
	bad := func(reason string) {
		c.add(Problem{File: file, Line: v.Line, Key: k.Name, Value: shown(v), Reason: reason, Allowed: k.allowed()})
	}
	if k.Kind == kindIgnored {
		return
	}
	if isNull(v) {
		switch k.Kind {
		case kindPath, kindList, kindPeers, kindSecret, kindDuration:
			k.setZero(s)
		case kindString:
			if k.Name != "NODE_NAME" { // NODE_NAME: keep the host name default
				bad("has no value")
			}
		default:
			c.add(Problem{File: file, Line: v.Line, Key: k.Name, Reason: "has no value", Allowed: k.allowed()})
		}
		return
	}
	switch k.Kind {
	case kindSecret:
		// Never shown(v): a problem with a token must not print the token.
		str, ok := nodeString(v)
		str = strings.TrimSpace(str)
		if !ok || str == "" {
			c.add(Problem{File: file, Line: v.Line, Key: k.Name, Reason: "must be a non-empty string", Allowed: k.allowed()})
			return
		}
		if n := len(str); n < MinTokenLength {
			// The length only: never the token.
			c.add(Problem{File: file, Line: v.Line, Key: k.Name, Reason: fmt.Sprintf("is too short (%d characters): anyone could guess it", n),
				Allowed: fmt.Sprintf("at least %d characters; make one with `openssl rand -base64 24`", MinTokenLength)})
			return
		}
		*k.secp(s) = secret.New(str)
	case kindInt:
		n, ok := nodeInt(v)
		if !ok {
			bad("is not an integer")
			return
		}
		if n < k.Min || n > k.Max {
			bad("is out of range")
			return
		}
		if k.durp != nil {
			*k.durp(s) = time.Duration(n) * time.Second
		} else {
			*k.intp(s) = n
		}
	case kindBool:
		b, ok := nodeBool(v)
		if !ok {
			bad("is not a boolean")
			return
		}
		*k.boolp(s) = b
	case kindString, kindPath:
		str, ok := nodeString(v)
		if !ok {
			bad("must be a single value")
			return
		}
		str = strings.TrimSpace(str)
		switch {
		case k.Kind == kindString && str == "":
			bad("must not be empty")
			return
		case k.Name == "NODE_NAME" && !nodeNameRE.MatchString(str):
			c.add(Problem{File: file, Line: v.Line, Key: k.Name, Value: shown(v), Reason: "is not a valid node name", Allowed: "1–64 of A-Z a-z 0-9 . _ -"})
			return
		}
		*k.strp(s) = str
	case kindEnum:
		str, ok := nodeString(v)
		if !ok {
			bad("is not one of the allowed values")
			return
		}
		str = strings.TrimSpace(str)
		if k.Upper {
			str = strings.ToUpper(str)
		} else {
			str = strings.ToLower(str)
		}
		for _, e := range k.Enum {
			if e == str {
				*k.strp(s) = str
				return
			}
		}
		bad("is not one of the allowed values")
	case kindDuration:
		str, ok := nodeString(v)
		if !ok {
			bad("is not a duration")
			return
		}
		d, err := parseDuration(str)
		if err != nil {
			bad("is not a duration")
			return
		}
		if d < k.DurMin || d > k.DurMax {
			bad("is out of range")
			return
		}
		*k.durp(s) = d
	case kindListenAddr:
		str, ok := nodeString(v)
		if !ok {
			bad("is not host:port or off")
			return
		}
		str = strings.TrimSpace(str)
		if strings.EqualFold(str, Off) {
			*k.strp(s) = Off
			return
		}
		if reason := checkHostPort(str, false); reason != "" {
			bad(reason)
			return
		}
		*k.strp(s) = str
	case kindAddr:
		str, ok := nodeString(v)
		if !ok {
			bad("is not host:port")
			return
		}
		str = strings.TrimSpace(str)
		if reason := checkHostPort(str, advertisedKey(k.Name)); reason != "" {
			bad(reason)
			return
		}
		*k.strp(s) = str
	case kindList:
		l, ok := nodeList(v)
		if !ok {
			bad("is not a list of strings")
			return
		}
		*k.listp(s) = l
	case kindPeers:
		l, ok := nodeList(v)
		if !ok {
			bad("is not a list of id=host:port")
			return
		}
		ids, addrs := map[string]bool{}, map[string]bool{}
		good := true
		for _, p := range l {
			id, addr, found := strings.Cut(p, "=")
			id, addr = strings.TrimSpace(id), strings.TrimSpace(addr)
			reason := ""
			switch {
			case !found || !nodeNameRE.MatchString(id):
				reason = "is not id=host:port"
			case checkHostPort(addr, true) != "":
				reason = checkHostPort(addr, true)
			case ids[id]:
				reason = "repeats the id " + strconv.Quote(id)
			case addrs[addr]:
				reason = "repeats the address " + addr
			}
			if reason != "" {
				c.add(Problem{File: file, Line: v.Line, Key: k.Name, Value: strconv.Quote(p), Reason: reason, Allowed: k.allowed()})
				good = false
				continue
			}
			ids[id], addrs[addr] = true, true
		}
		if good {
			*k.listp(s) = l
		}
	}
}

func (k *keySpec) setZero(s *Settings) {
	switch {
	case k.strp != nil:
		*k.strp(s) = ""
	case k.listp != nil:
		*k.listp(s) = nil
	case k.secp != nil:
		*k.secp(s) = secret.Secret{}
	case k.durp != nil:
		*k.durp(s) = 0
	}
}

// MinTokenLength is the shortest API_TOKEN or API_READ_TOKEN accepted.
const MinTokenLength = 16

// advertisedKey reports whether key names an address that peers dial (so
// it needs a concrete host).
func advertisedKey(key string) bool { return key == "RAFT_ADDR" || key == "GOSSIP_ADVERTISE" }

// parseDuration accepts a Go duration ("500ms") or a number of seconds.
func parseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || f > 86400 {
			return 0, strconv.ErrRange
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(v)
}

// checkHostPort returns why addr is not a usable host:port, or "".
// advertised addresses need a concrete host.
func checkHostPort(addr string, advertised bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "is not host:port"
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "has a port out of range"
	}
	if advertised {
		if host == "" {
			return "needs a host other peers can reach"
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return "needs a host other peers can reach, not " + host
		}
	}
	return ""
}

// crossCheck looks at keys together once each is valid on its own.
func crossCheck(file string, seen map[string]int, s *Settings, c *collector) {
	if s.CheckHeartbeat && s.HeartbeatTimeout < s.Delta {
		c.warn(file + ": HEARTBEAT_TIMEOUT (" + secs(s.HeartbeatTimeout) + ") is shorter than DELTA (" + secs(s.Delta) +
			"): a host can lose its heartbeat grace before Nova calls it stale")
	}
	if s.CheckKdump && !s.MeshEnabled() && s.KdumpListen == Off {
		c.add(Problem{File: file, Line: seen["KDUMP_LISTEN"], Key: "KDUMP_LISTEN", Value: strconv.Quote(Off),
			Reason:  "and GOSSIP_BIND is off too, so with CHECK_KDUMP no kdump notice could ever arrive and every dumping host would be fenced",
			Allowed: "a host:port to listen on (InstanceHA listens on UDP_PORT), a mesh (GOSSIP_BIND), or CHECK_KDUMP false"})
	}
	if !s.SSLVerify {
		c.warn(file + ": SSL_VERIFY is false: BMC certificates are not verified")
	}
	if safe := SafeDelta(s.NovaReportInterval); s.Delta < safe {
		risk := "with the mesh wired IHA still never fences a host whose agent is alive, but every host without a live agent is judged by this rule"
		if s.DetectionMode == DetectNova && !s.MeshEnabled() {
			risk = "with DETECTION_MODE nova and no mesh, healthy hosts get fenced and evacuated"
		}
		c.warn(file + ": DELTA (" + secs(s.Delta) + ") is not safely above Nova's report_interval (NOVA_REPORT_INTERVAL " + secs(s.NovaReportInterval) +
			"): updated_at is whole seconds and reports land late under load, so a healthy host's heartbeat is over " + secs(s.NovaReportInterval) +
			" old just before its next report and InstanceHA's rule calls it stale (measured on the lab: healthy computes stale at 10.09 s with DELTA 10); " +
			risk + ". DELTA " + secs(safe) + " or more survives one late report")
	}
	for _, p := range []struct {
		key, path string
	}{{"SSL_CA_BUNDLE", s.SSLCABundle}, {"SSL_CERT_PATH", s.SSLCertPath}, {"SSL_KEY_PATH", s.SSLKeyPath},
		{"API_TLS_CERT", s.APITLSCert}, {"API_TLS_KEY", s.APITLSKey},
		{"RAFT_TLS_CERT", s.RaftTLSCert}, {"RAFT_TLS_KEY", s.RaftTLSKey}, {"RAFT_TLS_CA", s.RaftTLSCA}} {
		if p.path == "" {
			continue
		}
		if reason := checkReadable(p.path); reason != "" {
			c.add(Problem{File: file, Line: seen[p.key], Key: p.key, Value: strconv.Quote(p.path), Reason: reason})
		}
	}
	if (s.SSLCertPath == "") != (s.SSLKeyPath == "") {
		c.add(Problem{File: file, Key: "SSL_CERT_PATH", Reason: "and SSL_KEY_PATH must be set together"})
	}
	if n := countSet(s.RaftTLSCert, s.RaftTLSKey, s.RaftTLSCA); n != 0 && n != 3 {
		c.add(Problem{File: file, Key: "RAFT_TLS_CERT", Reason: "RAFT_TLS_KEY and RAFT_TLS_CA must be set together"})
	}
	if (s.APITLSCert == "") != (s.APITLSKey == "") {
		c.add(Problem{File: file, Key: "API_TLS_CERT", Reason: "and API_TLS_KEY must be set together"})
	}
	if !s.APIToken.IsZero() && s.APIToken.Reveal() == s.APIReadToken.Reveal() {
		c.add(Problem{File: file, Key: "API_READ_TOKEN", Reason: "must differ from API_TOKEN (a read-only token that equals the read-write one grants writes)"})
	}
	for _, a := range s.GossipJoin {
		if reason := checkHostPort(strings.TrimSpace(a), true); reason != "" {
			c.add(Problem{File: file, Line: seen["GOSSIP_JOIN"], Key: "GOSSIP_JOIN", Value: strconv.Quote(a), Reason: reason, Allowed: "host:port of a member"})
		}
	}
	if g := s.Gossip(); g.ProbeTimeout >= g.ProbeInterval {
		c.add(Problem{File: file, Line: seen["GOSSIP_PROBE_TIMEOUT"], Key: "GOSSIP_PROBE_TIMEOUT", Value: g.ProbeTimeout.String(),
			Reason: "must be shorter than GOSSIP_PROBE_INTERVAL (" + g.ProbeInterval.String() + ")"})
	}
	if s.APITLSCert == "" && !loopbackListen(s.APIAddr) {
		c.warn(file + ": API_ADDR " + s.APIAddr + " serves the status API over plain HTTP beyond this host: tokens, the gate's answers and operators' commands cross the network in clear; set API_TLS_CERT and API_TLS_KEY")
	}
	if d := s.DecisionLog; d != Off && !filepath.IsAbs(d) {
		c.add(Problem{File: file, Line: seen["DECISION_LOG"], Key: "DECISION_LOG", Value: strconv.Quote(d),
			Reason: "is neither off nor an absolute directory path", Allowed: "off, or an absolute path such as /var/lib/iha/decisions"})
	}
	if s.DetectionMode == DetectGossip && !s.MeshEnabled() {
		c.add(Problem{File: file, Line: seen["DETECTION_MODE"], Key: "DETECTION_MODE", Value: "gossip",
			Reason: "needs the mesh, but GOSSIP_BIND is off", Allowed: "nova or both, or set GOSSIP_BIND"})
	}
	if s.DetectionMode == DetectBoth && !s.MeshEnabled() {
		c.warn(file + ": DETECTION_MODE both with GOSSIP_BIND off: no mesh, every host is judged by InstanceHA's rule (nova)")
	}
	if len(s.RaftPeers) > 0 && s.NodeName != "" {
		found := false
		for _, p := range s.RaftPeers {
			if id, _, _ := strings.Cut(p, "="); strings.TrimSpace(id) == s.NodeName {
				found = true
			}
		}
		if !found {
			c.warn(file + ": RAFT_PEERS does not list NODE_NAME " + strconv.Quote(s.NodeName) + ": this node is not a voter at bootstrap")
		}
	}
}

// loopbackListen reports whether a listen address (host:port) is on this
// host's loopback only; an empty host listens on every address.
func loopbackListen(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	return err == nil && h != "" && loopbackHost(h)
}

// checkReadable returns why path cannot be read, or "".
func checkReadable(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return "does not exist"
		}
		return "cannot be read"
	}
	if st.IsDir() {
		return "is a directory, not a file"
	}
	f, err := os.Open(path)
	if err != nil {
		return "cannot be read"
	}
	_ = f.Close()
	return ""
}

func secs(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) + "s" }

// countSet counts the non-empty strings.
func countSet(v ...string) int {
	n := 0
	for _, s := range v {
		if s != "" {
			n++
		}
	}
	return n
}

// NovaHeartbeatMargin is how late a report may land after updated_at plus
// report_interval and still be "on time": updated_at is truncated to whole
// seconds (up to 1 s), and the report loop, RPC to the conductor and the
// database write add their delays (leader/DESIGN.md has the lab's
// figures). The leader's verdict rule and the DELTA warning both use it.
const NovaHeartbeatMargin = 2 * time.Second

// SafeDelta is the smallest DELTA that survives one late report: two report
// intervals plus the margin.
func SafeDelta(reportInterval time.Duration) time.Duration {
	return 2*reportInterval + NovaHeartbeatMargin
}
