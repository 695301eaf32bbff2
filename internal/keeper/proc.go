//go:build linux

package keeper

import (
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/proc"
)

// EnvGeneration is the variable in which every worker, and so everything
// it starts, learns its generation.
const EnvGeneration = "BATON_GENERATION"

// Generation reads the worker generation a process inherited
// (EnvGeneration in its environment as it was exec'd). It returns 0 when
// the process has none or cannot be read.
func Generation(pid int) int {
	v, _, _ := proc.Getenv(pid, EnvGeneration)
	n, _ := strconv.Atoi(v)
	return max(n, 0)
}

// signalGroup signals the process group led by the process of fd; tests
// replace it to take the way of kernels before Linux 6.9.
var signalGroup = proc.PidFD.SignalGroup

// What follows forwards to internal/proc for the master, which holds its
// pidfds as ints, until it calls internal/proc itself.

// Proc is one process as /proc/PID/stat shows it.
type Proc = proc.Stat

// ErrNoGroupSignal is proc.ErrNoGroupSignal.
var ErrNoGroupSignal = proc.ErrNoGroupSignal

// Children is proc.Children(0): the children of this process.
func Children() []int { return proc.Children(0) }

// Open is proc.Open, with the pidfd as an int.
func Open(pid int, ok func(Proc) bool) (int, Proc, error) {
	fd, p, err := proc.Open(pid, ok)
	return int(fd), p, err
}

// Exited is proc.PidFD.Exited.
func Exited(pidfd int) bool { return proc.PidFD(pidfd).Exited() }

// Signal is proc.PidFD.Signal.
func Signal(pidfd int, sig unix.Signal) error { return proc.PidFD(pidfd).Signal(sig) }

// SignalGroup is proc.PidFD.SignalGroup.
func SignalGroup(leaderfd int, sig unix.Signal) error { return proc.PidFD(leaderfd).SignalGroup(sig) }
