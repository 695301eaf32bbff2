// Package execshim turns a process started as a worker's exec shim into
// that worker. Nothing happens on import: internal/reexec calls Run when
// the environment names a worker, before baton does anything else.
//
// The shim exists because Go cannot run code between fork and exec: the
// master starts its own binary with Env naming the worker, and the shim
// sets LISTEN_PID to its PID, which the worker keeps across exec. It
// depends only on os, strconv and syscall, so a worker start pays for an
// exec of baton and Go's runtime start-up, nothing more.
package execshim

import (
	"os"
	"strconv"
	"syscall"
)

// Env carries the path of the worker program the shim is to become.
const Env = "BATON_EXEC_SHIM"

// Run execs worker in place of this process, with this process's
// arguments and its environment less Env, and with LISTEN_PID set to this
// process's PID when LISTEN_FDS is set. It never returns: if the exec
// fails it says so on stderr and exits with status 127, as a shell does.
func Run(worker string) {
	os.Unsetenv(Env)
	if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	err := syscall.Exec(worker, os.Args, os.Environ())
	os.Stderr.WriteString("baton: exec " + worker + ": " + err.Error() + "\n")
	os.Exit(127)
}
