package simbmc

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// reaperEnv marks a re-executed test binary as a reaper.
const reaperEnv = "IHA_SIMBMC_REAPER"

// scriptEnv gives the reaper the chassis_control script to run on "power-on".
const scriptEnv = "IHA_SIMBMC_SCRIPT"

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER from <linux/prctl.h>.
const prSetChildSubreaper = 36

// MaybeReaper turns this process into a reaper when the harness started it
// as one, and then never returns. Call it first thing in TestMain of every
// package that uses Start.
//
// Why a reaper: ipmi_sim's chassis_control script starts the "host" process
// in the background and exits, so the host is orphaned. On this machine PID
// 1 does not reap orphans; a killed host would stay a zombie, and zombies
// pile up until PIDs run out. The reaper is a child subreaper: it runs
// ipmi_sim, adopts every orphan below it and reaps them all. It stops
// everything below it when its stdin closes (the test ended or died) or on
// SIGTERM.
func MaybeReaper() {
	if os.Getenv(reaperEnv) != "1" {
		return
	}
	os.Exit(reap(os.Args[1:]))
}

func reap(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "reaper: no command")
		return 2
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		fmt.Fprintln(os.Stderr, "reaper: prctl(PR_SET_CHILD_SUBREAPER):", e)
		return 2
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	stdinClosed := make(chan struct{})
	powerOn := make(chan struct{}, 16)
	go func() {
		// Each "power-on" line asks us to run the chassis script's
		// `set power 1` ourselves, so that the host it starts is adopted by
		// us and not by PID 1.
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "power-on" {
				powerOn <- struct{}{}
			}
		}
		close(stdinClosed)
	}()

	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "reaper:", err)
		return 2
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reaper:", err)
		return 2
	}
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{devnull.Fd(), os.Stdout.Fd(), os.Stderr.Fd()},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "reaper: start:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "reaper %d: started %s as pid %d\n", os.Getpid(), argv[0], pid)

	mainExited := make(chan syscall.WaitStatus, 1)
	go func() {
		for {
			var ws syscall.WaitStatus
			p, err := syscall.Wait4(-1, &ws, 0, nil)
			switch {
			case err == syscall.EINTR:
			case err != nil: // ECHILD: nothing to reap right now
				time.Sleep(20 * time.Millisecond)
			case p == pid:
				mainExited <- ws
			}
		}
	}()

	code := 0
	script := os.Getenv(scriptEnv)
loop:
	for {
		select {
		case ws := <-mainExited:
			fmt.Fprintf(os.Stderr, "reaper: %s exited: %v\n", argv[0], ws)
			code = 1
			break loop
		case <-sigs:
			break loop
		case <-stdinClosed:
			break loop
		case <-powerOn:
			// The Wait4 loop reaps the script; the harness polls for the
			// host instead of waiting for the script.
			if _, err := syscall.ForkExec(script, []string{script, "0x20", "set", "power", "1"}, &syscall.ProcAttr{
				Env:   os.Environ(),
				Files: []uintptr{devnull.Fd(), os.Stderr.Fd(), os.Stderr.Fd()},
			}); err != nil {
				fmt.Fprintln(os.Stderr, "reaper: power on:", err)
			}
		}
	}
	killChildren()
	return code
}

// killChildren SIGKILLs every child (ipmi_sim and adopted hosts) until none
// is left, for at most five seconds; the Wait4 loop reaps them.
func killChildren() {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		kids := children(os.Getpid())
		if len(kids) == 0 {
			return
		}
		for _, k := range kids {
			_ = syscall.Kill(k, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// children lists the processes whose parent is ppid, zombies included.
func children(ppid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		if st.ppid == ppid {
			out = append(out, pid)
		}
	}
	return out
}

type procStat struct {
	state byte
	ppid  int
}

// readStat parses /proc/PID/stat: "pid (comm) state ppid …". comm may hold
// spaces and parentheses, so parse from the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return procStat{}, fmt.Errorf("short stat for pid %d", pid)
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 2 {
		return procStat{}, fmt.Errorf("short stat for pid %d", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, err
	}
	return procStat{state: f[0][0], ppid: ppid}, nil
}

// alive reports whether pid is a running (not zombie, not dead) process.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	st, err := readStat(pid)
	if err != nil {
		return false
	}
	return st.state != 'Z' && st.state != 'X'
}
