//go:build lab

package labtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testkit"
)

// scale stretches every deadline on a slow or busy machine
// (IHA_TEST_TIMEOUT_SCALE, default 1).
func scale() time.Duration { return max(1, time.Duration(testkit.Factor(1))) }

// lab is one lab brought up in its own state directory and port block.
type lab struct {
	t     testing.TB
	home  string // deploy/lab
	dir   string // LAB_DIR
	env   []string
	vars  map[string]string // from $LAB_DIR/env
	seen  map[int]string    // every PID the lab ever recorded -> daemon name
	start time.Time
}

func labHome(t testing.TB) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// portBase keeps the test's lab off the default block (18700) that a
// developer's `make lab-up` uses.
func portBase() string {
	if v := os.Getenv("LAB_TEST_PORT_BASE"); v != "" {
		return v
	}
	return "18800"
}

func newLab(t testing.TB) *lab {
	l := &lab{t: t, home: labHome(t), dir: t.TempDir(), seen: map[int]string{}}
	// Computes in network namespaces and a fast heartbeat (2 s, down after
	// 10 s), so that a cut link shows in Nova within seconds. A 6 s
	// service_down_time made healthy computes flap to down on this 2-core
	// machine at load 20: CPU-starved heartbeats.
	l.env = append(os.Environ(), "LAB_DIR="+l.dir, "LAB_PORT_BASE="+portBase(),
		fmt.Sprintf("LAB_TIMEOUT_SCALE=%d", int(scale())),
		"LAB_NETNS=1", "LAB_REPORT_INTERVAL=2", "LAB_SERVICE_DOWN_TIME=10")
	return l
}

func (l *lab) sh(timeout time.Duration, script string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout*scale())
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(l.home, script), args...)
	cmd.Env = l.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (l *lab) up(n int) {
	t := l.t
	if out, err := l.sh(15*time.Minute, "install.sh"); err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { // a failing test still leaves nothing behind
		if _, err := os.Stat(filepath.Join(l.dir, "pids")); err == nil {
			if out, err := l.sh(3*time.Minute, "down.sh"); err != nil {
				t.Errorf("cleanup down.sh: %v\n%s", err, out)
			}
		}
	})
	l.start = time.Now()
	out, err := l.sh(10*time.Minute, "up.sh", strconv.Itoa(n))
	l.recordPIDs()
	if err != nil {
		t.Fatalf("up.sh: %v\n%s", err, out)
	}
	t.Logf("up.sh %d computes in %v\n%s", n, time.Since(l.start).Round(time.Second), out)
	l.vars = readEnv(t, filepath.Join(l.dir, "env"))
}

// recordPIDs notes every PID in $LAB_DIR/pids and every member of its
// process group, so that the final check covers workers and children too.
func (l *lab) recordPIDs() {
	files, _ := filepath.Glob(filepath.Join(l.dir, "pids", "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			l.t.Errorf("%s holds %q", f, b)
			continue
		}
		name := strings.TrimSuffix(filepath.Base(f), ".pid")
		l.seen[pid] = name
		for _, m := range groupMembers(pid) {
			l.seen[m] = name + " (group member)"
		}
	}
}

// procState is the state letter of /proc/PID/stat ("" when gone) and its
// process group.
func procState(pid int) (state string, pgrp int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return "", 0
	}
	pgrp, _ = strconv.Atoi(f[2])
	return f[0], pgrp
}

// running: exists and is not a zombie (a zombie has released everything;
// only its parent's wait is missing).
func running(pid int) bool {
	st, _ := procState(pid)
	return st != "" && st != "Z"
}

func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, g := procState(pid); g == pgid && st != "" && st != "Z" {
			out = append(out, pid)
		}
	}
	return out
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
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if ok {
			vars[k] = v
		}
	}
	return vars
}

