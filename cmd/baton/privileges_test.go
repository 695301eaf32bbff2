package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/baton-sh/baton/internal/envfile"
	"github.com/baton-sh/baton/upgrader"
)

// parseMaster parses a master's command line, the worker command added.
func parseMaster(args ...string) (*masterFlags, error) {
	f := &masterFlags{}
	_, err := f.parse(masterFlagSet(f), append(args, "--", "/bin/true"))
	return f, err
}

// TestPrivilegeFlagsUsage: mistakes in --user, --group, --env,
// --env-file, --umask and --control-group are usage errors, found
// before anything is looked up or read.
func TestPrivilegeFlagsUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--user="}, "--user is empty: want a user name or uid"},
		{[]string{"--user", "app", "--group="}, "--group is empty: want a group name or gid"},
		{[]string{"--group", "app"}, "--group needs --user: it is the group of the user workers run as"},
		{[]string{"--umask="}, "--umask is empty: want an octal mask such as 027"},
		{[]string{"--umask", "999"}, `--umask "999": want an octal mask from 0 to 0777, such as 027`},
		{[]string{"--umask", "01000"}, `--umask "01000": want an octal mask from 0 to 0777, such as 027`},
		{[]string{"--umask", "-1"}, `--umask "-1": want an octal mask from 0 to 0777, such as 027`},
		{[]string{"--umask", "u=rwx"}, `--umask "u=rwx": want an octal mask from 0 to 0777, such as 027`},
		{[]string{"--env", "FOO"}, `--env "FOO": want NAME=VALUE`},
		{[]string{"--env", "A=1", "--env", "1A=2"}, `--env "1A=2": "1A" is not a variable name (letters, digits and _, not starting with a digit)`},
		{[]string{"--env-file", ""}, `--env-file "": want PATH, or -PATH for a file that may be missing`},
		{[]string{"--env-file", "-"}, `--env-file "-": want PATH, or -PATH for a file that may be missing`},
		{[]string{"--control-group", "deploy"}, "--control-group needs a control socket: give --pidfile PATH or --control PATH"},
		{[]string{"--control", "/run/app.sock", "--control-group="}, "--control-group is empty: want a group name or gid"},
	} {
		_, err := parseMaster(tc.args...)
		if _, ok := err.(usageError); !ok || err.Error() != tc.want {
			t.Errorf("baton %s: %v (%T), want the usage error %q", strings.Join(tc.args, " "), err, err, tc.want)
		}
	}
	for _, ok := range [][]string{
		{"--user", "app"}, {"--user", "app", "--group", "web"}, {"--umask", "0"}, {"--umask", "027"}, {"--umask", "0777"},
		{"--env", "A="}, {"--env", "LISTEN_FDS=3"}, {"--env-file", "-x.env"}, {"--pidfile", "/run/app.pid", "--control-group", "deploy"},
	} {
		if _, err := parseMaster(ok...); err != nil {
			t.Errorf("baton %s: %v", strings.Join(ok, " "), err)
		}
	}
}

// TestPrivilegeFlagsResolve: what the engine is handed, and applies.
func TestPrivilegeFlagsResolve(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("resolves --user root")
	}
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("app.env", []byte("A=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := parseMaster("--user", "root", "--umask", "027", "--env-file", "app.env", "--env-file", "-/nonexistent/x.env",
		"--env", "B=2", "--env", "NOTIFY_SOCKET=x", "--env", "B=3")
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.privileges.resolve()
	if err != nil {
		t.Fatal(err)
	}
	w := p.workers
	switch {
	case w.Identity == nil || w.Identity.UID != 0 || w.Identity.User != "root":
		t.Errorf("Identity = %+v, want root", w.Identity)
	case w.Umask != 0o27:
		t.Errorf("Umask = %#o, want 027", w.Umask)
	case !slices.Equal(w.Env.Files, []envfile.File{{Path: filepath.Join(dir, "app.env")}, {Path: "/nonexistent/x.env", Optional: true}}):
		t.Errorf("Env.Files = %+v: want app.env in %s, then the optional one", w.Env.Files, dir)
	case !slices.Equal(w.Env.Settings, []envfile.Var{{Name: "B", Value: "2", Source: "--env"}, {Name: "B", Value: "3", Source: "--env"}}):
		t.Errorf("Env.Settings = %+v, want B=2 and B=3, without NOTIFY_SOCKET", w.Env.Settings)
	case !slices.Equal(p.warnings, []warning{{"env_ignored", "--env NOTIFY_SOCKET=x: NOTIFY_SOCKET is baton's to set: ignored"}}):
		t.Errorf("warnings = %+v", p.warnings)
	}
	// The engine gets all of it.
	var o upgrader.Options
	w.apply(&o)
	if o.User != w.Identity || o.Umask == nil || *o.Umask != 0o27 ||
		!slices.Equal(o.Environment.Files, w.Env.Files) || !slices.Equal(o.Environment.Settings, w.Env.Settings) {
		t.Errorf("the engine's options: User %v, Umask %v, Environment %+v; want %+v", o.User, o.Umask, o.Environment, w)
	}

	f, _ = parseMaster()
	p, err = f.privileges.resolve()
	if err != nil || p.workers.Umask != -1 {
		t.Fatalf("no flags: %+v, %v; want nothing changed", p.workers, err)
	}
	o = upgrader.Options{}
	p.workers.apply(&o)
	if o.User != nil || o.Umask != nil || !o.Environment.IsZero() {
		t.Errorf("no flags: the engine's options: User %v, Umask %v, Environment %+v; want none", o.User, o.Umask, o.Environment)
	}
}

// TestPrivilegeFlagsStartupErrors: an unknown user or group, or an
// environment file that is missing or malformed, stops baton at start
// with one line.
func TestPrivilegeFlagsStartupErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.env")
	if err := os.WriteFile(bad, []byte("OK=1\nexport X=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--user", "baton-no-such-user"}, `^--user baton-no-such-user: no such user in the password database`},
		{[]string{"--user", "root", "--group", "baton-no-such-group"}, `^--group baton-no-such-group: no such group in the group database`},
		{[]string{"--pidfile", "/run/x.pid", "--control-group", "baton-no-such-group"}, `^--control-group baton-no-such-group: no such group in the group database`},
		{[]string{"--env-file", filepath.Join(dir, "missing.env")}, `^env file .*/missing\.env does not exist \(--env-file -.*/missing\.env would make it optional\)$`},
		{[]string{"--env-file", bad}, `^.*/bad\.env:2: "export X" is not a variable name .*: drop "export", this is not a shell script$`},
	} {
		f, err := parseMaster(tc.args...)
		if err != nil {
			t.Fatalf("baton %s: %v", strings.Join(tc.args, " "), err)
		}
		_, err = f.privileges.resolve()
		if err == nil || !regexp.MustCompile(tc.want).MatchString(err.Error()) || strings.Contains(err.Error(), "\n") {
			t.Errorf("baton %s: %v; want one line matching %s", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
