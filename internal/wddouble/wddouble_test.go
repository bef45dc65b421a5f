package wddouble_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/internal/wddouble"
	"github.com/ihaproject/iha/pkg/watchdog"
)

// scale stretches deadlines on a slow or busy machine (testkit.ScaleEnv,
// default 1).
var scale = testkit.Scaler(1)

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// A zombie (state Z) is dead for our purpose.
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && b[i+2] != 'Z'
		}
	}
	return true
}

// TestTheDoubleProcessKillsTheComputesGroup runs iha-wddouble as a process
// in front of a "compute" (a process group of two sleeps): fed, the compute
// lives; unfed for W, every process of the group is SIGKILLed and the
// record says when.
func TestTheDoubleProcessKillsTheComputesGroup(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "iha-wddouble")
	if out, err := exec.Command("go", "build", "-o", bin, "./iha-wddouble").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The compute: a shell that starts a second process, in a group of its own.
	compute := exec.Command("sh", "-c", "sleep 300 & exec sleep 300")
	compute.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := compute.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := compute.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL); _ = compute.Wait() })
	var members []int
	testkit.WaitFor(t, scale(5*time.Second), "the compute's two processes", func() bool {
		members = groupMembers(pgid)
		return len(members) == 2
	})

	fifo, record := filepath.Join(dir, "wd"), filepath.Join(dir, "events.jsonl")
	w := scale(500 * time.Millisecond)
	double := exec.Command(bin, "-fifo", fifo, "-timeout", w.String(), "-pgid", strconv.Itoa(pgid), "-record", record)
	double.Stderr = os.Stderr
	if err := double.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- double.Wait() }()
	t.Cleanup(func() {
		_ = double.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(scale(10 * time.Second)):
			_ = double.Process.Kill()
		}
	})
	var d watchdog.Device
	testkit.WaitFor(t, scale(10*time.Second), "the double's FIFO", func() bool {
		var err error
		d, err = watchdog.Open(fifo, w, watchdog.Options{AllowFIFO: true})
		return err == nil
	})
	defer d.Close()
	feedUntil := time.Now().Add(3 * w)
	var last time.Time
	for time.Now().Before(feedUntil) {
		if err := d.Feed(); err != nil {
			t.Fatal(err)
		}
		last = time.Now()
		time.Sleep(w / 5)
	}
	for _, p := range members {
		if !alive(p) {
			t.Fatalf("compute process %d died while the watchdog was fed", p)
		}
	}
	// Stop feeding: within W (and some slack) the group dies.
	testkit.WaitFor(t, scale(10*time.Second), "the compute's processes to die", func() bool {
		for _, p := range members {
			if alive(p) {
				return false
			}
		}
		return true
	})
	diedBy := time.Now()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("double exited with %v", err)
		}
	case <-time.After(scale(10 * time.Second)):
		t.Fatal("the double did not exit after firing")
	}
	evs := readRecord(t, record)
	if len(evs) < 2 || evs[0].Event != "armed" || evs[len(evs)-1].Event != "fired" {
		t.Fatalf("record = %+v, want armed … fired", evs)
	}
	fired := evs[len(evs)-1]
	if fired.Err != "" {
		t.Fatalf("kill failed: %s", fired.Err)
	}
	if gap := fired.At.Sub(last); gap < w-w/10 || fired.At.After(diedBy) {
		t.Fatalf("fired %v after the last feed (W %v), died by %v after", gap, w, diedBy.Sub(last))
	}
	t.Logf("unfed for %v → the compute's group killed (W %v)", fired.At.Sub(last).Round(time.Millisecond), w)
}

func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

func readRecord(t *testing.T, path string) []wddouble.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []wddouble.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e wddouble.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("record line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

func TestRunNeedsATarget(t *testing.T) {
	err := wddouble.Run(context.Background(), wddouble.Config{FIFO: filepath.Join(t.TempDir(), "x"), Timeout: time.Second})
	if err == nil {
		t.Fatal("Run without a process group nor Kill started")
	}
}

// TestTheDoubleProcessKillsEveryGroupNamedInPidFiles is the lab's wiring: a
// host there is several process groups (nova-compute, iha-agent), each in a
// pid file read when the countdown runs out (a restart rewrites them). Both
// groups die; a pid file that does not exist (a process of the host that is
// not running) is no error.
func TestTheDoubleProcessKillsEveryGroupNamedInPidFiles(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "iha-wddouble")
	if out, err := exec.Command("go", "build", "-o", bin, "./iha-wddouble").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var pidFiles []string
	var leaders []int
	for i := 0; i < 2; i++ {
		g := exec.Command("sleep", "300")
		g.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		pid := g.Process.Pid
		go func() { _ = g.Wait() }() // reap, so that a killed group is not a zombie
		t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
		f := filepath.Join(dir, fmt.Sprintf("host.proc%d.pid", i))
		if err := os.WriteFile(f, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		pidFiles, leaders = append(pidFiles, f), append(leaders, pid)
	}
	fifo, record := filepath.Join(dir, "wd"), filepath.Join(dir, "events.jsonl")
	w := scale(500 * time.Millisecond)
	args := []string{"-fifo", fifo, "-timeout", w.String(), "-record", record,
		"-pgid-file", pidFiles[0], "-pgid-file", filepath.Join(dir, "host.absent.pid"), "-pgid-file", pidFiles[1]}
	double := exec.Command(bin, args...)
	double.Stderr = os.Stderr
	if err := double.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- double.Wait() }()
	t.Cleanup(func() {
		_ = double.Process.Kill()
		<-exited
	})
	var d watchdog.Device
	testkit.WaitFor(t, scale(10*time.Second), "the double's FIFO", func() bool {
		var err error
		d, err = watchdog.Open(fifo, w, watchdog.Options{AllowFIFO: true})
		return err == nil
	})
	defer d.Close()
	if err := d.Feed(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, scale(10*time.Second), "both groups to die", func() bool {
		return !alive(leaders[0]) && !alive(leaders[1])
	})
	testkit.WaitFor(t, scale(10*time.Second), "the fired record", func() bool {
		evs := readRecord(t, record)
		return len(evs) > 0 && evs[len(evs)-1].Event == "fired"
	})
	evs := readRecord(t, record)
	if fired := evs[len(evs)-1]; fired.Err != "" {
		t.Fatalf("fired with an error: %s", fired.Err)
	}
}
