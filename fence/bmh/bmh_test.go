package bmh_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/bmh"
	"github.com/ihaproject/iha/fence/bmh/bmhtest"
	"github.com/ihaproject/iha/fence/fencetest"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// wrongToken is a canary: a bearer token the API server does not know.
const wrongToken = "wrong-token-canary-7f3e9a1c"

var hostSeq atomic.Int64

// backend drives one BareMetalHost as the baremetal-operator and the admin
// would, for the conformance suite.
type backend struct {
	t     testing.TB
	c     *bmhtest.Cluster
	ns    string
	name  string
	proxy *bmhtest.SlowProxy
}

func (b backend) PowerStateOf() fence.PowerState {
	ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(30*time.Second))
	defer cancel()
	on, ok, err := b.c.PoweredOn(ctx, b.ns, b.name)
	switch {
	case err != nil:
		b.t.Errorf("read BareMetalHost %s: %v", b.name, err)
		return fence.PowerUnknown
	case !ok:
		return fence.PowerUnknown
	case on:
		return fence.PowerOn
	}
	return fence.PowerOff
}

func (b backend) SetPower(p fence.PowerState) {
	ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(30*time.Second))
	defer cancel()
	if err := b.c.SetPower(ctx, b.ns, b.name, p == fence.PowerOn); err != nil {
		b.t.Fatalf("set power of %s: %v", b.name, err)
	}
}

func (b backend) MakeSlow(d time.Duration) { b.proxy.SetDelay(d) }

