package secret

import (
	"fmt"
	"log/slog"
)

// Redacted is what a Secret prints as, whatever the formatting verb.
const Redacted = "[redacted]"

// Secret holds a password, token or key. It never prints its value: String,
// GoString, every fmt verb, JSON, text marshalling and slog all give
// Redacted. Only Reveal returns the value, and only code that hands it to
// a BMC, to Keystone or to a constant-time comparison may call it.
type Secret struct{ v string }

// New wraps a value.
func New(v string) Secret { return Secret{v: v} }

// Reveal returns the secret value. Never log or wrap it in an error.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether no value was set.
func (s Secret) IsZero() bool { return s.v == "" }

func (s Secret) String() string   { return Redacted }
func (s Secret) GoString() string { return Redacted }

// Format makes %v, %+v, %#v, %s, %q and %x print the redaction marker.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(Redacted) }
