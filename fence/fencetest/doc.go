// Package fencetest is the conformance suite that every fence driver's
// tests run against their backend (a simulator or a real BMC), so that the
// contract written on fence.Fencer is checked the same way for all of them.
//
// It owns the suite and small test helpers (a capturing logger, timeouts
// that scale on slow machines). It must never be imported by non-test code.
package fencetest
