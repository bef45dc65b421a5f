package leader

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/nova"
)

// How a kdump notice reached this controller (KdumpNotice.Via).
const (
	// KdumpViaAgent: relayed through the gossip mesh by the member named in
	// Relayer, which mapped the packet's source address to the host.
	KdumpViaAgent = "agent"
	// KdumpViaListener: this controller's own fence_kdump socket
	// (KDUMP_LISTEN) received the packet: From is the address the kernel
	// saw, not a claim.
	KdumpViaListener = "listener"
)

// How a receiver tied a packet's source address to a host
// (KdumpNotice.MappedBy; kdump.Notice.MappedBy on the wire).
const (
	KdumpMappedByMesh = "mesh" // the address a mesh member advertises
	KdumpMappedByMap  = "map"  // kdump_hosts in the relaying agent's agent.yaml
	KdumpMappedByDNS  = "dns"  // reverse DNS, cut at the first dot (InstanceHA)
)

// KdumpNotice is a fence_kdump notice for a host: it crashed and its kdump
// kernel is writing a dump. It is a claim until checked (Reconciler.kdumpFor):
// only a notice from an address that belongs to the host, received through
// an authenticated channel, withholds a power-off.
type KdumpNotice struct {
	Host string
	From string // source address of the packet
	// Via says how it reached this controller (KdumpViaAgent or
	// KdumpViaListener).
	Via string
	At  time.Time // when this controller received it
	// Relayer is the mesh node that relayed it (Via agent).
	Relayer string
	// MappedBy says how the receiver tied From to Host ("" from an agent
	// too old to say).
	MappedBy string
	// Untrusted, when set, says why the channel it came through cannot be
	// believed (a mesh without a keyring, a relayer that is not a live
	// member): the notice is rejected whatever it says.
	Untrusted string
}

func (n KdumpNotice) source() string {
	if n.Via == KdumpViaListener {
		return n.From + " (this controller's KDUMP_LISTEN)"
	}
	if n.Relayer != "" {
		return n.From + " (relayed by " + n.Relayer + ")"
	}
	return n.From
}

// KdumpLog keeps the recent kdump notices of each host, one per channel
// (relayer or listener) and source address, so that a flood of forged
// notices cannot hide a genuine one. Every controller fills its own from the
// mesh and its UDP listener (agents relay each notice to every controller),
// so a new leader has them too. Safe for concurrent use.
type KdumpLog struct {
	mu   sync.Mutex
	last map[string]map[string]KdumpNotice // host → channel+source → latest
}

// NewKdumpLog returns an empty log.
func NewKdumpLog() *KdumpLog { return &KdumpLog{last: map[string]map[string]KdumpNotice{}} }

// maxKdumpHosts bounds the log; beyond it notices older than an hour are
// forgotten. maxKdumpSources bounds the channels kept per host (the oldest
// goes).
const (
	maxKdumpHosts   = 4096
	maxKdumpSources = 16
)

// Record stores n as the latest notice of its host from its channel.
func (k *KdumpLog) Record(n KdumpNotice) {
	if k == nil || n.Host == "" {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.last) >= maxKdumpHosts {
		for h, byKey := range k.last {
			newest := time.Time{}
			for _, o := range byKey {
				newest = maxTime(newest, o.At)
			}
			if n.At.Sub(newest) > time.Hour {
				delete(k.last, h)
			}
		}
	}
	byKey := k.last[n.Host]
	if byKey == nil {
		byKey = map[string]KdumpNotice{}
		k.last[n.Host] = byKey
	}
	key := n.Via + "/" + n.Relayer + "/" + n.From
	if o, ok := byKey[key]; ok && o.At.After(n.At) {
		return
	}
	if _, ok := byKey[key]; !ok && len(byKey) >= maxKdumpSources {
		oldest := ""
		for kk, o := range byKey {
			if oldest == "" || o.At.Before(byKey[oldest].At) {
				oldest = kk
			}
		}
		delete(byKey, oldest)
	}
	byKey[key] = n
}

