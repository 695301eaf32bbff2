package doccheck

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the directory holding go.mod, above this package's.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// Every link in baton's own documents resolves: README.md, docs/ and the
// rest of the repository's markdown.
func TestRepositoryLinks(t *testing.T) {
	root := os.DirFS(repoRoot(t))
	docs, err := Documents(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"README.md", "docs/README.md"} {
		if !slices.Contains(docs, must) {
			t.Errorf("%s is missing", must)
		}
	}
	problems, err := Check(root, docs)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("broken link: %s", p)
	}
	t.Logf("%d documents checked", len(docs))
}

// The manual's index, docs/README.md, links to every page of docs/, so a
// page added later is found from the README.
func TestManualIndexesEveryPage(t *testing.T) {
	root := repoRoot(t)
	src, err := os.ReadFile(filepath.Join(root, "docs", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	linked := map[string]bool{}
	for _, b := range parse(string(src)).blocks {
		for _, l := range links(b.text) {
			p, _, _ := strings.Cut(l.dest, "#")
			linked[path.Clean(p)] = true
		}
	}
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pages {
		if name := filepath.Base(p); name != "README.md" && !linked[name] {
			t.Errorf("docs/README.md does not link to docs/%s: add it to the index", name)
		}
	}
}

// README.md's ## Tests section starts with the one test command, the one
// .ci/run runs: its first indented line.
func TestReadmeTestCommand(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, l := range strings.Split(string(src), "\n") {
		switch {
		case l == "## Tests":
			in = true
		case in && strings.HasPrefix(l, "## "):
			t.Fatal("README.md's ## Tests section has no indented command")
		case in && strings.HasPrefix(l, "    ") && !strings.HasPrefix(l, "     "):
			if got := strings.TrimSpace(l); got != "scripts/test" {
				t.Fatalf("README.md's test command is %q, want scripts/test", got)
			}
			return
		}
	}
	t.Fatal("README.md has no ## Tests section")
}
