//go:build lab

package scenarios

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scale stretches every deadline on a slow or busy machine
// (IHA_TEST_TIMEOUT_SCALE, default 1).
func scale() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("IHA_TEST_TIMEOUT_SCALE")); err == nil && n > 0 {
		return time.Duration(n)
	}
	return 1
}

// lab is the real-Nova lab the scenarios run on: one the test brings up in
// a directory and port block of its own, or (LAB_SCENARIO_REUSE=1) the one
// already running in $LAB_DIR, which the test then leaves running.
type lab struct {
	t      *testing.T
	home   string // deploy/lab
	root   string // the repository
	dir    string // LAB_DIR
	env    []string
	vars   map[string]string
	own    bool
	seen   map[int]string // PIDs the lab recorded -> name
	nova   string
	glance string
	hc     *http.Client
}

func newLab(t *testing.T, computes int) *lab {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, home: filepath.Dir(wd), root: filepath.Dir(filepath.Dir(filepath.Dir(wd))), seen: map[int]string{},
		hc: &http.Client{Timeout: 60 * time.Second}}
	if os.Getenv("LAB_SCENARIO_REUSE") == "1" {
		l.dir = os.Getenv("LAB_DIR")
		if l.dir == "" {
			l.dir = filepath.Join(l.home, ".state")
		}
	} else {
		l.own = true
		l.dir = t.TempDir()
		base := os.Getenv("LAB_SCENARIO_PORT_BASE")
		if base == "" {
			base = "18900" // off the developer's 18700 and labtest's 18800
		}
		// A 2 s heartbeat, down after 10 s: IHA's DELTA can then be its
		// minimum, 10 s. A 6 s service_down_time flaps under load.
		l.env = append(os.Environ(), "LAB_DIR="+l.dir, "LAB_PORT_BASE="+base,
			fmt.Sprintf("LAB_TIMEOUT_SCALE=%d", int(scale())), "LAB_REPORT_INTERVAL=2", "LAB_SERVICE_DOWN_TIME=10")
		if out, err := l.sh(15*time.Minute, "install.sh"); err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
		t.Cleanup(l.down)
		start := time.Now()
		out, err := l.sh(10*time.Minute, "up.sh", strconv.Itoa(computes))
		l.recordPIDs()
		if err != nil {
			t.Fatalf("up.sh: %v\n%s", err, out)
		}
		t.Logf("lab up (%d computes) in %v", computes, time.Since(start).Round(time.Second))
	}
	l.vars = readEnv(t, filepath.Join(l.dir, "env"))
	l.nova = l.vars["NOVA_CONTRACT_URL"]
	l.glance = l.vars["LAB_GLANCE_URL"]
	if l.nova == "" || l.glance == "" {
		t.Fatalf("%s/env lacks NOVA_CONTRACT_URL or LAB_GLANCE_URL", l.dir)
	}
	return l
}

func (l *lab) sh(timeout time.Duration, script string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout*scale())
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(l.home, script), args...)
	cmd.Env = l.env
	if cmd.Env == nil {
		cmd.Env = append(os.Environ(), "LAB_DIR="+l.dir)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// down stops the lab the test brought up and checks that every process it
// ever recorded is gone.
func (l *lab) down() {
	t := l.t
	l.recordPIDs()
	start := time.Now()
	out, err := l.sh(3*time.Minute, "down.sh")
	if err != nil {
		t.Errorf("down.sh: %v\n%s", err, out)
	}
	t.Logf("down.sh in %v", time.Since(start).Round(100*time.Millisecond))
	var alive []string
	for pid, name := range l.seen {
		if running(pid) {
			alive = append(alive, fmt.Sprintf("%d (%s)", pid, name))
		}
	}
	sort.Strings(alive)
	if len(alive) > 0 {
		t.Errorf("still running after down.sh: %v", alive)
	}
}

func (l *lab) recordPIDs() {
	files, _ := filepath.Glob(filepath.Join(l.dir, "pids", "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			l.seen[pid] = strings.TrimSuffix(filepath.Base(f), ".pid")
		}
	}
}

func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+3 < len(s) && s[i+2] != 'Z'
}

func readEnv(t *testing.T, path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "="); ok {
			vars[k] = v
		}
	}
	return vars
}

func (l *lab) computes() []string { return strings.Split(l.vars["NOVA_CONTRACT_COMPUTES"], ",") }