// Notices returns the notices for the Nova host host, newest first: those
// named host, and, for a host named by a FQDN, those named by its short
// name (reverse DNS is cut at the first dot, as InstanceHA does, so a
// notice mapped that way names c1 for Nova's c1.example.com).
func (k *KdumpLog) Notices(host string) []KdumpNotice {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []KdumpNotice
	for _, name := range kdumpNames(host) {
		for _, n := range k.last[name] {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.After(out[j].At) })
	return out
}

// Last returns host's latest notice, whatever it is worth.
func (k *KdumpLog) Last(host string) (KdumpNotice, bool) {
	ns := k.Notices(host)
	if len(ns) == 0 {
		return KdumpNotice{}, false
	}
	return ns[0], true
}

// kdumpNames are the names a notice for Nova host h may carry.
func kdumpNames(h string) []string {
	if s := config.ShortName(h); s != h {
		return []string{h, s}
	}
	return []string{h}
}

// AddrResolver is the reverse-DNS lookup the leader needs to check a
// notice's source address; net.DefaultResolver satisfies it.
type AddrResolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// kdumpCheck remembers reverse-DNS answers for a term.
type kdumpCheck struct {
	resolver AddrResolver
	mu       sync.Mutex
	dns      map[string]dnsAnswer
}

type dnsAnswer struct {
	names []string
	at    time.Time
}

