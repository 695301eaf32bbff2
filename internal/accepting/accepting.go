//go:build linux

package accepting

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Via says how a thread waits on a socket.
type Via int

const (
	// Accept: the thread is blocked in accept(2) or accept4(2) on the
	// socket.
	Accept Via = iota + 1
	// Recv: the thread is blocked in recvfrom, recvmsg or recvmmsg on the
	// socket, the way a datagram (UDP, unixgram) server waits.
	Recv
	// Poll: the thread is blocked in poll(2) or ppoll(2) asking to read
	// the socket.
	Poll
	// Select: the thread is blocked in select(2) or pselect6(2) with the
	// socket in its read set.
	Select
	// Epoll: the thread is blocked in epoll_wait (or epoll_pwait,
	// epoll_pwait2) on an epoll set where the socket is registered for
	// reading (EPOLLIN): an event loop waiting for its next event.
	Epoll
)

func (v Via) String() string {
	switch v {
	case Accept:
		return "accept"
	case Recv:
		return "recv"
	case Poll:
		return "poll"
	case Select:
		return "select"
	case Epoll:
		return "epoll_wait"
	}
	return "Via(" + strconv.Itoa(int(v)) + ")"
}

// Waiter is a thread found waiting on one of the sockets.
type Waiter struct {
	PID int // the process
	TID int // its thread that waits
	Via Via
	// FD is the socket's descriptor in PID: the one the thread waits on,
	// or the one registered in the epoll set. Runtimes often dup the
	// passed fd 3, so it need not be the fd baton passed.
	FD int
	// EpollFD is the epoll set's descriptor in PID, with Epoll.
	EpollFD int
	// Socket is the index of the socket among the conns given to
	// NewSockets.
	Socket int
	Inode  uint64 // the socket's inode, as in /proc/PID/fd/N -> socket:[Inode]
}

// String says how w waits, for a log line: "pid 812, thread 812, in
// epoll_wait on epoll fd 15 with fd 21 (socket 0)" or "pid 812, thread
// 815, in accept on fd 3 (socket 0)".
func (w Waiter) String() string {
	if w.Via == Epoll {
		return fmt.Sprintf("pid %d, thread %d, in epoll_wait on epoll fd %d with fd %d (socket %d)", w.PID, w.TID, w.EpollFD, w.FD, w.Socket)
	}
	return fmt.Sprintf("pid %d, thread %d, in %s on fd %d (socket %d)", w.PID, w.TID, w.Via, w.FD, w.Socket)
}

// Sockets are the master's sockets, known by inode. A worker's fd for a
// socket is a dup of the master's (through exec, and again in runtimes
// that dup fd 3), and every dup shows the same inode in /proc.
type Sockets struct {
	byInode map[uint64]socketID
}

type socketID struct {
	index int
	dev   uint64 // st_dev, in the kernel's encoding as epoll's fdinfo prints it
}

// NewSockets identifies the sockets behind conns (*os.File, *net.TCPListener,
// *net.UnixListener, *net.UDPConn…): the master's listening sockets, in
// the order it passes them (fd 3, 4, …). It reads each with fstat inside
// SyscallConn().Control, never with Fd, which would switch a socket the
// master shares with its workers back to blocking mode. A conn that is not
// a socket is an error.
func NewSockets(conns ...syscall.Conn) (*Sockets, error) {
	s := &Sockets{byInode: make(map[uint64]socketID, len(conns))}
	for i, c := range conns {
		raw, err := c.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("socket %d: %w", i, err)
		}
		var st unix.Stat_t
		var statErr error
		if err := raw.Control(func(fd uintptr) { statErr = unix.Fstat(int(fd), &st) }); err != nil {
			return nil, fmt.Errorf("socket %d: %w", i, err)
		}
		if statErr != nil {
			return nil, fmt.Errorf("socket %d: fstat: %w", i, statErr)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return nil, fmt.Errorf("socket %d: not a socket (mode %#o)", i, st.Mode)
		}
		// epoll's fdinfo prints the kernel's dev_t (major<<20 | minor),
		// stat gives the exported encoding: convert once here.
		dev := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev))
		if _, dup := s.byInode[st.Ino]; !dup {
			s.byInode[st.Ino] = socketID{index: i, dev: dev}
		}
	}
	return s, nil
}

// Len is the number of distinct sockets.
func (s *Sockets) Len() int { return len(s.byInode) }

// DefaultInterval is how often Wait checks: a generation is seen ready at
// most this late (or IdleInterval, see Wait). See the package doc for what
// it costs.
const DefaultInterval = 5 * time.Millisecond

// IdleInterval is how often Wait checks a generation in which nothing has
// run for QuietAfter: one that waits for something else (a timer, a
// database, a lock) before it serves. Wait goes back to its interval as
// soon as a thread is seen to have run.
const (
	IdleInterval = 20 * time.Millisecond
	QuietAfter   = time.Second
)

// DeniedGrace is how long Wait goes on while part of the generation
// cannot be inspected: long enough for a process that is changing
// credentials or exec'ing, short next to any ready timeout.
const DeniedGrace = time.Second

