package bmh_test

import (
	"context"
	"fmt"
	"log"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence/bmh/bmhtest"
	"github.com/ihaproject/iha/fence/fencetest"
)

// One control plane serves every test of the package (each test gets its
// own namespace): starting etcd and kube-apiserver costs seconds, and the
// first run on a machine builds kube-apiserver (minutes, then cached).
var shared struct {
	once sync.Once
	c    *bmhtest.Cluster
	err  error
	ns   atomic.Int64
}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.c.Stop() // by PID; nil-safe
	os.Exit(code)
}

// cluster returns the shared control plane, starting it on first use.
func cluster(t testing.TB) *bmhtest.Cluster {
	t.Helper()
	shared.once.Do(func() {
		start := time.Now()
		shared.c, shared.err = bmhtest.Start("", bmhtest.Options{
			Timeout: fencetest.Timeout(3 * time.Minute),
			Logf:    log.Printf,
		})
		if shared.err == nil {
			log.Printf("bmh tests: control plane up in %v", time.Since(start).Round(time.Millisecond))
		}
	})
	if shared.err != nil {
		t.Fatalf("start etcd + kube-apiserver: %v", shared.err)
	}
	return shared.c
}

// bmcCanary is the BMC password stored in each tenant's Secret: the
// fencing token must never be able to read it.
const bmcCanary = "bmc-canary-Zq81-never-readable"

// tenant creates a fresh namespace with the fencing accounts.
func tenant(t testing.TB, c *bmhtest.Cluster) *bmhtest.Tenant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(time.Minute))
	defer cancel()
	ns := fmt.Sprintf("metal3-%d", shared.ns.Add(1))
	tn, err := c.NewTenant(ctx, ns, bmcCanary)
	if err != nil {
		t.Fatalf("tenant %s: %v", ns, err)
	}
	return tn
}

// hostPort is the host:port of the API server URL.
func hostPort(t testing.TB, c *bmhtest.Cluster) string {
	t.Helper()
	u, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
