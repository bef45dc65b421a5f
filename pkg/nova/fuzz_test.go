package nova

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// Nova's and Glance's answers are bytes from the network: every parser of
// them is fuzzed. Seeds live in testdata/fuzz/<Target>/ and are replayed by
// every plain `go test`.

func FuzzErrorMessage(f *testing.F) {
	f.Add(400, []byte(`{"badRequest": {"code": 400, "message": "Compute service of h is still in use."}}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		msg := errorMessage(status, body)
		if msg == "" || !utf8.ValidString(msg) || len(msg) > maxMessage+len("…") {
			t.Fatalf("errorMessage gave %q", msg)
		}
		const secret = "s3cr3t-Fuzz"
		withSecret := errorMessage(status, append([]byte(secret+" "), body...))
		if got := scrub(withSecret, []string{secret}); strings.Contains(got, secret) {
			t.Fatalf("scrub kept the secret: %q", got)
		}
	})
}

func FuzzParseTime(f *testing.F) {
	f.Add("2026-11-21T13:42:02.000000")
	f.Fuzz(func(t *testing.T, s string) {
		v := parseTime(s)
		if !v.IsZero() && v.Location().String() != "UTC" {
			t.Fatalf("parseTime(%q) = %v not in UTC", s, v)
		}
	})
}

func FuzzDecodeServers(f *testing.F) {
	f.Add([]byte(`{"servers": [{"id": "a", "image": "", "OS-EXT-STS:task_state": null}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var page struct {
			Servers []serverWire `json:"servers"`
			Links   []link       `json:"servers_links"`
		}
		if json.Unmarshal(body, &page) != nil {
			return
		}
		for _, w := range page.Servers {
			_ = w.server()
		}
		_, _ = pageURL("http://127.0.0.1/v2.1/servers/detail", nextHref(page.Links))
	})
}

func FuzzDecodeListings(f *testing.F) {
	f.Add([]byte(`{"services": [], "migrations": [], "aggregates": [], "flavors": [], "images": []}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var page struct {
			Services   []serviceWire                `json:"services"`
			Migrations []migrationWire              `json:"migrations"`
			Aggregates []aggregateWire              `json:"aggregates"`
			Flavors    []flavorWire                 `json:"flavors"`
			Images     []map[string]json.RawMessage `json:"images"`
			Version    *versionEntry                `json:"version"`
		}
		if json.Unmarshal(body, &page) != nil {
			return
		}
		for _, w := range page.Services {
			_ = w.service()
		}
		ms := make([]Migration, 0, len(page.Migrations))
		for _, w := range page.Migrations {
			ms = append(ms, w.migration())
		}
		_ = filterMigrations(ms, MigrationQuery{MigrationType: "evacuation", Limit: 1})
		for _, raw := range page.Images {
			_ = image(raw)
		}
		if page.Version != nil {
			_, _ = parseMicroversion(string(page.Version.Version))
		}
	})
}
