package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

func TestFlagErrorSuggests(t *testing.T) {
	fs := masterFlagSet(&masterFlags{})
	for _, tt := range []struct{ args, want string }{
		{"--lisen", "unknown flag --lisen: did you mean --listen?"},
		{"--pidfle", "unknown flag --pidfle: did you mean --pidfile?"},
		{"--Listen", "unknown flag --Listen: did you mean --listen?"},
		{"--ready-time", "unknown flag --ready-time: did you mean --ready-timeout?"},
		{"--log", "unknown flag --log: did you mean --log-format or --log-level?"},
		{"--zzzzzzzz", "unknown flag --zzzzzzzz"},
		{"--x", "unknown flag --x"},
	} {
		err := parseFlags(fs, []string{tt.args})
		if err == nil || err.Error() != tt.want {
			t.Errorf("parse %s: %v, want %q", tt.args, err, tt.want)
		}
	}
}

func TestFlagErrorValues(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--drain-timeout", "x"}, `--drain-timeout "x": want a duration such as 30s or 2m`},
		{[]string{"--restart-limit", "many"}, `--restart-limit "many": want a whole number`},
		{[]string{"--subreaper=\"yes\""}, `--subreaper "\"yes\"": want true or false`},
		{[]string{"--pidfile"}, "flag --pidfile needs a value"},
	} {
		fs := masterFlagSet(&masterFlags{})
		err := parseFlags(fs, tt.args)
		if err == nil || err.Error() != tt.want {
			t.Errorf("parse %q: %v, want %q", tt.args, err, tt.want)
		}
	}
	if err := parseFlags(masterFlagSet(&masterFlags{}), []string{"--help"}); err != flag.ErrHelp {
		t.Errorf("--help: %v, want flag.ErrHelp", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"listen", "listen", 0}, {"lisen", "listen", 1}, {"lsiten", "listen", 2},
		{"", "abc", 3}, {"abc", "", 3}, {"drain", "drain-signal", 7},
	} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestPrintable(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"serving 3 workers", "serving 3 workers"},
		{"héllo ✓", "héllo ✓"},
		{"\x1b[2Jclear", `\x1b[2Jclear`},
		{"a\rb\tc\x07", `a\rb\tc\a`},
		{"bad \xff byte", `bad \xff byte`},
		{"line\u2028sep", `line\u2028sep`},
		{"kept \uFFFD", "kept \uFFFD"},
	} {
		if got := printable(tt.in); got != tt.want {
			t.Errorf("printable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512MB": 512 << 20, "2GB": 2 << 30, "1G": 1 << 30, "300MiB": 300 << 20,
		"512 MB": 512 << 20, " 2 gib ": 2 << 30, "1.5GB": 3 << 29, "5B": 5, "0.5k": 512, "1.": 1, "8388607T": 8388607 << 40,
		"64k": 64 << 10, "1048576": 1 << 20, "1.5G": 3 << 29} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1MB", "lots", "1e20", "1e3MB", "0x10", "0x1p4", "NaN", "Inf", "+Inf", ".5G", "1.2.3M",
		"8388608T", "99999999999999999999", "1_000", "5 P", "1KBB", "1iB", "1 G B", "１MB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

// A bare word before -- is never a worker command: a misspelt subcommand
// is a usage error that names the subcommand meant, and so is a worker
// command without its --.
func TestBareWordIsAUsageError(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"relaod", "--wait", "--pidfile", "app.pid"}, `baton: "relaod" is not a command (a worker command goes after --): did you mean baton reload? (baton --help lists every flag)`},
		{[]string{"stat", "--json"}, `baton: "stat" is not a command (a worker command goes after --): did you mean baton status? (baton --help lists every flag)`},
		{[]string{"sclae", "3"}, `baton: "sclae" is not a command (a worker command goes after --): did you mean baton scale? (baton --help lists every flag)`},
		{[]string{"upgade", "--wait"}, `baton: "upgade" is not a command (a worker command goes after --): did you mean baton upgrade? (baton --help lists every flag)`},
		{[]string{"--pidfile", "app.pid", "versoin"}, `baton: "versoin" is not a command (a worker command goes after --): did you mean baton version? (baton --help lists every flag)`},
		{[]string{"--listen", "tcp://127.0.0.1:0", "./server"}, `baton: "./server" is not a command: put the worker command after --, e.g. baton --listen tcp://127.0.0.1:8080 -- ./server (baton --help lists every flag)`},
		{[]string{"--subreaper", "false", "--", "./server"}, `baton: --subreaper false: write --subreaper=false; a true/false flag takes its value after = (baton --help lists every flag)`},
		{[]string{"--pidfile", "true", "./server"}, `baton: "./server" is not a command: put the worker command after --, e.g. baton --listen tcp://127.0.0.1:8080 -- ./server (baton --help lists every flag)`},
		{[]string{"upgrade", "--wait"}, `baton: say which master: --pidfile PATH or --control PATH (baton upgrade --help lists every flag)`},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tt.args, &stdout, &stderr); code != exitUsage || stdout.Len() > 0 || stderr.String() != tt.want+"\n" {
			t.Errorf("baton %q: exit %d, stdout %q, stderr %q; want exit 2 and %q", tt.args, code, stdout.String(), stderr.String(), tt.want)
		}
	}
}

