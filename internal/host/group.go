//go:build linux

package host

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/proc"
)

// groupWatch waits for a process group to have no live member.
type groupWatch struct{ wake int } // an eventfd: written to stop the watch

// watchGroup calls empty once process group pgid has no live member,
// unless the returned watch is stopped first. It waits on the members'
// pidfds, not on a timer: it reads /proc once, waits until every member it
// saw has exited, and reads /proc again for any forked meanwhile, so its
// cost grows with the group's exits, not with time.
func watchGroup(pgid int, empty func()) (*groupWatch, error) {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	g := &groupWatch{wake: wake}
	go func() {
		defer unix.Close(wake)
		for {
			members := proc.LiveGroup(pgid)
			if len(members) == 0 {
				empty()
				return
			}
			var fds []int
			for _, m := range members {
				if fd, err := unix.PidfdOpen(m.PID, 0); err == nil {
					fds = append(fds, fd)
				}
			}
			stopped := waitAllExit(wake, fds)
			for _, fd := range fds {
				unix.Close(fd)
			}
			if stopped {
				return
			}
		}
	}()
	return g, nil
}

// stop ends the watch. empty may still be called once if the group
// emptied just as the watch stopped: the loop ignores a GroupEmpty for a
// worker it no longer knows.
func (g *groupWatch) stop() {
	var one = [8]byte{1}
	unix.Write(g.wake, one[:])
}

// waitAllExit waits until every process of fds has exited, or wake is
// written to, which it reports.
func waitAllExit(wake int, fds []int) (stopped bool) {
	pending := append([]int(nil), fds...)
	for len(pending) > 0 {
		pfds := make([]unix.PollFd, 0, len(pending)+1)
		pfds = append(pfds, unix.PollFd{Fd: int32(wake), Events: unix.POLLIN})
		for _, fd := range pending {
			pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		}
		if _, err := unix.Poll(pfds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return true
		}
		if pfds[0].Revents != 0 {
			return true
		}
		left := pending[:0]
		for i, fd := range pending {
			if pfds[i+1].Revents == 0 {
				left = append(left, fd)
			}
		}
		pending = left
	}
	return false
}
