package kubernetes_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/ihaproject/iha/pkg/config"
)

// obj is one rendered object.
type obj map[string]any

func (o obj) kind() string      { return str(o["kind"]) }
func (o obj) name() string      { return str(get(o, "metadata", "name")) }
func (o obj) namespace() string { return str(get(o, "metadata", "namespace")) }

func str(v any) string {
	s, _ := v.(string)
	return s
}

// get walks maps by key.
func get(v any, path ...string) any {
	if o, ok := v.(obj); ok {
		v = map[string]any(o)
	}
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// render runs kustomize on dir as `kubectl kustomize` would.
func render(t *testing.T, dir string) []obj {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	var out []obj
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, obj(m))
	}
	return out
}

func find(t *testing.T, objs []obj, kind, name string) obj {
	t.Helper()
	for _, o := range objs {
		if o.kind() == kind && o.name() == name {
			return o
		}
	}
	t.Fatalf("no %s %s in the rendered manifests", kind, name)
	return nil
}

func container(t *testing.T, sts obj) map[string]any {
	t.Helper()
	cs := list(get(sts, "spec", "template", "spec", "containers"))
	if len(cs) != 1 {
		t.Fatalf("%d containers", len(cs))
	}
	return cs[0].(map[string]any)
}

func envValue(c map[string]any, name string) (string, bool) {
	for _, e := range list(c["env"]) {
		m := e.(map[string]any)
		if m["name"] == name {
			return str(m["value"]), true
		}
	}
	return "", false
}

func num(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case float64:
		return int(n)
	}
	return -1
}

var layouts = []string{"base", "overlays/example"}

