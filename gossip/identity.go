package gossip

import (
	"errors"
	"fmt"
	"time"

	"github.com/ihaproject/iha/pkg/identity"
)

// Identity in the mesh (package identity holds the keys; the threat model
// is in docs/operations.md). The gossip keyring makes the mesh private to
// the holders of one shared key, but every holder looks alike: on its own
// it lets any member advertise any Nova host, announce anyone's leave or
// relay a notice in anyone's name. So:
//
//   - an agent with Config.HostKey sends the controllers a claim every
//     ClaimInterval: "node N at address A speaks for host H", signed with
//     H's key. A controller with Config.ClusterKey derives H's key and
//     records the claim on the member (Member.Claim) only if it verifies,
//     names the address the mesh knows N at, and is newer than the last
//     one (incarnation and sequence: a replay is refused). What the
//     leader believes of a host comes only from a member with a current
//     claim for it (cmd/iha-leader's mesh adapter).
//   - every message a member originates is signed: an agent's with its
//     host key, a controller's with its controller key. A controller
//     drops, before anything else, a message that does not verify, that
//     was made more than MaxClockSkew from its clock, or whose sender has
//     not proved the host it signs for; a leave or a refutation must come
//     from the member it is about, and a leave from its current process.
//   - every node, with keys or not, drops a leave or a refutation about
//     another member.
//
// What it cannot stop: memberlist's own probes and state messages carry
// no signature, so a holder of the keyring can forge a member's liveness
// (refute its suspicion) or its death. A forged "alive" does not make a
// host healthy for the leader (it wants a current claim, which only the
// host's key makes); a forged "dead" of a live host is answered by the
// host itself (memberlist refutes) and, in DETECTION_MODE both, by Nova's
// heartbeat.

// DefaultClaimInterval is how often an agent proves its host.
const DefaultClaimInterval = 5 * time.Second

// MaxClockSkew bounds how far a signed message's time may be from the
// checking controller's clock (keep every node's clock in sync: NTP).
const MaxClockSkew = 2 * time.Minute

// Claim is what a controller verified of a member's identity.
type Claim struct {
	// Host is the Nova host the member proved it speaks for ("": none).
	Host string
	// At is when its last valid claim arrived (this node's clock).
	At time.Time
	// Inc and Seq are the claiming process's incarnation and counter;
	// SentAt the claim's own time. A claim older than the last is refused.
	Inc    string
	Seq    uint64
	SentAt time.Time
}

// ClaimTTL is how long a claim vouches for a live member: six intervals,
// so that a few lost claims (UDP) change nothing.
func (m *Mesh) ClaimTTL() time.Duration { return 6 * m.cfg.ClaimInterval }

// VerifiesIdentity reports whether this node checks the members' claims
// (a controller with the cluster key).
func (m *Mesh) VerifiesIdentity() bool { return len(m.cfg.ClusterKey) > 0 }

func (m *Mesh) identityMode() string {
	switch {
	case len(m.cfg.ClusterKey) > 0:
		return "verifies members' claims"
	case len(m.cfg.HostKey) > 0:
		return "proves host " + m.cfg.Meta.NovaHost + " (key " + identity.KeyID(m.cfg.HostKey) + ")"
	}
	return "off"
}

// encode signs env with this node's key, if it has one, and encodes it.
func (m *Mesh) encode(env envelope) ([]byte, error) {
	switch {
	case len(m.cfg.HostKey) > 0:
		env.Host = m.cfg.Meta.NovaHost
		env.MAC = identity.Sum(m.cfg.HostKey, env.macParts()...)
	case len(m.cfg.ClusterKey) > 0:
		env.Host = ""
		env.MAC = identity.Sum(identity.ControllerKey(m.cfg.ClusterKey, m.self), env.macParts()...)
	}
	return env.encode()
}

