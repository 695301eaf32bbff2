package integration_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/harness"
)

// --help, -h and `baton help` print the whole usage on stdout, every flag
// written with the two dashes users type, and exit 0.
func TestHelp(t *testing.T) {
	master := []string{"listen", "pidfile", "dir", "ready", "ready-timeout", "drain-signal", "drain-timeout",
		"restart-limit", "protocol", "subreaper", "control", "admin", "admin-lifecycle", "log-format", "log-level"}
	client := []string{"pidfile", "control"}
	for _, tc := range []struct {
		args  []string
		flags []string
	}{
		{[]string{"--help"}, master},
		{[]string{"-h"}, master},
		{[]string{"help"}, master},
		{[]string{"--listen", "tcp://127.0.0.1:0", "--help", "--", "true"}, master},
		{[]string{"reload", "--help"}, append([]string{"wait", "timeout"}, client...)},
		{[]string{"help", "reload"}, append([]string{"wait", "timeout"}, client...)},
		{[]string{"status", "-h"}, append([]string{"json"}, client...)},
		{[]string{"demo", "--help"}, []string{"reloads", "log-level"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := harness.Run(t, 10*time.Second, tc.args...)
			if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "usage:\n") {
				t.Fatalf("exit %d, stderr %q, stdout:\n%s\nwant exit 0 and the usage on stdout", code, stderr, stdout)
			}
			for _, f := range tc.flags {
				if !regexp.MustCompile(`(?m)^  --` + regexp.QuoteMeta(f) + `( |$)`).MatchString(stdout) {
					t.Errorf("usage does not list --%s:\n%s", f, stdout)
				}
			}
			if single := regexp.MustCompile(`(?m)^\s+-[a-z]`).FindString(stdout); single != "" {
				t.Errorf("usage writes a flag with one dash (%q):\n%s", single, stdout)
			}
		})
	}
}

// Every usage error is one line on stderr, names the flag as users type
// it, points at --help, and exits 2.
func TestUsageErrorsAreOneLine(t *testing.T) {
	long := "/tmp/" + strings.Repeat("x", 120)
	for _, tc := range []struct {
		args []string
		want string // the whole line when it starts with "baton: "
	}{
		{[]string{"--lisen", "tcp://127.0.0.1:0", "--", "true"}, "baton: unknown flag --lisen: did you mean --listen? (baton --help lists every flag)"},
		{[]string{"--drain", "TERM", "--", "true"}, "baton: unknown flag --drain: did you mean --drain-group, --drain-signal or --drain-timeout? (baton --help lists every flag)"},
		{[]string{"--admin", "127.0.0.1:99999", "--", "true"}, "baton: --admin \"127.0.0.1:99999\": want HOST:PORT, such as 127.0.0.1:9090 (baton --help lists every flag)"},
		{[]string{"--drain-timout", "1s", "--", "true"}, "baton: unknown flag --drain-timout: did you mean --drain-timeout? (baton --help lists every flag)"},
		{[]string{"--frobnicate", "--", "true"}, "baton: unknown flag --frobnicate (baton --help lists every flag)"},
		{[]string{"--ready-timeout", "soon", "--", "true"}, `--ready-timeout "soon": want a duration such as 30s`},
		{[]string{"--subreaper=maybe", "--", "true"}, `--subreaper "maybe": want true or false`},
		{[]string{"--listen"}, "flag --listen needs a value"},
		{[]string{"--listen", "tcp://127.0.0.1:0"}, "no worker command"},
		{[]string{"--", ""}, "the worker command after -- is empty"},
		{[]string{"--drain-signal", "STOP", "--", "true"}, "--drain-signal STOP: a worker cannot drain on it"},
		{[]string{"--drain-signal", "KILL", "--", "true"}, "--drain-signal KILL: a worker cannot drain on it"},
		{[]string{"--drain-signal", "SIGCHLD", "--", "true"}, "--drain-signal SIGCHLD: a worker cannot drain on it"},
		{[]string{"--listen", "unix://" + long, "--", "true"}, "is 125 bytes, more than the 107 a unix socket address holds: use a shorter path"},
		{[]string{"--control", long, "--", "true"}, "is 125 bytes, more than the 107 a unix socket address holds: use a shorter path"},
		{[]string{"--pidfile", long + ".pid", "--", "true"}, "control socket (--control, or next to --pidfile): unix socket path"},
		{[]string{"reload", "--wiat"}, "baton: unknown flag --wiat: did you mean --wait? (baton reload --help lists every flag)"},
		{[]string{"reload", "--timeout", "1", "--pidfile", "x.pid"}, `--timeout "1": want a duration`},
		{[]string{"reload"}, "say which master: --pidfile PATH or --control PATH"},
		{[]string{"status", "--pidfile"}, "baton: flag --pidfile needs a value (baton status --help lists every flag)"},
		{[]string{"status", "--json", "extra"}, `status takes no arguments, got "extra"`},
		{[]string{"help", "frobnicate"}, "help frobnicate: no such command"},
		{[]string{"version", "--short"}, "version takes no arguments"},
		{[]string{"relaod", "--wait", "--pidfile", "x.pid"}, `baton: "relaod" is not a command (a worker command goes after --): did you mean baton reload? (baton --help lists every flag)`},
		{[]string{"--listen", "tcp://127.0.0.1:0", "./server"}, "put the worker command after --"},
		{[]string{"scale", "3"}, "baton: say which master: --pidfile PATH or --control PATH (baton scale --help lists every flag)"},
		{[]string{"scale", "0", "--pidfile", "x.pid"}, `scale "0": want a worker count from 1 to 1024`},
		{[]string{"upgrade"}, "baton: say which master: --pidfile PATH or --control PATH (baton upgrade --help lists every flag)"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := harness.Run(t, 10*time.Second, tc.args...)
			ok := code == 2 && stdout == "" && strings.Count(stderr, "\n") == 1 && strings.HasPrefix(stderr, "baton: ")
			if strings.HasPrefix(tc.want, "baton: ") {
				ok = ok && stderr == tc.want+"\n"
			} else {
				ok = ok && strings.Contains(stderr, tc.want) && strings.Contains(stderr, "--help lists every")
			}
			if !ok {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", code, stdout, stderr, tc.want)
			}
		})
	}
}

