//go:build linux

package keeper

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/envnames"
)

// Proc is one process as /proc/PID/stat shows it.
type Proc struct {
	PID, PPID, PGID, SID int
	State                byte
	Comm                 string
}

// Dead reports whether p has exited and only waits to be reaped.
func (p Proc) Dead() bool { return p.State == 'Z' || p.State == 'X' }

// ReadProc reads /proc/PID/stat. The numbers it returns may already be
// stale: see Open for a reading that is known to be of a given process.
func ReadProc(pid int) (Proc, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Proc{}, err
	}
	// pid (comm) state ppid pgrp session …; comm may hold spaces and ')'.
	open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return Proc{}, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(string(b[closing+1:]))
	if len(f) < 4 || len(f[0]) != 1 {
		return Proc{}, errors.New("unreadable /proc stat")
	}
	p := Proc{PID: pid, State: f[0][0], Comm: string(b[open+1 : closing])}
	if p.PPID, err = strconv.Atoi(f[1]); err == nil {
		if p.PGID, err = strconv.Atoi(f[2]); err == nil {
			p.SID, err = strconv.Atoi(f[3])
		}
	}
	return p, err
}

// AllPIDs lists every process in /proc.
func AllPIDs() []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Children lists the children of this process, from each thread's
// /proc/self/task/TID/children (an orphan adopted by a subreaper becomes
// the child of one of its threads), or, where the kernel has no such file,
// by reading every process's parent in /proc.
func Children() []int {
	self := os.Getpid()
	files, _ := filepath.Glob("/proc/self/task/*/children")
	var kids []int
	ok := false
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that has just exited
		}
		ok = true
		for _, s := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(s); err == nil {
				kids = append(kids, pid)
			}
		}
	}
	if ok {
		return kids
	}
	for _, pid := range AllPIDs() {
		if p, err := ReadProc(pid); err == nil && p.PPID == self {
			kids = append(kids, pid)
		}
	}
	return kids
}

// Generation reads the worker generation a process inherited
// (envnames.Generation in /proc/PID/environ, its environment as it was
// exec'd). It returns 0 when the process has none or cannot be read.
func Generation(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return 0
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(envnames.Generation+"=")); ok {
			n, _ := strconv.Atoi(string(v))
			return max(n, 0)
		}
	}
	return 0
}

// Open returns a pidfd for pid together with its /proc stat, read after the
// pidfd was opened and known to be of the same process: the process was
// still alive once the stat had been read, so its PID could not have been
// reused in between. It fails if the process is gone, dead, or ok rejects
// what the stat says.
func Open(pid int, ok func(Proc) bool) (int, Proc, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, Proc{}, err
	}
	p, err := ReadProc(pid)
	switch {
	case err != nil:
	case p.Dead() || Exited(fd):
		err = unix.ESRCH
	case !ok(p):
		err = errors.New("not the process sought")
	}
	if err != nil {
		unix.Close(fd)
		return -1, Proc{}, err
	}
	return fd, p, nil
}

// Exited reports whether the process of pidfd has exited (it may still
// wait to be reaped). It never blocks.
func Exited(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err != nil || (n > 0 && fds[0].Revents != 0)
	}
}

// Signal sends sig to the process of pidfd. A process that is already gone
// is not an error.
func Signal(pidfd int, sig unix.Signal) error {
	err := unix.PidfdSendSignal(pidfd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// ErrNoGroupSignal is returned by SignalGroup on kernels before Linux 6.9,
// which cannot signal a process group through a pidfd.
var ErrNoGroupSignal = errors.New("this kernel cannot signal a process group through a pidfd (Linux 6.9+)")

// noGroupSignal is set once the kernel has refused to signal a process
// group through a pidfd; tests set it to take older kernels' way.
var noGroupSignal atomic.Bool

// SignalGroup sends sig to the process group whose ID is the PID of the
// process of leaderfd, whether or not that process is still alive or has
// been reaped: the kernel names the group by the very PID the pidfd holds,
// so a reused number can never redirect the signal to a stranger's group.
// sig 0 only checks that the group still has a member (a zombie counts).
// It returns unix.ESRCH for an empty group and ErrNoGroupSignal when the
// kernel does not offer it.
func SignalGroup(leaderfd int, sig unix.Signal) error {
	if noGroupSignal.Load() {
		return ErrNoGroupSignal
	}
	err := unix.PidfdSendSignal(leaderfd, sig, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP)
	if errors.Is(err, unix.EINVAL) {
		noGroupSignal.Store(true)
		return ErrNoGroupSignal
	}
	return err
}
