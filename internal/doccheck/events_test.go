package doccheck

import (
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/baton-sh/baton/upgrader"
)

var (
	// loggedEvent is how baton's code names a log line's event: a
	// zerolog field or the keeper's key-value pairs.
	loggedEvent = regexp.MustCompile(`"event",\s*"([a-z_]+)"`)
	// eventConst is a package's named event, as internal/workerlog has,
	// or cmd/baton's start-up warning with its event.
	eventConst = regexp.MustCompile(`(?:\bEvent[A-Za-z]*\s*=\s*|\bwarning\{)"([a-z_]+)"`)
	eventRow   = regexp.MustCompile("^\\| `([a-z_]+)` \\| (debug|info|warn|error) \\|")
)

// codeEvents is every event baton's code logs: the lifecycle steps of
// upgrader.EventKind and the names spelt in its non-test Go files.
func codeEvents(t *testing.T, root string) map[string]string {
	t.Helper()
	events := map[string]string{}
	for k := upgrader.ReloadStarted; k <= upgrader.Stopping; k++ {
		events[k.Key()] = "upgrader.EventKind"
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		for _, re := range []*regexp.Regexp{loggedEvent, eventConst} {
			for _, m := range re.FindAllStringSubmatch(string(src), -1) {
				events[m[1]] = rel
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// Every event baton logs is in docs/monitoring.md's table of events,
// and every event there is one baton logs, so a log pipeline written
// from the manual matches what the binary writes.
func TestMonitoringListsEveryEvent(t *testing.T) {
	root := repoRoot(t)
	src, err := os.ReadFile(filepath.Join(root, "docs", "monitoring.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(src), "\n### Events\n")
	if !ok {
		t.Fatal("docs/monitoring.md has no ### Events section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	documented := map[string]bool{}
	for _, l := range strings.Split(section, "\n") {
		if m := eventRow.FindStringSubmatch(l); m != nil {
			if documented[m[1]] {
				t.Errorf("docs/monitoring.md lists %s twice", m[1])
			}
			documented[m[1]] = true
		}
	}
	logged := codeEvents(t, root)
	for _, e := range slices.Sorted(maps.Keys(logged)) {
		if !documented[e] {
			t.Errorf("%s logs event %s, which docs/monitoring.md's ### Events does not list", logged[e], e)
		}
	}
	for e := range documented {
		if _, ok := logged[e]; !ok {
			t.Errorf("docs/monitoring.md lists event %s, which baton never logs", e)
		}
	}
	t.Logf("%d events logged, %d documented", len(logged), len(documented))
}

// Every baton_ metric family the admin endpoint serves (each has its
// HELP text in internal/admin) is in docs/monitoring.md's table of
// metrics, and every one there exists.
func TestMonitoringListsEveryMetric(t *testing.T) {
	root := repoRoot(t)
	code, err := os.ReadFile(filepath.Join(root, "internal", "admin", "metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*"(baton_[a-z_]+)":`).FindAllStringSubmatch(string(code), -1) {
		served[m[1]] = true
	}
	if len(served) == 0 {
		t.Fatal("internal/admin/metrics.go names no baton_ metric: has its HELP map moved?")
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "monitoring.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(baton_[a-z_]+)[{`]").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	for name := range served {
		if !documented[name] {
			t.Errorf("the admin endpoint serves %s, which docs/monitoring.md's metrics table does not list", name)
		}
	}
	for name := range documented {
		if !served[name] {
			t.Errorf("docs/monitoring.md lists metric %s, which the admin endpoint does not serve", name)
		}
	}
}
