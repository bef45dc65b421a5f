// Package contract is the Nova behaviour IHA relies on, written as a test
// suite that runs unchanged against novasim and against a real Nova (Zed).
//
// It owns the facts (each a subtest named after it) and talks plain
// net/http, so that neither gophercloud nor the simulator can hide a
// difference. It must never reach past the Harness: servers are created
// through the API (pinned with availability_zone "nova:HOST", networks
// "none"), and computes are stopped and started only through the harness.
// Every server it creates is deleted, and every service it changes is
// restored, in t.Cleanup.
package contract
