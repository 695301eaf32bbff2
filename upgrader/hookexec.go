package upgrader

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

	"github.com/baton-sh/baton/internal/envnames"
)

// hookProcs are the hooks' processes, which the master's reaper (wait4 on
// any child) reaps like every child and hands back here instead of to the
// loop.
type hookProcs struct {
	mu   sync.Mutex
	pids map[int]chan syscall.WaitStatus
}

// start forks a hook under the lock, so that the reaper, should it reap
// the process before start has filed it, waits for the filing.
func (p *hookProcs) start(fork func() (int, error)) (int, <-chan syscall.WaitStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pid, err := fork()
	if err != nil {
		return 0, nil, err
	}
	if p.pids == nil {
		p.pids = map[int]chan syscall.WaitStatus{}
	}
	c := make(chan syscall.WaitStatus, 1)
	p.pids[pid] = c
	return pid, c, nil
}

// exited takes c if it is a hook's, and reports whether it was.
func (p *hookProcs) exited(c childExit) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch, ok := p.pids[c.pid]
	if ok {
		delete(p.pids, c.pid)
		ch <- c.status
	}
	return ok
}

func (s *system) hook(h hookRun) {
	env := hookEnv(s.m.opts.Env, h, s.m) // read on the loop, which owns the sockets
	go func() { s.m.send(s.runHook(h, env)) }()
}

// runHook runs h to its end, or kills its process group at the timeout.
func (s *system) runHook(h hookRun, env []string) hookDone {
	o := &s.m.opts
	started := time.Now()
	deadline := started.Add(o.HookTimeout)
	d := hookDone{run: h}
	fail := func(err error) hookDone {
		d.err, d.took = err, time.Since(started)
		return d
	}
	path, err := resolveCommand(h.argv[0], o.Dir, o.Env)
	if err != nil {
		return fail(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer r.Close()
	pid, exited, err := s.hookPIDs.start(func() (int, error) {
		return s.spawner.start(path, h.argv, &syscall.ProcAttr{
			Dir:   o.Dir,
			Env:   env,
			Files: []uintptr{s.devNull.Fd(), w.Fd(), w.Fd()},
			Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
		})
	})
	w.Close()
	if err != nil {
		return fail(fmt.Errorf("start %s: %w", path, err))
	}
	d.pid = pid
	r.SetReadDeadline(deadline)
	output := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, maxHookOutput))
		io.Copy(io.Discard, r) // the rest, so the hook never blocks writing
		output <- string(b)
	}()

	timer := time.NewTimer(o.HookTimeout)
	defer timer.Stop()
	var ws syscall.WaitStatus
	timedOut := false
	select {
	case ws = <-exited:
	case <-timer.C:
		timedOut = true
		syscall.Kill(-pid, syscall.SIGKILL)
		ws = <-exited
	}
	// Whatever it left running in its group goes with it; then its
	// output pipe has no writer left and ends.
	syscall.Kill(-pid, syscall.SIGKILL)
	d.output = <-output
	d.exit = describeExit(ws)
	d.took = time.Since(started)
	switch {
	case timedOut:
		d.err = fmt.Errorf("%s still running after %s (--hook-timeout): its process group was killed", h.kind, o.HookTimeout)
	case !ws.Exited() || ws.ExitStatus() != 0:
		d.err = errors.New(h.kind.String() + " " + d.exit)
	}
	return d
}

// hookEnv is a hook's environment: base without the workers' socket
// activation variables, plus what the hook is about.
func hookEnv(base []string, h hookRun, m *Master) []string {
	var env []string
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", "NOTIFY_SOCKET",
			envnames.Hook, envnames.Generation, envnames.WorkerPID, envnames.MasterPID, envnames.Addrs:
			continue
		}
		env = append(env, kv)
	}
	var addrs []string
	for _, s := range m.opts.Sockets {
		addrs = append(addrs, s.Spec.Name+"="+s.Addr.String())
	}
	return append(env,
		envnames.Hook+"="+h.kind.String(),
		envnames.Generation+"="+strconv.Itoa(h.gen),
		envnames.WorkerPID+"="+strconv.Itoa(h.pid),
		envnames.MasterPID+"="+strconv.Itoa(selfPID),
		envnames.Addrs+"="+strings.Join(addrs, ","),
	)
}
