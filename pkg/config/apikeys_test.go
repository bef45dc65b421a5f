package config

import (
	"fmt"
	"strings"
	"testing"
)

// The status API's tokens are secrets: parsed from config.yaml, never
// rendered by Changes or the reference, never quoted in a problem.
func TestAPITokensAreSecretsAndNeverPrinted(t *testing.T) {
	const canary = "CanaryApiT0ken-5521"
	cfg := mustLoad(t, fixture(t, map[string]string{"config.yaml": "config:\n  API_TOKEN: " + canary + "\n  API_READ_TOKEN: reader-" + canary + "\n"}), nil)
	if cfg.Settings.APIToken.Reveal() != canary || cfg.Settings.APIReadToken.Reveal() != "reader-"+canary {
		t.Fatalf("tokens not parsed")
	}
	var shown strings.Builder
	for _, c := range cfg.Settings.Changes() {
		fmt.Fprintf(&shown, "%s=%s (default %s)\n", c.Key, c.Value, c.Default)
	}
	fmt.Fprintf(&shown, "%v %+v %#v", cfg.Settings, cfg.Settings, cfg.Settings)
	if strings.Contains(shown.String(), canary) {
		t.Fatalf("a token was printed:\n%s", shown.String())
	}
	if !strings.Contains(shown.String(), "API_TOKEN=[redacted]") {
		t.Fatalf("Changes does not say API_TOKEN is set:\n%s", shown.String())
	}
}

func TestAPIKeyProblems(t *testing.T) {
	const canary = "CanaryApiT0ken-9034"
	cases := []struct {
		name, yaml, key, reason string
	}{
		{"a token that is a list", "config:\n  API_TOKEN: [" + canary + "]\n", "API_TOKEN", "non-empty string"},
		{"an empty token", "config:\n  API_READ_TOKEN: \"\"\n", "API_READ_TOKEN", "non-empty string"},
		{"a 1-character token", "config:\n  API_TOKEN: x\n", "API_TOKEN", "is too short (1 characters)"},
		{"a 15-character read token", "config:\n  API_READ_TOKEN: abcdefghijklmno\n", "API_READ_TOKEN", "at least 16 characters"},
		{"the read token equals the write token", "config:\n  API_TOKEN: " + canary + "\n  API_READ_TOKEN: " + canary + "\n", "API_READ_TOKEN", "must differ"},
		{"a certificate without its key", "config:\n  API_TLS_CERT: /etc/hostname\n", "API_TLS_CERT", "together"},
		{"a key file that does not exist", "config:\n  API_TLS_CERT: /etc/hostname\n  API_TLS_KEY: /nonexistent/key.pem\n", "API_TLS_KEY", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, p, logs := loadDir(t, fixture(t, map[string]string{"config.yaml": c.yaml}), nil)
			if p == nil {
				t.Fatal("no problem reported")
			}
			text := p.Error() + logs
			if !strings.Contains(text, c.key) || !strings.Contains(text, c.reason) {
				t.Fatalf("want a problem with %s (%q), got:\n%s", c.key, c.reason, text)
			}
			if strings.Contains(text, canary) {
				t.Fatalf("the token appears in the problem:\n%s", text)
			}
		})
	}
}
