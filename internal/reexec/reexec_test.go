package reexec_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/keeper"
	"github.com/baton-sh/baton/internal/reexec"
)

// childEnv makes this test binary, started again by a test, act as a
// small program instead of running tests: "plain" prints a line and never
// calls Init; "init" calls Init and prints what it returned.
const childEnv = "BATON_REEXEC_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "plain":
		os.Stdout.WriteString("ran as baton\n")
		os.Exit(0)
	case "init":
		if reexec.Init() {
			os.Stdout.WriteString("Init returned true\n")
		} else {
			os.Stdout.WriteString("Init returned false\n")
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child runs this test binary as mode with env added, and returns its
// output and exit code.
func child(t *testing.T, mode string, env ...string) (string, int) {
	t.Helper()
	return childWith(t, nil, mode, env...)
}

// childWith is child with extra files from fd 3 on.
func childWith(t *testing.T, files []*os.File, mode string, env ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "marker-arg")
	cmd.Env = append(os.Environ(), append(env, childEnv+"="+mode)...)
	cmd.ExtraFiles = files
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return string(out), 0
}

// Every helper's variable set, and the helper packages linked in: a
// program that does not call Init runs as itself.
func TestImportingTheHelpersDoesNothing(t *testing.T) {
	out, code := child(t, "plain", envnames.ExecShim+"=/bin/false", envnames.ParentStub+"=/bin/false", envnames.Keeper+"=timeout=soon")
	if code != 0 || out != "ran as baton\n" {
		t.Fatalf("exit %d, output %q: want exit 0 and the program's own line", code, out)
	}
}

func TestInitWithoutAHelperReturnsFalse(t *testing.T) {
	out, code := child(t, "init")
	if code != 0 || out != "Init returned false\n" {
		t.Fatalf("exit %d, output %q: want Init to return false", code, out)
	}
}

// The shim execs the worker with the process's own arguments.
func TestInitRunsTheExecShim(t *testing.T) {
	out, code := child(t, "init", envnames.ExecShim+"=/bin/echo", envnames.Keeper+"=timeout=soon")
	if code != 0 || out != "-test.run=^$ marker-arg\n" {
		t.Fatalf("exit %d, output %q: want /bin/echo's line of the arguments", code, out)
	}
}

func TestInitExitsOnABadKeeperConfig(t *testing.T) {
	out, code := child(t, "init", envnames.Keeper+"=timeout=soon")
	if code != 2 || !strings.HasPrefix(out, "baton keeper: bad ") {
		t.Fatalf("exit %d, output %q: want exit 2 and the keeper's complaint", code, out)
	}
}

// A keeper whose master is gone at once (its socket at end of file) has
// nothing to do: Init returns true once it has run.
func TestInitRunsTheKeeperToItsEnd(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[0]) // the master's end: gone
	end := os.NewFile(uintptr(fds[1]), "keeper")
	defer end.Close()
	cfg := keeper.Config{DrainSignal: unix.SIGTERM, DrainTimeout: time.Second, LogJSON: true, LogLevel: "info"}
	out, code := childWith(t, []*os.File{end}, "init", envnames.Keeper+"="+cfg.String())
	if code != 0 || !strings.HasSuffix(out, "Init returned true\n") {
		t.Fatalf("exit %d, output %q: want Init to return true", code, out)
	}
}
