package main

// What every status-API command shares: the flags (--addr, --token-file,
// --timeout, --consistent), IHA_ADDR, IHA_TOKEN and IHA_TOKEN_FILE, the
// client, the exit status of an API error, and the rendering helpers
// (colour only on a terminal, times, freshness).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ihaproject/iha/pkg/api"
)

// defaultAddr is API_ADDR's default.
const defaultAddr = "127.0.0.1:7421"

// maxTokenFile bounds a token file: a token is one short line.
const maxTokenFile = 4096

// apiEnv reads the environment; tests replace it.
var apiEnv = os.Getenv

// now is the clock of ages in tables; tests replace it.
var now = time.Now

// isTerminal reports whether w is a terminal (colour only then); tests
// replace it.
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && apiEnv("NO_COLOR") == ""
}

// apiFlags are the flags every status-API command takes.
type apiFlags struct {
	stderr     io.Writer // the token-file warning
	addr       string
	tokenFile  string
	consistent bool
	timeout    time.Duration
}

// addAPIFlags adds the API flags to cmd; reads adds --consistent.
func addAPIFlags(cmd *cobra.Command, e *env, reads bool) *apiFlags {
	f := &apiFlags{stderr: e.stderr}
	fs := cmd.Flags()
	fs.StringVar(&f.addr, "addr", "", "status API addresses (host:port or https://host:port), comma-separated, tried in turn (default $IHA_ADDR, else "+defaultAddr+")")
	fs.StringVar(&f.tokenFile, "token-file", "", "read the API token from this file (default $IHA_TOKEN, else the file $IHA_TOKEN_FILE)")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up on each address after this long")
	if reads {
		fs.BoolVar(&f.consistent, "consistent", false, "read through the Raft leader instead of the answering node's replica")
	}
	_ = cmd.MarkFlagFilename("token-file")
	return f
}

