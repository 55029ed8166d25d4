package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/parley-p2p/parley/"

// allowed lists, per package, the project packages it may import. A package
// missing from the table may import nothing of the project. The internal/
// packages are leaves open to all: internal/pb is the wire vocabulary,
// internal/exchange the one-request-per-stream helper.
var allowed = map[string][]string{
	"cmd/parley": {"*"},
	"node":       {"*"},
	"identity":   {},
	"dht":        {"presence"},
	"presence":   {"identity", "seal", "store"},
	"seal":       {"identity"},
	"direct":     {"seal", "store"},
	"inbox":      {"seal", "store"},
	"outbox":     {"direct", "inbox", "store"},
	"store":      {},
	"api":        {},
	"api/client": {"api"},
	"sim":        {"node", "identity", "api", "dht"},
}

func TestImportTable(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == "testdata" || strings.HasPrefix(name, ".") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		// The table governs what ships; tests may build fixtures (an
		// identity, a store) from any package the compiler lets them.
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(rel, "internal/") {
			// Leaves: they may use internal/pb and nothing else of ours.
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if dep, ok := strings.CutPrefix(p, module); ok && dep != "internal/pb" && dep != rel {
					t.Errorf("%s: internal package %s may not import %s", path, rel, dep)
				}
			}
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		seen++
		rules, listed := allowed[rel]
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			dep, ok := strings.CutPrefix(p, module)
			if !ok || dep == rel || strings.HasPrefix(dep, "internal/") {
				continue
			}
			if !listed {
				t.Errorf("%s: package %s is not in the import table (DESIGN §2); add it before it imports %s", path, rel, dep)
				continue
			}
			if !permits(rules, dep) {
				t.Errorf("%s: %s may not import %s (DESIGN §2 allows %v)", path, rel, dep, rules)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 10 {
		t.Fatalf("walked only %d Go files from %s; is the layout gone?", seen, root)
	}
}

func permits(rules []string, dep string) bool {
	for _, r := range rules {
		if r == "*" || r == dep {
			return true
		}
	}
	return false
}

// TestEveryPackageHasDoc keeps a doc comment on every package.
func TestEveryPackageHasDoc(t *testing.T) {
	root, _ := filepath.Abs("../..")
	docs := map[string]bool{}
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && path != root) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		dir := filepath.Dir(path)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Error(err)
			return nil
		}
		docs[dir] = docs[dir] || f.Doc != nil
		return nil
	})
	for dir, ok := range docs {
		if !ok {
			rel, _ := filepath.Rel(root, dir)
			t.Errorf("package %s has no doc comment", rel)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
}