func (c *kdumpCheck) lookup(ctx context.Context, ip string, now time.Time) []string {
	if c.resolver == nil {
		return nil
	}
	c.mu.Lock()
	a, ok := c.dns[ip]
	c.mu.Unlock()
	if ok && now.Sub(a.at) < time.Minute {
		return a.names
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	names, err := c.resolver.LookupAddr(lctx, ip)
	if err != nil {
		names = nil
	}
	c.mu.Lock()
	if c.dns == nil {
		c.dns = map[string]dnsAnswer{}
	}
	c.dns[ip] = dnsAnswer{names: names, at: now}
	c.mu.Unlock()
	return names
}

// kdumpAddrOwner says whether ip belongs to the Nova host host, and how:
// the address its agent advertises in the mesh (when no other compute
// advertises it), or its reverse DNS (InstanceHA's rule: the name cut at the
// first dot equals the host's short name). "" means neither.
func (r *Reconciler) kdumpAddrOwner(ctx context.Context, ip, host string, now time.Time) (how, detail string) {
	var owners []string
	for h, m := range r.snap {
		if mip := addrIP(m.Addr); mip != "" && mip == ip {
			owners = append(owners, h)
		}
	}
	sort.Strings(owners)
	switch {
	case len(owners) == 1 && owners[0] == host:
		return KdumpMappedByMesh, ""
	case len(owners) == 1:
		detail = "the mesh says " + ip + " is " + owners[0] + "'s agent"
	case len(owners) > 1:
		detail = ip + " is advertised by several agents (" + strings.Join(owners, ", ") + ")"
	}
	names := r.kdumpDNS.lookup(ctx, ip, now)
	for _, n := range names {
		if config.ShortName(strings.TrimSuffix(n, ".")) == config.ShortName(host) {
			return KdumpMappedByDNS, ""
		}
	}
	if len(names) > 0 {
		detail = strings.TrimPrefix(detail+"; ", "; ") + "its reverse DNS is " + strings.Join(names, ", ")
	} else {
		detail = strings.TrimPrefix(detail+"; ", "; ") + "no reverse DNS name"
	}
	return "", detail
}

func addrIP(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// vetKdump returns "" when n may withhold host's power-off, else why not.
// A notice counts only when it comes from an address that belongs to host
// and reached this controller through a channel that cannot be forged by a
// stranger:
//   - this controller's own KDUMP_LISTEN socket: From is the packet's real
//     source, and it must belong to host (mesh address or reverse DNS);
//   - a relay through the mesh by a live member of a keyring-encrypted mesh
//     (the adapter marks anything else Untrusted), whose mapping is one of
//     the agent's: the host's own advertised address or reverse DNS (both
//     checked here again), or the relayer's kdump_hosts (the operator's
//     configuration on an authenticated member, which this controller
//     cannot see).
//
// The mesh and Nova must still agree that the host failed (Judge): a notice
// alone never fails a host.
func (r *Reconciler) vetKdump(ctx context.Context, host string, n KdumpNotice, now time.Time) string {
	if n.Untrusted != "" {
		return n.Untrusted
	}
	if n.Via == KdumpViaAgent && n.MappedBy == KdumpMappedByMap {
		return ""
	}
	if n.Via != KdumpViaAgent && n.Via != KdumpViaListener {
		return fmt.Sprintf("notice arrived by an unknown channel %q", n.Via)
	}
	if ip := net.ParseIP(n.From); ip == nil {
		return fmt.Sprintf("source address %q is not an IP address", n.From)
	}
	how, detail := r.kdumpAddrOwner(ctx, n.From, host, now)
	if how == "" {
		return fmt.Sprintf("source address %s does not belong to %s: %s", n.From, host, detail)
	}
	return ""
}

// kdumpFor returns host's latest notice received within window that may
// withhold its power-off, and the ones that may not, with why.
func (r *Reconciler) kdumpFor(ctx context.Context, host string, now time.Time, window time.Duration) (ok KdumpNotice, found bool, rejected []rejectedNotice) {
	for _, n := range r.kdump.Notices(host) {
		if now.Sub(n.At) > window {
			break
		}
		if why := r.vetKdump(ctx, host, n, now); why != "" {
			rejected = append(rejected, rejectedNotice{n, why})
			continue
		}
		if !found {
			ok, found = n, true
		}
	}
	return ok, found, rejected
}

type rejectedNotice struct {
	KdumpNotice
	Why string
}

// EventKdumpNoticeRejected says a kdump notice was not believed: the host
// is judged, and fenced, as if it had not been sent.
const EventKdumpNoticeRejected = "KdumpNoticeRejected"

// reportRejectedKdump raises EventKdumpNoticeRejected once per host, source
// and reason while such notices keep coming (seen collects this cycle's).
func (r *Reconciler) reportRejectedKdump(ctx context.Context, host string, rej []rejectedNotice, seen map[string]bool) {
	for _, n := range rej {
		key := host + "|" + n.source() + "|" + n.Why
		if seen[key] {
			continue
		}
		seen[key] = true
		if r.kdumpRejected[key] {
			continue
		}
		msg := fmt.Sprintf("kdump notice for %s from %s rejected: %s; the host is judged, and fenced, as if it had sent none",
			host, n.source(), n.Why)
		r.log.Warn("kdump notice rejected", "host", host, "from", n.From, "via", n.Via, "relayer", n.Relayer, "reason", n.Why)
		r.event(ctx, host, EventKdumpNoticeRejected, msg, true)
	}
}

// vetKdumpNotices checks this cycle's kdump notices (CHECK_KDUMP): the
// accepted ones go to the verdict table, the rejected ones to an event.
func (r *Reconciler) vetKdumpNotices(ctx context.Context, svcs []nova.Service, now time.Time) {
	r.kdumpOK = map[string]KdumpNotice{}
	if !r.cfg.CheckKdump || r.kdump == nil {
		return
	}
	timeout := r.cfg.KdumpTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	seen := map[string]bool{}
	for _, s := range svcs {
		n, ok, rej := r.kdumpFor(ctx, s.Host, now, timeout)
		if ok {
			r.kdumpOK[s.Host] = n
		}
		r.reportRejectedKdump(ctx, s.Host, rej, seen)
	}
	r.kdumpRejected = seen
}
