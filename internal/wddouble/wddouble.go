// Package wddouble is the watchdog device double of the tests and the lab:
// a FIFO that an iha-agent opens as its watchdog (watchdog.allow_fifo), read
// by a helper process that behaves as the kernel's watchdog core does and,
// when the device goes unfed for its timeout, SIGKILLs the compute's
// process group, as the lab's ipmi_sim power-off does.
//
// Semantics copied from the Linux watchdog core (drivers/watchdog/
// watchdog_dev.c): the first open arms it; every byte written restarts the
// countdown; a close right after the magic character 'V' stops it; any
// other close ("watchdog did not stop!") leaves it running, and a later
// open finds it still counting.
//
// It owns nothing production uses and is never linked into a daemon.
package wddouble

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// Config configures Run.
type Config struct {
	// FIFO is the device path; Run creates it (mode 0600) if needed.
	FIFO string
	// Timeout is W.
	Timeout time.Duration
	// Kill is called when the countdown runs out (default: SIGKILL to the
	// process group PGID).
	Kill func() error
	// PGID is the compute's process group, for the default Kill.
	PGID int
	// Record, when set, receives one JSON object per line per event
	// (Event): the test's and the lab's timeline.
	Record io.Writer
}

// Event is one line of the record.
type Event struct {
	At       time.Time `json:"at"`
	Event    string    `json:"event"` // armed, disarmed, unexpected-close, reopened, fired
	LastFeed time.Time `json:"last_feed,omitzero"`
	Feeds    int       `json:"feeds,omitempty"`
	Err      string    `json:"err,omitempty"`
}

type readEvent struct {
	kind  string // open, data, eof
	magic bool   // data ended with 'V'
	n     int
	err   error
}

// Run serves the device until ctx ends (nil) or the countdown fires (it
// kills, records "fired" and returns nil). It returns an error only when
// the FIFO cannot be made.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Timeout <= 0 {
		return errors.New("wddouble: timeout must be positive")
	}
	if cfg.Kill == nil {
		if cfg.PGID <= 1 {
			return errors.New("wddouble: a process group (pgid > 1) or a Kill function is needed")
		}
		pg := cfg.PGID
		cfg.Kill = func() error { return syscall.Kill(-pg, syscall.SIGKILL) }
	}
	if err := syscall.Mkfifo(cfg.FIFO, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("wddouble: mkfifo %s: %w", cfg.FIFO, err)
	}
	var recMu sync.Mutex
	record := func(e Event) {
		if cfg.Record == nil {
			return
		}
		b, _ := json.Marshal(e)
		recMu.Lock()
		_, _ = cfg.Record.Write(append(b, '\n'))
		recMu.Unlock()
	}
	events := make(chan readEvent, 64)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go readLoop(rctx, cfg.FIFO, events)

	var (
		armed    bool
		lastFeed time.Time
		feeds    int
		opened   int
		magic    bool
		timer    *time.Timer
		fire     <-chan time.Time
	)
	restart := func() {
		lastFeed = time.Now()
		if timer == nil {
			timer = time.NewTimer(cfg.Timeout)
		} else {
			timer.Reset(cfg.Timeout)
		}
		fire = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			switch ev.kind {
			case "open":
				opened++
				magic = false
				if !armed {
					armed = true
					restart()
					record(Event{At: lastFeed, Event: "armed"})
				} else if opened > 1 {
					record(Event{At: time.Now(), Event: "reopened", LastFeed: lastFeed, Feeds: feeds})
				}
			case "data":
				if !armed {
					continue
				}
				feeds += ev.n
				magic = ev.magic
				restart()
			case "eof":
				if !armed {
					continue
				}
				if magic {
					armed = false
					timer.Stop()
					fire = nil
					record(Event{At: time.Now(), Event: "disarmed", LastFeed: lastFeed, Feeds: feeds})
					continue
				}
				e := Event{At: time.Now(), Event: "unexpected-close", LastFeed: lastFeed, Feeds: feeds}
				if ev.err != nil {
					e.Err = ev.err.Error()
				}
				record(e)
			}
		case <-fire:
			err := cfg.Kill()
			e := Event{At: time.Now(), Event: "fired", LastFeed: lastFeed, Feeds: feeds}
			if err != nil {
				e.Err = err.Error()
			}
			record(e)
			return nil
		}
	}
}

// readLoop opens the FIFO for reading (blocking until a writer opens it),
// reports the bytes, and reopens after every close. A second read end,
// never read, stays open all along so that a writer can always open the
// FIFO (a non-blocking open for writing fails while no reader has it).
func readLoop(ctx context.Context, path string, out chan<- readEvent) {
	keep, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return
	}
	defer keep.Close()
	// A blocking open waits for a writer; unblock it when ctx ends by
	// being that writer for an instant.
	go func() {
		<-ctx.Done()
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			_ = w.Close()
		}
	}()
	send := func(e readEvent) bool {
		select {
		case out <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	buf := make([]byte, 256)
	for ctx.Err() == nil {
		f, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil || ctx.Err() != nil {
			if f != nil {
				_ = f.Close()
			}
			return
		}
		if !send(readEvent{kind: "open"}) {
			_ = f.Close()
			return
		}
		for {
			n, err := f.Read(buf)
			if n > 0 && !send(readEvent{kind: "data", n: n, magic: buf[n-1] == 'V'}) {
				_ = f.Close()
				return
			}
			if err != nil {
				_ = f.Close()
				e := readEvent{kind: "eof"}
				if !errors.Is(err, io.EOF) {
					e.err = err
				}
				send(e)
				break
			}
		}
	}
}
