// Package heartbeat owns the wire format of InstanceHA's compute heartbeat
// (HBV2, sent by edpm-ansible's instanceha-heartbeat timer) and its HMAC keys.
//
// A packet is: uint32 magic 0x48425632 ("HBV2"), uint64 Unix seconds, both in
// network byte order, the sender's host name in UTF-8, then the 32-byte
// HMAC-SHA256 of everything before it, under the current or the previous key
// (key rotation). Parse accepts exactly what InstanceHA accepts (behaviour
// R13.1–R13.2): at least 45 bytes, the magic, an HMAC that verifies under a
// loaded key (no key: nothing is accepted), a timestamp from 120 s before to
// 60 s after the receiver's clock, and a host name of 1–64 characters of
// letters, digits, dots, dashes and underscores, reported cut at its first
// dot (InstanceHA's short name). Each rejection is a sentinel error so that a
// receiver counts them by reason.
//
// Keys are hex strings in files (HEARTBEAT_HMAC_KEY_PATH and
// HEARTBEAT_HMAC_KEY_PREVIOUS_PATH); LoadKeys reads them. Key material never
// appears in an error or a log.
//
// This package parses, encodes and reads key files; it never touches the
// network or holds state. Its functions are safe for concurrent use.
package heartbeat
