// Package testkit holds what the tests of every package share: deadlines
// that stretch on a slow or busy machine, polling until a condition holds,
// and throw-away certificate authorities. It is imported by tests only.
package testkit

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// ScaleEnv is the variable that stretches test deadlines on a slow or
// busy machine: a positive number multiplies them.
const ScaleEnv = "IHA_TEST_TIMEOUT_SCALE"

// Factor is ScaleEnv when it is set to a positive number, def otherwise.
func Factor(def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(ScaleEnv), 64); err == nil && v > 0 {
		return v
	}
	return def
}

// Scaler returns the time scale of a package's tests: d times Factor(def).
// Each package keeps the default its deadlines were tuned with
// (var scale = testkit.Scaler(2)).
func Scaler(def float64) func(time.Duration) time.Duration {
	return func(d time.Duration) time.Duration { return time.Duration(float64(d) * Factor(def)) }
}

// WaitFor polls cond every 10 ms until it holds, and fails t when d (not
// scaled here: the caller scales) passes first.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitForEvery(t, d, 10*time.Millisecond, what, cond)
}

// WaitForEvery is WaitFor polling every every.
func WaitForEvery(t testing.TB, d, every time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(every)
	}
}

// WaitForState polls cond every every until it holds, and fails t when d
// (not scaled here) passes first, with the state cond last described.
func WaitForState(t testing.TB, d, every time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last: %s)", d, what, last)
		}
		time.Sleep(every)
	}
}