// newHost creates a powered-on BareMetalHost in tn and the fencing.yaml
// entry for it, reaching the API server through a SlowProxy.
func newHost(t *testing.T, c *bmhtest.Cluster, tn *bmhtest.Tenant, token string) (config.FenceHost, *bmhtest.SlowProxy) {
	t.Helper()
	name := fmt.Sprintf("compute-%d", hostSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(30*time.Second))
	defer cancel()
	if err := c.CreateBMH(ctx, tn.Namespace, name, true); err != nil {
		t.Fatalf("create BareMetalHost %s: %v", name, err)
	}
	proxy, err := bmhtest.NewSlowProxy(hostPort(t, c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	return config.FenceHost{
		Name:      name + ".compute.example.com",
		Agent:     config.AgentBMH,
		Host:      name,
		Namespace: tn.Namespace,
		Token:     secret.New(token),
		APIURL:    "https://" + proxy.Addr(),
		CAFile:    c.CAFile,
		Timeout:   fencetest.Timeout(30 * time.Second),
	}, proxy
}

func newFencer(t testing.TB, h config.FenceHost, logger *slog.Logger) *bmh.Fencer {
	t.Helper()
	f, err := bmh.NewWithOptions(h, fence.Settings{}, logger, bmh.Options{PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return f
}

func TestConformanceAgainstARealKubeAPIServer(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	op := c.StartOperator(tn.Namespace, 300*time.Millisecond)
	t.Cleanup(op.Stop)
	fencetest.Conformance(t, func(t *testing.T) fencetest.Target {
		h, proxy := newHost(t, c, tn, tn.Token)
		logger, logs := fencetest.Logger(t)
		good := newFencer(t, h, logger)
		bad := h
		bad.Token = secret.New(wrongToken)
		return fencetest.Target{
			Fencer:  good,
			BadAuth: newFencer(t, bad, logger),
			Host:    h.Name,
			Driver:  config.AgentBMH,
			Secrets: []string{tn.Token, wrongToken, bmcCanary},
			Logs:    logs,
			Backend: backend{t: t, c: c, ns: tn.Namespace, name: h.Host, proxy: proxy},
		}
	})
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(d))
	t.Cleanup(cancel)
	return ctx
}

// bmhObject reads the BareMetalHost as the admin.
func bmhObject(t *testing.T, c *bmhtest.Cluster, ns, name string) *unstructured.Unstructured {
	t.Helper()
	o, err := c.GetBMH(ctxFor(t, 30*time.Second), ns, name)
	if err != nil {
		t.Fatalf("get BareMetalHost %s: %v", name, err)
	}
	return o
}

func TestPowerOffSetsOnlineAndTheRebootAnnotationThenWaitsForTheOperator(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	const delay = 1500 * time.Millisecond
	op := c.StartOperator(tn.Namespace, delay)
	t.Cleanup(op.Stop)
	h, _ := newHost(t, c, tn, tn.Token)
	logger, logs := fencetest.Logger(t)
	f := newFencer(t, h, logger)

	start := time.Now()
	if err := f.PowerOff(ctxFor(t, time.Minute)); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	took := time.Since(start)
	if took < delay {
		t.Fatalf("PowerOff returned after %v, before the operator (delay %v) could have powered the host off", took, delay)
	}
	// The operator counts its patch once the API server answered it, which
	// may be just after the fencer saw the change in its watch.
	if !fencetest.WaitFor(10*time.Second, func() bool { return op.Patches() >= 1 }) {
		t.Fatal("PowerOff returned but the operator never wrote status.poweredOn")
	}
	o := bmhObject(t, c, tn.Namespace, h.Host)
	if got := o.GetAnnotations()[bmh.Annotation]; got != `{"mode": "hard"}` {
		t.Fatalf("annotation %s = %q, want {\"mode\": \"hard\"}", bmh.Annotation, got)
	}
	if online, ok, _ := unstructured.NestedBool(o.Object, "spec", "online"); !ok || online {
		t.Fatalf("spec.online = %v (present %v), want false", online, ok)
	}
	if on, _, _ := unstructured.NestedBool(o.Object, "status", "poweredOn"); on {
		t.Fatal("status.poweredOn still true")
	}
	// Other fields of the object are left alone (merge patch, not update).
	if addr, _, _ := unstructured.NestedString(o.Object, "spec", "bmc", "address"); addr == "" {
		t.Fatal("PowerOff lost spec.bmc.address")
	}
	fencetest.CheckNoSecret(t, []string{tn.Token, bmcCanary}, logs())
	t.Logf("PowerOff confirmed %v after the patch (operator delay %v)", took, delay)
}

func TestPowerOffFailsWithATimeoutWhenTheHostNeverReportsOff(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	op := c.StartOperator(tn.Namespace, 100*time.Millisecond)
	t.Cleanup(op.Stop)
	h, _ := newHost(t, c, tn, tn.Token)
	op.Hold(h.Host, true) // this BMC never obeys
	h.Timeout = 2 * time.Second
	logger, logs := fencetest.Logger(t)
	f := newFencer(t, h, logger)

	start := time.Now()
	err := f.PowerOff(ctxFor(t, time.Minute))
	took := time.Since(start)
	if !errors.Is(err, fence.ErrTimeout) {
		t.Fatalf("PowerOff = %v, want ErrTimeout", err)
	}
	var fe *fence.Error
	if !errors.As(err, &fe) || fe.Host != h.Name || fe.Op != fence.OpPowerOff || fe.Driver != "bmh" {
		t.Fatalf("error %#v does not name host, driver and operation", err)
	}
	if !strings.Contains(err.Error(), "still not off") || !strings.Contains(err.Error(), "status.poweredOn true") {
		t.Fatalf("error %q does not say what was seen", err)
	}
	if took < h.Timeout || took > h.Timeout+fencetest.Timeout(10*time.Second) {
		t.Fatalf("PowerOff gave up after %v with a %v timeout", took, h.Timeout)
	}
	if on, _, _ := c.PoweredOn(ctxFor(t, 30*time.Second), tn.Namespace, h.Host); !on {
		t.Fatal("the held host reads off")
	}
	fencetest.CheckNoSecret(t, []string{tn.Token}, logs(), err.Error())
}

func TestAHostWithoutStatusIsNeverReportedOff(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	ctx := ctxFor(t, time.Minute)
	// No operator and no status: a host the operator has not inspected.
	name := fmt.Sprintf("uninspected-%d", hostSeq.Add(1))
	o := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
		"metadata": map[string]any{"name": name, "namespace": tn.Namespace},
		"spec":     map[string]any{"online": true},
	}}
	if _, err := c.Admin.Resource(bmhtest.BMHResource).Namespace(tn.Namespace).Create(ctx, o, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h := config.FenceHost{Name: name, Agent: "bmh", Host: name, Namespace: tn.Namespace,
		Token: secret.New(tn.Token), APIURL: c.URL, CAFile: c.CAFile, Timeout: time.Second}
	logger, _ := fencetest.Logger(t)
	f := newFencer(t, h, logger)
	if st, err := f.PowerState(ctx); err != nil || st != fence.PowerUnknown {
		t.Fatalf("PowerState = %v, %v; want unknown", st, err)
	}
	if err := f.PowerOff(ctx); !errors.Is(err, fence.ErrTimeout) || !strings.Contains(err.Error(), "no status.poweredOn") {
		t.Fatalf("PowerOff = %v, want ErrTimeout saying there is no status.poweredOn", err)
	}
}

func TestPowerOnRemovesTheAnnotationAndTheOperatorPowersTheHostOn(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	op := c.StartOperator(tn.Namespace, 200*time.Millisecond)
	t.Cleanup(op.Stop)
	h, _ := newHost(t, c, tn, tn.Token)
	logger, _ := fencetest.Logger(t)
	f := newFencer(t, h, logger)
	ctx := ctxFor(t, time.Minute)
	if err := f.PowerOff(ctx); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	if err := f.PowerOn(ctx); err != nil {
		t.Fatalf("PowerOn: %v", err)
	}
	o := bmhObject(t, c, tn.Namespace, h.Host)
	if _, has := o.GetAnnotations()[bmh.Annotation]; has {
		t.Fatalf("annotation %s still present after PowerOn", bmh.Annotation)
	}
	if online, _, _ := unstructured.NestedBool(o.Object, "spec", "online"); !online {
		t.Fatal("spec.online still false after PowerOn")
	}
	if !fencetest.WaitFor(30*time.Second, func() bool {
		st, err := f.PowerState(ctx)
		return err == nil && st == fence.PowerOn
	}) {
		t.Fatal("the operator never powered the host back on")
	}
}

func TestAnotherRebootAnnotationKeepsTheHostOffAfterPowerOn(t *testing.T) {
	// Metal3 keeps a host off while any reboot.metal3.io annotation is
	// present: IHA removes only its own.
	c := cluster(t)
	tn := tenant(t, c)
	op := c.StartOperator(tn.Namespace, 100*time.Millisecond)
	t.Cleanup(op.Stop)
	h, _ := newHost(t, c, tn, tn.Token)
	ctx := ctxFor(t, time.Minute)
	other := []byte(`{"metadata":{"annotations":{"reboot.metal3.io/remediation":"{\"mode\": \"hard\"}"}}}`)
	if _, err := c.Admin.Resource(bmhtest.BMHResource).Namespace(tn.Namespace).Patch(ctx, h.Host, "application/merge-patch+json", other, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	logger, _ := fencetest.Logger(t)
	f := newFencer(t, h, logger)
	if err := f.PowerOff(ctx); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	if err := f.PowerOn(ctx); err != nil {
		t.Fatalf("PowerOn: %v", err)
	}
	o := bmhObject(t, c, tn.Namespace, h.Host)
	if _, has := o.GetAnnotations()["reboot.metal3.io/remediation"]; !has {
		t.Fatal("PowerOn removed someone else's reboot annotation")
	}
	// The operator's delay is 100 ms: the host must stay off well beyond it.
	if fencetest.WaitFor(time.Second, func() bool {
		st, _ := f.PowerState(ctx)
		return st == fence.PowerOn
	}) {
		t.Fatal("the host came on while another reboot annotation was present")
	}
}

func TestATokenWhoseRoleLacksPatchCannotFence(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	op := c.StartOperator(tn.Namespace, 100*time.Millisecond)
	t.Cleanup(op.Stop)
	h, _ := newHost(t, c, tn, tn.ReadOnlyToken)
	logger, logs := fencetest.Logger(t)
	f := newFencer(t, h, logger)
	ctx := ctxFor(t, time.Minute)

	if st, err := f.PowerState(ctx); err != nil || st != fence.PowerOn {
		t.Fatalf("PowerState with get allowed = %v, %v; want on", st, err)
	}
	start := time.Now()
	for _, call := range []struct {
		op  string
		run func(context.Context) error
	}{{fence.OpPowerOff, f.PowerOff}, {fence.OpPowerOn, f.PowerOn}} {
		err := call.run(ctx)
		var fe *fence.Error
		if !errors.Is(err, fence.ErrAuth) || !errors.As(err, &fe) || fe.Op != call.op {
			t.Fatalf("%s with a read-only token = %v, want ErrAuth", call.op, err)
		}
		if !strings.Contains(err.Error(), "forbidden") {
			t.Fatalf("error %q does not say forbidden", err)
		}
		fencetest.CheckNoSecret(t, []string{tn.ReadOnlyToken}, err.Error())
	}
	if took := time.Since(start); took > fencetest.Timeout(5*time.Second) {
		t.Fatalf("refused calls took %v: a 403 must not be retried", took)
	}
	o := bmhObject(t, c, tn.Namespace, h.Host)
	if _, has := o.GetAnnotations()[bmh.Annotation]; has {
		t.Fatal("a refused PowerOff left the annotation")
	}
	fencetest.CheckNoSecret(t, []string{tn.ReadOnlyToken}, logs())
}

func TestTheFencingTokenCannotReadTheBMCSecret(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	ctx := ctxFor(t, time.Minute)
	dc, err := dynamic.NewForConfig(c.Config(tn.Token))
	if err != nil {
		t.Fatal(err)
	}
	secrets := dc.Resource(bmhtest.SecretResource).Namespace(tn.Namespace)
	_, err = secrets.Get(ctx, tn.SecretName, metav1.GetOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("get Secret %s with the fencing token = %v, want 403 forbidden", tn.SecretName, err)
	}
	if _, err := secrets.List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list Secrets with the fencing token = %v, want 403 forbidden", err)
	}
	// The admin can read it: the 403 is RBAC, not a missing Secret.
	s, err := c.Admin.Resource(bmhtest.SecretResource).Namespace(tn.Namespace).Get(ctx, tn.SecretName, metav1.GetOptions{})
	if err != nil || s.GetName() != tn.SecretName {
		t.Fatalf("admin get Secret = %v", err)
	}
	// Nor may it touch other namespaces' hosts.
	other := tenant(t, c)
	if _, err := dc.Resource(bmhtest.BMHResource).Namespace(other.Namespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list BareMetalHosts of another namespace = %v, want 403", err)
	}
}

func TestAMissingBareMetalHostIsNamed(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	h := config.FenceHost{Name: "compute-ghost", Agent: "bmh", Host: "ghost", Namespace: tn.Namespace,
		Token: secret.New(tn.Token), APIURL: c.URL, CAFile: c.CAFile}
	logger, _ := fencetest.Logger(t)
	f := newFencer(t, h, logger)
	ctx := ctxFor(t, time.Minute)
	want := "no BareMetalHost ghost in namespace " + tn.Namespace
	for _, run := range []func(context.Context) error{f.PowerOff, f.PowerOn, func(ctx context.Context) error { _, err := f.PowerState(ctx); return err }} {
		err := run(ctx)
		if !errors.Is(err, bmh.ErrNotFound) || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want %q", err, want)
		}
		if errors.Is(err, fence.ErrAuth) || errors.Is(err, fence.ErrUnreachable) {
			t.Fatalf("not found is classed as %v", err)
		}
	}
}

func TestAnAPIServerWithoutTheCRDIsNamed(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	// A path prefix the API server does not serve answers 404 with no
	// object named, as a server without the Metal3 CRD does. (With the
	// fencing token RBAC would refuse the unknown path first: use the
	// admin's.)
	h := config.FenceHost{Name: "compute-x", Agent: "bmh", Host: "x", Namespace: tn.Namespace,
		Token: secret.New(c.AdminToken()), APIURL: c.URL + "/not-here", CAFile: c.CAFile}
	logger, _ := fencetest.Logger(t)
	_, err := newFencer(t, h, logger).PowerState(ctxFor(t, time.Minute))
	if !errors.Is(err, bmh.ErrNotFound) || !strings.Contains(err.Error(), "does not serve baremetalhosts.metal3.io (is the Metal3 BareMetalHost CRD installed?)") {
		t.Fatalf("err = %v, want the CRD named", err)
	}
	fencetest.CheckNoSecret(t, []string{c.AdminToken()}, err.Error())
}

func TestAnUnreachableAPIServerIsReportedAfterTheTimeout(t *testing.T) {
	dir := t.TempDir()
	ca := writeTestCA(t, dir)
	h := config.FenceHost{Name: "compute-0", Agent: "bmh", Host: "compute-0", Namespace: "metal3",
		Token: secret.New(wrongToken), APIURL: "https://127.0.0.1:1", CAFile: ca, Timeout: 1500 * time.Millisecond}
	logger, logs := fencetest.Logger(t)
	f := newFencer(t, h, logger)
	for _, run := range []func(context.Context) error{f.PowerOff, f.PowerOn, func(ctx context.Context) error { _, err := f.PowerState(ctx); return err }} {
		start := time.Now()
		err := run(ctxFor(t, time.Minute))
		took := time.Since(start)
		if !errors.Is(err, fence.ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
		if took < h.Timeout || took > h.Timeout+fencetest.Timeout(5*time.Second) {
			t.Fatalf("gave up after %v with a %v timeout (retries should fill it)", took, h.Timeout)
		}
		fencetest.CheckNoSecret(t, []string{wrongToken}, err.Error())
	}
	if !strings.Contains(logs(), "retrying") {
		t.Fatal("no retry was logged")
	}
	fencetest.CheckNoSecret(t, []string{wrongToken}, logs())
}

func TestAnAPIServerWithAnUntrustedCertificateIsNotRetried(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	other := writeTestCA(t, t.TempDir())
	h := config.FenceHost{Name: "compute-0", Agent: "bmh", Host: "compute-0", Namespace: tn.Namespace,
		Token: secret.New(tn.Token), APIURL: c.URL, CAFile: other, Timeout: fencetest.Timeout(20 * time.Second)}
	logger, _ := fencetest.Logger(t)
	start := time.Now()
	err := newFencer(t, h, logger).PowerOff(ctxFor(t, time.Minute))
	if !errors.Is(err, fence.ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want ErrUnreachable naming the certificate", err)
	}
	if took := time.Since(start); took > h.Timeout/2 {
		t.Fatalf("took %v: a TLS verification failure must not be retried", took)
	}
	fencetest.CheckNoSecret(t, []string{tn.Token}, err.Error())
}

func TestManyHostsAreFencedConcurrently(t *testing.T) {
	c := cluster(t)
	tn := tenant(t, c)
	const delay = time.Second
	op := c.StartOperator(tn.Namespace, delay)
	t.Cleanup(op.Stop)
	const n = 10
	fencers := make([]*bmh.Fencer, n)
	for i := range fencers {
		h, _ := newHost(t, c, tn, tn.Token)
		logger, _ := fencetest.Logger(t)
		fencers[i] = newFencer(t, h, logger)
	}
	ctx := ctxFor(t, 2*time.Minute)
	start := time.Now()
	errs := make(chan error, n)
	for _, f := range fencers {
		go func() { errs <- f.PowerOff(ctx) }()
	}
	for range fencers {
		if err := <-errs; err != nil {
			t.Fatalf("PowerOff: %v", err)
		}
	}
	took := time.Since(start)
	// Sequential fencing would take at least n × delay.
	if took >= n*delay/2 {
		t.Fatalf("%d hosts took %v with a %v operator delay: not concurrent", n, took, delay)
	}
	t.Logf("%d hosts fenced in %v (operator delay %v)", n, took, delay)
}

// writeTestCA writes a self-signed CA certificate unrelated to the API
// server's.
func writeTestCA(t *testing.T, dir string) string {
	t.Helper()
	p, err := bmhtest.WriteCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
