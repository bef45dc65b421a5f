// Command iha-wddouble is the watchdog device double (internal/wddouble) as
// a process, for tests and the lab: it serves a FIFO that an iha-agent
// opens as its watchdog (watchdog.allow_fifo) and, when the agent stops
// feeding it for -timeout, SIGKILLs the process group -pgid (the compute's
// processes), records the event and exits.
//
//	iha-wddouble -fifo /run/lab/compute-1.wd -timeout 10s -pgid 4242 -record events.jsonl
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ihaproject/iha/internal/wddouble"
)

func main() {
	fifo := flag.String("fifo", "", "the device path (created as a FIFO)")
	timeout := flag.Duration("timeout", 0, "W: the countdown")
	pgid := flag.Int("pgid", 0, "the process group to SIGKILL when the countdown runs out")
	pgidFile := flag.String("pgid-file", "", "read the process group from this file when the countdown runs out (the compute may restart)")
	record := flag.String("record", "", "append one JSON line per event to this file")
	flag.Parse()
	if *fifo == "" || *timeout <= 0 || (*pgid <= 1 && *pgidFile == "") {
		fmt.Fprintln(os.Stderr, "usage: iha-wddouble -fifo PATH -timeout W (-pgid N | -pgid-file F) [-record FILE]")
		os.Exit(2)
	}
	cfg := wddouble.Config{FIFO: *fifo, Timeout: *timeout, PGID: *pgid}
	if *pgidFile != "" {
		cfg.Kill = func() error {
			var n int
			b, err := os.ReadFile(*pgidFile)
			if err == nil {
				_, err = fmt.Sscan(string(b), &n)
			}
			if err != nil || n <= 1 {
				return fmt.Errorf("process group from %s: %v (%d)", *pgidFile, err, n)
			}
			return syscall.Kill(-n, syscall.SIGKILL)
		}
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
