// Package kdump owns the fence_kdump wire format and the Notice that IHA
// relays through the gossip mesh when a compute is writing a crash dump.
//
// fence_kdump_send (fence-agents) sends, from the kdump kernel of a crashed
// host, an 8-byte UDP datagram every 10 s to port 7410: uint32 magic
// 0x1B302A40 then uint32 version 1, both in the sender's host byte order
// (40 2a 30 1b 01 00 00 00 on x86-64). Decode reads it as InstanceHA does:
// at least 8 bytes starting with the magic in either byte order; the version
// and any appended bytes are reported, not checked (variants of the sender
// exist). A short packet or a wrong magic is a sentinel error, so a receiver
// can count drops by reason.
//
// A Notice is what one agent observed ("host H at address A sent kdump packets
// at time T"); its encoding is versioned JSON bounded to MaxNoticeSize bytes.
//
// This package must never do I/O, resolve names or hold state: it parses and
// encodes bytes, and every function is safe for concurrent use. Packets are
// unauthenticated (anyone on the network can send them); deciding what a
// notice means is the leader's job.
package kdump
