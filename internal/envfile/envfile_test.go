package envfile

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseFile(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want File
		err  bool
	}{
		{"/etc/app.env", File{Path: "/etc/app.env"}, false},
		{"-/etc/app.env", File{Path: "/etc/app.env", Optional: true}, false},
		{"app.env", File{Path: "app.env"}, false},
		{"--x", File{Path: "-x", Optional: true}, false},
		{"", File{}, true},
		{"-", File{}, true},
	} {
		got, err := ParseFile(tc.arg)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseFile(%q) = %+v, %v; want %+v, error %v", tc.arg, got, err, tc.want, tc.err)
		}
		if err == nil && got.String() != tc.arg {
			t.Errorf("ParseFile(%q).String() = %q", tc.arg, got.String())
		}
	}
}

func TestParseSetting(t *testing.T) {
	for _, tc := range []struct {
		arg         string
		name, value string
		err         string
	}{
		{arg: "A=1", name: "A", value: "1"},
		{arg: "A=", name: "A", value: ""},
		{arg: "A==", name: "A", value: "="},
		{arg: "_a9=b c 'd' \\e", name: "_a9", value: "b c 'd' \\e"},
		{arg: "A", err: `^--env "A": want NAME=VALUE$`},
		{arg: "=1", err: `^--env "=1": "" is not a variable name`},
		{arg: "1A=2", err: `^--env "1A=2": "1A" is not a variable name`},
		{arg: "A B=1", err: `^--env "A B=1": "A B" is not a variable name`},
		{arg: "A=" + strings.Repeat("x", MaxVarSize-2), err: `^--env A: 131072 bytes; the kernel passes a variable of at most 131071$`},
		{arg: strings.Repeat("x", 10<<20), err: `^--env "x{60}"…: want NAME=VALUE$`},
	} {
		v, err := ParseSetting(tc.arg)
		switch {
		case tc.err != "" && (err == nil || !regexp.MustCompile(tc.err).MatchString(err.Error())):
			t.Errorf("ParseSetting(%s) = %v; want an error matching %s", clip(tc.arg), err, tc.err)
		case tc.err == "" && (err != nil || v != Var{Name: tc.name, Value: tc.value, Source: "--env"}):
			t.Errorf("ParseSetting(%q) = %+v, %v; want %s=%s from --env", tc.arg, v, err, tc.name, tc.value)
		}
	}
}

