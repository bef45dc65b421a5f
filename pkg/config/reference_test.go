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

// TestEveryInstanceHAKeySaysWhatIHADoesWithIt: the reference's "in IHA"
// column has an entry for every InstanceHA key, and only for those.
func TestEveryInstanceHAKeySaysWhatIHADoesWithIt(t *testing.T) {
	n := 0
	for _, k := range keyTable {
		if k.Origin != originInstanceHA {
			if _, ok := instanceHAParity[k.Name]; ok {
				t.Errorf("%s is IHA's own key but has an InstanceHA parity note", k.Name)
			}
			continue
		}
		n++
		p := instanceHAParity[k.Name]
		if !strings.HasPrefix(p, "honoured") && !strings.HasPrefix(p, "no effect") && !strings.HasPrefix(p, "refused") {
			t.Errorf("%s: parity note %q must start with honoured, no effect or refused", k.Name, p)
		}
	}
	if n != len(instanceHAParity) {
		t.Errorf("%d InstanceHA keys, %d parity notes", n, len(instanceHAParity))
	}
}
