//go:build linux

package upgrader

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/keeper"
)

// containment is the master's side of "nothing a worker starts outlives
// the master or escapes it":
//
//   - It runs a keeper (internal/keeper), a small process that outlives
//     the master to stop what the master leaves running if it dies without
//     a stop, SIGKILL included, and restarts it if it dies.
//   - It finds the strays: processes the master adopted as their subreaper
//     that are not workers, left behind by a worker that daemonized (fork,
//     setsid, fork, exit) or by a child that exited before its own
//     children. It looks for them each time the master reaps a child, and
//     only then: a process is adopted only when one of its ancestors exits,
//     and the master hears of every such exit among its own children. Each
//     stray belongs to the generation in its environment (BATON_GENERATION,
//     inherited by everything a worker starts). While its generation's
//     main process runs, it is left alone; once that has exited (or at a
//     stop) it gets the drain signal, and SIGKILL after the drain timeout.
//     A stray still in its worker's process group is left to the loop,
//     which drains and kills that group.
//
// It holds a pidfd for every worker and stray (the worker's from the
// kernel at the fork, a stray's opened while it was the master's own
// unreaped child) and signals only through them, and it tells the keeper
// about each. It is called from the loop (through the system env), from
// the reaper and from its own timers, hence the lock.
type containment struct {
	mu      sync.Mutex
	opts    *Options
	log     zerolog.Logger
	self    int
	notOurs func(pid int) bool // a child of the master that is no stray (a hook)

	workers map[int]*contained // workers until their generation is gone, by PID
	strays  map[int]*contained // adopted processes that are not workers, by PID
	ended   map[int]*genEnd    // generations whose main process has exited, recently

	stopping bool
	stopKill time.Time // when the strays get SIGKILL at a stop

	keeper       *keeperProc
	keeperDelay  time.Duration // before the next keeper start, after one died young
	keeperTimer  *time.Timer
	keeperFailed bool // the last start failed: say so once
	noPidfd      bool // the kernel has no pidfds: no keeper, no strays
	closed       bool
}

// contained is a worker or a stray the master holds a pidfd on.
type contained struct {
	pid, fd, gen int
	comm         string
	pgid         int
	exited       bool // worker: its main process has been reaped
	drained      bool
	kill         *time.Timer
}

// genEnd is when a generation's worker exited.
type genEnd struct {
	pid    int // its worker, the leader of its process group
	at     time.Time
	warned bool // "the worker daemonized" was logged
}

func newContainment(opts *Options, log zerolog.Logger, notOurs func(pid int) bool) *containment {
	return &containment{
		opts: opts, log: log, self: os.Getpid(), notOurs: notOurs,
		workers: map[int]*contained{}, strays: map[int]*contained{}, ended: map[int]*genEnd{},
	}
}

// start starts the keeper. On a kernel without pidfds (before Linux 5.3)
// it warns once and does nothing else, ever.
func (c *containment) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	fd, err := unix.PidfdOpen(c.self, 0)
	if err != nil {
		c.noPidfd = true
		c.log.Warn().Err(err).Msg("this kernel has no pidfds (Linux 5.3+): processes left by workers are not tracked, and nothing stops the workers if the master is killed")
		return
	}
	unix.Close(fd)
	c.startKeeper()
}

// spawn runs fork, which starts generation gen's worker and has the
// kernel set *pidfd (syscall.SysProcAttr.PidFD), and tracks the worker. It
// forks under the lock, so that the reaper, should it reap the worker
// before it is filed, waits for the filing.
func (c *containment) spawn(gen int, fork func(pidfd *int) (int, error)) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pidfd := -1
	pid, err := fork(&pidfd)
	if err != nil || pidfd < 0 {
		return pid, err // no pidfds here: nothing to track
	}
	w := &contained{pid: pid, fd: pidfd, gen: gen, pgid: pid}
	c.workers[pid] = w
	c.tell(keeper.OpWorker, w)
	return pid, nil
}

