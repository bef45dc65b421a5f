// Package redfishsim is an in-process Redfish BMC for tests and dev mode.
//
// It behaves like the widely used Redfish emulator described in
// docs/real-peers.md: the service root is unauthenticated and every
// other path needs basic auth (401 otherwise); ComputerSystem.Reset answers
// 204 and PowerState changes only after a delay, so clients must poll; a
// reset to the current state is accepted and changes nothing; there is no
// SessionService unless asked for; system ids are UUIDs and a system name in
// the URL answers 307 to the UUID URL; an unknown ResetType answers 501. As
// options it also behaves like real BMCs: 409 or 400 for ForceOff on a host
// that is already off (iDRAC), slow answers, a burst of N 5xx, HTTPS with a
// test CA, client certificates.
//
// Tests and dev mode drive it directly: read and set power, attach callbacks
// to power transitions (dev mode kills a simulated compute when its BMC
// powers it off), count requests.
//
// It owns only simulated state. It must never listen on anything but a
// loopback address, and never print the password it was configured with.
package redfishsim