func (l *lab) pidOf(name string) int {
	b, err := os.ReadFile(filepath.Join(l.dir, "pids", name+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// nova GETs path from the lab's Nova at microversion 2.53 into v.
func (l *lab) nova(path string, v any) error {
	req, err := http.NewRequest("GET", l.vars["NOVA_CONTRACT_URL"]+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Auth-Token", l.vars["NOVA_CONTRACT_TOKEN"])
	req.Header.Set("OpenStack-API-Version", "compute 2.53")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

type service struct {
	Host, State string
	UpdatedAt   string `json:"updated_at"`
}

func (l *lab) service(host string) service {
	var body struct{ Services []service }
	if err := l.nova("/os-services?binary=nova-compute&host="+host, &body); err != nil {
		l.t.Fatal(err)
	}
	if len(body.Services) != 1 {
		l.t.Fatalf("os-services for %s: %v", host, body.Services)
	}
	return body.Services[0]
}

func (l *lab) services() map[string]string {
	var body struct {
		Services []struct{ Host, State string }
	}
	if err := l.nova("/os-services?binary=nova-compute", &body); err != nil {
		l.t.Fatal(err)
	}
	m := map[string]string{}
	for _, s := range body.Services {
		m[s.Host] = s.State
	}
	return m
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	testkit.WaitForState(t, d*scale(), 200*time.Millisecond, what, cond)
}

// ctl runs $NOVA_CONTRACT_CTL as the contract suite does: with the test's
// environment but no LAB_DIR, so the command itself must find this lab.
func (l *lab) ctl(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute*scale())
	defer cancel()
	return exec.CommandContext(ctx, l.vars["NOVA_CONTRACT_CTL"], args...).CombinedOutput()
}

func (l *lab) ipmi(host int, args ...string) (string, error) {
	port, _ := strconv.Atoi(l.vars["LAB_BMC_PORT_BASE"])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*scale())
	defer cancel()
	base := []string{"-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", strconv.Itoa(port + host),
		"-U", l.vars["LAB_BMC_USER"], "-P", "labpass"}
	out, err := exec.CommandContext(ctx, "ipmitool", append(base, args...)...).CombinedOutput()
	return string(out), err
}

// udpInode is the socket inode of the UDP socket bound to 127.0.0.1:port.
func udpInode(t *testing.T, port int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 9 && f[1] == want {
			return f[9]
		}
	}
	t.Fatalf("nothing bound to udp 127.0.0.1:%d", port)
	return ""
}

func TestLabUpChecksDownLeavesNoProcess(t *testing.T) {
	l := newLab(t)
	l.up(3)

	t.Run("env names everything the contract suite needs", func(t *testing.T) {
		for _, k := range []string{"NOVA_CONTRACT_URL", "NOVA_CONTRACT_TOKEN", "NOVA_CONTRACT_COMPUTES",
			"NOVA_CONTRACT_CTL", "NOVA_CONTRACT_IMAGE", "NOVA_CONTRACT_FLAVOR"} {
			if l.vars[k] == "" {
				t.Errorf("%s missing from %s/env", k, l.dir)
			}
		}
		if got := l.vars["NOVA_CONTRACT_COMPUTES"]; got != "lab-compute-1,lab-compute-2,lab-compute-3" {
			t.Errorf("computes %q", got)
		}
	})
	t.Run("three computes are up", func(t *testing.T) {
		// up.sh saw them up; a starved heartbeat may have lapsed since.
		waitFor(t, "three computes up", time.Minute, func() (bool, string) {
			m := l.services()
			return m["lab-compute-1"] == "up" && m["lab-compute-2"] == "up" && m["lab-compute-3"] == "up", fmt.Sprint(m)
		})
	})
	t.Run("no daemon but the controller has DB credentials", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(l.dir, "etc", "nova", "lab-compute-1.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "mysql") || strings.Contains(string(b), "[database]") {
			t.Errorf("compute config has DB settings:\n%s", b)
		}
	})
	t.Run("BMC power off kills the compute, power on starts a new one", func(t *testing.T) {
		old := l.pidOf("lab-compute-1.nova-compute")
		if old == 0 || !running(old) {
			t.Fatalf("lab-compute-1 nova-compute pid %d not running", old)
		}
		if out, err := l.ipmi(1, "chassis", "power", "status"); err != nil || !strings.Contains(out, "is on") {
			t.Fatalf("power status: %v %s", err, out)
		}
		if out, err := l.ipmi(1, "chassis", "power", "off"); err != nil {
			t.Fatalf("power off: %v %s", err, out)
		}
		waitFor(t, "nova-compute to die", 10*time.Second, func() (bool, string) {
			return !running(old), "pid still running"
		})
		if out, err := l.ipmi(1, "chassis", "power", "status"); err != nil || !strings.Contains(out, "is off") {
			t.Fatalf("power status after off: %v %s", err, out)
		}
		if out, err := l.ipmi(1, "chassis", "power", "off"); err != nil { // idempotent
			t.Fatalf("second power off: %v %s", err, out)
		}
		if out, err := l.ipmi(1, "chassis", "power", "on"); err != nil {
			t.Fatalf("power on: %v %s", err, out)
		}
		l.recordPIDs()
		nw := l.pidOf("lab-compute-1.nova-compute")
		if nw == 0 || nw == old || !running(nw) {
			t.Fatalf("after power on: pid %d (was %d)", nw, old)
		}
		// The BMC's UDP socket must not leak into the compute it started
		// (the port would stay bound after the BMC is gone).
		port, _ := strconv.Atoi(l.vars["LAB_BMC_PORT_BASE"])
		inode := udpInode(t, port+1)
		waitFor(t, "the new compute to hold no BMC socket", 10*time.Second, func() (bool, string) {
			fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", nw))
			for _, fd := range fds {
				if dst, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", nw, fd.Name())); dst == "socket:["+inode+"]" {
					return false, "fd " + fd.Name() + " is the BMC's socket " + dst
				}
			}
			return true, ""
		})
	})
	t.Run("ctl freeze stops the compute's processes and thaw resumes them", func(t *testing.T) {
		pid := l.pidOf("lab-compute-2.nova-compute")
		for _, step := range []struct{ verb, want string }{{"freeze", "T"}, {"thaw", "S"}} {
			out, err := l.ctl(step.verb, "lab-compute-2")
			if err != nil {
				t.Fatalf("ctl %s: %v %s", step.verb, err, out)
			}
			waitFor(t, "state "+step.want, 10*time.Second, func() (bool, string) {
				st, _ := procState(pid)
				if step.want == "S" {
					return st != "T" && st != "", st
				}
				return st == step.want, st
			})
		}
	})
	t.Run("ctl stop kills the compute and start brings a new one that heartbeats", func(t *testing.T) {
		old := l.pidOf("lab-compute-3.nova-compute")
		if out, err := l.ctl("stop", "lab-compute-3"); err != nil {
			t.Fatalf("ctl stop: %v %s", err, out)
		}
		if running(old) {
			t.Fatalf("pid %d survived ctl stop", old)
		}
		if out, err := l.ctl("power", "lab-compute-3"); err != nil || strings.TrimSpace(string(out)) != "power:0" {
			t.Fatalf("ctl power after stop: %v %q", err, out)
		}
		if out, err := l.ctl("start", "lab-compute-3"); err != nil {
			t.Fatalf("ctl start: %v %s", err, out)
		}
		l.recordPIDs()
		if nw := l.pidOf("lab-compute-3.nova-compute"); nw == old || !running(nw) {
			t.Fatalf("ctl start: pid %d (was %d)", nw, old)
		}
		// Nova stores updated_at in whole seconds: only a heartbeat from the
		// new process can move it past the start second.
		started := time.Now().UTC().Truncate(time.Second)
		waitFor(t, "a heartbeat from the new lab-compute-3", 2*time.Minute, func() (bool, string) {
			sv := l.service("lab-compute-3")
			u, err := time.Parse("2006-01-02T15:04:05.999999", sv.UpdatedAt)
			return err == nil && u.After(started) && sv.State == "up", fmt.Sprint(sv)
		})
	})

	var namespaces []string
	t.Run("a compute lives in its own network namespace and a cut link takes it down", func(t *testing.T) {
		pid := l.pidOf("lab-compute-1.nova-compute")
		mine, _ := os.Readlink("/proc/self/ns/net")
		its, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil || its == mine {
			t.Fatalf("nova-compute %d netns %q, ours %q (%v)", pid, its, mine, err)
		}
		files, _ := filepath.Glob(filepath.Join(l.dir, "netns", "*"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			namespaces = append(namespaces, strings.TrimSpace(string(b)))
		}
		if len(namespaces) != 3 {
			t.Fatalf("namespaces recorded: %v", namespaces)
		}
		// Start from a heartbeating compute (a loaded machine can make a
		// just-restarted one look down for a while).
		waitFor(t, "lab-compute-1 up before the cut", 2*time.Minute, func() (bool, string) {
			sv := l.service("lab-compute-1")
			return sv.State == "up", fmt.Sprint(sv)
		})
		if out, err := l.ctl("cut", "lab-compute-1"); err != nil {
			t.Fatalf("ctl cut: %v %s", err, out)
		}
		mended := false
		defer func() {
			if !mended {
				_, _ = l.ctl("mend", "lab-compute-1")
			}
		}()
		waitFor(t, "lab-compute-1 down behind the cut", time.Minute, func() (bool, string) {
			sv := l.service("lab-compute-1")
			return sv.State == "down", fmt.Sprint(sv)
		})
		if !running(pid) {
			t.Fatalf("the cut killed nova-compute %d", pid)
		}
		// Behind the cut no heartbeat arrives: updated_at stays put for
		// four report intervals (a live compute moves it every 2 s).
		frozen := l.service("lab-compute-1").UpdatedAt
		for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
			if u := l.service("lab-compute-1").UpdatedAt; u != frozen {
				t.Fatalf("updated_at moved from %s to %s behind the cut", frozen, u)
			}
		}
		if out, err := l.ctl("mend", "lab-compute-1"); err != nil {
			t.Fatalf("ctl mend: %v %s", err, out)
		}
		mended = true
		waitFor(t, "a heartbeat from lab-compute-1 after the mend", time.Minute, func() (bool, string) {
			sv := l.service("lab-compute-1")
			return sv.State == "up" && sv.UpdatedAt != frozen, fmt.Sprint(sv)
		})
	})

	// Last: down.sh stops everything ever recorded.
	l.recordPIDs()
	start := time.Now()
	out, err := l.sh(3*time.Minute, "down.sh")
	t.Logf("down.sh in %v\n%s", time.Since(start).Round(100*time.Millisecond), out)
	if err != nil {
		t.Fatalf("down.sh: %v", err)
	}
	var alive []string
	for pid, name := range l.seen {
		if running(pid) {
			alive = append(alive, fmt.Sprintf("%d (%s)", pid, name))
		}
		if m := groupMembers(pid); len(m) > 0 {
			alive = append(alive, fmt.Sprintf("group %d (%s): %v", pid, name, m))
		}
	}
	sort.Strings(alive)
	if len(alive) > 0 {
		t.Fatalf("still running after down.sh: %v", alive)
	}
	for _, ns := range namespaces {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			t.Errorf("network namespace %s left behind", ns)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(l.dir, "pids", "*.pid")); len(left) > 0 {
		t.Fatalf("pid files left: %v", left)
	}
	if out, err := l.sh(time.Minute, "down.sh"); err != nil { // idempotent
		t.Fatalf("second down.sh: %v\n%s", err, out)
	}
	t.Logf("checked %d recorded PIDs: all gone", len(l.seen))
}