// check says why env must be dropped, or nil.
func (m *Mesh) check(env envelope) error {
	switch env.Type {
	case msgLeave, msgRefute:
		if env.From != env.Node {
			return fmt.Errorf("%s announced a %s of %s: a member only announces its own", env.From, env.Type, env.Node)
		}
	}
	if len(m.cfg.ClusterKey) == 0 {
		return nil // nothing to check a signature with
	}
	if len(env.MAC) == 0 {
		return errors.New("unsigned (the sender has no host_key or cluster key)")
	}
	if env.Host != "" {
		if !identity.Check(identity.HostKey(m.cfg.ClusterKey, env.Host), env.MAC, env.macParts()...) {
			return fmt.Errorf("its signature does not verify with host %s's key (a forgery, or a host_key made for another host)", env.Host)
		}
	} else if !identity.Check(identity.ControllerKey(m.cfg.ClusterKey, env.From), env.MAC, env.macParts()...) {
		return fmt.Errorf("its signature does not verify with controller %s's key (a forgery, or another CLUSTER_KEY)", env.From)
	}
	if d := time.Since(env.At); d > MaxClockSkew || d < -MaxClockSkew {
		return fmt.Errorf("it was made at %s, %v from this node's clock (a replay, or clocks out of sync)", env.At.UTC().Format(time.RFC3339), d.Round(time.Second))
	}
	if env.Type == msgClaim || env.Host == "" {
		return nil
	}
	m.mu.Lock()
	var c Claim
	if mem := m.members[env.From]; mem != nil {
		c = mem.Claim
	}
	m.mu.Unlock()
	if c.Host != env.Host {
		return fmt.Errorf("%s has not proved that it speaks for %s", env.From, env.Host)
	}
	if env.Type == msgLeave && env.Inc != c.Inc {
		return fmt.Errorf("a leave of an earlier run of %s (incarnation %s, current %s)", env.From, env.Inc, c.Inc)
	}
	return nil
}

// acceptClaim records a verified claim (check passed) on its member.
func (m *Mesh) acceptClaim(env envelope) {
	m.mu.Lock()
	mem := m.members[env.From]
	if mem == nil {
		m.mu.Unlock()
		m.log.Debug("gossip: claim from a node that is not a member (yet)", "node", env.From, "host", env.Host)
		return
	}
	if mem.Addr != env.Addr {
		m.mu.Unlock()
		m.reject(env, fmt.Errorf("it claims address %s but the mesh knows %s at %s", env.Addr, env.From, mem.Addr))
		return
	}
	c := mem.Claim
	if env.Inc == c.Inc && env.Seq <= c.Seq {
		// An older claim of the same process: UDP reordered it, or it is
		// replayed. Either way it says nothing new.
		m.mu.Unlock()
		m.log.Debug("gossip: an older claim ignored", "node", env.From, "seq", env.Seq, "last", c.Seq)
		return
	}
	if c.Inc != "" && env.Inc != c.Inc && !env.At.After(c.SentAt) {
		m.mu.Unlock()
		m.reject(env, fmt.Errorf("a claim of an earlier run (incarnation %s made at %s, the current one %s claimed at %s): replayed",
			env.Inc, env.At.UTC().Format(time.RFC3339), c.Inc, c.SentAt.UTC().Format(time.RFC3339)))
		return
	}
	news := c.Host != env.Host || c.Inc != env.Inc
	mem.Claim = Claim{Host: env.Host, At: time.Now(), Inc: env.Inc, Seq: env.Seq, SentAt: env.At}
	meta := mem.Meta.NovaHost
	m.mu.Unlock()
	if news {
		m.log.Info("gossip: member proved which host it speaks for", "node", env.From, "host", env.Host, "addr", env.Addr)
	}
	if c.Host != "" && c.Host != env.Host {
		m.log.Warn("gossip: member now proves another host", "node", env.From, "host", env.Host, "before", c.Host)
	}
	if meta != "" && meta != env.Host {
		m.log.Warn("gossip: member advertises one host and proves another; the proved one counts", "node", env.From, "advertised", meta, "proved", env.Host)
	}
}

// reject counts a dropped message and warns about it, once a minute per
// sender and kind (a flood must not flood the log).
func (m *Mesh) reject(env envelope, why error) {
	m.stats.rejected.Add(1)
	key := env.From + "/" + string(env.Type)
	m.mu.Lock()
	last, seen := m.rejectLogged[key]
	if !seen || time.Since(last) >= time.Minute {
		m.rejectLogged[key] = time.Now()
		if len(m.rejectLogged) > 4096 { // bounded: forget the oldest warnings
			for k, at := range m.rejectLogged {
				if time.Since(at) >= time.Minute {
					delete(m.rejectLogged, k)
				}
			}
		}
	} else {
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	m.log.Warn("gossip: message rejected", "type", string(env.Type), "from", env.From, "about", env.Node, "host", env.Host,
		"reason", why.Error(), "rejected_total", m.stats.rejected.Load())
}

// kickClaim makes an agent send its claim now.
func (m *Mesh) kickClaim() {
	if len(m.cfg.HostKey) == 0 {
		return
	}
	select {
	case m.claimKick <- struct{}{}:
	default:
	}
}

// claimLoop sends this agent's claim to the controllers every
// ClaimInterval, and at once when it joins or a controller appears.
func (m *Mesh) claimLoop() {
	defer m.bg.Done()
	t := time.NewTicker(m.cfg.ClaimInterval)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
		case <-m.claimKick:
		}
		if !m.joined.Load() {
			continue
		}
		env := m.newEnvelope(msgClaim, m.self)
		env.Addr = m.Addr()
		m.tellControllers(env)
	}
}
