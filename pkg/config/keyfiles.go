package config

import (
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ihaproject/iha/pkg/identity"
)

// The mesh's key files default to names beside config.yaml, so that a
// controller configured in /etc/iha/ finds /etc/iha/gossip.keyring without
// a line of configuration, and a missing key is reported by its path.
const (
	// DefaultKeyringName is GOSSIP_KEYRING's default, beside config.yaml.
	DefaultKeyringName = "gossip.keyring"
	// DefaultClusterKeyName is CLUSTER_KEY's default, beside config.yaml.
	DefaultClusterKeyName = "cluster.key"
	// DefaultGossipLabel is GOSSIP_LABEL's default (and the agents'): a
	// mesh of IHA never merges with another memberlist mesh on the port.
	DefaultGossipLabel = "iha"
)

// keyFileDefaults are the key files' defaults for settings read from the
// config.yaml in dir.
func keyFileDefaults(dir string, s *Settings) {
	s.GossipKeyring = filepath.Join(dir, DefaultKeyringName)
	s.ClusterKey = filepath.Join(dir, DefaultClusterKeyName)
}

// resolveKeyFiles gives the key-file keys config.yaml does not set their
// default beside cfgPath, and checks them: while the mesh is on, the
// keyring must exist and be readable, unless GOSSIP_INSECURE lets the mesh
// run unencrypted (a warning, which iha-leader logs at every start).
func resolveKeyFiles(cfgPath string, seen map[string]int, s *Settings, c *collector) {
	s.configDir = filepath.Dir(cfgPath)
	_, keyringSet := seen["GOSSIP_KEYRING"]
	if !keyringSet {
		var d Settings
		keyFileDefaults(s.configDir, &d)
		s.GossipKeyring = d.GossipKeyring
	}
	problem := func(reason string) {
		where := ""
		if !keyringSet {
			where = " (the default: " + DefaultKeyringName + " beside config.yaml)"
		}
		c.add(Problem{File: cfgPath, Line: seen["GOSSIP_KEYRING"], Key: "GOSSIP_KEYRING", Value: strconv.Quote(s.GossipKeyring),
			Reason:  reason + where + ": the mesh is encrypted by default",
			Allowed: "a keyring file (`iha-leader keygen gossip`; docs/operations.md, The mesh's keys), GOSSIP_BIND off, or GOSSIP_INSECURE true on a lab"})
	}
	switch {
	case !s.MeshEnabled():
		if !keyringSet {
			s.GossipKeyring = "" // no mesh: no key needed, none looked for
		}
	case s.GossipKeyring != "" && checkReadable(s.GossipKeyring) == "":
		// Encrypted, whatever GOSSIP_INSECURE says.
	case !s.GossipInsecure && s.GossipKeyring == "":
		c.add(Problem{File: cfgPath, Line: seen["GOSSIP_KEYRING"], Key: "GOSSIP_KEYRING",
			Reason:  "is empty: the mesh is encrypted by default",
			Allowed: "a keyring file (`iha-leader keygen gossip`; docs/operations.md, The mesh's keys), GOSSIP_BIND off, or GOSSIP_INSECURE true on a lab"})
	case !s.GossipInsecure:
		problem(checkReadable(s.GossipKeyring))
	case keyringSet && s.GossipKeyring != "":
		// GOSSIP_INSECURE does not excuse a keyring named but unreadable.
		problem(checkReadable(s.GossipKeyring))
	default:
		s.GossipKeyring = ""
		c.warn(cfgPath + ": " + WarnGossipInsecure)
	}
	resolveClusterKey(cfgPath, seen, s, c)
}

// resolveClusterKey is resolveKeyFiles for CLUSTER_KEY: required while the
// mesh is on (unless GOSSIP_INSECURE); without the mesh it is used when
// its file is there (it also signs the gate's answers and forwarded
// requests) and not looked for otherwise.
func resolveClusterKey(cfgPath string, seen map[string]int, s *Settings, c *collector) {
	_, set := seen["CLUSTER_KEY"]
	if !set {
		s.ClusterKey = filepath.Join(s.configDir, DefaultClusterKeyName)
	}
	allowed := "a key file (`iha-leader keygen cluster`; docs/operations.md, The mesh's keys), GOSSIP_BIND off, or GOSSIP_INSECURE true on a lab"
	problem := func(reason string) {
		where := ""
		if !set {
			where = " (the default: " + DefaultClusterKeyName + " beside config.yaml)"
		}
		c.add(Problem{File: cfgPath, Line: seen["CLUSTER_KEY"], Key: "CLUSTER_KEY", Value: strconv.Quote(s.ClusterKey),
			Reason: reason + where + ": the controllers check which host each mesh member speaks for", Allowed: allowed})
	}
	missing := s.ClusterKey == "" || checkReadable(s.ClusterKey) != ""
	switch {
	case !missing:
		if _, err := identity.LoadKey(s.ClusterKey); err != nil {
			c.add(Problem{File: cfgPath, Line: seen["CLUSTER_KEY"], Key: "CLUSTER_KEY", Value: strconv.Quote(s.ClusterKey),
				Reason: "is not a key file: " + strings.TrimPrefix(err.Error(), identity.ErrKey.Error()+": "), Allowed: allowed})
		}
	case set && s.ClusterKey != "":
		problem(checkReadable(s.ClusterKey)) // named, so meant: never ignored
	case !s.MeshEnabled():
		s.ClusterKey = ""
	case s.ClusterKey == "" && !s.GossipInsecure:
		c.add(Problem{File: cfgPath, Line: seen["CLUSTER_KEY"], Key: "CLUSTER_KEY",
			Reason: "is empty: the controllers check which host each mesh member speaks for", Allowed: allowed})
	case !s.GossipInsecure:
		problem(checkReadable(s.ClusterKey))
	default:
		s.ClusterKey = ""
		c.warn(cfgPath + ": " + WarnIdentityInsecure)
	}
}

// WarnIdentityInsecure is the warning of a mesh whose members' claims are
// not checked.
const WarnIdentityInsecure = "GOSSIP_INSECURE: no CLUSTER_KEY: the controllers cannot check which host a mesh member speaks for; a host claimed by two members is judged by Nova's rule alone; use it on a lab only"

// WarnGossipInsecure is the warning of a mesh without encryption.
const WarnGossipInsecure = "GOSSIP_INSECURE: the gossip mesh is NOT encrypted (no GOSSIP_KEYRING): anyone who reaches GOSSIP_BIND can join the mesh, read it and speak in it; use it on a lab only"

// defaultsFor is Defaults with the defaults that depend on where s was
// read (the key files beside its config.yaml).
func defaultsFor(s Settings) Settings {
	d := Defaults()
	if s.configDir != "" {
		keyFileDefaults(s.configDir, &d)
	}
	return d
}
