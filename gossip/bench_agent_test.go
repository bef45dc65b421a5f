package gossip

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/pkg/identity"
)

// BenchmarkAgentCost runs one real iha-agent process joined to a mesh of
// n-1 in-process members over real UDP/TCP on loopback and reports the
// agent's RSS and CPU (% of one core) over a minute once the mesh settled.
// Its figures are the cost of one agent on a compute of a 1,000-host cloud;
// proc_cores says whether the simulated mesh kept up. IHA_BENCH_TIMESCALE
// applies as in BenchmarkDetection (see there). "encrypted" is the default
// mesh (a keyring and a host key, every packet AES-GCM); "plain" is the
// insecure switch, for the cost of encryption.
func BenchmarkAgentCost(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, prof := range benchProfiles(b) {
			benchAgentCost(b, n, prof, true)
			benchAgentCost(b, n, prof, false)
		}
	}
}

// benchAgentCost is one BenchmarkAgentCost run: n members, profile prof.
func benchAgentCost(b *testing.B, n int, prof string, encrypted bool) {
	mode := map[bool]string{true: "encrypted", false: "plain"}[encrypted]
	b.Run(fmt.Sprintf("n=%d/%s/udp/%s", n, prof, mode), func(b *testing.B) {
		bin := buildAgent(b)
		members := n - 1
		raiseNofile(b, 2*members+256)
		// IHA_BENCH_TIMESCALE=k slows the in-process members and the
		// agent alike (every interval ×k): 999 UDP members in one
		// process do not keep up on 2 cores at the real pace. The
		// agent's RSS does not depend on the pace (its member table is
		// the same); its CPU is per probe and per gossip round, so the
		// real-pace figure is the measured one ×k.
		k := timeScale(b)
		p := profileNamed(b, prof).slowed(k)
		servePprof()
		sinceStart = startCPU()
		// A mesh that cannot converge on this machine (1,000 members in
		// one process on 2 cores) is still measured: the agent's cost is
		// then that of a churning mesh, and the log says so.
		dir := b.TempDir()
		keys, agentKeys := benchKeys(b, dir, encrypted)
		c := startBenchClusterKeyed(b, members, p, keys)
		converged := c.tryConverge(members, scale(2*time.Minute))
		b.Logf("mesh of %d in-process members after %v: %v (%v)",
			members, time.Since(sinceStart.wall).Round(time.Millisecond), errOr(converged, "converged"), sinceStart)

		port := freePort(b)
		cfg := fmt.Sprintf("node_name: agent-under-test\nnova_host: agent-under-test\nbind: 127.0.0.1:%d\njoin: [%q]\nkdump_listen: \"off\"\nstate_dir: %q\nlog_level: warn\n%s"+
			"gossip: {GOSSIP_PROBE_INTERVAL: %q, GOSSIP_PROBE_TIMEOUT: %q, GOSSIP_SUSPICION_MULT: \"%d\", GOSSIP_GOSSIP_INTERVAL: %q}\n",
			port, c.ctl.Addr(), dir, agentKeys, p.ProbeInterval.String(), p.ProbeTimeout.String(), p.SuspicionMult, p.GossipInterval.String())
		cfgFile := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		agent := startAgentProc(b, bin, "-config", cfgFile)
		seen := func() bool {
			for _, m := range c.ctl.Members() {
				if m.Name == "agent-under-test" && m.State == StateAlive {
					return true
				}
			}
			return false
		}
		if converged == nil {
			testkit.WaitFor(b, scale(2*time.Minute), "the controller to see the agent alive", seen)
			c.waitConverged(n, scale(2*time.Minute))
		} else {
			deadline := time.Now().Add(scale(time.Minute))
			for !seen() && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			b.Logf("the controller sees the agent alive: %v", seen())
		}
		// The join's push/pull gave the agent the full member list; let
		// the joins' gossip die down before measuring.
		time.Sleep(stretch(30*time.Second, k))

		window := stretch(60*time.Second, k) // as many protocol rounds at any time scale
		susp0 := c.obs.count(KindSuspect)
		cpu0 := procStatCPU(b, agent.Pid)
		mesh := startCPU()
		t0 := time.Now()
		var rssMax float64
		for time.Since(t0) < window {
			time.Sleep(time.Second)
			rssMax = max(rssMax, vmRSS(b, agent.Pid))
		}
		cpu := procStatCPU(b, agent.Pid) - cpu0
		wall := time.Since(t0)
		rss := vmRSS(b, agent.Pid)
		alive, suspect := c.atController()
		b.ReportMetric(rss, "agent_RSS_MiB")
		b.ReportMetric(rssMax, "agent_RSS_max_MiB")
		b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "agent_CPU_%core")
		if k != 1 {
			b.ReportMetric(k*100*cpu.Seconds()/wall.Seconds(), "agent_CPU_%core_x_timescale")
			b.Logf("IHA_BENCH_TIMESCALE %g: every gossip interval of the members and the agent was ×%g; agent_CPU_%%core_x_timescale (the measured CPU ×%g) estimates the real pace, RSS needs no correction", k, k, k)
		}
		b.ReportMetric(mesh.cores(), "proc_cores")
		b.ReportMetric(mesh.waiting(), "runq_wait")
		b.ReportMetric(float64(c.obs.count(KindSuspect)-susp0), "suspects_at_ctl")
		b.Logf("agent among %d members over %v: RSS %.1f MiB (max %.1f), CPU %.2f %% of one core; the controller sees %d alive, %d suspect; %d suspect events during the window; mesh %v",
			n, wall.Round(time.Second), rss, rssMax, 100*cpu.Seconds()/wall.Seconds(), alive, suspect, c.obs.count(KindSuspect)-susp0, mesh)
	})
}

