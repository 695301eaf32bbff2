//go:build linux

package host

import (
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/keeper"
	"github.com/baton-sh/baton/internal/proc"
)

// Stray is a process the master adopted that is not one of its workers:
// left by a worker that daemonized, by a child that exited before its own
// children, or by a hook.
type Stray struct {
	PID, PGID int
	Comm      string
	// Generation and Index are the worker it inherited them from
	// (BATON_GENERATION, BATON_WORKER_INDEX), 0 if unknown.
	Generation, Index int
	// Hook is set when it descends from a hook (BATON_HOOK).
	Hook bool
}

// Adopted lists the master's children that are not yet known: neither
// workers, strays, hooks nor the keeper. It opens a pidfd for each (while
// the process is the master's own unreaped child, so the PID is its own)
// and tells the keeper. A child that is exiting as it looks hands its own
// children to the master when its last thread exits (a daemon's
// short-lived intermediate process, say): it waits for that, on the
// child's pidfd and for exitWait at most, and looks again.
func (h *Host) Adopted() []Stray {
	if h.noPidfd {
		return nil
	}
	var out []Stray
	dead := map[int]bool{}
	until := time.Now().Add(exitWait)
	for again := true; again; {
		again = false
		for _, pid := range proc.Children(0) {
			if h.procs[pid] != nil || h.kids.has(pid) {
				continue
			}
			pfd, p, err := proc.Open(pid, proc.ParentIs(h.self))
			fd := int(pfd)
			var env map[string]string
			if err == nil {
				env, _ = proc.Environ(pid, envGeneration, envWorkerIndex, envHook)
				if proc.PidFD(fd).Exited() { // the environment read may not have been its own
					unix.Close(fd)
					err = unix.ESRCH
				}
			}
			if err != nil { // it is exiting, or has exited and is reaped next
				if !dead[pid] {
					dead[pid], again = true, true
					if fd, err := unix.PidfdOpen(pid, 0); err == nil {
						proc.PidFD(fd).Wait(time.Until(until))
						unix.Close(fd)
					}
				}
				continue
			}
			s := Stray{PID: pid, PGID: p.PGID, Comm: p.Comm, Hook: env[envHook] != ""}
			s.Generation, _ = strconv.Atoi(env[envGeneration])
			s.Index, _ = strconv.Atoi(env[envWorkerIndex])
			h.procs[pid] = &held{pid: pid, fd: fd}
			if h.keeper != nil {
				h.keeper.tell(keeper.OpStray, pid, s.Generation, fd)
			}
			out = append(out, s)
		}
	}
	return out
}

// exitWait bounds how long a scan waits for a child to finish exiting:
// all its threads, some of which its children may belong to. It takes
// microseconds, unless a thread is stuck in the kernel.
const exitWait = 100 * time.Millisecond
