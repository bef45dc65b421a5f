package fence

import (
	"context"
	"strings"
	"time"

	"github.com/ihaproject/iha/pkg/secret"
)

// Scrub removes secret from text and bounds its length: BMCs and API
// servers echo odd things in error bodies, and an error must never carry a
// credential, whatever a server sends back.
func Scrub(s string, sec secret.Secret) string {
	if v := sec.Reveal(); v != "" {
		s = strings.ReplaceAll(s, v, "[redacted]")
	}
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}

// SanitizedError is an error whose message was built (and scrubbed) by a
// driver and that still matches its sentinel, or context error, with
// errors.Is.
type SanitizedError struct {
	Msg string
	Is  error
}

func (e *SanitizedError) Error() string { return e.Msg }
func (e *SanitizedError) Unwrap() error { return e.Is }

// Sleep waits d or until ctx is done, whichever comes first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