func TestReserved(t *testing.T) {
	for name, want := range map[string]bool{
		"LISTEN_FDS": true, "LISTEN_PID": true, "LISTEN_FDNAMES": true, "LISTEN_ANYTHING": true,
		"NOTIFY_SOCKET": true, "BATON_GENERATION": true, "BATON_WORKER_INDEX": true, "BATON_EXEC_SHIM": true,
		"WATCHDOG_USEC": true, "WATCHDOG_PID": true,
		"LISTEN": false, "NOTIFY_SOCKETS": false, "BATON": false, "MY_BATON_X": false, "PATH": false, "HOME": false,
		"listen_fds": false,
	} {
		if Reserved(name) != want {
			t.Errorf("Reserved(%s) = %v, want %v", name, !want, want)
		}
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBuild: files in order, then settings, over the base; a later
// assignment wins; baton's own names stay baton's, with a warning saying
// where they were set.
func TestBuild(t *testing.T) {
	dir := t.TempDir()
	common, app := filepath.Join(dir, "common.env"), filepath.Join(dir, "app.env")
	write(t, common, "# shared\nLANG=C.UTF-8\nDB=postgres://common\nLOG=info\n")
	write(t, app, "DB=postgres://app\nLISTEN_FDS=9\nNEW='from app'\n")
	e := Environment{
		Files: []File{{Path: common}, {Path: filepath.Join(dir, "missing.env"), Optional: true}, {Path: app}},
		Settings: []Var{
			{Name: "LOG", Value: "debug", Source: "--env"},
			{Name: "BATON_GENERATION", Value: "7", Source: "--env"},
			{Name: "EXTRA", Value: "x", Source: "--env"},
		},
	}
	base := []string{"PATH=/usr/bin", "LOG=warn", "LISTEN_FDS=2", "HOME=/root"}
	baseCopy := append([]string(nil), base...)
	env, warnings, err := e.Build(base)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"PATH=/usr/bin", "LOG=debug", "LISTEN_FDS=2", "HOME=/root", // base, in place
		"LANG=C.UTF-8", "DB=postgres://app", "NEW=from app", "EXTRA=x", // new, in order of first assignment
	}
	if strings.Join(env, "\n") != strings.Join(want, "\n") {
		t.Errorf("Build =\n%s\nwant\n%s", strings.Join(env, "\n"), strings.Join(want, "\n"))
	}
	wantWarnings := []string{
		app + ":2: LISTEN_FDS is baton's to set: this assignment is ignored",
		"--env: BATON_GENERATION is baton's to set: this assignment is ignored",
	}
	if strings.Join(warnings, "\n") != strings.Join(wantWarnings, "\n") {
		t.Errorf("warnings =\n%s\nwant\n%s", strings.Join(warnings, "\n"), strings.Join(wantWarnings, "\n"))
	}
	if strings.Join(base, " ") != strings.Join(baseCopy, " ") {
		t.Errorf("Build changed its base: %q", base)
	}

	// The files are read anew at every Build.
	write(t, app, "DB=postgres://new\n")
	env, warnings, err = e.Build(base)
	if err != nil || len(warnings) != 1 || !contains(env, "DB=postgres://new") || contains(env, "NEW=from app") {
		t.Errorf("after the file changed: %q, %q, %v", env, warnings, err)
	}

	if env, _, err := (Environment{}).Build(base); err != nil || strings.Join(env, " ") != strings.Join(base, " ") {
		t.Errorf("an empty Environment gives %q, %v; want the base", env, err)
	}
}

func contains(env []string, kv string) bool {
	for _, e := range env {
		if e == kv {
			return true
		}
	}
	return false
}

// TestBuildFails: a file that is missing (and not optional), unreadable
// or malformed fails the start with one line naming it.
func TestBuildFails(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.env")
	write(t, bad, "A=1\nexport B=2\n")
	missing := filepath.Join(dir, "missing.env")
	fifo := filepath.Join(dir, "fifo.env")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	toZero := filepath.Join(dir, "zero.env")
	if err := os.Symlink("/dev/zero", toZero); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.env")
	write(t, huge, "A="+strings.Repeat("#", MaxFileSize-1))
	for _, tc := range []struct {
		name string
		file File
		want string
	}{
		{"missing", File{Path: missing}, "^env file " + regexp.QuoteMeta(missing) + ` does not exist \(--env-file -` + regexp.QuoteMeta(missing) + " would make it optional\\)$"},
		{"malformed", File{Path: bad}, "^" + regexp.QuoteMeta(bad) + `:2: "export B" is not a variable name`},
		{"malformed and optional", File{Path: bad, Optional: true}, "^" + regexp.QuoteMeta(bad) + ":2: "},
		{"a directory", File{Path: dir, Optional: true}, "^env file " + regexp.QuoteMeta(dir) + " is a directory, not a regular file: baton reads it anew for every generation, so give a file$"},
		// A named pipe would block the read until a writer came, and a
		// reload with it: it is refused without waiting.
		{"a named pipe", File{Path: fifo}, "^env file " + regexp.QuoteMeta(fifo) + " is a named pipe \\(FIFO\\), not a regular file"},
		{"an endless device", File{Path: "/dev/zero"}, "^env file /dev/zero is a character device, not a regular file"},
		{"a symbolic link to a device", File{Path: toZero}, "^env file " + regexp.QuoteMeta(toZero) + " is a character device, not a regular file"},
		{"too big", File{Path: huge}, "^env file " + regexp.QuoteMeta(huge) + ` is 1048577 bytes; an environment file is at most 1048576 \(1 MiB\)$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type result struct {
				env []string
				err error
			}
			done := make(chan result, 1)
			go func() {
				env, _, err := Environment{Files: []File{tc.file}}.Build([]string{"A=0"})
				done <- result{env, err}
			}()
			select {
			case r := <-done:
				if r.err == nil || !regexp.MustCompile(tc.want).MatchString(r.err.Error()) {
					t.Fatalf("Build = %q, %v; want an error matching %s", r.env, r.err, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Build blocked")
			}
		})
	}
}
