// Package simbmc runs real BMCs for tests: OpenIPMI's ipmi_sim on
// 127.0.0.1, whose chassis power is the life of a real "host" process.
//
// `get power` answers power:1 while the host process (a `sleep`) runs;
// `set power 0` SIGKILLs it; `set power 1` starts a new one. A stuck BMC
// accepts power down and does nothing, so it never reports off. Every
// process it starts is stopped by PID in t.Cleanup.
//
// It never listens outside 127.0.0.1 and never touches processes it did not
// start. Packages using it call MaybeReaper first in TestMain.
package simbmc

import (
	"context"
	"errors"
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

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// IP is the only address simulated BMCs listen on.
const IP = "127.0.0.1"

// Options describe a simulated BMC.
type Options struct {
	User     string // default "admin"
	Password string // default "ipmi-sim-pw"; letters, digits, - and _ only
	Off      bool   // start with the host powered off
}

// BMC is one running ipmi_sim and its host process.
type BMC struct {
	Port     int
	User     string
	Password string

	dir    string
	reaper *exec.Cmd
	stdin  *os.File // the reaper stops everything when this closes
	exited chan struct{}
	once   sync.Once
}

// Scale multiplies d by IHA_TEST_TIMEOUT_SCALE (default 1) so that
// deadlines can be widened on a slow machine without editing tests.
func Scale(d time.Duration) time.Duration {
	if f, err := strconv.ParseFloat(os.Getenv("IHA_TEST_TIMEOUT_SCALE"), 64); err == nil && f > 0 {
		return time.Duration(float64(d) * f)
	}
	return d
}

// Start runs one BMC and waits until it answers a lanplus chassis status.
// It fails the test if ipmi_sim is missing or never answers.
func Start(tb testing.TB, o Options) *BMC {
	tb.Helper()
	o = check(tb, o)
	var lastErr error
	// A free port can be taken by someone else between our probe and
	// ipmi_sim's bind: try a few ports.
	for try := 0; try < 3; try++ {
		b, err := start(tb, o)
		if err == nil {
			return b
		}
		lastErr = err
		tb.Logf("simbmc: start failed, retrying on another port: %v", err)
	}
	tb.Fatalf("simbmc: %v", lastErr)
	return nil
}

// check fails the test if ipmi_sim is missing or o cannot be written to
// lan.conf, and fills in defaults.
func check(tb testing.TB, o Options) Options {
	tb.Helper()
	if _, err := exec.LookPath("ipmi_sim"); err != nil {
		tb.Fatalf("ipmi_sim not found (Debian package openipmi, see scripts/install-test-deps.sh): %v", err)
	}
	if o.User == "" {
		o.User = "admin"
	}
	if o.Password == "" {
		o.Password = "ipmi-sim-pw"
	}
	for _, v := range []string{o.User, o.Password} {
		if strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			tb.Fatalf("simbmc: user and password must be letters, digits, - or _ (lan.conf quoting)")
		}
	}
	return o
}

// StartN runs n BMCs in parallel.
func StartN(tb testing.TB, n int, o Options) []*BMC {
	tb.Helper()
	o = check(tb, o)
	out := make([]*BMC, n)
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lastErr error
			for try := 0; try < 3; try++ {
				b, err := start(tb, o)
				if err == nil {
					out[i] = b
					return
				}
				lastErr = err
			}
			errs <- lastErr.Error()
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		tb.Fatalf("simbmc: %s", e)
	}
	return out
}