// reaped handles a child the reaper has just reaped, before the loop
// hears of it, and reports whether it was the keeper (started again here,
// and nothing for the loop). A worker's exit ends its generation for the
// strays, which are drained. Then, whatever the child was, its children
// have just been adopted, and the master's children are scanned for
// strays: the loop sees a worker's exit only once they are known.
func (c *containment) reaped(pid int, status syscall.WaitStatus) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false // the master's end: close reaps the keeper
	}
	if k := c.keeper; k != nil && pid == k.pid {
		c.keeperExited(status)
		return true
	}
	if w := c.workers[pid]; w != nil && !w.exited {
		w.exited = true
		c.ended[w.gen] = &genEnd{pid: w.pid, at: time.Now()}
		for _, s := range c.sortedStrays() {
			if s.gen == w.gen {
				c.judge(s)
			}
		}
	} else if s := c.strays[pid]; s != nil {
		delete(c.strays, pid)
		c.tell(keeper.OpForget, s)
		if s.kill != nil {
			s.kill.Stop()
		}
		unix.Close(s.fd)
	}
	c.scan()
	c.prune()
	return false
}

// gone forgets worker pid: its generation has ended, process group and
// all.
func (c *containment) gone(pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.workers[pid]; w != nil {
		delete(c.workers, pid)
		c.tell(keeper.OpForget, w)
		unix.Close(w.fd)
	}
}

// scan adopts, as strays, the master's children that are neither workers
// nor the keeper. A child that is exiting as it looks hands its own
// children to the master when its last thread exits (a daemon's
// short-lived intermediate process, say): it waits for that, on the
// child's pidfd and for exitWait at most, and looks again.
func (c *containment) scan() {
	if c.noPidfd {
		return
	}
	dead := map[int]bool{}
	until := time.Now().Add(exitWait)
	for again := true; again; {
		again = false
		for _, pid := range keeper.Children() {
			if c.workers[pid] != nil || c.strays[pid] != nil || (c.keeper != nil && c.keeper.pid == pid) || c.notOurs(pid) {
				continue
			}
			fd, p, err := keeper.Open(pid, func(p keeper.Proc) bool { return p.PPID == c.self })
			var gen int
			if err == nil {
				gen = keeper.Generation(pid)
				if keeper.Exited(fd) { // the environment read may not have been its own
					unix.Close(fd)
					err = unix.ESRCH
				}
			}
			if err != nil { // it is exiting, or has exited and is reaped next
				if !dead[pid] {
					dead[pid], again = true, true
					if fd, err := unix.PidfdOpen(pid, 0); err == nil {
						waitExit(fd, time.Until(until))
						unix.Close(fd)
					}
				}
				continue
			}
			s := &contained{pid: pid, fd: fd, gen: gen, comm: p.Comm, pgid: p.PGID}
			c.strays[pid] = s
			c.tell(keeper.OpStray, s)
			c.log.Debug().Int("gen", gen).Int("pid", pid).Str("comm", p.Comm).Int("pgid", p.PGID).
				Msg("adopted a process that is not a worker")
			c.judge(s)
		}
	}
}

// exitWait bounds how long a scan waits for a child to finish exiting:
// all its threads, some of which its children may belong to. It takes
// microseconds, unless a thread is stuck in the kernel.
const exitWait = 100 * time.Millisecond

