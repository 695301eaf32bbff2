package execshim_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/execshim"
	"github.com/baton-sh/baton/internal/sockets"
)

// TestMain becomes the worker when started as the shim, as baton's main
// does through internal/reexec.
func TestMain(m *testing.M) {
	if worker, ok := os.LookupEnv(envnames.ExecShim); ok {
		execshim.Run(worker)
	}
	os.Exit(m.Run())
}

// shim runs this test binary as an exec shim that becomes /bin/sh with
// script, and returns what the shell printed and how it ended.
func shim(t *testing.T, script string, env ...string) (string, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-c", script)
	cmd.Env = append(append(os.Environ(), envnames.ExecShim+"=/bin/sh"), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestUmask: the worker starts with the umask UmaskVar names, and
// without the variable; with none it keeps the master's.
func TestUmask(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, "0022"},
		{[]string{sockets.UmaskVar(0o027)}, "0027"},
		{[]string{sockets.UmaskVar(0o077)}, "0077"},
		{[]string{sockets.UmaskVar(0)}, "0000"},
		{[]string{sockets.UmaskVar(0o777)}, "0777"},
	} {
		out, err := shim(t, `umask; echo "${BATON_UMASK-unset} ${BATON_EXEC_SHIM-unset}"`, tc.env...)
		if err != nil || out != tc.want+"\nunset unset\n" {
			t.Errorf("%q: %q, %v; want umask %s, and neither variable", tc.env, out, err, tc.want)
		}
	}
	if got := sockets.UmaskVar(0o027); got != "BATON_UMASK=27" {
		t.Errorf("UmaskVar(027) = %q", got)
	}
}

// TestBadUmask: a umask that is not one stops the start with one line and
// status 127; the worker never runs.
func TestBadUmask(t *testing.T) {
	for _, mask := range []string{"", "8", "01000", "-1", "u=rwx"} {
		out, err := shim(t, "echo ran", envnames.Umask+"="+mask)
		want := "baton: cannot start /bin/sh: BATON_UMASK=" + mask + " is not an octal umask\n"
		var exit *exec.ExitError
		if out != want || !errors.As(err, &exit) || exit.ExitCode() != 127 {
			t.Errorf("BATON_UMASK=%q: %q, %v; want status 127 and %q", mask, out, err, want)
		}
		if strings.Contains(out, "ran") {
			t.Errorf("BATON_UMASK=%q: the worker ran", mask)
		}
	}
}
