//go:build lab

package scenarios

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/api"
)

// scale stretches every deadline on a slow or busy machine
// (IHA_TEST_TIMEOUT_SCALE, default 1).
func scale() time.Duration { return max(1, time.Duration(testkit.Factor(1))) }

// lab is the real-Nova lab the scenarios run on: one the test brings up in
// a directory and port block of its own, or (LAB_SCENARIO_REUSE=1) the one
// already running in $LAB_DIR, which the test then leaves running.
type lab struct {
	t      testing.TB
	home   string // deploy/lab
	root   string // the repository
	dir    string // LAB_DIR
	env    []string
	vars   map[string]string
	own    bool
	seen   map[int]string // PIDs the lab recorded -> name
	nova   string
	glance string
	bin    string // iha-leader, iha and iha-agent built from this tree
	hc     *http.Client
	// agentProfile is the agents' gossip profile set by setAgentProfile
	// ("": as up.sh wrote it).
	agentProfile string
}

func newLab(t testing.TB, computes int) *lab { return newLabEnv(t, computes, nil) }

// newLabEnv is newLab with extra environment for up.sh (LAB_CHAOS=1: the
// mesh network, net.sh).
func newLabEnv(t testing.TB, computes int, extra []string) *lab {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, home: filepath.Dir(wd), root: filepath.Dir(filepath.Dir(filepath.Dir(wd))), seen: map[int]string{},
		hc: &http.Client{Timeout: 60 * time.Second}}
	l.bin = build(t, l.root)
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
		// Nova's defaults (report_interval 10 s, service_down_time 60 s):
		// the cloud IHA must be fast on, not a faster heartbeat that hides
		// its waits (issue 14).
		l.env = append(os.Environ(), "LAB_DIR="+l.dir, "LAB_PORT_BASE="+base,
			fmt.Sprintf("LAB_TIMEOUT_SCALE=%d", int(scale())), "LAB_REPORT_INTERVAL=10", "LAB_SERVICE_DOWN_TIME=60",
			"LAB_IHA_BIN="+l.bin) // every host runs an iha-agent
		l.env = append(l.env, extra...)
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
	return l.shEnv(nil, timeout, script, args...)
}

// shEnv runs a lab script with extra environment variables.
func (l *lab) shEnv(extra []string, timeout time.Duration, script string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout*scale())
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(l.home, script), args...)
	cmd.Env = l.env
	if cmd.Env == nil {
		cmd.Env = append(os.Environ(), "LAB_DIR="+l.dir)
	}
	cmd.Env = append(append([]string{}, cmd.Env...), extra...)
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

