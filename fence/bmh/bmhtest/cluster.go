package bmhtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// KubeVersion is the kube-apiserver the harness runs (see docs/real-peers.md:
// the newest the module proxy serves whole).
const KubeVersion = "v1.36.3"

// Resources the harness creates.
var (
	BMHResource        = schema.GroupVersionResource{Group: "metal3.io", Version: "v1alpha1", Resource: "baremetalhosts"}
	crdResource        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	namespaceResource  = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	saResource         = schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}
	SecretResource     = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	roleResource       = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"}
	roleBindingResouce = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}
)

// Options configure Start.
type Options struct {
	// Timeout bounds the whole start (not the kube-apiserver build); default 2 min.
	Timeout time.Duration
	// Logf receives progress lines (build, start); may be nil.
	Logf func(format string, args ...any)
}

// Cluster is a running etcd + kube-apiserver on loopback.
type Cluster struct {
	// URL is the API server's https URL on 127.0.0.1.
	URL string
	// CAFile verifies the API server's certificate.
	CAFile string
	// Dir holds certificates, data and the processes' logs.
	Dir string
	// Admin is a client in system:masters (static token).
	Admin dynamic.Interface

	adminToken string
	etcd, api  *exec.Cmd
	ownDir     bool
}

// Start builds kube-apiserver if this machine has no cached binary, then
// starts etcd and kube-apiserver on free loopback ports under dir (a new
// temporary directory when dir is ""), waits until the API server is ready
// and installs the BareMetalHost CRD. The caller must call Stop.
func Start(dir string, o Options) (*Cluster, error) {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	bin, err := KubeAPIServer(o.Logf)
	if err != nil {
		return nil, err
	}
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("etcd not found (Debian package etcd-server; scripts/install-test-deps.sh): %w", err)
	}
	c := &Cluster{Dir: dir}
	if dir == "" {
		if c.Dir, err = os.MkdirTemp("", "iha-bmhtest-"); err != nil {
			return nil, err
		}
		c.ownDir = true
	}
	// Free ports are found by binding and releasing; another process may
	// take one in between, so a failed start is tried again on new ports.
	for attempt := 1; ; attempt++ {
		err = c.start(bin, etcdBin, o)
		if err == nil {
			return c, nil
		}
		c.stopProcesses()
		if attempt == 3 {
			c.Stop()
			return nil, err
		}
		o.Logf("bmhtest: start attempt %d failed, retrying on new ports: %v", attempt, err)
	}
}

func (c *Cluster) start(bin, etcdBin string, o Options) error {
	run := filepath.Join(c.Dir, "run-"+randomHex(4))
	if err := os.MkdirAll(run, 0o700); err != nil {
		return err
	}
	if err := writeCerts(run); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	c.adminToken = "admin-" + randomHex(16)
	tokens := c.adminToken + ",iha-admin,iha-admin-uid,\"system:masters\"\n"
	if err := os.WriteFile(filepath.Join(run, "tokens.csv"), []byte(tokens), 0o600); err != nil {
		return err
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	c.etcd, err = spawn(filepath.Join(run, "etcd.log"), etcdBin,
		"--name", "iha-bmhtest",
		"--data-dir", filepath.Join(run, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "iha-bmhtest="+peerURL,
		"--logger", "zap", "--log-outputs", "stderr")
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	if err := waitHTTP(ctx, c.etcd, &http.Client{Timeout: 5 * time.Second}, clientURL+"/health", ""); err != nil {
		return fmt.Errorf("etcd not healthy: %w%s", err, tail(filepath.Join(run, "etcd.log")))
	}
	c.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	c.CAFile = filepath.Join(run, "ca.crt")
	c.api, err = spawn(filepath.Join(run, "kube-apiserver.log"), bin,
		"--etcd-servers", clientURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(ports[2]),
		"--tls-cert-file", filepath.Join(run, "serving.crt"),
		"--tls-private-key-file", filepath.Join(run, "serving.key"),
		"--cert-dir", filepath.Join(run, "certs"),
		"--token-auth-file", filepath.Join(run, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", filepath.Join(run, "sa.key"),
		"--service-account-signing-key-file", filepath.Join(run, "sa.key"),
		// No packet is ever sent to a service IP: the range only has to be
		// valid. No endpoint is published for the API server either.
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=0")
	if err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	cfg := c.config(c.adminToken)
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, c.api, hc, c.URL+"/readyz", c.adminToken); err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w%s", err, tail(filepath.Join(run, "kube-apiserver.log")))
	}
	if c.Admin, err = dynamic.NewForConfig(cfg); err != nil {
		return err
	}
	if err := c.installCRD(ctx); err != nil {
		return fmt.Errorf("BareMetalHost CRD: %w%s", err, tail(filepath.Join(run, "kube-apiserver.log")))
	}
	o.Logf("bmhtest: kube-apiserver %s ready at %s (etcd %s)", KubeVersion, c.URL, clientURL)
	return nil
}

// AdminToken is the static token of the system:masters user.
func (c *Cluster) AdminToken() string { return c.adminToken }

// Config is a client configuration for this API server with token.
func (c *Cluster) Config(token string) *rest.Config { return c.config(token) }

func (c *Cluster) config(token string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.CAFile},
		QPS:             100,
		Burst:           200,
		Timeout:         30 * time.Second,
		WarningHandler:  rest.NoWarnings{},
	}
}