// judge drains a stray whose generation's main process has exited (or
// any stray at a stop) and arms its SIGKILL for the drain timeout after
// that exit (or after the stop began). A stray whose generation is unknown
// is left alone until the stop; one still in a worker's process group, to
// the loop.
func (c *containment) judge(s *contained) {
	live := false
	for _, w := range c.workers {
		live = live || (w.gen == s.gen && !w.exited)
	}
	end := c.ended[s.gen]
	inGroup := c.workers[s.pgid] != nil || (end != nil && s.pgid == end.pid)
	if !live && !inGroup && s.gen != 0 && end != nil && !end.warned {
		end.warned = true
		c.log.Warn().Int("gen", s.gen).Int("pid", s.pid).Str("comm", s.comm).
			Msgf("the worker daemonized: process %d (%s) of generation %d was left running after its main process exited; run the server in the foreground", s.pid, s.comm, s.gen)
	}
	var killAt time.Time
	switch {
	case s.drained || inGroup:
		return
	case c.stopping:
		killAt = c.stopKill
	case live || s.gen == 0:
		return
	case end != nil:
		killAt = end.at.Add(c.opts.DrainTimeout)
	default: // its generation ended long ago
		killAt = time.Now().Add(c.opts.DrainTimeout)
	}
	s.drained = true
	wait := time.Until(killAt)
	if wait <= 0 {
		c.log.Warn().Int("gen", s.gen).Int("pid", s.pid).Str("comm", s.comm).Msg("killing a process its generation left running")
		keeper.Signal(s.fd, unix.SIGKILL)
		return
	}
	c.log.Info().Int("gen", s.gen).Int("pid", s.pid).Str("comm", s.comm).Str("signal", signalName(c.opts.DrainSignal)).
		Msg("draining a process its generation left running")
	if err := keeper.Signal(s.fd, unix.Signal(c.opts.DrainSignal)); err != nil {
		c.log.Error().Err(err).Int("pid", s.pid).Msg("cannot signal a process left running")
	}
	s.kill = time.AfterFunc(wait, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.strays[s.pid] == s {
			c.log.Warn().Int("gen", s.gen).Int("pid", s.pid).Str("comm", s.comm).Str("drain_timeout", c.opts.DrainTimeout.String()).
				Msg("process left running still there after the drain timeout: killing it")
			keeper.Signal(s.fd, unix.SIGKILL)
		}
	})
}

// signalGroup signals the process group of worker pid, through the
// worker's pidfd where the kernel allows it (Linux 6.9+): then the signal
// cannot reach another group that got the same number, even once the
// worker has been reaped. It returns nil only if some process received it.
func (c *containment) signalGroup(pid int, sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.workers[pid]; w != nil {
		if err := keeper.SignalGroup(w.fd, unix.Signal(sig)); !errors.Is(err, keeper.ErrNoGroupSignal) {
			return err
		}
	}
	return syscall.Kill(-pid, sig)
}

// daemonized describes a stray of generation gen that left its worker's
// process group ("process 123 (server)"), or returns "" if there is none.
func (c *containment) daemonized(gen int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	end := c.ended[gen]
	for _, s := range c.sortedStrays() {
		if s.gen == gen && c.workers[s.pgid] == nil && (end == nil || s.pgid != end.pid) {
			return fmt.Sprintf("process %d (%s)", s.pid, s.comm)
		}
	}
	return ""
}

// stop drains every stray (fast: kills it) and keeps draining those found
// later; they get SIGKILL after the drain timeout.
func (c *containment) stop(fast bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopping || fast {
		c.stopping = true
		c.stopKill = time.Now().Add(c.opts.DrainTimeout)
		if fast {
			c.stopKill = time.Now()
		}
	}
	for _, s := range c.sortedStrays() {
		if fast && s.drained {
			keeper.Signal(s.fd, unix.SIGKILL)
			continue
		}
		c.judge(s)
	}
}

// count is how many strays are still running: a stopping master waits
// for them as for its workers.
func (c *containment) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.strays)
}

// prune forgets generations ended longer than a drain timeout ago that
// have no stray left.
func (c *containment) prune() {
	for gen, e := range c.ended {
		if time.Since(e.at) < c.opts.DrainTimeout {
			continue
		}
		found := false
		for _, s := range c.strays {
			found = found || s.gen == gen
		}
		if !found {
			delete(c.ended, gen)
		}
	}
}

