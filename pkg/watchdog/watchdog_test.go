package watchdog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ihaproject/iha/internal/testkit"
	"github.com/ihaproject/iha/internal/wddouble"
	"github.com/ihaproject/iha/pkg/watchdog"
)

// scale stretches deadlines on a slow or busy machine (testkit.ScaleEnv,
// default 1).
var scale = testkit.Scaler(1)

// open is the only way these tests open a device: it refuses anything
// that could be a real watchdog (opening one would reset this machine).
func open(t *testing.T, path string, timeout time.Duration, opt watchdog.Options) (watchdog.Device, error) {
	t.Helper()
	if strings.HasPrefix(path, "/dev/") && path != "/dev/null" {
		t.Fatalf("test tried to open %s", path)
	}
	return watchdog.Open(path, timeout, opt)
}

func TestOpenRefusesWhatIsNotAWatchdog(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	stop := serve(t, fifo, time.Hour, func() error { return nil })
	defer stop()
	for _, tc := range []struct {
		name, path string
		opt        watchdog.Options
		want       error
		msg        string
	}{
		{"a regular file", regular, watchdog.Options{}, watchdog.ErrNotWatchdog, "character device"},
		{"a FIFO without allow_fifo", fifo, watchdog.Options{}, watchdog.ErrNotWatchdog, "allow_fifo"},
		{"a character device that is no watchdog", "/dev/null", watchdog.Options{}, watchdog.ErrNotWatchdog, "/dev/null"},
		{"a missing path", filepath.Join(dir, "nope"), watchdog.Options{}, os.ErrNotExist, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := open(t, tc.path, time.Second, tc.opt)
			if err == nil {
				d.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Open = %v, want %v naming %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestOpenFIFOWithoutItsDoubleFails(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	_, err := open(t, fifo, time.Second, watchdog.Options{AllowFIFO: true})
	if !errors.Is(err, watchdog.ErrNoReader) {
		t.Fatalf("Open = %v, want ErrNoReader", err)
	}
}

// recorder collects the double's events.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) events() []wddouble.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []wddouble.Event
	for _, l := range strings.Split(strings.TrimSpace(r.buf.String()), "\n") {
		var e wddouble.Event
		if l != "" && json.Unmarshal([]byte(l), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) has(kind string) bool {
	for _, e := range r.events() {
		if e.Event == kind {
			return true
		}
	}
	return false
}

var lastRecorder *recorder

// serve runs the double in-process on fifo; kill is its "power off".
func serve(t *testing.T, fifo string, w time.Duration, kill func() error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{}
	lastRecorder = rec
	done := make(chan error, 1)
	go func() { done <- wddouble.Run(ctx, wddouble.Config{FIFO: fifo, Timeout: w, Kill: kill, Record: rec}) }()
	deadline := time.Now().Add(scale(5 * time.Second))
	for {
		if fi, err := os.Stat(fifo); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the double made no FIFO")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("double: %v", err)
		}
	}
}

// openRetry opens the FIFO, retrying while the double's reader is not up.
func openRetry(t *testing.T, fifo string, w time.Duration) watchdog.Device {
	t.Helper()
	var d watchdog.Device
	testkit.WaitForEvery(t, scale(5*time.Second), 5*time.Millisecond, "the double to read", func() bool {
		var err error
		d, err = open(t, fifo, w, watchdog.Options{AllowFIFO: true})
		return err == nil
	})
	return d
}

func TestTheDoubleFollowsTheKernelsRules(t *testing.T) {
	w := scale(300 * time.Millisecond)
	t.Run("fed, it never fires; unfed for W, it fires", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "wd")
		var fired sync.WaitGroup
		fired.Add(1)
		var firedAt time.Time
		stop := serve(t, fifo, w, func() error { firedAt = time.Now(); fired.Done(); return nil })
		defer stop()
		rec := lastRecorder
		d := openRetry(t, fifo, w)
		defer d.Close()
		if d.Timeout() != w {
			t.Fatalf("Timeout = %v, want the configured %v", d.Timeout(), w)
		}
		var last time.Time
		for range 6 { // 3 × W of feeding
			if err := d.Feed(); err != nil {
				t.Fatal(err)
			}
			last = time.Now()
			time.Sleep(w / 2)
			if rec.has("fired") {
				t.Fatal("fired while fed")
			}
		}
		fired.Wait()
		if gap := firedAt.Sub(last); gap < w-w/10 {
			t.Fatalf("fired %v after the last feed, want about W (%v)", gap, w)
		}
	})
	t.Run("the magic close disarms it", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "wd")
		stop := serve(t, fifo, w, func() error { t.Error("fired after a magic close"); return nil })
		rec := lastRecorder
		d := openRetry(t, fifo, w)
		if err := d.Feed(); err != nil {
			t.Fatal(err)
		}
		if err := d.Disarm(); err != nil {
			t.Fatal(err)
		}
		testkit.WaitForEvery(t, scale(5*time.Second), 5*time.Millisecond, "disarmed", func() bool { return rec.has("disarmed") })
		time.Sleep(3 * w)
		stop()
	})
	t.Run("a close without it keeps counting; a reopening writer feeds on", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "wd")
		var mu sync.Mutex
		fired := false
		stop := serve(t, fifo, w, func() error { mu.Lock(); fired = true; mu.Unlock(); return nil })
		defer stop()
		rec := lastRecorder
		d := openRetry(t, fifo, w)
		_ = d.Feed()
		_ = d.Close() // a crash
		testkit.WaitForEvery(t, scale(5*time.Second), 5*time.Millisecond, "the unexpected close", func() bool { return rec.has("unexpected-close") })
		// A restarted agent reopens within W and feeds.
		d2 := openRetry(t, fifo, w)
		defer d2.Close()
		for range 4 {
			_ = d2.Feed()
			time.Sleep(w / 3)
		}
		mu.Lock()
		f := fired
		mu.Unlock()
		if f {
			t.Fatal("fired although the restarted writer fed it")
		}
		testkit.WaitForEvery(t, scale(5*time.Second), 5*time.Millisecond, "fired once unfed", func() bool { mu.Lock(); defer mu.Unlock(); return fired })
	})
}

func TestFakeFiredAt(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	f := watchdog.NewFake(10*time.Second, clock)
	for _, s := range []int{5, 12, 21} { // fed every 5–9 s
		now = time.Unix(1000+int64(s), 0)
		_ = f.Feed()
	}
	if _, fired := f.FiredAt(time.Unix(1030, 0)); fired {
		t.Fatal("fired 9 s after the last feed")
	}
	if at, fired := f.FiredAt(time.Unix(1031, 0)); !fired || !at.Equal(time.Unix(1031, 0)) {
		t.Fatalf("FiredAt = %v %v, want fired at 1031", at, fired)
	}
	now = time.Unix(2000, 0)
	g := watchdog.NewFake(10*time.Second, clock)
	now = time.Unix(2011, 0)
	_ = g.Feed() // too late: it fired at 2010
	if at, fired := g.FiredAt(time.Unix(2012, 0)); !fired || !at.Equal(time.Unix(2010, 0)) {
		t.Fatalf("FiredAt = %v %v, want fired at 2010 (a gap before the last feed)", at, fired)
	}
	_ = g.Disarm()
	if !g.Disarmed() || !g.Closed() {
		t.Fatal("Disarm did not disarm")
	}
}
