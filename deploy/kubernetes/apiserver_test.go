package kubernetes_test

import (
	"context"
	"log"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/fence/bmh"
	"github.com/ihaproject/iha/fence/bmh/bmhtest"
	"github.com/ihaproject/iha/fence/fencetest"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// One control plane (etcd + the kube-apiserver fence/bmh's tests build)
// serves the package's tests.
var shared struct {
	once sync.Once
	c    *bmhtest.Cluster
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.c.Stop() // by PID; nil-safe
	if ihaBin != "" {
		_ = os.RemoveAll(strings.TrimSuffix(ihaBin, "/iha"))
	}
	os.Exit(code)
}

func cluster(t *testing.T) *bmhtest.Cluster {
	t.Helper()
	shared.once.Do(func() {
		shared.c, shared.err = bmhtest.Start("", bmhtest.Options{Timeout: fencetest.Timeout(3 * time.Minute), Logf: log.Printf})
	})
	if shared.err != nil {
		t.Fatalf("start etcd + kube-apiserver: %v", shared.err)
	}
	return shared.c
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(d))
	t.Cleanup(cancel)
	return ctx
}

// ensureNamespace creates ns if it does not exist (for real: a dry-run
// of a namespaced object needs its namespace).
func ensureNamespace(t *testing.T, ctx context.Context, c *bmhtest.Cluster, ns string) {
	t.Helper()
	o := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
	_, err := c.Admin.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, o, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// applier applies objects with server-side apply, as `kubectl apply
// --server-side` does.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T, c *bmhtest.Cluster) *applier {
	t.Helper()
	cfg := c.Config(c.AdminToken())
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: c.Admin, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

func (a *applier) apply(ctx context.Context, o obj, defaultNS string, dryRun bool) error {
	u := &unstructured.Unstructured{Object: map[string]any(o)}
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	ns := u.GetNamespace()
	if ns == "" {
		ns = defaultNS
		u.SetNamespace(ns)
	}
	opts := metav1.ApplyOptions{FieldManager: "iha-manifests-test", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = a.dyn.Resource(m.Resource).Namespace(ns).Apply(ctx, u.GetName(), u, opts)
	return err
}

// TestManifestsAreAcceptedByARealAPIServer: every object of the base and
// of the example overlay passes a server-side dry-run apply against a
// real kube-apiserver (its validation, defaulting, admission and the
// BareMetalHost CRD), in the namespaces they name.
func TestManifestsAreAcceptedByARealAPIServer(t *testing.T) {
	c := cluster(t)
	ctx := ctxFor(t, 2*time.Minute)
	installMonitoringCRDs(t, ctx, c)
	a := newApplier(t, c)
	for _, dir := range append(layouts, "monitoring") {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			kinds := map[string]int{}
			for _, o := range objs {
				ns := o.namespace()
				if ns == "" {
					ns = "default"
				}
				ensureNamespace(t, ctx, c, ns)
				if err := a.apply(ctx, o, ns, true); err != nil {
					t.Errorf("%s %s/%s refused: %v", o.kind(), ns, o.name(), err)
					continue
				}
				kinds[o.kind()]++
			}
			t.Logf("accepted (dry run): %v", kinds)
			want := []string{"StatefulSet", "Service", "PodDisruptionBudget", "ServiceAccount"}
			if dir == "monitoring" {
				want = []string{"PodMonitor", "PrometheusRule"}
			}
			for _, k := range want {
				if kinds[k] == 0 {
					t.Errorf("no %s accepted", k)
				}
			}
		})
	}
	// A BareMetalHost as Metal3 writes it is served in the namespace the
	// Role names (the CRD is installed).
	role := find(t, render(t, "overlays/example"), "Role", "iha-fencing")
	ensureNamespace(t, ctx, c, role.namespace())
	host := obj{"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost", "metadata": map[string]any{"name": "compute-0", "namespace": role.namespace()},
		"spec": map[string]any{"online": true, "bmc": map[string]any{"address": "redfish+https://192.0.2.100/redfish/v1/Systems/1", "credentialsName": "bmc-secret"}}}
	if err := a.apply(ctx, host, role.namespace(), true); err != nil {
		t.Errorf("BareMetalHost refused: %v", err)
	}
}

