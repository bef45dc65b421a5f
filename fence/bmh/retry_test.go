package bmh_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/bmh"
	"github.com/ihaproject/iha/fence/fencetest"
)

// flakyFront is an HTTPS reverse proxy in front of the real API server
// that answers 503 to the first `fail` requests (every request when fail
// is negative).
func flakyFront(t *testing.T, target, targetCA string, fail int64) (frontURL, caFile string, served *atomic.Int64) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(targetCA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	served = &atomic.Int64{}
	var failed atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail < 0 || failed.Add(1) <= fail {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd leader changed","reason":"ServiceUnavailable","code":503}`))
			return
		}
		served.Add(1)
		rp.ServeHTTP(w, r)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "front-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile, served
}

func TestServiceUnavailableIsRetriedUntilTheAPIServerAnswers(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	op := c.StartOperator(tn.Namespace, 100*time.Millisecond)
	t.Cleanup(op.Stop)
	h, _ := newHost(t, c, tn, tn.Token)
	h.APIURL, h.CAFile, _ = flakyFront(t, c.URL, c.CAFile, 3)
	logger, logs := fencetest.Logger(t)
	f, err := bmh.NewWithOptions(h, fence.Settings{}, logger, bmh.Options{
		PollInterval: 100 * time.Millisecond, Backoff: []time.Duration{10 * time.Millisecond, 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.PowerOff(ctxFor(t, time.Minute)); err != nil {
		t.Fatalf("PowerOff through three 503s: %v", err)
	}
	if n := strings.Count(logs(), "retrying"); n < 3 {
		t.Fatalf("%d retries logged, want 3:\n%s", n, logs())
	}
	if on, _, _ := c.PoweredOn(ctxFor(t, 30*time.Second), tn.Namespace, h.Host); on {
		t.Fatal("host still on")
	}
	fencetest.CheckNoSecret(t, []string{tn.Token}, logs())
}

func TestAnAPIServerThatKeepsFailingIsUnreachableAfterTheTimeout(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	h, _ := newHost(t, c, tn, tn.Token)
	var served *atomic.Int64
	h.APIURL, h.CAFile, served = flakyFront(t, c.URL, c.CAFile, -1)
	h.Timeout = 1500 * time.Millisecond
	logger, logs := fencetest.Logger(t)
	f := newFencer(t, h, logger)
	start := time.Now()
	err := f.PowerOff(ctxFor(t, time.Minute))
	took := time.Since(start)
	if !errors.Is(err, fence.ErrUnreachable) || !strings.Contains(err.Error(), "etcd leader changed") {
		t.Fatalf("err = %v, want ErrUnreachable with the server's message", err)
	}
	if took < h.Timeout || took > h.Timeout+fencetest.Timeout(5*time.Second) {
		t.Fatalf("gave up after %v with a %v timeout", took, h.Timeout)
	}
	if served.Load() != 0 {
		t.Fatal("a request reached the API server")
	}
	fencetest.CheckNoSecret(t, []string{tn.Token}, err.Error(), logs())
}
