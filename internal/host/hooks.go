//go:build linux

package host

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/keeper"
	"github.com/baton-sh/baton/internal/proc"
	"github.com/baton-sh/baton/internal/sockets"
)

// Hook is one run of a lifecycle hook.
type Hook struct {
	Kind       string // on-ready or on-stopping
	Argv       []string
	Generation int   // the generation it is about, 0 if none
	PIDs       []int // that generation's serving workers, by slot
	// Env is the environment of that generation's release; nil: built
	// anew as for a new release.
	Env []string
}

// HookResult is a hook's end.
type HookResult struct {
	Hook   Hook
	PID    int    // the hook's own process, 0 if it never started
	Exit   string // how it ended: "exited with status 0", …
	Err    error  // nil when it exited with status 0
	Output string
	Took   time.Duration
}

// maxHookOutput is how much of a hook's output is kept for the log.
const maxHookOutput = 4096

// hookRunner runs hooks, one at a time as the loop asks for them.
type hookRunner struct {
	h       *Host
	mu      sync.Mutex
	running int // the running hook's pidfd, -1 if none
}

// RunHook runs hk beside the loop; HookDone reports its end.
func (h *Host) RunHook(hk Hook) {
	// The addresses are read here, on the loop, which rebinds sockets.
	addrs := boundAddrs(h.cfg.Sockets)
	go func() { h.ev.HookDone(h.hooks.run(hk, addrs)) }()
}

// boundAddrs is BATON_ADDRS: name=address,… in --listen order.
func boundAddrs(socks []*sockets.Socket) string {
	addrs := make([]string, len(socks))
	for i, s := range socks {
		addrs[i] = s.Spec.Name + "=" + s.Addr.String()
	}
	return strings.Join(addrs, ",")
}

// run runs hk to its end, its process's exit, or kills its process group
// at the timeout. Whatever the hook left in its group is killed once it
// has exited; what it left elsewhere becomes a stray of the master, marked
// by BATON_HOOK, which the loop kills. A hook starts as a worker does:
// through the exec shim, as Config.Identity, with Config.Umask.
func (r *hookRunner) run(hk Hook, addrs string) HookResult {
	c := &r.h.cfg
	started := time.Now()
	res := HookResult{Hook: hk}
	fail := func(err error) HookResult {
		res.Err, res.Took = err, time.Since(started)
		return res
	}
	base := hk.Env
	if base == nil {
		var err error
		if base, err = r.h.environment("hooks"); err != nil {
			return fail(err)
		}
	}
	path, err := resolveCommand(hk.Argv[0], c.Dir, base)
	if err != nil {
		return fail(err)
	}
	env := r.h.withUmask(append(hookEnv(base, hk, addrs), sockets.ShimVar(path)))
	pr, pw, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer pr.Close()
	pidfd := -1
	pid, exited, err := r.h.kids.fork(func() (int, error) {
		return r.h.spawn.start(c.ShimPath, hk.Argv, &syscall.ProcAttr{
			Dir:   c.Dir,
			Env:   env,
			Files: []uintptr{r.h.null.Fd(), pw.Fd(), pw.Fd()},
			Sys:   &syscall.SysProcAttr{Credential: r.h.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL, PidFD: &pidfd},
		})
	})
	pw.Close()
	if err != nil {
		return fail(r.h.startError(path, c.Dir, err))
	}
	res.PID = pid
	if pidfd >= 0 {
		defer unix.Close(pidfd)
		if k := r.h.keeper; k != nil {
			// If the master dies, the keeper stops the hook's group too.
			k.tell(keeper.OpWorker, pid, 0, pidfd)
			defer k.forget(pid)
		}
	}
	r.mu.Lock()
	r.running = pidfd
	r.mu.Unlock()

	out := &hookOutput{}
	read := make(chan struct{})
	go func() {
		defer close(read)
		out.readFrom(pr)
	}()
	timer := time.NewTimer(c.HookTimeout)
	defer timer.Stop()
	var ws syscall.WaitStatus
	timedOut := false
	select {
	case ws = <-exited:
	case <-timer.C:
		timedOut = true
		r.killGroup(pid, pidfd)
		ws = <-exited
	}
	r.mu.Lock()
	r.running = -1
	r.mu.Unlock()
	// Whatever it left running in its group goes with it.
	r.killGroup(pid, pidfd)
	// It has ended: its output is what it wrote, read without waiting for
	// a process it left behind to close the pipe.
	pr.SetReadDeadline(time.Unix(1, 0))
	<-read
	pr.SetReadDeadline(time.Time{})
	out.drain(pr)

	res.Output = out.String()
	res.Exit = DescribeExit(ws)
	res.Took = time.Since(started)
	switch {
	case timedOut:
		res.Err = fmt.Errorf("%s still running after %s (--hook-timeout): its process group was killed", hk.Kind, c.HookTimeout)
	case !ws.Exited() || ws.ExitStatus() != 0:
		res.Err = errors.New(hk.Kind + " " + res.Exit)
	}
	return res
}

// killGroup kills the hook's process group, through its pidfd where the
// kernel allows (the group keeps the hook's number even once it is
// reaped, and the pidfd names it by that very PID).
func (r *hookRunner) killGroup(pid, pidfd int) {
	if pidfd >= 0 {
		if err := proc.PidFD(pidfd).SignalGroup(unix.SIGKILL); !errors.Is(err, proc.ErrNoGroupSignal) {
			return
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

// kill kills the running hook and its group (a fast stop).
func (r *hookRunner) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running >= 0 {
		proc.PidFD(r.running).Signal(unix.SIGKILL)
		proc.PidFD(r.running).SignalGroup(unix.SIGKILL)
	}
}

// hookOutput keeps the first maxHookOutput bytes a hook writes and
// discards the rest, so the hook never blocks writing.
type hookOutput struct {
	b []byte
}

func (o *hookOutput) keep(p []byte) {
	if room := maxHookOutput - len(o.b); room > 0 {
		o.b = append(o.b, p[:min(room, len(p))]...)
	}
}

func (o *hookOutput) readFrom(r io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		o.keep(buf[:n])
		if err != nil {
			return
		}
	}
}

// drain reads what is left in the pipe without blocking.
func (o *hookOutput) drain(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 4096)
	rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), buf)
			if n > 0 {
				o.keep(buf[:n])
				continue
			}
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return true // drained (EAGAIN), end of file, or an error
		}
	})
}

func (o *hookOutput) String() string { return string(o.b) }

// hookEnv is a hook's environment: base without the workers' socket
// activation variables and baton's other own ones, plus what the hook is
// about.
func hookEnv(base []string, hk Hook, addrs string) []string {
	var env []string
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
			envnames.Hook, envnames.Generation, envnames.WorkerIndex, envnames.Workers, envnames.WorkerPID,
			envnames.WorkerPIDs, envnames.MasterPID, envnames.Addrs, envnames.ExecShim, envnames.Umask:
			continue
		}
		env = append(env, kv)
	}
	var pids []string
	first := 0
	for i, p := range hk.PIDs {
		if i == 0 {
			first = p
		}
		pids = append(pids, strconv.Itoa(p))
	}
	return append(env,
		envnames.Hook+"="+hk.Kind,
		envnames.Generation+"="+strconv.Itoa(hk.Generation),
		envnames.WorkerPID+"="+strconv.Itoa(first),
		envnames.WorkerPIDs+"="+strings.Join(pids, ","),
		envnames.MasterPID+"="+strconv.Itoa(os.Getpid()),
		envnames.Addrs+"="+addrs,
	)
}
