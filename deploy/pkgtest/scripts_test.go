package pkgtest

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shim writes an executable that appends its name and arguments to log
// and exits with code.
func shim(t *testing.T, dir, name, log string, code int) {
	t.Helper()
	body := "#!/bin/sh\necho \"" + name + " $*\" >> '" + log + "'\nexit " + string(rune('0'+code)) + "\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestPreinstallCreatesTheUserOnce runs the pre-install scriptlet as
// packaged (rpm -qp --qf %{PREIN}) with getent, groupadd and useradd
// replaced by shims that record their calls.
func TestPreinstallCreatesTheUserOnce(t *testing.T) {
	needTools(t)
	b := build(t)
	var agentRPM string
	for _, f := range rpmFiles(t, b.out) {
		if strings.HasPrefix(filepath.Base(f), "iha-agent-") {
			agentRPM = f
		}
	}
	script, err := run(t, time.Minute, b.out, nil, "rpm", "-qp", "--qf", "%{PREIN}", agentRPM)
	if err != nil {
		t.Fatalf("rpm -qp --qf %%{PREIN}: %v\n%s", err, script)
	}
	for _, tc := range []struct {
		name   string
		getent int // exit code of getent: 2 = not found, 0 = exists
		want   []string
	}{
		{"first install creates group and user", 2, []string{
			"getent group iha", "groupadd --system iha",
			"getent passwd iha", "useradd --system --gid iha --home-dir /var/lib/iha --no-create-home --shell /sbin/nologin --comment IHA instance high availability iha"}},
		{"upgrade finds them and creates nothing", 0, []string{"getent group iha", "getent passwd iha"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, log := t.TempDir(), filepath.Join(t.TempDir(), "calls")
			shim(t, bin, "getent", log, tc.getent)
			shim(t, bin, "groupadd", log, 0)
			shim(t, bin, "useradd", log, 0)
			path := filepath.Join(t.TempDir(), "preinstall.sh")
			if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("/bin/sh", path)
			cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("preinstall: %v\n%s", err, out)
			}
			calls, _ := os.ReadFile(log)
			got := strings.Split(strings.TrimSpace(string(calls)), "\n")
			if !equal(got, tc.want) {
				// nologin may live in /usr/sbin only on some systems.
				t.Fatalf("calls:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && strings.Replace(a[i], "/usr/sbin/nologin", "/sbin/nologin", 1) != b[i] {
			return false
		}
	}
	return true
}

// TestInstalledAgentTellsSystemdItIsReady starts the installed iha-agent
// with the packaged agent.yaml as iha-agent.service would (Type=notify,
// NOTIFY_SOCKET set), on loopback ports, and waits for READY=1; then stops
// it with SIGTERM and expects STOPPING=1 and a clean exit.
func TestInstalledAgentTellsSystemdItIsReady(t *testing.T) {
	b := build(t)
	sys := install(t, b)

	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	kdumpAddr := udp.LocalAddr().String()
	udp.Close()
	// The keys an operator makes with the installed iha-leader (the packages
	// generate nothing secret, and the mesh is encrypted by default).
	keys := t.TempDir()
	for _, k := range []struct {
		file string
		args []string
	}{
		{"gossip.keyring", []string{"keygen", "gossip"}},
		{"cluster.key", []string{"keygen", "cluster"}},
		{"host.key", []string{"keygen", "host", "-cluster-key", filepath.Join(keys, "cluster.key"), "compute-pkgtest"}},
	} {
		key, err := exec.Command(filepath.Join(sys, "usr/bin/iha-leader"), k.args...).Output()
		if err != nil {
			t.Fatalf("iha-leader %s: %v", strings.Join(k.args, " "), err)
		}
		if err := os.WriteFile(filepath.Join(keys, k.file), key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(sys, "usr/bin/iha-agent"),
		"-config", filepath.Join(sys, "etc/iha/agent.yaml"),
		"-keyring", filepath.Join(keys, "gossip.keyring"), "-host-key", filepath.Join(keys, "host.key"),
		"-bind", freeAddr(t), "-kdump-listen", kdumpAddr,
		"-state-dir", t.TempDir(), "-nova-host", "compute-pkgtest")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID; a no-op once it has exited
		<-exited
		t.Logf("iha-agent output:\n%s", out.String())
	})

	recv := func(want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*slow())
		defer cancel()
		buf := make([]byte, 4096)
		for ctx.Err() == nil {
			_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := conn.Read(buf)
			if err != nil {
				select {
				case <-exited:
					t.Fatalf("iha-agent exited before sending %s: %v", want, waitErr)
				default:
				}
				continue
			}
			if msg := string(buf[:n]); strings.Contains(msg, want) {
				t.Logf("notify socket: %q", msg)
				return
			}
		}
		t.Fatalf("no %s on the notify socket within %v", want, 60*time.Second*slow())
	}
	recv("READY=1")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	recv("STOPPING=1")
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("iha-agent did not stop cleanly on SIGTERM: %v", waitErr)
		}
	case <-time.After(20 * time.Second * slow()):
		t.Fatal("iha-agent still runs 20 s after SIGTERM (TimeoutStopSec is 20 s)")
	}
}
