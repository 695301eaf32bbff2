//go:build linux

package host

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// children are the Host's own children, which the reaper hands back to
// their owner instead of reporting them: hooks and the keeper. A child is
// filed under the lock it was forked under, so that the reaper, should it
// reap the child before it is filed, waits for the filing.
type children struct {
	mu   sync.Mutex
	pids map[int]chan<- syscall.WaitStatus
}

func newChildren() *children { return &children{pids: map[int]chan<- syscall.WaitStatus{}} }

// fork runs start, which forks a child, and files it: its exit status
// will be sent on the returned channel.
func (c *children) fork(start func() (int, error)) (int, <-chan syscall.WaitStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pid, err := start()
	if err != nil {
		return pid, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	c.pids[pid] = ch
	return pid, ch, nil
}

// adopt files pid, a child forked by the old image of an in-place
// upgrade, as the Host's own.
func (c *children) adopt(pid int) <-chan syscall.WaitStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan syscall.WaitStatus, 1)
	c.pids[pid] = ch
	return ch
}

// has reports whether pid is one of the Host's own children.
func (c *children) has(pid int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pids[pid] != nil
}

// exited hands pid's status to its owner and reports whether it had one.
func (c *children) exited(pid int, ws syscall.WaitStatus) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.pids[pid]
	if ch == nil {
		return false
	}
	delete(c.pids, pid)
	ch <- ws
	return true
}

// reap collects every exited child of this process, whether a worker, a
// hook, the keeper or an orphan re-parented to it; the Host's own go back
// to their owners and the rest to exited. It runs until stop is closed,
// waiting on SIGCHLD, never on a timer.
func reap(own *children, exited func(int, syscall.WaitStatus), stop <-chan struct{}) {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGCHLD)
	defer signal.Stop(sigc)
	for {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
			if !own.exited(pid, ws) {
				exited(pid, ws)
			}
		}
		select {
		case <-sigc:
		case <-stop:
			return
		}
	}
}