// A worker count, wherever it is given, is a whole number from 1 to
// upgrader.MaxWorkers: anything else is a usage error in one line, before
// anything starts (a count typed with extra digits would otherwise fork
// until the master ran out of memory).
func TestWorkerCountsAreChecked(t *testing.T) {
	run1 := []string{"--listen", "tcp://127.0.0.1:0", "--", "true"}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{append([]string{"--workers", "0"}, run1...), "baton: --workers 0: want 1 to 1024"},
		{append([]string{"--workers", "-1"}, run1...), "baton: --workers -1: want 1 to 1024"},
		{append([]string{"--workers", "100000"}, run1...), "baton: --workers 100000: want 1 to 1024"},
		{append([]string{"--workers", "abc"}, run1...), `baton: --workers "abc": want a whole number`},
		{append([]string{"--workers", "2", "--max-surge", "3"}, run1...), "baton: --max-surge 3: want 1 to --workers (2)"},
		{append([]string{"--workers", "2", "--max-surge", "-1"}, run1...), "baton: --max-surge -1: want 1 to --workers (2)"},
		{[]string{"scale", "0", "--pidfile", "app.pid"}, `baton: scale "0": want a worker count from 1 to 1024, e.g. baton scale 4 --pidfile app.pid`},
		{[]string{"scale", "-3", "--pidfile", "app.pid"}, `baton: scale "-3": want a worker count from 1 to 1024, e.g. baton scale 4 --pidfile app.pid`},
		{[]string{"scale", "--pidfile", "app.pid", "--", "-3"}, `baton: scale "-3": want a worker count from 1 to 1024, e.g. baton scale 4 --pidfile app.pid`},
		{[]string{"scale", "abc", "--pidfile", "app.pid"}, `baton: scale "abc": want a worker count from 1 to 1024, e.g. baton scale 4 --pidfile app.pid`},
		{[]string{"scale", "1e9", "--pidfile", "app.pid"}, `baton: scale "1e9": want a worker count from 1 to 1024, e.g. baton scale 4 --pidfile app.pid`},
		{[]string{"scale", "1000000000", "--pidfile", "app.pid"}, `baton: scale "1000000000": want a worker count from 1 to 1024, e.g. baton scale 4 --pidfile app.pid`},
		{[]string{"scale", "--pidfile", "app.pid"}, `baton: scale "": want a worker count from 1 to 1024, e.g. baton scale 4 --pidfile app.pid`},
		{[]string{"scale", "2", "3", "--pidfile", "app.pid"}, `baton: scale takes one worker count, got "3 --pidfile app.pid"`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr)
		if code != exitUsage || stdout.Len() > 0 || !strings.HasPrefix(stderr.String(), tt.want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("baton %q: exit %d, stdout %q, stderr %q; want exit 2 and one line starting %q", tt.args, code, stdout.String(), stderr.String(), tt.want)
		}
	}
}

