// Package docs holds the project's reference documents; its test checks
// that what the code cites of them exists.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	ruleID     = regexp.MustCompile(`\b(R\d+\.\d+|G\d+|W\d+)\b`)
	sectionRef = regexp.MustCompile(`docs/rules\.md\s+§(\d+)`)
	docRef     = regexp.MustCompile(`docs/[a-z0-9-]+\.md`)
)

// TestEveryCitedRuleResolves: every InstanceHA rule id (R3.5, G4, W8 …)
// and rules.md section a Go comment cites is in docs/rules.md, and every
// docs/*.md a file names exists, so no comment points at a document
// outside the repository.
func TestEveryCitedRuleResolves(t *testing.T) {
	rules, err := os.ReadFile("rules.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, line := range strings.Split(string(rules), "\n") {
		if m := regexp.MustCompile(`^- (R\d+\.\d+|G\d+|W\d+)\b`).FindStringSubmatch(line); m != nil {
			defined[m[1]] = true
		}
		if m := regexp.MustCompile(`^## (\d+)\.`).FindStringSubmatch(line); m != nil {
			defined["§"+m[1]] = true
		}
	}
	if len(defined) < 100 {
		t.Fatalf("rules.md defines only %d ids: has its format changed?", len(defined))
	}
	cited := 0
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != ".." || d.Name() == "docs") {
			return filepath.SkipDir
		}
		ext := filepath.Ext(path)
		if d.IsDir() || (ext != ".go" && ext != ".md" && ext != ".sh") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		src := string(b)
		if ext == ".go" {
			for _, id := range ruleID.FindAllString(src, -1) {
				cited++
				if !defined[id] {
					t.Errorf("%s cites %s, which docs/rules.md does not define", path, id)
				}
			}
		}
		for _, m := range sectionRef.FindAllStringSubmatch(src, -1) {
			if !defined["§"+m[1]] {
				t.Errorf("%s cites docs/rules.md §%s, which does not exist", path, m[1])
			}
		}
		for _, ref := range docRef.FindAllString(src, -1) {
			if _, err := os.Stat(filepath.Join("..", ref)); err != nil {
				t.Errorf("%s names %s, which is not in the repository", path, ref)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cited < 50 {
		t.Fatalf("only %d rule ids cited in the code: is the walk broken?", cited)
	}
}
