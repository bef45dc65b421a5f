package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// States that systemd understands (see sd_notify(3)).
const (
	Ready    = "READY=1"    // start-up finished: systemctl start returns, After= units go on
	Stopping = "STOPPING=1" // shutdown began: systemd waits up to TimeoutStopSec
	Watchdog = "WATCHDOG=1" // keep-alive when the unit sets WatchdogSec=
)

// Notify sends state (one or more "KEY=value" lines) to $NOTIFY_SOCKET.
// It reports false, nil when there is no socket (not run by systemd, or
// not Type=notify). A name starting with '@' is in the abstract namespace.
func Notify(state string) (bool, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}

// Status is Notify("STATUS=" + text): the line `systemctl status` shows.
func Status(text string) (bool, error) { return Notify("STATUS=" + text) }

// WatchdogInterval is how often to send Watchdog: half of $WATCHDOG_USEC,
// as sd_watchdog_enabled(3) advises. It is 0 when the unit has no
// WatchdogSec= or when $WATCHDOG_PID names another process.
func WatchdogInterval() time.Duration {
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	return time.Duration(us) * time.Microsecond / 2
}