// client builds the API client, reading the token. A token problem is a
// usage error (exit 2) whose message never holds the token.
func (f *apiFlags) client() (*api.Client, error) {
	raw := f.addr
	if raw == "" {
		raw = apiEnv("IHA_ADDR")
	}
	if raw == "" {
		raw = defaultAddr
	}
	var addrs []string
	for _, a := range strings.Split(raw, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	tok, err := f.token()
	if err != nil {
		return nil, err
	}
	c := &api.Client{Addrs: addrs, Token: tok, Actor: actor()}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	c.HTTP = &http.Client{Transport: tr, Timeout: f.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c, nil
}

// token is --token-file's content, else IHA_TOKEN, else IHA_TOKEN_FILE's
// content. IHA_TOKEN and IHA_TOKEN_FILE together are ambiguous: refused.
func (f *apiFlags) token() (string, error) {
	if f.tokenFile != "" {
		return readTokenFile(f.stderr, f.tokenFile, "--token-file")
	}
	env, file := apiEnv("IHA_TOKEN"), apiEnv("IHA_TOKEN_FILE")
	switch {
	case env != "" && file != "":
		return "", usagef("both IHA_TOKEN and IHA_TOKEN_FILE are set: unset one (--token-file wins over both)")
	case file != "":
		return readTokenFile(f.stderr, file, "IHA_TOKEN_FILE")
	}
	return env, nil
}

func readTokenFile(stderr io.Writer, path, from string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", usagef("%s: %v", from, err)
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil {
		if !st.Mode().IsRegular() && st.Mode()&os.ModeNamedPipe == 0 {
			return "", usagef("%s: %s is not a file", from, path)
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 && st.Mode().IsRegular() {
			fmt.Fprintf(stderr, "iha: warning: token file %s can be read by others (mode %04o): chmod 600 %s\n", path, perm, path)
		}
	}
	b, err := io.ReadAll(io.LimitReader(fh, maxTokenFile+1))
	if err != nil {
		return "", usagef("%s: reading %s: %v", from, path, err)
	}
	if len(b) > maxTokenFile {
		return "", usagef("%s: %s is larger than %d bytes: not a token file", from, path, maxTokenFile)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case tok == "":
		return "", usagef("%s: %s is empty", from, path)
	case strings.ContainsAny(tok, "\r\n"):
		return "", usagef("%s: %s holds more than one line; it must hold the token alone", from, path)
	}
	return tok, nil
}

// actor names the operator in audit events: user@host.
func actor() string {
	name := apiEnv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	if name == "" {
		name = "unknown"
	}
	return name + "@" + host
}

// fail prints err for an operator and returns the exit code it deserves.
// A token never reaches err (the client does not put it in errors).
func fail(stderr io.Writer, cmd string, err error) int {
	var se *api.StatusError
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "iha %s: %s\n", cmd, ue.msg)
		return exitUsage
	case errors.As(err, &se):
		msg := se.Message
		if se.Parameter != "" {
			msg += " (parameter " + se.Parameter + ")"
		}
		fmt.Fprintf(stderr, "iha %s: %s answered %d: %s\n", cmd, se.Addr, se.Code, msg)
		switch se.Code {
		case http.StatusBadRequest:
			return exitUsage
		case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
			fmt.Fprintln(stderr, "no Raft leader is reachable: the controllers may be electing one, or have lost their quorum; try again, or another --addr")
			return exitUnreachable
		case http.StatusUnauthorized:
			fmt.Fprintln(stderr, "set IHA_TOKEN (or IHA_TOKEN_FILE, --token-file) to the API token (API_TOKEN for changes, API_READ_TOKEN for reads)")
		}
		return exitUnhealthy
	case errors.Is(err, api.ErrUnreachable):
		fmt.Fprintf(stderr, "iha %s: cannot reach the IHA API: %v\n(set --addr or IHA_ADDR to the API_ADDR of one or more iha-leader nodes)\n", cmd, err)
		return exitUnreachable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(stderr, "iha %s: %v\n", cmd, err)
		return exitUnreachable
	}
	fmt.Fprintf(stderr, "iha %s: %v\n", cmd, err)
	return exitUnhealthy
}

// style colours text on a terminal only.
type style struct{ on bool }

func (s style) paint(code, text string) string {
	if !s.on || text == "" {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

func (s style) bad(t string) string  { return s.paint("31;1", t) }
func (s style) warn(t string) string { return s.paint("33", t) }
func (s style) good(t string) string { return s.paint("32", t) }
func (s style) dim(t string) string  { return s.paint("2", t) }

// phase colours a recovery phase so that its meaning shows at a glance.
func (s style) phase(p string) string {
	switch p {
	case "failed", "FAILED":
		return s.bad(strings.ToUpper(p))
	case "skipped":
		return s.warn(p)
	case "done":
		return s.good(p)
	case "", "-":
		return s.dim("-")
	}
	return s.warn(p)
}

func (s style) verdict(v string) string {
	switch v {
	case "healthy", "recovered":
		return s.good(v)
	case "failed", "FAILED":
		return s.bad(strings.ToUpper(v))
	case "unknown":
		return s.dim(v)
	}
	return s.warn(v)
}

// when formats a time for tables: UTC, to the millisecond, "-" if unset.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

// whenOrEmpty is when for raw cells ("" when unset).
func whenOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return when(t)
}

// age is how long ago t was, as kubectl shows it: 45s, 3m20s, 2h, 4d.
func age(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now().Sub(t)
	if d < 0 {
		d = 0
	}
	s := int(d.Seconds())
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", s)
	case d < 10*time.Minute:
		if s%60 == 0 {
			return fmt.Sprintf("%dm", s/60)
		}
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case d < 3*time.Hour:
		return fmt.Sprintf("%dm", s/60)
	case d < 8*time.Hour:
		if m := (s / 60) % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", s/3600, m)
		}
		return fmt.Sprintf("%dh", s/3600)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", s/3600)
	case d < 8*24*time.Hour:
		if h := (s / 3600) % 24; h != 0 {
			return fmt.Sprintf("%dd%dh", s/86400, h)
		}
		return fmt.Sprintf("%dd", s/86400)
	}
	return fmt.Sprintf("%dd", s/86400)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// freshness says who answered and how current the answer is.
func freshness(f api.Freshness) string {
	s := fmt.Sprintf("answered by %s (%s), applied index %d", f.Node, f.Role, f.AppliedIndex)
	if f.Consistent {
		s += ", consistent read through the leader"
	} else if f.Role != "Leader" {
		s += ", from its replica"
		if !f.LastContact.IsZero() {
			s += ", last contact with the leader " + when(f.LastContact)
		}
	}
	return s
}

// info prints an informational line to stderr (never stdout: scripts parse
// stdout).
func info(stderr io.Writer, format string, a ...any) {
	fmt.Fprintf(stderr, format+"\n", a...)
}

// wrap writes "key: value" with the value wrapped at maxTableWidth,
// continuation lines indented under the value.
func wrap(w io.Writer, key, value string) {
	const indent = 12
	head := key + ":"
	if runeLen(head) < indent {
		head += strings.Repeat(" ", indent-runeLen(head))
	} else {
		head += " "
	}
	width := maxTableWidth - indent
	var line strings.Builder
	first := true
	flush := func() {
		if first {
			fmt.Fprintf(w, "%s%s\n", head, line.String())
			first = false
		} else {
			fmt.Fprintf(w, "%s%s\n", strings.Repeat(" ", indent), line.String())
		}
		line.Reset()
	}
	for _, word := range strings.Fields(value) {
		if line.Len() > 0 && runeLen(line.String())+1+runeLen(word) > width {
			flush()
		}
		if line.Len() > 0 {
			line.WriteByte(' ')
		}
		line.WriteString(word)
	}
	flush()
}
