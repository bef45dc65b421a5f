// Package testaddr hands tests loopback addresses for the servers they
// start. A port found free by listening on 127.0.0.1:0 and closing may be
// handed out again by the kernel before the process it was meant for binds
// it (CI saw raft bootstrap refuse "found duplicate address in
// configuration"), so the ports handed out are remembered for the life of
// the test binary and never repeated.
package testaddr

import (
	"net"
	"sync"
	"testing"
)

var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// Loopback returns "127.0.0.1:PORT" with a TCP port that was free and has
// not been returned before in this binary.
func Loopback(t testing.TB) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 1000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr
		}
	}
	t.Fatal("testaddr: no fresh loopback port in 1000 tries")
	return ""
}
