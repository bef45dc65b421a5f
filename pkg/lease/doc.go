// Package lease is the arithmetic and the wire format of watchdog
// self-fencing: the lease an armed compute holds from the Raft leader, the
// rule by which its agent keeps feeding its watchdog, and the time after
// which the leader may record the host as fenced because its watchdog has
// reset it.
//
// The contract, in one paragraph. An armed agent feeds its watchdog (timeout
// W) only while it holds a lease: a grant of L from the leader, counted on
// the agent's monotonic clock from the moment it *sent* the request that was
// granted, so it ends no later than L after the grant was committed. When it
// cannot renew, it asks its mesh peers whether they reach a controller, and
// keeps feeding beyond its lease only while more than half of all the lease
// holders (the count the leader gave it) say they do not (PeerVerdict): a
// control-plane outage must never reset every compute. The leader stops
// granting a host's lease the moment it opens a recovery record for it, and
// may call the host fenced when FencedAt says so: L + W + margin after the
// last grant it committed, and only while enough of the other holders have
// reached it without a break for the holders' rule never to have kept the
// host alive.
//
// What it owns: Params (the timings, derived from L), FencedAt and
// PeerVerdict (pure functions, table-tested), the request, grant, ticket
// and peer-answer types with their signatures. What it must never do: read
// a clock, a file or the network, or import anything of IHA but the
// standard library: both iha-agent and iha-leader link it.
package lease