// rssMiB sums the resident memory of every recorded process group.
func (l *lab) rssMiB() float64 {
	var kib int
	files, _ := filepath.Glob(filepath.Join(l.dir, "pids", "*.pid"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		for _, m := range groupMembers(pid) {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", m))
			for _, line := range strings.Split(string(st), "\n") {
				if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
					n, _ := strconv.Atoi(f[1])
					kib += n
				}
			}
		}
	}
	return float64(kib) / 1024
}

// BenchmarkLabUpDown measures a warm start (the schema dump cached by an
// earlier run; the first iteration of a fresh cache is a cold one), the
// lab's memory, and the stop. Run with -benchtime=1x:
//
//	go test -tags lab -run '^$' -bench LabUpDown -benchtime=1x ./deploy/lab/labtest/
//
// LAB_CACHE pointing at an empty directory measures a cold start.
func BenchmarkLabUpDown(b *testing.B) {
	var up, down, rss float64
	for i := 0; i < b.N; i++ {
		l := newLab(b)
		start := time.Now()
		l.up(3)
		up += time.Since(start).Seconds()
		rss += l.rssMiB()
		start = time.Now()
		if out, err := l.sh(3*time.Minute, "down.sh"); err != nil {
			b.Fatalf("down.sh: %v\n%s", err, out)
		}
		down += time.Since(start).Seconds()
	}
	n := float64(b.N)
	b.ReportMetric(up/n, "up-s/op")
	b.ReportMetric(down/n, "down-s/op")
	b.ReportMetric(rss/n, "RSS-MiB")
	b.ReportMetric(0, "ns/op")
}