func readEnv(t testing.TB, path string) map[string]string {
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

// servicesErr is services() for callers that must not fail the test
// (the bench, the soak): an unanswered request gives an empty map.
func (l *lab) servicesErr() map[string]service {
	var body struct{ Services []service }
	a, err := l.call("GET", l.nova+"/os-services?binary=nova-compute", "2.53", nil)
	m := map[string]service{}
	if err != nil || a.status != http.StatusOK || json.Unmarshal(a.raw, &body) != nil {
		return m
	}
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

// serverErr is server() without failing the test.
func (l *lab) serverErr(id string) (server, error) {
	var body struct{ Server server }
	a, err := l.call("GET", l.nova+"/servers/"+id, "2.93", nil)
	if err != nil {
		return server{}, err
	}
	if a.status != http.StatusOK {
		return server{}, fmt.Errorf("GET /servers/%s: HTTP %d", id, a.status)
	}
	if err := json.Unmarshal(a.raw, &body); err != nil {
		return server{}, err
	}
	return body.Server, nil
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
	return migrationsSince(body.Migrations, since)
}

// evacuationsErr is evacuations() without failing the test (nil when Nova
// does not answer).
func (l *lab) evacuationsErr(host string, since time.Time) []migration {
	var body struct{ Migrations []migration }
	a, err := l.call("GET", l.nova+"/os-migrations?migration_type=evacuation&source_compute="+host+"&limit=1000", "2.59", nil)
	if err != nil || a.status != http.StatusOK || json.Unmarshal(a.raw, &body) != nil {
		return nil
	}
	return migrationsSince(body.Migrations, since)
}

func migrationsSince(all []migration, since time.Time) []migration {
	var out []migration
	for _, m := range all {
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
func waitFor(t testing.TB, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	testkit.WaitForState(t, d*scale(), 500*time.Millisecond, what, cond)
}

// ---- the leaders ----

// leaderProc is one iha-leader process started by the test.
type leaderProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// ihaNode is one of the three controllers: its own NODE_NAME, Raft,
// status API, gossip and fence_kdump addresses and data directory, and
// every process started for it (a killed one is restarted on the same
// data directory).
type ihaNode struct {
	name  string
	dir   string // config.yaml, data/, logs
	api   string
	env   []string
	procs []*leaderProc
}

func (n *ihaNode) proc() *leaderProc { return n.procs[len(n.procs)-1] }

// ihaConfig is one scenario's IHA cluster: three iha-leaders configured
// from InstanceHA-style files (config.yaml per node, shared clouds.yaml
// and fencing.yaml) in the lab's state directory, bootstrapped together
// with RAFT_PEERS.
type ihaConfig struct {
	dir   string
	bin   string // iha-leader and iha
	nodes []*ihaNode
	env   []string // the CLI's: IHA_ADDR lists every node
	gate  string   // while it exists, the lab's hosts run `iha-agent gate` before nova-compute
	hc    *http.Client
	last  int // index of the last acting leader seen
	// On a LAB_CHAOS=1 lab each leader runs in its own network namespace
	// (ns[j]); the test reads them from the operator's namespace (ops) and,
	// to read a cut-off leader, from inside its own (local[j]).
	ns    []string
	ops   string
	local []*http.Client
}

// build compiles iha-leader, iha, iha-agent and iha-wddouble once per test binary
// (LAB_SCENARIO_BIN names a directory of prebuilt ones instead).
func build(t testing.TB, root string) string {
	if dir := os.Getenv("LAB_SCENARIO_BIN"); dir != "" {
		for _, c := range []string{"iha-leader", "iha", "iha-agent"} {
			if _, err := os.Stat(filepath.Join(dir, c)); err != nil {
				t.Fatalf("LAB_SCENARIO_BIN: %v", err)
			}
		}
		return dir
	}
	dir := t.TempDir()
	// iha-wddouble is the watchdog device double of a LAB_WATCHDOG lab.
	for _, c := range []string{"iha-leader", "iha", "iha-agent", "iha-wddouble"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute*scale())
		pkg := "./cmd/" + c
		if c == "iha-wddouble" {
			pkg = "./internal/wddouble/iha-wddouble"
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, c), pkg)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", c, err, out)
		}
	}
	return dir
}

// keyFile is one of the key files up.sh made (the env file names it).
func (l *lab) keyFile(t testing.TB, key string) string {
	v := l.vars[key]
	if v == "" {
		t.Fatalf("%s/env lacks %s: the lab was brought up by an older up.sh; run make lab-down lab-up", l.dir, key)
	}
	if _, err := os.Stat(v); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return v
}

// reportInterval is the lab's Nova report_interval in seconds (its env
// file; 10, Nova's default, for a lab brought up before it was recorded).
func (l *lab) reportInterval() string {
	if v := l.vars["LAB_REPORT_INTERVAL"]; v != "" {
		return v
	}
	return "10"
}

// addrs is one of the env file's comma-separated LAB_IHA_* lists.
func (l *lab) addrs(t testing.TB, key string) []string {
	v := l.vars[key]
	if v == "" {
		t.Fatalf("%s/env lacks %s: the lab was brought up without IHA (make lab-up builds it; LAB_IHA_BIN=dir up.sh)", l.dir, key)
	}
	return strings.Split(v, ",")
}

// writeConfig writes, for each of the three leaders, config.yaml (the
// InstanceHA keys plus IHA's NODE_NAME, RAFT_*, API_ADDR, DATA_DIR and
// gossip keys), and the shared clouds.yaml and fencing.yaml (one ipmi
// entry per compute, at its ipmi_sim), under $LAB_DIR/iha/<test>/.
// The addresses are the lab's (up.sh wrote them in env): the agents'
// agent.yaml joins those gossip addresses and asks those status APIs.
// extra overrides keys; an empty value removes one (its default applies).
func (l *lab) writeConfig(t testing.TB, bin string, extra map[string]string) *ihaConfig {
	return l.writeConfigAs(t, t.Name(), bin, extra)
}

// writeConfigAs is writeConfig into $LAB_DIR/iha/<name>/.
func (l *lab) writeConfigAs(t testing.TB, name, bin string, extra map[string]string) *ihaConfig {
	return l.writeQuorum(t, name, bin, l.labQuorum(t), extra, nil)
}

// quorum is where one IHA quorum's three leaders listen and what they are
// called: the lab's (up.sh's ports, lab-leader-j, the one the agents'
// gate asks) or another one beside it (shadowQuorum).
type quorum struct {
	names                    []string
	raft, api, gossip, kdump []string
	// join is GOSSIP_JOIN: the quorum's own gossip addresses, and the
	// lab's for a second quorum in the same mesh.
	join []string
	// token is the leaders' X-Auth-Token for Nova (the lab's noauth:
	// user:project), so that nova-api's log tells their requests apart.
	token string
	// gate: start turns the lab's nova-compute gate on (only the lab's
	// quorum: the agents' gate asks it alone).
	gate bool
	// netns: the leaders run in the lab's controller namespaces
	// (LAB_CHAOS=1 labs).
	netns bool
}

// labQuorum is the quorum up.sh made room for: its addresses are in env,
// the agents join its gossip addresses and their gate asks its APIs.
func (l *lab) labQuorum(t testing.TB) quorum {
	q := quorum{raft: l.addrs(t, "LAB_IHA_RAFT_ADDRS"), api: l.addrs(t, "LAB_IHA_API_ADDRS"),
		gossip: l.addrs(t, "LAB_IHA_GOSSIP_ADDRS"), kdump: l.addrs(t, "LAB_IHA_KDUMP_ADDRS"),
		token: "admin:admin", gate: true, netns: true}
	for j := range q.raft {
		q.names = append(q.names, fmt.Sprintf("lab-leader-%d", j+1))
	}
	q.join = q.gossip
	return q
}

// writeQuorum writes, for each of q's three leaders, config.yaml (extra
// over the lab's keys, then nodeKeys(j, dir) for leader j whose directory
// is dir), and the shared clouds.yaml and fencing.yaml, under
// $LAB_DIR/iha/<name>/. An empty value removes a key (its default applies).
func (l *lab) writeQuorum(t testing.TB, name, bin string, q quorum, extra map[string]string, nodeKeys func(j int, dir string) map[string]string) *ihaConfig {
	dir := filepath.Join(l.dir, "iha", strings.ReplaceAll(name, "/", "_"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	raft, api, gossip, kdump := q.raft, q.api, q.gossip, q.kdump
	c := &ihaConfig{dir: dir, bin: bin, hc: &http.Client{Timeout: 3 * time.Second * scale()}}
	if q.gate {
		c.gate = l.vars["LAB_IHA_GATE_FILE"]
	}
	if v := l.vars["LAB_IHA_NETNS"]; v != "" && q.netns {
		c.ns, c.ops = strings.Split(v, ","), l.vars["LAB_OPS_NETNS"]
		c.hc = netnsClient(c.ops)
		for _, ns := range c.ns {
			c.local = append(c.local, netnsClient(ns))
		}
	}
	var peers []string
	for j := range raft {
		peers = append(peers, fmt.Sprintf("%s=%s", q.names[j], raft[j]))
	}
	clouds := fmt.Sprintf("clouds:\n  lab:\n    auth_type: noauth\n    auth:\n      endpoint: %s\n      image_endpoint: %s\n      token: %s\n    region_name: RegionOne\n",
		l.nova, l.glance, q.token)
	var fencing strings.Builder
	fencing.WriteString("FencingConfig:\n")
	for _, h := range l.computes() {
		fmt.Fprintf(&fencing, "  %s:\n    agent: ipmi\n    ipaddr: 127.0.0.1\n    ipport: \"%d\"\n    login: %s\n    passwd: %s\n",
			h, l.bmcPort(h), l.vars["LAB_BMC_USER"], bmcPassword())
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"clouds.yaml": clouds, "fencing.yaml": fencing.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for j := range raft {
		n := &ihaNode{name: q.names[j], dir: filepath.Join(dir, q.names[j]), api: api[j]}
		if err := os.MkdirAll(filepath.Join(n.dir, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		// DELTA and POLL stay IHA's defaults (30 s, 45 s);
		// NOVA_REPORT_INTERVAL is the lab's report_interval.
		keys := map[string]string{
			"EVACUABLE_TAG": "evacuable", "THRESHOLD": "50",
			"TAGGED_IMAGES": "true", "TAGGED_FLAVORS": "true", "TAGGED_AGGREGATES": "false",
			"SMART_EVACUATION": "true", "DETECTION_MODE": "both", "NOVA_REPORT_INTERVAL": l.reportInterval(),
			"FENCING_TIMEOUT": "30", "LOGLEVEL": "INFO",
			"NODE_NAME": n.name, "RAFT_ADDR": raft[j], "API_ADDR": api[j], "RAFT_PEERS": strings.Join(peers, ","),
			"DATA_DIR": filepath.Join(n.dir, "data"),
			// The mesh: the leaders join as controllers; the agents join them.
			"GOSSIP_BIND": gossip[j], "GOSSIP_JOIN": strings.Join(q.join, ","), "GOSSIP_PROFILE": "fast",
			// The keys up.sh made for the lab's agents.
			"GOSSIP_KEYRING": l.keyFile(t, "LAB_IHA_KEYRING"), "CLUSTER_KEY": l.keyFile(t, "LAB_IHA_CLUSTER_KEY"),
			// CHECK_KDUMP stays false (InstanceHA's default): with it the
			// leader waits KDUMP_TIMEOUT (30 s) for a notice before every
			// fence. KDUMP_LISTEN is where a scenario that sets it listens.
			"KDUMP_LISTEN": kdump[j],
		}
		over := extra
		if nodeKeys != nil {
			over = map[string]string{}
			for k, v := range extra {
				over[k] = v
			}
			for k, v := range nodeKeys(j, n.dir) {
				over[k] = v
			}
		}
		for k, v := range over {
			if v == "" {
				delete(keys, k) // the key's default
				continue
			}
			keys[k] = v
		}
		if m := os.Getenv("LAB_SCENARIO_DETECTION"); m != "" {
			keys["DETECTION_MODE"] = m // e.g. nova, for a leader build without the mesh
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
		if err := os.WriteFile(filepath.Join(n.dir, "config.yaml"), []byte(cfg.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		n.env = append(os.Environ(), "INSTANCEHA_CONFIG_PATH="+filepath.Join(n.dir, "config.yaml"),
			"CLOUDS_CONFIG_PATH="+filepath.Join(dir, "clouds.yaml"), "FENCING_CONFIG_PATH="+filepath.Join(dir, "fencing.yaml"),
			"SECURE_CONFIG_PATH="+filepath.Join(dir, "secure.yaml"), "OS_CLOUD=lab")
		c.nodes = append(c.nodes, n)
	}
	c.env = append(os.Environ(), "IHA_ADDR="+strings.Join(api, ","))
	return c
}

// start starts the three leaders, waits until one of them leads, and turns
// the lab's nova-compute gate on (a host started from now on asks them).
// Every process is SIGKILLed by PID when the test ends if still running.
func (c *ihaConfig) start(t testing.TB) {
	for j := range c.nodes {
		c.startNode(t, j)
	}
	if c.gate != "" {
		if err := os.WriteFile(c.gate, []byte(c.dir+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(c.gate) })
	}
	start := time.Now()
	j := c.leader(t, time.Minute)
	t.Logf("3 iha-leaders up, %s leads (%v after start)", c.nodes[j].name, time.Since(start).Round(10*time.Millisecond))
}

// startNode starts (or restarts, on the same data directory) node j.
func (c *ihaConfig) startNode(t testing.TB, j int) *leaderProc {
	n := c.nodes[j]
	logPath := filepath.Join(n.dir, fmt.Sprintf("iha-leader-%d.log", len(n.procs)+1))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(c.bin, "iha-leader"))
	if c.ns != nil {
		// ip netns exec execs iha-leader in place: the PID is the leader's.
		cmd = exec.Command("ip", "netns", "exec", c.ns[j], filepath.Join(c.bin, "iha-leader"))
	}
	cmd.Env = n.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &leaderProc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() { p.kill(t) })
	n.procs = append(n.procs, p)
	waitFor(t, n.name+"'s status API", time.Minute, func() (bool, string) {
		var cl clusterView
		err := c.get(j, "/v1/cluster", &cl)
		return err == nil, fmt.Sprint(err)
	})
	return p
}

// stop sends SIGTERM to every running leader and waits (followers first,
// so the leader does not stay alone without a quorum while they stop).
func (c *ihaConfig) stop(t testing.TB) {
	_ = os.Remove(c.gate)
	lead := c.last
	for j := range c.nodes {
		if j != lead {
			c.nodes[j].proc().stop(t)
		}
	}
	c.nodes[lead].proc().stop(t)
	c.keepLogs(t)
}

// keepLogs copies the three leaders' logs to $LAB_KEEP_LOGS/<config>.log
// when that is set (the lab's own directory is a temporary one: the
// figures' analysis reads the leaders' logs after the run).
func (c *ihaConfig) keepLogs(t testing.TB) {
	dir := os.Getenv("LAB_KEEP_LOGS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("LAB_KEEP_LOGS: %v", err)
		return
	}
	path := filepath.Join(dir, filepath.Base(c.dir)+".log")
	if err := os.WriteFile(path, []byte(c.logText()), 0o644); err != nil {
		t.Logf("LAB_KEEP_LOGS: %v", err)
		return
	}
	t.Logf("leaders' logs kept in %s", path)
}

// clusterView is the part of GET /v1/cluster the scenarios read.
type clusterView struct {
	RaftState   string `json:"raft_state"`
	Term        uint64 `json:"term"`
	CommitIndex uint64 `json:"commit_index"`
	Leader      string `json:"leader"`
	Mesh        struct {
		Wired   bool           `json:"wired"`
		Members int            `json:"members"`
		States  map[string]int `json:"states"`
	} `json:"mesh"`
	Config struct {
		DetectionMode string `json:"detection_mode"`
	} `json:"config"`
}

// hostView is the part of GET /v1/hosts/{host} the scenarios read.
type hostView struct {
	Host       string    `json:"host"`
	Phase      string    `json:"phase"`
	DetectedAt time.Time `json:"detected_at"`
	Fence      *struct {
		Method string    `json:"method"`
		State  string    `json:"state"`
		At     time.Time `json:"at"`
	} `json:"fence"`
	Evidence struct {
		Mode          string    `json:"mode"`
		Source        string    `json:"source"`
		Verdict       string    `json:"verdict"`
		Note          string    `json:"note"`
		MeshState     string    `json:"mesh_state"`
		MeshSince     time.Time `json:"mesh_since"`
		NovaUpdatedAt time.Time `json:"nova_updated_at"`
	} `json:"evidence"`
	Steps []struct {
		Step     string    `json:"step"`
		ServerID string    `json:"server_id"`
		Started  time.Time `json:"started"`
		Finished time.Time `json:"finished"`
		Outcome  string    `json:"outcome"`
		Detail   string    `json:"detail"`
	} `json:"steps"`
	Servers []struct {
		ID          string `json:"id"`
		State       string `json:"state"`
		MigrationID int    `json:"migration_id"`
	} `json:"servers"`
	// Watchdog is the host's watchdog lease and, during a watchdog fence,
	// the wait (absent: its agent never asked for a lease).
	Watchdog *api.Watchdog `json:"watchdog"`
}

// requested counts the servers whose evacuate Nova accepted.
func (h hostView) requested() int {
	n := 0
	for _, s := range h.Servers {
		if s.MigrationID > 0 || s.State == "requested" || s.State == "done" {
			n++
		}
	}
	return n
}

// get decodes GET path on node j's status API.
func (c *ihaConfig) get(j int, path string, v any) error { return c.getWith(c.hc, j, path, v) }

// getLocal is get from inside node j's own network namespace (reaches a
// leader that is cut off from the mesh network); get elsewhere.
func (c *ihaConfig) getLocal(j int, path string, v any) error {
	if c.local == nil {
		return c.get(j, path, v)
	}
	return c.getWith(c.local[j], j, path, v)
}

func (c *ihaConfig) getWith(hc *http.Client, j int, path string, v any) error {
	resp, err := hc.Get("http://" + c.nodes[j].api + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on %s: HTTP %d %s", path, c.nodes[j].name, resp.StatusCode, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, v)
}

// actingLeader returns the node that says it is the Raft leader, or -1.
func (c *ihaConfig) actingLeader() int {
	order := []int{c.last}
	for j := range c.nodes {
		if j != c.last {
			order = append(order, j)
		}
	}
	for _, j := range order {
		select {
		case <-c.nodes[j].proc().done:
			continue
		default:
		}
		var cl clusterView
		if c.get(j, "/v1/cluster", &cl) == nil && cl.RaftState == "Leader" {
			c.last = j
			return j
		}
	}
	return -1
}

// leader waits until a node leads and returns it.
func (c *ihaConfig) leader(t testing.TB, d time.Duration) int {
	t.Helper()
	j := -1
	waitFor(t, "an acting Raft leader among the three", d, func() (bool, string) {
		j = c.actingLeader()
		return j >= 0, "none says Leader"
	})
	return j
}

// hostOnLeader reads host's record from the acting leader (false when no
// node leads at this moment).
func (c *ihaConfig) hostOnLeader(host string) (hostView, bool) {
	j := c.actingLeader()
	if j < 0 {
		return hostView{}, false
	}
	var h hostView
	if err := c.get(j, "/v1/hosts/"+host, &h); err != nil {
		return hostView{}, false
	}
	return h, true
}

// logText is every leader process's log, node by node, oldest first.
func (c *ihaConfig) logText() string {
	var b strings.Builder
	for _, n := range c.nodes {
		for i, p := range n.procs {
			fmt.Fprintf(&b, "=== %s process %d (pid %d)\n%s", n.name, i+1, p.cmd.Process.Pid, p.logText())
		}
	}
	return b.String()
}

// stop sends SIGTERM and waits.
func (p *leaderProc) stop(t testing.TB) {
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
func (p *leaderProc) kill(t testing.TB) {
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

// iha runs the CLI against the three leaders' status APIs (tried in turn).
func (c *ihaConfig) iha(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*scale())
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "iha"), args...)
	if c.ops != "" {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.ops, filepath.Join(c.bin, "iha")}, args...)...)
	}
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// bmcEvent is one line of $LAB_DIR/bmc/HOST/history (ctl.sh bmc).
type bmcEvent struct {
	at  time.Time
	op  string // off, on, reset
	was string // power:0 or power:1
}

func (l *lab) bmcHistory(host string, since time.Time) []bmcEvent {
	b, _ := os.ReadFile(filepath.Join(l.dir, "bmc", host, "history"))
	var out []bmcEvent
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		ms, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if at := time.UnixMilli(ms); !at.Before(since) {
			out = append(out, bmcEvent{at: at, op: f[1], was: f[3]})
		}
	}
	return out
}
