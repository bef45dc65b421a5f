package bmhtest

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Tenant is a namespace set up as a Metal3 deployment with IHA fencing:
// ServiceAccounts with narrow Roles and their tokens, and a BMC credentials
// Secret.
type Tenant struct {
	Namespace string
	// Token is the fencing ServiceAccount's token: get, list, watch and
	// patch on baremetalhosts, nothing else.
	Token string
	// ReadOnlyToken may get, list and watch baremetalhosts but not patch.
	ReadOnlyToken string
	// SecretName is a BMC credentials Secret (key "password") that neither
	// token may read.
	SecretName string
}

// Fencing ServiceAccount and Role names.
const (
	FencingAccount  = "iha-fencing"
	ReadOnlyAccount = "iha-readonly"
)

// NewTenant creates namespace ns with the fencing and read-only
// ServiceAccounts, their Roles and RoleBindings, the Secret holding
// bmcPassword, and mints a token for each account (TokenRequest API). It
// returns once RBAC lets the fencing token list baremetalhosts.
func (c *Cluster) NewTenant(ctx context.Context, ns, bmcPassword string) (*Tenant, error) {
	a := c.Admin
	create := func(gvr schema.GroupVersionResource, ns string, obj map[string]any) error {
		_, err := a.Resource(gvr).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create %s: %w", gvr.Resource, err)
		}
		return nil
	}
	if err := create(namespaceResource, "", obj("v1", "Namespace", "", ns)); err != nil {
		return nil, err
	}
	secret := obj("v1", "Secret", ns, "bmc-credentials")
	secret["stringData"] = map[string]any{"username": "admin", "password": bmcPassword}
	if err := create(SecretResource, ns, secret); err != nil {
		return nil, err
	}
	t := &Tenant{Namespace: ns, SecretName: "bmc-credentials"}
	for _, acct := range []struct {
		name  string
		verbs []any
		token *string
	}{
		{FencingAccount, []any{"get", "list", "watch", "patch"}, &t.Token},
		{ReadOnlyAccount, []any{"get", "list", "watch"}, &t.ReadOnlyToken},
	} {
		if err := create(saResource, ns, obj("v1", "ServiceAccount", ns, acct.name)); err != nil {
			return nil, err
		}
		role := obj("rbac.authorization.k8s.io/v1", "Role", ns, acct.name)
		role["rules"] = []any{map[string]any{
			"apiGroups": []any{"metal3.io"}, "resources": []any{"baremetalhosts"}, "verbs": acct.verbs,
		}}
		if err := create(roleResource, ns, role); err != nil {
			return nil, err
		}
		rb := obj("rbac.authorization.k8s.io/v1", "RoleBinding", ns, acct.name)
		rb["roleRef"] = map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": acct.name}
		rb["subjects"] = []any{map[string]any{"kind": "ServiceAccount", "name": acct.name, "namespace": ns}}
		if err := create(roleBindingResouce, ns, rb); err != nil {
			return nil, err
		}
		tr := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
			// The dynamic client puts a subresource under the object's name.
			"metadata": map[string]any{"name": acct.name},
			"spec":     map[string]any{"expirationSeconds": int64(3600)},
		}}
		got, err := a.Resource(saResource).Namespace(ns).Create(ctx, tr, metav1.CreateOptions{}, "token")
		if err != nil {
			return nil, fmt.Errorf("TokenRequest for %s: %w", acct.name, err)
		}
		tok, _, _ := unstructured.NestedString(got.Object, "status", "token")
		if tok == "" {
			return nil, fmt.Errorf("TokenRequest for %s returned no token", acct.name)
		}
		*acct.token = tok
	}
	// RBAC is evaluated from informers: wait until the binding is seen.
	fc, err := dynamic.NewForConfig(c.Config(t.Token))
	if err != nil {
		return nil, err
	}
	for {
		_, err := fc.Resource(BMHResource).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			return t, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("fencing token still refused: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func obj(apiVersion, kind, ns, name string) map[string]any {
	md := map[string]any{"name": name}
	if ns != "" {
		md["namespace"] = ns
	}
	return map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": md}
}

// CreateBMH creates BareMetalHost name in ns with spec.online and
// status.poweredOn both set to on (as the operator would have left it).
func (c *Cluster) CreateBMH(ctx context.Context, ns, name string, on bool) error {
	o := obj("metal3.io/v1alpha1", "BareMetalHost", ns, name)
	o["spec"] = map[string]any{
		"online":         on,
		"bootMACAddress": "52:54:00:00:00:01",
		"bmc":            map[string]any{"address": "redfish+https://127.0.0.1:8000/redfish/v1/Systems/1", "credentialsName": "bmc-credentials"},
	}
	if _, err := c.Admin.Resource(BMHResource).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: o}, metav1.CreateOptions{}); err != nil {
		return err
	}
	return c.setStatus(ctx, ns, name, on)
}

// SetPower makes the host's power on or off at once, as if the operator
// had finished: spec.online follows (and on removes IHA's reboot
// annotation) so that the operator keeps it that way.
func (c *Cluster) SetPower(ctx context.Context, ns, name string, on bool) error {
	patch := map[string]any{"spec": map[string]any{"online": on}}
	if on {
		patch["metadata"] = map[string]any{"annotations": map[string]any{"reboot.metal3.io/iha": nil}}
	}
	if err := c.mergePatch(ctx, ns, name, patch); err != nil {
		return err
	}
	return c.setStatus(ctx, ns, name, on)
}

func (c *Cluster) setStatus(ctx context.Context, ns, name string, on bool) error {
	b, _ := json.Marshal(map[string]any{"status": map[string]any{"poweredOn": on, "operationalStatus": "OK"}})
	_, err := c.Admin.Resource(BMHResource).Namespace(ns).Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{}, "status")
	return err
}

func (c *Cluster) mergePatch(ctx context.Context, ns, name string, patch map[string]any) error {
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = c.Admin.Resource(BMHResource).Namespace(ns).Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{})
	return err
}

// GetBMH reads a BareMetalHost as the admin.
func (c *Cluster) GetBMH(ctx context.Context, ns, name string) (*unstructured.Unstructured, error) {
	return c.Admin.Resource(BMHResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
}

// PoweredOn reads status.poweredOn as the admin; ok is false when absent.
func (c *Cluster) PoweredOn(ctx context.Context, ns, name string) (on, ok bool, err error) {
	o, err := c.GetBMH(ctx, ns, name)
	if err != nil {
		return false, false, err
	}
	on, ok, _ = unstructured.NestedBool(o.Object, "status", "poweredOn")
	return on, ok, nil
}
