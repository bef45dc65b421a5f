package testaddr

import (
	"net"
	"testing"
)

func TestLoopbackNeverRepeatsAndIsBindable(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		a := Loopback(t)
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
	}
	a := Loopback(t)
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("the address handed out cannot be bound: %v", err)
	}
	_ = ln.Close()
}