func (c *containment) sortedStrays() []*contained {
	out := make([]*contained, 0, len(c.strays))
	for _, s := range c.strays {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

// close ends the keeper after a clean stop: the master has reaped
// everything, and the keeper, told so, exits without signalling anything.
// A keeper that does not exit within the drain timeout (stopped, say) is
// killed.
func (c *containment) close() {
	c.mu.Lock()
	c.closed = true
	if c.keeperTimer != nil {
		c.keeperTimer.Stop()
	}
	for _, s := range c.strays {
		if s.kill != nil {
			s.kill.Stop()
		}
		unix.Close(s.fd)
	}
	for _, w := range c.workers {
		unix.Close(w.fd)
	}
	clear(c.strays)
	clear(c.workers)
	k := c.keeper
	c.keeper = nil
	c.mu.Unlock()
	if k == nil {
		return
	}
	deadline := time.Now().Add(c.opts.DrainTimeout)
	k.finish(deadline) // everything told, then end of file
	if !waitExit(k.pidfd, time.Until(deadline)) {
		c.log.Warn().Int("pid", k.pid).Msg("the keeper did not exit after the master's stop: killing it")
		keeper.Signal(k.pidfd, unix.SIGKILL)
		waitExit(k.pidfd, 5*time.Second)
	}
	// Reap it unless the master's reaper already has.
	var info unix.Siginfo
	unix.Waitid(unix.P_PIDFD, k.pidfd, &info, unix.WEXITED|unix.WNOHANG, nil)
	unix.Close(k.pidfd)
}

// keeperProc is a running keeper and the master's end of its socket.
type keeperProc struct {
	pid, pidfd int
	started    time.Time
	conn       *net.UnixConn

	mu      sync.Mutex
	queue   []keeperMsg
	wake    chan struct{}
	closing bool
	broken  bool
	done    chan struct{} // the writer has returned
}

type keeperMsg struct {
	b  []byte
	fd int // a pidfd to pass along, or -1
}

// startKeeper starts a keeper and tells it everything the master tracks.
// If it cannot, it says why and tries again later.
func (c *containment) startKeeper() {
	c.keeperTimer = nil
	if c.closed {
		return
	}
	k, err := c.newKeeper()
	if err != nil {
		if !c.keeperFailed {
			c.log.Error().Err(err).Msg("cannot start the keeper: nothing stops the workers if the master is killed; retrying")
		}
		c.keeperFailed = true
		c.retryKeeper()
		return
	}
	c.keeperFailed = false
	c.keeper = k
	for _, w := range c.workers {
		c.tell(keeper.OpWorker, w)
	}
	for _, s := range c.strays {
		c.tell(keeper.OpStray, s)
	}
	c.log.Info().Int("pid", k.pid).Msg("keeper started")
}

func (c *containment) newKeeper() (*keeperProc, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("keeper socket: %w", err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	defer null.Close()
	format := c.opts.LogFormat
	if format != "json" && format != "console" {
		format = "json"
		if _, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS); err == nil {
			format = "console"
		}
	}
	cfg := keeper.Config{DrainSignal: c.opts.DrainSignal, DrainTimeout: c.opts.DrainTimeout, DrainGroup: c.opts.DrainGroup,
		LogJSON: format == "json", LogLevel: c.opts.LogLevel}
	var env []string
	for _, kv := range os.Environ() {
		if len(kv) < len(envnames.Keeper)+1 || kv[:len(envnames.Keeper)+1] != envnames.Keeper+"=" {
			env = append(env, kv)
		}
	}
	pidfd := -1
	pid, err := syscall.ForkExec(c.opts.ShimPath, []string{keeper.Comm}, &syscall.ProcAttr{
		Dir:   "/",
		Env:   append(env, envnames.Keeper+"="+cfg.String()),
		Files: []uintptr{null.Fd(), os.Stderr.Fd(), os.Stderr.Fd(), uintptr(fds[1])},
		// Its own process group: a signal to the master's group (a
		// supervisor's killasgroup, a terminal's ^C) must not reach it.
		Sys: &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd},
	})
	unix.Close(fds[1])
	if err == nil && pidfd < 0 {
		// Killed at once: it is our unreaped child, its PID is its own.
		syscall.Kill(pid, syscall.SIGKILL)
		err = errors.New("the kernel gave no pidfd for it (Linux 5.3+)")
	}
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("start %s as the keeper: %w", c.opts.ShimPath, err)
	}
	f := os.NewFile(uintptr(fds[0]), "keeper")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		keeper.Signal(pidfd, unix.SIGKILL)
		unix.Close(pidfd)
		return nil, fmt.Errorf("keeper socket: %w", err)
	}
	k := &keeperProc{pid: pid, pidfd: pidfd, started: time.Now(), conn: fc.(*net.UnixConn),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go k.write()
	return k, nil
}

