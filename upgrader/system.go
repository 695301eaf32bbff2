package upgrader

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/accepting"
	"github.com/baton-sh/baton/internal/fdlimit"
	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/notify"
)

// env is everything the master's loop does to the world outside its own
// state. system is the real one; tests drive the loop with a fake.
// Methods are called from the loop only and must not block on it.
type env interface {
	now() time.Time
	// after delivers e to the loop once d has passed, unless the
	// returned function is called first.
	after(d time.Duration, e any) (stop func())
	// start starts generation n and returns its main PID.
	start(n int) (pid int, err error)
	// signal sends sig to pid, or to the process group it leads.
	signal(pid int, sig syscall.Signal, group bool) error
	// tookOver: generation pid serves and its predecessor is gone.
	tookOver(pid int)
	// gone: generation pid's main process has been reaped.
	gone(pid int)
	// groupAlive reports whether the process group led by pid has members.
	groupAlive(pgid int) bool
	// processGroup is the process group of pid, 0 if unknown.
	processGroup(pid int) int
	// accepting reports a process of generation pid seen waiting for
	// connections on a passed socket, and how.
	accepting(pid int) (int, string)
	// settled: generation pid is no longer starting; stop looking for
	// its readiness.
	settled(pid int)
	// checkSockets binds anew every held socket that no longer listens;
	// generation by is the suspect. It returns nil when all listen.
	checkSockets(by int) *socketsLost
	// hook runs a lifecycle hook beside the loop and reports its end to
	// the loop as a hookDone.
	hook(h hookRun)
	// strays is how many processes the workers left running (contain.go)
	// are still being stopped; the loop waits for them at a stop.
	strays() int
	// stopping: a stop began; the strays are drained (fast: killed).
	stopping(fast bool)
	// daemonized describes a process generation gen left running, out of
	// its process group, when its main process exited; "" if none.
	daemonized(gen int) string
}

// system is the env of a running Master: real processes, timers and
// sockets.
type system struct {
	m        *Master
	notify   *notify.Socket
	spawner  *spawner
	stop     chan struct{}
	proto    protocol
	handoffs map[int]*handoff           // by worker PID, until it is gone
	watching map[int]context.CancelFunc // --ready accepting, by worker PID, while it starts
	socks    *accepting.Sockets         // the held sockets, by inode
	devNull  *os.File
	hookPIDs hookProcs    // running hooks, reaped apart from workers
	contain  *containment // the keeper and the strays (contain.go)
}

func startSystem(m *Master) (*system, error) {
	o := &m.opts
	if o.Subreaper {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("cannot become a subreaper: %w", err)
		}
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	sock, err := notify.ListenPrivate()
	if err != nil {
		devNull.Close()
		return nil, err
	}
	s := &system{
		m:        m,
		notify:   sock,
		spawner:  newSpawner(),
		stop:     make(chan struct{}),
		proto:    newProtocol(o.Protocol, o.Env, o.DrainSignal),
		handoffs: map[int]*handoff{},
		watching: map[int]context.CancelFunc{},
		devNull:  devNull,
	}
	if err := s.knowSockets(); err != nil {
		s.close()
		return nil, err
	}
	s.contain = newContainment(o, m.log, s.hookPIDs.has)
	s.contain.start()
	go s.receive(sock)
	go reap(func(c childExit) {
		if !s.hookPIDs.exited(c) && !s.contain.reaped(c.pid, c.status) {
			m.send(c)
		}
	}, s.stop)
	return s, nil
}

// receive passes sock's datagrams to the loop until sock is closed.
func (s *system) receive(sock *notify.Socket) {
	for {
		d, err := sock.Receive()
		if err != nil {
			return
		}
		s.m.send(d)
	}
}