func (l *lab) bmcPort(host string) int {
	base, _ := strconv.Atoi(l.vars["LAB_BMC_PORT_BASE"])
	i, _ := strconv.Atoi(strings.TrimPrefix(host, "lab-compute-"))
	return base + i
}

func bmcPassword() string {
	if p := os.Getenv("LAB_BMC_PASSWORD"); p != "" {
		return p
	}
	return "labpass"
}

// ipmi runs ipmitool against host's BMC, as an operator would.
func (l *lab) ipmi(host string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*scale())
	defer cancel()
	base := []string{"-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", strconv.Itoa(l.bmcPort(host)),
		"-U", l.vars["LAB_BMC_USER"], "-E"}
	cmd := exec.CommandContext(ctx, "ipmitool", append(base, args...)...)
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+bmcPassword()) // -E: never on the command line
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (l *lab) ctl(args ...string) {
	l.t.Helper()
	if out, err := l.sh(2*time.Minute, "ctl.sh", args...); err != nil {
		l.t.Fatalf("ctl.sh %v: %v\n%s", args, err, out)
	}
}

// ---- Nova over HTTP ----

type answer struct {
	status int
	raw    []byte
}

func (l *lab) call(method, url, mv string, body any) (answer, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return answer{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("X-Auth-Token", "admin:admin")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if strings.HasSuffix(method, "PATCH") {
		req.Header.Set("Content-Type", "application/openstack-images-v2.1-json-patch")
	}
	if mv != "" {
		req.Header.Set("OpenStack-API-Version", "compute "+mv)
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, raw: raw}, err
}

// must sends a request to Nova and decodes a 2xx answer into v (if not nil).
func (l *lab) must(method, path, mv string, body, v any) {
	l.t.Helper()
	a, err := l.call(method, l.nova+path, mv, body)
	if err != nil {
		l.t.Fatalf("%s %s: %v", method, path, err)
	}
	if a.status/100 != 2 {
		l.t.Fatalf("%s %s: HTTP %d %s", method, path, a.status, a.raw)
	}
	if v != nil {
		if err := json.Unmarshal(a.raw, v); err != nil {
			l.t.Fatalf("%s %s: %v in %s", method, path, err, a.raw)
		}
	}
}

type service struct {
	ID             string `json:"id"`
	Host           string `json:"host"`
	State          string `json:"state"`
	Status         string `json:"status"`
	ForcedDown     bool   `json:"forced_down"`
	DisabledReason string `json:"disabled_reason"`
}

func (l *lab) services() map[string]service {
	var body struct{ Services []service }
	l.must("GET", "/os-services?binary=nova-compute", "2.53", nil, &body)
	m := map[string]service{}
	for _, s := range body.Services {
		m[s.Host] = s
	}
	return m
}

type server struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	Host   string `json:"OS-EXT-SRV-ATTR:host"`
	Task   string `json:"OS-EXT-STS:task_state"`
}

func (l *lab) server(id string) server {
	var body struct{ Server server }
	l.must("GET", "/servers/"+id, "2.93", nil, &body)
	return body.Server
}

type migration struct {
	ID       int    `json:"id"`
	Instance string `json:"instance_uuid"`
	Source   string `json:"source_compute"`
	Dest     string `json:"dest_compute"`
	Status   string `json:"status"`
	Created  string `json:"created_at"`
}

// evacuations lists the evacuation migrations from host created at or
// after since (Nova's whole-second, zoneless UTC times).
func (l *lab) evacuations(host string, since time.Time) []migration {
	var body struct{ Migrations []migration }
	l.must("GET", "/os-migrations?migration_type=evacuation&source_compute="+host+"&limit=1000", "2.59", nil, &body)
	var out []migration
	for _, m := range body.Migrations {
		c, err := time.Parse("2006-01-02T15:04:05.999999", m.Created)
		if err == nil && !c.Before(since.UTC().Truncate(time.Second)) {
			out = append(out, m)
		}
	}
	return out
}

func (l *lab) createServer(name, flavor, host string) string {
	l.t.Helper()
	var body struct{ Server server }
	l.must("POST", "/servers", "2.93", map[string]any{"server": map[string]any{"name": name, "flavorRef": flavor,
		"imageRef": l.vars["NOVA_CONTRACT_IMAGE"], "networks": "none", "availability_zone": "nova:" + host}}, &body)
	return body.Server.ID
}