// A deploy script with a typo in `baton reload` gets exit 2 and the
// command it meant, and no second master: nothing is started, no pidfile
// or control socket appears.
func TestMisspeltSubcommandStartsNothing(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "app.pid")
	start := time.Now()
	code, stdout, stderr := harness.Run(t, 10*time.Second, "relaod", "--wait", "--pidfile", pidfile)
	if code != 2 || stdout != "" || !strings.Contains(stderr, "did you mean baton reload?") {
		t.Fatalf("baton relaod: exit %d after %s, stdout %q, stderr %q; want exit 2 naming baton reload", code, time.Since(start), stdout, stderr)
	}
	for _, path := range []string{pidfile, control.DefaultPath(pidfile)} {
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("baton relaod left %s behind: a master ran", path)
		}
	}
}

// baton version names what was built: the module version and the VCS
// revision Go recorded, when no version was set at link time.
func TestVersion(t *testing.T) {
	code, stdout, _ := harness.Run(t, 10*time.Second, "version")
	if code != 0 || !strings.HasPrefix(stdout, "baton ") || !strings.Contains(stdout, runtime.Version()) || strings.TrimSpace(stdout) == "baton dev" {
		t.Fatalf("baton version: exit %d, %q; want the module version and %s", code, stdout, runtime.Version())
	}

	// A build that records its revision, as go build in a git checkout
	// does (in a clone: go finds no repository in a git worktree).
	clone := filepath.Join(t.TempDir(), "baton")
	if out, err := exec.Command("git", "clone", "-q", harness.ModuleRoot(), clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	rev, err := exec.Command("git", "-C", clone, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "baton")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "./cmd/baton")
	build.Dir = clone
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -buildvcs=true: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.Contains(string(out), ", revision "+strings.TrimSpace(string(rev))) {
		t.Fatalf("baton version of a build from %s: %q, %v; want the revision named", strings.TrimSpace(string(rev)), out, err)
	}
	t.Logf("%s", out)
}

// Too few file descriptors to bind every socket: one line that says what
// to raise, exit 3.
func TestTooFewFileDescriptorsToBind(t *testing.T) {
	bin := harness.Build(t)
	args := []string{"-c", `ulimit -n 16 && exec "$0" "$@"`, bin.Baton}
	for range 30 {
		args = append(args, "--listen", "tcp://127.0.0.1:0")
	}
	cmd := exec.Command("sh", append(args, "--", bin.TestWorker)...)
	cmd.Env = append(os.Environ(), harness.ProcessEnv...)
	out, _ := cmd.CombinedOutput()
	last := lastLine(string(out))
	if code := cmd.ProcessState.ExitCode(); code != 3 || !regexp.MustCompile(`^baton: bind tcp\d+=tcp://127\.0\.0\.1:0: too many open files: .*raise its open-file limit \(ulimit -n, or LimitNOFILE= under systemd\)$`).MatchString(last) {
		t.Fatalf("exit %d, last line %q; want exit 3 and one line saying to raise ulimit -n\n%s", code, last, out)
	}
}
