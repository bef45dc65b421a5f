//go:build lab

package scenarios

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// netnsClient is an HTTP client whose connections are made inside the
// network namespace ns (/run/netns/ns): on a LAB_CHAOS=1 lab the leaders
// listen on the mesh network, which the test's own namespace does not
// reach.
func netnsClient(ns string) *http.Client {
	tr := &http.Transport{DialContext: netnsDial(ns), DisableKeepAlives: true}
	return &http.Client{Timeout: 3 * time.Second * scale(), Transport: tr}
}

// netnsDial creates each socket on an OS thread that entered ns: a socket
// stays in the namespace it was created in. The thread goes back to the
// test's namespace afterwards; if it cannot, it stays locked and dies with
// its goroutine rather than serve other goroutines from the wrong
// namespace.
func netnsDial(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			home, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer home.Close()
			target, err := os.Open("/run/netns/" + ns)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer target.Close()
			if err := setns(target); err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, fmt.Errorf("enter netns %s: %w", ns, err)}
				return
			}
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if setns(home) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

func setns(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }
