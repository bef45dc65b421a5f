package testkit

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFactorReadsTheScaleOrTheDefault(t *testing.T) {
	for _, c := range []struct {
		env  string
		def  float64
		want float64
	}{{"", 2, 2}, {"3", 2, 3}, {"1.5", 1, 1.5}, {"0", 2, 2}, {"-1", 1, 1}, {"slow", 2, 2}} {
		t.Setenv(ScaleEnv, c.env)
		if got := Factor(c.def); got != c.want {
			t.Errorf("%s=%q, default %v: %v, want %v", ScaleEnv, c.env, c.def, got, c.want)
		}
	}
	t.Setenv(ScaleEnv, "3")
	if got := Scaler(2)(time.Second); got != 3*time.Second {
		t.Errorf("Scaler(2)(1s) with %s=3: %v", ScaleEnv, got)
	}
}

// failT records a Fatalf instead of ending the test.
type failT struct {
	testing.TB
	failed string
}

func (f *failT) Helper() {}
func (f *failT) Fatalf(format string, args ...any) {
	f.failed = format
	panic(f)
}

func TestWaitForPollsUntilTheConditionOrTheDeadline(t *testing.T) {
	n := 0
	WaitFor(t, time.Minute, "the third look", func() bool { n++; return n >= 3 })
	if n != 3 {
		t.Fatalf("looked %d times, want 3", n)
	}
	ft := &failT{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != any(ft) {
				panic(r)
			}
		}()
		WaitFor(ft, 30*time.Millisecond, "never", func() bool { return false })
	}()
	if ft.failed == "" {
		t.Fatal("a condition that never holds did not fail the test")
	}
}

func TestCAIssuesCertificatesItsPoolVerifies(t *testing.T) {
	ca := NewCA(t, "test CA")
	dir := t.TempDir()
	certFile, keyFile := ca.IssueFiles(t, dir, "ctl-1", "127.0.0.1", "localhost")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("usage %v: %v", usage, err)
		}
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Fatalf("IP SANs: %v", leaf.IPAddresses)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: NewCA(t, "other").Pool()}); err == nil {
		t.Fatal("another CA's pool verifies the certificate")
	}
	path := filepath.Join(dir, "ca.crt")
	WriteCA(t, path, "written")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || !c.IsCA || c.Subject.CommonName != "written" {
		t.Fatalf("CA file: %v %v", c, err)
	}
}

func TestWaitForStateReportsTheLastState(t *testing.T) {
	n := 0
	WaitForState(t, time.Minute, time.Millisecond, "the second look", func() (bool, string) { n++; return n >= 2, "looked" })
	if n != 2 {
		t.Fatalf("looked %d times, want 2", n)
	}
	ft := &failT{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != any(ft) {
				panic(r)
			}
		}()
		WaitForState(ft, 30*time.Millisecond, time.Millisecond, "never", func() (bool, string) { return false, "still down" })
	}()
	if ft.failed == "" {
		t.Fatal("a condition that never holds did not fail the test")
	}
}
