// Package execshim turns a process started as a worker's exec shim into
// that worker. Nothing happens on import: internal/reexec calls Run when
// the environment names a worker, before baton does anything else.
//
// The shim exists because Go cannot run code between fork and exec: the
// master starts its own binary with envnames.ExecShim naming the worker,
// and the shim sets LISTEN_PID (and, with a watchdog, WATCHDOG_PID) to its
// PID, which the worker keeps across exec, and the umask envnames.Umask
// names (internal/sockets.UmaskVar), which it keeps too. It depends only
// on os, strconv, syscall and the constants of internal/envnames, so a
// worker start pays for an exec of baton and Go's runtime start-up,
// nothing more.
package execshim

import (
	"os"
	"strconv"
	"syscall"

	"github.com/baton-sh/baton/internal/envnames"
)

// Run execs worker in place of this process, with this process's
// arguments and its environment less envnames.ExecShim, and with
// LISTEN_PID set to this process's PID when LISTEN_FDS is set. It never
// returns: if the exec fails it says so on stderr and exits with status
// 127, as a shell does.
func Run(worker string) {
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