// benchKeys makes, when encrypted, a gossip keyring file and the agent's
// host key file in dir, and returns the members' keys and the agent.yaml
// lines naming the files; otherwise nil and insecure: true.
func benchKeys(b testing.TB, dir string, encrypted bool) ([][]byte, string) {
	if !encrypted {
		return nil, "insecure: true\n"
	}
	gk, err := identity.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	cluster, err := identity.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	keyring, hostKey := filepath.Join(dir, "gossip.keyring"), filepath.Join(dir, "host.key")
	if err := WriteKeyring(keyring, [][]byte{gk}); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(hostKey, []byte(identity.EncodeKey(identity.HostKey(cluster, "agent-under-test"))), 0o600); err != nil {
		b.Fatal(err)
	}
	return [][]byte{gk}, fmt.Sprintf("keyring: %q\nhost_key: %q\n", keyring, hostKey)
}

func errOr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// buildAgent builds cmd/iha-agent into the benchmark's temporary directory
// (removed when it ends; Go's build cache makes every build after the first
// quick).
func buildAgent(b testing.TB) string {
	bin := filepath.Join(b.TempDir(), "iha-agent")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/ihaproject/iha/cmd/iha-agent").CombinedOutput()
	if err != nil {
		b.Fatalf("go build ./cmd/iha-agent: %v\n%s", err, out)
	}
	return bin
}

// startAgentProc starts the agent and stops it by its PID when the benchmark
// ends (SIGTERM, then SIGKILL after 10 s).
func startAgentProc(b testing.TB, bin string, args ...string) *os.Process {
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	var mu sync.Mutex
	cmd.Stdout = lockedWriter{&mu, &out}
	cmd.Stderr = lockedWriter{&mu, &out}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		mu.Lock()
		defer mu.Unlock()
		if b.Failed() || out.Len() > 0 {
			b.Logf("iha-agent output:\n%s", out.String())
		}
	})
	return cmd.Process
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1.
func freePort(b testing.TB) int {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	b.Fatal("no free TCP+UDP port on 127.0.0.1")
	return 0
}

// raiseNofile raises this process's open-file limit to at least want (each
// UDP member holds a UDP socket, a TCP listener and short-lived streams).
func raiseNofile(b testing.TB, want int) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		b.Fatal(err)
	}
	if rl.Cur >= uint64(want) {
		return
	}
	rl.Cur = min(max(uint64(want), rl.Cur), rl.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		b.Fatal(err)
	}
	if rl.Cur < uint64(want) {
		b.Fatalf("open-file limit %d (hard) is below the %d this mesh needs", rl.Max, want)
	}
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procStatCPU is a process's utime+stime from /proc/PID/stat.
func procStatCPU(b testing.TB, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(raw, ')')
	f := strings.Fields(string(raw[i+1:]))
	// After the name: state is field 3, utime field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[14-3], 10, 64)
	st, err2 := strconv.ParseInt(f[15-3], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parse /proc/%d/stat: %v %v", pid, err1, err2)
	}
	return time.Duration(ut+st) * time.Second / clockTicks
}

// vmRSS is a process's resident set in MiB.
func vmRSS(b testing.TB, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
