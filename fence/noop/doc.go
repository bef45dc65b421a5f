// Package noop is the fencing agent that controls nothing: fencing.yaml's
// `agent: noop`, for hosts without a usable BMC whose operator accepts the
// risk.
//
// It owns only the warnings. It must never report a host as powered off
// (PowerState answers unknown), must never be chosen for a host that
// fencing.yaml does not explicitly mark noop, and must warn on every use that
// instances may be corrupted, because a "fenced" noop host may still be
// running and writing to the disks its instances are being rebuilt on.
package noop