func TestAfterDashes(t *testing.T) {
	for _, tt := range []struct {
		args, rest []string
		want       bool
	}{
		{[]string{"--", "./server"}, []string{"./server"}, true},
		{[]string{"--listen", "x", "--", "./server", "--", "y"}, []string{"./server", "--", "y"}, true},
		{[]string{"--listen", "x", "./server"}, []string{"./server"}, false},
		{[]string{"./server", "--"}, []string{"./server", "--"}, false},
	} {
		if got := afterDashes(tt.args, tt.rest); got != tt.want {
			t.Errorf("afterDashes(%q, %q) = %v, want %v", tt.args, tt.rest, got, tt.want)
		}
	}
}

// Sizes, durations and URLs of self-healing that no worker could ever
// satisfy, or that do not parse, are usage errors in one line: a
// --watchdog 1ns replaced the worker about seventy times a second.
func TestSelfHealingLimitsAreChecked(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-memory", "0"}, `baton: --max-memory "0": want a size such as 512MB or 2GB`},
		{[]string{"--max-memory", "-1"}, `baton: --max-memory "-1": want a size such as 512MB or 2GB`},
		{[]string{"--max-memory", "1e20"}, `baton: --max-memory "1e20": want a size such as 512MB or 2GB`},
		{[]string{"--max-memory", "99999999T"}, `baton: --max-memory "99999999T": want a size such as 512MB or 2GB`},
		{[]string{"--max-memory", "NaN"}, `baton: --max-memory "NaN": want a size such as 512MB or 2GB`},
		{[]string{"--max-memory", "512"}, `baton: --max-memory "512" is 512 bytes: want at least 1MB, such as 512MB or 2GB`},
		{[]string{"--max-memory", "1KB"}, `baton: --max-memory "1KB" is 1024 bytes: want at least 1MB, such as 512MB or 2GB`},
		{[]string{"--watchdog", "-1s"}, "baton: --watchdog -1s: want 100ms or more, or 0 for none"},
		{[]string{"--watchdog", "1ns"}, "baton: --watchdog 1ns: want 100ms or more, or 0 for none"},
		{[]string{"--watchdog", "99ms"}, "baton: --watchdog 99ms: want 100ms or more, or 0 for none"},
		{[]string{"--watchdog", "1e9"}, `baton: --watchdog "1e9": want a duration such as 30s or 2m`},
		{[]string{"--max-age", "1ns"}, "baton: --max-age 1ns: want 1s or more, or 0 for none"},
		{[]string{"--max-age", "-5m"}, "baton: --max-age -5m0s: want 1s or more, or 0 for none"},
		{[]string{"--probe", "ftp://127.0.0.1/x"}, `baton: --probe "ftp://127.0.0.1/x": want an http:// URL`},
		{[]string{"--probe", "127.0.0.1:8080/healthz"}, `baton: --probe "127.0.0.1:8080/healthz": want an http:// URL`},
		{[]string{"--probe", "http:///healthz"}, `baton: --probe "http:///healthz": want an http:// URL`},
	} {
		args := append(tt.args, "--listen", "tcp://127.0.0.1:0", "--", "true")
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		if code != exitUsage || stdout.Len() > 0 || !strings.HasPrefix(stderr.String(), tt.want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("baton %q: exit %d, stdout %q, stderr %q; want exit 2 and one line starting %q", tt.args, code, stdout.String(), stderr.String(), tt.want)
		}
	}
}
