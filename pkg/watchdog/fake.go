package watchdog

import (
	"errors"
	"sync"
	"time"
)

// Fake is an in-memory Device for tests: it records every feed and how it
// was closed, and can be made to fail. Now is its clock (default
// time.Now), so a test can ask whether it would have fired.
type Fake struct {
	mu       sync.Mutex
	timeout  time.Duration
	now      func() time.Time
	armedAt  time.Time
	feeds    []time.Time
	fail     error
	disarmed bool
	closed   bool
}

// NewFake returns an armed fake with the given timeout.
func NewFake(timeout time.Duration, now func() time.Time) *Fake {
	if now == nil {
		now = time.Now
	}
	return &Fake{timeout: timeout, now: now, armedAt: now()}
}

// ErrFakeClosed is returned by a closed Fake.
var ErrFakeClosed = errors.New("fake watchdog is closed")

// Feed implements Device.
func (f *Fake) Feed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrFakeClosed
	}
	if f.fail != nil {
		return f.fail
	}
	f.feeds = append(f.feeds, f.now())
	return nil
}

// Timeout implements Device.
func (f *Fake) Timeout() time.Duration { return f.timeout }

// Name implements Device.
func (f *Fake) Name() string { return "fake watchdog" }

// Disarm implements Device.
func (f *Fake) Disarm() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disarmed, f.closed = true, true
	return nil
}

// Close implements Device.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// FailFeeds makes every Feed return err (nil: succeed again).
func (f *Fake) FailFeeds(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// LastFeed is the last successful feed (the arming time if none).
func (f *Fake) LastFeed() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.feeds) == 0 {
		return f.armedAt
	}
	return f.feeds[len(f.feeds)-1]
}

// Feeds is how many feeds succeeded.
func (f *Fake) Feeds() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.feeds)
}

// Disarmed reports whether the magic close happened; Closed whether the
// device was closed either way.
func (f *Fake) Disarmed() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.disarmed }

// Closed reports whether the device was closed (disarmed or not).
func (f *Fake) Closed() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.closed }

// FiredAt reports when a real watchdog would have reset the machine,
// looking up to t: the first moment it went a whole timeout unfed since it
// was armed, unless it was disarmed before.
func (f *Fake) FiredAt(t time.Time) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	last := f.armedAt
	for _, fd := range f.feeds {
		if !fd.Before(last.Add(f.timeout)) {
			return last.Add(f.timeout), true
		}
		last = fd
	}
	if f.disarmed || t.Before(last.Add(f.timeout)) {
		return time.Time{}, false
	}
	return last.Add(f.timeout), true
}