// keeperExited starts a new keeper in place of one that died: at once, or
// after a delay (1s, doubling up to 30s) if it died within a second.
func (c *containment) keeperExited(status syscall.WaitStatus) {
	k := c.keeper
	c.keeper = nil
	k.abandon()
	unix.Close(k.pidfd)
	if time.Since(k.started) >= time.Second {
		c.keeperDelay = 0
	}
	c.log.Warn().Int("pid", k.pid).Str("how", describeExit(status)).Msg("keeper exited: starting a new one")
	if c.keeperDelay == 0 {
		c.keeperDelay = time.Second
		c.startKeeper()
		return
	}
	c.retryKeeper()
}

func (c *containment) retryKeeper() {
	if c.keeperDelay == 0 {
		c.keeperDelay = time.Second
	}
	d := c.keeperDelay
	c.keeperDelay = min(2*c.keeperDelay, 30*time.Second)
	c.keeperTimer = time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.keeper == nil {
			c.startKeeper()
		}
	})
}

// tell queues a message about p for the keeper; it never blocks.
func (c *containment) tell(op byte, p *contained) {
	k := c.keeper
	if k == nil {
		return // a new keeper is told everything when it starts
	}
	m := keeperMsg{b: keeper.Msg{Op: op, PID: p.pid, Gen: p.gen}.Encode(), fd: -1}
	if op != keeper.OpForget {
		fd, err := unix.FcntlInt(uintptr(p.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			c.log.Error().Err(err).Int("pid", p.pid).Msg("cannot tell the keeper about a process")
			return
		}
		m.fd = fd
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.broken || k.closing {
		closeMsgs([]keeperMsg{m})
		return
	}
	k.queue = append(k.queue, m)
	k.poke()
}

// write sends the queued messages in order until finish or abandon.
func (k *keeperProc) write() {
	defer close(k.done)
	for {
		k.mu.Lock()
		for len(k.queue) == 0 && !k.closing && !k.broken {
			k.mu.Unlock()
			<-k.wake
			k.mu.Lock()
		}
		q := k.queue
		k.queue = nil
		stop := k.broken || len(q) == 0 // abandoned, or finishing with nothing left
		k.mu.Unlock()
		if stop {
			closeMsgs(q)
			return
		}
		for i, m := range q {
			var oob []byte
			if m.fd >= 0 {
				oob = unix.UnixRights(m.fd)
			}
			_, _, err := k.conn.WriteMsgUnix(m.b, oob, nil)
			if err != nil { // the keeper is gone, stopped past the deadline, or abandoned
				closeMsgs(q[i:])
				k.abandon()
				return
			}
			closeMsgs(q[i : i+1])
		}
	}
}

// finish sends what is queued, waiting until deadline at most, then closes
// the socket: end of file for the keeper.
func (k *keeperProc) finish(deadline time.Time) {
	k.conn.SetWriteDeadline(deadline)
	k.mu.Lock()
	k.closing = true
	k.mu.Unlock()
	k.poke()
	<-k.done
	k.conn.Close()
}

// abandon drops what is queued for a keeper that died, and the socket.
func (k *keeperProc) abandon() {
	k.mu.Lock()
	k.broken = true
	closeMsgs(k.queue)
	k.queue = nil
	k.mu.Unlock()
	k.poke()
	k.conn.Close()
}

func (k *keeperProc) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

func closeMsgs(ms []keeperMsg) {
	for _, m := range ms {
		if m.fd >= 0 {
			unix.Close(m.fd)
		}
	}
}

// waitExit waits up to d for the process of pidfd to exit.
func waitExit(pidfd int, d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return keeper.Exited(pidfd)
		}
		n, err := unix.Poll(fds, int((left+time.Millisecond-1)/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0
	}
}

// has reports whether pid is a running hook's. A hook is forked under the
// lock, so a scan that sees it before it is filed waits for the filing.
func (p *hookProcs) has(pid int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.pids[pid]
	return ok
}