// notifySocket is the workers' NOTIFY_SOCKET, made anew if its file was
// deleted (a /tmp cleaner): every generation started from now on reaches
// the master again, and generations already running, which have the old
// path, can no longer send (their READY=1 and STATUS= are lost).
func (s *system) notifySocket() (string, error) {
	fresh, err := s.notify.Repair()
	if err != nil {
		return "", err
	}
	if fresh != s.notify {
		s.m.log.Warn().Str("gone", s.notify.Path()).Str("new", fresh.Path()).
			Msg("the notify socket's file was deleted (a temp-file cleaner?): made a new one; workers already running cannot reach baton until the next reload. Set XDG_RUNTIME_DIR, or RuntimeDirectory= under systemd, to a directory no cleaner touches")
		s.notify.Close()
		s.notify = fresh
		go s.receive(fresh)
	}
	return fresh.Path(), nil
}

func (s *system) close() {
	if s.contain != nil {
		s.contain.close()
	}
	close(s.stop)
	s.spawner.close()
	s.notify.Close()
	s.devNull.Close()
}

func (s *system) now() time.Time { return time.Now() }

func (s *system) after(d time.Duration, e any) func() {
	t := time.AfterFunc(d, func() { s.m.send(e) })
	return func() { t.Stop() }
}

// start starts generation n through the exec shim, in its own process
// group.
func (s *system) start(n int) (int, error) {
	o := &s.m.opts
	path, err := resolveCommand(o.Command[0], o.Dir, o.Env)
	if err != nil {
		return 0, err
	}
	if o.Dir != "" {
		if _, err := os.Stat(o.Dir); err != nil {
			return 0, fmt.Errorf("working directory: %w", err)
		}
	}
	notifyPath, err := s.notifySocket()
	if err != nil {
		return 0, err
	}
	h, err := s.proto.handoff(n, o.Sockets, notifyPath)
	if err != nil {
		return 0, err
	}
	shim := sockets.ShimVar(path)
	if h.stub {
		shim = stubEnv + "=" + path
	}
	files := []uintptr{s.devNull.Fd(), o.Stdout.Fd(), o.Stderr.Fd()}
	for _, f := range h.files {
		files = append(files, f.Fd())
	}
	pid, err := s.contain.spawn(n, func(pidfd *int) (int, error) {
		return s.spawner.start(o.ShimPath, o.Command, &syscall.ProcAttr{
			Dir:   o.Dir,
			Env:   append(h.env, shim),
			Files: files,
			Sys: &syscall.SysProcAttr{
				// Its own group, so a drain timeout can kill the worker
				// together with everything it started.
				Setpgid: true,
				// If the master dies, the worker is told to drain and
				// exit; the keeper sees to the rest (contain.go).
				Pdeathsig: o.DrainSignal,
				PidFD:     pidfd,
			},
		})
	})
	if h.started != nil {
		h.started(pid, func(pid int) { s.m.send(readySeen{pid, "ready by " + o.Protocol.String()}) })
	}
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", path, fdlimit.Explain(err))
	}
	s.handoffs[pid] = h
	if o.Ready == ReadyAccepting {
		ctx, cancel := context.WithCancel(context.Background())
		s.watching[pid] = cancel
		go func() {
			w, err := accepting.Wait(ctx, pid, s.socks, 0)
			switch {
			case err == nil:
				s.m.send(readySeen{pid, "accepting: " + w.String()})
			case ctx.Err() == nil:
				s.m.log.Warn().Err(err).Int("pid", pid).Msg("cannot watch the new worker for --ready accepting: it becomes ready only by READY=1")
			}
		}()
	}
	return pid, nil
}

// knowSockets identifies the held sockets by inode, for --ready accepting
// and the hint to use it.
func (s *system) knowSockets() error {
	conns := make([]syscall.Conn, len(s.m.opts.Sockets))
	for i, sock := range s.m.opts.Sockets {
		conns[i] = sock.File
	}
	socks, err := accepting.NewSockets(conns...)
	if err != nil {
		return fmt.Errorf("identifying the sockets: %w", err)
	}
	s.socks = socks
	return nil
}