// waitFor polls cond until it holds or d (scaled) passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d * scale())
	last := ""
	for {
		ok, seen := cond()
		if ok {
			return
		}
		last = seen
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last: %s)", d*scale(), what, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ---- the leader ----

// leaderProc is one iha-leader process started by the test.
type leaderProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// ihaConfig is the InstanceHA-style configuration the test writes.
type ihaConfig struct {
	dir      string // config.yaml, clouds.yaml, fencing.yaml, data/
	apiAddr  string
	raftAddr string
	env      []string
	bin      string // directory holding iha-leader and iha
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// build compiles iha-leader and iha once per test binary.
func build(t *testing.T, root string) string {
	dir := t.TempDir()
	for _, c := range []string{"iha-leader", "iha"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute*scale())
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, c), "./cmd/"+c)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", c, err, out)
		}
	}
	return dir
}

// writeConfig writes config.yaml, clouds.yaml and fencing.yaml (one ipmi
// entry per compute, at its ipmi_sim) into the lab's state directory.
func (l *lab) writeConfig(t *testing.T, bin string, extra map[string]string) *ihaConfig {
	dir := filepath.Join(l.dir, "iha", strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	c := &ihaConfig{dir: dir, apiAddr: freePort(t), raftAddr: freePort(t), bin: bin}
	keys := map[string]string{
		"EVACUABLE_TAG": "evacuable", "DELTA": "10", "POLL": "15", "THRESHOLD": "50",
		"TAGGED_IMAGES": "true", "TAGGED_FLAVORS": "true", "TAGGED_AGGREGATES": "false",
		"SMART_EVACUATION": "true", "DETECTION_MODE": "nova", "NOVA_REPORT_INTERVAL": "2",
		"FENCING_TIMEOUT": "30", "LOGLEVEL": "INFO",
		"NODE_NAME": "lab-leader-1", "RAFT_ADDR": c.raftAddr, "API_ADDR": c.apiAddr,
		"DATA_DIR": filepath.Join(dir, "data"),
	}
	for k, v := range extra {
		keys[k] = v
	}
	var cfg strings.Builder
	cfg.WriteString("config:\n")
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(&cfg, "  %s: %q\n", k, keys[k])
	}
	clouds := fmt.Sprintf("clouds:\n  lab:\n    auth_type: noauth\n    auth:\n      endpoint: %s\n      image_endpoint: %s\n      token: admin:admin\n    region_name: RegionOne\n",
		l.nova, l.glance)
	var fencing strings.Builder
	fencing.WriteString("FencingConfig:\n")
	for _, h := range l.computes() {
		fmt.Fprintf(&fencing, "  %s:\n    agent: ipmi\n    ipaddr: 127.0.0.1\n    ipport: \"%d\"\n    login: %s\n    passwd: %s\n",
			h, l.bmcPort(h), l.vars["LAB_BMC_USER"], bmcPassword())
	}
	for name, body := range map[string]string{"config.yaml": cfg.String(), "clouds.yaml": clouds, "fencing.yaml": fencing.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.env = append(os.Environ(), "INSTANCEHA_CONFIG_PATH="+filepath.Join(dir, "config.yaml"),
		"CLOUDS_CONFIG_PATH="+filepath.Join(dir, "clouds.yaml"), "FENCING_CONFIG_PATH="+filepath.Join(dir, "fencing.yaml"),
		"SECURE_CONFIG_PATH="+filepath.Join(dir, "secure.yaml"), "OS_CLOUD=lab", "IHA_ADDR="+c.apiAddr)
	return c
}

// startLeader starts iha-leader; it is SIGKILLed by PID when the test ends
// if still running.
func (c *ihaConfig) startLeader(t *testing.T) *leaderProc {
	logPath := filepath.Join(c.dir, fmt.Sprintf("iha-leader-%d.log", time.Now().UnixNano()))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(c.bin, "iha-leader"))
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &leaderProc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() { p.kill(t) })
	waitFor(t, "the leader's status API", time.Minute, func() (bool, string) {
		out, err := c.iha("status")
		return err == nil, out
	})
	return p
}

// stop sends SIGTERM and waits.
func (p *leaderProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second * scale()):
		p.kill(t)
	}
}

// kill is SIGKILL by PID (a crash).
func (p *leaderProc) kill(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("iha-leader pid %d survived SIGKILL", p.cmd.Process.Pid)
	}
}

func (p *leaderProc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// iha runs the CLI against this leader's status API.
func (c *ihaConfig) iha(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*scale())
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "iha"), args...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}
