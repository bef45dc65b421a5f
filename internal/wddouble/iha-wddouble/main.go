// Command iha-wddouble is the watchdog device double (internal/wddouble) as
// a process, for tests and the lab: it serves a FIFO that an iha-agent
// opens as its watchdog (watchdog.allow_fifo) and, when the agent stops
// feeding it for -timeout, SIGKILLs the process group -pgid (the compute's
// processes), records the event and exits.
//
//	iha-wddouble -fifo /run/lab/compute-1.wd -timeout 10s -pgid 4242 -record events.jsonl
//
// -pgid-file may be given several times: a host of the real-Nova lab is
// several process groups (its nova-compute, its iha-agent), each recorded in
// a pid file that a restart rewrites, so the files are read when the
// countdown runs out and every group named is killed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ihaproject/iha/internal/wddouble"
)

// files is a repeatable flag.
type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(s string) error { *f = append(*f, s); return nil }

func main() {
	fifo := flag.String("fifo", "", "the device path (created as a FIFO)")
	timeout := flag.Duration("timeout", 0, "W: the countdown")
	pgid := flag.Int("pgid", 0, "the process group to SIGKILL when the countdown runs out")
	var pgidFiles files
	flag.Var(&pgidFiles, "pgid-file", "read a process group to SIGKILL from this file when the countdown runs out (the compute may restart); repeatable")
	record := flag.String("record", "", "append one JSON line per event to this file")
	flag.Parse()
	if *fifo == "" || *timeout <= 0 || (*pgid <= 1 && len(pgidFiles) == 0) {
		fmt.Fprintln(os.Stderr, "usage: iha-wddouble -fifo PATH -timeout W (-pgid N | -pgid-file F...) [-record FILE]")
		os.Exit(2)
	}
	cfg := wddouble.Config{FIFO: *fifo, Timeout: *timeout, PGID: *pgid}
	if len(pgidFiles) > 0 {
		cfg.Kill = func() error { return killGroups(*pgid, pgidFiles) }
	}
	if *record != "" {
		f, err := os.OpenFile(*record, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "iha-wddouble:", err)
			os.Exit(1)
		}
		defer f.Close()
		cfg.Record = f
	} else {
		cfg.Record = os.Stdout
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	if err := wddouble.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "iha-wddouble:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "iha-wddouble: done after %v\n", time.Since(start).Round(time.Millisecond))
}

// killGroups SIGKILLs the group pgid (if > 1) and every group named in
// files. A missing file or a group already gone is no error (that process
// of the host was not running); every group is tried before returning.
func killGroups(pgid int, files []string) error {
	var errs []error
	kill := func(n int, from string) {
		if err := syscall.Kill(-n, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill group %d (%s): %w", n, from, err))
		}
	}
	if pgid > 1 {
		kill(pgid, "-pgid")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		var n int
		if err == nil {
			_, err = fmt.Sscan(string(b), &n)
		}
		if err != nil || n <= 1 {
			errs = append(errs, fmt.Errorf("process group from %s: %v (%d)", f, err, n))
			continue
		}
		kill(n, f)
	}
	return errors.Join(errs...)
}