func (s *system) settled(pid int) {
	if cancel := s.watching[pid]; cancel != nil {
		cancel()
		delete(s.watching, pid)
	}
}

func (s *system) signal(pid int, sig syscall.Signal, group bool) error {
	if group {
		return s.contain.signalGroup(pid, sig)
	}
	if h := s.handoffs[pid]; h != nil && h.signal != nil {
		return h.signal(sig)
	}
	return syscall.Kill(pid, sig)
}

func (s *system) tookOver(pid int) {
	if h := s.handoffs[pid]; h != nil && h.release != nil {
		h.release()
	}
}

// gone releases what generation pid held, and kills what it left behind in
// its process group: it would otherwise run on unsupervised.
func (s *system) gone(pid int) {
	s.settled(pid)
	if h := s.handoffs[pid]; h != nil && h.release != nil {
		h.release()
	}
	if h := s.handoffs[pid]; h != nil && h.done != nil {
		h.done()
	}
	delete(s.handoffs, pid)
	var left []string
	for _, m := range groupMembers(pid) {
		if m.state != 'Z' {
			left = append(left, m.String())
		}
	}
	// Killed whatever the scan saw: a member forked since is a member too.
	killed := s.contain.signalGroup(pid, syscall.SIGKILL) == nil
	s.contain.gone(pid)
	if killed && len(left) > 0 {
		s.m.log.Warn().Int("pgid", pid).Strs("processes", left).
			Msg("sent SIGKILL to processes the worker left in its process group after its main process exited: if the worker is a shell script, exec the server (exec ./server) or pass --drain-group so that they get the drain signal too")
	}
}

// groupAlive reports whether group pgid has a member that is not a
// zombie. A zombie has finished; it only waits for its parent (init, when
// baton is not its subreaper) to reap it, and must not hold a drain.
func (s *system) groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	for _, m := range groupMembers(pgid) {
		if m.state != 'Z' {
			return true
		}
	}
	return false
}

func (s *system) strays() int               { return s.contain.count() }
func (s *system) stopping(fast bool)        { s.contain.stop(fast) }
func (s *system) daemonized(gen int) string { return s.contain.daemonized(gen) }

func (s *system) processGroup(pid int) int {
	pgid, err := syscall.Getpgid(pid)
	if err != nil {
		return 0
	}
	return pgid
}

func (s *system) accepting(pid int) (int, string) {
	if len(s.m.opts.Sockets) == 0 {
		return 0, ""
	}
	w, found, _ := accepting.Check(pid, s.socks)
	if !found {
		return 0, ""
	}
	return w.PID, w.String()
}

func (s *system) checkSockets(by int) *socketsLost {
	var lost *socketsLost
	for _, sock := range s.m.opts.Sockets {
		if sock.Listening() {
			continue
		}
		if lost == nil {
			lost = &socketsLost{by: by}
		}
		lost.names = append(lost.names, sock.Spec.Name)
		if err := sock.Rebind(); err != nil && lost.err == nil {
			lost.err = err
		}
	}
	if lost != nil && lost.err == nil {
		if err := s.knowSockets(); err != nil {
			lost.err = err
		}
	}
	return lost
}

// member is one process of a process group, as /proc/PID/stat has it.
type member struct {
	pid   int
	comm  string
	state byte // R, S, D, T, Z, …
}

func (m member) String() string { return fmt.Sprintf("%d (%s)", m.pid, m.comm) }

// groupMembers lists the processes of process group pgid. It reads /proc,
// so it runs only when a generation ends or a group drains without its
// main process, never while idle.
func groupMembers(pgid int) []member {
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []member
	for _, e := range dir {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "PID (COMM) STATE PPID PGRP …"; COMM may hold spaces and ')'.
		open, close := strings.IndexByte(string(b), '('), strings.LastIndexByte(string(b), ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(b[close+1:]))
		if len(f) < 3 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		out = append(out, member{pid: pid, comm: string(b[open+1 : close]), state: f[0][0]})
	}
	return out
}
