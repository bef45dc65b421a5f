package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// listen makes a unixgram socket as systemd does and points NOTIFY_SOCKET at it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no datagram reached the notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestNotifyDeliversEachStateAsOneDatagram(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn := listen(t, sock)
	t.Setenv("NOTIFY_SOCKET", sock)
	for _, tc := range []struct {
		name string
		send func() (bool, error)
		want string
	}{
		{"ready", func() (bool, error) { return Notify(Ready) }, "READY=1"},
		{"ready with status", func() (bool, error) { return Notify(Ready + "\nSTATUS=leader of 3") }, "READY=1\nSTATUS=leader of 3"},
		{"status", func() (bool, error) { return Status("transferring leadership") }, "STATUS=transferring leadership"},
		{"watchdog", func() (bool, error) { return Notify(Watchdog) }, "WATCHDOG=1"},
		{"stopping", func() (bool, error) { return Notify(Stopping) }, "STOPPING=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent, err := tc.send()
			if !sent || err != nil {
				t.Fatalf("sent=%v err=%v", sent, err)
			}
			if got := receive(t, conn); got != tc.want {
				t.Fatalf("socket got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNotifyReachesAnAbstractSocket(t *testing.T) {
	name := "iha-sdnotify-test-" + strconv.Itoa(os.Getpid())
	conn := listen(t, "\x00"+name)
	t.Setenv("NOTIFY_SOCKET", "@"+name)
	if sent, err := Notify(Ready); !sent || err != nil {
		t.Fatalf("sent=%v err=%v", sent, err)
	}
	if got := receive(t, conn); got != Ready {
		t.Fatalf("got %q", got)
	}
}

func TestNotifyWithoutSystemdIsANoOp(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Fatalf("sent=%v err=%v, want false, nil", sent, err)
	}
}

func TestNotifyToAMissingSocketIsAnError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	if sent, err := Notify(Ready); sent || err == nil {
		t.Fatalf("sent=%v err=%v, want false and an error", sent, err)
	}
}

func TestWatchdogIntervalIsHalfTheUnitsWatchdogSec(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name, usec, pid string
		want            time.Duration
	}{
		{"no WatchdogSec", "", "", 0},
		{"30s for this process", "30000000", self, 15 * time.Second},
		{"30s, no WATCHDOG_PID", "30000000", "", 15 * time.Second},
		{"meant for another process", "30000000", "1", 0},
		{"garbage", "soon", "", 0},
		{"zero", "0", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tc.usec)
			t.Setenv("WATCHDOG_PID", tc.pid)
			if got := WatchdogInterval(); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
