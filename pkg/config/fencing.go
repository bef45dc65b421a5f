package config

import (
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ihaproject/iha/pkg/secret"
)

// Fencing keys per agent (docs/rules.md §9, plus IHA's
// address, api_url and ca_file).
var (
	fenceAgents = []string{AgentIPMI, AgentRedfish, AgentBMH, AgentNoop}

	fenceKeys = map[string][]string{
		AgentIPMI:    {"agent", "ipaddr", "ipport", "login", "passwd", "timeout", "address"},
		AgentRedfish: {"agent", "ipaddr", "ipport", "login", "passwd", "uuid", "tls", "timeout", "address"},
		AgentBMH:     {"agent", "token", "host", "namespace", "api_url", "ca_file", "timeout"},
		AgentNoop:    {"agent"},
	}
	fenceRequired = map[string][]string{
		AgentIPMI:    {"ipaddr", "ipport", "login", "passwd"},
		AgentRedfish: {"ipaddr", "login", "passwd"},
		AgentBMH:     {"token", "host", "namespace"},
	}
	// fenceSecretKeys are never quoted, whatever their value.
	fenceSecretKeys = map[string]bool{"passwd": true, "token": true, "password": true}

	loginRE     = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	dnsLabelRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// Fencing defaults.
const (
	DefaultRedfishUUID = "System.Embedded.1"
	DefaultBMHAPIURL   = "https://kubernetes.default.svc"
	DefaultBMHCAFile   = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	minFenceTimeout    = 5
	maxFenceTimeout    = 300
)

// parseFencing reads fencing.yaml's `FencingConfig:` map.
func parseFencing(file string, data []byte, c *collector) Fencing {
	var f Fencing
	root, ok := parseYAML(file, data, c)
	if !ok {
		return f
	}
	var fc *yaml.Node
	if root != nil && root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			if resolve(root.Content[i]).Value == "FencingConfig" {
				fc = resolve(root.Content[i+1])
			}
		}
	}
	if root != nil && root.Kind != yaml.MappingNode {
		c.add(Problem{File: file, Line: root.Line, Reason: "must be a map with a `FencingConfig:` key"})
		return f
	}
	if fc == nil {
		c.add(Problem{File: file, Reason: "has no `FencingConfig:` map"})
		return f
	}
	if isNull(fc) {
		c.warn(file + ": FencingConfig is empty: no host can be fenced, so none will be evacuated")
		return f
	}
	if fc.Kind != yaml.MappingNode {
		c.add(Problem{File: file, Line: fc.Line, Key: "FencingConfig", Reason: "is not a map"})
		return f
	}
	// Learn every secret first, so that nothing below can print one.
	recordFencingSecrets(fc, c)

	names := map[string]int{}
	shorts := map[string]string{}
	for i := 0; i+1 < len(fc.Content); i += 2 {
		k, v := resolve(fc.Content[i]), resolve(fc.Content[i+1])
		name := strings.TrimSpace(k.Value)
		if k.Kind != yaml.ScalarNode || name == "" {
			c.add(Problem{File: file, Line: k.Line, Reason: "a host name must be a non-empty string"})
			continue
		}
		if line, dup := names[name]; dup {
			c.add(Problem{File: file, Line: k.Line, Host: name, Reason: "is listed twice (first at line " + strconv.Itoa(line) + ")"})
			continue
		}
		names[name] = k.Line
		if first, dup := shorts[ShortName(name)]; dup {
			c.warn(file + ": " + name + ": has the same short name as " + first + ", which comes first and wins")
		} else {
			shorts[ShortName(name)] = name
		}
		if h, ok := parseFenceHost(file, name, v, c); ok {
			f.Hosts = append(f.Hosts, h)
		}
	}
	if len(fc.Content) == 0 {
		c.warn(file + ": FencingConfig is empty: no host can be fenced, so none will be evacuated")
	}
	return f
}

func recordFencingSecrets(fc *yaml.Node, c *collector) {
	for i := 1; i < len(fc.Content); i += 2 {
		entry := resolve(fc.Content[i])
		if entry.Kind != yaml.MappingNode {
			// A host mapped to a bare value may be a misplaced password.
			recordAllScalars(entry, c)
			continue
		}
		for j := 0; j+1 < len(entry.Content); j += 2 {
			key, val := resolve(entry.Content[j]).Value, resolve(entry.Content[j+1])
			if fenceSecretKeys[strings.ToLower(key)] {
				recordAllScalars(val, c)
			}
			if key == "address" && val.Kind == yaml.ScalarNode {
				if u, err := url.Parse(val.Value); err == nil && u.User != nil {
					if pw, ok := u.User.Password(); ok {
						c.secret(pw)
					}
					c.secret(u.User.String())
				}
			}
		}
	}
}

