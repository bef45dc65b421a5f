package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/secret"
)

// selfSigned is a certificate for 127.0.0.1 and the pool that trusts it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	ca := testkit.NewCA(t, "iha-test CA")
	pool := ca.Pool()
	return &tls.Config{Certificates: []tls.Certificate{ca.TLSCertificate(t, "iha-test", "127.0.0.1")}, RootCAs: pool, MinVersion: tls.VersionTLS12}, pool
}

func serveTLS(t *testing.T, b Backend, cfg Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Backend = b
	ctx, cancel := context.WithCancel(context.Background())
	_, done, err := NewServer(cfg).Serve(ctx, ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

func TestTLSServesAndForwardsOverHTTPS(t *testing.T) {
	tlsCfg, pool := selfSigned(t)
	tok := secret.New(canaryRW)
	lead := newFake("leader", true)
	leadAddr := serveTLS(t, lead, Config{Token: tok, TLS: tlsCfg})
	fol := newFake("follower", false)
	fol.leaderAPI = leadAddr
	folAddr := serveTLS(t, fol, Config{Token: tok, TLS: tlsCfg})

	c := &Client{Addrs: []string{"https://" + folAddr}, Token: canaryRW, TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	if _, err := c.Mutate(context.Background(), MutRetry, "compute-1", ""); err != nil {
		t.Fatalf("mutation over https through the follower: %v", err)
	}
	if m := lead.muts(); len(m) != 1 || m[0].Kind != MutRetry {
		t.Fatalf("leader got %+v", m)
	}
	// Plain HTTP to a TLS listener is refused, not answered.
	plain := &Client{Addrs: []string{"http://" + folAddr}}
	if _, err := plain.Cluster(context.Background(), false); err == nil {
		t.Fatal("plain HTTP was answered by the TLS API")
	}
}

// FuzzRequests sends arbitrary paths, queries and bodies: the server never
// panics, never answers 5xx for bad input, and never echoes a token.
func FuzzRequests(f *testing.F) {
	for _, s := range []struct{ method, target, body string }{
		{"GET", "/v1/events?since=1&limit=5&host=compute-1", ""},
		{"GET", "/v1/events?limit=%zz", ""},
		{"GET", "/v1/hosts/compute-1?consistent=true", ""},
		{"POST", "/v1/hosts/compute-1/maintenance", `{"on":true,"reason":"x"}`},
		{"POST", "/v1/hosts/compute-1/confirm-fenced", `{"reason":"` + strings.Repeat("a", 600) + `"}`},
		{"POST", "/v1/pause", `{"reason":1}`},
		{"GET", "/v1/events/stream?since=x", ""},
		{"GET", "/v1/gate/..", ""},
	} {
		f.Add(s.method, s.target, s.body)
	}
	h := NewServer(Config{Backend: newFake("n1", true), Token: secret.New(canaryRW)})
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if method != "GET" && method != "POST" {
			method = "GET"
		}
		if !strings.HasPrefix(target, "/") || strings.Contains(target, "/stream") {
			return // the stream never ends by itself; it has its own test
		}
		req, err := http.NewRequest(method, "http://x"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+canaryRW)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q %q: %d %s", method, target, body, rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), canaryRW) {
			t.Fatalf("token echoed: %s", rec.Body)
		}
	})
}
