package main

import (
	"flag"
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
		"64k": 64 << 10, "1048576": 1 << 20, "1.5G": 3 << 29} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1MB", "lots"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
