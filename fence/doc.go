// Package fence owns the power control of compute hosts: the Fencer
// interface that every driver (ipmi, redfish, bmh, noop) implements, the
// typed errors they return, and the registry that maps fencing.yaml entries
// to drivers.
//
// It must never decide whether to fence: that is the leader's job. It must
// never log or return a credential.
package fence
