//go:build linux

package proc

import (
	"errors"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// PidFD is a file descriptor that refers to one process (pidfd_open(2),
// Linux 5.3+), not to a number: once that process is gone, a signal
// through it reaches nobody, even if its PID has gone to another process.
// It is a plain descriptor, so it can be passed to another process
// (SCM_RIGHTS) and taken from syscall.SysProcAttr.PidFD as PidFD(fd). It
// does not keep the process from being reaped. Its zero value is fd 0,
// not a pidfd: use -1 for none.
type PidFD int

// ErrNotExpected is returned by Open when the process at the PID is not
// the one the caller expected.
var ErrNotExpected = errors.New("the process at this PID is not the one expected")

// ErrNoGroupSignal is returned by SignalGroup on kernels before Linux
// 6.9, which cannot signal a process group through a pidfd.
var ErrNoGroupSignal = errors.New("this kernel cannot signal a process group through a pidfd (Linux 6.9+)")

// Supported reports whether the kernel has pidfds (Linux 5.3+): nil if it
// has.
func Supported() error {
	fd, err := unix.PidfdOpen(unix.Getpid(), 0)
	if err != nil {
		return err
	}
	unix.Close(fd)
	return nil
}

// Open returns a pidfd for the process that has PID pid, together with its
// stat line, read after the pidfd was opened and known to be of the same
// process: the process was still alive once the line had been read, so
// its PID could not have gone to another meanwhile. It fails with
// unix.ESRCH if the process is gone or has exited (a zombie), and with
// ErrNotExpected if expect (when not nil) rejects what the line says, which
// is how a caller makes sure it holds the process it means: ParentIs,
// StartedAt.
func Open(pid int, expect func(Stat) bool) (PidFD, Stat, error) {
	raw, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, Stat{}, err
	}
	fd := PidFD(raw)
	s, err := ReadStat(pid)
	switch {
	case err != nil:
		err = unix.ESRCH // gone between the two
	case s.Dead() || fd.Exited():
		err = unix.ESRCH
	case expect != nil && !expect(s):
		err = ErrNotExpected
	}
	if err != nil {
		fd.Close()
		return -1, Stat{}, err
	}
	return fd, s, nil
}

// OpenChild returns a pidfd for pid, which must be the caller's own child
// that it has not reaped (or the caller itself): such a PID cannot go to
// another process meanwhile, so it needs no check, and it may have exited
// already. For any other process, use Open.
func OpenChild(pid int) (PidFD, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, err
	}
	return PidFD(fd), nil
}

// ParentIs expects the process's parent to be ppid.
func ParentIs(ppid int) func(Stat) bool {
	return func(s Stat) bool { return s.PPID == ppid }
}

// StartedAt expects the process to have started at ticks (Stat.StartTime):
// the process read earlier, and not one that got its PID since.
func StartedAt(ticks uint64) func(Stat) bool {
	return func(s Stat) bool { return s.StartTime == ticks }
}

// Close closes the pidfd.
func (fd PidFD) Close() error { return unix.Close(int(fd)) }

// Exited reports whether the process has exited (it may still wait to be
// reaped). It never blocks. A closed or invalid fd counts as exited.
func (fd PidFD) Exited() bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err != nil || (n > 0 && fds[0].Revents != 0)
	}
}

// Wait waits up to d for the process to exit, and reports whether it has.
func (fd PidFD) Wait(d time.Duration) bool {
	return WaitAny([]PidFD{fd}, d) || fd.Exited()
}

// WaitAny waits up to d for one of the processes to exit, and reports
// whether one did (or already had). It waits on the pidfds, without
// polling.
func WaitAny(fds []PidFD, d time.Duration) bool {
	pfds := make([]unix.PollFd, len(fds))
	for i, fd := range fds {
		pfds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	}
	deadline := time.Now().Add(d)
	for {
		left := max(time.Until(deadline), 0)
		ms := int((min(left, time.Hour) + time.Millisecond - 1) / time.Millisecond)
		n, err := unix.Poll(pfds, ms)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return false
		case n > 0:
			return true
		}
		if time.Until(deadline) <= 0 {
			return false
		}
	}
}

// Signal sends sig to the process. A process that has already exited is
// not an error: the signal had nobody to reach.
func (fd PidFD) Signal(sig unix.Signal) error {
	err := unix.PidfdSendSignal(int(fd), sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// SignalGroup sends sig to the process group whose ID is the process's
// PID, whether or not the process is still alive or has been reaped: the
// kernel names the group by the very PID the pidfd holds, so a reused
// number can never redirect the signal to a stranger's group. sig 0 only
// checks that the group still has a member (a zombie counts). It returns
// unix.ESRCH for an empty group, and ErrNoGroupSignal on kernels before
// Linux 6.9 (PIDFD_SIGNAL_PROCESS_GROUP), where the caller must signal
// the group's members one by one, or by number.
func (fd PidFD) SignalGroup(sig unix.Signal) error {
	if !groupSignals() {
		return ErrNoGroupSignal
	}
	return unix.PidfdSendSignal(int(fd), sig, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP)
}

// groupSignals reports whether the kernel knows PIDFD_SIGNAL_PROCESS_GROUP:
// it checks once, with signal 0 to the caller's own process group, since
// an EINVAL from a real call could as well mean a bad signal.
var groupSignals = sync.OnceValue(func() bool {
	fd, err := unix.PidfdOpen(unix.Getpid(), 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return !errors.Is(unix.PidfdSendSignal(fd, 0, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP), unix.EINVAL)
})
