package config

import (
	"fmt"
	"log/slog"
)

// redacted is what a Secret prints as, whatever the formatting verb.
const redacted = "[redacted]"

// Secret holds a password, token or key. It never prints its value: String,
// GoString, every fmt verb, JSON, text marshalling and slog all give
// "[redacted]". Only Reveal returns the value, and only code that hands it to
// a BMC or to Keystone may call it.
type Secret struct{ v string }

// NewSecret wraps a value.
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the secret value. Never log or wrap it in an error.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether no value was set.
func (s Secret) IsZero() bool { return s.v == "" }

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return redacted }

// Format makes %v, %+v, %#v, %s, %q and %x print the redaction marker.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
