package nova

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestScrubRemovesCredentials(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"key=value", "login failed password=hunter2 for admin", "login failed password=*** for admin"},
		{"case-insensitive keys", "TOKEN=abc Secret=def", "TOKEN=*** Secret=***"},
		{"query string", "GET /x?auth=abc&token=def&ok=1", "GET /x?auth=***&token=***&ok=1"},
		{"application credentials", "application_credential_secret=s3 application_credential_id=i1", "application_credential_secret=*** application_credential_id=***"},
		{"json password", `{"user": {"name": "admin", "password": "hunter2"}}`, `{"user": {"name": "admin", "password": "***"}}`},
		{"json escaped quote", `{"secret": "a\"b"}`, `{"secret": "***"}`},
		{"json passwd and credential", `{"passwd":"x","credential" : "y"}`, `{"passwd": "***","credential": "***"}`},
		{"authorization header", "Authorization: Bearer abc.def", "authorization=***"},
		{"x-auth-token header", "X-Auth-Token: gAAAA123", "x-auth-token=***"},
		{"url userinfo", "dial http://admin:hunter2@keystone:5000/v3 failed", "dial http://***@keystone:5000/v3 failed"},
		{"nothing to hide", "Compute service of compute-1 is still in use.", "Compute service of compute-1 is still in use."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scrub(tt.in, nil); got != tt.want {
				t.Errorf("scrub(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	if got := scrub("the value hunter2 out of context", []string{"hunter2"}); strings.Contains(got, "hunter2") {
		t.Errorf("known secret kept: %q", got)
	}
}

func TestErrorMessageShapes(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"nova fault", 400, `{"badRequest": {"code": 400, "message": "Invalid input."}}`, "Invalid input."},
		{"keystone error", 401, `{"error": {"code": 401, "message": "Needs auth.", "title": "Unauthorized"}}`, "Needs auth."},
		{"top-level message", 409, `{"message": "busy"}`, "busy"},
		{"placement errors", 409, `{"errors": [{"status": 409, "title": "Conflict", "detail": "generation mismatch"}]}`, "generation mismatch"},
		{"html", 502, "<html><head><title>502</title></head><body>Bad   Gateway</body></html>", "502 Bad Gateway"},
		{"plain text", 401, "401 Unauthorized\n\nThis server could not verify that you are authorized.", "401 Unauthorized This server could not verify that you are authorized."},
		{"empty body", 503, "", "Service Unavailable"},
		{"unknown status, empty body", 599, "", "no message"},
		{"long body is cut", 500, strings.Repeat("é", 600), strings.Repeat("é", 256) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errorMessage(tt.status, []byte(tt.body)); got != tt.want {
				t.Errorf("errorMessage = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v.UTC()
	}
	tests := []struct {
		in   string
		want time.Time
	}{
		{"2026-11-21T13:42:02.000000", utc("2026-11-21T13:42:02Z")},
		{"2026-11-21T13:42:02.123456", utc("2026-11-21T13:42:02.123456Z")},
		{"2026-11-21 13:42:02", utc("2026-11-21T13:42:02Z")},
		{"2026-11-21T13:42:02Z", utc("2026-11-21T13:42:02Z")},
		{"2026-11-21T15:42:02+02:00", utc("2026-11-21T13:42:02Z")},
		{"2026-11-21T13:42:02.5+00:00", utc("2026-11-21T13:42:02.5Z")},
		{"", time.Time{}},
		{"None", time.Time{}},
		{"yesterday", time.Time{}},
	}
	for _, tt := range tests {
		got := parseTime(tt.in)
		if !got.Equal(tt.want) || (!got.IsZero() && got.Location() != time.UTC) {
			t.Errorf("parseTime(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestLenientDecodingKeepsTheOtherServers(t *testing.T) {
	body := `{"servers": [
		{"id": "a", "name": 42, "image": 7, "flavor": "x", "metadata": ["no"], "locked": "True", "updated": 5, "OS-EXT-STS:task_state": {"odd": 1}},
		{"id": "b", "status": "ACTIVE", "metadata": {"n": 1, "s": "v", "z": null}}]}`
	var page struct {
		Servers []serverWire `json:"servers"`
	}
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatal(err)
	}
	a, b := page.Servers[0].server(), page.Servers[1].server()
	if a.ID != "a" || a.Name != "42" || a.ImageID != "7" || a.FlavorID != "" || a.Metadata != nil || !a.Locked || !a.Updated.IsZero() {
		t.Errorf("odd server %+v", a)
	}
	if b.ID != "b" || b.Metadata["n"] != "1" || b.Metadata["s"] != "v" || b.Metadata["z"] != "" {
		t.Errorf("plain server %+v", b)
	}
}

func TestMicroversionParsing(t *testing.T) {
	for in, want := range map[string]microversion{"2.94": {2, 94}, "v2.1": {2, 1}, " 2.53 ": {2, 53}} {
		got, err := parseMicroversion(in)
		if err != nil || got != want {
			t.Errorf("parseMicroversion(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "2", "2.x", "latest", "-2.1", "2.-1"} {
		if _, err := parseMicroversion(bad); err == nil {
			t.Errorf("parseMicroversion(%q) accepted", bad)
		}
	}
	if !(microversion{2, 9}).less(microversion{2, 10}) || (microversion{3, 0}).less(microversion{2, 99}) {
		t.Error("ordering is not numeric")
	}
}

func TestPageURLKeepsOnlyTheQuery(t *testing.T) {
	got, ok := pageURL("http://127.0.0.1:8774/v2.1/servers/detail", "https://public.example.com/compute/v2.1/servers/detail?host=h&marker=m")
	if !ok || got != "http://127.0.0.1:8774/v2.1/servers/detail?host=h&marker=m" {
		t.Fatalf("pageURL = %q, %v", got, ok)
	}
	for _, href := range []string{"", "http://x/servers", "::%%bad"} {
		if _, ok := pageURL("http://127.0.0.1/x", href); ok {
			t.Errorf("pageURL accepted %q", href)
		}
	}
}
