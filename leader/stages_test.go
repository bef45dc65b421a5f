package leader

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"testing"
)

// TestStagesThatMustNotWriteHoldOnlyAReader keeps the stages that judge
// and decide (detect, admit, the verdict table, the tag index) and shadow
// mode's watching off Nova's writer: in their files the Reconciler's Nova is
// reached only through r.read (NovaReader). A change that calls r.nova
// there — where an UpdateService or an Evacuate would compile — fails here.
func TestStagesThatMustNotWriteHoldOnlyAReader(t *testing.T) {
	fset := token.NewFileSet()
	for _, file := range []string{"detect.go", "admit.go", "verdict.go", "tags.go", "shadow.go"} {
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		reads := 0
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "r" {
				switch sel.Sel.Name {
				case "nova", "novaRaw":
					t.Errorf("%s: r.%s in a stage that must not write to Nova: use r.read (NovaReader)", fset.Position(sel.Pos()), sel.Sel.Name)
				case "read":
					reads++
				}
			}
			return true
		})
		t.Logf("%s: %d reads through r.read", file, reads)
	}
}

// TestGatesRunInTheRulesOrder: the admit stage's gates are docs/rules.md
// §4's gate chain, in its order (a gate moved or renumbered without the
// rules document, or the other way round, fails here).
func TestGatesRunInTheRulesOrder(t *testing.T) {
	b, err := os.ReadFile("../docs/rules.md")
	if err != nil {
		t.Fatal(err)
	}
	var doc []string // §4's gate ids, in order
	for _, m := range regexp.MustCompile(`(?m)^- (G\d+) `).FindAllStringSubmatch(string(b), -1) {
		doc = append(doc, m[1])
	}
	i := 0
	for _, g := range gates {
		for i < len(doc) && doc[i] != g.id {
			i++
		}
		if i == len(doc) {
			t.Fatalf("gate %s (%s) is not in docs/rules.md §4 after the gates before it: rules order %v", g.id, g.name, doc)
		}
	}
	if len(gates) == 0 || gates[0].id != "G4" || gates[len(gates)-1].id != "G11" {
		t.Errorf("gates run %s…%s, want G4…G11 (G2 and G3 are the detect stage's)", gates[0].id, gates[len(gates)-1].id)
	}
}
