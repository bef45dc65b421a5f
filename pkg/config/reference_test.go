package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/config-reference.md from ReferenceMarkdown")

func TestReferenceMarkdown(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "config-reference.md")
	got := ReferenceMarkdown()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it with: go test ./pkg/config -run TestReferenceMarkdown -update)", err)
	}
	if string(want) != got {
		t.Errorf("%s is out of date: run go test ./pkg/config -run TestReferenceMarkdown -update", path)
	}
	for _, k := range keyTable {
		if !strings.Contains(got, "`"+k.Name+"`") {
			t.Errorf("reference lacks %s", k.Name)
		}
	}
	for _, e := range envVars {
		if !strings.Contains(got, "`"+e.Name+"`") {
			t.Errorf("reference lacks %s", e.Name)
		}
	}
}