// parseFenceHost validates one FencingConfig entry.
func parseFenceHost(file, name string, v *yaml.Node, c *collector) (FenceHost, bool) {
	h := FenceHost{Name: name}
	before := len(c.problems)
	add := func(line int, key, value, reason, allowed string) {
		c.add(Problem{File: file, Line: line, Host: name, Key: key, Value: value, Reason: reason, Allowed: allowed})
	}
	if v.Kind != yaml.MappingNode {
		add(v.Line, "", "", "must be a map with an agent key", "")
		return h, false
	}
	fields := map[string]*yaml.Node{}
	for j := 0; j+1 < len(v.Content); j += 2 {
		k, val := resolve(v.Content[j]), resolve(v.Content[j+1])
		if _, dup := fields[k.Value]; dup {
			add(k.Line, k.Value, "", "is set twice", "")
			continue
		}
		fields[k.Value] = val
	}
	agentNode := fields["agent"]
	if agentNode == nil || isNull(agentNode) {
		add(v.Line, "agent", "", "is missing", strings.Join(fenceAgents, ", "))
		return h, false
	}
	agent, ok := nodeString(agentNode)
	agent = strings.ToLower(strings.TrimSpace(agent))
	if !ok || fenceKeys[agent] == nil {
		add(agentNode.Line, "agent", shown(agentNode), "is not a fencing agent", strings.Join(fenceAgents, ", "))
		return h, false
	}
	h.Agent = agent

	allowedKeys := fenceKeys[agent]
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return fields[keys[i]].Line < fields[keys[j]].Line })
	for _, k := range keys {
		if !contains(allowedKeys, k) {
			c.warn(file + ":" + strconv.Itoa(fields[k].Line) + ": " + name + ": " + k + ": not a key of agent " + agent + ", ignored" + suggest(k, allowedKeys))
		}
	}

	// str reads a non-secret string field; secret fields use secretField.
	str := func(key string) (string, *yaml.Node) {
		n := fields[key]
		if n == nil || isNull(n) {
			return "", nil
		}
		s, ok := nodeString(n)
		if !ok {
			add(n.Line, key, shown(n), "must be a single value", "")
			return "", nil
		}
		return strings.TrimSpace(s), n
	}
	secretField := func(key string) secret.Secret {
		n := fields[key]
		if n == nil || isNull(n) {
			return secret.Secret{}
		}
		if n.Kind != yaml.ScalarNode {
			add(n.Line, key, "", "must be a single string (value not shown)", "")
			return secret.Secret{}
		}
		if n.Value == "" {
			add(n.Line, key, "", "is empty", "")
		}
		return secret.New(n.Value)
	}
	intField := func(key string, lo, hi int, unit string) (int, bool) {
		n := fields[key]
		if n == nil || isNull(n) {
			return 0, false
		}
		allowed := strconv.Itoa(lo) + "–" + strconv.Itoa(hi) + unit
		i, ok := nodeInt(n)
		if !ok {
			add(n.Line, key, shown(n), "is not an integer", allowed)
			return 0, false
		}
		if i < lo || i > hi {
			add(n.Line, key, shown(n), "is out of range", allowed)
			return 0, false
		}
		return i, true
	}

	// An address stands for ipaddr and ipport only when it says something:
	// `address:` with no value is a mistake at its own line, not a licence
	// to leave ipaddr out.
	hasAddress := false
	if n := fields["address"]; n != nil {
		if a, ok := nodeString(n); !isNull(n) && ok && strings.TrimSpace(a) != "" {
			hasAddress = true
		} else if isNull(n) || ok {
			add(n.Line, "address", "", "is empty", "a BMC address (ipmi://HOST:PORT, redfish+https://HOST/redfish/v1/Systems/ID, …), or ipaddr and ipport instead")
		}
	}
	for _, k := range fenceRequired[agent] {
		if n := fields[k]; n == nil || isNull(n) {
			if (k == "ipaddr" || k == "ipport") && hasAddress {
				continue
			}
			add(v.Line, k, "", "is missing", "required by agent "+agent)
		}
	}
	if t, ok := intField("timeout", minFenceTimeout, maxFenceTimeout, " seconds"); ok {
		h.Timeout = time.Duration(t) * time.Second
	}

	switch agent {
	case AgentIPMI, AgentRedfish:
		if ip, n := str("ipaddr"); n != nil {
			if a, err := netip.ParseAddr(ip); err != nil || a.Zone() != "" {
				add(n.Line, "ipaddr", shown(n), "is not an IP address", "an IPv4 or IPv6 literal, no host names")
			} else {
				h.IPAddr = a.String()
			}
		}
		if p, ok := intField("ipport", 1, 65535, ""); ok {
			h.IPPort = p
		}
		if login, n := str("login"); n != nil {
			if !loginRE.MatchString(login) {
				add(n.Line, "login", shown(n), "is not a valid login", "1–64 of a-z A-Z 0-9 _ -")
			}
			h.Login = login
		}
		h.Passwd = secretField("passwd")
		if agent == AgentRedfish {
			if h.IPPort == 0 {
				h.IPPort = DefaultHTTPSPort
			}
			h.UUID = DefaultRedfishUUID
			if id, n := str("uuid"); n != nil {
				if !systemIDRE.MatchString(id) {
					add(n.Line, "uuid", shown(n), "is not a Redfish system id", "1–255 of A-Z a-z 0-9 . _ : ~ -")
				} else {
					h.UUID = id
				}
			}
			if n := fields["tls"]; n != nil && !isNull(n) {
				b, ok := nodeBool(n)
				if !ok {
					add(n.Line, "tls", shown(n), "is not a boolean", "\"true\" or \"false\"")
				}
				h.TLS = b
			}
		}
		if addr, n := str("address"); n != nil {
			applyAddress(&h, addr, n, fields, add)
		}
		if agent == AgentRedfish && !h.TLS && len(c.problems) == before {
			c.warn(file + ": " + name + ": redfish without tls: plain HTTP is used and the BMC password crosses the network in clear")
		}
	case AgentBMH:
		h.Token = secretField("token")
		if host, n := str("host"); n != nil {
			if len(host) > 253 || !dnsSubdomRE.MatchString(host) {
				add(n.Line, "host", shown(n), "is not a BareMetalHost name", "a DNS subdomain, at most 253 characters")
			}
			h.Host = host
		}
		if ns, n := str("namespace"); n != nil {
			if len(ns) > 63 || !dnsLabelRE.MatchString(ns) {
				add(n.Line, "namespace", shown(n), "is not a namespace", "a DNS label, at most 63 characters")
			}
			h.Namespace = ns
		}
		h.APIURL = DefaultBMHAPIURL
		if u, n := str("api_url"); n != nil {
			if reason := checkHTTPURL(u); reason != "" {
				val := shown(n)
				if strings.Contains(u, "@") {
					val = ""
				}
				add(n.Line, "api_url", val, reason, "the Kubernetes API URL, e.g. https://kubernetes.default.svc")
			} else {
				h.APIURL = u
			}
		}
		if ca, n := str("ca_file"); n != nil {
			if reason := checkReadable(ca); reason != "" {
				add(n.Line, "ca_file", shown(n), reason, "")
			}
			h.CAFile = ca
		}
	case AgentNoop:
		c.warn(file + ": " + name + ": agent noop never powers the host off: its instances may run twice and their disks may be corrupted")
	}
	return h, len(c.problems) == before
}

// applyAddress fills h from a metal3-style address. The address is never
// quoted: it may carry user info.
func applyAddress(h *FenceHost, addr string, n *yaml.Node, fields map[string]*yaml.Node, add func(int, string, string, string, string)) {
	a, err := ParseBMCAddress(addr)
	if err != nil {
		add(n.Line, "address", "", err.Error(), "")
		return
	}
	if a.Agent != h.Agent {
		add(n.Line, "address", "", "is a "+a.Agent+" address but the agent is "+h.Agent, "")
		return
	}
	for _, k := range []string{"ipaddr", "ipport", "uuid", "tls"} {
		if f := fields[k]; f != nil && !isNull(f) {
			add(f.Line, k, "", "is set together with address", "one of them")
			return
		}
	}
	h.Address = addr
	h.IPAddr, h.IPPort, h.TLS = a.Host, a.Port, a.TLS
	if a.SystemID != "" {
		h.UUID = a.SystemID
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
