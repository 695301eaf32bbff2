package main

import (
	"flag"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/upgrader"
)

var (
	flagName    = regexp.MustCompile("`(--[a-z-]+)")
	backtickVal = regexp.MustCompile("^`([^`]*)`$")
)

// flagTable reads the table under the heading (a line starting with
// heading) of a markdown file: each row that names flags in its first
// cell, with one default each (a cell such as "`10s`, `3`" gives one per
// flag; a single value holds for every flag of the row).
func flagTable(t *testing.T, file, heading string) map[string]string {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	in := false
	for _, l := range strings.Split(string(src), "\n") {
		switch {
		case strings.HasPrefix(l, heading):
			in = true
			continue
		case in && strings.HasPrefix(l, "#"):
			return defaults
		case !in || !strings.HasPrefix(l, "| `--"):
			continue
		}
		cells := strings.Split(strings.ReplaceAll(l, `\|`, "/"), " | ")
		if len(cells) < 3 {
			t.Fatalf("%s: a flag row without a default: %s", file, l)
		}
		var names []string
		for _, m := range flagName.FindAllStringSubmatch(cells[0], -1) {
			names = append(names, m[1])
		}
		vals := strings.Split(cells[1], ", ")
		for i, n := range names {
			v := cells[1]
			if len(vals) == len(names) {
				v = vals[i]
			}
			defaults[n] = strings.TrimSpace(v)
		}
	}
	if len(defaults) == 0 {
		t.Fatalf("%s has no flag table under %q", file, heading)
	}
	return defaults
}

// documentedDefaultMatches says whether a table's default cell states
// fl's default: a value in backticks is the default itself (a duration
// may be spelt differently, 60s for 1m0s); words (none, off, the current
// directory) describe a default the flag holds as its zero value; a
// boolean is on or off.
func documentedDefaultMatches(fl *flag.Flag, doc string) bool {
	def := fl.DefValue
	if def == "true" || def == "false" {
		return (def == "true") == (doc == "on")
	}
	if m := backtickVal.FindStringSubmatch(doc); m != nil {
		if m[1] == def {
			return true
		}
		a, errA := time.ParseDuration(m[1])
		b, errB := time.ParseDuration(def)
		return errA == nil && errB == nil && a == b
	}
	return def == "" || def == "0" || def == "0s"
}

// Every master flag is in docs/cli.md's table with the default the
// binary has, every flag there exists, and README.md's shorter table
// agrees with both.
func TestDocsListEveryFlag(t *testing.T) {
	fs := masterFlagSet(&masterFlags{})
	cli := flagTable(t, "../../docs/cli.md", "## Master flags")
	fs.VisitAll(func(fl *flag.Flag) {
		doc, ok := cli["--"+fl.Name]
		switch {
		case !ok:
			t.Errorf("docs/cli.md's master flags table has no --%s: add a row for it", fl.Name)
		case !documentedDefaultMatches(fl, doc):
			t.Errorf("docs/cli.md gives --%s the default %s; the binary's is %q", fl.Name, doc, fl.DefValue)
		}
	})
	readme := flagTable(t, "../../README.md", "The master's flags, in short")
	for _, table := range []struct {
		file     string
		defaults map[string]string
	}{{"docs/cli.md", cli}, {"README.md", readme}} {
		for name, doc := range table.defaults {
			fl := fs.Lookup(strings.TrimPrefix(name, "--"))
			switch {
			case fl == nil:
				t.Errorf("%s documents %s, which baton does not have", table.file, name)
			case !documentedDefaultMatches(fl, doc):
				t.Errorf("%s gives %s the default %s; the binary's is %q", table.file, name, doc, fl.DefValue)
			}
		}
	}
}

// The lists of commands in docs/cli.md and README.md name the flags each
// command's own --help shows.
func TestDocsListCommandFlags(t *testing.T) {
	var addr masterAddress
	reload, _, _ := reloadFlagSet(&addr)
	status, _ := statusFlagSet(&addr)
	scale, _, _ := scaleFlagSet(&addr)
	upgrade, _, _ := upgradeFlagSet(&addr)
	demo, _, _ := demoFlagSet()
	sets := map[string]*flag.FlagSet{"reload": reload, "status": status, "scale": scale, "upgrade": upgrade, "demo": demo}
	for _, file := range []string{"docs/cli.md", "README.md"} {
		src, err := os.ReadFile("../../" + file)
		if err != nil {
			t.Fatal(err)
		}
		commandLines(t, file, string(src), sets)
	}
}

func commandLines(t *testing.T, file, src string, sets map[string]*flag.FlagSet) {
	t.Helper()
	for name, fs := range sets {
		line := ""
		for _, l := range strings.Split(string(src), "\n") {
			if strings.HasPrefix(l, "    baton "+name+" ") && strings.Contains(l, "[") {
				line = l
				break
			}
		}
		if line == "" {
			t.Errorf("%s's commands do not show baton %s", file, name)
			continue
		}
		fs.VisitAll(func(fl *flag.Flag) {
			if fl.Name != "log-level" && !strings.Contains(line, "--"+fl.Name) {
				t.Errorf("%s's line for baton %s does not show --%s", file, name, fl.Name)
			}
		})
	}
}

// docs/cli.md's paragraph on status --json names every key the JSON
// has, and no key it does not.
func TestDocsListStatusKeys(t *testing.T) {
	src, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	_, para, ok := strings.Cut(string(src), "`status --json` gives the same as JSON:")
	if !ok {
		t.Fatal("docs/cli.md has no paragraph on status --json")
	}
	para, _, _ = strings.Cut(para, "\n\n")
	keys := map[string]bool{}
	for _, typ := range []reflect.Type{
		reflect.TypeFor[upgrader.Status](),
		reflect.TypeFor[upgrader.WorkerStatus](),
		reflect.TypeFor[upgrader.ReloadStatus](),
	} {
		for f := range typ.Fields() {
			key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			keys[key] = true
			if !strings.Contains(para, "`"+key+"`") && !strings.Contains(para, "`"+key+"[]`") {
				t.Errorf("docs/cli.md's status --json does not name %q (%s.%s)", key, typ.Name(), f.Name)
			}
		}
	}
	// Each `word` before the first "`state` is" names a key.
	listed, _, _ := strings.Cut(para, "`state` is")
	for _, m := range regexp.MustCompile("`([a-z_]+)(?:\\[\\])?`").FindAllStringSubmatch(listed, -1) {
		if !keys[m[1]] && m[1] != "delay" && m[1] != "drain" && m[1] != "baton" {
			t.Errorf("docs/cli.md's status --json names %q, which the JSON does not have", m[1])
		}
	}
}