// TestManifestsShape checks, in the base and the example overlay, what
// the design depends on: a quorum that survives what Kubernetes may do to
// it, stable Raft addresses that match the replica count, IHA's probe
// semantics, and InstanceHA's files where InstanceHA reads them.
func TestManifestsShape(t *testing.T) {
	for _, dir := range layouts {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			sts := find(t, objs, "StatefulSet", "iha-leader")
			spec := sts["spec"].(map[string]any)
			replicas := num(spec["replicas"])
			if replicas != 3 || spec["podManagementPolicy"] != "Parallel" {
				t.Errorf("replicas %d, podManagementPolicy %v", replicas, spec["podManagementPolicy"])
			}
			svcName := str(spec["serviceName"])
			svc := find(t, objs, "Service", svcName)
			if get(svc, "spec", "clusterIP") != "None" || get(svc, "spec", "publishNotReadyAddresses") != true {
				t.Errorf("Service %s must be headless and publish not-ready pods (peers find each other before any is ready)", svcName)
			}
			podLabels := get(spec, "template", "metadata", "labels").(map[string]any)
			matches := func(sel any) bool {
				for k, v := range sel.(map[string]any) {
					if podLabels[k] != v {
						return false
					}
				}
				return len(sel.(map[string]any)) > 0
			}
			if !matches(get(svc, "spec", "selector")) {
				t.Errorf("Service %s selects %v, pods have %v", svcName, get(svc, "spec", "selector"), podLabels)
			}

			// Quorum: what the PDB lets go still holds a majority.
			pdb := find(t, objs, "PodDisruptionBudget", "iha-leader")
			if !matches(get(pdb, "spec", "selector", "matchLabels")) {
				t.Errorf("PDB selects %v", get(pdb, "spec", "selector"))
			}
			if mu := num(get(pdb, "spec", "maxUnavailable")); mu < 1 || replicas-mu < replicas/2+1 {
				t.Errorf("PDB maxUnavailable %d of %d voters breaks the majority", mu, replicas)
			}
			if num(get(spec, "updateStrategy", "rollingUpdate", "maxUnavailable")) != 1 {
				t.Errorf("rolling update must take one pod at a time")
			}
			anti := list(get(spec, "template", "spec", "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"))
			if len(anti) != 1 || get(anti[0], "topologyKey") != "kubernetes.io/hostname" || !matches(get(anti[0], "labelSelector", "matchLabels")) {
				t.Errorf("required anti-affinity across nodes: %v", anti)
			}

			c := container(t, sts)
			// Raft peers: one per replica, named after the pods, at the
			// headless Service's stable names; the gossip joins likewise.
			peers, _ := envValue(c, "IHA_RAFT_PEERS")
			join, _ := envValue(c, "IHA_GOSSIP_JOIN")
			var wantPeers, wantJoin []string
			for i := range replicas {
				pod := fmt.Sprintf("%s-%d", sts.name(), i)
				wantPeers = append(wantPeers, fmt.Sprintf("%s=%s.%s.$(POD_NAMESPACE).svc:7420", pod, pod, svcName))
				wantJoin = append(wantJoin, fmt.Sprintf("%s.%s.$(POD_NAMESPACE).svc:7946", pod, svcName))
			}
			if peers != strings.Join(wantPeers, ",") {
				t.Errorf("IHA_RAFT_PEERS = %q\nwant %q", peers, strings.Join(wantPeers, ","))
			}
			if join != strings.Join(wantJoin, ",") {
				t.Errorf("IHA_GOSSIP_JOIN = %q\nwant %q", join, strings.Join(wantJoin, ","))
			}
			for k, want := range map[string]string{"IHA_NODE_NAME": "$(POD_NAME)", "IHA_RAFT_ADDR": "$(POD_IP):7420", "IHA_API_ADDR": "$(POD_IP):7421"} {
				if v, _ := envValue(c, k); v != want {
					t.Errorf("%s = %q, want %q (from the pod's identity)", k, v, want)
				}
			}

			// Probes: liveness only says the process serves.
			if get(c, "livenessProbe", "httpGet", "path") != "/healthz" || get(c, "readinessProbe", "httpGet", "path") != "/readyz" {
				t.Errorf("liveness %v readiness %v", get(c, "livenessProbe", "httpGet", "path"), get(c, "readinessProbe", "httpGet", "path"))
			}
			for _, r := range []string{"requests", "limits"} {
				if get(c, "resources", r, "memory") == nil {
					t.Errorf("no memory %s", r)
				}
			}

			// InstanceHA's four files, from the objects its operator mounts,
			// at the paths InstanceHA (and IHA by default) reads.
			mounts := map[string]map[string]any{}
			for _, m := range list(c["volumeMounts"]) {
				mounts[str(get(m, "mountPath"))] = m.(map[string]any)
			}
			vols := map[string]map[string]any{}
			for _, v := range list(get(spec, "template", "spec", "volumes")) {
				vols[str(get(v, "name"))] = v.(map[string]any)
			}
			for _, f := range []struct{ path, key, kind, object string }{
				{config.DefaultConfigPath, "config.yaml", "configMap", "default-instanceha-config"},
				{config.DefaultCloudsPath, "clouds.yaml", "configMap", "openstack-config"},
				{config.DefaultSecurePath, "secure.yaml", "secret", "openstack-config-secret"},
				{config.DefaultFencingPath, "fencing.yaml", "secret", "fencing-secret"},
			} {
				m := mounts[f.path]
				if m == nil || m["subPath"] != f.key {
					t.Errorf("%s: mount %v, want key %s", f.path, m, f.key)
					continue
				}
				v := vols[str(m["name"])]
				ref := "name"
				if f.kind == "secret" {
					ref = "secretName"
				}
				if str(get(v, f.kind, ref)) != f.object {
					t.Errorf("%s comes from %v, want %s %s", f.path, v, f.kind, f.object)
				}
			}
			// The mesh keyring's slot.
			keyring, _ := envValue(c, "IHA_GOSSIP_KEYRING")
			if keyring == "" || !slices.ContainsFunc(list(get(vols["gossip-keyring"], "secret", "items")), func(i any) bool { return get(i, "key") == "GOSSIP_KEYRING" }) {
				t.Errorf("no GOSSIP_KEYRING slot: env %q, volume %v", keyring, vols["gossip-keyring"])
			}
			// And the cluster key's, beside it.
			clusterKey, _ := envValue(c, "IHA_CLUSTER_KEY")
			if clusterKey == "" || !slices.ContainsFunc(list(get(vols["gossip-keyring"], "secret", "items")), func(i any) bool { return get(i, "key") == "CLUSTER_KEY" }) {
				t.Errorf("no CLUSTER_KEY slot: env %q, volume %v", clusterKey, vols["gossip-keyring"])
			}
		})
	}
}

// TestBMHRoleIsNarrow: the bmh Role grants the driver's verbs on
// BareMetalHosts and nothing else, in the BareMetalHosts' namespace, to
// IHA's ServiceAccount.
func TestBMHRoleIsNarrow(t *testing.T) {
	objs := render(t, "overlays/example")
	role := find(t, objs, "Role", "iha-fencing")
	rules := list(role["rules"])
	if len(rules) != 1 {
		t.Fatalf("%d rules", len(rules))
	}
	r := rules[0]
	verbs := fmt.Sprint(get(r, "verbs"))
	if fmt.Sprint(get(r, "apiGroups")) != "[metal3.io]" || fmt.Sprint(get(r, "resources")) != "[baremetalhosts]" || verbs != "[get list watch patch]" {
		t.Errorf("rule %v", r)
	}
	rb := find(t, objs, "RoleBinding", "iha-fencing")
	if role.namespace() != "openshift-machine-api" || rb.namespace() != role.namespace() {
		t.Errorf("Role in %q, RoleBinding in %q", role.namespace(), rb.namespace())
	}
	sts := find(t, objs, "StatefulSet", "iha-leader")
	subj := list(rb["subjects"])
	if len(subj) != 1 || get(subj[0], "name") != get(sts, "spec", "template", "spec", "serviceAccountName") || get(subj[0], "namespace") != sts.namespace() {
		t.Errorf("RoleBinding subjects %v; the pods run as %v in %s", subj, get(sts, "spec", "template", "spec", "serviceAccountName"), sts.namespace())
	}
}
