package secret_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ihaproject/iha/pkg/secret"
)

const canary = "CANARY-secret-Hq81-do-not-print"

// holder is how a secret usually travels: inside a struct that something
// may print, log or marshal whole.
type holder struct {
	Name   string
	Passwd secret.Secret
	Ptr    *secret.Secret
}

func TestValueOnlyThroughReveal(t *testing.T) {
	s := secret.New(canary)
	if s.Reveal() != canary || s.IsZero() {
		t.Fatalf("Reveal/IsZero lost the value")
	}
	if !(secret.Secret{}).IsZero() || !secret.New("").IsZero() {
		t.Fatal("an empty secret is not zero")
	}
}

func TestNeverPrinted(t *testing.T) {
	s := secret.New(canary)
	h := holder{Name: "compute-0", Passwd: s, Ptr: &s}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v", "%10s", "%-8v"} {
		out = append(out, fmt.Sprintf(verb, s), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h))
	}
	out = append(out, fmt.Sprint(s, h, &h), fmt.Sprintln(s, h), s.String(), s.GoString())
	out = append(out, fmt.Errorf("login failed for %v with %s: %w", h, s, errors.New("401")).Error())

	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(b))
	tb, err := s.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(tb))
	m, err := json.Marshal(map[secret.Secret]string{s: "as a map key"})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(m))

	var logs bytes.Buffer
	for _, lg := range []*slog.Logger{
		slog.New(slog.NewTextHandler(&logs, nil)),
		slog.New(slog.NewJSONHandler(&logs, nil)),
	} {
		lg.Info("fence", "passwd", s, "host", h, "ptr", &s, slog.Any("any", s), slog.Group("g", "p", s))
	}
	out = append(out, logs.String())

	for _, o := range out {
		if strings.Contains(o, canary) || strings.Contains(o, canary[:10]) {
			t.Fatalf("the secret was printed: %s", o)
		}
	}
	if !strings.Contains(fmt.Sprint(s), secret.Redacted) || !strings.Contains(string(b), secret.Redacted) || !strings.Contains(logs.String(), secret.Redacted) {
		t.Fatalf("the redaction marker is missing:\n%s\n%s", b, logs.String())
	}
}

// A panic prints its value through the runtime, not fmt: a Secret (and an
// error built from one) must show only the marker there too. The panic
// happens in a child process running this test binary.
func TestNeverInAPanic(t *testing.T) {
	if v := os.Getenv("SECRET_TEST_PANIC"); v != "" {
		s := secret.New(canary)
		switch v {
		case "value":
			panic(s)
		case "error":
			panic(fmt.Errorf("fence compute-0: %v", holder{Passwd: s}))
		case "pointer":
			panic(&s)
		}
		return
	}
	for _, mode := range []string{"value", "error", "pointer"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestNeverInAPanic$", "-test.count=1")
		cmd.Env = append(os.Environ(), "SECRET_TEST_PANIC="+mode)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(string(out), "panic") {
			t.Fatalf("%s: the child did not panic (err %v):\n%s", mode, err, out)
		}
		if strings.Contains(string(out), canary) {
			t.Fatalf("%s: the secret is in the panic:\n%s", mode, out)
		}
		if mode != "pointer" && !strings.Contains(string(out), secret.Redacted) {
			t.Fatalf("%s: the panic does not show the marker:\n%s", mode, out)
		}
	}
}
