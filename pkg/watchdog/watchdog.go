// Package watchdog is the one dangerous device of IHA's compute agent: the
// Linux watchdog (/dev/watchdog from softdog, iTCO_wdt, ipmi_watchdog…),
// behind a tiny interface with a real implementation and test doubles.
//
// Opening the device arms it: from then on the machine resets unless the
// device is fed at least every Timeout. Closing it stops the countdown only
// after the magic character 'V' was written (Disarm); a plain Close, or the
// process dying, leaves it running — which is what a crash of the agent
// must do.
//
// What it must never do: open a device in a test (it would reset the
// machine). Tests use Fake, or a FIFO served by the device double
// (internal/wddouble), which Open accepts only with AllowFIFO.
package watchdog

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Device is an open, armed watchdog. Feed, Disarm and Close may be called
// from one goroutine at a time.
type Device interface {
	// Feed restarts the countdown.
	Feed() error
	// Timeout is the countdown, as the device reports it (a driver may
	// round the requested one).
	Timeout() time.Duration
	// Disarm stops the countdown and closes the device (magic close). Only
	// for a clean stop under no lease the leader may still count on.
	Disarm() error
	// Close closes the device without disarming it: the countdown goes on,
	// as after a crash.
	Close() error
	// Name describes the device for logs (path and driver identity).
	Name() string
}

// Options tune Open.
type Options struct {
	// AllowFIFO accepts a FIFO instead of a character device: the device
	// double of the tests and the lab (internal/wddouble). Its timeout is
	// the double's; Open takes the requested one on trust. Never in
	// production: nothing would reset the host.
	AllowFIFO bool
	// DisarmOnError magic-closes a device that Open armed and then found
	// unusable (a timeout it cannot set, no timeout reported). Set it when
	// no earlier run of the agent may have left the device armed under a
	// lease; otherwise a failed start leaves the countdown running.
	DisarmOnError bool
}

// Errors of Open.
var (
	ErrNotWatchdog = errors.New("not a watchdog device")
	ErrNoReader    = errors.New("no watchdog double reads the FIFO")
)

// feedByte is what Feed writes: any byte but 'V' restarts the countdown
// and cancels a pending magic close.
const feedByte = '.'

// Open opens and arms the watchdog at path with the given timeout (whole
// seconds; 0 keeps the device's). The returned Timeout is what the device
// reports after the change.
func Open(path string, timeout time.Duration, opt Options) (Device, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("watchdog %s: %w", path, err)
	}
	switch m := fi.Mode(); {
	case m&os.ModeNamedPipe != 0:
		if !opt.AllowFIFO {
			return nil, fmt.Errorf("watchdog %s: %w: a FIFO (the test double) needs watchdog.allow_fifo", path, ErrNotWatchdog)
		}
		return openFIFO(path, timeout)
	case m&os.ModeCharDevice != 0:
		return openDevice(path, timeout, opt.DisarmOnError)
	default:
		return nil, fmt.Errorf("watchdog %s: %w: want a character device such as /dev/watchdog (mode %v)", path, ErrNotWatchdog, m)
	}
}

type fileDevice struct {
	f       *os.File
	name    string
	timeout time.Duration
}

func (d *fileDevice) Timeout() time.Duration { return d.timeout }
func (d *fileDevice) Name() string           { return d.name }

func (d *fileDevice) Feed() error {
	if _, err := d.f.Write([]byte{feedByte}); err != nil {
		return fmt.Errorf("watchdog %s: feed: %w", d.name, err)
	}
	return nil
}

func (d *fileDevice) Disarm() error {
	_, werr := d.f.Write([]byte{'V'})
	cerr := d.f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("watchdog %s: magic close: %w", d.name, err)
	}
	return nil
}

func (d *fileDevice) Close() error { return d.f.Close() }

func openFIFO(path string, timeout time.Duration) (Device, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("watchdog %s: a FIFO reports no timeout: set watchdog.timeout", path)
	}
	// Non-blocking: no reader is an error at once, and a reader that stops
	// reading makes Feed fail instead of hanging the agent.
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("watchdog %s: %w", path, ErrNoReader)
		}
		return nil, fmt.Errorf("watchdog %s: %w", path, err)
	}
	return &fileDevice{f: os.NewFile(uintptr(fd), path), name: path + " (FIFO: test double)", timeout: timeout}, nil
}

func openDevice(path string, timeout time.Duration, disarmOnError bool) (Device, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	info, err := unix.IoctlGetWatchdogInfo(fd)
	if err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.ENOTTY) || errors.Is(err, syscall.EINVAL) {
			err = ErrNotWatchdog
		}
		return nil, fmt.Errorf("watchdog %s: %w", path, err)
	}
	fail := func(err error) (Device, error) {
		// The device is armed. Leave it so unless told otherwise: a failed
		// start must not disarm a watchdog that an earlier run of the agent
		// armed under a lease.
		if disarmOnError {
			_, _ = f.Write([]byte{'V'})
		}
		_ = f.Close()
		return nil, fmt.Errorf("watchdog %s: %w", path, err)
	}
	if timeout > 0 {
		if info.Options&unix.WDIOF_SETTIMEOUT == 0 {
			return fail(fmt.Errorf("the driver cannot set its timeout: leave watchdog.timeout unset to use its own"))
		}
		secs := int((timeout + time.Second - 1) / time.Second)
		if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, secs); err != nil {
			return fail(fmt.Errorf("set timeout %ds: %w", secs, err))
		}
	}
	got, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err != nil || got <= 0 {
		return fail(fmt.Errorf("the driver does not report its timeout (%v): IHA must know W", err))
	}
	ident := string(trimNUL(info.Identity[:]))
	name := fmt.Sprintf("%s (%s)", path, ident)
	if info.Options&unix.WDIOF_MAGICCLOSE == 0 {
		name += ", no magic close"
	}
	d := &fileDevice{f: f, name: name, timeout: time.Duration(got) * time.Second}
	if err := d.Feed(); err != nil {
		return fail(err)
	}
	return d, nil
}

func trimNUL(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}
