// Package execshim turns a process started as a worker's exec shim into
// that worker. It does so from its init function, which Go runs before the
// heavier packages of the binary initialise (it depends only on os,
// strconv, syscall and the constants of internal/envnames), so a worker
// start pays a few milliseconds for the shim, not the whole of baton's
// start-up.
//
// The shim exists because Go cannot run code between fork and exec: the
// master starts its own binary with envnames.ExecShim naming the worker,
// and the shim sets LISTEN_PID to its PID, which the worker keeps across
// exec, and the umask envnames.Umask names (internal/sockets.UmaskVar),
// which it keeps too.
package execshim

import (
	"os"
	"strconv"
	"syscall"

	"github.com/baton-sh/baton/internal/envnames"
)

func init() { Run() }

// Run execs the worker if this process was started as a shim, and returns
// at once otherwise. It returns only on failure, which it reports on stderr
// before exiting with status 127, as a shell does.
func Run() {
	worker, ok := os.LookupEnv(envnames.ExecShim)
	if !ok {
		return
	}
	os.Unsetenv(envnames.ExecShim)
	if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	if _, ok := os.LookupEnv("WATCHDOG_USEC"); ok {
		os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	}
	if mask, ok := os.LookupEnv(envnames.Umask); ok {
		os.Unsetenv(envnames.Umask)
		n, err := strconv.ParseUint(mask, 8, 32)
		if err != nil || n > 0o777 {
			fail("cannot start " + worker + ": " + envnames.Umask + "=" + mask + " is not an octal umask")
		}
		syscall.Umask(int(n))
	}
	err := syscall.Exec(worker, os.Args, os.Environ())
	fail("exec " + worker + ": " + err.Error())
}

// fail reports why the shim could not become the worker on stderr and
// exits with status 127, as a shell does.
func fail(msg string) {
	os.Stderr.WriteString("baton: " + msg + "\n")
	os.Exit(127)
}
