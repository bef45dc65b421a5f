package kubernetes_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/ihaproject/iha/internal/testkit"
)

var (
	ihaOnce sync.Once
	ihaBin  string
	ihaErr  error
)

// ihaCLI builds the iha command once per test binary.
func ihaCLI(t *testing.T) string {
	t.Helper()
	ihaOnce.Do(func() {
		dir, err := os.MkdirTemp("", "iha-k8s-test-")
		if err != nil {
			ihaErr = err
			return
		}
		ihaBin = filepath.Join(dir, "iha")
		if out, err := exec.Command("go", "build", "-o", ihaBin, "../../cmd/iha").CombinedOutput(); err != nil {
			ihaErr = fmt.Errorf("go build iha: %v\n%s", err, out)
		}
	})
	if ihaErr != nil {
		t.Fatal(ihaErr)
	}
	return ihaBin
}

// siteObjects are the ConfigMaps' and Secrets' data a site already has (the
// example overlay generates default-instanceha-config itself).
func siteObjects(t *testing.T) map[string]map[string][]byte {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return map[string]map[string][]byte{
		"configMap/openstack-config":     {"clouds.yaml": read("clouds.yaml")},
		"secret/openstack-config-secret": {"secure.yaml": read("secure.yaml")},
		"secret/fencing-secret":          {"fencing.yaml": read("fencing.yaml")},
		"secret/iha-secrets": {"API_TOKEN": []byte("k8s-test-token-0123456789"), "GOSSIP_KEYRING": read("gossip.keyring"),
			"CLUSTER_KEY": read("cluster.key")},
		"configMap/kube-root-ca.crt": {"ca.crt": selfSignedCA(t)},
	}
}