func start(tb testing.TB, o Options) (*BMC, error) {
	dir, err := os.MkdirTemp(tb.TempDir(), "bmc")
	if err != nil {
		return nil, err
	}
	port, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	b := &BMC{Port: port, User: o.User, Password: o.Password, dir: dir, exited: make(chan struct{})}
	if err := b.writeFiles(); err != nil {
		return nil, err
	}
	if err := b.spawn(); err != nil {
		b.Stop()
		return nil, err
	}
	if !o.Off {
		if err := b.powerOnHost(); err != nil {
			b.Stop()
			return nil, err
		}
	}
	tb.Cleanup(func() {
		b.Stop()
		if tb.Failed() {
			if log, err := os.ReadFile(filepath.Join(dir, "ipmi_sim.log")); err == nil {
				tb.Logf("ipmi_sim on port %d:\n%s", port, log)
			}
		}
	})
	if err := b.waitReady(Scale(15 * time.Second)); err != nil {
		b.Stop()
		return nil, err
	}
	return b, nil
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", IP+":0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

const chassisScript = `#!/bin/sh
# chassis_control for ipmi_sim: the chassis power is the life of the host
# process whose PID is in host.pid. Idempotent: ipmitool and go-ipmi resend.
dir='@DIR@'
pidf="$dir/host.pid"
echo "$*" >> "$dir/calls.log"
# alive uses shell builtins only: fifty BMCs on two cores run this a lot.
alive() {
	[ -s "$pidf" ] || return 1
	read -r pid < "$pidf" || return 1
	read -r st 2>/dev/null < "/proc/$pid/stat" || return 1
	st=${st##*) }
	st=${st%% *}
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
# A slow BMC: every chassis request waits (ipmi_sim waits for this script).
if [ -s "$dir/slow" ]; then sleep "$(cat "$dir/slow")"; fi
dev=$1; op=$2; shift 2
case $op in
get)
	for v in "$@"; do
		case $v in
		power) if alive; then echo "power:1"; else echo "power:0"; fi ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		k=$1; v=$2; shift 2
		case $k in
		power)
			if [ "$v" = 0 ]; then
				[ -e "$dir/stuck" ] && continue
				if [ -s "$dir/offdelay" ]; then
					# A slow BMC: accept now, power off later.
					if alive; then
						(sleep "$(cat "$dir/offdelay")"; kill -9 "$pid") </dev/null >/dev/null 2>&1 &
					fi
					continue
				fi
				if alive; then kill -9 "$pid"; fi
				i=0
				while alive && [ $i -lt 100 ]; do sleep 0.01; i=$((i+1)); done
			else
				if ! alive; then
					setsid sleep 3600 </dev/null >/dev/null 2>&1 &
					echo $! > "$pidf.tmp" && mv "$pidf.tmp" "$pidf"
				fi
			fi ;;
		esac
	done ;;
esac
exit 0
`

const lanConf = `name "ihasim"
set_working_mc 0x20
  startlan 1
    addr @IP@ @PORT@
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "@SCRIPT@ 0x20"
  user 1 true  ""        ""        user  10 none md2 md5 straight
  user 2 true  "@USER@"  "@PASS@"  admin 10 none md2 md5 straight
`

const bmcEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
`

func (b *BMC) writeFiles() error {
	script := filepath.Join(b.dir, "chassis.sh")
	r := strings.NewReplacer("@DIR@", b.dir, "@IP@", IP, "@PORT@", strconv.Itoa(b.Port),
		"@SCRIPT@", script, "@USER@", b.User, "@PASS@", b.Password)
	files := []struct {
		name, text string
		mode       os.FileMode
	}{
		{"chassis.sh", r.Replace(chassisScript), 0o755},
		{"lan.conf", r.Replace(lanConf), 0o600},
		{"bmc.emu", bmcEmu, 0o600},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(b.dir, f.name), []byte(f.text), f.mode); err != nil {
			return err
		}
	}
	return os.Mkdir(filepath.Join(b.dir, "state"), 0o700)
}

// powerOnHost has the reaper run the script's `set power 1` (so that it
// adopts the host) and waits until the host runs.
func (b *BMC) powerOnHost() error {
	if _, err := b.stdin.WriteString("power-on\n"); err != nil {
		return fmt.Errorf("asking the reaper to power on: %w", err)
	}
	within := Scale(5 * time.Second)
	deadline := time.Now().Add(within)
	for !b.HostAlive() {
		if time.Now().After(deadline) {
			return fmt.Errorf("host of BMC on port %d did not start within %s", b.Port, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// spawn starts the reaper (this test binary, re-executed) which starts
// ipmi_sim. Its stdin is a pipe we hold: when we close it or die, the
// reaper stops ipmi_sim and every host below it.
func (b *BMC) spawn() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(b.dir, "ipmi_sim.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd := exec.Command(self, "ipmi_sim", "-n",
		"-c", filepath.Join(b.dir, "lan.conf"),
		"-f", filepath.Join(b.dir, "bmc.emu"),
		"-s", filepath.Join(b.dir, "state"))
	cmd.Env = append(os.Environ(), reaperEnv+"=1", scriptEnv+"="+filepath.Join(b.dir, "chassis.sh"))
	cmd.Dir = b.dir
	cmd.Stdin = pr
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		pw.Close()
		return err
	}
	b.reaper, b.stdin = cmd, pw
	go func() {
		_ = cmd.Wait()
		close(b.exited)
	}()
	return nil
}

func (b *BMC) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-b.exited:
			log, _ := os.ReadFile(filepath.Join(b.dir, "ipmi_sim.log"))
			return fmt.Errorf("ipmi_sim on port %d exited early: %s", b.Port, log)
		default:
		}
		_, lastErr = b.status(context.Background())
		if lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("ipmi_sim on port %d not ready within %s: %v", b.Port, within, lastErr)
}

// status reads the chassis power through IPMI, as a client would.
func (b *BMC) status(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := client.NewClient(IP, b.Port, b.User, b.Password)
	if err != nil {
		return false, err
	}
	c.WithInterface(client.InterfaceLanplus).WithCipherSuiteID(types.CipherSuiteID3).WithRetry(0)
	if err := c.Connect(ctx); err != nil {
		dead, stop := context.WithCancel(context.Background())
		stop()
		_ = c.Close(dead)
		return false, err
	}
	defer func() { _ = c.Close(ctx) }()
	st, err := c.GetChassisStatus(ctx)
	if err != nil {
		return false, err
	}
	return st.PowerIsOn, nil
}

// HostPID is the PID of the current host process, 0 if none was started.
func (b *BMC) HostPID() int {
	s, err := os.ReadFile(filepath.Join(b.dir, "host.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(s)))
	return pid
}

// HostAlive reports whether the host process runs: the truth behind the
// BMC's power state.
func (b *BMC) HostAlive() bool { return alive(b.HostPID()) }

// PowerOnHost starts the host process directly (not through IPMI), as a
// technician pressing the power button would, and waits until it runs.
func (b *BMC) PowerOnHost(tb testing.TB) {
	tb.Helper()
	if err := b.powerOnHost(); err != nil {
		tb.Fatal(err)
	}
}

// SetStuck makes the BMC accept power down without doing anything (true),
// or behave again (false).
func (b *BMC) SetStuck(tb testing.TB, stuck bool) {
	tb.Helper()
	p := filepath.Join(b.dir, "stuck")
	var err error
	if stuck {
		err = os.WriteFile(p, nil, 0o600)
	} else if err = os.Remove(p); errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// PowerOffHost kills the host process directly (not through IPMI), as a
// pulled power cord would, and waits until it is gone.
func (b *BMC) PowerOffHost(tb testing.TB) {
	tb.Helper()
	pid := b.HostPID()
	if !alive(pid) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(Scale(5 * time.Second))
	for alive(pid) {
		if time.Now().After(deadline) {
			tb.Fatalf("host process %d survived SIGKILL", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SetSlow makes every chassis request (status, power) wait d before the
// BMC answers; 0 restores normal speed for requests that start later.
func (b *BMC) SetSlow(tb testing.TB, d time.Duration) {
	tb.Helper()
	p := filepath.Join(b.dir, "slow")
	var err error
	if d > 0 {
		err = os.WriteFile(p, []byte(strconv.FormatFloat(d.Seconds(), 'f', 3, 64)), 0o600)
	} else if err = os.Remove(p); errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// SetOffDelay makes the BMC accept power down at once but cut the power d
// later, as real servers do (0: at once).
func (b *BMC) SetOffDelay(tb testing.TB, d time.Duration) {
	tb.Helper()
	p := filepath.Join(b.dir, "offdelay")
	var err error
	if d > 0 {
		err = os.WriteFile(p, []byte(strconv.FormatFloat(d.Seconds(), 'f', 3, 64)), 0o600)
	} else if err = os.Remove(p); errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// Calls returns the chassis_control invocations so far, e.g. "0x20 set power 0".
func (b *BMC) Calls() []string {
	s, err := os.ReadFile(filepath.Join(b.dir, "calls.log"))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(s)), "\n")
}

// SetPowerCalls counts "set power V" invocations.
func (b *BMC) SetPowerCalls(v int) int {
	n := 0
	want := "set power " + strconv.Itoa(v)
	for _, c := range b.Calls() {
		if strings.Contains(c, want) {
			n++
		}
	}
	return n
}

// FenceHost is a fencing.yaml entry for this BMC.
func (b *BMC) FenceHost(name string) config.FenceHost {
	return config.FenceHost{
		Name:   name,
		Agent:  config.AgentIPMI,
		IPAddr: IP,
		IPPort: b.Port,
		Login:  b.User,
		Passwd: secret.New(b.Password),
	}
}

// ReaperPID is the PID of the process that runs ipmi_sim.
func (b *BMC) ReaperPID() int {
	if b.reaper == nil || b.reaper.Process == nil {
		return 0
	}
	return b.reaper.Process.Pid
}

// Stop kills the host process and ipmi_sim, by PID, and waits for them.
// Safe to call more than once.
func (b *BMC) Stop() {
	b.once.Do(func() {
		if pid := b.HostPID(); pid > 0 && alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if b.reaper == nil {
			return
		}
		// Closing stdin asks the reaper to kill ipmi_sim and the hosts
		// below it; SIGTERM says the same; SIGKILL if it hangs.
		b.stdin.Close()
		_ = b.reaper.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(10 * time.Second):
			_ = b.reaper.Process.Kill()
			<-b.exited
		}
	})
}