// TestBMHRoleFencesAndNothingMore applies the overlay's ServiceAccount,
// Role and RoleBinding for real, mints a token of IHA's ServiceAccount and
// fences a BareMetalHost through the real bmh driver with it (the harness
// plays the baremetal-operator); the same token can read no Secret of the
// BareMetalHosts' namespace and no BareMetalHost elsewhere.
func TestBMHRoleFencesAndNothingMore(t *testing.T) {
	c := cluster(t)
	ctx := ctxFor(t, 2*time.Minute)
	a := newApplier(t, c)
	objs := render(t, "overlays/example")
	sts := find(t, objs, "StatefulSet", "iha-leader")
	sa := find(t, objs, "ServiceAccount", "iha-leader")
	role := find(t, objs, "Role", "iha-fencing")
	rb := find(t, objs, "RoleBinding", "iha-fencing")
	bmhNS, ihaNS := role.namespace(), sts.namespace()
	for _, ns := range []string{bmhNS, ihaNS} {
		ensureNamespace(t, ctx, c, ns)
	}
	for _, o := range []obj{sa, role, rb} {
		if err := a.apply(ctx, o, "", false); err != nil {
			t.Fatalf("apply %s %s: %v", o.kind(), o.name(), err)
		}
	}
	tr := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
		"metadata": map[string]any{"name": sa.name()}, "spec": map[string]any{"expirationSeconds": int64(3600)}}}
	got, err := c.Admin.Resource(schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}).Namespace(ihaNS).
		Create(ctx, tr, metav1.CreateOptions{}, "token")
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	token, _, _ := unstructured.NestedString(got.Object, "status", "token")

	const name = "compute-7"
	if err := c.CreateBMH(ctx, bmhNS, name, true); err != nil {
		t.Fatal(err)
	}
	op := c.StartOperator(bmhNS, 200*time.Millisecond)
	t.Cleanup(op.Stop)
	f, err := bmh.NewWithOptions(config.FenceHost{Name: name + ".example.com", Agent: config.AgentBMH, Host: name, Namespace: bmhNS,
		Token: secret.New(token), APIURL: c.URL, CAFile: c.CAFile, Timeout: fencetest.Timeout(30 * time.Second)},
		fence.Settings{}, nil, bmh.Options{PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.PowerOff(ctx); err != nil {
		t.Fatalf("power off with the Role's token: %v", err)
	}
	if st, err := f.PowerState(ctx); err != nil || st != fence.PowerOff {
		t.Fatalf("power state %v, %v; want off", st, err)
	}
	if on, _, _ := c.PoweredOn(ctx, bmhNS, name); on {
		t.Fatal("the BareMetalHost is still powered on")
	}

	dc, err := dynamic.NewForConfig(c.Config(token))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Resource(bmhtest.SecretResource).Namespace(bmhNS).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the fencing token lists Secrets of %s: %v", bmhNS, err)
	}
	if _, err := dc.Resource(bmhtest.BMHResource).Namespace(ihaNS).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the fencing token lists BareMetalHosts of %s: %v", ihaNS, err)
	}
	del := dc.Resource(bmhtest.BMHResource).Namespace(bmhNS).Delete(ctx, name, metav1.DeleteOptions{})
	if !apierrors.IsForbidden(del) {
		t.Errorf("the fencing token may delete a BareMetalHost: %v", del)
	}
}

// installMonitoringCRDs installs the Prometheus operator's PodMonitor and
// PrometheusRule kinds (their schemas kept open: the operator validates the
// content, promtool the rules) and waits until they are served.
func installMonitoringCRDs(t *testing.T, ctx context.Context, c *bmhtest.Cluster) {
	t.Helper()
	crds := c.Admin.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, k := range []struct{ kind, plural string }{{"PodMonitor", "podmonitors"}, {"PrometheusRule", "prometheusrules"}} {
		open := map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
		crd := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": k.plural + ".monitoring.coreos.com"},
			"spec": map[string]any{"group": "monitoring.coreos.com", "scope": "Namespaced",
				"names": map[string]any{"kind": k.kind, "listKind": k.kind + "List", "plural": k.plural, "singular": strings.ToLower(k.kind)},
				"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "properties": map[string]any{"spec": open}}}}}}}}
		if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("CRD %s: %v", k.plural, err)
		}
		gvr := schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: k.plural}
		for {
			_, err := c.Admin.Resource(gvr).Namespace("default").List(ctx, metav1.ListOptions{})
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s not served: %v", k.plural, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