// A failed up.sh stops what it had started: here the cached schema dump is
// garbage, so the restore fails after MariaDB, epmd, RabbitMQ and the
// neutron stub are running. The bad dump is removed so the next up syncs.
func TestFailedUpLeavesNoProcessAndDropsABadDump(t *testing.T) {
	l := newLab(t)
	cache := t.TempDir()
	l.env = append(l.env, "LAB_CACHE="+cache)
	if out, err := l.sh(15*time.Minute, "install.sh"); err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	out, err := l.sh(time.Minute, "up.sh", "--dump-path")
	if err != nil {
		t.Fatalf("up.sh --dump-path: %v\n%s", err, out)
	}
	dump := strings.TrimSpace(out)
	if filepath.Dir(dump) != cache {
		t.Fatalf("dump path %q is not in LAB_CACHE %s", dump, cache)
	}
	if err := os.WriteFile(dump, []byte("THIS IS NOT SQL;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // if the check below fails, still stop everything
		if _, err := os.Stat(filepath.Join(l.dir, "pids")); err == nil {
			_, _ = l.sh(3*time.Minute, "down.sh")
		}
	})

	// Record PIDs as they appear: up.sh removes them when it gives up.
	done := make(chan struct{})
	go func() {
		defer close(done)
		out, err = l.sh(5*time.Minute, "up.sh", "2")
	}()
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(100 * time.Millisecond):
		}
		l.recordPIDs()
	}
	if err == nil {
		t.Fatalf("up.sh succeeded with a garbage dump:\n%s", out)
	}
	t.Logf("up.sh failed as it should:\n%s", out)
	if !strings.Contains(out, "removed it") {
		t.Errorf("up.sh did not say it removed the bad dump")
	}
	if _, err := os.Stat(dump); !os.IsNotExist(err) {
		t.Errorf("bad dump still cached: %v", err)
	}
	names := map[string]bool{}
	for _, n := range l.seen {
		// A process's own PID may have been recorded under its group
		// member label only: either way it was recorded.
		names[strings.TrimSuffix(n, " (group member)")] = true
	}
	for _, want := range []string{"mariadb", "rabbitmq", "epmd", "neutron-stub"} {
		if !names[want] {
			t.Errorf("never saw %s recorded: the failure came too early to test the cleanup (%v)", want, names)
		}
	}
	for pid, name := range l.seen {
		if running(pid) {
			t.Errorf("%d (%s) still running after the failed up", pid, name)
		}
	}
}