// Check reports whether a thread of the generation led by root (the PID
// baton started) is blocked waiting on one of socks, and which. The
// generation is root and its descendants, found through
// /proc/PID/task/TID/children (without that file, through the parent PID
// in every /proc/PID/stat). Only these processes count: an old generation
// waiting on the same socket, or any other process holding it, does not.
//
// found is true when a waiter was seen; then err is nil. Otherwise err is
// nil when every process of the generation could be inspected, and says
// what could not be (errors.Is(err, fs.ErrPermission): another user's
// process, a non-dumpable one, ptrace restrictions) when a waiter may have
// been missed. Processes and threads that exit during the scan are not
// errors, nor is a root that no longer exists: nothing is found.
//
// Check opens, reads and closes every file it needs, for every thread; to
// check the same generation again and again, a Watcher (or Wait) costs
// far less, and no more for many threads than for few. Check is safe for
// concurrent use.
func Check(root int, socks *Sockets) (w Waiter, found bool, err error) {
	wt := NewWatcher(root, socks)
	defer wt.Close()
	return wt.Check()
}

// Wait checks the generation led by root every interval (DefaultInterval
// if 0), through a Watcher, until a thread of it waits on one of socks,
// and returns that waiter. Once no thread of the generation has been seen
// to run for QuietAfter, it checks every IdleInterval instead (if that is
// longer), looking at as many of the threads that have not run lately per
// Check as it would have in the Checks it skips, until one runs again.
//
// It returns early with an error when /proc cannot serve a Check at all,
// and when Checks have been denied part of the generation for DeniedGrace
// with no waiter seen in the rest (errors.Is(err, fs.ErrPermission)): the
// server is then most likely where Wait cannot look, and the master had
// better say so now than at the ready timeout. When ctx ends first, the
// error is ctx's, joined with the last Check's error if any.
//
// The first Check runs at once. The master runs Wait only while a
// generation is starting, and cancels ctx when that generation stops
// starting (ready by other means, exited, timed out), so nothing polls
// while baton is idle. Wait holds up to MaxHeld /proc files while it
// runs, and none after it returns.
func Wait(ctx context.Context, root int, socks *Sockets, interval time.Duration) (Waiter, error) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if _, err := os.Stat("/proc/self/fdinfo"); err != nil {
		return Waiter{}, fmt.Errorf("accepting: /proc is not available: %w", err)
	}
	wt := NewWatcher(root, socks)
	defer wt.Close()
	t := time.NewTimer(interval)
	defer t.Stop()
	var denied time.Time // since when every Check has been denied something
	active := time.Now() // when a thread was last seen to have run
	for {
		w, found, err := wt.Check()
		if found {
			return w, nil
		}
		if root <= 0 || socks == nil || len(socks.byInode) == 0 {
			return Waiter{}, err
		}
		switch {
		case err == nil:
			denied = time.Time{}
		case denied.IsZero():
			denied = time.Now()
		case time.Since(denied) >= DeniedGrace:
			return Waiter{}, err
		}
		next := interval
		if wt.active {
			active = time.Now()
		} else if time.Since(active) >= QuietAfter {
			next = max(interval, IdleInterval)
		}
		wt.coldScale = int(next / interval)
		t.Reset(next)
		select {
		case <-ctx.Done():
			return Waiter{}, errors.Join(ctx.Err(), err)
		case <-t.C:
		}
	}
}

// NeverReadyHint explains a generation that was started with --ready
// notify and did not send READY=1 in time: when one of its processes
// waits on one of socks (a server that cannot notify), it returns a
// sentence for the reload's failure message saying so; otherwise "". It
// is one Check, made once, when the ready timeout fires.
func NeverReadyHint(root int, socks *Sockets) string {
	w, found, _ := Check(root, socks)
	if !found {
		return ""
	}
	return fmt.Sprintf("it waits for connections (%v) but never sent READY=1; a server that cannot notify can run with --ready accepting", w)
}

// ChildrenFiles reports whether the kernel has /proc/PID/task/TID/children
// (CONFIG_PROC_CHILDREN, which comes with the CONFIG_CHECKPOINT_RESTORE
// that CRIU needs, on in the usual distribution kernels). Without it a
// Check finds the generation by reading the stat file of every process on
// the host, which costs in proportion to their number (a Watcher does it
// at most every StatInterval).
func ChildrenFiles() bool {
	childrenOnce.Do(func() {
		_, err := os.Stat("/proc/thread-self/children")
		if errors.Is(err, fs.ErrNotExist) {
			// thread-self is Linux 3.17+; try the long way before
			// concluding.
			_, err = os.Stat(fmt.Sprintf("/proc/%d/task/%d/children", os.Getpid(), unix.Gettid()))
		}
		hasChildren = err == nil
	})
	return hasChildren
}

var (
	childrenOnce sync.Once
	hasChildren  bool
	useChildren  = ChildrenFiles // tests force the fallback
)