func selfSignedCA(t *testing.T) []byte { return testkit.NewCA(t, "kubernetes").PEM }

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// TestStatefulSetConfigurationPassesConfigCheck lays out one pod's file
// system as the kubelet would (every volumeMount of the rendered
// StatefulSet, filled from the overlay's ConfigMap and the site's objects)
// under a directory, builds its environment as the kubelet would
// (fieldRefs, secretKeyRefs, $(VAR) expansion in order), and runs the real
// `iha config check` in it: the configuration iha-leader would start with
// is valid.
func TestStatefulSetConfigurationPassesConfigCheck(t *testing.T) {
	objs := render(t, "overlays/example")
	sts := find(t, objs, "StatefulSet", "iha-leader")
	ns := sts.namespace()
	data := siteObjects(t)
	for _, o := range objs {
		if o.kind() == "ConfigMap" {
			m := map[string][]byte{}
			for k, v := range get(o, "data").(map[string]any) {
				m[k] = []byte(str(v))
			}
			data["configMap/"+o.name()] = m
		}
	}
	pod := map[string]string{"metadata.name": "iha-leader-1", "metadata.namespace": ns, "status.podIP": "192.0.2.11"}
	root := t.TempDir()
	c := container(t, sts)

	// 1. Volumes, as mounted.
	vols := map[string]map[string]any{}
	for _, v := range list(get(sts, "spec", "template", "spec", "volumes")) {
		vols[str(get(v, "name"))] = v.(map[string]any)
	}
	for _, vct := range list(get(sts, "spec", "volumeClaimTemplates")) {
		vols[str(get(vct, "metadata", "name"))] = map[string]any{"pvc": true}
	}
	source := func(v map[string]any) (files map[string][]byte, ok bool) {
		pick := func(obj string, items []any) map[string][]byte {
			src, found := data[obj]
			if !found {
				t.Fatalf("the pod mounts %s, which neither the site nor the overlay provides", obj)
			}
			if len(items) == 0 {
				return src
			}
			out := map[string][]byte{}
			for _, it := range items {
				out[str(get(it, "path"))] = src[str(get(it, "key"))]
			}
			return out
		}
		switch {
		case v["configMap"] != nil:
			return pick("configMap/"+str(get(v, "configMap", "name")), list(get(v, "configMap", "items"))), true
		case v["secret"] != nil:
			return pick("secret/"+str(get(v, "secret", "secretName")), list(get(v, "secret", "items"))), true
		case v["projected"] != nil:
			out := map[string][]byte{}
			for _, s := range list(get(v, "projected", "sources")) {
				for k, b := range pick("configMap/"+str(get(s, "configMap", "name")), list(get(s, "configMap", "items"))) {
					out[k] = b
				}
			}
			return out, true
		}
		return nil, false // emptyDir, PVC: an empty directory
	}
	for _, m := range list(c["volumeMounts"]) {
		path := filepath.Join(root, str(get(m, "mountPath")))
		v := vols[str(get(m, "name"))]
		if v == nil {
			t.Fatalf("mount %v names no volume", m)
		}
		files, isFiles := source(v)
		if sub := str(get(m, "subPath")); sub != "" {
			b, ok := files[sub]
			if !ok {
				t.Fatalf("mount %s: subPath %s not in its volume", get(m, "mountPath"), sub)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		if isFiles {
			for name, b := range files {
				if err := os.WriteFile(filepath.Join(path, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	// 2. Environment, in order, with $(VAR) expansion; absolute paths are
	// under root. InstanceHA's path variables point at root's copies of
	// the paths the pod uses by default.
	env := map[string]string{}
	var envList []string
	for _, e := range list(c["env"]) {
		name := str(get(e, "name"))
		val := str(get(e, "value"))
		switch {
		case get(e, "valueFrom", "fieldRef") != nil:
			val = pod[str(get(e, "valueFrom", "fieldRef", "fieldPath"))]
		case get(e, "valueFrom", "secretKeyRef") != nil:
			val = string(data["secret/"+str(get(e, "valueFrom", "secretKeyRef", "name"))][str(get(e, "valueFrom", "secretKeyRef", "key"))])
		default:
			val = varRef.ReplaceAllStringFunc(val, func(ref string) string {
				if v, ok := env[varRef.FindStringSubmatch(ref)[1]]; ok {
					return v
				}
				return ref
			})
		}
		env[name] = val
		if strings.HasPrefix(val, "/") {
			val = filepath.Join(root, val)
		}
		envList = append(envList, name+"="+val)
	}
	if strings.Contains(env["IHA_RAFT_PEERS"], "$(") || env["IHA_NODE_NAME"] != "iha-leader-1" {
		t.Fatalf("env not resolved: %v", env)
	}
	for k, p := range map[string]string{"INSTANCEHA_CONFIG_PATH": "/var/lib/instanceha/config.yaml",
		"CLOUDS_CONFIG_PATH": "/home/cloud-admin/.config/openstack/clouds.yaml",
		"SECURE_CONFIG_PATH": "/home/cloud-admin/.config/openstack/secure.yaml", "FENCING_CONFIG_PATH": "/secrets/fencing.yaml",
		"SEGMENTS_CONFIG_PATH": "/secrets/segments.yaml"} {
		envList = append(envList, k+"="+filepath.Join(root, p))
	}
	// The bmh driver's default ca_file is the service account's ca.crt.
	fencing, _ := os.ReadFile(filepath.Join(root, "secrets/fencing.yaml"))
	fencing = []byte(strings.ReplaceAll(string(fencing), "    namespace: openshift-machine-api",
		"    namespace: openshift-machine-api\n    ca_file: "+filepath.Join(root, "var/run/secrets/kubernetes.io/serviceaccount/ca.crt")))
	if err := os.WriteFile(filepath.Join(root, "secrets/fencing.yaml"), fencing, 0o600); err != nil {
		t.Fatal(err)
	}

	// 3. The real CLI.
	cmd := exec.Command(ihaCLI(t), "config", "check")
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + root}, envList...)
	out, err := cmd.CombinedOutput()
	t.Logf("iha config check:\n%s", out)
	if err != nil {
		t.Fatalf("iha config check refused the StatefulSet's configuration: %v", err)
	}
	for _, want := range []string{"iha-leader-1", "192.0.2.11:7420"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the summary does not show %q: the pod's identity did not reach the configuration", want)
		}
	}
}