// Stop stops kube-apiserver and etcd by PID and removes the directory the
// harness created.
func (c *Cluster) Stop() {
	if c == nil {
		return
	}
	c.stopProcesses()
	if c.ownDir {
		_ = os.RemoveAll(c.Dir)
	}
}

func (c *Cluster) stopProcesses() {
	stop(c.api)
	stop(c.etcd)
	c.api, c.etcd = nil, nil
}

// Pids are the PIDs of kube-apiserver and etcd (0 when not running).
func (c *Cluster) Pids() (apiserver, etcd int) {
	if c.api != nil && c.api.Process != nil {
		apiserver = c.api.Process.Pid
	}
	if c.etcd != nil && c.etcd.Process != nil {
		etcd = c.etcd.Process.Pid
	}
	return apiserver, etcd
}

// spawn starts a process with its output in logPath. The process gets
// SIGKILL if the test binary dies without stopping it.
func spawn(logPath, bin string, args ...string) (*exec.Cmd, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	cmdDone.set(cmd, done)
	return cmd, nil
}

// cmdDone holds the wait channel of every spawned process.
var cmdDone = newDoneMap()

// stop sends SIGTERM to the process (by PID), then SIGKILL after 15 s.
func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	done := cmdDone.take(cmd)
	if done == nil {
		return // already stopped
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(15 * time.Second):
	}
	_ = cmd.Process.Kill()
	<-done
}

func exited(cmd *exec.Cmd) bool {
	select {
	case <-cmdDone.peek(cmd):
		return true
	default:
		return false
	}
}

// waitHTTP polls url until it answers 200, the process exits or ctx ends.
func waitHTTP(ctx context.Context, cmd *exec.Cmd, hc *http.Client, url, token string) error {
	var last string
	for {
		if exited(cmd) {
			return errors.New("process exited")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			body := make([]byte, 512)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body[:n]))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %s)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "\n--- " + filepath.Base(path) + " (tail) ---\n" + strings.Join(lines, "\n")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// installCRD creates the BareMetalHost CRD (a minimal schema that keeps
// unknown fields, with a status subresource) and waits until the resource
// is served.
func (c *Cluster) installCRD(ctx context.Context) error {
	preserve := map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "baremetalhosts.metal3.io"},
		"spec": map[string]any{
			"group": "metal3.io",
			"scope": "Namespaced",
			"names": map[string]any{
				"kind": "BareMetalHost", "listKind": "BareMetalHostList",
				"plural": "baremetalhosts", "singular": "baremetalhost",
				"shortNames": []any{"bmh", "bmhost"},
			},
			"versions": []any{map[string]any{
				"name": "v1alpha1", "served": true, "storage": true,
				"subresources": map[string]any{"status": map[string]any{}},
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"spec":   preserve,
						"status": preserve,
					},
				}},
			}},
		},
	}}
	if _, err := c.Admin.Resource(crdResource).Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		return err
	}
	var last error
	for {
		_, err := c.Admin.Resource(BMHResource).Namespace("default").List(ctx, metav1.ListOptions{})
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not served: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
