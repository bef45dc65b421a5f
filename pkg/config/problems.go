package config

import (
	"strconv"
	"strings"

	"github.com/ihaproject/iha/pkg/secret"
)

// Problem is one thing wrong with the configuration. It never holds a secret:
// Value is empty (or "[redacted]") for passwords and tokens.
type Problem struct {
	File    string // path of the file, or "environment"
	Line    int    // 1-based line in File, 0 when unknown
	Host    string // fencing.yaml host or clouds.yaml cloud, when relevant
	Key     string // the key at fault, when relevant
	Value   string // the offending value as written (quoted if it was a string)
	Reason  string // what is wrong, e.g. "is out of range"
	Allowed string // what would be accepted, e.g. "10–300 seconds"
}

// String renders the problem on one line, e.g.
// `config.yaml:7: DELTA: 5 is out of range (allowed 10–300 seconds)`.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Host != "" {
		b.WriteString(p.Host)
		b.WriteString(": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	if p.Value != "" {
		b.WriteString(p.Value)
		b.WriteString(" ")
	}
	b.WriteString(p.Reason)
	if p.Allowed != "" {
		b.WriteString(" (allowed ")
		b.WriteString(p.Allowed)
		b.WriteString(")")
	}
	return b.String()
}

// Problems is the error Load returns when the configuration is not usable:
// every problem found in every file, in file order, plus the warnings found
// on the way (so that `iha config check` can show both).
type Problems struct {
	Items    []Problem
	Warnings []string
}

// Error prints one problem per line.
func (e *Problems) Error() string {
	lines := make([]string, len(e.Items))
	for i, p := range e.Items {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// collector gathers problems and warnings while the files are read, and
// scrubs every message of the secret values it has been told about, as a
// second line of defence behind messages that never quote secrets.
type collector struct {
	problems []Problem
	warnings []string
	secrets  []string
}

func (c *collector) add(p Problem) { c.problems = append(c.problems, p) }

func (c *collector) warn(w string) { c.warnings = append(c.warnings, w) }

// minScrubbed is the length below which a secret is not scrubbed: a
// one-letter password would otherwise mangle every message, and messages
// never quote secrets in the first place.
const minScrubbed = 6

// secret records a value that must never appear in any message.
func (c *collector) secret(v string) {
	if len(strings.TrimSpace(v)) >= minScrubbed {
		c.secrets = append(c.secrets, v)
	}
}

// scrub replaces every known secret value in s.
func (c *collector) scrub(s string) string {
	for _, v := range c.secrets {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, secret.Redacted)
		}
	}
	return s
}

// finish scrubs everything collected.
func (c *collector) finish() ([]Problem, []string) {
	for i := range c.problems {
		p := &c.problems[i]
		p.File, p.Host, p.Key = c.scrub(p.File), c.scrub(p.Host), c.scrub(p.Key)
		p.Value, p.Reason, p.Allowed = c.scrub(p.Value), c.scrub(p.Reason), c.scrub(p.Allowed)
	}
	for i := range c.warnings {
		c.warnings[i] = c.scrub(c.warnings[i])
	}
	return c.problems, c.warnings
}
